import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { WaypointError } from "./errors.js";
import {
  authenticateRequest,
  compileRequestAuthentication,
  DEFAULT_TOKEN_LOCATIONS,
  findTokens,
  RequestAuthenticationStore,
  rulesFor,
} from "./request-authentication.js";

const WAYPOINT = { name: "waypoint", namespace: "shop" };
const GATEWAY_REF = { group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" };
const JWKS = JSON.stringify({ keys: [] });

function ra(name: string, spec: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: "security.istio.io/v1",
    kind: "RequestAuthentication",
    metadata: { name, namespace: "shop" },
    spec: { targetRefs: [GATEWAY_REF], ...spec },
  };
}

describe("compileRequestAuthentication", () => {
  it("uses Istio's default token locations and keeps the listed ones in order", () => {
    const d = compileRequestAuthentication(ra("d", { jwtRules: [{ issuer: "i", jwks: JWKS }] }), WAYPOINT);
    assert.deepEqual(d.rules[0]?.locations, DEFAULT_TOKEN_LOCATIONS);
    assert.equal(d.rules[0]?.forwardOriginalToken, false);
    assert.equal(d.wholeWaypoint, true);
    const c = compileRequestAuthentication(
      ra("c", {
        targetRefs: [{ group: "", kind: "Service", name: "api" }],
        jwtRules: [
          {
            issuer: "i",
            jwks: JWKS,
            fromHeaders: [{ name: "X-Jwt" }, { name: "auth", prefix: "Tok " }],
            fromParams: ["t"],
          },
        ],
      }),
      WAYPOINT,
    );
    assert.equal(c.wholeWaypoint, false);
    assert.deepEqual(c.services, ["shop/api"]);
    assert.deepEqual(c.rules[0]?.locations, [
      { kind: "header", name: "x-jwt", prefix: "" },
      { kind: "header", name: "auth", prefix: "Tok " },
      { kind: "param", name: "t" },
    ]);
  });

  const bad: [string, unknown, RegExp][] = [
    ["no issuer", { jwks: JWKS }, /issuer is required/],
    ["no keys", { issuer: "i" }, /needs jwks or jwksUri/],
    ["jwks not JSON", { issuer: "i", jwks: "{" }, /jwks is not JSON/],
    ["jwks without keys", { issuer: "i", jwks: "{}" }, /no "keys" list/],
    ["jwksUri not http", { issuer: "i", jwksUri: "file:///etc/keys" }, /must be http or https/],
    ["header without name", { issuer: "i", jwks: JWKS, fromHeaders: [{}] }, /fromHeaders\[0\]\.name/],
    ["audiences not strings", { issuer: "i", jwks: JWKS, audiences: [1] }, /audiences must be a list/],
    ["bad timeout", { issuer: "i", jwksUri: "http://127.0.0.1/k", timeout: "soon" }, /timeout must be/],
  ];
  for (const [name, rule, message] of bad) {
    it(`refuses a rule with ${name}`, () => {
      assert.throws(
        () => compileRequestAuthentication(ra("x", { jwtRules: [rule] }), WAYPOINT),
        (err: unknown) =>
          err instanceof WaypointError &&
          err.code === "ERR_WAYPOINT_INVALID_REQUEST_AUTHENTICATION" &&
          message.test(err.message),
      );
    });
  }
});

describe("findTokens", () => {
  const rules = [
    compileRequestAuthentication(ra("a", { jwtRules: [{ issuer: "i", jwks: JWKS }] }), WAYPOINT),
    compileRequestAuthentication(
      ra("b", { jwtRules: [{ issuer: "j", jwks: JWKS, fromHeaders: [{ name: "x-jwt" }] }] }),
      WAYPOINT,
    ),
  ].flatMap((p) => p.rules);
  const cases: [string, Record<string, string>, string, string[]][] = [
    ["nothing", {}, "", []],
    ["a bearer header", { authorization: "Bearer t1" }, "", ["t1"]],
    ["another scheme", { authorization: "Basic abc" }, "", []],
    // Envoy's extractor: no base64url character after the prefix gives the whole value, which fails.
    ["a bearer with no token characters", { authorization: "Bearer !" }, "", ["Bearer !"]],
    ["the prefix after another scheme", { authorization: "Basic x, Bearer t4" }, "", ["t4"]],
    ["the access_token parameter", {}, "?a=1&access_token=t2", ["t2"]],
    ["a custom header", { "x-jwt": "t3" }, "", ["t3"]],
    [
      "all of them, in rule order",
      { "x-jwt": "t3", authorization: "Bearer t1" },
      "?access_token=t2",
      ["t1", "t2", "t3"],
    ],
  ];
  for (const [name, headers, query, tokens] of cases) {
    it(name, () => {
      assert.deepEqual(
        findTokens({ headers, query }, rules).map((t) => t.token),
        tokens,
      );
    });
  }
});

describe("rulesFor", () => {
  it("applies Gateway-wide rules everywhere and Service rules only to that Service", () => {
    const gw = compileRequestAuthentication(ra("gw", { jwtRules: [{ issuer: "g", jwks: JWKS }] }), WAYPOINT);
    const svc = compileRequestAuthentication(
      ra("svc", { targetRefs: [{ kind: "Service", name: "api" }], jwtRules: [{ issuer: "s", jwks: JWKS }] }),
      WAYPOINT,
    );
    const issuers = (service: string | undefined) => rulesFor([gw, svc], service).map((r) => r.issuer);
    assert.deepEqual(issuers("shop/api"), ["g", "s"]);
    assert.deepEqual(issuers("shop/web"), ["g"]);
    assert.deepEqual(issuers(undefined), ["g"]);
  });
});

describe("authenticateRequest", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k", alg: "ES256" }] });
  const rules = compileRequestAuthentication(
    ra("a", { jwtRules: [{ issuer: "https://iss", audiences: ["api", "web"], jwks }] }),
    WAYPOINT,
  ).rules;
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: "k" })
      .setExpirationTime("5m")
      .sign(privateKey);

  it("is anonymous with no rules or no token", async () => {
    const t = await sign({ iss: "https://iss", sub: "u", aud: "api" });
    assert.deepEqual(
      await authenticateRequest({ headers: { authorization: `Bearer ${t}` }, query: "" }, []),
      {
        kind: "anonymous",
      },
    );
    assert.deepEqual(await authenticateRequest({ headers: {}, query: "" }, rules), { kind: "anonymous" });
  });

  it("returns principal, audiences, presenter and claims, and removes the bearer header", async () => {
    const t = await sign({ iss: "https://iss", sub: "u", aud: ["web", "x"], azp: "cli", groups: ["g"] });
    const out = await authenticateRequest({ headers: { authorization: `Bearer ${t}` }, query: "" }, rules);
    assert.equal(out.kind, "authenticated");
    if (out.kind !== "authenticated") return;
    assert.equal(out.principal, "https://iss/u");
    assert.deepEqual(out.audiences, ["web", "x"]);
    assert.equal(out.presenter, "cli");
    assert.deepEqual(out.claims.groups, ["g"]);
    assert.deepEqual(out.removeHeaders, ["authorization"]);
  });

  it("rejects a second token that fails even when the first verifies", async () => {
    const good = await sign({ iss: "https://iss", sub: "u", aud: "api" });
    const out = await authenticateRequest(
      { headers: { authorization: `Bearer ${good}` }, query: `?access_token=${good}x` },
      rules,
    );
    assert.equal(out.kind, "rejected");
  });
});

describe("RequestAuthenticationStore", () => {
  it("keeps the last good version of a RequestAuthentication whose update is invalid", async () => {
    const store = new RequestAuthenticationStore(WAYPOINT);
    assert.deepEqual(store.apply([ra("a", { jwtRules: [{ issuer: "i", jwks: JWKS }] })]), []);
    const issues = store.apply([ra("a", { jwtRules: [{ jwks: JWKS }] })]);
    assert.equal(issues.length, 1);
    assert.deepEqual(
      store.summary().map((p) => p.rules.map((r) => r.issuer)),
      [["i"]],
    );
    assert.deepEqual(store.apply([]), []);
    assert.deepEqual(store.summary(), []);
  });

  it("lets go of a jwksUri's keys once no rule names it, and fetches them again when one does", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const set = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k", alg: "ES256" }] });
    const fetches: string[] = [];
    const server = createServer((req, res) => {
      fetches.push(req.url ?? "");
      res.setHeader("content-type", "application/json");
      res.end(set);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    try {
      const { port } = server.address() as AddressInfo;
      const token = await new SignJWT({ iss: "https://iss", sub: "u" })
        .setProtectedHeader({ alg: "ES256", kid: "k" })
        .setExpirationTime("5m")
        .sign(privateKey);
      const store = new RequestAuthenticationStore(WAYPOINT);
      const use = async (path: string) => {
        assert.deepEqual(
          store.apply([
            ra("a", { jwtRules: [{ issuer: "https://iss", jwksUri: `http://127.0.0.1:${port}${path}` }] }),
          ]),
          [],
        );
        const out = await store.authenticate({
          method: "GET",
          path: "/",
          query: "",
          host: "api",
          headers: { authorization: `Bearer ${token}` },
          service: undefined,
        });
        assert.equal(out.kind, "authenticated");
      };
      await use("/a");
      await use("/a");
      assert.deepEqual(fetches, ["/a"], "kept while a rule names it");
      await use("/b");
      await use("/a");
      assert.deepEqual(fetches, ["/a", "/b", "/a"], "fetched anew: the first set was let go");
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it("does not fetch a failing jwksUri for every token: the fetch waits out a backoff", async () => {
    const { privateKey } = await generateKeyPair("ES256");
    let fetches = 0;
    const server = createServer((_req, res) => {
      fetches++;
      res.statusCode = 503;
      res.end();
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    try {
      const { port } = server.address() as AddressInfo;
      const store = new RequestAuthenticationStore(WAYPOINT);
      assert.deepEqual(
        store.apply([
          ra("a", { jwtRules: [{ issuer: "https://iss", jwksUri: `http://127.0.0.1:${port}/k` }] }),
        ]),
        [],
      );
      const token = await new SignJWT({ iss: "https://iss", sub: "u" })
        .setProtectedHeader({ alg: "ES256", kid: "k" })
        .setExpirationTime("5m")
        .sign(privateKey);
      for (let i = 0; i < 20; i++) {
        const out = await store.authenticate({
          method: "GET",
          path: "/",
          query: "",
          host: "api",
          headers: { authorization: `Bearer ${token}` },
          service: undefined,
        });
        assert.equal(out.kind, "rejected");
      }
      // 20 tokens in well under the first second's backoff: one fetch (two on a very slow machine).
      assert.ok(fetches >= 1 && fetches <= 2, `${fetches} fetches`);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  describe("which RequestAuthentications a request meets", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k", alg: "ES256" }] });
    const token = await new SignJWT({ iss: "https://iss", sub: "u" })
      .setProtectedHeader({ alg: "ES256", kid: "k" })
      .setExpirationTime("5m")
      .sign(privateKey);
    const jwtRules = [{ issuer: "https://iss", jwks }];
    const inNamespace = (namespace: string, targetRefs: unknown[]) => ({
      apiVersion: "security.istio.io/v1",
      kind: "RequestAuthentication",
      metadata: { name: "ra", namespace },
      spec: { targetRefs, jwtRules },
    });
    const outcome = async (
      objects: Record<string, unknown>[],
      service: { name: string; namespace: string; kind?: "Service" | "ServiceEntry" },
    ) => {
      const store = new RequestAuthenticationStore(WAYPOINT);
      assert.deepEqual(store.apply(objects), []);
      const out = await store.authenticate({
        method: "GET",
        path: "/",
        query: "",
        host: "api",
        headers: { authorization: `Bearer ${token}` },
        service,
      });
      return out.kind;
    };
    const api = { name: "api", namespace: "shop" };

    it("ignores one of another namespace that names the waypoint's Gateway or Services there", async () => {
      const refs = [
        { ...GATEWAY_REF, namespace: "shop" },
        { group: "", kind: "Service", name: "api", namespace: "shop" },
      ];
      assert.equal(await outcome([inNamespace("tenant", refs)], api), "anonymous");
      assert.equal(await outcome([inNamespace("istio-system", refs)], api), "anonymous");
      assert.equal(await outcome([inNamespace("shop", refs)], api), "authenticated");
    });

    it("applies one of the root namespace that targets the waypoint GatewayClass", async () => {
      const cls = { group: "gateway.networking.k8s.io", kind: "GatewayClass", name: "istio-waypoint" };
      assert.equal(await outcome([inNamespace("istio-system", [cls])], api), "authenticated");
      assert.equal(await outcome([inNamespace("shop", [cls])], api), "anonymous");
    });

    it("tells a ServiceEntry from a Service of the same name", async () => {
      const entry = { ...api, kind: "ServiceEntry" as const };
      const toEntry = inNamespace("shop", [
        { group: "networking.istio.io", kind: "ServiceEntry", name: "api" },
      ]);
      const toService = inNamespace("shop", [{ group: "", kind: "Service", name: "api" }]);
      assert.equal(await outcome([toEntry], entry), "authenticated");
      assert.equal(await outcome([toEntry], api), "anonymous");
      assert.equal(await outcome([toService], entry), "anonymous");
      assert.equal(await outcome([toService], api), "authenticated");
    });
  });
});

describe("Envoy jwt_authn semantics", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  const attacker = (await generateKeyPair("ES256")).privateKey;
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "k", alg: "ES256" }] });
  const sign = (claims: Record<string, unknown>, key = privateKey) =>
    new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid: "k" }).setExpirationTime("5m").sign(key);
  const storeWith = (rule: Record<string, unknown>) => {
    const store = new RequestAuthenticationStore(WAYPOINT);
    assert.deepEqual(store.apply([ra("a", { jwtRules: [{ issuer: "https://iss", jwks, ...rule }] })]), []);
    return store;
  };
  const input = (headers: Record<string, string | string[]>, query = "") => ({
    method: "GET",
    path: "/",
    query,
    host: "api",
    headers: { ...headers },
    service: { name: "api", namespace: "shop" },
  });
  const OUTPUTS = {
    outputPayloadToHeader: "X-Jwt-Payload",
    outputClaimToHeaders: [
      { header: "x-user", claim: "sub" },
      { header: "x-level", claim: "level" },
      { header: "x-team", claim: "org.team" },
      { header: "x-groups", claim: "groups" },
    ],
  };
  const SPOOFED = { "x-jwt-payload": "eyJzdWIiOiJhZG1pbiJ9", "x-user": "admin", "x-team": "root" };

  it("removes the output headers from every request, with or without a token", async () => {
    const store = storeWith(OUTPUTS);
    const request = input({ ...SPOOFED, "x-other": "kept" });
    assert.deepEqual(await store.authenticate(request), {
      kind: "anonymous",
      removeHeaders: ["x-jwt-payload", "x-user", "x-level", "x-team", "x-groups"],
    });
  });

  it("sets the output headers from the verified token only", async () => {
    const store = storeWith(OUTPUTS);
    const t = await sign({
      iss: "https://iss",
      sub: "alice",
      level: 5,
      org: { team: "core" },
      groups: ["g"],
    });
    const request = input({ ...SPOOFED, authorization: `Bearer ${t}` });
    const out = await store.authenticate(request);
    assert.equal(out.kind, "authenticated");
    if (out.kind !== "authenticated") return;
    // The token header goes too (forwardOriginalToken false), then the client's output headers.
    assert.deepEqual(out.removeHeaders, [
      "authorization",
      "x-jwt-payload",
      "x-user",
      "x-level",
      "x-team",
      "x-groups",
    ]);
    assert.deepEqual(out.addHeaders, [
      ["x-jwt-payload", t.split(".")[1]],
      ["x-user", "alice"],
      ["x-level", "5"],
      ["x-team", "core"],
    ]);
    assert.deepEqual(
      request.headers,
      { ...SPOOFED, authorization: `Bearer ${t}` },
      "the router edits, not this",
    );
  });

  it("takes a query parameter token out of the forwarded path unless forwardOriginalToken", async () => {
    const t = await sign({ iss: "https://iss", sub: "alice" });
    const dropped = await storeWith({}).authenticate(input({}, `?access_token=${t}`));
    assert.equal(dropped.kind, "authenticated");
    assert.deepEqual(dropped.kind === "authenticated" ? dropped.removeQueryParams : undefined, [
      "access_token",
    ]);
    const kept = await storeWith({ forwardOriginalToken: true }).authenticate(
      input({}, `?access_token=${t}`),
    );
    assert.equal(kept.kind === "authenticated" ? kept.removeQueryParams : "none", undefined);
  });

  it("sets nothing when a token fails: the request is refused", async () => {
    const store = storeWith(OUTPUTS);
    const t = await sign({ iss: "https://iss", sub: "alice" }, attacker);
    const request = input({ ...SPOOFED, authorization: `Bearer ${t}` });
    assert.equal((await store.authenticate(request)).kind, "rejected");
  });

  it("refuses output header names that are not header names", () => {
    for (const rule of [
      { outputPayloadToHeader: "x y" },
      { outputPayloadToHeader: 1 },
      { outputClaimToHeaders: [{ header: ":path", claim: "sub" }] },
      { outputClaimToHeaders: [{ header: "x-user" }] },
      { outputClaimToHeaders: [{ header: "content-length", claim: "sub" }] },
      { fromCookies: [""] },
      { spaceDelimitedClaims: "roles" },
    ]) {
      assert.throws(
        () =>
          compileRequestAuthentication(
            ra("x", { jwtRules: [{ issuer: "i", jwks: JWKS, ...rule }] }),
            WAYPOINT,
          ),
        WaypointError,
        JSON.stringify(rule),
      );
    }
  });

  it("gives no request principal for a token without a non-empty string sub, but keeps its claims", async () => {
    const rules = compileRequestAuthentication(
      ra("a", { jwtRules: [{ issuer: "https://iss", jwks }] }),
      WAYPOINT,
    ).rules;
    for (const sub of [undefined, "", 42]) {
      const t = await sign({ iss: "https://iss", groups: ["g"], ...(sub === undefined ? {} : { sub }) });
      const out = await authenticateRequest({ headers: { authorization: `Bearer ${t}` }, query: "" }, rules);
      assert.equal(out.kind, "authenticated");
      if (out.kind !== "authenticated") continue;
      assert.equal(out.principal, undefined, String(sub));
      assert.deepEqual(out.claims.groups, ["g"]);
    }
  });

  it("splits scope, permission and spaceDelimitedClaims on spaces for policy", async () => {
    const rules = compileRequestAuthentication(
      ra("a", { jwtRules: [{ issuer: "https://iss", jwks, spaceDelimitedClaims: ["roles"] }] }),
      WAYPOINT,
    ).rules;
    const t = await sign({
      iss: "https://iss",
      sub: "u",
      scope: "read  admin",
      permission: "p1 p2",
      roles: "r1 r2",
      other: "a b",
      list: ["x y"],
    });
    const out = await authenticateRequest({ headers: { authorization: `Bearer ${t}` }, query: "" }, rules);
    assert.equal(out.kind, "authenticated");
    if (out.kind !== "authenticated") return;
    assert.deepEqual(out.claims.scope, ["read", "admin"]);
    assert.deepEqual(out.claims.permission, ["p1", "p2"]);
    assert.deepEqual(out.claims.roles, ["r1", "r2"]);
    assert.equal(out.claims.other, "a b");
    assert.deepEqual(out.claims.list, ["x y"]);
  });

  it("reads a token from fromCookies, and only there when only cookies are listed", async () => {
    const store = storeWith({ fromCookies: ["session"] });
    const good = await sign({ iss: "https://iss", sub: "alice" });
    const forged = await sign({ iss: "https://iss", sub: "alice" }, attacker);
    const ok = input({ cookie: `a=b; session=${good}; c=d` });
    const out = await store.authenticate(ok);
    assert.equal(out.kind, "authenticated");
    // Envoy does not remove a cookie token (JwtCookieLocation::removeJwt is a no-op).
    assert.equal(ok.headers.cookie, `a=b; session=${good}; c=d`);
    assert.equal((await store.authenticate(input({ cookie: `session="${good}"` }))).kind, "authenticated");
    assert.equal((await store.authenticate(input({ cookie: `session=${forged}` }))).kind, "rejected");
    assert.equal((await store.authenticate(input({ cookie: "session=garbage" }))).kind, "rejected");
    assert.equal((await store.authenticate(input({ authorization: `Bearer ${forged}` }))).kind, "anonymous");
  });

  it("finds the prefix anywhere in the header value, as Envoy's extractor does", async () => {
    const store = storeWith({});
    const forged = await sign({ iss: "https://iss", sub: "alice" }, attacker);
    const good = await sign({ iss: "https://iss", sub: "alice" });
    assert.equal(
      (await store.authenticate(input({ authorization: `Basic Zm9v, Bearer ${forged}` }))).kind,
      "rejected",
    );
    assert.equal(
      (await store.authenticate(input({ authorization: `Basic Zm9v, Bearer ${good}` }))).kind,
      "authenticated",
    );
    assert.equal((await store.authenticate(input({ authorization: "Basic Zm9v" }))).kind, "anonymous");
  });
});
