import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AuthorizationDecision, PolicyExplanation } from "@ambient/policy";
import { ZtunnelError } from "./errors.js";
import { deniedBy, parseNameserver, startZtunnel, type ZtunnelOptions } from "./ztunnel.js";

describe("deniedBy", () => {
  const explanation = (policy: string, action: "ALLOW" | "DENY", dryRun = false): PolicyExplanation => ({
    policy,
    action,
    dryRun,
    rules: [],
  });
  const cases: [string, AuthorizationDecision, PolicyExplanation[], string][] = [
    [
      "a DENY policy matched",
      { allowed: false, reason: "", policy: "default/deny-sleep", action: "DENY", layer: "L4" },
      [],
      "default/deny-sleep",
    ],
    [
      "no ALLOW policy matched",
      { allowed: false, reason: "", layer: "L4" },
      [
        explanation("default/a", "ALLOW"),
        explanation("default/d", "DENY"),
        explanation("default/b", "ALLOW"),
      ],
      "default/a, default/b",
    ],
    [
      "dry-run policies are not named",
      { allowed: false, reason: "", layer: "L4" },
      [explanation("default/dry", "ALLOW", true)],
      "policy",
    ],
  ];
  for (const [name, decision, explanations, want] of cases) {
    it(name, () =>
      assert.equal(
        deniedBy(decision, () => explanations),
        want,
      ),
    );
  }
});

describe("startZtunnel options", () => {
  const base = {
    nodeName: "node-a",
    nodeIp: "127.0.0.1",
    rootCertPem: "-----BEGIN CERTIFICATE-----\n",
    token: "t",
  };
  const cases: [string, Partial<ZtunnelOptions>][] = [
    ["node IP that is not an IP", { nodeIp: "node-a.local" }],
    ["an admin IP that is not an IP", { adminIp: "localhost" }],
    ["empty node name", { nodeName: "" }],
    ["empty token", { token: "" }],
    ["a root that is not PEM", { rootCertPem: "not a certificate" }],
    ["a nameserver that is a name", { dns: { nameservers: ["dns.example"] } }],
    ["a nameserver port out of range", { dns: { nameservers: ["10.0.0.1:70000"] } }],
    ["no nameservers", { dns: { nameservers: [] } }],
    ["a DNS port of 0", { dns: { port: 0 } }],
    ["a DNS timeout of 0", { dns: { timeoutMs: 0 } }],
    ["the DNS proxy with on-demand lookups", { dns: {}, onDemand: true }],
    ["a negative termination deadline", { terminationDeadlineMs: -1 }],
    ["a termination deadline that is not whole", { terminationDeadlineMs: 2.5 }],
    ["an empty cluster id", { clusterId: "" }],
    ["a cluster id with a space", { clusterId: "cluster 1" }],
    ["a cluster id that is not ASCII", { clusterId: "clüster" }],
    ["a trust domain that is not one", { trustDomain: "Example.org" }],
    ["a trust domain with a path", { trustDomain: "example.org/ns" }],
  ];
  for (const [name, override] of cases) {
    it(`refuses ${name}`, async () => {
      await assert.rejects(
        startZtunnel({ ...base, ...override }),
        (err: unknown) => err instanceof ZtunnelError && err.code === "ERR_ZTUNNEL_INVALID_OPTION",
      );
    });
  }
});

describe("parseNameserver", () => {
  it("reads ip, ip:port and [ipv6]:port", () => {
    assert.deepEqual(parseNameserver("10.96.0.10"), { address: "10.96.0.10", port: 53 });
    assert.deepEqual(parseNameserver("10.96.0.10:5353"), { address: "10.96.0.10", port: 5353 });
    assert.deepEqual(parseNameserver("fd00::10"), { address: "fd00::10", port: 53 });
    assert.deepEqual(parseNameserver("[fd00::10]:5353"), { address: "fd00::10", port: 5353 });
    for (const bad of ["", "dns.example", "10.0.0.1:", "10.0.0.1:0", "[fd00::10]:x", "10.0.0.256"]) {
      assert.throws(
        () => parseNameserver(bad),
        (err: unknown) => err instanceof ZtunnelError && err.code === "ERR_ZTUNNEL_INVALID_OPTION",
        bad,
      );
    }
  });
});
