import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { readAll, startServer, type TestServer } from "../test/harness.js";
import { createHboneClient } from "./hbone-client.js";

describe("connectSocket", () => {
  let pki: TestPki;
  let srv: TestServer;

  before(async () => {
    pki = createTestPki();
    srv = await startServer(pki);
  });

  after(async () => {
    await srv.server.close({ timeoutMs: 1000 });
    pki.cleanup();
  });

  it("opens each pooled connection with the caller's socket, then TLS over it", async () => {
    const calls: { target: { host: string; port: number }; source: string | undefined }[] = [];
    const client = createHboneClient({
      ...pki.issue(CLIENT_ID),
      connectSocket: (target, source) => {
        calls.push({ target, source });
        return connect({ host: target.host, port: target.port });
      },
    });
    try {
      const serverSide = srv.nextTunnel().then(async (t) => {
        const stream = t.accept();
        stream.end(Buffer.concat([Buffer.from("echo:"), await readAll(stream)]));
      });
      const tunnel = await client.connect({
        address: srv.address,
        authority: "10.0.0.1:8080",
        expectedIdentities: [SERVER_ID],
        sourceAddress: "127.0.0.1",
      });
      tunnel.end("hi");
      assert.equal((await readAll(tunnel)).toString(), "echo:hi");
      await serverSide;
      const [host, port] = srv.address.split(":");
      assert.deepEqual(calls, [{ target: { host, port: Number(port) }, source: "127.0.0.1" }]);
    } finally {
      await client.destroy();
    }
  });

  it("reports the socket's connection error as the dial's", async () => {
    const client = createHboneClient({
      ...pki.issue(CLIENT_ID),
      connectSocket: () => connect({ host: "127.0.0.1", port: 1 }),
    });
    try {
      await assert.rejects(
        client.connect({ address: "127.0.0.1:1", authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] }),
        (err: Error & { code?: string }) => err.code !== undefined,
      );
    } finally {
      await client.destroy();
    }
  });
});
