// Cost of one reload at scale, without clients: the first translation of N pods and M Services, then
// one pod change at a time, measured three ways in the same process and interleaved (the order
// alternates every round):
//   - changeSet: the change set applied to the last translation (IncrementalTranslation), what the
//     control plane does for a source that reports its changes (the Kubernetes and folder sources);
//   - memo: every object translated again, with the memo (the control plane before change sets, and
//     with `incrementalReload: false`);
//   - noMemo: every object translated from scratch (skipped with --no-baseline).
// Then the same for a whole reload (snapshot, translation and the xDS cache writes) of two control
// planes in this process fed by one in-memory source that reports change sets: one with
// `incrementalReload: false` (skipped with --no-reload).
//
//   node --expose-gc --import tsx test/bench/translate-scale.ts [--pods 10000] [--services 1000]
//        [--rounds 10] [--no-baseline] [--no-reload]
//
// Every round also checks that the change-set path gave the same workloads and load assignments as the
// memo path. Times are CPU (user + system) of this process per change; the machine's load average is
// printed with them. Not a test. Results: docs/benchmarks.md.
import os from "node:os";
import { isDeepStrictEqual, parseArgs } from "node:util";
import { startControlPlane } from "../../src/control-plane.js";
import { IncrementalTranslation } from "../../src/incremental-translation.js";
import type { KubeObject } from "../../src/manifests.js";
import type { ConfigSource, ObjectChange } from "../../src/sources/config-source.js";
import { type EnvoyConfig, translateEnvoy } from "../../src/translate-envoy.js";
import { createTranslationMemo } from "../../src/translate-memo.js";
import { type MeshConfig, translateMesh } from "../../src/translate-mesh.js";

const { values } = parseArgs({
  options: {
    pods: { type: "string", default: "10000" },
    services: { type: "string", default: "1000" },
    rounds: { type: "string", default: "10" },
    "no-baseline": { type: "boolean", default: false },
    "no-reload": { type: "boolean", default: false },
  },
});
const pods = Number(values.pods);
const services = Number(values.services);
const rounds = Number(values.rounds);
const ip = (base: string, i: number) => `${base}.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
const pod = (p: number, address = ip("127.10", p)): KubeObject => {
  const s = p % services;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `pod-${p}`, namespace: `ns-${s % 10}`, uid: `uid-${p}`, labels: { app: `svc-${s}` } },
    spec: {
      nodeName: `node-${p % 100}`,
      serviceAccountName: `sa-${s}`,
      containers: [{ ports: [{ containerPort: 8080 }] }],
    },
    status: { phase: "Running", podIP: address },
    source: `Pod/ns-${s % 10}/pod-${p}`,
  };
};
let objects: KubeObject[] = [
  ...Array.from(
    { length: 10 },
    (_, n): KubeObject => ({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: `ns-${n}`, labels: { "istio.io/dataplane-mode": "ambient" } },
      source: `Namespace/ns-${n}`,
    }),
  ),
  ...Array.from(
    { length: services },
    (_, s): KubeObject => ({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: `svc-${s}`, namespace: `ns-${s % 10}` },
      spec: {
        selector: { app: `svc-${s}` },
        clusterIP: ip("127.30", s),
        ports: [{ name: "http", port: 80, targetPort: 8080 }],
      },
      source: `Service/ns-${s % 10}/svc-${s}`,
    }),
  ),
  ...Array.from({ length: pods }, (_, p) => pod(p)),
];

/** CPU milliseconds (user + system) `fn` took. */
function cpu(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return Math.round((used.user + used.system) / 100) / 10;
}

async function cpuAsync(fn: () => Promise<unknown>): Promise<number> {
  const start = process.cpuUsage();
  await fn();
  const used = process.cpuUsage(start);
  return Math.round((used.user + used.system) / 100) / 10;
}

const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] ?? 0;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

/** Moves pod `p` to a new IP in `objects`: the change set of that edit. */
function movePod(p: number, round: number): ObjectChange[] {
  const at = objects.findIndex((o) => o.kind === "Pod" && o.metadata.name === `pod-${p}`);
  const before = objects[at] as KubeObject;
  const after = pod(p, ip("127.10", pods + 1000 + round));
  objects = objects.slice();
  objects[at] = after;
  return [{ id: `Pod/${before.metadata.namespace}/${before.metadata.name}`, kind: "Pod", before, after }];
}

const loadBefore = os.loadavg()[0] ?? 0;
const memoFull = createTranslationMemo();
const memoChanges = createTranslationMemo();
const incremental = new IncrementalTranslation();
const result: Record<string, number[]> = { changeSet: [], memo: [], noMemo: [] };
let viaMemo: { mesh: MeshConfig; envoy: EnvoyConfig } | undefined;
const firstMs = cpu(() => {
  const mesh = translateMesh(objects, {}, memoFull);
  viaMemo = { mesh, envoy: translateEnvoy(objects, mesh, {}, memoFull) };
});
const base = translateMesh(objects, {}, memoChanges);
incremental.reset(objects, base, translateEnvoy(objects, base, {}, memoChanges), memoChanges);
let agree = true;
for (let k = 0; k < rounds; k++) {
  const changes = movePod(17 + k * 101, k);
  gc();
  let applied: ReturnType<IncrementalTranslation["applyPodChanges"]>;
  const runs: [string, () => void][] = [
    [
      "changeSet",
      () => {
        applied = incremental.applyPodChanges(changes);
      },
    ],
    [
      "memo",
      () => {
        const mesh = translateMesh(objects, {}, memoFull);
        viaMemo = { mesh, envoy: translateEnvoy(objects, mesh, {}, memoFull) };
      },
    ],
  ];
  if (k % 2 === 1) runs.reverse();
  for (const [name, fn] of runs) result[name]?.push(cpu(fn));
  if (applied === undefined) throw new Error("the change set was not applied alone");
  agree &&=
    viaMemo !== undefined &&
    isDeepStrictEqual(applied.mesh.workloads, viaMemo.mesh.workloads) &&
    isDeepStrictEqual([...applied.envoy.clusterLoadAssignments], [...viaMemo.envoy.clusterLoadAssignments]);
  if (!values["no-baseline"]) {
    result.noMemo?.push(cpu(() => translateEnvoy(objects, translateMesh(objects, {}), {})));
  }
}

// Whole reloads: a source that reports each edit as a change set, read by two control planes.
const reload: Record<string, number[]> = { changeSet: [], everyObject: [] };
const translatedBy: string[] = [];
if (!values["no-reload"]) {
  const accepted = new Map<string, ObjectChange[]>();
  const sourceFor = (name: string): ConfigSource & { pending: ObjectChange[] } => ({
    pending: [],
    description: `memory ${name}`,
    async snapshot() {
      const changes = this.pending;
      const now = objects;
      return {
        get objects() {
          return now;
        },
        ...(accepted.has(name) ? { changes } : {}),
        errors: [],
        accept: () => {
          accepted.set(name, changes);
          if (this.pending === changes) this.pending = [];
        },
      };
    },
    start() {},
    async close() {},
  });
  const sources = { changeSet: sourceFor("changeSet"), everyObject: sourceFor("everyObject") };
  const options = { listen: "127.0.0.1:0", requireXdsToken: false };
  const planes = {
    changeSet: await startControlPlane({ source: sources.changeSet, ...options }),
    everyObject: await startControlPlane({
      source: sources.everyObject,
      incrementalReload: false,
      ...options,
    }),
  };
  for (let k = 0; k < rounds; k++) {
    const changes = movePod(23 + k * 97, rounds + k);
    sources.changeSet.pending = changes;
    sources.everyObject.pending = changes;
    gc();
    const order =
      k % 2 === 0 ? (["changeSet", "everyObject"] as const) : (["everyObject", "changeSet"] as const);
    for (const name of order) {
      let translated = "";
      reload[name]?.push(
        await cpuAsync(async () => {
          translated = (await planes[name].reload()).translated;
        }),
      );
      if (name === "changeSet") translatedBy.push(translated);
    }
  }
  agree &&= isDeepStrictEqual(planes.changeSet.config().workloads, planes.everyObject.config().workloads);
  await Promise.all([planes.changeSet.close(), planes.everyObject.close()]);
}

console.log(
  JSON.stringify(
    {
      pods,
      services,
      rounds,
      firstTranslationCpuMs: firstMs,
      translationCpuMsPerChange: result,
      translationMedians: Object.fromEntries(Object.entries(result).map(([k, v]) => [k, median(v)])),
      reloadCpuMsPerChange: reload,
      reloadMedians: Object.fromEntries(Object.entries(reload).map(([k, v]) => [k, median(v)])),
      changeSetReloadsTranslated: translatedBy,
      changeSetAgreesWithEveryObject: agree,
      counts: { memo: memoFull.counts, changeSet: memoChanges.counts },
      loadAverage: [loadBefore, os.loadavg()[0] ?? 0].map((l) => Math.round(l * 10) / 10),
    },
    null,
    2,
  ),
);
