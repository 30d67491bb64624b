import type { X509Certificate as NodeX509Certificate } from "node:crypto";
import { checkLeaf, spiffeIdOfParsed } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import { nameConstraintViolation } from "./name-constraints.js";
import { invalidOption, numberOption, optionsObject } from "./options.js";
import {
  KEY_USAGE,
  MIN_RSA_BITS,
  type ParsedCertificate,
  parseCertificateDer,
} from "./parsed-certificate.js";
import { decodeCertificatesPem } from "./pem.js";
import type { SpiffeId } from "./spiffe-id.js";
import { bundleRoots, TrustBundle } from "./trust-bundle.js";

/** A certificate chain, leaf first: PEM text, a list of PEM/DER certificates, or Node certificates. */
export type CertificateChainInput = string | ReadonlyArray<string | Uint8Array | NodeX509Certificate>;

/** A TLS use an SVID can be verified for, as named by its extendedKeyUsage purpose. */
export type SvidPurpose = "serverAuth" | "clientAuth";

const PURPOSE_OIDS: Readonly<Record<SvidPurpose, string>> = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};
const TLS_PURPOSES: readonly SvidPurpose[] = ["serverAuth", "clientAuth"];
const ANY_EXTENDED_KEY_USAGE = "2.5.29.37.0";

/** Options of {@link verifySvid}. */
export interface VerifySvidOptions {
  /** Point in time to validate at; a valid `Date`. Default: now. */
  now?: Date;
  /**
   * Tolerated clock skew on both ends of every validity window, a finite number of seconds >= 0.
   * Default 0 s (as rustls/webpki in ztunnel).
   */
  clockSkewSeconds?: number;
  /** When set, the SVID's trust domain must be this one. Default: any trust domain present in the bundle. */
  trustDomain?: string;
  /** Longest accepted chain including the root, a positive integer. Default 10. */
  maxChainLength?: number;
  /**
   * The use the chain must allow: `"serverAuth"` for a TLS server's SVID, `"clientAuth"` for a TLS
   * client's. Every certificate on the path that has an extendedKeyUsage extension (leaf, intermediates,
   * root) must list it or anyExtendedKeyUsage. Default: either one, as long as every such certificate
   * allows the same one (a leaf whose extendedKeyUsage has neither is refused).
   */
  purpose?: SvidPurpose;
}

// CA certificates recur in every chain a mesh sees, so their parsed form (and imported public key)
// is kept in a small FIFO cache keyed by DER.
const CA_CACHE_LIMIT = 256;
const caCache = new Map<string, ParsedCertificate>();

function parseCached(der: Uint8Array, isLeaf: boolean): ParsedCertificate {
  if (isLeaf) return parseCertificateDer(der);
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  const hit = caCache.get(key);
  if (hit) return hit;
  const parsed = parseCertificateDer(der);
  if (parsed.isCa) {
    if (caCache.size >= CA_CACHE_LIMIT) caCache.delete(caCache.keys().next().value as string);
    caCache.set(key, parsed);
  }
  return parsed;
}

/** Decodes a chain input into parsed certificates, leaf first. */
export function parseChain(chain: CertificateChainInput): ParsedCertificate[] {
  const ders: Uint8Array[] = [];
  if (typeof chain === "string") {
    ders.push(...decodeCertificatesPem(chain));
  } else if (Array.isArray(chain)) {
    for (const item of chain as ReadonlyArray<unknown>) {
      if (typeof item === "string") ders.push(...decodeCertificatesPem(item));
      else if (item instanceof Uint8Array) ders.push(item);
      else if (
        typeof item === "object" &&
        item !== null &&
        (item as { raw?: unknown }).raw instanceof Uint8Array
      ) {
        ders.push((item as { raw: Uint8Array }).raw);
      } else
        throw new SpiffeError(
          "ERR_PEM_INVALID",
          "chain element is not a PEM string, DER bytes or certificate",
        );
    }
  } else {
    throw new SpiffeError(
      "ERR_PEM_INVALID",
      "certificate chain must be PEM text or an array of certificates",
    );
  }
  if (ders.length === 0) throw new SpiffeError("ERR_CHAIN_EMPTY", "certificate chain is empty");
  return ders.map((der, i) => parseCached(der, i === 0));
}

function describe(cert: ParsedCertificate, index: number): string {
  const name = cert.subject || (cert.uriSans[0] ?? "<empty subject>");
  return `certificate #${index} (${name})`;
}

// Both comparisons are written to fail closed: a NaN time or skew makes a certificate invalid.
function checkValidity(cert: ParsedCertificate, label: string, now: number, skewMs: number): void {
  if (!(now + skewMs >= cert.notBefore.getTime())) {
    throw new SpiffeError(
      "ERR_CERT_NOT_YET_VALID",
      `${label} is not valid before ${cert.notBefore.toISOString()}`,
      { notBefore: cert.notBefore },
    );
  }
  if (!(now - skewMs <= cert.notAfter.getTime())) {
    throw new SpiffeError("ERR_CERT_EXPIRED", `${label} expired at ${cert.notAfter.toISOString()}`, {
      notAfter: cert.notAfter,
    });
  }
}

function checkIssuerFlags(cert: ParsedCertificate, label: string, caBelow: number): void {
  if (!cert.isCa)
    throw new SpiffeError("ERR_CERT_ISSUER_INVALID", `${label} signs certificates but is not a CA`);
  if (cert.keyUsage !== undefined && (cert.keyUsage & KEY_USAGE.keyCertSign) === 0) {
    throw new SpiffeError("ERR_CERT_ISSUER_INVALID", `${label} signs certificates but lacks keyCertSign`);
  }
  if (cert.pathLength !== undefined && caBelow > cert.pathLength) {
    throw new SpiffeError(
      "ERR_CERT_ISSUER_INVALID",
      `${label} allows ${cert.pathLength} intermediate CA(s) below it but the chain has ${caBelow}`,
    );
  }
  // Constraints that cannot be enforced as written: the CA is refused, not trusted for all names.
  const problem = cert.nameConstraints?.problem;
  if (problem !== undefined) {
    throw new SpiffeError(
      "ERR_CERT_ISSUER_INVALID",
      `${label} has nameConstraints this verifier cannot enforce: ${problem}`,
    );
  }
  if (cert.unhandledCritical.length > 0) {
    throw new SpiffeError(
      "ERR_CERT_ISSUER_INVALID",
      `${label} has unsupported critical extension(s) ${cert.unhandledCritical.join(", ")}`,
    );
  }
}

/**
 * The purposes among `wanted` that `cert`'s extendedKeyUsage allows: all of them when it has no such
 * extension or lists anyExtendedKeyUsage.
 */
function allowedPurposes(cert: ParsedCertificate, wanted: readonly SvidPurpose[]): SvidPurpose[] {
  const eku = cert.extKeyUsage;
  if (eku === undefined || eku.includes(ANY_EXTENDED_KEY_USAGE)) return [...wanted];
  return wanted.filter((p) => eku.includes(PURPOSE_OIDS[p]));
}

/** Narrows the purposes still open on the path to those an issuer allows; refuses the issuer if none is left. */
function checkIssuerPurposes(
  cert: ParsedCertificate,
  label: string,
  open: readonly SvidPurpose[],
): SvidPurpose[] {
  const left = allowedPurposes(cert, open);
  if (left.length === 0) {
    throw new SpiffeError(
      "ERR_CERT_ISSUER_INVALID",
      `${label} extendedKeyUsage does not allow ${open.join(" or ")}, which the certificates below it need`,
      { extKeyUsage: cert.extKeyUsage },
    );
  }
  return left;
}

/** Refuses a certificate whose signature uses an algorithm not accepted in a chain (SHA-1 and the like). */
function checkSignatureAlgorithm(cert: ParsedCertificate, label: string): void {
  const weak = cert.weakSignatureAlgorithm;
  if (weak !== undefined) {
    throw new SpiffeError(
      "ERR_CERT_WEAK_ALGORITHM",
      `${label} is signed with ${weak}, which is not accepted`,
      {
        signatureAlgorithm: cert.signatureOid,
      },
    );
  }
}

/** Refuses a certificate whose key, which signs in the chain or the handshake, is RSA under 2048 bits. */
function checkKeyStrength(cert: ParsedCertificate, label: string): void {
  const bits = cert.weakKeyBits;
  if (bits !== undefined) {
    throw new SpiffeError(
      "ERR_CERT_WEAK_ALGORITHM",
      `${label} has a ${bits}-bit RSA key; at least ${MIN_RSA_BITS} bits are required`,
      { keyBits: bits },
    );
  }
}

/** Name and key identifiers say `issuer` could have issued `child`. */
function couldHaveIssued(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  if (!child.issuerDer.equals(issuer.subjectDer)) return false;
  return (
    child.authorityKeyId === undefined ||
    issuer.subjectKeyId === undefined ||
    child.authorityKeyId === issuer.subjectKeyId
  );
}

function signedBy(child: ParsedCertificate, issuer: ParsedCertificate): boolean {
  return couldHaveIssued(child, issuer) && child.verifySignature(issuer);
}

/**
 * Refuses anything but a {@link TrustBundle} of this package where `caller` needs one.
 * @throws SpiffeError `ERR_OPTIONS_INVALID`
 */
export function checkBundle(caller: string, bundle: unknown): asserts bundle is TrustBundle {
  if (!(bundle instanceof TrustBundle)) throw invalidOption(caller, "bundle", "a TrustBundle", bundle);
}

/**
 * The checked options of {@link verifySvid}: a comparison against an invalid time or a NaN skew is
 * always false, and would let every certificate pass its validity checks.
 */
function checkVerifyOptions(options: VerifySvidOptions): {
  now: number;
  skewMs: number;
  maxLength: number;
  purposes: readonly SvidPurpose[];
} {
  const o = optionsObject("verifySvid", options);
  let now: number;
  if (o.now === undefined) now = Date.now();
  else if (o.now instanceof Date && Number.isFinite(o.now.getTime())) now = o.now.getTime();
  else throw invalidOption("verifySvid", "now", "a valid Date", o.now);
  const skewSeconds = numberOption("verifySvid", "clockSkewSeconds", o.clockSkewSeconds, 0, { min: 0 });
  const maxLength = numberOption("verifySvid", "maxChainLength", o.maxChainLength, 10, {
    min: 1,
    integer: true,
  });
  if (o.trustDomain !== undefined && typeof o.trustDomain !== "string") {
    throw invalidOption("verifySvid", "trustDomain", "a string", o.trustDomain);
  }
  let purposes = TLS_PURPOSES;
  if (o.purpose !== undefined) {
    if (!TLS_PURPOSES.includes(o.purpose)) {
      throw invalidOption("verifySvid", "purpose", '"serverAuth" or "clientAuth"', o.purpose);
    }
    purposes = [o.purpose];
  }
  return { now, skewMs: skewSeconds * 1000, maxLength, purposes };
}

/**
 * Validates an X.509-SVID chain against a trust bundle and returns its SPIFFE ID.
 *
 * Path validation: every certificate inside its validity window (with `clockSkewSeconds`), each
 * signature verifies with its issuer's key using SHA-256 or stronger (ECDSA, RSA, RSA-PSS) or Ed25519,
 * no RSA key under 2048 bits signs anything (leaf, intermediates, the root that anchors the path),
 * issuers are CAs with keyCertSign and respect
 * pathLenConstraint, no unsupported critical extensions, the nameConstraints of every CA on the path
 * (the bundle root's included) hold for the names below it: the SPIFFE ID's trust domain for URI
 * constraints, dNSName and iPAddress SANs, non-empty subjects and directoryName SANs (RFC 5280
 * 4.2.1.10; a CA constraining another name type, or with minimum/maximum, is refused), every extendedKeyUsage on the path allows `purpose` (see {@link VerifySvidOptions.purpose}), and the
 * path ends at a root the bundle holds for the SVID's trust domain. Then the SVID leaf rules: exactly
 * one URI SAN that is a valid SPIFFE ID with a path, not a CA, no keyCertSign or cRLSign. A certificate
 * that repeats an extension is not decoded (`ERR_PEM_INVALID`).
 *
 * @param chain Leaf first; intermediates may follow in any order; a trailing root is allowed.
 * @throws SpiffeError whose `code` names the broken rule; `ERR_OPTIONS_INVALID` when `bundle` is not a
 *   {@link TrustBundle}, `now` not a valid Date, `clockSkewSeconds` not a finite number >= 0,
 *   `maxChainLength` not a positive integer or `purpose` not `"serverAuth"` or `"clientAuth"`.
 */
export function verifySvid(
  chain: CertificateChainInput,
  bundle: TrustBundle,
  options: VerifySvidOptions = {},
): SpiffeId {
  const { now, skewMs, maxLength, purposes } = checkVerifyOptions(options);
  checkBundle("verifySvid", bundle);
  const certs = parseChain(chain);
  const leaf = certs[0] as ParsedCertificate;
  const id = spiffeIdOfParsed(leaf);
  if (options.trustDomain !== undefined && id.trustDomain !== options.trustDomain) {
    throw new SpiffeError(
      "ERR_SVID_TRUST_DOMAIN_MISMATCH",
      `SVID ${id} is not in trust domain "${options.trustDomain}"`,
      { spiffeId: id.toString() },
    );
  }
  if (!bundle.has(id.trustDomain)) {
    throw new SpiffeError(
      "ERR_SVID_TRUST_DOMAIN_MISMATCH",
      `SVID ${id} belongs to trust domain "${id.trustDomain}", which the trust bundle has no roots for`,
      { spiffeId: id.toString() },
    );
  }
  const roots = bundleRoots(bundle, id.trustDomain);
  checkLeaf(leaf, id);
  const leafPurposes = allowedPurposes(leaf, purposes);
  if (leafPurposes.length === 0) {
    throw new SpiffeError(
      "ERR_SVID_LEAF_INVALID",
      `leaf SVID extendedKeyUsage does not allow ${purposes.join(" or ")} (X509-SVID 4.4)`,
      { extKeyUsage: leaf.extKeyUsage },
    );
  }

  checkValidity(leaf, "leaf SVID", now, skewMs);

  validatePath(leaf, "leaf SVID", certs.slice(1), roots, {
    now,
    skewMs,
    maxLength,
    trustDomain: id.trustDomain,
    purposes: leafPurposes,
  });
  return id;
}

/** Path validation context for {@link validatePath}. */
export interface PathContext {
  now: number;
  skewMs: number;
  maxLength: number;
  trustDomain: string;
  /**
   * The extendedKeyUsage purposes the certificates below still allow; each issuer must allow one of
   * them. Undefined: extendedKeyUsage is not checked.
   */
  purposes?: readonly SvidPurpose[];
}

/** One certificate of a validated path and how messages name it. */
export interface PathCertificate {
  cert: ParsedCertificate;
  label: string;
}

/**
 * Enforces the nameConstraints of every CA on `path` (start first, the trust anchor last) on the
 * certificates below it, as RFC 5280 6.1.3 (b) and (c): the start always, the intermediates unless
 * self-issued. The trust anchor's own constraints count too, as OpenSSL and Go enforce them.
 * @throws SpiffeError `ERR_CERT_NAME_NOT_PERMITTED`
 */
function enforceNameConstraints(path: readonly PathCertificate[]): void {
  for (let j = path.length - 1; j > 0; j--) {
    const ca = path[j] as PathCertificate;
    const constraints = ca.cert.nameConstraints;
    if (constraints === undefined) continue;
    for (let i = j - 1; i >= 0; i--) {
      const below = path[i] as PathCertificate;
      if (i > 0 && below.cert.selfIssued) continue;
      const violation = nameConstraintViolation(below.cert.names, constraints);
      if (violation !== undefined) {
        throw new SpiffeError(
          "ERR_CERT_NAME_NOT_PERMITTED",
          `${below.label}: ${violation} in the nameConstraints of ${ca.label}`,
        );
      }
    }
  }
}

/**
 * Walks from `start` up through `intermediates` to one of `roots`, checking validity windows,
 * signatures (and their algorithms), key sizes and issuer flags on the way, then the nameConstraints
 * of every CA on the path. `start` itself is only checked for its signature, key size and names.
 * Returns the path, `start` first and the trust anchor last.
 */
export function validatePath(
  start: ParsedCertificate,
  startLabel: string,
  intermediates: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
  ctx: PathContext,
): PathCertificate[] {
  const { now, skewMs, maxLength } = ctx;
  let purposes = ctx.purposes;
  const certs = [start, ...intermediates];
  const pool = [...intermediates];
  let current = start;
  let currentLabel = startLabel;
  const path: PathCertificate[] = [{ cert: start, label: startLabel }];
  const done = (): PathCertificate[] => {
    enforceNameConstraints(path);
    return path;
  };
  // Number of non-self-issued intermediate CAs already on the path below the next issuer.
  let caBelow = 0;
  // The start's key signs too: the TLS handshake for a leaf, certificates for a CA.
  checkKeyStrength(start, startLabel);
  // `length` certificates are on the path so far; the issuer looked for would be one more.
  for (let length = 1; length <= maxLength; length++) {
    if (roots.some((r) => r.der.equals(current.der))) return done();
    if (length === maxLength) break;
    // Before looking for the issuer: a refused algorithm is reported as such, not as a bad signature.
    checkSignatureAlgorithm(current, currentLabel);
    const root = roots.find((r) => signedBy(current, r));
    if (root) {
      const label = `trust bundle root (${root.subject || "<empty subject>"})`;
      checkValidity(root, label, now, skewMs);
      checkIssuerFlags(root, label, caBelow);
      if (purposes !== undefined) checkIssuerPurposes(root, label, purposes);
      checkKeyStrength(root, label);
      path.push({ cert: root, label });
      return done();
    }
    const index = pool.findIndex((c) => signedBy(current, c));
    if (index === -1) {
      const nameMatch = [...roots, ...pool].some((c) => couldHaveIssued(current, c));
      if (nameMatch) {
        throw new SpiffeError(
          "ERR_CERT_SIGNATURE_INVALID",
          `${currentLabel}: signature does not verify with the key of its issuer "${current.issuer}"`,
        );
      }
      throw new SpiffeError(
        "ERR_CHAIN_UNTRUSTED",
        `${currentLabel}: issuer "${current.issuer}" is neither in the chain nor a root of trust domain "${ctx.trustDomain}"`,
      );
    }
    const issuer = pool[index] as ParsedCertificate;
    pool.splice(index, 1);
    const label = describe(issuer, certs.indexOf(issuer));
    checkValidity(issuer, label, now, skewMs);
    checkIssuerFlags(issuer, label, caBelow);
    if (purposes !== undefined) purposes = checkIssuerPurposes(issuer, label, purposes);
    checkKeyStrength(issuer, label);
    if (!issuer.selfIssued) caBelow++;
    path.push({ cert: issuer, label });
    current = issuer;
    currentLabel = label;
  }
  throw new SpiffeError("ERR_CHAIN_UNTRUSTED", `chain is longer than ${maxLength} certificates`);
}
