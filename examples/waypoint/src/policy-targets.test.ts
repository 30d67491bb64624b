import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { targetsWaypoint, targetsWaypointOrService, withAttachableTargets } from "./policy-targets.js";

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
    {
      name: "another namespace's policy naming the waypoint's namespace",
      policy: {
        metadata: { name: "p", namespace: "other" },
        spec: { targetRefs: [{ kind: "Gateway", name: "waypoint", namespace: "demo" }] },
      },
      expect: false,
    },
    {
      name: "a root-namespace policy naming the waypoint's namespace",
      policy: {
        metadata: { name: "p", namespace: "istio-system" },
        spec: { targetRef: { kind: "Gateway", name: "waypoint", namespace: "demo" } },
      },
      expect: false,
    },
    {
      name: "its own namespace named explicitly",
      policy: {
        metadata: { name: "p", namespace: "demo" },
        spec: { targetRefs: [{ kind: "Gateway", name: "waypoint", namespace: "demo" }] },
      },
      expect: true,
    },
    {
      name: "the waypoint GatewayClass from the root namespace",
      policy: {
        metadata: { name: "p", namespace: "istio-system" },
        spec: {
          targetRefs: [{ group: "gateway.networking.k8s.io", kind: "GatewayClass", name: "istio-waypoint" }],
        },
      },
      expect: true,
    },
    {
      name: "the waypoint GatewayClass from another namespace",
      policy: {
        metadata: { name: "p", namespace: "demo" },
        spec: { targetRefs: [{ kind: "GatewayClass", name: "istio-waypoint" }] },
      },
      expect: false,
    },
    {
      name: "another GatewayClass from the root namespace",
      policy: {
        metadata: { name: "p", namespace: "istio-system" },
        spec: { targetRefs: [{ kind: "GatewayClass", name: "istio" }] },
      },
      expect: false,
    },
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
    // The core group written out, as istiod reads it.
    assert.equal(
      targetsWaypointOrService(spec([{ group: "core", kind: "Service", name: "web" }]), WAYPOINT),
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

  it("takes a Service or ServiceEntry of the policy's own namespace only", () => {
    const spec = (namespace: string, refs: unknown[]) => ({
      metadata: { name: "j", namespace },
      spec: { targetRefs: refs },
    });
    const web = { group: "", kind: "Service", name: "web" };
    const api = { group: "networking.istio.io", kind: "ServiceEntry", name: "api" };
    assert.equal(targetsWaypointOrService(spec("demo", [{ ...web, namespace: "demo" }]), WAYPOINT), true);
    assert.equal(targetsWaypointOrService(spec("other", [{ ...web, namespace: "demo" }]), WAYPOINT), false);
    assert.equal(
      targetsWaypointOrService(spec("istio-system", [{ ...web, namespace: "demo" }]), WAYPOINT),
      false,
    );
    assert.equal(targetsWaypointOrService(spec("other", [{ ...api, namespace: "demo" }]), WAYPOINT), false);
  });
});

describe("withAttachableTargets", () => {
  it("drops the references that cannot attach and keeps the rest", () => {
    const policy = {
      metadata: { name: "p", namespace: "istio-system" },
      spec: {
        targetRefs: [
          { kind: "Service", name: "web", namespace: "demo" },
          { kind: "GatewayClass", name: "istio-waypoint" },
          { kind: "Service", name: "mesh-api" },
        ],
      },
    };
    assert.deepEqual(withAttachableTargets(policy).spec, {
      targetRefs: [
        { kind: "GatewayClass", name: "istio-waypoint" },
        { kind: "Service", name: "mesh-api" },
      ],
    });
    const single = {
      metadata: { name: "p", namespace: "other" },
      spec: { targetRef: { kind: "Gateway", name: "waypoint", namespace: "demo" } },
    };
    assert.deepEqual(withAttachableTargets(single).spec, {});
    const fine = {
      metadata: { name: "p", namespace: "demo" },
      spec: { targetRefs: [{ kind: "Gateway", name: "waypoint" }] },
    };
    assert.equal(withAttachableTargets(fine), fine);
  });
});
