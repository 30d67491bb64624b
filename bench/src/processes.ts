/**
 * The child processes of a bench run: started pinned to a CPU and with a raised open-file limit, read
 * from /proc (CPU seconds, RSS), and all stopped on exit, on error and on SIGINT/SIGTERM, so a run that
 * fails or is interrupted leaves nothing behind.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { cpus } from "node:os";

/** A started child: its pid is the program's own (bash `exec`s taskset, which `exec`s the program). */
export interface BenchChild {
  name: string;
  pid: number;
  process: ChildProcess;
  /** The last few KiB the child wrote to stdout and stderr, for error messages. */
  output(): string;
  /** Resolves when the child has exited. */
  exited: Promise<void>;
}

/** Options of {@link startChild}. */
export interface StartChildOptions {
  /** CPU to pin the child to with `taskset`; ignored when pinning is off. */
  cpu?: number;
  /** Open-file limit the child starts with. Default {@link childFileLimit}. */
  nofile?: number;
  env?: NodeJS.ProcessEnv;
}

const children = new Set<BenchChild>();
const tempDirs = new Set<string>();

/** Removes `dir` when this process exits, however it exits; {@link forgetTempDir} once removed. */
export function removeOnExit(dir: string): void {
  tempDirs.add(dir);
}

export function forgetTempDir(dir: string): void {
  tempDirs.delete(dir);
}
const OUTPUT_TAIL = 4096;

/** Whether `taskset` works and there are at least two CPUs. */
export const canPin =
  process.platform === "linux" &&
  cpus().length >= 2 &&
  spawnSync("taskset", ["-c", "0", "true"], { stdio: "ignore" }).status === 0;

/**
 * The open-file limit children can get: the hard limit of this process (raising it needs
 * CAP_SYS_RESOURCE, which a container often lacks), at most 65536.
 */
export const childFileLimit = (() => {
  try {
    const limits = readFileSync("/proc/self/limits", "utf8");
    const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
    return hard === undefined || hard === "unlimited" ? 65536 : Math.min(65536, Number(hard));
  } catch {
    return 65536;
  }
})();

/** Clock ticks per second for /proc/<pid>/stat (`getconf CLK_TCK`, almost always 100). */
const clockTicks = (() => {
  const out = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
  const ticks = Number(out.stdout?.trim());
  return Number.isFinite(ticks) && ticks > 0 ? ticks : 100;
})();

/** Starts `command args` as a tracked child, pinned to `options.cpu` when pinning is possible. */
export function startChild(
  name: string,
  command: string,
  args: readonly string[],
  options: StartChildOptions = {},
): BenchChild {
  const pin = canPin && options.cpu !== undefined ? ["taskset", "-c", String(options.cpu)] : [];
  const nofile = options.nofile ?? childFileLimit;
  const script = `ulimit -n ${nofile} 2>/dev/null; exec "$@"`;
  const child = spawn("bash", ["-c", script, "bash", ...pin, command, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: options.env ?? process.env,
  });
  let tail = "";
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString()).slice(-OUTPUT_TAIL);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  if (child.pid === undefined) throw new Error(`${name}: cannot start ${command}`);
  const started: BenchChild = { name, pid: child.pid, process: child, output: () => tail, exited };
  children.add(started);
  exited.then(() => children.delete(started));
  return started;
}

/** Stops one child: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child: BenchChild, graceMs = 3000): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  child.process.kill("SIGTERM");
  const timer = setTimeout(() => child.process.kill("SIGKILL"), graceMs);
  await child.exited;
  clearTimeout(timer);
}

/** Stops every child still running. */
export async function stopAll(graceMs = 3000): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c, graceMs)));
}

function killAllNow(): void {
  for (const child of children) {
    try {
      child.process.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}

let handlersInstalled = false;
/**
 * Makes sure no child outlives this process: SIGKILL on exit, a graceful stop on SIGINT/SIGTERM
 * (exit status 130/143 afterwards).
 */
export function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", killAllNow);
  for (const [signal, status] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: stopping every bench process`);
      stopAll(1000).finally(() => process.exit(status));
    });
  }
}

/** utime + stime of a process, in seconds (0 once it has exited). */
export function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return 0;
  }
  // Fields after the command name (which may hold spaces) start with the state, field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** Resident set size of a process in bytes (0 once it has exited). */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return kib === null ? 0 : Number(kib[1]) * 1024;
  } catch {
    return 0;
  }
}

/** Sum of {@link cpuSeconds} over pids. */
export function totalCpuSeconds(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

/** Resolves once `host:port` accepts a TCP connection; rejects after `timeoutMs` or when `child` exits. */
export async function waitForPort(
  host: string,
  port: number,
  timeoutMs: number,
  child?: BenchChild,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child !== undefined && child.process.exitCode !== null) {
      throw new Error(`${child.name} exited (${child.process.exitCode}):\n${child.output()}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${child?.name ?? "service"} not listening on ${host}:${port} after ${timeoutMs} ms${
          child === undefined ? "" : `:\n${child.output()}`
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
