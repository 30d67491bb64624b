// Handler options, route inputs and RDS inputs of the wrong type or out of range are refused up
// front with a typed RouterError, and a closed handler says so instead of quietly dropping streams.
import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { compileEnvoyRouteConfiguration, createEnvoyRouteTable } from "../src/envoy-routes.js";
import { RouterError } from "../src/errors.js";
import { createRouteTable } from "../src/route-table.js";
import { createWaypointHandler, type WaypointHandlerOptions } from "../src/waypoint-handler.js";

const base: WaypointHandlerOptions = {
  routes: [],
  connect: () => {
    throw new Error("unused");
  },
  resolveBackend: () => undefined,
};

function code(expected: string, field?: string) {
  return (e: unknown) =>
    e instanceof RouterError &&
    e.code === expected &&
    (field === undefined || String(e.details.field ?? e.message).includes(field));
}

describe("createWaypointHandler options", () => {
  const bad: Array<[string, Partial<Record<keyof WaypointHandlerOptions, unknown>>]> = [
    ["waypoint", { waypoint: "waypoint" }],
    ["waypoint", { waypoint: { name: "waypoint" } }],
    ["routes", { routes: { kind: "HTTPRoute" } }],
    ["routes", { routes: undefined }],
    ["maxHeaderBytes", { maxHeaderBytes: Number.NaN }],
    ["maxHeaderBytes", { maxHeaderBytes: -1 }],
    ["maxHeaderBytes", { maxHeaderBytes: "100" }],
    ["requestTimeoutMs", { requestTimeoutMs: Number.NaN }],
    ["requestTimeoutMs", { requestTimeoutMs: -1 }],
    ["requestTimeoutMs", { requestTimeoutMs: 2 ** 31 }],
    ["streamIdleTimeoutMs", { streamIdleTimeoutMs: Number.NaN }],
    ["streamIdleTimeoutMs", { streamIdleTimeoutMs: -1 }],
    ["streamIdleTimeoutMs", { streamIdleTimeoutMs: 2 ** 31 }],
    ["headersTimeoutMs", { headersTimeoutMs: 2 ** 31 }],
    ["tcpIdleTimeoutMs", { tcpIdleTimeoutMs: 2 ** 31 }],
    ["upstreamPingIntervalMs", { upstreamPingIntervalMs: 2 ** 31 }],
    ["upstreamPingIntervalMs", { upstreamPingIntervalMs: -1 }],
    ["upstreamPingIntervalMs", { upstreamPingIntervalMs: "10s" }],
    ["upstreamPingTimeoutMs", { upstreamPingTimeoutMs: 2 ** 31 }],
    ["upstreamPingTimeoutMs", { upstreamPingTimeoutMs: Number.NaN }],
    ["retry.attempts", { retry: { attempts: 1e6 } }],
    ["retry.attempts", { retry: { attempts: -1 } }],
    ["retry.attempts", { retry: { attempts: 1.5 } }],
    ["retry.backoffBaseMs", { retry: { backoffBaseMs: 0 } }],
    ["retry.backoffBaseMs", { retry: { backoffBaseMs: Number.NaN } }],
    ["retry.backoffMaxMs", { retry: { backoffBaseMs: 100, backoffMaxMs: 10 } }],
    ["retry.retryOn", { retry: { retryOn: ["5XX"] } }],
    ["retry.codes", { retry: { codes: [42] } }],
    ["retryBufferBytes", { retryBufferBytes: -1 }],
    ["maxIdleConnectionsPerEndpoint", { maxIdleConnectionsPerEndpoint: Number.NaN }],
    ["policy", { policy: {} }],
    ["authenticate", { authenticate: "x" }],
    ["accessLog", { accessLog: 5 }],
    ["logger", { logger: {} }],
  ];
  for (const [field, extra] of bad) {
    it(`refuses ${field}: ${JSON.stringify(Object.values(extra)[0]) ?? "undefined"}`, () => {
      assert.throws(
        () => createWaypointHandler({ ...base, ...extra } as WaypointHandlerOptions),
        code("ERR_OPTIONS_INVALID", field),
      );
    });
  }

  it("accepts sound options", async () => {
    const handler = createWaypointHandler({
      ...base,
      waypoint: { name: "waypoint", namespace: "shop" },
      maxHeaderBytes: 8192,
      requestTimeoutMs: 2 ** 31 - 1,
      upstreamPingIntervalMs: 0,
      upstreamPingTimeoutMs: 2 ** 31 - 1,
      retry: { attempts: 100, backoffBaseMs: 1, backoffMaxMs: 1 },
      policy: { evaluate: () => ({ allowed: true, reason: "test" }) as never },
    });
    await handler.close();
  });
});

describe("route tables", () => {
  it("setRoutes and setRouteTable refuse what is not routes or a table", async () => {
    const handler = createWaypointHandler(base);
    try {
      assert.throws(() => handler.setRoutes(undefined as never), code("ERR_OPTIONS_INVALID", "routes"));
      assert.throws(() => handler.setRoutes({} as never), code("ERR_OPTIONS_INVALID", "routes"));
      assert.throws(() => handler.setRouteTable({} as never), code("ERR_OPTIONS_INVALID", "table"));
      handler.setRouteTable(createRouteTable([]));
    } finally {
      await handler.close();
    }
  });

  it("createRouteTable refuses what is not a list", () => {
    assert.throws(() => createRouteTable(undefined as never), code("ERR_ROUTE_INVALID", "routes"));
    assert.throws(() => createRouteTable({} as never), code("ERR_ROUTE_INVALID", "routes"));
  });

  it("compileEnvoyRouteConfiguration and createEnvoyRouteTable refuse malformed input", () => {
    assert.throws(
      () => compileEnvoyRouteConfiguration(undefined as never, "shop"),
      code("ERR_ROUTE_INVALID"),
    );
    assert.throws(
      () => compileEnvoyRouteConfiguration({ virtualHosts: {} } as never, "shop"),
      code("ERR_ROUTE_INVALID", "virtualHosts"),
    );
    assert.throws(
      () =>
        compileEnvoyRouteConfiguration(
          { virtualHosts: [{ domains: ["*"], routes: [null] }] } as never,
          "shop",
        ),
      code("ERR_ROUTE_INVALID", "routes[0]"),
    );
    assert.throws(() => createEnvoyRouteTable(undefined as never), code("ERR_ROUTE_INVALID"));
    assert.throws(() => createEnvoyRouteTable([{}] as never), code("ERR_ROUTE_INVALID", "bindings[0]"));
    const routes = compileEnvoyRouteConfiguration({ virtualHosts: [] }, "shop");
    assert.equal(
      createEnvoyRouteTable([{ service: { name: "a", namespace: "shop" }, port: 80, routes }]).size,
      1,
    );
  });
});

describe("a closed handler", () => {
  it("throws ERR_CLOSED from handle() and destroys the stream", async () => {
    const handler = createWaypointHandler(base);
    await handler.close();
    const stream = new PassThrough();
    assert.throws(() => handler.handle(stream), code("ERR_CLOSED"));
    assert.equal(stream.destroyed, true);
  });
});
