// Cost of one reload's translation at scale, without servers: the first translation of N pods and M
// Services, then one pod change with the memo (what the control plane does) and without it.
//
//   node --import tsx test/bench/translate-scale.ts [--pods 10000] [--services 1000] [--rounds 5]
//        [--no-baseline]   (skip the translations without the memo, e.g. to profile the memo path)
//
// Not a test: nothing is asserted. Results: docs/benchmarks.md.
import { parseArgs } from "node:util";
import type { KubeObject } from "../../src/manifests.js";
import { translateEnvoy } from "../../src/translate-envoy.js";
import { createTranslationMemo } from "../../src/translate-memo.js";
import { translateMesh } from "../../src/translate-mesh.js";

const { values } = parseArgs({
  options: {
    pods: { type: "string", default: "10000" },
    services: { type: "string", default: "1000" },
    rounds: { type: "string", default: "5" },
    "no-baseline": { type: "boolean", default: false },
  },
});
const pods = Number(values.pods);
const services = Number(values.services);
const ip = (base: string, i: number) => `${base}.${1 + Math.floor(i / 250)}.${(i % 250) + 1}`;
const pod = (p: number, address = ip("127.10", p)): KubeObject => {
  const s = p % services;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `pod-${p}`, namespace: `ns-${s % 10}`, labels: { app: `svc-${s}` } },
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

function time(fn: () => void): number {
  const t = performance.now();
  fn();
  return Math.round((performance.now() - t) * 10) / 10;
}

const memo = createTranslationMemo();
const result: Record<string, number[]> = { firstMs: [], onePodMemoMs: [], onePodNoMemoMs: [] };
result.firstMs?.push(time(() => translateEnvoy(objects, translateMesh(objects, {}, memo), {}, memo)));
for (let k = 0; k < Number(values.rounds); k++) {
  const changedPod = 17 + k * 101;
  objects = objects.map((o) =>
    o.kind === "Pod" && o.metadata.name === `pod-${changedPod}`
      ? pod(changedPod, ip("127.10", pods + 1000 + k))
      : o,
  );
  result.onePodMemoMs?.push(time(() => translateEnvoy(objects, translateMesh(objects, {}, memo), {}, memo)));
  if (!values["no-baseline"]) {
    result.onePodNoMemoMs?.push(time(() => translateEnvoy(objects, translateMesh(objects, {}), {})));
  }
}
console.log(JSON.stringify({ pods, services, ...result, counts: memo.counts }, null, 2));
