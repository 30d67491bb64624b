/**
 * Traffic on the namespace mesh, from inside the client pod: unmodified iperf3, and the loopback
 * bench's Node load generator (`netns-client.ts`), each started with `ip netns exec` as a tracked
 * child (stopped with the rest on SIGINT or exit) and bounded in time.
 */
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { IperfResult, Percentiles } from "./load.js";
import type { ClientJob } from "./netns-client.js";
import type { NetnsRoute } from "./netns-topology.js";
import { type BenchChild, startChild, stopChild } from "./processes.js";

const clientScript = fileURLToPath(new URL("./netns-client.ts", import.meta.url));

/** Waits for a child, killing it after `timeoutMs`; rejects when it did not exit 0. */
async function finished(child: BenchChild, timeoutMs: number): Promise<void> {
  const timer = setTimeout(() => void stopChild(child, 1000), timeoutMs);
  await child.exited;
  clearTimeout(timer);
  if (child.process.exitCode !== 0) {
    throw new Error(
      `${child.name} exited ${child.process.exitCode ?? child.process.signalCode}: ${child.output().trim()}`,
    );
  }
}

/** Runs one load-generator job inside `netns` and returns what it printed. */
export async function runInPod<T>(netns: string, job: ClientJob, timeoutMs: number): Promise<T> {
  const child = startChild(`load generator (${job.kind})`, "ip", [
    "netns",
    "exec",
    netns,
    process.execPath,
    "--import",
    "tsx",
    clientScript,
    JSON.stringify(job),
  ]);
  await finished(child, timeoutMs);
  const line = /^RESULT (.*)$/m.exec(child.output())?.[1];
  if (line === undefined) throw new Error(`${child.name} printed no result: ${child.output().trim()}`);
  return JSON.parse(line) as T;
}

/** 64-byte ping-pong from the client pod (see `pingPong`). */
export const pingPongInPod = (netns: string, route: NetnsRoute, durationMs: number) =>
  runInPod<Percentiles>(netns, { kind: "ping", route, durationMs }, durationMs + 30_000);

/** New connection to first byte from the client pod (see `connectToFirstByte`). */
export const connectInPod = (netns: string, route: NetnsRoute, durationMs: number) =>
  runInPod<Percentiles & { errors: number }>(
    netns,
    { kind: "connect", route, durationMs },
    durationMs + 30_000,
  );

/** One byte there and back from the client pod. */
export const echoInPod = (netns: string, route: NetnsRoute) =>
  runInPod<{ echoed: string }>(netns, { kind: "echo", route }, 20_000);

/**
 * Runs unmodified `iperf3 -c` inside `netns` (its JSON report goes to a file in `dir`: a -J report of
 * eight streams is larger than the output a child keeps).
 */
export async function iperfInPod(
  netns: string,
  route: NetnsRoute,
  streams: number,
  seconds: number,
  dir: string,
): Promise<IperfResult> {
  const logFile = join(dir, `iperf-${process.hrtime.bigint()}.json`);
  const child = startChild(`iperf3 client (${streams})`, "ip", [
    "netns",
    "exec",
    netns,
    "iperf3",
    "-c",
    route.host,
    "-p",
    String(route.port),
    "-B",
    route.localAddress,
    "-P",
    String(streams),
    "-t",
    String(seconds),
    "-J",
    "--logfile",
    logFile,
  ]);
  let text = "";
  try {
    await finished(child, (seconds + 15) * 1000).catch(async (err: Error) => {
      const out = await readFile(logFile, "utf8").catch(() => "");
      const reason = /"error":\s*"([^"]*)"/.exec(out)?.[1];
      throw new Error(`iperf3 to ${route.host}:${route.port}: ${reason ?? err.message}`);
    });
    text = await readFile(logFile, "utf8");
  } finally {
    await rm(logFile, { force: true });
  }
  const report = JSON.parse(text) as {
    error?: string;
    end?: { sum_received?: { bytes: number; seconds: number; bits_per_second: number } };
  };
  const sum = report.end?.sum_received;
  if (report.error !== undefined || sum === undefined) {
    throw new Error(`iperf3 to ${route.host}:${route.port}: ${report.error ?? "no summary"}`);
  }
  return { bytes: sum.bytes, seconds: sum.seconds, bitsPerSecond: sum.bits_per_second };
}
