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
    ["an empty bearer", { authorization: "Bearer " }, "", []],
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
