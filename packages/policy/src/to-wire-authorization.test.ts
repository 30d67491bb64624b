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

  it("refuses dry-run policies by default, as istiod does, and marks them when dry-run is enabled", () => {
    // Off by default: a ztunnel older than 1.29 would enforce a dry-run policy it was sent.
    const byDefault = toWireAuthorization(
      policy({ action: "DENY", rules: [{}] }, "foo", { "istio.io/dry-run": "true" }),
    );
    assert.equal(byDefault.authorization, undefined);
    assert.equal(byDefault.skipped, "dry-run-disabled");
    assert.equal(
      byDefault.warning?.message,
      'found policy "foo/p" using dry-run annotation, but support for ambient dry-run authorizationPolicies isn\'t enabled',
    );
    const off = toWireAuthorization(policy({}, "foo", { "istio.io/dry-run": "1" }), { enableDryRun: false });
    assert.equal(off.skipped, "dry-run-disabled");
    assert.match(off.warning?.message ?? "", /dry-run annotation/);
    const on = { enableDryRun: true };
    assert.equal(
      toWireAuthorization(policy({}, "foo", { "istio.io/dry-run": "true" }), on).authorization?.dryRun,
      true,
    );
    // Not dry-run (an unparsable value counts as false): sent and enforced whatever the option.
    for (const options of [{}, on]) {
      const r = toWireAuthorization(policy({}, "foo", { "istio.io/dry-run": "nope" }), options);
      assert.equal(r.skipped, undefined);
      assert.equal(r.authorization?.dryRun, undefined);
    }
  });

  it("keeps ALLOW rules that use trustDomains and ignores the field, as istiod does", () => {
    const r = toWireAuthorization(
      policy({
        rules: [
          {
            from: [
              { source: { principals: ["cluster.local/ns/demo/sa/a"], trustDomains: ["cluster.local"] } },
              { source: { namespaces: ["b"], notTrustDomains: ["evil.example"] } },
            ],
            to: [{ operation: { ports: ["8080"] } }],
          },
        ],
      }),
    );
    assert.deepEqual(r.ruleIndexes, [0]);
    assert.deepEqual(r.authorization?.groups, [
      {
        rules: [
          { matches: [m({ destinationPorts: [8080] })] },
          {
            matches: [
              m({ principals: [{ exact: "cluster.local/ns/demo/sa/a" }] }),
              m({ namespaces: [{ exact: "b" }] }),
            ],
          },
        ],
      },
    ]);
    assert.deepEqual(r.warning?.fields, []);
    assert.equal(
      r.warning?.message,
      "ztunnel does not match trust domains (found: notTrustDomains, trustDomains): they are ignored, and each source is matched on its other fields (a source with nothing else matches no caller).",
    );
    // A source with only a trust domain is an empty match: that ALLOW rule matches no caller.
    const only = toWireAuthorization(policy({ rules: [{ from: [{ source: { trustDomains: ["td"] } }] }] }));
    assert.deepEqual(only.authorization?.groups, [{ rules: [{ matches: [m({})] }] }]);
  });

  it("ignores trustDomains in DENY rules too, never narrowing what the rest denies, and says when nothing is left", () => {
    const wider = toWireAuthorization(
      policy({
        action: "DENY",
        rules: [{ from: [{ source: { namespaces: ["b"], trustDomains: ["td"] } }] }],
      }),
    );
    // Every caller from namespace b is denied, whatever its trust domain: more than was asked.
    assert.deepEqual(wider.authorization?.groups, [
      { rules: [{ matches: [m({ namespaces: [{ exact: "b" }] })] }] },
    ]);
    assert.match(
      wider.warning?.message ?? "",
      /^ztunnel does not match trust domains \(found: trustDomains\)/,
    );
    const none = toWireAuthorization(
      policy({ action: "DENY", rules: [{ from: [{ source: { notTrustDomains: ["td"] } }] }] }),
    );
    assert.deepEqual(none.authorization?.groups, [{ rules: [{ matches: [m({})] }] }]);
    assert.match(
      none.warning?.message ?? "",
      /This DENY policy has no enforceable rules at ztunnel and will have no effect/,
    );
    // With HTTP attributes as well: istiod's message first, then the trust domains.
    const both = toWireAuthorization(
      policy({
        action: "DENY",
        rules: [
          { from: [{ source: { namespaces: ["b"], trustDomains: ["td"], requestPrincipals: ["*"] } }] },
        ],
      }),
    );
    assert.deepEqual(both.warning?.fields, ["requestPrincipals"]);
    assert.match(
      both.warning?.message ?? "",
      /^ztunnel does not support HTTP attributes \(found: requestPrincipals\)\. .* This will be more restrictive than requested\. ztunnel does not match trust domains \(found: trustDomains\)/,
    );
  });
});
