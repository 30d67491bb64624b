import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import type { Logger } from "@ambient/telemetry";
import { dig, hasDig } from "../test/dig.js";
import {
  connectFrames,
  eventually,
  frame,
  makeQuery,
  openSocketCount,
  udpExchange,
} from "../test/sockets.js";
import {
  addressRecord,
  cnameRecord,
  createDnsServer,
  type DnsHandler,
  type DnsServer,
  decodeMessage,
  encodeMessage,
  RecordType,
  ResponseCode,
  recordAddress,
  recordTarget,
  replyTo,
} from "./index.js";
import { HEADER_BYTES } from "./message.js";

const noDig = hasDig ? false : "dig is not installed (scripts/test-prerequisites.mjs)";

/** Sends one query over a fresh TCP connection and returns the reply. */
async function tcpExchange(port: number, bytes: Uint8Array): Promise<Buffer | undefined> {
  const client = await connectFrames(port);
  try {
    client.socket.write(frame(bytes));
    return await client.next();
  } finally {
    client.socket.destroy();
  }
}

/** Answers NAME.mesh.test itself: "many" with 60 addresses, "slow" after 200 ms, "fail" by throwing. */
const meshHandler: DnsHandler = async ({ message }) => {
  const { name, type } = message.questions[0]!;
  if (name === "fail.mesh.test") throw new Error("boom");
  if (name === "slow.mesh.test") await new Promise((resolve) => setTimeout(resolve, 200));
  if (name === "many.mesh.test") {
    const answers = Array.from({ length: 60 }, (_, i) => addressRecord(name, `10.1.0.${i + 1}`, 30));
    return replyTo(message, { authoritative: true, answers });
  }
  if (!name.endsWith(".mesh.test")) return replyTo(message, { rcode: ResponseCode.NXDOMAIN });
  const answers = type === RecordType.A ? [addressRecord(name, "10.0.0.7", 30)] : [];
  return replyTo(message, { authoritative: true, answers });
};

function recordingLogger(): Logger & { warnings: unknown[] } {
  const warnings: unknown[] = [];
  const noop = (): void => {};
  return {
    warnings,
    debug: noop,
    info: noop,
    error: noop,
    warn: (fields, msg) => warnings.push({ ...fields, msg }),
  };
}

describe("DnsServer", () => {
  let server: DnsServer;
  let port: number;
  const logger = recordingLogger();

  before(async () => {
    server = createDnsServer({ handler: meshHandler, logger });
    ({ port } = await server.listen({ host: "127.0.0.1", port: 0 }));
  });
  after(() => server.close());

  it("answers dig over UDP and over TCP", { skip: noDig }, async () => {
    const udp = await dig(port, ["web.mesh.test", "A"]);
    assert.equal(udp.status, "NOERROR");
    assert.deepEqual(udp.answers, ["10.0.0.7"]);
    assert.ok(
      ["qr", "aa", "rd", "ra"].every((flag) => udp.flags.includes(flag)),
      udp.stdout,
    );
    const tcp = await dig(port, ["+tcp", "web.mesh.test", "A"]);
    assert.deepEqual(tcp.answers, ["10.0.0.7"]);
    assert.equal((await dig(port, ["+noedns", "nope.example", "A"])).status, "NXDOMAIN");
  });

  it(
    "truncates a UDP answer over the client's payload size; dig retries over TCP",
    { skip: noDig },
    async () => {
      const cut = await dig(port, ["+bufsize=512", "+ignore", "many.mesh.test", "A"]);
      assert.ok(cut.flags.includes("tc"), cut.stdout);
      assert.ok(cut.answers.length > 0 && cut.answers.length < 60, cut.stdout);
      const cutNoEdns = await dig(port, ["+noedns", "+ignore", "many.mesh.test", "A"]);
      assert.ok(cutNoEdns.flags.includes("tc"), cutNoEdns.stdout);
      const full = await dig(port, ["+bufsize=512", "many.mesh.test", "A"]);
      assert.equal(full.answers.length, 60, full.stdout);
      assert.ok(!full.flags.includes("tc"));
      // A client that accepts 4096 bytes gets it all over UDP.
      const large = await dig(port, ["+bufsize=4096", "+ignore", "many.mesh.test", "A"]);
      assert.equal(large.answers.length, 60, large.stdout);
    },
  );

  it("keeps the rcode and flags in a truncated reply", async () => {
    const reply = await udpExchange(
      port,
      encodeMessage(makeQuery("many.mesh.test", RecordType.A, { id: 99 })),
    );
    assert.ok(reply);
    const message = decodeMessage(reply);
    assert.equal(message.id, 99);
    assert.ok(message.truncated && message.authoritative && message.response && message.recursionDesired);
    assert.deepEqual(message.questions, [{ name: "many.mesh.test", type: RecordType.A, class: 1 }]);
    assert.ok(message.answers.length < 60);
    assert.equal(message.additionals.length, 0);
  });

  it("keeps an OPT record in a truncated reply to an EDNS query", async () => {
    // RFC 6891 section 7: even a truncated response to an EDNS query carries an OPT record.
    const opt = { name: "", type: RecordType.OPT, class: 512, ttl: 0, data: new Uint8Array(0) };
    const reply = await udpExchange(
      port,
      encodeMessage(makeQuery("many.mesh.test", RecordType.A, { id: 98, additionals: [opt] })),
    );
    assert.ok(reply);
    assert.ok(reply.length <= 512);
    const message = decodeMessage(reply);
    assert.equal(message.id, 98);
    assert.ok(message.truncated && message.authoritative);
    assert.deepEqual(message.questions, [{ name: "many.mesh.test", type: RecordType.A, class: 1 }]);
    assert.ok(message.answers.length < 60);
    assert.equal(message.additionals.length, 1);
    assert.equal(message.additionals[0]?.type, RecordType.OPT);
    assert.equal(message.additionals[0]?.name, "");
    assert.equal(message.additionals[0]?.data.length, 0);
    // The extended rcode and flags (here DO) of the response's own OPT record are kept.
    const flagged = createDnsServer({
      handler: ({ message: q }) =>
        replyTo(q, {
          answers: Array.from({ length: 60 }, (_, i) => addressRecord("x.mesh.test", `10.2.0.${i + 1}`, 30)),
          additionals: [{ ...opt, class: 1232, ttl: 0x8000 }],
        }),
    });
    const { port: flaggedPort } = await flagged.listen({ host: "127.0.0.1", port: 0 });
    try {
      const query = encodeMessage(makeQuery("x.mesh.test", RecordType.A, { additionals: [opt] }));
      const cut = decodeMessage((await udpExchange(flaggedPort, query))!);
      assert.ok(cut.truncated);
      assert.equal(cut.additionals[0]?.ttl, 0x8000);
    } finally {
      await flagged.close();
    }
  });

  it("keeps the whole answer records that fit in a truncated UDP reply", async () => {
    // A stub resolver that never asks again over TCP (musl before 1.2.4, as in older Alpine images)
    // uses what a truncated reply holds: the first records of a large answer, never none at all.
    const header = 12;
    const question = "many.mesh.test".length + 2 + 4;
    const record = 2 + 10 + 4; // compressed owner, fixed fields, IPv4 address
    const noEdns = await udpExchange(port, encodeMessage(makeQuery("many.mesh.test", RecordType.A)));
    assert.ok(noEdns && noEdns.length <= 512);
    const cut = decodeMessage(noEdns);
    assert.ok(cut.truncated && cut.authoritative);
    assert.deepEqual(cut.questions, [{ name: "many.mesh.test", type: RecordType.A, class: 1 }]);
    assert.equal(cut.answers.length, Math.floor((512 - header - question) / record));
    assert.deepEqual(
      cut.answers.map(recordAddress),
      cut.answers.map((_, i) => `10.1.0.${i + 1}`),
    );
    assert.ok(cut.answers.every((r) => r.name === "many.mesh.test" && r.ttl === 30));
    assert.equal(cut.authorities.length + cut.additionals.length, 0);
    // With EDNS the OPT record is kept too, and counted against the client's payload size.
    const opt = { name: "", type: RecordType.OPT, class: 600, ttl: 0, data: new Uint8Array(0) };
    const withEdns = await udpExchange(
      port,
      encodeMessage(makeQuery("many.mesh.test", RecordType.A, { additionals: [opt] })),
    );
    assert.ok(withEdns && withEdns.length <= 600);
    const cutEdns = decodeMessage(withEdns);
    assert.ok(cutEdns.truncated);
    assert.equal(cutEdns.answers.length, Math.floor((600 - header - question - 11) / record));
    assert.deepEqual(
      cutEdns.additionals.map((r) => r.type),
      [RecordType.OPT],
    );
    // Bytes from the handler (a forwarded response) are cut the same way; bytes that do not walk
    // as a response give the header and the query's question alone.
    let junk = false;
    const forwarding = createDnsServer({
      handler: ({ message: q }) => {
        const full = encodeMessage(
          replyTo(q, {
            answers: [
              cnameRecord("alias.mesh.test", "many.mesh.test", 30),
              ...Array.from({ length: 60 }, (_, i) => addressRecord("many.mesh.test", `10.3.0.${i + 1}`, 30)),
            ],
          }),
        );
        if (junk) full.fill(0xff, HEADER_BYTES);
        return full;
      },
    });
    const { port: forwardingPort } = await forwarding.listen({ host: "127.0.0.1", port: 0 });
    try {
      const query = encodeMessage(makeQuery("alias.mesh.test", RecordType.A));
      const chain = decodeMessage((await udpExchange(forwardingPort, query))!);
      assert.ok(chain.truncated);
      assert.equal(recordTarget(chain.answers[0]!), "many.mesh.test");
      assert.ok(chain.answers.length > 1 && chain.answers.length < 61);
      assert.equal(recordAddress(chain.answers[1]!), "10.3.0.1");
      junk = true;
      const bare = decodeMessage((await udpExchange(forwardingPort, query))!);
      assert.ok(bare.truncated);
      assert.deepEqual(bare.questions, [{ name: "alias.mesh.test", type: RecordType.A, class: 1 }]);
      assert.equal(bare.answers.length, 0);
    } finally {
      await forwarding.close();
    }
  });

  it("replies FORMERR, NOTIMP and SERVFAIL on its own", async () => {
    // Header readable, question missing: FORMERR with the id and no question.
    const broken = Buffer.from("abcd0100000100000000000003", "hex");
    const formerr = await udpExchange(port, broken);
    assert.ok(formerr);
    assert.deepEqual(decodeMessage(formerr), {
      ...makeQuery("", 0, { id: 0xabcd, response: true, rcode: ResponseCode.FORMERR }),
      questions: [],
    });
    const two = makeQuery("a.mesh.test");
    const twoQuestions = { ...two, questions: [...two.questions, ...two.questions] };
    const formerr2 = decodeMessage((await udpExchange(port, encodeMessage(twoQuestions)))!);
    assert.equal(formerr2.rcode, ResponseCode.FORMERR);
    const notimp = decodeMessage(
      (await udpExchange(port, encodeMessage(makeQuery("a.mesh.test", 1, { opcode: 2 }))))!,
    );
    assert.equal(notimp.rcode, ResponseCode.NOTIMP);
    assert.equal(notimp.opcode, 2);
    const before = logger.warnings.length;
    const servfail = decodeMessage((await udpExchange(port, encodeMessage(makeQuery("fail.mesh.test"))))!);
    assert.equal(servfail.rcode, ResponseCode.SERVFAIL);
    assert.deepEqual(servfail.questions, makeQuery("fail.mesh.test").questions);
    assert.equal(logger.warnings.length, before + 1);
    assert.deepEqual(
      {
        name: (logger.warnings.at(-1) as { name: string }).name,
        type: (logger.warnings.at(-1) as { type: string }).type,
      },
      { name: "fail.mesh.test", type: "A" },
    );
  });

  it("answers BADVERS to an EDNS version it does not implement (RFC 6891 6.1.3)", async () => {
    const opt = (ttl: number) => ({
      name: "",
      type: RecordType.OPT,
      class: 1232,
      ttl,
      data: new Uint8Array(0),
    });
    // Version 1, DO set.
    const query = makeQuery("web.mesh.test", RecordType.A, { id: 77, additionals: [opt(0x00018000)] });
    for (const reply of [
      await udpExchange(port, encodeMessage(query)),
      await tcpExchange(port, encodeMessage(query)),
    ]) {
      assert.ok(reply);
      const message = decodeMessage(reply);
      assert.equal(message.id, 77);
      assert.ok(message.response);
      assert.deepEqual(message.questions, query.questions);
      assert.equal(message.answers.length + message.authorities.length, 0);
      // BADVERS is 16: 0 in the header's four bits, 1 in the OPT record's extended rcode; the reply
      // speaks version 0.
      assert.equal(message.rcode, 0);
      assert.equal(message.additionals.length, 1);
      const replyOpt = message.additionals[0]!;
      assert.equal(replyOpt.type, RecordType.OPT);
      assert.equal(replyOpt.ttl >>> 24, 1, "extended rcode");
      assert.equal((replyOpt.ttl >>> 16) & 0xff, 0, "version");
    }
    // Version 0 is answered as usual.
    const v0 = decodeMessage(
      (await udpExchange(port, encodeMessage({ ...query, additionals: [opt(0x00008000)] })))!,
    );
    assert.equal(v0.rcode, ResponseCode.NOERROR);
    assert.equal(recordAddress(v0.answers[0]!), "10.0.0.7");
  });

  it("answers FORMERR to a repeated OPT record or one outside the additional section (RFC 6891 6.1.1)", async () => {
    const opt = { name: "", type: RecordType.OPT, class: 1232, ttl: 0, data: new Uint8Array(0) };
    const base = makeQuery("web.mesh.test", RecordType.A, { id: 78 });
    const cases = {
      "two OPT records": { ...base, additionals: [opt, opt] },
      "OPT in the answer section": { ...base, answers: [opt] },
      "OPT in the authority section": { ...base, authorities: [opt] },
      "OPT owned by a name other than the root": {
        ...base,
        additionals: [{ ...opt, name: "web.mesh.test" }],
      },
    };
    for (const [what, query] of Object.entries(cases)) {
      const reply = await udpExchange(port, encodeMessage(query));
      assert.ok(reply, what);
      const message = decodeMessage(reply);
      assert.equal(message.id, 78, what);
      assert.equal(message.rcode, ResponseCode.FORMERR, what);
      assert.equal(message.answers.length, 0, what);
      assert.ok(message.additionals.filter((r) => r.type === RecordType.OPT).length <= 1, what);
    }
  });

  it("drops what is not a query: short datagrams and responses", async () => {
    assert.equal(await udpExchange(port, Buffer.from("0102030405", "hex"), 300), undefined);
    const response = encodeMessage(makeQuery("a.mesh.test", 1, { response: true }));
    assert.equal(await udpExchange(port, response, 300), undefined);
  });

  it("answers queries pipelined on one TCP connection as they finish", async () => {
    const client = await connectFrames(port);
    const slow = encodeMessage(makeQuery("slow.mesh.test", RecordType.A, { id: 1 }));
    const fast = encodeMessage(makeQuery("fast.mesh.test", RecordType.A, { id: 2 }));
    client.socket.write(Buffer.concat([frame(slow), frame(fast)]));
    const first = decodeMessage((await client.next())!);
    const second = decodeMessage((await client.next())!);
    assert.deepEqual(
      [first.id, first.questions[0]?.name, second.id, second.questions[0]?.name],
      [2, "fast.mesh.test", 1, "slow.mesh.test"],
    );
    assert.equal(recordAddress(second.answers[0]!), "10.0.0.7");
    client.socket.destroy();
  });

  it("answers what is in flight after the client's half-close, then ends", async () => {
    const client = await connectFrames(port);
    client.socket.end(frame(encodeMessage(makeQuery("slow.mesh.test", RecordType.A, { id: 3 }))));
    const reply = await client.next();
    assert.equal(decodeMessage(reply!).id, 3);
    await client.ended;
    client.socket.destroy();
  });

  it("closes a TCP connection on a zero-length frame", async () => {
    const client = await connectFrames(port);
    client.socket.write(Buffer.of(0, 0));
    await client.ended;
    assert.equal(await client.next(100), undefined);
    client.socket.destroy();
  });
});

describe("DnsServer limits", () => {
  it("closes idle TCP connections after tcpIdleTimeoutMs, counting from the last answer", async () => {
    const server = createDnsServer({ handler: meshHandler, tcpIdleTimeoutMs: 150 });
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    try {
      const silent = await connectFrames(port);
      const started = Date.now();
      await silent.ended;
      assert.ok(Date.now() - started >= 100, "closed too early");
      // A query in flight longer than the idle timeout keeps the connection open.
      const busy = await connectFrames(port);
      await new Promise((resolve) => setTimeout(resolve, 100));
      busy.socket.write(frame(encodeMessage(makeQuery("slow.mesh.test"))));
      assert.ok(await busy.next());
      await busy.ended;
      silent.socket.destroy();
      busy.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it("does not let a client keep a connection by trickling a frame that never completes", async () => {
    const server = createDnsServer({ handler: meshHandler, tcpIdleTimeoutMs: 150 });
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    try {
      const client = await connectFrames(port);
      // A frame announced as 100 bytes, then one byte every 30 ms: 60 bytes take well over the idle
      // timeout, and the frame is never complete.
      client.socket.write(Buffer.of(0, 100));
      let closedWhileTrickling = false;
      void client.ended.then(() => {
        closedWhileTrickling = true;
      });
      for (let i = 0; i < 60 && !closedWhileTrickling; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 30));
        if (!client.socket.destroyed) client.socket.write(Buffer.of(0));
      }
      assert.ok(closedWhileTrickling, "the server kept a connection whose frame never completed");
      client.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it("closes TCP connections over maxTcpConnections at once", async () => {
    const server = createDnsServer({ handler: meshHandler, maxTcpConnections: 1 });
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    try {
      const first = await connectFrames(port);
      const second = await connectFrames(port);
      await second.ended;
      first.socket.write(frame(encodeMessage(makeQuery("a.mesh.test"))));
      assert.ok(await first.next());
      first.socket.destroy();
      second.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it("drops UDP queries and holds TCP frames over maxInFlight", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const server = createDnsServer({
      maxInFlight: 1,
      handler: async ({ message }) => {
        if (message.questions[0]?.name === "held.mesh.test") await gate;
        return replyTo(message);
      },
    });
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    try {
      const client = await connectFrames(port);
      client.socket.write(frame(encodeMessage(makeQuery("held.mesh.test", 1, { id: 10 }))));
      await new Promise((resolve) => setTimeout(resolve, 50));
      client.socket.write(frame(encodeMessage(makeQuery("next.mesh.test", 1, { id: 11 }))));
      assert.equal(await udpExchange(port, encodeMessage(makeQuery("udp.mesh.test")), 200), undefined);
      assert.equal(await client.next(100), undefined, "the second frame waits for room");
      release();
      assert.equal(decodeMessage((await client.next())!).id, 10);
      assert.equal(decodeMessage((await client.next())!).id, 11);
      assert.ok(await udpExchange(port, encodeMessage(makeQuery("udp.mesh.test"))));
      client.socket.destroy();
    } finally {
      release();
      await server.close();
    }
  });
});

describe("DnsServer sockets", () => {
  it("serves sockets made by the caller, sets the query's id on bytes from the handler, and closes them", async () => {
    const canned = encodeMessage(
      replyTo(makeQuery("canned.mesh.test", 1, { id: 7 }), { rcode: ResponseCode.REFUSED }),
    );
    const server = createDnsServer({
      handler: async () => {
        await new Promise((resolve) => setTimeout(resolve, 50));
        return canned;
      },
    });
    const udp = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", resolve));
    const tcp = net.createServer();
    await new Promise<void>((resolve) => tcp.listen(0, "127.0.0.1", resolve));
    server.serveUdp(udp);
    server.serveTcp(tcp);
    const reply = decodeMessage(
      (await udpExchange(udp.address().port, encodeMessage(makeQuery("x", 1, { id: 500 }))))!,
    );
    assert.deepEqual([reply.id, reply.rcode], [500, ResponseCode.REFUSED]);
    const client = await connectFrames((tcp.address() as net.AddressInfo).port);
    // The client's FIN right after its query: the answer still comes, though tcp lacks allowHalfOpen.
    client.socket.end(frame(encodeMessage(makeQuery("x", 1, { id: 501 }))));
    assert.equal(decodeMessage((await client.next())!).id, 501);
    await client.ended;
    client.socket.destroy();
    await server.close();
    assert.ok(
      await eventually(() => openSocketCount() === 0),
      `sockets left: ${process.getActiveResourcesInfo()}`,
    );
  });

  it("close() destroys connections and drops answers still being made", async () => {
    let handled = 0;
    const server = createDnsServer({
      handler: async ({ message }) => {
        handled += 1;
        await new Promise((resolve) => setTimeout(resolve, 100));
        return replyTo(message);
      },
    });
    const { port } = await server.listen({ host: "127.0.0.1", port: 0 });
    const client = await connectFrames(port);
    client.socket.write(frame(encodeMessage(makeQuery("a.mesh.test"))));
    const udpReply = udpExchange(port, encodeMessage(makeQuery("b.mesh.test")), 400);
    assert.ok(await eventually(() => handled === 2));
    await server.close();
    await client.ended;
    assert.equal(await client.next(50), undefined);
    assert.equal(await udpReply, undefined);
    client.socket.destroy();
    await new Promise((resolve) => setTimeout(resolve, 150)); // the handlers finish into the void
    assert.ok(
      await eventually(() => openSocketCount() === 0),
      `sockets left: ${process.getActiveResourcesInfo()}`,
    );
    await assert.rejects(server.listen({ host: "127.0.0.1", port: 0 }), { code: "ERR_DNS_CLOSED" });
  });

  it("listen() reports bind failures as ERR_DNS_BIND with the errno", async () => {
    const taken = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => taken.bind(0, "127.0.0.1", resolve));
    const server = createDnsServer({ handler: meshHandler });
    try {
      await assert.rejects(server.listen({ host: "127.0.0.1", port: taken.address().port }), (err: Error) => {
        const { code, details } = err as Error & { code: string; details: { errno?: string } };
        return code === "ERR_DNS_BIND" && details.errno === "EADDRINUSE";
      });
      await assert.rejects(server.listen({ host: "localhost", port: 0 }), {
        code: "ERR_DNS_INVALID_ARGUMENT",
      });
    } finally {
      taken.close();
      await server.close();
    }
  });
});
