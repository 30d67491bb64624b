// The waypoint's request path over real HBONE, as the demo runs it: a client pod's bytes enter its
// ztunnel's SOCKS5 port, travel an HBONE tunnel to the waypoint, and leave over HBONE to the pod.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  httpOverSocks,
  loopbackSubnet,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
  waitFor,
} from "../test/mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();
const CLIENT = "spiffe://cluster.local/ns/shop/sa/client";
const WAYPOINT = "spiffe://cluster.local/ns/shop/sa/waypoint";

const pod = (name: string, app: string, node: string, sa: string, n: number, extra = "") => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: shop, labels: { app: ${app}${extra} } }
spec: { nodeName: ${node}, serviceAccountName: ${sa} }
status: { podIP: ${ip(n)} }
`;

const manifests = [
  shopWithWaypoint(ip(6)),
  pod("client", "client", "node-a", "client", 2),
  pod("api-0", "api", "node-b", "api", 7),
  pod("admin-0", "admin", "node-b", "admin", 8),
  `
apiVersion: v1
kind: Service
metadata: { name: api, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  clusterIP: ${ip(100)}
  selector: { app: api }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
---
apiVersion: v1
kind: Service
metadata: { name: admin, namespace: shop }
spec:
  clusterIP: ${ip(101)}
  selector: { app: admin }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: api, port: 80 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /admin } }]
      backendRefs: [{ name: admin, port: 80 }]
    - backendRefs: [{ name: api, port: 80 }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: api-client-only, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  action: DENY
  rules:
    - to: [{ operation: { paths: ["/admin", "/admin/*"] } }]
    - to: [{ operation: { methods: ["GET"], paths: ["/no-get"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: mesh-no-internal, namespace: istio-system }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/internal"] } }] }]
`,
].join("\n---\n");

/** A connection from the client pod to the api Service VIP through its ztunnel's SOCKS5 port. */
const dial = (proxy: string) => socks5Dial({ proxy, from: ip(2), to: `${ip(100)}:80` });

/** Writes `data`, then resolves with everything received once the connection closes. */
const exchange = (proxy: string, data: string | Buffer) =>
  httpOverSocks({ proxy, from: ip(2), to: `${ip(100)}:80` }, data);

function h2Frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK literal with incremental indexing and a literal name; lengths below 16384. */
function hpackLiteral(name: string, value: string): Buffer {
  const len = (n: number) =>
    n < 127 ? Buffer.from([n]) : Buffer.from([127, ((n - 127) % 128) | 128, (n - 127) >> 7]);
  return Buffer.concat([
    Buffer.from([0x40]),
    len(name.length),
    Buffer.from(name),
    len(value.length),
    Buffer.from(value),
  ]);
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** One HTTP/2 request (END_STREAM) with `:scheme http`, `:authority api.shop` and the given fields. */
function h2Request(method: Buffer, path: Buffer, extra: Buffer = Buffer.alloc(0)): Buffer {
  const block = Buffer.concat([
    method,
    path,
    Buffer.from([0x86]),
    hpackLiteral(":authority", "api.shop"),
    extra,
  ]);
  return Buffer.concat([PREFACE, h2Frame(0x4, 0, 0, Buffer.alloc(0)), h2Frame(0x1, 0x5, 1, block)]);
}

describe("waypoint request path over HBONE", { timeout: 120_000 }, () => {
  let mesh: TestMesh;
  const apps: Server[] = [];
  const seen: { app: string; method: string; url: string; xfcc: string; peer: string }[] = [];
  let socks = "";

  const record = (app: string, req: IncomingMessage) =>
    seen.push({
      app,
      method: req.method ?? "",
      url: req.url ?? "",
      xfcc: String(req.headers["x-forwarded-client-cert"] ?? "-"),
      peer: String(req.headers["x-envoy-peer-metadata"] ?? "-"),
    });

  before(async () => {
    for (const [name, n] of [
      ["api-0", 7],
      ["admin-0", 8],
    ] as const) {
      const app = createServer((req, res) => {
        record(name, req);
        req.resume();
        res.end(`${name} got ${req.method} ${req.url}`);
      });
      app.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
        record(name, req);
        socket.on("error", () => {});
        socket.on("end", () => socket.end());
        if (req.url !== "/ws") {
          // Refuses to switch and keeps the connection for more HTTP.
          socket.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nno ws");
          return;
        }
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\nx-xfcc: ${req.headers["x-forwarded-client-cert"] ?? "-"}\r\n\r\n`,
        );
        if (head.length > 0) socket.write(`echo:${head.toString()}`);
        socket.on("data", (d: Buffer) => socket.write(`echo:${d.toString()}`));
      });
      app.listen(8080, ip(n));
      await once(app, "listening");
      apps.push(app);
    }
    mesh = await startTestMesh({
      manifests,
      tempPrefix: "waypoint-security-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      // Room for a loaded machine: a request goes SOCKS5, ztunnel, HBONE before its head is written. The
      // one test that waits for this deadline to expire allows 30 s for it.
      waypoint: { gateway: { name: "waypoint", namespace: "shop" }, ip: ip(6), headersTimeoutMs: 5000 },
    });
    socks = mesh.socks5;
  });

  after(async () => {
    await mesh?.close();
    for (const app of apps) {
      app.closeAllConnections();
      app.close();
    }
  });

  const get = (path: string, extra = "") =>
    exchange(socks, `GET ${path} HTTP/1.1\r\nhost: api.shop\r\nconnection: close\r\n${extra}\r\n`);

  it("never pipes a connection whose upgrade the backend did not accept", async () => {
    const before = seen.length;
    const text = await exchange(
      socks,
      "GET /chat HTTP/1.1\r\nhost: api.shop\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n" +
        "POST /admin HTTP/1.1\r\nhost: api.shop\r\ncontent-length: 0\r\n\r\n",
    );
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(text.endsWith("no ws"), text);
    assert.deepEqual(
      seen.slice(before).map((r) => `${r.app} ${r.method} ${r.url}`),
      ["api-0 GET /chat"],
    );
  });

  it("refuses an absolute-form upgrade target instead of matching it against the DENY", async () => {
    const before = seen.length;
    const text = await exchange(
      socks,
      "GET http://api.shop/admin HTTP/1.1\r\nhost: api.shop\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
    );
    assert.match(text, /^HTTP\/1\.1 400 /);
    assert.equal(seen.length, before);
  });

  it("switches protocols on the backend's 101, with the proxy's XFCC", async () => {
    const c = await dial(socks);
    c.socket.write(
      "GET /ws HTTP/1.1\r\nhost: api.shop\r\nconnection: Upgrade\r\nupgrade: websocket\r\n" +
        "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/shop/sa/admin\r\n\r\nearly",
    );
    await waitFor(() => c.text().includes("echo:early"));
    assert.match(c.text(), /^HTTP\/1\.1 101 /);
    assert.ok(c.text().includes(`x-xfcc: By=${WAYPOINT};URI=${CLIENT}\r\n`), c.text());
    c.socket.write("ping");
    await waitFor(() => c.text().includes("echo:ping"));
    c.socket.destroy();
  });

  it("routes, authorizes and forwards the one normalized path", async () => {
    const before = seen.length;
    const text = await get("/admin/../hello");
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(text.endsWith("api-0 got GET /hello"), text);
    assert.match(await get("/hello/%2e%2e/admin"), /^HTTP\/1\.1 403 /);
    assert.match(await get("/a%zz"), /^HTTP\/1\.1 400 /);
    assert.deepEqual(
      seen.slice(before).map((r) => `${r.app} ${r.url}`),
      ["api-0 /hello"],
    );
  });

  it("applies the root namespace's policy on the waypoint GatewayClass", async () => {
    const before = seen.length;
    assert.match(await get("/internal"), /^HTTP\/1\.1 403 /);
    assert.match(await get("/internal-not"), /^HTTP\/1\.1 200 /);
    assert.deepEqual(
      seen.slice(before).map((r) => `${r.app} ${r.url}`),
      ["api-0 /internal-not"],
    );
  });

  it("sets XFCC from the tunnel's peer and drops forged identity headers", async () => {
    const before = seen.length;
    const text = await get(
      "/whoami",
      "x-forwarded-client-cert: URI=spiffe://cluster.local/ns/shop/sa/admin\r\nx-envoy-peer-metadata: Cg==\r\n",
    );
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.deepEqual(seen.slice(before), [
      { app: "api-0", method: "GET", url: "/whoami", xfcc: `By=${WAYPOINT};URI=${CLIENT}`, peer: "-" },
    ]);
  });

  it("refuses an HTTP/2 `get` that would reach the HTTP/1.1 backend as GET past a DENY on GET", async () => {
    const before = seen.length;
    const path = hpackLiteral(":path", "/no-get");
    const lower = await dial(socks);
    lower.socket.write(h2Request(hpackLiteral(":method", "get"), path));
    await waitFor(() => lower.text().includes("bad method"));
    lower.socket.destroy();
    const upper = await dial(socks);
    upper.socket.write(h2Request(Buffer.from([0x82]), path));
    await waitFor(() => upper.text().includes("RBAC: access denied"));
    upper.socket.destroy();
    assert.equal(seen.length, before);
  });

  it("answers 431 to a small HTTP/2 header block that decodes past the limit", async () => {
    const before = seen.length;
    const bomb = Buffer.concat([hpackLiteral("x-bomb", "b".repeat(4000)), Buffer.alloc(120, 0x80 | 62)]);
    const c = await dial(socks);
    c.socket.write(h2Request(Buffer.from([0x82]), Buffer.from([0x84]), bomb));
    await waitFor(() => c.text().includes("request header fields too large"));
    c.socket.destroy();
    assert.equal(seen.length, before);
  });

  it("closes 200 tunnels whose request heads never complete", async () => {
    const before = seen.length;
    const conns = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const c = await dial(socks);
        if (i % 2 === 0) c.socket.write("GET /slow HTTP/1.1\r\nhost: api.shop\r\n");
        else
          c.socket.write(
            Buffer.concat([
              PREFACE,
              h2Frame(0x4, 0, 0, Buffer.alloc(0)),
              h2Frame(0x1, 0x1, 1, Buffer.from([0x82, 0x84, 0x86])),
            ]),
          );
        return c;
      }),
    );
    const closed = await Promise.all(
      conns.map(
        ({ socket }) =>
          new Promise<boolean>((resolve) => {
            if (socket.destroyed) return resolve(true);
            const timer = setTimeout(() => resolve(false), 30_000);
            socket.once("close", () => {
              clearTimeout(timer);
              resolve(true);
            });
          }),
      ),
    );
    for (const { socket } of conns) socket.destroy();
    assert.equal(closed.filter(Boolean).length, 200);
    assert.equal(seen.length, before);
  });
});
