/**
 * What waypoints get over xDS, from the same manifests: per Service port bound to a waypoint an Envoy
 * RouteConfiguration `inbound-vip|<port>|http|<host>` (the Service's routes as translate-envoy writes
 * them, in one virtual host for any Host, since the waypoint already knows the Service from the
 * tunnel's VIP), and every AuthorizationPolicy and RequestAuthentication with `targetRefs` as an
 * `ambient.waypoint.v1.WaypointPolicy`. Pure: same input, same output.
 */
import { waypointRouteName } from "@ambient/router";
import {
  type envoy,
  type JsonValue,
  type MessageInit,
  structFromJson,
  type WaypointPolicy,
} from "@ambient/xds";
import type { KubeObject, MeshIssue } from "./manifests.js";
import type { EnvoyConfig } from "./translate-envoy.js";
import type { MeshConfig } from "./translate-mesh.js";

type RouteConfiguration = MessageInit<envoy.config.route.v3.RouteConfiguration>;

/** The waypoint resources, by resource name, each map sorted by name. */
export interface WaypointConfig {
  /** `inbound-vip|<port>|http|<host>` -> routes of a Service port bound to a waypoint. */
  routeConfigurations: Map<string, RouteConfiguration>;
  /** `<kind>/<namespace>/<name>` -> an AuthorizationPolicy or RequestAuthentication with `targetRefs`. */
  policies: Map<string, MessageInit<WaypointPolicy>>;
  issues: MeshIssue[];
}

const WAYPOINT_POLICY_KINDS = new Set(["AuthorizationPolicy", "RequestAuthentication"]);

function byName<V>(map: Map<string, V>): Map<string, V> {
  return new Map([...map].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
}

function hasTargetRefs(spec: Record<string, unknown> | undefined): boolean {
  const refs = spec?.targetRefs;
  return (
    (Array.isArray(refs) && refs.length > 0) || (spec?.targetRef !== undefined && spec.targetRef !== null)
  );
}

/**
 * The waypoint resources of the mesh. `mesh` and `envoy` are {@link translateMesh}'s and
 * `translateEnvoy`'s results for the same `objects`; a Service is bound to a waypoint when its Address
 * resource names one (`istio.io/use-waypoint` on the Service or its namespace).
 */
export function translateWaypoint(
  objects: readonly KubeObject[],
  mesh: MeshConfig,
  envoyConfig: EnvoyConfig,
): WaypointConfig {
  const issues: MeshIssue[] = [];
  const routeConfigurations = new Map<string, RouteConfiguration>();
  for (const { service } of mesh.services) {
    if (service.waypoint === undefined) continue;
    const host = service.hostname ?? "";
    for (const port of service.ports ?? []) {
      const servicePort = port.servicePort ?? 0;
      const source = envoyConfig.routeConfigurations.get(`${host}:${servicePort}`);
      if (servicePort === 0 || source === undefined) continue;
      const name = waypointRouteName(host, servicePort);
      routeConfigurations.set(name, {
        name,
        virtualHosts: [{ name, domains: ["*"], routes: source.virtualHosts?.[0]?.routes ?? [] }],
      });
    }
  }
  const policies = new Map<string, MessageInit<WaypointPolicy>>();
  for (const obj of objects) {
    if (!WAYPOINT_POLICY_KINDS.has(obj.kind) || !hasTargetRefs(obj.spec)) continue;
    const namespace = obj.metadata.namespace ?? "default";
    const key = `${obj.kind}/${namespace}/${obj.metadata.name}`;
    try {
      // A YAML spec is JSON data; the round trip drops what JSON cannot carry (undefined).
      const spec = JSON.parse(JSON.stringify(obj.spec ?? {})) as { [key: string]: JsonValue };
      policies.set(key, {
        kind: obj.kind,
        apiVersion: obj.apiVersion ?? "security.istio.io/v1",
        name: obj.metadata.name,
        namespace,
        spec: structFromJson(spec),
      });
    } catch (err) {
      issues.push({ source: key, message: `not sent to waypoints: ${(err as Error).message}` });
    }
  }
  return { routeConfigurations: byName(routeConfigurations), policies: byName(policies), issues };
}
