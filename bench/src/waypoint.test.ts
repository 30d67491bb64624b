// The waypoint bench's wiring: the waypoint, haproxy and the minimal Node https proxy route the same
// requests the same way (the bench compares like with like), and every process is gone after close.
// Nothing here asserts a speed.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { request } from "node:http";
import { test } from "node:test";
import { type RouteRequest, routesToBackend, withoutHopByHop } from "./node-https-proxy.js";
import { installExitHandlers } from "./processes.js";
import { startWaypointTopology } from "./waypoint-topology.js";

installExitHandlers();

function send(
  entry: { host: string; port: number },
  host: string,
  method: string,
  path: string,
  body?: Buffer,
  headers: Record<string, string> = {},
): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: entry.host, port: entry.port, method, path, headers: { ...headers, host }, agent: false },
      (res) => {
        let bytes = 0;
        res.on("data", (chunk: Buffer) => {
          bytes += chunk.length;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes }));
        res.on("error", reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
    req.on("error", reject);
    req.end(body);
  });
}

test(
  "the waypoint, haproxy and node-https route alike, and close stops every process",
  { timeout: 120_000 },
  async () => {
    const topology = await startWaypointTopology({
      subnet: 180 + Math.floor(Math.random() * 70),
      pin: false,
    });
    const pids = [topology.backend.pid];
    try {
      assert.deepEqual(
        topology.paths.map((p) => p.name),
        ["waypoint", "haproxy", "node-https"],
      );
      // The waypoint under test is this tree's build with plain node, no TypeScript loader.
      const waypointArgs = topology.paths[0]?.proxy.process.spawnargs ?? [];
      assert.ok(
        waypointArgs.some((a) => a.endsWith("examples/waypoint/dist/main.js")),
        waypointArgs.join(" "),
      );
      assert.ok(!waypointArgs.includes("tsx"), waypointArgs.join(" "));
      for (const path of topology.paths) {
        pids.push(path.proxy.pid, ...path.ends.map((e) => e.pid));
        const cases: [string, string, number, Record<string, string>?][] = [
          ["POST", topology.path, 200],
          ["GET", "/static/app.js", 200],
          ["POST", "/static/app.js", 404],
          ["GET", "/healthz", 200],
          ["GET", "/admin/users", 404],
          ["GET", "/admin/users", 200, { "x-admin": "yes" }],
          ["GET", "/nowhere", 404],
        ];
        for (const [method, p, status, headers] of cases) {
          const answer = await send(
            path.entry,
            topology.host,
            method,
            p,
            method === "POST" ? Buffer.alloc(1024) : undefined,
            headers,
          );
          assert.equal(
            answer.status,
            status,
            `${path.name}: ${method} ${p} ${JSON.stringify(headers ?? {})}`,
          );
          if (status === 200) assert.equal(answer.bytes, 1024, `${path.name}: ${method} ${p} body`);
        }
      }
    } finally {
      await topology.close();
    }
    for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} stopped`);
  },
);

test("node-https routes by haproxy's ACLs: Host, then path, method and x-admin", () => {
  const host = "api.bench.svc.cluster.local";
  const base: RouteRequest = { method: "GET", host, url: "/api/echo", xAdmin: undefined };
  const cases: [Partial<RouteRequest>, boolean][] = [
    [{}, true],
    [{ method: "POST", url: "/api/echo?x=1" }, true],
    [{ host: "API.Bench.svc.cluster.local:80" }, true],
    [{ host: `${host}:8080` }, false],
    [{ host: "other.bench.svc.cluster.local" }, false],
    [{ host: undefined }, false],
    [{ url: "/healthz" }, true],
    [{ url: "/healthz?probe" }, true],
    [{ url: "/healthz/x" }, false],
    [{ url: "/static/app.js" }, true],
    [{ method: "POST", url: "/static/app.js" }, false],
    [{ url: "/admin/users" }, false],
    [{ url: "/admin/users", xAdmin: "yes" }, true],
    [{ url: "/admin/users", xAdmin: "no, yes" }, true],
    [{ url: "/admin/users", xAdmin: "YES" }, false],
    [{ url: "/nowhere" }, false],
    [{ url: "/apix" }, true],
  ];
  for (const [change, expected] of cases) {
    const req = { ...base, ...change };
    assert.equal(routesToBackend(req, host), expected, JSON.stringify(req));
  }
});

test("node-https drops RFC 9110 connection-specific headers and those Connection names", () => {
  assert.deepEqual(
    withoutHopByHop({
      host: "a",
      connection: "keep-alive, X-Trace",
      "keep-alive": "timeout=5",
      "transfer-encoding": "chunked",
      te: "trailers",
      trailer: "x-sum",
      upgrade: "h2c",
      "proxy-connection": "keep-alive",
      "proxy-authorization": "Basic x",
      "x-trace": "1",
      "content-length": "3",
      "set-cookie": ["a=1", "b=2"],
    }),
    {
      host: "a",
      trailer: "x-sum",
      "proxy-authorization": "Basic x",
      "content-length": "3",
      "set-cookie": ["a=1", "b=2"],
    },
  );
});
