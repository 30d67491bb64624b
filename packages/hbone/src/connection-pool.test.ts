import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { after, before, describe, it } from "node:test";
import type { TLSSocket } from "node:tls";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { readAll, startServer, until, watchFrames } from "../test/harness.js";
import { recordingMetrics } from "../test/recording-metrics.js";
import { poolKeyString } from "./connection-pool.js";
import { createHboneClient } from "./hbone-client.js";
import type { TunnelStream } from "./tunnel-stream.js";

const TARGET = "10.2.0.1:80";

describe("connection pool", () => {
  let pki: TestPki;
  before(() => {
    pki = createTestPki();
  });
  after(() => pki.cleanup());

  it("keys on source identity, sorted destination identities, destination and source IP", () => {
    const base = {
      sourceIdentity: CLIENT_ID,
      destinationIdentities: ["spiffe://td/b", "spiffe://td/a"],
      destination: "10.0.0.1:15008",
      sourceAddress: "",
    };
    const key = poolKeyString(base);
    assert.equal(poolKeyString({ ...base, destinationIdentities: ["spiffe://td/a", "spiffe://td/b"] }), key);
    assert.notEqual(poolKeyString({ ...base, sourceIdentity: "spiffe://td/other" }), key);
    assert.notEqual(poolKeyString({ ...base, destination: "10.0.0.2:15008" }), key);
    assert.notEqual(poolKeyString({ ...base, sourceAddress: "127.0.0.2" }), key);
  });

  it("puts at most 100 streams on a connection and dials one connection at a time per key", async () => {
    const srv = await startServer(pki, { onTunnel: (t) => void t.accept().on("error", () => {}) });
    let handshakes = 0;
    srv.server.nodeServer.on("secureConnection", () => handshakes++);
    const metrics = recordingMetrics();
    const client = createHboneClient({ ...pki.issue(CLIENT_ID), metrics });
    const tunnels = await Promise.all(
      Array.from({ length: 150 }, () =>
        client.connect({ address: srv.address, authority: TARGET, expectedIdentities: [SERVER_ID] }),
      ),
    );
    assert.equal(handshakes, 2, "150 concurrent tunnels need exactly two connections");
    assert.deepEqual(client.stats(), { connections: 2, streams: 150, innerSessions: 0 });
    assert.equal(metrics.value("hbone_client_connections"), 2);
    assert.equal(metrics.value("hbone_client_streams"), 150);
    assert.equal(srv.server.stats().tunnels, 150);
    for (const t of tunnels) t.destroy();
    await until(() => client.stats().streams === 0, "streams released");
    assert.equal(metrics.value("hbone_client_streams"), 0);
    // Warm pool: the next tunnel reuses a connection.
    const again = await client.connect({
      address: srv.address,
      authority: TARGET,
      expectedIdentities: [SERVER_ID],
    });
    assert.equal(handshakes, 2);
    again.destroy();
    await client.close();
    assert.equal(metrics.value("hbone_client_connections"), 0);
    await srv.server.close({ timeoutMs: 100 });
  });

  it("honours a peer's lower SETTINGS_MAX_CONCURRENT_STREAMS", async () => {
    const srv = await startServer(pki, {
      maxConcurrentStreams: 5,
      onTunnel: (t) => void t.accept().on("error", () => {}),
    });
    const client = createHboneClient(pki.issue(CLIENT_ID));
    // The first tunnel learns the peer's SETTINGS; the next seven need a second connection.
    const first = await client.connect({
      address: srv.address,
      authority: TARGET,
      expectedIdentities: [SERVER_ID],
    });
    const rest = await Promise.all(
      Array.from({ length: 7 }, () =>
        client.connect({ address: srv.address, authority: TARGET, expectedIdentities: [SERVER_ID] }),
      ),
    );
    assert.equal(client.stats().connections, 2);
    for (const t of [first, ...rest]) t.destroy();
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("a burst on a new connection stays within the peer's SETTINGS_MAX_CONCURRENT_STREAMS", async () => {
    const srv = await startServer(pki, {
      maxConcurrentStreams: 5,
      onTunnel: (t) => void t.accept().on("error", () => {}),
    });
    const client = createHboneClient(pki.issue(CLIENT_ID));
    // All eight callers wait for the same first dial: five fit on it, three need a second connection.
    const tunnels = await Promise.all(
      Array.from({ length: 8 }, () =>
        client.connect({ address: srv.address, authority: TARGET, expectedIdentities: [SERVER_ID] }),
      ),
    );
    assert.equal(client.stats().connections, 2);
    assert.equal(srv.server.stats().tunnels, 8);
    for (const t of tunnels) t.destroy();
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("uses separate connections per source identity and per destination identity set", async () => {
    const srv = await startServer(pki, { onTunnel: (t) => void t.accept().on("error", () => {}) });
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const other = pki.issue("spiffe://cluster.local/ns/default/sa/other-client");
    const open = (extra: object) =>
      client.connect({ address: srv.address, authority: TARGET, expectedIdentities: [SERVER_ID], ...extra });
    const tunnels: TunnelStream[] = [];
    tunnels.push(await open({}));
    tunnels.push(await open({ expectedIdentities: [SERVER_ID, SERVER_ID] }));
    assert.equal(client.stats().connections, 1, "same identity set, same connection");
    tunnels.push(await open({ credentials: other }));
    assert.equal(client.stats().connections, 2);
    tunnels.push(await open({ expectedIdentities: [SERVER_ID, "spiffe://cluster.local/ns/default/sa/alt"] }));
    assert.equal(client.stats().connections, 3);
    tunnels.push(await open({ sourceAddress: "127.0.0.2" }));
    assert.equal(client.stats().connections, 4);
    for (const t of tunnels) t.destroy();
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("closes idle connections after poolIdleTimeoutMs", async () => {
    const srv = await startServer(pki, { onTunnel: (t) => t.accept().end() });
    const client = createHboneClient({ ...pki.issue(CLIENT_ID), poolIdleTimeoutMs: 50 });
    const t = await client.connect({
      address: srv.address,
      authority: TARGET,
      expectedIdentities: [SERVER_ID],
    });
    t.resume();
    t.end();
    await until(() => client.stats().connections === 0, "idle connection closed");
    await until(() => srv.server.stats().connections === 0, "server side closed too");
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("closes after poolIdleTimeoutMs a connection whose only caller gave up while it was dialed", async () => {
    const srv = await startServer(pki);
    const controller = new AbortController();
    const client = createHboneClient({
      ...pki.issue(CLIENT_ID),
      poolIdleTimeoutMs: 50,
      connectSocket: (target) => {
        // The caller leaves while the shared dial is under way; the dial itself goes on.
        controller.abort();
        return netConnect({ host: target.host, port: target.port });
      },
    });
    await assert.rejects(
      client.connect({
        address: srv.address,
        authority: TARGET,
        expectedIdentities: [SERVER_ID],
        signal: controller.signal,
      }),
      (e: unknown) => (e as { code?: string }).code === "ERR_HBONE_ABORTED",
    );
    await until(() => srv.server.stats().connections === 1, "the dial reached the server");
    await until(() => srv.server.stats().connections === 0, "the unused connection closed");
    assert.equal(client.stats().connections, 0);
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("evicts a broken connection and dials a new one", async () => {
    const sessions: TLSSocket[] = [];
    const srv = await startServer(pki, { onTunnel: (t) => t.accept().end("hi") });
    srv.server.nodeServer.on("secureConnection", (s: TLSSocket) => sessions.push(s));
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const t1 = await client.connect({
      address: srv.address,
      authority: TARGET,
      expectedIdentities: [SERVER_ID],
    });
    t1.resume();
    t1.end();
    await until(() => client.stats().streams === 0, "released");
    // The server sees the client's END_STREAM a moment later; only then is nothing left to lose.
    await until(() => srv.server.stats().tunnels === 0, "server side finished");
    for (const s of sessions) s.destroy();
    await until(() => client.stats().connections === 0, "broken connection evicted");
    const t2 = await client.connect({
      address: srv.address,
      authority: TARGET,
      expectedIdentities: [SERVER_ID],
    });
    assert.equal(sessions.length, 2);
    t2.end();
    assert.equal((await readAll(t2)).toString(), "hi");
    await until(() => client.stats().streams === 0, "released");
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("sends keepalive PINGs on idle connections", async () => {
    let pings = 0;
    const srv = await startServer(pki, { onTunnel: (t) => void t.accept().on("error", () => {}) });
    srv.server.nodeServer.on("secureConnection", (s: TLSSocket) =>
      watchFrames(s, (type, flags) => {
        if (type === 0x6 && (flags & 0x1) === 0) pings++;
      }),
    );
    const client = createHboneClient({ ...pki.issue(CLIENT_ID), keepaliveIntervalMs: 20 });
    const t = await client.connect({
      address: srv.address,
      authority: TARGET,
      expectedIdentities: [SERVER_ID],
    });
    await until(() => pings >= 2, "two pings");
    t.destroy();
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });
});
