// Two fields of Istio's default JSON access log: `upstream_local_address` (Envoy's
// %UPSTREAM_LOCAL_ADDRESS%), the waypoint's own end of the connection a request went upstream on, and
// `requested_server_name` (%REQUESTED_SERVER_NAME%), the SNI of the client's TLS connection.
import assert from "node:assert/strict";
import { once } from "node:events";
import type http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import type { AccessLogEntry } from "../src/request-log.js";
import { createWaypointHandler, type TunnelInfo, type WaypointHandler } from "../src/waypoint-handler.js";
import {
  type Backend,
  closedPort,
  entryFor,
  httpRoute,
  prefixRule,
  request,
  selfSignedCertificate,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

/** `ip:port` a server saw a connection come from: the waypoint's end of it, when the waypoint dialled. */
function peerOf(socket: { remoteAddress?: string; remotePort?: number }): string {
  return `${socket.remoteAddress}:${socket.remotePort}`;
}

/** Answers every request with the address the connection came from. */
function answerPeer(req: http.IncomingMessage, res: http.ServerResponse): void {
  res.writeHead(200, { "content-type": "application/json" });
  res.end(JSON.stringify({ peer: peerOf(req.socket) }));
}

/** Waits (bounded: 5 s) for `count` entries. */
async function entries(logs: readonly AccessLogEntry[], count: number): Promise<readonly AccessLogEntry[]> {
  for (let i = 0; i < 500 && logs.length < count; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(logs.length, count, "access log entries");
  return logs;
}

describe("access log upstream_local_address", () => {
  const { key, cert } = selfSignedCertificate();
  const logs: AccessLogEntry[] = [];
  let plain: Backend;
  let h2: http2.Http2Server;
  let secure: https.Server;
  let wp: Waypoint;

  before(async () => {
    plain = await startBackend("plain", (req, res) => answerPeer(req, res));
    h2 = http2.createServer();
    h2.on("stream", (stream) => {
      stream.respond({ ":status": 200, "content-type": "application/json" });
      stream.end(JSON.stringify({ peer: peerOf(stream.session?.socket ?? {}) }));
    });
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    secure = https.createServer({ key, cert }, answerPeer);
    await new Promise<void>((resolve) => secure.listen(0, "127.0.0.1", resolve));
    const securePort = (secure.address() as AddressInfo).port;
    wp = await startWaypoint(
      {
        "default/plain": [plain.endpoint],
        "default/h2": [{ address: "127.0.0.1", port: (h2.address() as AddressInfo).port, protocol: "http2" }],
        "default/secure": [{ address: "127.0.0.1", port: securePort, protocol: "http1" }],
        "default/gone": [{ address: "127.0.0.1", port: await closedPort(), protocol: "http1" }],
      },
      {
        routes: [
          httpRoute("r", [
            prefixRule("/plain", "plain"),
            prefixRule("/h2", "h2"),
            prefixRule("/secure", "secure"),
            prefixRule("/gone", "gone"),
          ]),
        ],
        // The TLS backend is dialled with TLS, as an endpoint outside the mesh may be.
        connect: (ep) =>
          ep.port === securePort
            ? tls.connect({ host: ep.address, port: ep.port, rejectUnauthorized: false })
            : net.connect(ep.port, ep.address),
        retry: { attempts: 0 },
        accessLog: (entry) => logs.push(entry),
      },
      { destination: { address: "10.0.0.1", port: 80 } },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(plain.server);
    await new Promise<void>((resolve) => h2.close(() => resolve()));
    await stopServer(secure);
  });

  /** Sends `paths` in turn; for each, the peer the backend saw and the entry the waypoint logged. */
  async function through(paths: readonly string[]): Promise<{ peer: string; entry: AccessLogEntry }[]> {
    const out: { peer: string; entry: AccessLogEntry }[] = [];
    for (const path of paths) {
      const res = await request(wp.port, { path });
      assert.equal(res.status, 200, res.body);
      const { peer } = JSON.parse(res.body) as { peer: string };
      out.push({ peer, entry: await entryFor(logs, path) });
    }
    return out;
  }

  it("is the local ip:port of the HTTP/1.1 connection a request went out on, as the backend saw it", async () => {
    const [first, second] = await through(["/plain/1", "/plain/2"]);
    assert.match(first?.peer ?? "", /^127\.0\.0\.1:\d+$/);
    assert.equal(first?.entry.upstream_local_address, first?.peer);
    // The second request went out on the pooled connection of the first: the same local address.
    assert.equal(second?.peer, first?.peer);
    assert.equal(second?.entry.upstream_local_address, second?.peer);
  });

  it("is the local ip:port of the HTTP/2 connection a request went out on", async () => {
    const [first, second] = await through(["/h2/1", "/h2/2"]);
    assert.match(first?.peer ?? "", /^127\.0\.0\.1:\d+$/);
    assert.equal(first?.entry.upstream_local_address, first?.peer);
    assert.equal(second?.entry.upstream_local_address, second?.peer);
  });

  it("is the local ip:port of a TLS upstream connection", async () => {
    const [only] = await through(["/secure/1"]);
    assert.match(only?.peer ?? "", /^127\.0\.0\.1:\d+$/);
    assert.equal(only?.entry.upstream_local_address, only?.peer);
  });

  it("is - when no upstream connection was made: a refused connect, a local reply", async () => {
    assert.equal((await request(wp.port, { path: "/gone" })).status, 503);
    assert.equal((await request(wp.port, { path: "/nowhere" })).status, 404);
    const refused = await entryFor(logs, "/gone");
    assert.equal(refused.response_flags, "UF");
    assert.equal(refused.upstream_local_address, "-");
    assert.equal((await entryFor(logs, "/nowhere")).upstream_local_address, "-");
  });
});

describe("access log upstream_local_address through a tunnel stream", () => {
  let backend: Backend;
  let ztunnel: http2.Http2Server;
  let session: http2.ClientHttp2Session;
  let wp: Waypoint;
  const logs: AccessLogEntry[] = [];

  before(async () => {
    backend = await startBackend("behind-tunnel");
    // A stand-in for the destination's ztunnel: each CONNECT stream is piped to the backend.
    ztunnel = http2.createServer();
    ztunnel.on("stream", (stream) => {
      const tcp = net.connect(backend.port, "127.0.0.1", () => {
        stream.respond({ ":status": 200 });
        stream.pipe(tcp).pipe(stream);
      });
      tcp.on("error", () => stream.destroy());
      stream.on("error", () => tcp.destroy());
      stream.on("close", () => tcp.destroy());
    });
    await new Promise<void>((resolve) => ztunnel.listen(0, "127.0.0.1", resolve));
    session = http2.connect(`http://127.0.0.1:${(ztunnel.address() as AddressInfo).port}`);
    wp = await startWaypoint(
      { "default/svc": [{ address: "10.1.2.3", port: 8080, protocol: "http1" }] },
      {
        routes: [httpRoute("r", [{ backendRefs: [{ name: "svc", port: 80 }] }])],
        connect: (ep) =>
          new Promise<Duplex>((resolve, reject) => {
            const s = session.request({ ":method": "CONNECT", ":authority": `${ep.address}:${ep.port}` });
            s.once("response", () => resolve(s));
            s.once("error", reject);
          }),
        accessLog: (entry) => logs.push(entry),
      },
    );
  });
  after(async () => {
    await wp.close();
    session.close();
    await new Promise<void>((resolve) => ztunnel.close(() => resolve()));
    await stopServer(backend.server);
  });

  it("is Envoy's internal client address, as Istio's waypoints log an HBONE upstream", async () => {
    assert.equal((await request(wp.port, { path: "/tunnelled" })).status, 200);
    const entry = await entryFor(logs, "/tunnelled");
    assert.equal(entry.upstream_host, "10.1.2.3:8080");
    assert.equal(entry.upstream_local_address, "envoy://internal_client_address/");
  });
});

describe("access log requested_server_name", () => {
  const { key, cert } = selfSignedCertificate();
  const logs: AccessLogEntry[] = [];
  let backend: Backend;
  let handler: WaypointHandler;
  let front: tls.Server;
  let plainFront: net.Server;
  const info: TunnelInfo = { destination: { address: "10.0.0.1", port: 443 } };

  before(async () => {
    backend = await startBackend("b");
    handler = createWaypointHandler({
      routes: [httpRoute("r", [{ backendRefs: [{ name: "svc", port: 80 }] }])],
      resolveBackend: (b) => (b.name === "svc" ? [backend.endpoint] : undefined),
      connect: (ep) => net.connect(ep.port, ep.address),
      accessLog: (entry) => logs.push(entry),
    });
    // TLS terminated in front of the handler, which gets the TLS socket; HTTP/2 by ALPN or HTTP/1.1.
    front = tls.createServer({ key, cert, ALPNProtocols: ["h2", "http/1.1"] }, (socket) =>
      handler.handle(socket, info),
    );
    await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
    plainFront = net.createServer((socket) => handler.handle(socket, info));
    await new Promise<void>((resolve) => plainFront.listen(0, "127.0.0.1", resolve));
  });
  after(async () => {
    await handler.close();
    await new Promise<void>((resolve) => front.close(() => resolve()));
    await new Promise<void>((resolve) => plainFront.close(() => resolve()));
    await stopServer(backend.server);
  });

  /** One HTTP/1.1 request over TLS, with `servername` as SNI (`""`: none). */
  function httpsGet(path: string, servername: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: "127.0.0.1",
          port: (front.address() as AddressInfo).port,
          path,
          servername,
          rejectUnauthorized: false,
          agent: false,
          headers: { host: "svc.example.com" },
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  it("is the SNI of the client's TLS connection, over HTTP/1.1 and HTTP/2", async () => {
    assert.equal(await httpsGet("/sni-h1", "api.example.com"), 200);
    const client = http2.connect(`https://127.0.0.1:${(front.address() as AddressInfo).port}`, {
      servername: "grpc.example.com",
      rejectUnauthorized: false,
    });
    try {
      const req = client.request({ ":path": "/sni-h2", ":authority": "svc.example.com" });
      req.resume();
      req.end();
      const [headers] = (await once(req, "response")) as [http2.IncomingHttpHeaders];
      assert.equal(headers[":status"], 200);
      await once(req, "end");
    } finally {
      client.close();
    }
    const h1 = await entryFor(logs, "/sni-h1");
    assert.equal(h1.protocol, "HTTP/1.1");
    assert.equal(h1.requested_server_name, "api.example.com");
    const h2 = await entryFor(logs, "/sni-h2");
    assert.equal(h2.protocol, "HTTP/2");
    assert.equal(h2.requested_server_name, "grpc.example.com");
  });

  it("is - for a TLS client that sent no SNI, and for a stream that is not TLS", async () => {
    assert.equal(await httpsGet("/no-sni", ""), 200);
    assert.equal(
      (await request((plainFront.address() as AddressInfo).port, { path: "/not-tls" })).status,
      200,
    );
    assert.equal((await entryFor(logs, "/no-sni")).requested_server_name, "-");
    assert.equal((await entryFor(logs, "/not-tls")).requested_server_name, "-");
  });
});

describe("a TCP tunnel's access log entry", () => {
  it("names the SNI of its TLS client and the local ip:port of its upstream connection", async () => {
    const { key, cert } = selfSignedCertificate();
    const seen: string[] = [];
    // A server that speaks first and hangs up (a port declared TCP carries it from the first byte).
    const db = net.createServer((socket) => {
      socket.on("error", () => {});
      seen.push(peerOf(socket));
      socket.end("hello from db");
    });
    await new Promise<void>((resolve) => db.listen(0, "127.0.0.1", resolve));
    const logs: AccessLogEntry[] = [];
    const handler = createWaypointHandler({
      routes: [],
      opaqueTcp: true,
      resolveBackend: (b) =>
        b.name === "db" ? [{ address: "127.0.0.1", port: (db.address() as AddressInfo).port }] : undefined,
      connect: (ep) => net.connect(ep.port, ep.address),
      accessLog: (entry) => logs.push(entry),
    });
    const front = tls.createServer({ key, cert }, (socket) =>
      handler.handle(socket, {
        destination: {
          address: "10.96.0.40",
          port: 5432,
          service: { name: "db", namespace: "data" },
          tcpOnly: true,
        },
      }),
    );
    await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
    try {
      const client = tls.connect({
        host: "127.0.0.1",
        port: (front.address() as AddressInfo).port,
        servername: "db.example.com",
        rejectUnauthorized: false,
      });
      client.on("error", () => {});
      let got = "";
      client.on("data", (c: Buffer) => {
        got += c.toString();
      });
      await once(client, "close");
      assert.equal(got, "hello from db");
      const [entry] = await entries(logs, 1);
      assert.equal(entry?.protocol, "-");
      assert.equal(entry?.requested_server_name, "db.example.com");
      assert.match(seen[0] ?? "", /^127\.0\.0\.1:\d+$/);
      assert.equal(entry?.upstream_local_address, seen[0]);
    } finally {
      await handler.close();
      await new Promise<void>((resolve) => front.close(() => resolve()));
      await new Promise<void>((resolve) => db.close(() => resolve()));
    }
  });
});
