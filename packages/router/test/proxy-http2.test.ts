import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import type { Endpoint } from "../src/upstream.js";
import {
  type Backend,
  httpRoute,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

interface H2Backend {
  id: string;
  server: http2.Http2Server;
  endpoint: Endpoint;
  sessions: Set<http2.ServerHttp2Session>;
}

function frame(message: string): Buffer {
  const payload = Buffer.from(message);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

function unframe(data: Buffer): string[] {
  const out: string[] = [];
  let off = 0;
  while (off + 5 <= data.length) {
    const len = data.readUInt32BE(off + 1);
    out.push(data.subarray(off + 5, off + 5 + len).toString());
    off += 5 + len;
  }
  return out;
}

/** An HTTP/2 backend: plain requests get their backend id; gRPC calls echo each message back. */
async function startH2Backend(id: string): Promise<H2Backend> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.on("close", () => sessions.delete(s));
  });
  server.on("stream", (stream, headers) => {
    if (String(headers["content-type"]).startsWith("application/grpc")) {
      const path = String(headers[":path"]);
      if (path.endsWith("/Fail")) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", "grpc-status": "7", "grpc-message": "nope" },
          { endStream: true },
        );
        return;
      }
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "x-backend": id },
        { waitForTrailers: true },
      );
      stream.on("data", (chunk: Buffer) => {
        for (const m of unframe(chunk)) stream.write(frame(`${id}:${m}`));
      });
      stream.on("end", () => stream.end());
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "done" }));
      return;
    }
    stream.respond({ ":status": 200, "x-backend": id, "x-protocol": "h2" });
    stream.end(`${id} ${headers[":method"]} ${headers[":path"]} ${headers[":authority"]}`);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { id, server, sessions, endpoint: { address: "127.0.0.1", port, protocol: "http2" } };
}

async function stopH2(b: H2Backend): Promise<void> {
  for (const s of b.sessions) s.destroy();
  await new Promise<void>((resolve) => b.server.close(() => resolve()));
}

function h2request(
  client: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: Buffer | string,
): Promise<{
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders | undefined;
}> {
  return new Promise((resolve, reject) => {
    const req = client.request(
      { ":authority": "svc.example.com", ...headers },
      { endStream: body === undefined },
    );
    let responseHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      responseHeaders = h;
    });
    req.on("trailers", (t) => {
      trailers = t;
    });
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve({ headers: responseHeaders, body: Buffer.concat(chunks), trailers }));
    req.on("error", reject);
    if (body !== undefined) req.end(body);
  });
}

/**
 * Whether this Node's HTTP/2 server reads `streamResetBurst` and `streamResetRate` (Node 20 does not):
 * a server allowed a burst of 2 resets ends the connection at the third.
 */
async function serverReadsResetLimits(): Promise<boolean> {
  const server = http2.createServer({ streamResetBurst: 2, streamResetRate: 1 } as http2.ServerOptions);
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200 });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on("error", () => {});
  let goaway = false;
  client.on("goaway", () => {
    goaway = true;
  });
  for (let i = 0; i < 6 && !goaway && !client.destroyed; i++) {
    const req = client.request({ ":path": "/" });
    req.on("error", () => {});
    await new Promise((resolve) => req.once("response", resolve).once("close", resolve));
    req.close(http2.constants.NGHTTP2_CANCEL);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return goaway;
}

describe("HTTP/2, gRPC and WebSocket", () => {
  let h2a: H2Backend;
  let h2b: H2Backend;
  let h1: Backend;
  let ws: http.Server;
  let wsEndpoint: Endpoint;
  let trailing: http.Server;
  let trailingEndpoint: Endpoint;
  let wp: Waypoint;
  let client: http2.ClientHttp2Session;
  const wsSockets = new Set<net.Socket>();

  before(async () => {
    h2a = await startH2Backend("a");
    h2b = await startH2Backend("b");
    h1 = await startBackend("h1");
    ws = http.createServer((_req, res) => res.end("not upgraded"));
    ws.on("upgrade", (req, socket: net.Socket) => {
      wsSockets.add(socket);
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-path: ${req.url}\r\n\r\n`,
      );
      socket.on("data", (d: Buffer) => socket.write(`echo:${d.toString()}`));
    });
    await new Promise<void>((resolve) => ws.listen(0, "127.0.0.1", resolve));
    wsEndpoint = { address: "127.0.0.1", port: (ws.address() as AddressInfo).port };
    // An HTTP/1.1 backend whose chunked responses end with trailers, hop-by-hop ones among them.
    trailing = http.createServer((req, res) => {
      req.resume();
      res.setHeader("trailer", "x-ok");
      res.write("ok");
      res.addTrailers({ te: "gzip", "keep-alive": "timeout=5", "x-ok": "fine" });
      res.end();
    });
    await new Promise<void>((resolve) => trailing.listen(0, "127.0.0.1", resolve));
    trailingEndpoint = {
      address: "127.0.0.1",
      port: (trailing.address() as AddressInfo).port,
      protocol: "http1",
    };
    wp = await startWaypoint(
      {
        "default/h2": [h2a.endpoint, h2b.endpoint],
        "default/h1": [h1.endpoint],
        "default/ws": [wsEndpoint],
        "default/trailing": [trailingEndpoint],
      },
      {
        loadBalancing: "round-robin",
        routes: [
          httpRoute("http", [
            { matches: [{ path: { value: "/h1" } }], backendRefs: [{ name: "h1", port: 80 }] },
            { matches: [{ path: { value: "/ws" } }], backendRefs: [{ name: "ws", port: 80 }] },
            { matches: [{ path: { value: "/trailing" } }], backendRefs: [{ name: "trailing", port: 80 }] },
            { matches: [{ path: { value: "/" } }], backendRefs: [{ name: "h2", port: 80 }] },
          ]),
          {
            kind: "GRPCRoute",
            metadata: { name: "grpc", namespace: "default" },
            spec: {
              parentRefs: [{ kind: "Gateway", name: "waypoint" }],
              rules: [
                { matches: [{ method: { service: "echo.Echo" } }], backendRefs: [{ name: "h2", port: 80 }] },
              ],
            },
          },
        ],
      },
    );
    client = http2.connect(`http://127.0.0.1:${wp.port}`);
  });
  after(async () => {
    client.close();
    await wp.close();
    for (const s of wsSockets) s.destroy();
    await Promise.all([
      stopH2(h2a),
      stopH2(h2b),
      stopServer(h1.server),
      stopServer(ws),
      new Promise<void>((resolve) => trailing.close(() => resolve())),
    ]);
  });

  it("balances each request of one HTTP/2 connection across endpoints", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await h2request(client, { ":path": `/x/${i}` });
      assert.equal(r.headers[":status"], 200);
      ids.push(String(r.headers["x-backend"]));
    }
    assert.deepEqual(ids, ["a", "b", "a", "b", "a", "b"]);
    const concurrent = await Promise.all(
      Array.from({ length: 10 }, (_, i) => h2request(client, { ":path": `/c/${i}` })),
    );
    const counts = new Set(concurrent.map((r) => String(r.headers["x-backend"])));
    assert.deepEqual([...counts].sort(), ["a", "b"]);
  });

  it("keeps a client's connection through thousands of cancelled calls (gRPC deadlines)", async (t) => {
    if (!(await serverReadsResetLimits())) {
      t.skip("this Node's HTTP/2 server has no reset-rate setting (Node 20): nghttp2's default applies");
      return;
    }
    const session = http2.connect(`http://127.0.0.1:${wp.port}`);
    let goaway: number | undefined;
    session.on("goaway", (code) => {
      goaway = code;
    });
    try {
      // Each call gets its response headers, then the client gives up on it (RST_STREAM CANCEL),
      // far faster and longer than Node's default budget (1,000, then 33 a second) allows.
      for (let i = 0; i < 2500; i++) {
        const call = session.request({
          ":method": "POST",
          ":path": "/echo.Echo/Chat",
          ":authority": "svc.example.com",
          "content-type": "application/grpc",
          te: "trailers",
        });
        call.on("error", () => {});
        await new Promise((resolve) => call.once("response", resolve).once("close", resolve));
        call.close(http2.constants.NGHTTP2_CANCEL);
      }
      const after = await h2request(session, { ":path": "/still/here" });
      assert.equal(after.headers[":status"], 200);
      assert.equal(goaway, undefined);
    } finally {
      session.destroy();
    }
  });

  it("proxies gRPC with streaming both ways and trailers", async () => {
    const req = client.request({
      ":method": "POST",
      ":path": "/echo.Echo/Chat",
      ":authority": "svc.example.com",
      "content-type": "application/grpc",
      te: "trailers",
    });
    const received: string[] = [];
    let trailers: http2.IncomingHttpHeaders | undefined;
    req.on("trailers", (t) => {
      trailers = t;
    });
    const next = () =>
      new Promise<string>((resolve) => {
        req.once("data", (c: Buffer) => {
          const m = unframe(c);
          received.push(...m);
          resolve(m.join(","));
        });
      });
    req.write(frame("one"));
    const first = await next();
    req.write(frame("two"));
    const second = await next();
    assert.match(first, /^[ab]:one$/);
    assert.match(second, /^[ab]:two$/);
    await new Promise<void>((resolve) => {
      req.on("end", resolve);
      req.end();
      req.resume();
    });
    assert.equal(trailers?.["grpc-status"], "0");
    assert.equal(trailers?.["grpc-message"], "done");
  });

  it("passes trailers-only gRPC errors, and gRPC to an HTTP/1.1 backend", async () => {
    const failed = await h2request(
      client,
      { ":method": "POST", ":path": "/echo.Echo/Fail", "content-type": "application/grpc" },
      frame("x"),
    );
    assert.equal(failed.headers["grpc-status"], "7");
    const h1r = await h2request(
      client,
      { ":method": "POST", ":path": "/h1/grpc-over-h1", "content-type": "application/grpc" },
      frame("x"),
    );
    assert.equal(h1r.headers[":status"], 200);
    assert.equal(h1r.headers["grpc-status"], undefined);
  });

  it("passes an HTTP/1.1 backend's trailers to an HTTP/2 client without those a trailer may not carry", async () => {
    const r = await h2request(client, { ":method": "GET", ":path": "/trailing" });
    assert.equal(r.headers[":status"], 200, `${JSON.stringify(r.headers)} ${r.body}`);
    assert.equal(r.body.toString(), "ok");
    assert.equal(r.trailers?.["x-ok"], "fine");
    for (const name of ["te", "keep-alive"]) assert.equal(r.trailers?.[name], undefined, name);
  });

  it("speaks HTTP/1.1 upstream for HTTP/2 clients and HTTP/2 upstream for HTTP/1.1 clients", async () => {
    const r = await h2request(client, { ":method": "POST", ":path": "/h1/path" }, "h2 body");
    assert.equal(r.headers[":status"], 200);
    const echo = JSON.parse(r.body.toString()) as {
      id: string;
      body: string;
      headers: Record<string, string>;
    };
    assert.equal(echo.id, "h1");
    assert.equal(echo.body, "h2 body");
    assert.equal(echo.headers.host, "svc.example.com");
    const res = await new Promise<{ status: number; body: string; proto: string }>((resolve, reject) => {
      const req = http.request(
        { port: wp.port, host: "127.0.0.1", path: "/from-h1", headers: { host: "svc.example.com" } },
        (r1) => {
          let body = "";
          r1.on("data", (c: Buffer) => {
            body += c.toString();
          });
          r1.on("end", () =>
            resolve({ status: r1.statusCode ?? 0, body, proto: String(r1.headers["x-protocol"]) }),
          );
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(res.status, 200);
    assert.equal(res.proto, "h2");
    assert.match(res.body, /^[ab] GET \/from-h1 svc\.example\.com$/);
  });

  it("tunnels WebSocket upgrades", async () => {
    const socket = net.connect(wp.port, "127.0.0.1");
    let data = "";
    socket.on("data", (c: Buffer) => {
      data += c.toString();
    });
    socket.write(
      "GET /ws/chat HTTP/1.1\r\nhost: svc.example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    while (!data.includes("\r\n\r\n")) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.match(data, /^HTTP\/1\.1 101/);
    assert.match(data, /x-path: \/ws\/chat/);
    socket.write("hello");
    while (!data.includes("echo:hello")) await new Promise((resolve) => setTimeout(resolve, 10));
    socket.destroy();
  });
});

describe("HTTP/2 and gRPC retries", () => {
  let server: http2.Http2Server;
  let endpoint: Endpoint;
  let wp: Waypoint;
  let client: http2.ClientHttp2Session;
  const sessions = new Set<http2.ServerHttp2Session>();
  const hanging: http2.ServerHttp2Stream[] = [];
  let streams = 0;

  before(async () => {
    server = http2.createServer();
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    server.on("stream", (stream, headers) => {
      streams++;
      const path = String(headers[":path"]);
      if (streams % 2 === 1 && path.startsWith("/refuse")) {
        // Not processed: the proxy may retry it safely. (Closing with an error code errors our side too.)
        stream.on("error", () => {});
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      if (streams % 2 === 1 && path.startsWith("/grpc.Unavailable/")) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", "grpc-status": "14" },
          { endStream: true },
        );
        return;
      }
      if (path === "/hang") {
        stream.on("error", () => {});
        hanging.push(stream);
        return;
      }
      stream.respond(
        { ":status": 200, "content-type": String(headers["content-type"] ?? "text/plain") },
        { waitForTrailers: true },
      );
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(`served ${path} on try ${streams}`);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    endpoint = { address: "127.0.0.1", port: (server.address() as AddressInfo).port, protocol: "http2" };
    wp = await startWaypoint(
      { "default/h2": [endpoint] },
      { routes: [httpRoute("r", [{ backendRefs: [{ name: "h2", port: 80 }] }])] },
    );
    client = http2.connect(`http://127.0.0.1:${wp.port}`);
  });
  after(async () => {
    client.close();
    await wp.close();
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("retries a refused stream", async () => {
    streams = 0;
    const r = await h2request(client, { ":method": "POST", ":path": "/refuse/me" }, "payload");
    assert.equal(r.headers[":status"], 200);
    assert.equal(r.body.toString(), "served /refuse/me on try 2");
  });

  it("retries gRPC UNAVAILABLE and passes the final trailers", async () => {
    streams = 0;
    const r = await h2request(
      client,
      { ":method": "POST", ":path": "/grpc.Unavailable/Call", "content-type": "application/grpc" },
      frame("x"),
    );
    assert.equal(r.headers[":status"], 200);
    assert.equal(r.headers["grpc-status"], undefined);
    assert.equal(r.trailers?.["grpc-status"], "0");
    assert.equal(streams, 2);
  });

  it("cancels the upstream stream when the client resets its stream", async () => {
    const req = client.request({ ":path": "/hang", ":authority": "svc" });
    req.on("error", () => {});
    req.end();
    while (hanging.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    const upstream = hanging[0] as http2.ServerHttp2Stream;
    const closed = new Promise<void>((resolve) => upstream.on("close", () => resolve()));
    req.close(http2.constants.NGHTTP2_CANCEL);
    await closed;
    // The connection still serves other requests.
    const r = await h2request(client, { ":path": "/after" });
    assert.equal(r.headers[":status"], 200);
  });
});
