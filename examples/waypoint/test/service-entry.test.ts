// VIPs whose endpoints are not pods, through real ztunnels: a client pod's connection to the VIP of a
// ServiceEntry that selects a WorkloadEntry reaches the WorkloadEntry's address, on the port its named
// port gives; one to the VIP of a Service without a selector reaches the ready endpoint of its
// EndpointSlice. (The fixture starts a waypoint too; nothing here is bound to it.)
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  httpOverSocks,
  loopbackSubnet,
  shopWithWaypoint,
  startTestMesh,
  type TestMesh,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();

function manifests(vmPort: number, dbPort: number): string {
  return `
${shopWithWaypoint(ip(6))}
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { nodeName: node-a, serviceAccountName: client }
status: { podIP: ${ip(2)} }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: vm-api, namespace: shop }
spec:
  hosts: [api.vm.example]
  addresses: [${ip(100)}]
  resolution: STATIC
  location: MESH_INTERNAL
  ports: [{ number: 80, name: tcp-api, targetPort: 1 }]
  workloadSelector: { labels: { app: vm-api } }
---
apiVersion: networking.istio.io/v1alpha3
kind: WorkloadEntry
metadata: { name: vm-1, namespace: shop }
spec:
  address: ${ip(50)}
  labels: { app: vm-api }
  ports: { tcp-api: ${vmPort} }
---
apiVersion: v1
kind: Service
metadata: { name: legacy-db, namespace: shop }
spec: { clusterIP: ${ip(101)}, ports: [{ name: sql, port: 5432 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: legacy-db-1, namespace: shop, labels: { kubernetes.io/service-name: legacy-db } }
addressType: IPv4
endpoints:
  - { addresses: [${ip(51)}], conditions: { ready: true } }
  - { addresses: [${ip(52)}], conditions: { ready: false } }
ports: [{ name: sql, port: ${dbPort}, protocol: TCP }]
`;
}

describe("ServiceEntry VIP to a WorkloadEntry through the ztunnel", { timeout: 120_000 }, () => {
  let mesh: TestMesh;
  let vm: Server;
  const dbs: Server[] = [];
  let dbPort = 0;

  before(async () => {
    // The Service's endpoints: a plain TCP app on both addresses, one port; only the ready one is used.
    for (const n of [51, 52]) {
      const db = createServer((socket) => {
        socket.on("error", () => {});
        socket.once("data", (chunk: Buffer) => socket.end(`db at ${n} got ${chunk.toString()}`));
      });
      db.listen(dbPort, ip(n));
      await once(db, "listening");
      dbPort = (db.address() as AddressInfo).port;
      dbs.push(db);
    }
    // The VM: a plain TCP app (no ztunnel of its own, so the tunnel protocol is NONE).
    vm = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", (chunk: Buffer) => socket.end(`vm-1 got ${chunk.toString()}`));
    });
    vm.listen(0, ip(50));
    await once(vm, "listening");
    mesh = await startTestMesh({
      manifests: manifests((vm.address() as AddressInfo).port, dbPort),
      tempPrefix: "service-entry-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        ports: { admin: 0, metrics: 0, readiness: 0 },
        accessLog: false,
      },
    });
  });
  after(async () => {
    await mesh?.close();
    vm?.close();
    for (const db of dbs) db.close();
  });

  it("serves the ServiceEntry host and the WorkloadEntry, and the client reaches the VM by the VIP", async () => {
    const config = mesh.controlPlane.config();
    assert.deepEqual(config.issues, []);
    const entry = config.workloads.find(
      (w) => w.key === "Kubernetes/networking.istio.io/WorkloadEntry/shop/vm-1",
    );
    assert.deepEqual(entry?.workload.services, {
      "shop/api.vm.example": {
        ports: [{ servicePort: 80, targetPort: (vm.address() as AddressInfo).port }],
      },
    });
    const answer = await httpOverSocks({ proxy: mesh.socks5, from: ip(2), to: `${ip(100)}:80` }, "hello");
    assert.equal(answer, "vm-1 got hello");
  });

  it("sends a Service without a selector to the ready endpoints of its EndpointSlice, in plaintext", async () => {
    const config = mesh.controlPlane.config();
    const endpoints = config.workloads.filter((w) => w.key.includes("/EndpointSlice/shop/legacy-db-1/"));
    assert.deepEqual(
      endpoints.map((w) => [w.workload.addresses?.length, w.workload.status, w.workload.tunnelProtocol]),
      [
        [1, "HEALTHY", "NONE"],
        [1, "UNHEALTHY", "NONE"],
      ],
    );
    for (let i = 0; i < 4; i++) {
      const answer = await httpOverSocks({ proxy: mesh.socks5, from: ip(2), to: `${ip(101)}:5432` }, `q${i}`);
      assert.equal(answer, `db at 51 got q${i}`);
    }
  });
});
