// The wire form this package emits must survive protobuf encoding by @ambient/xds unchanged in meaning:
// ztunnel receives the bytes, not our objects.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TypeUrl, typeRegistry } from "@ambient/xds";
import {
  type AuthorizationRequest,
  createAuthorizationEngine,
  type WireAuthorization,
} from "../src/index.js";

const POLICIES = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-legacy-port, namespace: istio-system }
spec:
  action: DENY
  rules:
  - to: [{ operation: { ports: ["9090"] } }]
    from: [{ source: { notNamespaces: ["trusted*"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-shop, namespace: shop }
spec:
  rules:
  - from:
    - source: { principals: ["cluster.local/ns/shop/*", "*/sa/admin"] }
    - source: { ipBlocks: ["10.20.0.0/16", "2001:db8::/48"], notIpBlocks: ["10.20.9.0/24"] }
    to: [{ operation: { ports: ["8080", "9090"] } }]
  - when:
    - key: destination.ip
      values: ["10.0.2.0/24"]
    - key: source.namespace
      notValues: ["legacy"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: cart-only-frontend, namespace: shop }
spec:
  selector: { matchLabels: { app: cart } }
  action: DENY
  rules:
  - from: [{ source: { notPrincipals: ["cluster.local/ns/shop/sa/frontend"] } }]
    to: [{ operation: { notPorts: ["15021"] } }]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: strict, namespace: payments }
spec: { mtls: { mode: STRICT } }
`;

const identities = [
  undefined,
  "spiffe://cluster.local/ns/shop/sa/frontend",
  "spiffe://cluster.local/ns/shop/sa/checkout",
  "spiffe://cluster.local/ns/legacy/sa/admin",
  "spiffe://cluster.local/ns/trusted-ops/sa/ops",
];
const sourceIps = ["10.20.1.1", "10.20.9.9", "10.30.0.1", "2001:db8::7"];
const destinations = [
  { ip: "10.0.2.5", workload: { namespace: "shop", name: "cart-0", labels: { app: "cart" } } },
  { ip: "10.0.3.5", workload: { namespace: "shop", name: "web-0", labels: { app: "web" } } },
  { ip: "10.0.4.5", workload: { namespace: "payments", name: "pay-0", labels: { app: "pay" } } },
];
const ports = [8080, 9090, 15021, 443];

function* requests(): Generator<AuthorizationRequest> {
  for (const identity of identities)
    for (const ip of sourceIps)
      for (const dst of destinations)
        for (const port of ports)
          yield {
            source: identity === undefined ? { ip } : { ip, identity },
            destination: { ip: dst.ip, port, workload: dst.workload },
          };
}

/**
 * Proto3 has no presence for repeated and scalar fields: the decoder fills in `[]`, `false` and `""`
 * where the encoder saw nothing, and hands bytes back as Buffers. Compare with those defaults removed.
 */
function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return Array.from(value);
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (v === undefined || v === false || v === "" || (Array.isArray(v) && v.length === 0)) continue;
    out[key] = normalize(v);
  }
  return out;
}

describe("wire form through @ambient/xds protobuf encoding", () => {
  const direct = createAuthorizationEngine({ rootNamespace: "istio-system" });
  const { errors } = direct.applyYaml(POLICIES);
  const wire = direct.wireAuthorizations();

  it("converts every policy", () => {
    assert.deepEqual(errors, []);
    assert.equal(wire.length, 4);
  });

  it("decodes to the same objects it encoded", () => {
    for (const authorization of wire) {
      const bytes = typeRegistry.encode(TypeUrl.authorization, authorization);
      assert.ok(bytes.length > 0);
      const decoded = typeRegistry.decode(TypeUrl.authorization, bytes);
      assert.deepEqual(
        normalize(decoded),
        normalize(authorization),
        `${authorization.namespace}/${authorization.name}`,
      );
    }
  });

  it("decides every connection the same way after the round trip", () => {
    const viaWire = createAuthorizationEngine({ rootNamespace: "istio-system" });
    for (const authorization of wire) {
      const any = typeRegistry.pack(TypeUrl.authorization, authorization);
      viaWire.setAuthorization(typeRegistry.unpack(any) as WireAuthorization);
    }
    // A ztunnel learns which selector-scoped policies apply to a workload from the workload's own
    // `authorizationPolicies` list (istiod computes it from labels and PeerAuthentication).
    const selectedFor: Record<string, string[]> = {
      cart: ["shop/cart-only-frontend"],
      web: [],
      pay: ["istio-system/istio_converted_static_strict"],
    };
    const scoped = wire.filter((w) => w.scope === "WORKLOAD_SELECTOR").map((w) => `${w.namespace}/${w.name}`);
    assert.deepEqual(scoped.sort(), Object.values(selectedFor).flat().sort());
    let compared = 0;
    let denied = 0;
    for (const request of requests()) {
      const expected = direct.evaluate(request);
      const workload = request.destination.workload;
      const selected = selectedFor[workload?.labels?.app ?? ""] ?? [];
      const actual = viaWire.evaluate({
        ...request,
        destination: { ...request.destination, workload: { ...workload!, authorizationPolicies: selected } },
      });
      assert.equal(
        actual.allowed,
        expected.allowed,
        `${JSON.stringify(request)}: ${expected.reason} vs ${actual.reason}`,
      );
      assert.equal(actual.policy, expected.policy);
      compared += 1;
      if (!expected.allowed) denied += 1;
    }
    assert.equal(compared, identities.length * sourceIps.length * destinations.length * ports.length);
    // The corpus must exercise both outcomes, or the comparison proves nothing.
    assert.ok(denied > 0 && denied < compared, `denied ${denied} of ${compared}`);
  });
});
