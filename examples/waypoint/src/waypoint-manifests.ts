import { parseAllDocuments } from "yaml";

/** One manifest file's text. */
export interface ManifestText {
  path: string;
  text: string;
}

/** What a waypoint takes from the mesh manifests. */
export interface WaypointManifests {
  /** HTTPRoute and GRPCRoute objects (the router validates them). */
  routes: Record<string, unknown>[];
  /** AuthorizationPolicy objects that name this waypoint's Gateway in `targetRefs`. */
  policies: Record<string, unknown>[];
  /**
   * RequestAuthentication objects whose `targetRefs` name this waypoint's Gateway or a Service (the
   * latter apply to requests to that Service only).
   */
  requestAuthentications: Record<string, unknown>[];
  /** Documents that were skipped, and why. */
  issues: string[];
}

const GATEWAY_GROUP = "gateway.networking.k8s.io";
const ROUTE_KINDS = new Set(["HTTPRoute", "GRPCRoute"]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function namespaceOf(obj: Record<string, unknown>): string {
  const meta = isRecord(obj.metadata) ? obj.metadata : {};
  return typeof meta.namespace === "string" && meta.namespace !== "" ? meta.namespace : "default";
}

/** Whether a RequestAuthentication's `targetRefs` name the Gateway `waypoint` or any Service. */
export function targetsWaypointOrService(
  obj: Record<string, unknown>,
  waypoint: { name: string; namespace: string },
): boolean {
  if (targetsWaypoint(obj, waypoint)) return true;
  const spec = isRecord(obj.spec) ? obj.spec : {};
  const refs = [...(Array.isArray(spec.targetRefs) ? spec.targetRefs : []), spec.targetRef];
  return refs.some((ref) => isRecord(ref) && ref.kind === "Service" && (ref.group ?? "") === "");
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

/**
 * Picks the routes and the waypoint-attached AuthorizationPolicies out of multi-document YAML.
 * Routes of every namespace are kept: the router decides by `parentRefs` which ones apply.
 */
export function selectWaypointManifests(
  files: readonly ManifestText[],
  waypoint: { name: string; namespace: string },
): WaypointManifests {
  const out: WaypointManifests = { routes: [], policies: [], requestAuthentications: [], issues: [] };
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const file of sorted) {
    parseAllDocuments(file.text).forEach((doc, index) => {
      const first = doc.errors[0];
      if (first !== undefined) {
        out.issues.push(`${file.path}#${index}: malformed YAML: ${first.message}`);
        return;
      }
      const value: unknown = doc.toJS();
      if (!isRecord(value)) return;
      if (typeof value.kind === "string" && ROUTE_KINDS.has(value.kind)) out.routes.push(value);
      else if (value.kind === "AuthorizationPolicy" && targetsWaypoint(value, waypoint))
        out.policies.push(value);
      else if (value.kind === "RequestAuthentication" && targetsWaypointOrService(value, waypoint))
        out.requestAuthentications.push(value);
    });
  }
  return out;
}
