import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AuthorizationDecision, PolicyExplanation } from "@ambient/policy";
import { ZtunnelError } from "./errors.js";
import { deniedBy, startZtunnel } from "./ztunnel.js";

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
  const cases: [string, Partial<typeof base>][] = [
    ["node IP that is not an IP", { nodeIp: "node-a.local" }],
    ["empty node name", { nodeName: "" }],
    ["empty token", { token: "" }],
    ["a root that is not PEM", { rootCertPem: "not a certificate" }],
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
