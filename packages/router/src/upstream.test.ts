import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { PassThrough, type Readable } from "node:stream";
import { describe, it } from "node:test";
import { RequestBody } from "./request-body.js";
import {
  type Endpoint,
  UpstreamAttemptError,
  UpstreamPool,
  type UpstreamRequest,
  withSocketMethods,
} from "./upstream.js";
import { createWaypointHandler } from "./waypoint-handler.js";

type SocketLike = PassThrough & { setTimeout(ms: number, callback?: () => void): unknown };

describe("withSocketMethods", () => {
  it("gives a tunnel stream a setTimeout that fires, and that 0 cancels", async () => {
    const stream = withSocketMethods(new PassThrough()) as SocketLike;
    // The timer is unref'd like a socket's: hold the event loop open while waiting for it.
    const hold = setInterval(() => {}, 1000);
    try {
      stream.setTimeout(5);
      await once(stream, "timeout");
      let fired = 0;
      stream.setTimeout(5, () => fired++);
      stream.setTimeout(0);
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(fired, 0);
    } finally {
      clearInterval(hold);
      stream.destroy();
    }
  });

  it("keeps a stream's own socket methods", () => {
    const own = () => "own";
    const stream = new PassThrough() as PassThrough & Record<string, unknown>;
    stream.setTimeout = own;
    withSocketMethods(stream);
    assert.equal(stream.setTimeout, own);
    assert.equal(typeof stream.setKeepAlive, "function");
    stream.destroy();
  });
});

/** Reads a response body to a string. */
async function text(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Dials the backend the way an HBONE tunnel behaves: the stream stays writable after the peer's FIN
 * (allowHalfOpen), so a backend that closed an idle connection leaves a half-open stream behind.
 */
const connectHalfOpen = (endpoint: Endpoint) =>
  net.connect({ host: endpoint.address, port: endpoint.port, allowHalfOpen: true });

/** A request; with `payload`, a body the way the handler hands it over (replayable up to 1 MiB). */
function request(method: string, path: string, payload?: string, bodyDelayMs = 0): UpstreamRequest {
  if (payload === undefined)
    return { method, path, authority: "web.demo.svc.cluster.local", headers: {}, body: undefined };
  const source = new PassThrough();
  if (bodyDelayMs === 0) source.end(payload);
  else setTimeout(() => source.end(payload), bodyDelayMs).unref();
  return {
    method,
    path,
    authority: "web.demo.svc.cluster.local",
    headers: { "content-length": String(Buffer.byteLength(payload)) },
    body: new RequestBody(source, 1 << 20, 1 << 20),
  };
}

interface Backend {
  endpoint: Endpoint;
  /** `METHOD path` of every request that reached the backend, in order. */
  seen: string[];
  /** Connections (HTTP/1.1) or sessions (HTTP/2) the backend accepted. */
  connections(): number;
  close(): Promise<void>;
}

/** An HTTP/1.1 or HTTP/2 backend that closes connections idle for `idleMs` (its keep-alive timeout). */
async function idleClosingBackend(protocol: "http1" | "http2", idleMs: number): Promise<Backend> {
  const seen: string[] = [];
  let connections = 0;
  const answer = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on("end", () => res.end(`${req.method} ${req.url}`));
  };
  let server: http.Server | http2.Http2Server;
  const sessions = new Set<http2.ServerHttp2Session>();
  if (protocol === "http1") {
    // Node's own keep-alive timeout adds a second and advertises itself (`Keep-Alive: timeout=`), which
    // Node's client honours; many servers say nothing, so this one closes idle connections by hand.
    const idleTimers = new Map<net.Socket, NodeJS.Timeout>();
    const s = http.createServer((req, res) => {
      const socket = req.socket;
      clearTimeout(idleTimers.get(socket));
      res.setHeader("connection", "keep-alive");
      res.on("finish", () =>
        idleTimers.set(
          socket,
          setTimeout(() => socket.destroy(), idleMs),
        ),
      );
      answer(req, res);
    });
    s.on("connection", (socket: net.Socket) => {
      connections++;
      socket.on("close", () => {
        clearTimeout(idleTimers.get(socket));
        idleTimers.delete(socket);
      });
    });
    server = s;
  } else {
    const s = http2.createServer(answer);
    s.on("session", (session) => {
      connections++;
      sessions.add(session);
      session.on("close", () => sessions.delete(session));
      // HTTP/2 idle timeout: the backend drops the whole connection.
      session.setTimeout(idleMs, () => session.destroy());
    });
    server = s;
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: { address: "127.0.0.1", port, protocol },
    seen,
    connections: () => connections,
    close: async () => {
      for (const session of sessions) session.destroy();
      if (server instanceof http.Server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A backend that answers the first request on each connection and drops the connection when a second
 * one arrives on it, without a byte of answer: the race of a pooled connection closed just as it is used.
 */
async function dropsSecondRequestBackend(protocol: "http1" | "http2"): Promise<Backend> {
  const seen: string[] = [];
  let connections = 0;
  let server: net.Server | http2.Http2Server;
  if (protocol === "http1") {
    server = net.createServer((socket) => {
      connections++;
      let buffered = "";
      let requests = 0;
      let counted = false;
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        buffered += chunk.toString("latin1");
        for (;;) {
          const end = buffered.indexOf("\r\n\r\n");
          if (end === -1) return;
          const head = buffered.slice(0, end);
          const [method, path] = head.split(" ");
          if (!counted) seen.push(`${method} ${path}`);
          counted = true;
          // The second request is dropped on its head, before its body is in.
          if (requests > 0) {
            socket.destroy();
            return;
          }
          const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
          if (buffered.length < end + 4 + length) return;
          const text = [method, buffered.slice(end + 4, end + 4 + length)].filter((t) => t !== "").join(" ");
          buffered = buffered.slice(end + 4 + length);
          requests++;
          counted = false;
          socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${text.length}\r\n\r\n${text}`);
        }
      });
    });
  } else {
    const s = http2.createServer();
    s.on("session", (session) => {
      connections++;
      let requests = 0;
      session.on("error", () => {});
      session.on("stream", (stream, headers) => {
        seen.push(`${headers[":method"]} ${headers[":path"]}`);
        stream.on("error", () => {});
        if (++requests > 1) {
          session.destroy();
          return;
        }
        const chunks: Buffer[] = [];
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("end", () => {
          const body = Buffer.concat(chunks).toString();
          stream.respond({ ":status": 200 });
          stream.end([headers[":method"], body].filter((t) => t !== "").join(" "));
        });
      });
    });
    server = s;
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: { address: "127.0.0.1", port, protocol },
    seen,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

for (const protocol of ["http1", "http2"] as const) {
  describe(`UpstreamPool over ${protocol}: connections the backend closed`, () => {
    it("never reuses a connection the backend closed while idle", { timeout: 20_000 }, async () => {
      const backend = await idleClosingBackend(protocol, 200);
      const pool = new UpstreamPool(connectHalfOpen, 10);
      try {
        const first = await pool.send(backend.endpoint, protocol, request("GET", "/one")).response;
        assert.equal(first.status, 200);
        assert.equal(await text(first.body), "GET /one");
        await sleep(600);
        const second = await pool.send(backend.endpoint, protocol, request("GET", "/two")).response;
        assert.equal(second.status, 200);
        assert.equal(await text(second.body), "GET /two");
        assert.deepEqual(backend.seen, ["GET /one", "GET /two"]);
        assert.equal(backend.connections(), 2);
      } finally {
        pool.close();
        await backend.close();
      }
    });

    it("still reuses a live connection", { timeout: 20_000 }, async () => {
      const backend = await idleClosingBackend(protocol, 10_000);
      const pool = new UpstreamPool(connectHalfOpen, 10);
      try {
        for (const path of ["/a", "/b", "/c"]) {
          const up = await pool.send(backend.endpoint, protocol, request("GET", path)).response;
          assert.equal(await text(up.body), `GET ${path}`);
          await sleep(20);
        }
        assert.equal(backend.connections(), 1);
      } finally {
        pool.close();
        await backend.close();
      }
    });

    for (const method of ["GET", "PUT"]) {
      it(
        `sends an idempotent ${method} once more on a new connection when its pooled one dies unanswered`,
        {
          timeout: 20_000,
        },
        async () => {
          const backend = await dropsSecondRequestBackend(protocol);
          const pool = new UpstreamPool(connectHalfOpen, 10);
          try {
            const first = await pool.send(backend.endpoint, protocol, request("GET", "/warm")).response;
            await text(first.body);
            await sleep(20);
            const r = request(method, "/again", method === "PUT" ? "payload" : undefined);
            const second = await pool.send(backend.endpoint, protocol, r).response;
            assert.equal(second.status, 200);
            assert.equal(await text(second.body), method === "PUT" ? "PUT payload" : "GET");
            assert.deepEqual(backend.seen, ["GET /warm", `${method} /again`, `${method} /again`]);
            assert.equal(backend.connections(), 2);
          } finally {
            pool.close();
            await backend.close();
          }
        },
      );
    }

    it(
      "does not send a POST twice when its pooled connection dies unanswered",
      { timeout: 20_000 },
      async () => {
        const backend = await dropsSecondRequestBackend(protocol);
        const pool = new UpstreamPool(connectHalfOpen, 10);
        try {
          const first = await pool.send(backend.endpoint, protocol, request("GET", "/warm")).response;
          await text(first.body);
          await sleep(20);
          // The body is still on its way when the connection dies.
          const post = request("POST", "/admin", "payload", 200);
          await assert.rejects(pool.send(backend.endpoint, protocol, post).response, (err: unknown) => {
            assert.ok(err instanceof UpstreamAttemptError);
            assert.equal(err.failure, "reset");
            return true;
          });
          assert.deepEqual(backend.seen, ["GET /warm", "POST /admin"]);
        } finally {
          pool.close();
          await backend.close();
        }
      },
    );
  });

  describe(`waypoint handler over ${protocol}: backends that close connections`, () => {
    /** A waypoint handler that routes everything to `backend`, served on a TCP port. */
    async function waypointFor(backend: Backend) {
      const handler = createWaypointHandler({
        routes: [
          {
            kind: "HTTPRoute",
            metadata: { name: "web", namespace: "demo" },
            spec: {
              parentRefs: [{ kind: "Gateway", name: "waypoint" }],
              rules: [{ backendRefs: [{ name: "web", port: 80 }] }],
            },
          },
        ],
        resolveBackend: (ref) => (ref.name === "web" ? [backend.endpoint] : undefined),
        connect: connectHalfOpen,
      });
      const server = net.createServer((socket) => handler.handle(socket));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      const { port } = server.address() as AddressInfo;
      const call = (method: string, path: string, payload?: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const headers: Record<string, string> = { host: "web.demo.svc.cluster.local" };
          if (payload !== undefined) headers["content-length"] = String(payload.length);
          const req = http.request({ host: "127.0.0.1", port, method, path, headers }, (res) => {
            text(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b }), reject);
          });
          req.on("error", reject);
          if (payload === undefined) {
            req.end();
            return;
          }
          // The head goes first; the body follows later, as from a client still sending it.
          req.flushHeaders();
          setTimeout(() => req.end(payload), 200);
        });
      return {
        call,
        close: async () => {
          await handler.close();
          await new Promise<void>((resolve) => server.close(() => resolve()));
        },
      };
    }

    it("answers a GET after the backend's keep-alive timeout with 200", { timeout: 20_000 }, async () => {
      const backend = await idleClosingBackend(protocol, 200);
      const waypoint = await waypointFor(backend);
      try {
        assert.deepEqual(await waypoint.call("GET", "/one"), { status: 200, body: "GET /one" });
        await sleep(600);
        assert.deepEqual(await waypoint.call("GET", "/two"), { status: 200, body: "GET /two" });
      } finally {
        await waypoint.close();
        await backend.close();
      }
    });

    it(
      "answers a POST whose pooled connection died unanswered with 503, sent once",
      {
        timeout: 20_000,
      },
      async () => {
        const backend = await dropsSecondRequestBackend(protocol);
        const waypoint = await waypointFor(backend);
        try {
          assert.equal((await waypoint.call("GET", "/warm")).status, 200);
          await sleep(20);
          assert.equal((await waypoint.call("POST", "/admin", "payload")).status, 503);
          assert.deepEqual(backend.seen, ["GET /warm", "POST /admin"]);
        } finally {
          await waypoint.close();
          await backend.close();
        }
      },
    );
  });
}

describe("UpstreamPool keeps agents for the endpoints in use", () => {
  it(
    "drops the agents of endpoints with nothing open as new endpoints come",
    { timeout: 30_000 },
    async () => {
      // Every connect fails at once: each endpoint gets an agent and is left with nothing open.
      const refuse = () => {
        const socket = new PassThrough();
        process.nextTick(() => socket.destroy(Object.assign(new Error("refused"), { code: "ECONNREFUSED" })));
        return socket;
      };
      const pool = new UpstreamPool(refuse, 10);
      try {
        for (let port = 1; port <= 2000; port++) {
          const sent = pool.send({ address: "127.0.0.1", port }, "http1", request("GET", "/"));
          await sent.response.catch(() => {});
        }
        const kept = pool.endpointCount();
        assert.ok(kept <= 512, `${kept} endpoints kept for 2000 used once`);
      } finally {
        pool.close();
      }
    },
  );
});
