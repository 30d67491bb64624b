import { constants as cryptoConstants, X509Certificate } from "node:crypto";
import {
  type ConnectionOptions,
  createSecureContext,
  type DetailedPeerCertificate,
  type PeerCertificate,
  type SecureContext,
  type SecureContextOptions,
  type TlsOptions,
  type Server as TlsServer,
} from "node:tls";
import { SpiffeId, spiffeIdFromCertificate, TrustBundle, verifySvid, type X509Svid } from "@ambient/spiffe";
import { TLS12_CIPHERS, TLS13_CIPHERSUITES } from "./defaults.js";
import { HboneError } from "./errors.js";

/** PEM text, as a string or as the bytes of a PEM file. */
export type Pem = string | Buffer;

/** A workload's X.509-SVID and the mesh roots, all PEM. */
export interface HboneCredentials {
  /** Private key of the workload certificate (PEM). */
  key: Pem;
  /** Certificate chain, leaf first (PEM). Its leaf's URI SAN is this side's SPIFFE identity. */
  certChain: Pem;
  /** Trust bundle: root certificates the peer's chain must lead to (PEM, one or many). */
  trustBundle: Pem | readonly Pem[];
  /**
   * Which trust domain each root belongs to. When set, a peer's chain must also lead to a root of
   * its own SPIFFE ID's trust domain in this bundle (checked with `verifySvid` after the handshake),
   * so the CA of one trust domain cannot vouch for identities of another; Istio `PeerCertVerifier`,
   * Envoy's SPIFFE validator. Default: none, every root in `trustBundle` vouches for any identity,
   * which is safe only while those roots are all of one trust domain. `credentialsFromSvid` sets it.
   * Read when a client dials and when a server is created or given `setCredentials`: assign a new
   * bundle (or call `setCredentials`) rather than add roots to this one.
   */
  rootsByTrustDomain?: TrustBundle;
}

/** TLS knobs shared by the client and the server. */
export interface HboneTlsOptions {
  /**
   * Also accept TLS 1.2 (ECDHE with AES-GCM). Default `false`: TLS 1.3 only; ztunnel `TLS12_ENABLED`.
   */
  allowTls12?: boolean;
}

const identityCache = new WeakMap<object, { chain: Pem; id: SpiffeId }>();

/**
 * The SPIFFE ID in the leaf of `credentials.certChain`; cached per credentials object while it holds
 * the same chain.
 */
export function ownIdentity(credentials: HboneCredentials): SpiffeId {
  const chain = credentials.certChain;
  const cached = identityCache.get(credentials);
  if (cached !== undefined && cached.chain === chain) return cached.id;
  let id: SpiffeId;
  try {
    id = spiffeIdFromCertificate(String(chain));
  } catch (err) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `certChain: the leaf certificate carries no usable SPIFFE ID (${(err as Error).message})`,
      { cause: err },
    );
  }
  identityCache.set(credentials, { chain, id });
  return id;
}

export function checkCredentials(credentials: unknown, where: string): HboneCredentials {
  const c = credentials as Partial<HboneCredentials> | undefined;
  const isPem = (v: unknown) => typeof v === "string" || Buffer.isBuffer(v);
  if (c === undefined || c === null || typeof c !== "object") {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: credentials are required`);
  }
  if (!isPem(c.key)) throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: key must be a PEM string`);
  if (!isPem(c.certChain)) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: certChain must be a PEM string`);
  }
  const bundle = c.trustBundle;
  if (!(isPem(bundle) || (Array.isArray(bundle) && bundle.length > 0 && bundle.every(isPem)))) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: trustBundle must be PEM roots`);
  }
  if (c.rootsByTrustDomain !== undefined && !(c.rootsByTrustDomain instanceof TrustBundle)) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${where}: rootsByTrustDomain must be an @ambient/spiffe TrustBundle`,
    );
  }
  ownIdentity(c as HboneCredentials);
  return c as HboneCredentials;
}

function baseTls(credentials: HboneCredentials, tls: HboneTlsOptions): SecureContextOptions {
  const bundle = credentials.trustBundle;
  return {
    key: credentials.key,
    cert: credentials.certChain,
    ca: Array.isArray(bundle) ? [...bundle] : (bundle as Pem),
    minVersion: tls.allowTls12 ? "TLSv1.2" : "TLSv1.3",
    maxVersion: "TLSv1.3",
    // Node reads TLS 1.3 suites and TLS 1.2 ciphers from the same list.
    ciphers: tls.allowTls12 ? `${TLS13_CIPHERSUITES}:${TLS12_CIPHERS}` : TLS13_CIPHERSUITES,
    // No session resumption: every connection proves its identity afresh. No TLS 1.2
    // renegotiation either way: a second handshake could bring another certificate than the one
    // checked, and a client could make the server redo expensive handshakes at will. (TLS 1.3 has
    // none; `TLSSocket.disableRenegotiation()` covers only a server's sockets.)
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET | cryptoConstants.SSL_OP_NO_RENEGOTIATION,
    // Every root given is a trust anchor, self-signed or not (an issuing CA published as the mesh
    // root), as for ztunnel's webpki and `verifySvid`; OpenSSL otherwise wants a self-signed end.
    allowPartialTrustChain: true,
  };
}

/**
 * Node's `tls.Server` builds its context from a fixed list of options that leaves out
 * `allowPartialTrustChain` (Node 20 and 22), so the flag is set on that context here, where Node
 * exposes it; call after creating the server and after each `setSecureContext`. Without it the
 * server keeps requiring a self-signed end to the client's chain, and refuses the others.
 */
export function allowPartialTrustChain(server: TlsServer): void {
  type Internals = { _sharedCreds?: { context?: { setAllowPartialTrustChain?: () => void } } };
  const context = (server as unknown as Internals)._sharedCreds?.context;
  if (typeof context?.setAllowPartialTrustChain === "function") context.setAllowPartialTrustChain();
}

/** Node TLS options for an HBONE listener: mTLS with a mandatory, chain-verified client certificate. */
export function serverTlsOptions(credentials: HboneCredentials, tls: HboneTlsOptions): TlsOptions {
  return {
    ...baseTls(credentials, tls),
    ALPNProtocols: ["h2"],
    requestCert: true,
    rejectUnauthorized: true,
  };
}

// Parsing the key, the chain and the roots costs more than the rest of a handshake's set-up, so a
// client builds its context once per credentials object, what it holds and TLS mode. The contexts are
// kept only while the object still holds the same key, chain and bundle (the same values, as
// `trustKey` and `localCertificateOf` compare them): one given a new key, chain or bundle in place
// gets a new context, so it presents the new certificate and verifies against the new roots.
interface ClientContexts {
  key: Pem;
  certChain: Pem;
  trustBundle: HboneCredentials["trustBundle"];
  byMode: Map<boolean, SecureContext>;
}
const clientContexts = new WeakMap<HboneCredentials, ClientContexts>();

function clientContext(credentials: HboneCredentials, tls: HboneTlsOptions): SecureContext {
  const tls12 = tls.allowTls12 === true;
  const { key, certChain, trustBundle } = credentials;
  let cached = clientContexts.get(credentials);
  if (
    cached === undefined ||
    cached.key !== key ||
    cached.certChain !== certChain ||
    cached.trustBundle !== trustBundle
  ) {
    cached = { key, certChain, trustBundle, byMode: new Map() };
    clientContexts.set(credentials, cached);
  }
  let context = cached.byMode.get(tls12);
  if (context === undefined) {
    context = createSecureContext(baseTls(credentials, tls));
    cached.byMode.set(tls12, context);
  }
  return context;
}

/**
 * Node TLS options for dialing an HBONE peer: no SNI (the name would be an IP address), ALPN h2,
 * chain verified against the bundle, and the server's URI SAN checked against `expected`.
 */
export function clientTlsOptions(
  credentials: HboneCredentials,
  tls: HboneTlsOptions,
  expected: readonly string[],
): ConnectionOptions {
  return {
    secureContext: clientContext(credentials, tls),
    ALPNProtocols: ["h2"],
    rejectUnauthorized: true,
    checkServerIdentity: (_host: string, cert: PeerCertificate) =>
      checkPeerIdentity(cert, expected, peerChainCheck(credentials)),
  };
}

/** The DER certificates of a peer, leaf first, as Node links them through `issuerCertificate`. */
function peerChainDer(cert: PeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  const seen = new Set<PeerCertificate>();
  let current: PeerCertificate | undefined = cert;
  while (current !== undefined && !seen.has(current) && Buffer.isBuffer(current.raw)) {
    seen.add(current);
    out.push(current.raw);
    current = (current as Partial<DetailedPeerCertificate>).issuerCertificate;
  }
  return out;
}

/**
 * The check a verified peer still needs so that only its own trust domain's roots vouch for it:
 * `peer` is the SPIFFE ID of its leaf, `chain` returns its certificate from
 * `getPeerCertificate(true)`. Throws `HboneError` `ERR_HBONE_IDENTITY`.
 */
export type PeerChainCheck = (
  peer: SpiffeId,
  chain: () => PeerCertificate,
  /** What the peer's certificate is used for here: a server's, or a client's. */
  purpose: "serverAuth" | "clientAuth",
) => void;

const peerChainChecks = new WeakMap<
  HboneCredentials,
  { bundle: unknown; byDomain: unknown; check: PeerChainCheck | undefined }
>();

function pemText(pem: Pem): string {
  return typeof pem === "string" ? pem : pem.toString("latin1");
}

/**
 * What `credentials` need checked after Node verified a peer against all of `trustBundle`, decided
 * once per credentials object and bundles:
 * - no `rootsByTrustDomain`: nothing (the roots are taken to be of one trust domain);
 * - Node's roots are exactly those of the one trust domain in `rootsByTrustDomain`: the peer's
 *   trust domain must be that one, a string comparison;
 * - otherwise: the peer's chain again, with `verifySvid`, against its own trust domain's roots.
 */
export function peerChainCheck(credentials: HboneCredentials): PeerChainCheck | undefined {
  const { trustBundle: bundle, rootsByTrustDomain: byDomain } = credentials;
  if (byDomain === undefined) return undefined;
  const cached = peerChainChecks.get(credentials);
  if (cached !== undefined && cached.bundle === bundle && cached.byDomain === byDomain) return cached.check;
  const domains = byDomain.trustDomains();
  const only = domains.length === 1 ? (domains[0] as string) : undefined;
  const nodeRoots = new Set((Array.isArray(bundle) ? bundle : [bundle as Pem]).map(pemText));
  const ownRoots = only === undefined ? [] : byDomain.rootsPem(only);
  let check: PeerChainCheck;
  if (only !== undefined && ownRoots.length === nodeRoots.size && ownRoots.every((r) => nodeRoots.has(r))) {
    check = (peer) => {
      if (peer.trustDomain === only) return;
      throw new HboneError(
        "ERR_HBONE_IDENTITY",
        `peer ${peer} belongs to trust domain "${peer.trustDomain}", but only roots of "${only}" are trusted`,
      );
    };
  } else {
    check = (_peer, chain, purpose) => {
      try {
        verifySvid(peerChainDer(chain()), byDomain, { purpose });
      } catch (err) {
        throw new HboneError(
          "ERR_HBONE_IDENTITY",
          `peer certificate chain does not lead to a root of its own trust domain: ${(err as Error).message}`,
          { cause: err },
        );
      }
    };
  }
  peerChainChecks.set(credentials, { bundle, byDomain, check });
  return check;
}

function checkPeerIdentity(
  cert: PeerCertificate,
  expected: readonly string[],
  chainCheck: PeerChainCheck | undefined,
): Error | undefined {
  let id: SpiffeId;
  try {
    id = spiffeIdFromCertificate(cert);
  } catch (err) {
    return new HboneError("ERR_HBONE_IDENTITY", `peer certificate: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const text = id.toString();
  if (expected.includes(text)) {
    if (chainCheck === undefined) return undefined;
    try {
      chainCheck(id, () => cert, "serverAuth");
      return undefined;
    } catch (err) {
      return err as HboneError;
    }
  }
  return new HboneError(
    "ERR_HBONE_IDENTITY",
    `peer identity ${text} is not one of the expected identities [${expected.join(", ")}]`,
  );
}

// A pooled connection was verified against the roots of the dial that opened it, so only dials that
// trust the same roots may share it. Each distinct PEM text gets a number (never reused for other
// text), and each credentials object caches its list of numbers: a pooled dial costs one lookup.
const MAX_REMEMBERED_ROOTS = 64;
const rootsIds = new Map<string, number>();
let lastRootsId = 0;
const trustKeys = new WeakMap<HboneCredentials, { bundle: unknown; byDomain: unknown; key: string }>();

function rootsId(pem: Pem): number {
  const text = typeof pem === "string" ? pem : pem.toString("latin1");
  let id = rootsIds.get(text);
  if (id === undefined) {
    // Starting afresh only gives later dials new numbers, hence new connections: never a shared one.
    if (rootsIds.size >= MAX_REMEMBERED_ROOTS) rootsIds.clear();
    id = ++lastRootsId;
    rootsIds.set(text, id);
  }
  return id;
}

const localCertificates = new WeakMap<object, { chain: Pem; key: string; notAfter: number }>();

/**
 * The certificate `credentials` present: a short key for its chain (equal for equal PEM text; part of
 * the pool key, so a renewed certificate gets connections of its own) and when its leaf expires (ms
 * since the epoch). Computed once per credentials object and chain.
 */
export function localCertificateOf(credentials: HboneCredentials): { key: string; notAfter: number } {
  const chain = credentials.certChain;
  const cached = localCertificates.get(credentials);
  if (cached !== undefined && cached.chain === chain) return cached;
  let notAfter: number;
  try {
    notAfter = Date.parse(new X509Certificate(chain).validTo);
  } catch (err) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `certChain: cannot read the leaf certificate`, {
      cause: err,
    });
  }
  const entry = { chain, key: String(rootsId(chain)), notAfter: Number.isNaN(notAfter) ? 0 : notAfter };
  localCertificates.set(credentials, entry);
  return entry;
}

function rootsKey(pems: readonly Pem[]): string {
  return [...new Set(pems.map(rootsId))].sort((a, b) => a - b).join(",");
}

/**
 * A short key for the roots `credentials` verify a peer against: equal for equal PEM text, different
 * for different roots, and for roots assigned to trust domains differently (or not at all). Part of
 * the pool key.
 */
export function trustKey(credentials: HboneCredentials): string {
  const { trustBundle: bundle, rootsByTrustDomain: byDomain } = credentials;
  const cached = trustKeys.get(credentials);
  // Kept only while the object still holds the same bundles: one given a new bundle gets a new key.
  if (cached !== undefined && cached.bundle === bundle && cached.byDomain === byDomain) return cached.key;
  let key = rootsKey(Array.isArray(bundle) ? bundle : [bundle as Pem]);
  if (byDomain !== undefined) {
    const domains = byDomain.trustDomains().map((td) => `${td}=${rootsKey(byDomain.rootsPem(td))}`);
    key += `|${domains.join(";")}`;
  }
  trustKeys.set(credentials, { bundle, byDomain, key });
  return key;
}

/** Validates and normalises expected identities into sorted, unique SPIFFE ID strings. */
export function normaliseIdentities(ids: unknown, where: string): string[] {
  if (!Array.isArray(ids) || ids.length === 0) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${where}: at least one expected identity is required`,
    );
  }
  const out = new Set<string>();
  for (const raw of ids) {
    const id = SpiffeId.tryParse(String(raw));
    if (id === undefined) {
      throw new HboneError(
        "ERR_HBONE_INVALID_ARGUMENT",
        `${where}: ${JSON.stringify(raw)} is not a SPIFFE ID`,
      );
    }
    out.add(id.toString());
  }
  return [...out].sort();
}

/**
 * Credentials from an `@ambient/spiffe` X.509-SVID and trust bundle. Without `trustDomain` they trust
 * the roots of every trust domain in `bundle`, each only for identities of its own trust domain (a
 * snapshot of `bundle` becomes `rootsByTrustDomain`). With `trustDomain` they hold only that trust
 * domain's roots, as plain PEM, as ztunnel trusts only its own CA's roots.
 */
export function credentialsFromSvid(
  svid: X509Svid,
  bundle: TrustBundle,
  trustDomain?: string,
): HboneCredentials {
  if (
    typeof svid?.privateKeyPem !== "string" ||
    typeof svid.certChainPem !== "string" ||
    !(bundle instanceof TrustBundle)
  ) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      "credentialsFromSvid: expected an X509Svid (privateKeyPem, certChainPem) and a TrustBundle",
    );
  }
  // One snapshot for both: Node's roots and the per-trust-domain check must hold the same roots.
  const snapshot = trustDomain === undefined ? bundle.clone() : undefined;
  const roots = (snapshot ?? bundle).rootsPem(trustDomain);
  if (roots.length === 0) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", "credentialsFromSvid: the trust bundle has no roots");
  }
  const credentials: HboneCredentials = {
    key: svid.privateKeyPem,
    certChain: svid.certChainPem,
    trustBundle: roots,
  };
  if (snapshot !== undefined) credentials.rootsByTrustDomain = snapshot;
  return credentials;
}
