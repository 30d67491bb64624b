import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { after, before, describe, it } from "node:test";
import { CLIENT_ID, createTestPki, type TestPki } from "../test/fixtures.js";
import { readAll, startServer, type TestServer, until } from "../test/harness.js";
import { HboneError } from "./errors.js";
import { createHboneClient, type HboneClient } from "./hbone-client.js";
import type { InboundTunnel } from "./inbound-tunnel.js";
import { pipeTunnel } from "./pipe-tunnel.js";

const GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-eastwestgateway";
const FINAL_ID = "spiffe://cluster.local/ns/backend/sa/reviews";
const AUTHORITY = "reviews.backend.svc.cluster.local:9080";

describe("double HBONE through an east-west gateway", () => {
  let pki: TestPki;
  let finalServer: TestServer;
  let gateway: TestServer;
  let client: HboneClient;
  const gatewaySaw: InboundTunnel[] = [];

  before(async () => {
    pki = createTestPki();
    // The remote workload's ztunnel: terminates the inner mTLS + CONNECT.
    finalServer = await startServer(pki, {
      credentials: pki.issue(FINAL_ID),
      onTunnel: async (t) => {
        const stream = t.accept();
        const data = await readAll(stream);
        stream.end(
          JSON.stringify({
            got: data.toString(),
            authority: t.rawAuthority,
            network: t.forwardedNetwork,
            peer: t.peerIdentity.toString(),
          }),
        );
      },
    });
    // The gateway: terminates the outer tunnel and relays its raw bytes (the inner TLS) to port 15008
    // of the service's workload, without seeing inside.
    gateway = await startServer(pki, {
      credentials: pki.issue(GATEWAY_ID),
      onTunnel: (t) => {
        gatewaySaw.push(t);
        if (t.authority.kind !== "hostname") return t.refuse(400);
        const upstream = netConnect({ host: "127.0.0.1", port: finalServer.port, allowHalfOpen: true });
        upstream.once("connect", () => void pipeTunnel(t.accept(), upstream).catch(() => {}));
        upstream.once("error", () => t.state === "pending" && t.refuse(503));
      },
    });
    client = createHboneClient(pki.issue(CLIENT_ID));
  });
  after(async () => {
    await client.destroy();
    await gateway.server.close({ timeoutMs: 200 });
    await finalServer.server.close({ timeoutMs: 200 });
    pki.cleanup();
  });

  it("runs an inner mTLS + CONNECT inside the outer tunnel, end to end", async () => {
    const tunnel = await client.connectDouble({
      gateway: { address: gateway.address, expectedIdentities: [GATEWAY_ID] },
      authority: AUTHORITY,
      expectedIdentities: [FINAL_ID],
      forwardedNetwork: "network-a",
    });
    assert.equal(tunnel.peerIdentity.toString(), FINAL_ID, "identity from the inner handshake");
    tunnel.end("over two tunnels");
    const reply = JSON.parse((await readAll(tunnel)).toString()) as Record<string, string>;
    assert.deepEqual(reply, {
      got: "over two tunnels",
      authority: AUTHORITY,
      network: "network-a",
      peer: CLIENT_ID,
    });
    const outer = gatewaySaw.at(-1);
    assert.equal(outer?.rawAuthority, AUTHORITY);
    assert.equal(outer?.forwardedNetwork, undefined, "x-forwarded-network only on the inner CONNECT");
    assert.equal(outer?.peerIdentity.toString(), CLIENT_ID);
    // The inner session is not pooled: it goes away with its tunnel; the outer connection stays pooled.
    await until(
      () => client.stats().innerSessions === 0 && client.stats().streams === 0,
      "inner session closed",
    );
    assert.equal(client.stats().connections, 1);
  });

  it("each double tunnel gets its own inner handshake while sharing the outer connection", async () => {
    let handshakes = 0;
    const onSecure = () => handshakes++;
    finalServer.server.nodeServer.on("secureConnection", onSecure);
    const open = () =>
      client.connectDouble({
        gateway: { address: gateway.address, expectedIdentities: [GATEWAY_ID] },
        authority: AUTHORITY,
        expectedIdentities: [FINAL_ID],
      });
    const [a, b] = await Promise.all([open(), open()]);
    assert.equal(handshakes, 2);
    assert.equal(client.stats().connections, 1, "one pooled outer connection");
    assert.equal(client.stats().innerSessions, 2);
    for (const t of [a, b]) {
      t.end("x");
      await readAll(t);
    }
    finalServer.server.nodeServer.off("secureConnection", onSecure);
    await until(() => client.stats().innerSessions === 0, "inner sessions closed");
  });

  it("verifies the final identity in the inner handshake", async () => {
    await assert.rejects(
      client.connectDouble({
        gateway: { address: gateway.address, expectedIdentities: [GATEWAY_ID] },
        authority: AUTHORITY,
        expectedIdentities: ["spiffe://cluster.local/ns/backend/sa/not-reviews"],
      }),
      (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_IDENTITY",
    );
    await until(() => client.stats().streams === 0, "outer tunnel released");
  });

  it("reports a gateway refusal of the outer CONNECT", async () => {
    await assert.rejects(
      client.connectDouble({
        gateway: { address: gateway.address, expectedIdentities: [GATEWAY_ID] },
        authority: "10.0.0.1:80",
        expectedIdentities: [FINAL_ID],
      }),
      (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_REFUSED" && e.status === 400,
    );
  });

  it("rejects a missing gateway with ERR_HBONE_INVALID_ARGUMENT", async () => {
    await assert.rejects(
      client.connectDouble({ authority: AUTHORITY, expectedIdentities: [FINAL_ID] } as never),
      (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_INVALID_ARGUMENT",
    );
  });
});
