import assert from "node:assert/strict";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { createXdsClient, TypeUrl, type XdsClient } from "@ambient/xds";
import { type ControlPlane, controlPlaneChannel, startControlPlane } from "../src/index.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
const ECHO_SVC = "demo/echo.demo.svc.cluster.local";
const WAYPOINT_SVC = "demo/waypoint.demo.svc.cluster.local";

/**
 * A waypoint Deployment's Service and pod, as a waypoint is usually run: a ztunnel that meets a
 * waypoint named by hostname asks for this Service by its `namespace/hostname` name.
 */
const WAYPOINT_SERVICE_YAML = `
apiVersion: v1
kind: ServiceAccount
metadata: { name: waypoint, namespace: demo }
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: demo
  labels:
    gateway.networking.k8s.io/gateway-name: waypoint
    istio.io/dataplane-mode: none
spec:
  nodeName: node-b
  serviceAccountName: waypoint
  containers:
    - name: istio-proxy
      image: waypoint
      ports: [{ name: mesh, containerPort: 15008 }]
status:
  podIP: 127.10.0.6
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: demo
spec:
  clusterIP: 127.30.0.6
  selector: { gateway.networking.k8s.io/gateway-name: waypoint }
  ports:
    - name: mesh
      port: 15008
      targetPort: 15008
`;

describe("on-demand Address lookups (ztunnel XDS_ON_DEMAND)", { timeout: 30_000 }, () => {
  let dir: string;
  let controlPlane: ControlPlane;
  const clients: XdsClient[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-on-demand-"));
    const meshDir = join(dir, "mesh");
    await cp(DEMO_MESH, meshDir, { recursive: true, filter: (src) => !/(web|waypoint)\.yaml$/.test(src) });
    await writeFile(join(meshDir, "waypoint-service.yaml"), WAYPOINT_SERVICE_YAML);
    controlPlane = await startControlPlane({
      meshDir,
      stateDir: join(dir, "state"),
      listen: "127.0.0.1:0",
      watchDebounceMs: 20,
      xdsDebounceMs: 5,
    });
  });

  after(async () => {
    for (const c of clients) c.close();
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function onDemandClient(node: string): Promise<XdsClient> {
    const client = createXdsClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      node: {
        id: `ztunnel~127.20.0.1~ztunnel-${node}.istio-system~istio-system.svc.cluster.local`,
        metadata: { NODE_NAME: node },
      },
      headers: { authorization: `Bearer ${await controlPlane.tokenFor(node)}` },
    });
    clients.push(client);
    client.watch(TypeUrl.address, { wildcard: false });
    await client.ready(TypeUrl.address);
    return client;
  }

  it("sends a node's pods unasked, and a Service VIP with the workloads behind it", async () => {
    const client = await onDemandClient("node-a");
    assert.deepEqual(
      [...client.resources(TypeUrl.address).keys()].sort(),
      ["Kubernetes//Pod/demo/sleep-0", "Kubernetes//Pod/demo/stranger"],
      "only node-a's pods before any lookup",
    );
    const result = await client.lookup(TypeUrl.address, ["/127.30.0.1", "/127.99.0.1"]);
    assert.equal(result.found.get("/127.30.0.1")?.name, ECHO_SVC);
    assert.deepEqual(result.missing, ["/127.99.0.1"]);
    assert.ok(client.get(TypeUrl.address, "Kubernetes//Pod/demo/echo-0")?.workload);
    assert.ok(client.get(TypeUrl.address, "Kubernetes//Pod/demo/echo-1")?.workload);
  });

  it("answers a pod IP with that pod only", async () => {
    const client = await onDemandClient("node-b");
    const before = client.resources(TypeUrl.address).size;
    const result = await client.lookup(TypeUrl.address, ["/127.10.0.2"]);
    assert.equal(result.found.get("/127.10.0.2")?.name, "Kubernetes//Pod/demo/sleep-0");
    assert.equal(client.resources(TypeUrl.address).size, before + 1);
    assert.equal(client.get(TypeUrl.address, ECHO_SVC), undefined);
  });

  it("answers a Service asked for by its namespace/hostname name, with the workloads behind it", async () => {
    const client = await onDemandClient("node-c");
    assert.equal(client.get(TypeUrl.address, WAYPOINT_SVC), undefined, "not sent unasked");
    const result = await client.lookup(TypeUrl.address, [
      WAYPOINT_SVC,
      "demo/nowhere.demo.svc.cluster.local",
    ]);
    assert.equal(
      result.found.get(WAYPOINT_SVC)?.resource.service?.hostname,
      "waypoint.demo.svc.cluster.local",
    );
    assert.deepEqual(result.missing, ["demo/nowhere.demo.svc.cluster.local"]);
    assert.ok(
      client.get(TypeUrl.address, "Kubernetes//Pod/demo/waypoint-0")?.workload,
      "its pod comes along",
    );
  });
});
