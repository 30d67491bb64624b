// Tunnels addressed to a ServiceEntry host (`destination.service.kind: "ServiceEntry"`): the default
// backend is the host (networking.istio.io Hostname), policies see the ServiceEntry as their target,
// a route attaches with a ServiceEntry parentRef, and the metrics name the host.
import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import type { HTTPRoute } from "./route-types.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";
import type { BackendTarget, Endpoint } from "./upstream.js";
import { createWaypointHandler, type TunnelInfo, type WaypointHandler } from "./waypoint-handler.js";

const SE = {
  kind: "ServiceEntry" as const,
  name: "external-api",
  namespace: "shop",
  hostname: "api.example.com",
};

describe("a tunnel to a ServiceEntry host", () => {
  let backend: http.Server;
  let port = 0;
  const asked: BackendTarget[] = [];
  const targets: unknown[] = [];
  const labels: MetricLabels[] = [];

  before(async () => {
    backend = http.createServer((req, res) => res.end(`backend got ${req.url}`));
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    port = (backend.address() as AddressInfo).port;
  });
  after(() => backend.close());

  function handlerWith(routes: HTTPRoute[] = []): WaypointHandler {
    const metrics: MetricsSink = {
      counter: (name) => ({
        inc: (l) => name === "istio_requests_total" && l !== undefined && labels.push(l),
      }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    return createWaypointHandler({
      routes,
      resolveBackend: (target) => {
        asked.push(target);
        const endpoint: Endpoint = { address: "127.0.0.1", port };
        return target.name === "api.example.com" || target.name === "other.example.com"
          ? [endpoint]
          : undefined;
      },
      connect: (e) => net.connect({ host: e.address, port: e.port }),
      policy: {
        evaluate: (request) => {
          targets.push(request.destination.targets);
          return { allowed: true, reason: "test" };
        },
      },
      metrics,
    });
  }

  async function get(handler: WaypointHandler, path: string): Promise<string> {
    const info: TunnelInfo = {
      peerIdentity: "spiffe://cluster.local/ns/shop/sa/client",
      destination: { address: "240.240.0.1", port: 80, service: SE },
    };
    const server = net.createServer((socket) => handler.handle(socket, info));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      return await new Promise<string>((resolve, reject) => {
        const req = http.request(
          {
            host: "127.0.0.1",
            port: (server.address() as AddressInfo).port,
            path,
            headers: { host: "api.example.com" },
            agent: false,
          },
          (res) => {
            let body = "";
            res.on("data", (c: Buffer) => {
              body += c.toString();
            });
            res.on("end", () => resolve(`${res.statusCode} ${body}`));
          },
        );
        req.on("error", reject);
        req.end();
      });
    } finally {
      server.close();
    }
  }

  it("goes to the host by default, with the ServiceEntry as policy target and the host in the metrics", async () => {
    asked.length = 0;
    targets.length = 0;
    labels.length = 0;
    const handler = handlerWith();
    try {
      assert.equal(await get(handler, "/status"), "200 backend got /status");
    } finally {
      await handler.close();
    }
    assert.deepEqual(asked, [
      {
        group: "networking.istio.io",
        kind: "Hostname",
        name: "api.example.com",
        namespace: "shop",
        port: 80,
      },
    ]);
    assert.deepEqual(targets[0], [
      { kind: "ServiceEntry", group: "networking.istio.io", name: "external-api", namespace: "shop" },
    ]);
    assert.equal(labels[0]?.destination_service, "api.example.com");
    assert.equal(labels[0]?.destination_service_name, "api.example.com");
    assert.equal(labels[0]?.destination_service_namespace, "shop");
  });

  it("takes a route attached by a ServiceEntry parentRef, and not one attached to a Service of that name", async () => {
    asked.length = 0;
    const route = (kind: string, group: string, host: string): HTTPRoute => ({
      kind: "HTTPRoute",
      metadata: { name: `to-${host}`, namespace: "shop" },
      spec: {
        parentRefs: [{ group, kind, name: "external-api" }],
        rules: [
          {
            matches: [{ path: { type: "PathPrefix", value: "/status" } }],
            filters: [
              {
                type: "URLRewrite",
                urlRewrite: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/v2" } },
              },
            ],
            backendRefs: [{ group: "networking.istio.io", kind: "Hostname", name: host, port: 80 }],
          },
        ],
      },
    });
    const viaEntry = handlerWith([route("ServiceEntry", "networking.istio.io", "other.example.com")]);
    try {
      assert.equal(await get(viaEntry, "/status"), "200 backend got /v2");
    } finally {
      await viaEntry.close();
    }
    assert.equal(asked[0]?.name, "other.example.com");
    // A route on a Service named like the ServiceEntry does not apply to it.
    asked.length = 0;
    const viaService = handlerWith([route("Service", "", "other.example.com")]);
    try {
      assert.equal(await get(viaService, "/status"), "200 backend got /status");
    } finally {
      await viaService.close();
    }
    assert.equal(asked[0]?.name, "api.example.com");
  });
});
