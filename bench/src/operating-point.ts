/**
 * A diagnostic for the namespace mesh's operating points (bench/RESULTS.md, "Two operating points for
 * the same code" and "Full collections back to back"): keeps a topology up and alternates one-stream
 * iperf3 slices through haproxy and the in-pod ztunnel pair, printing per slice each proxy's user and
 * system CPU seconds and minor page faults per GiB, and the ztunnels' full collections (V8's
 * `--trace-gc`). Whether a set of processes stays fast or slow over all its rounds shows whether the
 * state was fixed when they started.
 *
 * With `--ab=FLAGS` it starts `--sets` topologies in turn, alternating the ztunnels' Node flags between
 * those of their `pnpm start` (A) and FLAGS (B, may be empty), and ends with one line per set: the
 * median ztunnel / haproxy CPU per GiB and the full collections. Root on Linux only, like
 * `pnpm bench:netns`.
 *
 * Usage: node --import tsx src/operating-point.ts [--rounds=N] [--seconds=N] [--ab=FLAGS] [--sets=N]
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { medianRange } from "./bulk-slices.js";
import { iperfInPod } from "./netns-load.js";
import { type NetnsPair, netnsUnavailable, startNetnsTopology } from "./netns-topology.js";

interface ProcessCounters {
  minorFaults: number;
  userSeconds: number;
  systemSeconds: number;
}

const CLOCK_TICKS = 100;

/** Fields 10, 14 and 15 of /proc/<pid>/stat, counted after the command name (which may hold spaces). */
function counters(pid: number): ProcessCounters {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return {
    minorFaults: Number(fields[7]),
    userSeconds: Number(fields[11]) / CLOCK_TICKS,
    systemSeconds: Number(fields[12]) / CLOCK_TICKS,
  };
}

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "10" },
    seconds: { type: "string", default: "2" },
    sets: { type: "string", default: "4" },
    ab: { type: "string" },
  },
});

function positive(name: "rounds" | "seconds" | "sets"): number {
  const value = Number(values[name]);
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`--${name} must be a positive integer`);
    process.exit(2);
  }
  return value;
}

const rounds = positive("rounds");
const seconds = positive("seconds");
const sets = values.ab === undefined ? 1 : positive("sets");
const problem = netnsUnavailable();
if (problem !== undefined) {
  console.error(`operating-point: ${problem}`);
  process.exit(2);
}

/** Lines V8 prints for a full (mark-compact) collection under `--trace-gc`. */
const FULL_GC = /Mark-Compact/g;

interface SetResult {
  flags: string;
  ratios: number[];
  fullCollections: number[];
}

async function runSet(ztunnelStartFlags: readonly string[] | undefined): Promise<SetResult> {
  const topology = await startNetnsTopology({
    pairs: ["haproxy", "ztunnel"],
    pin: true,
    proxyNodeFlags: ["--trace-gc"],
    ...(ztunnelStartFlags === undefined ? {} : { ztunnelStartFlags }),
  });
  const client = topology.namespaces.client;
  const ztunnel = topology.pairs.find((p) => p.name === "ztunnel") as NetnsPair;
  const fullCollections = ztunnel.proxies.map(() => 0);
  for (const [i, proxy] of ztunnel.proxies.entries()) {
    proxy.process.stdout?.on("data", (chunk: Buffer) => {
      fullCollections[i] = (fullCollections[i] ?? 0) + (chunk.toString().match(FULL_GC)?.length ?? 0);
    });
  }

  const slice = async (pair: NetnsPair): Promise<{ line: string; cpuPerGiB: number }> => {
    const before = pair.proxies.map((p) => counters(p.pid));
    const result = await iperfInPod(client, pair.route("iperf"), 1, seconds, topology.dir);
    const gib = result.bytes / 2 ** 30;
    let cpu = 0;
    const perProcess = pair.proxies.map((p, i) => {
      const after = counters(p.pid);
      const start = before[i] as ProcessCounters;
      const user = after.userSeconds - start.userSeconds;
      const system = after.systemSeconds - start.systemSeconds;
      cpu += user + system;
      const faults = Math.round((after.minorFaults - start.minorFaults) / gib);
      return `${p.name}: user ${(user / gib).toFixed(2)} s, sys ${(system / gib).toFixed(2)} s, ${faults} faults`;
    });
    const cpuPerGiB = cpu / gib;
    const line = `${pair.name} ${(result.bitsPerSecond / 1e9).toFixed(2)} Gbit/s ${cpuPerGiB.toFixed(2)} s/GiB [${perProcess.join("; ")}]`;
    return { line, cpuPerGiB };
  };

  const flags = ztunnelStartFlags === undefined ? "as pnpm start" : `[${ztunnelStartFlags.join(" ")}]`;
  const ratios: number[] = [];
  try {
    console.log(
      `ztunnel node flags ${flags}: ${rounds} rounds of ${seconds} s, load ${loadavg()[0]?.toFixed(2)}`,
    );
    for (const pair of topology.pairs) await iperfInPod(client, pair.route("iperf"), 1, 1, topology.dir);
    for (let round = 0; round < rounds; round++) {
      const lines: string[] = [];
      const perGiB = new Map<string, number>();
      for (const pair of topology.pairs) {
        const { line, cpuPerGiB } = await slice(pair);
        perGiB.set(pair.name, cpuPerGiB);
        lines.push(line);
      }
      const ratio = (perGiB.get("ztunnel") ?? Number.NaN) / (perGiB.get("haproxy") ?? Number.NaN);
      ratios.push(ratio);
      console.log(
        `round ${round + 1}: ztunnel / haproxy CPU per GiB ${ratio.toFixed(2)}x, ztunnel full collections so far ${fullCollections.join(" / ")}`,
      );
      for (const line of lines) console.log(`  ${line}`);
    }
  } finally {
    await topology.close();
  }
  return { flags, ratios, fullCollections };
}

const results: SetResult[] = [];
const b = values.ab?.split(" ").filter((f) => f !== "");
for (let set = 0; set < sets; set++) results.push(await runSet(set % 2 === 1 ? b : undefined));
if (values.ab !== undefined) {
  console.log(
    "\nper set: ztunnel node flags, ztunnel / haproxy CPU per GiB median (min-max), full collections out / in",
  );
  for (const r of results) {
    const m = medianRange(r.ratios);
    const spread =
      m === undefined ? "-" : `${m.median.toFixed(2)}x (${m.min.toFixed(2)}-${m.max.toFixed(2)})`;
    console.log(`  ${r.flags}: ${spread}, ${r.fullCollections.join(" / ")}`);
  }
}
