import { SpiffeId, TrustBundle } from "@ambient/spiffe";
import { grpcChannelCredentials } from "@ambient/spiffe/grpc";
import type { ChannelCredentials, ChannelOptions } from "@grpc/grpc-js";

/** The control plane's SPIFFE identity, as istiod's: `spiffe://cluster.local/ns/istio-system/sa/istiod`. */
export const DEFAULT_CONTROL_PLANE_IDENTITY = "spiffe://cluster.local/ns/istio-system/sa/istiod";

/** TLS server name sent to the control plane (istiod's in-cluster name): the address is usually an IP. */
export const CONTROL_PLANE_SERVER_NAME = "istiod.istio-system.svc";

/**
 * gRPC credentials and channel options for the control plane's xDS and CA port: its certificate must
 * chain to the mesh root and carry `identity` as URI SAN. Spread into the xDS and CA client options.
 */
export function controlPlaneChannel(
  rootCertPem: string,
  identity = DEFAULT_CONTROL_PLANE_IDENTITY,
): { credentials: ChannelCredentials; channelOptions: ChannelOptions } {
  return grpcChannelCredentials({
    bundle: TrustBundle.fromPem(SpiffeId.parse(identity).trustDomain, rootCertPem),
    expectedIds: [identity],
    serverName: CONTROL_PLANE_SERVER_NAME,
  });
}
