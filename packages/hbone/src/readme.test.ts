// The README's embedding example, run as written (ports are ephemeral here).
import assert from "node:assert/strict";
import { connect, createServer } from "node:net";
import { it } from "node:test";
import { CLIENT_ID, createTestPki, SERVER_ID } from "../test/fixtures.js";
import { readAll } from "../test/harness.js";
import { createHboneClient, createHboneServer, pipeTunnel } from "./index.js";

it("README example: a server forwarding tunnels to local TCP, a client opening one", async () => {
  const pki = createTestPki();
  const { key, certChain, trustBundle } = pki.issue(SERVER_ID);
  const clientSvid = pki.issue(CLIENT_ID);
  const app = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
  const appPort = (app.address() as { port: number }).port;

  // --- README ---
  const server = createHboneServer({
    key,
    certChain,
    trustBundle,
    onTunnel: (tunnel) => {
      const upstream = connect({
        host: tunnel.authority.host,
        port: tunnel.authority.port,
        allowHalfOpen: true,
      });
      upstream.once("connect", () => pipeTunnel(tunnel.accept(), upstream).catch(() => {}));
      upstream.once("error", () => tunnel.state === "pending" && tunnel.refuse(503));
    },
  });
  const { port } = await server.listen({ port: 0, host: "127.0.0.1" });

  const client = createHboneClient({ key: clientSvid.key, certChain: clientSvid.certChain, trustBundle });
  const tunnel = await client.connect({
    address: `127.0.0.1:${port}`,
    authority: `127.0.0.1:${appPort}`,
    expectedIdentities: ["spiffe://cluster.local/ns/default/sa/server"],
  });
  tunnel.end("hello");
  // --- end ---

  assert.equal((await readAll(tunnel)).toString(), "hello");
  await client.close();
  await server.close();
  await new Promise((r) => app.close(r));
  pki.cleanup();
});
