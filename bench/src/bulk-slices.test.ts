// The interleaved bulk phase's bookkeeping, with a fake measurement: which pair runs when, the totals
// over slices, and the per-round ratios (median, min, max). No traffic and no timing here.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { BenchResult, PairResult } from "./bench.js";
import {
  addRoundRatios,
  BUSY_RETRIES,
  medianRange,
  ratioSpread,
  rotate,
  runSlicedBulk,
  type SliceSample,
  sliceSecondsFor,
  toSlice,
  totals,
} from "./bulk-slices.js";
import { formatReport } from "./report.js";

const GIB = 1024 ** 3;

test("a slice is bulk-seconds over the slice count, in whole seconds, at least 1", () => {
  assert.equal(sliceSecondsFor(4, 4), 1);
  assert.equal(sliceSecondsFor(8, 4), 2);
  assert.equal(sliceSecondsFor(10, 4), 2);
  assert.equal(sliceSecondsFor(1, 4), 1);
  assert.equal(sliceSecondsFor(4, 1), 4);
});

test("median of an odd and an even count, min and max, non-finite values left out", () => {
  assert.deepEqual(medianRange([3, 1, 2]), { median: 2, min: 1, max: 3 });
  assert.deepEqual(medianRange([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4 });
  assert.deepEqual(medianRange([5, Number.NaN, Number.POSITIVE_INFINITY]), { median: 5, min: 5, max: 5 });
  assert.equal(medianRange([]), undefined);
  assert.equal(medianRange([Number.NaN]), undefined);
});

test("rotation moves the first pair along", () => {
  assert.deepEqual(rotate(["a", "b", "c"], 0), ["a", "b", "c"]);
  assert.deepEqual(rotate(["a", "b", "c"], 1), ["b", "c", "a"]);
  assert.deepEqual(rotate(["a", "b", "c"], 4), ["b", "c", "a"]);
  assert.deepEqual(rotate([], 3), []);
});

test("totals sum bytes, seconds and CPU over the slices before dividing", () => {
  const slices = [
    toSlice({ bytes: GIB, seconds: 1, proxyCpuSeconds: 2, helperCpuSeconds: 1 }, 0, 0),
    toSlice({ bytes: 3 * GIB, seconds: 3, proxyCpuSeconds: 4, helperCpuSeconds: 1 }, 1, 2),
  ];
  assert.equal(slices[0]?.proxyCpuSecondsPerGiB, 2);
  assert.equal(slices[1]?.proxyCpuSecondsPerGiB, 4 / 3);
  const t = totals(8, slices);
  assert.equal(t.streams, 8);
  assert.equal(t.bytes, 4 * GIB);
  assert.equal(t.seconds, 4);
  assert.equal(t.proxyCpuSeconds, 6);
  assert.equal(t.proxyCpuSecondsPerGiB, 1.5); // 6 s over 4 GiB, not the mean of 2 and 1.33
  assert.equal(t.helperCpuSecondsPerGiB, 0.5);
  assert.equal(t.gbitPerSecond, (4 * GIB * 8) / 4 / 1e9);
  assert.equal(t.slices?.length, 2);
  assert.equal(
    "helperCpuSecondsPerGiB" in totals(1, [toSlice({ bytes: 1, seconds: 1, proxyCpuSeconds: 0 }, 0, 0)]),
    false,
  );
});

test("ratios are taken per round, only over rounds both pairs measured", () => {
  const s = (round: number, cpuPerGiB: number) =>
    toSlice({ bytes: GIB, seconds: 1, proxyCpuSeconds: cpuPerGiB }, round, 0);
  const base = [s(0, 2), s(1, 4), s(3, 2)];
  const pair = [s(0, 3), s(1, 4), s(2, 9), s(3, 5)];
  const spread = ratioSpread(pair, base, "proxyCpuSecondsPerGiB");
  assert.deepEqual(spread, { median: 1.5, min: 1, max: 2.5, rounds: [1.5, 1, 2.5] });
  assert.equal(ratioSpread(pair, [], "proxyCpuSecondsPerGiB"), undefined);
});

test("rounds interleave the pairs in a rotated order; a failed slice is reported and the rest go on", async () => {
  const pairs = [{ name: "haproxy" }, { name: "node-tls" }, { name: "ztunnel" }];
  const calls: string[] = [];
  const errors: string[] = [];
  const before: number[] = [];
  // haproxy costs 2 s/GiB in every round; the ztunnel 2, 3, 4, 6 x that in rounds 0-3 (1 stream), and
  // its round-2 slice with 8 streams fails.
  const ztunnelFactor = [2, 3, 4, 6];
  const rounds = new Map<string, number>();
  const measure = async (pair: { name: string }, streams: number, seconds: number): Promise<SliceSample> => {
    const key = `${pair.name}/${streams}`;
    const round = rounds.get(key) ?? 0;
    rounds.set(key, round + 1);
    calls.push(`${streams}:${round}:${pair.name}`);
    assert.equal(seconds, 2);
    if (pair.name === "ztunnel" && streams === 8 && round === 2) throw new Error("iperf3 refused");
    const perGiB = pair.name === "ztunnel" ? 2 * (ztunnelFactor[round] as number) : 2;
    const gib = pair.name === "haproxy" ? 2 : 1;
    return { bytes: gib * GIB, seconds, proxyCpuSeconds: perGiB * gib };
  };
  const out = await runSlicedBulk({
    pairs,
    streams: [1, 8],
    slices: 4,
    sliceSeconds: 2,
    measure,
    beforeStreams: async (n) => {
      before.push(n);
    },
    onError: (pair, what, err) => errors.push(`${pair.name} ${what}: ${err.message}`),
    pauseMs: 0,
  });
  assert.deepEqual(before, [1, 8]);
  assert.deepEqual(calls, [
    ...["haproxy", "node-tls", "ztunnel"].map((p) => `1:0:${p}`),
    ...["node-tls", "ztunnel", "haproxy"].map((p) => `1:1:${p}`),
    ...["ztunnel", "haproxy", "node-tls"].map((p) => `1:2:${p}`),
    ...["haproxy", "node-tls", "ztunnel"].map((p) => `1:3:${p}`),
    ...["node-tls", "ztunnel", "haproxy"].map((p) => `8:0:${p}`),
    ...["ztunnel", "haproxy", "node-tls"].map((p) => `8:1:${p}`),
    ...["haproxy", "node-tls", "ztunnel"].map((p) => `8:2:${p}`),
    ...["node-tls", "ztunnel", "haproxy"].map((p) => `8:3:${p}`),
  ]);
  assert.deepEqual(errors, ["ztunnel bulk 8 round 3: iperf3 refused"]);

  const results: PairResult[] = pairs.map((p) => ({
    pair: p.name as PairResult["pair"],
    bulk: out.get(p.name) ?? [],
    errors: [],
  }));
  addRoundRatios(results);
  const [haproxy, nodeTls, ztunnel] = results as [PairResult, PairResult, PairResult];
  assert.equal(haproxy.bulk[0]?.vsBaseline, undefined);
  assert.deepEqual(
    nodeTls.bulk.map((b) => b.vsBaseline?.proxyCpuSecondsPerGiB.rounds),
    [
      [1, 1, 1, 1],
      [1, 1, 1, 1],
    ],
  );
  const [one, eight] = ztunnel.bulk;
  assert.equal(one?.slices?.length, 4);
  assert.deepEqual(
    one?.slices?.map((s) => s.position),
    [2, 1, 0, 2],
  );
  assert.deepEqual(one?.vsBaseline?.proxyCpuSecondsPerGiB, {
    median: 3.5,
    min: 2,
    max: 6,
    rounds: [2, 3, 4, 6],
  });
  assert.deepEqual(one?.vsBaseline?.gbitPerSecond, {
    median: 0.5,
    min: 0.5,
    max: 0.5,
    rounds: [0.5, 0.5, 0.5, 0.5],
  });
  // The total is over all slices: 30 CPU s over 4 GiB.
  assert.equal(one?.proxyCpuSecondsPerGiB, 7.5);
  assert.equal(eight?.slices?.length, 3);
  assert.deepEqual(eight?.vsBaseline?.proxyCpuSecondsPerGiB.rounds, [2, 3, 6]);
  assert.equal(eight?.vsBaseline?.proxyCpuSecondsPerGiB.median, 3);

  const result: BenchResult = {
    startedAt: "2026-12-05T00:00:00.000Z",
    revision: "abc1234",
    node: "v20",
    cpus: 2,
    pinned: true,
    loadAverage: { start: [1, 1, 1], end: [1, 1, 1] },
    options: {
      bulkSeconds: 8,
      bulkSlices: 4,
      bulkSliceSeconds: 2,
      latencySeconds: 1,
      tunnels: 0,
      streams: [1, 8],
      quick: false,
    },
    direct: {},
    pairs: results,
  };
  const text = formatReport(result);
  assert.match(text, /4 interleaved rounds of 2 s per pair/);
  assert.match(
    text,
    /\| proxy CPU s\/GiB, 1 stream \| 2\.00 \| 2\.00 \(1\.00x, 1\.00-1\.00\) \| 7\.50 \(3\.50x, 2\.00-6\.00\) \|/,
  );
  assert.match(
    text,
    /\| bulk 1 stream, Gbit\/s \| 8\.59 \| 4\.29 \(0\.50x, 0\.50-0\.50\) \| 4\.29 \(0\.50x, 0\.50-0\.50\) \|/,
  );
  assert.match(
    text,
    /^per round, ztunnel \/ haproxy, 8 streams: CPU s\/GiB 2\.00x 3\.00x 6\.00x; Gbit\/s 0\.50x 0\.50x 0\.50x$/m,
  );
  const json = /^BENCH_JSON (.*)$/m.exec(text)?.[1];
  assert.deepEqual(JSON.parse(json ?? "null"), result);
});

test("with one round the report gives the ratio without a range", () => {
  const slice = (gib: number, cpu: number) =>
    toSlice({ bytes: gib * GIB, seconds: 4, proxyCpuSeconds: cpu }, 0, 0);
  const results: PairResult[] = [
    { pair: "haproxy", bulk: [totals(1, [slice(2, 4)])], errors: [] },
    { pair: "ztunnel", bulk: [totals(1, [slice(1, 3)])], errors: [] },
  ];
  addRoundRatios(results);
  const text = formatReport({
    startedAt: "2026-12-05T00:00:00.000Z",
    revision: "abc1234",
    node: "v20",
    cpus: 2,
    pinned: false,
    loadAverage: { start: [1, 1, 1], end: [1, 1, 1] },
    options: {
      bulkSeconds: 4,
      bulkSlices: 1,
      bulkSliceSeconds: 4,
      latencySeconds: 1,
      tunnels: 0,
      streams: [1],
      quick: false,
    },
    direct: {},
    pairs: results,
  });
  assert.match(text, /1 interleaved round of 4 s per pair/);
  assert.match(text, /\| proxy CPU s\/GiB, 1 stream \| 2\.00 \| 3\.00 \(1\.50x\) \|/);
});

test("a slice the iperf3 server refused as busy is tried again, a bounded number of times", async () => {
  const busy = new Error("iperf3 to 127.77.0.2:5201: the server is busy running a test. try again later");
  const attempts = new Map<string, number>();
  const errors: string[] = [];
  const out = await runSlicedBulk({
    pairs: [{ name: "haproxy" }, { name: "ztunnel" }],
    streams: [1],
    slices: 1,
    sliceSeconds: 1,
    measure: async (pair) => {
      const n = (attempts.get(pair.name) ?? 0) + 1;
      attempts.set(pair.name, n);
      // haproxy's server is busy once; the ztunnel's never stops being busy.
      if (pair.name === "ztunnel" || n === 1) throw busy;
      return { bytes: GIB, seconds: 1, proxyCpuSeconds: 1 };
    },
    onError: (pair, what, err) => errors.push(`${pair.name} ${what}: ${err.message}`),
    pauseMs: 0,
    busyRetryMs: 0,
  });
  assert.equal(attempts.get("haproxy"), 2);
  assert.equal(out.get("haproxy")?.[0]?.slices?.length, 1);
  assert.equal(attempts.get("ztunnel"), 1 + BUSY_RETRIES);
  assert.deepEqual(out.get("ztunnel"), []);
  assert.deepEqual(errors, [`ztunnel bulk 1 round 1: ${busy.message}`]);
});
