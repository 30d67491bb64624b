// Reads the proxies' admin endpoints every second (ztunnel `/config_dump` and `/recent_connections`,
// waypoint `/config_dump` and `/recent_requests`, or `/metrics` for a waypoint without it) and keeps the
// flows of the last minute. A proxy that does not answer (restarting, gone) is marked down and read
// again on the next round; what it reported before stays until it ages out, and a restarted proxy is
// recognised by its new `startedAt`.
import { isIP } from "node:net";
import { ControlPlaneError } from "../errors.js";
import type { Logger } from "../telemetry.js";
import type { MeshConfig } from "../translate-mesh.js";
import {
  type FlowEvent,
  type FlowParty,
  flowFromAccessLog,
  flowFromWaypointRequest,
  flowsFromRequestCounters,
  type PromSample,
  type RecentConnectionLine,
  type RecentRequestLine,
  requestCounters,
} from "./flow-events.js";
import { buildSnapshot, type DashboardSnapshot, dashboardWorkloadId, type ProxyView } from "./mesh-graph.js";

/** A proxy for the dashboard to read. */
export interface DashboardProxy {
  kind: "ztunnel" | "waypoint";
  /** Node name (ztunnel) or Gateway `namespace/name` (waypoint). */
  name: string;
  /** `ip:port` of the admin listener: ztunnel `ADMIN_PORT` 15000, the waypoint's Envoy admin 15000. */
  admin: string;
  /** `ip:port` of the Prometheus listener (15020); read for a waypoint that does not serve `/recent_requests`. */
  metrics?: string;
  /** A waypoint's pod address, to find its workload. Default: the workload with its identity. */
  address?: string;
}

/** Options of {@link createMeshCollector}. */
export interface MeshCollectorOptions {
  /** Proxies to read from the start; more with `addProxy`. Default none. */
  proxies?: readonly DashboardProxy[];
  /** Time between two reads of every proxy. Default 1000 ms. */
  pollIntervalMs?: number;
  /** How long a flow is shown. Default 60 000 ms ("the last minute"). */
  windowMs?: number;
  /** Deadline of one admin request. Default 800 ms. */
  requestTimeoutMs?: number;
}

/** The proxies being read and the page's data built from them. */
export interface MeshCollector {
  /** Adds (or replaces, by kind and name) a proxy to read. */
  addProxy(proxy: DashboardProxy): void;
  removeProxy(kind: DashboardProxy["kind"], name: string): boolean;
  proxies(): DashboardProxy[];
  /** The data as of the last round. */
  snapshot(): DashboardSnapshot;
  /** Runs one round now (also what the timer does). */
  poll(): Promise<void>;
  /** Called after each round with the new data; returns the unsubscribe function. */
  subscribe(listener: (snapshot: DashboardSnapshot) => void): () => void;
  close(): void;
}

/** Flows kept at most, across proxies (each ztunnel keeps at most 500 lines a minute). */
const MAX_EVENTS = 20_000;

interface ProxyRecord {
  proxy: DashboardProxy;
  view: ProxyView;
  startedAt?: string;
  lastSeq: number;
  counters?: Map<string, PromSample>;
}

function validAdminAddress(address: string, what: string): void {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = Number(address.slice(colon + 1));
  if (colon <= 0 || isIP(host) === 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new ControlPlaneError(
      "ERR_CONTROL_PLANE_CONFIG",
      `dashboard proxy ${what} must be ip:port, got ${JSON.stringify(address)}`,
    );
  }
}

const asRecord = (v: unknown): Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const asString = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

async function getText(address: string, path: string, timeoutMs: number): Promise<string> {
  const text = await getIfServed(address, path, timeoutMs);
  if (text === undefined) throw new Error(`${path} answered 404`);
  return text;
}

/** The body, or undefined when the proxy answers 404 (it does not serve `path`). */
async function getIfServed(address: string, path: string, timeoutMs: number): Promise<string | undefined> {
  const res = await fetch(`http://${address}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (res.status === 404) return undefined;
  if (!res.ok) throw new Error(`${path} answered ${res.status}`);
  return text;
}

function certificatesOf(dump: Record<string, unknown>): ProxyView["certificates"] {
  return asArray(dump.certificates).flatMap((c) => {
    const identity = asString(asRecord(c).identity);
    const notAfter = asString(asRecord(c).notAfter);
    return identity === undefined || notAfter === undefined ? [] : [{ identity, notAfter }];
  });
}

/** Starts reading the proxies; `config` is the configuration the control plane serves now. */
export function createMeshCollector(
  config: () => MeshConfig,
  options: MeshCollectorOptions & { rootNamespace?: string; logger: Logger },
): MeshCollector {
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const windowMs = options.windowMs ?? 60_000;
  const timeoutMs = options.requestTimeoutMs ?? 800;
  const records = new Map<string, ProxyRecord>();
  let events: FlowEvent[] = [];
  const listeners = new Set<(snapshot: DashboardSnapshot) => void>();
  let closed = false;

  const build = (): DashboardSnapshot =>
    buildSnapshot({
      config: config(),
      ...(options.rootNamespace === undefined ? {} : { rootNamespace: options.rootNamespace }),
      proxies: [...records.values()].map((r) => r.view),
      events,
      now: Date.now(),
      windowMs,
    });
  let current: DashboardSnapshot | undefined;

  const workloadByIp = (ip: string): { id: string; hbone: boolean } | undefined => {
    for (const { workload: w } of config().workloads) {
      if ((w.addresses ?? []).some((a) => [...a].join(".") === ip)) {
        return { id: dashboardWorkloadId(w), hbone: w.tunnelProtocol === "HBONE" };
      }
    }
    return undefined;
  };
  const receivedByZtunnel = (destination: FlowParty): boolean => {
    const ip = destination.address?.replace(/:\d+$/, "");
    const w = ip === undefined ? undefined : workloadByIp(ip);
    return w?.hbone === true;
  };

  /** A new proxy process (a new `startedAt`): its line numbers start again. */
  const restarted = (r: ProxyRecord, recent: Record<string, unknown>): void => {
    const startedAt = asString(recent.startedAt);
    if (startedAt !== r.startedAt) {
      r.startedAt = startedAt;
      r.lastSeq = 0;
    }
  };

  const readZtunnel = async (r: ProxyRecord): Promise<void> => {
    const [dumpText, recentText] = await Promise.all([
      getText(r.proxy.admin, "/config_dump", timeoutMs),
      getText(r.proxy.admin, "/recent_connections", timeoutMs),
    ]);
    const dump = asRecord(JSON.parse(dumpText));
    const recent = asRecord(JSON.parse(recentText));
    r.view.certificates = certificatesOf(dump);
    r.view.openConnections = asArray(dump.connections).flatMap((c) => {
      const x = asRecord(c);
      const source = asString(x.source);
      const destination = asString(x.destination);
      if (x.direction !== "inbound" || source === undefined || destination === undefined) return [];
      const sourceIdentity = asString(x.sourceIdentity);
      const destinationIdentity = asString(x.destinationIdentity);
      return [
        {
          source,
          destination,
          ...(sourceIdentity === undefined ? {} : { sourceIdentity }),
          ...(destinationIdentity === undefined ? {} : { destinationIdentity }),
        },
      ];
    });
    restarted(r, recent);
    for (const item of asArray(recent.connections)) {
      const x = asRecord(item);
      const line: RecentConnectionLine = {
        seq: typeof x.seq === "number" ? x.seq : 0,
        time: asString(x.time) ?? "",
        message: asString(x.message) ?? "",
        fields: asRecord(x.fields),
      };
      if (line.seq <= r.lastSeq) continue;
      r.lastSeq = line.seq;
      const event = flowFromAccessLog(`ztunnel/${r.proxy.name}`, line, receivedByZtunnel);
      if (event !== undefined) events.push(event);
    }
  };

  const readWaypoint = async (r: ProxyRecord): Promise<void> => {
    const dump = asRecord(JSON.parse(await getText(r.proxy.admin, "/config_dump", timeoutMs)));
    r.view.certificates = certificatesOf(dump);
    r.view.policies = asArray(dump.authorizationPolicies).flatMap((p) => {
      const meta = asRecord(asRecord(p).metadata);
      const name = asString(meta.name);
      return name === undefined ? [] : [`${asString(meta.namespace) ?? "default"}/${name}`];
    });
    const identity = asString(dump.identity);
    const ip = r.proxy.address?.replace(/:\d+$/, "");
    let workload = ip === undefined ? undefined : workloadByIp(ip)?.id;
    if (workload === undefined && identity !== undefined) {
      const match = /\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(identity);
      workload = config()
        .workloads.map(({ workload: w }) => w)
        .filter((w) => match !== null && w.namespace === match[1] && w.serviceAccount === match[2])
        .map((w) => dashboardWorkloadId(w))[0];
    }
    if (workload !== undefined) r.view.workload = workload;
    // Each request with the policy that decided it; a waypoint without the endpoint falls back to its
    // request counters, which do not name the policy.
    const recentText = await getIfServed(r.proxy.admin, "/recent_requests", timeoutMs);
    if (recentText !== undefined) {
      const recent = asRecord(JSON.parse(recentText));
      restarted(r, recent);
      for (const item of asArray(recent.requests)) {
        const x = asRecord(item);
        const line: RecentRequestLine = {
          seq: typeof x.seq === "number" ? x.seq : 0,
          time: asString(x.time) ?? "",
          fields: asRecord(x.fields),
        };
        if (line.seq <= r.lastSeq) continue;
        r.lastSeq = line.seq;
        const event = flowFromWaypointRequest({
          reporter: `waypoint/${r.proxy.name}`,
          line,
          waypointWorkload: workload,
          waypointIdentity: identity,
          workloadAt: (clientIp) => workloadByIp(clientIp)?.id,
        });
        if (event !== undefined) events.push(event);
      }
    } else if (r.proxy.metrics !== undefined) {
      const counters = requestCounters(await getText(r.proxy.metrics, "/metrics", timeoutMs));
      events.push(
        ...flowsFromRequestCounters({
          reporter: `waypoint/${r.proxy.name}`,
          at: Date.now(),
          previous: r.counters,
          current: counters,
          waypointWorkload: workload,
          waypointIdentity: identity,
          waypointPolicies: r.view.policies,
        }),
      );
      r.counters = counters;
    }
  };

  const read = async (r: ProxyRecord): Promise<void> => {
    try {
      if (r.proxy.kind === "ztunnel") await readZtunnel(r);
      else await readWaypoint(r);
      r.view.status = { ...r.view.status, up: true, lastSeen: new Date().toISOString() };
      delete r.view.status.error;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (r.view.status.up || r.view.status.error === undefined) {
        options.logger.warn(
          { proxy: `${r.proxy.kind}/${r.proxy.name}`, reason },
          "dashboard cannot read proxy",
        );
      }
      // What it held stays until it ages out; connections it had open are not known to be open.
      r.view.openConnections = [];
      r.view.status = { ...r.view.status, up: false, error: reason };
    }
  };

  let running: Promise<void> | undefined;
  const poll = (): Promise<void> => {
    running ??= (async () => {
      try {
        await Promise.all([...records.values()].map(read));
        const since = Date.now() - windowMs;
        events = events.filter((e) => e.at >= since).slice(-MAX_EVENTS);
        // Laid out for someone only: a subscriber now, or the next snapshot() call. With no page open,
        // a mesh of thousands of pods would be laid out every second for no one (CPU and garbage).
        current = undefined;
        if (listeners.size > 0) {
          const snapshot = build();
          current = snapshot;
          for (const listener of listeners) listener(snapshot);
        }
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  const addProxy = (proxy: DashboardProxy): void => {
    validAdminAddress(proxy.admin, "admin");
    if (proxy.metrics !== undefined) validAdminAddress(proxy.metrics, "metrics");
    records.set(`${proxy.kind}/${proxy.name}`, {
      proxy: { ...proxy },
      lastSeq: 0,
      view: {
        status: { kind: proxy.kind, name: proxy.name, admin: proxy.admin, up: false, error: "not read yet" },
        certificates: [],
        openConnections: [],
        policies: [],
      },
    });
  };
  for (const p of options.proxies ?? []) addProxy(p);

  const timer = setInterval(() => {
    poll().catch((err: unknown) => options.logger.error({ err }, "dashboard round failed"));
  }, pollIntervalMs);
  timer.unref();

  return {
    addProxy,
    removeProxy: (kind, name) => records.delete(`${kind}/${name}`),
    proxies: () => [...records.values()].map((r) => ({ ...r.proxy })),
    snapshot: () => {
      current ??= build();
      return current;
    },
    poll,
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      listeners.clear();
    },
  };
}
