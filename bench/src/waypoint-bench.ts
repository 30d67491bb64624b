/**
 * The waypoint phase of issue 15: the same h2load run (HTTP/1.1 keep-alive, 1 KiB request and response
 * bodies) through the waypoint, through haproxy in HTTP mode and through a minimal `node:https` proxy
 * doing haproxy's job (Node's floor), each pinned to CPU 1, in alternating slices so all see the same
 * machine load. Reported per proxy: requests per second and the proxy
 * process's own CPU per request (utime + stime from /proc), with the ratio to haproxy beside it; the
 * two ends' and the backend's CPU are printed apart.
 */
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { canPin, cpuSeconds, totalCpuSeconds } from "./processes.js";
import { startWaypointTopology, type WaypointProxyName, type WaypointTopology } from "./waypoint-topology.js";

const run = promisify(execFile);

/** Options of {@link runWaypointBench}. */
export interface WaypointBenchOptions {
  /** Measured slices per proxy. Default 6. */
  slices?: number;
  /** Seconds per slice. Default 3. */
  sliceSeconds?: number;
  /** Unrecorded seconds through each proxy first, for the JIT (Node) and the caches. Default 8. */
  warmupSeconds?: number;
  /** h2load connections. Default 32. */
  connections?: number;
  pin?: boolean;
  proxies?: readonly WaypointProxyName[];
  subnet?: number;
  waypointNodeFlags?: readonly string[];
  /** Node flags for the current waypoint only (see WaypointTopologyOptions). */
  currentWaypointNodeFlags?: readonly string[];
  /** A snapshot of earlier waypoint code to run beside the current one (see WaypointTopologyOptions). */
  baseline?: string;
  accessLog?: boolean;
  log?: (line: string) => void;
}

/** What one proxy did over all its measured slices. */
export interface WaypointProxyResult {
  name: WaypointProxyName;
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  /** The proxy process's utime + stime per request, microseconds. */
  proxyCpuUsPerRequest: number;
  /** The client and server ends, together, per request (not billed to the proxy). */
  endsCpuUsPerRequest: number;
  backendCpuUsPerRequest: number;
  /** Requests per second of each slice, in order, to show the spread. */
  sliceRequestsPerSecond: number[];
}

/** A waypoint bench run. */
export interface WaypointBenchResult {
  startedAt: string;
  loadAverage: string;
  connections: number;
  sliceSeconds: number;
  pinned: boolean;
  accessLog: boolean;
  /** The snapshot "waypoint-before" ran from, if any. */
  baseline?: string;
  /** Node flags the current waypoint alone was started with, if any. */
  currentWaypointNodeFlags?: readonly string[];
  proxies: WaypointProxyResult[];
}

/** One h2load run; throws on any non-2xx answer. */
async function h2load(
  entry: { host: string; port: number },
  topology: WaypointTopology,
  bodyFile: string,
  seconds: number,
  connections: number,
  pin: boolean,
): Promise<{ requests: number; seconds: number }> {
  const args = [
    "--h1",
    "-c",
    String(connections),
    "-m",
    "1",
    "-t",
    "1",
    "-D",
    String(seconds),
    "-d",
    bodyFile,
    "-H",
    `:authority: ${topology.host}`,
    "-H",
    "content-type: application/octet-stream",
    `http://${entry.host}:${entry.port}${topology.path}`,
  ];
  const { stdout } = await run(pin ? "taskset" : "h2load", pin ? ["-c", "0", "h2load", ...args] : args, {
    timeout: (seconds + 30) * 1000,
  });
  const finished = /finished in ([\d.]+)(ms|s), /.exec(stdout);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  if (finished === null || codes === null || Number(codes[1]) === 0) {
    throw new Error(`unexpected h2load output:\n${stdout}`);
  }
  if (Number(codes[2]) + Number(codes[3]) + Number(codes[4]) > 0) {
    throw new Error(`non-2xx answers during the run:\n${stdout}`);
  }
  return { requests: Number(codes[1]), seconds: Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1) };
}

/** Starts the topology, warms each proxy up, measures alternating slices, stops everything. */
export async function runWaypointBench(options: WaypointBenchOptions = {}): Promise<WaypointBenchResult> {
  const log = options.log ?? (() => {});
  const slices = options.slices ?? 6;
  const sliceSeconds = options.sliceSeconds ?? 3;
  const connections = options.connections ?? 32;
  const pin = (options.pin ?? true) && canPin;
  const loadAverage = () => {
    try {
      return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
    } catch {
      return "n/a";
    }
  };
  const startedAt = new Date().toISOString();
  const loadAtStart = loadAverage();
  const topology = await startWaypointTopology({
    pin,
    log,
    accessLog: options.accessLog ?? false,
    ...(options.proxies === undefined ? {} : { proxies: options.proxies }),
    ...(options.subnet === undefined ? {} : { subnet: options.subnet }),
    ...(options.waypointNodeFlags === undefined ? {} : { waypointNodeFlags: options.waypointNodeFlags }),
    ...(options.currentWaypointNodeFlags === undefined
      ? {}
      : { currentWaypointNodeFlags: options.currentWaypointNodeFlags }),
    ...(options.baseline === undefined ? {} : { baseline: options.baseline }),
  });
  const bodyFile = join(tmpdir(), `waypoint-bench-body-${process.pid}`);
  writeFileSync(bodyFile, Buffer.alloc(1024, 0x62));
  try {
    const totals = new Map(
      topology.paths.map((p) => [
        p.name,
        { requests: 0, seconds: 0, proxyCpu: 0, endsCpu: 0, backendCpu: 0, perSlice: [] as number[] },
      ]),
    );
    for (const path of topology.paths) {
      log(`warm-up through ${path.name}`);
      await h2load(path.entry, topology, bodyFile, options.warmupSeconds ?? 8, connections, pin);
    }
    for (let slice = 0; slice < slices; slice++) {
      // Rotate which proxy goes first, so none always follows the same one.
      const n = topology.paths.length;
      const order = topology.paths.map(
        (_, i) => topology.paths[(i + slice) % n] as (typeof topology.paths)[number],
      );
      for (const path of order) {
        const endPids = path.ends.map((e) => e.pid);
        const before = {
          proxy: cpuSeconds(path.proxy.pid),
          ends: totalCpuSeconds(endPids),
          backend: cpuSeconds(topology.backend.pid),
        };
        const { requests, seconds } = await h2load(
          path.entry,
          topology,
          bodyFile,
          sliceSeconds,
          connections,
          pin,
        );
        const t = totals.get(path.name);
        if (t === undefined) continue;
        t.requests += requests;
        t.seconds += seconds;
        t.proxyCpu += cpuSeconds(path.proxy.pid) - before.proxy;
        t.endsCpu += totalCpuSeconds(endPids) - before.ends;
        t.backendCpu += cpuSeconds(topology.backend.pid) - before.backend;
        t.perSlice.push(requests / seconds);
        log(`slice ${slice + 1}/${slices} ${path.name}: ${(requests / seconds).toFixed(0)} req/s`);
      }
    }
    const us = (cpu: number, requests: number) => (cpu * 1e6) / requests;
    return {
      startedAt,
      loadAverage: `${loadAtStart} (end ${loadAverage()})`,
      connections,
      sliceSeconds,
      pinned: pin,
      accessLog: options.accessLog ?? false,
      ...(options.baseline === undefined ? {} : { baseline: options.baseline }),
      ...(options.currentWaypointNodeFlags === undefined
        ? {}
        : { currentWaypointNodeFlags: options.currentWaypointNodeFlags }),
      proxies: [...totals].map(([name, t]) => ({
        name,
        requests: t.requests,
        seconds: t.seconds,
        requestsPerSecond: t.requests / t.seconds,
        proxyCpuUsPerRequest: us(t.proxyCpu, t.requests),
        endsCpuUsPerRequest: us(t.endsCpu, t.requests),
        backendCpuUsPerRequest: us(t.backendCpu, t.requests),
        sliceRequestsPerSecond: t.perSlice,
      })),
    };
  } finally {
    rmSync(bodyFile, { force: true });
    await topology.close();
  }
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "n/a";
}

/** One Markdown table with ratios to haproxy, then a `BENCH_JSON` line. */
export function formatWaypointReport(result: WaypointBenchResult): string {
  const haproxy = result.proxies.find((p) => p.name === "haproxy");
  const ratio = (value: number, base: number | undefined) =>
    base === undefined || base === 0 ? "" : ` (${fmt(value / base, 2)}x)`;
  const lines = [
    `waypoint vs haproxy (HTTP mode)${result.proxies.some((p) => p.name === "node-https") ? " and node-https (a minimal node:https proxy, the floor)" : ""}${result.baseline === undefined ? "" : ` and the waypoint before (${result.baseline})`}, h2load --h1 -c ${result.connections}, 1 KiB bodies, ${result.proxies[0]?.sliceRequestsPerSecond.length ?? 0} slices of ${result.sliceSeconds} s per proxy${result.pinned ? ", proxies on CPU 1, h2load, ends and backend on CPU 0" : ", not pinned"}; access log ${result.accessLog ? "on" : "off"};${result.currentWaypointNodeFlags === undefined ? "" : ` waypoint started with ${result.currentWaypointNodeFlags.join(" ")};`} load ${result.loadAverage}; ${result.startedAt}`,
    "",
  ];
  const names = (["haproxy", "node-https", "waypoint-before", "waypoint"] as const).filter((n) =>
    result.proxies.some((p) => p.name === n),
  );
  const before = result.proxies.find((p) => p.name === "waypoint-before");
  const floor = result.proxies.find((p) => p.name === "node-https");
  const now = result.proxies.find((p) => p.name === "waypoint");
  lines.push(
    `| measurement | ${names.join(" | ")} |${floor === undefined ? "" : " waypoint / node-https |"}${before === undefined ? "" : " waypoint / waypoint-before |"} goal |`,
    `| --- | ${names.map(() => "---").join(" | ")} |${floor === undefined ? "" : " --- |"}${before === undefined ? "" : " --- |"} --- |`,
  );
  const row = (label: string, pick: (p: WaypointProxyResult) => number, digits: number, goal: string) => {
    const cell = (name: WaypointProxyName) => {
      const p = result.proxies.find((x) => x.name === name);
      if (p === undefined) return "-";
      return `${fmt(pick(p), digits)}${name === "haproxy" ? "" : ratio(pick(p), haproxy === undefined ? undefined : pick(haproxy))}`;
    };
    const vs = (other: WaypointProxyResult | undefined) =>
      other === undefined ? "" : ` ${now === undefined ? "-" : fmt(pick(now) / pick(other), 2)} |`;
    lines.push(`| ${label} | ${names.map(cell).join(" | ")} |${vs(floor)}${vs(before)} ${goal} |`);
  };
  row("requests per second", (p) => p.requestsPerSecond, 0, ">= 0.5x");
  row(
    "proxy CPU per request, us (utime+stime of the proxy process)",
    (p) => p.proxyCpuUsPerRequest,
    1,
    "<= 3x",
  );
  row("client end + server end CPU per request, us (not billed)", (p) => p.endsCpuUsPerRequest, 1, "-");
  row("backend CPU per request, us (not billed)", (p) => p.backendCpuUsPerRequest, 1, "-");
  for (const p of result.proxies) {
    lines.push("", `${p.name} req/s per slice: ${p.sliceRequestsPerSecond.map((r) => fmt(r)).join(", ")}`);
  }
  lines.push("", `BENCH_JSON ${JSON.stringify({ waypoint: result })}`);
  return lines.join("\n");
}
