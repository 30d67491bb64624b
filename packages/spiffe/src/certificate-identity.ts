import type { X509Certificate as NodeX509Certificate } from "node:crypto";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { SpiffeError } from "./errors.js";
import { KEY_USAGE, type ParsedCertificate, parseCertificateDer } from "./parsed-certificate.js";
import { decodeCertificatesPem } from "./pem.js";
import { SpiffeId } from "./spiffe-id.js";

/** Anything a certificate can be read from: Node's X509Certificate, a TLS peer certificate, PEM or DER. */
export type CertificateInput = NodeX509Certificate | PeerCertificate | string | Uint8Array;

function rawOf(cert: CertificateInput): Uint8Array {
  if (typeof cert === "string") {
    const first = decodeCertificatesPem(cert)[0];
    if (first === undefined) throw new SpiffeError("ERR_PEM_INVALID", "no certificate in PEM input");
    return first;
  }
  if (cert instanceof Uint8Array) return cert;
  const raw = (cert as { raw?: unknown }).raw;
  if (raw instanceof Uint8Array && raw.length > 0) return raw;
  throw new SpiffeError("ERR_PEM_INVALID", "certificate object has no DER encoding (raw)");
}

/** The SPIFFE ID of a parsed certificate: exactly one URI SAN that is a valid SPIFFE ID. */
export function spiffeIdOfParsed(cert: ParsedCertificate): SpiffeId {
  if (cert.uriSans.length === 0) {
    throw new SpiffeError("ERR_SVID_NO_URI_SAN", "certificate has no URI SAN, so it carries no SPIFFE ID");
  }
  if (cert.uriSans.length > 1) {
    throw new SpiffeError(
      "ERR_SVID_MULTIPLE_URI_SANS",
      `certificate has ${cert.uriSans.length} URI SANs; an X.509-SVID must have exactly one`,
      { uriSans: cert.uriSans },
    );
  }
  return SpiffeId.parse(cert.uriSans[0] as string);
}

/**
 * Reads the SPIFFE ID of a certificate: it must have exactly one URI SAN, and that SAN must be a
 * valid SPIFFE ID. This does not validate the certificate chain; see `verifySvid` for that.
 *
 * @throws SpiffeError `ERR_SVID_NO_URI_SAN`, `ERR_SVID_MULTIPLE_URI_SANS`, `ERR_SPIFFE_ID_INVALID`,
 *   `ERR_PEM_INVALID`.
 */
export function spiffeIdFromCertificate(cert: CertificateInput): SpiffeId {
  return spiffeIdOfParsed(parseCertificateDer(rawOf(cert)));
}

/**
 * The SPIFFE ID of the peer of a TLS socket whose peer certificate was verified by the handshake
 * (`socket.authorized`), once its leaf passes the SPIFFE rules for a leaf SVID (see `verifySvid`).
 *
 * @throws SpiffeError `ERR_PEER_UNVERIFIED` when the peer sent no certificate or it did not verify;
 *   `ERR_SVID_LEAF_INVALID` when its leaf is a CA's certificate, may sign certificates or CRLs, lacks
 *   digitalSignature, names the bare trust domain or has an unknown critical extension.
 */
export function peerSpiffeId(socket: TLSSocket): SpiffeId {
  if (!socket.authorized) {
    const reason = socket.authorizationError ? `: ${String(socket.authorizationError)}` : "";
    throw new SpiffeError("ERR_PEER_UNVERIFIED", `TLS peer certificate is not verified${reason}`);
  }
  const cert = socket.getPeerCertificate();
  if (cert === null || typeof cert !== "object" || !cert.raw) {
    throw new SpiffeError("ERR_PEER_UNVERIFIED", "TLS peer presented no certificate");
  }
  // The handshake verified the chain; the leaf must also be a workload's SVID (not a CA's certificate,
  // not the bare trust domain), as a chain verified with `verifySvid` must.
  const leaf = parseCertificateDer(cert.raw);
  const id = spiffeIdOfParsed(leaf);
  checkLeaf(leaf, id);
  return id;
}

/**
 * @internal The SPIFFE rules for a leaf SVID beyond its ID: not a CA, no keyCertSign or cRLSign, a
 * path after the trust domain, digitalSignature when it has key usages, no unknown critical extension.
 * @throws SpiffeError `ERR_SVID_LEAF_INVALID`
 */
export function checkLeaf(leaf: ParsedCertificate, id: SpiffeId): void {
  if (leaf.isCa)
    throw new SpiffeError("ERR_SVID_LEAF_INVALID", "leaf SVID must not be a CA (basicConstraints cA=true)");
  // The bare trust domain ID names a signing authority, never a workload.
  if (id.path === "")
    throw new SpiffeError("ERR_SVID_LEAF_INVALID", `leaf SVID ${id} must have a path after the trust domain`);
  if (leaf.keyUsage !== undefined) {
    if ((leaf.keyUsage & KEY_USAGE.keyCertSign) !== 0) {
      throw new SpiffeError("ERR_SVID_LEAF_INVALID", "leaf SVID must not have the keyCertSign key usage");
    }
    if ((leaf.keyUsage & KEY_USAGE.cRLSign) !== 0) {
      throw new SpiffeError("ERR_SVID_LEAF_INVALID", "leaf SVID must not have the cRLSign key usage");
    }
    if ((leaf.keyUsage & KEY_USAGE.digitalSignature) === 0) {
      throw new SpiffeError("ERR_SVID_LEAF_INVALID", "leaf SVID key usage must include digitalSignature");
    }
  }
  if (leaf.unhandledCritical.length > 0) {
    throw new SpiffeError(
      "ERR_SVID_LEAF_INVALID",
      `leaf SVID has unsupported critical extension(s) ${leaf.unhandledCritical.join(", ")}`,
    );
  }
}
