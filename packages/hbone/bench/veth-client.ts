// The client side of the veth bench (veth-bench.ts), run inside the client namespace: the same
// transfers as `pnpm bench`'s "multi" section (8 tunnels on one new HBONE connection vs 8 new mutual
// TLS connections, 32 MiB each) plus one tunnel vs one TLS connection, against veth-peer.ts across
// the veth. Reports throughput and the CPU seconds per GiB of both processes (the peer's read from
// /proc: same pid namespace). Usage: veth-client.ts <json options>; prints one JSON line.
import { readFileSync } from "node:fs";
import type { Duplex } from "node:stream";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import { clientTlsOptions } from "../src/credentials.js";
import { createHboneClient } from "../src/index.js";

export interface VethClientOptions {
  host: string;
  hbonePort: number;
  tlsPort: number;
  peerPid: number;
  keyPath: string;
  certPath: string;
  caPath: string;
  serverId: string;
  rounds: number;
  eachMiB: number;
  clockTicks: number;
  /** Variants to run (for profiling one at a time); default all four. */
  only?: Variant[];
}

export type Variant = "multi-hbone" | "multi-tls" | "single-hbone" | "single-tls";

/** One measured transfer. */
export interface VethSample {
  mibPerSecond: number;
  /** CPU seconds per GiB moved, this process (the sender) and the peer (the receiver). */
  clientCpuPerGiB: number;
  serverCpuPerGiB: number;
}

export interface VethClientResult {
  multi: { hbone: VethSample[]; tls: VethSample[] };
  single: { hbone: VethSample[]; tls: VethSample[] };
}

const MiB = 1024 * 1024;
const o = JSON.parse(process.argv[2] ?? "") as VethClientOptions;
const credentials = {
  key: readFileSync(o.keyPath, "utf8"),
  certChain: readFileSync(o.certPath, "utf8"),
  trustBundle: readFileSync(o.caPath, "utf8"),
};
const tlsOptions = clientTlsOptions(credentials, {}, [o.serverId]);

function peerCpuSeconds(): number {
  const stat = readFileSync(`/proc/${o.peerPid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / o.clockTicks;
}
function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const openTls = () =>
  new Promise<TLSSocket>((resolve, reject) => {
    const options: ConnectionOptions & { allowHalfOpen: boolean } = {
      ...tlsOptions,
      ALPNProtocols: [],
      host: o.host,
      port: o.tlsPort,
      allowHalfOpen: true,
    };
    const s = tlsConnect(options);
    s.once("secureConnect", () => {
      s.setNoDelay(true);
      resolve(s);
    });
    s.once("error", reject);
  });

/** Writes `bytes` (respecting back-pressure), ends, and waits for the sink's count. */
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

/** `count` parallel transfers of `each` bytes, on one new HBONE connection or on new TLS connections. */
async function transfer(kind: "hbone" | "tls", count: number, each: number): Promise<VethSample> {
  const client = kind === "hbone" ? createHboneClient({ ...credentials, keepaliveIntervalMs: 0 }) : undefined;
  const c0 = ownCpuSeconds();
  const p0 = peerCpuSeconds();
  const t0 = performance.now();
  const streams: Duplex[] =
    client === undefined
      ? await Promise.all(Array.from({ length: count }, openTls))
      : await Promise.all(
          Array.from({ length: count }, () =>
            client.connect({
              address: `${o.host}:${o.hbonePort}`,
              authority: `${o.host}:1`,
              expectedIdentities: [o.serverId],
            }),
          ),
        );
  await Promise.all(streams.map((s) => sink(s, each)));
  const seconds = (performance.now() - t0) / 1000;
  const gib = (count * each) / 1024 ** 3;
  const sample = {
    mibPerSecond: (count * each) / MiB / seconds,
    clientCpuPerGiB: (ownCpuSeconds() - c0) / gib,
    serverCpuPerGiB: (peerCpuSeconds() - p0) / gib,
  };
  await client?.destroy();
  return sample;
}

const result: VethClientResult = { multi: { hbone: [], tls: [] }, single: { hbone: [], tls: [] } };
const each = o.eachMiB * MiB;
const runs = (variant: Variant) => o.only === undefined || o.only.includes(variant);
const multi = async (kind: "hbone" | "tls") => {
  if (runs(`multi-${kind}`)) result.multi[kind].push(await transfer(kind, 8, each));
};
const single = async (kind: "hbone" | "tls") => {
  if (runs(`single-${kind}`)) result.single[kind].push(await transfer(kind, 1, 8 * each));
};
// One unrecorded round of each (JIT, heaps, the veth's first connections), then rounds in
// alternating order, as `pnpm bench` does on loopback.
await multi("hbone");
await multi("tls");
await single("hbone");
await single("tls");
result.multi = { hbone: [], tls: [] };
result.single = { hbone: [], tls: [] };
for (let round = 0; round < o.rounds; round++) {
  const order = round % 2 === 0 ? (["hbone", "tls"] as const) : (["tls", "hbone"] as const);
  for (const kind of order) await multi(kind);
  for (const kind of order) await single(kind);
}
process.stdout.write(`${JSON.stringify(result)}\n`);
