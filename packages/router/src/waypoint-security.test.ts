import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createAuthorizationEngine } from "@ambient/policy";
import {
  type Backend,
  httpRoute,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";
import type { AuthorizationDecision, AuthorizationRequest } from "./authorization.js";
import { RouterError } from "./errors.js";
import type { Endpoint } from "./upstream.js";
import { createWaypointHandler } from "./waypoint-handler.js";

const PEER = "spiffe://cluster.local/ns/default/sa/client";
const WAYPOINT = "spiffe://cluster.local/ns/default/sa/waypoint";

/** Denies every path under /admin and records what it was asked. */
function denyAdmin(seen: AuthorizationRequest[]) {
  return {
    evaluate(r: AuthorizationRequest): AuthorizationDecision {
      seen.push(r);
      const path = r.http?.path ?? "";
      return path === "/admin" || path.startsWith("/admin/")
        ? { allowed: false, reason: "DENY /admin" }
        : { allowed: true, reason: "" };
    },
  };
}

/** One HTTP/2 frame. */
function h2Frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1). */
function hpackInt(value: number, prefixBits: number, first: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** A literal field added to the dynamic table, with a literal name. */
function hpackLiteral(name: string, value: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x40]),
    hpackInt(name.length, 7, 0),
    Buffer.from(name, "latin1"),
    hpackInt(value.length, 7, 0),
    Buffer.from(value, "latin1"),
  ]);
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
/** `:method GET`, `:path /`, `:scheme http` from the static table. */
const GET_ROOT = Buffer.from([0x82, 0x84, 0x86]);

/**
 * A header block of ~4 KB that decodes to ~490 KB: one 4000-byte field enters the dynamic table and is
 * then referenced 120 times, one byte each.
 */
function hpackBomb(): Buffer {
  return Buffer.concat([
    GET_ROOT,
    hpackLiteral(":authority", "svc.example.com"),
    hpackLiteral("x-bomb", "b".repeat(4000)),
    Buffer.alloc(120, 0x80 | 62),
  ]);
}

/** Opens a TCP connection, writes `data`, and collects bytes until the peer closes or `waitMs` pass. */
async function rawSession(
  port: number,
  data: Buffer,
  waitMs: number,
): Promise<{ bytes: Buffer; closedByPeer: boolean }> {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.on("error", () => {});
  socket.write(data);
  const closedByPeer = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  socket.destroy();
  return { bytes: Buffer.concat(chunks), closedByPeer };
}

/** A WebSocket-ish backend: `/ws*` switches protocols and echoes; every other request is plain HTTP. */
async function startUpgradeBackend(): Promise<{
  server: http.Server;
  endpoint: Endpoint;
  seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[];
}> {
  const seen: { method: string; url: string; headers: http.IncomingHttpHeaders }[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    req.resume();
    res.end(`plain ${req.method} ${req.url}`);
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    // HTTP server sockets allow half-open: end ours when the waypoint ends its side.
    socket.on("end", () => socket.end());
    // A client that goes away mid-relay reaches this side as a reset.
    socket.on("error", () => {});
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    if (!(req.url ?? "").startsWith("/ws")) {
      // Refuses to switch, and keeps the connection open for more HTTP.
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nnot a ws ok");
      return;
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-route: ${req.headers["x-route"] ?? "-"}\r\nx-xfcc: ${req.headers["x-forwarded-client-cert"] ?? "-"}\r\n\r\n`,
    );
    if (head.length > 0) socket.write(`echo:${head.toString()}`);
    socket.on("data", (d: Buffer) => socket.write(`echo:${d.toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, endpoint: { address: "127.0.0.1", port: (server.address() as AddressInfo).port }, seen };
}

describe("HTTP/1.1 upgrades take the request path of every other request", () => {
  let backend: Awaited<ReturnType<typeof startUpgradeBackend>>;
  let wp: Waypoint;
  const seen: AuthorizationRequest[] = [];

  before(async () => {
    backend = await startUpgradeBackend();
    wp = await startWaypoint(
      { "default/ws": [backend.endpoint] },
      {
        policy: denyAdmin(seen),
        identity: WAYPOINT,
        routes: [
          httpRoute("r", [
            {
              filters: [
                {
                  type: "RequestHeaderModifier",
                  requestHeaderModifier: { set: [{ name: "x-route", value: "r" }] },
                },
              ],
              backendRefs: [{ name: "ws", port: 80 }],
            },
          ]),
        ],
      },
      { peerIdentity: PEER },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(backend.server);
  });

  const upgradeHead = (target: string, extra = "") =>
    `GET ${target} HTTP/1.1\r\nhost: svc.example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`;

  it("relays a backend's non-101 answer as HTTP and never pipes later requests past policy", async () => {
    const before = backend.seen.length;
    const out = await rawSession(
      wp.port,
      Buffer.from(
        `${upgradeHead("/chat")}POST /admin HTTP/1.1\r\nhost: svc.example.com\r\ncontent-length: 0\r\n\r\n`,
      ),
      3000,
    );
    const text = out.bytes.toString("latin1");
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.match(text, /not a ws ok/);
    assert.equal(out.closedByPeer, true, "the connection closes after a response that did not switch");
    assert.deepEqual(
      backend.seen.slice(before).map((r) => `${r.method} ${r.url}`),
      ["GET /chat"],
      "the bytes after the upgrade request never reach the backend",
    );
  });

  it("answers a denied upgrade with 403 before any byte reaches the backend", async () => {
    const before = backend.seen.length;
    const out = await rawExchange(wp.port, `${upgradeHead("/admin/ws")}hello`, /RBAC: access denied/);
    assert.match(out, /^HTTP\/1\.1 403 /);
    assert.equal(backend.seen.length, before);
  });

  it("refuses an absolute-form upgrade target with 400 instead of matching it against policy", async () => {
    const before = backend.seen.length;
    const out = await rawExchange(wp.port, upgradeHead("http://svc.example.com/admin/ws"), /\r\n\r\n/);
    assert.match(out, /^HTTP\/1\.1 400 /);
    assert.equal(backend.seen.length, before);
  });

  it("refuses an upgrade request that declares a body", async () => {
    const before = backend.seen.length;
    const out = await rawExchange(wp.port, upgradeHead("/ws", "content-length: 5\r\n"), /\r\n\r\n/);
    assert.match(out, /^HTTP\/1\.1 400 /);
    assert.equal(backend.seen.length, before);
  });

  it("switches on 101 only, with route filters and the proxy's identity headers applied", async () => {
    const before = backend.seen.length;
    const socket = net.connect(wp.port, "127.0.0.1");
    let data = "";
    socket.on("data", (c: Buffer) => {
      data += c.toString("latin1");
    });
    // Bytes right behind the head wait for the 101; a forged certificate header is replaced.
    socket.write(`${upgradeHead("/ws/chat", "x-forwarded-client-cert: URI=spiffe://evil\r\n")}early`);
    while (!data.includes("echo:early")) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.match(data, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(data, /\r\nx-route: r\r\n/);
    assert.match(data, new RegExp(`\\r\\nx-xfcc: By=${WAYPOINT};URI=${PEER}\\r\\n`));
    socket.write("more");
    while (!data.includes("echo:more")) await new Promise((resolve) => setTimeout(resolve, 10));
    socket.destroy();
    assert.equal(backend.seen.length, before + 1);
    const policySaw = seen.at(-1);
    assert.equal(policySaw?.http?.path, "/ws/chat");
    assert.equal(policySaw?.http?.headers["x-forwarded-client-cert"], `By=${WAYPOINT};URI=${PEER}`);
  });
});

describe("one method for policy, routing and the backend", () => {
  let a: Backend;
  let wp: Waypoint;
  const seen: AuthorizationRequest[] = [];

  before(async () => {
    a = await startBackend("a");
    wp = await startWaypoint(
      { "default/a": [a.endpoint] },
      {
        policy: {
          evaluate(r) {
            seen.push(r);
            return r.http?.method === "GET"
              ? { allowed: false, reason: "DENY GET" }
              : { allowed: true, reason: "" };
          },
        },
        routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])],
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  async function h2Status(method: string): Promise<number> {
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    client.on("error", () => {});
    try {
      return await new Promise<number>((resolve, reject) => {
        const req = client.request({ ":method": method, ":path": "/x", ":authority": "svc.example.com" });
        req.on("response", (h) => resolve(Number(h[":status"])));
        req.on("error", reject);
        req.resume();
        req.end();
      });
    } finally {
      client.close();
    }
  }

  it("refuses a lower-case HTTP/2 method that the HTTP/1.1 backend would receive upper-cased", async () => {
    const before = a.requests.length;
    seen.length = 0;
    assert.equal(await h2Status("get"), 400);
    assert.equal(a.requests.length, before, "never forwarded as GET past a DENY on GET");
    assert.equal(seen.length, 0);
    assert.equal(await h2Status("GET"), 403);
  });

  it("forwards a method exactly as policy saw it", async () => {
    const before = a.requests.length;
    seen.length = 0;
    assert.equal(await h2Status("PROPFIND"), 200);
    assert.equal(seen[0]?.http?.method, "PROPFIND");
    assert.equal(a.requests[before]?.method, "PROPFIND");
  });
});

describe("identity headers belong to the proxy", () => {
  let a: Backend;
  let wp: Waypoint;
  const seen: AuthorizationRequest[] = [];

  before(async () => {
    a = await startBackend("a");
    wp = await startWaypoint(
      { "default/a": [a.endpoint] },
      {
        policy: denyAdmin(seen),
        identity: WAYPOINT,
        routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])],
      },
      { peerIdentity: PEER },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  const forged = {
    "x-forwarded-client-cert": "By=spiffe://x;URI=spiffe://cluster.local/ns/admin/sa/root",
    "x-envoy-peer-metadata": "Cg==",
    "x-envoy-peer-metadata-id": "sidecar~10.0.0.1~root.admin~admin.svc.cluster.local",
    "x-envoy-expected-rq-timeout-ms": "1",
    "x-envoy-internal": "true",
    "x-istio-attributes": "forged",
    "x-kept": "yes",
  };

  it("drops forged certificate and Envoy/Istio headers and sets XFCC from the tunnel's peer", async () => {
    const before = a.requests.length;
    const res = await request(wp.port, { path: "/hello", headers: forged });
    assert.equal(res.status, 200);
    const got = a.requests[before]?.headers ?? {};
    assert.equal(got["x-forwarded-client-cert"], `By=${WAYPOINT};URI=${PEER}`);
    for (const name of Object.keys(forged).filter((n) => n !== "x-forwarded-client-cert" && n !== "x-kept"))
      assert.equal(got[name], undefined, name);
    assert.equal(got["x-kept"], "yes");
    const policySaw = seen.at(-1)?.http?.headers ?? {};
    assert.equal(policySaw["x-forwarded-client-cert"], `By=${WAYPOINT};URI=${PEER}`);
    assert.equal(policySaw["x-envoy-peer-metadata"], undefined);
  });

  it("drops headers the client names in Connection", async () => {
    const before = a.requests.length;
    const out = await rawExchange(
      wp.port,
      "GET /hello HTTP/1.1\r\nhost: svc\r\nconnection: keep-alive, x-secret\r\nx-secret: 1\r\ncontent-length: 0\r\n\r\n",
      /\r\n\r\n[\s\S]*"id"/,
    );
    assert.match(out, /^HTTP\/1\.1 200 /);
    assert.equal(a.requests[before]?.headers["x-secret"], undefined);
  });

  it("sends no XFCC at all when the tunnel has no verified peer", async () => {
    wp.info = {};
    try {
      const before = a.requests.length;
      await request(wp.port, { path: "/hello", headers: forged });
      assert.equal(a.requests[before]?.headers["x-forwarded-client-cert"], undefined);
    } finally {
      wp.info = { peerIdentity: PEER };
    }
  });
});

describe("request bodies reach an HTTP/1.1 backend framed, whatever the method", () => {
  let a: Backend;
  let wp: Waypoint;
  const seen: AuthorizationRequest[] = [];
  const smuggled = "GET /admin/secret HTTP/1.1\r\nhost: a\r\nx-smuggled: 1\r\n\r\n";

  before(async () => {
    a = await startBackend("a");
    wp = await startWaypoint(
      { "default/a": [a.endpoint] },
      { policy: denyAdmin(seen), routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])] },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  /** What the backend ran after `send`: every request, with its body. */
  async function backendRan(
    send: () => Promise<unknown>,
  ): Promise<{ method: string; url: string; body: string }[]> {
    const before = a.requests.length;
    seen.length = 0;
    await send();
    // A request smuggled in a body would be parsed by the backend right after the first one.
    await new Promise((r) => setTimeout(r, 200));
    return a.requests.slice(before).map(({ method, url, body }) => ({ method, url, body }));
  }

  const chunked = (body: string) => `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;

  for (const method of ["GET", "HEAD", "DELETE", "OPTIONS"]) {
    it(`a chunked ${method} body goes as a body, never as the backend's next request`, async () => {
      const ran = await backendRan(() =>
        rawExchange(
          wp.port,
          `${method} /public HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n${chunked(smuggled)}`,
          /^HTTP\/1\.1 \d{3} [\s\S]*\r\n\r\n/,
        ),
      );
      assert.deepEqual(ran, [{ method, url: "/public", body: smuggled }]);
      assert.ok(seen.every((r) => r.http?.path === "/public"));
    });
  }

  it("a content-length the client names in Connection still frames the body", async () => {
    const ran = await backendRan(() =>
      rawExchange(
        wp.port,
        `GET /public HTTP/1.1\r\nhost: svc\r\nconnection: content-length\r\ncontent-length: ${smuggled.length}\r\n\r\n${smuggled}`,
        /^HTTP\/1\.1 \d{3} [\s\S]*\r\n\r\n/,
      ),
    );
    assert.deepEqual(ran, [{ method: "GET", url: "/public", body: smuggled }]);
  });

  it("an HTTP/2 GET with DATA and no content-length reaches the HTTP/1.1 backend chunked", async () => {
    const ran = await backendRan(async () => {
      const client = http2.connect(`http://127.0.0.1:${wp.port}`);
      client.on("error", () => {});
      try {
        await new Promise<void>((resolve, reject) => {
          const req = client.request(
            { ":method": "GET", ":path": "/public", ":authority": "svc" },
            { endStream: false },
          );
          req.on("response", () => {});
          req.on("end", resolve);
          req.on("error", reject);
          req.resume();
          req.end(smuggled);
        });
      } finally {
        client.close();
      }
    });
    assert.deepEqual(ran, [{ method: "GET", url: "/public", body: smuggled }]);
    assert.equal(a.requests.at(-1)?.headers["transfer-encoding"], "chunked");
  });
});

describe("an answer that comes before the request body is all sent", () => {
  /**
   * A backend that answers each request as soon as its head is in, recording every connection's
   * bytes, behind a waypoint of its own; `close` stops both.
   */
  async function earlyAnswering(): Promise<{ wp: Waypoint; connections: string[]; close(): Promise<void> }> {
    const connections: string[] = [];
    const backend = net.createServer((socket) => {
      const id = connections.push("") - 1;
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        const before = connections[id] as string;
        connections[id] = before + chunk.toString("latin1");
        // One early answer per request head seen on this connection.
        const heads = (connections[id] as string).split("\r\n\r\n").length - 1;
        const answered = before.split("\r\n\r\n").length - 1;
        for (let i = answered; i < heads; i++)
          socket.write("HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno");
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const port = (backend.address() as AddressInfo).port;
    const wp = await startWaypoint(
      { "default/a": [{ address: "127.0.0.1", port, protocol: "http1" }] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])] },
    );
    return {
      wp,
      connections,
      async close() {
        await wp.close();
        await stopServer(backend);
      },
    };
  }

  it("never pools the connection that still owes the backend body bytes (HTTP/2 client resets mid-body)", async () => {
    const { wp, connections, close } = await earlyAnswering();
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    client.on("error", () => {});
    try {
      const upload = client.request(
        { ":method": "POST", ":path": "/upload", ":authority": "svc", "content-length": "400" },
        { endStream: false },
      );
      upload.on("error", () => {});
      upload.write("0123456789");
      const [headers] = await once(upload, "response");
      assert.equal(headers[":status"], 401);
      upload.resume();
      upload.close(http2.constants.NGHTTP2_CANCEL);
      await once(upload, "close");
      // The next request, which the backend would otherwise read as the rest of the upload's body.
      const next = client.request({ ":method": "GET", ":path": "/next", ":authority": "svc" });
      next.resume();
      const [nextHeaders] = await once(next, "response");
      assert.equal(nextHeaders[":status"], 401);
      await once(next, "close");
      assert.equal(connections.length, 2, "the next request went on a new connection");
      assert.match(
        connections[0] as string,
        /\r\n\r\n0123456789$/,
        "the first carried the upload's head and 10 bytes only",
      );
      assert.match(connections[1] as string, /^GET \/next HTTP\/1\.1\r\n/);
    } finally {
      client.close();
      await close();
    }
  });

  it("closes the upstream connection when an HTTP/1.1 client leaves mid-body after the answer", async () => {
    const { wp, connections, close } = await earlyAnswering();
    try {
      const out = await rawExchange(
        wp.port,
        "POST /upload HTTP/1.1\r\nhost: svc\r\ncontent-length: 100\r\n\r\n0123456789",
        /\r\n\r\nno$/,
      );
      assert.match(out, /^HTTP\/1\.1 401 /);
      // A second request: never on the connection that still waits for 90 body bytes.
      await rawExchange(
        wp.port,
        "GET /next HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n",
        /\r\n\r\nno$/,
      );
      assert.equal(connections.length, 2);
      assert.doesNotMatch(connections[0] as string, /GET \/next/);
    } finally {
      await close();
    }
  });
});

describe("a backend that switches protocols unasked", () => {
  it("gets 502 UPE at once, not a request that never ends", { timeout: 10_000 }, async () => {
    const backend = net.createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", () =>
        socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"),
      );
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const port = (backend.address() as AddressInfo).port;
    const wp = await startWaypoint(
      { "default/a": [{ address: "127.0.0.1", port, protocol: "http1" }] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])] },
    );
    try {
      const out = await rawExchange(wp.port, "GET /a HTTP/1.1\r\nhost: svc\r\n\r\n", /protocol error$/);
      assert.match(out, /^HTTP\/1\.1 502 /);
    } finally {
      await wp.close();
      await stopServer(backend);
    }
  });
});

describe("response heads a backend sends that the client cannot be sent as they are", () => {
  const answers: Record<string, string> = {
    "/trailer": "HTTP/1.1 200 OK\r\ntrailer: x-t\r\ncontent-length: 2\r\n\r\nok",
    "/status600": "HTTP/1.1 600 Odd\r\ncontent-length: 2\r\n\r\nok",
    "/nominated":
      "HTTP/1.1 200 OK\r\nconnection: keep-alive, x-secret\r\nx-secret: s3cret\r\nx-kept: 1\r\ncontent-length: 2\r\n\r\nok",
  };
  let backend: net.Server;
  let wp: Waypoint;
  before(async () => {
    backend = net.createServer((socket) => {
      socket.on("error", () => {});
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString("latin1");
        for (let end = text.indexOf("\r\n\r\n"); end >= 0; end = text.indexOf("\r\n\r\n")) {
          const path = text.split(" ")[1] ?? "";
          text = text.slice(end + 4);
          socket.write(answers[path] ?? "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        }
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const port = (backend.address() as AddressInfo).port;
    wp = await startWaypoint(
      { "default/a": [{ address: "127.0.0.1", port, protocol: "http1" }] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])] },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(backend);
  });
  const get = (path: string) =>
    rawExchange(wp.port, `GET ${path} HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n`);

  it("passes a response that announces trailers it cannot have, without the announcement", async () => {
    const out = await get("/trailer");
    assert.match(out, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(out, /\r\ntrailer:/i);
    assert.match(out, /\r\n\r\nok$/);
  });

  it("answers 502 to a status HTTP has no class for", async () => {
    assert.match(await get("/status600"), /^HTTP\/1\.1 502 /);
  });

  it("drops the fields the backend's Connection names, as a request's", async () => {
    const out = await get("/nominated");
    assert.match(out, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(out, /x-secret/i);
    assert.match(out, /\r\nx-kept: 1\r\n/);
  });
});

describe("header edits of an authenticator reach policy and the backend alike", () => {
  let a: Backend;
  let wp: Waypoint;
  const seen: AuthorizationRequest[] = [];

  before(async () => {
    a = await startBackend("a");
    wp = await startWaypoint(
      { "default/a": [a.endpoint] },
      {
        policy: denyAdmin(seen),
        routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])],
        authenticate: (input) =>
          input.headers.authorization === "Bearer good"
            ? {
                kind: "authenticated",
                audiences: [],
                claims: { iss: "issuer" },
                removeHeaders: ["x-user", "authorization"],
                removeQueryParams: ["access_token"],
                addHeaders: [
                  ["x-user", "alice"],
                  ["x-bad", "a\r\nx-injected: 1"],
                ],
              }
            : { kind: "anonymous", removeHeaders: ["x-user"] },
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  it("removes the headers an anonymous request may not carry", async () => {
    const before = a.requests.length;
    seen.length = 0;
    assert.equal((await request(wp.port, { path: "/x", headers: { "x-user": "admin" } })).status, 200);
    assert.equal(a.requests[before]?.headers["x-user"], undefined);
    assert.equal(seen[0]?.http?.headers?.["x-user"], undefined);
  });

  it("takes out the query parameters it names, for policy and the backend alike", async () => {
    const before = a.requests.length;
    seen.length = 0;
    const res = await request(wp.port, {
      path: "/x?a=1&access_token=secret&b=2&access%5Ftoken=again",
      headers: { authorization: "Bearer good" },
    });
    assert.equal(res.status, 200);
    assert.equal(a.requests[before]?.url, "/x?a=1&b=2");
    assert.equal(seen[0]?.http?.headers?.[":path"], "/x?a=1&b=2");
  });

  it("sets the verified ones, with no principal when the credential names none", async () => {
    const before = a.requests.length;
    seen.length = 0;
    const res = await request(wp.port, {
      path: "/x",
      headers: { "x-user": "admin", authorization: "Bearer good" },
    });
    assert.equal(res.status, 200);
    const got = a.requests[before]?.headers ?? {};
    assert.equal(got["x-user"], "alice");
    assert.equal(got.authorization, undefined);
    assert.equal(got["x-bad"], undefined, "a value with CR/LF is not set");
    assert.equal(got["x-injected"], undefined);
    assert.equal(seen[0]?.http?.headers?.["x-user"], "alice");
    assert.equal(seen[0]?.http?.requestPrincipal, undefined);
    assert.deepEqual(seen[0]?.http?.claims, { iss: "issuer" });
  });
});

describe("one host for policy, routing and the backend", () => {
  let a: Backend;
  let wp: Waypoint;
  const engine = createAuthorizationEngine({ l7Attachment: "waypoint" });

  before(async () => {
    assert.deepEqual(
      engine.applyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin-host, namespace: default }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { hosts: ["admin.example.com", "admin.example.com:*"] } }] }]
`).errors,
      [],
    );
    a = await startBackend("a");
    wp = await startWaypoint(
      { "default/a": [a.endpoint] },
      {
        policy: engine,
        waypoint: { name: "waypoint", namespace: "default" },
        routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])],
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  it("denies a host DENY's host written with a trailing dot, and forwards the host policy saw", async () => {
    const before = a.requests.length;
    for (const host of [
      "admin.example.com",
      "admin.example.com.",
      "admin.example.com.:80",
      "Admin.Example.Com..",
    ]) {
      const out = await rawExchange(wp.port, `GET / HTTP/1.1\r\nhost: ${host}\r\nconnection: close\r\n\r\n`);
      assert.match(out, /^HTTP\/1\.1 403 /, host);
    }
    assert.equal(a.requests.length, before, "nothing reached the backend");
    const ok = await rawExchange(
      wp.port,
      "GET / HTTP/1.1\r\nhost: www.example.com.\r\nconnection: close\r\n\r\n",
    );
    assert.match(ok, /^HTTP\/1\.1 200 /);
    assert.equal(a.requests.at(-1)?.headers.host, "www.example.com");
  });
});

describe("limits on what a connection can make the waypoint hold", () => {
  let big: http.Server;
  let endpoint: Endpoint;
  const received: string[] = [];
  let wp: Waypoint;

  before(async () => {
    // A backend that would accept huge header lists, so only the waypoint's own limit can stop one.
    big = http.createServer({ maxHeaderSize: 4 * 1024 * 1024 }, (req, res) => {
      received.push(`${req.method} ${req.url}`);
      setTimeout(() => res.end("ok"), req.url === "/wait" ? 700 : 0);
    });
    await new Promise<void>((resolve) => big.listen(0, "127.0.0.1", resolve));
    endpoint = { address: "127.0.0.1", port: (big.address() as AddressInfo).port, protocol: "http1" };
    wp = await startWaypoint(
      { "default/a": [endpoint] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "a", port: 80 }] }])], headersTimeoutMs: 300 },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(big);
  });

  it("answers 431 to an HTTP/2 header block that decodes past maxHeaderBytes", async () => {
    // No SETTINGS ACK: Node enforces its advertised list size only once the peer has acknowledged it.
    const bytes = Buffer.concat([
      PREFACE,
      h2Frame(0x4, 0, 0, Buffer.alloc(0)),
      h2Frame(0x1, 0x4 | 0x1, 1, hpackBomb()),
    ]);
    assert.ok(bytes.length < 5000);
    const out = await rawSession(wp.port, bytes, 1000);
    assert.match(out.bytes.toString("latin1"), /request header fields too large/);
    assert.deepEqual(received, []);
  });

  it("closes 200 connections whose request heads never complete", async () => {
    const sockets = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const socket = net.connect(wp.port, "127.0.0.1");
        socket.on("error", () => {});
        // Read whatever the waypoint sends (its SETTINGS), so its close is seen.
        socket.resume();
        await once(socket, "connect");
        if (i % 4 === 0) socket.write("GET /slow HTTP/1.1\r\nhost: svc\r\n");
        else if (i % 4 === 1) socket.write("PRI * HTTP/2.0\r\n");
        else if (i % 4 === 2)
          socket.write(
            Buffer.concat([PREFACE, h2Frame(0x4, 0, 0, Buffer.alloc(0)), h2Frame(0x1, 0x1, 1, GET_ROOT)]),
          );
        // i % 4 === 3 sends nothing at all.
        return socket;
      }),
    );
    const closed = await Promise.all(
      sockets.map(
        (socket) =>
          new Promise<boolean>((resolve) => {
            if (socket.destroyed) return resolve(true);
            const timer = setTimeout(() => resolve(false), 15_000);
            socket.once("close", () => {
              clearTimeout(timer);
              resolve(true);
            });
          }),
      ),
    );
    for (const s of sockets) s.destroy();
    assert.equal(closed.filter(Boolean).length, 200);
    assert.deepEqual(received, []);
  });

  it("never closes a connection while a request is in flight, and closes it once idle", async () => {
    const socket = net.connect(wp.port, "127.0.0.1");
    let text = "";
    socket.on("data", (c: Buffer) => {
      text += c.toString("latin1");
    });
    socket.on("error", () => {});
    // The backend takes longer than the headers timeout to answer.
    socket.write("GET /wait HTTP/1.1\r\nhost: svc\r\n\r\n");
    await once(socket, "close");
    assert.match(text, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\nok$/);
    assert.equal(received.at(-1), "GET /wait");
  });
});

describe("one normalized path for policy, routing and the backend", () => {
  let admin: Backend;
  let site: Backend;
  let wp: Waypoint;
  const engines = {
    BASE: createAuthorizationEngine({ l7Attachment: "waypoint" }),
    MERGE_SLASHES: createAuthorizationEngine({
      l7Attachment: "waypoint",
      pathNormalization: "MERGE_SLASHES",
    }),
  };
  const DENY_ADMIN = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: default }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin", "/admin/*"] } }] }]
`;

  async function start(mode: keyof typeof engines): Promise<Waypoint> {
    assert.deepEqual(engines[mode].applyYaml(DENY_ADMIN).errors, []);
    return startWaypoint(
      { "default/admin": [admin.endpoint], "default/site": [site.endpoint] },
      {
        policy: engines[mode],
        waypoint: { name: "waypoint", namespace: "default" },
        pathNormalization: mode,
        routes: [
          httpRoute("r", [
            {
              matches: [{ path: { type: "PathPrefix", value: "/admin" } }],
              backendRefs: [{ name: "admin", port: 80 }],
            },
            {
              matches: [{ path: { type: "PathPrefix", value: "/v1" } }],
              filters: [
                {
                  type: "URLRewrite",
                  urlRewrite: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/internal" } },
                },
              ],
              backendRefs: [{ name: "site", port: 80 }],
            },
            { backendRefs: [{ name: "site", port: 80 }] },
          ]),
        ],
      },
    );
  }

  before(async () => {
    admin = await startBackend("admin");
    site = await startBackend("site");
    wp = await start("BASE");
  });
  after(async () => {
    await wp.close();
    await stopServer(admin.server);
    await stopServer(site.server);
  });

  /** Sends a raw request target (the harness's client would not keep `..` as given). */
  async function get(port: number, target: string): Promise<{ status: number; body: string }> {
    const out = await rawExchange(
      port,
      `GET ${target} HTTP/1.1\r\nhost: svc.example.com\r\nconnection: close\r\n\r\n`,
    );
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(out)?.[1] ?? 0);
    // The backend's JSON, whatever the transfer coding around it.
    const body = out.slice(out.indexOf("\r\n\r\n") + 4);
    return { status, body: body.slice(body.indexOf("{"), body.lastIndexOf("}") + 1) };
  }

  it("routes /admin/../hello as /hello, the path policy allowed, and forwards /hello", async () => {
    const before = admin.requests.length;
    const res = await get(wp.port, "/admin/../hello");
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).id, "site");
    assert.equal(JSON.parse(res.body).url, "/hello");
    assert.equal(admin.requests.length, before, "never routed by the /admin prefix");
  });

  it("denies what normalizes into /admin and forwards nothing", async () => {
    for (const target of [
      "/hello/../admin",
      "/hello/%2e%2e/admin/x",
      "/%61dmin",
      "/admin/./",
      "/x\\..\\admin",
    ]) {
      assert.equal((await get(wp.port, target)).status, 403, target);
    }
    assert.equal(admin.requests.length, 0);
  });

  it("rewrites and forwards the normalized path with the query as received", async () => {
    const res = await get(wp.port, "/v1/./a/%7euser/../b?q=%2e%2e/x&y");
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).url, "/internal/a/b?q=%2e%2e/x&y");
  });

  it("answers 400 to a path that cannot be normalized, before policy", async () => {
    for (const target of ["/a%zz", "/a%00b", "http://svc.example.com/admin", "*"]) {
      assert.equal((await get(wp.port, target)).status, 400, target);
    }
  });

  it("merges slashes for policy, routing and the backend alike when configured", async () => {
    const merged = await start("MERGE_SLASHES");
    try {
      assert.equal((await get(merged.port, "//admin//x")).status, 403);
      const res = await get(merged.port, "//v1//y");
      assert.equal(res.status, 200, res.body);
      assert.equal(JSON.parse(res.body).url, "/internal/y");
    } finally {
      await merged.close();
    }
    // BASE keeps the slashes: `//admin` is not `/admin` for policy nor for routing.
    const res = await get(wp.port, "//admin");
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(res.body).id, "site");
  });

  it("answers 400 when the evaluator calls the request malformed", async () => {
    const bad = await startWaypoint(
      { "default/site": [site.endpoint] },
      {
        policy: { evaluate: () => ({ allowed: false, badRequest: true, reason: "bad path" }) },
        routes: [httpRoute("r", [{ backendRefs: [{ name: "site", port: 80 }] }])],
      },
    );
    try {
      assert.equal((await get(bad.port, "/x")).status, 400);
    } finally {
      await bad.close();
    }
  });

  it("rejects an unknown pathNormalization mode", () => {
    assert.throws(
      () =>
        createWaypointHandler({
          routes: [],
          connect: () => net.connect(1, "127.0.0.1"),
          resolveBackend: () => undefined,
          pathNormalization: "DECODE" as never,
        }),
      (e: unknown) => e instanceof RouterError && e.code === "ERR_OPTIONS_INVALID",
    );
  });
});
