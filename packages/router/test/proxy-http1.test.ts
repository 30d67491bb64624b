import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  httpRoute,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

describe("HTTP/1.1 proxying", () => {
  let a: Backend;
  let b: Backend;
  let c: Backend;
  let wp: Waypoint;
  before(async () => {
    a = await startBackend("a");
    b = await startBackend("b");
    c = await startBackend("c");
    wp = await startWaypoint(
      { "default/ab": [a.endpoint, b.endpoint], "default/c": [c.endpoint], "default/empty": [] },
      {
        routes: [
          httpRoute("main", [
            { matches: [{ path: { value: "/ab" } }], backendRefs: [{ name: "ab", port: 80 }] },
            {
              matches: [{ path: { value: "/weighted" } }],
              backendRefs: [
                { name: "ab", port: 80, weight: 3 },
                { name: "c", port: 80, weight: 1 },
              ],
            },
            {
              matches: [{ path: { value: "/zero" } }],
              backendRefs: [
                { name: "ab", port: 80, weight: 0 },
                { name: "c", port: 80, weight: 1 },
              ],
            },
            { matches: [{ path: { value: "/unknown" } }], backendRefs: [{ name: "nope", port: 80 }] },
            {
              matches: [{ path: { value: "/kind" } }],
              backendRefs: [{ kind: "Bucket", group: "example.com", name: "c" }],
            },
            { matches: [{ path: { value: "/empty" } }], backendRefs: [{ name: "empty", port: 80 }] },
            { matches: [{ path: { value: "/none" } }] },
          ]),
        ],
        loadBalancing: "round-robin",
      },
    );
  });
  after(async () => {
    await wp.close();
    await Promise.all([a, b, c].map((x) => stopServer(x.server)));
  });

  it("proxies requests with bodies over keep-alive, balancing per request", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await request(wp.port, { method: "POST", path: `/ab/x?i=${i}`, body: `payload-${i}`, agent });
      assert.equal(r.status, 200);
      const json = JSON.parse(r.body) as {
        id: string;
        body: string;
        url: string;
        headers: Record<string, string>;
      };
      assert.equal(json.body, `payload-${i}`);
      assert.equal(json.url, `/ab/x?i=${i}`);
      assert.equal(json.headers.host, "svc.example.com");
      assert.match(json.headers.traceparent ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      assert.match(json.headers["x-request-id"] ?? "", /^[0-9a-f-]{36}$/);
      assert.equal(json.headers["x-forwarded-proto"], "http");
      seen.push(json.id);
    }
    agent.destroy();
    assert.deepEqual(seen, ["a", "b", "a", "b", "a", "b"]);
  });

  it("splits traffic by weight and never sends to weight 0", async () => {
    const counts: Record<string, number> = {};
    for (let i = 0; i < 8; i++) {
      const r = await request(wp.port, { path: "/weighted" });
      const id = r.headers["x-backend"] as string;
      counts[id === "c" ? "c" : "ab"] = (counts[id === "c" ? "c" : "ab"] ?? 0) + 1;
    }
    assert.deepEqual(counts, { ab: 6, c: 2 });
    for (let i = 0; i < 4; i++)
      assert.equal((await request(wp.port, { path: "/zero" })).headers["x-backend"], "c");
  });

  it("handles Expect: 100-continue", async () => {
    const r = await request(wp.port, {
      method: "PUT",
      path: "/ab/c",
      headers: { expect: "100-continue" },
      body: "after continue",
    });
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.body) as { body: string; headers: Record<string, string> };
    assert.equal(echo.body, "after continue");
    assert.equal(echo.headers.expect, undefined);
  });

  it("answers 404, 500 and 503 as the Gateway API says", async () => {
    assert.equal((await request(wp.port, { path: "/nothing" })).status, 404);
    assert.equal((await request(wp.port, { path: "/unknown" })).status, 500);
    assert.equal((await request(wp.port, { path: "/kind" })).status, 500);
    assert.equal((await request(wp.port, { path: "/none" })).status, 500);
    const r = await request(wp.port, { path: "/empty" });
    assert.equal(r.status, 503);
    assert.equal(r.body, "no healthy upstream");
  });
});
