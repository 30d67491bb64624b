// The two-node mesh fixture leaves no listener behind: not after close (however often it is called),
// and not when its start fails part-way.
import assert from "node:assert/strict";
import { once } from "node:events";
import { connect } from "node:net";
import { describe, it } from "node:test";
import { socks5AddressOf, ZtunnelError } from "../src/index.js";
import type { TestControlPlane } from "./control-plane.js";
import { loopbackSubnet, startTwoNodeMesh, testWorkload } from "./fixtures.js";

/** Listening TCP sockets this process holds (control plane, proxies' node and pod listeners). */
function listeners(): number {
  return process.getActiveResourcesInfo().filter((kind) => kind === "TCPServerWrap").length;
}

/**
 * The listeners once closes have run their course: a server's "close" comes a tick before libuv
 * drops its handle from the process's resources, so this waits (bounded) for the count to settle.
 */
async function listenersAfterClose(expected: number): Promise<number> {
  const deadline = Date.now() + 2000;
  while (listeners() !== expected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return listeners();
}

/** Whether a TCP connection to `address` ("ip:port") is accepted. */
async function accepts(address: string): Promise<boolean> {
  const [host, port] = address.split(":");
  const socket = connect({ host, port: Number(port) });
  try {
    await once(socket, "connect");
    return true;
  } catch {
    return false;
  } finally {
    socket.destroy();
  }
}

describe("startTwoNodeMesh", { timeout: 60_000 }, () => {
  it("starts both proxies ready, and close (called twice) closes every listener", async () => {
    const before = listeners();
    const subnet = loopbackSubnet();
    const mesh = await startTwoNodeMesh({
      subnet,
      configure: (cp) => {
        cp.setWorkload(testWorkload("sleep", "node-a", `${subnet}.11`));
        cp.setWorkload(testWorkload("echo", "node-b", `${subnet}.12`));
      },
    });
    assert.ok(mesh.nodeA.isReady());
    assert.ok(mesh.nodeB.isReady());
    assert.equal(socks5AddressOf(mesh.nodeA).split(":")[0], `${subnet}.1`);
    assert.equal(socks5AddressOf(mesh.nodeB).split(":")[0], `${subnet}.2`);
    assert.ok(listeners() > before);
    const first = mesh.close();
    assert.equal(mesh.close(), first);
    await first;
    await mesh.close();
    assert.equal(await listenersAfterClose(before), before);
    assert.equal(await accepts(mesh.cp.address), false);
  });

  it("closes the control plane and node-a when node-b fails to start", async () => {
    const before = listeners();
    let cp: TestControlPlane | undefined;
    await assert.rejects(
      startTwoNodeMesh({
        subnet: loopbackSubnet(),
        configure: (plane) => {
          cp = plane;
        },
        nodeB: { nodeIp: "not-an-ip" },
      }),
      (error) => error instanceof ZtunnelError && error.code === "ERR_ZTUNNEL_INVALID_OPTION",
    );
    assert.ok(cp !== undefined, "the control plane had started");
    assert.equal(await listenersAfterClose(before), before);
    assert.equal(await accepts(cp.address), false);
  });

  it("closes everything when a proxy is not ready in time", async () => {
    const before = listeners();
    const subnet = loopbackSubnet();
    await assert.rejects(
      startTwoNodeMesh({
        subnet,
        configure: (cp) => cp.setWorkload(testWorkload("echo", "node-b", `${subnet}.12`)),
        // node-b refuses the control plane's certificate, so it never gets its state.
        nodeB: { controlPlaneIdentity: "spiffe://cluster.local/ns/elsewhere/sa/nobody" },
        readyTimeoutMs: 1000,
      }),
      /not both ready within 1000 ms/,
    );
    assert.equal(await listenersAfterClose(before), before);
  });
});
