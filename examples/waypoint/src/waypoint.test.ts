import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WaypointError } from "./errors.js";
import { startWaypoint } from "./waypoint.js";

describe("startWaypoint options", () => {
  const base = {
    gateway: { name: "waypoint", namespace: "demo" },
    ip: "127.10.0.6",
    nodeName: "node-a",
    token: "t",
    rootCertPem: "-----BEGIN CERTIFICATE-----",
  };
  const cases: { name: string; patch: Record<string, unknown>; message: RegExp }[] = [
    { name: "not an IPv4 address", patch: { ip: "waypoint" }, message: /ip "waypoint" is not IPv4/ },
    { name: "empty token", patch: { token: "" }, message: /token is empty/ },
    {
      name: "a negative drain deadline",
      patch: { terminationDrainMs: -5 },
      message: /terminationDrainMs must be a whole number of ms, got -5/,
    },
    { name: "an empty cluster id", patch: { clusterId: "" }, message: /clusterId must be .*""/ },
    {
      name: "a cluster id with whitespace",
      patch: { clusterId: "cluster 1" },
      message: /clusterId must be .*"cluster 1"/,
    },
    {
      name: "a trust domain that is not one",
      patch: { trustDomain: "Example.org" },
      message: /trustDomain is not a trust domain/,
    },
    {
      name: "a trust domain alias that is not one",
      patch: { trustDomainAliases: ["old.example", "old example"] },
      message: /trustDomainAliases is not a trust domain/,
    },
    {
      name: "a cluster domain that is not one",
      patch: { clusterDomain: "corp.internal." },
      message: /clusterDomain is not a DNS domain/,
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      await assert.rejects(startWaypoint({ ...base, ...c.patch }), (err: unknown) => {
        assert.ok(err instanceof WaypointError);
        assert.equal(err.code, "ERR_WAYPOINT_INVALID_OPTION");
        assert.match(err.message, c.message);
        return true;
      });
    });
  }
});
