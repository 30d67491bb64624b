import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from "node:tls";
import { peerSpiffeId, spiffeIdFromCertificate } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import { invalidOption, requiredOptions } from "./options.js";
import { SpiffeId } from "./spiffe-id.js";
import type { TrustBundle } from "./trust-bundle.js";
import { checkBundle, type SvidPurpose, verifySvid } from "./verify-svid.js";
import type { X509Svid } from "./x509-svid.js";

/** Decides whether a verified peer identity may connect. */
export type SpiffeIdAuthorizer = (id: SpiffeId) => boolean;

/** Options of {@link tlsServerOptions}. */
export interface TlsServerSpiffeOptions {
  /** The server's own SVID. */
  svid: X509Svid;
  /** Roots that client certificates must chain to. */
  bundle: TrustBundle;
  /**
   * Which client identities are accepted. Default: any identity in the server's own trust domain,
   * as ztunnel's inbound `TrustDomainVerifier`.
   */
  authorize?: SpiffeIdAuthorizer | ReadonlyArray<SpiffeId | string>;
}

/** Node `tls` server options plus the peer check to run on each secure connection. */
export interface SpiffeTlsServerOptions {
  key: string;
  cert: string;
  ca: string[];
  requestCert: true;
  rejectUnauthorized: true;
  minVersion: "TLSv1.3";
  /**
   * Returns the verified client's SPIFFE ID, or throws `ERR_PEER_UNVERIFIED` /
   * `ERR_PEER_NOT_AUTHORIZED`. Call it on `secureConnection` and destroy the socket on error.
   * Node's `tls` ignores this extra field.
   */
  authorizePeer(socket: TLSSocket): SpiffeId;
}

/** Options of {@link tlsClientOptions}. */
export interface TlsClientSpiffeOptions {
  /** The client's own SVID. */
  svid: X509Svid;
  /** Roots the server certificate must chain to. */
  bundle: TrustBundle;
  /**
   * Server identities accepted (any one); ztunnel's `upstream_sans` (service SANs plus the
   * destination workload's identity). An empty list refuses every server.
   */
  expectedIds: ReadonlyArray<SpiffeId | string>;
}

/** Node `tls.connect` options for a SPIFFE mTLS client. */
export interface SpiffeTlsClientOptions {
  key: string;
  cert: string;
  ca: string[];
  /** Every bundle certificate is a trust anchor, self-signed or not, as for `verifySvid`. */
  allowPartialTrustChain: true;
  rejectUnauthorized: true;
  minVersion: "TLSv1.3";
  /** Empty: no SNI is sent, as ztunnel (destinations are IP addresses). */
  servername: "";
  checkServerIdentity(hostname: string, cert: PeerCertificate): Error | undefined;
}

function toAuthorizer(
  authorize: TlsServerSpiffeOptions["authorize"],
  ownTrustDomain: string,
): SpiffeIdAuthorizer {
  if (authorize === undefined) return (id) => id.trustDomain === ownTrustDomain;
  if (typeof authorize === "function") return authorize;
  const allowed = new Set(authorize.map((a) => (typeof a === "string" ? SpiffeId.parse(a) : a).toString()));
  return (id) => allowed.has(id.toString());
}

/** The DER certificates of a peer, leaf first, as Node links them through `issuerCertificate`. */
function peerChainDer(cert: PeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<PeerCertificate>();
  let current: PeerCertificate | undefined = cert;
  while (current !== undefined && !seen.has(current) && current.raw) {
    seen.add(current);
    out.push(current.raw);
    current = (current as Partial<DetailedPeerCertificate>).issuerCertificate;
  }
  return out;
}

/**
 * Node verifies a peer against the roots of every trust domain at once, so a root trusted for one
 * trust domain would vouch for identities of any other. The peer's chain is checked again here
 * against the roots of its own SPIFFE ID's trust domain only, as the SPIFFE bundle model requires.
 * @throws SpiffeError `ERR_PEER_UNVERIFIED` (the reason in `cause`).
 */
function verifyPeerChain(cert: PeerCertificate, bundle: TrustBundle, purpose: SvidPurpose): SpiffeId {
  try {
    return verifySvid(peerChainDer(cert), bundle, { purpose });
  } catch (cause) {
    throw new SpiffeError(
      "ERR_PEER_UNVERIFIED",
      `TLS peer certificate is not a valid SVID of its trust domain: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** Refuses an SVID option that lacks the key, chain or identity the TLS options are built from. */
export function checkSvid(caller: string, svid: unknown): asserts svid is X509Svid {
  const s = svid as Partial<X509Svid> | null | undefined;
  if (
    typeof s !== "object" ||
    s === null ||
    typeof s.privateKeyPem !== "string" ||
    typeof s.certChainPem !== "string" ||
    typeof s.spiffeId?.trustDomain !== "string"
  ) {
    throw invalidOption(caller, "svid", "an X509Svid", svid);
  }
}

export function checkIdList(caller: string, name: string, ids: unknown): void {
  if (!Array.isArray(ids)) throw invalidOption(caller, name, "an array of SPIFFE IDs", ids);
}

/** The bundle's roots of every trust domain, as PEM texts. */
export function rootsOf(bundle: TrustBundle): string[] {
  const roots = bundle.rootsPem();
  if (roots.length === 0) throw new SpiffeError("ERR_BUNDLE_NO_ROOTS", "trust bundle has no roots");
  return roots;
}

/**
 * Node `tls`/`http2` server options for SPIFFE mTLS: the SVID as key and chain, the bundle's roots
 * as CA, client certificates required and verified, TLS 1.3 only. `authorizePeer` also requires the
 * client's chain to allow clientAuth where it has an extendedKeyUsage.
 *
 * Unlike the client options, these cannot make a bundle root that is not self-signed a trust anchor:
 * Node's `tls.Server` (20 and 22) builds its secure context from a fixed list of options that leaves
 * `allowPartialTrustChain` out, so a client chain must reach a self-signed root of the bundle.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` when `svid`, `bundle` or `authorize` is missing or of the
 *   wrong type; `ERR_BUNDLE_NO_ROOTS` for an empty bundle.
 */
export function tlsServerOptions(serverOptions: TlsServerSpiffeOptions): SpiffeTlsServerOptions {
  const options = requiredOptions("tlsServerOptions", serverOptions);
  checkSvid("tlsServerOptions", options.svid);
  checkBundle("tlsServerOptions", options.bundle);
  const { authorize } = options;
  if (authorize !== undefined && typeof authorize !== "function") {
    checkIdList("tlsServerOptions", "authorize", authorize);
  }
  const authorizer = toAuthorizer(options.authorize, options.svid.spiffeId.trustDomain);
  // A snapshot, so the per-trust-domain check trusts exactly the roots given to Node as `ca`.
  const bundle = options.bundle.clone();
  return {
    key: options.svid.privateKeyPem,
    cert: options.svid.certChainPem,
    ca: rootsOf(bundle),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
    authorizePeer(socket) {
      // Node's verdict first (an unverified or absent certificate throws), then the chain again
      // against the roots of the peer's own trust domain.
      peerSpiffeId(socket);
      const id = verifyPeerChain(socket.getPeerCertificate(true), bundle, "clientAuth");
      if (!authorizer(id)) {
        throw new SpiffeError("ERR_PEER_NOT_AUTHORIZED", `peer ${id} is not allowed`, {
          spiffeId: id.toString(),
        });
      }
      return id;
    },
  };
}

/**
 * Node `tls.connect`/`http2.connect` options for SPIFFE mTLS: the server chain must verify against
 * the bundle (each root a trust anchor, self-signed or not) and its URI SAN must be one of
 * `expectedIds`; host names are not checked and no SNI is sent.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` when `svid`, `bundle` or `expectedIds` is missing or of
 *   the wrong type; `ERR_BUNDLE_NO_ROOTS` for an empty bundle.
 */
export function tlsClientOptions(clientOptions: TlsClientSpiffeOptions): SpiffeTlsClientOptions {
  const options = requiredOptions("tlsClientOptions", clientOptions);
  checkSvid("tlsClientOptions", options.svid);
  checkBundle("tlsClientOptions", options.bundle);
  checkIdList("tlsClientOptions", "expectedIds", options.expectedIds);
  const bundle = options.bundle.clone();
  return {
    key: options.svid.privateKeyPem,
    cert: options.svid.certChainPem,
    ca: rootsOf(bundle),
    // A bundle root need not be self-signed (X509-SVID 6.1: SHOULD); without this OpenSSL would
    // refuse a server chain that verifySvid accepts.
    allowPartialTrustChain: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
    servername: "",
    checkServerIdentity: serverIdentityCheck(options.expectedIds, bundle),
  };
}

/**
 * A `checkServerIdentity` that accepts a server whose certificate's URI SAN is one of `expectedIds`
 * and ignores the host name (a SPIFFE server is known by its identity, not its DNS name). With
 * `bundle` (or a function returning the current one), the server's chain must also lead to a root
 * of its own identity's trust domain in that bundle, not merely to any root Node was given, and
 * allow serverAuth where it has an extendedKeyUsage.
 */
export function serverIdentityCheck(
  expectedIds: ReadonlyArray<SpiffeId | string>,
  bundle?: TrustBundle | (() => TrustBundle),
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  checkIdList("serverIdentityCheck", "expectedIds", expectedIds);
  if (bundle !== undefined && typeof bundle !== "function") checkBundle("serverIdentityCheck", bundle);
  const expected = new Set(
    expectedIds.map((a) => (typeof a === "string" ? SpiffeId.parse(a) : a).toString()),
  );
  return (_hostname, cert) => {
    try {
      const id =
        bundle === undefined
          ? spiffeIdFromCertificate(cert)
          : verifyPeerChain(cert, typeof bundle === "function" ? bundle() : bundle, "serverAuth");
      if (expected.has(id.toString())) return undefined;
      return new SpiffeError(
        "ERR_PEER_NOT_AUTHORIZED",
        `server identity ${id} is not one of the expected identities [${[...expected].join(", ")}]`,
        { spiffeId: id.toString() },
      );
    } catch (err) {
      return err instanceof Error ? err : new SpiffeError("ERR_PEER_UNVERIFIED", String(err));
    }
  };
}
