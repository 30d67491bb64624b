// What a pod costs the control plane in resident memory, measured on the shipped program: `node
// dist/main.js --kubernetes` against a fake API server with N pods and M Services, then against the
// same Services and no pods, then against an empty cluster, one after the other. Each serves C Delta
// clients (the scale bench's client processes) until every client has its first full push, is left
// idle (so V8's young generation and the allocator's arenas settle as they do in a steady state), and
// its RSS (and its peak so far, VmHWM) is read from /proc, its V8 heap from its own /metrics. The
// difference over N is the RSS per pod above either baseline, without the bench's own process (tsx,
// bookkeeping) in any figure.
//
// An idle process gives back the young generation a push grew (tens of MiB) only when V8's memory
// reducer runs, some seconds to over half a minute into the idle time, so a fixed wait measured some
// processes before it and some after. With --settle-seconds S (default 90) each process is read
// every 2 s after the idle time until its V8 heap has settled (reserved within 8 MiB of used) or S
// more seconds have passed; `settledAfterSeconds` says when, or null when it did not settle.
//
//   pnpm build && node --import tsx test/bench/rss-per-pod.ts [--pods 10000] [--services 1000]
//        [--clients 100] [--client-processes 4] [--idle-seconds 30] [--settle-seconds 90] [--runs 1]
//        [--node-flags=--max-semi-space-size=4]   (instead of the start script's flags; with "=")
//
// Not a test: nothing is asserted. Results and method: docs/benchmarks.md.
import { type ChildProcess, fork, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { startFlags } from "../../../../bench/src/app-entry.js";
import { next } from "./child-messages.js";

const here = (file: string) => new URL(file, import.meta.url).pathname;
const mainJs = here("../../dist/main.js");
const scaleBench = here("./kubernetes-scale.ts");
const { values } = parseArgs({
  options: {
    pods: { type: "string", default: "10000" },
    services: { type: "string", default: "1000" },
    clients: { type: "string", default: "100" },
    "client-processes": { type: "string", default: "4" },
    "idle-seconds": { type: "string", default: "30" },
    "settle-seconds": { type: "string", default: "90" },
    runs: { type: "string", default: "1" },
    "node-flags": { type: "string" },
  },
});
const pods = Number(values.pods);
const services = Number(values.services);
const clients = Number(values.clients);
const processes = Math.max(1, Math.min(Number(values["client-processes"]), clients));
const idleMs = Number(values["idle-seconds"]) * 1000;
const settleMs = Number(values["settle-seconds"]) * 1000;
const nodeFlags =
  values["node-flags"] === undefined
    ? startFlags(here("../../package.json"))
    : values["node-flags"].split(" ").filter((f) => f !== "");
if (!existsSync(mainJs)) throw new Error(`${mainJs} is missing: run pnpm build first`);

const children = new Set<ChildProcess>();
const stopAll = () => {
  for (const c of children) c.kill("SIGKILL");
  children.clear();
};
process.on("exit", stopAll);

function forkBench(args: string[]): ChildProcess {
  const child = fork(scaleBench, args, { execArgv: ["--import", "tsx"], stdio: "inherit" });
  children.add(child);
  return child;
}

interface RunningPlane {
  child: ChildProcess;
  /** The admin HTTP address (`/metrics`) and the plaintext xDS address. */
  admin: string;
  plaintext: string;
}

/** `node dist/main.js --kubernetes`, resolved once its first translation served `workloads` pods. */
function controlPlane(kubeconfigFile: string, workloads: number, name: string): Promise<RunningPlane> {
  const args = ["--kubernetes", "--kubeconfig", kubeconfigFile, "--pod-name", name];
  for (const flag of ["--listen", "--admin", "--plaintext"]) args.push(flag, "127.0.0.1:0");
  const child = spawn(process.execPath, [...nodeFlags, mainJs, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.add(child);
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`control plane ${name} exited with ${code}`)));
    let listening: { admin: string; plaintext: string } | undefined;
    let loaded = false;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      let entry: { msg?: string; workloads?: number; admin?: string; plaintext?: string };
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.msg === "control plane listening") {
        listening = { admin: entry.admin as string, plaintext: entry.plaintext as string };
      }
      if (entry.msg === "mesh configuration loaded" && entry.workloads === workloads) loaded = true;
      if (loaded && listening !== undefined) resolve({ child, ...listening });
    });
  });
}

/** A `/proc/<pid>/status` field in MiB: `VmRSS` (resident now) or `VmHWM` (the most resident so far). */
async function statusMiB(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no ${field} for ${pid}`);
  return kb / 1024;
}

/**
 * The V8 heap in use, the heap V8 has reserved (used or not), and the memory outside the heap that V8
 * knows of (ArrayBuffers, Buffers), from the process's own Prometheus metrics (prom-client's default
 * ones). What RSS holds beyond the last two is the allocator's, Node's and the code's.
 */
async function v8Memory(
  admin: string,
): Promise<{ heapUsedMiB: number; heapTotalMiB: number; externalMiB: number }> {
  const text = await (await fetch(`http://${admin}/metrics`)).text();
  const mib = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]) / 2 ** 20;
  return {
    heapUsedMiB: mib("nodejs_heap_size_used_bytes"),
    heapTotalMiB: mib("nodejs_heap_size_total_bytes"),
    externalMiB: mib("nodejs_external_memory_bytes"),
  };
}

/** One control plane against a cluster of `podCount` pods and `serviceCount` Services, measured idle. */
async function measure(
  dir: string,
  podCount: number,
  serviceCount: number,
  name: string,
): Promise<{
  rssMiB: number;
  peakRssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  settledAfterSeconds: number | null;
  resourcesPerClient: number;
}> {
  const api = forkBench(["apiserver", String(podCount), String(serviceCount), "minimal"]);
  const { kubeconfig } = await next<{ kubeconfig: string }>(api, "ready");
  const file = join(dir, `${name}.kubeconfig`);
  await writeFile(file, kubeconfig);
  const plane = await controlPlane(file, podCount, name);
  const group: ChildProcess[] = [];
  let first = 0;
  for (let p = 0; p < processes && clients > 0; p++) {
    const count = Math.floor(clients / processes) + (p < clients % processes ? 1 : 0);
    const full = p === 0 ? 1 : 0;
    const child = forkBench([
      "clients",
      plane.plaintext,
      String(count),
      String(full),
      String(first),
      "4194304",
    ]);
    await next(child, "started");
    group.push(child);
    first += count;
  }
  const ready = Promise.all(group.map((c) => next<{ resources: number }>(c, "ready")));
  for (const c of group) c.send({ kind: "connect" });
  const readies = await ready;
  await new Promise((r) => setTimeout(r, idleMs));
  let heap = await v8Memory(plane.admin);
  let settledAfterSeconds: number | null = idleMs / 1000;
  for (let waited = 0; heap.heapTotalMiB - heap.heapUsedMiB > 8; waited += 2000) {
    if (waited >= settleMs) {
      settledAfterSeconds = null;
      break;
    }
    await new Promise((r) => setTimeout(r, 2000));
    heap = await v8Memory(plane.admin);
    settledAfterSeconds = (idleMs + waited + 2000) / 1000;
  }
  const result = {
    rssMiB: await statusMiB(plane.child.pid as number, "VmRSS"),
    peakRssMiB: await statusMiB(plane.child.pid as number, "VmHWM"),
    ...heap,
    settledAfterSeconds,
    resourcesPerClient: readies[0]?.resources ?? 0,
  };
  for (const c of [...group, plane.child, api]) {
    c.removeAllListeners("exit");
    c.kill("SIGKILL");
    children.delete(c);
  }
  return result;
}

const round = (n: number) => Math.round(n * 10) / 10;
const perPod = (a: number, b: number) => Math.round(((a - b) * 2 ** 20) / pods);
const dir = await mkdtemp(join(tmpdir(), "rss-per-pod-"));
try {
  const runs: unknown[] = [];
  for (let run = 0; run < Number(values.runs); run++) {
    const withPods = await measure(dir, pods, services, `rss-${run}-pods`);
    const servicesOnly = await measure(dir, 0, services, `rss-${run}-services`);
    const empty = await measure(dir, 0, 0, `rss-${run}-empty`);
    runs.push({
      // peakRssMiB is the high-water mark: the list parse and the first push (each client's copy).
      ...Object.fromEntries(
        (["rssMiB", "peakRssMiB", "heapUsedMiB", "heapTotalMiB", "externalMiB"] as const).map((k) => [
          k,
          { pods: round(withPods[k]), servicesOnly: round(servicesOnly[k]), empty: round(empty[k]) },
        ]),
      ),
      settledAfterSeconds: {
        pods: withPods.settledAfterSeconds,
        servicesOnly: servicesOnly.settledAfterSeconds,
        empty: empty.settledAfterSeconds,
      },
      addressResourcesPerClient: withPods.resourcesPerClient,
      rssBytesPerPod: perPod(withPods.rssMiB, servicesOnly.rssMiB),
      rssBytesPerPodOverEmptyCluster: perPod(withPods.rssMiB, empty.rssMiB),
      heapBytesPerPod: perPod(withPods.heapUsedMiB, servicesOnly.heapUsedMiB),
      heapBytesPerPodOverEmptyCluster: perPod(withPods.heapUsedMiB, empty.heapUsedMiB),
      heapAndExternalBytesPerPodOverEmptyCluster: perPod(
        withPods.heapUsedMiB + withPods.externalMiB,
        empty.heapUsedMiB + empty.externalMiB,
      ),
    });
  }
  console.log(
    JSON.stringify(
      {
        pods,
        services,
        clients,
        idleSeconds: idleMs / 1000,
        settleSeconds: settleMs / 1000,
        nodeFlags,
        node: process.version,
        runs,
      },
      null,
      2,
    ),
  );
} finally {
  stopAll();
  await rm(dir, { recursive: true, force: true });
}
