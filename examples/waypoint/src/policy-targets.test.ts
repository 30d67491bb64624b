import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { targetsWaypoint, targetsWaypointOrService } from "./policy-targets.js";

const WAYPOINT = { name: "waypoint", namespace: "demo" };

describe("targetsWaypoint", () => {
  const cases: { name: string; policy: Record<string, unknown>; expect: boolean }[] = [
    {
      name: "targetRefs to the Gateway in the policy's namespace",
      policy: {
        metadata: { name: "p", namespace: "demo" },
        spec: { targetRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }] },
      },
      expect: true,
    },
    {
      name: "singular targetRef, default group",
      policy: {
        metadata: { name: "p", namespace: "demo" },
        spec: { targetRef: { kind: "Gateway", name: "waypoint" } },
      },
      expect: true,
    },
    {
      name: "another namespace's Gateway",
      policy: {
        metadata: { name: "p", namespace: "other" },
        spec: { targetRefs: [{ kind: "Gateway", name: "waypoint" }] },
      },
      expect: false,
    },
    {
      name: "a Service target is not the waypoint",
      policy: {
        metadata: { name: "p", namespace: "demo" },
        spec: { targetRefs: [{ group: "", kind: "Service", name: "waypoint" }] },
      },
      expect: false,
    },
    {
      name: "selector policy",
      policy: { metadata: { name: "p", namespace: "demo" }, spec: { selector: {} } },
      expect: false,
    },
    { name: "no spec", policy: { metadata: { name: "p" } }, expect: false },
  ];
  for (const c of cases) it(c.name, () => assert.equal(targetsWaypoint(c.policy, WAYPOINT), c.expect));
});

describe("targetsWaypointOrService", () => {
  it("takes the waypoint's Gateway, any Service and any ServiceEntry, nothing else", () => {
    const spec = (refs: unknown[]) => ({
      metadata: { name: "j", namespace: "demo" },
      spec: { targetRefs: refs },
    });
    assert.equal(targetsWaypointOrService(spec([{ kind: "Gateway", name: "waypoint" }]), WAYPOINT), true);
    assert.equal(
      targetsWaypointOrService(spec([{ group: "", kind: "Service", name: "web" }]), WAYPOINT),
      true,
    );
    assert.equal(
      targetsWaypointOrService(
        spec([{ group: "networking.istio.io", kind: "ServiceEntry", name: "api" }]),
        WAYPOINT,
      ),
      true,
    );
    assert.equal(targetsWaypointOrService(spec([{ kind: "ServiceEntry", name: "api" }]), WAYPOINT), true);
    assert.equal(
      targetsWaypointOrService(spec([{ group: "example.com", kind: "ServiceEntry", name: "api" }]), WAYPOINT),
      false,
    );
    assert.equal(targetsWaypointOrService(spec([{ kind: "Gateway", name: "ingress" }]), WAYPOINT), false);
    assert.equal(
      targetsWaypointOrService({ metadata: { name: "j" }, spec: { selector: {} } }, WAYPOINT),
      false,
    );
  });
});
