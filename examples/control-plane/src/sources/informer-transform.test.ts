// The informer transform keeps what the mesh reads: the same objects with and without it give the same
// xDS resources byte for byte, the same validation problems, and the same identities per node.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TypeUrl, typeRegistry } from "@ambient/xds";
import type { KubeObject } from "../manifests.js";
import { translateEnvoy } from "../translate-envoy.js";
import { translateMesh, validateManifestObject } from "../translate-mesh.js";
import { slimPod, transformForCache } from "./informer-transform.js";
import type { KubeResource, RawKubeObject } from "./kube-client.js";
import { kubeObjectFromApi, MESH_RESOURCES } from "./kubernetes-source.js";
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
      },
      status: {
        phase: "Running",
        podIP: "127.10.0.11",
        podIPs: [{ ip: "127.10.0.11" }],
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
    assert.equal(workloads.length, 8, [...without.keys()].join("\n"));
    assert.deepEqual(withCut, without);
    for (const node of ["node-0", "node-1"]) {
      const onNode = (list: RawKubeObject[]) => list.filter((p) => p.spec?.nodeName === node);
      assert.deepEqual(
        identitiesOfPods(onNode(slim)).map(String),
        identitiesOfPods(onNode(pods.map((p) => structuredClone(p)))).map(String),
      );
    }
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
