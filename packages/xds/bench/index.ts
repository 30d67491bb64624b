// Benchmarks for @ambient/xds (run with `pnpm bench`). Ratios compare measurements of the same run.
import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs/light.js";
import { ADS_SERVICE } from "../src/ads-service.js";
import { TypeUrl, typeRegistry } from "../src/type-registry.js";
import { createXdsServer, type XdsServer } from "../src/xds-server.js";

const A = TypeUrl.address;
const DELTA_REQ = "envoy.service.discovery.v3.DeltaDiscoveryRequest";

/** A realistic mesh: per namespace 2 Services and 8 pod Workloads (10 Addresses). */
function seedMesh(server: XdsServer, total: number): void {
  const cache = server.cache;
  cache.batch(() => {
    for (let i = 0; i < total; i++) {
      const ns = `ns-${Math.floor(i / 10)}`;
      const ip = [10, (i >> 16) & 255, (i >> 8) & 255, i & 255];
      if (i % 10 < 2) {
        const host = `svc-${i % 10}.${ns}.svc.cluster.local`;
        cache.set(
          A,
          `${ns}/${host}`,
          {
            service: {
              name: `svc-${i % 10}`,
              namespace: ns,
              hostname: host,
              addresses: [{ network: "", address: new Uint8Array(ip) }],
              ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }],
            },
          },
          { aliases: [`/${ip.join(".")}`] },
        );
      } else {
        const uid = `Kubernetes//Pod/${ns}/app-${i}`;
        cache.set(A, uid, workload(uid, ns, ip, "v1"), { aliases: [`/${ip.join(".")}`] });
      }
    }
  });
}

function workload(uid: string, ns: string, ip: number[], rev: string) {
  return {
    workload: {
      uid,
      name: uid.slice(uid.lastIndexOf("/") + 1),
      namespace: ns,
      addresses: [new Uint8Array(ip)],
      tunnelProtocol: "HBONE" as const,
      serviceAccount: "app",
      node: "node-1",
      canonicalName: "app",
      canonicalRevision: rev,
      workloadName: "app",
      services: {
        [`${ns}/svc-0.${ns}.svc.cluster.local`]: { ports: [{ servicePort: 80, targetPort: 8080 }] },
      },
      status: "HEALTHY" as const,
    },
  };
}

/** An in-memory stand-in for a grpc-js server call: exercises the whole server minus the socket. */
class MemoryCall extends EventEmitter {
  bytes = 0;
  responses = 0;
  lastNonce = "";
  readonly metadata = new grpc.Metadata();
  private paused = false;
  getPeer() {
    return "memory";
  }
  getAuthContext() {
    return null;
  }
  pause() {
    this.paused = true;
  }
  resume() {
    this.paused = false;
  }
  isPaused() {
    return this.paused;
  }
  end() {}
  write(bytes: Uint8Array, done?: () => void) {
    this.bytes += bytes.length;
    this.responses++;
    this.lastNonce = nonceOf(bytes);
    // Taken at once, like a client that keeps up: the server's write buffer never holds it back.
    if (done !== undefined) queueMicrotask(done);
    return true;
  }
  request(req: Record<string, unknown>) {
    this.emit("data", Buffer.from(typeRegistry.encode(DELTA_REQ, req)));
  }
}

/** The nonce (field 5) is all a subscriber needs for its ACK: skip every other field undecoded. */
function nonceOf(bytes: Uint8Array): string {
  const reader = protobuf.Reader.create(bytes);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === 5) return reader.string();
    reader.skipType(tag & 7);
  }
  return "";
}

const tick = () => new Promise((r) => setImmediate(r));

function attach(server: XdsServer, count: number): MemoryCall[] {
  const calls: MemoryCall[] = [];
  const serve = (server as unknown as { serve(p: string, c: unknown): void }).serve.bind(server);
  for (let i = 0; i < count; i++) {
    const call = new MemoryCall();
    serve("delta", call);
    calls.push(call);
  }
  return calls;
}

async function until(check: () => boolean): Promise<void> {
  while (!check()) await tick();
}

interface PushState {
  total: number;
  server: XdsServer;
  calls: MemoryCall[];
  syncMs: number;
  syncBytes: number;
  cachedPerResource: number;
  payloadPerResource: number;
  times: number[];
  pushBytes: number;
}

/** Builds a cache of `total` Addresses and brings `subscribers` wildcard Delta streams to its full state. */
async function pushState(total: number, subscribers: number): Promise<PushState> {
  const base = heap();
  const server = createXdsServer({ debounceMs: 60_000 });
  seedMesh(server, total);
  server.flushNow(); // the seeding itself is not a push to measure
  const cachedPerResource = (heap() - base) / total;
  const payloadPerResource = server.cache.stats().encodedBytes / total;
  const calls = attach(server, subscribers);
  const t0 = performance.now();
  for (const c of calls) c.request({ typeUrl: A, node: { id: "ztunnel~bench" } });
  await until(() => calls.every((c) => c.responses === 1));
  const syncMs = performance.now() - t0;
  const syncBytes = calls.reduce((n, c) => n + c.bytes, 0);
  const state = { total, server, calls, syncMs, syncBytes, cachedPerResource, payloadPerResource };
  return { ...state, times: [], pushBytes: 0 };
}

/** One timed push: a Workload changes, from `cache.set` to every subscriber's response written. */
async function pushOnce(state: PushState, round: number): Promise<void> {
  const { server, calls } = state;
  const expected = calls[0]?.responses ?? 0;
  for (const c of calls) c.request({ typeUrl: A, responseNonce: c.lastNonce });
  await tick();
  await tick();
  const before = calls.reduce((n, c) => n + c.bytes, 0);
  const uid = "Kubernetes//Pod/ns-0/app-5";
  const t0 = performance.now();
  server.cache.set(A, uid, workload(uid, "ns-0", [10, 0, 0, 5], `r${round}`), { aliases: ["/10.0.0.5"] });
  server.flushNow();
  state.times.push(performance.now() - t0);
  state.pushBytes = calls.reduce((n, c) => n + c.bytes, 0) - before;
  if (!calls.every((c) => c.responses === expected + 1)) throw new Error("a subscriber missed a push");
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function initialSync(total: number, clients: number) {
  const server = createXdsServer({ debounceMs: 100 });
  seedMesh(server, total);
  const stats = server.cache.stats();
  const port = await server.listen();
  const channels: grpc.Client[] = [];
  let received = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, () => {
      const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      channels.push(client);
      const call = client.makeBidiStreamRequest(
        `/${ADS_SERVICE}/DeltaAggregatedResources`,
        (v: Uint8Array) => Buffer.from(v),
        (b: Buffer) => b,
      );
      call.on("error", () => {});
      call.write(typeRegistry.encode(DELTA_REQ, { typeUrl: A, node: { id: "ztunnel~bench" } }));
      return new Promise<void>((resolve) =>
        call.once("data", (b: Buffer) => {
          received += b.length;
          call.cancel();
          resolve();
        }),
      );
    }),
  );
  const ms = performance.now() - t0;
  const after = server.cache.stats();
  for (const c of channels) c.close();
  await server.close();
  return { ms, received, encodes: after.encodes, encodedBytes: stats.encodedBytes, resources: total };
}

function heap(): number {
  const g = (globalThis as { gc?: () => void }).gc;
  g?.();
  g?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Baseline: the same resources held as decoded objects, as a server without an encoded cache would. */
function decodedPerResource(server: XdsServer): number {
  const before = heap();
  const plain = server.cache.names(A).map((name) => server.cache.get(A, name));
  return (heap() - before) / plain.length;
}

const started = performance.now();
const fmt = (n: number, d = 2) => n.toFixed(d);
console.log("# @ambient/xds benchmarks");

const SUBSCRIBERS = 100;
const ROUNDS = 31;
console.log(
  `\n## Push cost: one changed Address, ${SUBSCRIBERS} Delta subscribers (wildcard), median of ${ROUNDS} pushes`,
);
// Each state is built once and all stay alive; rounds alternate between them so that a noisy moment
// on the machine (or a GC) lands on every N alike instead of on one of them.
const states: PushState[] = [];
for (const total of [1_000, 10_000, 100_000]) {
  const state = await pushState(total, SUBSCRIBERS);
  states.push(state);
  console.log(
    `N=${total}: full state ${(state.syncBytes / SUBSCRIBERS / 1e6).toFixed(2)} MB per subscriber, ` +
      `initial sync to ${SUBSCRIBERS} in ${fmt(state.syncMs / 1000, 1)} s`,
  );
}
heap(); // collect the initial-sync garbage so it does not land inside a timed push
for (let r = 0; r < 5; r++) for (const state of states) await pushOnce(state, r); // warm-up
for (const state of states) state.times.length = 0;
for (let r = 5; r < ROUNDS + 5; r++) for (const state of states) await pushOnce(state, r);
for (const state of states) {
  const times = [...state.times].sort((a, b) => a - b);
  console.log(
    `N=${state.total}: median ${fmt(median(times), 3)} ms (min ${fmt(times[0] ?? 0, 3)}, ` +
      `max ${fmt(times.at(-1) ?? 0, 3)}) per push to ${SUBSCRIBERS} subscribers, ` +
      `${state.pushBytes} bytes pushed (${fmt(state.pushBytes / SUBSCRIBERS, 0)} per subscriber)`,
  );
}
const [s1k, , s100k] = states;
if (s1k === undefined || s100k === undefined) throw new Error("missing state");
console.log(`ratio ${fmt(median(s100k.times) / median(s1k.times))} time(100k)/time(1k) (goal <= 1.5)`);
console.log(`ratio ${fmt(s100k.pushBytes / s1k.pushBytes)} bytes(100k)/bytes(1k) (goal <= 1.05)`);
const plain = decodedPerResource(s100k.server);
const memoryLine = [
  `${fmt(s100k.cachedPerResource, 0)} bytes/resource in the cache (payload ${fmt(s100k.payloadPerResource, 0)} bytes)`,
  `baseline: ${fmt(plain, 0)} bytes/resource to hold the same resources as decoded objects`,
  `ratio ${fmt(s100k.cachedPerResource / plain)} cached/decoded (goal <= 1.0)`,
].join("\n");
for (const state of states) await state.server.close();
states.length = 0;

console.log(`(${fmt((performance.now() - started) / 1000, 1)} s)`);
console.log("\n## Initial sync: 10k Addresses (2 Services + 8 Workloads per namespace) to 100 gRPC clients");
const sync = await initialSync(10_000, 100);
console.log(
  `${fmt(sync.ms, 0)} ms, ${(sync.received / 1e6).toFixed(1)} MB sent, ${sync.encodes} payload encodings (${(sync.encodedBytes / 1e6).toFixed(2)} MB encoded)`,
);
console.log(
  `ratio ${fmt(sync.encodes / sync.resources)} encodings per resource (goal <= 1.0; encoding per client would be 100)`,
);

console.log(`(${fmt((performance.now() - started) / 1000, 1)} s)`);
console.log("\n## Server memory per resource at 100k Addresses");
console.log(memoryLine);
console.log(`\ntotal ${fmt((performance.now() - started) / 1000, 1)} s`);
