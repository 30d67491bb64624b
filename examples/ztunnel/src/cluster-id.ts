// The cluster a proxy says it runs in. It goes as `clusterid` metadata on every xDS stream and CA call
// (as ztunnel and pilot-agent send it) and as `CLUSTER_ID` in the xDS node metadata. A control plane
// serves the callers of its own cluster only, so a proxy that names another gets neither config nor
// certificates: the proxy must be told, it cannot guess.
import { settingFrom } from "./mesh-domains.js";

/** The cluster id of a proxy told nothing: Istio's single-cluster default. */
export const DEFAULT_CLUSTER_ID = "Kubernetes";

/** The variables Istio's ztunnel reads its cluster id from, the first one set wins (its `src/config.rs`). */
export const ZTUNNEL_CLUSTER_ID_VARIABLES = ["ISTIO_META_CLUSTER_ID", "CLUSTER_ID"] as const;

/**
 * What is wrong with `id` as a cluster id, or undefined when nothing is: it must be non-empty printable
 * ASCII without whitespace, so that it travels unchanged as gRPC metadata and names one cluster only.
 */
export function clusterIdProblem(id: string): string | undefined {
  return /^[!-~]+$/.test(id)
    ? undefined
    : `must be non-empty printable ASCII without whitespace, got ${JSON.stringify(id)}`;
}

/** A cluster id read from a command line and the environment, or why it cannot be one. */
export type ClusterIdChoice = { kind: "ok"; clusterId: string } | { kind: "error"; message: string };

/**
 * The cluster id of a proxy's command line: `flag` (`--cluster-id`) when given, else the first of
 * `variables` set in `env`, else {@link DEFAULT_CLUSTER_ID}. A bad value is an error naming where it
 * came from; a variable the flag overrides is not read.
 */
export function clusterIdFrom(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  variables: readonly string[],
): ClusterIdChoice {
  const choice = settingFrom("--cluster-id", flag, env, variables, DEFAULT_CLUSTER_ID, clusterIdProblem);
  return choice.kind === "ok" ? { kind: "ok", clusterId: choice.value } : choice;
}
