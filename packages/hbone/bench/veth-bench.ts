// Eight tunnels on one HBONE connection vs eight mutual-TLS connections, across a veth pair between
// two network namespaces instead of loopback (issue 15's restated goal: >= 0.9). Root on Linux only;
// not part of `pnpm bench`. Run in packages/hbone:
// `node --import tsx bench/veth-bench.ts`. Env: VETH_ROUNDS (default 5),
// VETH_EACH_MIB (default 32 per stream), VETH_CPU_PROF=<dir> (V8 profiles of both sides), VETH_NO_PIN=1,
// VETH_ONLY=multi-hbone,multi-tls,single-hbone,single-tls (a subset, to profile one variant),
// VETH_PERF=<file> (`perf record -g` of both processes while the client runs; with VETH_PERF_SCHED=1 their
// scheduler switches, for `perf sched timehist`), VETH_STREAM_WINDOW_MIB and
// VETH_CONNECTION_WINDOW_MIB (the receiver's HTTP/2 windows; default the package's 4 and 16 MiB),
// VETH_TCP_WMEM_MIB (the largest TCP send buffer in both namespaces), VETH_NODE_FLAGS (Node flags of
// both sides; default --initial-old-space-size=64).
//
// The client side runs in one namespace pinned to CPU 0, the server side in the other pinned to CPU 1,
// joined by one veth pair (MTU 1500, the kernel's defaults). Everything the bench makes lives in those
// two namespaces and is deleted when it exits, however it exits.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { CLIENT_ID, createTestPki, SERVER_ID } from "../test/fixtures.js";
import type { Variant, VethClientOptions, VethClientResult, VethSample } from "./veth-client.js";

const here = fileURLToPath(new URL(".", import.meta.url));

function unavailable(): string | undefined {
  if (process.platform !== "linux") return "needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "needs root (ip netns)";
  if (spawnSync("ip", ["-V"], { stdio: "ignore" }).status !== 0) return "iproute2 (ip) is not installed";
  return undefined;
}
const why = unavailable();
if (why !== undefined) {
  console.error(`veth bench: ${why}`);
  process.exit(2);
}

const prefix = `ambh-${randomBytes(3).toString("hex")}`;
const ns = { client: `${prefix}-client`, server: `${prefix}-server` };
const net = 100 + Math.floor(Math.random() * 100);
const ip = { client: `10.${net}.1.1`, server: `10.${net}.1.2` };
const children: ChildProcess[] = [];
const pki = createTestPki();

function cleanup(): void {
  for (const child of children) child.kill("SIGKILL");
  for (const name of [ns.server, ns.client]) spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  pki.cleanup();
}
process.on("exit", cleanup);
for (const [signal, status] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const) {
  process.once(signal, () => process.exit(status));
}

function run(...args: string[]): void {
  const out = spawnSync(args[0] as string, args.slice(1), { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`${args.join(" ")}: ${out.stderr}`);
}
for (const name of [ns.client, ns.server]) {
  run("ip", "netns", "add", name);
  run("ip", "-n", name, "link", "set", "lo", "up");
}
run("ip", "-n", ns.client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", ns.server);
for (const side of ["client", "server"] as const) {
  run("ip", "-n", ns[side], "addr", "add", `${ip[side]}/24`, "dev", "eth0");
  run("ip", "-n", ns[side], "link", "set", "eth0", "up");
}
// VETH_TCP_WMEM_MIB: the largest TCP send buffer in both namespaces (`net.ipv4.tcp_wmem` max, per
// namespace since Linux 4.15), to see whether one connection's send buffer bounds the multiplexed case.
const wmemMiB = process.env.VETH_TCP_WMEM_MIB;
if (wmemMiB !== undefined) {
  for (const name of [ns.client, ns.server]) {
    run(
      "ip",
      "netns",
      "exec",
      name,
      "sysctl",
      "-q",
      "-w",
      `net.ipv4.tcp_wmem=4096 16384 ${Number(wmemMiB) * 1024 * 1024}`,
    );
  }
}
const tcpMem = spawnSync(
  "ip",
  ["netns", "exec", ns.client, "cat", "/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/ipv4/tcp_rmem"],
  {
    encoding: "utf8",
  },
)
  .stdout.replace(/\s+/g, " ")
  .trim();
console.log(`tcp_wmem / tcp_rmem in the namespaces: ${tcpMem}`);

const pin = process.env.VETH_NO_PIN !== "1" && spawnSync("taskset", ["-c", "1", "true"]).status === 0;
const profDir = process.env.VETH_CPU_PROF;
// Both sides run as the package README advises for a relaying process (a floor under V8's old
// generation: "Heap settings for a proxy"); VETH_NODE_FLAGS replaces it, empty for none.
const nodeFlags = [
  ...(process.env.VETH_NODE_FLAGS ?? "--initial-old-space-size=64").split(" ").filter((f) => f !== ""),
  ...(profDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${profDir}`]),
];
/** `node` inside `netns`, pinned to `cpu`: taskset and `ip netns exec` exec in place, so the pid is node's. */
function nodeIn(netns: string, cpu: number, script: string, args: string[]): ChildProcess {
  const argv = [
    "ip",
    "netns",
    "exec",
    netns,
    process.execPath,
    ...nodeFlags,
    "--import",
    "tsx",
    join(here, script),
    ...args,
  ];
  const child = spawn(
    pin ? "taskset" : (argv[0] as string),
    pin ? ["-c", String(cpu), ...argv] : argv.slice(1),
    {
      stdio: ["pipe", "pipe", "inherit"],
    },
  );
  children.push(child);
  return child;
}
const firstLine = async (child: ChildProcess): Promise<string> => {
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  for await (const line of lines) return line;
  throw new Error("child exited without output");
};

const server = pki.issue(SERVER_ID);
const client = pki.issue(CLIENT_ID);
const ca = join(pki.dir, "root.pem");
const peer = nodeIn(ns.server, 1, "veth-peer.ts", [
  server.keyPath,
  server.certPath,
  ca,
  ip.server,
  process.env.VETH_STREAM_WINDOW_MIB ?? "",
  process.env.VETH_CONNECTION_WINDOW_MIB ?? "",
]);
const ports = JSON.parse(await firstLine(peer)) as { hbonePort: number; tlsPort: number };
const clockTicks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;
const options: VethClientOptions = {
  host: ip.server,
  ...ports,
  peerPid: peer.pid as number,
  keyPath: client.keyPath,
  certPath: client.certPath,
  caPath: ca,
  serverId: SERVER_ID,
  rounds: Number(process.env.VETH_ROUNDS ?? 5),
  eachMiB: Number(process.env.VETH_EACH_MIB ?? 32),
  clockTicks,
  ...(process.env.VETH_ONLY === undefined ? {} : { only: process.env.VETH_ONLY.split(",") as Variant[] }),
};
const loadStart = (await import("node:os")).loadavg();
const started = new Date().toISOString();
const sender = nodeIn(ns.client, 0, "veth-client.ts", [JSON.stringify(options)]);
const perfFile = process.env.VETH_PERF;
// VETH_PERF_SCHED=1 records every CPU's scheduler switches instead of samples of the two processes
// (`perf sched timehist` needs both sides of each switch): then filter on the pids printed here.
const perfArgs =
  process.env.VETH_PERF_SCHED === "1"
    ? ["-a", "-e", "sched:sched_switch", "-e", "sched:sched_wakeup", "-e", "sched:sched_waking"]
    : ["-g", "-F", "499", "-p", `${sender.pid},${peer.pid}`];
const perf =
  perfFile === undefined
    ? undefined
    : spawn("perf", ["record", "-q", ...perfArgs, "-o", perfFile], { stdio: "ignore" });
if (perf !== undefined) {
  children.push(perf);
  console.log(`perf: sender pid ${sender.pid}, receiver pid ${peer.pid}, ${perfFile}`);
}
const result = JSON.parse(await firstLine(sender)) as VethClientResult;
if (perf !== undefined) {
  perf.kill("SIGINT");
  await new Promise((r) => perf.once("exit", r));
}
const loadEnd = (await import("node:os")).loadavg();

const median = (values: number[]) => {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const f = (n: number, d = 0) => n.toFixed(d);
const line = (label: string, h: VethSample[], t: VethSample[], goal: string) => {
  if (h.length === 0 || t.length === 0) {
    for (const [kind, s] of [
      ["hbone", h],
      ["tls", t],
    ] as const) {
      if (s.length === 0) continue;
      console.log(
        `${label}, ${kind} only: ${f(median(s.map((x) => x.mibPerSecond)))} MiB/s, CPU s/GiB sender ${f(median(s.map((x) => x.clientCpuPerGiB)), 2)} / receiver ${f(median(s.map((x) => x.serverCpuPerGiB)), 2)}`,
      );
    }
    return;
  }
  const ratios = h.map((x, i) => x.mibPerSecond / (t[i] as VethSample).mibPerSecond);
  console.log(
    `${label}: hbone ${f(median(h.map((x) => x.mibPerSecond)))} MiB/s, tls ${f(median(t.map((x) => x.mibPerSecond)))} MiB/s, ratio ${f(median(ratios), 2)} (${goal}); per round ${ratios.map((r) => f(r, 2)).join(" ")}`,
  );
  const cpu = (s: VethSample[], k: "clientCpuPerGiB" | "serverCpuPerGiB") => f(median(s.map((x) => x[k])), 2);
  console.log(
    `  CPU s/GiB, sender / receiver: hbone ${cpu(h, "clientCpuPerGiB")} / ${cpu(h, "serverCpuPerGiB")}, tls ${cpu(t, "clientCpuPerGiB")} / ${cpu(t, "serverCpuPerGiB")}`,
  );
};
console.log(
  `hbone across a veth pair between two namespaces, ${started}, Node ${process.version} [${nodeFlags.join(" ")}], ${pin ? "sender pinned to CPU 0, receiver to CPU 1" : "not pinned"}, load average ${loadStart.map((l) => f(l, 2)).join(" ")} at start, ${loadEnd.map((l) => f(l, 2)).join(" ")} at end`,
);
line(
  `8 tunnels on 1 connection vs 8 TLS connections (median of ${options.rounds} rounds × 8 × ${options.eachMiB} MiB)`,
  result.multi.hbone,
  result.multi.tls,
  "goal >= 0.9",
);
line(
  `1 tunnel vs 1 TLS connection (median of ${options.rounds} rounds × ${8 * options.eachMiB} MiB)`,
  result.single.hbone,
  result.single.tls,
  "goal >= 0.85",
);
if (process.env.BENCH_VERBOSE === "1") console.log(JSON.stringify(result));
peer.stdin?.end();
if (profDir !== undefined) {
  // V8 writes a CPU profile when its process exits: let both sides finish (at most 15 s) before the
  // exit handler kills what is left.
  const exited = (child: ChildProcess) =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await Promise.race([
    Promise.all([exited(peer), exited(sender)]),
    new Promise((resolve) => setTimeout(resolve, 15_000)),
  ]);
}
process.exit(0);
