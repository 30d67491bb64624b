import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  closedPort,
  httpRoute,
  prefixRule,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";
import { DEFAULT_RETRY_POLICY } from "./waypoint-handler.js";

/**
 * Which failures are retried with no `retry` stanza (Istio's default policy) and with an HTTPRoute
 * rule's `retry` stanza (as istiod converts it): a status code is retried only when it is listed.
 */
describe("retry conditions of the default policy and of an HTTPRoute retry stanza", () => {
  let always503: Backend;
  let always500: Backend;
  let okBackend: Backend;
  let grpcUnavailable: Backend;
  let wp: Waypoint;

  before(async () => {
    always503 = await startBackend("503", (_req, res) => {
      res.writeHead(503);
      res.end("down");
    });
    always500 = await startBackend("500", (_req, res) => {
      res.writeHead(500);
      res.end("broken");
    });
    okBackend = await startBackend("ok");
    grpcUnavailable = await startBackend("grpc", (_req, res) => {
      res.writeHead(200, { "content-type": "application/grpc", "grpc-status": "14" });
      res.end();
    });
    const dead = { address: "127.0.0.1", port: await closedPort() };
    wp = await startWaypoint(
      {
        "default/always503": [always503.endpoint],
        "default/always500": [always500.endpoint],
        "default/dead-and-ok": [dead, okBackend.endpoint],
        "default/grpc": [grpcUnavailable.endpoint],
      },
      {
        loadBalancing: "round-robin",
        retry: { backoffBaseMs: 1, backoffMaxMs: 1 },
        routes: [
          httpRoute("r", [
            prefixRule("/default", "always503"),
            prefixRule("/attempts-only", "always503", { retry: { attempts: 3, backoff: "1ms" } }),
            prefixRule("/listed", "always503", { retry: { attempts: 2, codes: [503], backoff: "1ms" } }),
            prefixRule("/listed-other", "always500", {
              retry: { attempts: 2, codes: [503], backoff: "1ms" },
            }),
            prefixRule("/connect", "dead-and-ok", { retry: { attempts: 1, codes: [500], backoff: "1ms" } }),
            prefixRule("/grpc", "grpc", { retry: { attempts: 2, codes: [500], backoff: "1ms" } }),
          ]),
        ],
      },
    );
  });
  after(async () => {
    await wp.close();
    await Promise.all([always503, always500, okBackend, grpcUnavailable].map((b) => stopServer(b.server)));
  });

  it("has no retriable status codes by default (Istio's EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY)", () => {
    assert.deepEqual(DEFAULT_RETRY_POLICY.codes, []);
    assert.ok(DEFAULT_RETRY_POLICY.retryOn.includes("retriable-status-codes"));
  });

  it("a POST answered 503 reaches the backend once under the default policy", async () => {
    const before = always503.requests.length;
    const r = await request(wp.port, { method: "POST", path: "/default", body: "order" });
    assert.equal(r.status, 503);
    assert.equal(always503.requests.length - before, 1);
  });

  it("`retry: {attempts: 3}` without codes does not retry a 503", async () => {
    const before = always503.requests.length;
    assert.equal((await request(wp.port, { path: "/attempts-only" })).status, 503);
    assert.equal(always503.requests.length - before, 1);
  });

  it("`retry` with codes retries a listed status only", async () => {
    let before = always503.requests.length;
    assert.equal((await request(wp.port, { path: "/listed" })).status, 503);
    assert.equal(always503.requests.length - before, 3);
    before = always500.requests.length;
    assert.equal((await request(wp.port, { path: "/listed-other" })).status, 500);
    assert.equal(always500.requests.length - before, 1);
  });

  it("`retry` with codes still retries a connect failure", async () => {
    for (let i = 0; i < 4; i++) assert.equal((await request(wp.port, { path: "/connect" })).status, 200);
  });

  it("`retry` with codes still retries gRPC UNAVAILABLE, as istiod's conversion lists it", async () => {
    const before = grpcUnavailable.requests.length;
    const r = await request(wp.port, {
      method: "POST",
      path: "/grpc",
      headers: { "content-type": "application/grpc" },
    });
    assert.equal(r.headers["grpc-status"], "14");
    assert.equal(grpcUnavailable.requests.length - before, 3);
  });
});
