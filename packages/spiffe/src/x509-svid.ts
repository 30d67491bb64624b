import { spiffeIdOfParsed } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import type { SpiffeId } from "./spiffe-id.js";
import { parseChain } from "./verify-svid.js";

/**
 * An X.509-SVID with its private key, ready for TLS: `certChainPem` goes to the `cert` option,
 * `privateKeyPem` to `key`.
 */
export interface X509Svid {
  /** The identity in the leaf's URI SAN. */
  spiffeId: SpiffeId;
  /** Leaf first, then intermediates; the root is not included. */
  certChainPem: string;
  /** PKCS#8 PEM private key of the leaf. */
  privateKeyPem: string;
  notBefore: Date;
  notAfter: Date;
  /** Roots the CA reported with the chain (one PEM each), for building a trust bundle. */
  rootsPem: string[];
}

/**
 * Builds an {@link X509Svid} from a CA answer (one PEM per element, leaf first, root last as
 * Istio's CA sends it) and the private key. A trailing self-issued CA certificate is taken as the
 * root and kept out of `certChainPem`.
 */
export function x509SvidFromChain(certChain: readonly string[], privateKeyPem: string): X509Svid {
  const parsed = parseChain([...certChain]);
  const leaf = parsed[0];
  if (leaf === undefined) throw new SpiffeError("ERR_CHAIN_EMPTY", "certificate chain is empty");
  const last = parsed[parsed.length - 1];
  const hasRoot = parsed.length > 1 && last !== undefined && last.isCa && last.selfIssued;
  const body = hasRoot ? parsed.slice(0, -1) : parsed;
  return {
    spiffeId: spiffeIdOfParsed(leaf),
    certChainPem: body.map((c) => c.pem).join(""),
    privateKeyPem,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    rootsPem: hasRoot && last ? [last.pem] : [],
  };
}
