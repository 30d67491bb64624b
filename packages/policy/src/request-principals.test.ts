// requestPrincipals, notRequestPrincipals and `request.auth.principal` as istiod writes them for Envoy
// (pilot/pkg/security/authz/model/generator.go, requestPrincipalGenerator): each value is split at its
// last `/` into an issuer and a subject pattern, matched against the token's `iss` and `sub` claims
// on their own. And `request.auth.claims[...]` matches strings (and lists of strings) only.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type AuthorizationRequest, createAuthorizationEngine } from "./authorization-engine.js";

function req(http: Partial<NonNullable<AuthorizationRequest["http"]>> = {}): AuthorizationRequest {
  return {
    source: { ip: "10.0.0.1", identity: "spiffe://cluster.local/ns/foo/sa/sleep" },
    destination: { ip: "10.0.0.2", port: 8000, workload: { namespace: "foo", labels: { app: "a" } } },
    http: { host: "a.foo.svc", method: "GET", path: "/", headers: {}, ...http },
  };
}

function engine(rules: string, action = "ALLOW") {
  const e = createAuthorizationEngine();
  const r = e.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: foo }
spec:
  action: ${action}
  rules:
${rules}`);
  assert.deepEqual(
    r.errors.map((x) => x.message),
    [],
  );
  return e;
}

/** A verified token as the waypoint hands it over: the `iss/sub` string and the payload. */
const token = (claims: Record<string, unknown>) => ({
  ...(typeof claims.sub === "string" && claims.sub !== ""
    ? { requestPrincipal: `${String(claims.iss)}/${claims.sub}` }
    : {}),
  claims,
});

const A = "https://idp.example";
const T = "https://idp.example/tenant";

describe("requestPrincipals: issuer and subject matched each on its own", () => {
  const cases: [pattern: string, claims: Record<string, unknown>, allowed: boolean][] = [
    // A nested issuer cannot stand for another through its subject.
    [`${T}/alice`, { iss: T, sub: "alice" }, true],
    [`${T}/alice`, { iss: A, sub: "tenant/alice" }, false],
    // `iss/*`: the issuer exactly, any non-empty subject.
    [`${A}/*`, { iss: A, sub: "bob" }, true],
    [`${A}/*`, { iss: T, sub: "bob" }, false],
    [`${A}/*`, { iss: A, sub: "" }, false],
    // `*/sub`: any issuer, the subject exactly.
    ["*/alice", { iss: A, sub: "alice" }, true],
    ["*/alice", { iss: A, sub: "mallory/alice" }, false],
    // `*x/sub`: issuer suffix, subject exact.
    ["*example/alice", { iss: A, sub: "alice" }, true],
    ["*example/alice", { iss: T, sub: "alice" }, false],
    // `iss/x*`: issuer exact, subject prefix.
    [`${A}/ali*`, { iss: A, sub: "alice" }, true],
    [`${A}/ali*`, { iss: T, sub: "alice" }, false],
    // No `/`: `*x` is a subject suffix with any issuer, `x*` an issuer prefix with any subject.
    ["*ice", { iss: A, sub: "alice" }, true],
    ["*ice", { iss: A, sub: "bob" }, false],
    ["idp*", { iss: "idp-a", sub: "x" }, true],
    ["idp*", { iss: "other", sub: "x" }, false],
    // A URL issuer has a `/`: `https://idp.*` is the issuer `https:/` and a subject prefix `idp.`.
    ["https://idp.*", { iss: T, sub: "x" }, false],
    ["https://idp.*", { iss: "https:/", sub: "idp.x" }, true],
    // `*`: a non-empty issuer and subject.
    ["*", { iss: A, sub: "alice" }, true],
    ["*", { iss: A }, false],
    ["*", { iss: A, sub: "" }, false],
    ["*", { iss: A, sub: 42 }, false],
  ];
  for (const [pattern, claims, allowed] of cases) {
    it(`${pattern} against iss=${String(claims.iss)} sub=${JSON.stringify(claims.sub)}: ${allowed}`, () => {
      const e = engine(`  - from: [{ source: { requestPrincipals: [${JSON.stringify(pattern)}] } }]`);
      assert.equal(e.evaluate(req(token(claims))).allowed, allowed);
      const when = engine(
        `  - when: [{ key: request.auth.principal, values: [${JSON.stringify(pattern)}] }]`,
      );
      assert.equal(when.evaluate(req(token(claims))).allowed, allowed);
    });
  }

  it("DENY notRequestPrincipals ['*'] refuses a token without a usable sub, and no token", () => {
    const e = engine("  - from: [{ source: { notRequestPrincipals: ['*'] } }]", "DENY");
    assert.equal(e.evaluate(req(token({ iss: A, sub: "alice" }))).allowed, true);
    assert.equal(e.evaluate(req(token({ iss: A }))).allowed, false);
    assert.equal(e.evaluate(req(token({ iss: A, sub: 42 }))).allowed, false);
    assert.equal(e.evaluate(req()).allowed, false);
  });

  it("takes requestIssuer and requestSubject when given, over the claims", () => {
    const e = engine(`  - from: [{ source: { requestPrincipals: [${JSON.stringify(`${T}/alice`)}] } }]`);
    assert.equal(e.evaluate(req({ requestIssuer: T, requestSubject: "alice" })).allowed, true);
    assert.equal(
      e.evaluate(req({ requestIssuer: A, requestSubject: "tenant/alice", claims: { iss: T, sub: "alice" } }))
        .allowed,
      false,
    );
  });

  it("reads a lone requestPrincipal (no claims) split at its last slash", () => {
    const e = engine(`  - from: [{ source: { requestPrincipals: [${JSON.stringify(`${A}/*`)}] } }]`);
    assert.equal(e.evaluate(req({ requestPrincipal: `${A}/bob` })).allowed, true);
    assert.equal(e.evaluate(req({ requestPrincipal: `${T}/bob` })).allowed, false);
  });

  it("refuses a requestIssuer or requestSubject that is not a string", () => {
    const e = engine("  - from: [{ source: { requestPrincipals: ['*'] } }]");
    const d = e.evaluate(req({ requestIssuer: 1 as unknown as string }));
    assert.equal(d.error?.code, "ERR_REQUEST_INVALID");
  });
});

describe("request.auth.claims matches strings only", () => {
  it("does not match a number or boolean claim against its text", () => {
    const e = engine(
      "  - when: [{ key: 'request.auth.claims[admin]', values: ['true'] }]\n  - when: [{ key: 'request.auth.claims[level]', values: ['5'] }]",
    );
    assert.equal(e.evaluate(req({ claims: { admin: true } })).allowed, false);
    assert.equal(e.evaluate(req({ claims: { level: 5 } })).allowed, false);
    assert.equal(e.evaluate(req({ claims: { level: [5, "x"] } })).allowed, false);
    assert.equal(e.evaluate(req({ claims: { admin: "true" } })).allowed, true);
    assert.equal(e.evaluate(req({ claims: { level: [4, "5"] } })).allowed, true);
  });
});
