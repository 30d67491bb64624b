/**
 * The traffic of a run, the same for every pair: iperf3 bulk transfers, a 64-byte ping-pong on one
 * connection, new connection to first echoed byte, and many idle tunnels held open at once. Every
 * phase is bounded in time or count.
 */
import { execFile } from "node:child_process";
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import { promisify } from "node:util";
import { socks5Connect } from "./socks5-client.js";
import type { Route } from "./topology.js";

const run = promisify(execFile);

/** Opens a connection along `route` and resolves once bytes can be written (SOCKS5 done). */
export async function openRoute(route: Route): Promise<Socket> {
  if (route.socks5 !== undefined) {
    return socks5Connect({ ...route.socks5, localAddress: route.localAddress });
  }
  const socket = connect({ host: route.host, port: route.port, localAddress: route.localAddress });
  socket.setNoDelay(true);
  try {
    await once(socket, "connect");
  } catch (err) {
    socket.destroy();
    throw err;
  }
  return socket;
}

/** Writes `payload` and resolves once as many bytes came back (the echo server's answer). */
function roundTrip(socket: Socket, payload: Buffer, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const timer = setTimeout(() => finish(new Error(`no echo within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      got += chunk.length;
      if (got >= payload.length) finish();
    };
    const onClose = () => finish(new Error(`connection closed after ${got} of ${payload.length} bytes`));
    const onError = (err: Error) => finish(err);
    const finish = (err?: Error) => {
      clearTimeout(timer);
      socket.off("data", onData).off("close", onClose).off("error", onError);
      socket.pause();
      if (err === undefined) resolve();
      else reject(err);
    };
    socket.on("data", onData).on("close", onClose).on("error", onError);
    socket.resume();
    socket.write(payload);
  });
}

/** p50 and p99 of samples, in microseconds. */
export interface Percentiles {
  p50: number;
  p99: number;
  samples: number;
}

export function percentiles(samplesNs: readonly number[]): Percentiles {
  const sorted = [...samplesNs].sort((a, b) => a - b);
  const at = (q: number) => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0) / 1000;
  return { p50: at(0.5), p99: at(0.99), samples: sorted.length };
}

const PAYLOAD = Buffer.alloc(64, "p");
const ROUND_TRIP_TIMEOUT_MS = 5000;
/**
 * Unrecorded ping-pong before the samples. Both ends of the path that run on V8 (the load generator,
 * the Node proxies) compile their hot functions in the first second or so, on background threads that
 * share a pinned proxy's CPU; 200 round trips (about 40 ms) left that in the samples.
 */
export const PING_WARM_UP_MS = 1000;

/**
 * 64-byte ping-pong on one connection for `durationMs` (at most `maxSamples`), after at least 200
 * unrecorded ones and {@link PING_WARM_UP_MS}.
 */
export async function pingPong(route: Route, durationMs: number, maxSamples = 200_000): Promise<Percentiles> {
  const socket = await openRoute(route);
  try {
    const warm = Date.now() + PING_WARM_UP_MS;
    for (let i = 0; i < 200 || Date.now() < warm; i++)
      await roundTrip(socket, PAYLOAD, ROUND_TRIP_TIMEOUT_MS);
    const samples: number[] = [];
    const end = Date.now() + durationMs;
    while (Date.now() < end && samples.length < maxSamples) {
      const start = process.hrtime.bigint();
      await roundTrip(socket, PAYLOAD, ROUND_TRIP_TIMEOUT_MS);
      samples.push(Number(process.hrtime.bigint() - start));
    }
    return percentiles(samples);
  } finally {
    socket.destroy();
  }
}

/**
 * New connection to first byte: connect (and the SOCKS5 exchange where the route has one), write 64
 * bytes, wait for the echo, reset; one at a time for `durationMs` after 20 unrecorded ones.
 */
export async function connectToFirstByte(
  route: Route,
  durationMs: number,
  maxSamples = 20_000,
): Promise<Percentiles & { errors: number }> {
  const once = async () => {
    const start = process.hrtime.bigint();
    const socket = await openRoute(route);
    try {
      await roundTrip(socket, PAYLOAD, ROUND_TRIP_TIMEOUT_MS);
      return Number(process.hrtime.bigint() - start);
    } finally {
      // A reset leaves no TIME_WAIT: thousands of bound ports held for 60 s would starve the unbound
      // connects of whatever runs next on this machine (see holdTunnels).
      socket.resetAndDestroy();
    }
  };
  let errors = 0;
  for (let i = 0; i < 20; i++) await once().catch(() => errors++);
  errors = 0;
  const samples: number[] = [];
  const end = Date.now() + durationMs;
  while (Date.now() < end && samples.length < maxSamples) {
    try {
      samples.push(await once());
    } catch {
      errors += 1;
    }
  }
  return { ...percentiles(samples), errors };
}

/** What {@link holdTunnels} saw. */
export interface HeldTunnels {
  /** Proven with an echo and still open when `whileOpen` ran. */
  opened: number;
  /** Refused, reset or silent: failed to open, to echo, or closed before the measurement. */
  failed: number;
  /** Not attempted because the deadline passed first (the machine was too slow, not an error). */
  notAttempted: number;
  /** Time to open and prove them all, seconds. */
  openSeconds: number;
  /** The first failure's message, if any. */
  firstFailure?: string;
}

/**
 * Opens `count` connections along `route`, `concurrency` at a time, proves each with one echo, calls
 * `whileOpen` with all of them open, then resets them all. Stops opening at `deadlineMs` from now.
 */
export async function holdTunnels(
  route: Route,
  count: number,
  whileOpen: () => Promise<void>,
  options: { concurrency?: number; deadlineMs?: number } = {},
): Promise<HeldTunnels> {
  const concurrency = options.concurrency ?? 100;
  const started = Date.now();
  const deadline = started + (options.deadlineMs ?? 60_000);
  const sockets: Socket[] = [];
  const proven = new Set<Socket>();
  let failed = 0;
  let firstFailure: string | undefined;
  let next = 0;
  const worker = async () => {
    while (next < count && Date.now() < deadline) {
      next += 1;
      try {
        const socket = await openRoute(route);
        sockets.push(socket);
        socket.on("error", () => {});
        // A new TLS connection per tunnel queues behind hundreds of handshakes on a busy CPU.
        await roundTrip(socket, PAYLOAD, 4 * ROUND_TRIP_TIMEOUT_MS);
        proven.add(socket);
      } catch (err) {
        failed += 1;
        firstFailure ??= (err as Error).message;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
    const openSeconds = (Date.now() - started) / 1000;
    const alive = sockets.filter((s) => proven.has(s) && !s.destroyed).length;
    failed += proven.size - alive;
    await whileOpen();
    return {
      opened: alive,
      failed,
      notAttempted: count - next,
      openSeconds,
      ...(firstFailure === undefined ? {} : { firstFailure }),
    };
  } finally {
    // Reset, not FIN: a client that closes first keeps each port it bound (`localAddress`) in
    // TIME_WAIT for 60 s, and Linux gives no port held by a bind() to an unbound connect(), for any
    // address. 20,000 such ports from two earlier pairs left the next pair's inbound proxy 8,232 ports
    // for its connects to the echo server: the rest failed with EADDRNOTAVAIL (bench/RESULTS.md, runs D1-D4).
    for (const socket of sockets) socket.resetAndDestroy();
  }
}

/** One iperf3 client run. */
export interface IperfResult {
  bytes: number;
  seconds: number;
  bitsPerSecond: number;
}

/** Runs `iperf3 -c` against `host:port` with `streams` parallel streams for `seconds`. */
export async function iperf(
  host: string,
  port: number,
  bindIp: string,
  streams: number,
  seconds: number,
  cpu?: number,
): Promise<IperfResult> {
  const args = [
    "-c",
    host,
    "-p",
    String(port),
    "-B",
    bindIp,
    "-P",
    String(streams),
    "-t",
    String(seconds),
    "-J",
  ];
  const [command, argv] =
    cpu === undefined ? ["iperf3", args] : ["taskset", ["-c", String(cpu), "iperf3", ...args]];
  let stdout: string;
  try {
    ({ stdout } = await run(command, argv, { timeout: (seconds + 15) * 1000, maxBuffer: 16 << 20 }));
  } catch (err) {
    const out = (err as { stdout?: string }).stdout ?? "";
    const reason = /"error":\s*"([^"]*)"/.exec(out)?.[1] ?? (err as Error).message;
    throw new Error(`iperf3 to ${host}:${port}: ${reason}`);
  }
  const report = JSON.parse(stdout) as {
    error?: string;
    end?: { sum_received?: { bytes: number; seconds: number; bits_per_second: number } };
  };
  const sum = report.end?.sum_received;
  if (report.error !== undefined || sum === undefined) {
    throw new Error(`iperf3 to ${host}:${port}: ${report.error ?? "no summary"}`);
  }
  return { bytes: sum.bytes, seconds: sum.seconds, bitsPerSecond: sum.bits_per_second };
}
