import assert from "node:assert/strict";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { errorOf, readAll, startServer, type TestServer, until } from "../test/harness.js";
import { HboneError } from "./errors.js";
import { createHboneClient, type HboneClient } from "./hbone-client.js";
import type { InboundTunnel } from "./inbound-tunnel.js";
import { type PipeTunnelResult, pipeTunnel } from "./pipe-tunnel.js";

/** A local TCP server whose behaviour each test sets. */
async function tcpServer(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, onSocket);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  assert.ok(address && typeof address === "object");
  return { server, port: address.port };
}

describe("pipeTunnel: an HBONE server forwarding to local TCP", () => {
  let pki: TestPki;
  let srv: TestServer;
  let client: HboneClient;
  // Settled outcomes of the server's pipeTunnel calls (errors as values, so none goes unhandled).
  const results: Promise<PipeTunnelResult | Error>[] = [];
  const upstreams: Socket[] = [];

  // The embedding pattern: dial the target, answer 200 only once it is up, then copy.
  function forward(tunnel: InboundTunnel): void {
    const upstream = netConnect({
      host: tunnel.authority.host,
      port: tunnel.authority.port,
      allowHalfOpen: true,
    });
    upstream.once("connect", () => {
      upstreams.push(upstream);
      results.push(pipeTunnel(tunnel.accept(), upstream).catch((e: Error) => e));
    });
    upstream.once("error", () => {
      if (tunnel.state === "pending") tunnel.refuse(503);
    });
  }

  before(async () => {
    pki = createTestPki();
    srv = await startServer(pki, { onTunnel: forward });
    client = createHboneClient(pki.issue(CLIENT_ID));
  });
  after(async () => {
    await client.destroy();
    await srv.server.close({ timeoutMs: 500 });
    pki.cleanup();
  });

  const open = (port: number) =>
    client.connect({ address: srv.address, authority: `127.0.0.1:${port}`, expectedIdentities: [SERVER_ID] });

  it("copies both ways, forwards half-close and reports bytes", async () => {
    const up = await tcpServer((s) => {
      let n = 0;
      s.on("data", (c: Buffer) => {
        n += c.length;
      });
      s.on("end", () => s.end(`got ${n}`));
    });
    const tunnel = await open(up.port);
    const payload = Buffer.alloc(1024 * 1024 + 7, 1);
    tunnel.end(payload);
    assert.equal((await readAll(tunnel)).toString(), `got ${payload.length}`);
    const result = await results.at(-1);
    assert.deepEqual(result, { aToB: payload.length, bToA: `got ${payload.length}`.length });
    up.server.close();
  });

  it("answers 503 when the upstream refuses the TCP connection", async () => {
    const up = await tcpServer(() => {});
    const port = up.port;
    await new Promise((r) => up.server.close(r));
    await assert.rejects(open(port), (e: unknown) => e instanceof HboneError && e.status === 503);
  });

  it("back-pressure end to end: a paused client stalls the upstream writer", async () => {
    const limit = 96 * 1024 * 1024;
    let written = 0;
    let stalled: () => void = () => {};
    const isStalled = new Promise<void>((r) => {
      stalled = r;
    });
    const chunk = Buffer.alloc(64 * 1024, 3);
    const up = await tcpServer(async (s) => {
      while (written < limit) {
        written += chunk.length;
        if (s.write(chunk)) continue;
        const drained = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 300);
          s.once("drain", () => {
            clearTimeout(timer);
            resolve(true);
          });
        });
        if (!drained) break;
      }
      stalled();
      await new Promise((r) => s.once("drain", r));
      s.end();
    });
    const tunnel = await open(up.port);
    tunnel.pause();
    await isStalled;
    // Tunnel windows (4 MiB stream) and kernel socket buffers bound what is in flight.
    assert.ok(written < limit / 2, `upstream was never pushed back (wrote ${written} bytes)`);
    tunnel.end();
    const data = await readAll(tunnel);
    assert.equal(data.length, written);
    up.server.close();
  });

  it("an upstream that catches up on tunnels the client ended gives the connection window back", async () => {
    // Upstreams whose writes complete only once `release` runs: the relay's buffer fills up.
    let lagging = true;
    const held: (() => void)[] = [];
    const release = () => {
      lagging = false;
      for (const done of held.splice(0)) done();
    };
    const upstreams: { socket: Duplex; received: number }[] = [];
    const relays: Promise<unknown>[] = [];
    const server = await startServer(pki, {
      onTunnel: (t) => {
        const up = { socket: undefined as unknown as Duplex, received: 0 };
        up.socket = new Duplex({
          allowHalfOpen: true,
          read() {},
          write(chunk: Buffer, _encoding, done) {
            up.received += chunk.length;
            if (lagging) held.push(done);
            else done();
          },
        });
        upstreams.push(up);
        relays.push(pipeTunnel(t.accept(), up.socket).catch((e: Error) => e));
      },
    });
    // A client of its own: the test fills its connection's whole window.
    const own = createHboneClient(pki.issue(CLIENT_ID));
    const open = () =>
      own.connect({ address: server.address, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] });
    const tunnels: Duplex[] = [];
    try {
      // Five tunnels send one stream window (4 MiB) each and END_STREAM: more than the connection
      // window (16 MiB), while the upstreams lag.
      const body = Buffer.alloc(4 * 1024 * 1024, 1);
      for (let i = 0; i < 5; i++) {
        const tunnel = await open();
        tunnels.push(tunnel);
        tunnel.on("error", () => {});
        tunnel.end(body);
      }
      await until(
        () => upstreams.length === 5 && upstreams.every((u) => u.socket.writableLength === body.length),
        "the bodies buffered toward the upstreams",
      );
      // The upstreams catch up completely (their other direction stays open).
      release();
      await until(() => upstreams.every((u) => u.socket.writableFinished), "the upstreams took everything");
      // A sixth tunnel on the same connection needs that window back.
      const sixth = await open();
      tunnels.push(sixth);
      assert.equal(own.stats().connections, 1);
      const upload = 8 * 1024 * 1024;
      sixth.end(Buffer.alloc(upload, 2));
      await until(() => upstreams[5]?.received === upload, "the sixth tunnel's upload");
    } finally {
      for (const t of tunnels) t.destroy();
      for (const u of upstreams) u.socket.destroy();
      await own.destroy();
      await server.server.close({ timeoutMs: 500 });
      await Promise.all(relays);
    }
  });

  it("an upstream reset becomes a tunnel reset at the client", async () => {
    const up = await tcpServer((s) => {
      s.once("data", () => s.resetAndDestroy());
    });
    const tunnel = await open(up.port);
    const err = errorOf(tunnel);
    tunnel.write("trigger");
    const e = await err;
    assert.ok(e instanceof HboneError);
    assert.equal(e.code, "ERR_HBONE_RESET");
    assert.ok((await results.at(-1)) instanceof HboneError);
    up.server.close();
  });

  it("a client reset aborts the upstream TCP connection", async () => {
    let upstreamError: string | undefined;
    let upstreamClosed = false;
    let upstreamGotData = false;
    const up = await tcpServer((s) => {
      s.on("error", (e: NodeJS.ErrnoException) => {
        upstreamError = e.code;
      });
      s.on("close", () => {
        upstreamClosed = true;
      });
      s.on("data", () => {
        upstreamGotData = true;
      });
    });
    const tunnel = await open(up.port);
    tunnel.write("hello");
    // Reset only once the relayed bytes have arrived: Linux turns a reset that races a write still in
    // flight on the same socket into a plain FIN, which this test is not about.
    await until(() => upstreamGotData, "upstream received the data");
    tunnel.destroy();
    await until(() => upstreamClosed, "upstream closed");
    assert.equal(upstreamError, "ECONNRESET");
    assert.ok((await results.at(-1)) instanceof HboneError);
    up.server.close();
  });
});

describe("pipeTunnel: a local TCP connection into an HBONE client tunnel", () => {
  let pki: TestPki;
  let srv: TestServer;
  let client: HboneClient;

  before(async () => {
    pki = createTestPki();
    srv = await startServer(pki);
    client = createHboneClient(pki.issue(CLIENT_ID));
  });
  after(async () => {
    await client.destroy();
    await srv.server.close({ timeoutMs: 500 });
    pki.cleanup();
  });

  /**
   * A local client connection (`local`), its accepted socket piped into a new tunnel, and the
   * server's end of that tunnel (`remote`).
   */
  async function joined(
    options: { signal?: AbortSignal; beforePipe?: (remote: Duplex, tunnel: Duplex) => Promise<void> } = {},
  ) {
    let accepted: (s: Socket) => void = () => {};
    const gotSocket = new Promise<Socket>((r) => {
      accepted = r;
    });
    const listener = await tcpServer((s) => accepted(s));
    const local = netConnect({ host: "127.0.0.1", port: listener.port, allowHalfOpen: true });
    const socket = await gotSocket;
    listener.server.close();
    const [tunnel, remote] = await Promise.all([
      client.connect({ address: srv.address, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] }),
      srv.nextTunnel().then((inbound) => inbound.accept()),
    ]);
    await options.beforePipe?.(remote, tunnel);
    const result = pipeTunnel(socket, tunnel, options.signal ? { signal: options.signal } : {}).catch(
      (e: Error) => e,
    );
    return { local, socket, tunnel, remote, result };
  }

  it("copies both ways, forwards each half-close and counts the bytes", async () => {
    const { local, remote, result } = await joined();
    const payload = Buffer.alloc(3 * 1024 * 1024 + 11, 7);
    const received = readAll(remote);
    local.end(payload);
    assert.equal((await received).length, payload.length);
    // The local side's end arrived; the other direction still flows until the remote ends it.
    remote.end("reply after the client's end");
    assert.equal((await readAll(local)).toString(), "reply after the client's end");
    assert.deepEqual(await result, { aToB: payload.length, bToA: "reply after the client's end".length });
  });

  it("stops reading the local socket while the tunnel's reader is paused", async () => {
    const { local, remote, result } = await joined();
    remote.pause();
    const chunk = Buffer.alloc(64 * 1024, 1);
    const limit = 96 * 1024 * 1024;
    let written = 0;
    while (written < limit) {
      written += chunk.length;
      if (local.write(chunk)) continue;
      const drained = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 300);
        local.once("drain", () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!drained) break;
    }
    // The stream window (4 MiB), the relay's buffer and kernel socket buffers bound what is in flight.
    assert.ok(written < limit / 2, `the local writer was never pushed back (wrote ${written} bytes)`);
    local.end();
    const received = await readAll(remote);
    assert.equal(received.length, written);
    remote.end();
    await readAll(local);
    assert.deepEqual(await result, { aToB: written, bToA: 0 });
  });

  it("destroying the tunnel while it relays resets the local socket and rejects", async () => {
    const { local, tunnel, remote, result } = await joined();
    let localError: string | undefined;
    local.on("error", (e: NodeJS.ErrnoException) => {
      localError = e.code;
    });
    const remoteError = errorOf(remote);
    local.write("hello");
    await new Promise<void>((r) => remote.once("data", () => r()));
    tunnel.destroy();
    const e = await result;
    assert.ok(e instanceof HboneError, String(e));
    assert.equal(e.code, "ERR_HBONE_CONNECTION");
    const reset = await remoteError;
    assert.ok(reset instanceof HboneError && reset.code === "ERR_HBONE_RESET", String(reset));
    await until(() => local.destroyed || localError !== undefined, "local socket reset");
    await until(() => localError !== undefined, "local socket error");
    assert.equal(localError, "ECONNRESET");
  });

  it("an abort signal ends the relay with ERR_HBONE_ABORTED", async () => {
    const controller = new AbortController();
    const { local, remote, result } = await joined({ signal: controller.signal });
    local.on("error", () => {});
    remote.on("error", () => {});
    controller.abort();
    const e = await result;
    assert.ok(e instanceof HboneError, String(e));
    assert.equal(e.code, "ERR_HBONE_ABORTED");
  });

  it("a tunnel with bytes already buffered is copied through the stream interface, bytes intact", async () => {
    const { local, remote, result } = await joined({
      beforePipe: async (remote, tunnel) => {
        remote.write("early");
        await until(() => tunnel.readableLength === 5, "the early bytes are buffered in the tunnel");
      },
    });
    remote.end(" and late");
    assert.equal((await readAll(local)).toString(), "early and late");
    local.end("up");
    assert.equal((await readAll(remote)).toString(), "up");
    assert.deepEqual(await result, { aToB: 2, bToA: 14 });
  });
});
