import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { Logger } from "./telemetry.js";
import { createWaypointHandler } from "./waypoint-handler.js";

/** Sends one GET through a handler built with `logger` to a backend; returns the debug messages logged. */
async function debugLinesWith(logger: Logger & { isLevelEnabled?: (level: string) => boolean }) {
  const backend = http.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const backendPort = (backend.address() as AddressInfo).port;
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
    resolveBackend: () => [{ address: "127.0.0.1", port: backendPort }],
    connect: (endpoint) => net.connect({ host: endpoint.address, port: endpoint.port }),
    logger,
  });
  const server = net.createServer((socket) => handler.handle(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: "127.0.0.1",
          port: (server.address() as AddressInfo).port,
          path: "/",
          headers: { host: "web.demo.svc.cluster.local" },
          agent: false,
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 200);
    // The request is recorded when the downstream response closes, just after the client saw its end.
    await new Promise((resolve) => setTimeout(resolve, 50));
  } finally {
    await handler.close();
    server.close();
    backend.close();
  }
}

function capturing(isLevelEnabled?: (level: string) => boolean) {
  const debug: string[] = [];
  const logger: Logger & { isLevelEnabled?: (level: string) => boolean } = {
    debug: (_obj, msg) => debug.push(msg ?? ""),
    info: () => {},
    warn: () => {},
    error: () => {},
    ...(isLevelEnabled === undefined ? {} : { isLevelEnabled }),
  };
  return { logger, debug };
}

describe("the per-request debug line", () => {
  it("is written when the logger has debug on, or cannot say", async () => {
    for (const isLevelEnabled of [undefined, (level: string) => level === "debug"]) {
      const { logger, debug } = capturing(isLevelEnabled);
      await debugLinesWith(logger);
      assert.ok(debug.includes("request complete"), `debug lines: ${debug.join(", ")}`);
    }
  });

  it("is not built when the logger says debug is off", async () => {
    const { logger, debug } = capturing((level) => level !== "debug");
    await debugLinesWith(logger);
    assert.ok(!debug.includes("request complete"), `debug lines: ${debug.join(", ")}`);
  });
});
