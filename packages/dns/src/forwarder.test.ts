import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { type Dnsmasq, hasDnsmasq, startDnsmasq } from "../test/dnsmasq.js";
import { type FakeUpstream, startFakeUpstream } from "../test/fake-upstream.js";
import { eventually, freePort, makeQuery, openSocketCount } from "../test/sockets.js";
import {
  addressRecord,
  cnameRecord,
  createDnsForwarder,
  type DnsForwarderOptions,
  decodeMessage,
  encodeMessage,
  RecordType,
  ResponseCode,
  recordAddress,
  recordTarget,
  replyTo,
} from "./index.js";
import { labelsText, readName } from "./name.js";

const noDnsmasq = hasDnsmasq ? false : "dnsmasq is not installed (scripts/test-prerequisites.mjs)";

function assertCode(code: string) {
  return (err: unknown): boolean => {
    assert.equal((err as { code?: string }).code, code, String(err));
    return true;
  };
}

describe("DnsForwarder", { skip: noDnsmasq }, () => {
  let dnsmasq: Dnsmasq;
  let silent: FakeUpstream;
  let baseline = 0;
  const forwarders: { close(): void }[] = [];

  function forwarder(options: Partial<DnsForwarderOptions> & Pick<DnsForwarderOptions, "nameservers">) {
    // Long enough that dnsmasq, a process of its own, answers every try on a loaded machine; the tests
    // that wait out a silent server set their own.
    const made = createDnsForwarder({ timeoutMs: 5000, ...options });
    forwarders.push(made);
    return made;
  }

  before(async () => {
    dnsmasq = await startDnsmasq();
    silent = await startFakeUpstream(() => []);
    baseline = openSocketCount();
  });
  after(async () => {
    for (const made of forwarders) made.close();
    await silent?.close();
    await dnsmasq?.stop();
  });

  it("passes an answer through with the client's id", async () => {
    const upstream = forwarder({ nameservers: [{ address: "127.0.0.1", port: dnsmasq.port }] });
    const query = encodeMessage(makeQuery("web.example.test", RecordType.A, { id: 0x1234 }));
    const reply = decodeMessage(await upstream.forward(query));
    assert.equal(reply.id, 0x1234);
    assert.equal(reply.rcode, ResponseCode.NOERROR);
    assert.deepEqual(reply.answers.map(recordAddress), ["192.0.2.7"]);
    // The same over TCP, and with a message rather than bytes.
    const overTcp = decodeMessage(
      await upstream.forward(makeQuery("big.test", RecordType.A, { id: 9 }), { protocol: "tcp" }),
    );
    assert.equal(overTcp.id, 9);
    assert.deepEqual(overTcp.answers.map(recordAddress).sort(), ["192.0.2.1", "192.0.2.2"]);
  });

  it("passes NXDOMAIN through", async () => {
    const upstream = forwarder({ nameservers: [{ address: "127.0.0.1", port: dnsmasq.port }] });
    const reply = decodeMessage(
      await upstream.forward(makeQuery("missing.nx.test", RecordType.A, { id: 77 })),
    );
    assert.deepEqual([reply.id, reply.rcode], [77, ResponseCode.NXDOMAIN]);
  });

  it("skips a nameserver that does not answer, and one that refuses the connection", async () => {
    const closedPort = await freePort();
    const upstream = forwarder({
      nameservers: [
        { address: "127.0.0.1", port: silent.port },
        { address: "127.0.0.1", port: closedPort },
        { address: "127.0.0.1", port: dnsmasq.port },
      ],
      timeoutMs: 1000,
    });
    const started = Date.now();
    const reply = decodeMessage(await upstream.forward(makeQuery("example.test")));
    const elapsed = Date.now() - started;
    assert.deepEqual(reply.answers.map(recordAddress), ["192.0.2.7"]);
    // One wait for the silent server, none for the refused connection; dnsmasq's answer within its own.
    assert.ok(elapsed >= 990 && elapsed < 10_000, `took ${elapsed} ms`);
  });

  it("returns an error answer without asking the next nameserver, after asking again each round", async () => {
    // Every rcode that is an error, not a statement about the name (NOERROR, NXDOMAIN).
    const errors: Record<string, number> = {
      "formerr.test": ResponseCode.FORMERR,
      "servfail.test": ResponseCode.SERVFAIL,
      "notimp.test": ResponseCode.NOTIMP,
      "refused.test": ResponseCode.REFUSED,
      "yxdomain.test": 6,
      "notzone.test": 10,
    };
    const erring = await startFakeUpstream((query) => [
      encodeMessage(
        replyTo(query, { rcode: errors[query.questions[0]?.name ?? ""] ?? ResponseCode.SERVFAIL }),
      ),
    ]);
    const answering = await startFakeUpstream((query) => [
      encodeMessage(replyTo(query, { answers: [addressRecord(query.questions[0]!.name, "192.0.2.50", 5)] })),
    ]);
    try {
      const upstream = forwarder({
        nameservers: [
          { address: "127.0.0.1", port: erring.port },
          { address: "127.0.0.1", port: answering.port },
        ],
        attempts: 2,
      });
      for (const [name, rcode] of Object.entries(errors)) {
        const before = erring.queries.length;
        const reply = decodeMessage(await upstream.forward(makeQuery(name, RecordType.A, { id: 5 })));
        assert.deepEqual([reply.id, reply.rcode], [5, rcode], name);
        // Each round starts again with the first nameserver; the second is never asked.
        assert.equal(erring.queries.length - before, 2, name);
      }
      assert.equal(answering.queries.length, 0);
    } finally {
      await erring.close();
      await answering.close();
    }
  });

  it("takes the next round's answer after an error answer, and the last round's outcome decides", async () => {
    // SERVFAIL to the first query for each name, then an address (recover.test) or silence.
    const asked = new Set<string>();
    const flaky = await startFakeUpstream((query) => {
      const name = query.questions[0]?.name ?? "";
      if (!asked.has(name)) {
        asked.add(name);
        return [encodeMessage(replyTo(query, { rcode: ResponseCode.SERVFAIL }))];
      }
      if (name !== "recover.test") return [];
      return [encodeMessage(replyTo(query, { answers: [addressRecord(name, "192.0.2.51", 5)] }))];
    });
    try {
      const upstream = forwarder({
        nameservers: [{ address: "127.0.0.1", port: flaky.port }],
        timeoutMs: 300,
      });
      const recovered = decodeMessage(await upstream.forward(makeQuery("recover.test")));
      assert.equal(recovered.rcode, ResponseCode.NOERROR);
      assert.deepEqual(recovered.answers.map(recordAddress), ["192.0.2.51"]);
      // An earlier round's SERVFAIL is not the result when the last round got no answer.
      await assert.rejects(upstream.forward(makeQuery("gone.test")), assertCode("ERR_DNS_UPSTREAM_TIMEOUT"));
    } finally {
      await flaky.close();
    }
  });

  it("ignores answers with the wrong id or another question, and takes the right one", async () => {
    const spoofer = await startFakeUpstream((query) => {
      const right = replyTo(query, { answers: [addressRecord(query.questions[0]!.name, "192.0.2.99", 5)] });
      const wrongId = {
        ...right,
        id: (query.id + 1) & 0xffff,
        answers: [addressRecord("spoof.test", "6.6.6.6", 5)],
      };
      const otherName = replyTo(
        { ...query, questions: [{ name: "other.test", type: 1, class: 1 }] },
        {
          answers: [addressRecord("other.test", "6.6.6.6", 5)],
        },
      );
      const otherType = replyTo({ ...query, questions: [{ ...query.questions[0]!, type: RecordType.AAAA }] });
      const otherClass = replyTo({ ...query, questions: [{ ...query.questions[0]!, class: 3 }] });
      const notResponse = { ...right, response: false };
      return [
        encodeMessage(wrongId),
        encodeMessage(otherName),
        encodeMessage(otherType),
        encodeMessage(otherClass),
        encodeMessage(notResponse),
        Uint8Array.of(1, 2, 3),
        encodeMessage(right),
      ];
    });
    try {
      const upstream = forwarder({ nameservers: [{ address: "127.0.0.1", port: spoofer.port }] });
      const reply = decodeMessage(
        await upstream.forward(makeQuery("Target.Test", RecordType.A, { id: 321 })),
      );
      assert.equal(reply.id, 321);
      assert.deepEqual(reply.answers.map(recordAddress), ["192.0.2.99"]);
      // The name is compared case-insensitively: an upstream may change its case (0x20 randomization).
      const lowered = await startFakeUpstream((query) => {
        const q = query.questions[0]!;
        return [encodeMessage(replyTo({ ...query, questions: [{ ...q, name: q.name.toLowerCase() }] }))];
      });
      try {
        const other = forwarder({ nameservers: [{ address: "127.0.0.1", port: lowered.port }] });
        assert.equal(decodeMessage(await other.forward(makeQuery("MiXeD.test"))).rcode, ResponseCode.NOERROR);
      } finally {
        await lowered.close();
      }
    } finally {
      await spoofer.close();
    }
  });

  it("drops answer records that are neither the question's name nor on its CNAME chain", async () => {
    const chatty = await startFakeUpstream((query) => {
      const answers = [
        cnameRecord("www.chain.test", "edge.cdn.test", 5),
        addressRecord("bank.test", "6.6.6.6", 5),
        cnameRecord("edge.cdn.test", "a.cdn.test", 5),
        addressRecord("a.cdn.test", "192.0.2.60", 5),
        addressRecord("ns1.evil.test", "6.6.6.7", 5),
      ];
      const bytes = encodeMessage(replyTo(query, { answers }));
      // A SOA in the authority section whose MNAME points at "ns1.evil.test" above, as servers
      // compress it: the answer that holds that name is dropped, the SOA must still name it.
      const at = Buffer.from(bytes).indexOf(Buffer.from("\x03ns1\x04evil", "latin1"));
      const soa = Uint8Array.from([0xc0 | (at >> 8), at & 0xff, 0xc0, 0x0c, ...new Uint8Array(20).fill(1)]);
      return [
        encodeMessage({
          ...decodeMessage(bytes),
          authorities: [{ name: "test", type: 6, class: 1, ttl: 5, data: soa }],
        }),
      ];
    });
    try {
      const upstream = forwarder({ nameservers: [{ address: "127.0.0.1", port: chatty.port }] });
      const reply = decodeMessage(
        await upstream.forward(makeQuery("www.chain.test", RecordType.A, { id: 12 })),
      );
      assert.equal(reply.id, 12);
      assert.deepEqual(
        reply.answers.map((r) => [r.name, recordAddress(r) ?? recordTarget(r)]),
        [
          ["www.chain.test", "edge.cdn.test"],
          ["edge.cdn.test", "a.cdn.test"],
          ["a.cdn.test", "192.0.2.60"],
        ],
      );
      const soa = reply.authorities[0]?.data ?? new Uint8Array(0);
      assert.equal(labelsText(readName(soa, 0).labels), "ns1.evil.test");
    } finally {
      await chatty.close();
    }
  });

  it("gives the question back as the client spelled it (0x20), and answer names equal to it", async () => {
    // The upstream lowercases the question; its answer owner is upper case, written out in full.
    const lowering = await startFakeUpstream((query) => {
      const q = query.questions[0]!;
      const lowered = { ...query, questions: [{ ...q, name: q.name.toLowerCase() }] };
      return [
        encodeMessage(
          replyTo(lowered, {
            answers: [
              addressRecord(q.name.toUpperCase(), "192.0.2.70", 5),
              addressRecord(q.name.toLowerCase(), "192.0.2.71", 5),
            ],
          }),
        ),
      ];
    });
    try {
      const upstream = forwarder({ nameservers: [{ address: "127.0.0.1", port: lowering.port }] });
      for (const protocol of ["udp", "tcp"] as const) {
        const reply = decodeMessage(
          await upstream.forward(makeQuery("wWw.ExAmple.TEST", RecordType.A, { id: 13 }), { protocol }),
        );
        assert.deepEqual(
          reply.questions,
          [{ name: "wWw.ExAmple.TEST", type: RecordType.A, class: 1 }],
          protocol,
        );
        assert.deepEqual(
          reply.answers.map((r) => [r.name, recordAddress(r)]),
          [
            ["wWw.ExAmple.TEST", "192.0.2.70"],
            ["wWw.ExAmple.TEST", "192.0.2.71"],
          ],
          protocol,
        );
      }
    } finally {
      await lowering.close();
    }
  });

  it("takes an error reply without a question section by its id, answering the query with its rcode", async () => {
    // Header only: the id, QR, the rcode; no question (as servers that cannot parse a query send).
    const headerOnly = (id: number, rcode: number): Uint8Array =>
      Uint8Array.of(id >>> 8, id & 0xff, 0x81, rcode, 0, 0, 0, 0, 0, 0, 0, 0);
    const erring = await startFakeUpstream((query) => {
      const name = query.questions[0]?.name ?? "";
      if (name === "noerror.test") return [headerOnly(query.id, ResponseCode.NOERROR)];
      if (name === "nxdomain.test") return [headerOnly(query.id, ResponseCode.NXDOMAIN)];
      return [
        headerOnly((query.id + 1) & 0xffff, ResponseCode.REFUSED),
        headerOnly(query.id, ResponseCode.FORMERR),
      ];
    });
    try {
      const upstream = forwarder({
        nameservers: [{ address: "127.0.0.1", port: erring.port }],
      });
      const started = Date.now();
      const reply = decodeMessage(
        await upstream.forward(makeQuery("Broken.Test", RecordType.AAAA, { id: 99 })),
      );
      // Taken when it came, not after the try's 5 s wait.
      assert.ok(Date.now() - started < 4000, `took ${Date.now() - started} ms`);
      assert.deepEqual([reply.id, reply.response, reply.rcode], [99, true, ResponseCode.FORMERR]);
      assert.deepEqual(reply.questions, [{ name: "Broken.Test", type: RecordType.AAAA, class: 1 }]);
      // A header that says NOERROR or NXDOMAIN is about a name: without the question it is not taken.
      const silentOnes = forwarder({
        nameservers: [{ address: "127.0.0.1", port: erring.port }],
        attempts: 1,
        timeoutMs: 200,
      });
      for (const name of ["noerror.test", "nxdomain.test"]) {
        await assert.rejects(silentOnes.forward(makeQuery(name)), assertCode("ERR_DNS_UPSTREAM_TIMEOUT"));
      }
    } finally {
      await erring.close();
    }
  });

  it("uses a fresh random id for every try", async () => {
    const upstream = forwarder({
      nameservers: [{ address: "127.0.0.1", port: silent.port }],
      attempts: 3,
      timeoutMs: 200,
    });
    const before = silent.queries.length;
    await assert.rejects(
      upstream.forward(makeQuery("a.test", RecordType.A, { id: 0 })),
      assertCode("ERR_DNS_UPSTREAM_TIMEOUT"),
    );
    const ids = silent.queries.slice(before).map((q) => q.message.id);
    assert.equal(ids.length, 3);
    assert.ok(new Set([...ids, 0]).size >= 3, `ids ${ids}`);
  });

  it("asks again over TCP when the UDP answer is truncated", async () => {
    const truncating = await startFakeUpstream((query, protocol) => {
      if (protocol === "udp") return [encodeMessage({ ...replyTo(query), truncated: true })];
      const answers = Array.from({ length: 40 }, (_, i) =>
        addressRecord("big.test", `198.51.100.${i + 1}`, 5),
      );
      return [encodeMessage(replyTo(query, { answers }))];
    });
    try {
      const created: string[] = [];
      const upstream = forwarder({
        nameservers: [{ address: "127.0.0.1", port: truncating.port }],
        createUdpSocket: (family, { address, port }) => {
          created.push(`udp${family} ${address}:${port}`);
          return dgram.createSocket("udp4");
        },
        connectTcp: ({ address, port }) => {
          created.push(`tcp ${address}:${port}`);
          return net.connect(port, address);
        },
      });
      const reply = decodeMessage(await upstream.forward(makeQuery("big.test", RecordType.A, { id: 8 })));
      assert.equal(reply.id, 8);
      assert.equal(reply.answers.length, 40);
      assert.deepEqual(
        truncating.queries.map((q) => q.protocol),
        ["udp", "tcp"],
      );
      assert.deepEqual(created, [`udp4 127.0.0.1:${truncating.port}`, `tcp 127.0.0.1:${truncating.port}`]);
    } finally {
      await truncating.close();
    }
  });

  it("passes the truncated UDP answer on (TC set) when the TCP retry fails", async () => {
    const truncating = await startFakeUpstream((query) => [
      encodeMessage({
        ...replyTo(query, { answers: [addressRecord(query.questions[0]!.name, "192.0.2.80", 5)] }),
        truncated: true,
      }),
    ]);
    const closedPort = await freePort();
    try {
      const upstream = forwarder({
        nameservers: [{ address: "127.0.0.1", port: truncating.port }],
        connectTcp: () => net.connect(closedPort, "127.0.0.1"),
      });
      const reply = decodeMessage(await upstream.forward(makeQuery("big.test", RecordType.A, { id: 14 })));
      assert.deepEqual([reply.id, reply.truncated, reply.rcode], [14, true, ResponseCode.NOERROR]);
      assert.deepEqual(reply.answers.map(recordAddress), ["192.0.2.80"]);
      // The nameserver's truncated answer is its answer: no second round.
      assert.deepEqual(
        truncating.queries.map((q) => q.protocol),
        ["udp"],
      );
    } finally {
      await truncating.close();
    }
  });

  it("rejects with ERR_DNS_UPSTREAM_TIMEOUT when nobody answers, ERR_DNS_UPSTREAM when refused", async () => {
    const upstream = forwarder({
      nameservers: [{ address: "127.0.0.1", port: silent.port }],
      attempts: 2,
      timeoutMs: 200,
    });
    const started = Date.now();
    await assert.rejects(upstream.forward(makeQuery("a.test")), assertCode("ERR_DNS_UPSTREAM_TIMEOUT"));
    assert.ok(Date.now() - started >= 390);
    const closedPort = await freePort();
    const refused = forwarder({ nameservers: [{ address: "127.0.0.1", port: closedPort }] });
    await assert.rejects(refused.forward(makeQuery("a.test")), (err: Error) => {
      assertCode("ERR_DNS_UPSTREAM")(err);
      assert.equal((err.cause as { code?: string }).code, "ECONNREFUSED");
      return true;
    });
    await assert.rejects(
      refused.forward(makeQuery("a.test"), { protocol: "tcp" }),
      assertCode("ERR_DNS_UPSTREAM"),
    );
  });

  it("rejects in-flight and later forwards with ERR_DNS_CLOSED after close()", async () => {
    const upstream = createDnsForwarder({
      nameservers: [{ address: "127.0.0.1", port: silent.port }],
      timeoutMs: 5000,
    });
    const inFlight = upstream.forward(makeQuery("a.test"));
    const overTcp = upstream.forward(makeQuery("a.test"), { protocol: "tcp" });
    await new Promise((resolve) => setTimeout(resolve, 50));
    upstream.close();
    await assert.rejects(inFlight, assertCode("ERR_DNS_CLOSED"));
    await assert.rejects(overTcp, assertCode("ERR_DNS_CLOSED"));
    await assert.rejects(upstream.forward(makeQuery("a.test")), assertCode("ERR_DNS_CLOSED"));
  });

  it("rejects with ERR_DNS_ABORTED when the signal aborts", async () => {
    const upstream = forwarder({
      nameservers: [{ address: "127.0.0.1", port: silent.port }],
      timeoutMs: 5000,
    });
    const controller = new AbortController();
    const pending = upstream.forward(makeQuery("a.test"), { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("client went away")), 30);
    await assert.rejects(pending, (err: Error) => {
      assertCode("ERR_DNS_ABORTED")(err);
      assert.equal((err.cause as Error).message, "client went away");
      return true;
    });
    await assert.rejects(
      upstream.forward(makeQuery("a.test"), { signal: AbortSignal.abort() }),
      assertCode("ERR_DNS_ABORTED"),
    );
  });

  it("refuses bad queries and options", async () => {
    const upstream = forwarder({ nameservers: [{ address: "127.0.0.1", port: dnsmasq.port }] });
    await assert.rejects(upstream.forward(Uint8Array.of(1, 2, 3)), assertCode("ERR_DNS_MALFORMED"));
    const response = encodeMessage(makeQuery("a.test", 1, { response: true }));
    await assert.rejects(upstream.forward(response), assertCode("ERR_DNS_MALFORMED"));
    await assert.rejects(
      upstream.forward({ ...makeQuery("a"), questions: [] }),
      assertCode("ERR_DNS_INVALID_ARGUMENT"),
    );
    assert.throws(() => createDnsForwarder({ nameservers: [] }), assertCode("ERR_DNS_INVALID_ARGUMENT"));
    assert.throws(
      () => createDnsForwarder({ nameservers: [{ address: "dns.google" }] }),
      assertCode("ERR_DNS_INVALID_ARGUMENT"),
    );
    assert.throws(
      () => createDnsForwarder({ nameservers: [{ address: "127.0.0.1", port: 0 }] }),
      assertCode("ERR_DNS_INVALID_ARGUMENT"),
    );
    assert.throws(
      () => createDnsForwarder({ nameservers: [{ address: "::1" }], attempts: 0 }),
      assertCode("ERR_DNS_INVALID_ARGUMENT"),
    );
  });

  it("leaves no socket open", async () => {
    assert.ok(
      // At most as many as before the first test: the baseline may have counted a socket of the
      // setup's that closed since.
      await eventually(() => openSocketCount() <= baseline),
      `open: ${openSocketCount()}, expected at most ${baseline}: ${process.getActiveResourcesInfo()}`,
    );
  });
});
