import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KubeObject } from "./manifests.js";
import { translateEnvoy } from "./translate-envoy.js";
import { createTranslationMemo, type TranslationCounts } from "./translate-memo.js";
import { translateMesh } from "./translate-mesh.js";

const PODS = 300;
const SERVICES = 30;

function namespace(labels: Record<string, string> = {}): KubeObject {
  return { apiVersion: "v1", kind: "Namespace", metadata: { name: "ns", labels }, source: "Namespace/ns" };
}

function service(s: number, port = 80): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: `svc-${s}`, namespace: "ns" },
    spec: {
      selector: { app: `svc-${s}` },
      clusterIP: `127.30.0.${s + 1}`,
      ports: [{ port, targetPort: 8080 }],
    },
    source: `Service/ns/svc-${s}`,
  };
}

function pod(p: number, ip = `127.10.${1 + Math.floor(p / 250)}.${(p % 250) + 1}`): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `pod-${p}`, namespace: "ns", labels: { app: `svc-${p % SERVICES}`, tier: "web" } },
    spec: { nodeName: `node-${p % 3}`, serviceAccountName: `sa-${p % SERVICES}` },
    status: { podIP: ip },
    source: `Pod/ns/pod-${p}`,
  };
}

function mesh(): KubeObject[] {
  return [
    namespace({ "istio.io/dataplane-mode": "ambient" }),
    ...Array.from({ length: SERVICES }, (_, s) => service(s)),
    ...Array.from({ length: PODS }, (_, p) => pod(p)),
  ];
}

/** Translates with the memo and checks the result equals a translation without it; returns the work done. */
function translate(memo: ReturnType<typeof createTranslationMemo>, objects: KubeObject[]): TranslationCounts {
  const before = { ...memo.counts };
  const withMemo = translateMesh(objects, {}, memo);
  const withMemoEnvoy = translateEnvoy(objects, withMemo, {}, memo);
  const fresh = translateMesh(objects, {});
  assert.deepEqual(withMemo, fresh);
  assert.deepEqual(withMemoEnvoy, translateEnvoy(objects, fresh, {}));
  return {
    workloads: memo.counts.workloads - before.workloads,
    services: memo.counts.services - before.services,
    loadAssignments: memo.counts.loadAssignments - before.loadAssignments,
    servicePorts: memo.counts.servicePorts - before.servicePorts,
    routeConfigurations: memo.counts.routeConfigurations - before.routeConfigurations,
  };
}

const FULL: TranslationCounts = {
  workloads: PODS,
  services: SERVICES,
  loadAssignments: SERVICES,
  servicePorts: SERVICES,
  routeConfigurations: SERVICES,
};

describe("translation memo: what a change re-translates", () => {
  const cases: {
    name: string;
    edit: (objects: KubeObject[]) => KubeObject[];
    work: TranslationCounts;
  }[] = [
    {
      name: "nothing changed: nothing translated",
      edit: (objects) => objects,
      work: { workloads: 0, services: 0, loadAssignments: 0, servicePorts: 0, routeConfigurations: 0 },
    },
    {
      name: "one pod's IP: that pod and its Service's endpoints",
      edit: (objects) => objects.map((o) => (o.metadata.name === "pod-17" ? pod(17, "127.10.9.9") : o)),
      work: { workloads: 1, services: 0, loadAssignments: 1, servicePorts: 0, routeConfigurations: 0 },
    },
    {
      name: "an equal copy of a pod (a resync): translated again, same output",
      edit: (objects) => objects.map((o) => (o.metadata.name === "pod-5" ? pod(5) : o)),
      work: { workloads: 1, services: 0, loadAssignments: 1, servicePorts: 0, routeConfigurations: 0 },
    },
    {
      name: "a new pod: that pod and its Service's endpoints",
      edit: (objects) => [...objects, pod(PODS, "127.10.8.8")],
      work: { workloads: 1, services: 0, loadAssignments: 1, servicePorts: 0, routeConfigurations: 0 },
    },
    {
      name: "a pod removed: its Service's endpoints",
      edit: (objects) => objects.filter((o) => o.metadata.name !== "pod-3"),
      work: { workloads: 0, services: 0, loadAssignments: 1, servicePorts: 0, routeConfigurations: 0 },
    },
    {
      name: "a Service's port: that Service, its pods and endpoints, and every route (routes read every Service)",
      edit: (objects) => objects.map((o) => (o.metadata.name === "svc-4" ? service(4, 81) : o)),
      work: {
        workloads: PODS / SERVICES,
        services: 1,
        loadAssignments: 1,
        servicePorts: 1,
        routeConfigurations: SERVICES,
      },
    },
    {
      name: "a Service's selector: that Service, the pods it selected and those it selects now",
      edit: (objects) =>
        objects.map((o) =>
          o.metadata.name === "svc-4" ? { ...o, spec: { ...o.spec, selector: { app: "svc-5" } } } : o,
        ),
      work: {
        workloads: (2 * PODS) / SERVICES,
        services: 1,
        loadAssignments: 2,
        servicePorts: 0,
        routeConfigurations: SERVICES,
      },
    },
    {
      name: "a Service removed: the pods it selected and their endpoints",
      edit: (objects) => objects.filter((o) => o.metadata.name !== "svc-4"),
      work: {
        workloads: PODS / SERVICES,
        services: 0,
        loadAssignments: 0,
        servicePorts: 0,
        routeConfigurations: SERVICES - 1,
      },
    },
    {
      name: "the namespace's labels (context): everything in the mesh translation",
      edit: (objects) => objects.map((o) => (o.kind === "Namespace" ? namespace() : o)),
      work: { ...FULL, servicePorts: 0 },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const memo = createTranslationMemo();
      const objects = mesh();
      assert.deepEqual(translate(memo, objects), FULL);
      assert.deepEqual(translate(memo, c.edit(objects)), c.work);
    });
  }

  it("binds the Services of a waypoint whose own Service arrives after them (its cluster IP is its address)", () => {
    // The waypoint's address is a Service's cluster IP, outside the pod ranges: whether the Gateway
    // can be bound to depends on a Service, so a new Service must rebind the reused ones.
    const gateway: KubeObject = {
      apiVersion: "gateway.networking.k8s.io/v1",
      kind: "Gateway",
      metadata: { name: "waypoint", namespace: "ns" },
      spec: { gatewayClassName: "istio-waypoint" },
      status: { addresses: [{ type: "IPAddress", value: "10.96.0.20" }] },
      source: "Gateway/ns/waypoint",
    };
    const waypointService: KubeObject = {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "waypoint", namespace: "ns" },
      spec: { clusterIP: "10.96.0.20", ports: [{ port: 15008 }] },
      source: "Service/ns/waypoint",
    };
    const memo = createTranslationMemo();
    const objects = [namespace({ "istio.io/use-waypoint": "waypoint" }), gateway, service(0), pod(0)];
    translate(memo, objects);
    translate(memo, [...objects, waypointService]);
    const bound = translateMesh([...objects, waypointService], {}, memo).services.find(
      (s) => s.service.name === "svc-0",
    );
    assert.deepEqual(bound?.service.waypoint?.address?.address, new Uint8Array([10, 96, 0, 20]));
  });

  it("an object reused across changes keeps its result object", () => {
    const memo = createTranslationMemo();
    const objects = mesh();
    const first = translateMesh(objects, {}, memo);
    const edited = objects.map((o) => (o.metadata.name === "pod-17" ? pod(17, "127.10.9.9") : o));
    const second = translateMesh(edited, {}, memo);
    const changed = second.workloads.filter((w, i) => w !== first.workloads[i]).map((w) => w.workload.name);
    assert.deepEqual(changed, ["pod-17"]);
    assert.equal(
      second.services.every((s, i) => s === first.services[i]),
      true,
    );
  });
});
