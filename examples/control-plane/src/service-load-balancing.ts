/**
 * The workload API `Service.load_balancing` of a Kubernetes Service, as istiod derives it for ztunnel:
 * `spec.trafficDistribution` (or, before that field, the `networking.istio.io/traffic-distribution`
 * annotation on the Service or its Namespace) asks for closer endpoints first, `internalTrafficPolicy:
 * Local` for same-node endpoints only, and `publishNotReadyAddresses` for unready endpoints too.
 * Pure: the ztunnel's `selectByLocality` acts on the result.
 */
import type { istio, MessageInit } from "@ambient/xds";

type LoadBalancing = MessageInit<istio.workload.LoadBalancing>;
type Scope = istio.workload.LoadBalancing.Scope;

/** Istio's annotation for the same preference, on a Service or its Namespace. */
export const TRAFFIC_DISTRIBUTION_ANNOTATION = "networking.istio.io/traffic-distribution";

/** Closest first, spilling over when a scope has no healthy endpoint (istiod's `PreferClose`). */
const PREFER_SAME_ZONE: Scope[] = ["NETWORK", "REGION", "ZONE", "SUBZONE"];
/** The same, with the client's node first of all (Kubernetes `PreferSameNode`). */
const PREFER_SAME_NODE: Scope[] = ["NETWORK", "REGION", "ZONE", "SUBZONE", "NODE"];

/** The parts of a Service (and its Namespace) the choice reads. */
export interface LoadBalancingInput {
  trafficDistribution?: unknown;
  internalTrafficPolicy?: unknown;
  publishNotReadyAddresses?: unknown;
  serviceAnnotations?: Record<string, string>;
  namespaceAnnotations?: Record<string, string>;
}

function preference(value: unknown): Scope[] | undefined {
  if (typeof value !== "string") return undefined;
  const v = value.toLowerCase();
  // PreferClose is Kubernetes' older name of PreferSameZone.
  if (v === "preferclose" || v === "prefersamezone") return PREFER_SAME_ZONE;
  if (v === "prefersamenode") return PREFER_SAME_NODE;
  return undefined;
}

/**
 * `load_balancing` for a Service, or undefined for the default (round robin over healthy endpoints).
 * The most specific setting wins: `spec.trafficDistribution`, then the Service's annotation, then the
 * Namespace's; `internalTrafficPolicy: Local` overrides them all with same-node-only.
 */
export function serviceLoadBalancing(input: LoadBalancingInput): LoadBalancing | undefined {
  let lb: LoadBalancing | undefined;
  const fromSpec = input.trafficDistribution;
  const scopes =
    fromSpec !== undefined
      ? preference(fromSpec)
      : (preference(input.serviceAnnotations?.[TRAFFIC_DISTRIBUTION_ANNOTATION]) ??
        (input.serviceAnnotations?.[TRAFFIC_DISTRIBUTION_ANNOTATION] === undefined
          ? preference(input.namespaceAnnotations?.[TRAFFIC_DISTRIBUTION_ANNOTATION])
          : undefined));
  if (scopes !== undefined) lb = { routingPreference: [...scopes], mode: "FAILOVER" };
  if (input.internalTrafficPolicy === "Local") lb = { routingPreference: ["NODE"], mode: "STRICT" };
  if (input.publishNotReadyAddresses === true) lb = { ...lb, healthPolicy: "ALLOW_ALL" };
  return lb;
}
