import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "../control-plane.js";
import { ControlPlaneError } from "../errors.js";
import { parseManifests } from "../manifests.js";
import { noopLogger } from "../telemetry.js";
import { type MeshConfig, translateMesh } from "../translate-mesh.js";
import { createMeshCollector, type MeshCollector } from "./collector.js";
import {
  type FlowEvent,
  flowFromAccessLog,
  flowFromWaypointRequest,
  flowsFromRequestCounters,
  parsePrometheusText,
  type RecentConnectionLine,
  type RecentRequestLine,
  requestCounters,
} from "./flow-events.js";
import { createDashboardHandler, MAX_EVENT_STREAMS } from "./http.js";
import { buildSnapshot, type ProxyView } from "./mesh-graph.js";

const MESH_DIR = new URL("../../../../mesh/", import.meta.url);

/** The demo mesh's manifests (mesh/*.yaml). */
function demoFiles(): { path: string; text: string }[] {
  return readdirSync(MESH_DIR)
    .filter((n) => n.endsWith(".yaml"))
    .map((path) => ({ path, text: readFileSync(new URL(path, MESH_DIR), "utf8") }));
}

function demoConfig(): MeshConfig {
  return translateMesh(parseManifests(demoFiles()).objects);
}

const T0 = Date.parse("2026-12-05T08:00:00Z");
const line = (
  fields: Record<string, unknown>,
  extra: Partial<RecentConnectionLine> = {},
): RecentConnectionLine => ({
  seq: 1,
  time: new Date(T0).toISOString(),
  message: "connection complete",
  fields,
  ...extra,
});
const SLEEP = { "src.workload": "sleep-0", "src.namespace": "demo", "src.addr": "127.10.0.2:40000" };
const SLEEP_ID = "spiffe://cluster.local/ns/demo/sa/sleep";
const ECHO_ID = "spiffe://cluster.local/ns/demo/sa/echo";
const TO_ECHO = {
  "dst.workload": "echo-0",
  "dst.namespace": "demo",
  "dst.addr": "127.10.0.3:15008",
  "dst.identity": ECHO_ID,
};

describe("flowFromAccessLog", () => {
  const viaZtunnel = (d: { address?: string }) => d.address?.startsWith("127.10.0.3") === true;
  const cases: { name: string; line: RecentConnectionLine; expect: Partial<FlowEvent> | undefined }[] = [
    {
      name: "inbound, allowed: bytes both ways and both identities",
      line: line({
        ...SLEEP,
        "src.identity": SLEEP_ID,
        ...TO_ECHO,
        direction: "inbound",
        bytes_sent: 30,
        bytes_recv: 12,
      }),
      expect: { allowed: true, bytes: 42, layer: "L4", count: 1 },
    },
    {
      name: "inbound, refused by policy: the policy is named",
      line: line({
        ...SLEEP,
        ...TO_ECHO,
        direction: "inbound",
        bytes_sent: 0,
        bytes_recv: 0,
        error: "policy rejection: denied by demo/echo-allow-sleep",
      }),
      expect: { allowed: false, deniedBy: "demo/echo-allow-sleep", bytes: 0 },
    },
    {
      name: "outbound to a workload behind a ztunnel: left to the inbound line",
      line: line({ ...SLEEP, ...TO_ECHO, direction: "outbound", bytes_sent: 30 }),
      expect: undefined,
    },
    {
      name: "outbound to a waypoint: counted here, no ztunnel receives it",
      line: line({
        ...SLEEP,
        "dst.workload": "waypoint-0",
        "dst.namespace": "demo",
        "dst.addr": "127.10.0.6:15008",
        "dst.service": "web.demo.svc.cluster.local",
        direction: "outbound",
        bytes_sent: 5,
      }),
      expect: { allowed: true, service: "web.demo.svc.cluster.local", bytes: 5 },
    },
    {
      name: "an upstream failure is allowed by policy but carries the error",
      line: line({ ...SLEEP, ...TO_ECHO, direction: "inbound", error: "upstream unavailable: ECONNREFUSED" }),
      expect: { allowed: true, error: "upstream unavailable: ECONNREFUSED" },
    },
    {
      name: "connection failed (no destination known): not a flow",
      line: line(
        { "src.addr": "127.10.0.2:1", direction: "outbound", error: "no endpoint" },
        { message: "connection failed" },
      ),
      expect: undefined,
    },
    {
      name: "a line without a valid time: not a flow",
      line: line({ ...SLEEP, ...TO_ECHO, direction: "inbound" }, { time: "yesterday" }),
      expect: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const event = flowFromAccessLog("ztunnel/node-b", c.line, viaZtunnel);
      if (c.expect === undefined) {
        assert.equal(event, undefined);
        return;
      }
      assert.ok(event !== undefined);
      for (const [k, v] of Object.entries(c.expect)) assert.deepEqual(event[k as keyof FlowEvent], v, k);
      assert.equal(event.source.workload, "demo/sleep-0");
      assert.equal(event.at, T0);
    });
  }
});

describe("waypoint request counters", () => {
  const metric = (labels: Record<string, string>, value: number) =>
    `istio_requests_total{${Object.entries(labels)
      .map(([k, v]) => `${k}="${v}"`)
      .join(",")}} ${value}`;
  const denied = {
    source_workload: "unknown",
    source_workload_namespace: "unknown",
    source_principal: SLEEP_ID,
    destination_service: "unknown",
    response_code: "403",
    // Envoy sets no response flag for a policy denial.
    response_flags: "-",
    connection_security_policy: "mutual_tls",
  };
  const ok = {
    ...denied,
    source_workload: "sleep-0",
    source_workload_namespace: "demo",
    response_code: "200",
    response_flags: "-",
  };
  const text = (a: number, b: number) =>
    [
      "# HELP istio_requests_total Requests handled by the waypoint.",
      "# TYPE istio_requests_total counter",
      metric(denied, a),
      metric(ok, b),
      'istio_request_bytes_bucket{le="1"} 3',
    ].join("\n");

  it("parses the samples asked for, with escaped label values", () => {
    const samples = parsePrometheusText('a{x="q\\"uote",y="n\\nl"} 2\nb 3\n# a 4\n', new Set(["a"]));
    assert.deepEqual(samples, [{ name: "a", labels: { x: 'q"uote', y: "n\nl" }, value: 2 }]);
  });

  it("counts nothing on the first scrape, the increase after, and all of a counter that went down", () => {
    const base = { reporter: "waypoint/demo/waypoint", at: T0, waypointWorkload: "demo/waypoint-0" };
    const policies = ["demo/web-get-from-sleep"];
    const first = requestCounters(text(2, 5));
    assert.deepEqual(
      flowsFromRequestCounters({ ...base, previous: undefined, current: first, waypointPolicies: policies }),
      [],
    );
    const second = requestCounters(text(3, 5));
    const events = flowsFromRequestCounters({
      ...base,
      previous: first,
      current: second,
      waypointPolicies: policies,
      waypointIdentity: "spiffe://cluster.local/ns/demo/sa/waypoint",
    });
    assert.equal(events.length, 1);
    assert.deepEqual(events[0], {
      at: T0,
      reporter: "waypoint/demo/waypoint",
      layer: "L7",
      source: { identity: SLEEP_ID },
      destination: { workload: "demo/waypoint-0", identity: "spiffe://cluster.local/ns/demo/sa/waypoint" },
      bytes: 0,
      count: 1,
      allowed: false,
      deniedBy: "demo/web-get-from-sleep",
      error: "HTTP 403",
    });
    // The waypoint restarted: 1 < 3 means one new refusal since it started, and 2 allowed.
    const restarted = requestCounters(text(1, 2));
    const after = flowsFromRequestCounters({
      ...base,
      previous: second,
      current: restarted,
      waypointPolicies: [],
    });
    assert.deepEqual(
      after.map((e) => [e.allowed, e.count, e.deniedBy]),
      [
        [false, 1, "waypoint/demo/waypoint (no policy name reported)"],
        [true, 2, undefined],
      ],
    );
  });
});

const WAYPOINT_ID = "spiffe://cluster.local/ns/demo/sa/waypoint";
/** A waypoint access log entry (the fields the dashboard reads), as `/recent_requests` serves it. */
const request = (
  seq: number,
  fields: Record<string, unknown>,
  time = new Date(T0).toISOString(),
): RecentRequestLine => ({
  seq,
  time,
  fields: {
    method: "GET",
    path: "/",
    response_code: 200,
    response_flags: "-",
    downstream_remote_address: "127.10.0.2:40000",
    source_principal: SLEEP_ID,
    upstream_cluster: "outbound|80||web.demo.svc.cluster.local",
    authorization: { result: "allowed", policy: "demo/web-get-from-sleep", action: "ALLOW", rule: 0 },
    ...fields,
  },
});
const REFUSED_POST = {
  method: "POST",
  response_code: 403,
  response_flags: "-",
  response_code_details: "rbac_access_denied_matched_policy[none]",
  upstream_cluster: "-",
  authorization: { result: "denied", policy: "demo/web-get-from-sleep", action: "ALLOW" },
};

describe("flowFromWaypointRequest", () => {
  const workloadAt = (ip: string) => (ip === "127.10.0.2" ? "demo/sleep-0" : undefined);
  const base = {
    reporter: "waypoint/demo/waypoint",
    waypointWorkload: "demo/waypoint-0",
    waypointIdentity: WAYPOINT_ID,
    workloadAt,
  };
  const cases: {
    name: string;
    line: RecentRequestLine;
    want: Partial<FlowEvent> | undefined;
  }[] = [
    {
      name: "an allowed request: client to the waypoint's workload, mTLS, the Service it went to",
      line: request(1, {}),
      want: {
        layer: "L7",
        allowed: true,
        count: 1,
        bytes: 0,
        source: { workload: "demo/sleep-0", identity: SLEEP_ID },
        destination: { workload: "demo/waypoint-0", identity: WAYPOINT_ID },
        service: "web.demo.svc.cluster.local",
      },
    },
    {
      name: "a refusal names exactly the policy the waypoint recorded",
      line: request(2, REFUSED_POST),
      want: {
        allowed: false,
        deniedBy: "demo/web-get-from-sleep",
        error: "HTTP 403",
        source: { workload: "demo/sleep-0", identity: SLEEP_ID },
      },
    },
    {
      name: "a DENY policy's rule index goes with the error",
      line: request(3, {
        ...REFUSED_POST,
        authorization: { result: "denied", policy: "demo/no-admin", action: "DENY", rule: 1 },
      }),
      want: { allowed: false, deniedBy: "demo/no-admin", error: "HTTP 403, rule 1" },
    },
    {
      name: "a TCP tunnel L4 policy refused: told by its termination details, no response code",
      line: request(8, {
        method: "-",
        path: "-",
        response_code: 0,
        upstream_cluster: "-",
        connection_termination_details:
          "rbac_access_denied_matched_policy[ns[demo]-policy[no-other]-rule[0]]",
        authorization: { result: "denied", policy: "demo/no-other", action: "DENY", rule: 0 },
      }),
      want: { allowed: false, deniedBy: "demo/no-other", error: "TCP connection refused, rule 0" },
    },
    {
      name: "a denial the details tell, without a decision in the entry, names the waypoint",
      line: request(9, { ...REFUSED_POST, authorization: "-" }),
      want: {
        allowed: false,
        deniedBy: "waypoint/demo/waypoint (no policy name reported)",
        error: "HTTP 403",
      },
    },
    {
      name: "a 403 from the backend itself is not a policy refusal",
      line: request(10, { response_code: 403 }),
      want: { allowed: true, deniedBy: undefined, error: undefined },
    },
    {
      name: "a refusal without a policy name names the waypoint",
      line: request(4, { ...REFUSED_POST, authorization: { result: "denied", policy: "-", action: "-" } }),
      want: { allowed: false, deniedBy: "waypoint/demo/waypoint (no policy name reported)" },
    },
    {
      name: "a 401 before policy (authorization `-`) is not a policy refusal",
      line: request(5, { response_code: 401, upstream_cluster: "-", authorization: "-" }),
      want: { allowed: true, deniedBy: undefined },
    },
    {
      name: "plaintext from an address outside the mesh: no identities, no workload",
      line: request(6, { downstream_remote_address: "192.0.2.9:5000", source_principal: "-" }),
      want: { source: {}, destination: { workload: "demo/waypoint-0" } },
    },
    { name: "a line without a valid time is skipped", line: request(7, {}, "soon"), want: undefined },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const event = flowFromWaypointRequest({ ...base, line: c.line });
      if (c.want === undefined) return assert.equal(event, undefined);
      assert.ok(event !== undefined);
      for (const [k, v] of Object.entries(c.want)) {
        assert.deepEqual(event[k as keyof FlowEvent], v, k);
      }
      assert.equal(event.at, T0);
    });
  }
});

describe("buildSnapshot", () => {
  const config = demoConfig();
  const ztunnel = (name: string, certificates: ProxyView["certificates"]): ProxyView => ({
    status: { kind: "ztunnel", name, admin: "127.20.0.1:15000", up: true },
    certificates,
    openConnections: [],
    policies: [],
  });
  const event = (e: Partial<FlowEvent>): FlowEvent => ({
    at: T0 - 1000,
    reporter: "ztunnel/node-b",
    layer: "L4",
    source: { workload: "demo/sleep-0", identity: SLEEP_ID },
    destination: { workload: "demo/echo-0", identity: ECHO_ID },
    bytes: 0,
    count: 1,
    allowed: true,
    ...e,
  });
  const notAfter = new Date(T0 + 3_600_000).toISOString();
  const snapshot = buildSnapshot({
    config,
    proxies: [
      ztunnel("node-a", [{ identity: ECHO_ID, notAfter: "2000-01-01T00:00:00.000Z" }]),
      ztunnel("node-b", [{ identity: ECHO_ID, notAfter }]),
      {
        status: { kind: "waypoint", name: "demo/waypoint", admin: "127.10.0.6:15000", up: true },
        workload: "demo/waypoint-0",
        certificates: [],
        openConnections: [{ source: "127.10.0.6", destination: "127.10.0.7:8080", destinationIdentity: "x" }],
        policies: ["demo/web-get-from-sleep"],
      },
    ],
    events: [
      event({ bytes: 3000 }),
      event({ bytes: 3000, at: T0 - 2000 }),
      event({ at: T0 - 61_000, bytes: 1_000_000 }),
      event({ source: { workload: "demo/stranger" }, allowed: false, deniedBy: "demo/echo-allow-sleep" }),
      event({
        source: { identity: SLEEP_ID },
        destination: { workload: "demo/waypoint-0" },
        layer: "L7",
        allowed: false,
        deniedBy: "demo/web-get-from-sleep",
      }),
      event({ source: { address: "10.1.2.3:5555" }, destination: { address: "127.10.0.4:15008" } }),
    ],
    now: T0,
    windowMs: 60_000,
  });
  const w = (id: string) => {
    const found = snapshot.workloads.find((x) => x.id === id);
    assert.ok(found, id);
    return found;
  };
  const edge = (id: string) => {
    const found = snapshot.edges.find((x) => x.id === id);
    assert.ok(found, `${id} in ${snapshot.edges.map((e) => e.id).join(" ")}`);
    return found;
  };

  it("lists the workloads by namespace and node, the waypoint marked", () => {
    assert.deepEqual(snapshot.nodes, ["", "node-a", "node-b"]);
    assert.deepEqual(snapshot.namespaces, ["demo", "outside"]);
    assert.equal(w("demo/waypoint-0").waypoint, true);
    assert.equal(w("demo/sleep-0").waypoint, false);
    assert.equal(w("demo/echo-0").node, "node-b");
    assert.equal(w("demo/web-v1").usesWaypoint, "127.10.0.6:15008");
  });

  it("gives each workload its identity, its own node's certificate, services and policies", () => {
    const echo = w("demo/echo-0");
    assert.equal(echo.identity, ECHO_ID);
    // node-a's expired copy of the identity is not echo-0's: echo-0 runs on node-b.
    assert.deepEqual(echo.certificate, { notAfter, expired: false, reportedBy: "ztunnel/node-b" });
    assert.deepEqual(echo.services, ["demo/echo.demo.svc.cluster.local"]);
    assert.ok(
      echo.policies.includes("demo/echo-allow-sleep (ALLOW, workload selector)"),
      echo.policies.join(),
    );
    assert.ok(!w("demo/sleep-0").policies.some((p) => p.startsWith("demo/echo-allow-sleep")));
    assert.ok(w("demo/waypoint-0").policies.includes("demo/web-get-from-sleep (L7, at this waypoint)"));
  });

  it("adds up the last minute per edge: bytes/s, identities, mTLS; refusals apart, with the policy", () => {
    const ok = edge("demo/sleep-0->demo/echo-0");
    assert.equal(ok.connections, 2);
    assert.equal(ok.bytesPerSecond, 100);
    assert.equal(ok.mtls, true);
    assert.equal(ok.sourceIdentity, SLEEP_ID);
    const refused = edge("demo/stranger->demo/echo-0!");
    assert.equal(refused.allowed, false);
    assert.deepEqual(refused.deniedBy, ["demo/echo-allow-sleep"]);
    assert.equal(refused.mtls, false);
    // A waypoint's refusal names only the identity; the one workload with it is the source.
    assert.deepEqual(edge("demo/sleep-0->demo/waypoint-0!").deniedBy, ["demo/web-get-from-sleep"]);
    assert.equal(edge("demo/waypoint-0->demo/web-v1").open, 1);
    // An address outside the mesh becomes a workload of its own.
    assert.equal(edge("outside/10.1.2.3->demo/echo-1").connections, 1);
    assert.equal(w("outside/10.1.2.3").node, "");
  });

  it("lists each workload's recent decisions, newest first, on both ends", () => {
    assert.deepEqual(
      w("demo/echo-0").decisions.map((d) => [d.direction, d.peer, d.allowed, d.by]),
      [
        ["in", "demo/sleep-0", true, undefined],
        ["in", "demo/stranger", false, "demo/echo-allow-sleep"],
        ["in", "demo/sleep-0", true, undefined],
      ],
    );
    assert.equal(w("demo/stranger").decisions[0]?.direction, "out");
  });
});

describe("buildSnapshot with ServiceEntry and WorkloadEntry workloads", () => {
  // Two inline endpoints of one ServiceEntry share its namespace and name; a WorkloadEntry is named
  // like a pod of the demo. Each must stay a workload of its own, and the pods must keep their ids.
  const entries = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: payments, namespace: demo }
spec:
  hosts: [payments.example.com]
  resolution: STATIC
  ports: [{ number: 443, name: tls, protocol: TLS }]
  endpoints: [{ address: 192.0.2.7 }, { address: 192.0.2.8 }]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: archive, namespace: demo }
spec:
  hosts: [archive.example.com]
  resolution: DNS
  ports: [{ number: 443, name: tls, protocol: TLS }]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: sleep-0, namespace: demo }
spec: { address: 192.0.2.20, serviceAccount: vm }
`;
  const parsed = parseManifests([...demoFiles(), { path: "entries.yaml", text: entries }]);
  const config = translateMesh(parsed.objects);
  const endpoint = (ip: string) => `Kubernetes/networking.istio.io/ServiceEntry/demo/payments/${ip}`;
  const vm = "Kubernetes/networking.istio.io/WorkloadEntry/demo/sleep-0";
  const snapshot = buildSnapshot({
    config,
    proxies: [],
    events: [
      // sleep-0's ztunnel names the entry's workload by the ServiceEntry's name; the address tells which.
      {
        at: T0 - 1000,
        reporter: "ztunnel/node-a",
        layer: "L4",
        source: { workload: "demo/sleep-0", address: "127.10.0.2:40000", identity: SLEEP_ID },
        destination: { workload: "demo/payments", address: "192.0.2.8:443" },
        bytes: 600,
        count: 1,
        allowed: true,
      },
    ],
    now: T0,
    windowMs: 60_000,
  });
  const byId = new Map(snapshot.workloads.map((w) => [w.id, w]));

  it("the entries parse and translate", () => {
    assert.deepEqual(parsed.issues, []);
    assert.ok(config.workloads.some((w) => w.key === endpoint("192.0.2.8")));
  });

  it("draws each inline endpoint as its own workload, keyed by uid, with its own address", () => {
    const payments = snapshot.workloads.filter((w) => w.name === "payments");
    assert.deepEqual(
      payments.map((w) => [w.id, w.namespace, w.address]),
      [
        [endpoint("192.0.2.7"), "demo", "192.0.2.7"],
        [endpoint("192.0.2.8"), "demo", "192.0.2.8"],
      ],
    );
    assert.deepEqual(byId.get(endpoint("192.0.2.7"))?.services, ["demo/payments.example.com"]);
    // A DNS ServiceEntry's endpoint has no IP: it shows its hostname.
    const archive = "Kubernetes/networking.istio.io/ServiceEntry/demo/archive/archive.example.com";
    assert.equal(byId.get(archive)?.address, "archive.example.com");
  });

  it("keeps a pod's id and node when a WorkloadEntry has its namespace and name", () => {
    assert.equal(byId.get("demo/sleep-0")?.node, "node-a");
    assert.equal(byId.get("demo/sleep-0")?.address, "127.10.0.2");
    assert.equal(byId.get(vm)?.address, "192.0.2.20");
    assert.equal(byId.get(vm)?.identity, "spiffe://cluster.local/ns/demo/sa/vm");
    // The demo's pods are listed by namespace/name, as before.
    for (const id of ["demo/echo-0", "demo/stranger", "demo/waypoint-0", "demo/web-v1"]) {
      assert.ok(byId.has(id), id);
    }
  });

  it("puts a flow on the endpoint its address names", () => {
    assert.deepEqual(
      snapshot.edges.map((e) => [e.source, e.target, e.connections]),
      [["demo/sleep-0", endpoint("192.0.2.8"), 1]],
    );
    assert.deepEqual(
      byId.get(endpoint("192.0.2.8"))?.decisions.map((d) => [d.direction, d.peer]),
      [["in", "demo/sleep-0"]],
    );
    assert.deepEqual(byId.get(endpoint("192.0.2.7"))?.decisions, []);
  });
});

/** A stand-in ztunnel admin: its `/config_dump` and `/recent_connections` bodies can change. */
async function fakeZtunnel(port = 0) {
  const state = {
    startedAt: new Date().toISOString(),
    lines: [] as RecentConnectionLine[],
  };
  const server: Server = createServer((req, res) => {
    if (req.url === "/config_dump") {
      res.end(
        JSON.stringify({
          certificates: [{ identity: ECHO_ID, notAfter: "2030-01-01T00:00:00Z" }],
          connections: [],
        }),
      );
    } else if (req.url === "/recent_connections") {
      res.end(JSON.stringify({ startedAt: state.startedAt, connections: state.lines }));
    } else res.writeHead(404).end();
  });
  server.listen(port, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return { state, address, close, port: (server.address() as AddressInfo).port };
}

/** A waypoint's admin (`/config_dump`, and `/recent_requests` unless `recent` is false) and metrics. */
async function fakeWaypoint(recent: boolean) {
  const state = {
    startedAt: new Date().toISOString(),
    requests: [] as RecentRequestLine[],
    refused: 0,
  };
  const server: Server = createServer((req, res) => {
    if (req.url === "/config_dump") {
      res.end(
        JSON.stringify({
          identity: WAYPOINT_ID,
          certificates: [{ identity: WAYPOINT_ID, notAfter: "2030-01-01T00:00:00Z" }],
          authorizationPolicies: [
            { metadata: { namespace: "demo", name: "web-get-from-sleep" } },
            { metadata: { namespace: "demo", name: "web-audit" } },
          ],
        }),
      );
    } else if (req.url === "/recent_requests" && recent) {
      res.end(JSON.stringify({ startedAt: state.startedAt, requests: state.requests }));
    } else if (req.url === "/metrics") {
      res.end(
        `istio_requests_total{source_principal="${SLEEP_ID}",response_code="403",response_flags="-",connection_security_policy="mutual_tls"} ${state.refused}\n`,
      );
    } else res.writeHead(404).end();
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return { state, address, close };
}

const inbound = (seq: number, src: string) =>
  line(
    { "src.workload": src, "src.namespace": "demo", ...TO_ECHO, direction: "inbound", bytes_sent: 10 },
    { seq, time: new Date().toISOString() },
  );

describe("createMeshCollector", () => {
  it("lays the mesh out only for a subscriber or a snapshot() call, not on every poll", async () => {
    let reads = 0;
    const counted = () => {
      reads++;
      return demoConfig();
    };
    const collector = createMeshCollector(counted, { logger: noopLogger, pollIntervalMs: 60_000 });
    try {
      for (let i = 0; i < 5; i++) await collector.poll();
      assert.equal(reads, 0, "nobody looked: nothing laid out");
      const first = collector.snapshot();
      assert.equal(reads, 1);
      assert.equal(collector.snapshot(), first, "the same layout until the next poll");
      const seen: unknown[] = [];
      const unsubscribe = collector.subscribe((snapshot) => seen.push(snapshot));
      await collector.poll();
      await collector.poll();
      assert.equal(reads, 3, "one layout per poll while subscribed");
      assert.equal(seen.length, 2);
      assert.equal(collector.snapshot(), seen[1], "a subscriber's layout is the snapshot");
      unsubscribe();
      await collector.poll();
      assert.equal(reads, 3);
      assert.notEqual(collector.snapshot(), seen[1], "laid out again after the poll, when asked");
      assert.equal(reads, 4);
    } finally {
      collector.close();
    }
  });

  it("refuses a proxy address that is not ip:port", () => {
    const collector = createMeshCollector(demoConfig, { logger: noopLogger, pollIntervalMs: 60_000 });
    try {
      assert.throws(
        () => collector.addProxy({ kind: "ztunnel", name: "node-a", admin: "localhost:15000" }),
        (err: unknown) => err instanceof ControlPlaneError && err.code === "ERR_CONTROL_PLANE_CONFIG",
      );
      assert.deepEqual(collector.proxies(), []);
    } finally {
      collector.close();
    }
  });

  it("keeps working while a ztunnel restarts: marked down, data kept, new lines counted once it is back", async () => {
    const config = demoConfig();
    let ztunnel = await fakeZtunnel();
    const collector = createMeshCollector(() => config, {
      logger: noopLogger,
      pollIntervalMs: 60_000,
      proxies: [{ kind: "ztunnel", name: "node-b", admin: ztunnel.address }],
    });
    try {
      ztunnel.state.lines = [inbound(1, "sleep-0"), inbound(2, "sleep-0")];
      await collector.poll();
      const edgeOf = () => collector.snapshot().edges.find((e) => e.id === "demo/sleep-0->demo/echo-0");
      assert.equal(edgeOf()?.connections, 2);
      // Read again: the same lines are not counted twice.
      await collector.poll();
      assert.equal(edgeOf()?.connections, 2);
      assert.equal(collector.snapshot().proxies[0]?.up, true);

      await ztunnel.close();
      await collector.poll();
      const down = collector.snapshot();
      assert.equal(down.proxies[0]?.up, false);
      assert.ok(down.proxies[0]?.error !== undefined);
      assert.equal(edgeOf()?.connections, 2, "what it reported stays for the window");
      assert.equal(
        down.workloads.find((x) => x.id === "demo/echo-0")?.certificate?.reportedBy,
        "ztunnel/node-b",
      );

      // The new process on the same port numbers its lines from 1 again.
      ztunnel = await fakeZtunnel(ztunnel.port);
      ztunnel.state.startedAt = new Date(Date.now() + 1000).toISOString();
      ztunnel.state.lines = [inbound(1, "stranger")];
      await collector.poll();
      const back = collector.snapshot();
      assert.equal(back.proxies[0]?.up, true);
      assert.equal(back.edges.find((e) => e.id === "demo/stranger->demo/echo-0")?.connections, 1);
      assert.equal(edgeOf()?.connections, 2);
    } finally {
      collector.close();
      await ztunnel.close();
    }
  });
});

describe("createMeshCollector and waypoints", () => {
  const refusedEdge = (collector: ReturnType<typeof createMeshCollector>) =>
    collector.snapshot().edges.find((e) => e.id === "demo/sleep-0->demo/waypoint-0!");

  it("draws a waypoint's refusal with the policy its /recent_requests names, each request once", async () => {
    const waypoint = await fakeWaypoint(true);
    const collector = createMeshCollector(demoConfig, {
      logger: noopLogger,
      pollIntervalMs: 60_000,
      proxies: [
        {
          kind: "waypoint",
          name: "demo/waypoint",
          admin: waypoint.address,
          metrics: waypoint.address,
          address: "127.10.0.6",
        },
      ],
    });
    try {
      const now = new Date().toISOString();
      // The metrics say one refusal too; they are not read while /recent_requests answers.
      waypoint.state.refused = 1;
      waypoint.state.requests = [request(1, {}, now), request(2, REFUSED_POST, now)];
      await collector.poll();
      await collector.poll();
      assert.deepEqual(refusedEdge(collector)?.deniedBy, ["demo/web-get-from-sleep"]);
      assert.equal(refusedEdge(collector)?.requests, 1);
      assert.equal(
        collector.snapshot().edges.find((e) => e.id === "demo/sleep-0->demo/waypoint-0")?.requests,
        1,
      );
      // Restarted: numbering from 1 again under a new startedAt; the new refusal counts.
      waypoint.state.startedAt = new Date(Date.now() + 1000).toISOString();
      waypoint.state.requests = [request(1, REFUSED_POST, new Date().toISOString())];
      await collector.poll();
      assert.equal(refusedEdge(collector)?.requests, 2);
      const sleep = collector.snapshot().workloads.find((w) => w.id === "demo/sleep-0");
      assert.equal(sleep?.decisions.find((d) => !d.allowed)?.by, "demo/web-get-from-sleep");
    } finally {
      collector.close();
      await waypoint.close();
    }
  });

  it("falls back to the metrics for a waypoint without /recent_requests, naming its policies", async () => {
    const waypoint = await fakeWaypoint(false);
    const collector = createMeshCollector(demoConfig, {
      logger: noopLogger,
      pollIntervalMs: 60_000,
      proxies: [
        {
          kind: "waypoint",
          name: "demo/waypoint",
          admin: waypoint.address,
          metrics: waypoint.address,
          address: "127.10.0.6",
        },
      ],
    });
    try {
      await collector.poll();
      waypoint.state.refused = 2;
      await collector.poll();
      assert.equal(collector.snapshot().proxies[0]?.up, true);
      assert.deepEqual(refusedEdge(collector)?.deniedBy, ["demo/web-get-from-sleep, demo/web-audit"]);
      assert.equal(refusedEdge(collector)?.requests, 2);
    } finally {
      collector.close();
      await waypoint.close();
    }
  });
});

describe("the dashboard on the control plane's admin port", () => {
  let cp: ControlPlane;
  let base: string;
  before(async () => {
    cp = await startControlPlane({
      meshDir: new URL(MESH_DIR).pathname,
      listen: "127.0.0.1:0",
      admin: "127.0.0.1:0",
      watch: false,
      dashboard: { pollIntervalMs: 200 },
    });
    base = `http://${cp.adminAddress}`;
  });
  after(async () => {
    await cp?.close();
  });

  it("serves the page, its script and style from this origin only", async () => {
    const page = await fetch(`${base}/dashboard`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-security-policy") ?? "", /script-src 'self'.*style-src 'self'/);
    const html = await page.text();
    assert.ok(!/https?:\/\//.test(html.replace('"http://www.w3.org', "")), "no outside URL in the page");
    for (const asset of ["/dashboard/app.js", "/dashboard/app.css", "/dashboard/favicon.svg"]) {
      assert.ok(html.includes(asset), asset);
      assert.equal((await fetch(`${base}${asset}`)).status, 200, asset);
    }
    assert.equal((await fetch(`${base}/dashboard/nothing`)).status, 404);
    assert.equal((await fetch(`${base}/dashboard/data`, { method: "POST" })).status, 405);
    assert.equal((await fetch(`${base}/ready`)).status, 200);
  });

  it("streams the data as Server-Sent Events, again after every round", async () => {
    cp.dashboard?.addProxy({ kind: "ztunnel", name: "node-z", admin: "127.0.0.1:9" });
    const controller = new AbortController();
    const res = await fetch(`${base}/dashboard/events`, { signal: controller.signal });
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    const reader = res.body?.getReader();
    assert.ok(reader !== undefined);
    let text = "";
    const decoder = new TextDecoder();
    while ((text.match(/event: snapshot\n/g) ?? []).length < 2) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
    }
    controller.abort();
    const events = text.split("\n\n").filter((e) => e.startsWith("event: snapshot"));
    assert.ok(events.length >= 2);
    const last = JSON.parse(events[1]?.split("\ndata: ")[1] ?? "{}");
    assert.equal(last.workloads.length, 7);
    assert.deepEqual(
      last.proxies.map((p: { name: string; up: boolean }) => [p.name, p.up]),
      [["node-z", false]],
    );
    const data = (await (await fetch(`${base}/dashboard/data`)).json()) as { workloads: unknown[] };
    assert.equal(data.workloads.length, 7);
  });

  it("follows at most MAX_EVENT_STREAMS pages at once", async () => {
    const controller = new AbortController();
    try {
      const open = await Promise.all(
        Array.from({ length: MAX_EVENT_STREAMS }, () =>
          fetch(`${base}/dashboard/events`, { signal: controller.signal }),
        ),
      );
      assert.ok(open.every((r) => r.status === 200));
      const refused = await fetch(`${base}/dashboard/events`);
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("retry-after"), "5");
      await refused.text();
    } finally {
      controller.abort();
    }
    // Closed streams are let go: a new page gets one.
    for (let i = 0; i < 50; i++) {
      const again = await fetch(`${base}/dashboard/events`, { signal: AbortSignal.timeout(2000) }).catch(
        () => undefined,
      );
      if (again?.status === 200) {
        await again.body?.cancel();
        return;
      }
      await again?.text();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.fail("no stream after the others closed");
  });
});

describe("the dashboard's event stream to a page that does not read", () => {
  it("writes nothing more until the page has taken what was written, then only the latest snapshot", () => {
    let round = 0;
    let listener: ((snapshot: unknown) => void) | undefined;
    const collector = {
      snapshot: () => ({ round }),
      subscribe: (l: (snapshot: unknown) => void) => {
        listener = l;
        return () => {
          listener = undefined;
        };
      },
    } as unknown as MeshCollector;
    const handler = createDashboardHandler(collector);
    const written: string[] = [];
    const res = Object.assign(new EventEmitter(), {
      writableNeedDrain: false,
      writeHead() {
        return res;
      },
      write(chunk: string) {
        written.push(chunk);
        return true;
      },
      end() {},
    });
    const req = { url: "/dashboard/events", method: "GET" };
    assert.equal(handler.handle(req as never, res as never), true);
    assert.equal(written.length, 1);
    // The page stops reading: rounds go by and nothing is queued for it.
    res.writableNeedDrain = true;
    for (round = 1; round <= 100; round++) listener?.({ round });
    assert.equal(written.length, 1);
    // It reads again: the latest snapshot only.
    res.writableNeedDrain = false;
    res.emit("drain");
    assert.equal(written.length, 2);
    assert.match(written[1] ?? "", /"round":100/);
    res.emit("close");
    handler.close();
  });
});
