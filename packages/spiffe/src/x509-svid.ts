import { spiffeIdOfParsed } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import type { ParsedCertificate } from "./parsed-certificate.js";
import { decodeCertificatesPem, encodePem } from "./pem.js";
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
  /** Roots the CA reported with the chain (one PEM each; several during a root rotation), for a trust bundle. */
  rootsPem: string[];
}

/**
 * Builds an {@link X509Svid} from a CA answer (one PEM per element, leaf first, root last as
 * Istio's CA sends it) and the private key. The last element may hold several roots concatenated (a
 * trust bundle during a root rotation, as ztunnel reads it); when every certificate in it is a
 * self-issued CA they are all taken as roots and kept out of `certChainPem`. A chain given as one
 * element keeps its trailing self-issued CA certificate as the root.
 */
export function x509SvidFromChain(certChain: readonly string[], privateKeyPem: string): X509Svid {
  let body: ParsedCertificate[];
  let roots: ParsedCertificate[] = [];
  const lastElement = certChain.length > 1 ? parseChain([certChain[certChain.length - 1] as string]) : [];
  if (lastElement.length > 0 && lastElement.every((c) => c.isCa && c.selfIssued)) {
    body = parseChain(certChain.slice(0, -1));
    roots = lastElement;
  } else {
    body = parseChain([...certChain]);
    const last = body[body.length - 1];
    if (body.length > 1 && last !== undefined && last.isCa && last.selfIssued) {
      roots = [last];
      body = body.slice(0, -1);
    }
  }
  const leaf = body[0];
  if (leaf === undefined) throw new SpiffeError("ERR_CHAIN_EMPTY", "certificate chain is empty");
  return {
    spiffeId: spiffeIdOfParsed(leaf),
    certChainPem: body.map((c) => c.pem).join(""),
    privateKeyPem,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    rootsPem: roots.map((c) => c.pem),
  };
}

/**
 * Returns a function that gives the roots (PEM) a workload's mutual TLS should trust: the roots the CA
 * sent with that workload's certificate (`rootsPem`), computed once per SVID, as ztunnel trusts the
 * roots of its CA answer. During a root rotation the CA lists the old and the new root, so a renewed
 * SVID brings the new root with it; once the CA retires a root, the next renewal drops it (the
 * configured roots are not added back: a root retired because its key leaked stops being trusted).
 * The configured roots stand in only for an answer that sent none, so a workload never trusts nothing.
 * @throws SpiffeError `ERR_PEM_INVALID` when `configuredRootsPem` holds no certificate.
 */
export function trustedRootsOf(configuredRootsPem: string): (svid: X509Svid) => string {
  const configured = decodeCertificatesPem(configuredRootsPem).map((der) => encodePem("CERTIFICATE", der));
  const bySvid = new WeakMap<X509Svid, string>();
  return (svid) => {
    let pem = bySvid.get(svid);
    if (pem === undefined) {
      const roots: string[] = [];
      for (const root of svid.rootsPem) {
        for (const der of decodeCertificatesPem(root)) {
          const text = encodePem("CERTIFICATE", der);
          if (!roots.includes(text)) roots.push(text);
        }
      }
      pem = (roots.length === 0 ? configured : roots).join("");
      bySvid.set(svid, pem);
    }
    return pem;
  };
}
