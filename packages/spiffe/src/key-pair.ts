import {
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  generateKeyPair as nodeGenerateKeyPair,
  webcrypto,
} from "node:crypto";
import { SpiffeError } from "./errors.js";

function generate(
  type: "ec" | "rsa",
  params: { namedCurve: string } | { modulusLength: number },
): Promise<{ publicKey: string; privateKey: string }> {
  return new Promise((resolve, reject) => {
    const cb = (err: Error | null, publicKey: string, privateKey: string): void => {
      if (err) reject(new SpiffeError("ERR_KEY_INVALID", "key generation failed", { cause: err }));
      else resolve({ publicKey, privateKey });
    };
    const enc = {
      publicKeyEncoding: { type: "spki", format: "pem" },
      privateKeyEncoding: { type: "pkcs8", format: "pem" },
    } as const;
    if (type === "ec") nodeGenerateKeyPair("ec", { ...(params as { namedCurve: string }), ...enc }, cb);
    else nodeGenerateKeyPair("rsa", { ...(params as { modulusLength: number }), ...enc }, cb);
  });
}

/**
 * Key algorithms for workload and CA keys. `ECDSA_P256` matches ztunnel (always P-256) and
 * pilot-agent with `ECC_SIGNATURE_ALGORITHM=ECDSA`; `RSA_2048` matches pilot-agent's default
 * (`WORKLOAD_RSA_KEY_SIZE`) and the self-signed istiod root.
 */
export type KeyAlgorithm = "ECDSA_P256" | "ECDSA_P384" | "RSA_2048" | "RSA_3072" | "RSA_4096";

/** A key pair in PEM form (PKCS#8 private key, SPKI public key). */
export interface KeyPair {
  algorithm: KeyAlgorithm;
  privateKeyPem: string;
  publicKeyPem: string;
}

/** Options of {@link generateKeyPair}. */
export interface GenerateKeyPairOptions {
  /** Default `ECDSA_P256`; ztunnel's CSR key. */
  algorithm?: KeyAlgorithm;
}

/** Generates a key pair; ECDSA P-256 unless asked otherwise. */
export async function generateKeyPair(options: GenerateKeyPairOptions = {}): Promise<KeyPair> {
  const algorithm = options.algorithm ?? "ECDSA_P256";
  let pair: { publicKey: string; privateKey: string };
  switch (algorithm) {
    case "ECDSA_P256":
    case "ECDSA_P384":
      pair = await generate("ec", { namedCurve: algorithm === "ECDSA_P256" ? "P-256" : "P-384" });
      break;
    case "RSA_2048":
    case "RSA_3072":
    case "RSA_4096":
      pair = await generate("rsa", { modulusLength: Number(algorithm.slice(4)) });
      break;
    default:
      throw new SpiffeError("ERR_KEY_INVALID", `unsupported key algorithm ${JSON.stringify(algorithm)}`);
  }
  return { algorithm, privateKeyPem: pair.privateKey, publicKeyPem: pair.publicKey };
}

/** A private key loaded for signing with WebCrypto and Node crypto. */
export interface SigningKey {
  algorithm: KeyAlgorithm;
  keyObject: KeyObject;
  publicKeyObject: KeyObject;
  privateKey: webcrypto.CryptoKey;
  publicKey: webcrypto.CryptoKey;
  /** WebCrypto signature algorithm for X.509/PKCS#10 signing. */
  signingAlgorithm: { name: string; hash: string };
}

function algorithmOf(key: KeyObject): KeyAlgorithm {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === "ec") {
    if (details.namedCurve === "prime256v1") return "ECDSA_P256";
    if (details.namedCurve === "secp384r1") return "ECDSA_P384";
    throw new SpiffeError("ERR_KEY_INVALID", `unsupported EC curve ${String(details.namedCurve)}`);
  }
  if (type === "rsa") {
    const bits = details.modulusLength;
    if (bits === 2048 || bits === 3072 || bits === 4096) return `RSA_${bits}`;
    throw new SpiffeError("ERR_KEY_INVALID", `unsupported RSA modulus length ${String(bits)}`);
  }
  throw new SpiffeError("ERR_KEY_INVALID", `unsupported key type ${String(type)}`);
}

function webAlgorithms(algorithm: KeyAlgorithm): {
  importAlg: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams;
  signingAlgorithm: { name: string; hash: string };
} {
  if (algorithm === "ECDSA_P256") {
    return {
      importAlg: { name: "ECDSA", namedCurve: "P-256" },
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    };
  }
  if (algorithm === "ECDSA_P384") {
    return {
      importAlg: { name: "ECDSA", namedCurve: "P-384" },
      signingAlgorithm: { name: "ECDSA", hash: "SHA-384" },
    };
  }
  return {
    importAlg: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  };
}

/** Loads a PEM private key (PKCS#8, SEC1 or PKCS#1) for signing. */
export async function loadSigningKey(privateKeyPem: string): Promise<SigningKey> {
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey({ key: privateKeyPem, format: "pem" });
  } catch (cause) {
    throw new SpiffeError("ERR_KEY_INVALID", "private key could not be read (expected a PEM private key)", {
      cause,
    });
  }
  const algorithm = algorithmOf(keyObject);
  const publicKeyObject = createPublicKey(keyObject);
  const { importAlg, signingAlgorithm } = webAlgorithms(algorithm);
  const pkcs8 = keyObject.export({ type: "pkcs8", format: "der" });
  const spki = publicKeyObject.export({ type: "spki", format: "der" });
  const privateKey = await webcrypto.subtle.importKey("pkcs8", pkcs8, importAlg, true, ["sign"]);
  const publicKey = await webcrypto.subtle.importKey("spki", spki, importAlg, true, ["verify"]);
  return { algorithm, keyObject, publicKeyObject, privateKey, publicKey, signingAlgorithm };
}
