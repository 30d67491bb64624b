// What a new connection to a Service VIP costs the ztunnel's workload store (`resolve`: the Service
// by VIP, then an endpoint round robin), in a mesh of 10,000 pods against one of 100 pods, measured
// in the same process, with the connections going to the same ten Services of 10 pods in both.
// Every ztunnel holds every pod of the mesh, so this lookup must cost what the Service's own
// endpoints cost, not what the mesh does. Run: `pnpm bench` in examples/ztunnel.
import type { Service, Workload } from "@ambient/xds";
import { WorkloadStore } from "../src/workload-store.js";

const PODS_PER_SERVICE = 10;
const CALLS = 20_000;
const ROUNDS = 5;

function ipBytes(a: number, n: number): Uint8Array {
  return Uint8Array.from([10, a, (n >> 8) & 255, n & 255]);
}

/** A store with `pods` pods, `PODS_PER_SERVICE` behind each Service. */
function meshOf(pods: number): WorkloadStore {
  const store = new WorkloadStore();
  const services = pods / PODS_PER_SERVICE;
  for (let i = 0; i < services; i++) {
    const hostname = `svc-${i}.ns-${i}.svc.cluster.local`;
    const service = {
      name: `svc-${i}`,
      namespace: `ns-${i}`,
      hostname,
      addresses: [{ network: "", address: ipBytes(96, i) }],
      ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }],
      subjectAltNames: [],
    } as unknown as Service;
    store.upsert(`ns-${i}/${hostname}`, { service });
  }
  for (let p = 0; p < pods; p++) {
    const s = p % services;
    const uid = `Kubernetes//Pod/ns-${s}/app-${p}`;
    const workload = {
      uid,
      name: `app-${p}`,
      namespace: `ns-${s}`,
      addresses: [ipBytes(1, p)],
      hostname: "",
      status: "HEALTHY",
      networkMode: "STANDARD",
      services: {
        [`ns-${s}/svc-${s}.ns-${s}.svc.cluster.local`]: { ports: [{ servicePort: 80, targetPort: 8080 }] },
      },
    } as unknown as Workload;
    store.upsert(uid, { workload });
  }
  return store;
}

/** Microseconds per `resolve` of a VIP, over `CALLS` calls spread across the first `services`. */
function perCall(store: WorkloadStore, services: number): number {
  const vips = Array.from({ length: services }, (_, i) => `10.96.${(i >> 8) & 255}.${i & 255}`);
  const start = process.hrtime.bigint();
  for (let k = 0; k < CALLS; k++) {
    const destination = store.resolve(vips[(k * 7919) % services] as string, 80);
    if (destination.kind !== "service") throw new Error(`no endpoint: ${destination.kind}`);
  }
  return Number(process.hrtime.bigint() - start) / 1000 / CALLS;
}

const small = meshOf(100);
const large = meshOf(10_000);
// One unrecorded round, so both meshes run compiled code.
perCall(small, 10);
perCall(large, 10);
const ratios: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const base = perCall(small, 10);
  const big = perCall(large, 10);
  ratios.push(big / base);
  console.log(
    `round ${round + 1}: ${big.toFixed(2)} us per connection at 10,000 pods, ${base.toFixed(2)} us at 100 pods: ${(big / base).toFixed(2)}x`,
  );
}
ratios.sort((a, b) => a - b);
const median = ratios[Math.floor(ratios.length / 2)] as number;
console.log(
  `endpoint lookup, 10,000 pods vs 100 pods (median of ${ROUNDS}): ${median.toFixed(2)}x (goal <= 2)`,
);
