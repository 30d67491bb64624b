import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import {
  type AuthorizationDecision,
  type AuthorizationEngine,
  type AuthorizationRequest,
  createAuthorizationEngine,
} from "./authorization-engine.js";
import { PolicyError } from "./errors.js";
import type { WireAuthorization } from "./wire.js";

const SLEEP = "spiffe://cluster.local/ns/foo/sa/sleep";

/** An engine whose policies touch every lookup: root, namespace, selector, targetRefs, PeerAuthentication, CUSTOM. */
function fixture(options: { customAuthorizer?: () => boolean } = {}): AuthorizationEngine {
  const lines: unknown[] = [];
  const logger = {
    debug: (...a: unknown[]) => lines.push(a),
    info: (...a: unknown[]) => lines.push(a),
    warn: (...a: unknown[]) => lines.push(a),
    error: (...a: unknown[]) => lines.push(a),
  };
  const e = createAuthorizationEngine({ logDecisions: true, logger, ...options });
  const { errors } = e.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-sleep, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/foo/sa/sleep"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: istio-system }
spec:
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin*"] } }]
  - when: [{ key: "request.auth.claims[groups]", values: ["blocked"] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: gw, namespace: foo }
spec:
  targetRefs: [{ kind: Service, group: "", name: httpbin }]
  rules:
  - to: [{ operation: { methods: ["GET"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ext, namespace: foo }
spec:
  selector: { matchLabels: { app: httpbin } }
  action: CUSTOM
  provider: { name: opa }
  rules:
  - to: [{ operation: { paths: ["/ext"] } }]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: foo }
spec:
  mtls: { mode: PERMISSIVE }
`);
  assert.deepEqual(errors, []);
  return e;
}

function valid(): AuthorizationRequest {
  return {
    source: { ip: "10.0.0.1", port: 40000, identity: SLEEP },
    destination: {
      ip: "10.0.0.2",
      port: 8000,
      sni: "httpbin.foo",
      workload: { namespace: "foo", name: "httpbin-1", labels: { app: "httpbin" } },
      targets: [{ kind: "Service", name: "httpbin", namespace: "foo" }],
    },
    http: {
      host: "httpbin.foo",
      method: "GET",
      path: "/get?x=1",
      headers: { accept: "*/*", "x-multi": ["a", "b"] },
      requestPrincipal: "iss/sub",
      audiences: ["aud"],
      presenter: "client",
      claims: { groups: ["dev"] },
      remoteIp: "192.0.2.1",
    },
  };
}

/** Replaces the value at a dotted path (creating nothing); `undefined` deletes the field. */
function withField(base: AuthorizationRequest, path: string, value: unknown): unknown {
  if (path === "") return value;
  const copy = structuredClone(base) as unknown as Record<string, unknown>;
  const keys = path.split(".");
  let cur = copy;
  for (const k of keys.slice(0, -1)) cur = cur[k] as Record<string, unknown>;
  const last = keys[keys.length - 1] as string;
  if (value === undefined) delete cur[last];
  else cur[last] = value;
  return copy;
}

function assertDenied(d: AuthorizationDecision, what: string): void {
  assert.equal(d.allowed, false, `${what}: ${d.reason}`);
  assert.ok(d.error instanceof PolicyError, `${what}: no error`);
  assert.ok(d.reason.length > 0);
}

describe("a malformed request is denied, never thrown", () => {
  it("the valid fixture request is allowed (so every deny below is the check's doing)", () => {
    const e = fixture();
    const d = e.evaluate(valid());
    assert.equal(d.allowed, true, d.reason);
    assert.equal(e.evaluate(withField(valid(), "http", undefined) as AuthorizationRequest).allowed, true);
  });

  const table: [string, unknown, RegExp][] = [
    ["", null, /a request must be an object, not null/],
    ["", undefined, /a request must be an object/],
    ["", 42, /a request must be an object, not 42/],
    ["", [], /a request must be an object, not an array/],
    ["source", null, /source must be an object, not null/],
    ["source", undefined, /source must be an object/],
    ["source.ip", 167772161, /source.ip is not an IP address: 167772161/],
    ["source.ip", "10.0.0.01", /source.ip is not an IP address/],
    ["source.port", "40000", /source.port is not a port: "40000"/],
    ["source.port", Number.NaN, /source.port is not a port: NaN/],
    ["source.port", null, /source.port is not a port: null/],
    ["source.identity", 7, /source.identity must be a string/],
    ["source.identity", null, /source.identity must be a string, not null/],
    ["destination", "10.0.0.2:8000", /destination must be an object/],
    ["destination.ip", undefined, /destination.ip is not an IP address: undefined/],
    ["destination.port", "8000", /destination.port is not a port: "8000"/],
    ["destination.port", Number.NaN, /destination.port is not a port: NaN/],
    ["destination.port", 65536, /destination.port is not a port/],
    ["destination.port", -1, /destination.port is not a port/],
    ["destination.port", 80.5, /destination.port is not a port/],
    ["destination.port", Number.POSITIVE_INFINITY, /destination.port is not a port/],
    ["destination.sni", 1, /destination.sni must be a string/],
    ["destination.workload", null, /destination.workload must be an object, not null/],
    ["destination.workload.namespace", 1, /destination.workload.namespace must be a string/],
    ["destination.workload.name", ["x"], /destination.workload.name must be a string/],
    ["destination.workload.labels", "app=httpbin", /destination.workload.labels must be an object/],
    ["destination.workload.labels.app", 1, /destination.workload.labels\["app"\] must be a string/],
    ["destination.workload.authorizationPolicies", "foo/p", /authorizationPolicies must be an array/],
    ["destination.workload.authorizationPolicies", 3, /authorizationPolicies must be an array/],
    ["destination.workload.authorizationPolicies", [null], /authorizationPolicies\[0\] must be a string/],
    ["destination.targets", {}, /destination.targets must be an array/],
    ["destination.targets", [null], /destination.targets\[0\] must be an object/],
    ["destination.targets", [{ kind: "Service", name: 1, namespace: "foo" }], /targets\[0\] needs string/],
    ["http", null, /http must be an object, not null/],
    ["http", "GET /", /http must be an object/],
    ["http.host", undefined, /http.host must be a string/],
    ["http.method", 1, /http.method must be a string/],
    ["http.path", null, /http.path must be a string, not null/],
    ["http.headers", null, /http.headers must be an object, not null/],
    ["http.headers", ["accept"], /http.headers must be an object, not an array/],
    ["http.headers.accept", 1, /http.headers\["accept"\] must be a string or strings/],
    ["http.headers.accept", [1], /http.headers\["accept"\]\[0\] must be a string/],
    ["http.requestPrincipal", {}, /http.requestPrincipal must be a string/],
    ["http.audiences", "aud", /http.audiences must be an array of strings/],
    ["http.audiences", [1], /http.audiences\[0\] must be a string/],
    ["http.presenter", false, /http.presenter must be a string/],
    ["http.claims", null, /http.claims must be an object, not null/],
    ["http.claims", ["dev"], /http.claims must be an object, not an array/],
    ["http.remoteIp", "nope", /http.remoteIp is not an IP address/],
    ["http.remoteIp", 1, /http.remoteIp must be a string/],
    ["http.pathNormalized", "yes", /http.pathNormalized must be a boolean/],
  ];

  it("table: each wrong field is named in the reason", () => {
    const e = fixture();
    for (const [path, value, reason] of table) {
      const request = withField(valid(), path, value) as AuthorizationRequest;
      let d: AuthorizationDecision | undefined;
      assert.doesNotThrow(
        () => {
          d = e.evaluate(request);
        },
        `${path} = ${String(value)}`,
      );
      assertDenied(d as AuthorizationDecision, path);
      assert.equal(d?.error?.code, "ERR_REQUEST_INVALID", path);
      assert.match(d?.reason ?? "", reason, path);
      assert.equal(d?.badRequest, undefined, path);
    }
  });

  it("objects that cannot be turned into text, and prototype-named labels, are handled", () => {
    const e = fixture();
    const hostile = { toString: 1, valueOf: 1 };
    for (const path of [
      "source.port",
      "destination.port",
      "source.ip",
      "http.method",
      "destination.workload",
    ])
      assertDenied(e.evaluate(withField(valid(), path, hostile) as AuthorizationRequest), path);
    // An object without a prototype is still an object: read normally.
    const nullProto = Object.assign(Object.create(null), { ip: "10.0.0.1", identity: SLEEP });
    const d = e.evaluate({ ...valid(), source: nullProto });
    assert.equal(d.error, undefined);
    assert.equal(d.allowed, true);
    // A label named like an Object.prototype member is an ordinary label.
    const labels = { app: "httpbin", constructor: "x", __proto__: null } as unknown as Record<string, string>;
    const r = valid();
    r.destination.workload = { namespace: "foo", labels };
    assert.equal(e.evaluate(r).allowed, true);
  });

  it("a throwing getter or CUSTOM authorizer denies instead of throwing", () => {
    const e = fixture({
      customAuthorizer: () => {
        throw new Error("authorizer down");
      },
    });
    const r = valid();
    Object.defineProperty(r.destination, "port", {
      get() {
        throw new Error("boom");
      },
    });
    assertDenied(e.evaluate(r), "getter");
    const ext = valid();
    if (ext.http) ext.http.path = "/ext";
    const d = e.evaluate(ext);
    assert.equal(d.allowed, false);
    assert.equal(d.action, "CUSTOM");
    assert.match(d.reason, /authorizer for provider opa failed: authorizer down/);
  });

  // Values each field may hold without making the request malformed; anything else must deny.
  const isString = (v: unknown) => typeof v === "string";
  const optional = (p: (v: unknown) => boolean) => (v: unknown) => v === undefined || p(v);
  const isPort = (v: unknown) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535;
  const isObj = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  const strings = (v: unknown) => Array.isArray(v) && v.every(isString);
  const fields: [string, (v: unknown) => boolean][] = [
    ["", () => false],
    ["source", () => false],
    ["source.ip", isString],
    ["source.port", optional(isPort)],
    ["source.identity", optional(isString)],
    ["destination", () => false],
    ["destination.ip", isString],
    ["destination.port", isPort],
    ["destination.sni", optional(isString)],
    ["destination.workload", optional((v) => isObj(v) && isString(v.namespace))],
    ["destination.workload.namespace", isString],
    ["destination.workload.name", optional(isString)],
    ["destination.workload.labels", optional((v) => isObj(v) && Object.values(v).every(isString))],
    ["destination.workload.authorizationPolicies", optional(strings)],
    ["destination.targets", optional((v) => Array.isArray(v) && v.length === 0)],
    ["http", optional(() => false)],
    ["http.host", isString],
    ["http.method", (v) => isString(v) && /^[!#$%&'*+\-.^_`|~0-9A-Z]+$/.test(v as string)],
    ["http.path", isString],
    [
      "http.headers",
      optional(
        (v) => isObj(v) && Object.values(v).every((h) => h === undefined || isString(h) || strings(h)),
      ),
    ],
    ["http.requestPrincipal", optional(isString)],
    ["http.audiences", optional(strings)],
    ["http.presenter", optional(isString)],
    ["http.claims", optional(isObj)],
    ["http.remoteIp", optional(isString)],
    ["http.pathNormalized", optional((v) => typeof v === "boolean")],
  ];

  it("property: any value in any field never throws, and a wrong-typed one denies", () => {
    const e = fixture();
    let denied = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...fields),
        fc.anything({ withNullPrototype: true }),
        ([path, accepts], value) => {
          const request = withField(valid(), path, value) as AuthorizationRequest;
          const d = e.evaluate(request);
          assert.equal(typeof d.allowed, "boolean");
          assert.equal(typeof d.reason, "string");
          if (!accepts(value)) {
            assertDenied(d, `${path} = ${typeof value}`);
            denied++;
          }
        },
      ),
      { numRuns: 3000 },
    );
    assert.ok(denied > 1000, `only ${denied} malformed requests generated`);
  });

  it("property: several random fields at once, and the other entry points, never throw anything but PolicyError", () => {
    const e = fixture();
    const paths = fields.map(([p]) => p).filter((p) => p !== "");
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...paths), fc.anything({ withNullPrototype: true })), {
          maxLength: 5,
        }),
        (changes) => {
          let request: unknown = valid();
          for (const [path, value] of changes) {
            try {
              request = withField(request as AuthorizationRequest, path, value);
            } catch {
              // The parent of that field was replaced by a non-object already.
            }
          }
          const d = e.evaluate(request as AuthorizationRequest);
          assert.equal(typeof d.allowed, "boolean");
          try {
            e.explain(request as AuthorizationRequest);
          } catch (err) {
            assert.ok(err instanceof PolicyError, String(err));
          }
          const denied = e.reevaluate([{ request: request as AuthorizationRequest }], { since: 0 });
          assert.equal(denied.length, d.allowed ? 0 : 1);
        },
      ),
      { numRuns: 1500 },
    );
  });

  it("explain throws only PolicyError; reevaluate denies malformed connections instead of throwing", () => {
    const e = fixture();
    for (const bad of [null, {}, { source: { ip: "x" } }, withField(valid(), "destination.port", "1")]) {
      assert.throws(
        () => e.explain(bad as AuthorizationRequest),
        (err: unknown) => err instanceof PolicyError && err.code === "ERR_REQUEST_INVALID",
      );
    }
    assert.throws(
      () => e.explain(withField(valid(), "http.path", "/a%00") as AuthorizationRequest),
      (err: unknown) => err instanceof PolicyError && err.code === "ERR_POLICY_BAD_PATH",
    );
    const junk = [
      null,
      undefined,
      7,
      {},
      { request: null },
      { request: { destination: null } },
      { request: { destination: { workload: null } } },
      { request: withField(valid(), "destination.workload", 5) },
    ];
    const connections = [...junk, { request: valid() }] as unknown as { request: AuthorizationRequest }[];
    for (const since of [undefined, 0, e.version]) {
      const denied = e.reevaluate(connections, since === undefined ? {} : { since });
      assert.equal(denied.length, junk.length, `since ${since}`);
      for (const { decision } of denied) assertDenied(decision, "connection");
    }
    assert.throws(
      () => e.reevaluate(5 as unknown as Iterable<{ request: AuthorizationRequest }>),
      (err: unknown) => err instanceof PolicyError,
    );
  });
});

describe("a malformed wire Authorization is refused with ERR_WIRE_INVALID", () => {
  const good = (): WireAuthorization => ({
    name: "p",
    namespace: "foo",
    scope: "NAMESPACE",
    action: "DENY",
    groups: [
      {
        rules: [
          {
            matches: [
              {
                namespaces: [{ exact: "bar" }],
                notNamespaces: [],
                principals: [],
                notPrincipals: [],
                sourceIps: [{ address: new Uint8Array([10, 0, 0, 0]), length: 8 }],
                notSourceIps: [],
                destinationIps: [],
                notDestinationIps: [],
                destinationPorts: [8000],
                notDestinationPorts: [],
              },
            ],
          },
        ],
      },
    ],
  });

  it("table: wrong types that used to throw TypeError or be misread", () => {
    const cases: [string, unknown][] = [
      ["", null],
      ["", "p"],
      ["groups", {}],
      ["groups.0", null],
      ["groups.0.rules", "x"],
      ["groups.0.rules.0", null],
      ["groups.0.rules.0.matches", {}],
      ["groups.0.rules.0.matches.0", 1],
      ["groups.0.rules.0.matches.0.namespaces", "bar"],
      ["groups.0.rules.0.matches.0.namespaces.0", "bar"],
      ["groups.0.rules.0.matches.0.destinationPorts", ["8000"]],
      ["groups.0.rules.0.matches.0.destinationPorts", [Number.NaN]],
      ["groups.0.rules.0.matches.0.sourceIps.0", null],
      ["groups.0.rules.0.matches.0.sourceIps.0.address", "\n\0\0\0"],
      ["groups.0.rules.0.matches.0.sourceIps.0.length", "8"],
      ["groups.0.rules.0.matches.0.serviceAccounts", [{ namespace: "foo" }]],
      ["groups.0.rules.0.clauses", [null]],
      ["scope", 1],
      ["action", null],
      ["dryRun", "true"],
      ["name", undefined],
    ];
    for (const [path, value] of cases) {
      const e = createAuthorizationEngine();
      const auth = withField(good() as unknown as AuthorizationRequest, path, value) as WireAuthorization;
      assert.throws(
        () => e.setAuthorization(auth),
        (err: unknown) => err instanceof PolicyError && err.code === "ERR_WIRE_INVALID",
        path,
      );
      assert.equal(e.size, 0, path);
    }
    const e = createAuthorizationEngine();
    e.setAuthorization(good());
    assert.equal(e.size, 1);
  });

  it("property: anything given to setAuthorization or apply is stored or refused with a PolicyError", () => {
    const e = createAuthorizationEngine();
    const leaf = [
      "",
      "groups",
      "groups.0.rules",
      "groups.0.rules.0.matches.0",
      "groups.0.rules.0.matches.0.principals",
      "groups.0.rules.0.matches.0.destinationPorts",
      "groups.0.rules.0.matches.0.sourceIps",
      "groups.0.rules.0.matches.0.serviceAccounts",
    ];
    fc.assert(
      fc.property(fc.constantFrom(...leaf), fc.anything({ withNullPrototype: true }), (path, value) => {
        const auth = withField(good() as unknown as AuthorizationRequest, path, value) as WireAuthorization;
        for (const act of [() => e.setAuthorization(auth), () => e.apply(value)]) {
          try {
            act();
          } catch (err) {
            assert.ok(err instanceof PolicyError, String(err));
          }
        }
        const d = e.evaluate({ source: { ip: "10.0.0.1" }, destination: { ip: "10.0.0.2", port: 8000 } });
        assert.equal(typeof d.allowed, "boolean");
      }),
      { numRuns: 1500 },
    );
  });
});
