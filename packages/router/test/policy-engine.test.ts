// The waypoint's L7 authorization with @ambient/policy's real engine plugged in: Istio
// AuthorizationPolicy YAML in, 403 "RBAC: access denied" or a routed request out.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createAuthorizationEngine } from "@ambient/policy";
import { type Backend, request, startBackend, startWaypoint, stopServer, type Waypoint } from "./harness.js";

const PRODUCTPAGE = "spiffe://cluster.local/ns/bookinfo/sa/productpage";
const RATINGS = "spiffe://cluster.local/ns/bookinfo/sa/ratings";

const POLICIES = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: reviews-viewer, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: ALLOW
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/bookinfo/sa/productpage"] } }]
    to: [{ operation: { methods: ["GET"], paths: ["/reviews/{*}", "/reviews"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-admin, namespace: bookinfo }
spec:
  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: waypoint }]
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/reviews/admin"] } }]
`;

describe("L7 authorization with @ambient/policy's AuthorizationEngine", () => {
  let backend: Backend;
  let wp: Waypoint;
  // Waypoint semantics: only policies attached with targetRefs to this waypoint or the Service apply.
  const engine = createAuthorizationEngine({ rootNamespace: "istio-system", l7Attachment: "waypoint" });

  before(async () => {
    const { errors } = engine.applyYaml(POLICIES);
    assert.deepEqual(errors, []);
    backend = await startBackend("reviews");
    wp = await startWaypoint(
      { "bookinfo/reviews": [backend.endpoint] },
      {
        routes: [
          {
            kind: "HTTPRoute",
            metadata: { name: "reviews", namespace: "bookinfo" },
            spec: {
              parentRefs: [{ kind: "Gateway", name: "waypoint" }],
              rules: [{ backendRefs: [{ name: "reviews", port: 80 }] }],
            },
          },
        ],
        waypoint: { name: "waypoint", namespace: "bookinfo" },
        policy: engine,
      },
      {
        peerIdentity: PRODUCTPAGE,
        remoteAddress: "10.0.0.7",
        destination: { address: "10.96.0.20", port: 80 },
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(backend.server);
  });

  it("routes what an ALLOW rule permits", async () => {
    const res = await request(wp.port, { path: "/reviews/1" });
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).url, "/reviews/1");
  });

  it("denies a method the ALLOW rule does not name", async () => {
    const res = await request(wp.port, { method: "DELETE", path: "/reviews/1" });
    assert.equal(res.status, 403);
    assert.equal(res.body, "RBAC: access denied");
  });

  it("denies a path a DENY rule names even for an allowed caller", async () => {
    const res = await request(wp.port, { path: "/reviews/admin" });
    assert.equal(res.status, 403);
  });

  it("denies another identity and never reaches the backend", async () => {
    const before = backend.requests.length;
    wp.info = { ...wp.info, peerIdentity: RATINGS };
    try {
      const res = await request(wp.port, { path: "/reviews/1" });
      assert.equal(res.status, 403);
      assert.equal(backend.requests.length, before);
    } finally {
      wp.info = { ...wp.info, peerIdentity: PRODUCTPAGE };
    }
  });
});
