// Engine options and converter inputs of the wrong type or value are refused with a PolicyError
// (ERR_POLICY_INVALID), never taken as some other setting.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type AuthorizationEngineOptions, createAuthorizationEngine } from "./authorization-engine.js";
import { PolicyError } from "./errors.js";
import type { AuthorizationPolicy, PeerAuthentication } from "./kubernetes-types.js";
import { convertPeerAuthentication } from "./peer-authentication.js";
import { toWireAuthorization } from "./to-wire-authorization.js";

const invalid = (err: unknown) => err instanceof PolicyError && err.code === "ERR_POLICY_INVALID";

describe("createAuthorizationEngine options", () => {
  const bad: Array<[string, unknown]> = [
    ["l7Attachment", "Waypoint"],
    ["l7Attachment", 5],
    ["enableDryRun", "false"],
    ["enableDryRun", 0],
    ["rootNamespace", 5],
    ["rootNamespace", ""],
    ["customAuthorizer", "x"],
    ["logger", 5],
    ["logger", {}],
    ["logDecisions", "yes"],
    ["metrics", {}],
  ];
  for (const [field, value] of bad) {
    it(`refuses ${field}: ${JSON.stringify(value)}`, () => {
      assert.throws(
        () => createAuthorizationEngine({ [field]: value } as AuthorizationEngineOptions),
        (err: unknown) => invalid(err) && (err as Error).message.includes(field),
      );
    });
  }

  it("accepts the documented values", () => {
    createAuthorizationEngine({
      l7Attachment: "waypoint",
      enableDryRun: false,
      rootNamespace: "mesh-root",
      customAuthorizer: () => true,
      logDecisions: true,
    });
    createAuthorizationEngine({ l7Attachment: "workload" });
    createAuthorizationEngine();
  });
});

describe("converter inputs", () => {
  it("toWireAuthorization refuses what is not an AuthorizationPolicy", () => {
    for (const bad of [{}, undefined, null, 5, { metadata: { name: "a", namespace: "b" } }, { spec: {} }]) {
      assert.throws(() => toWireAuthorization(bad as unknown as AuthorizationPolicy), invalid, String(bad));
    }
  });

  it("convertPeerAuthentication refuses what is not a PeerAuthentication", () => {
    for (const bad of [undefined, null, {}, { metadata: { name: "a", namespace: "b" } }]) {
      assert.throws(() => convertPeerAuthentication(bad as unknown as PeerAuthentication), invalid);
    }
    const pa: PeerAuthentication = {
      apiVersion: "security.istio.io/v1",
      kind: "PeerAuthentication",
      metadata: { name: "p", namespace: "shop" },
      spec: {},
    };
    assert.throws(
      () => convertPeerAuthentication(pa, { namespacePolicy: {} as PeerAuthentication }),
      invalid,
    );
    assert.equal(convertPeerAuthentication(pa), undefined);
  });
});
