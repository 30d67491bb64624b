import { createPublicKey, type KeyObject } from "node:crypto";
import { childrenOf, isOid, oidValue, readTlv } from "./der.js";

const OID_EC_PUBLIC_KEY = oidValue("1.2.840.10045.2.1");
const CURVES: readonly { oid: Buffer; crv: string; size: number }[] = [
  { oid: oidValue("1.2.840.10045.3.1.7"), crv: "P-256", size: 32 },
  { oid: oidValue("1.3.132.0.34"), crv: "P-384", size: 48 },
];

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
      if (params?.tag === 0x06 && isOid(spki, algOid, OID_EC_PUBLIC_KEY)) {
        const curve = CURVES.find((c) => isOid(spki, params, c.oid));
        const bitsStart = bits.valueStart + 1; // after the unused-bits byte
        if (curve && spki[bitsStart] === 0x04 && bits.end - bitsStart === 1 + 2 * curve.size) {
          const x = spki.toString("base64url", bitsStart + 1, bitsStart + 1 + curve.size);
          const y = spki.toString("base64url", bitsStart + 1 + curve.size, bits.end);
          return createPublicKey({ key: { kty: "EC", crv: curve.crv, x, y }, format: "jwk" });
        }
      }
    }
  } catch {
    // Fall through to the general decoder, which reports the real problem.
  }
  return createPublicKey({ key: spki, format: "der", type: "spki" });
}
