import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, it } from "node:test";
import { ZtunnelError } from "./errors.js";
import { encodeGreeting, encodeRequest, SOCKS5_REPLY } from "./socks5.js";
import { createSocks5Handler, type Socks5Connect, type Socks5Handler } from "./socks5-server.js";

interface Harness {
  server: Server;
  handler: Socks5Handler;
  port: number;
  connects: Socks5Connect<string>[];
}

const open: Harness[] = [];

async function start(options: {
  handshakeTimeoutMs: number;
  maxHandshakes?: number;
  local?: boolean;
}): Promise<Harness> {
  const connects: Socks5Connect<string>[] = [];
  const handler = createSocks5Handler<string>({
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    ...(options.maxHandshakes === undefined ? {} : { maxHandshakes: options.maxHandshakes }),
    sourceOf: (ip) => (options.local === false ? undefined : `pod ${ip}`),
    resolveHostname: () => undefined,
    onConnect: (c) => connects.push(c),
  });
  const server = createServer({ allowHalfOpen: true }, handler.handle);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const h = { server, handler, port: (server.address() as AddressInfo).port, connects };
  open.push(h);
  return h;
}

afterEach(async () => {
  for (const h of open.splice(0)) {
    h.handler.destroyAll();
    await new Promise<void>((resolve) => h.server.close(() => resolve()));
  }
});

async function client(port: number): Promise<{ socket: Socket; ended: Promise<Buffer> }> {
  const socket = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  socket.on("error", () => {});
  await once(socket, "connect");
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  const ended = new Promise<Buffer>((resolve) => {
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("close", () => resolve(Buffer.concat(chunks)));
  });
  return { socket, ended };
}

describe("createSocks5Handler", () => {
  it("refuses bad options", () => {
    const base = { sourceOf: () => "x", resolveHostname: () => undefined, onConnect: () => {} };
    for (const bad of [
      { handshakeTimeoutMs: 0 },
      { handshakeTimeoutMs: Number.NaN },
      { maxHandshakes: 1.5 },
      { maxHandshakes: -1 },
    ]) {
      assert.throws(() => createSocks5Handler({ ...base, ...bad }), ZtunnelError);
    }
  });

  it("closes connections beyond maxHandshakes at once and counts them", async () => {
    const h = await start({ handshakeTimeoutMs: 60_000, maxHandshakes: 5 });
    const clients = [];
    for (let i = 0; i < 5; i++) clients.push(await client(h.port));
    while (h.handler.inProgress() < 5) await new Promise((r) => setTimeout(r, 5));
    const extra = [];
    for (let i = 0; i < 3; i++) extra.push(await client(h.port));
    await Promise.all(extra.map((c) => c.ended));
    assert.equal(h.handler.outcomes().limit, 3);
    assert.equal(h.handler.inProgress(), 5);
    // The five within the cap are still open; once they go, the slots are free again.
    for (const c of clients) c.socket.destroy();
    while (h.handler.inProgress() > 0) await new Promise((r) => setTimeout(r, 5));
    const again = await client(h.port);
    while (h.handler.inProgress() < 1) await new Promise((r) => setTimeout(r, 5));
    again.socket.destroy();
  });

  it("closes a client whose request is not complete by the deadline, and counts it", async () => {
    const h = await start({ handshakeTimeoutMs: 200 });
    const c = await client(h.port);
    // The greeting and half a request: the client's part is never done.
    c.socket.write(Buffer.concat([encodeGreeting(), encodeRequest("127.0.0.9", 80).subarray(0, 6)]));
    const received = await c.ended;
    assert.deepEqual([...received], [5, 0], "the method choice, then nothing");
    assert.equal(h.connects.length, 0);
    assert.equal(h.handler.outcomes().timeout, 1);
  });

  it("hands over a complete request, and its answer waits for the dial, not the handshake deadline", async () => {
    const h = await start({ handshakeTimeoutMs: 200 });
    const slow = await client(h.port);
    const refused = await client(h.port);
    for (const c of [slow, refused]) {
      c.socket.write(Buffer.concat([encodeGreeting(), encodeRequest("127.0.0.9", 80), Buffer.from("early")]));
    }
    while (h.connects.length < 2) await new Promise((r) => setTimeout(r, 5));
    const [first, second] = h.connects;
    assert.ok(first && second);
    assert.equal(first.source, "pod 127.0.0.1");
    assert.deepEqual(first.request, { kind: "connect", ip: "127.0.0.9", family: 4, port: 80, length: 10 });
    // The dials "take" twice the handshake deadline, as a connect does until its own deadline (10 s,
    // reply 6): the clients wait for their answers.
    await new Promise((r) => setTimeout(r, 400));
    const byClient = new Map([
      [first.socket.remotePort, first],
      [second.socket.remotePort, second],
    ]);
    const slowConnect = byClient.get(slow.socket.localPort);
    const refusedConnect = byClient.get(refused.socket.localPort);
    assert.ok(slowConnect && refusedConnect);
    assert.equal(slowConnect.succeed(), true);
    refusedConnect.refuse(SOCKS5_REPLY.ttlExpired);
    const answer = await refused.ended;
    assert.deepEqual([...answer.subarray(0, 4)], [5, 0, 5, SOCKS5_REPLY.ttlExpired]);
    // Handed over: the new owner ends it.
    slowConnect.socket.end();
    const reply = await slow.ended;
    assert.deepEqual([...reply.subarray(0, 4)], [5, 0, 5, SOCKS5_REPLY.succeeded]);
    assert.equal(h.handler.outcomes().timeout ?? 0, 0);
    slowConnect.socket.destroy();
    slow.socket.destroy();
  });

  it("closes a client refused after its dial that never closes, one deadline later", async () => {
    const h = await start({ handshakeTimeoutMs: 200 });
    const c = await client(h.port);
    c.socket.write(Buffer.concat([encodeGreeting(), encodeRequest("127.0.0.9", 80)]));
    while (h.connects.length === 0) await new Promise((r) => setTimeout(r, 5));
    // The dial fails after the handshake deadline would have passed; the client then keeps its side open.
    await new Promise((r) => setTimeout(r, 300));
    h.connects[0]?.refuse(SOCKS5_REPLY.hostUnreachable);
    assert.equal(h.handler.inProgress(), 1, "held while the reply goes out");
    const received = await c.ended;
    assert.deepEqual([...received.subarray(0, 4)], [5, 0, 5, SOCKS5_REPLY.hostUnreachable]);
    await new Promise((r) => setTimeout(r, 350));
    assert.equal(h.handler.inProgress(), 0, "the slot is free again");
    assert.equal(c.socket.destroyed || c.socket.readableEnded, true);
    c.socket.destroy();
  });

  it("replies success once and leaves the pipelined bytes in the socket", async () => {
    const h = await start({ handshakeTimeoutMs: 5000 });
    const c = await client(h.port);
    c.socket.write(Buffer.concat([encodeGreeting(), encodeRequest("127.0.0.9", 80), Buffer.from("early")]));
    while (h.connects.length === 0) await new Promise((r) => setTimeout(r, 5));
    const connect = h.connects[0];
    assert.ok(connect);
    assert.equal(connect.succeed(), true);
    assert.equal(h.handler.inProgress(), 0);
    const data: Buffer[] = [];
    connect.socket.on("data", (d: Buffer) => data.push(d));
    connect.socket.resume();
    while (Buffer.concat(data).toString() !== "early") await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(connect.handshakeBytes, { received: 13, sent: 12 });
    connect.socket.end();
    c.socket.end();
    const got = await c.ended;
    assert.deepEqual([...got], [5, 0, 5, SOCKS5_REPLY.succeeded, 0, 1, 0, 0, 0, 0, 0, 0]);
  });

  it("refuses a non-local source without reading, and closes it at the deadline if it stays", async () => {
    const h = await start({ handshakeTimeoutMs: 200, local: false });
    const c = await client(h.port);
    const got = await c.ended;
    assert.deepEqual([...got], [5, 0, 5, SOCKS5_REPLY.notAllowed, 0, 1, 0, 0, 0, 0, 0, 0]);
    // The client keeps its side open: the deadline still frees the slot.
    while (h.handler.inProgress() > 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.handler.outcomes().not_local, 1);
    c.socket.destroy();
  });
  it("answers a malformed request or an unknown name with a reply, then closes", async () => {
    const h = await start({ handshakeTimeoutMs: 5000 });
    const cases: [number[], number][] = [
      [[5, 1, 7, 1, 1, 2, 3, 4, 0, 80], SOCKS5_REPLY.generalFailure],
      [[5, 1, 0, 3, 10, ...Buffer.from("0x7f000001"), 0, 80], SOCKS5_REPLY.hostUnreachable],
      [[5, 3, 0, 1, 1, 2, 3, 4, 0, 80], SOCKS5_REPLY.commandNotSupported],
    ];
    for (const [request, reply] of cases) {
      const c = await client(h.port);
      c.socket.write(Buffer.concat([encodeGreeting(), Buffer.from(request)]));
      const got = await c.ended;
      assert.deepEqual([...got], [5, 0, 5, reply, 0, 1, 0, 0, 0, 0, 0, 0]);
      c.socket.end();
    }
    while (h.handler.inProgress() > 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(h.handler.outcomes().refused, 3);
    assert.equal(h.connects.length, 0);
  });
});
