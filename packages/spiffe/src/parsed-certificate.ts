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

/** Signature algorithm OID -> digest for Node's `crypto.verify`. */
const SIGNATURE_HASH: Readonly<Record<string, string>> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
};

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
  sanCritical = false;
  isCa = false;
  pathLength: number | undefined;
  keyUsage: number | undefined;
  keyUsageCritical = false;
  extKeyUsage: string[] | undefined;
  /** OIDs of critical extensions this package does not process (name constraints included). */
  unhandledCritical: string[] = [];
  /** Hex, lower-case. */
  subjectKeyId: string | undefined;
  /** Hex, lower-case (keyIdentifier form only). */
  authorityKeyId: string | undefined;
  #node: NodeX509Certificate | undefined;
  #publicKey: KeyObject | undefined;

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
        for (const ext of childrenOf(der, exts)) this.#readExtension(der, ext);
      }
    }
  }

  #readExtension(der: Buffer, ext: Tlv): void {
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
        const names = childrenOf(der, expectTag(inner, 0x30, "subjectAltName"));
        this.uriSans = names
          .filter((n) => n.tag === 0x86)
          .map((n) => Buffer.from(contentOf(der, n)).toString("latin1"));
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
      default:
        if (critical && !UNDERSTOOD.has(oid)) this.unhandledCritical.push(oid);
    }
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

  get selfIssued(): boolean {
    return this.subjectDer.equals(this.issuerDer);
  }

  get publicKey(): KeyObject {
    this.#publicKey ??= publicKeyFromSpki(this.spkiDer);
    return this.#publicKey;
  }

  /** True when `issuer`'s key verifies this certificate's signature. */
  verifySignature(issuer: ParsedCertificate): boolean {
    const hash = SIGNATURE_HASH[this.signatureOid];
    try {
      if (hash !== undefined) return verify(hash, this.tbs, issuer.publicKey, this.signature);
      return this.node.verify(issuer.publicKey);
    } catch {
      return false;
    }
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
