import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { startServer, until } from "../test/harness.js";
import { HboneError } from "./errors.js";
import { createHboneClient, type HboneClient } from "./hbone-client.js";

// Far longer than any test here runs: a dial that ends only at its deadline fails the test.
const LONG_CONNECT_TIMEOUT_MS = 600_000;
const TEST_TIMEOUT_MS = 20_000;

/** A loopback listener that records the sockets it accepted and when each closed. */
interface HoldingServer {
  server: Server;
  port: number;
  accepted: Socket[];
  /** Resolves with the next accepted socket. */
  nextSocket(): Promise<Socket>;
  stop(): Promise<void>;
}

async function listenHolding(
  server: Server,
  event: "connection" | "secureConnection" = "connection",
): Promise<HoldingServer> {
  const accepted: Socket[] = [];
  const waiters: ((s: Socket) => void)[] = [];
  server.on(event, (socket: Socket) => {
    accepted.push(socket);
    socket.on("error", () => {});
    // Read (and drop) what arrives: only a socket that reads sees the peer close it.
    socket.resume();
    waiters.shift()?.(socket);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    server,
    port: (server.address() as AddressInfo).port,
    accepted,
    nextSocket: () => new Promise((resolve) => waiters.push(resolve)),
    stop: async () => {
      for (const s of accepted) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Starts `connect()` on a fresh client, waits until the dial reached the listener, then closes the
 * client with `shutdown`, recording the order of what happens.
 */
async function closeDuringDial(
  pki: TestPki,
  target: { port: number; nextSocket?: () => Promise<Socket> },
  shutdown: (c: HboneClient) => Promise<void>,
  extra: { connectSocket?: () => Socket; made?: () => Duplex | undefined } = {},
): Promise<{ events: string[]; error: unknown; serverSocket: Socket | undefined }> {
  const client = createHboneClient({
    ...pki.issue(CLIENT_ID),
    connectTimeoutMs: LONG_CONNECT_TIMEOUT_MS,
    ...(extra.connectSocket ? { connectSocket: extra.connectSocket } : {}),
  });
  const events: string[] = [];
  let error: unknown;
  const accepted = target.nextSocket?.();
  const pending = client
    .connect({
      address: `127.0.0.1:${target.port}`,
      authority: "10.0.0.1:80",
      expectedIdentities: [SERVER_ID],
    })
    .then(
      () => events.push("connect resolved"),
      (err: unknown) => {
        error = err;
        events.push("connect rejected");
      },
    );
  const serverSocket = accepted === undefined ? undefined : await accepted;
  const serverClosed =
    serverSocket === undefined
      ? Promise.resolve()
      : new Promise<void>((resolve) =>
          // Not events.once: the reset the far end sees ('error' ECONNRESET) is expected here.
          serverSocket.once("close", () => {
            events.push("server saw close");
            resolve();
          }),
        );
  // Give the dial a few turns to get into its wait (handshake, first bytes, SETTINGS).
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(events.length, 0, "the dial is still in progress when the client is closed");
  await shutdown(client);
  events.push("shutdown resolved");
  if (!events.includes("connect rejected") && !events.includes("connect resolved")) {
    // Still dialing after the client was closed: end it from the far side so the test can finish.
    serverSocket?.destroy();
    await Promise.race([pending, new Promise((r) => setTimeout(r, 100))]);
    extra.made?.()?.destroy();
    await Promise.race([pending, new Promise((r) => setTimeout(r, 100))]);
  }
  await pending;
  await serverClosed;
  return { events, error, serverSocket };
}

/**
 * connect() rejected before close()/destroy() resolved (which waits for the dial's socket to close),
 * and the listener saw its connection close.
 */
function assertDialEndedFirst(events: string[]): void {
  const rejected = events.indexOf("connect rejected");
  assert.ok(rejected >= 0 && rejected < events.indexOf("shutdown resolved"), events.join(", "));
  assert.ok(events.includes("server saw close"), events.join(", "));
}

function assertClosedError(error: unknown): void {
  assert.ok(error instanceof HboneError, `an HboneError, got ${String(error)}`);
  assert.equal(error.code, "ERR_HBONE_CLOSED", error.message);
}

describe("client close/destroy with a dial in progress", { timeout: TEST_TIMEOUT_MS * 4 }, () => {
  let pki: TestPki;
  let silent: HoldingServer;
  let tlsSilent: HoldingServer;
  let tlsPartial: HoldingServer;

  before(async () => {
    pki = createTestPki();
    // Accepts TCP and never says a word: the TLS handshake never completes.
    silent = await listenHolding(createNetServer(() => {}));
    const serverCreds = pki.issue(SERVER_ID);
    const tlsOptions = {
      key: serverCreds.key,
      cert: serverCreds.certChain,
      ca: serverCreds.trustBundle,
      requestCert: true,
      ALPNProtocols: ["h2"],
    };
    // Completes TLS, then never sends its HTTP/2 SETTINGS.
    tlsSilent = await listenHolding(
      createTlsServer(tlsOptions, (s: TLSSocket) => s.on("error", () => {})),
      "secureConnection",
    );
    // Completes TLS and sends the first byte of a frame header, never the rest.
    tlsPartial = await listenHolding(
      createTlsServer(tlsOptions, (s: TLSSocket) => {
        s.on("error", () => {});
        s.write(Buffer.from([0]));
      }),
      "secureConnection",
    );
  });

  after(async () => {
    await silent.stop();
    await tlsSilent.stop();
    await tlsPartial.stop();
    pki.cleanup();
  });

  for (const [name, shutdown] of [
    ["close()", (c: HboneClient) => c.close()],
    ["destroy()", (c: HboneClient) => c.destroy()],
  ] as const) {
    it(`${name} during a TLS handshake the peer never answers rejects connect() with ERR_HBONE_CLOSED and closes the socket`, async () => {
      const { events, error } = await closeDuringDial(pki, silent, shutdown);
      assertClosedError(error);
      assertDialEndedFirst(events);
    });

    it(`${name} while waiting for the peer's first bytes after TLS rejects with ERR_HBONE_CLOSED`, async () => {
      const { events, error } = await closeDuringDial(pki, tlsSilent, shutdown);
      assertClosedError(error);
      assertDialEndedFirst(events);
    });

    it(`${name} while waiting for the peer's SETTINGS rejects with ERR_HBONE_CLOSED`, async () => {
      const { events, error } = await closeDuringDial(pki, tlsPartial, shutdown);
      assertClosedError(error);
      assertDialEndedFirst(events);
    });

    it(`${name} while connectSocket's stream never answers destroys that stream`, async () => {
      // A stream that takes the ClientHello and never delivers a byte back.
      let made: Duplex | undefined;
      const { events, error } = await closeDuringDial(pki, { port: 1 }, shutdown, {
        connectSocket: () => {
          made = new Duplex({ read() {}, write: (_chunk, _encoding, cb) => cb() });
          return made as Socket;
        },
        made: () => made,
      });
      assertClosedError(error);
      assert.deepEqual(events, ["connect rejected", "shutdown resolved"]);
      assert.ok(made?.destroyed, "the socket from connectSocket was destroyed");
    });
  }

  it("a dial that times out names the port it dialled", async () => {
    const client = createHboneClient({ ...pki.issue(CLIENT_ID), connectTimeoutMs: 50 });
    try {
      await assert.rejects(
        client.connect({
          address: `127.0.0.1:${silent.port}`,
          authority: "10.0.0.1:80",
          expectedIdentities: [SERVER_ID],
        }),
        (e: unknown) =>
          e instanceof HboneError &&
          e.code === "ERR_HBONE_TIMEOUT" &&
          e.message.includes(`port ${silent.port}`) &&
          !e.message.includes("15008"),
      );
    } finally {
      await client.destroy();
    }
  });
});

describe("server close() at its deadline", { timeout: TEST_TIMEOUT_MS }, () => {
  let pki: TestPki;

  before(() => {
    pki = createTestPki();
  });

  after(() => pki.cleanup());

  it("destroys accepted tunnels without an 'error' listener without an uncaught exception", async () => {
    const uncaught: unknown[] = [];
    const record = (err: unknown) => uncaught.push(err);
    // The test runner's own handler would report the error as this test's failure: record instead.
    const previous = process.listeners("uncaughtException");
    process.removeAllListeners("uncaughtException");
    process.on("uncaughtException", record);
    const s = await startServer(pki);
    const c = createHboneClient(pki.issue(CLIENT_ID));
    try {
      // The application accepted the tunnel and attached nothing to it yet.
      const accepted = s.nextTunnel().then((t) => t.accept());
      const t = await c.connect({
        address: s.address,
        authority: "10.0.0.9:80",
        expectedIdentities: [SERVER_ID],
      });
      t.on("error", () => {});
      const serverTunnel = await accepted;
      const seen: string[] = [];
      serverTunnel.on("end", () => seen.push("end"));
      serverTunnel.on("close", () => seen.push("close"));
      await s.server.close({ timeoutMs: 50 });
      await until(() => serverTunnel.destroyed, "the tunnel destroyed");
      // Turns for what destroy() emits on the next tick ('error' if any, then 'close').
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(
        uncaught.map((e) => String(e)),
        [],
        "no uncaught exception",
      );
      assert.deepEqual(seen, ["close"], "closed without an end");
      assert.equal(serverTunnel.errored, null);
      assert.equal(serverTunnel.readableAborted, true);
      assert.deepEqual(s.server.stats(), { connections: 0, tunnels: 0 });
      // The client sees its connection go: the far end is gone, so its tunnel fails.
      await until(() => t.destroyed, "the client tunnel ended");
    } finally {
      process.off("uncaughtException", record);
      for (const l of previous) process.on("uncaughtException", l);
      await c.destroy();
    }
  });

  it("aborts the signal of a tunnel not answered yet with ERR_HBONE_CLOSED; accept() after it gives a closed stream", async () => {
    const s = await startServer(pki);
    const c = createHboneClient(pki.issue(CLIENT_ID));
    try {
      const received = s.nextTunnel();
      const pending = c.connect({
        address: s.address,
        authority: "10.0.0.9:80",
        expectedIdentities: [SERVER_ID],
      });
      pending.catch(() => {});
      const tunnel = await received;
      await s.server.close({ timeoutMs: 50 });
      await until(() => tunnel.state === "closed", "the tunnel closed");
      assert.ok(tunnel.signal.aborted);
      assert.ok(tunnel.signal.reason instanceof HboneError);
      assert.equal(tunnel.signal.reason.code, "ERR_HBONE_CLOSED");
      const stream = tunnel.accept();
      const seen: string[] = [];
      stream.on("error", (e) => seen.push(`error ${String(e)}`));
      stream.on("close", () => seen.push("close"));
      await until(() => seen.length > 0, "the stream closed");
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(seen, ["close"]);
      await assert.rejects(pending, (e: unknown) => e instanceof HboneError);
    } finally {
      await c.destroy();
    }
  });
});

describe("client shutdown with open tunnels", { timeout: TEST_TIMEOUT_MS }, () => {
  let pki: TestPki;

  before(() => {
    pki = createTestPki();
  });

  after(() => pki.cleanup());

  for (const [name, shutdown] of [
    ["close({ timeoutMs: 50 })", (c: HboneClient) => c.close({ timeoutMs: 50 })],
    ["destroy()", (c: HboneClient) => c.destroy()],
  ] as const) {
    it(`${name} destroys a tunnel without an 'error' listener without an uncaught exception`, async () => {
      const uncaught: unknown[] = [];
      const record = (err: unknown) => uncaught.push(err);
      const previous = process.listeners("uncaughtException");
      process.removeAllListeners("uncaughtException");
      process.on("uncaughtException", record);
      const s = await startServer(pki);
      const c = createHboneClient(pki.issue(CLIENT_ID));
      try {
        const accepted = s.nextTunnel().then((t) => t.accept().on("error", () => {}));
        const t = await c.connect({
          address: s.address,
          authority: "10.0.0.9:80",
          expectedIdentities: [SERVER_ID],
        });
        await accepted;
        const seen: string[] = [];
        t.on("end", () => seen.push("end"));
        t.on("close", () => seen.push("close"));
        await shutdown(c);
        await until(() => t.destroyed, "the tunnel destroyed");
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setImmediate(r));
        assert.deepEqual(
          uncaught.map((e) => String(e)),
          [],
          "no uncaught exception",
        );
        assert.deepEqual(seen, ["close"], "closed without an end");
        assert.equal(t.errored, null);
        assert.deepEqual(c.stats(), { connections: 0, streams: 0, innerSessions: 0 });
      } finally {
        process.off("uncaughtException", record);
        for (const l of previous) process.on("uncaughtException", l);
        await c.destroy();
        await s.server.close({ timeoutMs: 1000 });
      }
    });
  }

  it("destroy() while a CONNECT waits for its answer rejects it with ERR_HBONE_CLOSED", async () => {
    const s = await startServer(pki);
    const c = createHboneClient(pki.issue(CLIENT_ID));
    try {
      const received = s.nextTunnel();
      const pending = c.connect({
        address: s.address,
        authority: "10.0.0.9:80",
        expectedIdentities: [SERVER_ID],
      });
      const outcome = pending.then(
        () => "resolved",
        (e: unknown) => e,
      );
      await received;
      await c.destroy();
      const e = await outcome;
      assert.ok(e instanceof HboneError, String(e));
      assert.equal(e.code, "ERR_HBONE_CLOSED", e.message);
    } finally {
      await s.server.close({ timeoutMs: 1000 });
    }
  });
});
