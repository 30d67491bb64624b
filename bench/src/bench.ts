/**
 * One bench run: starts the topology, drives the same phases through every pair (rotating which pair
 * goes first, so a change in machine load does not always hit the same one), and returns raw numbers.
 * The bulk phase runs in interleaved slices (`bulk-slices.ts`); its per-round ratios to haproxy are
 * part of the result, the other ratios are computed by the report.
 */
import { spawnSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import {
  addRoundRatios,
  type BulkSlice,
  type RoundRatios,
  rotate,
  runSlicedBulk,
  type SliceSample,
  sliceSecondsFor,
} from "./bulk-slices.js";
import { connectToFirstByte, holdTunnels, iperf, type Percentiles, pingPong } from "./load.js";
import { canPin, rssBytes, totalCpuSeconds } from "./processes.js";
import { type Pair, type PairName, startTopology } from "./topology.js";

export type Phase = "bulk" | "ping" | "connect" | "tunnels";
export const ALL_PHASES: readonly Phase[] = ["bulk", "ping", "connect", "tunnels"];

/** Options of {@link runBench}. */
export interface BenchOptions {
  /** Marks the run as a smoke run in the report. Default false. */
  quick?: boolean;
  /** Seconds per bulk case and pair, split over {@link bulkSlices} slices. Default 8. */
  bulkSeconds?: number;
  /** Interleaved rounds per bulk case: each pair runs one slice of `bulkSeconds / bulkSlices` s (at least 1) per round. Default 4. */
  bulkSlices?: number;
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

/** One bulk case through one pair: totals over all its slices. */
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
  /** Each slice of the case, in round order (absent in results from before the bulk phase was sliced). */
  slices?: BulkSlice[];
  /** Per-round ratios to the baseline pair's slices of the same stream count (not on the baseline itself). */
  vsBaseline?: RoundRatios & { pair: string };
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
    /** Interleaved rounds per bulk case (absent before the bulk phase was sliced). */
    bulkSlices?: number;
    /** Seconds of each slice (absent before the bulk phase was sliced). */
    bulkSliceSeconds?: number;
    latencySeconds: number;
    tunnels: number;
    streams: number[];
    quick: boolean;
  };
  direct: { pingPong?: Percentiles; connect?: Percentiles & { errors: number } };
  pairs: PairResult[];
}

/** Time to open the tunnels through one pair: 10,000 mutual TLS handshakes take long on a busy CPU. */
const TUNNEL_PHASE_MS = 60_000;

/** One slice through one pair: iperf3 from the client pod, proxy (and shim) CPU read around it. */
async function bulkSlice(pair: Pair, streams: number, seconds: number, bindIp: string): Promise<SliceSample> {
  const proxyPids = pair.proxies.map((p) => p.pid);
  const helperPids = pair.helpers.map((p) => p.pid);
  const cpu0 = totalCpuSeconds(proxyPids);
  const help0 = totalCpuSeconds(helperPids);
  const result = await iperf(pair.iperfAddress.host, pair.iperfAddress.port, bindIp, streams, seconds);
  return {
    bytes: result.bytes,
    seconds: result.seconds,
    proxyCpuSeconds: totalCpuSeconds(proxyPids) - cpu0,
    ...(helperPids.length > 0 ? { helperCpuSeconds: totalCpuSeconds(helperPids) - help0 } : {}),
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
  const bulkSeconds = options.bulkSeconds ?? 8;
  const bulkSlices = options.bulkSlices ?? 4;
  const bulkSliceSeconds = sliceSecondsFor(bulkSeconds, bulkSlices);
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
    options: {
      bulkSeconds,
      bulkSlices,
      bulkSliceSeconds,
      latencySeconds,
      tunnels,
      streams,
      quick: options.quick ?? false,
    },
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
      const bulk = await runSlicedBulk({
        pairs: topology.pairs,
        streams,
        slices: bulkSlices,
        sliceSeconds: bulkSliceSeconds,
        measure: (pair, n, seconds) => bulkSlice(pair, n, seconds, topology.clientPodIp),
        onError: (pair, what, err) => {
          get(pair).errors.push(`${what}: ${err.message}`);
          log(`${pair.name} ${what}: ${err.message}`);
        },
        log,
      });
      for (const pair of topology.pairs) get(pair).bulk.push(...(bulk.get(pair.name) ?? []));
      addRoundRatios(result.pairs);
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
