// A caller of the CA (or of xDS) names the cluster it runs in with the `clusterid` request metadata
// (ztunnel's and pilot-agent's `CLUSTER_ID`): its credential is to be checked by that cluster's API, and
// the node it impersonates for is one of that cluster's. This control plane reads one cluster, so a
// caller from another one cannot be checked here: it is refused, instead of having its token and its
// node looked up among the pods of a cluster it does not run in.

import { SpiffeError } from "@ambient/spiffe";
import type { Authenticator } from "@ambient/spiffe/ca";
import type { Metadata } from "@grpc/grpc-js";

/** The request metadata that names the caller's cluster. */
export const CLUSTER_ID_METADATA = "clusterid";

/**
 * The cluster a request names: its one `clusterid` value, or `""` when it sends none or several (such
 * a caller is taken to be of this cluster, the single-cluster case).
 */
export function requestedClusterId(metadata: Metadata): string {
  const values = metadata.get(CLUSTER_ID_METADATA);
  if (values.length !== 1) return "";
  const value = values[0] as string | Buffer;
  return typeof value === "string" ? value : value.toString("utf8");
}

/**
 * Wraps an authenticator so that a request naming a cluster other than `clusterId` is refused with
 * `ERR_UNAUTHENTICATED` before its credential is looked at; other requests go to `authenticator`.
 */
export function forOwnCluster(authenticator: Authenticator, clusterId: string): Authenticator {
  return {
    name: authenticator.name,
    async authenticate(context) {
      const requested = requestedClusterId(context.metadata);
      if (requested !== "" && requested !== clusterId) {
        throw new SpiffeError(
          "ERR_UNAUTHENTICATED",
          `cluster ${JSON.stringify(requested)} is not known here: this control plane checks callers of cluster ${JSON.stringify(clusterId)}`,
          { clusterId: requested },
        );
      }
      return authenticator.authenticate(context);
    },
  };
}
