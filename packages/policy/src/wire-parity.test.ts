import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createAuthorizationEngine } from "./authorization-engine.js";
import { PolicyError } from "./errors.js";
import { cidrFromWire, formatCidr, parseIpAddress } from "./ip-address.js";
import { emptyWireMatch, type WireAuthorization, type WireMatch } from "./wire.js";
import {
  compileWireAuthorization,
  explainWireAuthorization,
  identityAttributes,
  matchWireAuthorization,
} from "./wire-matcher.js";

// Edge cases of the wire Authorization where ztunnel's reading decides what the answer must be.

const ip = (text: string) => {
  const parsed = parseIpAddress(text);
  assert.ok(parsed, text);
  return parsed;
};

function policy(
  action: "ALLOW" | "DENY",
  match: Partial<WireMatch>,
  extra: Partial<WireAuthorization> = {},
): WireAuthorization {
  return {
    name: "p",
    namespace: "ns",
    scope: "NAMESPACE",
    action,
    groups: [{ rules: [{ matches: [{ ...emptyWireMatch(), ...match }] }] }],
    ...extra,
  };
}

function connection(identity: string | undefined, sourceIp = "10.0.0.1") {
  return {
    sourceIp: ip(sourceIp),
    destinationIp: ip("10.0.0.2"),
    destinationPort: 8080,
    ...identityAttributes(identity),
  };
}

function request(
  identity: string | undefined,
  workload: { namespace: string; authorizationPolicies?: string[] },
  sourceIp = "10.0.0.1",
) {
  return {
    source: identity === undefined ? { ip: sourceIp } : { ip: sourceIp, identity },
    destination: { ip: "10.0.0.2", port: 8080, workload: { name: "w", ...workload } },
  };
}

describe("wire Authorization read as ztunnel reads it", () => {
  describe("a SPIFFE ID that is not an Istio identity is no identity", () => {
    const NON_ISTIO = "spiffe://cluster.local/workload/x";

    it("matches neither principals presence nor a trust-domain prefix, as plaintext", () => {
      for (const principals of [
        [{ presence: {} }],
        [{ prefix: "cluster.local/" }],
        [{ exact: "cluster.local/workload/x" }],
      ]) {
        const compiled = compileWireAuthorization(policy("ALLOW", { principals } as Partial<WireMatch>));
        assert.equal(matchWireAuthorization(compiled, connection(NON_ISTIO)), -1, JSON.stringify(principals));
        assert.equal(matchWireAuthorization(compiled, connection(undefined)), -1);
        assert.equal(
          matchWireAuthorization(compiled, connection("spiffe://cluster.local/ns/a/sa/b")),
          principals[0] && "exact" in principals[0] ? -1 : 0,
        );
        assert.match(
          explainWireAuthorization(compiled, connection(NON_ISTIO), "10.0.0.1", "10.0.0.2")[0] ?? "",
          /no identity/,
        );
      }
    });

    it("passes notPrincipals, so DENY notPrincipals presence refuses it", () => {
      const e = createAuthorizationEngine();
      e.setAuthorization(policy("DENY", { notPrincipals: [{ presence: {} }] }));
      assert.equal(e.evaluate(request(NON_ISTIO, { namespace: "ns" })).allowed, false);
      assert.equal(
        e.evaluate(request("spiffe://cluster.local/ns/a/sa/b", { namespace: "ns" })).allowed,
        true,
      );
    });

    it("the engine's ALLOW principals: ['*'] (presence) denies it", () => {
      const e = createAuthorizationEngine();
      e.setAuthorization(policy("ALLOW", { principals: [{ presence: {} }] }));
      const d = e.evaluate(request(NON_ISTIO, { namespace: "ns" }));
      assert.equal(d.allowed, false, d.reason);
    });
  });

  describe("an address prefix length is read as a byte (ztunnel: `length as u8`)", () => {
    it("length 264 is /8 and 256 is /0; 33 of an IPv4 address stays unreadable", () => {
      const ten = new Uint8Array([10, 0, 0, 0]);
      assert.equal(
        formatCidr(cidrFromWire({ address: ten, length: 264 }) ?? assert.fail("264")),
        "10.0.0.0/8",
      );
      assert.equal(
        formatCidr(cidrFromWire({ address: ten, length: 256 }) ?? assert.fail("256")),
        "0.0.0.0/0",
      );
      assert.equal(cidrFromWire({ address: ten, length: 33 }), undefined);
      assert.equal(cidrFromWire({ address: ten, length: 289 }), undefined);
    });

    it("a DENY sourceIps 10.0.0.0 with length 264 denies 10.9.9.9, and says how it was read", () => {
      const wire = policy("DENY", { sourceIps: [{ address: new Uint8Array([10, 0, 0, 0]), length: 264 }] });
      const compiled = compileWireAuthorization(wire);
      assert.equal(matchWireAuthorization(compiled, connection(undefined, "10.9.9.9")), 0);
      assert.match(compiled.problems.join("\n"), /length 264 read as 8/);
      const e = createAuthorizationEngine();
      e.setAuthorization(wire);
      assert.equal(e.evaluate(request(undefined, { namespace: "ns" }, "10.9.9.9")).allowed, false);
    });
  });

  describe('a NAMESPACE-scoped Authorization with namespace ""', () => {
    it("is refused as malformed (ztunnel would file it with the mesh-wide ones)", () => {
      const e = createAuthorizationEngine();
      assert.throws(
        () => e.setAuthorization(policy("DENY", { destinationPorts: [8080] }, { namespace: "" })),
        (err: unknown) =>
          err instanceof PolicyError && err.code === "ERR_WIRE_INVALID" && /namespace/.test(err.message),
      );
      // GLOBAL does not read the namespace; it stays accepted.
      e.setAuthorization(policy("DENY", { destinationPorts: [8080] }, { namespace: "", scope: "GLOBAL" }));
      assert.equal(e.evaluate(request(undefined, { namespace: "ns" })).allowed, false);
    });
  });

  describe("a workload's authorizationPolicies apply whatever their scope, each once", () => {
    it("a NAMESPACE DENY of another namespace, listed, denies", () => {
      const e = createAuthorizationEngine();
      e.setAuthorization(policy("DENY", { destinationPorts: [8080] }, { namespace: "other" }));
      assert.equal(
        e.evaluate(request(undefined, { namespace: "ns", authorizationPolicies: [] })).allowed,
        true,
      );
      const d = e.evaluate(request(undefined, { namespace: "ns", authorizationPolicies: ["other/p"] }));
      assert.equal(d.allowed, false);
      assert.equal(d.policy, "other/p");
    });

    it("a listed GLOBAL, same-namespace or repeated key is evaluated once", () => {
      const e = createAuthorizationEngine({ rootNamespace: "istio-system" });
      e.setAuthorization(
        policy("ALLOW", { destinationPorts: [1] }, { name: "g", namespace: "istio-system", scope: "GLOBAL" }),
      );
      e.setAuthorization(policy("ALLOW", { destinationPorts: [2] }, { name: "n", namespace: "ns" }));
      e.setAuthorization(
        policy(
          "ALLOW",
          { destinationPorts: [3] },
          { name: "s", namespace: "ns", scope: "WORKLOAD_SELECTOR" },
        ),
      );
      const req = request(undefined, {
        namespace: "ns",
        authorizationPolicies: ["istio-system/g", "ns/n", "ns/s", "ns/s", "istio-system/g"],
      });
      const keys = e.explain(req).map((p) => p.policy);
      assert.deepEqual([...keys].sort(), ["istio-system/g", "ns/n", "ns/s"]);
      assert.equal(e.evaluate(req).allowed, false);
    });

    it("reevaluate({ since }) takes in a change to a listed policy of another namespace", () => {
      const e = createAuthorizationEngine({ rootNamespace: "istio-system" });
      const open = [
        {
          id: "listed",
          request: request(undefined, { namespace: "ns", authorizationPolicies: ["other/p"] }),
        },
        { id: "unlisted", request: request(undefined, { namespace: "ns", authorizationPolicies: [] }) },
      ];
      for (const scope of ["NAMESPACE", "WORKLOAD_SELECTOR"] as const) {
        const v = e.version;
        e.setAuthorization(policy("DENY", { destinationPorts: [8080] }, { namespace: "other", scope }));
        assert.deepEqual(
          e.reevaluate(open, { since: v }).map((d) => d.connection.id),
          ["listed"],
          scope,
        );
      }
    });
  });

  describe("reevaluate({ since }) after a GLOBAL policy of a namespace other than the root", () => {
    it("re-decides connections of every namespace", () => {
      const e = createAuthorizationEngine({ rootNamespace: "istio-system" });
      const open = [{ id: "c", request: request(undefined, { namespace: "ns" }) }];
      const v = e.version;
      e.setAuthorization(
        policy("DENY", { destinationPorts: [8080] }, { namespace: "other", scope: "GLOBAL" }),
      );
      assert.deepEqual(
        e.reevaluate(open, { since: v }).map((d) => d.connection.id),
        ["c"],
      );
    });
  });
});
