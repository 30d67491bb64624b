import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type AuthorizationDecision,
  type AuthorizationEngineOptions,
  type AuthorizationRequest,
  createAuthorizationEngine,
} from "./authorization-engine.js";

/**
 * A waypoint carries what is not HTTP as TCP, and its targetRefs policies apply to those connections
 * as Envoy's network RBAC filter applies them: a rule's HTTP-only parts (hosts, methods, paths,
 * requestPrincipals, `request.*` conditions) cannot be seen on a connection. A DENY, AUDIT or CUSTOM
 * rule is enforced without them (a `from`, `to` or `when` left with nothing matches every connection:
 * the deny is wider); an ALLOW rule that has any of them is left out (the allow is narrower). Everything
 * a connection has (principals, namespaces, ipBlocks, remoteIpBlocks, ports, `connection.sni`, ...) is
 * still matched.
 */

const B = "spiffe://cluster.local/ns/shop/sa/b";
const C = "spiffe://cluster.local/ns/shop/sa/c";
const WAYPOINT = { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" };

interface Connection {
  identity?: string;
  ip?: string;
  port?: number;
  sni?: string;
}

/** A connection the waypoint carries as TCP (no `http`). */
function tcp(c: Connection): AuthorizationRequest {
  return {
    source:
      c.identity === undefined
        ? { ip: c.ip ?? "10.0.0.9" }
        : { ip: c.ip ?? "10.0.0.9", identity: c.identity },
    destination: {
      ip: "10.96.0.40",
      port: c.port ?? 6379,
      targets: [WAYPOINT],
      ...(c.sni === undefined ? {} : { sni: c.sni }),
    },
  };
}

/** An HTTP request through the same waypoint. */
function http(c: Connection, method: string, path: string): AuthorizationRequest {
  return { ...tcp(c), http: { host: "cache.shop", method, path, headers: {} } };
}

function waypointEngine(action: string, rules: string, more = "", options: AuthorizationEngineOptions = {}) {
  const engine = createAuthorizationEngine({ l7Attachment: "waypoint", ...options });
  const { errors } = engine.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: shop }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: ${action}
${more}  rules: ${rules}
`);
  assert.deepEqual(
    errors.map((e) => e.message),
    [],
  );
  return engine;
}

interface Case {
  name: string;
  action: "ALLOW" | "DENY" | "AUDIT" | "CUSTOM";
  /** The `rules:` value, in YAML flow style. */
  rules: string;
  /** More spec lines (e.g. the CUSTOM provider). */
  more?: string;
  /** Connections and what must come of each: `true` allowed, `false` denied. */
  expect: { connection: Connection; allowed: boolean; rule?: number }[];
}

const CASES: Case[] = [
  {
    name: "DENY from a principal to a path: the path is dropped, the principal kept",
    action: "DENY",
    rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { paths: ["/admin"] } }] }]`,
    expect: [
      { connection: { identity: B }, allowed: false, rule: 0 },
      { connection: { identity: C }, allowed: true },
      { connection: {}, allowed: true },
    ],
  },
  {
    name: "DENY from remoteIpBlocks: a connection's remote address is its source",
    action: "DENY",
    rules: `[{ from: [{ source: { remoteIpBlocks: ["10.0.0.1/32"] } }] }]`,
    expect: [
      { connection: { identity: C, ip: "10.0.0.1" }, allowed: false, rule: 0 },
      { connection: { identity: C, ip: "10.0.0.2" }, allowed: true },
    ],
  },
  {
    name: "DENY of a principal when a header is present: the header condition is dropped",
    action: "DENY",
    rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], when: [{ key: "request.headers[x-a]", values: ["1"] }] }]`,
    expect: [
      { connection: { identity: B }, allowed: false, rule: 0 },
      { connection: { identity: C }, allowed: true },
    ],
  },
  {
    name: "DENY of a method on a port (Istio's TCP task): every connection to that port is denied",
    action: "DENY",
    rules: `[{ to: [{ operation: { methods: ["GET"], ports: ["9000"] } }] }]`,
    expect: [
      { connection: { identity: C, port: 9000 }, allowed: false, rule: 0 },
      { connection: { identity: C, port: 9001 }, allowed: true },
    ],
  },
  {
    name: "DENY with only HTTP fields: the rule matches every connection",
    action: "DENY",
    rules: `[{ to: [{ operation: { hosts: ["a.example"], notMethods: ["GET"] } }] }]`,
    expect: [
      { connection: { identity: B }, allowed: false, rule: 0 },
      { connection: {}, allowed: false, rule: 0 },
    ],
  },
  {
    name: "DENY of requestPrincipals and JWT claims only: nothing is left of the source or condition",
    action: "DENY",
    rules: `[{ from: [{ source: { notRequestPrincipals: ["*"] } }] }, { when: [{ key: "request.auth.claims[groups]", values: ["x"] }] }]`,
    expect: [{ connection: { identity: C }, allowed: false, rule: 0 }],
  },
  {
    name: "DENY of one source among several: a source left empty matches anyone",
    action: "DENY",
    rules: `[{ from: [{ source: { requestPrincipals: ["iss/sub"] } }, { source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { ports: ["6379"] } }] }]`,
    expect: [
      { connection: { identity: C }, allowed: false, rule: 0 },
      { connection: { identity: C, port: 6380 }, allowed: true },
    ],
  },
  {
    name: "DENY with notPaths and a principal: the principal alone decides",
    action: "DENY",
    rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { notPaths: ["/public/*"] } }] }]`,
    expect: [
      { connection: { identity: B }, allowed: false, rule: 0 },
      { connection: { identity: C }, allowed: true },
    ],
  },
  {
    name: "DENY when connection.sni: a connection has an SNI, so the condition is kept",
    action: "DENY",
    rules: `[{ when: [{ key: connection.sni, values: ["evil.example"] }] }]`,
    expect: [
      { connection: { identity: C, sni: "evil.example" }, allowed: false, rule: 0 },
      { connection: { identity: C, sni: "good.example" }, allowed: true },
      { connection: { identity: C }, allowed: true },
    ],
  },
  {
    name: "ALLOW: a rule with an HTTP field is left out, the others still allow",
    action: "ALLOW",
    rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { methods: ["GET"] } }] }, { from: [{ source: { principals: ["cluster.local/ns/shop/sa/c"] } }] }]`,
    expect: [
      { connection: { identity: B }, allowed: false },
      { connection: { identity: C }, allowed: true, rule: 1 },
    ],
  },
  {
    name: "ALLOW with a request.* condition: the rule is left out",
    action: "ALLOW",
    rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], when: [{ key: "request.auth.principal", notValues: ["x/y"] }] }]`,
    expect: [{ connection: { identity: B }, allowed: false }],
  },
  {
    name: "ALLOW from remoteIpBlocks and when connection.sni: both are connection facts, kept",
    action: "ALLOW",
    rules: `[{ from: [{ source: { remoteIpBlocks: ["10.0.0.1/32"] } }] }, { when: [{ key: connection.sni, values: ["db.example"] }] }]`,
    expect: [
      { connection: { ip: "10.0.0.1" }, allowed: true, rule: 0 },
      { connection: { ip: "10.0.0.2", sni: "db.example" }, allowed: true, rule: 1 },
      { connection: { ip: "10.0.0.2" }, allowed: false },
    ],
  },
  {
    name: "CUSTOM without an authorizer: denies (fail closed), HTTP fields dropped as for DENY",
    action: "CUSTOM",
    more: "  provider: { name: ext-authz }\n",
    rules: `[{ from: [{ source: { ipBlocks: ["10.0.0.1/32"] } }], to: [{ operation: { paths: ["/admin"] } }] }]`,
    expect: [
      { connection: { identity: B, ip: "10.0.0.1" }, allowed: false, rule: 0 },
      { connection: { identity: B, ip: "10.0.0.2" }, allowed: true },
    ],
  },
  {
    name: "CUSTOM with only HTTP fields, without an authorizer: every connection is denied",
    action: "CUSTOM",
    more: "  provider: { name: ext-authz }\n",
    rules: `[{ to: [{ operation: { methods: ["POST"] } }] }]`,
    expect: [{ connection: { identity: C }, allowed: false, rule: 0 }],
  },
];

function check(decision: AuthorizationDecision, c: Case, e: Case["expect"][number]): void {
  const label = `${c.name}: ${JSON.stringify(e.connection)} (${decision.reason})`;
  assert.equal(decision.allowed, e.allowed, label);
  assert.equal(decision.layer, "L4", label);
  if (e.rule !== undefined) {
    assert.equal(decision.rule, e.rule, label);
    assert.equal(decision.policy, "shop/p", label);
  }
  if (!e.allowed && (c.action === "DENY" || c.action === "CUSTOM"))
    assert.equal(decision.action, c.action, label);
}

describe("waypoint: targetRefs policies on connections carried as TCP", () => {
  for (const c of CASES) {
    it(c.name, () => {
      const engine = waypointEngine(c.action, c.rules, c.more);
      for (const e of c.expect) check(engine.evaluate(tcp(e.connection)), c, e);
    });
  }

  it("says why in explain, per rule", () => {
    const engine = waypointEngine(
      "ALLOW",
      `[{ to: [{ operation: { methods: ["GET"] } }] }, { from: [{ source: { principals: ["cluster.local/ns/shop/sa/c"] } }] }]`,
    );
    const [p] = engine.explain(tcp({ identity: B }));
    assert.equal(p?.policy, "shop/p");
    assert.match(p?.rules[0] ?? "", /HTTP/);
    assert.equal(p?.rules[1], "no `from` source matched");
  });

  it("fails closed on a CUSTOM policy without an authorizer, saying so", () => {
    const engine = waypointEngine("CUSTOM", "[{}]", "  provider: { name: ext-authz }\n");
    const d = engine.evaluate(tcp({ identity: C }));
    assert.deepEqual([d.allowed, d.action, d.policy], [false, "CUSTOM", "shop/p"]);
    assert.match(d.reason, /fail closed/);
  });

  it("refuses only what a CUSTOM policy without an authorizer matches, requests and connections alike", () => {
    // A provider that cannot be used turns the policy's own rules into deny rules: traffic they do
    // not match is still decided by the other policies (here: none, so it is allowed).
    const engine = waypointEngine(
      "CUSTOM",
      `[{ to: [{ operation: { ports: ["6379"], paths: ["/admin/*"] } }] }]`,
      "  provider: { name: ext-authz }\n",
    );
    const matched = engine.evaluate(http({ identity: C }, "GET", "/admin/x"));
    assert.deepEqual([matched.allowed, matched.action, matched.rule], [false, "CUSTOM", 0]);
    assert.equal(engine.evaluate(http({ identity: C }, "GET", "/public")).allowed, true);
    assert.equal(engine.evaluate(http({ identity: C, port: 6380 }, "GET", "/admin/x")).allowed, true);
    // On a connection the path cannot be seen: the port alone decides.
    assert.deepEqual(
      [
        engine.evaluate(tcp({ identity: C })).allowed,
        engine.evaluate(tcp({ identity: C, port: 6380 })).allowed,
      ],
      [false, true],
    );
  });

  it("asks a configured authorizer about a connection, which it sees without http", () => {
    const seen: (string | undefined)[] = [];
    const engine = waypointEngine(
      "CUSTOM",
      `[{ to: [{ operation: { paths: ["/x"] } }] }]`,
      "  provider: { name: ext-authz }\n",
      {
        customAuthorizer: (request, policy) => {
          seen.push(`${policy.provider}:${request.http === undefined ? "tcp" : request.http.path}`);
          return request.source.identity === C;
        },
      },
    );
    assert.equal(engine.evaluate(tcp({ identity: C })).allowed, true);
    const b = engine.evaluate(tcp({ identity: B }));
    assert.deepEqual([b.allowed, b.action], [false, "CUSTOM"]);
    assert.deepEqual(seen, ["ext-authz:tcp", "ext-authz:tcp"]);
  });

  it("reports a matching AUDIT policy for a connection", () => {
    const engine = waypointEngine("AUDIT", `[{ to: [{ operation: { paths: ["/x"] } }] }]`);
    const d = engine.evaluate(tcp({ identity: C }));
    assert.deepEqual([d.allowed, d.audit], [true, ["shop/p"]]);
  });

  it("leaves HTTP requests through the waypoint to every attribute", () => {
    const engine = waypointEngine(
      "DENY",
      `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { paths: ["/admin"] } }] }]`,
    );
    assert.equal(engine.evaluate(http({ identity: B }, "GET", "/admin")).allowed, false);
    assert.equal(engine.evaluate(http({ identity: B }, "GET", "/public")).allowed, true);
  });

  it("does not enforce a dry-run DENY on connections, and reports it", () => {
    const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });
    engine.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: shop, annotations: { istio.io/dry-run: "true" } }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { paths: ["/admin"] } }] }]
`);
    const d = engine.evaluate(tcp({ identity: B }));
    assert.deepEqual([d.allowed, d.dryRunAllowed], [true, false]);
  });
});

describe("waypoint: connections to different targets in one namespace", () => {
  it("decides each connection by its own targets, whatever was decided before", () => {
    const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });
    engine.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-b, namespace: shop }
spec:
  targetRefs: [{ kind: Service, group: "", name: db }]
  action: DENY
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }] }]
`);
    // The destination workload is known too: it must not stand for the targets.
    const to = (service: string): AuthorizationRequest => ({
      source: { ip: "10.0.0.9", identity: B },
      destination: {
        ip: "10.96.0.41",
        port: 5432,
        workload: { namespace: "shop", name: "db-0" },
        targets: [{ kind: "Service", group: "", name: service, namespace: "shop" }],
      },
    });
    assert.equal(engine.evaluate(to("web")).allowed, true);
    assert.deepEqual(
      [engine.evaluate(to("db")).allowed, engine.evaluate(to("db")).policy],
      [false, "shop/no-b"],
    );
    assert.equal(engine.evaluate(to("web")).allowed, true);
  });
});

describe("waypoint: open connections after a policy change", () => {
  it("re-decides those whose targets' namespace changed, and only those", () => {
    const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });
    const through = (namespace: string) => ({
      id: namespace,
      request: {
        source: { ip: "10.0.0.9", identity: B },
        destination: {
          ip: "10.96.0.41",
          port: 5432,
          targets: [{ kind: "Service", group: "", name: "db", namespace }],
        },
      },
    });
    const open = [through("shop"), through("other")];
    const since = engine.version;
    engine.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-b, namespace: shop }
spec:
  targetRefs: [{ kind: Service, group: "", name: db }]
  action: DENY
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { paths: ["/x"] } }] }]
`);
    assert.deepEqual(
      engine.reevaluate(open, { since }).map((d) => [d.connection.id, d.decision.policy]),
      [["shop", "shop/no-b"]],
    );
    assert.deepEqual(engine.reevaluate(open, { since: engine.version }), [], "nothing changed since");
  });
});

describe("ztunnel: the same policies by selector, as istiod converts them for ztunnel", () => {
  // istiod keeps a DENY rule's HTTP parts as empty matches, and ztunnel never matches an empty match:
  // the rule has no effect at L4 (istiod's status says to use a waypoint). Unchanged here.
  const cases: { rules: string; identity: string; ip?: string }[] = [
    {
      rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], to: [{ operation: { paths: ["/admin"] } }] }]`,
      identity: B,
    },
    { rules: `[{ from: [{ source: { remoteIpBlocks: ["10.0.0.1/32"] } }] }]`, identity: B, ip: "10.0.0.1" },
    {
      rules: `[{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/b"] } }], when: [{ key: "request.headers[x-a]", values: ["1"] }] }]`,
      identity: B,
    },
  ];
  for (const [i, c] of cases.entries()) {
    it(`leaves the HTTP part's clause unmatched (case ${i})`, () => {
      const engine = createAuthorizationEngine();
      const { errors, applied } = engine.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: shop }
spec:
  action: DENY
  rules: ${c.rules}
`);
      assert.deepEqual(errors, []);
      assert.match(
        applied[0]?.warnings.map((w) => w.message).join() ?? "",
        /ztunnel does not support HTTP attributes/,
      );
      const d = engine.evaluate({
        source: { ip: c.ip ?? "10.0.0.9", identity: c.identity },
        destination: { ip: "10.0.2.9", port: 6379, workload: { namespace: "shop" } },
      });
      assert.equal(d.allowed, true, d.reason);
    });
  }
});
