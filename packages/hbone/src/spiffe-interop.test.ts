// Certificates from @ambient/spiffe's CA work end to end.
import assert from "node:assert/strict";
import { it } from "node:test";
import { SpiffeId } from "@ambient/spiffe";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import { readAll } from "../test/harness.js";
import { credentialsFromSvid } from "./credentials.js";
import { HboneError } from "./errors.js";
import { createHboneClient } from "./hbone-client.js";
import { createHboneServer } from "./hbone-server.js";

it("tunnels with SVIDs issued by @ambient/spiffe's certificate authority", async () => {
  const ca = await createCertificateAuthority({ trustDomain: "mesh.example" });
  const serverId = SpiffeId.fromIstio({
    trustDomain: "mesh.example",
    namespace: "ns",
    serviceAccount: "server",
  });
  const clientId = SpiffeId.fromIstio({
    trustDomain: "mesh.example",
    namespace: "ns",
    serviceAccount: "client",
  });
  const server = createHboneServer({
    ...credentialsFromSvid(await ca.issue({ spiffeId: serverId }), ca.trustBundle()),
    onTunnel: (t) => t.accept().end(t.peerIdentity.toString()),
  });
  const { port } = await server.listen({ port: 0, host: "127.0.0.1" });
  const client = createHboneClient(
    credentialsFromSvid(await ca.issue({ spiffeId: clientId }), ca.trustBundle()),
  );
  const tunnel = await client.connect({
    address: `127.0.0.1:${port}`,
    authority: "10.0.0.1:80",
    expectedIdentities: [serverId],
  });
  assert.ok(tunnel.peerIdentity.equals(serverId));
  tunnel.end();
  assert.equal((await readAll(tunnel)).toString(), clientId.toString());
  assert.throws(
    () =>
      credentialsFromSvid({ certChainPem: "", privateKeyPem: "" } as never, { rootsPem: () => [] } as never),
    (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_INVALID_ARGUMENT",
  );
  await client.close();
  await server.close();
});
