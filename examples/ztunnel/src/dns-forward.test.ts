// Forwarding through the DNS proxy to nameserver stand-ins on 127.0.0.x: how long and how often the
// proxy asks (resolv.conf `options timeout:`/`attempts:`), and what a client gets back.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, describe, it } from "node:test";
import {
  createDnsForwarder,
  type DnsMessage,
  decodeMessage,
  encodeMessage,
  parseResolvConf,
  queryMessage,
  RecordType,
  ResponseCode,
} from "@ambient/dns";
import { createPromClientSink } from "@ambient/telemetry";
import * as prom from "prom-client";
import { testWorkload } from "../test/fixtures.js";
import { createDnsProxy, type UpstreamPlan, upstreamPlan } from "./dns-proxy.js";
import { noopLogger } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";

interface Received {
  readonly message: DnsMessage;
  readonly bytes: Buffer;
  readonly from: { address: string; port: number };
  readonly at: number;
}

/** A UDP nameserver stand-in on `address`; `answer` sends what it likes (nothing: silent). */
async function startNameserver(
  address: string,
  answer: (query: Received, socket: dgram.Socket) => void = () => {},
): Promise<{ address: string; port: number; received: Received[]; close(): Promise<void> }> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  const received: Received[] = [];
  socket.on("message", (bytes, rinfo) => {
    const query = {
      message: decodeMessage(bytes),
      bytes,
      from: { address: rinfo.address, port: rinfo.port },
      at: performance.now(),
    };
    received.push(query);
    answer(query, socket);
  });
  return {
    address,
    port: socket.address().port,
    received,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** The proxy's handler for one client pod, forwarding as `plan` says; `ask` returns the decoded reply and its time. */
function proxyWith(plan: UpstreamPlan) {
  const forwarder = createDnsForwarder({ ...plan, logger: noopLogger });
  const proxy = createDnsProxy({
    store: new WorkloadStore(),
    forwarder,
    logger: noopLogger,
    metrics: createPromClientSink(prom, new prom.Registry()),
  });
  const handle = proxy.handlerFor(testWorkload("sleep", "node-a", "10.244.1.11"));
  const ask = async (name: string, id = 0x2b2b): Promise<{ reply: DnsMessage; ms: number }> => {
    const message = queryMessage(name, RecordType.A, { id });
    const started = performance.now();
    const answered = await handle({
      message,
      bytes: encodeMessage(message),
      protocol: "udp",
      remote: { address: "127.0.0.1", port: 5353 },
      local: { address: "127.0.0.1", port: 15053 },
    });
    const reply = answered instanceof Uint8Array ? decodeMessage(answered) : answered;
    return { reply, ms: performance.now() - started };
  };
  return { ask, close: () => proxy.close() };
}

describe("the DNS proxy's forwarding plan", () => {
  it("takes timeout and attempts from resolv.conf, else 5 s and 2 rounds; dns.timeoutMs wins", () => {
    const cases: [string, string | undefined, { timeoutMs?: number }, [number, number]][] = [
      ["no options", "nameserver 10.96.0.10\n", {}, [5000, 2]],
      ["no resolv.conf", undefined, {}, [5000, 2]],
      ["timeout:1 attempts:3", "nameserver 10.96.0.10\noptions timeout:1 attempts:3\n", {}, [1000, 3]],
      ["beyond the C library's limits", "options timeout:60 attempts:9\n", {}, [30_000, 5]],
      ["zeros", "options timeout:0 attempts:0\n", {}, [1000, 1]],
      ["dns.timeoutMs", "options timeout:3 attempts:4\n", { timeoutMs: 750 }, [750, 4]],
    ];
    for (const [label, text, configured, expected] of cases) {
      const plan = upstreamPlan(text === undefined ? undefined : parseResolvConf(text), configured);
      assert.deepEqual([plan.timeoutMs, plan.attempts], expected, label);
    }
    assert.deepEqual(upstreamPlan(parseResolvConf("nameserver 10.96.0.10\n")).nameservers, [
      { address: "10.96.0.10", port: 53 },
    ]);
    assert.deepEqual(upstreamPlan(undefined).nameservers, [{ address: "127.0.0.1", port: 53 }]);
  });
});

describe("forwarding to a nameserver stand-in", () => {
  const closers: (() => unknown)[] = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  it("asks a silent nameserver `attempts` times, `timeout` apart, then answers SERVFAIL", async () => {
    const silent = await startNameserver("127.0.0.31");
    closers.push(silent.close);
    const plan = upstreamPlan(parseResolvConf("nameserver 127.0.0.31\noptions timeout:1 attempts:3\n"));
    // The stand-in listens on an ephemeral port, not 53.
    const { ask, close } = proxyWith({
      ...plan,
      nameservers: [{ address: silent.address, port: silent.port }],
    });
    closers.push(close);
    const { reply, ms } = await ask("www.example.org");
    assert.equal(reply.rcode, ResponseCode.SERVFAIL);
    assert.equal(silent.received.length, 3);
    const gaps = silent.received.slice(1).map((q, i) => q.at - (silent.received[i] as Received).at);
    // One second apart, not the default five (upper bounds loose for a loaded machine).
    for (const gap of gaps) assert.ok(gap >= 950 && gap < 4000, `tries ${gaps.join(", ")} ms apart`);
    assert.ok(ms >= 2900 && ms < 12_000, `answered after ${ms} ms`);
  });

  it("answers the first nameserver's SERVFAIL without asking the second, after asking it each round", async () => {
    const failing = await startNameserver("127.0.0.34", (query, socket) => {
      const reply = { ...query.message, response: true, rcode: ResponseCode.SERVFAIL };
      socket.send(encodeMessage(reply), query.from.port, query.from.address);
    });
    const second = await startNameserver("127.0.0.35", (query, socket) => {
      socket.send(encodeMessage({ ...query.message, response: true }), query.from.port, query.from.address);
    });
    closers.push(failing.close, second.close);
    const { ask, close } = proxyWith({
      nameservers: [failing, second].map((ns) => ({ address: ns.address, port: ns.port })),
      timeoutMs: 10_000,
      attempts: 2,
    });
    closers.push(close);
    const { reply, ms } = await ask("www.example.org");
    assert.equal(reply.rcode, ResponseCode.SERVFAIL);
    assert.deepEqual([failing.received.length, second.received.length], [2, 0]);
    assert.ok(ms < 8000, `answered after ${ms} ms`);
  });
});

/** A reply to `query` of just a header: its id (or `id`), QR set, `rcode`, no sections. */
function headerOnly(query: DnsMessage, rcode: number, id = query.id): Uint8Array {
  const bytes = new Uint8Array(12);
  new DataView(bytes.buffer).setUint16(0, id);
  bytes[2] = 0x80 | (query.opcode << 3) | (query.recursionDesired ? 1 : 0);
  bytes[3] = rcode;
  return bytes;
}

describe("an upstream error reply without a question section", () => {
  const closers: (() => unknown)[] = [];
  after(async () => {
    for (const close of closers.reverse()) await close();
  });

  it("reaches the client at once with the upstream's rcode, the client's id and question", async () => {
    const rcodes: Record<string, number> = {
      "refused.example": ResponseCode.REFUSED,
      "formerr.example": ResponseCode.FORMERR,
      "notimp.example": ResponseCode.NOTIMP,
      "servfail.example": ResponseCode.SERVFAIL,
    };
    const upstream = await startNameserver("127.0.0.32", (query, socket) => {
      const rcode = rcodes[query.message.questions[0]?.name ?? ""] ?? ResponseCode.SERVFAIL;
      socket.send(headerOnly(query.message, rcode), query.from.port, query.from.address);
    });
    closers.push(upstream.close);
    const { ask, close } = proxyWith({
      nameservers: [{ address: upstream.address, port: upstream.port }],
      timeoutMs: 10_000,
      attempts: 2,
    });
    closers.push(close);
    for (const [name, rcode] of Object.entries(rcodes)) {
      const { reply, ms } = await ask(name, 0x0a0b);
      assert.equal(reply.rcode, rcode, name);
      assert.equal(reply.id, 0x0a0b, name);
      assert.deepEqual(
        reply.questions.map((q) => [q.name, q.type]),
        [[name, RecordType.A]],
        name,
      );
      // When the reply came, not after the try's 10 s wait.
      assert.ok(ms < 8000, `${name} answered after ${ms} ms`);
    }
  });

  it("is dropped with another id, from another port, or when a question it carries is not the one asked", async () => {
    const stranger = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => stranger.bind(0, "127.0.0.33", resolve));
    closers.push(() => new Promise<void>((resolve) => stranger.close(() => resolve())));
    const upstream = await startNameserver("127.0.0.33", (query, socket) => {
      const to = [query.from.port, query.from.address] as const;
      // The right id from another port of the same address: the forwarder's connected socket drops it.
      stranger.send(headerOnly(query.message, ResponseCode.REFUSED), ...to);
      socket.send(headerOnly(query.message, ResponseCode.REFUSED, (query.message.id + 1) & 0xffff), ...to);
      const other = queryMessage("elsewhere.example", RecordType.A, { id: query.message.id });
      socket.send(encodeMessage({ ...other, response: true, rcode: ResponseCode.REFUSED }), ...to);
    });
    closers.push(upstream.close);
    const { ask, close } = proxyWith({
      nameservers: [{ address: upstream.address, port: upstream.port }],
      timeoutMs: 500,
      attempts: 1,
    });
    closers.push(close);
    const { reply, ms } = await ask("www.example.org");
    assert.equal(upstream.received.length, 1);
    assert.equal(reply.rcode, ResponseCode.SERVFAIL);
    assert.ok(ms >= 450, `answered after ${ms} ms`);
  });
});
