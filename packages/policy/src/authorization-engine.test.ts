import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type AuthorizationRequest, createAuthorizationEngine } from "./authorization-engine.js";
import { PolicyError } from "./errors.js";
import type { Logger, MetricLabels, MetricsSink } from "./telemetry.js";
import { emptyWireMatch } from "./wire.js";

const SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep";

function conn(
  identity: string | undefined,
  port = 8080,
  extra: Partial<AuthorizationRequest["destination"]> = {},
  srcIp = "10.0.0.1",
): AuthorizationRequest {
  return {
    source: identity === undefined ? { ip: srcIp } : { ip: srcIp, identity },
    destination: {
      ip: "10.0.0.2",
      port,
      workload: { namespace: "foo", labels: { app: "httpbin" } },
      ...extra,
    },
  };
}

function ap(name: string, spec: string, namespace = "foo", annotations = ""): string {
  return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: ${namespace}
${annotations}
spec:
${spec
  .split("\n")
  .map((l) => `  ${l}`)
  .join("\n")}
---
`;
}

describe("AuthorizationEngine (L4, ztunnel rules)", () => {
  it("allows everything with no policies", () => {
    const d = createAuthorizationEngine().evaluate(conn(undefined));
    assert.equal(d.allowed, true);
    assert.equal(d.reason, "no ALLOW policy applies: allowed by default");
    assert.equal(d.layer, "L4");
  });

  it("denies first, then allows by ALLOW match, else denies", () => {
    const e = createAuthorizationEngine();
    const r = e.applyYaml(
      ap("deny-9090", "action: DENY\nrules:\n- to: [{ operation: { ports: ['9090'] } }]") +
        ap("allow-sleep", "rules:\n- from: [{ source: { principals: ['cluster.local/ns/foo/sa/sleep'] } }]"),
    );
    assert.deepEqual(r.errors, []);
    assert.equal(e.evaluate(conn(SLEEP)).allowed, true);
    const denied = e.evaluate(conn(SLEEP, 9090));
    assert.deepEqual(
      [denied.allowed, denied.policy, denied.action, denied.rule],
      [false, "foo/deny-9090", "DENY", 0],
    );
    assert.equal(denied.reason, "explicitly denied by: foo/deny-9090 (rule 0)");
    const other = e.evaluate(conn("spiffe://cluster.local/ns/foo/sa/other"));
    assert.equal(other.allowed, false);
    assert.equal(other.reason, "allow policies exist, but none allowed (checked: foo/allow-sleep)");
  });

  it("treats spec: {} as allow-nothing and rules: [{}] as allow-all", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(ap("nothing", "{}"));
    assert.equal(e.evaluate(conn(SLEEP)).allowed, false);
    e.applyYaml(ap("all", "rules: [{}]"));
    assert.equal(e.evaluate(conn(SLEEP)).policy, "foo/all");
    assert.equal(e.evaluate(conn(undefined)).allowed, true);
  });

  it("applies only policies of the destination's namespace, GLOBAL ones and the selecting ones", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(
      ap("other-ns", "{}", "bar") +
        ap("selects-web", "selector: { matchLabels: { app: web } }\nrules: [{}]") +
        ap(
          "mesh-deny-plaintext",
          "action: DENY\nrules:\n- from: [{ source: { notPrincipals: ['*'] } }]",
          "istio-system",
        ),
    );
    assert.equal(e.evaluate(conn(SLEEP)).allowed, true, "no ALLOW applies to httpbin");
    assert.equal(
      e.evaluate(conn(SLEEP, 80, { workload: { namespace: "foo", labels: { app: "web" } } })).policy,
      "foo/selects-web",
    );
    const plaintext = e.evaluate(conn(undefined));
    assert.deepEqual([plaintext.allowed, plaintext.policy], [false, "istio-system/mesh-deny-plaintext"]);
    assert.equal(e.evaluate(conn(SLEEP, 80, { workload: { namespace: "bar" } })).allowed, false);
  });

  it("uses the workload's policy list from WDS when given", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(ap("sel", "selector: { matchLabels: { app: web } }\naction: DENY\nrules: [{}]"));
    assert.equal(
      e.evaluate(
        conn(SLEEP, 80, {
          workload: { namespace: "foo", labels: { app: "web" }, authorizationPolicies: [] },
        }),
      ).allowed,
      true,
    );
    assert.equal(
      e.evaluate(
        conn(SLEEP, 80, {
          workload: { namespace: "foo", authorizationPolicies: ["foo/sel", "foo/missing"] },
        }),
      ).allowed,
      false,
    );
  });

  it("fails safe when an ALLOW policy holds only HTTP rules (no groups => deny-all)", () => {
    const e = createAuthorizationEngine();
    const r = e.applyYaml(ap("get-only", "rules:\n- to: [{ operation: { methods: ['GET'] } }]"));
    assert.match(
      String(
        r.applied[0]?.warnings[0] && "message" in r.applied[0].warnings[0]
          ? r.applied[0].warnings[0].message
          : "",
      ),
      /HTTP attributes/,
    );
    assert.equal(e.evaluate(conn(SLEEP)).allowed, false);
  });

  it("matches IPv4 and IPv6 CIDRs and notIpBlocks", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(
      ap(
        "ips",
        "rules:\n- from: [{ source: { ipBlocks: ['10.0.0.0/8', '2001:db8::/32'], notIpBlocks: ['10.9.0.0/16'] } }]",
      ),
    );
    assert.equal(e.evaluate(conn(undefined, 80, {}, "10.1.2.3")).allowed, true);
    assert.equal(e.evaluate(conn(undefined, 80, {}, "::ffff:10.1.2.3")).allowed, true);
    assert.equal(e.evaluate(conn(undefined, 80, {}, "10.9.2.3")).allowed, false);
    assert.equal(e.evaluate(conn(undefined, 80, {}, "2001:db8:1::5")).allowed, true);
    assert.equal(e.evaluate(conn(undefined, 80, {}, "2001:db9::5")).allowed, false);
    assert.equal(e.evaluate(conn(undefined, 80, {}, "192.168.0.1")).allowed, false);
  });

  it("matches namespaces and serviceAccounts from the identity, never on plaintext", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(
      ap("ns", "rules:\n- from: [{ source: { namespaces: ['foo', 'ba*'] } }]") +
        ap("sa", "rules:\n- from: [{ source: { serviceAccounts: ['ops/admin'] } }]", "bar"),
    );
    assert.equal(e.evaluate(conn(SLEEP)).allowed, true);
    assert.equal(e.evaluate(conn("spiffe://cluster.local/ns/bart/sa/x")).allowed, true);
    assert.equal(e.evaluate(conn("spiffe://cluster.local/ns/qux/sa/x")).allowed, false);
    assert.equal(e.evaluate(conn(undefined)).allowed, false);
    const bar = { workload: { namespace: "bar" } };
    assert.equal(e.evaluate(conn("spiffe://cluster.local/ns/ops/sa/admin", 80, bar)).allowed, true);
    assert.equal(
      e.evaluate(conn("spiffe://other.td/ns/ops/sa/admin", 80, bar)).allowed,
      true,
      "trust domain is not compared",
    );
    assert.equal(e.evaluate(conn("spiffe://cluster.local/ns/ops/sa/viewer", 80, bar)).allowed, false);
    assert.equal(e.evaluate(conn(undefined, 80, bar)).allowed, false);
  });

  it("reports dry-run policies without enforcing them", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(
      ap("dry-deny", "action: DENY\nrules: [{}]", "foo", "  annotations: { istio.io/dry-run: 'true' }"),
    );
    const d = e.evaluate(conn(SLEEP));
    assert.equal(d.allowed, true);
    assert.deepEqual(d.dryRun, ["foo/dry-deny: DENY rule 0 matched; would deny"]);
    assert.equal(d.dryRunAllowed, false);
    e.applyYaml(
      ap(
        "dry-allow",
        "rules:\n- from: [{ source: { principals: ['nobody'] } }]",
        "foo",
        "  annotations: { istio.io/dry-run: 'true' }",
      ),
    );
    e.delete("AuthorizationPolicy", "foo", "dry-deny");
    const d2 = e.evaluate(conn(SLEEP));
    assert.equal(d2.allowed, true);
    assert.deepEqual(d2.dryRun, ["foo/dry-allow: ALLOW policy matched no rule"]);
    assert.equal(d2.dryRunAllowed, false);
  });

  it("enforces PeerAuthentication STRICT with port-level exceptions", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec: { mtls: { mode: STRICT } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: legacy, namespace: foo }
spec:
  selector: { matchLabels: { app: legacy } }
  portLevelMtls: { "8080": { mode: PERMISSIVE } }
`);
    const plaintext = e.evaluate(conn(undefined, 80));
    assert.deepEqual(
      [plaintext.allowed, plaintext.policy],
      [false, "istio-system/istio_converted_static_strict"],
    );
    assert.equal(e.evaluate(conn(SLEEP, 80)).allowed, true);
    const legacy = { workload: { namespace: "foo", labels: { app: "legacy" } } };
    assert.equal(e.evaluate(conn(undefined, 8080, legacy)).allowed, true);
    const d = e.evaluate(conn(undefined, 9090, legacy));
    assert.deepEqual([d.allowed, d.policy], [false, "foo/converted_peer_authentication_legacy"]);
    assert.deepEqual(
      e
        .wireAuthorizations()
        .map((w) => `${w.namespace}/${w.name}`)
        .sort(),
      ["foo/converted_peer_authentication_legacy", "istio-system/istio_converted_static_strict"],
    );
    e.delete("PeerAuthentication", "istio-system", "default");
    assert.equal(e.evaluate(conn(undefined, 80)).allowed, true);
  });

  it("re-evaluates open connections after a change", () => {
    const e = createAuthorizationEngine();
    const open = [
      { id: "a", request: conn(SLEEP) },
      { id: "b", request: conn(undefined) },
      { id: "c", request: conn(undefined, 80, { workload: { namespace: "bar" } }) },
    ];
    const before = e.version;
    assert.deepEqual(e.reevaluate(open), []);
    e.applyYaml(
      ap("allow-sleep", "rules:\n- from: [{ source: { principals: ['cluster.local/ns/foo/sa/sleep'] } }]"),
    );
    const denied = e.reevaluate(open, { since: before });
    assert.deepEqual(
      denied.map((d) => d.connection.id),
      ["b"],
    );
    assert.match(denied[0]?.decision.reason ?? "", /none allowed/);
    const v = e.version;
    assert.deepEqual(e.reevaluate(open, { since: v }), [], "nothing changed since v");
    e.applyYaml(ap("deny-all", "action: DENY\nrules: [{}]", "istio-system"));
    assert.deepEqual(
      e.reevaluate(open, { since: v }).map((d) => d.connection.id),
      ["a", "b", "c"],
    );
  });

  it("accepts wire policies in the wire (istiod) shape and in the four-level clauses form", () => {
    const e = createAuthorizationEngine();
    e.setAuthorization({
      name: "deny-plain",
      namespace: "foo",
      scope: "NAMESPACE",
      action: "DENY",
      groups: [{ rules: [{ matches: [{ ...emptyWireMatch(), notPrincipals: [{ presence: {} }] }] }] }],
    });
    assert.equal(e.evaluate(conn(undefined)).allowed, false);
    assert.equal(e.evaluate(conn(SLEEP)).allowed, true);
    e.setAuthorization({
      name: "port",
      namespace: "istio-system",
      scope: "GLOBAL",
      action: "DENY",
      groups: [
        {
          rules: [{ matches: [], clauses: [{ matches: [{ ...emptyWireMatch(), destinationPorts: [22] }] }] }],
        },
      ],
    });
    assert.equal(e.evaluate(conn(SLEEP, 22)).policy, "istio-system/port");
    assert.throws(
      () =>
        e.setAuthorization({
          name: "x",
          namespace: "y",
          scope: "GLOBAL",
          action: "AUDIT" as "DENY",
          groups: [],
        }),
      (err: unknown) => err instanceof PolicyError && err.code === "ERR_WIRE_INVALID",
    );
  });

  it("explains why nothing matched", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(
      ap(
        "allow-sleep",
        "rules:\n- from: [{ source: { principals: ['cluster.local/ns/foo/sa/sleep'] } }]\n  to: [{ operation: { ports: ['80'] } }]",
      ),
    );
    const x = e.explain(conn(SLEEP, 8080));
    assert.deepEqual(x, [
      {
        policy: "foo/allow-sleep",
        action: "ALLOW",
        dryRun: false,
        rules: ["destinationPorts: 8080 is not in [80]"],
      },
    ]);
    assert.deepEqual(e.explain(conn(undefined, 80))[0]?.rules, [
      "principals: no identity is not in [cluster.local/ns/foo/sa/sleep]",
    ]);
    e.applyYaml(
      ap(
        "mixed",
        "rules:\n- to: [{ operation: { methods: ['GET'] } }]\n- to: [{ operation: { ports: ['443'] } }]",
      ),
    );
    assert.deepEqual(e.explain(conn(SLEEP, 8080))[1]?.rules, [
      "dropped at L4: the rule uses HTTP attributes (it never matches at ztunnel)",
      "destinationPorts: 8080 is not in [443]",
    ]);
  });

  it("denies malformed requests with a typed error instead of throwing", () => {
    const d = createAuthorizationEngine().evaluate({
      source: { ip: "nope" },
      destination: { ip: "10.0.0.1", port: 80 },
    });
    assert.equal(d.allowed, false);
    assert.equal(d.error?.code, "ERR_REQUEST_INVALID");
    assert.equal(
      createAuthorizationEngine().evaluate({
        source: { ip: "1.1.1.1" },
        destination: { ip: "10.0.0.1", port: 70000 },
      }).error?.code,
      "ERR_REQUEST_INVALID",
    );
  });

  it("rejects an invalid policy without disturbing the others", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(
      ap("allow-sleep", "rules:\n- from: [{ source: { principals: ['cluster.local/ns/foo/sa/sleep'] } }]"),
    );
    assert.throws(
      () =>
        e.apply({
          kind: "AuthorizationPolicy",
          apiVersion: "security.istio.io/v1",
          metadata: { name: "allow-sleep", namespace: "foo" },
          spec: { rules: "x" },
        }),
      PolicyError,
    );
    assert.equal(e.evaluate(conn(SLEEP)).allowed, true);
    assert.equal(e.size, 1);
  });

  it("logs decisions and counts them when asked", () => {
    const lines: string[] = [];
    const counts: string[] = [];
    const logger: Logger = {
      debug() {},
      info: (_o, msg) => lines.push(msg ?? ""),
      warn: (_o, msg) => lines.push(`warn ${msg}`),
      error() {},
    };
    const metrics: MetricsSink = {
      counter: () => ({ inc: (labels?: MetricLabels) => counts.push(String(labels?.decision)) }),
      gauge: () => ({ set() {}, inc() {}, dec() {} }),
      histogram: () => ({ observe() {} }),
    };
    const e = createAuthorizationEngine({ logDecisions: true, logger, metrics });
    e.applyYaml(ap("d", "action: DENY\nrules: [{}]"));
    e.evaluate(conn(SLEEP));
    assert.deepEqual(lines, ["explicitly denied by: foo/d (rule 0)"]);
    assert.deepEqual(counts, ["deny"]);
  });
});
