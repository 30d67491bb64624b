import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NetnsError } from "./errors.js";
import {
  decodeSockaddr,
  encodeSockaddr,
  encodeUnixSockaddr,
  formatIp,
  ipBytes,
  ipFamily,
} from "./sockaddr.js";

describe("socket addresses", () => {
  it("formats IPv6 as RFC 5952 and IPv4 as a dotted quad", () => {
    const cases: Array<[string, string]> = [
      ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group stays
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longer run is shortened
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // the first of equal runs
      ["0:0:0:0:0:0:0:0", "::"],
      ["0:0:0:0:0:0:0:1", "::1"],
      ["FE80:0:0:0:0:0:0:0", "fe80::"],
      ["::ffff:10.0.0.1", "::ffff:10.0.0.1"],
    ];
    for (const [input, want] of cases) assert.equal(formatIp(ipBytes(input)), want, input);
    assert.equal(formatIp(ipBytes("10.1.2.3")), "10.1.2.3");
  });

  it("round-trips sockaddr_in and sockaddr_in6 with the port in network order", () => {
    const v4 = encodeSockaddr("127.0.0.9", 0x1234);
    assert.equal(v4.length, 16);
    assert.deepEqual([...v4.subarray(0, 8)], [2, 0, 0x12, 0x34, 127, 0, 0, 9]);
    assert.deepEqual(decodeSockaddr(v4), { address: "127.0.0.9", port: 0x1234, family: 4 });
    const v6 = encodeSockaddr("fd00::7", 15001);
    assert.equal(v6.length, 28);
    assert.deepEqual(decodeSockaddr(v6), { address: "fd00::7", port: 15001, family: 6 });
  });

  it("refuses anything that is not a canonical IP address or a valid port", () => {
    for (const bad of ["localhost", "01.2.3.4", "1.2.3", "0x7f.0.0.1", "fe80::1%eth0", "", " 1.2.3.4"]) {
      assert.throws(
        () => ipFamily(bad),
        (e: unknown) => e instanceof NetnsError && e.code === "ERR_NETNS_INVALID_ARGUMENT",
        bad,
      );
    }
    for (const port of [-1, 65536, 1.5, Number.NaN]) {
      assert.throws(() => encodeSockaddr("127.0.0.1", port), { code: "ERR_NETNS_INVALID_ARGUMENT" });
    }
  });

  it("builds sockaddr_un for paths up to 107 bytes and refuses longer ones", () => {
    const { addr, length } = encodeUnixSockaddr("/run/z.sock");
    assert.equal(addr.readUInt16LE(0), 1);
    assert.equal(length, 2 + "/run/z.sock".length + 1);
    assert.equal(addr.toString("utf8", 2, length - 1), "/run/z.sock");
    assert.doesNotThrow(() => encodeUnixSockaddr(`/${"a".repeat(106)}`));
    assert.throws(() => encodeUnixSockaddr(`/${"a".repeat(107)}`), { code: "ERR_NETNS_INVALID_ARGUMENT" });
    assert.throws(() => encodeUnixSockaddr("/a\0b"), { code: "ERR_NETNS_INVALID_ARGUMENT" });
  });
});
