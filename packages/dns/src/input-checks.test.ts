import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, before, describe, it } from "node:test";
import {
  addressRecord,
  createDnsForwarder,
  createDnsServer,
  DnsError,
  type DnsErrorCode,
  decodeMessage,
  encodeMessage,
  queryMessage,
  replyTo,
} from "./index.js";

const isDns = (code: DnsErrorCode) => (err: unknown) => err instanceof DnsError && err.code === code;

describe("DnsForwarder option checks", () => {
  let upstream: dgram.Socket;
  let port = 0;
  let queries = 0;
  before(async () => {
    upstream = dgram.createSocket("udp4");
    upstream.on("message", (bytes, from) => {
      queries += 1;
      const query = decodeMessage(bytes);
      const name = query.questions[0]?.name ?? "";
      const reply = replyTo(query, { answers: [addressRecord(name, "192.0.2.1", 30)] });
      upstream.send(encodeMessage(reply), from.port, from.address);
    });
    await new Promise<void>((resolve) => upstream.bind(0, "127.0.0.1", resolve));
    port = upstream.address().port;
  });
  after(() => new Promise<void>((resolve) => upstream.close(() => resolve())));

  it("refuses a timeoutMs no timer can hold, and keeps one that it can", async () => {
    for (const timeoutMs of [1e10, 2 ** 31, Number.NaN, 0, -1, "100"]) {
      assert.throws(
        () =>
          createDnsForwarder({
            nameservers: [{ address: "127.0.0.1", port }],
            timeoutMs: timeoutMs as number,
          }),
        isDns("ERR_DNS_INVALID_ARGUMENT"),
      );
    }
    const forwarder = createDnsForwarder({
      nameservers: [{ address: "127.0.0.1", port }],
      timeoutMs: 2 ** 31 - 1,
    });
    try {
      const answer = decodeMessage(await forwarder.forward(queryMessage("example.com")));
      assert.equal(answer.answers.length, 1);
    } finally {
      forwarder.close();
    }
  });

  it("refuses an unknown protocol instead of asking over UDP", async () => {
    const forwarder = createDnsForwarder({ nameservers: [{ address: "127.0.0.1", port }] });
    try {
      const before = queries;
      await assert.rejects(
        forwarder.forward(queryMessage("example.com"), { protocol: "quic" as "udp" }),
        isDns("ERR_DNS_INVALID_ARGUMENT"),
      );
      await assert.rejects(
        forwarder.forward(queryMessage("example.com"), { signal: {} as AbortSignal }),
        isDns("ERR_DNS_INVALID_ARGUMENT"),
      );
      assert.equal(queries, before);
    } finally {
      forwarder.close();
    }
  });

  it("rejects a query that is neither a message nor bytes with ERR_DNS_INVALID_ARGUMENT", async () => {
    const forwarder = createDnsForwarder({ nameservers: [{ address: "127.0.0.1", port }] });
    try {
      for (const query of [undefined, null, "example.com", 5, {}, { questions: "x" }]) {
        await assert.rejects(
          forwarder.forward(query as unknown as Uint8Array),
          isDns("ERR_DNS_INVALID_ARGUMENT"),
        );
      }
    } finally {
      forwarder.close();
    }
  });
});

describe("DnsForwarder nameservers", () => {
  it("takes a plain IP string as a nameserver on port 53, as readResolvConf returns them", async () => {
    const asked: Array<{ family: number; address: string; port: number }> = [];
    const forwarder = createDnsForwarder({
      nameservers: ["8.8.8.8", "::1", { address: "127.0.0.1", port: 5353 }],
      attempts: 1,
      // Records where each try would go and sends nothing: no query leaves this host.
      createUdpSocket: (family, nameserver) => {
        asked.push({ family, ...nameserver });
        throw new Error("no socket in this test");
      },
    });
    try {
      await assert.rejects(forwarder.forward(queryMessage("example.com")), isDns("ERR_DNS_UPSTREAM"));
    } finally {
      forwarder.close();
    }
    assert.deepEqual(asked, [
      { family: 4, address: "8.8.8.8", port: 53 },
      { family: 6, address: "::1", port: 53 },
      { family: 4, address: "127.0.0.1", port: 5353 },
    ]);
  });

  it("says which entry is wrong and what shape it must have", () => {
    for (const entry of [5, null, undefined, {}, { addres: "127.0.0.1" }, ["127.0.0.1"]]) {
      assert.throws(
        () => createDnsForwarder({ nameservers: ["127.0.0.1", entry as string] }),
        (err: unknown) =>
          isDns("ERR_DNS_INVALID_ARGUMENT")(err) &&
          /nameservers\[1\] must be an IP address string or \{ address, port\? \}/.test(
            (err as Error).message,
          ),
      );
    }
    assert.throws(
      () => createDnsForwarder({ nameservers: ["dns.google"] }),
      (err: unknown) =>
        isDns("ERR_DNS_INVALID_ARGUMENT")(err) &&
        /"dns.google" is not an IP address/.test((err as Error).message),
    );
  });

  it("refuses missing options with ERR_DNS_INVALID_ARGUMENT", () => {
    for (const options of [undefined, null, 5]) {
      assert.throws(
        () => (createDnsForwarder as (o: unknown) => unknown)(options),
        isDns("ERR_DNS_INVALID_ARGUMENT"),
      );
    }
  });
});

describe("codec argument checks", () => {
  it("decodeMessage of something that is not bytes throws ERR_DNS_INVALID_ARGUMENT", () => {
    for (const bytes of [undefined, null, "abc", [0, 0, 0], {}]) {
      assert.throws(() => decodeMessage(bytes as unknown as Uint8Array), isDns("ERR_DNS_INVALID_ARGUMENT"));
    }
  });

  it("queryMessage of a name that is not a string, or a bad type, throws ERR_DNS_INVALID_ARGUMENT", () => {
    for (const args of [
      [undefined],
      [null],
      [5],
      ["example.com", 70000],
      ["example.com", 1.5],
      ["example.com", 1, 5],
    ]) {
      assert.throws(
        () => (queryMessage as (...a: unknown[]) => unknown)(...args),
        isDns("ERR_DNS_INVALID_ARGUMENT"),
      );
    }
    assert.equal(queryMessage("example.com").questions[0]?.name, "example.com");
  });
});

describe("DnsServer option checks", () => {
  it("refuses missing options with ERR_DNS_INVALID_ARGUMENT", () => {
    for (const options of [undefined, null, 5, {}]) {
      assert.throws(
        () => (createDnsServer as (o: unknown) => unknown)(options),
        isDns("ERR_DNS_INVALID_ARGUMENT"),
      );
    }
  });

  it("refuses a tcpIdleTimeoutMs no timer can hold", () => {
    assert.throws(
      () => createDnsServer({ handler: (request) => replyTo(request.message), tcpIdleTimeoutMs: 1e10 }),
      isDns("ERR_DNS_INVALID_ARGUMENT"),
    );
  });
});
