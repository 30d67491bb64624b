// Objects of a kind the mesh reads but of another API group (an Istio `networking.istio.io` Gateway
// beside a Gateway API Gateway of the same name, a Knative Service beside a Kubernetes Service): the
// Kubernetes source never lists them, so the folder does not serve them either, and they neither
// replace nor clash with the mesh's own objects.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "../src/index.js";

const mesh = `
apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: demo }
spec:
  selector: { istio: ingressgateway }
  servers: [{ port: { number: 80, name: http, protocol: HTTP }, hosts: ["*"] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: demo, labels: { istio.io/waypoint-for: service } }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
status:
  addresses: [{ type: IPAddress, value: 127.10.31.6 }]
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: demo, labels: { istio.io/use-waypoint: waypoint } }
spec:
  clusterIP: 127.31.0.10
  selector: { app: api }
  ports: [{ name: http, port: 80, targetPort: 8080 }]
`;

const knative = `
apiVersion: serving.knative.dev/v1
kind: Service
metadata: { name: api, namespace: demo }
spec:
  template: { spec: { containers: [{ image: example.com/api }] } }
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: { name: other, namespace: demo }
spec:
  template: { spec: { containers: [{ image: example.com/other }] } }
`;

describe("objects of a mesh kind from another API group", { timeout: 30_000 }, () => {
  let dir: string;
  let cp: ControlPlane;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-foreign-"));
    await writeFile(join(dir, "a-mesh.yaml"), mesh);
    await writeFile(join(dir, "b-knative.yaml"), knative);
    cp = await startControlPlane({ meshDir: dir, listen: "127.0.0.1:0", watch: false });
  });
  after(async () => {
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("are not served and do not hide the mesh's own objects of the same name", () => {
    assert.deepEqual(cp.errors(), []);
    assert.deepEqual(cp.config().issues, []);
    const services = cp.config().services.map((s) => s.key);
    assert.deepEqual(services, ["demo/api.demo.svc.cluster.local"]);
    const api = cp.config().services[0]?.service;
    assert.deepEqual(
      api?.ports?.map((p) => [p.servicePort, p.targetPort]),
      [[80, 8080]],
    );
    // The Gateway API waypoint is the one in force.
    const waypoint = api?.waypoint?.address;
    assert.deepEqual(waypoint && [...(waypoint.address ?? [])], [127, 10, 31, 6]);
  });
});
