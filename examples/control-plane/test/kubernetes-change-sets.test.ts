// The Kubernetes source's change sets under random edits: a control plane that follows the edits
// through its informers (reloads from change sets) must end up serving what a control plane started
// on the final objects serves (every object translated once). Fixed seed, bounded edits.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { type ControlPlane, startControlPlane } from "../src/control-plane.js";
import type { KubeObject } from "../src/manifests.js";
import {
  createKubernetesSource,
  type KubernetesSource,
  MESH_RESOURCES,
} from "../src/sources/kubernetes-source.js";
import { createFakeApiServer, type FakeApiServer, type KubeJson } from "./fake-apiserver/fake-apiserver.js";
import { ENTRY_ADDRESSES, RandomMesh, seededRandom } from "./random-mesh.js";
import { servedBy, XDS_TYPES } from "./served-xds.js";

function json(o: KubeObject): KubeJson {
  const { source: _source, ...rest } = o;
  return rest as unknown as KubeJson;
}

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("kubernetes source change sets under random edits", { timeout: 90_000 }, () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  let translatedAll = 0;
  const counting = {
    debug() {},
    warn() {},
    error() {},
    info(obj: object, msg?: string) {
      if (msg === "mesh configuration loaded" && (obj as { translated?: string }).translated === "all") {
        translatedAll++;
      }
    },
  };

  async function watching(server: FakeApiServer): Promise<KubernetesSource> {
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    const source = await createKubernetesSource({ kubeConfig: kc });
    cleanups.push(() => source.close());
    return source;
  }

  /** Every cached object of every watched kind, by id, with its resourceVersion. */
  function cacheOf(source: KubernetesSource): Map<string, string | undefined> {
    const cache = new Map<string, string | undefined>();
    for (const { kind } of MESH_RESOURCES) {
      for (const o of source.objects(kind)) {
        cache.set(`${kind}/${o.metadata?.namespace ?? ""}/${o.metadata?.name}`, o.metadata?.resourceVersion);
      }
    }
    return cache;
  }

  async function plane(
    server: FakeApiServer,
    logger?: typeof counting,
  ): Promise<{ cp: ControlPlane; source: KubernetesSource }> {
    const source = await watching(server);
    const cp = await startControlPlane({
      source,
      listen: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      requireXdsToken: false,
      xdsDebounceMs: 5,
      ...(logger === undefined ? {} : { logger }),
    });
    cleanups.push(() => cp.close());
    return { cp, source };
  }

  it("serve what a control plane started on the final objects serves", async () => {
    const server = await createFakeApiServer({ bookmarkIntervalMs: 200 });
    cleanups.push(() => server.close());
    const random = seededRandom(7);
    const mesh = new RandomMesh(random, 30);
    for (const o of mesh.objects) server.apply(json(o));
    const { cp: following, source: followingSource } = await plane(server, counting);
    const reloads = { all: 0, changes: 0 };
    const original = following.reload;
    let invalid = 0;
    for (let step = 0; step < 60; step++) {
      // The last steps change only pods: nothing translates every object after them.
      for (const change of mesh.edits(step < 40 ? 0.1 : 0)) {
        if (change.after === undefined) {
          const b = change.before as KubeObject;
          server.remove(b.apiVersion ?? "v1", b.kind, b.metadata.name, b.metadata.namespace);
        } else {
          server.apply(json(change.after));
        }
      }
      // Now and then a pod update that does not validate (its last good version stays served for a
      // few steps), then a valid one.
      const pod = mesh.objects.find((o) => o.kind === "Pod");
      if (pod !== undefined && step % 13 === 3) {
        server.apply(json({ ...pod, spec: { ...pod.spec, nodeName: 7 } }));
        invalid++;
      }
      if (pod !== undefined && step % 13 === 6) server.apply(json(pod));
      // Some edits land in one reload, some in several.
      if (random() < 0.5) await new Promise((r) => setTimeout(r, 15));
      else {
        const result = await original();
        reloads[result.translated]++;
      }
    }
    assert.ok(invalid > 0);
    // The following control plane takes in every earlier edit first: its caches hold what a new
    // list returns (same objects, same resourceVersions), then a reload queued after the one those
    // events started has run.
    const listed = cacheOf(await watching(server));
    await until("the following caches to hold every earlier edit", () =>
      isDeepStrictEqual(cacheOf(followingSource), listed),
    );
    await new Promise((r) => setImmediate(r));
    await original();
    // Last, pod changes that a reload applies from its change set (served pods in a namespace without
    // policies, on IPs no other pod or entry has): a deletion, a move, an addition; nothing after them
    // translates every object, so only the change sets can bring the two control planes together.
    const taken = new Set(mesh.objects.map((o) => o.status?.podIP));
    const servedNames = new Set(following.config().workloads.map((w) => w.workload.name));
    const quiet = mesh.objects.filter(
      (o) =>
        o.kind === "Pod" &&
        o.metadata.namespace === "ns-c" &&
        servedNames.has(o.metadata.name) &&
        !ENTRY_ADDRESSES.includes(o.status?.podIP as string) &&
        mesh.objects.filter((p) => p.status?.podIP === o.status?.podIP).length === 1,
    );
    assert.ok(quiet.length >= 2, `${quiet.length} pods to edit`);
    const [gone, moved] = quiet as [KubeObject, KubeObject];
    server.remove("v1", "Pod", gone.metadata.name, gone.metadata.namespace);
    server.apply(json({ ...moved, status: { ...moved.status, podIP: "127.10.7.7" } }));
    server.apply(
      json({
        ...moved,
        metadata: { name: "late-pod", namespace: "ns-c", labels: { app: "web" } },
        status: { podIP: "127.10.7.8" },
      }),
    );
    assert.ok(!taken.has("127.10.7.7") && !taken.has("127.10.7.8"));
    const lastFull = translatedAll;
    const { cp: fresh } = await plane(server);
    const expected = fresh.config();
    await until("the following control plane to converge", () =>
      isDeepStrictEqual(following.config().workloads, expected.workloads),
    );
    assert.ok(reloads.changes > 0, JSON.stringify(reloads));
    assert.equal(translatedAll, lastFull, "the last edits were applied from change sets");
    assert.deepEqual(following.config().services, expected.services);
    assert.deepEqual([...following.config().nodes], [...expected.nodes]);
    assert.deepEqual([...following.config().authorizations], [...expected.authorizations]);
    const [got, want] = await Promise.all([servedBy(following), servedBy(fresh)]);
    for (const t of XDS_TYPES) assert.deepEqual(got[t], want[t], t);
    assert.deepEqual(following.errors(), fresh.errors());
  });
});
