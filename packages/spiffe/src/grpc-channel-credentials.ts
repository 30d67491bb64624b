// gRPC channel credentials from SPIFFE material. Kept apart from tls-options.ts so that the main entry
// point never loads @grpc/grpc-js: it is a peer dependency, the app's own copy builds the credentials.
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { type ChannelCredentials, type ChannelOptions, experimental } from "@grpc/grpc-js";
import { SpiffeError } from "./errors.js";
import { invalidOption, requiredOptions } from "./options.js";
import type { SpiffeId } from "./spiffe-id.js";
import { checkIdList, checkSvid, rootsOf, serverIdentityCheck } from "./tls-options.js";
import type { TrustBundle } from "./trust-bundle.js";
import { checkBundle } from "./verify-svid.js";
import type { X509Svid } from "./x509-svid.js";

/** Options of {@link grpcChannelCredentials}. */
export interface GrpcChannelSpiffeOptions {
  /** Roots the server certificate must chain to. */
  bundle: TrustBundle;
  /**
   * Server identities accepted (any one) as URI SAN, e.g. `spiffe://cluster.local/ns/istio-system/sa/istiod`,
   * the server's chain checked against the bundle's root of that identity's trust domain.
   */
  expectedIds?: ReadonlyArray<SpiffeId | string>;
  /**
   * DNS names accepted (any one) as the server certificate's DNS SAN, checked as Node's
   * `tls.checkServerIdentity` checks a host name, the chain against the bundle's roots: how Istio's
   * ztunnel and pilot-agent check istiod, whose certificate carries DNS names only (e.g.
   * `istiod.istio-system.svc`). A server passes with either check. At least one of `expectedIds` and
   * `expectedHostnames` must name something.
   */
  expectedHostnames?: readonly string[];
  /** The client's own SVID, for mutual TLS. Default: no client certificate (istiod then wants a token). */
  svid?: X509Svid;
  /**
   * TLS server name to send, e.g. `istiod.istio-system.svc`. Set it when the address is an IP: TLS
   * forbids IP addresses as server names (Node warns with DEP0123). Default: the address's host.
   */
  serverName?: string;
}

/** What {@link grpcChannelCredentials} returns. */
export interface GrpcChannelSpiffeCredentials {
  credentials: ChannelCredentials;
  channelOptions: ChannelOptions;
  /**
   * Verifies the server against `bundle` from the next TLS handshake on (a reconnect, or a channel
   * made later with these credentials); connections already up are not checked again. For roots
   * learned after start, such as a rotated CA root that arrives in certificate answers before the
   * configured root expires.
   * @throws SpiffeError `ERR_BUNDLE_NO_ROOTS` for a bundle without roots (the last one stays).
   */
  trust(bundle: TrustBundle): void;
}

/**
 * `@grpc/grpc-js` channel credentials and options for a server such as istiod's port 15012: the server
 * chain must verify against the bundle, and its URI SAN must be one of `expectedIds` or a DNS SAN match
 * one of `expectedHostnames`; the address's host name is not checked. Pass `credentials` and `channelOptions` to `new grpc.Client(address,
 * credentials, channelOptions)`, the xDS client or the certificate service client; `trust` replaces
 * the roots for later handshakes.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` when `bundle` is missing, neither `expectedIds` nor
 *   `expectedHostnames` names anything, or an option is of the wrong type; `ERR_BUNDLE_NO_ROOTS` for an
 *   empty bundle.
 */
export function grpcChannelCredentials(
  channelOptions: GrpcChannelSpiffeOptions,
): GrpcChannelSpiffeCredentials {
  const options = requiredOptions(SCOPE, channelOptions);
  checkBundle(SCOPE, options.bundle);
  const expectedIds = options.expectedIds ?? [];
  checkIdList(SCOPE, "expectedIds", expectedIds);
  const hostnames = options.expectedHostnames ?? [];
  if (!Array.isArray(hostnames) || !hostnames.every((h) => typeof h === "string" && h !== "")) {
    throw invalidOption(SCOPE, "expectedHostnames", "an array of DNS names", options.expectedHostnames);
  }
  if (expectedIds.length === 0 && hostnames.length === 0) {
    throw invalidOption(SCOPE, "expectedIds", "at least one SPIFFE ID or expected host name", expectedIds);
  }
  if (options.svid !== undefined) checkSvid(SCOPE, options.svid);
  if (options.serverName !== undefined && typeof options.serverName !== "string") {
    throw invalidOption(SCOPE, "serverName", "a string", options.serverName);
  }
  // The bundle the server chain is checked against per trust domain; `trust` replaces it with the roots.
  let bundle = options.bundle.clone();
  const roots = new LatestRoots(rootsOf(bundle));
  const svid = options.svid;
  const identity =
    svid === undefined
      ? null
      : new FixedIdentity(Buffer.from(svid.certChainPem), Buffer.from(svid.privateKeyPem));
  return {
    // grpc-js makes each handshake's secure context from the latest roots its provider gave.
    credentials: experimental.createCertificateProviderChannelCredentials(roots, identity, {
      checkServerIdentity: serverCheck(
        expectedIds.length === 0 ? undefined : serverIdentityCheck(expectedIds, () => bundle),
        hostnames,
      ),
    }),
    channelOptions:
      options.serverName === undefined ? {} : { "grpc.ssl_target_name_override": options.serverName },
    trust: (next) => {
      checkBundle(`${SCOPE} trust`, next);
      const copy = next.clone();
      roots.set(rootsOf(copy));
      bundle = copy;
    },
  };
}

const SCOPE = "grpcChannelCredentials";

/**
 * Passes a server whose certificate has one of the expected SPIFFE IDs (`byId`, which also checks the
 * chain against that trust domain's root) or, the chain having been verified against the roots by the
 * handshake, a DNS SAN matching one of `hostnames`.
 */
function serverCheck(
  byId: ((hostname: string, cert: PeerCertificate) => Error | undefined) | undefined,
  hostnames: readonly string[],
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  return (hostname, cert) => {
    const idProblem = byId?.(hostname, cert);
    if (byId !== undefined && idProblem === undefined) return undefined;
    for (const name of hostnames) if (checkServerIdentity(name, cert) === undefined) return undefined;
    if (idProblem !== undefined && hostnames.length === 0) return idProblem;
    const why = [`no DNS SAN among [${hostnames.join(", ")}]`];
    if (idProblem !== undefined) why.push(idProblem.message);
    return new SpiffeError("ERR_PEER_NOT_AUTHORIZED", `server certificate refused: ${why.join("; ")}`);
  };
}

type GrpcCaListener = experimental.CaCertificateUpdateListener;
type GrpcIdentityListener = experimental.IdentityCertificateUpdateListener;

/** A grpc-js certificate provider of CA roots that change when told. */
class LatestRoots implements experimental.CertificateProvider {
  #update: { caCertificate: Buffer };
  readonly #listeners = new Set<GrpcCaListener>();

  constructor(rootsPem: readonly string[]) {
    this.#update = { caCertificate: Buffer.from(rootsPem.join("\n")) };
  }

  set(rootsPem: readonly string[]): void {
    this.#update = { caCertificate: Buffer.from(rootsPem.join("\n")) };
    for (const listener of this.#listeners) listener(this.#update);
  }

  addCaCertificateListener(listener: GrpcCaListener): void {
    this.#listeners.add(listener);
    listener(this.#update);
  }

  removeCaCertificateListener(listener: GrpcCaListener): void {
    this.#listeners.delete(listener);
  }

  addIdentityCertificateListener(listener: GrpcIdentityListener): void {
    listener(null);
  }

  removeIdentityCertificateListener(): void {}
}

/** The client certificate of mutual TLS, as a grpc-js certificate provider. */
class FixedIdentity implements experimental.CertificateProvider {
  readonly #update: { certificate: Buffer; privateKey: Buffer };

  constructor(certificate: Buffer, privateKey: Buffer) {
    this.#update = { certificate, privateKey };
  }

  addCaCertificateListener(listener: GrpcCaListener): void {
    listener(null);
  }

  removeCaCertificateListener(): void {}

  addIdentityCertificateListener(listener: GrpcIdentityListener): void {
    listener(this.#update);
  }

  removeIdentityCertificateListener(): void {}
}
