// When no policy can apply to a request, `evaluate` allows it by default without checking or copying
// its HTTP attributes, workload or targets (only the connection's addresses, ports and identity are
// checked). These tests prove the fields are not read, that a policy that could apply puts the checked
// path back, and that both paths decide alike.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  type AuthorizationEngineOptions,
  type AuthorizationRequest,
  createAuthorizationEngine,
} from "./authorization-engine.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

const CLIENT = "spiffe://cluster.local/ns/bench/sa/client";

/** An `http` object that counts every read of its fields. */
function watchedHttp(fields: Record<string, unknown>): {
  http: AuthorizationRequest["http"];
  reads: () => number;
} {
  let reads = 0;
  const http = new Proxy(fields, {
    get(target, key) {
      reads++;
      return Reflect.get(target, key);
    },
    ownKeys(target) {
      reads++;
      return Reflect.ownKeys(target);
    },
  }) as unknown as AuthorizationRequest["http"];
  return { http, reads: () => reads };
}

function viaWaypoint(http: AuthorizationRequest["http"], targetNamespace = "bench"): AuthorizationRequest {
  return {
    source: { ip: "127.78.0.1", port: 40000, identity: CLIENT },
    destination: {
      ip: "127.78.0.100",
      port: 80,
      targets: [
        { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: targetNamespace },
        { kind: "Service", group: "", name: "api", namespace: targetNamespace },
      ],
    },
    ...(http === undefined ? {} : { http }),
  };
}

const GOOD_HTTP = {
  host: "api.bench.svc.cluster.local",
  method: "POST",
  path: "/api/echo",
  pathNormalized: true,
  headers: { "content-length": "1024", "x-admin": "yes" },
};

const TARGETED = (namespace: string, target: string) => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: only-get, namespace: ${namespace} }
spec:
  targetRefs: [{ kind: ${target}, group: ${target === "Service" ? '""' : "gateway.networking.k8s.io"}, name: ${target === "Service" ? "api" : target === "Gateway" ? "waypoint" : "istio-waypoint"} }]
  rules: [{ to: [{ operation: { methods: ["GET"] } }] }]
`;

describe("evaluate with no policy that can apply", () => {
  it("allows without reading the HTTP attributes when the engine holds no policy", () => {
    const counts: string[] = [];
    const metrics: MetricsSink = {
      counter: () => ({ inc: (labels?: MetricLabels) => counts.push(String(labels?.decision)) }),
      gauge: () => ({ set() {}, inc() {}, dec() {} }),
      histogram: () => ({ observe() {} }),
    };
    for (const options of [{}, { l7Attachment: "waypoint" }] as AuthorizationEngineOptions[]) {
      const e = createAuthorizationEngine({ ...options, metrics });
      const watched = watchedHttp({ ...GOOD_HTTP });
      const d = e.evaluate(viaWaypoint(watched.http));
      assert.deepEqual(d, {
        allowed: true,
        reason: "no ALLOW policy applies: allowed by default",
        layer: "L7",
      });
      assert.equal(watched.reads(), 0, "the request's HTTP attributes were read");
      assert.equal(e.evaluate(viaWaypoint(undefined)).layer, "L4");
    }
    assert.deepEqual(counts, ["allow", "allow", "allow", "allow"], "fast-path decisions are counted");
  });

  it("still denies a malformed connection, and checks everything when logging decisions", () => {
    const e = createAuthorizationEngine();
    for (const bad of [
      { source: { ip: "nope" }, destination: { ip: "10.0.0.1", port: 80 } },
      { source: { ip: "10.0.0.2", port: -1 }, destination: { ip: "10.0.0.1", port: 80 } },
      { source: { ip: "10.0.0.2", identity: 7 }, destination: { ip: "10.0.0.1", port: 80 } },
      { source: { ip: "10.0.0.2" }, destination: { ip: "10.0.0.1", port: 80, sni: 1 } },
      { source: { ip: "10.0.0.2" }, destination: { ip: "::1::", port: 80 } },
      { source: { ip: "10.0.0.2" } },
    ]) {
      const d = e.evaluate(bad as unknown as AuthorizationRequest);
      assert.equal(d.allowed, false, JSON.stringify(bad));
      assert.equal(d.error?.code, "ERR_REQUEST_INVALID", JSON.stringify(bad));
    }
    const logged = createAuthorizationEngine({ logDecisions: true });
    const watched = watchedHttp({ ...GOOD_HTTP });
    assert.equal(logged.evaluate(viaWaypoint(watched.http)).allowed, true);
    assert.ok(watched.reads() > 0, "logDecisions takes the checked path");
    const badMethod = logged.evaluate(viaWaypoint({ ...GOOD_HTTP, method: "get" }));
    assert.equal(badMethod.badRequest, true);
  });

  it("re-evaluating open connections checks every field, policy or not", () => {
    const e = createAuthorizationEngine();
    const open = {
      request: viaWaypoint({ ...GOOD_HTTP, path: 42 } as unknown as AuthorizationRequest["http"]),
    };
    const denied = e.reevaluate([open]);
    assert.equal(denied.length, 1);
    assert.equal(denied[0]?.decision.error?.code, "ERR_REQUEST_INVALID");
  });

  it("a waypoint engine reads the request only when a targeted policy could apply to its namespaces", () => {
    const e = createAuthorizationEngine({ l7Attachment: "waypoint" });
    // A targeted policy elsewhere, and namespace-wide and selector policies here: none is the waypoint's.
    const { errors } = e.applyYaml(`${TARGETED("other", "Gateway")}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ns-wide, namespace: bench }
spec: { action: DENY, rules: [{}] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: selected, namespace: bench }
spec: { selector: { matchLabels: { app: api } }, action: DENY, rules: [{}] }
`);
    assert.deepEqual(errors, []);
    const quiet = watchedHttp({ ...GOOD_HTTP });
    assert.equal(e.evaluate(viaWaypoint(quiet.http)).allowed, true);
    assert.equal(quiet.reads(), 0);
    // The same engine decides a request whose targets are in "other" on checked values.
    const other = watchedHttp({ ...GOOD_HTTP });
    const d = e.evaluate(viaWaypoint(other.http, "other"));
    assert.equal(d.allowed, false);
    assert.match(d.reason, /allow policies exist, but none allowed \(checked: other\/only-get\)/);
    assert.ok(other.reads() > 0);
    // Malformed targets are never taken as "no policy": the checked path refuses them.
    const malformed = {
      ...viaWaypoint({ ...GOOD_HTTP }),
      destination: { ip: "127.78.0.100", port: 80, targets: [1] },
    };
    assert.equal(e.evaluate(malformed as unknown as AuthorizationRequest).error?.code, "ERR_REQUEST_INVALID");

    for (const [namespace, target] of [
      ["bench", "Gateway"],
      ["bench", "Service"],
      ["istio-system", "GatewayClass"],
    ] as const) {
      const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });
      assert.deepEqual(engine.applyYaml(TARGETED(namespace, target)).errors, []);
      const watched = watchedHttp({ ...GOOD_HTTP });
      const decision = engine.evaluate(viaWaypoint(watched.http));
      assert.ok(watched.reads() > 0, `${namespace} ${target}: the request was not checked`);
      assert.equal(decision.allowed, target === "GatewayClass", `${namespace} ${target}`);
      assert.equal(
        engine.evaluate(viaWaypoint({ ...GOOD_HTTP, method: "get" })).badRequest,
        true,
        `${namespace} ${target}: a bad method is a 400 once a policy could apply`,
      );
      // Removing the policy brings the fast path back.
      assert.equal(engine.delete("AuthorizationPolicy", namespace, "only-get"), true);
      const after = watchedHttp({ ...GOOD_HTTP });
      assert.equal(engine.evaluate(viaWaypoint(after.http)).allowed, true);
      assert.equal(after.reads(), 0, `${namespace} ${target}: not back on the fast path`);
    }
  });

  it("decides every well-formed request as the checked path does", () => {
    const namespaces = ["bench", "other", "istio-system"];
    const policies = fc.subarray([
      TARGETED("bench", "Gateway"),
      TARGETED("other", "Service"),
      TARGETED("istio-system", "GatewayClass"),
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: bench }
spec:
  targetRefs: [{ kind: Service, group: "", name: api }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin*"] } }] }]
`,
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ns-wide, namespace: bench }
spec: { action: DENY, rules: [{ to: [{ operation: { methods: ["DELETE"] } }] }] }
`,
    ]);
    const request = fc.record({
      namespace: fc.constantFrom(...namespaces),
      method: fc.constantFrom("GET", "POST", "DELETE"),
      path: fc.constantFrom("/api/echo", "/admin/x", "/"),
      l4: fc.boolean(),
      noTargets: fc.boolean(),
    });
    fc.assert(
      fc.property(
        policies,
        fc.constantFrom<AuthorizationEngineOptions["l7Attachment"]>("workload", "waypoint"),
        fc.array(request, { minLength: 1, maxLength: 8 }),
        (yamls, l7Attachment, requests) => {
          const fast = createAuthorizationEngine({ l7Attachment });
          const checked = createAuthorizationEngine({ l7Attachment, logDecisions: true });
          for (const engine of [fast, checked]) {
            if (yamls.length > 0) assert.deepEqual(engine.applyYaml(yamls.join("---\n")).errors, []);
          }
          for (const r of requests) {
            const base = viaWaypoint(
              r.l4 ? undefined : { ...GOOD_HTTP, method: r.method, path: r.path },
              r.namespace,
            );
            const req: AuthorizationRequest = r.noTargets
              ? { ...base, destination: { ip: base.destination.ip, port: base.destination.port } }
              : base;
            assert.deepEqual(fast.evaluate(req), checked.evaluate(req));
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
