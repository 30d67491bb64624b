import assert from "node:assert/strict";
import { connect as netConnect } from "node:net";
import { after, before, describe, it } from "node:test";
import { createServer as createTlsServer, type TLSSocket, connect as tlsConnect } from "node:tls";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { readAll, startServer, type TestServer, until } from "../test/harness.js";
import { HboneError, type HboneErrorCode } from "./errors.js";
import { createHboneClient } from "./hbone-client.js";
import { createHboneServer } from "./hbone-server.js";

function isCode(code: HboneErrorCode) {
  return (e: unknown) => {
    assert.ok(e instanceof HboneError, `expected HboneError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}

describe("HBONE mTLS", () => {
  let pki: TestPki;
  let srv: TestServer;
  const servernames: (string | false | null)[] = [];

  before(async () => {
    pki = createTestPki();
    srv = await startServer(pki, { onTunnel: (t) => t.accept().end("ok") });
    srv.server.nodeServer.on("secureConnection", (s: TLSSocket) => servernames.push(s.servername));
  });
  after(async () => {
    await srv.server.close({ timeoutMs: 500 });
    pki.cleanup();
  });

  async function tryConnect(
    credentials: ReturnType<TestPki["issue"]>,
    expected = [SERVER_ID],
    address = srv.address,
  ) {
    const client = createHboneClient(credentials);
    try {
      const t = await client.connect({ address, authority: "10.1.0.1:80", expectedIdentities: expected });
      const data = await readAll(t);
      await new Promise<void>((resolve) => t.end(resolve));
      return data.toString();
    } finally {
      // Graceful: destroy() would reset a stream whose END_STREAM the server has not processed yet,
      // which the server then reports as a peer reset (Node 22 does so reliably).
      await client.close();
    }
  }

  it("connects with TLS 1.3, ALPN h2 and no SNI", async () => {
    assert.equal(await tryConnect(pki.issue(CLIENT_ID)), "ok");
    assert.equal(servernames.at(-1), false, "the client must not send SNI");
  });

  it("rejects a server whose identity is not expected (ERR_HBONE_IDENTITY)", async () => {
    await assert.rejects(
      tryConnect(pki.issue(CLIENT_ID), ["spiffe://cluster.local/ns/default/sa/someone-else"]),
      isCode("ERR_HBONE_IDENTITY"),
    );
  });

  it("rejects a server certificate from another root (ERR_HBONE_TLS)", async () => {
    const s = await startServer(pki, { credentials: pki.issue(SERVER_ID, { otherRoot: true }) });
    await assert.rejects(tryConnect(pki.issue(CLIENT_ID), [SERVER_ID], s.address), isCode("ERR_HBONE_TLS"));
    await s.server.close({ timeoutMs: 100 });
  });

  it("rejects an expired server certificate (ERR_HBONE_TLS, CERT_HAS_EXPIRED)", async () => {
    const s = await startServer(pki, { credentials: pki.issue(SERVER_ID, { expired: true }) });
    await assert.rejects(tryConnect(pki.issue(CLIENT_ID), [SERVER_ID], s.address), (e: unknown) => {
      isCode("ERR_HBONE_TLS")(e);
      assert.equal((e as HboneError).nodeCode, "CERT_HAS_EXPIRED");
      return true;
    });
    await s.server.close({ timeoutMs: 100 });
  });

  it("refuses client certificates from another root or expired (ERR_HBONE_TLS)", async () => {
    await assert.rejects(tryConnect(pki.issue(CLIENT_ID, { otherRoot: true })), isCode("ERR_HBONE_TLS"));
    await assert.rejects(tryConnect(pki.issue(CLIENT_ID, { expired: true })), isCode("ERR_HBONE_TLS"));
    assert.deepEqual(srv.server.stats().tunnels, 0);
  });

  it("refuses a client from another trust domain unless allow-listed", async () => {
    const foreign = pki.issue("spiffe://other.example/ns/a/sa/b");
    await assert.rejects(tryConnect(foreign), isCode("ERR_HBONE_IDENTITY"));
    const s = await startServer(pki, {
      allowedTrustDomains: ["cluster.local", "other.example"],
      onTunnel: (t) => t.accept().end(t.peerIdentity.trustDomain),
    });
    assert.equal(await tryConnect(foreign, [SERVER_ID], s.address), "other.example");
    await s.server.close({ timeoutMs: 100 });
  });

  it("refuses a peer whose leaf is a CA certificate or names the bare trust domain, on both sides", async () => {
    // Both chain to the mesh root, so the TLS handshake alone accepts them.
    await assert.rejects(tryConnect(pki.issue(CLIENT_ID, { caLeaf: true })));
    await assert.rejects(tryConnect(pki.issue("spiffe://cluster.local")));
    assert.deepEqual(srv.server.stats().tunnels, 0);
    for (const credentials of [pki.issue(SERVER_ID, { caLeaf: true }), pki.issue("spiffe://cluster.local")]) {
      const s = await startServer(pki, { credentials });
      // Either would be expected by name: the refusal is for what the certificate is.
      const expected = [SERVER_ID, "spiffe://cluster.local"];
      await assert.rejects(
        tryConnect(pki.issue(CLIENT_ID), expected, s.address),
        isCode("ERR_HBONE_IDENTITY"),
      );
      await s.server.close({ timeoutMs: 100 });
    }
  });

  it("refuses a client certificate with two URI SANs", async () => {
    const twoSans = pki.issue(CLIENT_ID, { extraUris: ["spiffe://cluster.local/ns/x/sa/y"] });
    assert.throws(() => createHboneClient(twoSans), isCode("ERR_HBONE_INVALID_ARGUMENT"));
  });

  it("refuses TLS 1.2 by default and accepts it when allowTls12 is set", async () => {
    const creds = pki.issue(CLIENT_ID);
    const handshake = (port: number) =>
      new Promise<string>((resolve) => {
        const s = tlsConnect({
          host: "127.0.0.1",
          port,
          key: creds.key,
          cert: creds.certChain,
          ca: creds.trustBundle,
          ALPNProtocols: ["h2"],
          maxVersion: "TLSv1.2",
          checkServerIdentity: () => undefined,
        });
        s.once("secureConnect", () => {
          resolve(String(s.getProtocol()));
          s.destroy();
        });
        s.once("error", (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
      });
    assert.match(await handshake(srv.port), /^error ERR_SSL/);
    const s12 = await startServer(pki, { allowTls12: true });
    assert.equal(await handshake(s12.port), "TLSv1.2");
    await s12.server.close({ timeoutMs: 100 });
  });

  it("with allowTls12, the server refuses a TLS 1.2 renegotiation the client starts", async () => {
    const s12 = await startServer(pki, { allowTls12: true });
    const creds = pki.issue(CLIENT_ID);
    const outcome = await new Promise<string>((resolve) => {
      const s = tlsConnect({
        host: "127.0.0.1",
        port: s12.port,
        key: creds.key,
        cert: creds.certChain,
        ca: creds.trustBundle,
        ALPNProtocols: ["h2"],
        maxVersion: "TLSv1.2",
        checkServerIdentity: () => undefined,
      });
      s.on("error", () => resolve("refused"));
      s.once("close", () => resolve("refused"));
      s.resume();
      s.once("secureConnect", () => {
        assert.equal(s.getProtocol(), "TLSv1.2");
        const started = s.renegotiate({}, (err) => {
          resolve(err ? "refused" : "renegotiated");
          s.destroy();
        });
        if (!started) resolve("refused");
      });
    });
    assert.equal(outcome, "refused");
    await s12.server.close({ timeoutMs: 100 });
  });

  it("with allowTls12, the client refuses a TLS 1.2 renegotiation the server starts", async () => {
    // A TLS 1.2 peer that sends its SETTINGS and then asks for a new handshake, in which it could
    // present another certificate than the one the client checked.
    const creds = pki.issue(SERVER_ID);
    const server = createTlsServer({
      key: creds.key,
      cert: creds.certChain,
      ca: creds.trustBundle,
      requestCert: true,
      ALPNProtocols: ["h2"],
      maxVersion: "TLSv1.2",
    });
    const sockets: TLSSocket[] = [];
    const outcome = new Promise<string>((resolve) => {
      server.on("secureConnection", (s: TLSSocket) => {
        sockets.push(s);
        s.on("error", () => resolve("refused"));
        s.once("close", () => resolve("refused"));
        s.resume();
        s.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
        const started = s.renegotiate({}, (err) => resolve(err ? "refused" : "renegotiated"));
        if (!started) resolve("refused");
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const client = createHboneClient({ ...pki.issue(CLIENT_ID), allowTls12: true });
    const pending = client
      .connect({ address: `127.0.0.1:${port}`, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] })
      .then(
        (t) => t.destroy(),
        () => {},
      );
    assert.equal(await outcome, "refused");
    await client.destroy();
    await pending;
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  it("survives plaintext and a client without ALPN h2 on the TLS port", async () => {
    await new Promise<void>((resolve) => {
      const sock = netConnect(srv.port, "127.0.0.1", () => sock.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      sock.on("error", () => {});
      sock.resume();
      sock.once("close", () => resolve());
    });
    const creds = pki.issue(CLIENT_ID);
    const outcome = await new Promise<string>((resolve) => {
      const s = tlsConnect({
        host: "127.0.0.1",
        port: srv.port,
        key: creds.key,
        cert: creds.certChain,
        ca: creds.trustBundle,
        ALPNProtocols: ["http/1.1"],
        checkServerIdentity: () => undefined,
      });
      s.on("error", (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
      s.once("secureConnect", () => s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      s.resume();
      s.once("close", () => resolve("closed"));
    });
    assert.ok(outcome === "closed" || outcome.startsWith("error"), outcome);
    // Still serving.
    assert.equal(await tryConnect(creds), "ok");
  });

  it("rejects bad options with ERR_HBONE_INVALID_ARGUMENT", () => {
    const creds = pki.issue(CLIENT_ID);
    assert.throws(
      () => createHboneClient({ ...creds, key: 42 as unknown as string }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    assert.throws(
      () => createHboneClient({ ...creds, trustBundle: [] }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    assert.throws(
      () => createHboneServer({ ...creds, onTunnel: undefined as unknown as () => void }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    assert.throws(
      () => createHboneClient({ ...creds, maxStreamsPerConnection: 0 }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
  });

  it("rejects bad connect arguments before dialing", async () => {
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const base = { address: srv.address, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] };
    await assert.rejects(
      client.connect({ ...base, authority: "no-port" }),
      isCode("ERR_HBONE_INVALID_AUTHORITY"),
    );
    await assert.rejects(
      client.connect({ ...base, address: "host.example:15008" }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    await assert.rejects(
      client.connect({ ...base, expectedIdentities: [] }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    await assert.rejects(
      client.connect({ ...base, expectedIdentities: ["not-spiffe"] }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    await assert.rejects(
      client.connect({ ...base, headers: { ":path": "/" } }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    assert.deepEqual(client.stats(), { connections: 0, streams: 0, innerSessions: 0 });
    await client.destroy();
  });

  it("maps a refused TCP connection and an abort to typed errors", async () => {
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const closed = await startServer(pki);
    const port = closed.port;
    await closed.server.close();
    await assert.rejects(
      client.connect({
        address: `127.0.0.1:${port}`,
        authority: "10.0.0.1:80",
        expectedIdentities: [SERVER_ID],
      }),
      isCode("ERR_HBONE_CONNECTION"),
    );
    const controller = new AbortController();
    const hanging = await startServer(pki, { onTunnel: () => {} });
    const pending = client.connect({
      address: hanging.address,
      authority: "10.0.0.1:80",
      expectedIdentities: [SERVER_ID],
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(pending, isCode("ERR_HBONE_ABORTED"));
    await client.destroy();
    await hanging.server.close({ timeoutMs: 100 });
  });

  it("times out a CONNECT that gets no answer (ERR_HBONE_TIMEOUT)", async () => {
    const hanging = await startServer(pki, { onTunnel: () => {} });
    const client = createHboneClient({ ...pki.issue(CLIENT_ID), responseTimeoutMs: 100 });
    await assert.rejects(
      client.connect({ address: hanging.address, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] }),
      isCode("ERR_HBONE_TIMEOUT"),
    );
    await client.destroy();
    await hanging.server.close({ timeoutMs: 100 });
  });

  /** A TLS server that finishes the handshake, sends one empty SETTINGS frame, then ignores the client. */
  async function silentPeer(alpn: string[] | undefined) {
    const creds = pki.issue(SERVER_ID);
    const server = createTlsServer({
      key: creds.key,
      cert: creds.certChain,
      ca: creds.trustBundle,
      requestCert: true,
      ...(alpn ? { ALPNProtocols: alpn } : {}),
    });
    const sockets: TLSSocket[] = [];
    server.on("secureConnection", (s: TLSSocket) => {
      sockets.push(s);
      s.on("error", () => {});
      s.resume();
      s.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    return {
      address: `127.0.0.1:${port}`,
      close: () => {
        for (const s of sockets) s.destroy();
        return new Promise((r) => server.close(r));
      },
    };
  }

  it("rejects a peer that does not negotiate ALPN h2 (ERR_HBONE_PROTOCOL)", async () => {
    const peer = await silentPeer(["http/1.1"]);
    await assert.rejects(
      tryConnect(pki.issue(CLIENT_ID), [SERVER_ID], peer.address),
      isCode("ERR_HBONE_PROTOCOL"),
    );
    await peer.close();
  });

  it("drops a connection whose keepalive PING goes unanswered (ERR_HBONE_TIMEOUT)", async () => {
    const peer = await silentPeer(["h2"]);
    const client = createHboneClient({
      ...pki.issue(CLIENT_ID),
      keepaliveIntervalMs: 20,
      keepaliveTimeoutMs: 50,
      responseTimeoutMs: 60_000,
    });
    await assert.rejects(
      client.connect({ address: peer.address, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] }),
      (e: unknown) => {
        isCode("ERR_HBONE_TIMEOUT")(e);
        assert.match((e as Error).message, /PING/);
        return true;
      },
    );
    await until(() => client.stats().connections === 0, "the dead connection left the pool");
    await client.destroy();
    await peer.close();
  });

  it("rotates the server certificate for new connections with setCredentials", async () => {
    const rotated = "spiffe://cluster.local/ns/default/sa/server-rotated";
    const s = await startServer(pki, { onTunnel: (t) => t.accept().end("ok") });
    assert.equal(await tryConnect(pki.issue(CLIENT_ID), [SERVER_ID], s.address), "ok");
    s.server.setCredentials(pki.issue(rotated));
    assert.equal(await tryConnect(pki.issue(CLIENT_ID), [rotated], s.address), "ok");
    await assert.rejects(
      tryConnect(pki.issue(CLIENT_ID), [SERVER_ID], s.address),
      isCode("ERR_HBONE_IDENTITY"),
    );
    assert.throws(
      () => s.server.setCredentials({ key: "", certChain: "", trustBundle: "" }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    await s.server.close({ timeoutMs: 100 });
  });

  it(
    "closes a connection that has not finished the TLS handshake in handshakeTimeoutMs, silent or trickling",
    { timeout: 30_000 },
    async () => {
      const s = await startServer(pki, { handshakeTimeoutMs: 400 });
      try {
        const closedWithin = (socket: ReturnType<typeof netConnect>, ms: number) =>
          new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), ms);
            socket.once("close", () => {
              clearTimeout(timer);
              resolve(true);
            });
          });
        // Sends nothing at all.
        const silent = netConnect(s.port, "127.0.0.1");
        silent.on("error", () => {});
        // Sends a ClientHello's first bytes one at a time, each before an idle timer would fire.
        const trickle = netConnect(s.port, "127.0.0.1");
        trickle.on("error", () => {});
        const hello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
        let sent = 0;
        const drip = setInterval(() => {
          if (!trickle.destroyed)
            trickle.write(hello.subarray(sent % hello.length, (sent % hello.length) + 1));
          sent++;
        }, 100);
        try {
          const [a, b] = await Promise.all([closedWithin(silent, 4000), closedWithin(trickle, 4000)]);
          assert.equal(a, true, "a silent connection is closed");
          assert.equal(b, true, "a trickling handshake is closed as a whole, not reset by each byte");
          // A connection that finished its handshake is not cut by that deadline.
          const client = createHboneClient(pki.issue(CLIENT_ID));
          try {
            const connecting = client.connect({
              address: s.address,
              authority: "10.1.0.1:80",
              expectedIdentities: [SERVER_ID],
            });
            const inbound = await s.nextTunnel();
            await new Promise((r) => setTimeout(r, 900));
            const accepted = inbound.accept();
            // The client is destroyed at the end: the server's side of the tunnel sees that as an error.
            accepted.on("error", () => {});
            accepted.end("still here");
            const t = await connecting;
            assert.equal((await readAll(t)).toString(), "still here");
            assert.equal(s.server.stats().connections, 1);
          } finally {
            client.destroy();
          }
        } finally {
          clearInterval(drip);
          silent.destroy();
          trickle.destroy();
        }
      } finally {
        await s.server.close({ timeoutMs: 100 });
      }
    },
  );

  it("close() does not wait for a client stuck in the TLS handshake", { timeout: 30_000 }, async () => {
    // Without close() cutting it off, this handshake would hold the server for a minute.
    const s = await startServer(pki, { handshakeTimeoutMs: 60_000 });
    const stuck = netConnect(s.port, "127.0.0.1");
    stuck.on("error", () => {});
    await new Promise((r) => stuck.once("connect", r));
    await until(() => s.server.nodeServer.listening, "listening");
    await s.server.close({ timeoutMs: 50 });
    await new Promise((r) => (stuck.destroyed ? r(undefined) : stuck.once("close", r)));
  });
});
