import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Service } from "@ambient/xds";
import { type LocalityOf, type LocalityScope, localityRank, selectByLocality } from "./load-balancing.js";

type LoadBalancing = NonNullable<Service["loadBalancing"]>;

function at(region: string, zone: string, extra: Partial<LocalityOf> = {}): LocalityOf {
  return { locality: { region, zone, subzone: "" }, node: "n1", clusterId: "c1", network: "net1", ...extra };
}

const source = at("r1", "z1");
const endpoints = [
  { name: "same-zone", workload: at("r1", "z1", { node: "n2" }) },
  { name: "same-region", workload: at("r1", "z2") },
  { name: "other-region", workload: at("r2", "z1") },
  { name: "same-zone-b", workload: at("r1", "z1", { node: "n3" }) },
  { name: "same-node", workload: at("r1", "z1") },
  { name: "other-network", workload: at("r1", "z1", { network: "net2" }) },
];

function lb(mode: LoadBalancing["mode"], routingPreference: LocalityScope[]): LoadBalancing {
  return { mode, routingPreference, healthPolicy: "ONLY_HEALTHY" };
}

describe("localityRank", () => {
  const cases: [string, LocalityScope[], LocalityOf, number][] = [
    ["all match", ["REGION", "ZONE"], at("r1", "z1"), 2],
    ["stops at the first mismatch", ["REGION", "ZONE", "NODE"], at("r1", "z2"), 1],
    ["a later match after a mismatch does not count", ["ZONE", "REGION"], at("r1", "z2"), 0],
    ["node", ["NODE"], at("r9", "z9"), 1],
    ["cluster", ["CLUSTER"], at("r1", "z1", { clusterId: "c2" }), 0],
    ["subzone compares unset as empty", ["SUBZONE"], { ...at("r1", "z1"), locality: undefined }, 1],
    ["unset locality differs from a set one", ["REGION"], { ...at("r1", "z1"), locality: undefined }, 0],
    // NETWORK first: a match is worth every scope, a mismatch is skipped.
    ["network first, matched", ["NETWORK", "REGION", "ZONE"], at("r1", "z2"), 2 + 2],
    ["network first, other network", ["NETWORK", "REGION", "ZONE"], at("r1", "z1", { network: "x" }), 2],
    ["network later is an ordinary scope", ["REGION", "NETWORK"], at("r1", "z1", { network: "x" }), 1],
  ];
  for (const [name, preference, endpoint, rank] of cases) {
    it(name, () => assert.equal(localityRank(preference, source, endpoint), rank));
  }
});

describe("selectByLocality", () => {
  const cases: [string, Service["loadBalancing"], LocalityOf | undefined, string[]][] = [
    ["no loadBalancing: all", undefined, source, endpoints.map((e) => e.name)],
    ["UNSPECIFIED_MODE: all", lb("UNSPECIFIED_MODE", ["REGION"]), source, endpoints.map((e) => e.name)],
    ["no source: all", lb("STRICT", ["REGION"]), undefined, endpoints.map((e) => e.name)],
    [
      "FAILOVER region, zone: the nearest, in order",
      lb("FAILOVER", ["REGION", "ZONE"]),
      source,
      ["same-zone", "same-zone-b", "same-node", "other-network"],
    ],
    [
      "FAILOVER region, zone, node: those on the node",
      lb("FAILOVER", ["REGION", "ZONE", "NODE"]),
      source,
      // other-network is on the node too: NETWORK is not in this preference.
      ["same-node", "other-network"],
    ],
    [
      "FAILOVER falls back to the next best when none is nearer",
      lb("FAILOVER", ["REGION", "ZONE"]),
      at("r1", "z7"),
      ["same-zone", "same-region", "same-zone-b", "same-node", "other-network"],
    ],
    [
      "FAILOVER with nothing in common: all",
      lb("FAILOVER", ["REGION", "ZONE"]),
      at("r7", "z7"),
      endpoints.map((e) => e.name),
    ],
    [
      "FAILOVER network first prefers the same network over a nearer zone",
      lb("FAILOVER", ["NETWORK", "REGION", "ZONE"]),
      at("r1", "z1", { network: "net2" }),
      ["other-network"],
    ],
    ["STRICT zone: full matches only", lb("STRICT", ["REGION", "ZONE"]), at("r1", "z2"), ["same-region"]],
    ["STRICT with no full match: none", lb("STRICT", ["REGION", "ZONE"]), at("r7", "z1"), []],
    [
      "STRICT network first drops other networks",
      lb("STRICT", ["NETWORK", "REGION"]),
      source,
      ["same-zone", "same-region", "same-zone-b", "same-node"],
    ],
    ["STRICT with no preference: all", lb("STRICT", []), source, endpoints.map((e) => e.name)],
    [
      "UNSPECIFIED_SCOPE entries are ignored",
      lb("STRICT", ["UNSPECIFIED_SCOPE", "NODE"]),
      source,
      ["same-region", "other-region", "same-node", "other-network"],
    ],
  ];
  for (const [name, loadBalancing, from, want] of cases) {
    it(name, () => {
      assert.deepEqual(
        selectByLocality(endpoints, from, loadBalancing).map((e) => e.name),
        want,
      );
    });
  }
});
