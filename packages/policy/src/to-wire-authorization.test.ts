import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AuthorizationPolicy, AuthorizationPolicySpec } from "./kubernetes-types.js";
import { toWireAuthorization } from "./to-wire-authorization.js";
import { emptyWireMatch, type WireMatch } from "./wire.js";

function policy(
  spec: AuthorizationPolicySpec,
  namespace = "foo",
  annotations?: Record<string, string>,
): AuthorizationPolicy {
  return {
    apiVersion: "security.istio.io/v1",
    kind: "AuthorizationPolicy",
    metadata: { name: "p", namespace, ...(annotations ? { annotations } : {}) },
    spec,
  };
}
const m = (fields: Partial<WireMatch>): WireMatch => ({ ...emptyWireMatch(), ...fields });

describe("toWireAuthorization", () => {
  it("picks the scope like istiod", () => {
    assert.equal(toWireAuthorization(policy({})).authorization?.scope, "NAMESPACE");
    assert.equal(toWireAuthorization(policy({}, "istio-system")).authorization?.scope, "GLOBAL");
    assert.equal(
      toWireAuthorization(policy({}, "mesh-root"), { rootNamespace: "mesh-root" }).authorization?.scope,
      "GLOBAL",
    );
    assert.equal(
      toWireAuthorization(policy({ selector: { matchLabels: { a: "b" } } }, "istio-system")).authorization
        ?.scope,
      "WORKLOAD_SELECTOR",
    );
  });

  it("does not send targetRefs policies and refuses AUDIT/CUSTOM", () => {
    const t = toWireAuthorization(
      policy({ targetRefs: [{ kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint" }] }),
    );
    assert.deepEqual(t, { skipped: "targetRefs" });
    for (const action of ["AUDIT", "CUSTOM"] as const) {
      const r = toWireAuthorization(policy({ action, rules: [{}] }));
      assert.equal(r.authorization, undefined);
      assert.equal(r.warning?.message, `ztunnel does not support the ${action} action`);
    }
  });

  it("keeps empty policies and empty rules apart", () => {
    assert.deepEqual(toWireAuthorization(policy({})).authorization?.groups, []);
    assert.deepEqual(toWireAuthorization(policy({ rules: [{}] })).authorization?.groups, [{ rules: [] }]);
  });

  it("converts sources, operations and L4 conditions with Istio's wildcards", () => {
    const r = toWireAuthorization(
      policy({
        rules: [
          {
            from: [
              {
                source: {
                  principals: ["*", "*/sa/a", "cluster.local/*", "x"],
                  notNamespaces: ["kube-system"],
                  ipBlocks: ["10.0.0.1/8"],
                },
              },
              { source: { serviceAccounts: ["other/sa1", "sa2"] } },
            ],
            to: [{ operation: { ports: ["80", "8080"], notPorts: ["9090"] } }],
            when: [
              { key: "destination.ip", values: ["2001:db8::/32"] },
              { key: "source.namespace", notValues: ["x*"] },
            ],
          },
        ],
      }),
    );
    assert.equal(r.warning, undefined);
    assert.deepEqual(r.ruleIndexes, [0]);
    const clauses = r.authorization?.groups[0]?.rules;
    assert.equal(clauses?.length, 4);
    assert.deepEqual(clauses?.[0], {
      matches: [m({ destinationPorts: [80, 8080], notDestinationPorts: [9090] })],
    });
    assert.deepEqual(clauses?.[1]?.matches[0]?.principals, [
      { presence: {} },
      { suffix: "/sa/a" },
      { prefix: "cluster.local/" },
      { exact: "x" },
    ]);
    assert.deepEqual(clauses?.[1]?.matches[0]?.notNamespaces, [{ exact: "kube-system" }]);
    const addr = clauses?.[1]?.matches[0]?.sourceIps[0];
    assert.deepEqual(addr && [...addr.address], [10, 0, 0, 1]);
    assert.equal(addr?.length, 8);
    assert.deepEqual(clauses?.[1]?.matches[1]?.serviceAccounts, [
      { namespace: "other", serviceAccount: "sa1" },
      { namespace: "foo", serviceAccount: "sa2" },
    ]);
    assert.equal(clauses?.[2]?.matches[0]?.destinationIps[0]?.address.length, 16);
    assert.deepEqual(clauses?.[3], { matches: [m({ notNamespaces: [{ prefix: "x" }] })] });
    // Only proto field names: an encoder must not drop anything.
    assert.ok(!JSON.stringify(r.authorization).includes("clauses"));
  });

  it("drops ALLOW rules with HTTP attributes (deny-more) with a warning", () => {
    const r = toWireAuthorization(
      policy({
        rules: [
          { to: [{ operation: { methods: ["GET"], ports: ["80"] } }] },
          { from: [{ source: { namespaces: ["a"] } }] },
          {
            from: [{ source: { requestPrincipals: ["*"] } }],
            when: [{ key: "request.headers[x]", values: ["y"] }],
          },
        ],
      }),
    );
    assert.equal(r.authorization?.groups.length, 1);
    assert.deepEqual(r.ruleIndexes, [1]);
    assert.deepEqual(r.warning?.fields, ["methods", "request.headers[x]", "requestPrincipals"]);
    assert.equal(
      r.warning?.message,
      "ztunnel does not support HTTP attributes (found: methods, request.headers[x], requestPrincipals). In ambient mode you must use a waypoint proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.",
    );
  });

  it("ignores HTTP attributes in DENY rules, and says when nothing is left", () => {
    const mixed = toWireAuthorization(
      policy({ action: "DENY", rules: [{ to: [{ operation: { paths: ["/admin"], ports: ["8080"] } }] }] }),
    );
    assert.deepEqual(mixed.authorization?.groups[0]?.rules, [{ matches: [m({ destinationPorts: [8080] })] }]);
    assert.match(mixed.warning?.message ?? "", /enforced without the HTTP rules/);
    const none = toWireAuthorization(
      policy({ action: "DENY", rules: [{ to: [{ operation: { paths: ["/admin"] } }] }] }),
    );
    assert.deepEqual(none.authorization?.groups[0]?.rules, [{ matches: [m({})] }]);
    assert.match(none.warning?.message ?? "", /has no enforceable rules at ztunnel and will have no effect/);
  });

  it("marks dry-run policies, or refuses them when dry-run is disabled", () => {
    assert.equal(
      toWireAuthorization(policy({}, "foo", { "istio.io/dry-run": "true" })).authorization?.dryRun,
      true,
    );
    assert.equal(
      toWireAuthorization(policy({}, "foo", { "istio.io/dry-run": "nope" })).authorization?.dryRun,
      undefined,
    );
    const off = toWireAuthorization(policy({}, "foo", { "istio.io/dry-run": "1" }), { enableDryRun: false });
    assert.equal(off.skipped, "dry-run-disabled");
    assert.match(off.warning?.message ?? "", /dry-run annotation/);
  });
});
