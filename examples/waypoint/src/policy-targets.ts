/** Which waypoint a policy attaches to, by its `targetRefs` (or singular `targetRef`). */
const GATEWAY_GROUP = "gateway.networking.k8s.io";

/** The GatewayClass of waypoints: a root-namespace policy that targets it applies at every waypoint. */
export const WAYPOINT_GATEWAY_CLASS = "istio-waypoint";
/** Mesh root namespace. Default of meshConfig `rootNamespace`, as the policy engine's. */
export const DEFAULT_ROOT_NAMESPACE = "istio-system";

/** A JSON object (not an array, not null): the shape of a resource or of one of its fields. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function namespaceOf(obj: Record<string, unknown>): string {
  const meta = isRecord(obj.metadata) ? obj.metadata : {};
  return typeof meta.namespace === "string" && meta.namespace !== "" ? meta.namespace : "default";
}

function refsOf(obj: Record<string, unknown>): unknown[] {
  const spec = isRecord(obj.spec) ? obj.spec : {};
  return [...(Array.isArray(spec.targetRefs) ? spec.targetRefs : []), spec.targetRef];
}

/**
 * Whether one target reference of a policy in `namespace` can attach anywhere. A reference reaches
 * only into the policy's own namespace: one that names another namespace matches nothing (cross-namespace
 * references are refused by the API's validation and never attach), else a tenant of one namespace
 * could place policy, or trusted JWT issuers, on another's Services. The waypoint GatewayClass is
 * taken from the root namespace only.
 */
function attachable(ref: unknown, namespace: string, rootNamespace: string): ref is Record<string, unknown> {
  if (!isRecord(ref)) return false;
  if (ref.namespace !== undefined && ref.namespace !== "" && ref.namespace !== namespace) return false;
  if (ref.kind === "GatewayClass") {
    return (
      namespace === rootNamespace &&
      (ref.group ?? GATEWAY_GROUP) === GATEWAY_GROUP &&
      ref.name === WAYPOINT_GATEWAY_CLASS
    );
  }
  return true;
}

/**
 * The policy with only the target references that can attach (see {@link targetsWaypoint}), for an
 * evaluator that matches each reference against a request's targets by the namespace the reference
 * names: a reference into another namespace, or a GatewayClass reference outside the root namespace,
 * is dropped rather than matched. The object is returned as it is when nothing is dropped.
 */
export function withAttachableTargets(
  obj: Record<string, unknown>,
  rootNamespace = DEFAULT_ROOT_NAMESPACE,
): Record<string, unknown> {
  const spec = isRecord(obj.spec) ? obj.spec : undefined;
  if (spec === undefined) return obj;
  const namespace = namespaceOf(obj);
  const keep = (ref: unknown) => attachable(ref, namespace, rootNamespace);
  const refs = Array.isArray(spec.targetRefs) ? spec.targetRefs : undefined;
  const dropRefs = refs !== undefined && !refs.every(keep);
  const dropRef = spec.targetRef !== undefined && spec.targetRef !== null && !keep(spec.targetRef);
  if (!dropRefs && !dropRef) return obj;
  const next: Record<string, unknown> = { ...spec };
  if (dropRefs) next.targetRefs = refs.filter(keep);
  if (dropRef) delete next.targetRef;
  return { ...obj, spec: next };
}

/**
 * Whether a policy's `targetRefs` name the Gateway `waypoint` (or the waypoint GatewayClass from the
 * root namespace), a Service, or a ServiceEntry (a host bound to the waypoint, for egress) of the
 * policy's own namespace.
 */
export function targetsWaypointOrService(
  obj: Record<string, unknown>,
  waypoint: { name: string; namespace: string },
  rootNamespace = DEFAULT_ROOT_NAMESPACE,
): boolean {
  if (targetsWaypoint(obj, waypoint, rootNamespace)) return true;
  const namespace = namespaceOf(obj);
  return refsOf(obj).some(
    (ref) =>
      attachable(ref, namespace, rootNamespace) &&
      // The core group is "" or "core", as istiod reads it.
      ((ref.kind === "Service" && (ref.group ?? "") === "") ||
        (ref.kind === "Service" && ref.group === "core") ||
        (ref.kind === "ServiceEntry" && (ref.group ?? "networking.istio.io") === "networking.istio.io")),
  );
}

/**
 * Whether a policy's `targetRefs` (or `targetRef`) name the Gateway `waypoint` from the waypoint's own
 * namespace, or the waypoint GatewayClass from the root namespace: either way it applies to every
 * request through the waypoint.
 */
export function targetsWaypoint(
  policy: Record<string, unknown>,
  waypoint: { name: string; namespace: string },
  rootNamespace = DEFAULT_ROOT_NAMESPACE,
): boolean {
  const namespace = namespaceOf(policy);
  return refsOf(policy).some(
    (ref) =>
      attachable(ref, namespace, rootNamespace) &&
      (ref.kind === "GatewayClass" ||
        (ref.kind === "Gateway" &&
          (ref.group ?? GATEWAY_GROUP) === GATEWAY_GROUP &&
          ref.name === waypoint.name &&
          namespace === waypoint.namespace)),
  );
}

/** A target a policy evaluator matches `targetRefs` against. */
export interface PolicyTarget {
  kind: string;
  name: string;
  namespace: string;
  group?: string;
}

/**
 * The request with the waypoint GatewayClass among its `destination.targets`, so the root-namespace
 * policies that target every waypoint through the class match it too.
 */
export function withWaypointClassTarget<R extends { destination: { targets?: readonly PolicyTarget[] } }>(
  request: R,
  rootNamespace = DEFAULT_ROOT_NAMESPACE,
): R {
  const targets = request.destination.targets ?? [];
  return {
    ...request,
    destination: {
      ...request.destination,
      targets: [
        ...targets,
        {
          kind: "GatewayClass",
          group: GATEWAY_GROUP,
          name: WAYPOINT_GATEWAY_CLASS,
          namespace: rootNamespace,
        },
      ],
    },
  };
}
