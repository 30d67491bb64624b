import { brandClass } from "./brand.js";
import { SpiffeError } from "./errors.js";
import { type ParsedCertificate, parseCertificateDer } from "./parsed-certificate.js";
import { decodeCertificatesPem } from "./pem.js";
import { parseTrustDomain } from "./spiffe-id.js";

// Parsed roots stay internal to the package; other modules read them through `bundleRoots`.
const storage = new WeakMap<TrustBundle, Map<string, ParsedCertificate[]>>();

/**
 * Roots of bundles made by the other build of the package (ESM or CJS), parsed from their PEM per
 * trust domain and parsed again only when that PEM changes.
 */
const foreignRoots = new WeakMap<TrustBundle, Map<string, { pem: string; roots: ParsedCertificate[] }>>();

function rootsOfForeign(bundle: TrustBundle, trustDomain: string): ParsedCertificate[] {
  const pem = bundle.toPem(trustDomain);
  let byDomain = foreignRoots.get(bundle);
  if (byDomain === undefined) {
    byDomain = new Map();
    foreignRoots.set(bundle, byDomain);
  }
  const held = byDomain.get(trustDomain);
  if (held !== undefined && held.pem === pem) return held.roots;
  const roots = pem === "" ? [] : decodeCertificatesPem(pem).map((der) => parseCertificateDer(der));
  byDomain.set(trustDomain, { pem, roots });
  return roots;
}

/** Parsed roots of a trust domain; throws ERR_BUNDLE_NO_ROOTS when there are none. */
export function bundleRoots(bundle: TrustBundle, trustDomain: string): readonly ParsedCertificate[] {
  const own = storage.get(bundle);
  const list = own === undefined ? rootsOfForeign(bundle, trustDomain) : own.get(trustDomain);
  if (!list || list.length === 0) {
    throw new SpiffeError(
      "ERR_BUNDLE_NO_ROOTS",
      `trust bundle has no roots for trust domain "${trustDomain}"`,
      {
        trustDomain,
      },
    );
  }
  return list;
}

/**
 * The X.509 roots trusted for each trust domain. A trust domain may hold several roots at once,
 * which is how a root rotation is published (old and new root side by side). Istio equivalent:
 * the `root-cert.pem` of the `istio-ca-root-cert` ConfigMap.
 */
export class TrustBundle {
  readonly #roots = new Map<string, ParsedCertificate[]>();

  constructor() {
    storage.set(this, this.#roots);
  }

  /** A bundle with the certificates of `pem` as roots of `trustDomain`. */
  static fromPem(trustDomain: string, pem: string): TrustBundle {
    return new TrustBundle().addRoots(trustDomain, pem);
  }

  /**
   * Adds every certificate in `pem` as a root of `trustDomain` (duplicates are ignored).
   * @throws SpiffeError `ERR_TRUST_DOMAIN_INVALID`, `ERR_PEM_INVALID`
   */
  addRoots(trustDomain: string, pem: string): this {
    parseTrustDomain(trustDomain);
    const parsed = decodeCertificatesPem(pem).map((der) => parseCertificateDer(der));
    const list = this.#roots.get(trustDomain) ?? [];
    for (const cert of parsed) {
      if (!list.some((r) => r.der.equals(cert.der))) list.push(cert);
    }
    this.#roots.set(trustDomain, list);
    return this;
  }

  /** Removes the roots of `trustDomain` that appear in `pem`; returns how many were removed. */
  removeRoots(trustDomain: string, pem: string): number {
    const list = this.#roots.get(trustDomain);
    if (!list) return 0;
    const gone = decodeCertificatesPem(pem);
    const kept = list.filter((r) => !gone.some((g) => g.equals(r.der)));
    if (kept.length === 0) this.#roots.delete(trustDomain);
    else this.#roots.set(trustDomain, kept);
    return list.length - kept.length;
  }

  /** Trust domains that have at least one root. */
  trustDomains(): string[] {
    return [...this.#roots.keys()].sort();
  }

  /** True when `trustDomain` has roots. */
  has(trustDomain: string): boolean {
    return this.#roots.has(trustDomain);
  }

  /** One PEM per root, for `trustDomain` or for every trust domain; fits Node's `tls` `ca` option. */
  rootsPem(trustDomain?: string): string[] {
    if (trustDomain !== undefined) return (this.#roots.get(trustDomain) ?? []).map((r) => r.pem);
    return this.trustDomains().flatMap((td) => this.rootsPem(td));
  }

  /** All roots (of one trust domain or all) concatenated as one PEM text. */
  toPem(trustDomain?: string): string {
    return this.rootsPem(trustDomain).join("");
  }

  /** A deep copy. */
  clone(): TrustBundle {
    const copy = new TrustBundle();
    for (const [td, list] of this.#roots) copy.#roots.set(td, [...list]);
    return copy;
  }
}

// Both builds of the package (ESM and CJS) accept each other's bundles as `instanceof TrustBundle`.
brandClass(TrustBundle, "@ambient/spiffe.TrustBundle");
