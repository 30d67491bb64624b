import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canonicalFromBytes, canonicalIp, formatIpv6, parseIpv6 } from "./ip-address.js";

describe("canonicalIp", () => {
  const cases: [string, string | undefined][] = [
    ["127.10.0.3", "127.10.0.3"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    // Spellings the C resolver reads as 127.10.0.3 or 127.0.0.1: none is an address here.
    ["0x7f0a0003", undefined],
    ["2131361795", undefined],
    ["0177.0.0.1", undefined],
    ["127.10.3", undefined],
    ["127.1", undefined],
    ["0x7f.0.0.1", undefined],
    ["127.0.0.01", undefined],
    ["256.0.0.1", undefined],
    ["127.0.0.1.", undefined],
    [" 127.0.0.1", undefined],
    ["127.0.0.1 ", undefined],
    ["1e2.0.0.1", undefined],
    ["+1.0.0.1", undefined],
    ["", undefined],
    ["::1", "::1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["2001:DB8::0:1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["::ffff:127.10.0.3", "127.10.0.3"],
    ["::ffff:7f0a:3", "127.10.0.3"],
    ["::ffff:127.1", undefined],
    ["::ffff:0177.0.0.1", undefined],
    ["::1%eth0", undefined],
    ["[::1]", undefined],
    ["1::2::3", undefined],
    ["1:2:3:4:5:6:7:8:9", undefined],
    ["1:2:3:4:5:6:7::8", undefined],
    ["12345::1", undefined],
    [":1", undefined],
    ["1:", undefined],
    ["echo.demo.svc.cluster.local", undefined],
  ];
  for (const [text, want] of cases) {
    it(JSON.stringify(text), () => assert.equal(canonicalIp(text)?.text, want));
  }
});

describe("formatIpv6 (RFC 5952)", () => {
  const cases: [string, string][] = [
    ["0:0:0:0:0:0:0:0", "::"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["1:0:0:1:0:0:0:1", "1:0:0:1::1"],
    ["1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"],
    ["1:0:0:1:1:0:0:1", "1::1:1:0:0:1"],
    ["abcd:ef01:2345:6789:abcd:ef01:2345:6789", "abcd:ef01:2345:6789:abcd:ef01:2345:6789"],
  ];
  for (const [input, want] of cases) {
    it(input, () => {
      const bytes = parseIpv6(input);
      assert.ok(bytes);
      assert.equal(formatIpv6(bytes), want);
      // The canonical text parses back to the same bytes.
      assert.deepEqual(parseIpv6(want), bytes);
    });
  }
});

describe("canonicalFromBytes", () => {
  it("reads 4 and 16 bytes, maps IPv4-mapped addresses, refuses other lengths", () => {
    assert.deepEqual(canonicalFromBytes(Uint8Array.from([127, 0, 0, 1])), { family: 4, text: "127.0.0.1" });
    assert.deepEqual(canonicalFromBytes(Uint8Array.from([...new Array(10).fill(0), 255, 255, 10, 0, 0, 1])), {
      family: 4,
      text: "10.0.0.1",
    });
    assert.deepEqual(canonicalFromBytes(Uint8Array.from([...new Array(15).fill(0), 1])), {
      family: 6,
      text: "::1",
    });
    assert.equal(canonicalFromBytes(new Uint8Array(5)), undefined);
  });
});
