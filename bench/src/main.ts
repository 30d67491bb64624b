/**
 * `pnpm bench` in bench/ (or at the root): the mesh data-path benchmark. Flags:
 *   --quick              1 s per case and 200 tunnels: a smoke run, not a measurement
 *   --bulk-seconds=N     seconds per bulk case and pair (default 8), split over the slices
 *   --bulk-slices=N      interleaved rounds per bulk case (default 4; 1 with --quick): each round runs
 *                      every pair for one slice of bulk-seconds/N s (at least 1) in a rotated order
 *   --latency-seconds=N  seconds of ping-pong and of new connections per pair (default 3)
 *   --tunnels=N          tunnels held open at once (default 10000)
 *   --phases=a,b         bulk, ping, connect, tunnels (default all)
 *   --pairs=a,b          haproxy, node-tls, ztunnel (default all)
 *   --cpu-prof           write V8 CPU profiles of the Node proxies (ztunnels, TLS relays) to bench/profiles/;
 *                      summarize them with `node --import tsx src/profile-summary.ts profiles/*.cpuprofile`
 *   --base-tree=DIR      also run the ztunnel pair of another built checkout (e.g. a `git worktree` of an
 *                      older commit) as `ztunnel-base`, with its own pods, in the same run: before/after
 *   --no-pin             do not pin the proxies to CPUs
 *   --subnet=N           loopback addresses 127.N.x.y (default 77), so two loopback runs can share a machine
 *   --netns              the namespace mesh instead of loopback (root): pods are network namespaces,
 *                      the ztunnels capture in-pod, phases bulk, ping, connect (src/netns-bench.ts)
 *   --waypoint           the waypoint against haproxy in HTTP mode with h2load (src/waypoint-bench.ts),
 *                      and a minimal node:https proxy as Node's floor (src/node-https-proxy.ts);
 *                      --waypoint-proxies=a,b picks among waypoint, haproxy, node-https (default all);
 *                      --waypoint-slices=N (default 6) slices of --waypoint-seconds=N (default 3);
 *                      --waypoint-baseline=DIR runs a second waypoint from a snapshot of earlier code;
 *                      --waypoint-node-flags="..." starts the current waypoint with those node flags in
 *                      place of those of its `pnpm start`
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ALL_PHASES, type BenchResult, type Phase, runBench } from "./bench.js";
import { NETNS_PHASES, netnsPreamble, runNetnsBench } from "./netns-bench.js";
import { netnsUnavailable } from "./netns-topology.js";
import { installExitHandlers } from "./processes.js";
import { formatReport } from "./report.js";
import type { PairName } from "./topology.js";
import { formatWaypointReport, runWaypointBench } from "./waypoint-bench.js";
import { DEFAULT_WAYPOINT_PROXIES, type WaypointProxyName } from "./waypoint-topology.js";

const usage = `usage: pnpm bench [-- --quick] [--bulk-seconds=N] [--bulk-slices=N] [--latency-seconds=N] [--tunnels=N]
       [--phases=bulk,ping,connect,tunnels] [--pairs=haproxy,node-tls,ztunnel] [--cpu-prof] [--no-pin] [--subnet=N] [--netns]
       [--base-tree=DIR]
       [--waypoint [--waypoint-proxies=waypoint,haproxy,node-https] [--waypoint-slices=N] [--waypoint-seconds=N]
        [--waypoint-baseline=DIR]
        [--waypoint-node-flags="..."]]`;

// pnpm passes its "--" separator through, also after the options of a script such as `bench:netns`;
// the bench takes no positional arguments, so a "--" anywhere is only that separator.
const argv = process.argv.slice(2).filter((arg) => arg !== "--");
const options = {
  help: { type: "boolean", short: "h", default: false },
  quick: { type: "boolean", default: false },
  "bulk-seconds": { type: "string" },
  "bulk-slices": { type: "string" },
  "latency-seconds": { type: "string" },
  tunnels: { type: "string" },
  phases: { type: "string" },
  pairs: { type: "string" },
  "cpu-prof": { type: "boolean", default: false },
  "base-tree": { type: "string" },
  "no-pin": { type: "boolean", default: false },
  subnet: { type: "string" },
  netns: { type: "boolean", default: false },
  waypoint: { type: "boolean", default: false },
  "waypoint-proxies": { type: "string" },
  "waypoint-slices": { type: "string" },
  "waypoint-seconds": { type: "string" },
  "waypoint-baseline": { type: "string" },
  "waypoint-node-flags": { type: "string" },
} as const;
let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof options }>>["values"];
try {
  ({ values } = parseArgs({ args: argv, options }));
} catch (err) {
  console.error(`${(err as Error).message}\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`--${name} must be a positive integer`);
    process.exit(2);
  }
  return n;
}

function subnetOf(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 254) {
    console.error("--subnet must be an integer from 1 to 254");
    process.exit(2);
  }
  return n;
}

function list<T extends string>(
  name: string,
  text: string | undefined,
  allowed: readonly T[],
): T[] | undefined {
  if (text === undefined) return undefined;
  const items = text.split(",").map((s) => s.trim()) as T[];
  const bad = items.filter((i) => !allowed.includes(i));
  if (bad.length > 0) {
    console.error(`--${name}: unknown ${bad.join(", ")} (known: ${allowed.join(", ")})`);
    process.exit(2);
  }
  return items;
}

installExitHandlers();
const quick = values.quick;
const phases = list<Phase>("phases", values.phases, values.netns ? NETNS_PHASES : ALL_PHASES);
const netnsProblem = values.netns ? netnsUnavailable() : undefined;
if (netnsProblem !== undefined) {
  console.error(`--netns: ${netnsProblem}`);
  process.exit(2);
}
const pairs = list<PairName>("pairs", values.pairs, ["haproxy", "node-tls", "ztunnel"]);
const profileDir = fileURLToPath(new URL("../profiles/", import.meta.url));
if (values["cpu-prof"]) mkdirSync(profileDir, { recursive: true });
// A whole run is bounded: each phase is, and this is the backstop.
const watchdog = setTimeout(() => {
  console.error("bench: still running after 10 minutes, stopping");
  process.kill(process.pid, "SIGTERM");
}, 600_000);
watchdog.unref();

if (values.waypoint) {
  const proxies = list<WaypointProxyName>(
    "waypoint-proxies",
    values["waypoint-proxies"],
    DEFAULT_WAYPOINT_PROXIES,
  );
  try {
    const result = await runWaypointBench({
      slices: positive("waypoint-slices", values["waypoint-slices"], quick ? 2 : 6),
      sliceSeconds: positive("waypoint-seconds", values["waypoint-seconds"], quick ? 1 : 3),
      ...(quick ? { warmupSeconds: 1 } : {}),
      pin: !values["no-pin"],
      ...(proxies === undefined ? {} : { proxies }),
      ...(values["waypoint-baseline"] === undefined ? {} : { baseline: values["waypoint-baseline"] }),
      ...(values["waypoint-node-flags"] === undefined
        ? {}
        : { currentWaypointNodeFlags: values["waypoint-node-flags"].split(" ").filter(Boolean) }),
      // A folder of its own, so a pair bench profiling at the same time does not mix with it.
      ...(values["cpu-prof"]
        ? { waypointNodeFlags: ["--cpu-prof", `--cpu-prof-dir=${join(profileDir, "waypoint")}`] }
        : {}),
      log: (line) => console.error(`bench: ${line}`),
    });
    await new Promise((done) => process.stdout.write(`${formatWaypointReport(result)}\n`, done));
  } catch (err) {
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  }
  process.exit(); // the pair bench below is not part of this run
}

try {
  const run = values.netns
    ? async (): Promise<{ result: BenchResult; preamble: string }> => {
        const result = await runNetnsBench({
          quick,
          bulkSeconds: positive("bulk-seconds", values["bulk-seconds"], quick ? 1 : 8),
          bulkSlices: positive("bulk-slices", values["bulk-slices"], quick ? 1 : 4),
          latencySeconds: positive("latency-seconds", values["latency-seconds"], quick ? 1 : 3),
          ...(phases === undefined ? {} : { phases }),
          ...(pairs === undefined ? {} : { pairs }),
          pin: !values["no-pin"],
          ...(values["cpu-prof"] ? { proxyNodeFlags: ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] } : {}),
          log: (line) => console.error(`bench: ${line}`),
        });
        return { result, preamble: `${netnsPreamble(result)}\n` };
      }
    : async () => ({ result: await loopback(), preamble: "" });
  const loopback = () =>
    runBench({
      quick,
      bulkSeconds: positive("bulk-seconds", values["bulk-seconds"], quick ? 1 : 8),
      bulkSlices: positive("bulk-slices", values["bulk-slices"], quick ? 1 : 4),
      latencySeconds: positive("latency-seconds", values["latency-seconds"], quick ? 1 : 3),
      tunnels: positive("tunnels", values.tunnels, quick ? 200 : 10_000),
      ...(values.subnet === undefined ? {} : { subnet: subnetOf(values.subnet) }),
      ...(phases === undefined ? {} : { phases }),
      ...(pairs === undefined ? {} : { pairs }),
      pin: !values["no-pin"],
      ...(values["cpu-prof"] ? { proxyNodeFlags: ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] } : {}),
      ...(values["base-tree"] === undefined ? {} : { baseTree: values["base-tree"] }),
      log: (line) => console.error(`bench: ${line}`),
    });
  const { result, preamble } = await run();
  console.log(`${preamble}${formatReport(result)}`);
  const failed = result.pairs.some((p) => p.errors.length > 0);
  process.exitCode = failed ? 1 : 0;
} catch (err) {
  console.error(`bench failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
}
