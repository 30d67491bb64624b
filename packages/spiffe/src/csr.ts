import { type KeyObject, verify } from "node:crypto";
import { childrenOf, contentOf, decodeOid, expectTag, isOid, oidValue, readTlv, type Tlv } from "./der.js";
import { SpiffeError } from "./errors.js";
import { loadSigningKey } from "./key-pair.js";
import { decodePem } from "./pem.js";
import { importPublicKey } from "./public-key.js";
import { SpiffeId } from "./spiffe-id.js";
import { x509 } from "./x509.js";

/** Options of {@link createCsr}. */
export interface CreateCsrOptions {
  /** The identity to put in the CSR's one URI SAN. */
  spiffeId: SpiffeId | string;
  /** PEM private key whose public half the CSR certifies. */
  privateKeyPem: string;
}

/**
 * Creates a PEM PKCS#10 certificate signing request with an empty subject and one critical URI SAN,
 * the form ztunnel sends to the CA.
 */
export async function createCsr(options: CreateCsrOptions): Promise<string> {
  const id = typeof options.spiffeId === "string" ? SpiffeId.parse(options.spiffeId) : options.spiffeId;
  const key = await loadSigningKey(options.privateKeyPem);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: { privateKey: key.privateKey, publicKey: key.publicKey },
    signingAlgorithm: key.signingAlgorithm,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: id.toString() }], true)],
  });
  return csr.toString("pem");
}

/** A CSR whose signature was checked. */
export interface ParsedCsr {
  /** SPKI DER of the requested public key. */
  publicKeySpki: Buffer;
  /** URI SANs the CSR asks for (the CA decides the identity; see `CertificateAuthority.sign`). */
  uriSans: string[];
}

const OID_EXTENSION_REQUEST = oidValue("1.2.840.113549.1.9.14");
const OID_SAN = oidValue("2.5.29.17");
const CSR_SIGNATURE_HASH: Readonly<Record<string, string>> = {
  "1.2.840.10045.4.3.2": "sha256",
  "1.2.840.10045.4.3.3": "sha384",
  "1.2.840.10045.4.3.4": "sha512",
  "1.2.840.113549.1.1.11": "sha256",
  "1.2.840.113549.1.1.12": "sha384",
  "1.2.840.113549.1.1.13": "sha512",
};

const OID_EC_PUBLIC_KEY = oidValue("1.2.840.10045.2.1");
const OID_RSA_ENCRYPTION = oidValue("1.2.840.113549.1.1.1");
/** Named curves a CSR key may use, with their coordinate size in bytes. */
const CSR_CURVES: readonly { oid: Buffer; name: string; size: number }[] = [
  { oid: oidValue("1.2.840.10045.3.1.7"), name: "P-256", size: 32 },
  { oid: oidValue("1.3.132.0.34"), name: "P-384", size: 48 },
];
/** Smallest RSA modulus the CA certifies; the SVID verifier refuses smaller keys anywhere in a chain. */
const MIN_CSR_RSA_BITS = 2048;

/**
 * Refuses a CSR key the mesh could not use. The issued certificate carries the CSR's key as is, and
 * peers (ztunnel's rustls, Envoy, this package's verifier) accept only ECDSA P-256/P-384 with an
 * uncompressed point and RSA (rsaEncryption) of 2048 bits or more: anything else would yield a
 * certificate that fails every handshake, or one for a key that can be broken.
 */
function checkCsrKey(spki: Buffer, key: KeyObject): void {
  let problem: string | undefined;
  try {
    const [alg, bits] = childrenOf(spki, readTlv(spki, 0));
    const [algOid, params] = childrenOf(spki, expectTag(alg, 0x30, "algorithm"));
    if (isOid(spki, algOid, OID_EC_PUBLIC_KEY)) {
      const curve = params?.tag === 0x06 ? CSR_CURVES.find((c) => isOid(spki, params, c.oid)) : undefined;
      const point = expectTag(bits, 0x03, "public key bits");
      const start = point.valueStart + 1; // after the unused-bits byte
      if (curve === undefined) problem = "an EC key on a curve other than P-256 or P-384";
      else if (spki[start] !== 0x04 || point.end - start !== 1 + 2 * curve.size) {
        problem = `a ${curve.name} key that is not one uncompressed point`;
      }
    } else if (isOid(spki, algOid, OID_RSA_ENCRYPTION)) {
      const modulusBits = key.asymmetricKeyDetails?.modulusLength ?? 0;
      if (modulusBits < MIN_CSR_RSA_BITS) {
        problem = `a ${modulusBits}-bit RSA key (at least ${MIN_CSR_RSA_BITS} bits are required)`;
      }
    } else {
      problem = `a ${key.asymmetricKeyType ?? "unknown"} key (only ECDSA P-256/P-384 and RSA are certified)`;
    }
  } catch (cause) {
    throw new SpiffeError("ERR_CSR_INVALID", "CSR public key could not be decoded", { cause });
  }
  if (problem !== undefined) throw new SpiffeError("ERR_CSR_INVALID", `CSR carries ${problem}`);
}

function uriSansOfAttributes(der: Buffer, attributes: Tlv): string[] {
  const uris: string[] = [];
  for (const attr of childrenOf(der, attributes)) {
    const [oidTlv, values] = childrenOf(der, expectTag(attr, 0x30, "attribute"));
    if (!isOid(der, expectTag(oidTlv, 0x06, "attribute OID"), OID_EXTENSION_REQUEST)) continue;
    for (const exts of childrenOf(der, expectTag(values, 0x31, "attribute values"))) {
      for (const ext of childrenOf(der, expectTag(exts, 0x30, "extensions"))) {
        const parts = childrenOf(der, expectTag(ext, 0x30, "extension"));
        if (!isOid(der, expectTag(parts[0], 0x06, "extension OID"), OID_SAN)) continue;
        const octets = expectTag(parts[parts.length - 1], 0x04, "extension value");
        const names = readTlv(der, octets.valueStart, octets.end);
        for (const n of childrenOf(der, expectTag(names, 0x30, "subjectAltName"))) {
          if (n.tag === 0x86) uris.push(Buffer.from(contentOf(der, n)).toString("latin1"));
        }
      }
    }
  }
  return uris;
}

/**
 * Parses a PEM CSR, verifies its self-signature and checks that its key is one the mesh accepts.
 */
export async function parseCsr(csrPem: string): Promise<ParsedCsr> {
  if (typeof csrPem !== "string") throw new SpiffeError("ERR_CSR_INVALID", "CSR must be a PEM string");
  let der: Buffer;
  try {
    const block = decodePem(csrPem).find(
      (b) => b.label === "CERTIFICATE REQUEST" || b.label === "NEW CERTIFICATE REQUEST",
    );
    if (!block) throw new SpiffeError("ERR_PEM_INVALID", "no CERTIFICATE REQUEST block");
    der = block.der;
  } catch (cause) {
    throw new SpiffeError("ERR_CSR_INVALID", "CSR must be a PEM 'CERTIFICATE REQUEST' block", { cause });
  }
  let info: Buffer;
  let spki: Buffer;
  let hash: string | undefined;
  let signature: Buffer;
  let uriSans: string[];
  try {
    const outer = readTlv(der, 0);
    if (outer.tag !== 0x30 || outer.end !== der.length)
      throw new SpiffeError("ERR_PEM_INVALID", "not one SEQUENCE");
    const [infoTlv, algTlv, sigTlv] = childrenOf(der, outer);
    const infoT = expectTag(infoTlv, 0x30, "CertificationRequestInfo");
    info = der.subarray(infoT.start, infoT.end);
    const fields = childrenOf(der, infoT);
    expectTag(fields[0], 0x02, "version");
    expectTag(fields[1], 0x30, "subject");
    const spkiT = expectTag(fields[2], 0x30, "subjectPKInfo");
    spki = Buffer.from(der.subarray(spkiT.start, spkiT.end));
    uriSans = fields[3]?.tag === 0xa0 ? uriSansOfAttributes(der, fields[3]) : [];
    const alg = childrenOf(der, expectTag(algTlv, 0x30, "signature algorithm"));
    hash = CSR_SIGNATURE_HASH[decodeOid(contentOf(der, expectTag(alg[0], 0x06, "algorithm OID")))];
    const sigT = expectTag(sigTlv, 0x03, "signature");
    signature = der.subarray(sigT.valueStart + 1, sigT.end);
  } catch (cause) {
    throw new SpiffeError("ERR_CSR_INVALID", "CSR could not be decoded", { cause });
  }
  if (hash === undefined)
    throw new SpiffeError("ERR_CSR_INVALID", "CSR uses an unsupported signature algorithm");
  let ok = false;
  let key: KeyObject;
  try {
    key = await importPublicKey(spki);
    ok = verify(hash, info, key, signature);
  } catch (cause) {
    throw new SpiffeError("ERR_CSR_INVALID", "CSR public key or signature could not be used", { cause });
  }
  if (!ok) throw new SpiffeError("ERR_CSR_INVALID", "CSR signature does not verify with its public key");
  checkCsrKey(spki, key);
  return { publicKeySpki: spki, uriSans };
}
