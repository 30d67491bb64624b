/**
 * The control plane's own TLS certificate, shaped like istiod's: its SPIFFE ID as the URI SAN plus the
 * DNS names (and IPs) clients dial, since Istio's ztunnel verifies the server by host name
 * (`istiod.istio-system.svc` by default), not by SPIFFE ID.
 */
import { createPrivateKey, randomBytes, webcrypto } from "node:crypto";
import { isIP } from "node:net";
import type { CaCertsPem } from "@ambient/spiffe/ca";
import type { experimental } from "@grpc/grpc-js";
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { ControlPlaneError } from "./errors.js";

/** The name ztunnel and istio-agent verify by default (ztunnel `CA_ADDRESS`/`XDS_ADDRESS` host). */
export const ISTIOD_SERVICE_NAME = "istiod.istio-system.svc";

/** A key and the certificate chain (leaf first, root last) for a TLS server. */
export interface ServingCertificate {
  certChainPem: string;
  privateKeyPem: string;
}

/** Options of {@link issueServingCertificate}. */
export interface ServingCertificateOptions {
  /** URI SAN, e.g. `spiffe://cluster.local/ns/istio-system/sa/istiod`. */
  spiffeId: string;
  /** DNS names and IP addresses the certificate is valid for (IPs go in IP SANs). */
  hosts: readonly string[];
  ttlSeconds: number;
  /** NotBefore is this much before now, for clock skew. Default 120 s, as istiod's certificates. */
  backdateSeconds?: number;
}

const ECDSA_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;

/** Each certificate block of `pem`, with `\n` line ends, for comparing certificates as text. */
export function pemBlocks(pem: string): string[] {
  return (
    pem.replace(/\r\n?/g, "\n").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  );
}

/** The serving hosts with istiod's service name first, duplicates and empty names removed. */
export function servingHosts(configured: readonly string[] = []): string[] {
  return [...new Set([ISTIOD_SERVICE_NAME, ...configured.map((h) => h.trim()).filter((h) => h !== "")])];
}

/**
 * Issues an ECDSA P-256 server certificate signed by the mesh CA key: URI SAN `spiffe://…/sa/istiod`,
 * DNS and IP SANs from `hosts`, serverAuth and clientAuth, empty subject (so the SAN is critical).
 */
export async function issueServingCertificate(
  cacerts: CaCertsPem,
  options: ServingCertificateOptions,
): Promise<ServingCertificate> {
  const { subtle } = webcrypto;
  const caKeyObject = createPrivateKey(cacerts.caKeyPem);
  const caKeyDer = caKeyObject.export({ format: "der", type: "pkcs8" });
  const caAlgorithm =
    caKeyObject.asymmetricKeyType === "ec"
      ? {
          ...ECDSA_P256,
          namedCurve: caKeyObject.asymmetricKeyDetails?.namedCurve === "prime256v1" ? "P-256" : "P-384",
          hash: "SHA-256",
        }
      : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  const signingKey = await subtle.importKey("pkcs8", caKeyDer, caAlgorithm, false, ["sign"]);
  const caCert = new x509.X509Certificate(cacerts.caCertPem);
  const keys = (await subtle.generateKey(ECDSA_P256, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  const now = Math.floor(Date.now() / 1000) * 1000;
  const notBefore = new Date(now - (options.backdateSeconds ?? 120) * 1000);
  const notAfter = new Date(Math.min(now + options.ttlSeconds * 1000, caCert.notAfter.getTime()));
  const names: x509.JsonGeneralName[] = [{ type: "url", value: options.spiffeId }];
  for (const host of options.hosts) names.push({ type: isIP(host) === 0 ? "dns" : "ip", value: host });
  const serial = randomBytes(16);
  serial[0] = (serial[0] as number) & 0x7f;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serial.toString("hex"),
    issuer: caCert.subject,
    subject: "",
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey,
    signingAlgorithm: caAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      new x509.SubjectAlternativeNameExtension(names, true),
    ],
  });
  const pkcs8 = await subtle.exportKey("pkcs8", keys.privateKey);
  const privateKeyPem = x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
  const chain = [leaf.toString("pem"), ...pemBlocks(cacerts.caCertPem)];
  for (const root of pemBlocks(cacerts.rootCertPem)) if (!chain.includes(root)) chain.push(root);
  return {
    certChainPem: `${chain.map((c) => c.trim()).join("\n")}\n`,
    privateKeyPem: `${privateKeyPem.trim()}\n`,
  };
}

/** The longest `setTimeout` delay (about 24.8 days); longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of {@link RenewingServingCertificate.start}. */
export interface ServingCertificateRenewal {
  /** Issues a certificate valid for `ttlSeconds` from now. */
  issue: () => Promise<ServingCertificate>;
  ttlSeconds: number;
  /** Called with the new certificate's expiry after each renewal (not for the first certificate). */
  renewed?: (notAfter: Date) => void;
  /** Called when a renewal fails; the current certificate stays served and it is tried again. */
  failed?: (err: unknown, retryInMs: number) => void;
}

/**
 * The control plane's serving certificate, replaced before it expires: a grpc-js certificate
 * provider (`experimental.createCertificateProviderServerCredentials`), so new TLS connections get
 * the new certificate and open ones carry on. A new certificate is issued at half its predecessor's
 * lifetime (as ztunnel renews its own), and a failed issue is tried again every tenth of the lifetime
 * (at most a minute apart) while the current one is served.
 */
export class RenewingServingCertificate implements experimental.CertificateProvider {
  #current: ServingCertificate;
  #notAfter: Date;
  #update: experimental.IdentityCertificateUpdate;
  readonly #listeners = new Set<experimental.IdentityCertificateUpdateListener>();
  readonly #options: ServingCertificateRenewal;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(first: ServingCertificate, options: ServingCertificateRenewal) {
    this.#options = options;
    this.#current = first;
    this.#notAfter = notAfterOf(first);
    this.#update = updateOf(first);
  }

  /** Issues the first certificate and schedules its renewals. */
  static async start(options: ServingCertificateRenewal): Promise<RenewingServingCertificate> {
    const renewing = new RenewingServingCertificate(await options.issue(), options);
    renewing.#schedule(renewing.#renewAt());
    return renewing;
  }

  /** The certificate served now. */
  get current(): ServingCertificate {
    return this.#current;
  }

  /** When the certificate served now expires. */
  get notAfter(): Date {
    return this.#notAfter;
  }

  /**
   * Issues a new certificate now and serves it to new connections. One that would be expired within
   * a second (the mesh CA's own certificate has expired, and caps it) is refused with
   * `ERR_CONTROL_PLANE_STATE`, and the current one stays served.
   */
  async renew(): Promise<void> {
    const next = await this.#options.issue();
    if (this.#closed) return;
    const notAfter = notAfterOf(next);
    if (notAfter.getTime() <= Date.now() + 1000) {
      throw new ControlPlaneError(
        "ERR_CONTROL_PLANE_STATE",
        `the new serving certificate expires at ${notAfter.toISOString()}: the mesh CA certificate that signs it has expired`,
      );
    }
    this.#current = next;
    this.#notAfter = notAfter;
    this.#update = updateOf(next);
    for (const listener of this.#listeners) listener(this.#update);
    this.#options.renewed?.(notAfter);
  }

  /** Stops renewing. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  addIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#listeners.add(listener);
    // grpc-js registers its own watcher only after adding this listener: an update given now would
    // reach no server, so it is given on the next microtask (the server drops connections until then).
    queueMicrotask(() => {
      if (this.#listeners.has(listener)) listener(this.#update);
    });
  }

  removeIdentityCertificateListener(listener: experimental.IdentityCertificateUpdateListener): void {
    this.#listeners.delete(listener);
  }

  // The server asks for no client certificate: no CA to provide.
  addCaCertificateListener(): void {}
  removeCaCertificateListener(): void {}

  /**
   * When the current certificate is to be replaced: half way to its expiry (which the CA's own may
   * bring before the TTL), and not sooner than a second from now.
   */
  #renewAt(): number {
    const now = Date.now();
    return now + Math.max(1000, (this.#notAfter.getTime() - now) / 2);
  }

  #schedule(at: number): void {
    if (this.#closed) return;
    const wait = at - Date.now();
    if (wait > MAX_TIMER_MS) {
      this.#timer = setTimeout(() => this.#schedule(at), MAX_TIMER_MS);
    } else {
      this.#timer = setTimeout(() => void this.#renewNow(), Math.max(0, wait));
    }
    this.#timer.unref();
  }

  async #renewNow(): Promise<void> {
    try {
      await this.renew();
      this.#schedule(this.#renewAt());
    } catch (err) {
      const retryInMs = Math.min(60_000, (this.#options.ttlSeconds * 1000) / 10);
      this.#options.failed?.(err, retryInMs);
      this.#schedule(Date.now() + retryInMs);
    }
  }
}

function notAfterOf(certificate: ServingCertificate): Date {
  const [leaf] = pemBlocks(certificate.certChainPem);
  return new x509.X509Certificate(leaf as string).notAfter;
}

function updateOf(certificate: ServingCertificate): experimental.IdentityCertificateUpdate {
  return {
    certificate: Buffer.from(certificate.certChainPem),
    privateKey: Buffer.from(certificate.privateKeyPem),
  };
}
