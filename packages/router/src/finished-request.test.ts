import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { AccessLogEntry, FinishedRequest } from "./request-log.js";
import { createWaypointHandler } from "./waypoint-handler.js";

/** Sends `paths` (GET, one after another) through a handler with both sinks; returns what each got. */
async function throughHandler(paths: readonly string[], withAccessLog: boolean) {
  const backend = http.createServer((req, res) => {
    req.resume();
    res.end("hello");
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const backendPort = (backend.address() as AddressInfo).port;
  const logged: AccessLogEntry[] = [];
  const finished: FinishedRequest[] = [];
  const handler = createWaypointHandler({
    routes: [
      {
        kind: "HTTPRoute",
        metadata: { name: "web", namespace: "demo" },
        spec: {
          parentRefs: [{ kind: "Gateway", name: "waypoint" }],
          rules: [
            {
              matches: [{ path: { type: "PathPrefix", value: "/app" } }],
              backendRefs: [{ name: "web", port: 80 }],
            },
          ],
        },
      },
    ],
    resolveBackend: () => [
      { address: "127.0.0.1", port: backendPort, workload: { principal: "spiffe://web" } },
    ],
    connect: (endpoint) => net.connect({ host: endpoint.address, port: endpoint.port }),
    policy: {
      evaluate: () => ({ allowed: true, reason: "allowed", policy: "demo/open", action: "ALLOW", rule: 0 }),
    },
    ...(withAccessLog ? { accessLog: (entry: AccessLogEntry) => logged.push(entry) } : {}),
    onRequestFinished: (request) => finished.push(request),
  });
  const server = net.createServer((socket) =>
    handler.handle(socket, {
      peerIdentity: "spiffe://client",
      destination: { address: "127.0.0.100", port: 80, service: { name: "web", namespace: "demo" } },
    }),
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
            headers: { host: "web.demo.svc.cluster.local", "user-agent": "test", "x-request-id": "r-1" },
            agent: false,
          },
          (res) => {
            res.resume();
            res.on("end", resolve);
          },
        );
        req.on("error", reject);
        req.end();
      });
    }
    // A request is recorded when the downstream response closes, just after the client saw its end.
    for (let i = 0; i < 100 && finished.length < paths.length; i++)
      await new Promise((r) => setTimeout(r, 10));
  } finally {
    await handler.close();
    server.close();
    backend.close();
  }
  return { logged, finished };
}

describe("onRequestFinished", () => {
  it("gets one record per request whose entry is the access log's entry", async () => {
    const { logged, finished } = await throughHandler(["/app?x=1", "/other"], true);
    assert.equal(finished.length, 2);
    assert.equal(logged.length, 2);
    for (const [i, request] of finished.entries()) assert.deepEqual(request.accessLogEntry(), logged[i]);
    const [ok, notFound] = finished.map((r) => r.accessLogEntry()) as [AccessLogEntry, AccessLogEntry];
    assert.equal(ok.path, "/app?x=1");
    assert.equal(ok.response_code, 200);
    assert.equal(ok.bytes_sent, 5);
    assert.equal(ok.protocol, "HTTP/1.1");
    assert.equal(ok.user_agent, "test");
    assert.equal(ok.request_id, "r-1");
    assert.match(ok.upstream_host, /^127\.0\.0\.1:\d+$/);
    assert.equal(ok.upstream_cluster, "outbound|80||web.demo.svc.cluster.local");
    assert.equal(ok.downstream_local_address, "127.0.0.100:80");
    assert.equal(ok.source_principal, "spiffe://client");
    assert.equal(ok.destination_principal, "spiffe://web");
    assert.deepEqual(ok.authorization, { result: "allowed", policy: "demo/open", action: "ALLOW", rule: 0 });
    assert.equal(ok.start_time, new Date(finished[0]?.startedAt ?? 0).toISOString());
    assert.equal(notFound.response_code, 404);
    assert.equal(notFound.response_flags, "NR");
    assert.equal(notFound.upstream_host, "-");
  });

  it("builds a new entry on each call, and is called without an access log too", async () => {
    const { logged, finished } = await throughHandler(["/app"], false);
    assert.equal(logged.length, 0);
    const [request] = finished as [FinishedRequest];
    const first = request.accessLogEntry();
    first.path = "/changed";
    assert.equal(request.accessLogEntry().path, "/app");
    assert.notEqual(request.accessLogEntry(), request.accessLogEntry());
  });
});
