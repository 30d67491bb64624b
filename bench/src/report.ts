/**
 * Prints a run as one Markdown table (raw numbers, and the ratio to the haproxy pair beside each) and
 * one machine-readable line, `BENCH_JSON {...}`. A bulk case measured in interleaved slices shows the
 * median of its per-round ratios with their min-max, e.g. `6.00 (1.69x, 1.20-2.10)`.
 */
import type { BenchResult, BulkResult, PairResult } from "./bench.js";
import type { RatioSpread } from "./bulk-slices.js";

interface Row {
  label: string;
  /** The raw number of a pair, or undefined when not measured. */
  value(pair: PairResult): number | undefined;
  digits: number;
  /** An extra note after the number (e.g. the shim's own CPU). */
  note?(pair: PairResult): string;
  /** The ratio to haproxy measured per round, when the row has one; else value / haproxy's value. */
  spread?(pair: PairResult): RatioSpread | undefined;
}

function fmt(n: number, digits: number): string {
  return Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "n/a";
}

function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function bulkOf(p: PairResult, streams: number): BulkResult | undefined {
  return p.bulk.find((b) => b.streams === streams);
}

const plural = (n: number) => (n === 1 ? "" : "s");

function rows(streams: readonly number[]): Row[] {
  const out: Row[] = [];
  for (const n of streams) {
    const bulk = (p: PairResult) => bulkOf(p, n);
    out.push(
      {
        label: `bulk ${n} stream${plural(n)}, Gbit/s`,
        value: (p) => bulk(p)?.gbitPerSecond,
        digits: 2,
        spread: (p) => bulk(p)?.vsBaseline?.gbitPerSecond,
      },
      {
        label: `proxy CPU s/GiB, ${n} stream${plural(n)}`,
        value: (p) => bulk(p)?.proxyCpuSecondsPerGiB,
        digits: 2,
        spread: (p) => bulk(p)?.vsBaseline?.proxyCpuSecondsPerGiB,
        note: (p) => {
          const helper = bulk(p)?.helperCpuSecondsPerGiB;
          return helper === undefined ? "" : ` [+ shim ${fmt(helper, 2)}, not billed]`;
        },
      },
    );
  }
  out.push(
    { label: "ping-pong 64 B, added p50 over direct, us", value: (p) => p.pingPong?.addedP50, digits: 0 },
    { label: "ping-pong 64 B, added p99 over direct, us", value: (p) => p.pingPong?.addedP99, digits: 0 },
    { label: "new connection to first byte p50, us", value: (p) => p.connect?.p50, digits: 0 },
    { label: "new connection to first byte p99, us", value: (p) => p.connect?.p99, digits: 0 },
    {
      label: "open tunnels: RSS KiB per tunnel (both sides)",
      value: (p) => (p.tunnels === undefined ? undefined : sum(p.tunnels.rssKiBPerTunnel)),
      digits: 1,
      note: (p) =>
        p.tunnels === undefined
          ? ""
          : ` [out ${fmt(p.tunnels.rssKiBPerTunnel[0] ?? Number.NaN, 1)} / in ${fmt(p.tunnels.rssKiBPerTunnel[1] ?? Number.NaN, 1)}; ${p.tunnels.opened}/${p.tunnels.requested} open in ${fmt(p.tunnels.openSeconds, 1)} s, ${p.tunnels.failed} failed, ${p.tunnels.notAttempted} not attempted by the deadline]`,
    },
  );
  return out;
}

/** The table and the JSON line, as text. */
export function formatReport(result: BenchResult): string {
  const haproxy = result.pairs.find((p) => p.pair === "haproxy");
  const lines: string[] = [];
  lines.push(
    `ambient mesh bench, ${result.startedAt}, ${result.revision}, Node ${result.node}, ${result.cpus} CPUs, ${
      result.pinned ? "proxies pinned (outbound side CPU 0, inbound side CPU 1)" : "not pinned"
    }, load average ${result.loadAverage.start.join(" ")} at start, ${result.loadAverage.end.join(" ")} at end`,
  );
  if (result.options.quick) lines.push("--quick: a smoke run of the harness, not a measurement");
  const o = result.options;
  const bulkText =
    o.bulkSlices === undefined
      ? `bulk ${o.bulkSeconds} s per case (iperf3)`
      : `bulk ${o.bulkSlices} interleaved round${plural(o.bulkSlices)} of ${o.bulkSliceSeconds ?? "?"} s per pair and case (iperf3; totals over all slices, ratio = median of the per-round ratios to haproxy, min-max)`;
  lines.push(
    `${bulkText}, latency ${result.options.latencySeconds} s per pair, ${result.options.tunnels} tunnels; ratios are to the haproxy pair in this run`,
    "",
  );
  lines.push(`| measurement | ${result.pairs.map((p) => p.pair).join(" | ")} |`);
  lines.push(`| --- | ${result.pairs.map(() => "---").join(" | ")} |`);
  for (const row of rows(result.options.streams)) {
    const base = haproxy === undefined ? undefined : row.value(haproxy);
    const cells = result.pairs.map((pair) => {
      const v = row.value(pair);
      if (v === undefined) return "-";
      let ratio = "";
      // A ratio to a baseline at or below zero (an added p99 lost in noise) means nothing.
      const spread = pair.pair === "haproxy" ? undefined : row.spread?.(pair);
      if (spread !== undefined) {
        // One round (--bulk-slices=1) has no spread to show.
        ratio =
          spread.rounds.length > 1
            ? ` (${fmt(spread.median, 2)}x, ${fmt(spread.min, 2)}-${fmt(spread.max, 2)})`
            : ` (${fmt(spread.median, 2)}x)`;
      } else if (pair.pair !== "haproxy" && base !== undefined) {
        ratio = base > 0 && v >= 0 ? ` (${fmt(v / base, 2)}x)` : " (no ratio)";
      }
      return `${fmt(v, row.digits)}${ratio}${row.note?.(pair) ?? ""}`;
    });
    lines.push(`| ${row.label} | ${cells.join(" | ")} |`);
  }
  const d = result.direct;
  const direct: string[] = [];
  if (d.pingPong !== undefined) {
    direct.push(`ping-pong p50 ${fmt(d.pingPong.p50, 0)} us, p99 ${fmt(d.pingPong.p99, 0)} us`);
  }
  if (d.connect !== undefined) {
    direct.push(
      `new connection to first byte p50 ${fmt(d.connect.p50, 0)} us, p99 ${fmt(d.connect.p99, 0)} us`,
    );
  }
  if (direct.length > 0) lines.push("", `direct (no proxy): ${direct.join("; ")}`);
  const perRound = roundLines(result);
  if (perRound.length > 0) lines.push("", ...perRound);
  for (const pair of result.pairs) {
    for (const error of pair.errors) lines.push(`ERROR ${pair.pair}: ${error}`);
    if (pair.tunnels?.firstFailure !== undefined) {
      lines.push(`${pair.pair}: first tunnel failure: ${pair.tunnels.firstFailure}`);
    }
  }
  lines.push("", `BENCH_JSON ${JSON.stringify(result)}`);
  return lines.join("\n");
}

/** Each pair's per-round ratios to haproxy, round by round, so the spread behind a median is visible. */
function roundLines(result: BenchResult): string[] {
  const lines: string[] = [];
  for (const pair of result.pairs) {
    for (const bulk of pair.bulk) {
      const vs = bulk.vsBaseline;
      if (vs === undefined) continue;
      const list = (s: RatioSpread) => s.rounds.map((r) => `${fmt(r, 2)}x`).join(" ");
      lines.push(
        `per round, ${pair.pair} / ${vs.pair}, ${bulk.streams} stream${plural(bulk.streams)}: CPU s/GiB ${list(vs.proxyCpuSecondsPerGiB)}; Gbit/s ${list(vs.gbitPerSecond)}`,
      );
    }
  }
  return lines;
}
