/**
 * `@ambient/spiffe/grpc`: `@grpc/grpc-js` channel credentials that verify a server's SPIFFE identity, for
 * the xDS client, the certificate service client or any `grpc.Client`. `@grpc/grpc-js` is a peer
 * dependency: the credentials are built with the app's own copy.
 *
 * @example
 * ```ts
 * import { TrustBundle } from "@ambient/spiffe";
 * import { grpcChannelCredentials } from "@ambient/spiffe/grpc";
 * const { credentials, channelOptions } = grpcChannelCredentials({
 *   bundle: TrustBundle.fromPem("cluster.local", rootsPem),
 *   expectedIds: ["spiffe://cluster.local/ns/istio-system/sa/istiod"],
 *   serverName: "istiod.istio-system.svc",
 * });
 * ```
 *
 * @packageDocumentation
 */

export {
  type GrpcChannelSpiffeCredentials,
  type GrpcChannelSpiffeOptions,
  grpcChannelCredentials,
} from "./grpc-channel-credentials.js";
