import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { describe, it } from "node:test";
import { ConnectionRegistry } from "./connections.js";

describe("ConnectionRegistry", () => {
  it("lists connections without their hooks and closes them through the caller's close", () => {
    const registry = new ConnectionRegistry();
    let closed = 0;
    const a = registry.add({
      direction: "outbound",
      source: "10.0.0.1",
      destination: "10.0.0.2:80",
      sourceIdentity: "spiffe://cluster.local/ns/a/sa/a",
      owner: "pod-a",
      close() {
        closed++;
      },
    });
    const b = registry.add({
      direction: "inbound",
      source: "10.0.0.3",
      destination: "10.0.0.2:80",
      destinationIdentity: "spiffe://cluster.local/ns/b/sa/b",
      policyRequest: () => ({}) as never,
      close() {
        closed += 10;
      },
    });
    assert.deepEqual(registry.summaries(), [
      {
        id: a,
        direction: "outbound",
        source: "10.0.0.1",
        destination: "10.0.0.2:80",
        sourceIdentity: "spiffe://cluster.local/ns/a/sa/a",
      },
      {
        id: b,
        direction: "inbound",
        source: "10.0.0.3",
        destination: "10.0.0.2:80",
        destinationIdentity: "spiffe://cluster.local/ns/b/sa/b",
      },
    ]);
    assert.equal(registry.connections()[0]?.owner, "pod-a");
    registry.closeAll("pod-a");
    assert.equal(closed, 1);
    registry.closeAll();
    assert.equal(closed, 12);
    registry.delete(a);
    assert.deepEqual(
      registry.connections().map((c) => c.id),
      [b],
    );
  });

  it("tracks a socket once however often it is handed in, and forgets it when it closes", async () => {
    const server = createServer((s) => s.on("error", () => {}));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const registry = new ConnectionRegistry();
      const socket: Socket = connect((server.address() as AddressInfo).port, "127.0.0.1");
      await once(socket, "connect");
      const before = socket.listenerCount("close");
      registry.trackSocket(socket);
      registry.trackSocket(socket, "pod-a"); // in-pod capture, then the outbound carry
      assert.equal(socket.listenerCount("close"), before + 1);
      assert.equal(registry.socketCount("pod-a"), 1);
      socket.destroy();
      await once(socket, "close");
      assert.equal(registry.socketCount(), 0);
      // A socket that is already gone is not tracked at all.
      registry.trackSocket(socket);
      assert.equal(registry.socketCount(), 0);
    } finally {
      server.close();
    }
  });
});
