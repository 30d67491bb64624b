import { brandErrorClass } from "@ambient/telemetry";

/**
 * Stable error codes of `@ambient/spiffe`. Each names the rule that was broken.
 */
export type SpiffeErrorCode =
  /** The text is not a valid SPIFFE ID (reason in the message). */
  | "ERR_SPIFFE_ID_INVALID"
  /** A trust domain name is not valid. */
  | "ERR_TRUST_DOMAIN_INVALID"
  /** PEM or DER input could not be decoded (a certificate that repeats an extension included). */
  | "ERR_PEM_INVALID"
  /** A private key could not be read or has an unsupported algorithm. */
  | "ERR_KEY_INVALID"
  /** A certificate signing request is malformed or its signature does not verify. */
  | "ERR_CSR_INVALID"
  /** A CSR asks for an identity other than the one the CA decided. */
  | "ERR_CSR_IDENTITY_MISMATCH"
  /** A certificate has no URI SAN. */
  | "ERR_SVID_NO_URI_SAN"
  /** A certificate has more than one URI SAN. */
  | "ERR_SVID_MULTIPLE_URI_SANS"
  /** The leaf certificate breaks an X.509-SVID leaf rule (CA flag, key usage, extended key usage, ...). */
  | "ERR_SVID_LEAF_INVALID"
  /** The SPIFFE ID of the SVID is not in the expected trust domain. */
  | "ERR_SVID_TRUST_DOMAIN_MISMATCH"
  /** The chain is empty. */
  | "ERR_CHAIN_EMPTY"
  /** A certificate in the chain is expired (beyond the allowed clock skew). */
  | "ERR_CERT_EXPIRED"
  /** A certificate in the chain is not yet valid (beyond the allowed clock skew). */
  | "ERR_CERT_NOT_YET_VALID"
  /** A certificate signature does not verify with its issuer's key. */
  | "ERR_CERT_SIGNATURE_INVALID"
  /**
   * A certificate in the chain is signed with a refused algorithm (SHA-1, MD5, SHA-224, DSA, unknown),
   * or a key that signs in the chain (the leaf's included) is RSA under 2048 bits.
   */
  | "ERR_CERT_WEAK_ALGORITHM"
  /**
   * An issuing certificate is not a CA, lacks keyCertSign, breaks its path length, has nameConstraints
   * this package cannot enforce (a name type other than URI, DNS, IP and directoryName, a minimum or
   * maximum) or an unsupported critical extension, or has an extendedKeyUsage that excludes the purpose.
   */
  | "ERR_CERT_ISSUER_INVALID"
  /**
   * A name of a certificate on the path (the SVID's SPIFFE ID, a DNS or IP SAN, a subject) is outside
   * the permitted subtrees, or inside the excluded subtrees, of a CA's nameConstraints.
   */
  | "ERR_CERT_NAME_NOT_PERMITTED"
  /** The chain does not lead to a root of the trust bundle. */
  | "ERR_CHAIN_UNTRUSTED"
  /** The trust bundle has no roots for the trust domain. */
  | "ERR_BUNDLE_NO_ROOTS"
  /** The peer's SPIFFE ID is not allowed. */
  | "ERR_PEER_NOT_AUTHORIZED"
  /** The TLS peer did not present a verified certificate. */
  | "ERR_PEER_UNVERIFIED"
  /** Certificate authority configuration is invalid (files, keys, chain). */
  | "ERR_CA_CONFIG_INVALID"
  /** A signing request is refused (TTL, identity, rotation, ...). */
  | "ERR_CA_SIGN_REFUSED"
  /** The caller of the certificate service could not be authenticated. */
  | "ERR_UNAUTHENTICATED"
  /** The caller is authenticated but may not act for the requested identity. */
  | "ERR_PERMISSION_DENIED"
  /** A remote certificate service call failed. */
  | "ERR_CA_UNAVAILABLE"
  /** The certificate service answered with something that is not a usable chain. */
  | "ERR_CA_RESPONSE_INVALID"
  /** An option passed to a constructor or factory is out of range (the message names it). */
  | "ERR_OPTIONS_INVALID"
  /** The object was closed. */
  | "ERR_CLOSED";

/** Extra fields carried by a {@link SpiffeError}. */
export interface SpiffeErrorDetails {
  cause?: unknown;
  [key: string]: unknown;
}

/**
 * The one error class of `@ambient/spiffe`. `instanceof` works across the ESM and CJS copies
 * of the package thanks to a `Symbol.for` brand.
 */
export class SpiffeError extends Error {
  override readonly name = "SpiffeError";
  readonly code: SpiffeErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: SpiffeErrorCode, message: string, details: SpiffeErrorDetails = {}) {
    const { cause, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.details = rest;
  }
}

brandErrorClass(SpiffeError, "@ambient/spiffe.error");
