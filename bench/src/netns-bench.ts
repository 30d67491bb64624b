/**
 * One run of the bench on the namespace mesh (`pnpm bench -- --netns`): the same bulk, ping-pong and
 * new-connection phases as on loopback, driven from inside the client pod through each pair, with the
 * same rotation of which pair goes first and the same interleaved bulk slices (`bulk-slices.ts`).
 * Returns a {@link BenchResult}, so the report is the same.
 * The open-tunnels phase stays on loopback (it measures the proxies' memory, not the path).
 */

import { spawnSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import type { BenchResult, PairResult, Phase } from "./bench.js";
import { addRoundRatios, rotate, runSlicedBulk, type SliceSample, sliceSecondsFor } from "./bulk-slices.js";
import { connectInPod, iperfInPod, pingPongInPod } from "./netns-load.js";
import { type NetnsPair, type NetnsTopology, startNetnsTopology } from "./netns-topology.js";
import { canPin, totalCpuSeconds } from "./processes.js";
import type { PairName } from "./topology.js";

export const NETNS_PHASES: readonly Phase[] = ["bulk", "ping", "connect"];

export interface NetnsBenchOptions {
  quick?: boolean;
  /** Seconds per bulk case and pair, split over `bulkSlices` slices. Default 8. */
  bulkSeconds?: number;
  /** Interleaved rounds per bulk case (see BenchOptions.bulkSlices). Default 4. */
  bulkSlices?: number;
  /** Seconds of ping-pong and of new connections per pair. Default 3. */
  latencySeconds?: number;
  streams?: readonly number[];
  /** Of bulk, ping, connect (tunnels is not run here). Default all three. */
  phases?: readonly Phase[];
  pairs?: readonly PairName[];
  pin?: boolean;
  proxyNodeFlags?: readonly string[];
  log?: (line: string) => void;
}

/** A run's numbers, plus iperf3 straight across the veth with no proxy. */
export interface NetnsBenchResult extends BenchResult {
  mesh: "netns";
  directBulk: { streams: number; gbitPerSecond: number }[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function revision(): string {
  const git = (...args: string[]) => spawnSync("git", args, { encoding: "utf8" }).stdout?.trim() ?? "";
  const head = git("rev-parse", "--short", "HEAD");
  if (head === "") return "unknown";
  const root = git("rev-parse", "--show-toplevel");
  const dirty = git("-C", root, "status", "--porcelain", "--", "packages", "examples", "bench/src");
  return dirty === "" ? head : `${head}+changes`;
}

/** One slice through one pair: unmodified iperf3 in the client pod, the pair's proxy CPU read around it. */
async function bulkSlice(
  topology: NetnsTopology,
  pair: NetnsPair,
  streams: number,
  seconds: number,
): Promise<SliceSample> {
  const pids = pair.proxies.map((p) => p.pid);
  const cpu0 = totalCpuSeconds(pids);
  const result = await iperfInPod(
    topology.namespaces.client,
    pair.route("iperf"),
    streams,
    seconds,
    topology.dir,
  );
  return {
    bytes: result.bytes,
    seconds: result.seconds,
    proxyCpuSeconds: totalCpuSeconds(pids) - cpu0,
  };
}

/** Builds the namespace mesh, runs the phases, removes everything (also on error). */
export async function runNetnsBench(options: NetnsBenchOptions = {}): Promise<NetnsBenchResult> {
  const log = options.log ?? (() => {});
  const bulkSeconds = options.bulkSeconds ?? 8;
  const bulkSlices = options.bulkSlices ?? 4;
  const bulkSliceSeconds = sliceSecondsFor(bulkSeconds, bulkSlices);
  const latencySeconds = options.latencySeconds ?? 3;
  const streams = [...(options.streams ?? [1, 8])];
  const phases = new Set(options.phases ?? NETNS_PHASES);
  const pinned = (options.pin ?? true) && canPin;
  const result: NetnsBenchResult = {
    mesh: "netns",
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
      tunnels: 0,
      streams,
      quick: options.quick ?? false,
    },
    direct: {},
    directBulk: [],
    pairs: [],
  };
  const topology = await startNetnsTopology({
    ...(options.pairs === undefined ? {} : { pairs: options.pairs }),
    ...(options.proxyNodeFlags === undefined ? {} : { proxyNodeFlags: options.proxyNodeFlags }),
    pin: pinned,
    log,
  });
  const client = topology.namespaces.client;
  try {
    const byName = new Map<PairName, PairResult>();
    for (const pair of topology.pairs) {
      const r: PairResult = { pair: pair.name, bulk: [], errors: [] };
      byName.set(pair.name, r);
      result.pairs.push(r);
    }
    const get = (pair: NetnsPair) => byName.get(pair.name) as PairResult;
    const attempt = async (pair: NetnsPair, what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (err) {
        const line = `${what}: ${(err as Error).message}`;
        get(pair).errors.push(line);
        log(`${pair.name} ${line}`);
      }
    };

    if (phases.has("bulk")) {
      for (const pair of topology.pairs) {
        log(`bulk warm-up through ${pair.name}, 1 s`);
        await attempt(pair, "bulk warm-up", async () => {
          await iperfInPod(client, pair.route("iperf"), 1, 1, topology.dir);
        });
        await sleep(300);
      }
      const bulk = await runSlicedBulk({
        pairs: topology.pairs,
        streams,
        slices: bulkSlices,
        sliceSeconds: bulkSliceSeconds,
        // The veth's own rate for this stream count, once, before the pairs' rounds.
        beforeStreams: async (n) => {
          log(`bulk ${n} stream(s) direct across the veth, ${bulkSeconds} s`);
          try {
            const direct = await iperfInPod(client, topology.direct("iperf"), n, bulkSeconds, topology.dir);
            result.directBulk.push({ streams: n, gbitPerSecond: direct.bitsPerSecond / 1e9 });
          } catch (err) {
            log(`direct bulk ${n}: ${(err as Error).message}`);
          }
          await sleep(300);
        },
        measure: (pair, n, seconds) => bulkSlice(topology, pair, n, seconds),
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
      const direct = await pingPongInPod(client, topology.direct("echo"), latencySeconds * 1000);
      result.direct.pingPong = direct;
      for (const pair of rotate(topology.pairs, 1)) {
        log(`64-byte ping-pong through ${pair.name}, ${latencySeconds} s`);
        await attempt(pair, "ping-pong", async () => {
          const p = await pingPongInPod(client, pair.route("echo"), latencySeconds * 1000);
          get(pair).pingPong = { ...p, addedP50: p.p50 - direct.p50, addedP99: p.p99 - direct.p99 };
        });
      }
    }
    if (phases.has("connect")) {
      log(`new connection to first byte, direct, ${latencySeconds} s`);
      result.direct.connect = await connectInPod(client, topology.direct("echo"), latencySeconds * 1000);
      for (const pair of rotate(topology.pairs, 2)) {
        log(`new connection to first byte through ${pair.name}, ${latencySeconds} s`);
        await attempt(pair, "connect", async () => {
          get(pair).connect = await connectInPod(client, pair.route("echo"), latencySeconds * 1000);
        });
      }
    }
  } finally {
    result.loadAverage.end = loadavg().map((l) => Number(l.toFixed(2)));
    await topology.close();
  }
  return result;
}

/** The lines the namespace mesh adds above the shared report: what ran where, and the direct bulk rate. */
export function netnsPreamble(result: NetnsBenchResult): string {
  const direct = result.directBulk
    .map((d) => `${d.streams} stream${d.streams === 1 ? "" : "s"} ${d.gbitPerSecond.toFixed(2)} Gbit/s`)
    .join(", ");
  return [
    "namespace mesh: client pod and server pod are network namespaces joined by a veth pair; unmodified iperf3 and the load generator run in the client pod; the ztunnels capture in-pod (no SOCKS5), the TLS pairs run inside the same two pods; no open-tunnels phase here",
    ...(direct === "" ? [] : [`direct iperf3 across the veth (no proxy): ${direct}`]),
  ].join("\n");
}
