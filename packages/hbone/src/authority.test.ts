import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatAuthority, parseAuthority } from "./authority.js";
import { HboneError } from "./errors.js";

describe("authority", () => {
  it("parses ip:port, [ipv6]:port and host:port like ztunnel (socket address first)", () => {
    assert.deepEqual(parseAuthority("10.0.0.1:8080"), {
      kind: "ip",
      host: "10.0.0.1",
      port: 8080,
      family: 4,
    });
    assert.deepEqual(parseAuthority("[2001:db8::1]:443"), {
      kind: "ip",
      host: "2001:db8::1",
      port: 443,
      family: 6,
    });
    assert.deepEqual(parseAuthority("Reviews.Default.svc.cluster.local:9080"), {
      kind: "hostname",
      host: "reviews.default.svc.cluster.local",
      port: 9080,
      family: 0,
    });
  });

  it("rejects everything else with ERR_HBONE_INVALID_AUTHORITY", () => {
    for (const bad of [
      "",
      "10.0.0.1",
      ":80",
      "10.0.0.1:",
      "10.0.0.1:0",
      "10.0.0.1:65536",
      "10.0.0.1:+80",
      "2001:db8::1:80",
      "[2001:db8::1]",
      "[not-ip]:80",
      "[fe80::1%eth0]:80",
      "1.2.3:80",
      "-bad.example:80",
      "a..b:80",
      "under score ok?:80",
      `${"a".repeat(64)}.example:80`,
      "user@host:80",
    ]) {
      assert.throws(
        () => parseAuthority(bad),
        (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_INVALID_AUTHORITY",
        bad,
      );
    }
  });

  it("formats with IPv6 brackets", () => {
    assert.equal(formatAuthority("::1", 80), "[::1]:80");
    assert.equal(formatAuthority("10.0.0.1", 80), "10.0.0.1:80");
    assert.equal(formatAuthority("svc.ns.svc.cluster.local", 80), "svc.ns.svc.cluster.local:80");
    assert.throws(() => formatAuthority("10.0.0.1", 0));
  });
});
