// gRPC channel credentials from SPIFFE material. Kept apart from tls-options.ts so that the main entry
// point never loads @grpc/grpc-js: it is a peer dependency, the app's own copy builds the credentials.
import { type ChannelCredentials, type ChannelOptions, experimental } from "@grpc/grpc-js";
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
  /** Server identities accepted (any one), e.g. `spiffe://cluster.local/ns/istio-system/sa/istiod`. */
  expectedIds: ReadonlyArray<SpiffeId | string>;
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
 * `@grpc/grpc-js` channel credentials and options for a SPIFFE server such as istiod's port 15012: the
 * server chain must verify against the bundle and its URI SAN must be one of `expectedIds`; the host
 * name is not checked. Pass `credentials` and `channelOptions` to `new grpc.Client(address,
 * credentials, channelOptions)`, the xDS client or the certificate service client; `trust` replaces
 * the roots for later handshakes.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` when `bundle` or `expectedIds` is missing or an option is of
 *   the wrong type; `ERR_BUNDLE_NO_ROOTS` for an empty bundle.
 */
export function grpcChannelCredentials(
  channelOptions: GrpcChannelSpiffeOptions,
): GrpcChannelSpiffeCredentials {
  const options = requiredOptions(SCOPE, channelOptions);
  checkBundle(SCOPE, options.bundle);
  checkIdList(SCOPE, "expectedIds", options.expectedIds);
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
      checkServerIdentity: serverIdentityCheck(options.expectedIds, () => bundle),
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
