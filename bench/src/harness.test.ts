// The bench's wiring, so it cannot rot: every pair starts, carries bytes both ways and iperf3 traffic,
// and every process is gone after close. Nothing here asserts a speed.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import type { BenchResult } from "./bench.js";
import { iperf, openRoute, percentiles } from "./load.js";
import { installExitHandlers } from "./processes.js";
import { formatReport } from "./report.js";
import { socks5ConnectBytes } from "./socks5-client.js";
import { type Pair, startTopology } from "./topology.js";

// No child outlives the test run, even when it is interrupted.
installExitHandlers();

test("every pair carries an echo and an iperf3 run, and close stops every process", async () => {
  // A subnet of its own (127.180-249.x.y), clear of a bench run (127.77) and of another copy of this
  // test running in a second checkout at the same time.
  const topology = await startTopology({ subnet: 180 + Math.floor(Math.random() * 70), pin: false });
  const pids: number[] = [];
  try {
    assert.deepEqual(
      topology.pairs.map((p) => p.name),
      ["haproxy", "node-tls", "ztunnel"],
    );
    for (const pair of topology.pairs) {
      pids.push(...pair.proxies.map((p) => p.pid), ...pair.helpers.map((p) => p.pid));
      const socket = await openRoute(pair.route("echo"));
      const answer = new Promise<string>((resolve, reject) => {
        socket.once("data", (chunk: Buffer) => resolve(chunk.toString()));
        socket.once("error", reject);
      });
      socket.resume();
      socket.write("x");
      assert.equal(await answer, "x", `${pair.name} echoed the byte`);
      socket.destroy();
      if (pair.inboundTls !== undefined) {
        const refused = await withoutClientCertificate(pair.inboundTls.host, pair.inboundTls.port);
        assert.equal(refused.protocol, "TLSv1.3", `${pair.name} speaks TLS 1.3`);
        assert.equal(refused.echoed, false, `${pair.name} refuses a client without a certificate`);
      }
      const run = await iperf(pair.iperfAddress.host, pair.iperfAddress.port, topology.clientPodIp, 1, 1);
      assert.ok(run.bytes > 0, `${pair.name} carried iperf3 bytes`);
    }
  } finally {
    await topology.close();
  }
  for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} stopped`);
});

test("baseTree adds a second ztunnel pair with its own pods, and close stops it too", async () => {
  // This checkout as its own base: the point is the wiring (own control plane, pods, backends).
  const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
  const topology = await startTopology({
    subnet: 180 + Math.floor(Math.random() * 70),
    pin: false,
    pairs: ["ztunnel"],
    baseTree: repoRoot,
  });
  const pids: number[] = [];
  try {
    assert.deepEqual(
      topology.pairs.map((p) => p.name),
      ["ztunnel", "ztunnel-base"],
    );
    const [own, base] = topology.pairs as [Pair, Pair];
    assert.notEqual(base.route("echo").socks5?.targetIp, own.route("echo").socks5?.targetIp);
    for (const pair of topology.pairs) {
      pids.push(...pair.proxies.map((p) => p.pid), ...pair.helpers.map((p) => p.pid));
      const socket = await openRoute(pair.route("echo"));
      const answer = new Promise<string>((resolve, reject) => {
        socket.once("data", (chunk: Buffer) => resolve(chunk.toString()));
        socket.once("error", reject);
      });
      socket.resume();
      socket.write("y");
      assert.equal(await answer, "y", `${pair.name} echoed the byte`);
      socket.destroy();
      const run = await iperf(
        pair.iperfAddress.host,
        pair.iperfAddress.port,
        pair.route("iperf").localAddress,
        1,
        1,
      );
      assert.ok(run.bytes > 0, `${pair.name} carried iperf3 bytes`);
    }
  } finally {
    await topology.close();
  }
  for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} stopped`);
});

/** Completes a TLS handshake without a client certificate, sends a byte, and sees whether it comes back. */
function withoutClientCertificate(
  host: string,
  port: number,
): Promise<{ protocol: string | null; echoed: boolean }> {
  return new Promise((resolve) => {
    let protocol: string | null = null;
    let echoed = false;
    const socket = tlsConnect({ host, port, rejectUnauthorized: false });
    socket.once("secureConnect", () => {
      protocol = socket.getProtocol();
      socket.write("x");
    });
    socket.on("data", () => {
      echoed = true;
      socket.destroy();
    });
    socket.on("error", () => {});
    socket.once("close", () => resolve({ protocol, echoed }));
    setTimeout(() => socket.destroy(), 5000).unref();
  });
}

test("SOCKS5 CONNECT bytes for an IPv4 target", () => {
  assert.deepEqual(
    [...socks5ConnectBytes("127.78.0.2", 7007)],
    [5, 1, 0, 5, 1, 0, 1, 127, 78, 0, 2, 0x1b, 0x5f],
  );
  assert.throws(() => socks5ConnectBytes("example.com", 80), /not an IPv4 address/);
});

test("percentiles are in microseconds from nanosecond samples", () => {
  const samples = Array.from({ length: 100 }, (_, i) => (i + 1) * 1000);
  assert.deepEqual(percentiles(samples), { p50: 51, p99: 100, samples: 100 });
});

test("the report puts ratios to haproxy beside the raw numbers and ends with the JSON line", () => {
  const bulk = (gbit: number, cpu: number) => ({
    streams: 1,
    gbitPerSecond: gbit,
    bytes: 1024 ** 3,
    seconds: 1,
    proxyCpuSeconds: cpu,
    proxyCpuSecondsPerGiB: cpu,
  });
  const result: BenchResult = {
    startedAt: "2026-12-05T00:00:00.000Z",
    revision: "abc1234",
    node: "v20",
    cpus: 2,
    pinned: true,
    loadAverage: { start: [1, 1, 1], end: [1, 1, 1] },
    options: { bulkSeconds: 1, latencySeconds: 1, tunnels: 10, streams: [1], quick: false },
    direct: {},
    pairs: [
      { pair: "haproxy", bulk: [bulk(2, 2)], errors: [] },
      { pair: "ztunnel", bulk: [{ ...bulk(1, 5), helperCpuSecondsPerGiB: 1 }], errors: ["tunnels: boom"] },
    ],
  };
  const text = formatReport(result);
  assert.match(text, /\| bulk 1 stream, Gbit\/s \| 2\.00 \| 1\.00 \(0\.50x\) \|/);
  assert.match(
    text,
    /\| proxy CPU s\/GiB, 1 stream \| 2\.00 \| 5\.00 \(2\.50x\) \[\+ shim 1\.00, not billed\] \|/,
  );
  assert.match(text, /^ERROR ztunnel: tunnels: boom$/m);
  const json = /^BENCH_JSON (.*)$/m.exec(text)?.[1];
  assert.deepEqual(JSON.parse(json ?? "null"), result);
});
