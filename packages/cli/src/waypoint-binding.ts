// Which waypoint a Service or a pod of a manifests folder is bound to, decided as istiod decides it:
// `istio.io/use-waypoint` on the object, else on its Namespace (`none` opts out), in the namespace
// `istio.io/use-waypoint-namespace` names; a binding holds only when that `istio-waypoint` Gateway
// exists, takes that kind of traffic (`istio.io/waypoint-for` on the Gateway, else on the
// `istio-waypoint` GatewayClass; `service` by default) and lets the object's namespace attach (its
// HBONE listener's `allowedRoutes.namespaces`: `Same` by default, `All`, or `Selector`).
import {
  GATEWAY_NAME_LABEL,
  isRecord,
  type ManifestObject,
  type ManifestSet,
  stringMap,
  USE_WAYPOINT_LABEL,
} from "./manifests.js";

export const USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace";
export const WAYPOINT_FOR_LABEL = "istio.io/waypoint-for";
const WAYPOINT_CLASS = "istio-waypoint";
const HBONE_PORT = 15008;

/** What an object's waypoint labels come to. */
export type WaypointBinding =
  /** No waypoint named (or `none`). */
  | { kind: "none" }
  /** Bound: traffic goes through this Gateway's waypoint. */
  | { kind: "bound"; gateway: ManifestObject; name: string; namespace: string }
  /** A waypoint is named, but the binding does not hold: traffic does not go through it. */
  | { kind: "unbound"; name: string; namespace: string; reason: string };

function namespaceLabels(set: ManifestSet, namespace: string): Record<string, string> {
  return (
    set.objects.find((o) => o.kind === "Namespace" && o.metadata.name === namespace)?.metadata.labels ?? {}
  );
}

/**
 * The waypoint `object` (a Service, or a pod for `workload` traffic) is bound to in `set`. A pod of a
 * waypoint itself is never bound to one.
 */
export function waypointBinding(
  set: ManifestSet,
  object: ManifestObject,
  traffic: "service" | "workload",
): WaypointBinding {
  const namespace = object.metadata.namespace;
  const nsLabels = namespaceLabels(set, namespace);
  const labels = object.metadata.labels[USE_WAYPOINT_LABEL] !== undefined ? object.metadata.labels : nsLabels;
  const name = labels[USE_WAYPOINT_LABEL];
  if (name === undefined || name === "none") return { kind: "none" };
  if (traffic === "workload" && isWaypointPod(set, object)) return { kind: "none" };
  const wpNamespace = labels[USE_WAYPOINT_NAMESPACE_LABEL] ?? namespace;
  const unbound = (reason: string): WaypointBinding => ({
    kind: "unbound",
    name,
    namespace: wpNamespace,
    reason,
  });
  const gateway = set.objects.find(
    (o) =>
      o.kind === "Gateway" &&
      o.metadata.namespace === wpNamespace &&
      o.metadata.name === name &&
      o.spec?.gatewayClassName === WAYPOINT_CLASS,
  );
  if (gateway === undefined) {
    return unbound(
      `waypoint Gateway ${wpNamespace}/${name} (class ${WAYPOINT_CLASS}) is not in the manifests`,
    );
  }
  if (!attachmentAllows(gateway, namespace, nsLabels)) {
    return unbound(
      `waypoint ${wpNamespace}/${name} does not let namespace ${namespace} attach (its HBONE listener's allowedRoutes.namespaces)`,
    );
  }
  const takes = waypointFor(set, gateway);
  if (takes !== traffic && takes !== "all") {
    return unbound(
      `waypoint ${wpNamespace}/${name} does not take ${traffic === "service" ? "Service" : "workload"} traffic (${WAYPOINT_FOR_LABEL}: ${takes})`,
    );
  }
  return { kind: "bound", gateway, name, namespace: wpNamespace };
}

/** Whether `pod` is a pod of a waypoint Gateway of its own namespace. */
function isWaypointPod(set: ManifestSet, pod: ManifestObject): boolean {
  const instanceOf = pod.metadata.labels[GATEWAY_NAME_LABEL];
  return (
    instanceOf !== undefined &&
    set.objects.some(
      (o) =>
        o.kind === "Gateway" &&
        o.metadata.namespace === pod.metadata.namespace &&
        o.metadata.name === instanceOf &&
        o.spec?.gatewayClassName === WAYPOINT_CLASS,
    )
  );
}

/** What a waypoint takes: its Gateway's label, else its class's, else `service`. */
function waypointFor(set: ManifestSet, gateway: ManifestObject): string {
  const own = gateway.metadata.labels[WAYPOINT_FOR_LABEL];
  if (own !== undefined) return own;
  const cls = set.objects.find((o) => o.kind === "GatewayClass" && o.metadata.name === WAYPOINT_CLASS);
  return cls?.metadata.labels[WAYPOINT_FOR_LABEL] ?? "service";
}

/** The Gateway's HBONE listener's `allowedRoutes.namespaces`, applied to a namespace and its labels. */
function attachmentAllows(
  gateway: ManifestObject,
  namespace: string,
  nsLabels: Readonly<Record<string, string>>,
): boolean {
  const listeners = Array.isArray(gateway.spec?.listeners) ? gateway.spec.listeners : [];
  const hbone = listeners.find((l) => isRecord(l) && l.protocol === "HBONE" && l.port === HBONE_PORT);
  const allowed = isRecord(hbone) && isRecord(hbone.allowedRoutes) ? hbone.allowedRoutes : {};
  const namespaces = isRecord(allowed.namespaces) ? allowed.namespaces : {};
  if (namespaces.from === "All") return true;
  if (namespaces.from === "Selector") {
    return isRecord(namespaces.selector) && selects(namespaces.selector, nsLabels);
  }
  return gateway.metadata.namespace === namespace;
}

/**
 * A Kubernetes label selector over `labels`: `matchLabels` and `matchExpressions` (`In`, `NotIn`,
 * `Exists`, `DoesNotExist`); an expression it cannot read selects nothing.
 */
function selects(selector: Record<string, unknown>, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(stringMap(selector.matchLabels))) if (labels[k] !== v) return false;
  const expressions = Array.isArray(selector.matchExpressions) ? selector.matchExpressions : [];
  return expressions.every((e) => {
    if (!isRecord(e) || typeof e.key !== "string") return false;
    const values = Array.isArray(e.values) ? e.values.filter((v) => typeof v === "string") : [];
    const value = Object.hasOwn(labels, e.key) ? labels[e.key] : undefined;
    if (e.operator === "Exists") return value !== undefined;
    if (e.operator === "DoesNotExist") return value === undefined;
    if (values.length === 0) return false;
    if (e.operator === "In") return value !== undefined && values.includes(value);
    if (e.operator === "NotIn") return value === undefined || !values.includes(value);
    return false;
  });
}
