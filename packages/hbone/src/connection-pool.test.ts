import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { EventEmitter } from "node:events";
import { createSecureServer, constants as h2c, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { connect as netConnect } from "node:net";
import { after, before, describe, it } from "node:test";
import type { TLSSocket } from "node:tls";
import { SpiffeId, type X509Svid } from "@ambient/spiffe";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { readAll, startServer, until, watchFrames } from "../test/harness.js";
import { recordingMetrics } from "../test/recording-metrics.js";
import { ConnectionPool, poolKeyString } from "./connection-pool.js";
import type { Http2Connection } from "./h2/connection.js";
import { createHboneClient } from "./hbone-client.js";
import { createHboneServer } from "./hbone-server.js";
import type { TunnelStream } from "./tunnel-stream.js";

const TARGET = "10.2.0.1:80";

describe("connection pool", () => {
  let pki: TestPki;
  before(() => {
    pki = createTestPki();
  });
  after(() => pki.cleanup());

  it("keys on source identity, sorted destination identities, destination, source IP, roots and certificate", () => {
    const base = {
      sourceIdentity: CLIENT_ID,
      destinationIdentities: ["spiffe://td/b", "spiffe://td/a"],
      destination: "10.0.0.1:15008",
      sourceAddress: "",
      trustRoots: "1",
      certificate: "7",
    };
    const key = poolKeyString(base);
    assert.equal(poolKeyString({ ...base, destinationIdentities: ["spiffe://td/a", "spiffe://td/b"] }), key);
    assert.notEqual(poolKeyString({ ...base, sourceIdentity: "spiffe://td/other" }), key);
    assert.notEqual(poolKeyString({ ...base, destination: "10.0.0.2:15008" }), key);
    assert.notEqual(poolKeyString({ ...base, sourceAddress: "127.0.0.2" }), key);
    assert.notEqual(poolKeyString({ ...base, trustRoots: "2" }), key);
    assert.notEqual(poolKeyString({ ...base, certificate: "8" }), key);
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

  it("never lets a dial ride on a connection verified against other trust roots", async () => {
    const srv = await startServer(pki, { onTunnel: (t) => void t.accept().on("error", () => {}) });
    const own = pki.issue(CLIENT_ID);
    const client = createHboneClient(own);
    const open = (trustBundle: string | string[]) =>
      client.connect({
        address: srv.address,
        authority: TARGET,
        expectedIdentities: [SERVER_ID],
        credentials: { ...own, trustBundle },
      });
    const tunnels: TunnelStream[] = [await open(pki.rootPem)];
    assert.equal(client.stats().connections, 1);
    // Same identity and certificate, but roots that did not sign the server's certificate.
    await assert.rejects(
      open(pki.otherRootPem),
      (e: unknown) => (e as { code?: string }).code === "ERR_HBONE_TLS",
    );
    // The same roots in another credentials object (and another shape) share the connection...
    tunnels.push(await open([pki.rootPem]));
    assert.equal(client.stats().connections, 1);
    // ...other roots get a connection of their own even when they trust the server as well.
    tunnels.push(await open([pki.otherRootPem, pki.rootPem]));
    assert.equal(client.stats().connections, 2);
    for (const t of tunnels) t.destroy();
    await client.destroy();
    await srv.server.close({ timeoutMs: 100 });
  });

  it("verifies a dial against the roots a credentials object holds now, after they changed in place", async () => {
    // The server's certificate is from the other root; it trusts the client's root as well.
    const srv = await startServer(pki, {
      credentials: pki.issue(SERVER_ID, { otherRoot: true }),
      trustBundle: [pki.rootPem, pki.otherRootPem],
      onTunnel: (t) => void t.accept().on("error", () => {}),
    });
    const credentials = { ...pki.issue(CLIENT_ID), trustBundle: [pki.rootPem, pki.otherRootPem] };
    const client = createHboneClient(credentials);
    const tunnels: TunnelStream[] = [];
    const open = async () => {
      const t = await client.connect({
        address: srv.address,
        authority: TARGET,
        expectedIdentities: [SERVER_ID],
        credentials,
      });
      t.on("error", () => {});
      tunnels.push(t);
    };
    try {
      await open();
      // The other root leaves the same object: the server's certificate is no longer trusted.
      credentials.trustBundle = [pki.rootPem];
      await assert.rejects(open(), (e: unknown) => (e as { code?: string }).code === "ERR_HBONE_TLS");
      assert.equal(client.stats().connections, 1);
      // And comes back: the connection verified against both roots is used again.
      credentials.trustBundle = [pki.rootPem, pki.otherRootPem];
      await open();
      assert.equal(client.stats().connections, 1);
    } finally {
      for (const t of tunnels) t.destroy();
      await client.destroy();
      await srv.server.close({ timeoutMs: 100 });
    }
  });

  it("presents the certificate a credentials object holds now, after it changed in place", async () => {
    const ca = await createCertificateAuthority({ backdateSeconds: 0 });
    const serverSvid = await ca.issue({ spiffeId: SERVER_ID });
    const server = createHboneServer({
      key: serverSvid.privateKeyPem,
      certChain: serverSvid.certChainPem,
      trustBundle: ca.rootCertPem(),
      onTunnel: (t) => void t.accept().on("error", () => {}),
    });
    const presented: string[] = [];
    server.nodeServer.on("secureConnection", (s: TLSSocket) =>
      presented.push(s.getPeerX509Certificate()?.fingerprint256 ?? ""),
    );
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    const first = await ca.issue({ spiffeId: CLIENT_ID });
    const credentials = {
      key: first.privateKeyPem,
      certChain: first.certChainPem,
      trustBundle: ca.rootCertPem(),
    };
    const client = createHboneClient(credentials);
    const open = () =>
      client.connect({
        address: `127.0.0.1:${port}`,
        authority: TARGET,
        expectedIdentities: [SERVER_ID],
        credentials,
      });
    const tunnels: TunnelStream[] = [];
    try {
      tunnels.push(await open());
      const renewed = await ca.issue({ spiffeId: CLIENT_ID });
      credentials.key = renewed.privateKeyPem;
      credentials.certChain = renewed.certChainPem;
      tunnels.push(await open());
      assert.deepEqual(presented, [
        new X509Certificate(first.certChainPem).fingerprint256,
        new X509Certificate(renewed.certChainPem).fingerprint256,
      ]);
    } finally {
      for (const t of tunnels) t.destroy();
      await client.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("dials anew for a renewed certificate, and takes no stream on a connection whose certificate expired", async () => {
    const ca = await createCertificateAuthority({ backdateSeconds: 0 });
    const credentialsOf = (svid: X509Svid) => ({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: ca.rootCertPem(),
    });
    const server = createHboneServer({
      ...credentialsOf(await ca.issue({ spiffeId: SERVER_ID })),
      onTunnel: (t) => void t.accept().on("error", () => {}),
    });
    let handshakes = 0;
    server.nodeServer.on("secureConnection", () => handshakes++);
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    const old = credentialsOf(await ca.issue({ spiffeId: CLIENT_ID, ttlSeconds: 2 }));
    const client = createHboneClient(old);
    const open = (credentials: typeof old) =>
      client.connect({
        address: `127.0.0.1:${port}`,
        authority: TARGET,
        expectedIdentities: [SERVER_ID],
        credentials,
      });
    const tunnels: TunnelStream[] = [];
    try {
      tunnels.push(await open(old));
      tunnels.push(await open(old));
      assert.deepEqual([client.stats().connections, handshakes], [1, 1]);
      // The renewed certificate proves itself in a handshake of its own.
      const renewed = credentialsOf(await ca.issue({ spiffeId: CLIENT_ID }));
      tunnels.push(await open(renewed));
      assert.deepEqual([client.stats().connections, handshakes], [2, 2]);
      // Past the old certificate's notAfter its connection (busy with two tunnels) takes no new stream:
      // a dial with it fails as a fresh handshake would.
      const expires = Date.parse(new X509Certificate(old.certChain).validTo);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, expires - Date.now() + 50)));
      await assert.rejects(open(old));
      tunnels.push(await open(renewed));
      assert.equal(handshakes, 2, "the renewed certificate's connection is reused");
    } finally {
      for (const t of tunnels) t.destroy();
      await client.destroy();
      await server.close({ timeoutMs: 100 });
    }
  });

  it("opens no stream while the peer's SETTINGS_MAX_CONCURRENT_STREAMS is 0, and no further connections", async () => {
    const session = Object.assign(new EventEmitter(), {
      remoteSettings: { maxConcurrentStreams: 0 as number | undefined },
      closed: false,
      destroyed: false,
      close() {
        this.closed = true;
      },
      destroy() {
        this.destroyed = true;
      },
    });
    const gauge = { inc() {}, dec() {}, set() {} };
    const pool = new ConnectionPool({
      maxStreamsPerConnection: 100,
      idleTimeoutMs: 0,
      streamWaitTimeoutMs: 60_000,
      connectionsGauge: gauge,
      streamsGauge: gauge,
    });
    let dials = 0;
    const dial = () => {
      dials++;
      // Only the first dial completes: a pool dialing again and again would otherwise spin forever.
      return dials === 1
        ? Promise.resolve({
            session: session as unknown as Http2Connection,
            peerIdentity: SpiffeId.parse(SERVER_ID),
          })
        : new Promise<never>(() => {});
    };
    let acquired = false;
    const pending = pool.acquire("k", dial).then((conn) => {
      acquired = true;
      return conn;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(acquired, false, "no stream slot while the peer allows none");
    assert.equal(dials, 1, "a peer allowing no streams is not dialed again and again");
    assert.equal(pool.streamCount, 0);
    // A caller that gives up meanwhile leaves at once.
    const controller = new AbortController();
    const leaving = pool.acquire("k", dial, controller.signal);
    controller.abort(new Error("gave up"));
    await assert.rejects(leaving, /gave up/);
    // A later SETTINGS raising the limit makes the connection usable.
    session.remoteSettings.maxConcurrentStreams = 2;
    session.emit("remoteSettings", session.remoteSettings);
    const conn = await pending;
    assert.equal(conn.maxStreams, 2);
    assert.equal(pool.streamCount, 1);
    assert.equal(dials, 1);
    pool.release(conn);
    const closing = pool.close(true);
    session.emit("close");
    await closing;
  });

  it("waits for a peer advertising SETTINGS_MAX_CONCURRENT_STREAMS 0 to raise it", async () => {
    const server = pki.issue(SERVER_ID);
    const h2 = createSecureServer({
      key: server.key,
      cert: server.certChain,
      ca: server.trustBundle,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
      settings: { maxConcurrentStreams: 0 },
    });
    const sessions: ServerHttp2Session[] = [];
    h2.on("session", (s: ServerHttp2Session) => sessions.push(s));
    let streams = 0;
    h2.on("stream", (stream) => {
      streams++;
      stream.respond({ [h2c.HTTP2_HEADER_STATUS]: 200 });
      stream.on("error", () => {});
    });
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(h2.address() as AddressInfo).port}`;
    const client = createHboneClient(pki.issue(CLIENT_ID));
    let outcome: unknown;
    const pending = client.connect({ address, authority: TARGET, expectedIdentities: [SERVER_ID] }).then(
      (t) => {
        outcome = t;
        return t;
      },
      (err: unknown) => {
        outcome = err;
        throw err;
      },
    );
    pending.catch(() => {});
    await until(() => client.stats().connections === 1 || outcome !== undefined, "connection pooled");
    assert.equal(outcome, undefined, "the CONNECT waits for the peer to allow a stream");
    // Round trips on the connection: a CONNECT sent regardless would have been refused by now.
    for (let i = 0; i < 3; i++) {
      await new Promise<void>((resolve, reject) =>
        sessions[0]?.ping((err) => (err ? reject(err) : resolve())),
      );
    }
    assert.equal(outcome, undefined, "the CONNECT waits for the peer to allow a stream");
    assert.equal(streams, 0);
    sessions[0]?.settings({ maxConcurrentStreams: 10 });
    const tunnel = await pending;
    assert.equal(streams, 1);
    assert.equal(client.stats().connections, 1);
    tunnel.destroy();
    await client.destroy();
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve) => h2.close(() => resolve()));
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

  it("takes no stream on a connection that failed before its close reached the pool", async () => {
    const sessions: TLSSocket[] = [];
    const srv = await startServer(pki, {
      onTunnel: (t) => {
        const s = t.accept();
        s.on("error", () => {});
        s.resume();
      },
    });
    srv.server.nodeServer.on("secureConnection", (s: TLSSocket) => sessions.push(s));
    const client = createHboneClient(pki.issue(CLIENT_ID));
    try {
      for (let round = 0; round < 20; round++) {
        const t = await client.connect({
          address: srv.address,
          authority: TARGET,
          expectedIdentities: [SERVER_ID],
        });
        t.on("error", () => {});
        t.write("x");
        const closed = new Promise((r) => t.once("close", r));
        // The server side goes away under an open tunnel; the client's tunnel fails at once, the
        // connection's "close" comes a moment later.
        for (const s of sessions.splice(0)) s.destroy();
        await closed;
        // Right away: a new connection, not the one that just failed.
        const next = await client.connect({
          address: srv.address,
          authority: TARGET,
          expectedIdentities: [SERVER_ID],
        });
        next.on("error", () => {});
        next.destroy();
      }
    } finally {
      client.destroy();
      await srv.server.close({ timeoutMs: 100 });
    }
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
