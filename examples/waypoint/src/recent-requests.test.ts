import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AuthorizationDecision, PolicyExplanation } from "@ambient/policy";
import type { AccessLogEntry, FinishedRequest } from "@ambient/router";
import { createRequestHistory, withDecidingPolicy } from "./recent-requests.js";

/** A finished request whose entry is built on each read, as the router's are. */
function finished(path: string, authorization: AccessLogEntry["authorization"]): FinishedRequest {
  return {
    startedAt: Date.parse("2026-12-05T08:00:00.000Z"),
    accessLogEntry: () => entry(path, authorization),
  };
}

function entry(path: string, authorization: AccessLogEntry["authorization"]): AccessLogEntry {
  return {
    start_time: "2026-12-05T08:00:00.000Z",
    method: "GET",
    path,
    protocol: "HTTP/1.1",
    response_code: authorization !== "-" && authorization.result === "denied" ? 403 : 200,
    response_flags: "-",
    bytes_received: 0,
    bytes_sent: 0,
    duration: 1,
    upstream_service_time: "-",
    x_forwarded_for: "-",
    user_agent: "-",
    request_id: "-",
    authority: "web.demo",
    upstream_host: "-",
    upstream_cluster: "-",
    upstream_local_address: "-",
    downstream_remote_address: "127.0.0.2:40000",
    downstream_local_address: "127.0.0.100:80",
    requested_server_name: "-",
    route_name: "-",
    source_principal: "spiffe://cluster.local/ns/demo/sa/sleep",
    destination_principal: "-",
    request_principal: "-",
    grpc_status: "-",
    response_code_details:
      authorization !== "-" && authorization.result === "denied"
        ? "rbac_access_denied_matched_policy[none]"
        : "-",
    connection_termination_details: "-",
    upstream_transport_failure_reason: "-",
    authorization,
  };
}

describe("createRequestHistory", () => {
  it("numbers the requests, keeps at most maxEntries and none older than the window", () => {
    let clock = Date.parse("2026-12-05T08:00:00.000Z");
    const history = createRequestHistory({ maxEntries: 3, now: () => clock });
    const denied = { result: "denied", policy: "demo/web-get-from-sleep", action: "ALLOW" } as const;
    history.record(finished("/a", "-"));
    clock += 1000;
    history.record(finished("/b", denied));
    history.record(finished("/c", { result: "allowed", policy: "-", action: "-" }));
    const first = history.recent();
    assert.equal(first.startedAt, "2026-12-05T08:00:00.000Z");
    assert.deepEqual(
      first.requests.map((r) => [r.seq, r.time, r.fields.path, r.fields.authorization]),
      [
        [1, "2026-12-05T08:00:00.000Z", "/a", "-"],
        [2, "2026-12-05T08:00:01.000Z", "/b", denied],
        [3, "2026-12-05T08:00:01.000Z", "/c", { result: "allowed", policy: "-", action: "-" }],
      ],
    );
    // A fourth pushes the oldest out (cap 3).
    history.record(finished("/d", "-"));
    assert.deepEqual(
      history.recent().requests.map((r) => r.seq),
      [2, 3, 4],
    );
    // Each read builds its own entries: changing one that was served changes nothing kept.
    history.record(finished("/e", "-"));
    const served = history.recent().requests.at(-1);
    assert.equal(served?.fields.path, "/e");
    if (served !== undefined) served.fields.path = "/changed";
    assert.equal(history.recent().requests.at(-1)?.fields.path, "/e");
    assert.deepEqual(
      history.recent().requests.map((r) => r.seq),
      [3, 4, 5],
    );
    // A minute after the last, all are gone; numbering goes on.
    clock += 60_001;
    assert.deepEqual(history.recent().requests, []);
    history.record(finished("/f", "-"));
    assert.deepEqual(
      history.recent().requests.map((r) => r.seq),
      [6],
    );
  });
});

describe("createRequestHistory ring", () => {
  it("keeps the newest requests in order however often it wrapped, and ages them out oldest first", () => {
    let clock = 0;
    const history = createRequestHistory({ maxEntries: 3, windowMs: 100, now: () => clock });
    for (let i = 1; i <= 10; i++) {
      history.record(finished(`/${i}`, "-"));
      clock += 10;
    }
    assert.deepEqual(
      history.recent().requests.map((r) => [r.seq, r.fields.path, r.time]),
      [
        [8, "/8", new Date(70).toISOString()],
        [9, "/9", new Date(80).toISOString()],
        [10, "/10", new Date(90).toISOString()],
      ],
    );
    clock = 175; // /8 (at 70) is now older than 100 ms
    assert.deepEqual(
      history.recent().requests.map((r) => r.seq),
      [9, 10],
    );
    history.record(finished("/11", "-"));
    history.record(finished("/12", "-"));
    assert.deepEqual(
      history.recent().requests.map((r) => r.fields.path),
      ["/10", "/11", "/12"],
    );
  });
});

describe("withDecidingPolicy", () => {
  const allowP = (policy: string, dryRun = false): PolicyExplanation => ({
    policy,
    action: "ALLOW",
    dryRun,
    rules: ["method POST not in [GET]"],
  });
  const noneAllowed: AuthorizationDecision = {
    allowed: false,
    reason: "allow policies exist, but none allowed (checked: demo/web-get-from-sleep)",
    layer: "L7",
  };
  const cases: {
    name: string;
    decision: AuthorizationDecision;
    explain: () => PolicyExplanation[];
    policy: string | undefined;
    action: string | undefined;
  }[] = [
    {
      name: "no ALLOW policy allowed: the one that applies refused",
      decision: noneAllowed,
      explain: () => [allowP("demo/web-get-from-sleep")],
      policy: "demo/web-get-from-sleep",
      action: "ALLOW",
    },
    {
      name: "several ALLOW policies, dry-run and DENY ones left out",
      decision: noneAllowed,
      explain: () => [
        allowP("demo/a"),
        allowP("demo/shadow", true),
        { policy: "demo/d", action: "DENY", dryRun: false, rules: ["no match"] },
        allowP("istio-system/b"),
      ],
      policy: "demo/a, istio-system/b",
      action: "ALLOW",
    },
    {
      name: "a DENY policy that matched keeps its own name and rule",
      decision: {
        allowed: false,
        reason: "explicitly denied",
        policy: "demo/deny",
        action: "DENY",
        rule: 2,
        layer: "L7",
      },
      explain: () => [allowP("demo/other")],
      policy: "demo/deny",
      action: "DENY",
    },
    {
      name: "allowed by default stays without a policy",
      decision: { allowed: true, reason: "no ALLOW policy applies: allowed by default", layer: "L7" },
      explain: () => [allowP("demo/x")],
      policy: undefined,
      action: undefined,
    },
    {
      name: "a bad request is not a policy's refusal",
      decision: { allowed: false, badRequest: true, reason: "bad path", layer: "L7" },
      explain: () => [allowP("demo/x")],
      policy: undefined,
      action: undefined,
    },
    {
      name: "explain fails: unchanged",
      decision: noneAllowed,
      explain: () => {
        throw new Error("bad request");
      },
      policy: undefined,
      action: undefined,
    },
    {
      name: "explain lists no ALLOW policy: unchanged",
      decision: noneAllowed,
      explain: () => [],
      policy: undefined,
      action: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const out = withDecidingPolicy(c.decision, c.explain);
      assert.equal(out.policy, c.policy);
      assert.equal(out.action, c.action);
      assert.equal(out.allowed, c.decision.allowed);
      assert.equal(out.reason, c.decision.reason);
      if (c.decision.rule !== undefined) assert.equal(out.rule, c.decision.rule);
    });
  }
});
