import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { AuthorizationEvaluator } from "./authorization.js";
import type { AccessLogEntry } from "./request-log.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";
import type { Endpoint } from "./upstream.js";
import { createWaypointHandler, type TunnelInfo } from "./waypoint-handler.js";

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

/** A sink keeping the labels of every increment of `name`. */
function labelsOf(name: string): { metrics: MetricsSink; seen: MetricLabels[] } {
  const seen: MetricLabels[] = [];
  return {
    seen,
    metrics: {
      counter: (n) => ({ inc: (labels) => n === name && labels !== undefined && seen.push(labels) }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    },
  };
}

/** Allows everything but paths under `/denied`, and every connection without HTTP. */
const denyPathDenied: AuthorizationEvaluator = {
  evaluate: (request) =>
    request.http === undefined || !request.http.path.startsWith("/denied")
      ? { allowed: true, reason: "allowed" }
      : { allowed: false, reason: "denied path", policy: "demo/deny", action: "DENY" },
};

const PEER = "spiffe://cluster.local/ns/demo/sa/client";
const webService = { name: "web", namespace: "demo" };

describe("destination service labels of requests answered before routing", () => {
  it("name the addressed Service for a request L7 policy refuses, and none for one with no route", async () => {
    const { metrics, seen } = labelsOf("istio_requests_total");
    const backend = http.createServer((_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const handler = createWaypointHandler({
      routes: [
        {
          kind: "HTTPRoute",
          metadata: { name: "api", namespace: "demo" },
          spec: {
            parentRefs: [{ group: "", kind: "Service", name: "api", port: 80 }],
            rules: [
              {
                matches: [{ path: { type: "PathPrefix", value: "/v1" } }],
                backendRefs: [{ name: "api", port: 80 }],
              },
            ],
          },
        },
      ],
      resolveBackend: () => [{ address: "127.0.0.1", port: (backend.address() as AddressInfo).port }],
      connect: (e) => net.connect({ host: e.address, port: e.port }),
      policy: denyPathDenied,
      metrics,
    });
    let info: TunnelInfo = {};
    const server = net.createServer((socket) => handler.handle(socket, info));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const get = (path: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: "127.0.0.1", port: (server.address() as AddressInfo).port, path, agent: false },
          (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          },
        );
        req.on("error", reject);
        req.end();
      });
    try {
      info = { peerIdentity: PEER, destination: { address: "10.0.0.1", port: 80, service: webService } };
      assert.equal(await get("/ok"), 200);
      assert.equal(await get("/denied"), 403);
      info = {
        peerIdentity: PEER,
        destination: { address: "10.0.0.2", port: 80, service: { name: "api", namespace: "demo" } },
      };
      assert.equal(await get("/denied"), 403);
      assert.equal(await get("/v2"), 404);
      await new Promise((resolve) => setTimeout(resolve, 30));
    } finally {
      await handler.close();
      server.close();
      backend.close();
    }
    const services = seen.map((l) => [
      l.response_code,
      l.destination_service,
      l.destination_service_name,
      l.destination_service_namespace,
    ]);
    assert.deepEqual(services, [
      ["200", "web.demo.svc.cluster.local", "web", "demo"],
      ["403", "web.demo.svc.cluster.local", "web", "demo"],
      ["403", "api.demo.svc.cluster.local", "api", "demo"],
      ["404", "unknown", "unknown", "unknown"],
    ]);
  });

  it("name the Service the matched route sends to for a request refused by policy or for its credential", async () => {
    const { metrics, seen } = labelsOf("istio_requests_total");
    const logged: AccessLogEntry[] = [];
    const handler = createWaypointHandler({
      accessLog: (entry) => logged.push(entry),
      routes: [
        {
          kind: "HTTPRoute",
          metadata: { name: "web", namespace: "demo" },
          spec: {
            parentRefs: [{ group: "", kind: "Service", name: "web", port: 80 }],
            rules: [
              {
                matches: [{ headers: [{ name: "x-canary", value: "1" }] }],
                backendRefs: [{ name: "web-canary", port: 80 }],
              },
              {
                matches: [{ path: { type: "PathPrefix", value: "/denied-split" } }],
                backendRefs: [
                  { name: "web-v1", port: 80, weight: 0 },
                  { name: "web-v2", port: 80, weight: 1 },
                ],
              },
              { backendRefs: [{ name: "web", port: 80 }] },
            ],
          },
        },
      ],
      resolveBackend: () => [],
      connect: (e) => net.connect({ host: e.address, port: e.port }),
      policy: denyPathDenied,
      authenticate: (input) =>
        input.headers.authorization === undefined
          ? { kind: "anonymous" }
          : { kind: "rejected", reason: "bad signature" },
      metrics,
    });
    const server = net.createServer((socket) =>
      handler.handle(socket, {
        peerIdentity: PEER,
        destination: { address: "10.0.0.1", port: 80, service: webService },
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const get = (path: string, headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: "127.0.0.1", port: (server.address() as AddressInfo).port, path, headers, agent: false },
          (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          },
        );
        req.on("error", reject);
        req.end();
      });
    try {
      assert.equal(await get("/denied", { "x-canary": "1" }), 403);
      assert.equal(await get("/denied-split", {}), 403);
      assert.equal(await get("/denied", {}), 403);
      assert.equal(await get("/open", { "x-canary": "1", authorization: "Bearer forged" }), 401);
      for (let i = 0; i < 100 && seen.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    } finally {
      await handler.close();
      server.close();
    }
    assert.deepEqual(
      seen.map((l) => [l.response_code, l.destination_service, l.destination_service_name]),
      [
        ["403", "web-canary.demo.svc.cluster.local", "web-canary"],
        ["403", "web-v2.demo.svc.cluster.local", "web-v2"],
        ["403", "web.demo.svc.cluster.local", "web"],
        ["401", "web-canary.demo.svc.cluster.local", "web-canary"],
      ],
    );
    // The access log names the route and its cluster too, as Envoy resolves both before the filters.
    assert.deepEqual(
      logged.map((e) => [e.response_code, e.route_name, e.upstream_cluster, e.upstream_host]),
      [
        [403, "demo/web", "outbound|80||web-canary.demo.svc.cluster.local", "-"],
        [403, "demo/web", "outbound|80||web-v2.demo.svc.cluster.local", "-"],
        [403, "demo/web", "outbound|80||web.demo.svc.cluster.local", "-"],
        [401, "demo/web", "outbound|80||web-canary.demo.svc.cluster.local", "-"],
      ],
    );
  });

  it("name the addressed Service for a TCP connection L4 policy refuses", async () => {
    const { metrics, seen } = labelsOf("istio_tcp_connections_closed_total");
    const handler = createWaypointHandler({
      routes: [],
      resolveBackend: () => [{ address: "127.0.0.1", port: 9 }],
      connect: (e) => net.connect({ host: e.address, port: e.port }),
      policy: { evaluate: () => ({ allowed: false, reason: "denied", policy: "demo/deny", action: "DENY" }) },
      opaqueTcp: true,
      metrics,
    });
    const server = net.createServer((socket) =>
      handler.handle(socket, {
        peerIdentity: PEER,
        destination: { address: "10.0.0.1", port: 5432, service: webService, tcpOnly: true },
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      await new Promise<void>((resolve) => {
        const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
        client.on("error", () => resolve());
        client.on("close", () => resolve());
        client.resume();
      });
      for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    } finally {
      await handler.close();
      server.close();
    }
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.request_protocol, "tcp");
    assert.equal(seen[0]?.destination_service, "web.demo.svc.cluster.local");
    assert.equal(seen[0]?.destination_service_name, "web");
    assert.equal(seen[0]?.destination_service_namespace, "demo");
    assert.equal(seen[0]?.destination_workload, "unknown");
  });
});

describe("grpc_response_status", () => {
  /**
   * A waypoint in front of `answer` (as the backend) whose request metrics go to `metrics`; `post`
   * sends one POST through it and resolves with the status once the response has ended.
   */
  async function throughWaypoint(
    answer: http.RequestListener,
    metrics: Parameters<typeof createWaypointHandler>[0]["metrics"],
  ) {
    const backend = http.createServer(answer);
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const handler = createWaypointHandler({
      routes: [],
      resolveBackend: () => [{ address: "127.0.0.1", port: (backend.address() as AddressInfo).port }],
      connect: (e) => net.connect({ host: e.address, port: e.port }),
      retry: { attempts: 0 },
      metrics,
    });
    const server = net.createServer((socket) =>
      handler.handle(socket, {
        peerIdentity: PEER,
        destination: { address: "10.0.0.1", port: 80, service: webService },
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const post = (path: string, headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          {
            host: "127.0.0.1",
            port: (server.address() as AddressInfo).port,
            path,
            method: "POST",
            headers,
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
    const close = async () => {
      await handler.close();
      server.close();
      backend.close();
    };
    return { post, close };
  }

  it("is inferred from the HTTP status for a gRPC request answered without one, and empty for plain HTTP", async () => {
    const { metrics, seen } = labelsOf("istio_requests_total");
    const { post, close } = await throughWaypoint((req, res) => {
      // A gRPC client met by a plain HTTP error; a plain client met by a stray grpc-status header.
      if (req.url === "/grpc.Svc/Call") res.writeHead(503, { "content-type": "text/plain" });
      else res.writeHead(200, { "grpc-status": "5" });
      res.end("x");
    }, metrics);
    try {
      assert.equal(await post("/grpc.Svc/Call", { "content-type": "application/grpc" }), 503);
      assert.equal(await post("/plain", { "content-type": "text/plain" }), 200);
      for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    } finally {
      await close();
    }
    assert.deepEqual(
      seen.map((l) => [l.request_protocol, l.response_code, l.grpc_response_status]),
      [
        ["grpc", "503", "14"],
        ["http", "200", ""],
      ],
    );
  });

  it("carries the codes gRPC defines, and -1 for any other value a backend sends", async () => {
    const { metrics, seen } = labelsOf("istio_requests_total");
    // The backend sends back whatever grpc-status the client asked for, as a header-reflecting
    // service would: arbitrary text must not become label values.
    const { post, close } = await throughWaypoint((req, res) => {
      res.writeHead(200, {
        "content-type": "application/grpc",
        "grpc-status": String(req.headers["x-status"]),
      });
      res.end();
    }, metrics);
    const sent = ["0", "16", " 7 ", "007", "17", "4294967296", "-1", "abc", "x".repeat(5000)];
    try {
      for (const status of sent)
        await post("/grpc.Svc/Call", { "content-type": "application/grpc", "x-status": status });
      for (let i = 0; i < 100 && seen.length < sent.length; i++) await new Promise((r) => setTimeout(r, 10));
    } finally {
      await close();
    }
    assert.deepEqual(
      seen.map((l) => l.grpc_response_status),
      ["0", "16", "7", "-1", "-1", "-1", "-1", "-1", "-1"],
    );
  });
});
