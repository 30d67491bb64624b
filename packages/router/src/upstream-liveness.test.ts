// Pooled upstream HTTP/2 sessions are checked for liveness before reuse: a session whose backend went
// silent (a hung process, a host that died without an RST, a partition) is found by an unanswered PING
// and closed, and one whose stream timed out with nothing received since is retired, so later requests
// dial afresh instead of each waiting out its whole timeout on the dead session.
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { PassThrough, type Readable } from "node:stream";
import { describe, it } from "node:test";
import { RequestBody } from "./request-body.js";
import { type Endpoint, UpstreamAttemptError, UpstreamPool, type UpstreamRequest } from "./upstream.js";
import { SessionLiveness } from "./upstream-liveness.js";
import { createWaypointHandler, type WaypointHandlerOptions } from "./waypoint-handler.js";

const H2_PREFACE_LENGTH = 24;
const PING = 6;
const ACK = 1;

async function text(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection once `ms` have passed: no test waits on a dead session for long. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no outcome within ${ms} ms`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/**
 * A real HTTP/2 backend behind a TCP relay. `silence()` makes the relay stop forwarding, both ways, on
 * every connection open so far, without closing any: the backend looks hung, or its host gone without
 * a word. Connections made afterwards are forwarded again. The relay counts the PINGs clients send.
 */
async function silenceableBackend() {
  const seen: string[] = [];
  const backend = http2.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on("end", () => res.end(`${req.method} ${req.url}`));
  });
  const backendSessions = new Set<http2.ServerHttp2Session>();
  backend.on("session", (session) => {
    backendSessions.add(session);
    session.on("close", () => backendSessions.delete(session));
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const backendPort = (backend.address() as AddressInfo).port;

  let connections = 0;
  let pings = 0;
  const silenced = new Set<net.Socket>();
  const sockets = new Set<net.Socket>();
  const relay = net.createServer((down) => {
    connections++;
    const up = net.connect(backendPort, "127.0.0.1");
    sockets.add(down);
    sockets.add(up);
    down.on("error", () => {});
    up.on("error", () => {});
    // Client-to-backend frames, parsed just enough to count PINGs (not ACKs) the client sends.
    let pending = Buffer.alloc(0);
    let prefaceLeft = H2_PREFACE_LENGTH;
    const countPings = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (prefaceLeft > 0) {
        const skip = Math.min(prefaceLeft, pending.length);
        pending = pending.subarray(skip);
        prefaceLeft -= skip;
      }
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3);
        if (pending.length < 9 + length) break;
        if (pending.readUInt8(3) === PING && (pending.readUInt8(4) & ACK) === 0) pings++;
        pending = pending.subarray(9 + length);
      }
    };
    down.on("data", (chunk: Buffer) => {
      // Counted even when dropped: the PINGs a silent backend never sees.
      countPings(chunk);
      if (!silenced.has(down)) up.write(chunk);
    });
    up.on("data", (chunk: Buffer) => {
      if (!silenced.has(down)) down.write(chunk);
    });
    down.on("close", () => {
      up.destroy();
      sockets.delete(down);
    });
    up.on("close", () => {
      down.destroy();
      sockets.delete(up);
    });
  });
  await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
  const endpoint: Endpoint = {
    address: "127.0.0.1",
    port: (relay.address() as AddressInfo).port,
    protocol: "http2",
  };
  return {
    endpoint,
    seen,
    connections: () => connections,
    /** Client connections the relay still holds open. */
    open: () => [...sockets].filter((socket) => socket.remotePort !== backendPort).length,
    pings: () => pings,
    silence: () => {
      for (const socket of sockets) silenced.add(socket);
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      for (const session of backendSessions) session.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    },
  };
}

const connectTcp = (endpoint: Endpoint) => net.connect(endpoint.port, endpoint.address);

function request(method: string, path: string, payload?: string): UpstreamRequest {
  if (payload === undefined)
    return { method, path, authority: "web.demo.svc.cluster.local", headers: {}, body: undefined };
  const source = new PassThrough();
  source.end(payload);
  return {
    method,
    path,
    authority: "web.demo.svc.cluster.local",
    headers: { "content-length": String(Buffer.byteLength(payload)) },
    body: new RequestBody(source, 1 << 20, 1 << 20),
  };
}

/** Short liveness values for tests; the request deadlines are far longer. */
const PING_INTERVAL_MS = 200;
const PING_TIMEOUT_MS = 400;

describe("UpstreamPool: HTTP/2 session liveness", () => {
  it(
    "closes a pooled session whose backend went silent and sends the next GET on a new one",
    {
      timeout: 20_000,
    },
    async () => {
      const backend = await silenceableBackend();
      const pool = new UpstreamPool(connectTcp, 10, {
        pingIntervalMs: PING_INTERVAL_MS,
        pingTimeoutMs: PING_TIMEOUT_MS,
      });
      try {
        const first = await pool.send(backend.endpoint, "http2", request("GET", "/one")).response;
        assert.equal(await text(first.body), "GET /one");
        backend.silence();
        const started = performance.now();
        const sent = pool.send(backend.endpoint, "http2", request("GET", "/two"));
        // The old pool left this stream on the dead session for good.
        const second = await within(sent.response, 5_000, "GET /two");
        assert.equal(second.status, 200);
        assert.equal(await text(second.body), "GET /two");
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 3_000, `GET /two took ${Math.round(elapsed)} ms`);
        assert.equal(backend.connections(), 2, "a new connection for the second request");
        assert.ok(backend.pings() >= 1, "the silent session was sent a PING");
        assert.equal(backend.open(), 1, "the dead session was closed");
      } finally {
        pool.close();
        await backend.close();
      }
    },
  );

  it(
    "fails a POST on a session found dead as a reset, once its PING goes unanswered",
    {
      timeout: 20_000,
    },
    async () => {
      const backend = await silenceableBackend();
      const pool = new UpstreamPool(connectTcp, 10, {
        pingIntervalMs: PING_INTERVAL_MS,
        pingTimeoutMs: PING_TIMEOUT_MS,
      });
      try {
        const first = await pool.send(backend.endpoint, "http2", request("GET", "/one")).response;
        await text(first.body);
        backend.silence();
        const started = performance.now();
        const post = pool.send(backend.endpoint, "http2", request("POST", "/orders", "payload")).response;
        await assert.rejects(within(post, 5_000, "POST /orders"), (err: unknown) => {
          assert.ok(err instanceof UpstreamAttemptError, String(err));
          assert.equal(err.failure, "reset");
          return true;
        });
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 3_000, `POST /orders failed after ${Math.round(elapsed)} ms`);
        // Not sent again: a POST may not go out twice.
        assert.equal(backend.connections(), 1);
      } finally {
        pool.close();
        await backend.close();
      }
    },
  );

  it("PINGs a healthy idle session and keeps reusing it", { timeout: 20_000 }, async () => {
    const backend = await silenceableBackend();
    const pool = new UpstreamPool(connectTcp, 10, { pingIntervalMs: 100, pingTimeoutMs: 200 });
    try {
      for (const path of ["/a", "/b", "/c"]) {
        const up = await within(
          pool.send(backend.endpoint, "http2", request("GET", path)).response,
          5_000,
          path,
        );
        assert.equal(await text(up.body), `GET ${path}`);
        // Several intervals, well past the PING timeout: answered PINGs keep the session.
        await sleep(700);
      }
      assert.equal(backend.connections(), 1, "one session for every request");
      assert.ok(backend.pings() >= 3, `${backend.pings()} PINGs on the idle session`);
    } finally {
      pool.close();
      await backend.close();
    }
  });

  it(
    "retires a session whose stream timed out with nothing received, even without PINGs",
    {
      timeout: 20_000,
    },
    async () => {
      const backend = await silenceableBackend();
      const pool = new UpstreamPool(connectTcp, 10, { pingIntervalMs: 0, pingTimeoutMs: 0 });
      try {
        const first = await pool.send(backend.endpoint, "http2", request("GET", "/one")).response;
        await text(first.body);
        backend.silence();
        const stuck = pool.send(backend.endpoint, "http2", request("GET", "/stuck"));
        stuck.response.catch(() => {});
        await sleep(300);
        // What the handler does when a per-try or stream idle timeout fires.
        stuck.abort("timeout");
        const third = await within(
          pool.send(backend.endpoint, "http2", request("GET", "/three")).response,
          5_000,
          "GET /three",
        );
        assert.equal(await text(third.body), "GET /three");
        assert.equal(backend.connections(), 2);
        assert.equal(backend.pings(), 0, "no PINGs when they are off");
        // The retired session closed once its last stream ended.
        for (let i = 0; i < 50 && backend.open() > 1; i++) await sleep(20);
        assert.equal(backend.open(), 1);
      } finally {
        pool.close();
        await backend.close();
      }
    },
  );

  it(
    "keeps a session whose stream was cancelled by the client, not timed out",
    { timeout: 20_000 },
    async () => {
      const backend = await silenceableBackend();
      const pool = new UpstreamPool(connectTcp, 10, { pingIntervalMs: 0, pingTimeoutMs: 0 });
      try {
        const first = await pool.send(backend.endpoint, "http2", request("GET", "/one")).response;
        await text(first.body);
        const sent = pool.send(backend.endpoint, "http2", request("GET", "/two"));
        sent.response.catch(() => {});
        sent.abort();
        await sleep(50);
        const third = await within(
          pool.send(backend.endpoint, "http2", request("GET", "/three")).response,
          5_000,
          "GET /three",
        );
        assert.equal(await text(third.body), "GET /three");
        assert.equal(backend.connections(), 1);
      } finally {
        pool.close();
        await backend.close();
      }
    },
  );
});

describe("waypoint handler: silent HTTP/2 backends", () => {
  async function waypointFor(endpoint: Endpoint, extra: Partial<WaypointHandlerOptions>) {
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
      resolveBackend: (ref) => (ref.name === "web" ? [endpoint] : undefined),
      connect: connectTcp,
      ...extra,
    });
    const server = net.createServer((socket) => handler.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    const call = (method: string, path: string, payload?: string) =>
      new Promise<{ status: number; body: string; ms: number }>((resolve, reject) => {
        const started = performance.now();
        const headers: Record<string, string> = { host: "web.demo.svc.cluster.local" };
        if (payload !== undefined) headers["content-length"] = String(payload.length);
        const req = http.request({ host: "127.0.0.1", port, method, path, headers, agent: false }, (res) => {
          text(res).then(
            (body) => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - started }),
            reject,
          );
        });
        req.on("error", reject);
        req.end(payload);
      });
    return {
      call: (method: string, path: string, payload?: string) =>
        within(call(method, path, payload), 10_000, `${method} ${path}`),
      close: async () => {
        await handler.close();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  it(
    "answers a GET after the backend went silent from a new session, not with a 504 at the timeout",
    {
      timeout: 30_000,
    },
    async () => {
      const backend = await silenceableBackend();
      const waypoint = await waypointFor(backend.endpoint, {
        streamIdleTimeoutMs: 5_000,
        requestTimeoutMs: 5_000,
        upstreamPingIntervalMs: PING_INTERVAL_MS,
        upstreamPingTimeoutMs: PING_TIMEOUT_MS,
      });
      try {
        assert.equal((await waypoint.call("GET", "/one")).status, 200);
        backend.silence();
        const second = await waypoint.call("GET", "/two");
        assert.deepEqual([second.status, second.body], [200, "GET /two"]);
        assert.ok(second.ms < 3_000, `GET /two took ${Math.round(second.ms)} ms`);
        assert.equal(backend.connections(), 2);
      } finally {
        await waypoint.close();
        await backend.close();
      }
    },
  );

  it("answers a POST on a session found dead with 503 at the PING timeout", { timeout: 30_000 }, async () => {
    const backend = await silenceableBackend();
    const waypoint = await waypointFor(backend.endpoint, {
      streamIdleTimeoutMs: 5_000,
      requestTimeoutMs: 5_000,
      upstreamPingIntervalMs: PING_INTERVAL_MS,
      upstreamPingTimeoutMs: PING_TIMEOUT_MS,
    });
    try {
      assert.equal((await waypoint.call("GET", "/one")).status, 200);
      backend.silence();
      const post = await waypoint.call("POST", "/orders", "payload");
      assert.equal(post.status, 503);
      assert.match(post.body, /reset reason: connection termination/);
      assert.ok(post.ms < 3_000, `POST /orders took ${Math.round(post.ms)} ms`);
      // The next request gets a new session.
      assert.equal((await waypoint.call("GET", "/three")).status, 200);
      assert.equal(backend.connections(), 2);
    } finally {
      await waypoint.close();
      await backend.close();
    }
  });

  it("sends the request after a stream idle timeout on a new session", { timeout: 30_000 }, async () => {
    const backend = await silenceableBackend();
    const waypoint = await waypointFor(backend.endpoint, {
      streamIdleTimeoutMs: 500,
      // Off: only the timed-out stream can tell the session is dead.
      upstreamPingIntervalMs: 0,
    });
    try {
      assert.equal((await waypoint.call("GET", "/one")).status, 200);
      backend.silence();
      assert.equal((await waypoint.call("GET", "/two")).status, 504);
      const third = await waypoint.call("GET", "/three");
      assert.deepEqual([third.status, third.body], [200, "GET /three"]);
      assert.equal(backend.connections(), 2);
    } finally {
      await waypoint.close();
      await backend.close();
    }
  });
});

/** What SessionLiveness reads of a session: its received byte count, PINGs, close. */
class FakeSession extends EventEmitter {
  destroyed = false;
  readonly socket = { bytesRead: 0 };
  readonly pings: Array<(err: Error | null) => void> = [];
  ping(callback: (err: Error | null) => void): boolean {
    this.pings.push(callback);
    return true;
  }
  /** Answers the PINGs sent so far (an ACK is received bytes too). */
  ack(): void {
    this.socket.bytesRead += 17;
    for (const callback of this.pings.splice(0)) callback(null);
  }
}

function watch(session: FakeSession, pingIntervalMs: number, pingTimeoutMs: number) {
  let dead = 0;
  const liveness = new SessionLiveness(session as never, { pingIntervalMs, pingTimeoutMs }, () => dead++);
  return { liveness, dead: () => dead };
}

describe("SessionLiveness", () => {
  it("PINGs before a new stream on a session quiet for the interval, even if its timer is late", () => {
    const session = new FakeSession();
    const { liveness } = watch(session, 30, 1_000);
    try {
      liveness.beforeStream();
      assert.equal(session.pings.length, 0, "not quiet for the interval yet");
      // The event loop is busy: the interval timer cannot run.
      const until = performance.now() + 50;
      while (performance.now() < until);
      liveness.beforeStream();
      assert.equal(session.pings.length, 1);
      liveness.beforeStream();
      assert.equal(session.pings.length, 1, "one PING at a time");
    } finally {
      liveness.stop();
    }
  });

  it("sends no PING while bytes keep arriving, and one once they stop", { timeout: 5_000 }, async () => {
    const session = new FakeSession();
    const { liveness } = watch(session, 60, 1_000);
    const traffic = setInterval(() => {
      session.socket.bytesRead += 100;
    }, 10);
    try {
      await sleep(250);
      assert.equal(session.pings.length, 0);
      clearInterval(traffic);
      await sleep(200);
      assert.equal(session.pings.length, 1);
    } finally {
      clearInterval(traffic);
      liveness.stop();
    }
  });

  it("waits longer for an ACK while other frames arrive, then gives up", { timeout: 5_000 }, async () => {
    const session = new FakeSession();
    const { liveness, dead } = watch(session, 20, 60);
    let traffic: NodeJS.Timeout | undefined;
    try {
      await sleep(40);
      assert.equal(session.pings.length, 1);
      // Frames queued ahead of the ACK (a large download) keep coming.
      traffic = setInterval(() => {
        session.socket.bytesRead += 100;
      }, 10);
      await sleep(250);
      assert.equal(dead(), 0, "not dead while bytes arrive");
      clearInterval(traffic);
      await sleep(250);
      assert.equal(dead(), 1);
      assert.equal(session.pings.length, 1);
    } finally {
      clearInterval(traffic);
      liveness.stop();
    }
  });

  it("keeps a session whose PINGs are answered", { timeout: 5_000 }, async () => {
    const session = new FakeSession();
    const { liveness, dead } = watch(session, 20, 40);
    const answer = setInterval(() => session.ack(), 5);
    try {
      await sleep(300);
      assert.equal(dead(), 0);
      assert.ok(session.socket.bytesRead >= 17 * 3, "several PINGs answered");
    } finally {
      clearInterval(answer);
      liveness.stop();
    }
  });

  it(
    "with timeout 0, never gives up on a session, and sends one PING until it is answered",
    {
      timeout: 5_000,
    },
    async () => {
      const session = new FakeSession();
      const { liveness, dead } = watch(session, 20, 0);
      try {
        await sleep(200);
        assert.equal(dead(), 0);
        assert.equal(session.pings.length, 1);
        session.ack();
        await sleep(100);
        assert.equal(session.pings.length, 1, "PINGs resume after the ACK");
      } finally {
        liveness.stop();
      }
    },
  );

  it("stops when the session closes", { timeout: 5_000 }, async () => {
    const session = new FakeSession();
    const { dead } = watch(session, 20, 20);
    session.emit("close");
    await sleep(150);
    assert.equal(session.pings.length, 0);
    assert.equal(dead(), 0);
  });
});
