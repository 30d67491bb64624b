import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  addressToBytes,
  cidrContains,
  cidrFromWire,
  cidrTextToWire,
  formatCidr,
  parseCidr,
  parseConnectionAddress,
  parseIpAddress,
} from "./ip-address.js";

const ip = (t: string) => {
  const a = parseConnectionAddress(t);
  assert.ok(a, t);
  return a;
};
const cidr = (t: string) => {
  const c = parseCidr(t);
  assert.ok(c, t);
  return c;
};

describe("ip addresses", () => {
  it("parses IPv4 strictly", () => {
    assert.deepEqual(parseIpAddress("10.1.2.3"), { family: 4, words: [0x0a010203] });
    for (const bad of ["010.1.2.3", "1.2.3", "1.2.3.256", "1.2.3.4.5", "", "a.b.c.d", "1..2.3"]) {
      assert.equal(parseIpAddress(bad), undefined, bad);
    }
  });

  it("parses IPv6 forms", () => {
    assert.deepEqual(parseIpAddress("::1")?.words, [0, 0, 0, 1]);
    assert.deepEqual(parseIpAddress("2001:db8::")?.words, [0x20010db8, 0, 0, 0]);
    assert.deepEqual(parseIpAddress("::ffff:10.0.0.1")?.words, [0, 0, 0xffff, 0x0a000001]);
    assert.deepEqual(
      parseIpAddress("1:2:3:4:5:6:7:8")?.words,
      [0x00010002, 0x00030004, 0x00050006, 0x00070008],
    );
    for (const bad of [
      "1::2::3",
      "12345::",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7::8",
      ":::",
      "fe80::1%eth0",
    ]) {
      assert.equal(parseIpAddress(bad), undefined, bad);
    }
  });

  it("canonicalises connection addresses (zone, IPv4-mapped)", () => {
    assert.deepEqual(ip("::ffff:10.0.0.1"), { family: 4, words: [0x0a000001] });
    assert.equal(ip("fe80::1%eth0").family, 6);
  });

  it("matches CIDRs for both families and refuses family mixes", () => {
    assert.ok(cidrContains(cidr("10.0.0.0/8"), ip("10.200.1.1")));
    assert.ok(!cidrContains(cidr("10.0.0.0/8"), ip("11.0.0.1")));
    assert.ok(cidrContains(cidr("10.0.0.1/24"), ip("10.0.0.77")), "host bits are ignored");
    assert.ok(cidrContains(cidr("0.0.0.0/0"), ip("1.2.3.4")));
    assert.ok(cidrContains(cidr("1.2.3.4"), ip("1.2.3.4")));
    assert.ok(!cidrContains(cidr("1.2.3.4"), ip("1.2.3.5")));
    assert.ok(cidrContains(cidr("2001:db8::/32"), ip("2001:db8:ffff::1")));
    assert.ok(!cidrContains(cidr("2001:db8::/32"), ip("2001:db9::1")));
    assert.ok(cidrContains(cidr("2001:db8::/33"), ip("2001:db8:7fff::1")));
    assert.ok(!cidrContains(cidr("2001:db8::/33"), ip("2001:db8:8000::1")));
    assert.ok(cidrContains(cidr("::/0"), ip("::1")));
    assert.ok(!cidrContains(cidr("::/0"), ip("1.2.3.4")));
    assert.ok(!cidrContains(cidr("0.0.0.0/0"), ip("::1")));
    assert.equal(parseCidr("10.0.0.0/33"), undefined);
    assert.equal(parseCidr("::/129"), undefined);
    assert.equal(parseCidr("10.0.0.0/"), undefined);
    assert.equal(parseCidr("10.0.0.0/08"), undefined);
  });

  it("round-trips the wire form", () => {
    const w = cidrTextToWire("10.1.2.3/16");
    assert.deepEqual(w && [...w.address], [10, 1, 2, 3]);
    assert.equal(w?.length, 16);
    const v6 = cidrTextToWire("2001:db8::1");
    assert.equal(v6?.address.length, 16);
    assert.equal(v6?.length, 128);
    const back = w && cidrFromWire(w);
    assert.equal(back && formatCidr(back), "10.1.0.0/16");
    assert.equal(cidrFromWire({ address: new Uint8Array(5), length: 8 }), undefined);
    assert.equal(cidrFromWire({ address: new Uint8Array(4), length: 40 }), undefined);
    assert.deepEqual([...addressToBytes(ip("::1"))], [...new Array(15).fill(0), 1]);
    const f = parseCidr("2001:db8::/32");
    assert.equal(f && formatCidr(f), "2001:db8:0:0:0:0:0:0/32");
  });
});
