import { createPublicKey, type KeyObject } from "node:crypto";
import { childrenOf, contentOf, decodeOid, readTlv } from "./der.js";

const OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1";
const CURVES: Readonly<Record<string, { crv: string; size: number }>> = {
  "1.2.840.10045.3.1.7": { crv: "P-256", size: 32 },
  "1.3.132.0.34": { crv: "P-384", size: 48 },
};

/**
 * A public key from SPKI DER. EC keys go through JWK import, which Node performs several times
 * faster than DER decoding; that matters when every CSR and certificate brings a new key.
 */
export function publicKeyFromSpki(spki: Buffer): KeyObject {
  try {
    const outer = readTlv(spki, 0);
    const [alg, bits] = childrenOf(spki, outer);
    if (alg && bits && bits.tag === 0x03) {
      const [algOid, params] = childrenOf(spki, alg);
      if (algOid && params?.tag === 0x06 && decodeOid(contentOf(spki, algOid)) === OID_EC_PUBLIC_KEY) {
        const curve = CURVES[decodeOid(contentOf(spki, params))];
        const point = contentOf(spki, bits).subarray(1);
        if (curve && point[0] === 0x04 && point.length === 1 + 2 * curve.size) {
          const x = Buffer.from(point.subarray(1, 1 + curve.size)).toString("base64url");
          const y = Buffer.from(point.subarray(1 + curve.size)).toString("base64url");
          return createPublicKey({ key: { kty: "EC", crv: curve.crv, x, y }, format: "jwk" });
        }
      }
    }
  } catch {
    // Fall through to the general decoder, which reports the real problem.
  }
  return createPublicKey({ key: spki, format: "der", type: "spki" });
}
