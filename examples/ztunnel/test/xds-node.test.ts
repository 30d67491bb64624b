// How the ztunnel names itself to the control plane, as Istio's ztunnel does (src/xds/client.rs): node
// id `ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local` and metadata NAME, NAMESPACE,
// INSTANCE_IPS and NODE_NAME. istiod takes the proxy's namespace from them and refuses a token of
// another namespace, so a ztunnel outside istio-system must say where it runs.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { startZtunnel } from "../src/index.js";
import { startTestControlPlane } from "./control-plane.js";
import { loopbackSubnet } from "./fixtures.js";

describe("the ztunnel's xDS node", { timeout: 60_000 }, () => {
  for (const pod of [undefined, { name: "ztunnel-x7k2p", namespace: "kube-system" }]) {
    it(`names ${pod === undefined ? "the default pod" : "its pod"} in the node id and metadata`, async () => {
      const cp = await startTestControlPlane();
      const ip = `${loopbackSubnet()}.1`;
      const ztunnel = await startZtunnel({
        controlPlaneAddress: cp.address,
        rootCertPem: cp.rootCertPem,
        ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
        nodeName: "node-a",
        nodeIp: ip,
        token: await cp.tokenFor("node-a"),
        ...(pod === undefined ? {} : { pod }),
      });
      try {
        await ztunnel.ready;
        const { name, namespace } = pod ?? { name: "ztunnel-node-a", namespace: "istio-system" };
        assert.ok(cp.xdsNodes.length > 0);
        for (const node of cp.xdsNodes) {
          assert.equal(node.id, `ztunnel~${ip}~${name}.${namespace}~${namespace}.svc.cluster.local`);
          assert.equal(node.metadata.NAME, name);
          assert.equal(node.metadata.NAMESPACE, namespace);
          assert.equal(node.metadata.INSTANCE_IPS, ip);
          assert.equal(node.metadata.NODE_NAME, "node-a");
        }
      } finally {
        await ztunnel.close();
        await cp.close();
      }
    });
  }

  it("refuses a pod that is not a name and a namespace", async () => {
    await assert.rejects(
      startZtunnel({
        controlPlaneAddress: "127.0.0.1:1",
        rootCertPem: "unused",
        nodeName: "node-a",
        nodeIp: "127.0.0.1",
        token: "t",
        pod: { name: "Not A Name", namespace: "x" },
      }),
      { code: "ERR_ZTUNNEL_INVALID_OPTION" },
    );
  });
});
