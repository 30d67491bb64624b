import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { adsServiceDefinition, TypeUrl, typeRegistry, type Workload } from "@ambient/xds";
import * as grpc from "@grpc/grpc-js";
import { startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { controlPlaneChannel } from "./control-plane-channel.js";
import { createMeshState, type MeshState } from "./mesh-state.js";
import { noopLogger, noopMetrics } from "./telemetry.js";

const workload = {
  uid: "Kubernetes//Pod/demo/echo",
  name: "echo",
  namespace: "demo",
  addresses: [Uint8Array.from([127, 0, 0, 12])],
  tunnelProtocol: "HBONE",
  serviceAccount: "echo",
  node: "node-a",
} as unknown as Workload;

/**
 * An xDS server that answers the Address subscription at once and the Authorization one only when
 * told to, as a control plane whose policy push is late (or rejected) does.
 */
async function startSplitXds(cp: TestControlPlane) {
  const istiod = await cp.issue("spiffe://cluster.local/ns/istio-system/sa/istiod");
  let sendPolicies: () => void = () => {};
  let nonce = 0;
  const server = new grpc.Server();
  server.addService(adsServiceDefinition, {
    StreamAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
    DeltaAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      const answered = new Set<string>();
      const respond = (typeUrl: string, resources: { name: string; resource: unknown }[]) => {
        call.write(
          Buffer.from(
            typeRegistry.encode("envoy.service.discovery.v3.DeltaDiscoveryResponse", {
              typeUrl,
              nonce: String(++nonce),
              systemVersionInfo: "1",
              resources: resources.map((r) => ({
                name: r.name,
                version: "1",
                resource: typeRegistry.pack(typeUrl, r.resource as never),
              })),
            } as never),
          ),
        );
      };
      call.on("data", (buffer: Buffer) => {
        const request = typeRegistry.decode("envoy.service.discovery.v3.DeltaDiscoveryRequest", buffer) as {
          typeUrl: string;
        };
        if (answered.has(request.typeUrl)) return;
        answered.add(request.typeUrl);
        if (request.typeUrl === TypeUrl.address) {
          respond(TypeUrl.address, [{ name: workload.uid, resource: { workload } }]);
        } else if (request.typeUrl === TypeUrl.authorization) {
          sendPolicies = () => respond(TypeUrl.authorization, []);
        }
      });
      call.on("error", () => {});
      call.on("end", () => call.end());
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    sendPolicies: () => sendPolicies(),
    close: () => server.forceShutdown(),
  };
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((r) => setTimeout(r, 5));
}

describe("mesh state before the first policy push", { timeout: 30_000 }, () => {
  let cp: TestControlPlane;
  let xds: Awaited<ReturnType<typeof startSplitXds>>;
  let state: MeshState;

  before(async () => {
    cp = await startTestControlPlane();
    xds = await startSplitXds(cp);
  });
  after(async () => {
    state?.close();
    xds.close();
    await cp.close();
  });

  it("announces no change until workloads and policies are both in", async () => {
    state = createMeshState({
      address: xds.address,
      channel: controlPlaneChannel(cp.rootCertPem),
      token: "unused",
      clusterId: "Kubernetes",
      node: { id: "ztunnel~node-a", name: "node-a" },
      logger: noopLogger,
      metrics: noopMetrics,
    });
    const announced: string[] = [];
    state.onChange((kind) => announced.push(kind));
    let ready = false;
    void state.ready().then(() => {
      ready = true;
    });
    // The workloads are in, the policies are not: nothing may act on half a state (a node proxy
    // would open its pods' listeners with no policy to enforce).
    await until(() => state.store.findByAddress("127.0.0.12") !== undefined);
    assert.deepEqual(announced, []);
    assert.equal(ready, false);

    xds.sendPolicies();
    await state.ready();
    assert.equal(state.store.findByAddress("127.0.0.12")?.name, "echo");
  });
});
