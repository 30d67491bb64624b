import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeTime, encodeTime, readTlv, seq, tlv } from "./der.js";
import { decodePem, encodePem } from "./pem.js";

describe("DER writer", () => {
  it("encodes short, long-form and multi-byte lengths that read back", () => {
    for (const len of [0, 1, 127, 128, 255, 256, 65_535, 65_536, 70_000]) {
      const value = Buffer.alloc(len, 0x5a);
      const out = tlv(0x04, value.subarray(0, len >> 1), value.subarray(len >> 1));
      const t = readTlv(out, 0);
      assert.equal(t.tag, 0x04);
      assert.equal(t.end, out.length, `length ${len}`);
      assert.equal(t.end - t.valueStart, len);
      const header = out.subarray(0, t.valueStart).toString("hex");
      const expected =
        len < 0x80
          ? `04${len.toString(16).padStart(2, "0")}`
          : `04${(0x80 | Math.ceil(len.toString(16).length / 2)).toString(16)}${len.toString(16).padStart(Math.ceil(len.toString(16).length / 2) * 2, "0")}`;
      assert.equal(header, expected, `length ${len}`);
      assert.ok(out.subarray(t.valueStart).equals(value));
    }
    assert.equal(seq(Buffer.from([1]), Buffer.from([2, 3])).toString("hex"), "3003010203");
  });

  it("writes UTCTime before 2050 and GeneralizedTime from 2050, both read back exactly", () => {
    const cases: Array<[string, string]> = [
      ["1999-12-31T23:59:59Z", "170d3939313233313233353935395a"],
      ["2026-01-02T03:04:05Z", "170d3236303130323033303430355a"],
      ["2049-12-31T23:59:59Z", "170d3439313233313233353935395a"],
      ["2050-01-01T00:00:00Z", "180f32303530303130313030303030305a"],
    ];
    for (const [iso, hex] of cases) {
      const encoded = encodeTime(new Date(iso));
      assert.equal(encoded.toString("hex"), hex, iso);
      assert.equal(decodeTime(encoded, readTlv(encoded, 0)).toISOString(), new Date(iso).toISOString());
    }
  });
});

describe("PEM", () => {
  it("wraps at 64 columns and decodes bodies with CRLF or spaces", () => {
    const der = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
    const pem = encodePem("CERTIFICATE", der);
    const lines = pem.trimEnd().split("\n");
    assert.equal(lines[0], "-----BEGIN CERTIFICATE-----");
    assert.equal(lines.at(-1), "-----END CERTIFICATE-----");
    assert.deepEqual(
      lines.slice(1, -1).map((l) => l.length),
      [64, 64, 8],
    );
    assert.ok(decodePem(pem)[0]?.der.equals(der));
    assert.ok(decodePem(pem.replaceAll("\n", "\r\n").replace("AAEC", "AA EC"))[0]?.der.equals(der));
    assert.throws(() => decodePem(pem.replace("AAEC", "AA*C")), { code: "ERR_PEM_INVALID" });
  });

  it("pairs each BEGIN line with the first END line of its label, and skips what no END closes", () => {
    const a = encodePem("CERTIFICATE", Buffer.from([1, 2, 3]));
    const b = encodePem("PRIVATE KEY", Buffer.from([4, 5]));
    const text = `junk\n-----BEGIN RSA KEY-----\nnever closed\n${a}between\n${b}-----END PRIVATE KEY-----\n`;
    assert.deepEqual(
      decodePem(text).map((block) => [block.label, [...block.der]]),
      [
        ["CERTIFICATE", [1, 2, 3]],
        ["PRIVATE KEY", [4, 5]],
      ],
    );
    // A BEGIN line inside a block is its body, and fails it as a body.
    assert.throws(() => decodePem(`-----BEGIN A-----\n${a}-----END A-----\n`), { code: "ERR_PEM_INVALID" });
    assert.deepEqual(decodePem("no pem at all"), []);
  });

  it("reads a megabyte of BEGIN lines that nothing closes in one pass", { timeout: 10_000 }, () => {
    // Each unclosed BEGIN once cost a scan to the end of the text: about 20 s for this input.
    assert.deepEqual(decodePem("-----BEGIN A-----".repeat(60_000)), []);
    const labels = Array.from({ length: 50_000 }, (_, i) => `-----BEGIN L${i}-----`).join("");
    assert.deepEqual(decodePem(`${labels}${"-----END X-----".repeat(1000)}`), []);
  });
});
