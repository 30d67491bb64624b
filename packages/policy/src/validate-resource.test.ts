import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PolicyError } from "./errors.js";
import {
  validateAuthorizationPolicy,
  validatePeerAuthentication,
  validateResource,
} from "./validate-resource.js";

function ap(spec: unknown, metadata: Record<string, unknown> = { name: "p", namespace: "foo" }): unknown {
  return { apiVersion: "security.istio.io/v1", kind: "AuthorizationPolicy", metadata, spec };
}

function issues(input: unknown): string[] {
  try {
    validateResource(input);
  } catch (err) {
    assert.ok(err instanceof PolicyError);
    assert.equal(err.code, "ERR_POLICY_INVALID");
    return err.issues.map((i) => `${i.path}: ${i.message}`);
  }
  assert.fail("expected a validation error");
}

describe("validateResource", () => {
  it("accepts a full policy and fills the default namespace", () => {
    const { resource, warnings } = validateAuthorizationPolicy(
      ap(
        { selector: { matchLabels: { app: "x" } }, rules: [{ from: [{ source: { principals: ["a/b"] } }] }] },
        { name: "p" },
      ),
    );
    assert.equal(resource.metadata.namespace, "default");
    assert.deepEqual(warnings, []);
    assert.deepEqual(resource.spec.rules?.[0]?.from?.[0]?.source.principals, ["a/b"]);
  });

  it("names the field path of a bad CIDR", () => {
    const out = issues(
      ap({
        rules: [
          { from: [{ source: { namespaces: ["a"] } }] },
          { from: [{ source: { ipBlocks: ["10.0.0.0/8", "1.2.3.4", "10.0.0.0/99"] } }] },
        ],
      }),
    );
    assert.deepEqual(out, ['spec.rules[1].from[0].source.ipBlocks[2]: not a CIDR: "10.0.0.0/99"']);
  });

  it("reports unknown fields, wrong types and empty values together", () => {
    const out = issues(
      ap({
        rulez: [],
        rules: [
          { from: [{ source: { principals: "a" } }], to: [{ operation: { ports: [80], methodz: ["GET"] } }] },
          { when: [{ key: "request.headers[x]", values: [""] }] },
        ],
      }),
    );
    assert.deepEqual(out, [
      "spec.rulez: unknown field",
      'spec.rules[0].from[0].source.principals: must be a list of strings, found string "a"',
      "spec.rules[0].from[0].source: must not be empty",
      "spec.rules[0].to[0].operation.methodz: unknown field",
      "spec.rules[0].to[0].operation.ports[0]: must be a string, found number 80",
      "spec.rules[0].to[0].operation: must not be empty",
      "spec.rules[1].when[0].values[0]: empty value not allowed",
    ]);
  });

  it("applies istiod's webhook rules", () => {
    assert.deepEqual(issues(ap({ action: "DENY" })), [
      "spec.rules: DENY action without rules is never triggered; add an empty rule {} to apply it to every request",
    ]);
    assert.deepEqual(issues(ap({ action: "CUSTOM", rules: [{}] })), [
      "spec.provider.name: must not be empty with the CUSTOM action",
    ]);
    assert.deepEqual(issues(ap({ provider: { name: "x" }, rules: [{}] })), [
      "spec.provider: must not be set with the ALLOW action",
    ]);
    assert.deepEqual(issues(ap({ action: "MAYBE" })), [
      'spec.action: must be one of ALLOW, DENY, AUDIT, CUSTOM, found "MAYBE"',
    ]);
    assert.deepEqual(
      issues(ap({ selector: { matchLabels: { a: "b" } }, targetRefs: [{ kind: "Gateway", name: "w" }] })),
      ["spec: only one of selector, targetRef or targetRefs can be set"],
    );
    // Each kind in its own group, the core group written "" or "core": another group would attach the
    // policy to nothing.
    for (const ref of [
      { kind: "Service", name: "web", group: "" },
      { kind: "Service", name: "web", group: "core" },
      { kind: "Service", name: "web" },
      { kind: "Gateway", name: "w", group: "gateway.networking.k8s.io" },
      { kind: "ServiceEntry", name: "e", group: "networking.istio.io" },
    ]) {
      assert.doesNotThrow(
        () => validateResource(ap({ targetRefs: [ref], rules: [{}] })),
        JSON.stringify(ref),
      );
    }
    assert.deepEqual(
      issues(
        ap({
          targetRefs: [
            { kind: "Service", name: "web", group: "apps" },
            { kind: "Gateway", name: "w", group: "" },
            { kind: "ServiceEntry", name: "e", group: "networking.x-k8s.io" },
          ],
          rules: [{}],
        }),
      ),
      [
        'spec.targetRefs[0].group: Service is in the group "" (core), found "apps"',
        'spec.targetRefs[1].group: Gateway is in the group "gateway.networking.k8s.io", found ""',
        'spec.targetRefs[2].group: ServiceEntry is in the group "networking.istio.io", found "networking.x-k8s.io"',
      ],
    );
    assert.deepEqual(issues(ap({ rules: [{ from: [] }] })), ["spec.rules[0].from: must not be empty"]);
    // Not an attribute istiod knows: accepted, it would match nothing, and a DENY on it would miss.
    assert.deepEqual(
      issues(
        ap({
          action: "DENY",
          rules: [{ when: [{ key: "request.experimental.inline.headers[x-user]", values: ["bob"] }] }],
        }),
      ),
      ["spec.rules[0].when[0].values: unknown attribute: request.experimental.inline.headers[x-user]"],
    );
    assert.deepEqual(
      issues(ap({ rules: [{ from: [{ source: { principals: ["a"], serviceAccounts: ["ns/sa"] } }] }] })),
      ["spec.rules[0].from[0].source: cannot set serviceAccounts together with namespaces or principals"],
    );
    assert.deepEqual(issues(ap({ rules: [{ from: [{ source: { serviceAccounts: ["a/b/c", "x*"] } }] }] })), [
      "spec.rules[0].from[0].source.serviceAccounts[0]: expected 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\"",
      "spec.rules[0].from[0].source.serviceAccounts[1]: wildcards are not allowed in serviceAccounts",
    ]);
    assert.deepEqual(
      issues(ap({ rules: [{ to: [{ operation: { ports: ["http"], notPorts: ["70000"] } }] }] })),
      [
        'spec.rules[0].to[0].operation.ports[0]: not a port (0-65535): "http"',
        'spec.rules[0].to[0].operation.notPorts[0]: not a port (0-65535): "70000"',
      ],
    );
  });

  it("checks path templates", () => {
    assert.deepEqual(
      issues(ap({ rules: [{ to: [{ operation: { paths: ["/a/{**}/{*}", "/a/{x}", "/a/{*}/b c"] } }] }] })),
      [
        'spec.rules[0].to[0].operation.paths[0]: invalid path template "/a/{**}/{*}": {**} must be the last operator',
        "spec.rules[0].to[0].operation.paths[1]: invalid path \"/a/{x}\": '{' or '}' outside a supported template ({*} or {**})",
        'spec.rules[0].to[0].operation.paths[2]: invalid path template "/a/{*}/b c": segment "b c" is not a valid literal',
      ],
    );
    validateAuthorizationPolicy(
      ap({ rules: [{ to: [{ operation: { paths: ["/a/{*}/b", "/a/{**}", "/x/{**}/y.txt"] } }] }] }),
    );
  });

  it("checks when keys and values", () => {
    assert.deepEqual(
      issues(
        ap({
          rules: [
            {
              when: [
                { key: "source.ip", values: ["nope"] },
                { key: "destination.port", notValues: ["-1"] },
                { key: "request.headers", values: ["a"] },
                { key: "destination.labels[app]", values: ["a"] },
                { key: "foo.bar", values: ["a"] },
                { key: "source.namespace" },
              ],
            },
          ],
        }),
      ),
      [
        'spec.rules[0].when[0].values[0]: not an IP address: "nope"',
        'spec.rules[0].when[1].notValues[0]: not a port (0-65535): "-1"',
        'spec.rules[0].when[2].values: bad key "request.headers": should have the form a[b]',
        "spec.rules[0].when[3].values: attribute destination.labels[app] is replaced by the workload selector",
        "spec.rules[0].when[4].values: unknown attribute: foo.bar",
        "spec.rules[0].when[5]: at least one of values or notValues must be set for key source.namespace",
      ],
    );
  });

  it("warns about policies that select everything, odd principals and HTTP-only DENY rules", () => {
    const { warnings } = validateAuthorizationPolicy(
      ap({
        action: "DENY",
        selector: {},
        rules: [
          { from: [{ source: { principals: ["spiffe://td/ns/a/sa/b", "td/ns/*/sa/b"] } }] },
          { to: [{ operation: { methods: ["GET"] } }] },
        ],
      }),
    );
    assert.deepEqual(
      warnings.map((w) => w.path),
      [
        "spec.selector",
        "spec.rules[0].from[0].source.principals[0]",
        "spec.rules[0].from[0].source.principals[1]",
        "spec.rules[1]",
      ],
    );
  });

  it("rejects other kinds and non-objects with typed errors", () => {
    assert.throws(
      () => validateResource({ kind: "Pod" }),
      (e: unknown) => e instanceof PolicyError && e.code === "ERR_POLICY_UNSUPPORTED_KIND",
    );
    assert.throws(
      () => validateResource("x"),
      (e: unknown) => e instanceof PolicyError && e.code === "ERR_POLICY_INVALID",
    );
    assert.deepEqual(issues({ apiVersion: "v1", kind: "AuthorizationPolicy", metadata: { name: "" } }), [
      'apiVersion: must be security.istio.io/v1 or security.istio.io/v1beta1, found "v1"',
      "metadata.name: must not be empty",
    ]);
  });

  it("validates PeerAuthentication", () => {
    const { resource } = validatePeerAuthentication({
      apiVersion: "security.istio.io/v1",
      kind: "PeerAuthentication",
      metadata: { name: "pa", namespace: "foo" },
      spec: {
        selector: { matchLabels: { app: "a" } },
        mtls: { mode: "STRICT" },
        portLevelMtls: { "8080": { mode: "PERMISSIVE" } },
      },
    });
    assert.equal(resource.spec.portLevelMtls?.["8080"]?.mode, "PERMISSIVE");
    assert.deepEqual(
      issues({
        apiVersion: "security.istio.io/v1",
        kind: "PeerAuthentication",
        metadata: { name: "pa", namespace: "foo" },
        spec: { mtls: { mode: "SOMETIMES" }, portLevelMtls: { "0": { mode: "STRICT" } } },
      }),
      [
        'spec.mtls.mode: must be one of UNSET, DISABLE, PERMISSIVE, STRICT, found "SOMETIMES"',
        "spec.portLevelMtls: mesh-wide and namespace-wide PeerAuthentication cannot have port-level mTLS",
        'spec.portLevelMtls["0"]: port must be in range 1..65535',
      ],
    );
  });
});
