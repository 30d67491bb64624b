// Where the SOCKS5 listener opens. In node mode (the local mesh) pods reach it at the node IP. In
// in-pod and dedicated modes pods are captured instead, and a SOCKS5 dial would leave from the
// pod's IP in the proxy's own namespace, where that address does not exist: no listener is opened
// there, as Istio's ztunnel opens none unless asked, so no pod can reach one.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { loopbackSubnet } from "../test/fixtures.js";
import { type RunningZtunnel, startZtunnel, type ZtunnelOptions } from "./ztunnel.js";

describe("SOCKS5 listener", () => {
  const nodeIp = `${loopbackSubnet()}.1`;
  let cp: TestControlPlane;
  const running: RunningZtunnel[] = [];

  before(async () => {
    cp = await startTestControlPlane();
  });
  after(async () => {
    await Promise.all(running.map((z) => z.close()));
    await cp.close();
  });

  const start = async (mode: Partial<ZtunnelOptions>): Promise<RunningZtunnel> => {
    const ztunnel = await startZtunnel({
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      nodeName: "node-a",
      nodeIp,
      token: await cp.tokenFor("node-a"),
      ...mode,
    });
    running.push(ztunnel);
    return ztunnel;
  };

  it("opens on the node IP in node mode", async () => {
    const ztunnel = await start({});
    assert.match(String(ztunnel.addresses.socks5), new RegExp(`^${nodeIp.replaceAll(".", "\\.")}:\\d+$`));
  });

  it("is not opened in in-pod mode, where pods are captured", async () => {
    const ztunnel = await start({ inPod: {} });
    assert.equal(ztunnel.addresses.socks5, undefined);
    // Two such proxies on one host (the namespace mesh) do not contend for a port either.
    const other = await start({ inPod: {}, ports: { admin: 0, metrics: 0, readiness: 0, socks5: 15080 } });
    assert.equal(other.addresses.socks5, undefined);
  });
});
