import assert from "node:assert/strict";
import { constants, connect as http2Connect } from "node:http2";
import type { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { errorOf, readAll, startServer, type TestServer, until } from "../test/harness.js";
import { HboneError } from "./errors.js";
import { createHboneClient, type HboneClient } from "./hbone-client.js";
import { formatForwarded, parseTraceparent } from "./headers.js";

describe("HBONE tunnels", () => {
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
    await srv.server.close({ timeoutMs: 1000 });
    pki.cleanup();
  });

  it("carries bytes both ways with identities and tunnel headers", async () => {
    const serverSide = srv.nextTunnel().then(async (t) => {
      assert.equal(t.peerIdentity.toString(), CLIENT_ID);
      assert.deepEqual(t.authority, { kind: "ip", host: "10.0.0.1", port: 8080, family: 4 });
      assert.deepEqual(t.forwarded, [{ for: "192.168.1.2:5555" }]);
      assert.equal(t.baggage?.get("k8s.namespace.name"), "default");
      assert.ok(t.traceparent, "a traceparent is generated per tunnel");
      assert.equal(t.remoteAddress, "127.0.0.1");
      const stream = t.accept({ baggage: "k8s.namespace.name=backend" });
      const data = await readAll(stream);
      stream.end(Buffer.concat([Buffer.from("echo:"), data]));
    });
    const tunnel = await client.connect({
      address: srv.address,
      authority: "10.0.0.1:8080",
      expectedIdentities: [SERVER_ID],
      headers: {
        forwarded: formatForwarded({ for: "192.168.1.2:5555" }),
        baggage: "k8s.namespace.name=default",
      },
    });
    assert.equal(tunnel.peerIdentity.toString(), SERVER_ID);
    assert.equal(tunnel.headers.baggage, "k8s.namespace.name=backend");
    tunnel.end("hello");
    assert.equal((await readAll(tunnel)).toString(), "echo:hello");
    await serverSide;
  });

  it("sends a 55-character W3C traceparent unless one is given", async () => {
    const given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const seen = srv.nextTunnel().then((t) => {
      t.refuse(503);
      return t.headers.traceparent;
    });
    await assert.rejects(
      client.connect({
        address: srv.address,
        authority: "10.0.0.1:80",
        expectedIdentities: [SERVER_ID],
        headers: { traceparent: given },
      }),
    );
    assert.equal(await seen, given);
    const seen2 = srv.nextTunnel().then((t) => {
      t.refuse(503);
      return String(t.headers.traceparent);
    });
    await assert.rejects(
      client.connect({ address: srv.address, authority: "10.0.0.1:80", expectedIdentities: [SERVER_ID] }),
    );
    const generated = await seen2;
    assert.equal(generated.length, 55);
    assert.equal(parseTraceparent(generated).version, "00");
  });

  it("keeps a header field named like an Object member (constructor) as sent", async () => {
    const seen = srv.nextTunnel().then((t) => {
      t.refuse(503);
      return t.headers.constructor;
    });
    await assert.rejects(
      client.connect({
        address: srv.address,
        authority: "10.0.0.1:80",
        expectedIdentities: [SERVER_ID],
        headers: { constructor: "a" },
      }),
    );
    assert.equal(await seen, "a");
  });

  it("half-close: client end() reaches the server as EOF while the server keeps sending", async () => {
    const serverSide = srv.nextTunnel().then(async (t) => {
      const stream = t.accept();
      const got = await readAll(stream);
      assert.equal(got.toString(), "request");
      // The client's side is closed for writing; ours still flows.
      for (let i = 0; i < 10; i++) stream.write(`reply-${i};`);
      stream.end();
    });
    const tunnel = await client.connect({
      address: srv.address,
      authority: "10.0.0.2:80",
      expectedIdentities: [SERVER_ID],
    });
    tunnel.end("request");
    const reply = await readAll(tunnel);
    assert.equal(reply.toString(), Array.from({ length: 10 }, (_, i) => `reply-${i};`).join(""));
    await serverSide;
  });

  it("back-pressure: a reader that stops makes the writer wait instead of buffering", async () => {
    const chunk = Buffer.alloc(64 * 1024, 7);
    const limit = 64 * 1024 * 1024;
    const serverSide = srv.nextTunnel().then(async (t) => {
      const stream = t.accept();
      // Write while the tunnel keeps draining; stop once no drain comes for a while (stalled).
      let written = 0;
      while (written < limit) {
        written += chunk.length;
        if (stream.write(chunk)) continue;
        const drained = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 300);
          stream.once("drain", () => {
            clearTimeout(timer);
            resolve(true);
          });
        });
        if (!drained) break;
      }
      return { stream, written };
    });
    const tunnel = await client.connect({
      address: srv.address,
      authority: "10.0.0.3:80",
      expectedIdentities: [SERVER_ID],
    });
    tunnel.pause();
    const { stream, written } = await serverSide;
    // Flow-control windows (4 MiB stream, 16 MiB connection) bound what can be in flight.
    assert.ok(written < 24 * 1024 * 1024, `writer was not pushed back (wrote ${written} bytes)`);
    let total = 0;
    tunnel.on("data", (c: Buffer) => {
      total += c.length;
    });
    tunnel.resume();
    stream.end();
    await new Promise<void>((resolve) => tunnel.once("end", resolve));
    assert.equal(total, written);
    tunnel.end();
  });

  it("back-pressure after the window grew: a reader that stops holds the writer to the grown window", async () => {
    // Small windows, so that growth (up to 1 MiB for the stream) and its bound are quick to reach.
    const small = createHboneClient({
      ...pki.issue(CLIENT_ID),
      streamWindowBytes: 256 * 1024,
      connectionWindowBytes: 1024 * 1024,
      maxStreamWindowBytes: 1024 * 1024,
    });
    const chunk = Buffer.alloc(64 * 1024, 7);
    const serverSide = srv.nextTunnel().then(async (t) => {
      const stream = t.accept();
      let written = 0;
      while (written < 256 * 1024 * 1024) {
        written += chunk.length;
        if (stream.write(chunk)) continue;
        const drained = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 300);
          stream.once("drain", () => {
            clearTimeout(timer);
            resolve(true);
          });
        });
        if (!drained) break;
      }
      return { stream, written };
    });
    const tunnel = await small.connect({
      address: srv.address,
      authority: "10.0.0.3:80",
      expectedIdentities: [SERVER_ID],
    });
    // Read fast for 16 MiB (the window probes see a reader that keeps up), then stop reading.
    let read = 0;
    await new Promise<void>((resolve) => {
      const onData = (c: Buffer) => {
        read += c.length;
        if (read < 16 * 1024 * 1024) return;
        tunnel.off("data", onData);
        tunnel.pause();
        resolve();
      };
      tunnel.on("data", onData);
    });
    const { stream, written } = await serverSide;
    // In flight once the writer stopped: at most the grown stream window (1 MiB) plus the writer's
    // own buffer (256 KiB) and a chunk; without a bound it would reach the 256 MiB cap.
    const outstanding = written - read;
    assert.ok(
      outstanding <= 1.5 * 1024 * 1024,
      `writer ran ${outstanding} bytes ahead of the stopped reader`,
    );
    let rest = 0;
    tunnel.on("data", (c: Buffer) => {
      rest += c.length;
    });
    tunnel.resume();
    stream.end();
    await new Promise<void>((resolve) => tunnel.once("end", resolve));
    assert.equal(read + rest, written);
    tunnel.end();
    await small.destroy();
  });

  it("a reader that catches up on tunnels the peer ended gives the connection window back", async () => {
    // A client of its own: the test fills its connection's whole window.
    const own = createHboneClient(pki.issue(CLIENT_ID));
    const open = () =>
      own.connect({ address: srv.address, authority: "10.0.0.3:80", expectedIdentities: [SERVER_ID] });
    const opened: Duplex[] = [];
    try {
      // Four tunnels send one stream window (4 MiB) each and END_STREAM: together the connection
      // window (16 MiB), while the server's readers lag.
      const body = Buffer.alloc(4 * 1024 * 1024, 1);
      const lagging: Duplex[] = [];
      for (let i = 0; i < 4; i++) {
        const accepted = srv.nextTunnel().then((t) => t.accept());
        const tunnel = await open();
        opened.push(tunnel);
        tunnel.end(body);
        lagging.push(await accepted);
      }
      opened.push(...lagging);
      await until(
        () => lagging.every((s) => s.readableLength === body.length),
        "the bodies buffered at the server",
      );
      // The readers catch up completely (their own side stays open).
      for (const s of lagging) assert.equal((await readAll(s)).length, body.length);
      // A fifth tunnel on the same connection needs that window back.
      const accepted = srv.nextTunnel().then((t) => t.accept());
      const fifth = await open();
      opened.push(fifth);
      assert.equal(own.stats().connections, 1);
      const upload = 8 * 1024 * 1024;
      fifth.end(Buffer.alloc(upload, 2));
      const reader = await accepted;
      opened.push(reader);
      let received = 0;
      reader.on("data", (c: Buffer) => {
        received += c.length;
      });
      await until(() => received === upload, `the fifth tunnel's upload (${received} of ${upload} bytes)`);
    } finally {
      for (const s of opened) s.destroy();
      await own.destroy();
    }
  });

  it("a client reset surfaces as ERR_HBONE_RESET on the server side", async () => {
    const serverStream = srv.nextTunnel().then((t) => t.accept());
    const tunnel = await client.connect({
      address: srv.address,
      authority: "10.0.0.4:80",
      expectedIdentities: [SERVER_ID],
    });
    tunnel.write("x");
    const stream = await serverStream;
    const err = errorOf(stream);
    tunnel.destroy();
    const e = await err;
    assert.ok(e instanceof HboneError);
    assert.equal(e.code, "ERR_HBONE_RESET");
    assert.equal(e.rstCode, constants.NGHTTP2_CANCEL);
  });

  it("a server reset surfaces as ERR_HBONE_RESET on the client side", async () => {
    const serverStream = srv.nextTunnel().then((t) => t.accept());
    const tunnel = await client.connect({
      address: srv.address,
      authority: "10.0.0.5:80",
      expectedIdentities: [SERVER_ID],
    });
    const err = errorOf(tunnel);
    const stream = await serverStream;
    stream.on("error", () => {});
    stream.destroy(new Error("upstream failed"));
    const e = await err;
    assert.ok(e instanceof HboneError);
    assert.equal(e.code, "ERR_HBONE_RESET");
  });

  for (const status of [400, 401, 503]) {
    it(`a refusal with ${status} rejects with ERR_HBONE_REFUSED carrying the status`, async () => {
      srv.nextTunnel().then((t) => t.refuse(status, "policy"));
      await assert.rejects(
        client.connect({ address: srv.address, authority: "10.0.0.6:80", expectedIdentities: [SERVER_ID] }),
        (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_REFUSED" && e.status === status,
      );
    });
  }

  it("a handler that throws refuses with 503", async () => {
    const s = await startServer(pki, {
      onTunnel: () => {
        throw new Error("boom");
      },
    });
    const c = createHboneClient(pki.issue(CLIENT_ID));
    await assert.rejects(
      c.connect({ address: s.address, authority: "10.0.0.6:80", expectedIdentities: [SERVER_ID] }),
      (e: unknown) => e instanceof HboneError && e.status === 503,
    );
    const s2 = await startServer(pki, { onTunnel: async () => Promise.reject(new Error("async boom")) });
    await assert.rejects(
      c.connect({ address: s2.address, authority: "10.0.0.6:80", expectedIdentities: [SERVER_ID] }),
      (e: unknown) => e instanceof HboneError && e.status === 503,
    );
    await c.destroy();
    await s.server.close({ timeoutMs: 100 });
    await s2.server.close({ timeoutMs: 100 });
  });

  it("answers non-CONNECT methods and bad authorities with 400, never crashing", async () => {
    const creds = pki.issue(CLIENT_ID);
    const socket = tlsConnect({
      host: "127.0.0.1",
      port: srv.port,
      key: creds.key,
      cert: creds.certChain,
      ca: creds.trustBundle,
      ALPNProtocols: ["h2"],
      checkServerIdentity: () => undefined,
    });
    const session = http2Connect(`https://127.0.0.1:${srv.port}`, { createConnection: () => socket });
    const status = (headers: Record<string, string>) =>
      new Promise<number | string>((resolve) => {
        const req = session.request(headers, { endStream: false });
        req.on("response", (h) => resolve(Number(h[":status"])));
        // Header values HTTP/2 itself forbids are reset before reaching the application.
        req.on("error", (e: NodeJS.ErrnoException) => resolve(String(e.code)));
        req.resume();
      });
    assert.equal(await status({ ":method": "GET", ":path": "/" }), 400);
    assert.equal(await status({ ":method": "POST", ":path": "/x" }), 400);
    for (const authority of [
      "nonsense",
      "10.0.0.1",
      "10.0.0.1:0",
      "10.0.0.1:99999",
      "::1:80",
      "300.1.1.1:80",
      "a_b..c:80",
    ]) {
      assert.equal(await status({ ":method": "CONNECT", ":authority": authority }), 400, authority);
    }
    assert.equal(await status({ ":method": "CONNECT", ":authority": "a b:80" }), "ERR_HTTP2_STREAM_ERROR");
    // The connection survives all of that.
    assert.equal(await status({ ":method": "GET", ":path": "/" }), 400);
    session.destroy();
  });

  it("leaves no connections or tunnels behind after close()", async () => {
    const s = await startServer(pki);
    const c = createHboneClient(pki.issue(CLIENT_ID));
    s.nextTunnel().then((t) => t.accept().end("bye"));
    const t = await c.connect({
      address: s.address,
      authority: "10.0.0.7:80",
      expectedIdentities: [SERVER_ID],
    });
    assert.equal((await readAll(t)).toString(), "bye");
    t.end();
    await until(() => c.stats().streams === 0, "stream released");
    assert.equal(c.stats().connections, 1);
    await c.close();
    await s.server.close();
    assert.deepEqual(c.stats(), { connections: 0, streams: 0, innerSessions: 0 });
    assert.deepEqual(s.server.stats(), { connections: 0, tunnels: 0 });
    await assert.rejects(
      c.connect({ address: s.address, authority: "10.0.0.7:80", expectedIdentities: [SERVER_ID] }),
      (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_CLOSED",
    );
  });

  it("client close() waits for open tunnels up to timeoutMs, then destroys them", async () => {
    const s = await startServer(pki);
    const c = createHboneClient(pki.issue(CLIENT_ID));
    try {
      // A tunnel whose far end never ends it.
      const serverStream = s.nextTunnel().then((t) => t.accept().on("error", () => {}));
      const t = await c.connect({
        address: s.address,
        authority: "10.0.0.9:80",
        expectedIdentities: [SERVER_ID],
      });
      t.on("error", () => {});
      await serverStream;
      const started = performance.now();
      await c.close({ timeoutMs: 200 });
      const tookMs = performance.now() - started;
      assert.ok(tookMs >= 150 && tookMs < 5000, `closed after ${Math.round(tookMs)} ms`);
      assert.ok(t.destroyed, "the tunnel was destroyed");
      assert.deepEqual(c.stats(), { connections: 0, streams: 0, innerSessions: 0 });
      await assert.rejects(
        c.close({ timeoutMs: -1 }),
        (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_INVALID_ARGUMENT",
      );
    } finally {
      await c.destroy();
      await s.server.close({ timeoutMs: 1000 });
    }
  });

  it("graceful server close lets open tunnels finish, then refuses new connections", async () => {
    const s = await startServer(pki);
    const c = createHboneClient(pki.issue(CLIENT_ID));
    const serverStream = s.nextTunnel().then((t) => t.accept());
    const t = await c.connect({
      address: s.address,
      authority: "10.0.0.8:80",
      expectedIdentities: [SERVER_ID],
    });
    const stream = await serverStream;
    const closed = s.server.close({ timeoutMs: 10_000 });
    // The open tunnel still works in both directions during the drain.
    t.write("still");
    const first = await new Promise<Buffer>((resolve) => stream.once("data", resolve));
    assert.equal(first.toString(), "still");
    stream.end("done");
    t.end();
    assert.equal((await readAll(t)).toString(), "done");
    await closed;
    await assert.rejects(
      c.connect({ address: s.address, authority: "10.0.0.8:80", expectedIdentities: [SERVER_ID] }),
      (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_CONNECTION",
    );
    await c.destroy();
  });

  it("signal read only after the client left is already aborted, with the reset as its reason", async () => {
    const received = srv.nextTunnel();
    const controller = new AbortController();
    const pending = client.connect({
      address: srv.address,
      authority: "10.0.0.10:80",
      expectedIdentities: [SERVER_ID],
      signal: controller.signal,
    });
    const t = await received;
    controller.abort();
    await assert.rejects(pending, (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_ABORTED");
    await until(() => t.state === "closed", "the server saw the client leave");
    assert.equal(t.signal.aborted, true);
    assert.ok(t.signal.reason instanceof HboneError && t.signal.reason.code === "ERR_HBONE_RESET");
  });

  it("accept() after the client left returns a stream that reports the reset instead of throwing", async () => {
    const accepted = srv.nextTunnel().then(async (t) => {
      await new Promise((resolve) => t.signal.addEventListener("abort", resolve));
      assert.equal(t.state, "closed");
      return t.accept();
    });
    const controller = new AbortController();
    const pending = client.connect({
      address: srv.address,
      authority: "10.0.0.9:80",
      expectedIdentities: [SERVER_ID],
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(pending, (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_ABORTED");
    const stream = await accepted;
    const e = await errorOf(stream);
    assert.ok(e instanceof HboneError);
    assert.equal(e.code, "ERR_HBONE_RESET");
  });
});
