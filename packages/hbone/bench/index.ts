// HBONE benchmarks: each line compares against plain mTLS measured in the same run, same processes.
// Run with `pnpm bench`; bounded to well under a minute.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { connect as http2Connect } from "node:http2";
import { cpus } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Duplex } from "node:stream";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { clientTlsOptions } from "../src/credentials.js";
import { createHboneClient } from "../src/index.js";
import { CLIENT_ID, createTestPki, SERVER_ID } from "../test/fixtures.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;
const here = fileURLToPath(new URL(".", import.meta.url));
const MiB = 1024 * 1024;

const pki = createTestPki();
const serverSvid = pki.issue(SERVER_ID);
const clientSvid = pki.issue(CLIENT_ID);
// With two or more CPUs on Linux, this process (the client side) is pinned to CPU 0 and the peer to
// CPU 1, so the scheduler cannot move them around between measurements; it makes runs repeatable.
const pin =
  process.platform === "linux" &&
  cpus().length >= 2 &&
  spawnSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" }).status === 0;
const peer: ChildProcess = spawn(
  pin ? "taskset" : process.execPath,
  [
    ...(pin ? ["-c", "1", process.execPath] : []),
    "--expose-gc",
    "--import",
    "tsx",
    join(here, "peer.ts"),
    serverSvid.keyPath,
    serverSvid.certPath,
    join(pki.dir, "root.pem"),
  ],
  { stdio: ["pipe", "pipe", "inherit"] },
);
console.log(pin ? "client pinned to CPU 0, peer to CPU 1" : "not pinned (taskset missing or one CPU)");
const peerLines = createInterface({ input: peer.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
const nextPeerLine = async () =>
  JSON.parse(String((await peerLines.next()).value)) as Record<string, unknown>;
const { hbonePort, tlsPorts } = (await nextPeerLine()) as {
  hbonePort: number;
  tlsPorts: Record<string, number>;
};

const newClient = () => createHboneClient({ ...clientSvid, keepaliveIntervalMs: 0 });
const client = newClient();
const hboneAddress = `127.0.0.1:${hbonePort}`;
const tlsOptions = clientTlsOptions(clientSvid, {}, [SERVER_ID]);

const openTunnel = (mode: 1 | 2 | 3, via = client) =>
  via.connect({ address: hboneAddress, authority: `127.0.0.1:${mode}`, expectedIdentities: [SERVER_ID] });
const openTls = (mode: "sink" | "echo" | "close") =>
  new Promise<TLSSocket>((resolve, reject) => {
    const options: ConnectionOptions & { allowHalfOpen: boolean } = {
      ...tlsOptions,
      ALPNProtocols: [],
      host: "127.0.0.1",
      port: tlsPorts[mode] as number,
      allowHalfOpen: true,
    };
    const s = tlsConnect(options);
    s.once("secureConnect", () => {
      s.setNoDelay(true);
      resolve(s);
    });
    s.once("error", reject);
  });

/** Writes `bytes` (respecting back-pressure), ends, and waits for the sink's byte count. */
async function sink(stream: Duplex, bytes: number): Promise<void> {
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  const reply = new Promise<string>((resolve, reject) => {
    let text = "";
    stream.on("data", (c: Buffer) => {
      text += c.toString();
    });
    stream.once("end", () => resolve(text));
    stream.once("error", reject);
  });
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    if (!stream.write(chunk)) await new Promise((r) => stream.once("drain", r));
  }
  stream.end();
  const text = await reply;
  if (Number(text) < bytes) throw new Error(`sink saw ${text} bytes, expected ${bytes}`);
}

// HBONE_BENCH=bulk,rtt runs a subset (bulk, multi, rtt, rate, memory).
const only = process.env.HBONE_BENCH?.split(",");
const enabled = (name: string) => only === undefined || only.includes(name);
const mbps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);
const fmt = (n: number, digits = 0) => n.toFixed(digits);
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}
const results: string[] = [];
function report(line: string): void {
  results.push(line);
  console.log(line);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** A bare node:http2 CONNECT stream to the HBONE server (no TunnelStream, no pool): Node's own floor. */
let rawSession: ReturnType<typeof http2Connect> | undefined;
async function openRaw(mode: 1 | 2): Promise<Duplex> {
  if (rawSession === undefined) {
    const socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ ...tlsOptions, host: "127.0.0.1", port: hbonePort });
      s.once("secureConnect", () => resolve(s));
      s.once("error", reject);
    });
    socket.setNoDelay(true);
    const session = http2Connect(`https://127.0.0.1:${hbonePort}`, {
      createConnection: () => socket,
      settings: { initialWindowSize: 4 * MiB, maxFrameSize: MiB },
    });
    session.once("connect", () => session.setLocalWindowSize(16 * MiB));
    rawSession = session;
  }
  const stream = rawSession.request({ ":method": "CONNECT", ":authority": `127.0.0.1:${mode}` });
  await new Promise((r) => stream.once("response", r));
  return stream;
}

// 1. Bulk throughput over one tunnel vs one TLS connection.
if (enabled("bulk")) {
  const bytes = 256 * MiB;
  await sink(await openTunnel(1), 16 * MiB);
  await sink(await openTls("sink"), 16 * MiB);
  await sink(await openRaw(1), 16 * MiB);
  const hbone: number[] = [];
  const tls: number[] = [];
  const raw: number[] = [];
  // Every run opens a new connection, as the TLS baseline does: a connection kept from run to run
  // carries its kernel buffer sizing along and made whole bench runs fast or slow together.
  const runs = [
    async () => {
      const fresh = newClient();
      hbone.push(mbps(bytes, await timed(async () => sink(await openTunnel(1, fresh), bytes))));
      await fresh.destroy();
    },
    async () => tls.push(mbps(bytes, await timed(async () => sink(await openTls("sink"), bytes)))),
    async () => {
      rawSession?.destroy();
      rawSession = undefined;
      raw.push(mbps(bytes, await timed(async () => sink(await openRaw(1), bytes))));
    },
  ];
  // One unrecorded round first: the first full-size run of each variant came out slower (JIT and
  // heap still settling), most of all for the variants with more JavaScript per chunk.
  for (const run of runs) await run();
  for (const list of [hbone, tls, raw]) list.length = 0;
  // Five rounds, rotating the order; each round's ratio compares runs made seconds apart, and the
  // median of those ratios is reported, so one disturbed run does not decide the result.
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < runs.length; i++) await (runs[(i + round) % runs.length] as () => Promise<number>)();
  }
  const ratio = median(hbone.map((h, i) => h / (tls[i] as number)));
  if (process.env.BENCH_VERBOSE === "1") console.log({ hbone, tls, raw });
  report(
    `bulk throughput, 1 tunnel (median of 5 rounds × 256 MiB): hbone ${fmt(median(hbone))} MiB/s, tls ${fmt(median(tls))} MiB/s, ratio ${fmt(ratio, 2)} (goal >= 0.85); bare node:http2 stream ${fmt(median(raw))} MiB/s`,
  );
}

// 2. Eight concurrent tunnels on one pooled connection vs eight TLS connections.
if (enabled("multi")) {
  const each = 32 * MiB;
  const h: number[] = [];
  const t: number[] = [];
  const runHbone = async () => {
    const fresh = newClient();
    const ms = await timed(async () => {
      const tunnels = await Promise.all(Array.from({ length: 8 }, () => openTunnel(1, fresh)));
      await Promise.all(tunnels.map((tunnel) => sink(tunnel, each)));
    });
    h.push(mbps(8 * each, ms));
    await fresh.destroy();
  };
  const runTls = async () => {
    const ms = await timed(async () => {
      const sockets = await Promise.all(Array.from({ length: 8 }, () => openTls("sink")));
      await Promise.all(sockets.map((socket) => sink(socket, each)));
    });
    t.push(mbps(8 * each, ms));
  };
  // One unrecorded round, as for the single tunnel; then five rounds in alternating order, and the
  // median of the per-round ratios is reported.
  await runHbone();
  await runTls();
  h.length = 0;
  t.length = 0;
  for (let round = 0; round < 5; round++) {
    if (round % 2 === 0) {
      await runHbone();
      await runTls();
    } else {
      await runTls();
      await runHbone();
    }
  }
  const ratio = median(h.map((x, i) => x / (t[i] as number)));
  report(
    `bulk throughput, 8 tunnels on 1 connection vs 8 TLS connections (median of 5 rounds × 8 × 32 MiB): hbone ${fmt(median(h))} MiB/s, tls ${fmt(median(t))} MiB/s, ratio ${fmt(ratio, 2)} (goal >= 0.8)`,
  );
}

// 3. 1 KiB round trips on an open tunnel vs an open TLS connection.
/** Round-trip times (ms, sorted) of `count` 1 KiB echoes after `warmup` unrecorded ones. */
async function roundTrips(stream: Duplex, count: number, warmup = 300): Promise<number[]> {
  const payload = Buffer.alloc(1024, 1);
  const times: number[] = [];
  let pending: (() => void) | undefined;
  let got = 0;
  stream.on("data", (c: Buffer) => {
    got += c.length;
    if (got >= payload.length && pending) {
      got -= payload.length;
      const p = pending;
      pending = undefined;
      p();
    }
  });
  for (let i = 0; i < warmup + count; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      pending = resolve;
      stream.write(payload);
    });
    if (i >= warmup) times.push(performance.now() - t0);
  }
  // Let the echo side finish too, so the tunnel closes cleanly before the next measurement.
  await new Promise<void>((resolve) => {
    stream.once("close", () => resolve());
    stream.end();
  });
  return times.sort((a, b) => a - b);
}
if (enabled("rtt")) {
  const pct = (sorted: number[], p: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
  // Interleaved rounds so that load from other processes hits all three alike.
  const h: number[] = [];
  const t: number[] = [];
  const r: number[] = [];
  for (let round = 0; round < 3; round++) {
    // Rotate the order each round: whichever runs first in a round tends to be slower.
    const runs = [
      async () => h.push(...(await roundTrips(await openTunnel(2), 1000))),
      async () => t.push(...(await roundTrips(await openTls("echo"), 1000))),
      async () => r.push(...(await roundTrips(await openRaw(2), 1000))),
    ];
    for (let i = 0; i < runs.length; i++) await (runs[(i + round) % runs.length] as () => Promise<number>)();
  }
  for (const list of [h, t, r]) list.sort((a, b) => a - b);
  const us = (ms: number) => fmt(ms * 1000);
  report(
    `1 KiB round trip: hbone p50 ${us(pct(h, 0.5))} µs p99 ${us(pct(h, 0.99))} µs, tls p50 ${us(pct(t, 0.5))} µs p99 ${us(pct(t, 0.99))} µs, p50 ratio ${fmt(pct(h, 0.5) / pct(t, 0.5), 2)} (goal <= 1.3); bare node:http2 stream p50 ${us(pct(r, 0.5))} µs p99 ${us(pct(r, 0.99))} µs`,
  );
}

// 4. Tunnels opened and closed per second on a warm pool vs new TLS connections per second.
async function rate(open: () => Promise<Duplex>, ms: number, concurrency: number): Promise<number> {
  let n = 0;
  const deadline = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < deadline) {
      const s = await open();
      await new Promise<void>((resolve, reject) => {
        s.once("close", () => resolve());
        s.once("error", reject);
        s.resume();
        s.end();
      });
      n++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return n / (ms / 1000);
}
if (enabled("rate")) {
  await rate(() => openTunnel(3), 300, 8);
  await rate(() => openTls("close"), 300, 8);
  const h = await rate(() => openTunnel(3), 2000, 8);
  const t = await rate(() => openTls("close"), 2000, 8);
  report(
    `open+close per second (8 concurrent): hbone warm pool ${fmt(h)}/s, new TLS connections ${fmt(t)}/s, ratio ${fmt(h / t, 1)} (goal >= 5)`,
  );
}

// 5. Memory per idle open tunnel (client process and server process), for a bounded count.
if (enabled("memory")) {
  const count = 10_000;
  await new Promise((r) => setTimeout(r, 200));
  gc();
  const before = process.memoryUsage().rss;
  peer.stdin?.write("rss\n");
  const peerBefore = (await nextPeerLine()).rss as number;
  const tunnels: Duplex[] = [];
  for (let i = 0; i < count; i += 100) {
    tunnels.push(...(await Promise.all(Array.from({ length: 100 }, () => openTunnel(2)))));
  }
  gc();
  const after = process.memoryUsage().rss;
  peer.stdin?.write("rss\n");
  const peerAfter = await nextPeerLine();
  const clientKiB = (after - before) / 1024 / count;
  const serverKiB = ((peerAfter.rss as number) - peerBefore) / 1024 / count;
  report(
    `RSS per idle tunnel (${count} tunnels, ${client.stats().connections} connections): client ${fmt(clientKiB, 1)} KiB, server ${fmt(serverKiB, 1)} KiB (goal <= 20 KiB)`,
  );
  for (const t of tunnels) t.destroy();
}

rawSession?.destroy();
await client.destroy();
peer.stdin?.write("exit\n");
pki.cleanup();
