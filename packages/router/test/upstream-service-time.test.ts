// x-envoy-upstream-service-time, as Envoy's router sets it on a response from upstream (Istio keeps
// Envoy's debug headers unless proxyHeaders turns them off): the milliseconds from the end of the
// downstream request to the upstream response's head. The access log's upstream_service_time is the
// header as the response carried it.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { AccessLogEntry } from "../src/request-log.js";
import {
  type Backend,
  entryFor,
  httpRoute,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

const HEADER = "x-envoy-upstream-service-time";

describe("x-envoy-upstream-service-time", () => {
  let slow: Backend;
  let wp: Waypoint;
  const logs: AccessLogEntry[] = [];

  before(async () => {
    // Answers 60 ms after the request has fully arrived.
    slow = await startBackend("slow", (_req, res, body) => {
      setTimeout(() => res.writeHead(200, { "content-type": "text/plain" }).end(`got ${body.length}`), 60);
    });
    wp = await startWaypoint(
      { "default/slow": [slow.endpoint] },
      {
        routes: [
          httpRoute("r", [
            { matches: [{ path: { value: "/none" } }] },
            {
              matches: [{ path: { value: "/hidden" } }],
              backendRefs: [{ name: "slow", port: 80 }],
              filters: [{ type: "ResponseHeaderModifier", responseHeaderModifier: { remove: [HEADER] } }],
            },
            { backendRefs: [{ name: "slow", port: 80 }] },
          ]),
        ],
        accessLog: (entry) => logs.push(entry),
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(slow.server);
  });

  it("is set on a response from upstream, with and without a request body, and logged as sent", async () => {
    for (const [path, body] of [
      ["/plain", undefined],
      ["/with-body", "x".repeat(1000)],
    ] as const) {
      const res = await request(wp.port, {
        method: body === undefined ? "GET" : "POST",
        path,
        ...(body === undefined ? {} : { body }),
      });
      assert.equal(res.status, 200);
      const value = res.headers[HEADER];
      assert.match(String(value), /^\d+$/, path);
      // The backend held the response 60 ms after the request ended (timers never fire early by
      // more than a millisecond).
      assert.ok(Number(value) >= 59, `${path}: ${value}`);
      assert.equal((await entryFor(logs, path)).upstream_service_time, value);
    }
  });

  it("is absent from a local reply, and logged as the response carried it after route filters", async () => {
    const local = await request(wp.port, { path: "/none" });
    assert.equal(local.status, 500);
    assert.equal(local.headers[HEADER], undefined);
    assert.equal((await entryFor(logs, "/none")).upstream_service_time, "-");
    const hidden = await request(wp.port, { path: "/hidden" });
    assert.equal(hidden.status, 200);
    assert.equal(hidden.headers[HEADER], undefined);
    assert.equal((await entryFor(logs, "/hidden")).upstream_service_time, "-");
  });
});
