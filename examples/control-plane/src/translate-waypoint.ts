/**
 * What waypoints get over xDS, from the same manifests: per Service port bound to a waypoint an Envoy
 * RouteConfiguration `inbound-vip|<port>|http|<host>` (the Service's routes as translate-envoy writes
 * them, in one virtual host for any Host, since the waypoint already knows the Service from the
 * tunnel's VIP; a Service without routes of its own takes the routes attached to its waypoint
 * Gateway), and every AuthorizationPolicy and RequestAuthentication with `targetRefs` as an
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
import { type EnvoyConfig, translateEnvoy } from "./translate-envoy.js";
import { type MeshConfig, parsePodCidrs, type TranslateOptions, waypointGateways } from "./translate-mesh.js";

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

const GATEWAY_GROUP = "gateway.networking.k8s.io";
const ISTIO_NETWORKING = "networking.istio.io";
const ROUTE_KINDS = new Set(["HTTPRoute", "GRPCRoute"]);

interface ParentRef {
  group?: string;
  kind?: string;
  name?: string;
  namespace?: string;
  port?: number;
}

function parentRefs(route: KubeObject): ParentRef[] {
  const refs = route.spec?.parentRefs;
  return Array.isArray(refs) ? (refs.filter((r) => typeof r === "object" && r !== null) as ParentRef[]) : [];
}

/** A Service's or a ServiceEntry's parentRef group and kind, as routes name them. */
function parentKind(kind: "Service" | "ServiceEntry"): { group: string; kind: string } {
  return kind === "Service"
    ? { group: "", kind: "Service" }
    : { group: ISTIO_NETWORKING, kind: "ServiceEntry" };
}

/**
 * Whether a route attaches to the port: a `Service` parentRef of its own namespace, or for a
 * ServiceEntry host a `networking.istio.io` `ServiceEntry` one naming the entry.
 */
function attachesToService(
  route: KubeObject,
  service: { name: string; namespace: string; kind: "Service" | "ServiceEntry" },
  port: number,
): boolean {
  const ns = route.metadata.namespace ?? "default";
  const want = parentKind(service.kind);
  return (
    ns === service.namespace &&
    parentRefs(route).some(
      (p) =>
        (p.group ?? GATEWAY_GROUP) === want.group &&
        p.kind === want.kind &&
        p.name === service.name &&
        (p.namespace ?? ns) === ns &&
        (p.port === undefined || p.port === port),
    )
  );
}

/**
 * The waypoint Gateways by their address, chosen as the mesh translation chooses it
 * ({@link waypointGateways}: by address type, not position in `status.addresses`). Its issues are the
 * mesh translation's to report.
 */
function gatewaysByIp(
  objects: readonly KubeObject[],
  options: TranslateOptions,
): Map<string, { name: string; namespace: string }> {
  const out = new Map<string, { name: string; namespace: string }>();
  const addresses = waypointGateways(
    objects,
    [],
    parsePodCidrs(options.podCidrs),
    options.domainSuffix ?? "cluster.local",
  );
  for (const [key, ip] of addresses) {
    const slash = key.indexOf("/");
    out.set(ip, { namespace: key.slice(0, slash), name: key.slice(slash + 1) });
  }
  return out;
}

/**
 * The routes attached to a waypoint Gateway, re-attached to one of its Services so translate-envoy
 * writes them for that Service's ports: only routes of the Service's namespace (no cross-namespace
 * attachment is read), with the parentRef's port kept as the Service port it applies to.
 */
function gatewayRoutesFor(
  objects: readonly KubeObject[],
  gateway: { name: string; namespace: string },
  service: { name: string; namespace: string; kind: "Service" | "ServiceEntry" },
): KubeObject[] {
  const out: KubeObject[] = [];
  for (const route of objects) {
    if (!ROUTE_KINDS.has(route.kind) || (route.metadata.namespace ?? "default") !== service.namespace)
      continue;
    const ns = route.metadata.namespace ?? "default";
    const refs = parentRefs(route).filter(
      (p) =>
        (p.group ?? GATEWAY_GROUP) === GATEWAY_GROUP &&
        (p.kind ?? "Gateway") === "Gateway" &&
        p.name === gateway.name &&
        (p.namespace ?? ns) === gateway.namespace,
    );
    if (refs.length === 0) continue;
    const spec = {
      ...route.spec,
      parentRefs: refs.map((p) => ({
        ...parentKind(service.kind),
        name: service.name,
        ...(p.port === undefined ? {} : { port: p.port }),
      })),
    };
    out.push({ ...route, spec });
  }
  return out;
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
  options: TranslateOptions = {},
): WaypointConfig {
  const issues: MeshIssue[] = [];
  const routeConfigurations = new Map<string, RouteConfiguration>();
  const gateways = gatewaysByIp(objects, options);
  const domainSuffix = options.domainSuffix ?? "cluster.local";
  // A Kubernetes Service's host is <name>.<namespace>.svc.<suffix>; any other is a ServiceEntry's.
  const serviceRef = (service: MeshConfig["services"][number]["service"]) => {
    const name = service.name ?? "";
    const namespace = service.namespace ?? "default";
    const kind: "Service" | "ServiceEntry" =
      service.hostname === `${name}.${namespace}.svc.${domainSuffix}` ? "Service" : "ServiceEntry";
    return { name, namespace, kind };
  };
  const gatewayOf = (service: MeshConfig["services"][number]["service"]) =>
    gateways.get([...(service.waypoint?.address?.address ?? [])].join("."));
  // The routes attached to each waypoint Gateway, re-attached to its Services and translated once per
  // Gateway; a Service port uses them only when it has no route of its own.
  const viaGateway = new Map<string, KubeObject[]>();
  for (const { service } of mesh.services) {
    const gateway = gatewayOf(service);
    if (gateway === undefined) continue;
    const key = `${gateway.namespace}/${gateway.name}`;
    const routes = gatewayRoutesFor(objects, gateway, serviceRef(service));
    viaGateway.set(key, [...(viaGateway.get(key) ?? []), ...routes]);
  }
  // The ReferenceGrants go along: they decide which backends in other namespaces the routes may use.
  const grants = objects.filter((o) => o.kind === "ReferenceGrant");
  const gatewayConfigs = new Map<string, EnvoyConfig>();
  for (const [key, routes] of viaGateway) {
    if (routes.length === 0) continue;
    const config = translateEnvoy([...grants, ...routes], mesh, options);
    gatewayConfigs.set(key, config);
    for (const issue of config.issues) {
      if (!issues.some((i) => i.source === issue.source && i.message === issue.message)) issues.push(issue);
    }
  }
  for (const { service } of mesh.services) {
    if (service.waypoint === undefined) continue;
    const host = service.hostname ?? "";
    const ref = serviceRef(service);
    const gateway = gatewayOf(service);
    const gatewayConfig =
      gateway === undefined ? undefined : gatewayConfigs.get(`${gateway.namespace}/${gateway.name}`);
    for (const port of service.ports ?? []) {
      const servicePort = port.servicePort ?? 0;
      const own = objects.some((o) => ROUTE_KINDS.has(o.kind) && attachesToService(o, ref, servicePort));
      const fromGateway = own ? undefined : gatewayConfig?.routeConfigurations.get(`${host}:${servicePort}`);
      const fromGatewayRoutes = fromGateway?.virtualHosts?.[0]?.routes ?? [];
      // A Gateway route that names another port translates to the default route: the Service's own then.
      const source =
        fromGateway !== undefined && fromGatewayRoutes.some((r) => r.name !== "default")
          ? fromGateway
          : envoyConfig.routeConfigurations.get(`${host}:${servicePort}`);
      if (servicePort === 0 || source === undefined) continue;
      const routeName = waypointRouteName(host, servicePort);
      routeConfigurations.set(routeName, {
        name: routeName,
        virtualHosts: [{ name: routeName, domains: ["*"], routes: source.virtualHosts?.[0]?.routes ?? [] }],
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
