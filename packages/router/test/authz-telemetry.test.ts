import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import type {
  AuthorizationDecision,
  AuthorizationEvaluator,
  AuthorizationRequest,
} from "../src/authorization.js";
import type { MetricLabels, MetricsSink } from "../src/telemetry.js";
import {
  type Backend,
  httpRoute,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

/** A tiny ALLOW-list authorizer: a request is allowed when a rule's principal and path prefix match. */
class AllowListAuthorizer implements AuthorizationEvaluator {
  readonly seen: AuthorizationRequest[] = [];
  constructor(private readonly rules: { principals: string[]; pathPrefix: string; methods?: string[] }[]) {}
  evaluate(request: AuthorizationRequest): AuthorizationDecision {
    this.seen.push(request);
    const index = this.rules.findIndex(
      (r) =>
        request.source.identity !== undefined &&
        r.principals.includes(request.source.identity) &&
        (request.http?.path ?? "").startsWith(r.pathPrefix) &&
        (r.methods === undefined || r.methods.includes(request.http?.method ?? "")),
    );
    return index === -1
      ? { allowed: false, reason: "no ALLOW rule matched", policy: "default/allow-list", action: "ALLOW" }
      : {
          allowed: true,
          reason: `rule ${index} matched`,
          policy: "default/allow-list",
          action: "ALLOW",
          rule: index,
        };
  }
}

interface Observation {
  name: string;
  labels: MetricLabels | undefined;
  value: number;
}

function recordingSink(): MetricsSink & { observations: Observation[] } {
  const observations: Observation[] = [];
  return {
    observations,
    counter: (name) => ({ inc: (labels, value) => observations.push({ name, labels, value: value ?? 1 }) }),
    gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
    histogram: (name) => ({ observe: (labels, value) => observations.push({ name, labels, value }) }),
  };
}

const CLIENT = "spiffe://cluster.local/ns/default/sa/client";
const ADMIN = "spiffe://cluster.local/ns/ops/sa/admin";

describe("L7 authorization, metrics and trace context", () => {
  let a: Backend;
  let wp: Waypoint;
  const policy = new AllowListAuthorizer([
    { principals: [CLIENT, ADMIN], pathPrefix: "/public" },
    { principals: [ADMIN], pathPrefix: "/admin" },
    { principals: [CLIENT], pathPrefix: "/grpc.", methods: ["POST"] },
  ]);
  const sink = recordingSink();

  before(async () => {
    a = await startBackend("a");
    wp = await startWaypoint(
      {
        "default/a": [
          {
            ...a.endpoint,
            workload: {
              name: "a-v1",
              namespace: "default",
              principal: "spiffe://cluster.local/ns/default/sa/a",
              app: "a",
              version: "v1",
            },
          },
        ],
      },
      {
        routes: [
          httpRoute("r", [
            {
              matches: [{ path: { value: "/public" } }, { path: { value: "/admin" } }],
              backendRefs: [{ name: "a", port: 80 }],
            },
          ]),
        ],
        policy,
        metrics: sink,
      },
      {
        peerIdentity: CLIENT,
        remoteAddress: "10.0.0.7",
        remotePort: 40000,
        destination: { address: "10.96.0.10", port: 80 },
        source: { name: "client", namespace: "default", app: "client" },
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  it("passes the tunnel identity to the policy and denies with 403 RBAC: access denied", async () => {
    assert.equal((await request(wp.port, { path: "/public/x" })).status, 200);
    const last = policy.seen.at(-1);
    assert.equal(last?.source.identity, CLIENT);
    assert.equal(last?.source.ip, "10.0.0.7");
    assert.equal(last?.destination.ip, "10.96.0.10");
    assert.equal(last?.destination.port, 80);
    assert.equal(last?.http?.path, "/public/x");
    assert.equal(last?.http?.method, "GET");
    assert.equal(last?.http?.host, "svc.example.com");
    const denied = await request(wp.port, { path: "/admin/panel" });
    assert.equal(denied.status, 403);
    assert.equal(denied.body, "RBAC: access denied");
    wp.info.peerIdentity = ADMIN;
    try {
      assert.equal((await request(wp.port, { path: "/admin/panel" })).status, 200);
      wp.info.peerIdentity = undefined;
      assert.equal((await request(wp.port, { path: "/public/x" })).status, 403);
    } finally {
      wp.info.peerIdentity = CLIENT;
    }
  });

  it("answers denied gRPC calls with grpc-status 7", async () => {
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = client.request({
          ":method": "GET",
          ":path": "/grpc.Svc/Call",
          ":authority": "svc",
          "content-type": "application/grpc",
        });
        req.on("response", resolve);
        req.on("error", reject);
        req.resume();
        req.end();
      });
      assert.equal(headers[":status"], 200);
      assert.equal(headers["grpc-status"], "7");
    } finally {
      client.close();
    }
  });

  it("emits Istio request metrics with waypoint labels", async () => {
    sink.observations.length = 0;
    await request(wp.port, { method: "POST", path: "/public/m", body: "x".repeat(100) });
    await request(wp.port, { method: "POST", path: "/grpc.unrouted" });
    await request(wp.port, { path: "/admin" });
    const httpTotals = () =>
      sink.observations.filter(
        (o) => o.name === "istio_requests_total" && o.labels?.request_protocol === "http",
      );
    for (let i = 0; i < 50 && httpTotals().length < 3; i++)
      await new Promise((resolve) => setTimeout(resolve, 10));
    const totals = httpTotals();
    assert.equal(totals.length, 3);
    const ok = totals[0]?.labels ?? {};
    assert.equal(ok.reporter, "waypoint");
    assert.equal(ok.response_code, "200");
    assert.equal(ok.response_flags, "-");
    assert.equal(ok.source_principal, CLIENT);
    assert.equal(ok.source_workload, "client");
    assert.equal(ok.destination_service, "a.default.svc.cluster.local");
    assert.equal(ok.destination_service_name, "a");
    assert.equal(ok.destination_workload, "a-v1");
    assert.equal(ok.destination_principal, "spiffe://cluster.local/ns/default/sa/a");
    assert.equal(ok.request_protocol, "http");
    assert.equal(ok.connection_security_policy, "mutual_tls");
    assert.equal(totals[1]?.labels?.response_code, "404");
    assert.equal(totals[1]?.labels?.response_flags, "NR");
    assert.equal(totals[2]?.labels?.response_code, "403");
    // A policy denial sets no response flag, as Envoy's RBAC filter sets none.
    assert.equal(totals[2]?.labels?.response_flags, "-");
    const reqBytes = sink.observations.find(
      (o) => o.name === "istio_request_bytes" && o.labels?.request_protocol === "http",
    );
    assert.ok((reqBytes?.value ?? 0) >= 100);
    const respBytes = sink.observations.find(
      (o) => o.name === "istio_response_bytes" && o.labels?.request_protocol === "http",
    );
    assert.ok((respBytes?.value ?? 0) > 0);
    assert.ok(
      sink.observations.some((o) => o.name === "istio_request_duration_milliseconds" && o.value >= 0),
    );
  });

  it("continues the caller's trace with a new span id", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parent = "00f067aa0ba902b7";
    const r = await request(wp.port, {
      path: "/public/t",
      headers: { traceparent: `00-${traceId}-${parent}-01`, "x-request-id": "req-123" },
    });
    const sentHeaders = (JSON.parse(r.body) as { headers: Record<string, string> }).headers;
    assert.equal(sentHeaders["x-request-id"], "req-123");
    const sent = sentHeaders.traceparent ?? "";
    const [version, tid, span, flags] = sent.split("-");
    assert.equal(version, "00");
    assert.equal(tid, traceId);
    assert.equal(flags, "01");
    assert.match(span ?? "", /^[0-9a-f]{16}$/);
    assert.notEqual(span, parent);
    const fresh = await request(wp.port, { path: "/public/t", headers: { traceparent: "garbage" } });
    const freshSent =
      (JSON.parse(fresh.body) as { headers: Record<string, string> }).headers.traceparent ?? "";
    assert.match(freshSent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.ok(!freshSent.includes(traceId));
  });
});
