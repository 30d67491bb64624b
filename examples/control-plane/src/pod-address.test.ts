import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  addressText,
  DEFAULT_POD_CIDRS,
  type Ipv4Cidr,
  ipv6Bytes,
  parseIpv4Cidr,
  podIpProblem,
} from "./pod-address.js";

function cidrs(list: readonly string[]): Ipv4Cidr[] {
  return list.map((text) => {
    const c = parseIpv4Cidr(text);
    assert.ok(typeof c !== "string", c as string);
    return c;
  });
}

describe("parseIpv4Cidr", () => {
  const rows: [string, string | RegExp][] = [
    ["127.10.0.0/16", "127.10.0.0/16"],
    ["10.244.0.0/14", "10.244.0.0/14"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["127.10.0.7/32", "127.10.0.7/32"],
    ["127.10.0.1/16", /host bits set \(did you mean 127\.10\.0\.0\/16\?\)/],
    ["127.10.0.0", /not an IPv4 range/],
    ["127.10.0.0/33", /not an IPv4 range/],
    ["127.10.0.0/016", /not an IPv4 range/],
    ["127.010.0.0/16", /not an IPv4 range/],
    ["fd00::/8", /not an IPv4 range/],
  ];
  for (const [text, expect] of rows) {
    it(text, () => {
      const c = parseIpv4Cidr(text);
      if (typeof expect === "string") assert.equal(typeof c === "string" ? c : c.text, expect);
      else assert.match(typeof c === "string" ? c : "parsed", expect);
    });
  }
});

describe("podIpProblem", () => {
  const demo = cidrs(DEFAULT_POD_CIDRS);
  const rows: { ip: string; ranges?: readonly string[]; problem?: RegExp }[] = [
    { ip: "127.10.0.2" },
    { ip: "127.10.255.254" },
    { ip: "0.0.0.0", problem: /unspecified/ },
    { ip: "0.1.2.3", problem: /unspecified/ },
    { ip: "::", problem: /unspecified/ },
    { ip: "0:0:0:0:0:0:0:0", problem: /unspecified/ },
    { ip: "224.0.0.1", problem: /multicast/ },
    { ip: "239.255.255.250", problem: /multicast/ },
    { ip: "255.255.255.255", problem: /broadcast/ },
    { ip: "127.0.0.1", problem: /outside the pod ranges \(127\.10\.0\.0\/16\)/ },
    { ip: "127.20.0.1", problem: /outside the pod ranges/ },
    { ip: "10.0.0.5", problem: /outside the pod ranges/ },
    { ip: "fd00::1", problem: /IPv6/ },
    { ip: "127.10.0.02", problem: /not an IPv4 address/ },
    { ip: "127.10.2", problem: /not an IPv4 address/ },
    { ip: "", problem: /not an IPv4 address/ },
    // Configured ranges decide, except for what is never a pod address.
    { ip: "10.0.0.5", ranges: ["10.0.0.0/8"] },
    { ip: "127.0.0.1", ranges: ["127.0.0.0/8"] },
    { ip: "0.0.0.0", ranges: ["0.0.0.0/0"], problem: /unspecified/ },
    { ip: "224.0.0.1", ranges: ["0.0.0.0/0"], problem: /multicast/ },
    { ip: "127.10.0.2", ranges: [], problem: /outside the pod ranges \(none\)/ },
  ];
  for (const row of rows) {
    it(`${JSON.stringify(row.ip)} in ${row.ranges?.join(",") ?? "the default ranges"}`, () => {
      const problem = podIpProblem(row.ip, row.ranges === undefined ? demo : cidrs(row.ranges));
      if (row.problem === undefined) assert.equal(problem, undefined);
      else assert.match(problem ?? "accepted", row.problem);
    });
  }
});

describe("ipv6Bytes and addressText (Service VIPs)", () => {
  // Text -> the text istiod and ztunnel print for those bytes (RFC 5952), or undefined for no address.
  const rows: [string, string | undefined][] = [
    ["fd00:10:96::a", "fd00:10:96::a"],
    ["FD00:0010:0096:0:0:0:0:000A", "fd00:10:96::a"],
    ["::", "::"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1:0:0:2:0:0:3:4", "1::2:0:0:3:4"],
    ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"],
    ["::ffff:10.96.0.1", "::ffff:10.96.0.1"],
    ["64:ff9b::10.96.0.1", "64:ff9b::a60:1"],
    ["fe80::1%eth0", undefined],
    ["1::2::3", undefined],
    ["1:2:3:4:5:6:7:8:9", undefined],
    ["::1.2.3.256", undefined],
    ["10.96.0.1", undefined],
    ["", undefined],
  ];
  for (const [text, canonical] of rows) {
    it(JSON.stringify(text), () => {
      const bytes = ipv6Bytes(text);
      assert.equal(bytes?.length, canonical === undefined ? undefined : 16);
      assert.equal(bytes === undefined ? undefined : addressText(bytes), canonical);
    });
  }

  it("prints 4 bytes as dotted IPv4", () => {
    assert.equal(addressText(new Uint8Array([10, 96, 0, 1])), "10.96.0.1");
  });
});
