import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseGatewayDuration } from "./duration.js";
import { RouterError } from "./errors.js";
import { compileSafeRegex } from "./safe-regex.js";
import { validateGrpcRoute, validateHttpRoute, validateRoute } from "./validate-route.js";

function http(rules: unknown[], spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    kind: "HTTPRoute",
    metadata: { name: "r", namespace: "ns" },
    spec: { parentRefs: [{ name: "waypoint" }], rules, ...spec },
  };
}

function fails(input: unknown, code: string, field: string): void {
  assert.throws(
    () => validateRoute(input),
    (e: unknown) => {
      assert.ok(e instanceof RouterError, String(e));
      assert.equal(e.code, code, e.message);
      assert.equal(e.details.field, field, e.message);
      assert.ok(e.message.includes(field), e.message);
      return true;
    },
  );
}

describe("validateRoute", () => {
  it("accepts a full HTTPRoute", () => {
    const r = validateHttpRoute(
      http(
        [
          {
            matches: [
              {
                path: { type: "PathPrefix", value: "/api" },
                method: "GET",
                headers: [{ name: "x-v", value: "1" }],
              },
            ],
            filters: [
              {
                type: "RequestHeaderModifier",
                requestHeaderModifier: { set: [{ name: "x-a", value: "b" }], remove: ["x-b"] },
              },
              {
                type: "URLRewrite",
                urlRewrite: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/v2" } },
              },
              {
                type: "RequestMirror",
                requestMirror: { backendRef: { name: "shadow", port: 80 }, percent: 50 },
              },
            ],
            backendRefs: [
              { name: "a", port: 80, weight: 90 },
              { name: "b", port: 80, weight: 10 },
            ],
            timeouts: { request: "10s", backendRequest: "2s" },
            retry: { attempts: 3, codes: [503], backoff: "100ms" },
          },
        ],
        { hostnames: ["*.example.com", "api.example.com"] },
      ),
    );
    assert.equal(r.kind, "HTTPRoute");
  });

  it("accepts a disabled backendRequest timeout under a request timeout", () => {
    // The Gateway API's rule only bounds a backendRequest longer than the request; "0s" disables it.
    const r = validateRoute(http([{ timeouts: { request: "10s", backendRequest: "0s" } }]));
    assert.equal(r.kind, "HTTPRoute");
  });

  it("names the field path of each error", () => {
    fails({ metadata: { name: "x" }, spec: {} }, "ERR_ROUTE_INVALID", "kind");
    fails({ kind: "HTTPRoute", metadata: {}, spec: {} }, "ERR_ROUTE_INVALID", "metadata.name");
    fails(http([], { hostnames: ["10.0.0.1"] }), "ERR_ROUTE_INVALID", "spec.hostnames[0]");
    fails(http([], { hostnames: ["foo.*.com"] }), "ERR_ROUTE_INVALID", "spec.hostnames[0]");
    fails(
      http([{ matches: [{ path: { value: "/a//b" } }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].matches[0].path.value",
    );
    fails(
      http([{ matches: [{ path: { type: "Glob", value: "/a" } }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].matches[0].path.type",
    );
    fails(http([{ matches: [{ method: "FETCH" }] }]), "ERR_ROUTE_INVALID", "spec.rules[0].matches[0].method");
    fails(
      http([{ matches: [{ headers: [{ name: "bad name", value: "x" }] }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].matches[0].headers[0].name",
    );
    fails(http([{ backendRefs: [{ name: "a" }] }]), "ERR_ROUTE_INVALID", "spec.rules[0].backendRefs[0].port");
    fails(
      http([{ backendRefs: [{ name: "a", port: 80, weight: -1 }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].backendRefs[0].weight",
    );
    fails(
      http([{ timeouts: { request: "10 seconds" } }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].timeouts.request",
    );
    fails(
      http([{ timeouts: { request: "1s", backendRequest: "2s" } }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].timeouts.backendRequest",
    );
    fails(http([{ retry: { codes: [200] } }]), "ERR_ROUTE_INVALID", "spec.rules[0].retry.codes[0]");
  });

  it("rejects CR/LF header injection in filter values", () => {
    fails(
      http([
        {
          filters: [
            {
              type: "RequestHeaderModifier",
              requestHeaderModifier: { set: [{ name: "x-a", value: "ok\r\nx-evil: 1" }] },
            },
          ],
        },
      ]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters[0].requestHeaderModifier.set[0].value",
    );
    fails(
      http([
        {
          filters: [
            {
              type: "ResponseHeaderModifier",
              responseHeaderModifier: { add: [{ name: "x\nb", value: "1" }] },
            },
          ],
        },
      ]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters[0].responseHeaderModifier.add[0].name",
    );
  });

  it("keeps the first of header names that differ only in case in a header filter's set or add", () => {
    const input = http([
      {
        filters: [
          {
            type: "RequestHeaderModifier",
            requestHeaderModifier: {
              set: [
                { name: "X-A", value: "1" },
                { name: "x-a", value: "2" },
              ],
              add: [
                { name: "x-b", value: "3" },
                { name: "X-B", value: "4" },
              ],
            },
          },
        ],
        backendRefs: [
          {
            name: "a",
            port: 80,
            filters: [
              {
                type: "ResponseHeaderModifier",
                responseHeaderModifier: {
                  set: [
                    { name: "x-c", value: "5" },
                    { name: "X-c", value: "6" },
                  ],
                },
              },
            ],
          },
        ],
      },
    ]);
    const before = JSON.stringify(input);
    const route = validateHttpRoute(input);
    // Gateway API: "the first entry with an equivalent name MUST be considered"; Istio keeps the first.
    assert.deepEqual(route.spec.rules?.[0]?.filters?.[0]?.requestHeaderModifier, {
      set: [{ name: "X-A", value: "1" }],
      add: [{ name: "x-b", value: "3" }],
    });
    assert.deepEqual(route.spec.rules?.[0]?.backendRefs?.[0]?.filters?.[0]?.responseHeaderModifier, {
      set: [{ name: "x-c", value: "5" }],
    });
    assert.equal(JSON.stringify(input), before, "the input is not modified");
    // Without duplicates the route is the input itself.
    const plain = http([{ backendRefs: [{ name: "a", port: 80 }] }]);
    assert.equal(validateRoute(plain), plain);
  });

  it("enforces filter combination rules", () => {
    const redirect = { type: "RequestRedirect", requestRedirect: { statusCode: 301 } };
    const rewrite = { type: "URLRewrite", urlRewrite: { hostname: "a.example.com" } };
    fails(http([{ filters: [redirect, rewrite] }]), "ERR_ROUTE_INVALID", "spec.rules[0].filters");
    fails(
      http([{ filters: [redirect], backendRefs: [{ name: "a", port: 80 }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters",
    );
    fails(http([{ filters: [redirect, redirect] }]), "ERR_ROUTE_INVALID", "spec.rules[0].filters[1].type");
    fails(
      http([
        {
          matches: [{ path: { type: "Exact", value: "/a" } }],
          filters: [
            {
              type: "URLRewrite",
              urlRewrite: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/b" } },
            },
          ],
        },
      ]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters[0].urlRewrite.path",
    );
    fails(
      http([{ filters: [{ type: "RequestRedirect", requestRedirect: { statusCode: 200 } }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters[0].requestRedirect.statusCode",
    );
    fails(
      http([{ filters: [{ type: "CORS", cors: {} }] }]),
      "ERR_ROUTE_UNSUPPORTED",
      "spec.rules[0].filters[0].type",
    );
    fails(
      http([{ filters: [{ type: "RequestMirror" }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters[0].requestMirror",
    );
  });

  it("accepts ReplacePrefixMatch in a rule without matches, whose match is PathPrefix /", () => {
    // The API server gives a rule without matches its default match (PathPrefix "/") before checking
    // that a ReplacePrefixMatch rule has exactly one PathPrefix match, so such a rule is valid.
    for (const filter of [
      { type: "URLRewrite", urlRewrite: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/v2" } } },
      {
        type: "RequestRedirect",
        requestRedirect: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/v2" } },
      },
    ]) {
      const rule =
        filter.type === "URLRewrite"
          ? { filters: [filter], backendRefs: [{ name: "a", port: 80 }] }
          : { filters: [filter] };
      assert.doesNotThrow(() => validateHttpRoute(http([rule])));
    }
  });

  it("bounds regular expressions", () => {
    // Nested repetition is valid RE2 and matched in linear time; RE2's nesting limit and the program
    // size limit are what bound a pattern.
    for (const nested of ["(a+)+$", "(a*)*b", "(x+y?)*", "((ab)+)+", "(a|b+){2,}", "(\\w+\\s?)*$"]) {
      assert.doesNotThrow(() =>
        validateHttpRoute(http([{ matches: [{ path: { type: "RegularExpression", value: nested } }] }])),
      );
    }
    for (const bad of ["(?:a{2}){600}", "(?:(?:a{16}){16}){16}", ".{0,1000}.{0,1000}"]) {
      fails(
        http([{ matches: [{ path: { type: "RegularExpression", value: bad } }] }]),
        "ERR_REGEX_INVALID",
        "spec.rules[0].matches[0].path.value",
      );
    }
    for (const bad of ["(a)\\1", "(?=a)b", "(?<!a)b", "a(", "[a-"]) {
      fails(
        http([{ matches: [{ headers: [{ type: "RegularExpression", name: "x", value: bad }] }] }]),
        "ERR_REGEX_INVALID",
        "spec.rules[0].matches[0].headers[0].value",
      );
    }
    fails(
      http([{ matches: [{ path: { type: "RegularExpression", value: "a".repeat(2000) } }] }]),
      "ERR_REGEX_INVALID",
      "spec.rules[0].matches[0].path.value",
    );
    const ok = compileSafeRegex("/api/v[0-9]+/(users|groups)/[^/]+", "f");
    assert.equal(ok.test("/api/v2/users/7"), true);
    assert.equal(ok.test("/api/v2/users/7/x"), false);
  });

  it("validates GRPCRoutes", () => {
    const g = (rules: unknown[]) => ({
      kind: "GRPCRoute",
      metadata: { name: "g" },
      spec: { parentRefs: [{ name: "w" }], rules },
    });
    assert.equal(
      validateGrpcRoute(
        g([
          {
            matches: [{ method: { service: "pkg.Svc", method: "Do" } }],
            backendRefs: [{ name: "a", port: 80 }],
          },
        ]),
      ).kind,
      "GRPCRoute",
    );
    assert.throws(() => validateGrpcRoute(http([])), RouterError);
    fails(g([{ matches: [{ method: {} }] }]), "ERR_ROUTE_INVALID", "spec.rules[0].matches[0].method");
    fails(
      g([{ matches: [{ method: { service: "bad service" } }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].matches[0].method.service",
    );
    fails(
      g([{ filters: [{ type: "URLRewrite", urlRewrite: {} }] }]),
      "ERR_ROUTE_INVALID",
      "spec.rules[0].filters[0].type",
    );
  });

  it("parses Gateway API durations", () => {
    assert.equal(parseGatewayDuration("1h30m", "f"), 5_400_000);
    assert.equal(parseGatewayDuration("250ms", "f"), 250);
    assert.equal(parseGatewayDuration("1s500ms", "f"), 1500);
    assert.equal(parseGatewayDuration("0s", "f"), 0);
    assert.throws(() => parseGatewayDuration("1.5s", "f"), RouterError);
    assert.throws(() => parseGatewayDuration("123456s", "f"), RouterError);
  });
});
