import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parsePolicyYaml } from "./parse-policy-yaml.js";

describe("parsePolicyYaml", () => {
  it("reads multi-document streams, keeps good documents and reports bad ones", () => {
    const out = parsePolicyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: good, namespace: a }
spec: {}
---
# an empty document is skipped
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: bad, namespace: a }
spec:
  rules:
  - from:
    - source: { ipBlocks: ["300.0.0.1"] }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: other }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: istio-system }
spec: { mtls: { mode: STRICT } }
---
key: [unclosed
`);
    assert.deepEqual(
      out.authorizationPolicies.map((p) => p.metadata.name),
      ["good"],
    );
    assert.deepEqual(
      out.peerAuthentications.map((p) => p.metadata.name),
      ["default"],
    );
    assert.deepEqual(
      out.errors.map((e) => [e.code, e.details.document]),
      [
        ["ERR_POLICY_INVALID", 2],
        ["ERR_POLICY_UNSUPPORTED_KIND", 3],
        ["ERR_POLICY_YAML", 5],
      ],
    );
    assert.match(
      out.errors[0]?.message ?? "",
      /spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[0\]: not an IP address/,
    );
    assert.equal(out.errors[0]?.issues[0]?.path, "spec.rules[0].from[0].source.ipBlocks[0]");
    assert.match(out.errors[2]?.message ?? "", /malformed YAML in document 5/);
  });

  it("unpacks kind: List and accepts JSON", () => {
    const out = parsePolicyYaml(
      JSON.stringify({
        apiVersion: "v1",
        kind: "List",
        items: [
          {
            apiVersion: "security.istio.io/v1beta1",
            kind: "AuthorizationPolicy",
            metadata: { name: "x", namespace: "n" },
            spec: {},
          },
        ],
      }),
    );
    assert.equal(out.authorizationPolicies.length, 1);
    assert.equal(out.errors.length, 0);
  });

  it("returns warnings with the resource they belong to", () => {
    const out = parsePolicyYaml(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: w, namespace: n }
spec: { selector: { matchLabels: {} } }
`);
    assert.equal(out.warnings[0]?.resource, "AuthorizationPolicy n/w");
    assert.equal(out.warnings[0]?.path, "spec.selector");
  });
});
