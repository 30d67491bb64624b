import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type IpAddress, parseIpAddress } from "./ip-address.js";
import type { MtlsMode, PeerAuthentication } from "./kubernetes-types.js";
import {
  convertPeerAuthentication,
  effectivePeerAuthenticationKeys,
  staticStrictAuthorization,
} from "./peer-authentication.js";
import type { WireAuthorization } from "./wire.js";
import {
  type ConnectionAttributes,
  compileWireAuthorization,
  identityAttributes,
  matchWireAuthorization,
} from "./wire-matcher.js";

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

/**
 * What a destination does with a connection, given the policy keys its workload lists and the
 * policies sent: like the data plane, an unknown key is skipped and any matching DENY refuses.
 */
function refused(
  keys: readonly string[],
  sent: ReadonlyMap<string, WireAuthorization>,
  port: number,
  identity: string | undefined,
): boolean {
  const conn: ConnectionAttributes = {
    sourceIp: parseIpAddress("127.0.0.2") as IpAddress,
    destinationIp: parseIpAddress("127.0.0.3") as IpAddress,
    destinationPort: port,
    ...identityAttributes(identity),
  };
  return keys.some((k) => {
    const policy = sent.get(k);
    return policy !== undefined && matchWireAuthorization(compileWireAuthorization(policy), conn) >= 0;
  });
}

type Mode = MtlsMode | undefined;

describe("PeerAuthentication conversion: plaintext is refused exactly where the effective mode is STRICT", () => {
  // undefined = no policy at that level (or no port entry); "UNSET" = present but inheriting.
  const levels: Mode[] = [undefined, "UNSET", "STRICT", "PERMISSIVE", "DISABLE"];
  const workloadModes: Mode[] = [undefined, "STRICT", "PERMISSIVE", "DISABLE"];

  it("over every mesh / namespace / workload / port-level combination", () => {
    const failures: string[] = [];
    for (const meshMode of levels) {
      for (const nsMode of levels) {
        for (const wlMode of workloadModes) {
          for (const p8080 of levels) {
            for (const p9090 of levels) {
              const ports: Record<string, MtlsMode> = {};
              if (p8080 !== undefined) ports["8080"] = p8080;
              if (p9090 !== undefined) ports["9090"] = p9090;
              const hasPorts = Object.keys(ports).length > 0;
              const mesh = meshMode === undefined ? undefined : pa("istio-system", "m", meshMode);
              const ns = nsMode === undefined ? undefined : pa("ns", "n", nsMode);
              const wl = pa("ns", "w", wlMode, hasPorts ? ports : undefined, true);
              const all = [mesh, ns, wl].filter((p): p is PeerAuthentication => p !== undefined);
              const keys = effectivePeerAuthenticationKeys("istio-system", all);
              const sent = new Map<string, WireAuthorization>([[STATIC, staticStrictAuthorization()]]);
              const converted = convertPeerAuthentication(wl, {
                ...(ns ? { namespacePolicy: ns } : {}),
                ...(mesh ? { meshPolicy: mesh } : {}),
              });
              if (converted) sent.set(`${converted.namespace}/${converted.name}`, converted);

              const inherited = (m: Mode): boolean => m === undefined || m === "UNSET";
              let parent: Mode = "PERMISSIVE";
              if (!inherited(meshMode)) parent = meshMode;
              if (!inherited(nsMode)) parent = nsMode;
              const base = inherited(wlMode) ? parent : wlMode;
              for (const [port, pm] of [
                [8080, p8080],
                [9090, p9090],
                [7070, undefined],
              ] as const) {
                const effective = inherited(pm) ? base : pm;
                // A DISABLE port under an inherited STRICT mode may stay STRICT (DISABLE has no
                // meaning for ztunnel); either answer is acceptable there.
                if (pm === "DISABLE" && inherited(wlMode) && parent === "STRICT") continue;
                const want = effective === "STRICT";
                const got = refused(keys, sent, port, undefined);
                const where = `mesh=${meshMode} ns=${nsMode} workload=${wlMode} ports=${JSON.stringify(ports)} port=${port}`;
                if (got !== want) failures.push(`${where}: plaintext ${got ? "refused" : "allowed"}`);
                if (refused(keys, sent, port, "spiffe://cluster.local/ns/ns/sa/a"))
                  failures.push(`${where}: mTLS refused`);
              }
            }
          }
        }
      }
    }
    assert.deepEqual(failures.slice(0, 10), [], `${failures.length} combinations differ`);
  });
});
