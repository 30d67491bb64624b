import { type KeyObject, X509Certificate as NodeX509Certificate, verify } from "node:crypto";
import {
  bytesOf,
  childrenOf,
  contentOf,
  decodeOid,
  decodeTime,
  expectTag,
  readTlv,
  type Tlv,
} from "./der.js";
import { SpiffeError } from "./errors.js";
import { type CertificateNames, type NameConstraints, parseNameConstraints } from "./name-constraints.js";
import { encodePem } from "./pem.js";
import { publicKeyFromSpki } from "./public-key.js";

const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_KEY_USAGE = "2.5.29.15";
const OID_EXT_KEY_USAGE = "2.5.29.37";
const OID_SAN = "2.5.29.17";
const OID_SKI = "2.5.29.14";
const OID_AKI = "2.5.29.35";
const OID_CERT_POLICIES = "2.5.29.32";
const OID_POLICY_CONSTRAINTS = "2.5.29.36";
const OID_INHIBIT_ANY_POLICY = "2.5.29.54";
const OID_NAME_CONSTRAINTS = "2.5.29.30";

/** Extensions whose criticality we understand; any other critical extension fails validation. */
const UNDERSTOOD = new Set([
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  OID_EXT_KEY_USAGE,
  OID_SAN,
  OID_SKI,
  OID_AKI,
  OID_CERT_POLICIES,
  OID_POLICY_CONSTRAINTS,
  OID_INHIBIT_ANY_POLICY,
]);

/** The key types a signature algorithm can be verified with (Node's `asymmetricKeyType`). */
type SignerKeyType = "ec" | "rsa" | "rsa-pss" | "ed25519";

/** An accepted signature algorithm: the digest for Node's `crypto.verify` and the issuer key types it goes with. */
interface SignatureAlgorithm {
  /** Undefined for RSASSA-PSS (whose parameters Node reads from the certificate) and Ed25519 (no digest). */
  readonly hash: string | undefined;
  readonly keyTypes: readonly SignerKeyType[];
}

const OID_RSASSA_PSS = "1.2.840.113549.1.1.10";
const OID_ED25519 = "1.3.101.112";

/**
 * The signature algorithms a chain may use: ECDSA and RSA PKCS#1 v1.5 with SHA-256/384/512, RSASSA-PSS
 * with one of those digests, Ed25519 (what mainstream X.509 verifiers still accept). SHA-1,
 * MD5, SHA-224 and DSA signatures are refused: they can be forged or are not used by any mesh CA.
 */
const SIGNATURE_ALGORITHMS: Readonly<Record<string, SignatureAlgorithm>> = {
  "1.2.840.10045.4.3.2": { hash: "sha256", keyTypes: ["ec"] },
  "1.2.840.10045.4.3.3": { hash: "sha384", keyTypes: ["ec"] },
  "1.2.840.10045.4.3.4": { hash: "sha512", keyTypes: ["ec"] },
  "1.2.840.113549.1.1.11": { hash: "sha256", keyTypes: ["rsa"] },
  "1.2.840.113549.1.1.12": { hash: "sha384", keyTypes: ["rsa"] },
  "1.2.840.113549.1.1.13": { hash: "sha512", keyTypes: ["rsa"] },
  [OID_RSASSA_PSS]: { hash: undefined, keyTypes: ["rsa", "rsa-pss"] },
  [OID_ED25519]: { hash: undefined, keyTypes: ["ed25519"] },
};

/** Digests RSASSA-PSS signatures may use (SHA-256, SHA-384, SHA-512). */
const PSS_HASHES = new Set(["2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.2", "2.16.840.1.101.3.4.2.3"]);

/** Names of the refused algorithms a certificate may still carry, for error messages. */
const REFUSED_ALGORITHM_NAMES: Readonly<Record<string, string>> = {
  "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
  "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
  "1.2.840.113549.1.1.14": "sha224WithRSAEncryption",
  "1.2.840.10045.4.1": "ecdsa-with-SHA1",
  "1.2.840.10045.4.3.1": "ecdsa-with-SHA224",
  "1.2.840.10040.4.3": "dsa-with-sha1",
  "2.16.840.1.101.3.4.3.2": "dsa-with-sha256",
  [OID_RSASSA_PSS]: "RSASSA-PSS with SHA-1 or SHA-224",
};

/** Smallest RSA modulus accepted for a key that signs anything in a chain. */
export const MIN_RSA_BITS = 2048;

/** Key usage bits, numbered as RFC 5280 (bit 0 = digitalSignature) and stored as `1 << bit`. */
export const KEY_USAGE = {
  digitalSignature: 1,
  keyEncipherment: 4,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
} as const;

function toBuffer(input: Uint8Array): Buffer {
  return Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
}

function hex(v: Uint8Array): string {
  return Buffer.from(v).toString("hex");
}

/** The facts about one certificate that SVID validation needs, decoded once. */
export class ParsedCertificate {
  readonly der: Buffer;
  readonly tbs: Buffer;
  readonly signatureOid: string;
  readonly signature: Buffer;
  readonly subjectDer: Buffer;
  readonly issuerDer: Buffer;
  readonly spkiDer: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  uriSans: string[] = [];
  /** dNSName SANs, as written. */
  dnsSans: string[] = [];
  /** iPAddress SANs: 4 or 16 bytes (other lengths are kept, and match no constraint). */
  ipSans: Buffer[] = [];
  /** directoryName SANs, each the DER of a Name. */
  directoryNameSans: Buffer[] = [];
  sanCritical = false;
  isCa = false;
  pathLength: number | undefined;
  keyUsage: number | undefined;
  keyUsageCritical = false;
  /** EKU purpose OIDs; undefined when the certificate has no extendedKeyUsage extension. */
  extKeyUsage: string[] | undefined;
  /** OIDs of critical extensions this package does not process. */
  unhandledCritical: string[] = [];
  /**
   * The nameConstraints extension (critical or not); undefined when the certificate has none. Path
   * validation enforces it on the certificates below a CA, or refuses the CA when it has a `problem`.
   */
  nameConstraints: NameConstraints | undefined;
  /** Hex, lower-case. */
  subjectKeyId: string | undefined;
  /** Hex, lower-case (keyIdentifier form only). */
  authorityKeyId: string | undefined;
  #node: NodeX509Certificate | undefined;
  #publicKey: KeyObject | undefined;
  /** Undefined when the signature algorithm is one this package refuses. */
  #algorithm: SignatureAlgorithm | undefined;

  constructor(input: Uint8Array) {
    const der = toBuffer(input);
    this.der = der;
    const cert = readTlv(der, 0);
    if (cert.tag !== 0x30 || cert.end !== der.length) {
      throw new SpiffeError("ERR_PEM_INVALID", "certificate is not a single DER SEQUENCE");
    }
    const [tbsTlv, sigAlg, sigBits] = childrenOf(der, cert);
    expectTag(tbsTlv, 0x30, "TBSCertificate");
    expectTag(sigAlg, 0x30, "signature algorithm");
    expectTag(sigBits, 0x03, "signature BIT STRING");
    const t = tbsTlv as Tlv;
    this.tbs = der.subarray(t.start, t.end);
    const algChildren = childrenOf(der, sigAlg as Tlv);
    this.signatureOid = decodeOid(contentOf(der, expectTag(algChildren[0], 0x06, "algorithm OID")));
    this.#algorithm = SIGNATURE_ALGORITHMS[this.signatureOid];
    if (this.signatureOid === OID_RSASSA_PSS && !PSS_HASHES.has(pssHashOid(der, algChildren[1]))) {
      this.#algorithm = undefined;
    }
    this.signature = der.subarray((sigBits as Tlv).valueStart + 1, (sigBits as Tlv).end);

    const fields = childrenOf(der, t);
    let i = 0;
    if (fields[0]?.tag === 0xa0) i++;
    expectTag(fields[i++], 0x02, "serial number");
    expectTag(fields[i++], 0x30, "TBS signature algorithm");
    this.issuerDer = Buffer.from(bytesOf(der, expectTag(fields[i++], 0x30, "issuer")));
    const validity = childrenOf(der, expectTag(fields[i++], 0x30, "validity"));
    if (validity.length !== 2) throw new SpiffeError("ERR_PEM_INVALID", "malformed DER: validity");
    this.notBefore = decodeTime(der, validity[0] as Tlv);
    this.notAfter = decodeTime(der, validity[1] as Tlv);
    this.subjectDer = Buffer.from(bytesOf(der, expectTag(fields[i++], 0x30, "subject")));
    this.spkiDer = Buffer.from(bytesOf(der, expectTag(fields[i++], 0x30, "subject public key info")));
    for (; i < fields.length; i++) {
      const f = fields[i] as Tlv;
      if (f.tag === 0xa3) {
        const exts = expectTag(childrenOf(der, f)[0], 0x30, "extensions");
        // RFC 5280 4.2: at most one instance of each extension. A repeat could hide a second
        // subjectAltName (and so a second URI SAN) behind the one that is read.
        const seen = new Set<string>();
        for (const ext of childrenOf(der, exts)) {
          const oid = this.#readExtension(der, ext);
          if (seen.has(oid)) throw new SpiffeError("ERR_PEM_INVALID", `duplicate extension ${oid}`);
          seen.add(oid);
        }
      }
    }
  }

  /** Reads one extension into the fields above; returns its OID. */
  #readExtension(der: Buffer, ext: Tlv): string {
    const parts = childrenOf(der, ext);
    const oid = decodeOid(contentOf(der, expectTag(parts[0], 0x06, "extension OID")));
    let critical = false;
    let valueTlv = parts[1];
    if (valueTlv?.tag === 0x01) {
      critical = der[valueTlv.valueStart] !== 0;
      valueTlv = parts[2];
    }
    const octets = expectTag(valueTlv, 0x04, "extension value");
    const inner = readTlv(der, octets.valueStart, octets.end);
    switch (oid) {
      case OID_BASIC_CONSTRAINTS: {
        for (const c of childrenOf(der, expectTag(inner, 0x30, "basicConstraints"))) {
          if (c.tag === 0x01) this.isCa = der[c.valueStart] !== 0;
          else if (c.tag === 0x02) this.pathLength = Number.parseInt(hex(contentOf(der, c)) || "0", 16);
        }
        break;
      }
      case OID_KEY_USAGE: {
        const bits = contentOf(der, expectTag(inner, 0x03, "keyUsage"));
        let flags = 0;
        for (let b = 1; b < bits.length; b++) {
          for (let j = 0; j < 8; j++) {
            if (((bits[b] as number) >> (7 - j)) & 1) flags |= 1 << ((b - 1) * 8 + j);
          }
        }
        this.keyUsage = flags;
        this.keyUsageCritical = critical;
        break;
      }
      case OID_EXT_KEY_USAGE:
        this.extKeyUsage = childrenOf(der, expectTag(inner, 0x30, "extKeyUsage")).map((c) =>
          decodeOid(contentOf(der, expectTag(c, 0x06, "EKU OID"))),
        );
        break;
      case OID_SAN: {
        for (const n of childrenOf(der, expectTag(inner, 0x30, "subjectAltName"))) {
          if (n.tag === 0x86) this.uriSans.push(Buffer.from(contentOf(der, n)).toString("latin1"));
          else if (n.tag === 0x82) this.dnsSans.push(Buffer.from(contentOf(der, n)).toString("latin1"));
          else if (n.tag === 0x87) this.ipSans.push(Buffer.from(contentOf(der, n)));
          else if (n.tag === 0xa4) {
            const name = expectTag(childrenOf(der, n)[0], 0x30, "directoryName");
            this.directoryNameSans.push(Buffer.from(bytesOf(der, name)));
          }
        }
        this.sanCritical = critical;
        break;
      }
      case OID_SKI:
        this.subjectKeyId = hex(contentOf(der, expectTag(inner, 0x04, "subjectKeyIdentifier")));
        break;
      case OID_AKI: {
        const keyId = childrenOf(der, expectTag(inner, 0x30, "authorityKeyIdentifier")).find(
          (c) => c.tag === 0x80,
        );
        if (keyId) this.authorityKeyId = hex(contentOf(der, keyId));
        break;
      }
      case OID_NAME_CONSTRAINTS:
        this.nameConstraints = parseNameConstraints(der, inner);
        break;
      default:
        if (critical && !UNDERSTOOD.has(oid)) this.unhandledCritical.push(oid);
    }
    return oid;
  }

  /** Node's view of the certificate (created on first use). */
  get node(): NodeX509Certificate {
    this.#node ??= new NodeX509Certificate(this.der);
    return this.#node;
  }

  get pem(): string {
    return encodePem("CERTIFICATE", this.der);
  }

  /** Subject as text, e.g. `O=cluster.local`; empty for SVIDs. */
  get subject(): string {
    return this.subjectDer.length === 2 ? "" : this.node.subject.replace(/\n/g, ", ");
  }

  get issuer(): string {
    return this.node.issuer.replace(/\n/g, ", ");
  }

  /** The names nameConstraints apply to: SANs of the enforced types, and the subject when not empty. */
  get names(): CertificateNames {
    return {
      uris: this.uriSans,
      dnsNames: this.dnsSans,
      ips: this.ipSans,
      // An empty subject is two bytes (an empty SEQUENCE); RFC 5280 applies directoryName
      // constraints to a non-empty subject only.
      directoryNames:
        this.subjectDer.length === 2 ? this.directoryNameSans : [this.subjectDer, ...this.directoryNameSans],
    };
  }

  get selfIssued(): boolean {
    return this.subjectDer.equals(this.issuerDer);
  }

  get publicKey(): KeyObject {
    this.#publicKey ??= publicKeyFromSpki(this.spkiDer);
    return this.#publicKey;
  }

  /**
   * Why this certificate's signature algorithm is refused (a name such as `sha1WithRSAEncryption`),
   * or undefined when it is one of the accepted ones.
   */
  get weakSignatureAlgorithm(): string | undefined {
    if (this.#algorithm !== undefined) return undefined;
    return REFUSED_ALGORITHM_NAMES[this.signatureOid] ?? `signature algorithm ${this.signatureOid}`;
  }

  /**
   * The modulus length of an RSA key under {@link MIN_RSA_BITS}; undefined for any other key, and for
   * a key Node cannot import (an issuer's is then refused by {@link verifySignature}).
   */
  get weakKeyBits(): number | undefined {
    // Only an RSA key is imported to read its size: an EC leaf (every SVID this package issues) costs
    // no key import here.
    if (!isRsaSpki(this.spkiDer)) return undefined;
    let key: KeyObject;
    try {
      key = this.publicKey;
    } catch {
      return undefined;
    }
    if (key.asymmetricKeyType !== "rsa" && key.asymmetricKeyType !== "rsa-pss") return undefined;
    const bits = key.asymmetricKeyDetails?.modulusLength;
    return bits !== undefined && bits < MIN_RSA_BITS ? bits : undefined;
  }

  /**
   * True when `issuer`'s key verifies this certificate's signature with an accepted algorithm that
   * goes with that key's type.
   */
  verifySignature(issuer: ParsedCertificate): boolean {
    const algorithm = this.#algorithm;
    if (algorithm === undefined) return false;
    try {
      const key = issuer.publicKey;
      if (!algorithm.keyTypes.includes(key.asymmetricKeyType as SignerKeyType)) return false;
      if (this.signatureOid === OID_RSASSA_PSS) return this.node.verify(key);
      return verify(algorithm.hash ?? null, this.tbs, key, this.signature);
    } catch {
      return false;
    }
  }
}

const OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1";

/** True when a SubjectPublicKeyInfo's algorithm is rsaEncryption or RSASSA-PSS. */
function isRsaSpki(spki: Buffer): boolean {
  try {
    const [algorithm] = childrenOf(spki, readTlv(spki, 0));
    const oid = decodeOid(
      contentOf(spki, expectTag(childrenOf(spki, algorithm as Tlv)[0], 0x06, "key algorithm OID")),
    );
    return oid === OID_RSA_ENCRYPTION || oid === OID_RSASSA_PSS;
  } catch {
    // Not readable here: let the import decide.
    return true;
  }
}

/**
 * The digest OID of RSASSA-PSS parameters (RFC 4055): the `hashAlgorithm` field, SHA-1 when absent.
 * Empty when the parameters cannot be read.
 */
function pssHashOid(der: Buffer, params: Tlv | undefined): string {
  const SHA1 = "1.3.14.3.2.26";
  if (params === undefined || params.tag !== 0x30) return "";
  try {
    const hashField = childrenOf(der, params).find((c) => c.tag === 0xa0);
    if (hashField === undefined) return SHA1;
    const hashAlg = expectTag(childrenOf(der, hashField)[0], 0x30, "PSS hash algorithm");
    return decodeOid(contentOf(der, expectTag(childrenOf(der, hashAlg)[0], 0x06, "PSS hash OID")));
  } catch {
    return "";
  }
}

/** Parses one DER certificate; throws ERR_PEM_INVALID for anything that is not a certificate. */
export function parseCertificateDer(input: Uint8Array): ParsedCertificate {
  try {
    return new ParsedCertificate(input);
  } catch (cause) {
    if (cause instanceof SpiffeError) {
      throw new SpiffeError("ERR_PEM_INVALID", `certificate could not be decoded (${cause.message})`, {
        cause,
      });
    }
    throw new SpiffeError("ERR_PEM_INVALID", "certificate could not be decoded (not DER X.509)", { cause });
  }
}
