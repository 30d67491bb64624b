/** Which waypoint a policy attaches to, by its `targetRefs` (or singular `targetRef`). */
const GATEWAY_GROUP = "gateway.networking.k8s.io";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function namespaceOf(obj: Record<string, unknown>): string {
  const meta = isRecord(obj.metadata) ? obj.metadata : {};
  return typeof meta.namespace === "string" && meta.namespace !== "" ? meta.namespace : "default";
}

/**
 * Whether a policy's `targetRefs` name the Gateway `waypoint`, any Service, or any ServiceEntry (a
 * host bound to the waypoint, for egress).
 */
export function targetsWaypointOrService(
  obj: Record<string, unknown>,
  waypoint: { name: string; namespace: string },
): boolean {
  if (targetsWaypoint(obj, waypoint)) return true;
  const spec = isRecord(obj.spec) ? obj.spec : {};
  const refs = [...(Array.isArray(spec.targetRefs) ? spec.targetRefs : []), spec.targetRef];
  return refs.some(
    (ref) =>
      isRecord(ref) &&
      ((ref.kind === "Service" && (ref.group ?? "") === "") ||
        (ref.kind === "ServiceEntry" && (ref.group ?? "networking.istio.io") === "networking.istio.io")),
  );
}

/** Whether a policy's `targetRefs` (or `targetRef`) name the Gateway `waypoint`. */
export function targetsWaypoint(
  policy: Record<string, unknown>,
  waypoint: { name: string; namespace: string },
): boolean {
  const spec = isRecord(policy.spec) ? policy.spec : {};
  const refs = [...(Array.isArray(spec.targetRefs) ? spec.targetRefs : []), spec.targetRef];
  const namespace = namespaceOf(policy);
  return refs.some(
    (ref) =>
      isRecord(ref) &&
      ref.kind === "Gateway" &&
      (ref.group ?? GATEWAY_GROUP) === GATEWAY_GROUP &&
      ref.name === waypoint.name &&
      (typeof ref.namespace === "string" ? ref.namespace : namespace) === waypoint.namespace,
  );
}
