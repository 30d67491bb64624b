/**
 * One side of the proxy benchmark, run in its own process by bench/index.ts: a `node:http` backend
 * answering 1 KiB, and in front of it either the waypoint handler (`waypoint`) or the smallest useful
 * `node:http` reverse proxy (`baseline`). Reports its port, then answers `stats` with its CPU time and
 * GC pause time so far.
 */
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { PerformanceObserver } from "node:perf_hooks";
import type * as RouterModule from "../src/index.js";
import { proxyRoutes } from "./routes.js";

const mode = process.argv[2];
if (mode !== "waypoint" && mode !== "baseline") throw new Error(`usage: proxy-server.ts waypoint|baseline`);

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

const payload = Buffer.alloc(1024, "r");
const backend = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": payload.length });
    res.end(payload);
  });
});
backend.keepAliveTimeout = 60_000;
const backendPort = await listen(backend);

let front: net.Server;
if (mode === "baseline") {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    const up = http.request(
      {
        host: "127.0.0.1",
        port: backendPort,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent,
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 60_000;
  front = server;
} else {
  // Measure the published build (what users run); fall back to the TypeScript sources when it is missing.
  let router: typeof RouterModule;
  try {
    router = (await import(new URL("../dist/index.js", import.meta.url).href)) as typeof RouterModule;
  } catch {
    router = await import("../src/index.js");
  }
  const handler = router.createWaypointHandler({
    routes: proxyRoutes(),
    resolveBackend: (b) =>
      b.name === "echo" ? [{ address: "127.0.0.1", port: backendPort, protocol: "http1" }] : undefined,
    connect: (ep) => net.connect(ep.port, ep.address),
  });
  front = net.createServer((socket) =>
    handler.handle(socket, { peerIdentity: "spiffe://cluster.local/ns/bench/sa/client" }),
  );
}

let gcMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcMs += entry.duration;
}).observe({ entryTypes: ["gc"] });

const port = await listen(front);
process.on("message", (message) => {
  if (message === "stats") {
    const cpu = process.cpuUsage();
    process.send?.({ cpuUs: cpu.user + cpu.system, gcMs });
  } else if (message === "exit") {
    process.exit(0);
  }
});
process.send?.({ port });
