// The informer transform keeps what the mesh reads: the same objects with and without it give the same
// xDS resources byte for byte, the same validation problems, and the same identities per node.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TypeUrl, typeRegistry } from "@ambient/xds";
import type { KubeObject } from "../manifests.js";
import { translateEnvoy } from "../translate-envoy.js";
import { translateMesh, validateManifestObject } from "../translate-mesh.js";
import { InternTable, internShared, slimPod, transformForCache, trimMetadata } from "./informer-transform.js";
import type { KubeResource, RawKubeObject } from "./kube-client.js";
import { kubeObjectFromApi, MESH_RESOURCES, podForCache } from "./kubernetes-source.js";
import { identitiesOfPods } from "./token-review-authenticator.js";

/** A Pod as a real API server sends it: most of it is never read by the mesh. */
function fullPod(i: number, extra: { spec?: object; status?: object } = {}): RawKubeObject {
  const app = `app-${i % 3}`;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: `${app}-7d9f8-${i}`,
      generateName: `${app}-7d9f8-`,
      namespace: i % 2 === 0 ? "demo" : "other",
      uid: `0000-${i}`,
      resourceVersion: String(100 + i),
      creationTimestamp: `2026-12-0${1 + (i % 3)}T00:00:0${i % 10}Z`,
      labels: { app, "pod-template-hash": "7d9f8", ...(i === 4 ? { "istio.io/use-waypoint": "wp" } : {}) },
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}", "example.com/note": "x" },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: `${app}-7d9f8`, uid: "rs" }],
      managedFields: [
        { manager: "kube-controller-manager", operation: "Update", fieldsV1: { "f:spec": {} } },
      ],
    },
    spec: {
      nodeName: `node-${i % 2}`,
      serviceAccountName: i === 5 ? undefined : `sa-${i % 3}`,
      ...(i === 6 ? { hostNetwork: true } : {}),
      containers: [
        {
          name: "app",
          image: "registry.example/app:1.2.3",
          env: [{ name: "A", value: "1" }],
          resources: { requests: { cpu: "100m" } },
          readinessProbe: { httpGet: { path: "/ready", port: 8080 } },
          volumeMounts: [{ name: "token", mountPath: "/var/run/secrets" }],
          ports: [
            { name: "http", containerPort: 8080, protocol: "TCP" },
            { name: "grpc", containerPort: 9090 },
          ],
        },
        { name: "sidecar", image: "registry.example/log:1", args: ["--v=2"] },
      ],
      initContainers: [
        // Runs to completion: its port serves nothing once the pod runs.
        { name: "setup", image: "registry.example/setup:1", ports: [{ name: "stats", containerPort: 7070 }] },
        // A native sidecar: keeps running beside the app and serves its port.
        {
          name: "proxy",
          image: "registry.example/proxy:1",
          restartPolicy: "Always",
          ports: [{ name: "stats", containerPort: 15090 }],
        },
      ],
      volumes: [{ name: "token", projected: { sources: [] } }],
      tolerations: [{ key: "node.kubernetes.io/not-ready", operator: "Exists" }],
      ...extra.spec,
    },
    status: {
      phase: i === 7 ? "Succeeded" : "Running",
      podIP: `127.10.0.${10 + i}`,
      podIPs: [{ ip: `127.10.0.${10 + i}` }],
      hostIP: `192.168.0.${i % 2}`,
      conditions: [
        { type: "Initialized", status: "True" },
        { type: "Ready", status: i === 3 ? "False" : "True" },
      ],
      containerStatuses: [{ name: "app", ready: true, restartCount: 0, image: "registry.example/app:1.2.3" }],
      qosClass: "Burstable",
      ...extra.status,
    },
  };
}

const resource = (kind: string): KubeResource => {
  const r = MESH_RESOURCES.find((x) => x.kind === kind);
  if (r === undefined) throw new Error(kind);
  return r;
};

const others: RawKubeObject[] = [
  { metadata: { name: "demo", labels: { "istio.io/dataplane-mode": "ambient" } } },
  { metadata: { name: "other", labels: { "istio.io/dataplane-mode": "ambient" } } },
  { metadata: { name: "node-0", labels: { "topology.kubernetes.io/zone": "z0" } } },
  { metadata: { name: "node-1", labels: { "topology.kubernetes.io/region": "r1" } } },
  ...[0, 1, 2].map((a) => ({
    metadata: { name: `app-${a}`, namespace: a === 1 ? "other" : "demo" },
    spec: {
      selector: { app: `app-${a}` },
      clusterIP: `10.96.0.${10 + a}`,
      ports: [
        { name: "http", port: 80, targetPort: "http" },
        { name: "grpc", port: 90, targetPort: 9090 },
        { name: "stats", port: 15090, targetPort: "stats" },
      ],
    },
  })),
];
const kinds = ["Namespace", "Namespace", "Node", "Node", "Service", "Service", "Service"];

function toObjects(pods: RawKubeObject[]): KubeObject[] {
  const objects: KubeObject[] = [];
  others.forEach((raw, i) => {
    const o = kubeObjectFromApi(resource(kinds[i] as string), structuredClone(raw));
    if (o !== undefined) objects.push(o);
  });
  for (const raw of pods) {
    const o = kubeObjectFromApi(resource("Pod"), raw);
    if (o !== undefined && validateManifestObject(o) === undefined) objects.push(o);
  }
  return objects;
}

/** Every xDS resource the translations produce, encoded, by type URL and name. */
function xdsOf(objects: KubeObject[]): Map<string, string> {
  const mesh = translateMesh(objects);
  const envoy = translateEnvoy(objects, mesh);
  const out = new Map<string, string>();
  const put = (typeUrl: string, name: string, value: unknown) =>
    out.set(
      `${typeUrl} ${name}`,
      Buffer.from(typeRegistry.encode(typeUrl as never, value as never)).toString("hex"),
    );
  for (const w of mesh.workloads) put(TypeUrl.address, w.key, { workload: w.workload });
  for (const s of mesh.services) put(TypeUrl.address, s.key, { service: s.service });
  for (const [k, a] of mesh.authorizations) put(TypeUrl.authorization, k, a);
  for (const [k, v] of envoy.clusters) put(TypeUrl.cluster, k, v);
  for (const [k, v] of envoy.clusterLoadAssignments) put(TypeUrl.clusterLoadAssignment, k, v);
  for (const [k, v] of envoy.listeners) put(TypeUrl.listener, k, v);
  for (const [k, v] of envoy.routeConfigurations) put(TypeUrl.routeConfiguration, k, v);
  out.set("nodes", JSON.stringify([...mesh.nodes]));
  out.set("issues", JSON.stringify([...mesh.issues, ...envoy.issues]));
  return out;
}

describe("informer transform", () => {
  it("cuts a Pod to the fields the mesh reads and keeps the metadata the informer needs", () => {
    const pod = transformForCache("Pod", fullPod(1));
    assert.deepEqual(pod, {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "app-1-7d9f8-1",
        generateName: "app-1-7d9f8-",
        namespace: "other",
        uid: "0000-1",
        resourceVersion: "101",
        creationTimestamp: "2026-12-02T00:00:01Z",
        labels: { app: "app-1", "pod-template-hash": "7d9f8" },
        annotations: { "example.com/note": "x" },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "app-1-7d9f8", uid: "rs" }],
      },
      spec: {
        nodeName: "node-1",
        serviceAccountName: "sa-1",
        containers: [
          {
            name: "app",
            ports: [
              { name: "http", containerPort: 8080, protocol: "TCP" },
              { name: "grpc", containerPort: 9090 },
            ],
          },
          { name: "sidecar" },
        ],
        // The init container that ran to completion is gone; the native sidecar stays.
        initContainers: [
          { name: "proxy", restartPolicy: "Always", ports: [{ name: "stats", containerPort: 15090 }] },
        ],
      },
      status: {
        phase: "Running",
        podIP: "127.10.0.11",
        hostIP: "192.168.0.1",
        conditions: [{ type: "Ready", status: "True" }],
      },
    });
  });

  it("leaves other kinds' spec and status whole, trimming only managedFields and last-applied", () => {
    const svc: RawKubeObject = {
      metadata: {
        name: "s",
        managedFields: [{}],
        annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
      },
      spec: { clusterIP: "10.96.0.1", sessionAffinity: "None" },
      status: { loadBalancer: { ingress: [{ ip: "1.2.3.4" }] } },
    };
    assert.deepEqual(transformForCache("Service", svc), {
      metadata: { name: "s" },
      spec: { clusterIP: "10.96.0.1", sessionAffinity: "None" },
      status: { loadBalancer: { ingress: [{ ip: "1.2.3.4" }] } },
    });
  });

  it("gives the same xDS resources, node identities and issues with and without the cut", () => {
    const pods = Array.from({ length: 8 }, (_, i) => fullPod(i));
    const without = xdsOf(toObjects(pods.map((p) => structuredClone(p))));
    const slim = pods.map((p) => transformForCache("Pod", structuredClone(p)));
    const withCut = xdsOf(toObjects(slim));
    const workloads = [...without.keys()].filter((k) => k.startsWith(`${TypeUrl.address} 0000-`));
    // Pod 7 has finished (Succeeded): no workload. Pod 3 is not Ready: served, UNHEALTHY either way.
    assert.equal(workloads.length, 7, [...without.keys()].join("\n"));
    assert.deepEqual(withCut, without);
    for (const node of ["node-0", "node-1"]) {
      const onNode = (list: RawKubeObject[]) => list.filter((p) => p.spec?.nodeName === node);
      assert.deepEqual(
        identitiesOfPods(onNode(slim)).map(String),
        identitiesOfPods(onNode(pods.map((p) => structuredClone(p)))).map(String),
      );
    }
  });

  it("keeps each Pod as the object the translation reads, with the metadata the informer needs", () => {
    const pods = Array.from({ length: 8 }, (_, i) => transformForCache("Pod", fullPod(i)));
    // Metadata the translation does not read as it came: a label that is not a string, an empty uid.
    const odd = transformForCache("Pod", fullPod(8));
    (odd.metadata as Record<string, unknown>).labels = { app: "app-2", "pod-template-hash": 7 };
    (odd.metadata as Record<string, unknown>).uid = "";
    const all = [...pods, odd];
    const cached = all.map((p) => podForCache(structuredClone(p)));
    const converted = all.map((p) => kubeObjectFromApi(resource("Pod"), structuredClone(p)) as KubeObject);
    for (const [i, c] of cached.entries()) {
      const o = c as unknown as KubeObject;
      const raw = all[i] as RawKubeObject;
      // What the translation reads is what kubeObjectFromApi makes of the Pod...
      const k = converted[i] as KubeObject;
      assert.deepEqual(
        [o.apiVersion, o.kind, o.source, o.spec, o.status],
        [k.apiVersion, k.kind, k.source, k.spec, k.status],
      );
      for (const f of ["name", "namespace", "uid", "labels", "annotations", "creationTimestamp"] as const) {
        assert.deepEqual(o.metadata[f], k.metadata[f], f);
      }
      // ...and the informer and the CA's node checks still find every field they read.
      assert.equal(c.metadata?.resourceVersion, raw.metadata?.resourceVersion);
      assert.deepEqual(c.metadata?.ownerReferences, raw.metadata?.ownerReferences);
      assert.deepEqual(c.spec, raw.spec);
    }
    // A well-formed Pod's metadata is not copied; the odd one's is.
    const same = structuredClone(pods[0] as RawKubeObject);
    assert.equal(podForCache(same).metadata, same.metadata);
    assert.equal(
      validateManifestObject(cached[8] as unknown as KubeObject),
      validateManifestObject(converted[8] as KubeObject),
    );
    const served = xdsOf([...toObjects([]), ...(cached as unknown as KubeObject[])]);
    assert.ok([...served.keys()].filter((k) => k.startsWith(`${TypeUrl.address} `)).length > 8);
    assert.deepEqual(served, xdsOf([...toObjects([]), ...converted]));
    // A Pod without a name is left as it came: nothing translates it.
    const nameless: RawKubeObject = { metadata: { namespace: "demo" }, spec: {}, status: {} };
    assert.equal(podForCache(nameless), nameless);
  });

  it("keeps fields of the wrong type as they came, so validation reports the same problems", () => {
    const bad = [
      fullPod(1, { spec: { containers: "not a list" } }),
      fullPod(2, { spec: { nodeName: 7 } }),
      fullPod(3, { status: { podIP: 10 } }),
      fullPod(4, { spec: { serviceAccountName: ["x"] } }),
    ];
    for (const raw of bad) {
      const before = kubeObjectFromApi(resource("Pod"), structuredClone(raw));
      const after = kubeObjectFromApi(resource("Pod"), slimPod(structuredClone(raw)));
      assert.ok(before !== undefined && after !== undefined);
      const problem = validateManifestObject(before);
      assert.ok(problem !== undefined);
      assert.equal(validateManifestObject(after), problem);
    }
  });
});

describe("informer transform: what pods have in common is held once", () => {
  it("never changes a value: every pod reads the same before and after", () => {
    const table = new InternTable();
    const pods = Array.from({ length: 12 }, (_, i) => slimPod(trimMetadata(fullPod(i))));
    const before = pods.map((p) => structuredClone(p));
    for (const p of pods) internShared("Pod", p, table);
    assert.deepStrictEqual(pods, before);
    assert.equal(JSON.stringify(pods), JSON.stringify(before));
  });

  it("shares equal label maps, containers, owner references, conditions and repeated strings", () => {
    const table = new InternTable();
    // Pods 0 and 3 are of one app (same labels, containers, owner), on node-0 and node-1.
    const a = transformForCache("Pod", fullPod(0), table);
    const b = transformForCache("Pod", fullPod(3), table);
    const c = transformForCache("Pod", fullPod(6), table);
    assert.equal(a.metadata?.labels, c.metadata?.labels);
    assert.equal(a.metadata?.ownerReferences, b.metadata?.ownerReferences);
    assert.equal(a.metadata?.annotations, b.metadata?.annotations);
    assert.equal(a.spec?.containers, b.spec?.containers);
    assert.equal(a.status?.conditions, c.status?.conditions);
    // Pod 3 is not Ready: its conditions are its own.
    assert.notEqual(a.status?.conditions, b.status?.conditions);
    assert.deepEqual(b.status?.conditions, [{ type: "Ready", status: "False" }]);
    // Shared values are frozen: a write fails loudly instead of changing other pods.
    assert.ok(Object.isFrozen(a.metadata?.labels));
    assert.ok(Object.isFrozen((a.spec?.containers as object[])[0]));
    assert.throws(() => {
      (a.metadata?.labels as Record<string, string>).app = "changed";
    }, TypeError);
    assert.equal(c.metadata?.labels?.app, "app-0");
    // Each pod keeps its own metadata, spec and status objects.
    assert.notEqual(a.metadata, c.metadata);
    assert.notEqual(a.spec, c.spec);
  });

  it("returns the table's copy of an equal string", () => {
    const table = new InternTable();
    const first = ["2026-12-05T10:00:00", "Z"].join("");
    const second = ["2026-12-05T10:00", ":00Z"].join("");
    assert.equal(table.string(first), first);
    assert.equal(table.string(second), first);
    assert.equal(table.size, 1);
  });

  it("leaves values that are not plain JSON as they came", () => {
    const table = new InternTable();
    class Labels {
      app = "x";
    }
    const odd: unknown[] = [
      { app: undefined },
      { n: Number.NaN },
      { n: -0 },
      new Labels(),
      new Array(3),
      { f: () => 1 },
      { [Symbol("s")]: 1 },
    ];
    for (const v of odd) {
      assert.equal(table.value(v), v);
      assert.equal(Object.isFrozen(v), false);
    }
    // `{ app: undefined }` is not taken for `{}`, nor `-0` for `0`.
    assert.notEqual(table.value({}), odd[0]);
    const zero = { n: 0 };
    assert.equal(table.value(zero), zero);
    // A null-prototype map is not taken for a plain one with the same entries.
    const bare = Object.assign(Object.create(null) as object, { app: "x" });
    const plain = { app: "x" };
    assert.equal(table.value(plain), plain);
    assert.equal(table.value(bare), bare);
    assert.equal(Object.getPrototypeOf(table.value({ app: "x" })), Object.prototype);
  });

  it("holds at most its bounds, however many distinct values arrive", () => {
    const table = new InternTable({ entries: 10, keyChars: 200, maxKeyChars: 50 });
    for (let i = 0; i < 1000; i++) {
      const s = `value-${i}`;
      assert.equal(table.string(s), s);
      const labels = { app: `app-${i % 40}`, i: String(i % 7) };
      assert.deepEqual(table.value(structuredClone(labels)), labels);
      assert.ok(table.size <= 10, `size ${table.size}`);
      assert.ok(table.keyChars <= 200, `keyChars ${table.keyChars}`);
    }
    // A value longer than maxKeyChars is never held.
    const long = { note: "x".repeat(60) };
    assert.equal(table.value(long), long);
    assert.notEqual(table.value({ note: "x".repeat(60) }), long);
    assert.equal(Object.isFrozen(long), false);
    // The default bounds.
    const big = new InternTable();
    for (let i = 0; i < 20_000; i++) big.value({ app: `app-${i}` });
    assert.ok(big.size <= 16_384, `size ${big.size}`);
  });
});
