import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { selectWaypointManifests, targetsWaypoint } from "./waypoint-manifests.js";

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

describe("selectWaypointManifests", () => {
  it("keeps routes and waypoint policies, skips the rest and reports bad YAML", () => {
    const text = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: demo }
spec: { parentRefs: [{ group: "", kind: Service, name: web }] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: at-waypoint, namespace: demo }
spec: { targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: at-ztunnel, namespace: demo }
spec: { selector: { matchLabels: { app: web } } }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo }
`;
    const out = selectWaypointManifests(
      [
        { path: "b.yaml", text },
        { path: "a.yaml", text: "kind: [\n" },
      ],
      WAYPOINT,
    );
    assert.deepEqual(
      out.routes.map((r) => (r.metadata as { name: string }).name),
      ["web"],
    );
    assert.deepEqual(
      out.policies.map((p) => (p.metadata as { name: string }).name),
      ["at-waypoint"],
    );
    assert.equal(out.issues.length, 1);
    assert.match(out.issues[0] ?? "", /^a\.yaml#0: malformed YAML/);
  });
});
