// Runs the example at the top of README.md (keep the two in sync).
import assert from "node:assert/strict";
import { it } from "node:test";
import { createXdsClient, createXdsServer, TypeUrl } from "./index.js";

it("README example: serve a Workload and watch it from a client", { timeout: 20_000 }, async () => {
  const server = createXdsServer();
  const uid = "Kubernetes//Pod/shop/web-0";
  const workload = { uid, name: "web-0", namespace: "shop", addresses: [new Uint8Array([10, 0, 0, 7])] };
  server.cache.set(TypeUrl.address, uid, { workload }, { aliases: ["default/10.0.0.7"] });
  const port = await server.listen("127.0.0.1:0");

  const client = createXdsClient({
    address: `127.0.0.1:${port}`,
    node: { id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local" },
  });
  client.watch(TypeUrl.address); // Delta ADS, wildcard: what ztunnel does
  await client.ready();
  const name = client.get(TypeUrl.address, uid)?.workload?.name; // "web-0"

  assert.equal(name, "web-0");
  client.close();
  await server.close();
});
