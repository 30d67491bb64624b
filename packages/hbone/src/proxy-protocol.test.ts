import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { HboneError } from "./errors.js";
import { decodeProxyHeader, encodeProxyHeader, PROXY_TLV, readProxyHeader } from "./proxy-protocol.js";

const ID = "spiffe://cluster.local/ns/default/sa/sleep";
const isProxyError = (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_PROXY_PROTOCOL";

describe("PROXY protocol v2", () => {
  it("encodes IPv4 with the source identity TLV 0xD0 byte for byte", () => {
    const buf = encodeProxyHeader({
      command: "PROXY",
      source: { address: "10.0.0.1", port: 45678 },
      destination: { address: "10.0.0.2", port: 8080 },
      sourceIdentity: ID,
    });
    const sig = Buffer.from("0d0a0d0a000d0a515549540a", "hex");
    assert.deepEqual(buf.subarray(0, 12), sig);
    assert.equal(buf[12], 0x21, "version 2, PROXY");
    assert.equal(buf[13], 0x11, "AF_INET, STREAM");
    assert.equal(buf.readUInt16BE(14), 12 + 3 + ID.length);
    assert.deepEqual([...buf.subarray(16, 24)], [10, 0, 0, 1, 10, 0, 0, 2]);
    assert.equal(buf.readUInt16BE(24), 45678);
    assert.equal(buf.readUInt16BE(26), 8080);
    assert.equal(buf[28], 0xd0);
    assert.equal(buf.readUInt16BE(29), ID.length);
    assert.equal(buf.subarray(31).toString(), ID);
  });

  it("round-trips IPv6, LOCAL and extra TLVs", () => {
    const v6 = encodeProxyHeader({
      command: "PROXY",
      source: { address: "2001:db8::1", port: 1 },
      destination: { address: "::ffff:10.0.0.2", port: 2 },
      sourceIdentity: ID,
      tlvs: [{ type: PROXY_TLV.targetService, value: Buffer.from("reviews.default.svc.cluster.local") }],
    });
    assert.equal(v6[13], 0x21);
    const decoded = decodeProxyHeader(v6);
    assert.ok(decoded);
    assert.equal(decoded.length, v6.length);
    assert.deepEqual(decoded.header.source, { address: "2001:db8::1", port: 1 });
    assert.deepEqual(decoded.header.destination, { address: "::ffff:10.0.0.2", port: 2 });
    assert.equal(decoded.header.sourceIdentity, ID);
    assert.equal(decoded.header.tlvs?.length, 2);
    assert.equal(
      Buffer.from(decoded.header.tlvs?.[1]?.value ?? []).toString(),
      "reviews.default.svc.cluster.local",
    );
    const local = encodeProxyHeader({ command: "LOCAL" });
    assert.equal(local.length, 16);
    assert.deepEqual(decodeProxyHeader(local), { header: { command: "LOCAL" }, length: 16 });
  });

  it("encodes PROXY without addresses as the unspecified family over STREAM, keeping the TLVs", () => {
    // What a proxy sends when the client's and the target's addresses are of different families.
    const buf = encodeProxyHeader({ command: "PROXY", sourceIdentity: ID });
    assert.equal(buf[12], 0x21, "version 2, PROXY");
    assert.equal(buf[13], 0x01, "AF_UNSPEC, STREAM");
    assert.equal(buf.readUInt16BE(14), 3 + ID.length);
    const decoded = decodeProxyHeader(buf)?.header;
    assert.equal(decoded?.command, "PROXY");
    assert.equal(decoded?.source, undefined);
    assert.equal(decoded?.destination, undefined);
    assert.equal(decoded?.sourceIdentity, ID);
    // One address without the other is a mistake, not an unspecified family.
    assert.throws(
      () => encodeProxyHeader({ command: "PROXY", source: { address: "10.0.0.1", port: 1 } }),
      isProxyError,
    );
  });

  it("asks for more bytes on partial input and rejects garbage", () => {
    const buf = encodeProxyHeader({
      command: "PROXY",
      source: { address: "10.0.0.1", port: 1 },
      destination: { address: "10.0.0.2", port: 2 },
      sourceIdentity: ID,
    });
    for (let n = 0; n < buf.length; n++)
      assert.equal(decodeProxyHeader(buf.subarray(0, n)), undefined, `${n} bytes`);
    assert.throws(() => decodeProxyHeader(Buffer.from("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")), isProxyError);
    const badVersion = Buffer.from(buf);
    badVersion[12] = 0x11;
    assert.throws(() => decodeProxyHeader(badVersion), isProxyError);
    const badTlv = Buffer.from(buf);
    badTlv.writeUInt16BE(0xffff, 29);
    assert.throws(() => decodeProxyHeader(badTlv), isProxyError);
    const shortAddr = Buffer.from(buf.subarray(0, 20));
    shortAddr.writeUInt16BE(4, 14);
    assert.throws(() => decodeProxyHeader(shortAddr), isProxyError);
    assert.throws(
      () =>
        encodeProxyHeader({
          command: "PROXY",
          source: { address: "10.0.0.1", port: 1 },
          destination: { address: "::1", port: 2 },
        }),
      isProxyError,
    );
    assert.throws(
      () =>
        encodeProxyHeader({
          command: "PROXY",
          source: { address: "x", port: 1 },
          destination: { address: "y", port: 2 },
        }),
      isProxyError,
    );
  });

  it("reads a header off a stream and leaves the payload unread", async () => {
    const stream = new PassThrough();
    const header = encodeProxyHeader({
      command: "PROXY",
      source: { address: "10.0.0.1", port: 1 },
      destination: { address: "10.0.0.2", port: 2 },
      sourceIdentity: ID,
    });
    const whole = Buffer.concat([header, Buffer.from("GET / HTTP/1.1\r\n")]);
    // Dribble it in small pieces.
    const reading = readProxyHeader(stream);
    for (let i = 0; i < whole.length; i += 7) stream.write(whole.subarray(i, i + 7));
    const h = await reading;
    assert.equal(h.sourceIdentity, ID);
    stream.end();
    const rest: Buffer[] = [];
    for await (const c of stream) rest.push(c as Buffer);
    assert.equal(Buffer.concat(rest).toString(), "GET / HTTP/1.1\r\n");
    const early = new PassThrough();
    const p = readProxyHeader(early);
    early.end(header.subarray(0, 10));
    await assert.rejects(p, isProxyError);
  });
});
