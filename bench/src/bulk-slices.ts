/**
 * The bulk phase in interleaved slices, shared by the loopback and namespace-mesh benches. For each
 * stream count, `slices` rounds; in each round every pair carries one short iperf3 run, in an order
 * rotated by round, so a burst of load from elsewhere on the machine lands on every pair in turn rather
 * than on one pair's whole case. Totals are summed over a pair's slices; the ratio to the baseline pair
 * is taken per round (both pairs measured within seconds of each other) and reported as the median of
 * those ratios with their min and max.
 */
import type { BulkResult } from "./bench.js";

const GIB = 1024 ** 3;

/** What one slice through one pair measured. */
export interface SliceSample {
  bytes: number;
  seconds: number;
  /** utime + stime of the pair's proxy processes during the slice. */
  proxyCpuSeconds: number;
  /** The same for helpers on the path that are not billed to the pair (the loopback SOCKS5 shim). */
  helperCpuSeconds?: number;
}

/** One slice as recorded in a {@link BulkResult}. */
export interface BulkSlice extends SliceSample {
  /** The round it belongs to, from 0. */
  round: number;
  /** Its place in the round's order, from 0 (0 went first). */
  position: number;
  gbitPerSecond: number;
  proxyCpuSecondsPerGiB: number;
}

/** The median of some per-round ratios, with their range and the ratios themselves. */
export interface RatioSpread {
  median: number;
  min: number;
  max: number;
  /** The ratio of each round in which both pairs have a slice, in round order. */
  rounds: number[];
}

/** Per-round ratios of a pair's bulk case to the baseline pair's (haproxy) in the same round. */
export interface RoundRatios {
  gbitPerSecond: RatioSpread;
  proxyCpuSecondsPerGiB: RatioSpread;
}

/** Seconds per slice: `bulkSeconds` spread over `slices`, whole seconds (iperf3 `-t`), at least 1. */
export function sliceSecondsFor(bulkSeconds: number, slices: number): number {
  return Math.max(1, Math.floor(bulkSeconds / Math.max(1, slices)));
}

/** `items` rotated left by `by`: round r of stream count i starts with pair (i + r) mod n. */
export function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % Math.max(1, items.length);
  return [...items.slice(k), ...items.slice(0, k)];
}

/** Median (mean of the middle two for an even count), min and max; undefined for no finite values. */
export function medianRange(
  values: readonly number[],
): { median: number; min: number; max: number } | undefined {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return undefined;
  const mid = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1
      ? (sorted[mid] as number)
      : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
  return { median, min: sorted[0] as number, max: sorted[sorted.length - 1] as number };
}

/** A slice's rates from its raw sample. */
export function toSlice(sample: SliceSample, round: number, position: number): BulkSlice {
  const gib = sample.bytes / GIB;
  return {
    round,
    position,
    ...sample,
    gbitPerSecond: sample.seconds > 0 ? (sample.bytes * 8) / sample.seconds / 1e9 : Number.NaN,
    proxyCpuSecondsPerGiB: gib > 0 ? sample.proxyCpuSeconds / gib : Number.NaN,
  };
}

/** A pair's bulk case over all its slices: bytes, seconds and CPU summed, then divided. */
export function totals(streams: number, slices: readonly BulkSlice[]): BulkResult {
  const bytes = slices.reduce((a, s) => a + s.bytes, 0);
  const seconds = slices.reduce((a, s) => a + s.seconds, 0);
  const proxyCpuSeconds = slices.reduce((a, s) => a + s.proxyCpuSeconds, 0);
  const gib = bytes / GIB;
  const helpers = slices.filter((s) => s.helperCpuSeconds !== undefined);
  const helperCpu = helpers.reduce((a, s) => a + (s.helperCpuSeconds ?? 0), 0);
  return {
    streams,
    gbitPerSecond: seconds > 0 ? (bytes * 8) / seconds / 1e9 : Number.NaN,
    bytes,
    seconds,
    proxyCpuSeconds,
    proxyCpuSecondsPerGiB: gib > 0 ? proxyCpuSeconds / gib : Number.NaN,
    ...(helpers.length > 0 ? { helperCpuSecondsPerGiB: gib > 0 ? helperCpu / gib : Number.NaN } : {}),
    slices: [...slices],
  };
}

/**
 * The per-round ratios of `pair` to `base` for one metric, over the rounds both have a slice in;
 * undefined when there is no such round with a finite ratio.
 */
export function ratioSpread(
  pair: readonly BulkSlice[],
  base: readonly BulkSlice[],
  metric: "gbitPerSecond" | "proxyCpuSecondsPerGiB",
): RatioSpread | undefined {
  const rounds: number[] = [];
  for (const slice of [...pair].sort((a, b) => a.round - b.round)) {
    const b = base.find((s) => s.round === slice.round);
    if (b === undefined || !(b[metric] > 0)) continue;
    const ratio = slice[metric] / b[metric];
    if (Number.isFinite(ratio)) rounds.push(ratio);
  }
  const spread = medianRange(rounds);
  return spread === undefined ? undefined : { ...spread, rounds };
}

/**
 * Sets `vsBaseline` on every bulk case of every pair but the baseline, from the slices of the same
 * stream count; cases without slices (or without a baseline case) are left as they are.
 */
export function addRoundRatios(
  pairs: readonly { pair: string; bulk: BulkResult[] }[],
  baseline = "haproxy",
): void {
  const base = pairs.find((p) => p.pair === baseline);
  if (base === undefined) return;
  for (const pair of pairs) {
    if (pair === base) continue;
    for (const bulk of pair.bulk) {
      const baseSlices = base.bulk.find((b) => b.streams === bulk.streams)?.slices;
      if (bulk.slices === undefined || baseSlices === undefined) continue;
      const gbit = ratioSpread(bulk.slices, baseSlices, "gbitPerSecond");
      const cpu = ratioSpread(bulk.slices, baseSlices, "proxyCpuSecondsPerGiB");
      if (gbit !== undefined && cpu !== undefined) {
        bulk.vsBaseline = { pair: baseline, gbitPerSecond: gbit, proxyCpuSecondsPerGiB: cpu };
      }
    }
  }
}

/** What {@link runSlicedBulk} needs from a bench. */
export interface SlicedBulkOptions<P extends { name: string }> {
  pairs: readonly P[];
  streams: readonly number[];
  slices: number;
  sliceSeconds: number;
  /** One slice through one pair: an iperf3 run of `seconds` with `streams` streams, CPU read around it. */
  measure(pair: P, streams: number, seconds: number): Promise<SliceSample>;
  /** Runs before the rounds of each stream count (the namespace mesh's direct baseline). */
  beforeStreams?(streams: number): Promise<void>;
  /** A slice that failed: recorded by the bench as the pair's error; the other slices go on. */
  onError(pair: P, what: string, err: Error): void;
  /** Pause after each slice, so the iperf3 server has closed the test. Default 300 ms. */
  pauseMs?: number;
  /** Wait before retrying a slice the iperf3 server refused as busy (at most {@link BUSY_RETRIES} times). Default 1,000 ms. */
  busyRetryMs?: number;
  log?: (line: string) => void;
}

/** Retries of a slice whose iperf3 server was still closing the previous test. */
export const BUSY_RETRIES = 3;

/**
 * iperf3's refusal while its server still runs (or closes) the previous test: nothing was measured, so
 * the slice is tried again. Slices are short and many, so a loaded machine hits this more often than
 * one long case per pair did.
 */
export function serverBusy(err: Error): boolean {
  return /server is busy running a test/.test(err.message);
}

/**
 * Runs the interleaved rounds and returns each pair's bulk cases (one per stream count with at least
 * one slice that succeeded), in stream order, keyed by pair name.
 */
export async function runSlicedBulk<P extends { name: string }>(
  options: SlicedBulkOptions<P>,
): Promise<Map<string, BulkResult[]>> {
  const log = options.log ?? (() => {});
  const pauseMs = options.pauseMs ?? 300;
  const out = new Map<string, BulkResult[]>(options.pairs.map((p) => [p.name, []]));
  for (const [i, n] of options.streams.entries()) {
    await options.beforeStreams?.(n);
    const slices = new Map<string, BulkSlice[]>(options.pairs.map((p) => [p.name, []]));
    for (let round = 0; round < options.slices; round++) {
      for (const [position, pair] of rotate(options.pairs, i + round).entries()) {
        log(
          `bulk ${n} stream(s) through ${pair.name}, round ${round + 1}/${options.slices}, ${options.sliceSeconds} s`,
        );
        for (let attempt = 0; ; attempt++) {
          try {
            const sample = await options.measure(pair, n, options.sliceSeconds);
            slices.get(pair.name)?.push(toSlice(sample, round, position));
          } catch (err) {
            if (serverBusy(err as Error) && attempt < BUSY_RETRIES) {
              log(`${pair.name}: iperf3 server busy, slice tried again`);
              await new Promise((r) => setTimeout(r, options.busyRetryMs ?? 1000));
              continue;
            }
            options.onError(pair, `bulk ${n} round ${round + 1}`, err as Error);
          }
          break;
        }
        if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      }
    }
    for (const pair of options.pairs) {
      const own = slices.get(pair.name) ?? [];
      if (own.length > 0) out.get(pair.name)?.push(totals(n, own));
    }
  }
  return out;
}
