import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  addressRecord,
  cnameRecord,
  type DnsMessage,
  decodeMessage,
  encodeMessage,
  queryMessage,
  RecordType,
  ResponseCode,
  recordAddress,
  recordTarget,
  recordTypeName,
  replyTo,
  udpPayloadLimit,
} from "./index.js";

function query(name: string, type: number = RecordType.A, extra: Partial<DnsMessage> = {}): DnsMessage {
  return queryMessage(name, type, { id: 0x1234, ...extra });
}

function hex(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text.replace(/\s+/g, ""), "hex"));
}

function assertMalformed(bytes: Uint8Array, message?: RegExp): void {
  assert.throws(
    () => decodeMessage(bytes),
    (err: Error & { code?: string }) =>
      err.name === "DnsError" &&
      err.code === "ERR_DNS_MALFORMED" &&
      (message === undefined || message.test(err.message)),
  );
}

function assertInvalid(fn: () => unknown): void {
  assert.throws(fn, (err: Error & { code?: string }) => err.code === "ERR_DNS_INVALID_ARGUMENT");
}

describe("encodeMessage and decodeMessage", () => {
  it("encodes a query exactly as RFC 1035 lays it out", () => {
    const bytes = encodeMessage(query("example.com"));
    assert.deepEqual(
      Buffer.from(bytes).toString("hex"),
      "123401000001000000000000" + "076578616d706c6503636f6d00" + "00010001",
    );
    assert.deepEqual(decodeMessage(bytes), query("example.com"));
  });

  it("keeps every header flag", () => {
    const message: DnsMessage = {
      ...query("a.b"),
      response: true,
      opcode: 2,
      authoritative: true,
      truncated: true,
      recursionAvailable: true,
      authenticData: true,
      checkingDisabled: true,
      rcode: 5,
    };
    const bytes = encodeMessage(message);
    assert.equal(Buffer.from(bytes.subarray(2, 4)).toString("hex"), "97b5");
    assert.deepEqual(decodeMessage(bytes), message);
  });

  it("compresses owner names against names already written, in their exact case", () => {
    const message = replyTo(query("web.shop.svc.cluster.local"), {
      answers: [
        addressRecord("web.shop.svc.cluster.local", "10.0.0.1", 30),
        addressRecord("web.shop.svc.cluster.local", "10.0.0.2", 30),
        addressRecord("api.shop.svc.cluster.local", "10.0.0.3", 30),
        addressRecord("Web.shop.svc.cluster.local", "10.0.0.4", 30),
      ],
    });
    const bytes = encodeMessage(message);
    // Question name 28 bytes + 4; each repeat is a 2-byte pointer; api. is 4 bytes + pointer; Web. too.
    assert.equal(bytes.length, 12 + 32 + (2 + 14) * 2 + (6 + 14) * 2);
    assert.deepEqual(decodeMessage(bytes), message);
    assert.equal(decodeMessage(bytes).answers[3]?.name, "Web.shop.svc.cluster.local");
  });

  it("expands compressed names inside CNAME, NS and PTR data", () => {
    // Query for www.example (id 1, QR), one CNAME answer whose target "web" + pointer to "example" at 16.
    const bytes = hex(`
      0001 8180 0001 0001 0000 0000
      03 777777 07 6578616d706c65 00 0005 0001
      c00c 0005 0001 0000003c 0006 03 776562 c010`);
    const message = decodeMessage(bytes);
    const answer = message.answers[0];
    assert.ok(answer);
    assert.equal(recordTarget(answer), "web.example");
    assert.equal(Buffer.from(answer.data).toString("hex"), "03776562076578616d706c6500");
    assert.deepEqual(decodeMessage(encodeMessage(message)), message);
  });

  it("expands compressed names inside MX, SOA and SRV data, so a decoded message encodes again intact", () => {
    // Question www.example (example at 16). MX 10 "mail"+ptr(16); SRV 1 2 3 ptr(12); in the authority
    // section a SOA whose MNAME is "ns"+ptr(16), RNAME ptr(12), then its five 32-bit numbers.
    const numbers = "00000001 00000002 00000003 00000004 00000005";
    const bytes = hex(`
      0001 8180 0001 0002 0001 0000
      03 777777 07 6578616d706c65 00 000f 0001
      c00c 000f 0001 0000003c 0009 000a 04 6d61696c c010
      c00c 0021 0001 0000003c 0008 0001 0002 0003 c00c
      c010 0006 0001 0000003c 001b 02 6e73 c010 c00c ${numbers}`);
    const message = decodeMessage(bytes);
    const [mx, srv] = message.answers;
    const soa = message.authorities[0];
    assert.equal(Buffer.from(mx?.data ?? []).toString("hex"), "000a046d61696c076578616d706c6500");
    assert.equal(Buffer.from(srv?.data ?? []).toString("hex"), "00010002000303777777076578616d706c6500");
    assert.equal(
      Buffer.from(soa?.data ?? []).toString("hex"),
      `026e73076578616d706c650003777777076578616d706c6500${numbers.replace(/ /g, "")}`,
    );
    // Re-encoded without the question the pointers pointed at, the data still says the same names.
    const alone = decodeMessage(encodeMessage({ ...message, questions: [], answers: [] }));
    assert.deepEqual(alone.authorities, message.authorities);
    // Data that is not laid out as the type says (a name running past the RDATA) is kept as it came.
    const odd = hex(`
      0001 8180 0000 0001 0000 0000
      00 000f 0001 0000003c 0003 000a 05`);
    assert.equal(Buffer.from(decodeMessage(odd).answers[0]?.data ?? []).toString("hex"), "000a05");
  });

  it("copies RDATA rather than viewing the input", () => {
    const bytes = encodeMessage(
      replyTo(query("a.test"), { answers: [addressRecord("a.test", "192.0.2.1", 5)] }),
    );
    const decoded = decodeMessage(bytes);
    bytes.fill(0);
    assert.equal(recordAddress(decoded.answers[0] as never), "192.0.2.1");
  });

  it("escapes label bytes as dig prints them, and parses the escapes back", () => {
    const bytes = hex("0000 0000 0001 0000 0000 0000 06 612e625c2000 00 0001 0001");
    const name = decodeMessage(bytes).questions[0]?.name;
    assert.equal(name, "a\\.b\\\\\\032\\000");
    assert.deepEqual(encodeMessage(decodeMessage(bytes)), bytes);
    assert.deepEqual(encodeMessage(query("\\a\\098c")).subarray(12, 17), hex("03 616263 00"));
  });

  it("writes the root as one zero byte and accepts a trailing dot", () => {
    assert.deepEqual(decodeMessage(encodeMessage(query(""))).questions[0]?.name, "");
    assert.deepEqual(decodeMessage(encodeMessage(query("."))).questions[0]?.name, "");
    assert.deepEqual(decodeMessage(encodeMessage(query("example.com."))).questions[0]?.name, "example.com");
  });

  it("refuses names and values it cannot encode", () => {
    assertInvalid(() => encodeMessage(query("a..b")));
    assertInvalid(() => encodeMessage(query(".a")));
    assertInvalid(() => encodeMessage(query(`${"x".repeat(64)}.test`)));
    assertInvalid(() => encodeMessage(query(Array.from({ length: 128 }, () => "a").join(".")))); // 257 bytes
    assertInvalid(() => encodeMessage(query("a b")));
    assertInvalid(() => encodeMessage(query("a\\25")));
    assertInvalid(() => encodeMessage(query("a\\256")));
    assertInvalid(() => encodeMessage(query("a\\")));
    assertInvalid(() => encodeMessage(query("é.test")));
    assertInvalid(() => encodeMessage({ ...query("a"), id: 65536 }));
    assertInvalid(() => encodeMessage({ ...query("a"), rcode: 16 }));
    assertInvalid(() => encodeMessage({ ...query("a"), opcode: -1 }));
    assertInvalid(() => encodeMessage(query("a", 70000)));
    const many = Array.from({ length: 65536 }, () => ({ name: "", type: 1, class: 1 }));
    assertInvalid(() => encodeMessage({ ...query("a"), questions: many }));
    const cname = { name: "a", type: RecordType.CNAME, class: 1, ttl: 1, data: Uint8Array.of(1, 0x61) };
    assertInvalid(() => encodeMessage({ ...query("a"), answers: [cname] }));
    assertInvalid(() => encodeMessage({ ...query("a"), answers: [{ ...cname, ttl: 2 ** 32 }] }));
    // 127 labels of one byte plus the root: 255 bytes, the most a name may have.
    const longest = Array.from({ length: 127 }, () => "a").join(".");
    assert.equal(decodeMessage(encodeMessage(query(longest))).questions[0]?.name, longest);
  });

  it("refuses malformed bytes with ERR_DNS_MALFORMED", () => {
    assertMalformed(new Uint8Array(11), /shorter than a header/);
    // A name that points at itself, and a pointer loop between two names.
    assertMalformed(hex("0000 0000 0001 0000 0000 0000 c00c 0001 0001"), /backwards/);
    assertMalformed(
      hex("0000 0000 0002 0000 0000 0000 01 61 c013 0001 0001 01 62 c00c 0001 0001"),
      /backwards/,
    );
    // A forward pointer.
    assertMalformed(hex("0000 0000 0001 0000 0000 0000 c012 0001 0001 0000 00"), /backwards/);
    // Reserved label types 0x40 and 0x80.
    assertMalformed(hex("0000 0000 0001 0000 0000 0000 41 61 00 0001 0001"), /reserved label type 0x40/);
    assertMalformed(hex("0000 0000 0001 0000 0000 0000 81 61 00 0001 0001"), /reserved label type 0x80/);
    // RDATA longer than the bytes left.
    assertMalformed(
      hex("0000 8000 0000 0001 0000 0000 00 0001 0001 0000003c 0004 c000 02"),
      /RDATA cut short/,
    );
    // Counts that claim more than the bytes hold.
    assertMalformed(hex("0000 0000 ffff ffff ffff ffff 00 0001 0001"), /counts claim/);
    // A question cut short, a label running off the end.
    assertMalformed(hex("0000 0000 0001 0000 0000 0000 01 61 00 0001"), /question cut short/);
    assertMalformed(hex("0000 0000 0001 0000 0000 0000 05 61 00 0001 00"), /past the end/);
    // A CNAME whose name stops before its RDATA does.
    assertMalformed(
      hex("0000 8000 0000 0001 0000 0000 00 0005 0001 0000003c 0004 01 61 00 00"),
      /does not fill the RDATA/,
    );
    // Owner names that each point at the previous one: the last of 129 records takes 128 hops.
    assert.equal(decodeMessage(pointerChain(128)).answers.length, 128);
    assertMalformed(pointerChain(129), /too many compression pointers/);
  });
});

/** A response of `count` empty records, the first owned by the root and each next one by a pointer to the previous owner. */
function pointerChain(count: number): Uint8Array {
  const parts: Buffer[] = [Buffer.from(hex("0000 8000 0000 0000 0000 0000"))];
  (parts[0] as Buffer).writeUInt16BE(count, 6);
  let previous = 12;
  let offset = 12;
  for (let i = 0; i < count; i += 1) {
    const owner = i === 0 ? Buffer.of(0) : Buffer.of(0xc0 | (previous >> 8), previous & 0xff);
    parts.push(owner, Buffer.from(hex("00ff 0001 00000000 0000")));
    previous = offset;
    offset += owner.length + 10;
  }
  return Buffer.concat(parts);
}

describe("records", () => {
  it("builds A and AAAA records from address text and reads them back in canonical form", () => {
    const a = addressRecord("web.test", "192.0.2.10", 30);
    assert.equal(a.type, RecordType.A);
    assert.equal(recordAddress(a), "192.0.2.10");
    const cases: [string, string][] = [
      ["2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["2001:db8:0000:0:0:0:0:1", "2001:db8::1"],
      ["::", "::"],
      ["::1", "::1"],
      ["1::", "1::"],
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
      ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
      ["::192.0.2.1", "::c000:201"],
      ["1:2:3:4:5:6:192.0.2.1", "1:2:3:4:5:6:c000:201"],
    ];
    for (const [input, canonical] of cases) {
      const record = addressRecord("web.test", input, 30);
      assert.equal(record.type, RecordType.AAAA);
      assert.equal(record.data.length, 16);
      assert.equal(recordAddress(record), canonical, input);
    }
    for (const bad of ["web.test", "01.2.3.4", "1.2.3", "fe80::1%eth0", "", "::g"]) {
      assertInvalid(() => addressRecord("web.test", bad, 30));
    }
    assertInvalid(() => addressRecord("web.test", "192.0.2.1", -1));
    assertInvalid(() => addressRecord("a..b", "192.0.2.1", 1));
    assert.equal(recordAddress(cnameRecord("a", "b", 1)), undefined);
  });

  it("builds CNAME records and reads their target", () => {
    const record = cnameRecord("alias.test", "target.example.", 60);
    assert.equal(recordTarget(record), "target.example");
    assert.equal(recordTarget(addressRecord("a", "192.0.2.1", 1)), undefined);
    assert.equal(recordTarget({ ...record, data: Uint8Array.of(3, 0x61) }), undefined);
  });

  it("names record types for logs", () => {
    assert.equal(recordTypeName(RecordType.AAAA), "AAAA");
    assert.equal(recordTypeName(65), "TYPE65");
  });

  it("replies with the query's id, opcode, RD, CD and question", () => {
    const q = query("a.test", RecordType.AAAA, { id: 7, checkingDisabled: true });
    const reply = replyTo(q, { rcode: ResponseCode.NXDOMAIN, authoritative: true });
    assert.deepEqual(reply, {
      ...q,
      response: true,
      authoritative: true,
      recursionAvailable: true,
      rcode: ResponseCode.NXDOMAIN,
    });
  });

  it("answers EDNS with an OPT record and reads the client's payload size", () => {
    const opt = (size: number) => ({
      name: "",
      type: RecordType.OPT,
      class: size,
      ttl: 0,
      data: new Uint8Array(0),
    });
    assert.equal(udpPayloadLimit(query("a")), 512);
    assert.equal(udpPayloadLimit(query("a", 1, { additionals: [opt(1232)] })), 1232);
    assert.equal(udpPayloadLimit(query("a", 1, { additionals: [opt(100)] })), 512);
    assert.equal(udpPayloadLimit(query("a", 1, { additionals: [opt(65000)] })), 4096);
    const reply = replyTo(query("a", 1, { additionals: [opt(4096)] }));
    assert.deepEqual(reply.additionals, [opt(1232)]);
    assert.deepEqual(
      replyTo(query("a", 1, { additionals: [opt(4096)] }), { additionals: [opt(512)] }).additionals,
      [opt(512)],
    );
    assert.deepEqual(replyTo(query("a")).additionals, []);
  });
});
