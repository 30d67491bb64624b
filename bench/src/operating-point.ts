/**
 * A diagnostic for the namespace mesh's two operating points (bench/RESULTS.md, "Two operating points
 * for the same code"): keeps one topology up and alternates one-stream iperf3 slices through haproxy and
 * the in-pod ztunnel pair, printing per slice each proxy's user and system CPU seconds and minor page
 * faults per GiB. Whether a set of processes stays fast or slow over all its rounds shows whether the
 * state was fixed when they started. Root on Linux only, like `pnpm bench:netns`.
 *
 * Usage: node --import tsx src/operating-point.ts [--rounds=N] [--seconds=N]
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
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

function option(name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const value = arg === undefined ? fallback : Number(arg.slice(name.length + 3));
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`--${name} must be a positive integer`);
    process.exit(2);
  }
  return value;
}

const rounds = option("rounds", 10);
const seconds = option("seconds", 2);
const problem = netnsUnavailable();
if (problem !== undefined) {
  console.error(`operating-point: ${problem}`);
  process.exit(2);
}

const topology = await startNetnsTopology({ pairs: ["haproxy", "ztunnel"], pin: true });
const client = topology.namespaces.client;

async function slice(pair: NetnsPair): Promise<{ line: string; cpuPerGiB: number }> {
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
}

try {
  console.log(`operating point: ${rounds} rounds of ${seconds} s, load average ${loadavg()[0]?.toFixed(2)}`);
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
    console.log(`round ${round + 1}: ztunnel / haproxy CPU per GiB ${ratio.toFixed(2)}x`);
    for (const line of lines) console.log(`  ${line}`);
  }
} finally {
  await topology.close();
}
