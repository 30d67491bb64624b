// gRPC channel credentials from SPIFFE material. Kept apart from tls-options.ts so that the main entry
// point never loads @grpc/grpc-js: it is a peer dependency, the app's own copy builds the credentials.
import { type ChannelCredentials, type ChannelOptions, credentials } from "@grpc/grpc-js";
import type { SpiffeId } from "./spiffe-id.js";
import { rootsOf, serverIdentityCheck } from "./tls-options.js";
import type { TrustBundle } from "./trust-bundle.js";
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

/**
 * `@grpc/grpc-js` channel credentials and options for a SPIFFE server such as istiod's port 15012: the
 * server chain must verify against the bundle and its URI SAN must be one of `expectedIds`; the host
 * name is not checked. Pass both to `new grpc.Client(address, credentials, channelOptions)`, the xDS
 * client or the certificate service client.
 */
export function grpcChannelCredentials(options: GrpcChannelSpiffeOptions): {
  credentials: ChannelCredentials;
  channelOptions: ChannelOptions;
} {
  const roots = Buffer.from(rootsOf(options.bundle).join("\n"));
  const key = options.svid === undefined ? null : Buffer.from(options.svid.privateKeyPem);
  const chain = options.svid === undefined ? null : Buffer.from(options.svid.certChainPem);
  return {
    credentials: credentials.createSsl(roots, key, chain, {
      checkServerIdentity: serverIdentityCheck(options.expectedIds),
    }),
    channelOptions:
      options.serverName === undefined ? {} : { "grpc.ssl_target_name_override": options.serverName },
  };
}
