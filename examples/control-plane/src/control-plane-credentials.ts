import { spiffeIdFromCertificate } from "@ambient/spiffe";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import { CONTROL_PLANE_IDENTITY } from "./control-plane.js";

/**
 * Channel credentials a node agent uses to reach the control plane: TLS verified against the mesh
 * root, accepting only a server whose URI SAN is the control plane identity (no hostname check).
 */
export function controlPlaneCredentials(
  rootCertPem: string,
  expectedId = CONTROL_PLANE_IDENTITY,
): ChannelCredentials {
  return credentials.createSsl(Buffer.from(rootCertPem), null, null, {
    checkServerIdentity: (_host, cert) => {
      try {
        const id = spiffeIdFromCertificate(cert).toString();
        return id === expectedId ? undefined : new Error(`control plane identity ${id} is not ${expectedId}`);
      } catch (err) {
        return err instanceof Error ? err : new Error(String(err));
      }
    },
  });
}
