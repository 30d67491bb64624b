import { createHash, randomBytes, sign } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseCsr } from "./csr.js";
import {
  childrenOf,
  encodeOid,
  encodeTime,
  encodeUnsignedInteger,
  extension,
  readTlv,
  seq,
  tlv,
} from "./der.js";
import { SpiffeError } from "./errors.js";
import { generateKeyPair, type KeyAlgorithm, loadSigningKey, type SigningKey } from "./key-pair.js";
import { nameConstraintViolation } from "./name-constraints.js";
import { invalidOption, msOption, numberOption, optionsObject, requiredOptions } from "./options.js";
import { type ParsedCertificate, parseCertificateDer } from "./parsed-certificate.js";
import { decodeCertificatesPem, encodePem } from "./pem.js";
import { parseTrustDomain, SpiffeId } from "./spiffe-id.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { TrustBundle } from "./trust-bundle.js";
import { type PathCertificate, validatePath } from "./verify-svid.js";
import { x509 } from "./x509.js";
import type { X509Svid } from "./x509-svid.js";

const DAY = 24 * 60 * 60;

/** Istio's plugged-in CA material (`cacerts` secret layout), as PEM text. */
export interface CaCertsPem {
  /** `ca-cert.pem`: the signing (intermediate) certificate. */
  caCertPem: string;
  /** `ca-key.pem`: its private key. */
  caKeyPem: string;
  /** `root-cert.pem`: the root(s) that anchor the chain. */
  rootCertPem: string;
  /** `cert-chain.pem`: signing certificate up to the root. Default: `caCertPem` then `rootCertPem`. */
  certChainPem?: string;
}

/**
 * Reads Istio's `cacerts` directory: `ca-cert.pem`, `ca-key.pem`, `root-cert.pem` and, when present,
 * `cert-chain.pem`.
 * @throws SpiffeError `ERR_CA_CONFIG_INVALID` when a required file cannot be read.
 */
export async function loadCaCertsDirectory(dir: string): Promise<CaCertsPem> {
  const read = async (name: string, required: boolean): Promise<string | undefined> => {
    try {
      return await readFile(join(dir, name), "utf8");
    } catch (cause) {
      if (!required) return undefined;
      throw new SpiffeError("ERR_CA_CONFIG_INVALID", `cannot read ${name} in ${dir}`, { cause });
    }
  };
  const [caCertPem, caKeyPem, rootCertPem, certChainPem] = await Promise.all([
    read("ca-cert.pem", true),
    read("ca-key.pem", true),
    read("root-cert.pem", true),
    read("cert-chain.pem", false),
  ]);
  return {
    caCertPem: caCertPem as string,
    caKeyPem: caKeyPem as string,
    rootCertPem: rootCertPem as string,
    ...(certChainPem === undefined ? {} : { certChainPem }),
  };
}

/** Options of {@link createCertificateAuthority}. */
export interface CertificateAuthorityOptions {
  /** Trust domain of the mesh. Default `cluster.local`; Istio `meshConfig.trustDomain`. */
  trustDomain?: string;
  /**
   * Plugged-in signing CA (Istio `cacerts`). Default: none, a self-signed root is generated.
   * Give the PEM texts or a directory holding the four files.
   */
  cacerts?: CaCertsPem | { dir: string };
  /** Key algorithm of a generated root. Default `ECDSA_P256`; istiod uses RSA 2048 (`CITADEL_SELF_SIGNED_CA_RSA_KEY_SIZE`). */
  rootKeyAlgorithm?: KeyAlgorithm;
  /** Lifetime of a generated root. Default 10 years; istiod `CITADEL_SELF_SIGNED_CA_CERT_TTL` (3650 d). */
  rootTtlSeconds?: number;
  /** Organization of a generated root's subject. Default: the trust domain, as istiod. */
  organization?: string;
  /**
   * The `cacerts` hold a self-signed root this CA generated earlier and may rotate: what
   * {@link CertificateAuthority.exportCacerts} wrote, as istiod keeps its own root in the
   * `istio-ca-secret` (an operator's `cacerts` Secret is never rotated by istiod). `ca-cert.pem` must
   * then be a self-signed CA certificate that is one of the roots. Default false with `cacerts`;
   * without them the CA generates its root and is always self-signed.
   */
  selfSigned?: boolean;
  /**
   * Workload certificate lifetime when the request gives none (or <= 0), at most `maxTtlSeconds`.
   * Default 24 h; Istio `DEFAULT_WORKLOAD_CERT_TTL`.
   */
  defaultTtlSeconds?: number;
  /** Longest workload certificate lifetime; longer requests are refused. Default 90 d; Istio `MAX_WORKLOAD_CERT_TTL`. */
  maxTtlSeconds?: number;
  /** How far NotBefore is backdated to absorb clock skew, zero or more seconds. Default 120 s, as istiod. */
  backdateSeconds?: number;
  /** Clock. Default `() => new Date()`. */
  clock?: () => Date;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Options of {@link CertificateAuthority.sign}. */
export interface SignOptions {
  /**
   * The identity the certificate is for. The CA decides it; a CSR asking for another one is refused,
   * unless `ignoreCsrSans` is set.
   */
  spiffeId: SpiffeId | string;
  /**
   * Requested lifetime in seconds; `0` or absent means the default. Anything but a finite number >= 0
   * is refused with `ERR_CA_SIGN_REFUSED`.
   */
  ttlSeconds?: number;
  /**
   * Do not compare the CSR's URI SANs with `spiffeId`: the certificate names `spiffeId` alone, whatever
   * the CSR asks for. For a signer that has authenticated its caller and decided the identity itself,
   * as the certificate service does (a node agent's CSR may carry a stale or placeholder SAN, e.g.
   * during a trust domain migration). The CSR's signature and key are checked either way. Default
   * false: a CSR naming another identity is refused with `ERR_CSR_IDENTITY_MISMATCH`.
   */
  ignoreCsrSans?: boolean;
}

/** Options of {@link CertificateAuthority.issue}. */
export interface IssueOptions extends SignOptions {
  /** Key algorithm of the generated workload key. Default `ECDSA_P256`. */
  keyAlgorithm?: KeyAlgorithm;
}

/** Options of {@link CertificateAuthority.rotateRoot}. */
export interface RotateRootOptions {
  /**
   * Re-issue the root for the key it already has instead of generating a new key, as istiod rotates
   * its self-signed root. The new root has the old one's subject and key, so certificates issued
   * under either verify against either: no workload has to learn the new root before the switch.
   * Default false (a new key: the old root must stay trusted until every workload has renewed).
   */
  reuseKey?: boolean;
}

/** A signed workload certificate with its chain. */
export interface SignedCertificate {
  spiffeId: SpiffeId;
  /**
   * One element per certificate, each PEM ending in a newline: leaf first, then the signing chain,
   * and last every root of the trust domain's bundle concatenated in one element (Istio's
   * `cert_chain`, whose last element ztunnel reads as all the roots it trusts).
   */
  certChain: string[];
  notBefore: Date;
  notAfter: Date;
}

/** A mesh certificate authority that turns CSRs into X.509-SVIDs. */
export interface CertificateAuthority {
  readonly trustDomain: string;
  /** True when the CA generated its own root (root rotation is available). */
  readonly selfSigned: boolean;
  /** A snapshot of the roots clients should trust (several during a root rotation). */
  trustBundle(): TrustBundle;
  /** The active root, PEM. */
  rootCertPem(): string;
  /**
   * Signs a PEM CSR into a workload SVID for `spiffeId`, which is the certificate's only SAN. The CSR's
   * key must be ECDSA P-256 or P-384 (uncompressed point) or RSA of at least 2048 bits.
   * @throws SpiffeError `ERR_CSR_INVALID` (also for any other key), `ERR_CSR_IDENTITY_MISMATCH`,
   * `ERR_CA_SIGN_REFUSED`; `ERR_OPTIONS_INVALID` without options or a `spiffeId`.
   */
  sign(csrPem: string, options: SignOptions): Promise<SignedCertificate>;
  /**
   * Generates a key and issues an SVID for it in one step.
   * @throws SpiffeError `ERR_OPTIONS_INVALID` without options or a `spiffeId`; `ERR_SPIFFE_ID_INVALID`.
   */
  issue(options: IssueOptions): Promise<X509Svid>;
  /**
   * Issues a new root and makes it the signer; the old root stays in the trust bundle until
   * {@link CertificateAuthority.retireOldRoots}. Self-signed CAs only.
   * @throws SpiffeError `ERR_CA_CONFIG_INVALID` for a plugged-in CA.
   */
  rotateRoot(options?: RotateRootOptions): Promise<void>;
  /**
   * Takes a root that another holder of this CA's key re-issued (`rotateRoot({ reuseKey: true })` on
   * another replica, read back from the Secret they share): when `rootPem` is a self-signed CA
   * certificate with the active root's subject and public key, it joins the trust bundle, and becomes
   * the signer when it expires later than the active root. Returns true when it changed anything.
   * Self-signed CAs only.
   * @throws SpiffeError `ERR_CA_CONFIG_INVALID` for another key or subject, or a plugged-in CA.
   */
  adoptRoot(rootPem: string): boolean;
  /** Removes every root but the active one from the trust bundle; returns how many were removed. */
  retireOldRoots(): number;
  /**
   * The active signing CA in Istio's `cacerts` layout, **private key included**: what to persist so a
   * generated root survives a restart (istiod keeps it in the `istio-ca-secret`), to plug back in with
   * the `cacerts` option. `rootCertPem` lists every root of the trust bundle (two during a rotation).
   */
  exportCacerts(): Required<CaCertsPem>;
  /**
   * True when the active root has less than `gracePercent` of its lifetime left
   * (default 20, istiod's `CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE`).
   */
  rootNeedsRotation(gracePercent?: number): boolean;
}

interface Signer {
  key: SigningKey;
  /** The private key, PKCS#8 PEM (as generated, or as read from `ca-key.pem`). */
  keyPem: string;
  cert: ParsedCertificate;
  /** Chain after the leaf: signing certificate first, root last, one PEM each. */
  chainPem: string[];
  /** DER AlgorithmIdentifier of the signature and the matching digest. */
  signatureAlgorithm: Buffer;
  hash: string;
  /** DER authorityKeyIdentifier extension pointing at the signer's key. */
  authorityKeyIdExtension: Buffer;
  /** The TBS fields after the serial and before the validity: signature algorithm and issuer. */
  algorithmAndIssuer: Buffer;
  /** The extensions every leaf carries, before its SAN: key usages, basic constraints, AKI. */
  leafExtensions: Buffer;
  root: ParsedCertificate;
}

const OID_SAN = "2.5.29.17";
const VERSION_V3 = tlv(0xa0, tlv(0x02, Buffer.from([2])));
const EMPTY_NAME = seq();
// keyUsage digitalSignature + keyEncipherment, critical (istiod's workload certificates).
const KEY_USAGE_EXT = extension("2.5.29.15", true, tlv(0x03, Buffer.from([0x05, 0xa0])));
const EXT_KEY_USAGE_EXT = extension(
  "2.5.29.37",
  false,
  seq(encodeOid("1.3.6.1.5.5.7.3.1"), encodeOid("1.3.6.1.5.5.7.3.2")),
);
const BASIC_CONSTRAINTS_LEAF_EXT = extension("2.5.29.19", true, seq());
// The SAN extension's OID and critical flag, ahead of the one value that changes per leaf.
const SAN_OID_CRITICAL = Buffer.concat([encodeOid(OID_SAN), Buffer.from([0x01, 0x01, 0xff])]);
const UNUSED_BITS_NONE = Buffer.from([0]);

function signatureAlgorithmOf(algorithm: KeyAlgorithm): { der: Buffer; hash: string } {
  switch (algorithm) {
    case "ECDSA_P256":
      return { der: seq(encodeOid("1.2.840.10045.4.3.2")), hash: "sha256" };
    case "ECDSA_P384":
      return { der: seq(encodeOid("1.2.840.10045.4.3.3")), hash: "sha384" };
    default:
      return { der: seq(encodeOid("1.2.840.113549.1.1.11"), Buffer.from([0x05, 0x00])), hash: "sha256" };
  }
}

/** A random positive 128-bit serial number. */
// Serial numbers come from a pooled random buffer: one randomBytes call per 256 certificates.
let serialPool = Buffer.alloc(0);
let serialOffset = 0;

function serialBytes(): Buffer {
  if (serialOffset + 16 > serialPool.length) {
    serialPool = randomBytes(16 * 256);
    serialOffset = 0;
  }
  const bytes = Buffer.from(serialPool.subarray(serialOffset, serialOffset + 16));
  serialOffset += 16;
  bytes[0] = (bytes[0] as number) & 0x7f;
  if (bytes[0] === 0) bytes[0] = 1;
  return bytes;
}

function serialNumber(): string {
  return serialBytes().toString("hex");
}

/** The signer's key identifier: its SKI, else the SHA-1 of its public key bits (RFC 5280 4.2.1.2). */
function keyIdentifier(cert: ParsedCertificate): Buffer {
  if (cert.subjectKeyId) return Buffer.from(cert.subjectKeyId, "hex");
  const spki = readTlv(cert.spkiDer, 0);
  const bits = childrenOf(cert.spkiDer, spki)[1];
  const keyBits = bits ? cert.spkiDer.subarray(bits.valueStart + 1, bits.end) : cert.spkiDer;
  return createHash("sha1").update(keyBits).digest();
}

function makeSigner(
  key: SigningKey,
  keyPem: string,
  certPem: string,
  chainPem: string[],
  root: ParsedCertificate,
): Signer {
  const cert = parseCertificateDer(decodeCertificatesPem(certPem)[0] as Buffer);
  const { der, hash } = signatureAlgorithmOf(key.algorithm);
  const authorityKeyIdExtension = extension("2.5.29.35", false, seq(tlv(0x80, keyIdentifier(cert))));
  return {
    key,
    keyPem,
    cert,
    chainPem,
    signatureAlgorithm: der,
    hash,
    authorityKeyIdExtension,
    algorithmAndIssuer: Buffer.concat([der, cert.subjectDer]),
    leafExtensions: Buffer.concat([
      KEY_USAGE_EXT,
      EXT_KEY_USAGE_EXT,
      BASIC_CONSTRAINTS_LEAF_EXT,
      authorityKeyIdExtension,
    ]),
    root,
  };
}

async function generateRoot(
  trustDomain: string,
  organization: string,
  algorithm: KeyAlgorithm,
  ttlSeconds: number,
  now: Date,
  existing?: { key: SigningKey; keyPem: string; subjectPem: string },
): Promise<{ key: SigningKey; keyPem: string; pem: string }> {
  let key: SigningKey;
  let keyPem: string;
  if (existing === undefined) {
    keyPem = (await generateKeyPair({ algorithm })).privateKeyPem;
    key = await loadSigningKey(keyPem);
  } else {
    ({ key, keyPem } = existing);
  }
  const notBefore = new Date(now.getTime() - 120_000);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    // A re-issued root keeps the old one's subject byte for byte: certificates name it as issuer.
    name:
      existing === undefined
        ? [{ O: [organization] }]
        : new x509.X509Certificate(existing.subjectPem).subjectName,
    notBefore,
    notAfter: new Date(now.getTime() + ttlSeconds * 1000),
    keys: { privateKey: key.privateKey, publicKey: key.publicKey },
    signingAlgorithm: key.signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      // X509-SVID appendix A: digitalSignature is for leaves only; a signing certificate has
      // keyCertSign and may have cRLSign.
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(key.publicKey),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: `spiffe://${trustDomain}` }], false),
    ],
  });
  return { key, keyPem, pem: cert.toString("pem").trimEnd().concat("\n") };
}

function positiveSeconds(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new SpiffeError(
      "ERR_CA_CONFIG_INVALID",
      `${name} must be a positive number of seconds, got ${value}`,
    );
  }
  return value;
}

/**
 * The NotBefore backdate in seconds: zero or more, as anything else would make NotBefore unencodable or
 * later than the signing time. Whole seconds, since X.509 times have no fractions.
 */
function backdateSecondsOf(value: number | undefined): number {
  if (value === undefined) return 120;
  if (!Number.isFinite(value) || value < 0) {
    throw new SpiffeError(
      "ERR_CA_CONFIG_INVALID",
      `backdateSeconds must be zero or a positive number of seconds, got ${value}`,
    );
  }
  return Math.floor(value);
}

async function pluggedSigner(cacerts: CaCertsPem, trustDomain: string, now: Date): Promise<Signer> {
  const key = await loadSigningKey(cacerts.caKeyPem).catch((cause: unknown) => {
    throw new SpiffeError("ERR_CA_CONFIG_INVALID", "ca-key.pem is not a usable private key", { cause });
  });
  let caDer: Buffer;
  let roots: ParsedCertificate[];
  let chain: ParsedCertificate[];
  try {
    const first = decodeCertificatesPem(cacerts.caCertPem)[0];
    if (!first) throw new SpiffeError("ERR_PEM_INVALID", "no certificate");
    caDer = first;
    roots = decodeCertificatesPem(cacerts.rootCertPem).map((d) => parseCertificateDer(d));
    chain = cacerts.certChainPem
      ? decodeCertificatesPem(cacerts.certChainPem).map((d) => parseCertificateDer(d))
      : [];
  } catch (cause) {
    throw new SpiffeError("ERR_CA_CONFIG_INVALID", "cacerts PEM files could not be decoded", { cause });
  }
  const ca = parseCertificateDer(caDer);
  if (!ca.isCa || (ca.keyUsage !== undefined && (ca.keyUsage & x509.KeyUsageFlags.keyCertSign) === 0)) {
    throw new SpiffeError("ERR_CA_CONFIG_INVALID", "ca-cert.pem is not a CA certificate with keyCertSign");
  }
  if (ca.notAfter.getTime() <= now.getTime() || ca.notBefore.getTime() > now.getTime()) {
    throw new SpiffeError(
      "ERR_CA_CONFIG_INVALID",
      `ca-cert.pem is not valid now (valid ${ca.notBefore.toISOString()} to ${ca.notAfter.toISOString()})`,
    );
  }
  const caSpki = ca.spkiDer;
  const keySpki = key.publicKeyObject.export({ type: "spki", format: "der" });
  if (!caSpki.equals(keySpki)) {
    throw new SpiffeError("ERR_CA_CONFIG_INVALID", "ca-key.pem does not match the public key of ca-cert.pem");
  }
  let path: PathCertificate[];
  try {
    path = validatePath(ca, "ca-cert.pem", chain, roots, {
      now: now.getTime(),
      skewMs: 0,
      maxLength: 10,
      trustDomain,
    });
  } catch (cause) {
    throw new SpiffeError(
      "ERR_CA_CONFIG_INVALID",
      `ca-cert.pem does not chain to root-cert.pem: ${(cause as Error).message}`,
      { cause },
    );
  }
  // Every certificate this CA signs carries only a SPIFFE ID of the trust domain (and an empty
  // subject): a path whose nameConstraints leave that out would sign SVIDs that no verifier accepts.
  const issuedNames = { uris: [`spiffe://${trustDomain}`], dnsNames: [], ips: [], directoryNames: [] };
  for (const { cert, label } of path) {
    const violation = cert.nameConstraints && nameConstraintViolation(issuedNames, cert.nameConstraints);
    if (violation) {
      throw new SpiffeError(
        "ERR_CA_CONFIG_INVALID",
        `the SVIDs of trust domain "${trustDomain}" would break the nameConstraints of ${label}: ${violation}`,
      );
    }
  }
  // Chain after the leaf: ca-cert first, the cert-chain.pem contents, root last, no duplicates.
  const ordered: ParsedCertificate[] = [ca];
  for (const c of chain) if (!ordered.some((o) => o.der.equals(c.der))) ordered.push(c);
  const anchor =
    roots.find((r) => ordered.some((o) => o.der.equals(r.der))) ??
    roots.find((r) => ordered.some((o) => o.issuerDer.equals(r.subjectDer))) ??
    (roots[0] as ParsedCertificate);
  if (!ordered.some((o) => o.der.equals(anchor.der))) ordered.push(anchor);
  return makeSigner(
    key,
    cacerts.caKeyPem,
    ca.pem,
    ordered.map((c) => c.pem),
    anchor,
  );
}

/**
 * Creates a certificate authority for a trust domain: a self-signed 10-year root by default, or a
 * plugged-in signing CA from Istio's `cacerts` files. Issued workload certificates follow istiod:
 * empty subject, one critical URI SAN, NotBefore backdated 2 minutes, NotAfter capped at the
 * signer's, digitalSignature + keyEncipherment, serverAuth + clientAuth, not a CA.
 */
export async function createCertificateAuthority(
  options: CertificateAuthorityOptions = {},
): Promise<CertificateAuthority> {
  const trustDomain = parseTrustDomain(options.trustDomain ?? "cluster.local");
  const clock = options.clock ?? (() => new Date());
  const logger = options.logger ?? noopLogger;
  const metrics = options.metrics ?? noopMetrics;
  const defaultTtl = positiveSeconds("defaultTtlSeconds", options.defaultTtlSeconds, DAY);
  const maxTtl = positiveSeconds("maxTtlSeconds", options.maxTtlSeconds, 90 * DAY);
  if (defaultTtl > maxTtl) {
    // Requests without a TTL get the default, and the maximum refuses it: every such request would fail.
    throw new SpiffeError(
      "ERR_CA_CONFIG_INVALID",
      `defaultTtlSeconds (${defaultTtl}) must not be longer than maxTtlSeconds (${maxTtl})`,
      { defaultTtlSeconds: defaultTtl, maxTtlSeconds: maxTtl },
    );
  }
  const rootTtl = positiveSeconds("rootTtlSeconds", options.rootTtlSeconds, 3650 * DAY);
  const backdateMs = backdateSecondsOf(options.backdateSeconds) * 1000;
  const rootAlgorithm = options.rootKeyAlgorithm ?? "ECDSA_P256";
  const organization = options.organization ?? trustDomain;
  const issued = metrics.counter(
    "citadel_server_success_cert_issuance_count",
    "Certificates issued by the CA",
  );
  const refused = metrics.counter("citadel_server_csr_sign_error_count", "CSR signing failures", ["code"]);

  let signer: Signer;
  const bundle = new TrustBundle();
  const selfSigned = options.cacerts === undefined || options.selfSigned === true;
  if (options.cacerts !== undefined) {
    const pem = "dir" in options.cacerts ? await loadCaCertsDirectory(options.cacerts.dir) : options.cacerts;
    signer = await pluggedSigner(pem, trustDomain, clock());
    bundle.addRoots(trustDomain, pem.rootCertPem);
    if (selfSigned && !(signer.cert.selfIssued && signer.cert.der.equals(signer.root.der))) {
      throw new SpiffeError(
        "ERR_CA_CONFIG_INVALID",
        "selfSigned needs ca-cert.pem to be a self-signed root listed in root-cert.pem",
      );
    }
  } else {
    const root = await generateRoot(trustDomain, organization, rootAlgorithm, rootTtl, clock());
    const rootParsed = parseCertificateDer(decodeCertificatesPem(root.pem)[0] as Buffer);
    signer = makeSigner(root.key, root.keyPem, root.pem, [root.pem], rootParsed);
    bundle.addRoots(trustDomain, root.pem);
  }

  // What follows the leaf in every answer: the signing chain without its root, then every root of
  // the trust domain in one element. Rebuilt when the signer or the bundle changes.
  let chainTail: string[] = [];
  function refreshChainTail(): void {
    chainTail = [...signer.chainPem.slice(0, -1), bundle.rootsPem(trustDomain).join("")];
  }
  refreshChainTail();

  // Synchronous from the CSR to the PEM chain: the signing path has no I/O, and every await costs.
  function signPublicKey(spki: Buffer, id: SpiffeId, ttlSeconds: number | undefined): SignedCertificate {
    if (
      ttlSeconds !== undefined &&
      (typeof ttlSeconds !== "number" || !(ttlSeconds >= 0) || !Number.isFinite(ttlSeconds))
    ) {
      throw new SpiffeError(
        "ERR_CA_SIGN_REFUSED",
        `requested ttlSeconds must be a finite number of seconds >= 0 (0 for the default), got ${
          typeof ttlSeconds === "string" ? JSON.stringify(ttlSeconds) : String(ttlSeconds)
        }`,
        { ttlSeconds },
      );
    }
    const ttl = ttlSeconds === undefined || ttlSeconds === 0 ? defaultTtl : ttlSeconds;
    if (ttl > maxTtl) {
      throw new SpiffeError(
        "ERR_CA_SIGN_REFUSED",
        `requested TTL ${ttl} s is longer than the maximum ${maxTtl} s`,
        { ttlSeconds: ttl, maxTtlSeconds: maxTtl },
      );
    }
    if (!id.memberOf(trustDomain)) {
      throw new SpiffeError(
        "ERR_CA_SIGN_REFUSED",
        `identity ${id} is not in this CA's trust domain "${trustDomain}"`,
      );
    }
    if (id.path === "") {
      // The bare trust domain ID is for signing certificates; a workload SVID needs a path.
      throw new SpiffeError(
        "ERR_CA_SIGN_REFUSED",
        `identity ${id} has no path and cannot be a workload SVID`,
      );
    }
    const s = signer;
    // X.509 times have whole seconds; keep the returned dates equal to the encoded ones.
    const now = Math.floor(clock().getTime() / 1000) * 1000;
    const notBefore = new Date(now - backdateMs);
    const notAfter = new Date(Math.min(now + ttl * 1000, s.cert.notAfter.getTime()));
    if (notAfter.getTime() <= now) {
      throw new SpiffeError("ERR_CA_SIGN_REFUSED", "the signing certificate has expired");
    }
    const tbs = seq(
      VERSION_V3,
      encodeUnsignedInteger(serialBytes()),
      s.algorithmAndIssuer,
      seq(encodeTime(notBefore), encodeTime(notAfter)),
      EMPTY_NAME,
      spki,
      tlv(
        0xa3,
        seq(
          s.leafExtensions,
          // Critical because the subject is empty (RFC 5280 4.2.1.6, X.509-SVID spec).
          seq(SAN_OID_CRITICAL, tlv(0x04, seq(tlv(0x86, Buffer.from(id.toString(), "latin1"))))),
        ),
      ),
    );
    const signature = sign(s.hash, tbs, s.key.keyObject);
    const leafDer = seq(tbs, s.signatureAlgorithm, tlv(0x03, UNUSED_BITS_NONE, signature));
    issued.inc();
    return {
      spiffeId: id,
      certChain: [encodePem("CERTIFICATE", leafDer), ...chainTail],
      notBefore,
      notAfter,
    };
  }

  /** The identity `scope` (`sign` or `issue`) is asked for; parsing a string is left to the caller. */
  function requestedIdentity(scope: string, options: SignOptions): SpiffeId | string {
    const { spiffeId } = requiredOptions(scope, options);
    if (typeof spiffeId === "string" || spiffeId instanceof SpiffeId) return spiffeId;
    throw invalidOption(scope, "spiffeId", "a SpiffeId or a SPIFFE ID string", spiffeId);
  }

  function toId(value: SpiffeId | string): SpiffeId {
    return typeof value === "string" ? SpiffeId.parse(value) : value;
  }

  const ca: CertificateAuthority = {
    trustDomain,
    selfSigned,
    trustBundle: () => bundle.clone(),
    rootCertPem: () => signer.root.pem,
    async sign(csrPem, signOptions) {
      const requested = requestedIdentity("sign", signOptions);
      try {
        const id = toId(requested);
        const csr = await parseCsr(csrPem);
        const idText = id.toString();
        const asked = signOptions.ignoreCsrSans === true ? [] : csr.uriSans.filter((u) => u !== idText);
        if (asked.length > 0) {
          throw new SpiffeError(
            "ERR_CSR_IDENTITY_MISMATCH",
            `CSR asks for ${asked.join(", ")} but the certificate can only be for ${id}`,
            { requested: asked, identity: id.toString() },
          );
        }
        return signPublicKey(csr.publicKeySpki, id, signOptions.ttlSeconds);
      } catch (err) {
        refused.inc({ code: err instanceof SpiffeError ? err.code : "unknown" });
        logger.warn({ err, spiffeId: String(signOptions.spiffeId) }, "CSR signing refused");
        throw err;
      }
    },
    async issue(issueOptions) {
      const id = toId(requestedIdentity("issue", issueOptions));
      const pair = await generateKeyPair({ algorithm: issueOptions.keyAlgorithm ?? "ECDSA_P256" });
      const key = await loadSigningKey(pair.privateKeyPem);
      const spki = key.publicKeyObject.export({ type: "spki", format: "der" });
      const signed = signPublicKey(spki, id, issueOptions.ttlSeconds);
      const chain = signed.certChain;
      return {
        spiffeId: id,
        certChainPem: chain.slice(0, -1).join(""),
        privateKeyPem: pair.privateKeyPem,
        notBefore: signed.notBefore,
        notAfter: signed.notAfter,
        rootsPem: bundle.rootsPem(trustDomain),
      };
    },
    async rotateRoot(rotateOptions = {}) {
      if (!selfSigned) {
        throw new SpiffeError(
          "ERR_CA_CONFIG_INVALID",
          "root rotation is only available for a self-signed CA",
        );
      }
      const current = signer;
      const reuseKey = rotateOptions.reuseKey === true;
      const root = await generateRoot(
        trustDomain,
        organization,
        rootAlgorithm,
        rootTtl,
        clock(),
        reuseKey ? { key: current.key, keyPem: current.keyPem, subjectPem: current.root.pem } : undefined,
      );
      const rootParsed = parseCertificateDer(decodeCertificatesPem(root.pem)[0] as Buffer);
      signer = makeSigner(root.key, root.keyPem, root.pem, [root.pem], rootParsed);
      bundle.addRoots(trustDomain, root.pem);
      refreshChainTail();
      logger.info({ trustDomain, notAfter: rootParsed.notAfter, reuseKey }, "CA root rotated");
    },
    adoptRoot(rootPem) {
      if (!selfSigned) {
        throw new SpiffeError(
          "ERR_CA_CONFIG_INVALID",
          "adopting a root is only available for a self-signed CA",
        );
      }
      let root: ParsedCertificate;
      try {
        const der = decodeCertificatesPem(rootPem);
        if (der.length !== 1) throw new SpiffeError("ERR_PEM_INVALID", `${der.length} certificates, not one`);
        root = parseCertificateDer(der[0] as Buffer);
      } catch (cause) {
        throw new SpiffeError("ERR_CA_CONFIG_INVALID", "the root to adopt is not one PEM certificate", {
          cause,
        });
      }
      const active = signer;
      const current = active.root;
      if (
        !root.isCa ||
        !root.selfIssued ||
        !root.subjectDer.equals(current.subjectDer) ||
        !root.spkiDer.equals(current.spkiDer)
      ) {
        throw new SpiffeError(
          "ERR_CA_CONFIG_INVALID",
          "the root to adopt is not this CA's root re-issued for the same key and subject",
        );
      }
      if (root.der.equals(current.der)) return false;
      const known = bundle.rootsPem(trustDomain).includes(root.pem);
      bundle.addRoots(trustDomain, root.pem);
      const newer = root.notAfter.getTime() > current.notAfter.getTime();
      if (newer) signer = makeSigner(active.key, active.keyPem, root.pem, [root.pem], root);
      refreshChainTail();
      if (newer) logger.info({ trustDomain, notAfter: root.notAfter }, "CA root adopted");
      return newer || !known;
    },
    exportCacerts() {
      return {
        caCertPem: signer.cert.pem,
        caKeyPem: signer.keyPem,
        rootCertPem: bundle.rootsPem(trustDomain).join(""),
        certChainPem: signer.chainPem.join(""),
      };
    },
    retireOldRoots() {
      const old = bundle.rootsPem(trustDomain).filter((pem) => pem !== signer.root.pem);
      if (old.length === 0) return 0;
      const removed = bundle.removeRoots(trustDomain, old.join(""));
      refreshChainTail();
      return removed;
    },
    rootNeedsRotation(gracePercent = 20) {
      const { notBefore, notAfter } = signer.root;
      const life = notAfter.getTime() - notBefore.getTime();
      return notAfter.getTime() - clock().getTime() < (life * gracePercent) / 100;
    },
  };
  return ca;
}

/** Timer functions, replaceable in tests. */
export interface RootRotatorTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Options of {@link startRootRotator}. */
export interface RootRotatorOptions {
  /**
   * How often the root is checked, in ms: above 0 and at most 2^31-1 (about 24.8 days, the longest a
   * Node timer waits). Default 1 h; istiod `CITADEL_SELF_SIGNED_ROOT_CERT_CHECK_INTERVAL`.
   */
  checkIntervalMs?: number;
  /**
   * Rotate when less than this percent of the root's lifetime is left; above 0, at most 100. Default 20;
   * istiod `CITADEL_SELF_SIGNED_ROOT_CERT_GRACE_PERIOD_PERCENTILE`.
   */
  gracePercent?: number;
  /**
   * How long old roots stay in the trust bundle after a rotation, so workloads can renew first; in ms,
   * 0 to 2^31-1. Default 48 h (two default workload lifetimes).
   */
  retireAfterMs?: number;
  /**
   * Re-issue the root for its current key (default true, as istiod): certificates under the old and
   * the new root then verify against either. False generates a new key each time; see
   * {@link RotateRootOptions.reuseKey}.
   */
  reuseKey?: boolean;
  /**
   * Called after each rotation, e.g. to persist and publish the new trust bundle. A returned promise
   * is awaited before `check()` resolves; its rejection is logged, and the rotation stands.
   */
  onRotated?: (ca: CertificateAuthority) => unknown;
  /** Called after old roots are retired; a rejected promise is logged. */
  onRetired?: (ca: CertificateAuthority) => unknown;
  /**
   * Asked before each rotation that is due: only when it returns true does this rotator rotate (the
   * leader among replicas that share the CA; the others adopt what it wrote). Default: always.
   */
  shouldRotate?: () => boolean;
  /** Default: Node's timers, unref'd. */
  timers?: RootRotatorTimers;
  logger?: Logger;
}

/** A running root rotation loop. */
export interface RootRotator {
  /** Checks now and rotates when due; resolves to true when it rotated. */
  check(): Promise<boolean>;
  /** Stops checking and cancels a pending retirement. */
  stop(): void;
}

/**
 * Periodically checks a self-signed CA's root and rotates it inside the grace period: the new root is
 * published next to the old one, workloads renew against it, and the old root is retired after
 * `retireAfterMs`.
 * @throws SpiffeError `ERR_CA_CONFIG_INVALID` for a CA that is not self-signed, `ERR_OPTIONS_INVALID`
 *   when an option is out of range.
 */
export function startRootRotator(ca: CertificateAuthority, rotatorOptions?: RootRotatorOptions): RootRotator {
  const options = optionsObject("startRootRotator", rotatorOptions);
  if (!ca.selfSigned) {
    throw new SpiffeError("ERR_CA_CONFIG_INVALID", "root rotation is only available for a self-signed CA");
  }
  const timers: RootRotatorTimers = options.timers ?? {
    setTimeout(fn, ms) {
      const t = setTimeout(fn, ms);
      t.unref();
      return t;
    },
    clearTimeout(handle) {
      clearTimeout(handle as NodeJS.Timeout);
    },
  };
  const logger = options.logger ?? noopLogger;
  const interval = msOption("startRootRotator", "checkIntervalMs", options.checkIntervalMs, 3_600_000, {
    above: 0,
  });
  const retireAfter = msOption("startRootRotator", "retireAfterMs", options.retireAfterMs, 2 * DAY * 1000, {
    min: 0,
  });
  const gracePercent = numberOption("startRootRotator", "gracePercent", options.gracePercent, 20, {
    above: 0,
    max: 100,
  });
  let stopped = false;
  let checkTimer: unknown;
  let retireTimer: unknown;
  let running: Promise<boolean> | undefined;

  async function rotateIfDue(): Promise<boolean> {
    if (stopped || !ca.rootNeedsRotation(gracePercent)) return false;
    if (options.shouldRotate !== undefined && !options.shouldRotate()) return false;
    await ca.rotateRoot({ reuseKey: options.reuseKey ?? true });
    try {
      await options.onRotated?.(ca);
    } catch (err) {
      logger.error({ err }, "publishing the rotated CA root failed");
    }
    if (retireTimer !== undefined) timers.clearTimeout(retireTimer);
    retireTimer = timers.setTimeout(() => {
      retireTimer = undefined;
      if (stopped) return;
      ca.retireOldRoots();
      Promise.resolve()
        .then(() => options.onRetired?.(ca))
        .catch((err: unknown) => logger.error({ err }, "publishing the retired CA roots failed"));
    }, retireAfter);
    return true;
  }

  function check(): Promise<boolean> {
    running ??= rotateIfDue().finally(() => {
      running = undefined;
    });
    return running;
  }

  function schedule(): void {
    if (stopped) return;
    checkTimer = timers.setTimeout(() => {
      check()
        .catch((err: unknown) => logger.error({ err }, "CA root rotation failed"))
        .finally(schedule);
    }, interval);
  }
  schedule();

  return {
    check,
    stop() {
      stopped = true;
      if (checkTimer !== undefined) timers.clearTimeout(checkTimer);
      if (retireTimer !== undefined) timers.clearTimeout(retireTimer);
    },
  };
}
