import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { readAll, startServer } from "../test/harness.js";
import { formatAuthority } from "./authority.js";
import { credentialsFromSvid } from "./credentials.js";
import { HboneError, type HboneErrorCode } from "./errors.js";
import { createHboneClient } from "./hbone-client.js";
import { createHboneServer } from "./hbone-server.js";
import {
  createTraceparent,
  formatBaggage,
  formatForwarded,
  formatTraceparent,
  formatWorkloadBaggage,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
  parseWorkloadBaggage,
} from "./headers.js";
import { startKeepalive } from "./keepalive.js";
import { http2ErrorName } from "./node-error.js";
import { pipeTunnel } from "./pipe-tunnel.js";
import { decodeProxyHeader, encodeProxyHeader } from "./proxy-protocol.js";

function isCode(code: HboneErrorCode, cause?: unknown) {
  return (e: unknown) => {
    assert.ok(e instanceof HboneError, `expected HboneError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (cause !== undefined) assert.equal(e.cause, cause);
    return true;
  };
}

/** A duplex that accepts writes and never produces data. */
function sink(): Duplex {
  return new Duplex({
    read() {},
    write(_chunk, _encoding, cb) {
      cb();
    },
  });
}

const MAX_TIMER = 2 ** 31 - 1;

describe("pipeTunnel: abort and arguments", () => {
  it("rejects with ERR_HBONE_ABORTED for a signal aborted before the call, destroying both streams", async () => {
    const a = sink();
    const b = sink();
    const reason = new Error("caller gave up");
    await assert.rejects(
      pipeTunnel(a, b, { signal: AbortSignal.abort(reason) }),
      isCode("ERR_HBONE_ABORTED", reason),
    );
    assert.ok(a.destroyed && b.destroyed);
  });

  it("rejects with ERR_HBONE_ABORTED (reason as cause) when the signal fires during the copy", async () => {
    const a = sink();
    const b = sink();
    const ac = new AbortController();
    const piped = pipeTunnel(a, b, { signal: ac.signal });
    const reason = new Error("shutdown");
    ac.abort(reason);
    await assert.rejects(piped, isCode("ERR_HBONE_ABORTED", reason));
    assert.ok(a.destroyed && b.destroyed);
  });

  it("refuses streams that are not duplexes and signals that are not AbortSignals", async () => {
    await assert.rejects(
      pipeTunnel(undefined as unknown as Duplex, sink()),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    await assert.rejects(pipeTunnel(sink(), {} as Duplex), isCode("ERR_HBONE_INVALID_ARGUMENT"));
    await assert.rejects(
      pipeTunnel(sink(), sink(), { signal: {} as AbortSignal }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
  });
});

describe("client and server option checks", () => {
  let pki: TestPki;
  before(() => {
    pki = createTestPki();
  });
  after(() => pki.cleanup());

  it("refuses a logger without the four methods and a metrics sink without counter, gauge and histogram", () => {
    const server = pki.issue(SERVER_ID);
    const client = pki.issue(CLIENT_ID);
    const instruments = { inc() {}, dec() {}, set() {}, observe() {} };
    for (const [name, value] of [
      ["logger", {}],
      ["logger", "pino"],
      ["logger", null],
      ["logger", { debug() {}, info() {}, warn() {} }],
      ["metrics", {}],
      ["metrics", "prom"],
      ["metrics", null],
      ["metrics", { counter: () => instruments, gauge: () => instruments }],
      // A sink whose instruments lack their methods would fail at the first connection, in an event handler.
      ["metrics", { counter: () => instruments, gauge: () => undefined, histogram: () => instruments }],
    ] as [string, unknown][]) {
      assert.throws(
        () => createHboneServer({ ...server, onTunnel: () => {}, [name]: value }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        `server ${name} ${JSON.stringify(value)}`,
      );
      assert.throws(
        () => createHboneClient({ ...client, [name]: value }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        `client ${name} ${JSON.stringify(value)}`,
      );
    }
    // The server's counters are checked too (the client makes none).
    const badCounter = { counter: () => ({}), gauge: () => instruments, histogram: () => instruments };
    assert.throws(
      () => createHboneServer({ ...server, onTunnel: () => {}, metrics: badCounter as never }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    const cause = new Error("sink refused");
    const throwing = {
      counter: () => instruments,
      gauge: () => {
        throw cause;
      },
      histogram: () => instruments,
    };
    assert.throws(
      () => createHboneClient({ ...client, metrics: throwing }),
      isCode("ERR_HBONE_INVALID_ARGUMENT", cause),
    );
    const sink = { counter: () => instruments, gauge: () => instruments, histogram: () => instruments };
    createHboneClient({ ...client, logger: console, metrics: sink }).destroy();
    void createHboneServer({ ...server, onTunnel: () => {}, logger: console, metrics: sink }).close();
  });

  it("refuses a connectSocket that is not a function, and a socket that is not a stream", async () => {
    const creds = pki.issue(CLIENT_ID);
    for (const connectSocket of ["net.connect", null, {}, 5]) {
      assert.throws(
        () => createHboneClient({ ...creds, connectSocket: connectSocket as never }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        String(connectSocket),
      );
    }
    const client = createHboneClient({ ...creds, connectSocket: (() => ({})) as never });
    try {
      await assert.rejects(
        client.connect({ address: "127.0.0.1:9", authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
      );
    } finally {
      await client.destroy();
    }
  });

  it("connect: an aborted signal is ERR_HBONE_ABORTED with the reason as cause; a non-signal is refused", async () => {
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const base = { address: "127.0.0.1:9", authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] };
    try {
      const plain = AbortSignal.abort();
      await assert.rejects(
        client.connect({ ...base, signal: plain }),
        isCode("ERR_HBONE_ABORTED", plain.reason),
      );
      const reason = new Error("no longer needed");
      await assert.rejects(
        client.connect({ ...base, signal: AbortSignal.abort(reason) }),
        isCode("ERR_HBONE_ABORTED", reason),
      );
      await assert.rejects(
        client.connect({ ...base, signal: {} as AbortSignal }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
      );
      await assert.rejects(
        client.connectDouble({
          gateway: { address: "127.0.0.1:9", expectedIdentities: [SERVER_ID] },
          authority: "svc.ns.svc.cluster.local:80",
          expectedIdentities: [SERVER_ID],
          signal: {} as AbortSignal,
        }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
      );
      assert.equal(client.stats().connections, 0);
    } finally {
      await client.destroy();
    }
  });

  it("keepaliveTimeoutMs 0 keeps PINGing without ever dropping a connection (unit)", async () => {
    let pings = 0;
    let timedOut = false;
    const closers: (() => void)[] = [];
    const session = {
      destroyed: false,
      ping: () => {
        pings++; // never answered
      },
      once: (_e: "close", l: () => void) => closers.push(l),
    };
    startKeepalive(session, 5, 0, () => {
      timedOut = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    for (const c of closers) c();
    assert.equal(timedOut, false);
    assert.ok(pings >= 1, "PINGs are still sent");
  });

  for (const side of ["client", "server"] as const) {
    it(`keepaliveTimeoutMs 0 on the ${side} leaves answered connections open`, async () => {
      const ka = { keepaliveIntervalMs: 20, keepaliveTimeoutMs: 0 };
      const srv = await startServer(pki, {
        onTunnel: (t) => {
          const s = t.accept();
          s.pipe(s);
        },
        ...(side === "server" ? ka : {}),
      });
      const client = createHboneClient({ ...pki.issue(CLIENT_ID), ...(side === "client" ? ka : {}) });
      try {
        const tunnel = await client.connect({
          address: srv.address,
          authority: "10.0.0.1:80",
          expectedIdentities: [SERVER_ID],
        });
        tunnel.on("error", () => {});
        // Several keepalive intervals.
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(tunnel.destroyed, false, "the tunnel survived the keepalive PINGs");
        tunnel.end("still here");
        assert.equal((await readAll(tunnel)).toString(), "still here");
      } finally {
        await client.destroy();
        await srv.server.close({ timeoutMs: 500 });
      }
    });
  }

  it("refuses durations Node's timers cannot hold (over 2^31 - 1 ms)", async () => {
    const creds = pki.issue(CLIENT_ID);
    for (const name of [
      "connectTimeoutMs",
      "responseTimeoutMs",
      "keepaliveIntervalMs",
      "keepaliveTimeoutMs",
      "poolIdleTimeoutMs",
    ]) {
      assert.throws(
        () => createHboneClient({ ...creds, [name]: MAX_TIMER + 1 }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        name,
      );
      createHboneClient({ ...creds, [name]: MAX_TIMER }).destroy();
    }
    const server = pki.issue(SERVER_ID);
    for (const name of ["keepaliveIntervalMs", "keepaliveTimeoutMs", "handshakeTimeoutMs"]) {
      assert.throws(
        () => createHboneServer({ ...server, onTunnel: () => {}, [name]: MAX_TIMER + 1 }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        name,
      );
    }
    const client = createHboneClient(creds);
    await assert.rejects(client.close({ timeoutMs: MAX_TIMER + 1 }), isCode("ERR_HBONE_INVALID_ARGUMENT"));
    await assert.rejects(client.close(null as never), isCode("ERR_HBONE_INVALID_ARGUMENT"));
    await client.close({ timeoutMs: MAX_TIMER });
  });

  it("server close({ timeoutMs }) is checked like the client's, before anything is closed", async () => {
    const srv = await startServer(pki, { onTunnel: (t) => t.refuse(503) });
    try {
      for (const timeoutMs of [MAX_TIMER + 1, -1, Number.NaN, "5" as unknown as number]) {
        await assert.rejects(srv.server.close({ timeoutMs }), isCode("ERR_HBONE_INVALID_ARGUMENT"));
      }
      await assert.rejects(srv.server.close(null as never), isCode("ERR_HBONE_INVALID_ARGUMENT"));
      assert.ok(srv.server.nodeServer.listening, "a refused close leaves the server listening");
    } finally {
      await srv.server.close({ timeoutMs: 500 });
    }
  });

  it("refuses allowedTrustDomains that is not an array of strings, and headers that are not an object", async () => {
    const server = pki.issue(SERVER_ID);
    for (const allowedTrustDomains of ["cluster.local", [5], [""], {}]) {
      assert.throws(
        () =>
          createHboneServer({
            ...server,
            onTunnel: () => {},
            allowedTrustDomains: allowedTrustDomains as unknown as string[],
          }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        JSON.stringify(allowedTrustDomains),
      );
    }
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const base = { address: "127.0.0.1:9", authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] };
    try {
      for (const headers of ["abc", ["a"], null]) {
        await assert.rejects(
          client.connect({ ...base, headers: headers as unknown as Record<string, string> }),
          isCode("ERR_HBONE_INVALID_ARGUMENT"),
          JSON.stringify(headers),
        );
        await assert.rejects(
          client.connectDouble({
            gateway: { address: "127.0.0.1:9", expectedIdentities: [SERVER_ID] },
            authority: "svc.ns.svc.cluster.local:80",
            expectedIdentities: [SERVER_ID],
            headers: headers as unknown as Record<string, string>,
          }),
          isCode("ERR_HBONE_INVALID_ARGUMENT"),
          JSON.stringify(headers),
        );
      }
      assert.equal(client.stats().connections, 0);
    } finally {
      await client.destroy();
    }
  });

  it("refuses HTTP/2 windows and stream limits outside RFC 9113's ranges", () => {
    const server = pki.issue(SERVER_ID);
    const client = pki.issue(CLIENT_ID);
    const bad: [string, number][] = [
      ["streamWindowBytes", 2 ** 31],
      ["streamWindowBytes", 1.5],
      ["connectionWindowBytes", 2 ** 31],
      ["connectionWindowBytes", 100.5],
      ["maxHeaderListBytes", 2 ** 32],
      ["maxHeaderListBytes", 1.5],
    ];
    for (const [name, value] of [
      ...bad,
      ["maxConcurrentStreams", 0],
      ["maxConcurrentStreams", 2 ** 33],
      ["maxConcurrentStreams", 1.5],
    ] as [string, number][]) {
      assert.throws(
        () => createHboneServer({ ...server, onTunnel: () => {}, [name]: value }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        `server ${name}=${value}`,
      );
    }
    for (const [name, value] of [
      ...bad,
      ["maxStreamsPerConnection", 1.5],
      ["maxStreamsPerConnection", 2 ** 33],
    ] as [string, number][]) {
      assert.throws(
        () => createHboneClient({ ...client, [name]: value }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        `client ${name}=${value}`,
      );
    }
    // The largest legal values are taken.
    createHboneServer({
      ...server,
      onTunnel: () => {},
      streamWindowBytes: 2 ** 31 - 1,
      connectionWindowBytes: 2 ** 31 - 1,
      maxConcurrentStreams: 2 ** 32 - 1,
    });
  });

  it("listen: refuses bad ports and hosts, a second listen, and leaves no listener behind", async () => {
    const server = createHboneServer({ ...pki.issue(SERVER_ID), onTunnel: () => {} });
    const listeners = server.nodeServer.listenerCount("error");
    for (const port of [-1, 70000, 1.5, "abc", Number.NaN]) {
      await assert.rejects(
        server.listen({ port: port as number, host: "127.0.0.1" }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
        String(port),
      );
    }
    await assert.rejects(
      server.listen({ port: 0, host: 5 as unknown as string }),
      isCode("ERR_HBONE_INVALID_ARGUMENT"),
    );
    await assert.rejects(server.listen(null as never), isCode("ERR_HBONE_INVALID_ARGUMENT"));
    assert.equal(server.nodeServer.listening, false);
    assert.equal(server.nodeServer.listenerCount("error"), listeners);
    await server.listen({ port: 0, host: "127.0.0.1" });
    try {
      await assert.rejects(
        server.listen({ port: 0, host: "127.0.0.1" }),
        isCode("ERR_HBONE_INVALID_ARGUMENT"),
      );
    } finally {
      await server.close({ timeoutMs: 500 });
    }
  });

  it("refuses a key OpenSSL cannot read or that does not match the certificate", () => {
    const server = pki.issue(SERVER_ID);
    const client = pki.issue(CLIENT_ID);
    const cases = [
      { ...server, key: "garbage" },
      { ...server, key: client.key },
    ];
    for (const creds of cases) {
      const check = (e: unknown) => {
        isCode("ERR_HBONE_INVALID_ARGUMENT")(e);
        const cause = (e as HboneError).cause as { code?: unknown };
        assert.match(String(cause?.code), /^ERR_OSSL_/);
        return true;
      };
      assert.throws(() => createHboneServer({ ...creds, onTunnel: () => {} }), check);
      assert.throws(() => createHboneClient(creds), check);
      const ok = createHboneServer({ ...server, onTunnel: () => {} });
      assert.throws(() => ok.setCredentials(creds), check);
    }
  });
});

describe("public helpers: typed errors for wrong argument types", () => {
  const invalid = isCode("ERR_HBONE_INVALID_ARGUMENT");
  const values: unknown[] = [undefined, null, 42, {}, ["a"], Buffer.from("x")];

  it("header parsers take strings only", () => {
    for (const v of values) {
      const s = v as string;
      assert.throws(() => parseForwarded(s), invalid, `parseForwarded(${String(v)})`);
      assert.throws(() => parseBaggage(s), invalid, `parseBaggage(${String(v)})`);
      assert.throws(() => parseWorkloadBaggage(s), invalid, `parseWorkloadBaggage(${String(v)})`);
      assert.throws(() => parseTraceparent(s), invalid, `parseTraceparent(${String(v)})`);
    }
  });

  it("header formatters check their input", () => {
    assert.throws(() => formatForwarded(undefined as never), invalid);
    assert.throws(() => formatForwarded(null as never), invalid);
    assert.throws(() => formatForwarded({ for: 5 as unknown as string }), invalid);
    assert.throws(() => formatBaggage(undefined as never), invalid);
    assert.throws(() => formatBaggage("abc" as never), invalid);
    assert.throws(() => formatBaggage({ a: 5 as unknown as string }), invalid);
    assert.throws(() => formatWorkloadBaggage(undefined as never), invalid);
    const tp = { version: "00", traceId: "0af7651916cd43dd8448eb211c80319c", parentId: "b7ad6b7169203331" };
    for (const flags of [Number.NaN, -1, 256, 1.5, "1" as unknown as number]) {
      assert.throws(() => formatTraceparent({ ...tp, flags }), invalid, `flags ${String(flags)}`);
    }
    assert.equal(formatTraceparent({ ...tp, flags: 1 }), `00-${tp.traceId}-${tp.parentId}-01`);
    assert.throws(() => formatTraceparent(undefined as never), invalid);
  });

  it("createTraceparent takes an options object with a boolean sampled", () => {
    for (const options of [
      null,
      "sampled",
      1,
      Symbol("o"),
      { sampled: "false" },
      { sampled: 1 },
      { sampled: null },
    ]) {
      assert.throws(() => createTraceparent(options as never), invalid, String(JSON.stringify(options)));
    }
    assert.equal(createTraceparent().flags, 0);
    assert.equal(createTraceparent({}).flags, 0);
    assert.equal(createTraceparent({ sampled: false }).flags, 0);
    assert.equal(createTraceparent({ sampled: true }).flags, 1);
  });

  it("http2ErrorName takes an HTTP/2 error code, a 32-bit unsigned integer", () => {
    for (const code of [
      Symbol("c"),
      "8",
      "length",
      "map",
      null,
      undefined,
      Number.NaN,
      -1,
      1.5,
      2 ** 32,
      {},
    ]) {
      assert.throws(
        () => http2ErrorName(code as never),
        invalid,
        typeof code === "symbol" ? "symbol" : String(code),
      );
    }
    assert.equal(http2ErrorName(8), "CANCEL");
    assert.equal(http2ErrorName(0), "NO_ERROR");
    assert.equal(http2ErrorName(0xffffffff), "code 4294967295");
  });

  it("formatTraceparent checks each field, so one cannot carry another's text", () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const parentId = "b7ad6b7169203331";
    // Before, this wrote 01-...-b7ad6b7169203331-00-01, which reads back with flags 00.
    assert.throws(
      () => formatTraceparent({ version: "01", traceId, parentId: `${parentId}-00`, flags: 1 }),
      isCode("ERR_HBONE_INVALID_HEADER"),
    );
    for (const field of ["version", "traceId", "parentId"] as const) {
      assert.throws(
        () => formatTraceparent({ version: "00", traceId, parentId, flags: 1, [field]: 5 }),
        invalid,
        field,
      );
    }
    assert.equal(
      formatTraceparent({ version: "01", traceId, parentId, flags: 3 }),
      `01-${traceId}-${parentId}-03`,
    );
  });

  it("formatAuthority takes a string host and an integer port", () => {
    assert.throws(() => formatAuthority(undefined as unknown as string, 80), invalid);
    assert.throws(() => formatAuthority(null as unknown as string, 80), invalid);
    assert.throws(() => formatAuthority("10.0.0.1", "80" as unknown as number), invalid);
    assert.throws(() => formatAuthority("10.0.0.1", 10n as unknown as number), invalid);
    assert.equal(formatAuthority("10.0.0.1", 80), "10.0.0.1:80");
  });

  it("PROXY codec and credentialsFromSvid check their input", () => {
    for (const v of [undefined, null, "abc", 42, {}]) {
      assert.throws(() => decodeProxyHeader(v as Uint8Array), invalid, `decodeProxyHeader(${String(v)})`);
    }
    assert.throws(() => encodeProxyHeader(undefined as never), invalid);
    assert.throws(() => credentialsFromSvid({} as never, {} as never), invalid);
    assert.throws(() => credentialsFromSvid(undefined as never, undefined as never), invalid);
  });
});
