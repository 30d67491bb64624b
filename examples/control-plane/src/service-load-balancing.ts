/**
 * The workload API `Service.load_balancing` of a Kubernetes Service, as istiod derives it for ztunnel:
 * `spec.trafficDistribution` (or, when it is unset or not a value Kubernetes defines, the
 * `networking.istio.io/traffic-distribution` annotation on the Service or its Namespace) asks for
 * closer endpoints first, `internalTrafficPolicy: Local` for same-node endpoints only, and
 * `publishNotReadyAddresses` for unready endpoints too.
 * Pure: the ztunnel's `selectByLocality` acts on the result.
 */
import type { istio, MessageInit } from "@ambient/xds";

type LoadBalancing = MessageInit<istio.workload.LoadBalancing>;
type Scope = istio.workload.LoadBalancing.Scope;

/** Istio's annotation for the same preference, on a Service or its Namespace. */
export const TRAFFIC_DISTRIBUTION_ANNOTATION = "networking.istio.io/traffic-distribution";

/**
 * Closest first, spilling over when a scope has no healthy endpoint (Kubernetes `PreferSameZone`,
 * formerly `PreferClose`): network, region, then zone. Endpoints of the client's zone are equals:
 * its subzone does not come first.
 */
const PREFER_SAME_ZONE: Scope[] = ["NETWORK", "REGION", "ZONE"];
/** The same down to the subzone, with the client's node first of all (Kubernetes `PreferSameNode`). */
const PREFER_SAME_NODE: Scope[] = ["NETWORK", "REGION", "ZONE", "SUBZONE", "NODE"];

/** The parts of a Service (and its Namespace) the choice reads. */
export interface LoadBalancingInput {
  trafficDistribution?: unknown;
  internalTrafficPolicy?: unknown;
  publishNotReadyAddresses?: unknown;
  serviceAnnotations?: Record<string, string>;
  namespaceAnnotations?: Record<string, string>;
}

/** Scopes for a value of `spec.trafficDistribution`: the Kubernetes spellings, matched exactly. */
function specPreference(value: unknown): Scope[] | undefined {
  if (value === "PreferClose" || value === "PreferSameZone") return PREFER_SAME_ZONE;
  if (value === "PreferSameNode") return PREFER_SAME_NODE;
  return undefined;
}

/**
 * Scopes for an annotation: the same values in any case. `null` for a value set but unknown, which
 * means no preference (a broader setting does not apply); undefined for none set (absent or empty).
 */
function annotationPreference(value: string | undefined): Scope[] | null | undefined {
  if (value === undefined || value === "") return undefined;
  const v = value.toLowerCase();
  // PreferClose is Kubernetes' older name of PreferSameZone.
  if (v === "preferclose" || v === "prefersamezone") return PREFER_SAME_ZONE;
  if (v === "prefersamenode") return PREFER_SAME_NODE;
  return null;
}

/**
 * `load_balancing` for a Service, or undefined for the default (round robin over healthy endpoints).
 * The most specific setting wins: `spec.trafficDistribution` when it is a value Kubernetes defines,
 * else the Service's annotation when set (an unknown value there means no preference), else the
 * Namespace's; `internalTrafficPolicy: Local` overrides them all with same-node-only.
 */
export function serviceLoadBalancing(input: LoadBalancingInput): LoadBalancing | undefined {
  let lb: LoadBalancing | undefined;
  const annotation = (annotations: Record<string, string> | undefined) =>
    annotationPreference(annotations?.[TRAFFIC_DISTRIBUTION_ANNOTATION]);
  let scopes = specPreference(input.trafficDistribution) ?? annotation(input.serviceAnnotations);
  if (scopes === undefined) scopes = annotation(input.namespaceAnnotations);
  if (scopes !== undefined && scopes !== null) lb = { routingPreference: [...scopes], mode: "FAILOVER" };
  if (input.internalTrafficPolicy === "Local") lb = { routingPreference: ["NODE"], mode: "STRICT" };
  if (input.publishNotReadyAddresses === true) lb = { ...lb, healthPolicy: "ALLOW_ALL" };
  return lb;
}
