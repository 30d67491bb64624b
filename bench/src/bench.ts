/**
 * One bench run: starts the topology, drives the same phases through every pair (rotating which pair
 * goes first, so a change in machine load does not always hit the same one), and returns raw numbers.
 * Ratios to haproxy are computed by the report.
 */
import { spawnSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import {
  connectToFirstByte,
  holdTunnels,
  type IperfResult,
  iperf,
  type Percentiles,
  pingPong,
} from "./load.js";
import { canPin, rssBytes, totalCpuSeconds } from "./processes.js";
import { type Pair, type PairName, startTopology } from "./topology.js";

export type Phase = "bulk" | "ping" | "connect" | "tunnels";
export const ALL_PHASES: readonly Phase[] = ["bulk", "ping", "connect", "tunnels"];

/** Options of {@link runBench}. */
export interface BenchOptions {
  /** Marks the run as a smoke run in the report. Default false. */
  quick?: boolean;
  /** Seconds per bulk case (iperf3 `-t`). Default 4. */
  bulkSeconds?: number;
  /** Seconds of ping-pong and of new connections per pair. Default 3. */
  latencySeconds?: number;
  /** Tunnels held open at once. Default 10,000. */
  tunnels?: number;
  /** Parallel iperf3 streams to run. Default [1, 8]. */
  streams?: readonly number[];
  phases?: readonly Phase[];
  pairs?: readonly PairName[];
  subnet?: number;
  pin?: boolean;
  proxyNodeFlags?: readonly string[];
  /** Another built checkout: adds its ztunnel pair as `ztunnel-base` (see TopologyOptions.baseTree). */
  baseTree?: string;
  log?: (line: string) => void;
}

/** One bulk case through one pair. */
export interface BulkResult {
  streams: number;
  gbitPerSecond: number;
  bytes: number;
  seconds: number;
  /** utime + stime of the pair's proxy processes during the transfer. */
  proxyCpuSeconds: number;
  proxyCpuSecondsPerGiB: number;
  /** The same for the helpers on the path that are not the pair (the ztunnel's SOCKS5 shim). */
  helperCpuSecondsPerGiB?: number;
}

/** Tunnels held open through one pair. */
export interface TunnelResult {
  requested: number;
  opened: number;
  /** Tunnels refused, reset or silent. */
  failed: number;
  /** Tunnels not attempted before the phase's deadline. */
  notAttempted: number;
  /** Seconds to open and prove the tunnels. */
  openSeconds: number;
  firstFailure?: string;
  /** RSS growth per open tunnel, per proxy process (outbound side first), in KiB. */
  rssKiBPerTunnel: number[];
  /** RSS of each proxy process with every tunnel open, in MiB. */
  rssMiBOpen: number[];
}

/** Everything measured through one pair. */
export interface PairResult {
  pair: PairName;
  bulk: BulkResult[];
  pingPong?: Percentiles & { addedP50: number; addedP99: number };
  connect?: Percentiles & { errors: number };
  tunnels?: TunnelResult;
  errors: string[];
}

/** A whole run. */
export interface BenchResult {
  startedAt: string;
  /** `git` commit of the tree, with "+changes" when the proxies' sources differ from it. */
  revision: string;
  node: string;
  cpus: number;
  pinned: boolean;
  loadAverage: { start: number[]; end: number[] };
  options: {
    bulkSeconds: number;
    latencySeconds: number;
    tunnels: number;
    streams: number[];
    quick: boolean;
  };
  direct: { pingPong?: Percentiles; connect?: Percentiles & { errors: number } };
  pairs: PairResult[];
}

const GIB = 1024 ** 3;
/** Time to open the tunnels through one pair: 10,000 mutual TLS handshakes take long on a busy CPU. */
const TUNNEL_PHASE_MS = 60_000;

function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % Math.max(1, items.length);
  return [...items.slice(k), ...items.slice(0, k)];
}

async function bulkCase(pair: Pair, streams: number, seconds: number, bindIp: string): Promise<BulkResult> {
  const proxyPids = pair.proxies.map((p) => p.pid);
  const helperPids = pair.helpers.map((p) => p.pid);
  const cpu0 = totalCpuSeconds(proxyPids);
  const help0 = totalCpuSeconds(helperPids);
  const result: IperfResult = await iperf(
    pair.iperfAddress.host,
    pair.iperfAddress.port,
    bindIp,
    streams,
    seconds,
  );
  const proxyCpuSeconds = totalCpuSeconds(proxyPids) - cpu0;
  const helperCpu = totalCpuSeconds(helperPids) - help0;
  const gib = result.bytes / GIB;
  return {
    streams,
    gbitPerSecond: result.bitsPerSecond / 1e9,
    bytes: result.bytes,
    seconds: result.seconds,
    proxyCpuSeconds,
    proxyCpuSecondsPerGiB: gib > 0 ? proxyCpuSeconds / gib : Number.NaN,
    ...(helperPids.length > 0 ? { helperCpuSecondsPerGiB: gib > 0 ? helperCpu / gib : Number.NaN } : {}),
  };
}

/** The commit measured, and whether the code under test had uncommitted changes. */
function revision(): string {
  const git = (...args: string[]) => spawnSync("git", args, { encoding: "utf8" }).stdout?.trim() ?? "";
  const head = git("rev-parse", "--short", "HEAD");
  if (head === "") return "unknown";
  const root = git("rev-parse", "--show-toplevel");
  const dirty = git("-C", root, "status", "--porcelain", "--", "packages", "examples", "bench/src");
  return dirty === "" ? head : `${head}+changes`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts everything, runs the phases, stops everything (also on error). */
export async function runBench(options: BenchOptions = {}): Promise<BenchResult> {
  const log = options.log ?? (() => {});
  const bulkSeconds = options.bulkSeconds ?? 4;
  const latencySeconds = options.latencySeconds ?? 3;
  const tunnels = options.tunnels ?? 10_000;
  const streams = [...(options.streams ?? [1, 8])];
  const phases = new Set(options.phases ?? ALL_PHASES);
  const pinned = (options.pin ?? true) && canPin;
  const result: BenchResult = {
    startedAt: new Date().toISOString(),
    revision: revision(),
    node: process.version,
    cpus: cpus().length,
    pinned,
    loadAverage: { start: loadavg().map((l) => Number(l.toFixed(2))), end: [] },
    options: { bulkSeconds, latencySeconds, tunnels, streams, quick: options.quick ?? false },
    direct: {},
    pairs: [],
  };
  const topology = await startTopology({
    ...(options.subnet === undefined ? {} : { subnet: options.subnet }),
    ...(options.pairs === undefined ? {} : { pairs: options.pairs }),
    ...(options.proxyNodeFlags === undefined ? {} : { proxyNodeFlags: options.proxyNodeFlags }),
    ...(options.baseTree === undefined ? {} : { baseTree: options.baseTree }),
    pin: pinned,
    log,
  });
  try {
    const byName = new Map<PairName, PairResult>();
    for (const pair of topology.pairs) {
      const r: PairResult = { pair: pair.name, bulk: [], errors: [] };
      byName.set(pair.name, r);
      result.pairs.push(r);
    }
    const get = (pair: Pair) => byName.get(pair.name) as PairResult;
    const attempt = async (pair: Pair, what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        const line = `${what}: ${(err as Error).message}`;
        get(pair).errors.push(line);
        log(`${pair.name} ${line}`);
      }
    };

    if (phases.has("bulk")) {
      // One unrecorded second per pair first: Node's JIT and heaps settle in the first transfer.
      for (const pair of topology.pairs) {
        log(`bulk warm-up through ${pair.name}, 1 s`);
        await attempt(pair, "bulk warm-up", async () => {
          await iperf(pair.iperfAddress.host, pair.iperfAddress.port, topology.clientPodIp, 1, 1);
        });
        await sleep(300);
      }
      for (const [i, n] of streams.entries()) {
        for (const pair of rotate(topology.pairs, i)) {
          log(`bulk ${n} stream(s) through ${pair.name}, ${bulkSeconds} s`);
          await attempt(pair, `bulk ${n}`, async () => {
            get(pair).bulk.push(await bulkCase(pair, n, bulkSeconds, topology.clientPodIp));
          });
          await sleep(300); // let the iperf3 server close the test
        }
      }
    }
    if (phases.has("ping")) {
      log(`64-byte ping-pong, direct, ${latencySeconds} s`);
      const direct = await pingPong(topology.direct("echo"), latencySeconds * 1000);
      result.direct.pingPong = direct;
      for (const pair of rotate(topology.pairs, 1)) {
        log(`64-byte ping-pong through ${pair.name}, ${latencySeconds} s`);
        await attempt(pair, "ping-pong", async () => {
          const p = await pingPong(pair.route("echo"), latencySeconds * 1000);
          get(pair).pingPong = { ...p, addedP50: p.p50 - direct.p50, addedP99: p.p99 - direct.p99 };
        });
      }
    }
    if (phases.has("connect")) {
      log(`new connection to first byte, direct, ${latencySeconds} s`);
      result.direct.connect = await connectToFirstByte(topology.direct("echo"), latencySeconds * 1000);
      for (const pair of rotate(topology.pairs, 2)) {
        log(`new connection to first byte through ${pair.name}, ${latencySeconds} s`);
        await attempt(pair, "connect", async () => {
          get(pair).connect = await connectToFirstByte(pair.route("echo"), latencySeconds * 1000);
        });
      }
    }
    if (phases.has("tunnels")) {
      for (const pair of topology.pairs) {
        const count = Math.min(tunnels, pair.maxTunnels);
        log(`${count} open tunnels through ${pair.name}`);
        await attempt(pair, "tunnels", async () => {
          await sleep(500);
          const before = pair.proxies.map((p) => rssBytes(p.pid));
          let open: number[] = [];
          const held = await holdTunnels(
            pair.route("echo"),
            count,
            async () => {
              await sleep(500);
              open = pair.proxies.map((p) => rssBytes(p.pid));
            },
            { deadlineMs: TUNNEL_PHASE_MS },
          );
          get(pair).tunnels = {
            requested: count,
            opened: held.opened,
            failed: held.failed,
            notAttempted: held.notAttempted,
            openSeconds: held.openSeconds,
            ...(held.firstFailure === undefined ? {} : { firstFailure: held.firstFailure }),
            rssKiBPerTunnel: open.map((bytes, i) =>
              held.opened > 0 ? (bytes - (before[i] ?? 0)) / 1024 / held.opened : Number.NaN,
            ),
            rssMiBOpen: open.map((bytes) => bytes / 1024 ** 2),
          };
        });
        await sleep(500); // let the closes drain before the next pair
      }
    }
  } finally {
    result.loadAverage.end = loadavg().map((l) => Number(l.toFixed(2)));
    await topology.close();
  }
  return result;
}
