import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { describe, it } from "node:test";
import type { AccessLogEntry } from "../src/request-log.js";
import type { MetricsSink } from "../src/telemetry.js";
import {
  createWaypointHandler,
  type TunnelInfo,
  type WaypointHandlerOptions,
} from "../src/waypoint-handler.js";
import { httpRoute, startWaypoint, stopServer, type Waypoint } from "./harness.js";

/**
 * The two-way relay behind a tunnel carried as TCP and an upgraded (WebSocket) connection: it ends
 * only once both directions are done, so no byte either side sent before its FIN is lost, and a reset
 * on one side reaches the other as a reset.
 */

/** More than socket and tunnel buffers hold, so a slow reader leaves bytes queued in the relay. */
const SIZE = 4 * 1024 * 1024;
const HALF_OPEN = { allowHalfOpen: true };
const DB: TunnelInfo["destination"] = {
  address: "10.96.0.40",
  port: 5432,
  service: { name: "db", namespace: "data" },
  tcpOnly: true,
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function listen(server: net.Server | http.Server | http2.Http2Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

/** A half-open TCP server on 127.0.0.1; `stop` destroys whatever connection is left, then closes it. */
async function tcpServer(
  onSocket: (socket: net.Socket) => void,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer(HALF_OPEN, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    onSocket(socket);
  });
  const port = await listen(server);
  return {
    port,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * An HTTP/2 server whose CONNECT streams are tunnels (HBONE without mTLS): each is handed to `onTunnel`.
 * `stop` closes every session, then the server.
 */
async function tunnelServer(
  onTunnel: (stream: http2.ServerHttp2Stream, authority: string) => void,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200 });
    onTunnel(stream, String(headers[":authority"]));
  });
  const port = await listen(server);
  return {
    port,
    stop: async () => {
      for (const session of sessions) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A client session to a {@link tunnelServer}; `open` starts a tunnel to `authority`. */
function tunnelClient(port: number): {
  open: (authority: string) => http2.ClientHttp2Stream;
  close: () => void;
} {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  return {
    open: (authority) => session.request({ ":method": "CONNECT", ":authority": authority }),
    close: () => session.destroy(),
  };
}

/** Reads what `stream` holds, up to about `max` bytes; how many it read. */
function readUpTo(stream: Duplex, max: number): number {
  let n = 0;
  while (n < max) {
    const chunk = stream.read() as Buffer | null;
    if (chunk === null) break;
    n += chunk.length;
  }
  return n;
}

/** What a reader got: bytes, whether its stream ended cleanly, and the error it ended with if any. */
interface Read {
  bytes: number;
  ended: boolean;
  error: string | undefined;
}

/**
 * Reads `stream` slowly (64 KiB every 5 ms) until it ends, fails or closes (bounded: 20 s); `onEnd`
 * runs once it ended cleanly.
 */
function readSlowly(stream: Duplex, onEnd: () => void = () => {}): Promise<Read> {
  const read: Read = { bytes: 0, ended: false, error: undefined };
  stream.pause();
  const timer = setInterval(() => {
    read.bytes += readUpTo(stream, 64 * 1024);
  }, 5);
  return new Promise((resolve) => {
    const done = () => {
      clearInterval(timer);
      clearTimeout(limit);
      resolve(read);
    };
    const limit = setTimeout(done, 20_000);
    stream.once("end", () => {
      read.ended = true;
      onEnd();
      done();
    });
    stream.once("error", (err: NodeJS.ErrnoException) => {
      read.error = err.code ?? err.message;
      done();
    });
    stream.once("close", () => setTimeout(done, 50));
  });
}

/** Waits (bounded: 5 s) until `check` holds. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await sleep(10);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Writes `size` bytes with back-pressure, then ends. */
async function writeAll(stream: Duplex, size: number): Promise<void> {
  const piece = Buffer.alloc(64 * 1024, 7);
  for (let sent = 0; sent < size; sent += piece.length) {
    if (!stream.write(piece.subarray(0, Math.min(piece.length, size - sent)))) await once(stream, "drain");
  }
  stream.end();
}

/** A metrics sink keeping each `istio_tcp_connections_closed_total` label set. */
function closedLabels(): { sink: MetricsSink; closed: Record<string, string | number>[] } {
  const closed: Record<string, string | number>[] = [];
  const sink: MetricsSink = {
    counter: (name) => ({
      inc: (labels) => {
        if (name === "istio_tcp_connections_closed_total") closed.push({ ...labels });
      },
    }),
    gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
    histogram: () => ({ observe: () => {} }),
  };
  return { sink, closed };
}

/** Events a backend connection saw, in order: `data`, `end`, `error <code>`, `close`. */
function watchEvents(socket: net.Socket): string[] {
  const events: string[] = [];
  socket.on("end", () => events.push("end"));
  socket.on("error", (err: NodeJS.ErrnoException) => events.push(`error ${err.code}`));
  socket.on("close", () => events.push("close"));
  return events;
}

describe("a tunnel carried as TCP (opaqueTcp)", () => {
  function waypoint(backendPort: number, extra: Partial<WaypointHandlerOptions> = {}): Promise<Waypoint> {
    return startWaypoint(
      { "data/db": [{ address: "127.0.0.1", port: backendPort }] },
      {
        routes: [],
        opaqueTcp: true,
        connect: (ep) => net.connect({ port: ep.port, host: ep.address, allowHalfOpen: true }),
        ...extra,
      },
      { destination: DB },
      HALF_OPEN,
    );
  }

  /** A backend that answers SIZE bytes and its FIN once the client half-closed. */
  function downloadBackend(events: string[][]) {
    return tcpServer((socket) => {
      events.push(watchEvents(socket));
      socket.resume();
      socket.on("end", () => socket.end(Buffer.alloc(SIZE, 5)));
    });
  }

  it("gives a slow client every byte the backend sent before its FIN, then ends cleanly", async () => {
    const backendEvents: string[][] = [];
    const backend = await downloadBackend(backendEvents);
    const logs: AccessLogEntry[] = [];
    const wp = await waypoint(backend.port, { accessLog: (e) => logs.push(e) });
    try {
      const client = net.connect({ port: wp.port, host: "127.0.0.1", allowHalfOpen: true });
      client.end("query");
      const read = await readSlowly(client, () => client.end());
      assert.deepEqual(read, { bytes: SIZE, ended: true, error: undefined });
      await until(() => logs.length === 1, "the access log entry");
      assert.equal(logs[0]?.response_flags, "-");
      assert.equal(logs[0]?.bytes_received, 5);
      assert.equal(logs[0]?.bytes_sent, SIZE);
      assert.deepEqual(backendEvents, [["end", "close"]]);
    } finally {
      await wp.close();
      await backend.stop();
    }
  });

  it("gives a slow client on an HTTP/2 tunnel stream every byte, then END_STREAM rather than a reset", async () => {
    const backendEvents: string[][] = [];
    const backend = await downloadBackend(backendEvents);
    const logs: AccessLogEntry[] = [];
    const handler = createWaypointHandler({
      routes: [],
      opaqueTcp: true,
      accessLog: (e) => logs.push(e),
      resolveBackend: (b) => (b.name === "db" ? [{ address: "127.0.0.1", port: backend.port }] : undefined),
      connect: (ep) => net.connect({ port: ep.port, host: ep.address, allowHalfOpen: true }),
    });
    const front = await tunnelServer((stream) => handler.handle(stream, { destination: DB }));
    const client = tunnelClient(front.port);
    try {
      const tunnel = client.open("10.96.0.40:5432");
      tunnel.end("query");
      const read = await readSlowly(tunnel);
      assert.deepEqual(read, { bytes: SIZE, ended: true, error: undefined });
      await until(() => tunnel.closed, "the tunnel stream to close");
      assert.equal(tunnel.rstCode, http2.constants.NGHTTP2_NO_ERROR);
      await until(() => logs.length === 1, "the access log entry");
      assert.equal(logs[0]?.response_flags, "-");
      assert.equal(logs[0]?.bytes_sent, SIZE);
    } finally {
      client.close();
      await handler.close();
      await front.stop();
      await backend.stop();
    }
  });

  /** A backend that answers at once and ends its side, then reads the upload slowly. */
  function slowUploadBackend(progress: { received: number; ended: boolean }) {
    return tcpServer((socket) => {
      socket.on("error", () => {});
      socket.end("ready");
      socket.pause();
      const timer = setInterval(() => {
        progress.received += readUpTo(socket, 32 * 1024);
      }, 2);
      socket.on("end", () => {
        progress.ended = true;
      });
      socket.on("close", () => clearInterval(timer));
    });
  }

  async function upload(port: number): Promise<string> {
    const client = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    client.on("error", () => {});
    const answer: Buffer[] = [];
    client.on("data", (c: Buffer) => answer.push(c));
    await writeAll(client, SIZE);
    return new Promise((resolve) => client.once("close", () => resolve(Buffer.concat(answer).toString())));
  }

  it("gives a backend that reads slowly the whole upload the client sent before its FIN", async () => {
    const progress = { received: 0, ended: false };
    const backend = await slowUploadBackend(progress);
    const wp = await waypoint(backend.port);
    try {
      assert.equal(await upload(wp.port), "ready");
      await until(() => progress.ended, "the backend to read the whole upload");
      assert.equal(progress.received, SIZE);
    } finally {
      await wp.close();
      await backend.stop();
    }
  });

  it("gives a backend behind an HTTP/2 tunnel the whole upload, however slowly it reads", async () => {
    const progress = { received: 0, ended: false };
    const backend = await slowUploadBackend(progress);
    // The destination's end of the tunnel, forwarding to the backend with half-close both ways.
    const destination = await tunnelServer((stream) => {
      const socket = net.connect({ port: backend.port, host: "127.0.0.1", allowHalfOpen: true });
      socket.on("error", () => stream.destroy());
      stream.pipe(socket);
      socket.pipe(stream);
    });
    const tunnels = tunnelClient(destination.port);
    const wp = await waypoint(backend.port, {
      connect: (ep) => tunnels.open(`${ep.address}:${ep.port}`),
    });
    try {
      assert.equal(await upload(wp.port), "ready");
      await until(() => progress.ended, "the backend to read the whole upload");
      assert.equal(progress.received, SIZE);
    } finally {
      await wp.close();
      tunnels.close();
      await destination.stop();
      await backend.stop();
    }
  });

  it("resets the backend connection when the client resets, and logs DC", async () => {
    const backendEvents: string[][] = [];
    let received = 0;
    const backend = await tcpServer((socket) => {
      backendEvents.push(watchEvents(socket));
      socket.on("data", (c: Buffer) => {
        received += c.length;
      });
    });
    const logs: AccessLogEntry[] = [];
    const { sink, closed } = closedLabels();
    const wp = await waypoint(backend.port, { accessLog: (e) => logs.push(e), metrics: sink });
    try {
      const client = net.connect({ port: wp.port, host: "127.0.0.1", allowHalfOpen: true });
      client.on("error", () => {});
      client.write(Buffer.alloc(100_000, 1));
      await until(() => received === 100_000, "the backend to get the client's bytes");
      client.resetAndDestroy();
      await until(() => (backendEvents[0]?.length ?? 0) > 0, "the backend connection to end");
      assert.equal(backendEvents[0]?.[0], "error ECONNRESET", "a reset, not a clean end");
      await until(() => backendEvents[0]?.includes("close") === true, "the backend connection to close");
      assert.deepEqual(backendEvents, [["error ECONNRESET", "close"]]);
      await until(() => logs.length === 1, "the access log entry");
      assert.equal(logs[0]?.response_flags, "DC");
      assert.deepEqual(
        closed.map((labels) => labels.response_flags),
        ["DC"],
      );
    } finally {
      await wp.close();
      await backend.stop();
    }
  });

  it("resets the client when the backend resets, and logs UC", async () => {
    const backend = await tcpServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", () => socket.resetAndDestroy());
    });
    const logs: AccessLogEntry[] = [];
    const { sink, closed } = closedLabels();
    const wp = await waypoint(backend.port, { accessLog: (e) => logs.push(e), metrics: sink });
    try {
      const client = net.connect({ port: wp.port, host: "127.0.0.1", allowHalfOpen: true });
      const clientEvents = watchEvents(client);
      client.write("hello");
      await until(() => clientEvents.length > 0, "the client connection to end");
      assert.equal(clientEvents[0], "error ECONNRESET", "a reset, not a clean end");
      await until(() => clientEvents.includes("close"), "the client connection to close");
      assert.deepEqual(clientEvents, ["error ECONNRESET", "close"]);
      await until(() => logs.length === 1, "the access log entry");
      assert.equal(logs[0]?.response_flags, "UC");
      assert.deepEqual(
        closed.map((labels) => labels.response_flags),
        ["UC"],
      );
    } finally {
      await wp.close();
      await backend.stop();
    }
  });
});

describe("an upgraded (WebSocket) connection", () => {
  const UPGRADE = [
    "GET /chat HTTP/1.1",
    "host: ws.example.com",
    "connection: Upgrade",
    "upgrade: websocket",
    "sec-websocket-version: 13",
    "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
    "",
    "",
  ].join("\r\n");
  const SWITCHED = "HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n";

  /** A backend that switches every upgrade request and hands its socket to `onSwitched`. */
  async function upgradeBackend(onSwitched: (socket: net.Socket) => void) {
    const server = http.createServer();
    const sockets = new Set<net.Socket>();
    server.on("upgrade", (_req, socket: net.Socket) => {
      sockets.add(socket);
      socket.write(SWITCHED);
      onSwitched(socket);
    });
    const port = await listen(server);
    return {
      port,
      stop: async () => {
        for (const socket of sockets) socket.destroy();
        await stopServer(server);
      },
    };
  }

  function handlerFor(backendPort: number, logs: AccessLogEntry[]) {
    return createWaypointHandler({
      routes: [httpRoute("ws", [{ backendRefs: [{ name: "ws", port: 80 }] }])],
      accessLog: (e) => logs.push(e),
      resolveBackend: (b) => (b.name === "ws" ? [{ address: "127.0.0.1", port: backendPort }] : undefined),
      connect: (ep) => net.connect(ep.port, ep.address),
    });
  }

  /** Reads a response head off `stream` (bounded: 5 s) and puts back what followed it. */
  async function readHead(stream: Duplex): Promise<string> {
    let seen = Buffer.alloc(0);
    for (let i = 0; i < 500; i++) {
      const chunk = stream.read() as Buffer | null;
      if (chunk !== null) {
        seen = Buffer.concat([seen, chunk]);
        const end = seen.indexOf("\r\n\r\n");
        if (end !== -1) {
          stream.unshift(seen.subarray(end + 4));
          return seen.subarray(0, end).toString("latin1");
        }
      } else await sleep(10);
    }
    assert.fail("no response head");
  }

  it("gives a slow client on an HTTP/2 tunnel stream every byte the backend sent after its 101", async () => {
    const backend = await upgradeBackend((socket) => {
      socket.on("error", () => {});
      socket.end(Buffer.alloc(SIZE, 9));
    });
    const logs: AccessLogEntry[] = [];
    const handler = handlerFor(backend.port, logs);
    const front = await tunnelServer((stream) => handler.handle(stream, {}));
    const client = tunnelClient(front.port);
    try {
      const tunnel = client.open("10.96.0.41:80");
      tunnel.pause();
      tunnel.write(UPGRADE);
      assert.match(await readHead(tunnel), /^HTTP\/1\.1 101 /);
      const read = await readSlowly(tunnel, () => tunnel.end());
      assert.deepEqual(read, { bytes: SIZE, ended: true, error: undefined });
      await until(() => logs.length === 1, "the access log entry");
      assert.equal(logs[0]?.response_code, 101);
      assert.equal(logs[0]?.response_flags, "-");
    } finally {
      client.close();
      await handler.close();
      await front.stop();
      await backend.stop();
    }
  });

  it("resets the backend connection when the client resets, and logs DC", async () => {
    const backendEvents: string[][] = [];
    const backend = await upgradeBackend((socket) => {
      backendEvents.push(watchEvents(socket));
      socket.resume();
    });
    const logs: AccessLogEntry[] = [];
    const wp = await startWaypoint(
      { "default/ws": [{ address: "127.0.0.1", port: backend.port }] },
      {
        routes: [httpRoute("ws", [{ backendRefs: [{ name: "ws", port: 80 }] }])],
        accessLog: (e) => logs.push(e),
      },
    );
    try {
      const client = net.connect({ port: wp.port, host: "127.0.0.1" });
      client.on("error", () => {});
      client.pause();
      client.write(UPGRADE);
      assert.match(await readHead(client), /^HTTP\/1\.1 101 /);
      client.resetAndDestroy();
      await until(() => (backendEvents[0]?.length ?? 0) > 0, "the backend connection to end");
      assert.equal(backendEvents[0]?.[0], "error ECONNRESET", "a reset, not a clean end");
      await until(() => backendEvents[0]?.includes("close") === true, "the backend connection to close");
      assert.deepEqual(backendEvents, [["error ECONNRESET", "close"]]);
      await until(() => logs.length === 1, "the access log entry");
      assert.equal(logs[0]?.response_flags, "DC");
    } finally {
      await wp.close();
      await backend.stop();
    }
  });
});
