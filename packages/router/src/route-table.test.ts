import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RouterError } from "./errors.js";
import { createRouteTable, type RouteRequest } from "./route-table.js";
import type { GRPCRoute, HTTPRoute, HTTPRouteRule } from "./route-types.js";

const gw = [{ kind: "Gateway", name: "waypoint" }];

function route(
  name: string,
  rules: HTTPRouteRule[],
  extra: Partial<HTTPRoute["spec"]> = {},
  created?: string,
): HTTPRoute {
  return {
    kind: "HTTPRoute",
    metadata: {
      name,
      namespace: "default",
      ...(created === undefined ? {} : { creationTimestamp: created }),
    },
    spec: { parentRefs: gw, rules, ...extra },
  };
}

function rule(name: string, matches: HTTPRouteRule["matches"]): HTTPRouteRule {
  return { name, matches, backendRefs: [{ name, port: 80 }] };
}

function req(path: string, more: Partial<RouteRequest> = {}): RouteRequest {
  const [p, q] = path.split("?");
  return { host: "svc.example.com", path: p ?? "/", query: q, method: "GET", headers: {}, ...more };
}

function winner(routes: unknown[], request: RouteRequest): string | undefined {
  const m = createRouteTable(routes).match(request);
  return m === undefined ? undefined : `${m.rule.route}#${m.rule.ruleName ?? m.rule.ruleIndex}`;
}

describe("route table precedence (Gateway API)", () => {
  const cases: { name: string; routes: unknown[]; request: RouteRequest; want: string | undefined }[] = [
    {
      name: "Exact beats a longer PathPrefix",
      routes: [
        route("a", [
          rule("prefix", [{ path: { type: "PathPrefix", value: "/foo/bar" } }]),
          rule("exact", [{ path: { type: "Exact", value: "/foo/bar" } }]),
        ]),
      ],
      request: req("/foo/bar"),
      want: "default/a#exact",
    },
    {
      name: "Exact without method beats PathPrefix with method",
      routes: [
        route("a", [
          rule("prefix", [{ path: { value: "/x" }, method: "GET" }]),
          rule("exact", [{ path: { type: "Exact", value: "/x" } }]),
        ]),
      ],
      request: req("/x"),
      want: "default/a#exact",
    },
    {
      name: "longest PathPrefix wins",
      routes: [
        route("a", [
          rule("short", [{ path: { value: "/api" } }]),
          rule("long", [{ path: { value: "/api/v1" } }]),
        ]),
      ],
      request: req("/api/v1/users"),
      want: "default/a#long",
    },
    {
      name: "PathPrefix matches whole segments only",
      routes: [
        route("a", [rule("root", [{ path: { value: "/" } }]), rule("abc", [{ path: { value: "/abc" } }])]),
      ],
      request: req("/abcd"),
      want: "default/a#root",
    },
    {
      name: "PathPrefix ignores its trailing slash",
      routes: [route("a", [rule("abc", [{ path: { value: "/abc/" } }])])],
      request: req("/abc"),
      want: "default/a#abc",
    },
    {
      name: "Exact is case-sensitive and does not match a trailing slash",
      routes: [route("a", [rule("exact", [{ path: { type: "Exact", value: "/abc" } }])])],
      request: req("/abc/"),
      want: undefined,
    },
    {
      name: "method match beats header matches at equal prefix",
      routes: [
        route("a", [
          rule("headers", [
            {
              path: { value: "/" },
              headers: [
                { name: "x-a", value: "1" },
                { name: "x-b", value: "2" },
              ],
            },
          ]),
          rule("method", [{ path: { value: "/" }, method: "POST" }]),
        ]),
      ],
      request: req("/", { method: "POST", headers: { "x-a": "1", "x-b": "2" } }),
      want: "default/a#method",
    },
    {
      name: "more header matches beat fewer",
      routes: [
        route("a", [
          rule("one", [{ headers: [{ name: "x-a", value: "1" }] }]),
          rule("two", [
            {
              headers: [
                { name: "X-A", value: "1" },
                { name: "x-b", value: "2" },
              ],
            },
          ]),
        ]),
      ],
      request: req("/", { headers: { "x-a": "1", "x-b": "2" } }),
      want: "default/a#two",
    },
    {
      name: "header matches beat query matches",
      routes: [
        route("a", [
          rule("query", [
            {
              queryParams: [
                { name: "q", value: "1" },
                { name: "r", value: "2" },
              ],
            },
          ]),
          rule("header", [{ headers: [{ name: "x-a", value: "1" }] }]),
        ]),
      ],
      request: req("/?q=1&r=2", { headers: { "x-a": "1" } }),
      want: "default/a#header",
    },
    {
      name: "more query matches beat fewer",
      routes: [
        route("a", [
          rule("one", [{ queryParams: [{ name: "q", value: "1" }] }]),
          rule("two", [
            {
              queryParams: [
                { name: "q", value: "1" },
                { name: "r", value: "2" },
              ],
            },
          ]),
        ]),
      ],
      request: req("/?q=1&r=2"),
      want: "default/a#two",
    },
    {
      name: "query names are case-sensitive",
      routes: [route("a", [rule("q", [{ queryParams: [{ name: "Q", value: "1" }] }])])],
      request: req("/?q=1"),
      want: undefined,
    },
    {
      name: "query values are compared as sent: '+' is not a space",
      routes: [route("a", [rule("q", [{ queryParams: [{ name: "lang", value: "c++" }] }])])],
      request: req("/?lang=c++"),
      want: "default/a#q",
    },
    {
      name: "query values are compared as sent: no percent-decoding",
      routes: [route("a", [rule("q", [{ queryParams: [{ name: "env", value: "prod" }] }])])],
      request: req("/?env=pr%6Fd"),
      want: undefined,
    },
    {
      name: "a query parameter without '=' has the empty value",
      routes: [
        route("a", [
          rule("q", [{ queryParams: [{ type: "RegularExpression", name: "debug", value: ".*" }] }]),
        ]),
      ],
      request: req("/?debug"),
      want: "default/a#q",
    },
    {
      name: "oldest route wins a tie",
      routes: [
        route("z-old", [rule("r", [{ path: { value: "/" } }])], {}, "2024-01-01T00:00:00Z"),
        route("a-new", [rule("r", [{ path: { value: "/" } }])], {}, "2025-01-01T00:00:00Z"),
      ].reverse(),
      request: req("/"),
      want: "default/z-old#r",
    },
    {
      name: "alphabetical namespace/name breaks a timestamp tie",
      routes: [
        route("b", [rule("r", [{}])], {}, "2024-01-01T00:00:00Z"),
        route("a", [rule("r", [{}])], {}, "2024-01-01T00:00:00Z"),
      ],
      request: req("/"),
      want: "default/a#r",
    },
    {
      name: "first rule in list order wins a full tie",
      routes: [
        route("a", [rule("first", [{ path: { value: "/p" } }]), rule("second", [{ path: { value: "/p" } }])]),
      ],
      request: req("/p"),
      want: "default/a#first",
    },
    {
      name: "PathPrefix beats RegularExpression",
      routes: [
        route("a", [
          rule("regex", [{ path: { type: "RegularExpression", value: "/api/.*" } }]),
          rule("prefix", [{ path: { value: "/api" } }]),
        ]),
      ],
      request: req("/api/x"),
      want: "default/a#prefix",
    },
    {
      name: "RegularExpression is a whole-path match",
      routes: [route("a", [rule("regex", [{ path: { type: "RegularExpression", value: "/v[0-9]+" } }])])],
      request: req("/v12/extra"),
      want: undefined,
    },
    {
      name: "exact hostname beats wildcard",
      routes: [
        route("wild", [rule("r", [{}])], { hostnames: ["*.example.com"] }),
        route("exact", [rule("r", [{}])], { hostnames: ["svc.example.com"] }),
      ],
      request: req("/"),
      want: "default/exact#r",
    },
    {
      name: "longer wildcard beats shorter wildcard",
      routes: [
        route("short", [rule("r", [{}])], { hostnames: ["*.com"] }),
        route("long", [rule("r", [{}])], { hostnames: ["*.example.com"] }),
      ],
      request: req("/", { host: "a.b.example.com:8080" }),
      want: "default/long#r",
    },
    {
      name: "wildcard does not match the bare domain",
      routes: [route("wild", [rule("r", [{}])], { hostnames: ["*.example.com"] })],
      request: req("/", { host: "example.com" }),
      want: undefined,
    },
    {
      name: "hostname is case-insensitive and ignores the port",
      routes: [route("h", [rule("r", [{}])], { hostnames: ["svc.example.com"] })],
      request: req("/", { host: "SVC.Example.com:80" }),
      want: "default/h#r",
    },
    {
      name: "matches within a rule are ORed",
      routes: [
        route("a", [
          rule("r", [{ path: { type: "Exact", value: "/one" } }, { path: { type: "Exact", value: "/two" } }]),
        ]),
      ],
      request: req("/two"),
      want: "default/a#r",
    },
    {
      name: "fields within a match are ANDed",
      routes: [route("a", [rule("r", [{ path: { value: "/one" }, method: "POST" }])])],
      request: req("/one"),
      want: undefined,
    },
    {
      name: "regex header match",
      routes: [
        route("a", [rule("r", [{ headers: [{ type: "RegularExpression", name: "x-v", value: "v[12]" }] }])]),
      ],
      request: req("/", { headers: { "x-v": "v2" } }),
      want: "default/a#r",
    },
    {
      name: "no match is undefined (404)",
      routes: [route("a", [rule("r", [{ path: { value: "/api" } }])])],
      request: req("/other"),
      want: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(winner(c.routes, c.request), c.want);
    });
  }

  it("picks the same winner whatever the input order", () => {
    const routes = [
      route("b", [
        rule("b1", [{ path: { value: "/a" } }]),
        rule("b2", [{ path: { value: "/a/b" }, headers: [{ name: "x", value: "1" }] }]),
      ]),
      route("a", [
        rule("a1", [{ path: { value: "/a/b" } }]),
        rule("a2", [{ path: { type: "Exact", value: "/a/b/c" } }]),
      ]),
    ];
    for (const order of [routes, [...routes].reverse()]) {
      assert.equal(winner(order, req("/a/b/c")), "default/a#a2");
      assert.equal(winner(order, req("/a/b/d", { headers: { x: "1" } })), "default/b#b2");
      assert.equal(winner(order, req("/a/b/d")), "default/a#a1");
      assert.equal(winner(order, req("/a/z")), "default/b#b1");
    }
  });
});

describe("route table attachment", () => {
  const svcRoute: HTTPRoute = {
    kind: "HTTPRoute",
    metadata: { name: "reviews", namespace: "bookinfo" },
    spec: {
      parentRefs: [{ group: "", kind: "Service", name: "reviews", port: 9080 }],
      rules: [rule("r", [{}])],
    },
  };
  it("attaches to a Service by name, namespace and port", () => {
    const table = createRouteTable([svcRoute]);
    const target = { service: { name: "reviews", namespace: "bookinfo" }, port: 9080 };
    assert.equal(table.hasRoutesFor(target), true);
    assert.ok(table.match(req("/", { target })));
    assert.equal(table.hasRoutesFor({ ...target, port: 80 }), false);
    assert.equal(table.hasRoutesFor({ service: { name: "reviews", namespace: "other" }, port: 9080 }), false);
    assert.equal(
      table.match(req("/", { target: { service: { name: "ratings", namespace: "bookinfo" } } })),
      undefined,
    );
  });
  it("applies a parentRef's port to that parent only", () => {
    // One route on reviews:9080 and ratings:8080; another route gives reviews a rule on 8080 too.
    const shared: HTTPRoute = {
      ...svcRoute,
      metadata: { name: "shared", namespace: "bookinfo" },
      spec: {
        parentRefs: [
          { group: "", kind: "Service", name: "reviews", port: 9080 },
          { group: "", kind: "Service", name: "ratings", port: 8080 },
        ],
        rules: [rule("shared", [{}])],
      },
    };
    const admin: HTTPRoute = {
      ...svcRoute,
      metadata: { name: "admin", namespace: "bookinfo" },
      spec: {
        parentRefs: [{ group: "", kind: "Service", name: "reviews", port: 8080 }],
        rules: [rule("admin", [{ path: { type: "Exact", value: "/admin" } }])],
      },
    };
    const table = createRouteTable([shared, admin]);
    const reviews = { name: "reviews", namespace: "bookinfo" };
    const ratings = { name: "ratings", namespace: "bookinfo" };
    assert.equal(
      table.match(req("/", { target: { service: reviews, port: 9080 } }))?.rule.route,
      "bookinfo/shared",
    );
    assert.equal(
      table.match(req("/", { target: { service: ratings, port: 8080 } }))?.rule.route,
      "bookinfo/shared",
    );
    assert.equal(
      table.match(req("/admin", { target: { service: reviews, port: 8080 } }))?.rule.route,
      "bookinfo/admin",
    );
    // reviews:8080 has only the admin route: anything else there is not routed by "shared".
    assert.equal(table.match(req("/", { target: { service: reviews, port: 8080 } })), undefined);
    assert.equal(table.match(req("/", { target: { service: ratings, port: 9080 } })), undefined);
  });
  it("ignores a route from a third namespace that names another namespace's Service", () => {
    const foreign: HTTPRoute = {
      ...svcRoute,
      metadata: { name: "hijack", namespace: "tenant" },
      spec: {
        ...svcRoute.spec,
        parentRefs: [{ group: "", kind: "Service", name: "reviews", namespace: "bookinfo", port: 9080 }],
      },
    };
    const target = { service: { name: "reviews", namespace: "bookinfo" }, port: 9080 };
    const waypoint = { name: "waypoint", namespace: "istio-system" };
    assert.equal(createRouteTable([foreign]).hasRoutesFor(target), false);
    assert.equal(createRouteTable([foreign], { waypoint }).hasRoutesFor(target), false);
    // Same for a ServiceEntry parentRef.
    const foreignEntry: HTTPRoute = {
      ...foreign,
      spec: {
        ...foreign.spec,
        parentRefs: [
          { group: "networking.istio.io", kind: "ServiceEntry", name: "api", namespace: "bookinfo" },
        ],
      },
    };
    const entry = {
      service: { name: "api", namespace: "bookinfo", kind: "ServiceEntry" as const },
      port: 443,
    };
    assert.equal(createRouteTable([foreignEntry], { waypoint }).hasRoutesFor(entry), false);
    // The Service's own namespace wins over the foreign route.
    const table = createRouteTable([foreign, svcRoute], { waypoint });
    assert.equal(table.match(req("/", { target }))?.rule.route, "bookinfo/reviews");
  });
  it("takes a route from the waypoint's own namespace for a Service elsewhere", () => {
    const fromWaypointNs: HTTPRoute = {
      ...svcRoute,
      metadata: { name: "ops", namespace: "istio-system" },
      spec: {
        ...svcRoute.spec,
        parentRefs: [{ group: "", kind: "Service", name: "reviews", namespace: "bookinfo", port: 9080 }],
      },
    };
    const target = { service: { name: "reviews", namespace: "bookinfo" }, port: 9080 };
    const table = createRouteTable([fromWaypointNs], {
      waypoint: { name: "waypoint", namespace: "istio-system" },
    });
    assert.equal(table.match(req("/", { target }))?.rule.route, "istio-system/ops");
  });
  it("ignores a route from another namespace that names the waypoint Gateway", () => {
    const foreign: HTTPRoute = {
      ...route("hijack", [rule("r", [{}])]),
      metadata: { name: "hijack", namespace: "tenant" },
      spec: {
        parentRefs: [{ kind: "Gateway", name: "waypoint", namespace: "default" }],
        rules: [rule("r", [{}])],
      },
    };
    assert.equal(
      createRouteTable([foreign], { waypoint: { name: "waypoint", namespace: "default" } }).hasRoutesFor(
        undefined,
      ),
      false,
    );
    assert.equal(createRouteTable([foreign]).hasRoutesFor(undefined), false);
  });
  it("honours the configured waypoint name", () => {
    const r = route("a", [rule("r", [{}])]);
    assert.equal(
      createRouteTable([r], { waypoint: { name: "other", namespace: "default" } }).hasRoutesFor(undefined),
      false,
    );
    assert.equal(
      createRouteTable([r], { waypoint: { name: "waypoint", namespace: "default" } }).hasRoutesFor(undefined),
      true,
    );
  });
});

describe("GRPCRoute matching", () => {
  const grpc = (name: string, rules: GRPCRoute["spec"]["rules"]): GRPCRoute => ({
    kind: "GRPCRoute",
    metadata: { name, namespace: "default" },
    spec: { parentRefs: gw, rules },
  });
  const routes = [
    grpc("g", [
      {
        name: "svc",
        matches: [{ method: { service: "helloworld.Greeter" } }],
        backendRefs: [{ name: "svc", port: 50051 }],
      },
      {
        name: "exact",
        matches: [{ method: { service: "helloworld.Greeter", method: "SayHello" } }],
        backendRefs: [{ name: "exact", port: 50051 }],
      },
      {
        name: "method",
        matches: [{ method: { method: "Check" } }],
        backendRefs: [{ name: "m", port: 50051 }],
      },
      {
        name: "regex",
        matches: [{ method: { type: "RegularExpression", service: "pkg\\.v[0-9]+\\.Store" } }],
        backendRefs: [{ name: "r", port: 50051 }],
      },
    ]),
    route("http", [rule("fallback", [{}])]),
  ];
  const g = (path: string) => winner(routes, req(path, { method: "POST", grpc: true }));
  it("ranks service+method over service only", () => {
    assert.equal(g("/helloworld.Greeter/SayHello"), "default/g#exact");
    assert.equal(g("/helloworld.Greeter/SayBye"), "default/g#svc");
  });
  it("matches method-only and regex service", () => {
    assert.equal(g("/grpc.health.v1.Health/Check"), "default/g#method");
    assert.equal(g("/pkg.v2.Store/Get"), "default/g#regex");
  });
  it("reads a regex service and method as RE2 does, each on its own", () => {
    const regexRoutes = [
      grpc("re", [
        {
          name: "alt",
          // An alternation: the whole service, either name; never one side glued to the method.
          matches: [{ method: { type: "RegularExpression", service: "a\\.One|b\\.Two", method: "(?i)get" } }],
          backendRefs: [{ name: "alt", port: 50051 }],
        },
      ]),
      route("http", [rule("fallback", [{}])]),
    ];
    const w = (path: string) => winner(regexRoutes, req(path, { method: "POST", grpc: true }));
    assert.equal(w("/a.One/Get"), "default/re#alt");
    assert.equal(w("/b.Two/GET"), "default/re#alt");
    assert.equal(w("/b.Two/Put"), "default/http#fallback");
    assert.equal(w("/a.One/x/Get"), "default/http#fallback");
  });
  it("falls back to HTTPRoutes, and non-gRPC requests skip GRPCRoutes", () => {
    assert.equal(g("/other.Svc/Call"), "default/http#fallback");
    assert.equal(winner(routes, req("/helloworld.Greeter/SayHello")), "default/http#fallback");
  });
});

describe("route table errors", () => {
  it("rejects invalid routes with the field path", () => {
    assert.throws(
      () => createRouteTable([route("a", [rule("r", [{ path: { type: "Exact", value: "no-slash" } }])])]),
      (e: unknown) =>
        e instanceof RouterError &&
        e.code === "ERR_ROUTE_INVALID" &&
        e.details.field === "spec.rules[0].matches[0].path.value",
    );
  });
});
