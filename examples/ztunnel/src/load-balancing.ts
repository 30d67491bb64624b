// Locality-aware endpoint choice, from a Service's `loadBalancing` (istio.workload.LoadBalancing), as
// Istio's ztunnel ranks endpoints: by how many of the routing preference's scopes, taken in order,
// the endpoint shares with the source workload. Pure: the store rotates round robin over the result.
import type { Service, Workload } from "@ambient/xds";

type LoadBalancing = NonNullable<Service["loadBalancing"]>;
/** A routing preference scope: REGION, ZONE, SUBZONE, NODE, CLUSTER or NETWORK. */
export type LocalityScope = LoadBalancing["routingPreference"][number];

/** The parts of a workload a scope compares. */
export type LocalityOf = Pick<Workload, "locality" | "node" | "clusterId" | "network">;

/** Whether `a` and `b` are in the same `scope`; an unset locality compares as empty, as in ztunnel. */
export function sameScope(scope: LocalityScope, a: LocalityOf, b: LocalityOf): boolean {
  switch (scope) {
    case "REGION":
      return (a.locality?.region ?? "") === (b.locality?.region ?? "");
    case "ZONE":
      return (a.locality?.zone ?? "") === (b.locality?.zone ?? "");
    case "SUBZONE":
      return (a.locality?.subzone ?? "") === (b.locality?.subzone ?? "");
    case "NODE":
      return a.node === b.node;
    case "CLUSTER":
      return a.clusterId === b.clusterId;
    case "NETWORK":
      return a.network === b.network;
    default:
      return true;
  }
}

/**
 * How well `endpoint` matches `source` under `preference`: the number of scopes matched in order
 * before the first mismatch. When NETWORK comes first it is a hard preference: an endpoint on the
 * source's network ranks above every endpoint on another one (its match is worth all the scopes),
 * and one on another network is ranked by the remaining scopes alone.
 */
export function localityRank(
  preference: readonly LocalityScope[],
  source: LocalityOf,
  endpoint: LocalityOf,
): number {
  const networkFirst = preference[0] === "NETWORK";
  let rank = 0;
  let bonus = 0;
  for (const scope of preference) {
    const matches = sameScope(scope, source, endpoint);
    if (scope === "NETWORK" && networkFirst) {
      if (!matches) continue;
      bonus = preference.length - 1;
    }
    if (!matches) break;
    rank++;
  }
  return rank + bonus;
}

/**
 * The endpoints to rotate over for a connection from `source`:
 * - no `loadBalancing`, mode UNSPECIFIED_MODE (or PASSTHROUGH, decided before this), or no source:
 *   every endpoint;
 * - FAILOVER: those of the highest rank (the nearest ones; farther ones only when none is nearer);
 * - STRICT: those matching every scope of the preference, possibly none.
 * Scopes left UNSPECIFIED_SCOPE are ignored. Order is kept, so round robin stays stable.
 */
export function selectByLocality<E extends { workload: LocalityOf }>(
  endpoints: readonly E[],
  source: LocalityOf | undefined,
  loadBalancing: Service["loadBalancing"],
): E[] {
  const mode = loadBalancing?.mode ?? "UNSPECIFIED_MODE";
  if (source === undefined || loadBalancing === undefined || (mode !== "STRICT" && mode !== "FAILOVER")) {
    return [...endpoints];
  }
  const preference = loadBalancing.routingPreference.filter((s) => s !== "UNSPECIFIED_SCOPE");
  const ranked = endpoints.flatMap((endpoint) => {
    const rank = localityRank(preference, source, endpoint.workload);
    // STRICT keeps only full matches; with NETWORK first a full match also carries the bonus.
    const full = preference.length + (preference[0] === "NETWORK" ? preference.length - 1 : 0);
    if (mode === "STRICT" && rank !== full) return [];
    return [{ endpoint, rank }];
  });
  const best = Math.max(...ranked.map((r) => r.rank));
  return ranked.filter((r) => r.rank === best).map((r) => r.endpoint);
}
