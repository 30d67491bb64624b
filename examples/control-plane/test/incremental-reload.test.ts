// A single pod change must cost O(change): the reload encodes the resources that pod touches (its
// workload and its Service's endpoints), not every resource of the mesh. Counts encodings, not time.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "../src/control-plane.js";
import type { KubeObject } from "../src/manifests.js";
import type { ConfigSource, ObjectChange } from "../src/sources/config-source.js";

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

const idOf = (o: KubeObject) => `${o.kind}/${o.metadata.namespace ?? "default"}/${o.metadata.name}`;

/**
 * A source whose objects the test edits, keeping unchanged objects as the same objects (as informers
 * do), and reporting what changed since the accepted snapshot when `changes` is on.
 */
function memorySource(objects: KubeObject[], changes = true): ConfigSource & { objects: KubeObject[] } {
  let accepted: Map<string, KubeObject> | undefined;
  return {
    objects,
    description: "memory",
    async snapshot() {
      const now = new Map(this.objects.map((o) => [idOf(o), o] as const));
      const diff: ObjectChange[] = [];
      for (const [id, after] of now) {
        if (accepted?.get(id) !== after)
          diff.push({ id, kind: after.kind, before: accepted?.get(id), after });
      }
      for (const [id, before] of accepted ?? []) {
        if (!now.has(id)) diff.push({ id, kind: before.kind, before, after: undefined });
      }
      return {
        objects: [...this.objects],
        ...(changes && accepted !== undefined ? { changes: diff } : {}),
        errors: [],
        accept: () => {
          accepted = now;
        },
      };
    },
    start() {},
    async close() {},
  };
}

describe("incremental reload", () => {
  const planes: ControlPlane[] = [];
  after(async () => {
    for (const cp of planes) await cp.close();
  });

  for (const changes of [true, false]) {
    const how = changes ? "from the source's change set" : "translating every object with the memo";
    it(`one pod change encodes its workload and its Service's endpoints only (${how})`, async () => {
      const source = memorySource(
        [
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
        ],
        changes,
      );
      const cp = await startControlPlane({ source, listen: "127.0.0.1:0", requireXdsToken: false });
      planes.push(cp);
      const translated = changes ? "changes" : "all";

      // Nothing changed: nothing encoded.
      const same = await cp.reload();
      assert.equal(same.encoded, 0);
      assert.equal(same.changed, 0);
      assert.equal(same.translated, translated);

      source.objects = source.objects.map((o) => (o.metadata.name === "pod-7" ? pod(7, "127.10.2.7") : o));
      const one = await cp.reload();
      // The workload (Address) and the ClusterLoadAssignment of svc-7; every other resource of the
      // 200 workloads, 20 services, 20 listeners, clusters, routes and endpoints is left as it is.
      assert.equal(one.encoded, 2);
      assert.equal(one.changed, 2);
      assert.equal(one.workloads, PODS);
      assert.equal(one.translated, translated);
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
      assert.equal(gone.translated, translated);

      // A Service change is translated with every object: its pods again (a workload lists its
      // Services' ports), and only the resources it touches are encoded and changed.
      source.objects = source.objects.map((o) =>
        o.metadata.name === "svc-3" ? { ...o, spec: { ...o.spec, ports: [{ port: 81 }] } } : o,
      );
      const service = await cp.reload();
      assert.equal(service.translated, "all");
      assert.ok(service.changed > 0 && service.changed < 30, String(service.changed));
      // svc-3 and its 10 pods, the new port's listener, cluster and endpoints, and the 20 route
      // configurations (they read every Service); not the other 190 pods.
      assert.ok(service.encoded < 40, String(service.encoded));
    });
  }

  it("applies a folder edit that changes only pods from the folder's diff", async () => {
    const dir = await mkdtemp(join(tmpdir(), "incremental-folder-"));
    try {
      const yaml = (objects: KubeObject[]) =>
        objects.map(({ source: _source, ...o }) => JSON.stringify(o)).join("\n---\n");
      const services = Array.from(
        { length: 3 },
        (_, s): KubeObject => ({
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: `svc-${s}`, namespace: "ns" },
          spec: { selector: { app: `svc-${s}` }, clusterIP: `127.30.0.${s + 1}`, ports: [{ port: 80 }] },
          source: "",
        }),
      );
      await writeFile(join(dir, "services.yaml"), yaml(services));
      await writeFile(join(dir, "pods.yaml"), yaml([pod(0), pod(1), pod(2)]));
      const cp = await startControlPlane({
        meshDir: dir,
        listen: "127.0.0.1:0",
        requireXdsToken: false,
        watch: false,
      });
      planes.push(cp);
      await writeFile(join(dir, "pods.yaml"), yaml([pod(0), pod(1, "127.10.5.5")]));
      const edit = await cp.reload();
      assert.equal(edit.translated, "changes");
      assert.deepEqual(
        cp.config().workloads.map((w) => [w.workload.name, [...(w.workload.addresses?.[0] ?? [])].join(".")]),
        [
          ["pod-0", "127.10.1.1"],
          ["pod-1", "127.10.5.5"],
        ],
      );
      await writeFile(join(dir, "services.yaml"), yaml(services.slice(0, 2)));
      assert.equal((await cp.reload()).translated, "all");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
