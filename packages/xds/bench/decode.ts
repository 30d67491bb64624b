// Decoding resources as a client does (`typeRegistry.decode`: protobufjs decode, then the plain wire
// shape), before and after a change to the conversion, in one run. "Before" is src/type-registry.ts as
// it was at a git commit (default: the commit before the conversion was planned per type), copied out
// of git into node_modules/.cache and run against this tree's generated descriptor; "after" is this
// tree. Each round decodes one DeltaDiscoveryResponse of 11,000 Address resources (workloads and
// services shaped like the control plane's), then every resource in it, as the client does; rounds
// alternate; medians and the ratio.
//
//   node --expose-gc --import tsx bench/decode.ts [--rounds 9] [--resources 11000] [--baseline <commit>]

import { deepStrictEqual } from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { TypeUrl, typeRegistry } from "../src/type-registry.js";
import { baselineFiles } from "./baseline-files.js";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "9" },
    resources: { type: "string", default: "11000" },
    baseline: { type: "string", default: "0dd3102" },
  },
});
const rounds = Number(values.rounds);
const count = Number(values.resources);
type Registry = typeof typeRegistry;
const baseline = join(baselineFiles(values.baseline, "xds-decode", ["type-registry"]), "type-registry.ts");
const before = (await import(pathToFileURL(baseline).href)).typeRegistry as Registry;

// Encoded once with this tree; both registries decode the same bytes.
const addresses: Uint8Array[] = [];
for (let i = 0; i < count; i++) {
  const ip = new Uint8Array([10, (i >> 16) & 255, (i >> 8) & 255, i & 255]);
  const ns = `ns-${i % 10}`;
  const value =
    i % 11 === 0
      ? {
          service: {
            name: `svc-${i}`,
            namespace: ns,
            hostname: `svc-${i}.${ns}.svc.cluster.local`,
            addresses: [{ network: "", address: ip }],
            ports: [{ servicePort: 80, targetPort: 8080 }],
          },
        }
      : {
          workload: {
            uid: `cluster/Pod/${ns}/pod-${i}`,
            name: `pod-${i}`,
            namespace: ns,
            addresses: [ip],
            serviceAccount: "default",
            node: `node-${i % 100}`,
            workloadName: `app-${i % 1000}`,
            canonicalName: `app-${i % 1000}`,
            canonicalRevision: "latest",
            tunnelProtocol: "HBONE",
            services: {
              [`${ns}/svc-${i % 1000}.${ns}.svc.cluster.local`]: {
                ports: [{ servicePort: 80, targetPort: 8080 }],
              },
            },
            status: "HEALTHY",
            clusterId: "Kubernetes",
            trustDomain: "cluster.local",
          },
        };
  addresses.push(typeRegistry.encode(TypeUrl.address, value as never));
}

// One DeltaDiscoveryResponse carrying them all, as a client receives a first push.
const DELTA_RESP = "envoy.service.discovery.v3.DeltaDiscoveryResponse";
const response = typeRegistry.encode(DELTA_RESP, {
  systemVersionInfo: "v1",
  typeUrl: TypeUrl.address,
  nonce: "1",
  resources: addresses.map((value, i) => ({
    name: `r${i}`,
    version: "v1",
    resource: { typeUrl: TypeUrl.address, value },
  })),
} as never);

/** What the client does with a response: decode the envelope, then every resource in it. */
function decodeResponse(registry: Registry): unknown[] {
  const decoded = registry.decode(DELTA_RESP, response) as {
    resources: { resource: { value: Uint8Array } }[];
  };
  return decoded.resources.map((r) => registry.decode(TypeUrl.address, r.resource.value));
}

function decodeAll(registry: Registry): number {
  const start = process.cpuUsage();
  decodeResponse(registry);
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

// Both give the same plain objects.
deepStrictEqual(decodeResponse(typeRegistry), decodeResponse(before));
deepStrictEqual(typeRegistry.decode(DELTA_RESP, response), before.decode(DELTA_RESP, response));
const times = { before: [] as number[], after: [] as number[] };
const gc = (globalThis as { gc?: () => void }).gc;
for (let r = 0; r < rounds; r++) {
  for (const [label, registry] of r % 2 === 0
    ? ([
        ["before", before],
        ["after", typeRegistry],
      ] as const)
    : ([
        ["after", typeRegistry],
        ["before", before],
      ] as const)) {
    gc?.();
    times[label].push(decodeAll(registry));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const b = median(times.before);
const a = median(times.after);
console.log(
  `decode a response of ${count} Address resources and each resource, CPU ms median of ${rounds} (load ${(await import("node:os")).loadavg()[0]?.toFixed(1)}):` +
    ` before (${values.baseline}) ${b.toFixed(0)}, after ${a.toFixed(0)}, after/before ${(a / b).toFixed(2)}`,
);
