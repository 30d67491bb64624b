// What the proxies report, turned into one kind of record: a flow (a connection or, at a waypoint, a
// request) from one party to another, allowed or refused, at a time. Pure functions over the JSON the
// ztunnel admin (`/recent_connections`, `/config_dump`) and the waypoint admin (`/recent_requests`)
// return, and over the waypoint's Prometheus text (for a waypoint without `/recent_requests`).

/** One end of a flow. `workload` is `namespace/name` when the proxy named a mesh workload. */
export interface FlowParty {
  workload?: string;
  /** `ip:port` or `ip`, as the proxy saw it. */
  address?: string;
  /** SPIFFE ID, when mutual TLS proved (or was to prove) it. */
  identity?: string;
}

/** A connection (L4, reported by a ztunnel) or requests (L7, reported by a waypoint). */
export interface FlowEvent {
  /** Milliseconds since the epoch. */
  at: number;
  /** `ztunnel/<node>` or `waypoint/<namespace>/<name>`. */
  reporter: string;
  layer: "L4" | "L7";
  source: FlowParty;
  destination: FlowParty;
  /** Hostname of the Service addressed, if any. */
  service?: string;
  /** Bytes both ways (0 for L7 counts and refused connections). */
  bytes: number;
  /** Connections (L4) or requests (L7) this event stands for. */
  count: number;
  allowed: boolean;
  /** The policy (or policies) that refused it, as the proxy named them. */
  deniedBy?: string;
  /** Why it failed, when it did (refusal or error). */
  error?: string;
}

/** One line of a ztunnel's `/recent_connections`. */
export interface RecentConnectionLine {
  seq: number;
  time: string;
  message: string;
  fields: Record<string, unknown>;
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) && v > 0 ? v : 0);

function party(fields: Record<string, unknown>, side: "src" | "dst"): FlowParty {
  const out: FlowParty = {};
  const name = str(fields[`${side}.workload`]);
  const namespace = str(fields[`${side}.namespace`]);
  if (name !== undefined && namespace !== undefined) out.workload = `${namespace}/${name}`;
  const address = str(fields[`${side}.addr`]);
  if (address !== undefined) out.address = address;
  const identity = str(fields[`${side}.identity`]);
  if (identity !== undefined) out.identity = identity;
  return out;
}

const POLICY_REJECTION = /^policy rejection: denied by (.+)$/;

/**
 * A ztunnel access log line as a flow, or undefined when it should not be counted: each connection
 * between two ztunnels is logged twice, outbound at the source and inbound at the destination, so the
 * inbound line is the one used (it also names the refusing policy), and an outbound line only when
 * no ztunnel receives the connection: to a waypoint (which terminates HBONE itself) or out of the mesh.
 */
export function flowFromAccessLog(
  reporter: string,
  line: RecentConnectionLine,
  receivedByZtunnel: (destination: FlowParty) => boolean,
): FlowEvent | undefined {
  const f = line.fields;
  const direction = str(f.direction);
  const source = party(f, "src");
  const destination = party(f, "dst");
  if (line.message !== "connection complete") return undefined;
  if (direction === "outbound" && receivedByZtunnel(destination)) return undefined;
  if (direction !== "outbound" && direction !== "inbound") return undefined;
  const at = Date.parse(line.time);
  if (!Number.isFinite(at)) return undefined;
  const error = str(f.error);
  const rejection = error === undefined ? null : POLICY_REJECTION.exec(error);
  const event: FlowEvent = {
    at,
    reporter,
    layer: "L4",
    source,
    destination,
    bytes: num(f.bytes_sent) + num(f.bytes_recv),
    count: 1,
    allowed: rejection === null,
  };
  const service = str(f["dst.service"]);
  if (service !== undefined) event.service = service;
  if (rejection?.[1] !== undefined) event.deniedBy = rejection[1];
  if (error !== undefined) event.error = error;
  return event;
}

/** One request of a waypoint's `/recent_requests`: `fields` is its access log entry. */
export interface RecentRequestLine {
  seq: number;
  time: string;
  fields: Record<string, unknown>;
}

/**
 * Whether an access log entry's details name a policy denial: Envoy's RBAC filter leaves
 * `rbac_access_denied_matched_policy[...]` in the response code details of a request and the
 * termination details of a connection. (It sets no response flag, so the flags cannot tell one.)
 */
const deniedByPolicy = (details: string | undefined): boolean =>
  details?.startsWith("rbac_access_denied_matched_policy[") === true;

const ipOfAddress = (address: string | undefined): string | undefined =>
  address?.replace(/^\[(.*)\](:\d+)?$/, "$1").replace(/^([^:]+):\d+$/, "$1");

/**
 * A request a waypoint answered, as a flow from the client to the waypoint's own workload (as the
 * metrics give it, so both sources draw the same edge). A refusal names the policy the waypoint
 * recorded in the entry's `authorization` (`policy`, `namespace/name`), exactly; an entry without one
 * names the waypoint. Bytes are left to the ztunnel's connection line, which already counts them.
 */
export function flowFromWaypointRequest(options: {
  reporter: string;
  line: RecentRequestLine;
  waypointWorkload: string | undefined;
  /** The waypoint's SPIFFE ID: the far end of the client's mutual TLS. */
  waypointIdentity?: string | undefined;
  /** The mesh workload (`namespace/name`) at a client IP, if any. */
  workloadAt: (ip: string) => string | undefined;
}): FlowEvent | undefined {
  const f = options.line.fields;
  const at = Date.parse(options.line.time);
  if (!Number.isFinite(at)) return undefined;
  const auth = f.authorization;
  const decided = auth !== null && typeof auth === "object" ? (auth as Record<string, unknown>) : {};
  const code = typeof f.response_code === "number" ? f.response_code : 0;
  const flags = str(f.response_flags) ?? "-";
  const denied =
    decided.result === "denied" ||
    deniedByPolicy(str(f.response_code_details)) ||
    deniedByPolicy(str(f.connection_termination_details));
  const source: FlowParty = {};
  const clientIp = ipOfAddress(str(f.downstream_remote_address));
  const clientWorkload = clientIp === undefined ? undefined : options.workloadAt(clientIp);
  if (clientWorkload !== undefined) source.workload = clientWorkload;
  const principal = known(str(f.source_principal));
  if (principal !== undefined && principal !== "-") source.identity = principal;
  const destination: FlowParty = {};
  if (options.waypointWorkload !== undefined) destination.workload = options.waypointWorkload;
  if (options.waypointIdentity !== undefined && source.identity !== undefined) {
    destination.identity = options.waypointIdentity;
  }
  const event: FlowEvent = {
    at,
    reporter: options.reporter,
    layer: "L7",
    source,
    destination,
    bytes: 0,
    count: 1,
    allowed: !denied,
  };
  // `outbound|<port>||<host>`: set once a route chose a backend.
  const service = /^outbound\|\d*\|\|(.+)$/.exec(str(f.upstream_cluster) ?? "")?.[1];
  if (service !== undefined) event.service = service;
  if (denied) {
    const policy = str(decided.policy);
    event.deniedBy =
      policy !== undefined && policy !== "-" ? policy : `${options.reporter} (no policy name reported)`;
    const rule = typeof decided.rule === "number" ? `, rule ${decided.rule}` : "";
    // A TCP tunnel has no response code (0 in its entry).
    const answer = code === 0 ? "TCP connection refused" : `HTTP ${code}`;
    event.error = `${answer}${flags === "-" ? "" : ` ${flags}`}${rule}`;
  }
  return event;
}

/** One sample of the Prometheus text format: name, labels, value. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of `names` in a Prometheus text exposition (no histograms or timestamps needed). */
export function parsePrometheusText(text: string, names: ReadonlySet<string>): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const brace = line.indexOf("{");
    const space = line.lastIndexOf(" ");
    const name = brace === -1 ? line.slice(0, line.indexOf(" ")) : line.slice(0, brace);
    if (!names.has(name) || space === -1) continue;
    const labels: Record<string, string> = {};
    if (brace !== -1) {
      const body = line.slice(brace + 1, line.lastIndexOf("}"));
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      for (let m = re.exec(body); m !== null; m = re.exec(body)) {
        labels[m[1] as string] = (m[2] as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
      }
    }
    const value = Number(line.slice(space + 1));
    if (Number.isFinite(value)) out.push({ name, labels, value });
  }
  return out;
}

const REQUESTS_TOTAL = "istio_requests_total";

/** The per-label-set counter values of a waypoint's `istio_requests_total`. */
export function requestCounters(text: string): Map<string, PromSample> {
  const out = new Map<string, PromSample>();
  for (const s of parsePrometheusText(text, new Set([REQUESTS_TOTAL]))) {
    const key = Object.entries(s.labels)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    out.set(key, s);
  }
  return out;
}

const known = (v: string | undefined): string | undefined =>
  v === undefined || v === "unknown" ? undefined : v;

/**
 * The waypoint's requests since the previous scrape, as flows from the client to the waypoint's own
 * workload: a counter that went down means the waypoint restarted and counts from zero again. Refused
 * requests (403; Envoy sets no response flag for a policy denial, so the code is all the metric tells)
 * name the policies attached to the waypoint, since the metric does not say which one refused. The fallback for a waypoint without `/recent_requests`.
 */
export function flowsFromRequestCounters(options: {
  reporter: string;
  at: number;
  previous: ReadonlyMap<string, PromSample> | undefined;
  current: ReadonlyMap<string, PromSample>;
  waypointWorkload: string | undefined;
  /** The waypoint's SPIFFE ID: the far end of the client's mutual TLS. */
  waypointIdentity?: string | undefined;
  waypointPolicies: readonly string[];
}): FlowEvent[] {
  if (options.previous === undefined) return [];
  const events: FlowEvent[] = [];
  for (const [key, sample] of options.current) {
    const before = options.previous.get(key)?.value ?? 0;
    const delta = sample.value >= before ? sample.value - before : sample.value;
    if (delta <= 0) continue;
    const l = sample.labels;
    const denied = l.response_code === "403";
    const srcName = known(l.source_workload);
    const srcNs = known(l.source_workload_namespace);
    const source: FlowParty = {};
    if (srcName !== undefined && srcNs !== undefined) source.workload = `${srcNs}/${srcName}`;
    const srcId = known(l.source_principal);
    if (srcId !== undefined) source.identity = srcId;
    const destination: FlowParty = {};
    if (options.waypointWorkload !== undefined) destination.workload = options.waypointWorkload;
    if (options.waypointIdentity !== undefined && l.connection_security_policy === "mutual_tls") {
      destination.identity = options.waypointIdentity;
    }
    const event: FlowEvent = {
      at: options.at,
      reporter: options.reporter,
      layer: "L7",
      source,
      destination,
      bytes: 0,
      count: delta,
      allowed: !denied,
    };
    const service = known(l.destination_service);
    if (service !== undefined) event.service = service;
    if (denied) {
      event.deniedBy =
        options.waypointPolicies.length > 0
          ? options.waypointPolicies.join(", ")
          : `${options.reporter} (no policy name reported)`;
      const flags = l.response_flags ?? "-";
      event.error = `HTTP ${l.response_code ?? "403"}${flags === "-" ? "" : ` ${flags}`}`;
    }
    events.push(event);
  }
  return events;
}
