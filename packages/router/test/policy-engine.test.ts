// The waypoint's L7 authorization with @ambient/policy's real engine plugged in: Istio
// AuthorizationPolicy YAML in, 403 "RBAC: access denied" or a routed request out.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createAuthorizationEngine } from "@ambient/policy";
import {
  type Backend,
  type BackendHandler,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

const PRODUCTPAGE = "spiffe://cluster.local/ns/bookinfo/sa/productpage";
const RATINGS = "spiffe://cluster.local/ns/bookinfo/sa/ratings";

const POLICIES = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reviews-viewer, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: ALLOW
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/bookinfo/sa/productpage"] } }]
    to: [{ operation: { methods: ["GET"], paths: ["/reviews/{*}", "/reviews"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/reviews/admin"] } }]
`;

/** A waypoint of the bookinfo namespace routing every request to `backend`, with `engine` as its policy. */
function reviewsWaypoint(
  backend: Backend,
  engine: ReturnType<typeof createAuthorizationEngine>,
): Promise<Waypoint> {
  return startWaypoint(
    { "bookinfo/reviews": [backend.endpoint] },
    {
      routes: [
        {
          kind: "HTTPRoute",
          metadata: { name: "reviews", namespace: "bookinfo" },
          spec: {
            parentRefs: [{ kind: "Gateway", name: "waypoint" }],
            rules: [{ backendRefs: [{ name: "reviews", port: 80 }] }],
          },
        },
      ],
      waypoint: { name: "waypoint", namespace: "bookinfo" },
      policy: engine,
    },
    {
      peerIdentity: PRODUCTPAGE,
      remoteAddress: "10.0.0.7",
      destination: { address: "10.96.0.20", port: 80 },
    },
  );
}

describe("L7 authorization with @ambient/policy's AuthorizationEngine", () => {
  let backend: Backend;
  let wp: Waypoint;
  // Waypoint semantics: only policies attached with targetRefs to this waypoint or the Service apply.
  const engine = createAuthorizationEngine({ rootNamespace: "istio-system", l7Attachment: "waypoint" });

  before(async () => {
    const { errors } = engine.applyYaml(POLICIES);
    assert.deepEqual(errors, []);
    backend = await startBackend("reviews");
    wp = await reviewsWaypoint(backend, engine);
  });
  after(async () => {
    await wp.close();
    await stopServer(backend.server);
  });

  it("routes what an ALLOW rule permits", async () => {
    const res = await request(wp.port, { path: "/reviews/1" });
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).url, "/reviews/1");
  });

  it("denies a method the ALLOW rule does not name", async () => {
    const res = await request(wp.port, { method: "DELETE", path: "/reviews/1" });
    assert.equal(res.status, 403);
    assert.equal(res.body, "RBAC: access denied");
  });

  it("denies a path a DENY rule names even for an allowed caller", async () => {
    const res = await request(wp.port, { path: "/reviews/admin" });
    assert.equal(res.status, 403);
  });

  it("denies another identity and never reaches the backend", async () => {
    const before = backend.requests.length;
    wp.info = { ...wp.info, peerIdentity: RATINGS };
    try {
      const res = await request(wp.port, { path: "/reviews/1" });
      assert.equal(res.status, 403);
      assert.equal(backend.requests.length, before);
    } finally {
      wp.info = { ...wp.info, peerIdentity: PRODUCTPAGE };
    }
  });
});

describe("L7 policy on the headers a request is acted on by", () => {
  let backend: Backend;
  let wp: Waypoint;
  const engine = createAuthorizationEngine({ rootNamespace: "istio-system", l7Attachment: "waypoint" });

  before(async () => {
    const { errors } = engine.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-websockets-no-admin-host, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules:
  - when: [{ key: "request.headers[upgrade]", values: ["websocket"] }]
  - when: [{ key: "request.headers[:authority]", values: ["admin.example.com"] }]
  - when: [{ key: "request.headers[host]", values: ["ops.example.com"] }]
  - when: [{ key: "request.headers[:method]", values: ["PATCH"] }]
  - when: [{ key: "request.headers[:path]", values: ["*?debug=1"] }]
`);
    assert.deepEqual(errors, []);
    backend = await startBackend("reviews");
    wp = await reviewsWaypoint(backend, engine);
  });
  after(async () => {
    await wp.close();
    await stopServer(backend.server);
  });

  const status = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  const head = (lines: string[]) => `${lines.join("\r\n")}\r\n\r\n`;

  it("denies a WebSocket upgrade on its upgrade header, which is not forwarded as it came", async () => {
    const upgrade = await rawExchange(
      wp.port,
      head([
        "GET /chat HTTP/1.1",
        "host: reviews",
        "connection: Upgrade",
        "upgrade: websocket",
        "sec-websocket-version: 13",
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
      ]),
      /\r\n\r\n/,
    );
    assert.equal(status(upgrade), 403, upgrade);
  });

  it("denies on :authority and host (the same field), :method and :path with its query", async () => {
    const before = backend.requests.length;
    for (const [lines, expected] of [
      [["GET /reviews/1 HTTP/1.1", "host: admin.example.com", "connection: close"], 403],
      [["GET /reviews/1 HTTP/1.1", "host: ops.example.com", "connection: close"], 403],
      [["PATCH /reviews/1 HTTP/1.1", "host: reviews", "connection: close", "content-length: 0"], 403],
      [["GET /reviews/1?debug=1 HTTP/1.1", "host: reviews", "connection: close"], 403],
      [["GET /reviews/1?debug=0 HTTP/1.1", "host: reviews", "connection: close"], 200],
    ] as const) {
      const out = await rawExchange(wp.port, head([...lines]));
      assert.equal(status(out), expected, `${lines[0]} ${lines[1]}: ${out.slice(0, 40)}`);
    }
    assert.equal(backend.requests.length, before + 1, "only the allowed request reached the backend");
  });
});

describe("header fields named like members of a JavaScript object", () => {
  let backend: Backend;
  let fallback: Backend;
  let wp: Waypoint;
  const engine = createAuthorizationEngine({ rootNamespace: "istio-system", l7Attachment: "waypoint" });

  before(async () => {
    const { errors } = engine.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-all, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: ALLOW
  rules: [{}]
`);
    assert.deepEqual(errors, []);
    // Both answer the fields exactly as they arrived.
    const rawFields: BackendHandler = (req, res, _body, b) => {
      const body = JSON.stringify({ id: b.id, fields: req.rawHeaders });
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
    };
    backend = await startBackend("by-header", rawFields);
    fallback = await startBackend("fallback", rawFields);
    wp = await startWaypoint(
      { "bookinfo/by-header": [backend.endpoint], "bookinfo/fallback": [fallback.endpoint] },
      {
        routes: [
          {
            kind: "HTTPRoute",
            metadata: { name: "reviews", namespace: "bookinfo" },
            spec: {
              parentRefs: [{ kind: "Gateway", name: "waypoint" }],
              rules: [
                {
                  matches: [{ headers: [{ name: "constructor", value: "x" }] }],
                  backendRefs: [{ name: "by-header", port: 80 }],
                },
                { backendRefs: [{ name: "fallback", port: 80 }] },
              ],
            },
          },
        ],
        waypoint: { name: "waypoint", namespace: "bookinfo" },
        policy: engine,
      },
      { peerIdentity: PRODUCTPAGE, destination: { address: "10.96.0.20", port: 80 } },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(backend.server);
    await stopServer(fallback.server);
  });

  /** Sends a GET with `fields`; the status and what the backend answered. */
  async function send(fields: string[]): Promise<{ status: number; id?: string; fields?: string[] }> {
    const lines = ["GET /reviews/1 HTTP/1.1", "host: reviews", "connection: close", ...fields];
    const out = await rawExchange(wp.port, `${lines.join("\r\n")}\r\n\r\n`);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0);
    const body = out.slice(out.indexOf("\r\n\r\n") + 4);
    return status === 200
      ? { status, ...(JSON.parse(body) as { id: string; fields: string[] }) }
      : { status };
  }

  /** The values of `name` among raw fields, in order. */
  const values = (fields: string[] | undefined, name: string) =>
    (fields ?? []).flatMap((v, i) => (i % 2 === 1 && fields?.[i - 1]?.toLowerCase() === name ? [v] : []));

  it("treats constructor and __proto__ as ordinary fields: allowed, routed on and forwarded as sent", async () => {
    const r = await send(["constructor: x", "__proto__: y"]);
    assert.equal(r.status, 200);
    assert.equal(r.id, "by-header");
    assert.deepEqual(values(r.fields, "constructor"), ["x"]);
    assert.deepEqual(values(r.fields, "__proto__"), ["y"]);
  });

  it("keeps every line of a repeated constructor field", async () => {
    const r = await send(["constructor: a", "constructor: b"]);
    assert.equal(r.status, 200);
    assert.equal(r.id, "fallback", "a,b is not x");
    assert.deepEqual(values(r.fields, "constructor"), ["a", "b"]);
  });

  it("does not match a rule on a field the request does not have", async () => {
    const r = await send(["x-other: 1"]);
    assert.equal(r.status, 200);
    assert.equal(r.id, "fallback");
    assert.deepEqual(values(r.fields, "constructor"), []);
  });
});
