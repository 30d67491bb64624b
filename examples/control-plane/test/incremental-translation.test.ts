// A reload translated from a change set must serve exactly what a translation of every object serves.
// Random edits (fixed seeds, bounded counts) are applied one change set at a time; after each, the
// result is compared with a from-scratch translation of the same objects, and at the end the xDS a
// control plane serves is compared with that of a control plane started on the final objects.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { TypeUrl } from "@ambient/xds";
import { type ControlPlane, startControlPlane } from "../src/control-plane.js";
import { IncrementalTranslation } from "../src/incremental-translation.js";
import type { KubeObject, MeshIssue } from "../src/manifests.js";
import { carryOnDemandIndex, onDemandIndex } from "../src/on-demand.js";
import type { ConfigSource, ObjectChange } from "../src/sources/config-source.js";
import { type EnvoyConfig, translateEnvoy } from "../src/translate-envoy.js";
import { createTranslationMemo } from "../src/translate-memo.js";
import { type MeshConfig, translateMesh } from "../src/translate-mesh.js";
import { RandomMesh, seededRandom } from "./random-mesh.js";
import { servedBy, XDS_TYPES } from "./served-xds.js";

function sortedIssues(issues: readonly MeshIssue[]): MeshIssue[] {
  return [...issues].sort((a, b) =>
    a.source === b.source ? (a.message < b.message ? -1 : 1) : a.source < b.source ? -1 : 1,
  );
}

/** Equal as served: every resource, in order; issues as a set (a change set appends its pods' issues). */
function assertSameConfig(
  mesh: MeshConfig,
  envoy: EnvoyConfig,
  expectedMesh: MeshConfig,
  expectedEnvoy: EnvoyConfig,
  step: string,
): void {
  assert.deepEqual(mesh.workloads, expectedMesh.workloads, `${step}: workloads`);
  assert.deepEqual(mesh.services, expectedMesh.services, `${step}: services`);
  assert.deepEqual([...mesh.authorizations], [...expectedMesh.authorizations], `${step}: authorizations`);
  assert.deepEqual([...mesh.nodes], [...expectedMesh.nodes], `${step}: nodes`);
  assert.deepEqual(sortedIssues(mesh.issues), sortedIssues(expectedMesh.issues), `${step}: issues`);
  for (const key of ["listeners", "routeConfigurations", "clusters", "clusterLoadAssignments"] as const) {
    assert.deepEqual([...envoy[key]], [...expectedEnvoy[key]], `${step}: ${key}`);
  }
  assert.deepEqual(envoy.issues, expectedEnvoy.issues, `${step}: envoy issues`);
}

describe("reloads translated from change sets", () => {
  for (const seed of [1, 2, 7]) {
    it(`equal a translation of every object after 250 random change sets (seed ${seed})`, () => {
      const mesh = new RandomMesh(seededRandom(seed), 40);
      const memo = createTranslationMemo();
      const incremental = new IncrementalTranslation();
      let current = translateMesh(mesh.objects, {}, memo);
      let currentEnvoy = translateEnvoy(mesh.objects, current, {}, memo);
      incremental.reset(mesh.objects, current, currentEnvoy, memo);
      let applied = 0;
      let podOnly = 0;
      for (let step = 0; step < 250; step++) {
        const changes = mesh.edits(0.08);
        if (changes.every((c) => c.kind === "Pod")) podOnly++;
        const result = incremental.applyPodChanges(changes);
        if (result !== undefined) {
          applied++;
          carryOnDemandIndex(current, result.mesh, result.replaced, result.written);
          current = result.mesh;
          currentEnvoy = result.envoy;
        } else {
          current = translateMesh(mesh.objects, {}, memo);
          currentEnvoy = translateEnvoy(mesh.objects, current, {}, memo);
          incremental.reset(mesh.objects, current, currentEnvoy, memo);
        }
        const expected = translateMesh(mesh.objects, {});
        const expectedEnvoy = translateEnvoy(mesh.objects, expected, {});
        assertSameConfig(current, currentEnvoy, expected, expectedEnvoy, `seed ${seed} step ${step}`);
        // The on-demand index: carried over from the last one by a change set, built anew otherwise.
        const index = onDemandIndex(current);
        const fresh = onDemandIndex({ workloads: [...expected.workloads] });
        for (const key of ["workloadsOfService", "servicesOfWorkload", "workloadsOnNode"] as const) {
          assert.deepEqual(
            [...index[key]].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
            [...fresh[key]].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
            `seed ${seed} step ${step}: ${key}`,
          );
        }
      }
      // The comparison means something only if most Pod change sets took the change-set path.
      assert.ok(applied > podOnly / 2, `${applied} of ${podOnly} Pod-only change sets applied alone`);
    });
  }

  /** A small random mesh translated with a memo, the index reset to it, and a move of a served pod. */
  function servedPodMove(seed: number) {
    const mesh = new RandomMesh(seededRandom(seed), 10);
    const memo = createTranslationMemo();
    const incremental = new IncrementalTranslation();
    const first = translateMesh(mesh.objects, {}, memo);
    incremental.reset(mesh.objects, first, translateEnvoy(mesh.objects, first, {}, memo), memo);
    const name = first.workloads.find((w) => w.key.startsWith("uid-"))?.workload.name;
    const pod = mesh.objects.find((o) => o.kind === "Pod" && o.metadata.name === name) as KubeObject;
    const change: ObjectChange = {
      id: `Pod/${pod.metadata.namespace}/${pod.metadata.name}`,
      kind: "Pod",
      before: pod,
      after: { ...pod, status: { podIP: "127.10.3.3" } },
    };
    return { mesh, memo, incremental, pod, change };
  }

  it("declines a change set that does not start from the translation it holds", () => {
    const { incremental, pod, change } = servedPodMove(9);
    assert.equal(incremental.applyPodChanges([{ ...change, before: { ...pod } }]), undefined);
    assert.ok(incremental.applyPodChanges([change]) !== undefined);
  });

  it("declines after the memo moved on to another full translation, until reset", () => {
    const { mesh, memo, incremental, pod, change } = servedPodMove(11);
    // A full translation the index was not reset to (it failed to be served, say).
    const other = translateMesh(mesh.objects, {}, memo);
    assert.equal(incremental.applyPodChanges([change]), undefined);
    incremental.reset(mesh.objects, other, translateEnvoy(mesh.objects, other, {}, memo), memo);
    const applied = incremental.applyPodChanges([change]);
    assert.ok(applied !== undefined);
    const edited = mesh.objects.map((o) => (o === pod ? (change.after as KubeObject) : o));
    assert.deepEqual(applied.mesh.workloads, translateMesh(edited, {}).workloads);
  });
});

/** A source over a RandomMesh that reports each edit as a change set, as the Kubernetes source does. */
function randomSource(mesh: RandomMesh): ConfigSource & { pending: ObjectChange[] } {
  return {
    pending: [],
    description: "random",
    async snapshot() {
      const changes = this.pending;
      const objects = [...mesh.objects];
      return {
        objects,
        changes,
        errors: [],
        accept: () => {
          if (this.pending === changes) this.pending = [];
        },
      };
    },
    start() {},
    async close() {},
  };
}

describe("control plane reloads from change sets", () => {
  const planes: ControlPlane[] = [];
  after(async () => {
    for (const cp of planes) await cp.close();
  });

  it("serves the same xDS as a control plane started on the final objects", async () => {
    const mesh = new RandomMesh(seededRandom(42), 40);
    const source = randomSource(mesh);
    const options = { listen: "127.0.0.1:0", plaintextListen: "127.0.0.1:0", requireXdsToken: false };
    const cp = await startControlPlane({ source, ...options });
    planes.push(cp);
    const translated = { all: 0, changes: 0 };
    for (let step = 0; step < 120; step++) {
      // Sometimes two edits wait for one reload: one change per object, from the first before to the last after.
      const byId = new Map(source.pending.map((c) => [c.id, c] as const));
      for (const c of mesh.edits(0.05)) {
        const first = byId.get(c.id);
        byId.set(c.id, { ...c, before: first === undefined ? c.before : first.before });
      }
      source.pending = [...byId.values()].filter((c) => c.before !== c.after);
      if (step % 7 === 3) continue;
      const result = await cp.reload();
      translated[result.translated]++;
    }
    await cp.reload();
    assert.ok(translated.changes > 60, JSON.stringify(translated));

    const fresh = await startControlPlane({ source: randomSource(mesh), ...options });
    planes.push(fresh);
    const expectedMesh = fresh.config();
    assertSameConfig(cp.config(), cp.envoyConfig(), expectedMesh, fresh.envoyConfig(), "final");
    const [got, want] = await Promise.all([servedBy(cp), servedBy(fresh)]);
    for (const t of XDS_TYPES) {
      // The random meshes have no policies for waypoints.
      if (t !== TypeUrl.waypointPolicy) assert.ok(Object.keys(want[t] ?? {}).length > 0, `${t} is not empty`);
      assert.deepEqual(got[t], want[t], t);
    }
  });
});
