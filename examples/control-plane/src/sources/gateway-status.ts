// The one write the control plane makes to a waypoint Gateway: its `status`. `addresses` holds the
// cluster IP of the Service in front of the waypoint's pods, which is where ztunnels send the
// waypoint's traffic; `conditions` (`Accepted`, `Programmed`) and `listeners` say whether the waypoint
// took and is serving the Gateway's generation, which is what `kubectl wait --for=condition=Programmed`
// and `istioctl waypoint apply --wait` read. Only the leader writes (see leader-election.ts); the
// translation reads the address back from status.
import { isDeepStrictEqual } from "node:util";
import type { KubeConfig } from "@kubernetes/client-node";
import { isRecord } from "../manifests.js";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { kubeRequest, type RawKubeObject } from "./kube-client.js";

const WAYPOINT_CLASS = "istio-waypoint";
const GATEWAY_GROUP = "gateway.networking.k8s.io";
/** The one listener a waypoint takes: HBONE on 15008. */
const WAYPOINT_PORT = 15008;
const WAYPOINT_PROTOCOL = "HBONE";

/** The cluster IP of a waypoint's Service, or undefined for none (missing, headless, not yet assigned). */
function serviceAddress(svc: RawKubeObject | undefined): string | undefined {
  const ip = svc?.spec?.clusterIP;
  return typeof ip === "string" && ip !== "" && ip !== "None" ? ip : undefined;
}

/** Whether `status.addresses` already shows just `ip`. */
function showsAddress(gw: RawKubeObject, ip: string): boolean {
  const current = Array.isArray(gw.status?.addresses) ? (gw.status.addresses as { value?: unknown }[]) : [];
  return current.length === 1 && current[0]?.value === ip;
}

/** A `metav1.Condition` as the API server stores it. */
export interface StatusCondition {
  type: string;
  status: "True" | "False";
  /** The Gateway's `metadata.generation` the condition was written for; absent when it has none. */
  observedGeneration?: number;
  /** When `status` last changed, RFC 3339 to the second. */
  lastTransitionTime: string;
  reason: string;
  message: string;
}

/** One `status.listeners[]` entry. */
export interface ListenerStatus {
  name: string;
  supportedKinds: { group: string; kind: string }[];
  attachedRoutes: number;
  conditions: StatusCondition[];
}

/** The parts of a waypoint Gateway's status to write; a part left out is current. */
export interface WaypointStatus {
  addresses?: { type: "IPAddress"; value: string }[];
  conditions?: unknown[];
  listeners?: ListenerStatus[];
}

/** A status write a waypoint Gateway needs. */
export interface WaypointStatusUpdate {
  namespace: string;
  name: string;
  /** The `metadata.resourceVersion` of the cached Gateway the write was planned from. */
  resourceVersion?: string;
  status: WaypointStatus;
}

/** Options of {@link waypointStatusUpdates}. */
export interface WaypointStatusOptions {
  /** The cluster's DNS suffix, in the Service host names the conditions show. Default `cluster.local`. */
  domainSuffix?: string;
  /** The time a condition that changes status is stamped with. Default now. */
  now?: Date;
}

type WantedCondition = Omit<StatusCondition, "lastTransitionTime">;

/**
 * `conditions` with `want` set, the Kubernetes way: a condition whose status, reason, message and
 * generation are unchanged is kept as it is (nothing to write); one whose status is unchanged keeps
 * its `lastTransitionTime`; a new status is stamped `now`. Conditions of other types are kept.
 */
function setCondition(conditions: readonly unknown[], want: WantedCondition, now: string): unknown[] {
  const at = conditions.findIndex((c) => isRecord(c) && c.type === want.type);
  const old = at === -1 ? undefined : (conditions[at] as Record<string, unknown>);
  if (
    old !== undefined &&
    old.status === want.status &&
    old.reason === want.reason &&
    old.message === want.message &&
    old.observedGeneration === want.observedGeneration
  ) {
    return [...conditions];
  }
  const since =
    old !== undefined && old.status === want.status && typeof old.lastTransitionTime === "string"
      ? old.lastTransitionTime
      : now;
  const { type, status, observedGeneration, reason, message } = want;
  const next: StatusCondition = {
    type,
    status,
    ...(observedGeneration === undefined ? {} : { observedGeneration }),
    lastTransitionTime: since,
    reason,
    message,
  };
  return at === -1 ? [...conditions, next] : conditions.map((c, i) => (i === at ? next : c));
}

function setConditions(conditions: readonly unknown[], wanted: readonly WantedCondition[], now: string) {
  return wanted.reduce<unknown[]>((out, want) => setCondition(out, want, now), [...conditions]);
}

/** The route kinds a listener of `protocol` serves (none for HBONE: a waypoint's routes name Services). */
function protocolRouteKinds(listener: Record<string, unknown>): { group: string; kind: string }[] {
  const kinds = (...names: string[]) => names.map((kind) => ({ group: GATEWAY_GROUP, kind }));
  switch (listener.protocol) {
    case "HTTP":
    case "HTTPS":
      return kinds("HTTPRoute", "GRPCRoute");
    case "TCP":
      return kinds("TCPRoute");
    case "TLS": {
      const tls = isRecord(listener.tls) ? listener.tls : {};
      return kinds(tls.mode === "Passthrough" ? "TLSRoute" : "TCPRoute");
    }
    default:
      return [];
  }
}

/**
 * A listener's status: the route kinds it supports (narrowed by `allowedRoutes.kinds`, and
 * ResolvedRefs False when that names a kind it cannot serve), and Accepted False for anything but the
 * HBONE listener on 15008 a waypoint takes. Routes served through a waypoint are counted on the
 * Services they serve, not on its listeners: `attachedRoutes` stays 0.
 */
function listenerStatus(
  listener: Record<string, unknown>,
  previous: Record<string, unknown> | undefined,
  generation: number | undefined,
  now: string,
): ListenerStatus {
  const gen = generation === undefined ? {} : { observedGeneration: generation };
  const ok = (type: string, reason: string): WantedCondition => ({
    type,
    status: "True",
    ...gen,
    reason,
    message: "No errors found",
  });
  let supportedKinds = protocolRouteKinds(listener);
  let kindsValid = true;
  const allowed = isRecord(listener.allowedRoutes) ? listener.allowedRoutes.kinds : undefined;
  if (Array.isArray(allowed) && allowed.length > 0) {
    supportedKinds = supportedKinds.filter((s) =>
      allowed.some((k) => isRecord(k) && k.kind === s.kind && (k.group ?? GATEWAY_GROUP) === s.group),
    );
    kindsValid = supportedKinds.length === allowed.length;
  }
  const accepted =
    listener.port === WAYPOINT_PORT && listener.protocol === WAYPOINT_PROTOCOL
      ? ok("Accepted", "Accepted")
      : {
          type: "Accepted",
          status: "False" as const,
          ...gen,
          reason: "UnsupportedProtocol",
          message: `Expected a single listener on port ${WAYPOINT_PORT} with protocol "${WAYPOINT_PROTOCOL}"`,
        };
  const resolved = kindsValid
    ? ok("ResolvedRefs", "ResolvedRefs")
    : {
        type: "ResolvedRefs",
        status: "False" as const,
        ...gen,
        reason: "InvalidRouteKinds",
        message: "Invalid route kinds",
      };
  const before = Array.isArray(previous?.conditions) ? previous.conditions : [];
  return {
    name: String(listener.name),
    supportedKinds,
    attachedRoutes: 0,
    conditions: setConditions(
      before,
      [
        accepted,
        { ...ok("Conflicted", "NoConflicts"), status: "False" },
        ok("Programmed", "Programmed"),
        resolved,
      ],
      now,
    ) as StatusCondition[],
  };
}

/** `a`, `a and b`, `a, b, and c`. */
function humanJoin(items: readonly string[]): string {
  if (items.length <= 2) return items.join(" and ");
  return `${items.slice(0, -1).join(", ")}, and ${items.at(-1)}`;
}

/**
 * The Programmed condition of a waypoint: True once its Service (the Gateway's name, in its namespace)
 * has a cluster IP and every listener port; else False, AddressNotUsable, saying what is missing.
 */
function programmed(
  host: string,
  svc: RawKubeObject | undefined,
  listenerPorts: readonly number[],
  generation: number | undefined,
): WantedCondition {
  const gen = generation === undefined ? {} : { observedGeneration: generation };
  const assigned: string[] = [];
  const missing: string[] = [];
  if (svc === undefined) missing.push(`hostname "${host}" not found`);
  else if (serviceAddress(svc) === undefined) missing.push(`hostname "${host}" has no cluster IP`);
  else {
    const ports = Array.isArray(svc.spec?.ports) ? (svc.spec.ports as unknown[]) : [];
    for (const port of listenerPorts) {
      if (ports.some((p) => isRecord(p) && p.port === port)) assigned.push(`${host}:${port}`);
      else missing.push(`port ${port} not found for hostname "${host}"`);
    }
  }
  assigned.sort();
  missing.sort();
  if (missing.length === 0) {
    return {
      type: "Programmed",
      status: "True",
      ...gen,
      reason: "Programmed",
      message:
        assigned.length > 0
          ? `Resource programmed, assigned to service(s) ${humanJoin(assigned)}`
          : "Resource programmed",
    };
  }
  return {
    type: "Programmed",
    status: "False",
    ...gen,
    reason: "AddressNotUsable",
    message:
      assigned.length > 0
        ? `Assigned to service(s) ${humanJoin(assigned)}, but failed to assign to all requested addresses: ${missing.join("; ")}`
        : `Failed to assign to any requested addresses: ${missing.join("; ")}`,
  };
}

/**
 * The status writes that bring every waypoint Gateway in line with its Service and its spec: the
 * Service's cluster IP as the address, `Accepted` and `Programmed` for the Gateway's generation, and a
 * status per listener; empty when all are current. A Gateway whose Service is gone (or has no cluster
 * IP) is not Programmed but keeps its address: what is bound to the waypoint keeps going to it rather
 * than around it, and fails while nothing answers there. A pure function of the two caches and `now`.
 */
export function waypointStatusUpdates(
  gateways: readonly RawKubeObject[],
  service: (namespace: string, name: string) => RawKubeObject | undefined,
  options: WaypointStatusOptions = {},
): WaypointStatusUpdate[] {
  const domainSuffix = options.domainSuffix ?? "cluster.local";
  const now = (options.now ?? new Date()).toISOString().replace(/\.\d+Z$/, "Z");
  const updates: WaypointStatusUpdate[] = [];
  for (const gw of gateways) {
    if (gw.spec?.gatewayClassName !== WAYPOINT_CLASS) continue;
    const namespace = gw.metadata?.namespace;
    const name = gw.metadata?.name;
    if (typeof namespace !== "string" || typeof name !== "string") continue;
    const g = gw.metadata?.generation;
    const generation = typeof g === "number" && Number.isInteger(g) && g > 0 ? g : undefined;
    const svc = service(namespace, name);
    const listeners = (Array.isArray(gw.spec?.listeners) ? (gw.spec.listeners as unknown[]) : []).filter(
      (l): l is Record<string, unknown> => isRecord(l) && typeof l.name === "string",
    );
    const ports = [
      ...new Set(listeners.map((l) => l.port).filter((p): p is number => typeof p === "number")),
    ];
    const currentConditions = Array.isArray(gw.status?.conditions) ? (gw.status.conditions as unknown[]) : [];
    const conditions = setConditions(
      currentConditions,
      [
        {
          type: "Accepted",
          status: "True",
          ...(generation === undefined ? {} : { observedGeneration: generation }),
          reason: "Accepted",
          message: "Resource accepted",
        },
        programmed(`${name}.${namespace}.svc.${domainSuffix}`, svc, ports, generation),
      ],
      now,
    );
    const currentListeners = Array.isArray(gw.status?.listeners) ? (gw.status.listeners as unknown[]) : [];
    // Matched by name; a listener gone from the spec loses its status.
    const listenerStatuses = listeners.map((l) =>
      listenerStatus(
        l,
        currentListeners.find((c): c is Record<string, unknown> => isRecord(c) && c.name === l.name),
        generation,
        now,
      ),
    );
    const status: WaypointStatus = {};
    const ip = serviceAddress(svc);
    if (ip !== undefined && !showsAddress(gw, ip)) status.addresses = [{ type: "IPAddress", value: ip }];
    if (!isDeepStrictEqual(conditions, currentConditions)) status.conditions = conditions;
    if (!isDeepStrictEqual(listenerStatuses, currentListeners)) status.listeners = listenerStatuses;
    if (Object.keys(status).length === 0) continue;
    const resourceVersion = gw.metadata?.resourceVersion;
    updates.push({ namespace, name, ...(resourceVersion === undefined ? {} : { resourceVersion }), status });
  }
  return updates;
}

/**
 * Writes each update as a JSON merge patch of the status subresource at `pathOf(update)` (the object's
 * path); returns those the API server took. A failure is logged with `what` and the object's
 * namespace/name, not thrown: the next pass tries again. Stops before the next write once `leading()`
 * is false: a replica that lost its lease leaves the rest to the new leader.
 */
export async function writeStatusPatches<U extends { namespace: string; name: string }>(
  kc: KubeConfig,
  updates: readonly U[],
  pathOf: (update: U) => string,
  statusOf: (update: U) => Record<string, unknown>,
  what: string,
  logger: Logger,
  leading: () => boolean = () => true,
): Promise<U[]> {
  const written: U[] = [];
  for (const u of updates) {
    if (!leading()) break;
    try {
      await kubeRequest(kc, "PATCH", `${pathOf(u)}/status`, {
        contentType: "application/merge-patch+json",
        value: { status: statusOf(u) },
      });
      written.push(u);
    } catch (err) {
      logger.warn(
        { [what]: `${u.namespace}/${u.name}`, err: err instanceof Error ? err.message : String(err) },
        `${what} status write failed`,
      );
    }
  }
  return written;
}

/**
 * Writes the Gateways' status while `leading()`; returns those written. Failures are logged, not
 * thrown.
 */
export function writeGatewayStatus(
  kc: KubeConfig,
  updates: readonly WaypointStatusUpdate[],
  logger: Logger = noopLogger,
  leading?: () => boolean,
): Promise<WaypointStatusUpdate[]> {
  return writeStatusPatches(
    kc,
    updates,
    (u) => `/apis/gateway.networking.k8s.io/v1/namespaces/${u.namespace}/gateways/${u.name}`,
    (u) => ({ ...u.status }),
    "gateway",
    logger,
    leading,
  );
}
