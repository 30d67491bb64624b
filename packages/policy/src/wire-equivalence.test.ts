import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { createAuthorizationEngine } from "./authorization-engine.js";
import { PolicyError } from "./errors.js";
import { parseConnectionAddress } from "./ip-address.js";
import type { AuthorizationPolicy, Condition, Rule, Source } from "./kubernetes-types.js";
import { compileAuthorizationPolicy, matchL7Policy, type RequestAttributes } from "./l7-matcher.js";
import { toWireAuthorization } from "./to-wire-authorization.js";
import { validateAuthorizationPolicy } from "./validate-resource.js";
import { compileWireAuthorization, identityAttributes, matchWireAuthorization } from "./wire-matcher.js";

const principal = fc.constantFrom(
  "cluster.local/ns/a/sa/x",
  "cluster.local/ns/b/sa/y",
  "*",
  "cluster.local/ns/a/*",
  "*/sa/y",
  "other.td/ns/a/sa/x",
);
const namespace = fc.constantFrom("a", "b", "*", "a*", "*b", "c");
const ipBlock = fc.constantFrom(
  "10.0.0.0/8",
  "10.1.0.0/16",
  "10.1.2.3",
  "2001:db8::/32",
  "::1",
  "0.0.0.0/0",
  "192.168.0.0/24",
);
const port = fc.constantFrom("80", "8080", "9090");
const serviceAccount = fc.constantFrom("a/x", "b/y", "x", "y");
const list = <T>(arb: fc.Arbitrary<T>) =>
  fc.option(fc.array(arb, { minLength: 1, maxLength: 3 }), { nil: undefined });

const source: fc.Arbitrary<Source> = fc.oneof(
  fc.record(
    {
      principals: list(principal),
      notPrincipals: list(principal),
      namespaces: list(namespace),
      notNamespaces: list(namespace),
      ipBlocks: list(ipBlock),
      notIpBlocks: list(ipBlock),
    },
    { requiredKeys: [] },
  ),
  fc.record(
    {
      serviceAccounts: list(serviceAccount),
      notServiceAccounts: list(serviceAccount),
      ipBlocks: list(ipBlock),
    },
    { requiredKeys: [] },
  ),
);

const condition: fc.Arbitrary<Condition> = fc.oneof(
  fc.record(
    { key: fc.constant("source.ip"), values: list(ipBlock), notValues: list(ipBlock) },
    { requiredKeys: ["key"] },
  ),
  fc.record(
    { key: fc.constant("destination.ip"), values: list(ipBlock), notValues: list(ipBlock) },
    { requiredKeys: ["key"] },
  ),
  fc.record(
    { key: fc.constant("destination.port"), values: list(port), notValues: list(port) },
    { requiredKeys: ["key"] },
  ),
  fc.record(
    { key: fc.constant("source.namespace"), values: list(namespace), notValues: list(namespace) },
    { requiredKeys: ["key"] },
  ),
  fc.record(
    { key: fc.constant("source.principal"), values: list(principal), notValues: list(principal) },
    { requiredKeys: ["key"] },
  ),
);

const rule: fc.Arbitrary<Rule> = fc.record(
  {
    from: fc.array(
      source.map((s) => ({ source: s })),
      { minLength: 1, maxLength: 2 },
    ),
    to: fc.array(
      fc
        .record({ ports: list(port), notPorts: list(port) }, { requiredKeys: [] })
        .map((o) => ({ operation: o })),
      { minLength: 1, maxLength: 2 },
    ),
    when: fc.array(condition, { minLength: 1, maxLength: 2 }),
  },
  { requiredKeys: [] },
);

const policyInput = fc.record({
  action: fc.constantFrom("ALLOW", "DENY"),
  rules: fc.option(fc.array(rule, { minLength: 0, maxLength: 3 }), { nil: undefined }),
  namespace: fc.constantFrom("foo", "istio-system"),
});

const request = fc.record({
  identity: fc.constantFrom(
    undefined,
    "spiffe://cluster.local/ns/a/sa/x",
    "spiffe://cluster.local/ns/b/sa/y",
    "spiffe://other.td/ns/a/sa/x",
    "spiffe://cluster.local/ns/c/sa/x",
  ),
  sourceIp: fc.constantFrom("10.1.2.3", "10.9.9.9", "192.168.0.7", "::1", "2001:db8::5", "172.16.0.1"),
  destinationIp: fc.constantFrom("10.1.0.1", "2001:db8::9", "192.168.0.1"),
  port: fc.constantFrom(80, 8080, 9090, 443),
});

/** Drops undefined members so the object looks like parsed YAML. */
function clean<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function tryPolicy(
  name: string,
  input: { action: string; rules: Rule[] | undefined; namespace: string },
): AuthorizationPolicy | undefined {
  const spec: Record<string, unknown> = { action: input.action };
  if (input.rules !== undefined) spec.rules = input.rules;
  try {
    return validateAuthorizationPolicy(
      clean({
        apiVersion: "security.istio.io/v1",
        kind: "AuthorizationPolicy",
        metadata: { name, namespace: input.namespace },
        spec,
      }),
    ).resource;
  } catch (err) {
    if (err instanceof PolicyError) return undefined;
    throw err;
  }
}

function attributes(r: {
  identity: string | undefined;
  sourceIp: string;
  destinationIp: string;
  port: number;
}): RequestAttributes {
  return {
    sourceIp: parseConnectionAddress(r.sourceIp)!,
    destinationIp: parseConnectionAddress(r.destinationIp)!,
    destinationPort: r.port,
    ...identityAttributes(r.identity),
    http: undefined,
    sni: undefined,
  };
}

describe("wire form agrees with the Kubernetes form on L4 attributes", () => {
  it("per policy: converted wire match == direct match", () => {
    fc.assert(
      fc.property(policyInput, request, (input, req) => {
        const policy = tryPolicy("p", input);
        fc.pre(policy !== undefined);
        if (policy === undefined) return;
        const wire = toWireAuthorization(policy).authorization;
        assert.ok(wire);
        const attrs = attributes(req);
        const viaWire = matchWireAuthorization(compileWireAuthorization(wire), attrs) >= 0;
        const direct = matchL7Policy(compileAuthorizationPolicy(policy), attrs) >= 0;
        assert.equal(viaWire, direct);
      }),
      { numRuns: 400 },
    );
  });

  it("whole decision: engine (wire, ztunnel order) == Istio order over the Kubernetes form", () => {
    fc.assert(
      fc.property(fc.array(policyInput, { minLength: 1, maxLength: 4 }), request, (inputs, req) => {
        const policies = inputs
          .map((p, i) => tryPolicy(`p${i}`, p))
          .filter((p): p is AuthorizationPolicy => p !== undefined);
        const engine = createAuthorizationEngine();
        for (const p of policies) engine.apply(p);
        const decision = engine.evaluate({
          source:
            req.identity === undefined ? { ip: req.sourceIp } : { ip: req.sourceIp, identity: req.identity },
          destination: { ip: req.destinationIp, port: req.port, workload: { namespace: "foo" } },
        });
        const attrs = attributes(req);
        const matches = (p: AuthorizationPolicy) => matchL7Policy(compileAuthorizationPolicy(p), attrs) >= 0;
        const denies = policies.filter((p) => p.spec.action === "DENY");
        const allows = policies.filter((p) => (p.spec.action ?? "ALLOW") === "ALLOW");
        const expected = denies.some(matches) ? false : allows.length === 0 ? true : allows.some(matches);
        assert.equal(decision.allowed, expected, decision.reason);
      }),
      { numRuns: 300 },
    );
  });
});
