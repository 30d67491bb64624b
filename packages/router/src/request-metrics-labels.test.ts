import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { MetricLabels, MetricsSink } from "./telemetry.js";
import type { Endpoint } from "./upstream.js";
import { createWaypointHandler } from "./waypoint-handler.js";

/** Sends GET `paths` one after another through a handler to a backend; returns the labels of istio_requests_total. */
async function countedLabels(
  endpointFor: (port: number) => Endpoint,
  paths: string[],
): Promise<MetricLabels[]> {
  const seen: MetricLabels[] = [];
  const metrics: MetricsSink = {
    counter: (name) => ({
      inc: (labels) => name === "istio_requests_total" && labels !== undefined && seen.push(labels),
    }),
    gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
    histogram: () => ({ observe: () => {} }),
  };
  const backend = http.createServer((req, res) => {
    res.statusCode = req.url === "/missing" ? 404 : 200;
    res.end("ok");
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const endpoint = endpointFor((backend.address() as AddressInfo).port);
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
    resolveBackend: () => [endpoint],
    connect: (e) => net.connect({ host: e.address, port: e.port }),
    metrics,
  });
  const server = net.createServer((socket) =>
    handler.handle(socket, { peerIdentity: "spiffe://cluster.local/ns/demo/sa/client" }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    for (const path of paths) {
      await new Promise<void>((resolve, reject) => {
        const req = http.request(
          {
            host: "127.0.0.1",
            port: (server.address() as AddressInfo).port,
            path,
            headers: { host: "web.demo.svc.cluster.local" },
            agent: false,
          },
          (res) => {
            res.resume();
            res.on("end", () => resolve());
          },
        );
        req.on("error", reject);
        req.end();
      });
      await new Promise((resolve) => setTimeout(resolve, 30));
    }
  } finally {
    await handler.close();
    server.close();
    backend.close();
  }
  return seen;
}

const workload = { name: "web-0", namespace: "demo", principal: "spiffe://cluster.local/ns/demo/sa/web" };

describe("request metric labels", () => {
  it("are one frozen object per distinct set when the endpoint's workload is frozen", async () => {
    const frozen = Object.freeze({ ...workload });
    const seen = await countedLabels(
      (port) => Object.freeze({ address: "127.0.0.1", port, workload: frozen }),
      ["/a", "/b", "/missing"],
    );
    assert.equal(seen.length, 3);
    assert.ok(Object.isFrozen(seen[0]));
    assert.equal(seen[0], seen[1], "the same set is the same object");
    assert.notEqual(seen[1], seen[2], "another response code is another set");
    assert.equal(seen[0]?.response_code, "200");
    assert.equal(seen[2]?.response_code, "404");
    assert.equal(seen[0]?.destination_workload, "web-0");
    assert.equal(seen[0]?.source_principal, "spiffe://cluster.local/ns/demo/sa/client");
  });

  it("are built afresh for a workload object that could still change", async () => {
    const seen = await countedLabels(
      (port) => ({ address: "127.0.0.1", port, workload: { ...workload } }),
      ["/a", "/b"],
    );
    assert.equal(seen.length, 2);
    assert.notEqual(seen[0], seen[1]);
    assert.deepEqual(seen[0], seen[1]);
    assert.equal(Object.isFrozen(seen[0]), false);
  });
});
