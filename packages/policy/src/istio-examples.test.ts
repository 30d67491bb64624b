import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type AuthorizationRequest, createAuthorizationEngine } from "./authorization-engine.js";

/**
 * Examples from Istio's AuthorizationPolicy reference and the ambient L4 policy guide, each with
 * the requests the documentation describes and the expected answer.
 */
interface Case {
  name: string;
  request: AuthorizationRequest;
  allowed: boolean;
}
interface Example {
  title: string;
  yaml: string;
  cases: Case[];
}

const id = (ns: string, sa: string): string => `spiffe://cluster.local/ns/${ns}/sa/${sa}`;

function http(
  identity: string | undefined,
  method: string,
  path: string,
  more: Partial<NonNullable<AuthorizationRequest["http"]>> = {},
  workload: { namespace: string; labels?: Record<string, string> } = { namespace: "foo" },
): AuthorizationRequest {
  return {
    source: identity ? { ip: "10.1.0.5", identity } : { ip: "10.1.0.5" },
    destination: { ip: "10.2.0.9", port: 8000, workload },
    http: { host: "httpbin.foo.svc.cluster.local", method, path, headers: {}, ...more },
  };
}

function tcp(
  identity: string | undefined,
  port: number,
  workload: { namespace: string; labels?: Record<string, string> },
  srcIp = "10.1.0.5",
): AuthorizationRequest {
  return {
    source: identity ? { ip: srcIp, identity } : { ip: srcIp },
    destination: { ip: "10.2.0.9", port, workload },
  };
}

const examples: Example[] = [
  {
    title: "reference: ALLOW from sleep or namespace test to GET /info* and POST /data with a Google JWT",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: httpbin, namespace: foo }
spec:
  action: ALLOW
  rules:
  - from:
    - source: { principals: ["cluster.local/ns/default/sa/sleep"] }
    - source: { namespaces: ["test"] }
    to:
    - operation: { methods: ["GET"], paths: ["/info*"] }
    - operation: { methods: ["POST"], paths: ["/data"] }
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
`,
    cases: [
      {
        name: "sleep GET /info with JWT",
        request: http(id("default", "sleep"), "GET", "/info/x", {
          requestPrincipal: "https://accounts.google.com/u",
          claims: { iss: "https://accounts.google.com" },
        }),
        allowed: true,
      },
      {
        name: "ns test POST /data with JWT",
        request: http(id("test", "any"), "POST", "/data", { claims: { iss: "https://accounts.google.com" } }),
        allowed: true,
      },
      {
        name: "sleep GET /info without JWT",
        request: http(id("default", "sleep"), "GET", "/info"),
        allowed: false,
      },
      {
        name: "sleep POST /info",
        request: http(id("default", "sleep"), "POST", "/info", {
          claims: { iss: "https://accounts.google.com" },
        }),
        allowed: false,
      },
      {
        name: "other caller",
        request: http(id("prod", "x"), "GET", "/info", { claims: { iss: "https://accounts.google.com" } }),
        allowed: false,
      },
      {
        name: "other issuer",
        request: http(id("test", "x"), "GET", "/info", { claims: { iss: "https://evil.example" } }),
        allowed: false,
      },
    ],
  },
  {
    title: "reference: DENY requests from non-foo namespaces",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: httpbin, namespace: foo }
spec:
  action: DENY
  rules:
  - from:
    - source: { notNamespaces: ["foo"] }
`,
    cases: [
      { name: "from foo", request: http(id("foo", "a"), "GET", "/"), allowed: true },
      { name: "from bar", request: http(id("bar", "a"), "GET", "/"), allowed: false },
      { name: "plaintext (no namespace)", request: http(undefined, "GET", "/"), allowed: false },
      { name: "L4 from bar", request: tcp(id("bar", "a"), 8000, { namespace: "foo" }), allowed: false },
      { name: "L4 from foo", request: tcp(id("foo", "a"), 8000, { namespace: "foo" }), allowed: true },
    ],
  },
  {
    title: "reference: allow-nothing (spec: {})",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-nothing, namespace: foo }
spec: {}
`,
    cases: [
      { name: "any HTTP", request: http(id("foo", "a"), "GET", "/"), allowed: false },
      { name: "any TCP", request: tcp(id("foo", "a"), 5432, { namespace: "foo" }), allowed: false },
      {
        name: "other namespace untouched",
        request: tcp(id("foo", "a"), 5432, { namespace: "bar" }),
        allowed: true,
      },
    ],
  },
  {
    title: "reference: deny-all (DENY with rules: [{}])",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-all, namespace: foo }
spec: { action: DENY, rules: [{}] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-all, namespace: foo }
spec: { action: ALLOW, rules: [{}] }
`,
    cases: [
      { name: "DENY wins over allow-all", request: http(id("foo", "a"), "GET", "/"), allowed: false },
      { name: "DENY wins at L4 too", request: tcp(undefined, 80, { namespace: "foo" }), allowed: false },
    ],
  },
  {
    title: "reference: allow-all (rules: [{}])",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-all, namespace: foo }
spec: { action: ALLOW, rules: [{}] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-nothing, namespace: foo }
spec: {}
`,
    cases: [
      { name: "allow-all beats allow-nothing", request: http(undefined, "DELETE", "/x"), allowed: true },
      { name: "at L4 too", request: tcp(undefined, 22, { namespace: "foo" }), allowed: true },
    ],
  },
  {
    title: "reference: selector-scoped ALLOW of GET/HEAD for app=products",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-read, namespace: default }
spec:
  selector: { matchLabels: { app: products } }
  action: ALLOW
  rules:
  - to:
    - operation: { methods: ["GET", "HEAD"] }
`,
    cases: [
      {
        name: "GET products",
        request: http(undefined, "GET", "/", {}, { namespace: "default", labels: { app: "products" } }),
        allowed: true,
      },
      {
        name: "POST products",
        request: http(undefined, "POST", "/", {}, { namespace: "default", labels: { app: "products" } }),
        allowed: false,
      },
      {
        name: "POST reviews (not selected)",
        request: http(undefined, "POST", "/", {}, { namespace: "default", labels: { app: "reviews" } }),
        allowed: true,
      },
      {
        name: "ztunnel fails safe for products",
        request: tcp(undefined, 9080, { namespace: "default", labels: { app: "products" } }),
        allowed: false,
      },
    ],
  },
  {
    title: "reference: DENY requests without a JWT (notRequestPrincipals: ['*'])",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: require-jwt, namespace: foo }
spec:
  action: DENY
  rules:
  - from:
    - source: { notRequestPrincipals: ["*"] }
`,
    cases: [
      {
        name: "with JWT",
        request: http(undefined, "GET", "/", { requestPrincipal: "iss/sub" }),
        allowed: true,
      },
      { name: "without JWT", request: http(undefined, "GET", "/"), allowed: false },
      {
        name: "ztunnel: rule has nothing enforceable, policy has no effect",
        request: tcp(undefined, 8000, { namespace: "foo" }),
        allowed: true,
      },
    ],
  },
  {
    title: "reference: DENY /admin paths except from one IP block, on port 8080",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: foo }
spec:
  action: DENY
  rules:
  - from:
    - source: { notIpBlocks: ["10.1.0.0/16"] }
    to:
    - operation: { ports: ["8080"], paths: ["/admin*"] }
`,
    cases: [
      {
        name: "outside block to /admin on 8080",
        request: {
          ...http(undefined, "GET", "/admin/x"),
          source: { ip: "192.168.1.1" },
          destination: { ip: "10.2.0.9", port: 8080, workload: { namespace: "foo" } },
        },
        allowed: false,
      },
      {
        name: "inside block",
        request: {
          ...http(undefined, "GET", "/admin/x"),
          destination: { ip: "10.2.0.9", port: 8080, workload: { namespace: "foo" } },
        },
        allowed: true,
      },
      {
        name: "outside block, other path",
        request: {
          ...http(undefined, "GET", "/ok"),
          source: { ip: "192.168.1.1" },
          destination: { ip: "10.2.0.9", port: 8080, workload: { namespace: "foo" } },
        },
        allowed: true,
      },
      {
        name: "ztunnel denies the whole port (path ignored)",
        request: tcp(undefined, 8080, { namespace: "foo" }, "192.168.1.1"),
        allowed: false,
      },
      {
        name: "ztunnel: other ports fine",
        request: tcp(undefined, 9090, { namespace: "foo" }, "192.168.1.1"),
        allowed: true,
      },
    ],
  },
  {
    title: "reference: root-namespace policy applies mesh-wide",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: global-deny-ssh, namespace: istio-system }
spec:
  action: DENY
  rules:
  - to: [{ operation: { ports: ["22"] } }]
`,
    cases: [
      { name: "ns foo, port 22", request: tcp(id("foo", "a"), 22, { namespace: "foo" }), allowed: false },
      { name: "ns bar, port 22", request: tcp(id("foo", "a"), 22, { namespace: "bar" }), allowed: false },
      { name: "port 80", request: tcp(id("foo", "a"), 80, { namespace: "bar" }), allowed: true },
    ],
  },
  {
    title: "reference: when conditions on source.ip and destination.port",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: conditions, namespace: foo }
spec:
  rules:
  - when:
    - key: source.ip
      values: ["10.1.0.0/16", "2001:db8::/32"]
    - key: destination.port
      notValues: ["9000"]
`,
    cases: [
      { name: "v4 inside", request: tcp(undefined, 80, { namespace: "foo" }, "10.1.9.9"), allowed: true },
      { name: "v6 inside", request: tcp(undefined, 80, { namespace: "foo" }, "2001:db8::7"), allowed: true },
      {
        name: "excluded port",
        request: tcp(undefined, 9000, { namespace: "foo" }, "10.1.9.9"),
        allowed: false,
      },
      { name: "outside", request: tcp(undefined, 80, { namespace: "foo" }, "10.3.0.1"), allowed: false },
    ],
  },
  {
    title: "ambient L4 guide: allow only curl to reach httpbin",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-curl-to-httpbin, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: httpbin } }
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/ambient-demo/sa/curl
`,
    cases: [
      {
        name: "curl",
        request: tcp(id("ambient-demo", "curl"), 8000, {
          namespace: "ambient-demo",
          labels: { app: "httpbin" },
        }),
        allowed: true,
      },
      {
        name: "other sa",
        request: tcp(id("ambient-demo", "other"), 8000, {
          namespace: "ambient-demo",
          labels: { app: "httpbin" },
        }),
        allowed: false,
      },
      {
        name: "plaintext",
        request: tcp(undefined, 8000, { namespace: "ambient-demo", labels: { app: "httpbin" } }),
        allowed: false,
      },
      {
        name: "other workload",
        request: tcp(id("ambient-demo", "other"), 8000, {
          namespace: "ambient-demo",
          labels: { app: "web" },
        }),
        allowed: true,
      },
    ],
  },
  {
    title: "ambient L4 guide: an ALLOW with L7 attributes fails safe at ztunnel",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-curl-get, namespace: ambient-demo }
spec:
  selector: { matchLabels: { app: httpbin } }
  action: ALLOW
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/ambient-demo/sa/curl"] } }]
    to: [{ operation: { methods: ["GET"] } }]
`,
    cases: [
      {
        name: "curl at L4 is denied (rule dropped)",
        request: tcp(id("ambient-demo", "curl"), 8000, {
          namespace: "ambient-demo",
          labels: { app: "httpbin" },
        }),
        allowed: false,
      },
      {
        name: "curl GET at a waypoint",
        request: http(
          id("ambient-demo", "curl"),
          "GET",
          "/",
          {},
          { namespace: "ambient-demo", labels: { app: "httpbin" } },
        ),
        allowed: true,
      },
      {
        name: "curl DELETE at a waypoint",
        request: http(
          id("ambient-demo", "curl"),
          "DELETE",
          "/",
          {},
          { namespace: "ambient-demo", labels: { app: "httpbin" } },
        ),
        allowed: false,
      },
    ],
  },
  {
    title: "edge cases: wildcards *, *x, x* and notPrincipals combinations",
    yaml: `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: edges, namespace: foo }
spec:
  rules:
  - from:
    - source: { principals: ["*"], notPrincipals: ["*/sa/blocked", "cluster.local/ns/evil*"] }
    - source: { namespaces: ["team-*"] }
`,
    cases: [
      { name: "any identity", request: tcp(id("foo", "a"), 80, { namespace: "foo" }), allowed: true },
      {
        name: "suffix-excluded",
        request: tcp(id("foo", "blocked"), 80, { namespace: "foo" }),
        allowed: false,
      },
      { name: "prefix-excluded", request: tcp(id("evil-ns", "a"), 80, { namespace: "foo" }), allowed: false },
      {
        name: "but second source matches team-*",
        request: tcp(id("team-x", "blocked"), 80, { namespace: "foo" }),
        allowed: true,
      },
      {
        name: "plaintext never has a principal",
        request: tcp(undefined, 80, { namespace: "foo" }),
        allowed: false,
      },
    ],
  },
];

describe("Istio documentation examples", () => {
  for (const ex of examples) {
    it(ex.title, () => {
      const engine = createAuthorizationEngine();
      const r = engine.applyYaml(ex.yaml);
      assert.deepEqual(
        r.errors.map((e) => e.message),
        [],
      );
      for (const c of ex.cases) {
        const d = engine.evaluate(c.request);
        assert.equal(d.allowed, c.allowed, `${c.name}: ${d.reason}`);
      }
    });
  }
});
