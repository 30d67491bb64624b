// A single pod change must cost O(change): the reload encodes the resources that pod touches (its
// workload and its Service's endpoints), not every resource of the mesh. Counts encodings, not time.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "../src/control-plane.js";
import type { KubeObject } from "../src/manifests.js";
import type { ConfigSource } from "../src/sources/config-source.js";

const PODS = 200;
const SERVICES = 20;

function pod(p: number, ip = `127.10.1.${p + 1}`): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `pod-${p}`, namespace: "ns", labels: { app: `svc-${p % SERVICES}` } },
    spec: { nodeName: `node-${p % 4}`, serviceAccountName: "sa" },
    status: { podIP: ip },
    source: `Pod/ns/pod-${p}`,
  };
}

/** A source whose objects the test edits, keeping unchanged objects as the same objects (as informers do). */
function memorySource(objects: KubeObject[]): ConfigSource & { objects: KubeObject[] } {
  return {
    objects,
    description: "memory",
    async snapshot() {
      return { objects: [...this.objects], errors: [], accept() {} };
    },
    start() {},
    async close() {},
  };
}

describe("incremental reload", () => {
  let cp: ControlPlane | undefined;
  after(() => cp?.close());

  it("one pod change encodes its workload and its Service's endpoints only", async () => {
    const source = memorySource([
      {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name: "ns", labels: { "istio.io/dataplane-mode": "ambient" } },
        source: "Namespace/ns",
      },
      ...Array.from(
        { length: SERVICES },
        (_, s): KubeObject => ({
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: `svc-${s}`, namespace: "ns" },
          spec: { selector: { app: `svc-${s}` }, clusterIP: `127.30.0.${s + 1}`, ports: [{ port: 80 }] },
          source: `Service/ns/svc-${s}`,
        }),
      ),
      ...Array.from({ length: PODS }, (_, p) => pod(p)),
    ]);
    cp = await startControlPlane({ source, listen: "127.0.0.1:0", requireXdsToken: false });

    // Nothing changed: nothing encoded.
    const same = await cp.reload();
    assert.equal(same.encoded, 0);
    assert.equal(same.changed, 0);

    source.objects = source.objects.map((o) => (o.metadata.name === "pod-7" ? pod(7, "127.10.2.7") : o));
    const one = await cp.reload();
    // The workload (Address) and the ClusterLoadAssignment of svc-7; every other resource of the
    // 200 workloads, 20 services, 20 listeners, clusters, routes and endpoints is left as it is.
    assert.equal(one.encoded, 2);
    assert.equal(one.changed, 2);
    assert.equal(one.workloads, PODS);
    const moved = cp.config().workloads.find((w) => w.workload.name === "pod-7");
    assert.deepEqual([...(moved?.workload.addresses?.[0] ?? [])], [127, 10, 2, 7]);
    const endpoints = cp
      .envoyConfig()
      .clusterLoadAssignments.get("outbound|80||svc-7.ns.svc.cluster.local")
      ?.endpoints?.[0]?.lbEndpoints?.map((e) => e.endpoint?.address?.socketAddress?.address)
      .sort();
    assert.ok(endpoints?.includes("127.10.2.7"), String(endpoints));

    // A pod removed: its workload is deleted and its Service's endpoints re-encoded.
    source.objects = source.objects.filter((o) => o.metadata.name !== "pod-8");
    const gone = await cp.reload();
    assert.equal(gone.encoded, 1);
    assert.equal(gone.removed, 1);
  });
});
