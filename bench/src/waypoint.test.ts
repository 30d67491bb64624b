// The waypoint bench's wiring: the waypoint and haproxy route the same requests the same way (the
// bench compares like with like), and every process is gone after close. Nothing here asserts a speed.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { request } from "node:http";
import { test } from "node:test";
import { installExitHandlers } from "./processes.js";
import { startWaypointTopology } from "./waypoint-topology.js";

installExitHandlers();

function send(
  entry: { host: string; port: number },
  host: string,
  method: string,
  path: string,
  body?: Buffer,
): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: entry.host, port: entry.port, method, path, headers: { host }, agent: false },
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
  "the waypoint and haproxy route alike, and close stops every process",
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
        ["waypoint", "haproxy"],
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
        const cases: [string, string, number][] = [
          ["POST", topology.path, 200],
          ["GET", "/static/app.js", 200],
          ["POST", "/static/app.js", 404],
          ["GET", "/healthz", 200],
          ["GET", "/nowhere", 404],
        ];
        for (const [method, p, status] of cases) {
          const answer = await send(
            path.entry,
            topology.host,
            method,
            p,
            method === "POST" ? Buffer.alloc(1024) : undefined,
          );
          assert.equal(answer.status, status, `${path.name}: ${method} ${p}`);
          if (status === 200) assert.equal(answer.bytes, 1024, `${path.name}: ${method} ${p} body`);
        }
      }
    } finally {
      await topology.close();
    }
    for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} stopped`);
  },
);
