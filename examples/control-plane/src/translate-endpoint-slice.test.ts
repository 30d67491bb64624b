import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseManifests } from "./manifests.js";
import { translateEnvoy } from "./translate-envoy.js";
import { createTranslationMemo } from "./translate-memo.js";
import { type MeshConfig, type TranslateOptions, translateMesh } from "./translate-mesh.js";

function parse(yaml: string) {
  const { objects, issues } = parseManifests([{ path: "m.yaml", text: yaml }]);
  assert.deepEqual(issues, []);
  return objects;
}

function translate(yaml: string, options?: TranslateOptions): MeshConfig {
  return translateMesh(parse(yaml), options);
}

// The API server's own Service: no selector, its endpoints written to an EndpointSlice.
const KUBERNETES_SERVICE = `
apiVersion: v1
kind: Namespace
metadata: { name: default, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Service
metadata: { name: kubernetes, namespace: default }
spec:
  clusterIP: 10.96.0.1
  ports: [{ name: https, port: 443, targetPort: 6443, protocol: TCP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: kubernetes, namespace: default, labels: { kubernetes.io/service-name: kubernetes } }
addressType: IPv4
endpoints:
  - addresses: [192.168.49.2]
    conditions: { ready: true }
  - addresses: [192.168.49.3]
    conditions: { ready: false }
  - addresses: [192.168.49.4]
ports: [{ name: https, port: 6443, protocol: TCP }]
`;

const sliceWorkloads = (config: MeshConfig) =>
  config.workloads.filter((w) => w.key.includes("/discovery.k8s.io/EndpointSlice/"));

describe("translateMesh: EndpointSlice endpoints of Services without pods", () => {
  it("serves each endpoint as a plaintext HOST_NETWORK workload of its Service, health from ready", () => {
    const config = translate(KUBERNETES_SERVICE);
    assert.deepEqual(config.issues, []);
    const workloads = sliceWorkloads(config);
    assert.deepEqual(
      workloads.map((w) => w.key),
      [
        "Kubernetes/discovery.k8s.io/EndpointSlice/default/kubernetes/192.168.49.2",
        "Kubernetes/discovery.k8s.io/EndpointSlice/default/kubernetes/192.168.49.3",
        "Kubernetes/discovery.k8s.io/EndpointSlice/default/kubernetes/192.168.49.4",
      ],
    );
    const [first, unready, noConditions] = workloads;
    assert.deepEqual(first?.workload, {
      uid: "Kubernetes/discovery.k8s.io/EndpointSlice/default/kubernetes/192.168.49.2",
      name: "kubernetes",
      namespace: "default",
      addresses: [new Uint8Array([192, 168, 49, 2])],
      network: "",
      tunnelProtocol: "NONE",
      networkMode: "HOST_NETWORK",
      services: {
        "default/kubernetes.default.svc.cluster.local": { ports: [{ servicePort: 443, targetPort: 6443 }] },
      },
      status: "HEALTHY",
      clusterId: "Kubernetes",
    });
    assert.deepEqual(first?.aliases, [], "never found by address");
    assert.equal(unready?.workload.status, "UNHEALTHY");
    assert.equal(noConditions?.workload.status, "HEALTHY", "no ready condition counts as ready");
  });

  it("gives Envoy clients the endpoints too (EDS), unready ones UNHEALTHY", () => {
    const mesh = translate(KUBERNETES_SERVICE);
    const envoy = translateEnvoy(parse(KUBERNETES_SERVICE), mesh);
    const cla = envoy.clusterLoadAssignments.get("outbound|443||kubernetes.default.svc.cluster.local");
    assert.ok(cla, "a load assignment for the Service");
    const endpoints = (cla.endpoints ?? []).flatMap((l) => l.lbEndpoints ?? []);
    assert.deepEqual(
      endpoints.map((e) => [
        e.endpoint?.address?.socketAddress?.address,
        e.endpoint?.address?.socketAddress?.portValue,
        e.healthStatus,
      ]),
      [
        ["192.168.49.2", 6443, "HEALTHY"],
        ["192.168.49.3", 6443, "UNHEALTHY"],
        ["192.168.49.4", 6443, "HEALTHY"],
      ],
    );
  });

  it("skips pod endpoints, slices of no served Service, and non-IPv4 slices", () => {
    const config = translate(`
apiVersion: v1
kind: Namespace
metadata: { name: demo }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo }
spec: { clusterIP: 10.96.0.20, selector: { app: web }, ports: [{ port: 80 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-abcde, namespace: demo, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
endpoints:
  - addresses: [127.10.0.9]
    targetRef: { kind: Pod, name: web-0, namespace: demo }
  - addresses: [127.10.0.50]
    targetRef: { kind: Node, name: node-a }
ports: [{ port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-v6, namespace: demo, labels: { kubernetes.io/service-name: web } }
addressType: IPv6
endpoints: [{ addresses: ["fd00::1"] }]
ports: [{ port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: orphan, namespace: demo, labels: { kubernetes.io/service-name: gone } }
addressType: IPv4
endpoints: [{ addresses: [127.10.0.60] }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: unlabelled, namespace: demo }
addressType: IPv4
endpoints: [{ addresses: [127.10.0.61] }]
`);
    assert.deepEqual(config.issues, []);
    const workloads = sliceWorkloads(config);
    // The Pod endpoint is the pod's own workload; a non-pod endpoint of a selector Service is served.
    assert.deepEqual(
      workloads.map((w) => [w.key, w.workload.services]),
      [
        [
          "Kubernetes/discovery.k8s.io/EndpointSlice/demo/web-abcde/127.10.0.50",
          // An unnamed port (no `name`, no `protocol`) is the API's defaults: "" and TCP.
          { "demo/web.demo.svc.cluster.local": { ports: [{ servicePort: 80, targetPort: 80 }] } },
        ],
      ],
    );
  });

  it("joins ports by the Service port's name and keeps TCP ones only", () => {
    const config = translate(`
apiVersion: v1
kind: Service
metadata: { name: db, namespace: ext }
spec:
  clusterIP: 10.96.0.30
  ports: [{ name: sql, port: 5432 }, { name: metrics, port: 9090 }, { name: dns, port: 53, protocol: UDP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: db-1, namespace: ext, labels: { kubernetes.io/service-name: db } }
addressType: IPv4
endpoints: [{ addresses: [10.20.0.5] }, { addresses: [10.20.0.5] }]
ports:
  - { name: metrics, port: 19090, protocol: TCP }
  - { name: sql, port: 15432, protocol: TCP }
  - { name: dns, port: 1053, protocol: UDP }
  - { name: other, port: 7000, protocol: TCP }
`);
    assert.deepEqual(config.issues, []);
    const workloads = sliceWorkloads(config);
    assert.equal(workloads.length, 1, "an address repeated in one slice is one workload");
    assert.deepEqual(workloads[0]?.workload.services, {
      "ext/db.ext.svc.cluster.local": {
        ports: [
          { servicePort: 9090, targetPort: 19090 },
          { servicePort: 5432, targetPort: 15432 },
        ],
      },
    });
  });

  it("reports an endpoint with an address that is not IPv4, serves the rest", () => {
    const config = translate(`
apiVersion: v1
kind: Service
metadata: { name: db, namespace: ext }
spec: { clusterIP: 10.96.0.30, ports: [{ port: 5432 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: db-1, namespace: ext, labels: { kubernetes.io/service-name: db } }
addressType: IPv4
endpoints: [{ addresses: [10.20.0.5, not-an-ip] }, { addresses: [10.20.0.6] }]
ports: [{ port: 5432 }]
`);
    assert.deepEqual(config.issues, [
      {
        source: "EndpointSlice/ext/db-1",
        message: 'endpoint ["10.20.0.5","not-an-ip"] has an address that is not IPv4: not served',
      },
    ]);
    assert.deepEqual(
      sliceWorkloads(config).map((w) => w.key),
      ["Kubernetes/discovery.k8s.io/EndpointSlice/ext/db-1/10.20.0.6"],
    );
  });

  it("sets the trust domain and cluster it is given", () => {
    const config = translate(KUBERNETES_SERVICE, { trustDomain: "example.org", clusterId: "east" });
    const w = sliceWorkloads(config)[0];
    assert.equal(w?.key, "east/discovery.k8s.io/EndpointSlice/default/kubernetes/192.168.49.2");
    assert.equal(w?.workload.trustDomain, "example.org");
    assert.equal(w?.workload.clusterId, "east");
  });

  it("a slice change does not translate the pods again", () => {
    const memo = createTranslationMemo();
    const yaml = `${KUBERNETES_SERVICE}
---
apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: default, labels: { app: web } }
spec: { nodeName: node-a, serviceAccountName: web }
status: { podIP: 127.10.0.9 }
`;
    const objects = parse(yaml);
    translateMesh(objects, {}, memo);
    const before = memo.counts.workloads;
    const changed = parse(yaml.replace("192.168.49.4", "192.168.49.5"));
    const next = objects.map((o) =>
      o.kind === "EndpointSlice" ? (changed.find((c) => c.kind === o.kind) ?? o) : o,
    );
    const config = translateMesh(next, {}, memo);
    assert.equal(memo.counts.workloads, before, "no pod translated again");
    assert.ok(sliceWorkloads(config).some((w) => w.key.endsWith("/192.168.49.5")));
    assert.ok(!sliceWorkloads(config).some((w) => w.key.endsWith("/192.168.49.4")));
  });

  describe("pods a slice names by targetRef", () => {
    const mesh = (namedPods: string) => `
apiVersion: v1
kind: Namespace
metadata: { name: db, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Service
metadata: { name: pg, namespace: db }
spec: { clusterIP: 10.96.0.40, ports: [{ name: sql, port: 5432, targetPort: sql }] }
---
apiVersion: v1
kind: Service
metadata: { name: pg-direct, namespace: db }
spec: { clusterIP: 10.96.0.41, selector: { app: pg }, ports: [{ name: sql, port: 5432, targetPort: 5432 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: pg-1, namespace: db, labels: { kubernetes.io/service-name: pg } }
addressType: IPv4
endpoints: [${namedPods}]
ports: [{ name: sql, port: 5432 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: pg-direct-1, namespace: db, labels: { kubernetes.io/service-name: pg-direct } }
addressType: IPv4
endpoints: [{ addresses: [127.10.0.21], targetRef: { kind: Pod, name: pg-0, namespace: db, uid: uid-pg-0 } }]
ports: [{ name: sql, port: 5432 }]
${["pg-0", "pg-1", "pg-2"]
  .map(
    (name, i) => `---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: db, uid: uid-${name}, labels: { app: pg } }
spec: { nodeName: node-a, containers: [{ name: pg, ports: [{ name: sql, containerPort: 15432 }] }] }
status: { podIP: 127.10.0.${21 + i} }`,
  )
  .join("\n")}
`;
    const ref = (name: string, uid = `uid-${name}`) =>
      `{ targetRef: { kind: Pod, name: ${name}, uid: ${uid} } }`;
    const servicesOf = (config: MeshConfig, name: string) =>
      Object.keys(config.workloads.find((w) => w.workload.name === name)?.workload.services ?? {});

    it("lists the slice's Service in the pods it names (by name and uid), once", () => {
      const config = translate(mesh(`${ref("pg-0")}, ${ref("pg-1", "another-uid")}, ${ref("pg-0")}`));
      assert.deepEqual(config.issues, []);
      assert.deepEqual(servicesOf(config, "pg-0"), [
        "db/pg.db.svc.cluster.local",
        "db/pg-direct.db.svc.cluster.local",
      ]);
      assert.deepEqual(
        servicesOf(config, "pg-1"),
        ["db/pg-direct.db.svc.cluster.local"],
        "another pod by that name",
      );
      // The Service's named target port resolves against the pod's container ports, as for a selector.
      assert.deepEqual(
        config.workloads.find((w) => w.workload.name === "pg-0")?.workload.services?.[
          "db/pg.db.svc.cluster.local"
        ],
        {
          ports: [{ servicePort: 5432, targetPort: 15432 }],
        },
      );
      assert.equal(sliceWorkloads(config).length, 0, "a pod's endpoint is no workload of its own");
    });

    it("translates again only the pods whose slices changed, as a full translation would", () => {
      const memo = createTranslationMemo();
      const first = parse(mesh(`${ref("pg-0")}, ${ref("pg-1")}`));
      translateMesh(first, {}, memo);
      const before = memo.counts.workloads;
      const edited = parse(mesh(`${ref("pg-1")}, ${ref("pg-2")}`));
      // The same Pod objects as before; only the slice is new.
      const next = first.map((o) =>
        o.kind === "EndpointSlice" && o.metadata.name === "pg-1"
          ? (edited.find((e) => e.metadata.name === "pg-1") as typeof o)
          : o,
      );
      const config = translateMesh(next, {}, memo);
      assert.equal(memo.counts.workloads - before, 2, "pg-0 (left the slice) and pg-2 (joined it)");
      assert.deepEqual(config.workloads, translateMesh(next, {}).workloads);
      assert.deepEqual(servicesOf(config, "pg-0"), ["db/pg-direct.db.svc.cluster.local"]);
      assert.ok(servicesOf(config, "pg-2").includes("db/pg.db.svc.cluster.local"));
    });
  });
});
