import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import type { AuthorizationDecision, AuthorizationRequest } from "../src/authorization.js";
import type { AccessLogEntry, RequestAuthInput, RequestAuthOutcome } from "../src/request-log.js";
import {
  type Backend,
  httpRoute,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

const PEER = "spiffe://cluster.local/ns/default/sa/client";

/** Accepts `Bearer good`, rejects any other bearer token, and lets a request without one through. */
function authenticate(input: RequestAuthInput): RequestAuthOutcome {
  const header = input.headers.authorization;
  if (header === undefined) return { kind: "anonymous" };
  if (header === "Bearer throw") throw new Error("verifier broke");
  if (header !== "Bearer good") return { kind: "rejected", reason: "bad signature" };
  return {
    kind: "authenticated",
    principal: "https://issuer.test/alice",
    audiences: ["api"],
    presenter: "cli",
    claims: { sub: "alice", groups: ["dev"] },
    removeHeaders: ["authorization"],
  };
}

describe("request authentication and access log hooks", () => {
  let backend: Backend;
  let wp: Waypoint;
  const seen: AuthorizationRequest[] = [];
  const logs: AccessLogEntry[] = [];

  before(async () => {
    backend = await startBackend("b");
    wp = await startWaypoint(
      { "default/svc": [backend.endpoint] },
      {
        routes: [
          httpRoute("r", [
            {
              matches: [{ path: { type: "PathPrefix", value: "/" } }],
              backendRefs: [{ name: "svc", port: 80 }],
            },
          ]),
        ],
        authenticate,
        accessLog: (entry) => logs.push(entry),
        policy: {
          evaluate(r: AuthorizationRequest): AuthorizationDecision {
            seen.push(r);
            return r.http?.path === "/members" && r.http.requestPrincipal === undefined
              ? {
                  allowed: false,
                  reason: "needs a request principal",
                  policy: "default/members-need-jwt",
                  action: "ALLOW",
                }
              : r.http?.path === "/admin"
                ? { allowed: false, reason: "", policy: "default/no-admin", action: "DENY", rule: 1 }
                : r.http?.path === "/external"
                  ? { allowed: false, reason: "", policy: "default/ext", action: "CUSTOM", rule: 0 }
                  : r.http?.path === "/log/me"
                    ? { allowed: true, reason: "", policy: "default/log", action: "ALLOW", rule: 2 }
                    : { allowed: true, reason: "" };
          },
        },
      },
      { peerIdentity: PEER, destination: { address: "10.0.0.1", port: 80 } },
    );
  });

  after(async () => {
    await wp.close();
    await stopServer(backend.server);
  });

  it("answers 401 to a rejected credential without asking policy or the backend", async () => {
    const before = { seen: seen.length, sent: backend.requests.length };
    for (const token of ["bad", "throw"]) {
      const res = await request(wp.port, { path: "/members", headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 401);
      assert.match(String(res.headers["www-authenticate"]), /^Bearer /);
    }
    assert.equal(seen.length, before.seen);
    assert.equal(backend.requests.length, before.sent);
  });

  it("hands the verified facts to policy and drops the token header upstream", async () => {
    const res = await request(wp.port, { path: "/members", headers: { authorization: "Bearer good" } });
    assert.equal(res.status, 200);
    const http = seen.at(-1)?.http;
    assert.equal(http?.requestPrincipal, "https://issuer.test/alice");
    assert.deepEqual(http?.audiences, ["api"]);
    assert.equal(http?.presenter, "cli");
    assert.deepEqual(http?.claims, { sub: "alice", groups: ["dev"] });
    assert.equal(backend.requests.at(-1)?.headers.authorization, undefined);
  });

  it("lets a request without a credential reach policy anonymous", async () => {
    const res = await request(wp.port, { path: "/members" });
    assert.equal(res.status, 403);
    assert.equal(seen.at(-1)?.http?.requestPrincipal, undefined);
    assert.equal((await request(wp.port, { path: "/open" })).status, 200);
  });

  it("logs one entry per request with Istio's access log fields", async () => {
    logs.length = 0;
    const res = await request(wp.port, {
      method: "POST",
      path: "/log/me?x=1",
      headers: {
        authorization: "Bearer good",
        "user-agent": "probe/1",
        "x-forwarded-for": "192.0.2.1",
        "x-request-id": "req-1",
      },
      body: "hello",
    });
    assert.equal(res.status, 200);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(logs.length, 1);
    const entry = logs[0] as AccessLogEntry;
    assert.match(entry.start_time, /^\d{4}-\d\d-\d\dT/);
    assert.ok(entry.duration >= 0);
    const {
      start_time: _s,
      duration: _d,
      downstream_remote_address: remote,
      upstream_service_time: serviceTime,
      upstream_local_address: upstreamLocal,
      ...rest
    } = entry;
    assert.match(remote, /^127\.0\.0\.1:\d+$/);
    // The waypoint's end of its connection to the backend.
    assert.match(upstreamLocal, /^127\.0\.0\.1:\d+$/);
    // Envoy's x-envoy-upstream-service-time, as the response carried it.
    assert.match(serviceTime, /^\d+$/);
    assert.equal(res.headers["x-envoy-upstream-service-time"], serviceTime);
    assert.deepEqual(rest, {
      method: "POST",
      path: "/log/me?x=1",
      protocol: "HTTP/1.1",
      response_code: 200,
      response_flags: "-",
      bytes_received: 5,
      bytes_sent: res.body.length,
      x_forwarded_for: "192.0.2.1",
      user_agent: "probe/1",
      request_id: "req-1",
      authority: "svc.example.com",
      upstream_host: `${backend.endpoint.address}:${backend.endpoint.port}`,
      upstream_cluster: "outbound|80||svc.default.svc.cluster.local",
      downstream_local_address: "10.0.0.1:80",
      // A plain TCP stream, not TLS: no SNI.
      requested_server_name: "-",
      route_name: "default/r",
      source_principal: PEER,
      destination_principal: "-",
      request_principal: "https://issuer.test/alice",
      grpc_status: "-",
      response_code_details: "via_upstream",
      connection_termination_details: "-",
      upstream_transport_failure_reason: "-",
      authorization: { result: "allowed", policy: "default/log", action: "ALLOW", rule: 2 },
    });
  });

  it("answers a gRPC request with a rejected credential UNAUTHENTICATED (16), logged as HTTP/2", async () => {
    logs.length = 0;
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const req = client.request({
          ":method": "POST",
          ":path": "/grpc.Svc/Call",
          ":authority": "svc",
          "content-type": "application/grpc",
          authorization: "Bearer bad",
        });
        req.on("response", resolve);
        req.on("error", reject);
        req.resume();
        req.end();
      });
      assert.equal(headers[":status"], 200);
      assert.equal(headers["grpc-status"], "16");
    } finally {
      client.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(
      logs.map((e) => `${e.protocol} ${e.response_code} ${e.grpc_status}`),
      ["HTTP/2 200 16"],
    );
  });

  it("logs refusals with their status and flags", async () => {
    logs.length = 0;
    await request(wp.port, { path: "/members", headers: { authorization: "Bearer bad" } });
    await request(wp.port, { path: "/members" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(
      logs.map((e) => `${e.response_code} ${e.response_flags} ${e.upstream_host}`),
      ["401 - -", "403 - -"],
    );
    // No ALLOW policy matched: Envoy's RBAC filter names no policy.
    assert.equal(logs[1]?.response_code_details, "rbac_access_denied_matched_policy[none]");
    assert.equal(logs[1]?.connection_termination_details, "-");
    // The denial names the policy that decided it; the 401 never reached policy.
    assert.deepEqual(
      logs.map((e) => e.authorization),
      ["-", { result: "denied", policy: "default/members-need-jwt", action: "ALLOW" }],
    );
  });

  it("reports a policy denial as Envoy does: no RBAC flag, the matched policy in the details", async () => {
    logs.length = 0;
    const denied = await request(wp.port, { path: "/admin" });
    assert.equal(denied.status, 403);
    assert.equal(denied.body, "RBAC: access denied");
    const external = await request(wp.port, { path: "/external" });
    assert.equal(external.status, 403);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(
      logs.map((e) => [e.response_code, e.response_flags, e.response_code_details]),
      [
        // Istio names each rule it compiles for Envoy's RBAC filter `ns[<ns>]-policy[<name>]-rule[<i>]`.
        [403, "-", "rbac_access_denied_matched_policy[ns[default]-policy[no-admin]-rule[1]]"],
        // A CUSTOM policy without an authorizer: the deny rule Istio builds from its matched rule.
        [
          403,
          "-",
          "rbac_access_denied_matched_policy[istio-ext-authz-ns[default]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action]",
        ],
      ],
    );
  });
});
