// The server's cost of a first push to a fleet of wildcard Delta streams, before and after a change
// to the session code, in one run. "Before" is src/server-session.ts and src/shared-sections.ts as
// they were at a git commit (default: the commit before streams shared their state), copied out of
// git into node_modules/.cache and run against this tree's cache and types; "after" is this tree.
// Each round builds 100 sessions on an in-memory host (no sockets), sends each the first wildcard
// request, and frames every response as grpc-js does (one copy). It records the CPU time of the 100
// first responses, the JS heap plus ArrayBuffers held by the 100 sessions afterwards (after a forced
// GC, the framed copies released), and the CPU time of pushing one changed resource, then 600 changed
// at once, to all 100.
// With --baseline-cache, src/resource-cache.ts is taken from the commit too, and each variant has its
// own cache with the same resources (to compare the cache's own changes).
// Rounds alternate before/after; the medians and their ratios are printed.
//
//   node --expose-gc --import tsx bench/first-push.ts [--rounds 6] [--streams 100]
//        [--resources 11000] [--bytes 250] [--baseline <commit>] [--baseline-cache]
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { envoy } from "../src/gen/types.js";
import { ResourceCache } from "../src/resource-cache.js";
import type { SessionHost, XdsStreamContext } from "../src/server-session.js";
import { TypeUrl, typeRegistry } from "../src/type-registry.js";
import { baselineFiles, src } from "./baseline-files.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "6" },
    streams: { type: "string", default: "100" },
    resources: { type: "string", default: "11000" },
    bytes: { type: "string", default: "250" },
    baseline: { type: "string", default: "93d1cdb" },
    "baseline-cache": { type: "boolean", default: false },
  },
});
const rounds = Number(values.rounds);
const streamCount = Number(values.streams);
const resourceCount = Number(values.resources);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with node --expose-gc");

interface Variant {
  name: string;
  DeltaSession: new (
    host: SessionHost,
    ctx: XdsStreamContext,
    send: (bytes: Uint8Array) => void,
  ) => {
    handle(req: envoy.service.discovery.v3.DeltaDiscoveryRequest): Promise<void>;
    onChange(typeUrl: string, names: ReadonlySet<string>, aliases: ReadonlySet<string>): void;
  };
  Sections: new () => unknown;
  cache: ResourceCache;
  names: string[];
  /** Held by the variant's own cache with every Delta wrapper built, per resource (0 when shared). */
  cacheBytesPerResource: number;
}

/** The variant's session code; its own cache when its cache code differs from this tree's. */
async function load(name: string, dir: string, shared: ResourceCache | undefined): Promise<Variant> {
  const session = await import(pathToFileURL(join(dir, "server-session.ts")).href);
  const sections = await import(pathToFileURL(join(dir, "shared-sections.ts")).href);
  let cache = shared;
  let cacheBytesPerResource = 0;
  if (cache === undefined) {
    const module = await import(pathToFileURL(join(dir, "resource-cache.ts")).href);
    await collect();
    const before = heldBytes();
    cache = filled(new module.ResourceCache() as ResourceCache);
    for (const entry of cache.internalList(A)) entry.deltaBytes();
    await collect();
    cacheBytesPerResource = Math.round((heldBytes() - before) / resourceCount);
  }
  const names = cache.names(A);
  return {
    name,
    DeltaSession: session.DeltaSession,
    Sections: sections.SharedResourceSections,
    cache,
    names,
    cacheBytesPerResource,
  };
}

const A = TypeUrl.address;
function filled(cache: ResourceCache): ResourceCache {
  cache.batch(() => {
    for (let i = 0; i < resourceCount; i++) {
      const payload = new Uint8Array(Number(values.bytes)).fill(i & 255);
      payload[0] = i >> 8;
      cache.setEncoded(A, `Kubernetes//Pod/ns-${i % 10}/pod-${i}`, payload, { aliases: [`/10.${i}`] });
    }
  });
  return cache;
}

const request = deltaRequest({
  typeUrl: A,
  node: { id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local" },
});

let nonceSeq = 0;
function host(variant: Variant): SessionHost {
  return {
    cache: variant.cache,
    maxNamesPerType: 100_000,
    sections: new variant.Sections() as SessionHost["sections"],
    visible: () => true,
    visibleToAll: true,
    nextNonceSeq: () => ++nonceSeq,
    resolve: async () => {},
    onNack: () => {},
    onPush: () => {},
    debug: () => {},
  };
}

/** Collects until what is unreachable (the large response buffers included) is freed. */
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((resolve) => setImmediate(resolve));
  }
}
const heldBytes = () => {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const cpuMs = (start: NodeJS.CpuUsage) => {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
};

/** The nonce of an encoded response (field 5), found by skipping fields 1 and 2 by their lengths. */
function nonceOf(bytes: Uint8Array): string {
  let i = 0;
  const varint = () => {
    let v = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[i++] as number;
      v += (b & 127) * 2 ** shift;
      if (b < 128) return v;
    }
  };
  while (i < bytes.length) {
    const at = i;
    if (varint() >> 3 === 4) {
      const rest = typeRegistry.decode(
        "envoy.service.discovery.v3.DeltaDiscoveryResponse",
        bytes.subarray(at),
      );
      return (rest as { nonce: string }).nonce;
    }
    const length = varint();
    i += length;
  }
  throw new Error("response without a nonce");
}

function deltaRequest(init: object): envoy.service.discovery.v3.DeltaDiscoveryRequest {
  return typeRegistry.decode(
    "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    typeRegistry.encode("envoy.service.discovery.v3.DeltaDiscoveryRequest", init as never),
  ) as envoy.service.discovery.v3.DeltaDiscoveryRequest;
}

/** One round: 100 first responses, what the sessions hold then, and one change pushed to all. */
async function round(variant: Variant, change: number) {
  await collect();
  const baseHeld = heldBytes();
  const h = host(variant);
  let framed = 0;
  // The last response of each stream, kept only until its nonce is read (outside the timed parts).
  const last: (Uint8Array | undefined)[] = [];
  const sessions = Array.from({ length: streamCount }, (_, id) => {
    const context: XdsStreamContext = {
      id,
      protocol: "delta",
      peer: "bench",
      headers: {},
      node: undefined,
      identity: undefined,
      nacks: [],
      acks: new Map(),
    };
    // grpc-js frames each message into a new buffer (a 5-byte header); the copy is dropped once written.
    return new variant.DeltaSession(h, context, (bytes) => {
      const out = Buffer.allocUnsafe(bytes.length + 5);
      out.set(bytes, 5);
      framed += out.length;
      last[id] = bytes;
    });
  });
  const start = process.cpuUsage();
  for (const s of sessions) await s.handle(request);
  const firstPush = cpuMs(start);
  if (framed < streamCount * resourceCount * Number(values.bytes)) throw new Error("short responses");
  const acks = last.map((bytes) => nonceOf(bytes ?? new Uint8Array()));
  last.length = 0;
  await collect();
  const held = heldBytes() - baseHeld;
  for (const [i, s] of sessions.entries()) {
    await s.handle(deltaRequest({ typeUrl: A, responseNonce: acks[i] as string }));
  }
  const names = variant.names;
  const oneChange = await pushChange(
    variant,
    sessions,
    last,
    [names[change % names.length] as string],
    change,
  );
  // A rollout's worth at once: every stream is sent the same 600 changed resources.
  const bulk = Array.from({ length: 600 }, (_, k) => names[(change * 600 + k * 7) % names.length] as string);
  const bulkChange = await pushChange(variant, sessions, last, bulk, change);
  return { firstPush, held, oneChange, bulkChange };
}

/** ACKs every stream's last response, changes `changed` in the cache, and times the push to all. */
async function pushChange(
  { cache }: Variant,
  sessions: InstanceType<Variant["DeltaSession"]>[],
  last: (Uint8Array | undefined)[],
  changed: string[],
  change: number,
): Promise<number> {
  for (const [i, s] of sessions.entries()) {
    const bytes = last[i];
    if (bytes !== undefined) await s.handle(deltaRequest({ typeUrl: A, responseNonce: nonceOf(bytes) }));
  }
  last.length = 0;
  cache.batch(() => {
    for (const name of changed) {
      const payload = new Uint8Array(Number(values.bytes)).fill(change & 255);
      payload[1] = 0xee;
      payload[2] = (cache.entry(A, name)?.payload[2] ?? 0) + 1;
      cache.setEncoded(A, name, payload, { aliases: cache.entry(A, name)?.aliases ?? [] });
    }
  });
  const start = process.cpuUsage();
  for (const s of sessions) s.onChange(A, new Set(changed), new Set());
  const used = cpuMs(start);
  const pushed = last.filter((b) => b !== undefined && b.length >= changed.length * Number(values.bytes));
  if (pushed.length !== sessions.length) throw new Error("the change was not pushed to every stream");
  return used;
}

const ours = values["baseline-cache"] ? undefined : filled(new ResourceCache());
const variants = [
  await load(
    "before",
    baselineFiles(values.baseline, "xds-first-push", [
      "server-session",
      "shared-sections",
      ...(values["baseline-cache"] ? ["resource-cache"] : []),
    ]),
    ours,
  ),
  await load("after", src, ours),
];

type Metric = "firstPush" | "held" | "oneChange" | "bulkChange";
const metrics: Metric[] = ["firstPush", "held", "oneChange", "bulkChange"];
const results: Record<string, Record<Metric, number[]>> = {};
for (const v of variants) results[v.name] = { firstPush: [], held: [], oneChange: [], bulkChange: [] };
let change = 1;
// A warm-up round of each, not recorded.
for (const v of variants) await round(v, change++);
for (let r = 0; r < rounds; r++) {
  for (const v of r % 2 === 0 ? variants : [...variants].reverse()) {
    const out = await round(v, change++);
    for (const m of metrics) results[v.name]?.[m].push(Number(out[m].toFixed(2)));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const summary = Object.fromEntries(
  Object.entries(results).map(([name, r]) => [
    name,
    {
      firstPushCpuMs: median(r.firstPush),
      cacheBytesPerResource: variants.find((v) => v.name === name)?.cacheBytesPerResource,
      heldPerStreamKB: Number((median(r.held) / streamCount / 1024).toFixed(1)),
      oneChangeCpuMs: median(r.oneChange),
      change600CpuMs: median(r.bulkChange),
      rounds: r,
    },
  ]),
);
const ratio = (m: Metric) =>
  Number((median(results.after?.[m] ?? []) / median(results.before?.[m] ?? [])).toFixed(3));
console.log(
  JSON.stringify(
    {
      streams: streamCount,
      resources: resourceCount,
      baseline: values.baseline,
      baselineCache: values["baseline-cache"],
      loadavg: (await import("node:os")).loadavg().map((x) => Number(x.toFixed(2))),
      ratios: Object.fromEntries(metrics.map((m) => [m, ratio(m)])),
      summary,
    },
    null,
    1,
  ),
);
