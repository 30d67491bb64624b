import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { MtlsMode, PeerAuthentication } from "./kubernetes-types.js";
import {
  convertPeerAuthentication,
  effectivePeerAuthenticationKeys,
  staticStrictAuthorization,
} from "./peer-authentication.js";

function pa(
  namespace: string,
  name: string,
  mode?: MtlsMode,
  ports?: Record<string, MtlsMode>,
  selector = false,
  created?: string,
): PeerAuthentication {
  return {
    apiVersion: "security.istio.io/v1",
    kind: "PeerAuthentication",
    metadata: { name, namespace, ...(created ? { creationTimestamp: created } : {}) },
    spec: {
      ...(selector ? { selector: { matchLabels: { app: "a" } } } : {}),
      ...(mode ? { mtls: { mode } } : {}),
      ...(ports
        ? { portLevelMtls: Object.fromEntries(Object.entries(ports).map(([p, m]) => [p, { mode: m }])) }
        : {}),
    },
  };
}
const STATIC = "istio-system/istio_converted_static_strict";
const CONVERTED = "ns/converted_peer_authentication_w";

describe("PeerAuthentication conversion", () => {
  it("has a static STRICT policy denying callers without identity", () => {
    const s = staticStrictAuthorization();
    assert.equal(s.action, "DENY");
    assert.deepEqual(s.groups[0]?.rules[0]?.matches[0]?.notPrincipals, [{ presence: {} }]);
  });

  it("computes the effective keys like istiod", () => {
    assert.deepEqual(effectivePeerAuthenticationKeys("istio-system", []), []);
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [pa("istio-system", "default", "STRICT")]),
      [STATIC],
    );
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [
        pa("istio-system", "default", "STRICT"),
        pa("ns", "ns", "PERMISSIVE"),
      ]),
      [],
    );
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [
        pa("ns", "ns", "STRICT"),
        pa("ns", "w", "PERMISSIVE", undefined, true),
      ]),
      [],
    );
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [
        pa("ns", "w", "STRICT", { "8080": "PERMISSIVE" }, true),
      ]),
      [CONVERTED],
    );
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [
        pa("istio-system", "m", "STRICT"),
        pa("ns", "w", undefined, { "8080": "PERMISSIVE" }, true),
      ]),
      [CONVERTED],
    );
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [
        pa("ns", "w", "PERMISSIVE", { "8080": "STRICT" }, true),
      ]),
      [CONVERTED],
    );
    assert.deepEqual(
      effectivePeerAuthenticationKeys("istio-system", [
        pa("istio-system", "m", "STRICT"),
        pa("ns", "w", undefined, { "8080": "STRICT" }, true),
      ]),
      [STATIC],
    );
  });

  it("uses the oldest policy when several apply", () => {
    const keys = effectivePeerAuthenticationKeys("istio-system", [
      pa("ns", "newer", "PERMISSIVE", undefined, false, "2024-02-01T00:00:00Z"),
      pa("ns", "older", "STRICT", undefined, false, "2024-01-01T00:00:00Z"),
    ]);
    assert.deepEqual(keys, [STATIC]);
  });

  it("converts port-level exceptions", () => {
    const strictWithHole = convertPeerAuthentication(
      pa("ns", "w", "STRICT", { "9090": "PERMISSIVE", "8080": "DISABLE" }, true),
    );
    assert.equal(strictWithHole?.name, "converted_peer_authentication_w");
    assert.equal(strictWithHole?.scope, "WORKLOAD_SELECTOR");
    const rules = strictWithHole?.groups[0]?.rules ?? [];
    assert.equal(rules.length, 3);
    assert.deepEqual(rules[1]?.matches[0]?.notDestinationPorts, [8080]);
    assert.deepEqual(rules[2]?.matches[0]?.notDestinationPorts, [9090]);

    const permissiveWithStrictPort = convertPeerAuthentication(
      pa("ns", "w", "PERMISSIVE", { "8443": "STRICT" }, true),
    );
    assert.equal(permissiveWithStrictPort?.groups.length, 1);
    assert.deepEqual(permissiveWithStrictPort?.groups[0]?.rules[0]?.matches[0]?.destinationPorts, [8443]);

    assert.equal(convertPeerAuthentication(pa("ns", "w", "STRICT", { "8443": "STRICT" }, true)), undefined);
    assert.equal(convertPeerAuthentication(pa("ns", "w", "STRICT")), undefined);
    assert.equal(
      convertPeerAuthentication(pa("istio-system", "w", "STRICT", { "1": "PERMISSIVE" }, true)),
      undefined,
    );

    const merged = convertPeerAuthentication(pa("ns", "w", undefined, { "8080": "PERMISSIVE" }, true), {
      meshPolicy: pa("istio-system", "m", "STRICT"),
    });
    const mergedRules = merged?.groups[0]?.rules ?? [];
    assert.deepEqual(mergedRules[0]?.matches[0]?.notDestinationPorts, [8080]);
    assert.deepEqual(mergedRules[1]?.matches[0]?.notPrincipals, [{ presence: {} }]);
  });
});
