import assert from "node:assert/strict";
import type http from "node:http";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  closedPort,
  httpRoute,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

describe("retries, timeouts and failing backends", () => {
  const backends: Backend[] = [];
  let flaky: Backend;
  let always503: Backend;
  let ok: Backend;
  let hang: Backend;
  let reset: Backend;
  let midBody: Backend;
  let slowBody: Backend;
  let wp: Waypoint;
  let flakyCount = 0;
  const hanging = new Set<http.ServerResponse>();

  before(async () => {
    flaky = await startBackend("flaky", (_req, res, body) => {
      flakyCount++;
      if (flakyCount % 2 === 1) {
        res.writeHead(503);
        res.end("try again");
      } else {
        res.writeHead(200);
        res.end(`ok:${body}`);
      }
    });
    always503 = await startBackend("503", (_req, res) => {
      res.writeHead(503);
      res.end("down");
    });
    ok = await startBackend("ok");
    hang = await startBackend("hang", (_req, res) => {
      hanging.add(res);
    });
    reset = await startBackend("reset", (req) => {
      req.socket.destroy();
    });
    midBody = await startBackend("mid", (req, res) => {
      res.writeHead(200, { "content-length": 1000 });
      res.write("partial");
      setTimeout(() => req.socket.destroy(), 20);
    });
    slowBody = await startBackend("slow", (_req, res) => {
      res.writeHead(200, { "content-length": 1000 });
      res.write("started");
      hanging.add(res);
    });
    backends.push(flaky, always503, ok, hang, reset, midBody, slowBody);
    const dead = { address: "127.0.0.1", port: await closedPort() };
    wp = await startWaypoint(
      {
        "default/flaky": [flaky.endpoint],
        "default/mixed": [always503.endpoint, ok.endpoint],
        "default/dead": [dead],
        "default/dead-and-ok": [dead, ok.endpoint],
        "default/always503": [always503.endpoint],
        "default/hang": [hang.endpoint],
        "default/reset": [reset.endpoint],
        "default/mid": [midBody.endpoint],
        "default/slow": [slowBody.endpoint],
      },
      {
        loadBalancing: "round-robin",
        routes: [
          httpRoute("r", [
            // A status is retried only when the rule's retry stanza lists it.
            {
              matches: [{ path: { value: "/flaky" } }],
              backendRefs: [{ name: "flaky", port: 80 }],
              retry: { codes: [503] },
            },
            {
              matches: [{ path: { value: "/mixed" } }],
              backendRefs: [{ name: "mixed", port: 80 }],
              retry: { codes: [503] },
            },
            { matches: [{ path: { value: "/dead" } }], backendRefs: [{ name: "dead", port: 80 }] },
            {
              matches: [{ path: { value: "/dead-and-ok" } }],
              backendRefs: [{ name: "dead-and-ok", port: 80 }],
            },
            {
              matches: [{ path: { value: "/no-retry" } }],
              backendRefs: [{ name: "always503", port: 80 }],
              retry: { attempts: 0 },
            },
            {
              matches: [{ path: { value: "/hang-backend" } }],
              backendRefs: [{ name: "hang", port: 80 }],
              timeouts: { backendRequest: "100ms" },
            },
            {
              matches: [{ path: { value: "/hang-request" } }],
              backendRefs: [{ name: "hang", port: 80 }],
              timeouts: { request: "150ms" },
            },
            {
              matches: [{ path: { value: "/hang-backend-untimed" } }],
              backendRefs: [{ name: "hang", port: 80 }],
            },
            { matches: [{ path: { value: "/reset" } }], backendRefs: [{ name: "reset", port: 80 }] },
            {
              matches: [{ path: { value: "/slow-body" } }],
              backendRefs: [{ name: "slow", port: 80 }],
              timeouts: { backendRequest: "100ms" },
            },
            { matches: [{ path: { value: "/mid" } }], backendRefs: [{ name: "mid", port: 80 }] },
          ]),
        ],
      },
    );
  });
  after(async () => {
    for (const res of hanging) res.destroy();
    await wp.close();
    await Promise.all(backends.map((b) => stopServer(b.server)));
  });

  it("retries a 503 and replays the request body", async () => {
    flakyCount = 0;
    const r = await request(wp.port, { method: "POST", path: "/flaky", body: "hello" });
    assert.equal(r.status, 200);
    assert.equal(r.body, "ok:hello");
    assert.equal(flakyCount, 2);
  });

  it("retries on another endpoint", async () => {
    for (let i = 0; i < 4; i++) {
      const r = await request(wp.port, { path: "/mixed" });
      assert.equal(r.status, 200);
    }
  });

  it("retries connect failures and answers 503 when every endpoint is down", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await request(wp.port, { path: "/dead-and-ok" })).status, 200);
    const r = await request(wp.port, { path: "/dead" });
    assert.equal(r.status, 503);
    assert.match(r.body, /connection failure/);
  });

  it("honours retry.attempts 0", async () => {
    const before = always503.requests.length;
    assert.equal((await request(wp.port, { path: "/no-retry" })).status, 503);
    assert.equal(always503.requests.length - before, 1);
  });

  it("answers 504 when the backend hangs (backendRequest and request timeouts)", async () => {
    const r = await request(wp.port, { path: "/hang-backend" });
    assert.equal(r.status, 504);
    assert.equal(r.body, "upstream request timeout");
    assert.equal((await request(wp.port, { path: "/hang-request" })).status, 504);
  });

  it("cancels the upstream request when the client goes away", async () => {
    const before = hanging.size;
    const socket = net.connect(wp.port, "127.0.0.1");
    socket.write("GET /hang-backend-untimed HTTP/1.1\r\nhost: svc\r\n\r\n");
    while (hanging.size === before) await new Promise((resolve) => setTimeout(resolve, 10));
    const upstream = [...hanging].at(-1) as http.ServerResponse;
    const closed = new Promise<void>((resolve) => upstream.on("close", () => resolve()));
    socket.destroy();
    await closed;
    assert.equal(upstream.writableFinished, false);
  });

  it("resets the client when backendRequest expires mid-body", async () => {
    const out = await rawExchange(wp.port, "GET /slow-body HTTP/1.1\r\nhost: svc\r\n\r\n");
    assert.match(out, /^HTTP\/1\.1 200/);
    assert.ok(out.endsWith("started"));
  });

  it("answers 503 when the backend resets before responding", async () => {
    const r = await request(wp.port, { path: "/reset" });
    assert.equal(r.status, 503);
  });

  it("resets the client connection when the backend dies mid-body", async () => {
    const out = await rawExchange(wp.port, "GET /mid HTTP/1.1\r\nhost: svc\r\n\r\n");
    assert.match(out, /^HTTP\/1\.1 200/);
    assert.ok(out.includes("partial"));
    assert.ok(!out.includes("x".repeat(10)));
    // The waypoint still serves afterwards.
    assert.equal((await request(wp.port, { path: "/mixed" })).status, 200);
  });
});

describe("stream idle timeout", () => {
  let hang: Backend;
  let drip: Backend;
  let wp: Waypoint;
  const pending = new Set<http.ServerResponse>();
  before(async () => {
    hang = await startBackend("hang", (_req, res) => {
      pending.add(res);
    });
    drip = await startBackend("drip", (_req, res) => {
      res.writeHead(200);
      let n = 0;
      const timer = setInterval(() => {
        res.write(`chunk${n}.`);
        if (++n === 6) {
          clearInterval(timer);
          res.end();
        }
      }, 40);
      res.on("close", () => clearInterval(timer));
    });
    wp = await startWaypoint(
      { "default/hang": [hang.endpoint], "default/drip": [drip.endpoint] },
      {
        streamIdleTimeoutMs: 400,
        routes: [
          httpRoute("r", [
            { matches: [{ path: { value: "/hang" } }], backendRefs: [{ name: "hang", port: 80 }] },
            { matches: [{ path: { value: "/drip" } }], backendRefs: [{ name: "drip", port: 80 }] },
          ]),
        ],
      },
    );
  });
  after(async () => {
    for (const res of pending) res.destroy();
    await wp.close();
    await Promise.all([stopServer(hang.server), stopServer(drip.server)]);
  });

  it("gives up on a silent backend with 504 stream timeout", async () => {
    const r = await request(wp.port, { path: "/hang" });
    assert.equal(r.status, 504);
    assert.equal(r.body, "stream timeout");
  });

  it("keeps a slow but steady response alive", async () => {
    const r = await request(wp.port, { path: "/drip" });
    assert.equal(r.status, 200);
    assert.equal(r.body, "chunk0.chunk1.chunk2.chunk3.chunk4.chunk5.");
  });
});
