import assert from "node:assert/strict";
import { resolve } from "node:path";
import { it } from "node:test";
import { controlPlaneChannel, startControlPlane } from "@ambient/example-control-plane";
import { createXdsClient, TypeUrl } from "@ambient/xds";

it("README example", { timeout: 30_000 }, async () => {
  const meshDir = resolve(import.meta.dirname, "../../../mesh");
  const cp = await startControlPlane({ meshDir, listen: "127.0.0.1:0", watch: false });
  const client = createXdsClient({
    address: cp.address,
    ...controlPlaneChannel(cp.rootCertPem),
    node: {
      id: "ztunnel~127.20.0.1~ztunnel-node-a.istio-system~istio-system.svc.cluster.local",
      metadata: { NODE_NAME: "node-a" },
    },
    headers: { authorization: `Bearer ${await cp.tokenFor("node-a")}` },
  });
  try {
    client.watch(TypeUrl.address);
    client.watch(TypeUrl.authorization);
    await client.ready();
    assert.equal(
      client.get(TypeUrl.address, "Kubernetes//Pod/demo/sleep-0")?.workload?.serviceAccount,
      "sleep",
    );
  } finally {
    client.close();
    await cp.close();
  }
});
