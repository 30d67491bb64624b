// The live mesh page's data: workloads by namespace and node, the flows of the last minute as edges,
// and for each workload its identity, certificate, services, policies and recent decisions. A pure
// function of the served configuration and what the proxies reported, so it is tested by tables.
import type { WireAuthorization } from "@ambient/policy";
import type { MeshConfig } from "../translate-mesh.js";
import type { FlowEvent, FlowParty } from "./flow-events.js";

/** A proxy the dashboard reads, and how the last read went. */
export interface ProxyStatus {
  kind: "ztunnel" | "waypoint";
  /** Node name (ztunnel) or Gateway `namespace/name` (waypoint). */
  name: string;
  admin: string;
  up: boolean;
  /** ISO time of the last good read. */
  lastSeen?: string;
  /** Why the last read failed. */
  error?: string;
}

/** What the proxies told about certificates and open connections, from their `/config_dump`. */
export interface ProxyView {
  status: ProxyStatus;
  /** The proxy's own workload (its {@link dashboardWorkloadId}): a waypoint's pod. */
  workload?: string;
  certificates: { identity: string; notAfter: string }[];
  /** Open connections: inbound at a ztunnel. */
  openConnections: {
    source: string;
    destination: string;
    sourceIdentity?: string;
    destinationIdentity?: string;
  }[];
  /** `namespace/name` of the policies a waypoint enforces (L7). */
  policies: string[];
}

export interface DashboardWorkload {
  /**
   * The workload's key on the page (see {@link dashboardWorkloadId}): `namespace/name` for a pod, the
   * uid for a workload of a ServiceEntry or WorkloadEntry, `outside/<ip>` for an address outside the mesh.
   */
  id: string;
  name: string;
  namespace: string;
  node: string;
  /** Its first IP; the hostname of an endpoint known by name only. */
  address: string;
  identity: string;
  waypoint: boolean;
  /** The waypoint its traffic goes through, as `ip:port`, when a Service or the workload has one. */
  usesWaypoint?: string;
  services: string[];
  /** Policies that select it: `namespace/name (ACTION, scope)`. */
  policies: string[];
  certificate?: { notAfter: string; expired: boolean; reportedBy: string };
  decisions: DashboardDecision[];
}

export interface DashboardDecision {
  time: string;
  direction: "in" | "out";
  peer: string;
  layer: "L4" | "L7";
  allowed: boolean;
  by?: string;
  count: number;
}

export interface DashboardEdge {
  /** `<source>-><target>` plus `!` for refused attempts. */
  id: string;
  source: string;
  target: string;
  allowed: boolean;
  /** Connections (and requests, at a waypoint) in the window. */
  connections: number;
  requests: number;
  /** Connections open now. */
  open: number;
  bytesPerSecond: number;
  sourceIdentity?: string;
  targetIdentity?: string;
  /** Both identities known: the hop is HBONE with mutual TLS. */
  mtls: boolean;
  services: string[];
  /** Policies that refused the attempts (refused edges). */
  deniedBy: string[];
  lastSeen: string;
}

export interface DashboardSnapshot {
  generatedAt: string;
  windowSeconds: number;
  proxies: ProxyStatus[];
  nodes: string[];
  namespaces: string[];
  workloads: DashboardWorkload[];
  edges: DashboardEdge[];
}

const ENTRY_UID = /^[^/]*\/networking\.istio\.io\/(ServiceEntry|WorkloadEntry)\//;

/**
 * The page's key of a workload. A pod keeps `namespace/name`, the name the proxies' access logs and
 * metrics give it. A workload made from a ServiceEntry or WorkloadEntry is keyed by its uid
 * (`<cluster>/networking.istio.io/<Kind>/<ns>/<name>[/<address>]`): all inline endpoints of one
 * ServiceEntry carry that entry's namespace and name, and an entry may share a pod's.
 */
export function dashboardWorkloadId(w: {
  uid?: string | undefined;
  namespace?: string | undefined;
  name?: string | undefined;
}): string {
  return w.uid !== undefined && ENTRY_UID.test(w.uid) ? w.uid : `${w.namespace}/${w.name}`;
}

const ipOf = (address: string | undefined): string | undefined =>
  address === undefined ? undefined : address.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");

function ipText(bytes: Uint8Array | undefined): string {
  return bytes === undefined ? "" : [...bytes].join(".");
}

function policyLabel(key: string, p: WireAuthorization): string {
  return `${key} (${p.action}${p.dryRun === true ? ", dry run" : ""}, ${p.scope.toLowerCase().replaceAll("_", " ")})`;
}

const MAX_DECISIONS = 12;

/** Builds the page's data. `now` and `windowMs` bound the flows counted. */
export function buildSnapshot(input: {
  config: MeshConfig;
  rootNamespace?: string;
  proxies: readonly ProxyView[];
  events: readonly FlowEvent[];
  now: number;
  windowMs: number;
}): DashboardSnapshot {
  const rootNamespace = input.rootNamespace ?? "istio-system";
  const byAddress = new Map<string, string>();
  const workloads = new Map<string, DashboardWorkload>();
  const waypointIps = new Set<string>();
  for (const { service } of input.config.services) {
    const ip = ipText(service.waypoint?.address?.address);
    if (ip !== "") waypointIps.add(ip);
  }
  for (const { workload: w } of input.config.workloads) {
    const id = dashboardWorkloadId(w);
    const ip = ipText(w.addresses?.[0]);
    if (ip !== "") byAddress.set(ip, id);
    // An endpoint known by hostname only (a DNS ServiceEntry's) shows that name.
    const address = ip === "" ? (w.hostname ?? "") : ip;
    const policies: string[] = [];
    for (const [key, p] of input.config.authorizations) {
      const applies =
        (p.scope === "GLOBAL" && p.namespace === rootNamespace) ||
        (p.scope === "NAMESPACE" && p.namespace === w.namespace) ||
        (p.scope === "WORKLOAD_SELECTOR" && (w.authorizationPolicies ?? []).includes(key));
      if (applies) policies.push(policyLabel(key, p));
    }
    const waypointIp = ipText(w.waypoint?.address?.address);
    workloads.set(id, {
      id,
      name: w.name ?? "",
      namespace: w.namespace ?? "",
      node: w.node ?? "",
      address,
      identity: `spiffe://${w.trustDomain || "cluster.local"}/ns/${w.namespace}/sa/${w.serviceAccount || "default"}`,
      waypoint: waypointIps.has(ip),
      ...(waypointIp === "" ? {} : { usesWaypoint: `${waypointIp}:${w.waypoint?.hboneMtlsPort || 15008}` }),
      services: Object.keys(w.services ?? {}).sort(),
      policies,
      decisions: [],
    });
  }
  for (const { service } of input.config.services) {
    const ip = ipText(service.waypoint?.address?.address);
    if (ip === "") continue;
    const key = `${service.namespace}/${service.hostname}`;
    for (const w of workloads.values()) {
      if (w.services.includes(key) && w.usesWaypoint === undefined) {
        w.usesWaypoint = `${ip}:${service.waypoint?.hboneMtlsPort || 15008}`;
      }
    }
  }

  // Certificates and waypoint policies from the proxies that report them.
  for (const proxy of input.proxies) {
    for (const cert of proxy.certificates) {
      for (const w of workloads.values()) {
        if (w.identity !== cert.identity) continue;
        // A node's ztunnel holds the certificates of its own pods only.
        const own =
          (proxy.status.kind === "ztunnel" && w.node === proxy.status.name) || proxy.workload === w.id;
        if (!own) continue;
        w.certificate = {
          notAfter: cert.notAfter,
          expired: Date.parse(cert.notAfter) <= input.now,
          reportedBy: `${proxy.status.kind}/${proxy.status.name}`,
        };
      }
    }
    if (proxy.workload !== undefined) {
      const w = workloads.get(proxy.workload);
      if (w !== undefined) {
        w.waypoint = true;
        for (const p of proxy.policies) w.policies.push(`${p} (L7, at this waypoint)`);
      }
    }
  }

  const partyId = (p: FlowParty): string | undefined => {
    if (p.workload !== undefined && workloads.has(p.workload)) return p.workload;
    const ip = ipOf(p.address);
    const known = ip === undefined ? undefined : byAddress.get(ip);
    if (known !== undefined) return known;
    if (ip !== undefined) return `outside/${ip}`;
    // Only an identity (a waypoint's metrics): the workload that has it, when exactly one does.
    const withIdentity = [...workloads.values()].filter(
      (w) => p.identity !== undefined && w.identity === p.identity,
    );
    return withIdentity.length === 1 ? withIdentity[0]?.id : p.workload;
  };
  const outside = (id: string): DashboardWorkload => {
    let w = workloads.get(id);
    if (w === undefined) {
      const name = id.slice(id.indexOf("/") + 1);
      w = {
        id,
        name,
        namespace: id.slice(0, id.indexOf("/")),
        node: "",
        address: name,
        identity: "",
        waypoint: false,
        services: [],
        policies: [],
        decisions: [],
      };
      workloads.set(id, w);
    }
    return w;
  };

  const edges = new Map<string, DashboardEdge & { bytes: number; services: string[]; deniedBy: string[] }>();
  const edgeFor = (source: string, target: string, allowed: boolean, at: number) => {
    const id = `${source}->${target}${allowed ? "" : "!"}`;
    let e = edges.get(id);
    if (e === undefined) {
      e = {
        id,
        source,
        target,
        allowed,
        connections: 0,
        requests: 0,
        open: 0,
        bytes: 0,
        bytesPerSecond: 0,
        mtls: false,
        services: [],
        deniedBy: [],
        lastSeen: new Date(at).toISOString(),
      };
      edges.set(id, e);
    }
    if (at > Date.parse(e.lastSeen)) e.lastSeen = new Date(at).toISOString();
    return e;
  };
  const since = input.now - input.windowMs;
  const decisions = new Map<string, DashboardDecision[]>();
  const decide = (id: string, d: DashboardDecision) => {
    const list = decisions.get(id) ?? [];
    list.push(d);
    decisions.set(id, list);
  };
  for (const ev of input.events) {
    if (ev.at < since || ev.at > input.now + 5_000) continue;
    const source = partyId(ev.source);
    const target = partyId(ev.destination);
    if (source === undefined || target === undefined) continue;
    for (const id of [source, target]) if (!workloads.has(id)) outside(id);
    // L7 requests that passed add to the connection's edge; refusals get their own.
    const e = edgeFor(source, target, ev.allowed, ev.at);
    if (ev.layer === "L7") e.requests += ev.count;
    else e.connections += ev.count;
    e.bytes += ev.bytes;
    if (ev.source.identity !== undefined) e.sourceIdentity = ev.source.identity;
    if (ev.destination.identity !== undefined) e.targetIdentity = ev.destination.identity;
    if (ev.service !== undefined && !e.services.includes(ev.service)) e.services.push(ev.service);
    if (ev.deniedBy !== undefined && !e.deniedBy.includes(ev.deniedBy)) e.deniedBy.push(ev.deniedBy);
    const time = new Date(ev.at).toISOString();
    const common = { time, layer: ev.layer, allowed: ev.allowed, count: ev.count };
    const by = ev.deniedBy === undefined ? {} : { by: ev.deniedBy };
    decide(target, { ...common, ...by, direction: "in", peer: source });
    decide(source, { ...common, ...by, direction: "out", peer: target });
  }
  // Connections open now (a long one has not been logged yet).
  const nowIso = new Date(input.now).toISOString();
  for (const proxy of input.proxies) {
    for (const c of proxy.openConnections) {
      const source = partyId({ address: c.source });
      const target = partyId({ address: c.destination });
      if (source === undefined || target === undefined) continue;
      for (const id of [source, target]) if (!workloads.has(id)) outside(id);
      const e = edgeFor(source, target, true, input.now);
      e.open++;
      e.lastSeen = nowIso;
      if (c.sourceIdentity !== undefined) e.sourceIdentity = c.sourceIdentity;
      if (c.destinationIdentity !== undefined) e.targetIdentity = c.destinationIdentity;
    }
  }
  for (const [id, list] of decisions) {
    const w = workloads.get(id);
    if (w !== undefined)
      w.decisions = list
        .sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0))
        .slice(0, MAX_DECISIONS);
  }

  const sortedWorkloads = [...workloads.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return {
    generatedAt: nowIso,
    windowSeconds: input.windowMs / 1000,
    proxies: input.proxies.map((p) => p.status),
    nodes: [...new Set(sortedWorkloads.map((w) => w.node))].sort(),
    namespaces: [...new Set(sortedWorkloads.map((w) => w.namespace))].sort(),
    workloads: sortedWorkloads,
    edges: [...edges.values()]
      .map(({ bytes, ...e }) => ({
        ...e,
        bytesPerSecond: Math.round((bytes / (input.windowMs / 1000)) * 10) / 10,
        mtls: e.sourceIdentity !== undefined && e.targetIdentity !== undefined,
      }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
  };
}
