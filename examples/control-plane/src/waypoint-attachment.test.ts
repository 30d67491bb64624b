import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { labelSelectorMatches } from "./waypoint-attachment.js";

describe("labelSelectorMatches", () => {
  const labels = { team: "a", tier: "web" };
  const cases: [string, Parameters<typeof labelSelectorMatches>[0], boolean][] = [
    ["an empty selector selects everything", {}, true],
    ["matchLabels all present", { matchLabels: { team: "a", tier: "web" } }, true],
    ["matchLabels one differs", { matchLabels: { team: "a", tier: "db" } }, false],
    ["Exists", { matchExpressions: [{ key: "tier", operator: "Exists" }] }, true],
    ["Exists, absent", { matchExpressions: [{ key: "zone", operator: "Exists" }] }, false],
    ["DoesNotExist", { matchExpressions: [{ key: "zone", operator: "DoesNotExist" }] }, true],
    ["DoesNotExist, present", { matchExpressions: [{ key: "team", operator: "DoesNotExist" }] }, false],
    ["In", { matchExpressions: [{ key: "team", operator: "In", values: ["b", "a"] }] }, true],
    ["In, absent key", { matchExpressions: [{ key: "zone", operator: "In", values: ["a"] }] }, false],
    [
      "NotIn, absent key matches",
      { matchExpressions: [{ key: "zone", operator: "NotIn", values: ["a"] }] },
      true,
    ],
    ["NotIn", { matchExpressions: [{ key: "team", operator: "NotIn", values: ["a"] }] }, false],
    [
      "In without values is invalid: nothing",
      { matchExpressions: [{ key: "team", operator: "In", values: [] }] },
      false,
    ],
    [
      "an unknown operator is invalid: nothing",
      { matchExpressions: [{ key: "team", operator: "Gt", values: ["1"] }] },
      false,
    ],
    [
      "labels and expressions together",
      { matchLabels: { team: "a" }, matchExpressions: [{ key: "tier", operator: "In", values: ["web"] }] },
      true,
    ],
  ];
  for (const [name, selector, want] of cases) {
    it(name, () => assert.equal(labelSelectorMatches(selector, labels), want));
  }
});
