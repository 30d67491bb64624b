import { SpiffeId, TrustBundle } from "@ambient/spiffe";
import { grpcChannelCredentials } from "@ambient/spiffe/grpc";
import type { ChannelCredentials, ChannelOptions } from "@grpc/grpc-js";
import { CONTROL_PLANE_IDENTITY } from "./control-plane.js";

/** The TLS server name clients send: istiod's in-cluster name (TLS does not allow an IP address there). */
export const CONTROL_PLANE_SERVER_NAME = "istiod.istio-system.svc";

/**
 * Channel credentials and options a node agent uses to reach the control plane: TLS verified against
 * the mesh root, accepting only a server whose URI SAN is the control plane identity (no hostname
 * check). Spread the result into `createXdsClient` or `createCertificateServiceClient` options.
 */
export function controlPlaneChannel(
  rootCertPem: string,
  expectedId = CONTROL_PLANE_IDENTITY,
): { credentials: ChannelCredentials; channelOptions: ChannelOptions } {
  return grpcChannelCredentials({
    bundle: TrustBundle.fromPem(SpiffeId.parse(expectedId).trustDomain, rootCertPem),
    expectedIds: [expectedId],
    serverName: CONTROL_PLANE_SERVER_NAME,
  });
}
