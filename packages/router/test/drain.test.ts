// WaypointHandler.drain(): a graceful drain as Envoy drains a listener. HTTP/1.1 connections close
// once their response is sent (idle ones at once), HTTP/2 connections get GOAWAY and close when their
// streams end, and nothing in flight is cut.
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  httpRoute,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

/** One HTTP/1.1 exchange on an open socket: resolves with the raw response once it is complete. */
function exchange(socket: net.Socket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    const onData = (c: Buffer) => {
      out += c.toString("latin1");
      const head = out.indexOf("\r\n\r\n");
      if (head < 0) return;
      const headText = out.slice(0, head);
      if (/transfer-encoding: chunked/i.test(headText)) {
        if (!out.endsWith("\r\n0\r\n\r\n")) return;
      } else {
        const length = Number(/content-length: (\d+)/i.exec(headText)?.[1] ?? "0");
        if (out.length - head - 4 < length) return;
      }
      socket.off("data", onData);
      resolve(out);
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(`GET ${path} HTTP/1.1\r\nhost: svc.example.com\r\n\r\n`);
  });
}

/** Polls `check` until it holds; fails after 5 s. */
async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const closed = (socket: net.Socket) => new Promise<void>((resolve) => socket.once("close", () => resolve()));

describe("WaypointHandler.drain", () => {
  let a: Backend;
  let slow: Backend;
  let streaming: Backend;
  let wp: Waypoint;
  /** Responses the slow backend holds until the test lets them go. */
  const held: (() => void)[] = [];
  const release = async () => {
    await until("a held response", () => held.length > 0);
    for (const go of held.splice(0)) go();
  };

  before(async () => {
    a = await startBackend("a");
    slow = await startBackend("slow", (_req, res) => {
      held.push(() => res.writeHead(200, { "content-type": "text/plain" }).end("slow"));
    });
    // Its head and first byte go out at once, the rest when let go.
    streaming = await startBackend("streaming", (_req, res) => {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("str");
      held.push(() => res.end("eam"));
    });
    wp = await startWaypoint(
      {
        "default/a": [a.endpoint],
        "default/slow": [slow.endpoint],
        "default/streaming": [streaming.endpoint],
      },
      {
        routes: [
          httpRoute("main", [
            { matches: [{ path: { value: "/slow" } }], backendRefs: [{ name: "slow", port: 80 }] },
            { matches: [{ path: { value: "/streaming" } }], backendRefs: [{ name: "streaming", port: 80 }] },
            { backendRefs: [{ name: "a", port: 80 }] },
          ]),
        ],
      },
    );
  });
  after(async () => {
    await wp.close();
    await Promise.all([a, slow, streaming].map((x) => stopServer(x.server)));
  });

  it("HTTP/1.1: closes idle connections, answers the request in flight with connection: close, then is drained", async () => {
    const idle = net.connect(wp.port, "127.0.0.1");
    assert.match(await exchange(idle, "/"), /^HTTP\/1\.1 200/);
    const idleClosed = closed(idle);
    const busy = net.connect(wp.port, "127.0.0.1");
    const busyClosed = closed(busy);
    const answer = exchange(busy, "/slow");
    // A response whose head is out already: it cannot say connection: close any more.
    const started = net.connect(wp.port, "127.0.0.1");
    const startedClosed = closed(started);
    const headFirst = once(started, "data");
    const streamed = exchange(started, "/streaming");
    await headFirst;
    await until("both held responses", () => held.length >= 2);

    let drained = false;
    const draining = wp.handler.drain().then(() => {
      drained = true;
    });
    assert.equal(wp.handler.drain(), wp.handler.drain(), "one drain, the same promise");
    await idleClosed;
    assert.equal(drained, false, "a request is still in flight");
    await release();
    const response = await answer;
    assert.match(response, /^HTTP\/1\.1 200/);
    assert.match(response, /\r\nconnection: close\r\n/i);
    assert.match(response, /\r\n\r\n(4\r\n)?slow/);
    await busyClosed;
    const rest = await streamed;
    assert.match(rest, /^HTTP\/1\.1 200/);
    assert.match(rest, /\r\nconnection: keep-alive\r\n/i);
    assert.match(rest, /str[\s\S]*eam/);
    await startedClosed;
    await draining;
  });

  it("HTTP/1.1: a connection that comes while draining is served once, with connection: close", async () => {
    const late = net.connect(wp.port, "127.0.0.1");
    const lateClosed = closed(late);
    const response = await exchange(late, "/");
    assert.match(response, /^HTTP\/1\.1 200/);
    assert.match(response, /\r\nconnection: close\r\n/i);
    await lateClosed;
  });
});

describe("WaypointHandler.drain over HTTP/2", () => {
  let slow: Backend;
  let wp: Waypoint;
  const held: (() => void)[] = [];

  before(async () => {
    slow = await startBackend("slow", (_req, res) => {
      held.push(() => res.writeHead(200, { "content-type": "text/plain" }).end("slow"));
    });
    wp = await startWaypoint(
      { "default/slow": [slow.endpoint] },
      { routes: [httpRoute("main", [{ backendRefs: [{ name: "slow", port: 80 }] }])] },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(slow.server);
  });

  it("sends GOAWAY, finishes the stream in flight, refuses new ones and closes", async () => {
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    client.on("error", () => {});
    const goaway = once(client, "goaway");
    const sessionClosed = once(client, "close");
    const req = client.request({ ":path": "/slow", ":authority": "svc.example.com" });
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => {
      body += c;
    });
    const ended = once(req, "end");
    const status = once(req, "response").then(
      ([headers]) => (headers as http2.IncomingHttpHeaders)[":status"],
    );
    await until("the held response", () => held.length > 0);

    const draining = wp.handler.drain();
    const [code] = (await goaway) as [number];
    assert.equal(code, http2.constants.NGHTTP2_NO_ERROR);
    // After GOAWAY the client opens no stream on this connection.
    const refused = await new Promise<string>((resolve) => {
      try {
        const next = client.request({ ":path": "/slow", ":authority": "svc.example.com" });
        next.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
        next.once("response", () => resolve("answered"));
      } catch (err) {
        resolve((err as NodeJS.ErrnoException).code ?? "thrown");
      }
    });
    assert.notEqual(refused, "answered");
    for (const go of held.splice(0)) go();
    assert.equal(await status, 200);
    await ended;
    assert.equal(body, "slow");
    await sessionClosed;
    await draining;
  });
});

describe("WaypointHandler.drain with a WebSocket", () => {
  let ws: http.Server;
  let wp: Waypoint;
  const upgraded = new Set<net.Socket>();

  before(async () => {
    ws = http.createServer((_req, res) => res.end("not upgraded"));
    ws.on("upgrade", (_req, socket: net.Socket) => {
      upgraded.add(socket);
      socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
      socket.on("data", (d: Buffer) => socket.write(`echo:${d.toString()}`));
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => ws.listen(0, "127.0.0.1", resolve));
    const endpoint = { address: "127.0.0.1", port: (ws.address() as net.AddressInfo).port };
    wp = await startWaypoint(
      { "default/ws": [endpoint] },
      { routes: [httpRoute("main", [{ backendRefs: [{ name: "ws", port: 80 }] }])] },
    );
  });
  after(async () => {
    await wp.close();
    // Upgraded sockets have left the HTTP server: closeAllConnections does not reach them.
    for (const socket of upgraded) socket.destroy();
    ws.closeAllConnections();
    await new Promise<void>((resolve) => ws.close(() => resolve()));
  });

  it("lets an upgraded connection run to its end, as a TCP tunnel", async () => {
    const socket = net.connect(wp.port, "127.0.0.1");
    socket.on("error", () => {});
    let data = "";
    socket.on("data", (c: Buffer) => {
      data += c.toString();
    });
    socket.write(
      "GET /chat HTTP/1.1\r\nhost: svc.example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    await until("the 101", () => data.includes("\r\n\r\n"));
    assert.match(data, /^HTTP\/1\.1 101/);
    let drained = false;
    const draining = wp.handler.drain().then(() => {
      drained = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    socket.write("still here");
    await until("the echo during the drain", () => data.includes("echo:still here"));
    assert.equal(drained, false);
    socket.destroy();
    await draining;
  });
});
