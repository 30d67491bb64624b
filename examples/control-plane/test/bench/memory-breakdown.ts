// What each pod costs the control plane, structure by structure, without servers: the JS heap and
// ArrayBuffer bytes (after a forced GC) added by each stage of holding N pods and M Services, divided
// by N. Pods come as JSON text parsed the way an informer list does, either minimal (the scale bench's
// shape) or shaped like a real cluster's (managedFields, container images, env, probes, volumes,
// container statuses).
//
//   node --expose-gc --import tsx test/bench/memory-breakdown.ts [--pods 10000] [--services 1000]
//        [--realistic] [--no-transform]
//
// Not a test: nothing is asserted. Results: docs/benchmarks.md.
import { parseArgs } from "node:util";
import { ResourceCache, TypeUrl } from "@ambient/xds";
import { IncrementalTranslation } from "../../src/incremental-translation.js";
import type { KubeObject } from "../../src/manifests.js";
import { InternTable, transformForCache } from "../../src/sources/informer-transform.js";
import type { KubeResource, RawKubeObject } from "../../src/sources/kube-client.js";
import { kubeObjectFromApi, MESH_RESOURCES, podForCache } from "../../src/sources/kubernetes-source.js";
import { translateEnvoy } from "../../src/translate-envoy.js";
import { createTranslationMemo } from "../../src/translate-memo.js";
import { translateMesh } from "../../src/translate-mesh.js";
import { benchPod } from "./pod-shapes.js";

const { values } = parseArgs({
  options: {
    pods: { type: "string", default: "10000" },
    services: { type: "string", default: "1000" },
    realistic: { type: "boolean", default: false },
    "no-transform": { type: "boolean", default: false },
  },
});
const pods = Number(values.pods);
const services = Number(values.services);
const ip = (base: string, i: number) => `${base}.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --expose-gc");

function used(): number {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const resourceOf = (kind: string): KubeResource =>
  MESH_RESOURCES.find((r) => r.kind === kind) as KubeResource;
const report: Record<string, number> = {};
let last = used();
const stage = (name: string) => {
  const now = used();
  report[name] = Math.round((now - last) / pods);
  last = now;
};

// Services and namespaces first: what follows is per pod.
const fixed: RawKubeObject[] = [];
for (let n = 0; n < 10; n++)
  fixed.push({ metadata: { name: `ns-${n}`, labels: { "istio.io/dataplane-mode": "ambient" } } });
for (let s = 0; s < services; s++) {
  fixed.push({
    metadata: { name: `svc-${s}`, namespace: `ns-${s % 10}`, uid: `svc-uid-${s}`, resourceVersion: "1" },
    spec: {
      selector: { app: `svc-${s}` },
      clusterIP: ip("127.30", s),
      ports: [{ name: "http", port: 80, targetPort: 8080 }],
    },
  });
}
const fixedObjects = fixed.map(
  (raw, i) => kubeObjectFromApi(resourceOf(i < 10 ? "Namespace" : "Service"), raw) as KubeObject,
);
last = used();

// 1. The informer's objects, parsed from a list's JSON text page by page (as the API answers).
let text = JSON.stringify(Array.from({ length: pods }, (_, p) => benchPod(p, services, values.realistic)));
const jsonBytesPerPod = Math.round(Buffer.byteLength(text) / pods);
let raws: RawKubeObject[] = JSON.parse(text) as RawKubeObject[];
text = "";
const informer = new Map<string, RawKubeObject>();
for (const r of raws) informer.set(`${r.metadata?.namespace}/${r.metadata?.name}`, r);
raws = [];
stage("informer objects (as sent)");
if (!values["no-transform"]) {
  const table = new InternTable();
  for (const r of informer.values()) transformForCache("Pod", r, table);
  stage("informer transform (negative: bytes freed)");
}
// 2. The objects the translation reads: the cache keeps each Pod in that form (`podForCache`), in
// place of the object as parsed.
const podObjects: KubeObject[] = [];
for (const [key, r] of informer) {
  const o = podForCache(r);
  informer.set(key, o);
  podObjects.push(o as unknown as KubeObject);
}
stage("converted objects (the cache's Pods)");
// 3. The translations with the memo, as the control plane keeps them.
const objects = [...fixedObjects, ...podObjects];
const memo = createTranslationMemo();
const mesh = translateMesh(objects, {}, memo);
stage("mesh translation + memo");
const envoy = translateEnvoy(objects, mesh, {}, memo);
stage("envoy translation + memo");
// What a reload from a change set reads: pods by id, address claims, pods per node and per Service.
const incremental = new IncrementalTranslation();
incremental.reset(objects, mesh, envoy, memo);
stage("change-set index");
// 4. The xDS cache: every resource encoded once.
const cache = new ResourceCache();
cache.batch(() => {
  for (const w of mesh.workloads)
    cache.set(TypeUrl.address, w.key, { workload: w.workload }, { aliases: w.aliases });
  for (const s of mesh.services)
    cache.set(TypeUrl.address, s.key, { service: s.service }, { aliases: s.aliases });
  for (const [k, v] of envoy.clusterLoadAssignments) cache.set(TypeUrl.clusterLoadAssignment, k, v);
  for (const [k, v] of envoy.clusters) cache.set(TypeUrl.cluster, k, v);
  for (const [k, v] of envoy.listeners) cache.set(TypeUrl.listener, k, v);
});
stage("xds cache (encoded)");
// 5. The Delta wrappers built on the first push to a Delta client.
for (const name of cache.names(TypeUrl.address)) {
  (cache.entry(TypeUrl.address, name) as unknown as { deltaBytes(): Uint8Array }).deltaBytes();
}
stage("delta wrappers (first push)");
const payload = [...cache.names(TypeUrl.address)]
  .filter((n) => !n.includes("/"))
  .reduce((sum, n) => sum + (cache.entry(TypeUrl.address, n)?.payload.length ?? 0), 0);
console.log(
  JSON.stringify(
    {
      pods,
      services,
      shape: values.realistic ? "realistic" : "minimal",
      transform: !values["no-transform"],
      jsonBytesPerPod,
      encodedWorkloadBytesPerPod: Math.round(payload / pods),
      bytesPerPod: report,
      totalBytesPerPod: Object.values(report).reduce((a, b) => a + b, 0),
      keep: [
        informer.size,
        podObjects.length,
        memo,
        incremental,
        envoy.clusters.size,
        cache.names(TypeUrl.address).length > 0,
      ],
    },
    (k, v) => (k === "keep" ? undefined : v),
    2,
  ),
);
