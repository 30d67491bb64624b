/**
 * Router benchmarks, each with a baseline measured in the same run:
 *   1. route decision time with 1,000 routes vs 10 routes (goal: ratio <= 2.0);
 *   2. requests/s through createWaypointHandler vs a minimal node:http reverse proxy
 *      (HTTP/1.1 keep-alive, 1 KiB request and response bodies; goal: ratio >= 0.8).
 * Load comes from h2load (nghttp2-client) in HTTP/1.1 mode. Run with `pnpm bench` after `pnpm build`
 * (turbo builds first).
 */
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type * as RouterModule from "../src/index.js";
import type { RouteRequest } from "../src/index.js";

const run = promisify(execFile);

// Measure the published build (what users run); fall back to the TypeScript sources when it is missing.
const distUrl = new URL("../dist/index.js", import.meta.url);
let router: typeof RouterModule;
try {
  router = (await import(distUrl.href)) as typeof RouterModule;
  console.log("benchmarking dist/index.js");
} catch {
  router = await import("../src/index.js");
  console.log(
    "dist/ not built: benchmarking the TypeScript sources (run `pnpm build` first for release numbers)",
  );
}
const { createRouteTable, createWaypointHandler } = router;

function makeRoutes(n: number): unknown[] {
  const routes: unknown[] = [];
  for (let i = 0; i < n; i++) {
    routes.push({
      kind: "HTTPRoute",
      metadata: {
        name: `route-${i}`,
        namespace: "bench",
        creationTimestamp: new Date(1_700_000_000_000 + i * 1000).toISOString(),
      },
      spec: {
        parentRefs: [{ kind: "Gateway", name: "waypoint" }],
        hostnames: [`svc-${i % 25}.bench.svc.cluster.local`],
        rules: [
          {
            matches: [{ path: { type: "Exact", value: `/api/v${i}/health` } }],
            backendRefs: [{ name: `svc-${i}`, port: 80 }],
          },
          {
            matches: [{ path: { value: `/api/v${i}` }, headers: [{ name: "x-canary", value: "true" }] }],
            backendRefs: [{ name: `svc-${i}-canary`, port: 80 }],
          },
          {
            matches: [{ path: { value: `/api/v${i}` }, method: "POST" }],
            backendRefs: [{ name: `svc-${i}`, port: 80 }],
          },
          { matches: [{ path: { value: `/static/${i}` } }], backendRefs: [{ name: `svc-${i}`, port: 80 }] },
        ],
      },
    });
  }
  return routes;
}

function makeRequests(n: number, count: number): RouteRequest[] {
  const out: RouteRequest[] = [];
  for (let k = 0; k < count; k++) {
    const i = (k * 7919) % n;
    const host = `svc-${i % 25}.bench.svc.cluster.local`;
    const kind = k % 4;
    const path =
      kind === 0
        ? `/api/v${i}/health`
        : kind === 1
          ? `/api/v${i}/users/${k}`
          : kind === 2
            ? `/static/${i}/app.js`
            : `/missing/${k}`;
    out.push({
      host,
      path,
      method: kind === 1 ? "POST" : "GET",
      headers: kind === 2 ? { "x-canary": "true" } : {},
      query: "a=1",
    });
  }
  return out;
}

/** Best per-match time for each table size, rounds interleaved so machine load hits both alike. */
function timeMatches(sizes: readonly number[]): number[] {
  const setups = sizes.map((n) => ({
    table: createRouteTable(makeRoutes(n)),
    requests: makeRequests(n, 4096),
  }));
  const best = sizes.map(() => Number.POSITIVE_INFINITY);
  let sink = 0;
  for (let round = 0; round < 60; round++) {
    setups.forEach(({ table, requests }, k) => {
      const iterations = 20_000;
      const start = process.hrtime.bigint();
      for (let i = 0; i < iterations; i++)
        if (table.match(requests[i % requests.length] as RouteRequest) !== undefined) sink++;
      const ns = Number(process.hrtime.bigint() - start) / iterations;
      if (round > 4) best[k] = Math.min(best[k] as number, ns);
    });
  }
  if (sink < 0) console.log(sink);
  return best;
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

interface LoadResult {
  rps: number;
  /** CPU time of this process (proxy + backend) per request, in microseconds. */
  cpuPerRequestUs: number;
}

async function h2load(port: number, bodyFile: string, seconds: number): Promise<LoadResult> {
  const cpuBefore = process.cpuUsage();
  const { stdout } = await run(
    "h2load",
    [
      "--h1",
      "-c",
      "32",
      "-m",
      "1",
      "-t",
      "1",
      "-D",
      String(seconds),
      "-d",
      bodyFile,
      "-H",
      "content-type: application/octet-stream",
      `http://127.0.0.1:${port}/api/echo`,
    ],
    { timeout: (seconds + 20) * 1000 },
  );
  const m = /finished in [^,]+, ([\d.]+) req\/s/.exec(stdout);
  const ok = /status codes: (\d+) 2xx/.exec(stdout);
  if (m === null || ok === null || Number(ok[1]) === 0)
    throw new Error(`unexpected h2load output:\n${stdout}`);
  const bad = /status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  if (bad !== null && Number(bad[1]) + Number(bad[2]) + Number(bad[3]) > 0) {
    throw new Error(`non-2xx answers during the run:\n${stdout}`);
  }
  if (process.env.BENCH_VERBOSE === "1") console.log(stdout);
  const cpu = process.cpuUsage(cpuBefore);
  return { rps: Number(m[1]), cpuPerRequestUs: (cpu.user + cpu.system) / Number(ok[1]) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

async function proxyBench(): Promise<{ router: LoadResult[]; baseline: LoadResult[] }> {
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

  // Baseline: the smallest useful node:http reverse proxy (keep-alive pool, streaming both ways).
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const baseline = http.createServer((req, res) => {
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
  baseline.keepAliveTimeout = 60_000;
  const baselinePort = await listen(baseline);

  const handler = createWaypointHandler({
    routes: makeRoutes(10).concat([
      {
        kind: "HTTPRoute",
        metadata: { name: "echo", namespace: "bench" },
        spec: {
          parentRefs: [{ kind: "Gateway", name: "waypoint" }],
          rules: [
            {
              matches: [{ path: { value: "/api/echo" } }],
              filters: [
                {
                  type: "RequestHeaderModifier",
                  requestHeaderModifier: { set: [{ name: "x-routed", value: "1" }] },
                },
              ],
              backendRefs: [{ name: "echo", port: 80 }],
            },
          ],
        },
      },
    ]),
    resolveBackend: (b) =>
      b.name === "echo" ? [{ address: "127.0.0.1", port: backendPort, protocol: "http1" }] : undefined,
    connect: (ep) => net.connect(ep.port, ep.address),
  });
  const front = net.createServer((socket) =>
    handler.handle(socket, { peerIdentity: "spiffe://cluster.local/ns/bench/sa/client" }),
  );
  const routerPort = await listen(front);

  const bodyFile = join(tmpdir(), `router-bench-${process.pid}.bin`);
  writeFileSync(bodyFile, Buffer.alloc(1024, "q"));
  const seconds = 2;
  await h2load(routerPort, bodyFile, 2); // warm-up (JIT)
  await h2load(baselinePort, bodyFile, 2);
  const routerRuns: LoadResult[] = [];
  const baselineRuns: LoadResult[] = [];
  // Interleaved runs, so load from other processes hits both sides alike.
  for (let i = 0; i < 5; i++) {
    // Alternate which side goes first so neither always gets the warmer machine.
    if (i % 2 === 0) {
      baselineRuns.push(await h2load(baselinePort, bodyFile, seconds));
      routerRuns.push(await h2load(routerPort, bodyFile, seconds));
    } else {
      routerRuns.push(await h2load(routerPort, bodyFile, seconds));
      baselineRuns.push(await h2load(baselinePort, bodyFile, seconds));
    }
  }
  await handler.close();
  agent.destroy();
  for (const s of [front, baseline, backend]) {
    (s as http.Server).closeAllConnections?.();
    s.close();
  }
  return { router: routerRuns, baseline: baselineRuns };
}

// `pnpm bench -- --only=route` or `--only=proxy` runs one part.
const only = process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length);
if (only !== "proxy") {
  const [t10 = 0, t1000 = 0] = timeMatches([10, 1000]);
  const routeRatio = t1000 / t10;
  console.log(`route decision: 10 routes ${t10.toFixed(0)} ns, 1000 routes ${t1000.toFixed(0)} ns`);
  console.log(`route decision ratio ${routeRatio.toFixed(2)} (goal <= 2.0)`);
}
if (only !== "route") {
  const { router, baseline } = await proxyBench();
  const rpsRouter = median(router.map((r) => r.rps));
  const rpsBaseline = median(baseline.map((r) => r.rps));
  const cpuRouter = median(router.map((r) => r.cpuPerRequestUs));
  const cpuBaseline = median(baseline.map((r) => r.cpuPerRequestUs));
  console.log(
    `HTTP/1.1 keep-alive, 1 KiB bodies, 32 connections (median of 5 interleaved runs): waypoint ${rpsRouter.toFixed(0)} req/s, node:http proxy ${rpsBaseline.toFixed(0)} req/s`,
  );
  console.log(
    `CPU per request (proxy + backend process): waypoint ${cpuRouter.toFixed(0)} us, node:http proxy ${cpuBaseline.toFixed(0)} us`,
  );
  console.log(`proxy throughput ratio ${(rpsRouter / rpsBaseline).toFixed(2)} (goal >= 0.80)`);
  console.log(
    `proxy CPU-efficiency ratio ${(cpuBaseline / cpuRouter).toFixed(2)} (goal >= 0.80; less sensitive to other load on the machine)`,
  );
}
