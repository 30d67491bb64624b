// What the server holds in ArrayBuffers right after a first push, and a few event-loop turns later:
// 100 wildcard Delta streams from 4 client processes (grpc-js, responses not decoded, ACKed), 11,000
// Address resources of 250 bytes. Measured after one forced GC at the moment the last client has its
// response (as examples/control-plane's scale bench measures), then after three GCs with an
// event-loop turn between them, then after the clients have gone.
//
//   node --expose-gc --import tsx bench/held-after-push.ts [--visible-hook]
import { fork } from "node:child_process";
import os from "node:os";
import * as grpc from "@grpc/grpc-js";
import { ADS_SERVICE } from "../src/ads-service.js";
import { TypeUrl, typeRegistry } from "../src/type-registry.js";
import { createXdsServer } from "../src/xds-server.js";

const A = TypeUrl.address;
const DELTA_REQ = "envoy.service.discovery.v3.DeltaDiscoveryRequest";
const PROCESSES = 4;
const PER_PROCESS = 25;

async function runClients(port: number): Promise<void> {
  const clients: grpc.Client[] = [];
  await Promise.all(
    Array.from({ length: PER_PROCESS }, () => {
      const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      clients.push(client);
      const call = client.makeBidiStreamRequest(
        `/${ADS_SERVICE}/DeltaAggregatedResources`,
        (v: Uint8Array) => Buffer.from(v),
        (b: Buffer) => b,
      );
      call.on("error", () => {});
      call.write(typeRegistry.encode(DELTA_REQ, { typeUrl: A }));
      return new Promise<void>((resolve) =>
        call.once("data", (b: Buffer) => {
          const { nonce } = typeRegistry.decode("envoy.service.discovery.v3.DeltaDiscoveryResponse", b) as {
            nonce: string;
          };
          call.write(typeRegistry.encode(DELTA_REQ, { typeUrl: A, responseNonce: nonce }));
          resolve();
        }),
      );
    }),
  );
  process.send?.("ready");
  process.once("message", () => {
    for (const c of clients) c.close();
    process.exit(0);
  });
}

async function main(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run with node --expose-gc");
  const server = createXdsServer({
    debounceMs: 0,
    ...(process.argv.includes("--visible-hook") ? { visible: () => true } : {}),
  });
  server.cache.batch(() => {
    for (let i = 0; i < 11_000; i++) server.cache.setEncoded(A, `u${i}`, new Uint8Array(250).fill(i & 255));
  });
  const port = await server.listen();
  const mib = () => Math.round(process.memoryUsage().arrayBuffers / 2 ** 20);
  const turn = () => new Promise((resolve) => setImmediate(resolve));
  gc();
  const out: Record<string, unknown> = { arrayBuffersBeforeMiB: mib() };
  const self = new URL(import.meta.url).pathname;
  const children = Array.from({ length: PROCESSES }, () =>
    fork(self, ["clients", String(port)], { execArgv: ["--import", "tsx"] }),
  );
  await Promise.all(children.map((c) => new Promise((resolve) => c.once("message", resolve))));
  gc();
  out.afterOneGcMiB = mib();
  for (let i = 0; i < 3; i++) {
    gc();
    await turn();
  }
  out.afterThreeGcsWithTurnsMiB = mib();
  out.streams = server.streams().length;
  for (const c of children) c.send("exit");
  await Promise.all(children.map((c) => new Promise((resolve) => c.once("exit", resolve))));
  for (let i = 0; i < 3; i++) {
    gc();
    await turn();
  }
  out.clientsGoneMiB = mib();
  out.loadAverage = os.loadavg().map((l) => Math.round(l * 10) / 10);
  console.log(JSON.stringify(out));
  await server.close();
}

if (process.argv[2] === "clients") await runClients(Number(process.argv[3]));
else await main();
