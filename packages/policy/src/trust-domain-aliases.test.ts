import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type AuthorizationRequest, createAuthorizationEngine } from "./authorization-engine.js";
import { toWireAuthorization } from "./to-wire-authorization.js";
import { withTrustDomainAliases } from "./trust-domain-aliases.js";
import { validateAuthorizationPolicy } from "./validate-resource.js";

describe("withTrustDomainAliases", () => {
  // A mesh moved from td1 to td2: trustDomain td2, trustDomainAliases [td1].
  const bundle = ["td2", "td1"];
  const table: [string, string[], readonly string[], string[]][] = [
    [
      "cluster.local stands for the mesh's own trust domains",
      ["cluster.local/ns/foo/sa/bar"],
      bundle,
      ["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"],
    ],
    [
      "an alias stands for every trust domain of the mesh",
      ["td1/ns/foo/sa/bar"],
      bundle,
      ["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"],
    ],
    [
      "so does the trust domain itself",
      ["td2/ns/foo/sa/bar"],
      bundle,
      ["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"],
    ],
    ["another mesh's trust domain is kept", ["other/ns/foo/sa/bar"], bundle, ["other/ns/foo/sa/bar"]],
    ["any trust domain (*) is kept", ["*/ns/foo/sa/bar"], bundle, ["*/ns/foo/sa/bar"]],
    [
      "not <td>/ns/<ns>/sa/<sa> is kept",
      ["foo/sa/bar", "*", "spiffe://td1/ns/foo/sa/bar"],
      bundle,
      ["foo/sa/bar", "*", "spiffe://td1/ns/foo/sa/bar"],
    ],
    [
      "a suffix pattern matching every trust domain is kept once",
      ["*-td/ns/foo/sa/bar"],
      ["new-td", "old-td"],
      ["*-td/ns/foo/sa/bar"],
    ],
    [
      "a suffix pattern is kept where it matches, replaced where not",
      ["*-td/ns/foo/sa/bar"],
      ["new-td", "legacy"],
      ["*-td/ns/foo/sa/bar", "legacy/ns/foo/sa/bar"],
    ],
    ["a prefix pattern of the bundle is replaced", ["td*/ns/foo/sa/bar"], ["td1"], ["td1/ns/foo/sa/bar"]],
    [
      "patterns in the account are kept",
      ["cluster.local/ns/foo/sa/*"],
      ["example.org"],
      ["example.org/ns/foo/sa/*"],
    ],
    [
      "Istio's default bundle changes nothing",
      ["cluster.local/ns/a/sa/b", "x/ns/a/sa/b"],
      ["cluster.local"],
      ["cluster.local/ns/a/sa/b", "x/ns/a/sa/b"],
    ],
    [
      "nothing is repeated",
      ["cluster.local/ns/a/sa/b", "td1/ns/a/sa/b"],
      bundle,
      ["td2/ns/a/sa/b", "td1/ns/a/sa/b"],
    ],
  ];
  for (const [name, principals, trustDomains, want] of table) {
    it(name, () => assert.deepEqual(withTrustDomainAliases(principals, trustDomains), want));
  }
});

describe("an L7 engine in the trust domain example.org", () => {
  const CLIENT = "spiffe://example.org/ns/shop/sa/client";
  const EVIL = "spiffe://example.org/ns/shop/sa/evil";
  const WAYPOINT = {
    kind: "Gateway",
    group: "gateway.networking.k8s.io",
    name: "waypoint",
    namespace: "shop",
  };
  const request = (identity: string, method = "GET"): AuthorizationRequest => ({
    source: { ip: "10.0.0.9", identity },
    destination: { ip: "10.96.0.40", port: 80, targets: [WAYPOINT] },
    http: { host: "api.shop", method, path: "/", headers: {} },
  });
  const policies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-evil, namespace: shop }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/evil"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: client-reads, namespace: shop }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/shop/sa/client", "cluster.local/ns/shop/sa/evil"] } }]
    to: [{ operation: { methods: ["GET"] } }]
  - when: [{ key: source.principal, values: ["cluster.local/ns/shop/sa/auditor"] }]
`;
  const engine = (trustDomains?: string[]) => {
    const e = createAuthorizationEngine({
      l7Attachment: "waypoint",
      ...(trustDomains === undefined ? {} : { trustDomains }),
    });
    assert.deepEqual(e.applyYaml(policies).errors, []);
    return e;
  };

  it("reads cluster.local in principals as its own trust domain, in ALLOW and DENY, rules and conditions", () => {
    const e = engine(["example.org"]);
    assert.equal(e.evaluate(request(CLIENT)).allowed, true);
    assert.equal(e.evaluate(request(CLIENT, "POST")).allowed, false);
    // The DENY names the same account as written in the documentation's form: it holds.
    assert.equal(e.evaluate(request(EVIL)).allowed, false);
    assert.equal(e.evaluate(request("spiffe://example.org/ns/shop/sa/auditor", "DELETE")).allowed, true);
    // An identity of another mesh is no account of this one.
    assert.equal(e.evaluate(request("spiffe://cluster.local/ns/shop/sa/client")).allowed, false);
  });

  it("matches principals as written without a trust domain: the DENY then misses the account", () => {
    const e = engine();
    assert.equal(e.evaluate(request(CLIENT)).allowed, false);
    assert.equal(e.evaluate(request(EVIL)).allowed, false, "no ALLOW rule matches it either");
    assert.equal(e.evaluate(request(EVIL)).policy, undefined, "allowed by none, denied by no DENY");
  });

  it("keeps a ztunnel's wire Authorization as written, as istiod sends it", () => {
    const { resource } = validateAuthorizationPolicy({
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: "l4", namespace: "shop" },
      spec: { rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }] }] },
    });
    const wire = toWireAuthorization(resource).authorization;
    assert.deepEqual(
      JSON.stringify(wire?.groups[0]?.rules[0]?.matches[0]?.principals),
      JSON.stringify([{ exact: "cluster.local/ns/shop/sa/client" }]),
    );
  });

  it("refuses a trust domain list that is not one", () => {
    for (const trustDomains of [[""], ["a/b"], "example.org"]) {
      assert.throws(
        () => createAuthorizationEngine({ trustDomains: trustDomains as string[] }),
        (err: unknown) => (err as { code?: string }).code === "ERR_POLICY_INVALID",
      );
    }
  });
});

describe("trust domains in L7 rules, as istiod writes them for Envoy", () => {
  const WAYPOINT = {
    kind: "Gateway",
    group: "gateway.networking.k8s.io",
    name: "waypoint",
    namespace: "shop",
  };
  const request = (identity: string | undefined): AuthorizationRequest => ({
    source: identity === undefined ? { ip: "10.0.0.9" } : { ip: "10.0.0.9", identity },
    destination: { ip: "10.96.0.40", port: 80, targets: [WAYPOINT] },
    http: { host: "api.shop", method: "GET", path: "/", headers: {} },
  });
  const allowOnly = (rule: string, trustDomains?: string[]) => {
    const e = createAuthorizationEngine({
      l7Attachment: "waypoint",
      ...(trustDomains === undefined ? {} : { trustDomains }),
    });
    const r = e.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: shop }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  rules: [${rule}]`);
    assert.deepEqual(r.errors, []);
    return (identity: string | undefined) => e.evaluate(request(identity)).allowed;
  };
  const id = (td: string) => `spiffe://${td}/ns/shop/sa/client`;

  it("matches trustDomains exactly, * as any identity, and one * at the start or the end", () => {
    const cases: [string, (string | undefined)[], (string | undefined)[]][] = [
      ["example.org", [id("example.org")], [id("example.com"), id("sub.example.org"), undefined]],
      ["*", [id("example.org"), id("cluster.local")], [undefined]],
      [
        "*.example.org",
        [id("a.example.org"), id("b.c.example.org")],
        [id("example.org"), id("a.example.com")],
      ],
      ["example*", [id("example.org"), id("example")], [id("sub.example.org")]],
    ];
    for (const [pattern, allowed, denied] of cases) {
      const check = allowOnly(`{ from: [{ source: { trustDomains: ["${pattern}"] } }] }`);
      for (const i of allowed) assert.equal(check(i), true, `${pattern} allows ${i}`);
      for (const i of denied) assert.equal(check(i), false, `${pattern} denies ${i}`);
    }
    const not = allowOnly(`{ from: [{ source: { notTrustDomains: ["*.internal"] } }] }`);
    assert.equal(not(id("example.org")), true);
    assert.equal(not(id("mesh.internal")), false);
  });

  it("takes the source.trustDomain condition, with the same wildcards and the mesh's aliases", () => {
    const check = allowOnly(`{ when: [{ key: source.trustDomain, values: ["old.org"] }] }`, [
      "example.org",
      "old.org",
    ]);
    assert.equal(check(id("old.org")), true);
    assert.equal(check(id("example.org")), true, "an alias names every trust domain of the mesh");
    assert.equal(check(id("other.org")), false);
    const wildcard = allowOnly(`{ when: [{ key: source.trustDomain, notValues: ["*.test"] }] }`);
    assert.equal(wildcard(id("example.org")), true);
    assert.equal(wildcard(id("mesh.test")), false);
  });

  it("refuses wildcards istiod refuses, a / in trustDomains, and source.trustDomain with CUSTOM", () => {
    const errorsOf = (yaml: string) =>
      createAuthorizationEngine()
        .applyYaml(yaml)
        .errors.map((e) => e.message);
    const policy = (action: string, rule: string) => `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: shop }
spec:
  action: ${action}
  ${action === "CUSTOM" ? "provider: { name: ext }\n  " : ""}rules: [${rule}]`;
    for (const [rule, message] of [
      [`{ from: [{ source: { trustDomains: ["a*b"] } }] }`, /only allowed at the start or end/],
      [`{ from: [{ source: { trustDomains: ["*a*"] } }] }`, /at most one wildcard/],
      [`{ from: [{ source: { notTrustDomains: ["a/b"] } }] }`, /must not contain '\/'/],
      [`{ when: [{ key: source.trustDomain, values: ["x*y"] }] }`, /only allowed at the start or end/],
    ] as const) {
      assert.match(errorsOf(policy("ALLOW", rule)).join("; "), message, rule);
    }
    assert.match(
      errorsOf(policy("CUSTOM", `{ when: [{ key: source.trustDomain, values: ["a"] }] }`)).join("; "),
      /source.trustDomain is not supported with the CUSTOM action/,
    );
  });
});
