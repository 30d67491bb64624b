import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type AuthorizationEngineOptions,
  type AuthorizationRequest,
  createAuthorizationEngine,
} from "./authorization-engine.js";
import { normalizeRequestPath } from "./path-match.js";

const SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep";

function req(
  http: Partial<NonNullable<AuthorizationRequest["http"]>> = {},
  identity: string | undefined = SLEEP,
): AuthorizationRequest {
  return {
    source: identity === undefined ? { ip: "10.0.0.1" } : { ip: "10.0.0.1", identity },
    destination: { ip: "10.0.0.2", port: 8000, workload: { namespace: "foo", labels: { app: "httpbin" } } },
    http: { host: "httpbin.foo.svc", method: "GET", path: "/", headers: {}, ...http },
  };
}

function engineWith(rulesYaml: string, action = "ALLOW", options: AuthorizationEngineOptions = {}) {
  const e = createAuthorizationEngine(options);
  const r = e.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: foo }
spec:
  action: ${action}
  rules:
${rulesYaml}`);
  assert.deepEqual(
    r.errors.map((x) => x.message),
    [],
  );
  return e;
}

describe("L7 evaluation", () => {
  it("matches {*} as one segment and {**} as any number", () => {
    const e = engineWith("  - to: [{ operation: { paths: ['/foo/{*}', '/bar/{**}', '/docs/{*}/{**}'] } }]");
    const cases: [string, boolean][] = [
      ["/foo/x", true],
      ["/foo/x/y", false],
      ["/foo/", false],
      ["/bar/", true],
      ["/bar/a/b/c", true],
      ["/bar", false],
      ["/docs/v1/a/b", true],
      ["/docs/v1", false],
      ["/foo/x?query=1", true],
    ];
    for (const [path, allowed] of cases) assert.equal(e.evaluate(req({ path })).allowed, allowed, path);
  });

  it("matches prefix, suffix, exact and presence paths after normalisation", () => {
    const deny = engineWith("  - to: [{ operation: { paths: ['/admin', '/api/*', '*.php'] } }]", "DENY");
    const cases: [string, boolean][] = [
      ["/admin", false],
      ["/public/../admin", false],
      ["/./admin", false],
      ["/admin/", true],
      ["/api/v1", false],
      ["/x/index.php", false],
      ["/index.html", true],
      ["/admin?x=1", false],
    ];
    for (const [path, allowed] of cases) assert.equal(deny.evaluate(req({ path })).allowed, allowed, path);
    assert.equal(normalizeRequestPath("/a//b/%2e%2E/c", "MERGE_SLASHES"), "/a/c");
    assert.equal(normalizeRequestPath("/a%2Fb", "DECODE_AND_MERGE_SLASHES"), "/a/b");
    assert.equal(normalizeRequestPath("/a/./b?x", "NONE"), "/a/./b");
    assert.equal(normalizeRequestPath("\\a\\..\\b"), "/b");
  });

  it("matches hosts case-insensitively and methods exactly, with not forms", () => {
    const e = engineWith(
      "  - to: [{ operation: { hosts: ['*.Example.com'], notHosts: ['admin.example.com'], methods: ['GET', 'HEAD'], notPaths: ['/private*'] } }]",
    );
    assert.equal(e.evaluate(req({ host: "api.example.COM" })).allowed, true);
    assert.equal(e.evaluate(req({ host: "ADMIN.example.com" })).allowed, false);
    assert.equal(e.evaluate(req({ host: "example.org" })).allowed, false);
    assert.equal(e.evaluate(req({ host: "api.example.com", method: "get" })).allowed, false);
    assert.equal(e.evaluate(req({ host: "api.example.com", method: "POST" })).allowed, false);
    assert.equal(e.evaluate(req({ host: "api.example.com", path: "/private/x" })).allowed, false);
    const wildcard = engineWith("  - to: [{ operation: { methods: ['P*'] } }]");
    assert.equal(wildcard.evaluate(req({ method: "PUT" })).allowed, true);
    assert.equal(wildcard.evaluate(req({ method: "GET" })).allowed, false);
  });

  it("evaluates request.headers conditions over all values", () => {
    const e = engineWith(
      "  - when:\n    - key: request.headers[X-Tenant]\n      values: ['acme', 'beta*']\n      notValues: ['blocked']",
    );
    assert.equal(e.evaluate(req({ headers: { "x-tenant": "acme" } })).allowed, true);
    assert.equal(e.evaluate(req({ headers: { "X-Tenant": ["other", "acme"] } })).allowed, true);
    assert.equal(e.evaluate(req({ headers: { "x-tenant": "beta-2" } })).allowed, true);
    assert.equal(e.evaluate(req({ headers: { "x-tenant": "acme,blocked" } })).allowed, false);
    assert.equal(e.evaluate(req({ headers: { "x-tenant": "acmex" } })).allowed, false);
    assert.equal(e.evaluate(req({ headers: {} })).allowed, false);
    const presence = engineWith("  - when: [{ key: 'request.headers[authorization]', values: ['*'] }]");
    assert.equal(
      presence.evaluate(req({ headers: { authorization: "" } })).allowed,
      true,
      "presence means the header is there",
    );
    assert.equal(presence.evaluate(req()).allowed, false);
  });

  it("checks requestPrincipals, JWT claims and audiences", () => {
    const any = engineWith("  - from: [{ source: { requestPrincipals: ['*'] } }]");
    assert.equal(any.evaluate(req({ requestPrincipal: "https://issuer/user1" })).allowed, true);
    assert.equal(any.evaluate(req()).allowed, false);
    const noJwt = engineWith("  - from: [{ source: { notRequestPrincipals: ['*'] } }]", "DENY");
    assert.equal(noJwt.evaluate(req()).allowed, false);
    assert.equal(noJwt.evaluate(req({ requestPrincipal: "iss/sub" })).allowed, true);
    const claims = engineWith(
      "  - when:\n    - { key: 'request.auth.claims[groups]', values: ['admins'] }\n    - { key: 'request.auth.claims[org][team]', values: ['core'] }\n    - { key: 'request.auth.audiences', values: ['api'] }",
    );
    const ok = {
      requestPrincipal: "i/s",
      claims: { groups: ["users", "admins"], org: { team: "core" } },
      audiences: ["web", "api"],
    };
    assert.equal(claims.evaluate(req(ok)).allowed, true);
    assert.equal(
      claims.evaluate(req({ ...ok, claims: { groups: "users", org: { team: "core" } } })).allowed,
      false,
    );
    assert.equal(claims.evaluate(req({ ...ok, audiences: ["web"] })).allowed, false);
  });

  it("uses the remote IP for remoteIpBlocks and the peer IP for ipBlocks", () => {
    const e = engineWith("  - from: [{ source: { remoteIpBlocks: ['203.0.113.0/24'] } }]");
    assert.equal(e.evaluate(req({ remoteIp: "203.0.113.9" })).allowed, true);
    assert.equal(e.evaluate(req()).allowed, false);
    const f = engineWith("  - from: [{ source: { ipBlocks: ['10.0.0.1'] } }]");
    assert.equal(f.evaluate(req({ remoteIp: "203.0.113.9" })).allowed, true);
  });

  it("orders CUSTOM, DENY, ALLOW and records AUDIT", () => {
    const seen: string[] = [];
    const e = createAuthorizationEngine({
      customAuthorizer: (r, p) => {
        seen.push(`${p.namespace}/${p.name}:${p.provider}`);
        return r.http?.headers["x-ext-ok"] === "yes";
      },
    });
    e.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext, namespace: foo }
spec:
  action: CUSTOM
  provider: { name: opa }
  rules: [{ to: [{ operation: { paths: ['/ext/*'] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-delete, namespace: foo }
spec:
  action: DENY
  rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: audit-all, namespace: foo }
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-get, namespace: foo }
spec:
  rules: [{ to: [{ operation: { methods: ['GET', 'DELETE'] } }] }]
`);
    const custom = e.evaluate(req({ path: "/ext/a", method: "DELETE" }));
    assert.deepEqual([custom.allowed, custom.action, custom.policy], [false, "CUSTOM", "foo/ext"]);
    const customOk = e.evaluate(req({ path: "/ext/a", method: "DELETE", headers: { "x-ext-ok": "yes" } }));
    assert.deepEqual(
      [customOk.allowed, customOk.action],
      [false, "DENY"],
      "CUSTOM allow still goes through DENY",
    );
    const get = e.evaluate(req({ path: "/ext/a", headers: { "x-ext-ok": "yes" } }));
    assert.deepEqual([get.allowed, get.action, get.audit], [true, "ALLOW", ["foo/audit-all"]]);
    assert.deepEqual(seen, ["foo/ext:opa", "foo/ext:opa", "foo/ext:opa"]);
    const failClosed = createAuthorizationEngine();
    failClosed.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext, namespace: foo }
spec: { action: CUSTOM, provider: { name: opa }, rules: [{}] }`);
    assert.match(failClosed.evaluate(req()).reason, /fail closed/);
    assert.equal(
      failClosed.evaluate({ ...req(), http: undefined }).allowed,
      true,
      "CUSTOM is not enforced at L4",
    );
  });

  it("attaches targetRefs policies to matching targets only", () => {
    const yaml = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: wp, namespace: foo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { methods: ['POST'] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ns-wide, namespace: foo }
spec: { action: DENY, rules: [{ to: [{ operation: { methods: ['PUT'] } }] }] }
`;
    const viaWaypoint = (method: string): AuthorizationRequest => ({
      ...req({ method }),
      destination: {
        ...req().destination,
        targets: [{ kind: "Gateway", name: "waypoint", namespace: "foo" }],
      },
    });
    const workloadMode = createAuthorizationEngine();
    workloadMode.applyYaml(yaml);
    assert.equal(workloadMode.evaluate(req({ method: "POST" })).allowed, true);
    assert.equal(workloadMode.evaluate(viaWaypoint("POST")).allowed, false);
    assert.equal(workloadMode.evaluate(viaWaypoint("PUT")).allowed, false);
    const waypointMode = createAuthorizationEngine({ l7Attachment: "waypoint" });
    waypointMode.applyYaml(yaml);
    assert.equal(waypointMode.evaluate(viaWaypoint("POST")).policy, "foo/wp");
    assert.equal(
      waypointMode.evaluate(viaWaypoint("PUT")).allowed,
      true,
      "namespace policies are ztunnel's job",
    );
    assert.equal(
      waypointMode.evaluate({ ...viaWaypoint("POST"), http: undefined }).allowed,
      false,
      "a connection carried as TCP: a DENY of methods alone, its methods dropped, denies every connection",
    );
  });

  it("attaches targetRefs only within the policy's namespace, and the GatewayClass only from the root", () => {
    const yaml = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reach-in, namespace: istio-system }
spec:
  targetRefs: [{ kind: Service, group: "", name: api, namespace: foo }]
  action: DENY
  rules: [{ to: [{ operation: { methods: ['POST'] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: class, namespace: foo }
spec:
  targetRefs: [{ kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { methods: ['PUT'] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: class, namespace: istio-system }
spec:
  targetRefs: [{ kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { methods: ['DELETE'] } }] }]
`;
    const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });
    engine.applyYaml(yaml);
    const through = (method: string): AuthorizationRequest => ({
      ...req({ method }),
      destination: {
        ...req().destination,
        targets: [
          { kind: "Service", group: "", name: "api", namespace: "foo" },
          { kind: "GatewayClass", group: "gateway.networking.k8s.io", name: "istio-waypoint", namespace: "" },
        ],
      },
    });
    assert.equal(engine.evaluate(through("POST")).allowed, true, "the root namespace cannot reach into foo");
    assert.equal(engine.evaluate(through("PUT")).allowed, true, "the class is targeted from the root only");
    assert.equal(engine.evaluate(through("DELETE")).policy, "istio-system/class");
  });

  it("applies a waypoint's targetRefs policies to a connection it carries as TCP, in their TCP form", () => {
    const yaml = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: clients, namespace: foo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  rules: [{ from: [{ source: { principals: ['cluster.local/ns/foo/sa/client'] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: foo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules:
    - from: [{ source: { principals: ['cluster.local/ns/foo/sa/admin'] } }]
    - from: [{ source: { principals: ['cluster.local/ns/foo/sa/client'] } }]
      to: [{ operation: { paths: ['/admin'] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ns-wide, namespace: foo }
spec: { action: DENY, rules: [{ from: [{ source: { principals: ['cluster.local/ns/foo/sa/client'] } }] }] }
`;
    const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });
    engine.applyYaml(yaml);
    const connection = (identity: string): AuthorizationRequest => ({
      source: { ip: "10.0.0.1", identity },
      destination: {
        ip: "10.96.0.40",
        port: 5432,
        targets: [
          { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "foo" },
        ],
      },
    });
    const other = engine.evaluate(connection("spiffe://cluster.local/ns/foo/sa/other"));
    assert.equal(other.allowed, false, "an ALLOW the caller does not match denies");
    const admin = engine.evaluate(connection("spiffe://cluster.local/ns/foo/sa/admin"));
    assert.deepEqual(
      [admin.allowed, admin.policy, admin.rule],
      [false, "foo/no-admin", 0],
      "a DENY's L4 rule applies",
    );
    // ...and so does its rule with an HTTP part, without that part: a connection has no path, so the
    // client is denied (the namespace's own policy, ztunnel's, plays no part here).
    const client = engine.evaluate(connection("spiffe://cluster.local/ns/foo/sa/client"));
    assert.deepEqual([client.allowed, client.policy, client.rule], [false, "foo/no-admin", 1]);
    // Nothing of it is for ztunnel.
    assert.deepEqual(
      engine
        .wireAuthorizations()
        .map((w) => w.name)
        .sort(),
      ["ns-wide"],
    );

    // An ALLOW whose rules are all HTTP matches no connection: deny-all for TCP.
    const httpOnly = createAuthorizationEngine({ l7Attachment: "waypoint" });
    httpOnly.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: gets, namespace: foo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  rules: [{ to: [{ operation: { methods: ['GET'] } }] }]
`);
    assert.equal(httpOnly.evaluate(connection("spiffe://cluster.local/ns/foo/sa/client")).allowed, false);
  });

  it("lets L7 rules that ztunnel drops apply at L7", () => {
    const e = engineWith("  - to: [{ operation: { methods: ['GET'] } }]");
    assert.equal(e.evaluate({ ...req(), http: undefined }).allowed, false, "ztunnel: deny-all");
    assert.equal(e.evaluate(req()).allowed, true);
    assert.equal(e.evaluate(req({ method: "POST" })).allowed, false);
    assert.deepEqual(e.explain(req({ method: "POST" }))[0]?.rules, ["no `to` operation matched"]);
  });
});

describe("L7 conditions on connection attributes", () => {
  it("evaluates source.serviceAccount, connection.sni, destination.ip and unobservable keys", () => {
    const e = engineWith(
      "  - when:\n    - { key: source.serviceAccount, values: ['sleep', 'ops/admin'] }\n    - { key: connection.sni, values: ['*.svc'] }\n    - { key: destination.ip, values: ['10.0.0.0/24'] }\n  - when:\n    - { key: 'experimental.envoy.filters.a[b]', notValues: ['x'] }\n    - { key: destination.port, values: ['9999'] }",
    );
    const withSni = (identity: string, sni?: string): AuthorizationRequest => ({
      ...req({}, identity),
      destination: { ...req().destination, ...(sni ? { sni } : {}) },
    });
    assert.equal(e.evaluate(withSni(SLEEP, "httpbin.foo.svc")).allowed, true);
    assert.equal(e.evaluate(withSni("spiffe://cluster.local/ns/ops/sa/admin", "a.svc")).allowed, true);
    assert.equal(
      e.evaluate(withSni("spiffe://cluster.local/ns/bar/sa/sleep", "a.svc")).allowed,
      false,
      "bare sa means the policy namespace",
    );
    assert.equal(e.evaluate(withSni(SLEEP)).allowed, false, "no SNI");
    const port9999 = { ...req(), destination: { ...req().destination, port: 9999 } };
    assert.equal(e.evaluate(port9999).allowed, true, "notValues of an unobservable key pass");
  });

  it("can delete wire policies and reports unknown ones", () => {
    const e = createAuthorizationEngine();
    e.setAuthorization({
      name: "d",
      namespace: "foo",
      scope: "NAMESPACE",
      action: "DENY",
      groups: [{ rules: [] }],
    });
    assert.equal(e.evaluate(req()).allowed, false);
    assert.equal(e.delete("AuthorizationPolicy", "foo", "d"), false, "kind must agree");
    assert.equal(e.delete("Authorization", "foo", "d"), true);
    assert.equal(e.delete("Authorization", "foo", "d"), false);
    assert.equal(e.evaluate(req()).allowed, true);
  });
});
