import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, it } from "node:test";
import {
  type Backend,
  request as httpRequest,
  startBackend,
  startWaypoint,
  stopServer,
} from "../test/harness.js";
import {
  backendOfCluster,
  compileEnvoyRouteConfiguration,
  createEnvoyRouteTable,
  type EnvoyRoute,
  type EnvoyRouteConfiguration,
  INVALID_BACKEND_CLUSTER,
  parseWaypointRouteHost,
  parseWaypointRouteName,
  waypointRouteName,
} from "./envoy-routes.js";
import { RouterError } from "./errors.js";
import type { RouteRequest } from "./route-table.js";
import { createWaypointHandler } from "./waypoint-handler.js";

const WEB = { name: "web", namespace: "demo" };
const V1 = "outbound|80||web-v1.demo.svc.cluster.local";
const V2 = "outbound|80||web-v2.demo.svc.cluster.local";

/** What the control plane sends for demo/web:80 (as translate-envoy sorts it). */
function config(routes: EnvoyRoute[], domains = ["*"]): EnvoyRouteConfiguration {
  return {
    name: waypointRouteName("web.demo.svc.cluster.local", 80),
    virtualHosts: [{ name: "web", domains, routes }],
  };
}

function table(cfg: EnvoyRouteConfiguration) {
  return createEnvoyRouteTable([
    { service: WEB, port: 80, routes: compileEnvoyRouteConfiguration(cfg, "demo") },
  ]);
}

function request(over: Partial<RouteRequest> = {}): RouteRequest {
  return {
    host: "web.demo:80",
    path: "/",
    method: "GET",
    headers: {},
    target: { service: WEB, port: 80 },
    ...over,
  };
}

const ROUTES: EnvoyRoute[] = [
  {
    name: "exact",
    match: { path: "/login", headers: [{ name: ":method", stringMatch: { exact: "POST" } }] },
    route: { cluster: V2 },
  },
  // A Gateway API PathPrefix /api, split in two as the control plane writes it.
  { name: "api.0", match: { path: "/api" }, route: { cluster: V2, prefixRewrite: "/v2" } },
  { name: "api.1", match: { prefix: "/api/" }, route: { cluster: V2, prefixRewrite: "/v2/" } },
  { name: "sep", match: { pathSeparatedPrefix: "/docs" }, route: { cluster: V1 } },
  { name: "regex", match: { safeRegex: { regex: "/item/[0-9]+" } }, route: { cluster: V1 } },
  {
    name: "header",
    match: { prefix: "/", headers: [{ name: "x-version", stringMatch: { exact: "v2" } }] },
    route: {
      weightedClusters: {
        clusters: [
          { name: V1, weight: { value: 1 } },
          { name: V2, weight: { value: 3 } },
        ],
      },
    },
  },
  {
    name: "query",
    match: { prefix: "/", queryParameters: [{ name: "debug", presentMatch: true }] },
    route: { cluster: V1 },
  },
  {
    name: "not-beta",
    match: { prefix: "/beta", headers: [{ name: "x-beta", exactMatch: "yes", invertMatch: true }] },
    directResponse: { status: 500 },
  },
  { name: "default", match: { prefix: "/" }, route: { cluster: V1 } },
];

describe("createEnvoyRouteTable: first matching route wins, Envoy match semantics", () => {
  const t = table(config(ROUTES));
  const cases: [string, Partial<RouteRequest>, string | undefined, string | undefined][] = [
    ["exact path and :method", { path: "/login", method: "POST" }, "exact", "/login"],
    ["exact path, other method falls through", { path: "/login" }, "default", "/"],
    ["segment prefix, the path itself", { path: "/api" }, "api.0", "/api"],
    ["segment prefix, below it", { path: "/api/users" }, "api.1", "/api/"],
    ["not a segment of the prefix", { path: "/apix" }, "default", "/"],
    ["path_separated_prefix itself", { path: "/docs" }, "sep", "/docs"],
    ["path_separated_prefix below", { path: "/docs/a" }, "sep", "/docs"],
    ["path_separated_prefix is whole segments", { path: "/docsx" }, "default", "/"],
    ["regex is a whole-path match", { path: "/item/42" }, "regex", undefined],
    ["regex does not match a longer path", { path: "/item/42/x" }, "default", "/"],
    ["header exact", { path: "/x", headers: { "x-version": "v2" } }, "header", "/"],
    ["query parameter present", { path: "/x", query: "debug=1" }, "query", "/"],
    ["inverted header matcher matches an absent header", { path: "/beta" }, "not-beta", "/beta"],
    [
      "inverted header matcher, header present",
      { path: "/beta", headers: { "x-beta": "yes" } },
      "default",
      "/",
    ],
  ];
  for (const [what, over, route, prefix] of cases) {
    it(what, () => {
      const found = t.match(request(over));
      assert.equal(found?.rule.route, route);
      assert.equal(found?.matchedPrefix, prefix);
    });
  }

  it("turns actions into the rule the handler runs", () => {
    const api = t.match(request({ path: "/api/x" }))?.rule;
    assert.deepEqual(api?.rewrite, { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/v2/" } });
    assert.deepEqual(
      api?.backends.map((b) => [b.namespace, b.name, b.port, b.weight]),
      [["demo", "web-v2", 80, 1]],
    );
    const weighted = t.match(request({ headers: { "x-version": "v2" } }))?.rule;
    assert.deepEqual(
      weighted?.backends.map((b) => [b.name, b.weight]),
      [
        ["web-v1", 1],
        ["web-v2", 3],
      ],
    );
    assert.deepEqual(t.match(request({ path: "/beta" }))?.rule.backends, []);
  });

  it("compares query parameters as sent, without decoding them", () => {
    const q = table(
      config([
        {
          name: "plus",
          match: { prefix: "/", queryParameters: [{ name: "lang", stringMatch: { exact: "c++" } }] },
          route: { cluster: V2 },
        },
        { name: "default", match: { prefix: "/" }, route: { cluster: V1 } },
      ]),
    );
    assert.equal(q.match(request({ query: "lang=c++" }))?.rule.route, "plus");
    // Envoy reads the raw query: an encoded value is not the literal one.
    assert.equal(q.match(request({ query: "lang=c%2B%2B" }))?.rule.route, "default");
    assert.equal(q.match(request({ query: "lang=c++&lang=go" }))?.rule.route, "plus");
    assert.equal(q.match(request({ query: "lang=go&lang=c++" }))?.rule.route, "default");
  });

  it("answers only for the Service port it was given", () => {
    assert.equal(t.hasRoutesFor({ service: WEB, port: 80 }), true);
    assert.equal(t.hasRoutesFor({ service: WEB, port: 81 }), false);
    assert.equal(t.hasRoutesFor({ service: { name: "web", namespace: "other" }, port: 80 }), false);
    assert.equal(t.match(request({ target: { service: WEB, port: 81 } })), undefined);
  });
});

describe("virtual hosts by Envoy's domain order", () => {
  const two: EnvoyRouteConfiguration = {
    name: "x",
    virtualHosts: [
      {
        name: "any",
        domains: ["*"],
        routes: [{ name: "any", match: { prefix: "/" }, route: { cluster: V1 } }],
      },
      {
        name: "web",
        domains: ["web.demo", "web.demo:80", "*.example.com"],
        routes: [{ name: "web", match: { prefix: "/" }, route: { cluster: V2 } }],
      },
    ],
  };
  const t = table(two);
  const cases: [string, string | undefined][] = [
    ["web.demo", "web"],
    ["WEB.demo:80", "web"],
    ["web.demo:8080", "any"],
    ["a.example.com", "web"],
    ["example.com", "any"],
    ["127.30.0.2:80", "any"],
  ];
  for (const [host, route] of cases) {
    it(`${host} -> ${route}`, () => assert.equal(t.match(request({ host }))?.rule.route, route));
  }
  it("no virtual host for the host: no route (404)", () => {
    const only = table(config([{ name: "d", match: { prefix: "/" }, route: { cluster: V1 } }], ["web.demo"]));
    assert.equal(only.match(request({ host: "other" })), undefined);
  });
});

describe("compileEnvoyRouteConfiguration", () => {
  it("maps timeouts, retries, mirrors, redirects and header edits", () => {
    const compiled = compileEnvoyRouteConfiguration(
      config([
        {
          name: "r",
          match: { prefix: "/" },
          requestHeadersToAdd: [
            { header: { key: "x-set", value: "1" }, appendAction: "OVERWRITE_IF_EXISTS_OR_ADD" },
            { header: { key: "x-add", value: "2" }, appendAction: "APPEND_IF_EXISTS_OR_ADD" },
          ],
          requestHeadersToRemove: ["x-drop"],
          route: {
            cluster: V1,
            timeout: { seconds: 2, nanos: 500_000_000 },
            hostRewriteLiteral: "web.example",
            regexRewrite: { pattern: { regex: "^/.*$" }, substitution: "/full" },
            retryPolicy: {
              numRetries: { value: 3 },
              retriableStatusCodes: [502],
              perTryTimeout: { seconds: 1 },
              retryBackOff: { baseInterval: { nanos: 50_000_000 } },
            },
            requestMirrorPolicies: [
              { cluster: V2, runtimeFraction: { defaultValue: { numerator: 25, denominator: "HUNDRED" } } },
            ],
          },
        },
        {
          name: "redirect",
          match: { path: "/old" },
          redirect: {
            schemeRedirect: "https",
            hostRedirect: "new.example",
            prefixRewrite: "/new",
            responseCode: "FOUND",
          },
        },
      ]),
      "demo",
    );
    const rule = compiled.virtualHosts[0]?.routes[0]?.rule;
    assert.deepEqual(rule?.requestHeaders, {
      set: [{ name: "x-set", value: "1" }],
      add: [{ name: "x-add", value: "2" }],
      remove: ["x-drop"],
    });
    assert.equal(rule?.requestTimeoutMs, 2500);
    assert.equal(rule?.backendTimeoutMs, 1000);
    assert.deepEqual(rule?.retry, { attempts: 3, retryOn: [], codes: [502], backoffMs: 50 });
    assert.deepEqual(rule?.rewrite, {
      path: { type: "ReplaceFullPath", replaceFullPath: "/full" },
      hostname: "web.example",
    });
    assert.deepEqual(rule?.mirrors[0]?.fraction, { numerator: 25, denominator: 100 });
    assert.equal(rule?.mirrors[0]?.backend.name, "web-v2");
    assert.deepEqual(compiled.virtualHosts[0]?.routes[1]?.rule.redirect, {
      statusCode: 302,
      scheme: "https",
      hostname: "new.example",
      path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/new" },
    });
  });

  const bad: [string, EnvoyRoute, string, string][] = [
    [
      "a cluster that is not a Service port",
      { match: { prefix: "/" }, route: { cluster: "blackhole" } },
      "ERR_ROUTE_UNSUPPORTED",
      "virtualHosts[0].routes[0].route.cluster",
    ],
    [
      "a cluster_header target",
      { match: { prefix: "/" }, route: { clusterHeader: "x-cluster" } },
      "ERR_ROUTE_UNSUPPORTED",
      "virtualHosts[0].routes[0].route",
    ],
    [
      "an arbitrary regex rewrite",
      {
        match: { prefix: "/" },
        route: { cluster: V1, regexRewrite: { pattern: { regex: "^/a(.*)$" }, substitution: "/b\\1" } },
      },
      "ERR_ROUTE_UNSUPPORTED",
      "virtualHosts[0].routes[0].route.regexRewrite",
    ],
    [
      "a regex RE2 refuses (nested counted repetition too large)",
      { match: { safeRegex: { regex: "(?:a{2}){600}" } }, route: { cluster: V1 } },
      "ERR_REGEX_INVALID",
      "virtualHosts[0].routes[0].match.safeRegex.regex",
    ],
    [
      "a route without a path match",
      { match: {}, route: { cluster: V1 } },
      "ERR_ROUTE_INVALID",
      "virtualHosts[0].routes[0].match",
    ],
    [
      "a direct response other than 500",
      { match: { prefix: "/" }, directResponse: { status: 418 } },
      "ERR_ROUTE_UNSUPPORTED",
      "virtualHosts[0].routes[0].directResponse.status",
    ],
    ["no action", { match: { prefix: "/" } }, "ERR_ROUTE_UNSUPPORTED", "virtualHosts[0].routes[0]"],
  ];
  for (const [what, route, code, field] of bad) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => compileEnvoyRouteConfiguration(config([route]), "demo"),
        (err: unknown) => err instanceof RouterError && err.code === code && err.details.field === field,
      );
    });
  }
});

describe("names", () => {
  it("cluster names and waypoint route names round-trip to Service ports", () => {
    assert.equal(backendOfCluster(V1, "f").name, "web-v1");
    assert.throws(() => backendOfCluster("outbound|80|v1|web.demo.svc.cluster.local", "f"), RouterError);
    const name = waypointRouteName("web.demo.svc.cluster.local", 80);
    assert.equal(name, "inbound-vip|80|http|web.demo.svc.cluster.local");
    assert.deepEqual(parseWaypointRouteName(name), {
      host: "web.demo.svc.cluster.local",
      port: 80,
      service: { name: "web", namespace: "demo" },
    });
    assert.equal(parseWaypointRouteName("web.demo.svc.cluster.local:80"), undefined);
  });

  it("a ServiceEntry host's cluster is a Hostname backend, and its route name gives host and port", () => {
    assert.deepEqual(backendOfCluster("outbound|443||api.example.com", "f", "cluster.local", "shop"), {
      group: "networking.istio.io",
      kind: "Hostname",
      name: "api.example.com",
      namespace: "shop",
      port: 443,
      weight: 1,
      requestHeaders: undefined,
      responseHeaders: undefined,
    });
    for (const bad of [
      "outbound|80||*.example.com",
      "outbound|80||Bad_Host",
      "outbound|80||x.svc.cluster.local",
    ]) {
      assert.throws(() => backendOfCluster(bad, "f"), RouterError, bad);
    }
    const name = waypointRouteName("api.example.com", 443);
    assert.deepEqual(parseWaypointRouteHost(name), { host: "api.example.com", port: 443 });
    assert.equal(parseWaypointRouteName(name), undefined);
    assert.deepEqual(parseWaypointRouteHost(waypointRouteName("web.demo.svc.cluster.local", 80)), {
      host: "web.demo.svc.cluster.local",
      port: 80,
    });
    assert.equal(parseWaypointRouteHost("inbound-vip|0|http|api.example.com"), undefined);
    assert.equal(parseWaypointRouteHost("outbound|80||api.example.com"), undefined);
  });
});

describe("createEnvoyRouteTable for a ServiceEntry host", () => {
  const EXT = {
    name: "external-api",
    namespace: "shop",
    kind: "ServiceEntry" as const,
    hostname: "api.example.com",
  };
  const cfg: EnvoyRouteConfiguration = {
    name: waypointRouteName("api.example.com", 80),
    virtualHosts: [
      {
        name: "ext",
        domains: ["*"],
        routes: [
          {
            name: "v2",
            match: { prefix: "/v2" },
            route: { cluster: "outbound|80||api.example.com", prefixRewrite: "/" },
            requestHeadersToAdd: [{ header: { key: "x-egress", value: "yes" } }],
          },
          { name: "default", match: { prefix: "/" }, route: { cluster: "outbound|80||api.example.com" } },
        ],
      },
    ],
  };
  const routes = createEnvoyRouteTable([
    { service: EXT, port: 80, routes: compileEnvoyRouteConfiguration(cfg, "shop") },
    // A Kubernetes Service of the same name is another target.
    {
      service: { name: "external-api", namespace: "shop" },
      port: 80,
      routes: compileEnvoyRouteConfiguration(config(ROUTES), "shop"),
    },
  ]);

  it("routes a request to the host by its own configuration, to a Hostname backend", () => {
    const match = routes.match(
      request({ host: "api.example.com", path: "/v2/x", target: { service: EXT, port: 80 } }),
    );
    assert.equal(match?.rule.route, "v2");
    assert.deepEqual(
      match?.rule.backends.map((b) => [b.group, b.kind, b.name, b.namespace, b.port]),
      [["networking.istio.io", "Hostname", "api.example.com", "shop", 80]],
    );
    assert.equal(routes.hasRoutesFor({ service: EXT, port: 80 }), true);
    assert.equal(routes.hasRoutesFor({ service: EXT, port: 443 }), false);
    assert.equal(
      routes.match(
        request({
          path: "/login",
          method: "POST",
          target: { service: { name: "external-api", namespace: "shop" }, port: 80 },
        }),
      )?.rule.route,
      "exact",
    );
  });
});

describe("setRouteTable", () => {
  it("applies a new table to the next request on a kept-alive connection", async () => {
    const backend = http.createServer((req, res) => res.end(`${req.headers.host} ${req.url}`));
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const backendPort = (backend.address() as AddressInfo).port;
    const handler = createWaypointHandler({
      routes: [],
      resolveBackend: (ref) => [{ address: "127.0.0.1", port: backendPort, workload: { name: ref.name } }],
      connect: (endpoint) => net.connect(endpoint.port, endpoint.address),
    });
    const server = net.createServer((socket) =>
      handler.handle(socket, { destination: { address: "127.30.0.2", port: 80, service: WEB } }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    const get = () =>
      new Promise<string>((resolve, reject) => {
        const req = http.get(
          {
            host: "127.0.0.1",
            port: (server.address() as AddressInfo).port,
            path: "/a",
            agent,
            headers: { host: "web.demo" },
          },
          (res) => {
            let body = "";
            res.on("data", (c: Buffer) => {
              body += c.toString();
            });
            res.on("end", () => resolve(`${res.statusCode} ${body}`));
          },
        );
        req.on("socket", (s) => sockets.add(s));
        req.on("error", reject);
      });
    try {
      handler.setRouteTable(
        table(
          config([{ name: "one", match: { prefix: "/" }, route: { cluster: V1, prefixRewrite: "/one/" } }]),
        ),
      );
      assert.equal(await get(), "200 web.demo /one/a");
      handler.setRouteTable(
        table(
          config([{ name: "two", match: { prefix: "/" }, route: { cluster: V1, prefixRewrite: "/two/" } }]),
        ),
      );
      assert.equal(await get(), "200 web.demo /two/a");
      handler.setRouteTable(
        table(config([{ name: "none", match: { path: "/elsewhere" }, route: { cluster: V1 } }])),
      );
      assert.equal(await get(), "404 ");
      assert.equal(sockets.size, 1, "one kept-alive connection carried every request");
    } finally {
      agent.destroy();
      await handler.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      backend.closeAllConnections();
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    }
  });
});

describe("compileEnvoyRouteConfiguration and a route's retry policy", () => {
  const withRetry = (retryPolicy: Record<string, unknown>) =>
    config([{ name: "r", match: { prefix: "/" }, route: { cluster: V1, retryPolicy } } as EnvoyRoute]);

  it("makes at most MAX_RETRY_ATTEMPTS retries, whatever the route asks for", () => {
    const compiled = compileEnvoyRouteConfiguration(withRetry({ numRetries: { value: 1_000_000 } }), "demo");
    assert.equal(compiled.virtualHosts[0]?.routes[0]?.rule.retry?.attempts, 100);
  });

  it("reads num_retries present without a value as 0 retries, and absent as Envoy's 1", () => {
    for (const [numRetries, attempts] of [
      [{ value: 0 }, 0],
      [{}, 0],
      [undefined, 1],
    ] as const) {
      const compiled = compileEnvoyRouteConfiguration(
        withRetry(numRetries === undefined ? {} : { numRetries }),
        "demo",
      );
      assert.equal(
        compiled.virtualHosts[0]?.routes[0]?.rule.retry?.attempts,
        attempts,
        JSON.stringify(numRetries),
      );
    }
  });

  it("refuses a back-off base under 1 ms, as Envoy does", () => {
    for (const baseInterval of [{}, { nanos: 500_000 }]) {
      assert.throws(
        () =>
          compileEnvoyRouteConfiguration(
            withRetry({ numRetries: { value: 3 }, retryBackOff: { baseInterval } }),
            "demo",
          ),
        (err: unknown) =>
          err instanceof RouterError && err.code === "ERR_ROUTE_INVALID" && /baseInterval/.test(err.message),
      );
    }
  });
});

describe("a weighted cluster for an invalid backendRef", () => {
  it("is the reserved cluster name, which the waypoint answers 500 for its share of requests", async () => {
    assert.equal(INVALID_BACKEND_CLUSTER, "invalid-backend");
    const backend = http.createServer((_req, res) => res.end("ok"));
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const backendPort = (backend.address() as AddressInfo).port;
    const resolved: string[] = [];
    const handler = createWaypointHandler({
      routes: [],
      resolveBackend: (ref) => {
        resolved.push(`${ref.kind}/${ref.name}`);
        return [{ address: "127.0.0.1", port: backendPort, workload: { name: ref.name } }];
      },
      connect: (endpoint) => net.connect(endpoint.port, endpoint.address),
    });
    const server = net.createServer((socket) =>
      handler.handle(socket, { destination: { address: "127.30.0.2", port: 80, service: WEB } }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const req = http.get(
          {
            host: "127.0.0.1",
            port: (server.address() as AddressInfo).port,
            path: "/",
            agent: false,
            headers: { host: "web.demo" },
          },
          (res) => {
            res.resume();
            res.on("end", () => resolve(res.statusCode ?? 0));
          },
        );
        req.on("error", reject);
      });
    try {
      handler.setRouteTable(
        table(
          config([
            {
              name: "split",
              match: { prefix: "/" },
              route: {
                weightedClusters: {
                  clusters: [
                    { name: V1, weight: { value: 1 } },
                    { name: INVALID_BACKEND_CLUSTER, weight: { value: 1 } },
                  ],
                },
              },
            },
          ]),
        ),
      );
      const counts: Record<number, number> = {};
      for (let i = 0; i < 20; i++) {
        const status = await get();
        counts[status] = (counts[status] ?? 0) + 1;
      }
      assert.deepEqual(counts, { 200: 10, 500: 10 });
      assert.ok(
        resolved.every((r) => r === "Service/web-v1"),
        `only the valid backend is resolved: ${resolved}`,
      );
    } finally {
      await handler.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      backend.closeAllConnections();
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    }
  });

  it("is a route target only: a mirror to it is refused", () => {
    assert.throws(
      () =>
        compileEnvoyRouteConfiguration(
          config([
            {
              match: { prefix: "/" },
              route: { cluster: V1, requestMirrorPolicies: [{ cluster: INVALID_BACKEND_CLUSTER }] },
            },
          ]),
          "demo",
        ),
      (err: unknown) =>
        err instanceof RouterError &&
        err.details.field === "virtualHosts[0].routes[0].route.requestMirrorPolicies[0].cluster",
    );
    assert.throws(() => backendOfCluster(INVALID_BACKEND_CLUSTER, "cluster"), RouterError);
  });
});

describe("a route's retry_on, as Envoy reads it", () => {
  const statusBackend = (status: number) =>
    startBackend(String(status), (_req, res) => {
      res.writeHead(status);
      res.end(String(status));
    });

  it("keeps the conditions it names, HTTP and gRPC ones alike, and ignores unknown names", () => {
    const compiled = compileEnvoyRouteConfiguration(
      config([
        {
          name: "r",
          match: { prefix: "/" },
          route: {
            cluster: V1,
            retryPolicy: {
              retryOn: "5xx, reset,unavailable,retriable-4xx,no-such-condition,internal,,",
              numRetries: { value: 2 },
            },
          },
        },
      ]),
      "demo",
    );
    const retry = compiled.virtualHosts[0]?.routes[0]?.rule.retry;
    assert.deepEqual(retry?.retryOn, ["5xx", "reset", "unavailable", "retriable-4xx", "internal"]);
    assert.deepEqual(retry?.ignoredRetryOn, ["no-such-condition"]);
    assert.deepEqual(retry?.codes, []);
  });

  it("honours `retryOn: 5xx` (a 500 is retried), `connect-failure` alone (a 503 is not), `gateway-error` (a 502 is)", async () => {
    const b500 = await statusBackend(500);
    const b503 = await statusBackend(503);
    const b502 = await statusBackend(502);
    const b409 = await statusBackend(409);
    const limited = await startBackend("limited", (_req, res) => {
      res.writeHead(503, { "x-envoy-ratelimited": "true" });
      res.end();
    });
    const warnings: { fields: object; message: string }[] = [];
    const wp = await startWaypoint(
      {
        "demo/web-500": [b500.endpoint],
        "demo/web-503": [b503.endpoint],
        "demo/web-502": [b502.endpoint],
        "demo/web-409": [b409.endpoint],
        "demo/web-limited": [limited.endpoint],
      },
      {
        routes: [],
        logger: {
          debug: () => {},
          info: () => {},
          warn: (fields: object, message: string) => warnings.push({ fields, message }),
          error: () => {},
        },
      },
      { destination: { address: "127.30.0.2", port: 80, service: WEB } },
    );
    const route = (path: string, host: string, retryPolicy: Record<string, unknown>): EnvoyRoute => ({
      name: path,
      match: { path },
      route: {
        cluster: `outbound|80||${host}.demo.svc.cluster.local`,
        retryPolicy: { retryBackOff: { baseInterval: { nanos: 1_000_000 } }, ...retryPolicy },
      },
    });
    try {
      wp.handler.setRouteTable(
        table(
          config([
            route("/5xx", "web-500", { retryOn: "5xx", numRetries: { value: 2 } }),
            route("/connect-failure", "web-503", { retryOn: "connect-failure", numRetries: { value: 2 } }),
            // Istio's default policy since 1.24: retriable-status-codes with no codes.
            route("/istio-default", "web-503", {
              retryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
              numRetries: { value: 2 },
            }),
            route("/gateway-error", "web-502", { retryOn: "gateway-error", numRetries: { value: 1 } }),
            route("/codes", "web-503", {
              retryOn: "retriable-status-codes",
              retriableStatusCodes: [503],
              numRetries: { value: 1 },
            }),
            route("/unknown", "web-503", { retryOn: "no-such-condition", numRetries: { value: 2 } }),
            route("/retriable-4xx", "web-409", { retryOn: "retriable-4xx", numRetries: { value: 1 } }),
            route("/limited-5xx", "web-limited", { retryOn: "5xx", numRetries: { value: 1 } }),
            route("/limited", "web-limited", { retryOn: "envoy-ratelimited", numRetries: { value: 1 } }),
          ]),
        ),
      );
      const attempts = async (backend: Backend, method: string, path: string) => {
        const before = backend.requests.length;
        const r = await httpRequest(wp.port, {
          method,
          path,
          headers: { host: "web.demo" },
          ...(method === "POST" ? { body: "x" } : {}),
        });
        return [r.status, backend.requests.length - before];
      };
      assert.deepEqual(await attempts(b500, "GET", "/5xx"), [500, 3]);
      assert.deepEqual(await attempts(b503, "POST", "/connect-failure"), [503, 1]);
      assert.deepEqual(await attempts(b503, "POST", "/istio-default"), [503, 1]);
      assert.deepEqual(await attempts(b502, "GET", "/gateway-error"), [502, 2]);
      assert.deepEqual(await attempts(b503, "GET", "/codes"), [503, 2]);
      assert.deepEqual(await attempts(b409, "GET", "/retriable-4xx"), [409, 2]);
      // A response an upstream Envoy rate-limited is retried under envoy-ratelimited only.
      assert.deepEqual(await attempts(limited, "GET", "/limited-5xx"), [503, 1]);
      assert.deepEqual(await attempts(limited, "GET", "/limited"), [503, 2]);
      // An unknown name retries nothing, and is logged once.
      assert.deepEqual(await attempts(b503, "GET", "/unknown"), [503, 1]);
      assert.deepEqual(await attempts(b503, "GET", "/unknown"), [503, 1]);
      assert.deepEqual(
        warnings.map((w) => w.fields),
        [{ route: "/unknown", ignored: ["no-such-condition"] }],
      );
    } finally {
      await wp.close();
      await Promise.all([b500, b503, b502, b409, limited].map((b) => stopServer(b.server)));
    }
  });
});

describe("header edits and host rewrites Envoy refuses", () => {
  const route = (over: Partial<EnvoyRoute>, action: Record<string, unknown> = {}): EnvoyRoute => ({
    name: "r",
    match: { prefix: "/" },
    route: { cluster: V1, ...action },
    ...over,
  });
  const add = (key: string, value = "v") => [{ header: { key, value } }];
  const cases: [what: string, route: EnvoyRoute, field: string][] = [
    [
      "a value with CR LF",
      route({ requestHeadersToAdd: add("x-a", "v\r\nx-injected: 1") }),
      "virtualHosts[0].routes[0].requestHeadersToAdd[0].header.value",
    ],
    [
      "a value with NUL",
      route({ responseHeadersToAdd: add("x-a", "v\0") }),
      "virtualHosts[0].routes[0].responseHeadersToAdd[0].header.value",
    ],
    [
      "a name with a space",
      route({ requestHeadersToAdd: add("x a") }),
      "virtualHosts[0].routes[0].requestHeadersToAdd[0].header.key",
    ],
    [
      "the name :path",
      route({ requestHeadersToAdd: add(":path", "/admin") }),
      "virtualHosts[0].routes[0].requestHeadersToAdd[0].header.key",
    ],
    [
      "the name :authority",
      route({ requestHeadersToAdd: add(":authority", "evil") }),
      "virtualHosts[0].routes[0].requestHeadersToAdd[0].header.key",
    ],
    [
      "the name host",
      route({ requestHeadersToAdd: add("Host", "evil") }),
      "virtualHosts[0].routes[0].requestHeadersToAdd[0].header.key",
    ],
    [
      "removing :method",
      route({ requestHeadersToRemove: [":method"] }),
      "virtualHosts[0].routes[0].requestHeadersToRemove[0]",
    ],
    [
      "removing host",
      route({ requestHeadersToRemove: ["host"] }),
      "virtualHosts[0].routes[0].requestHeadersToRemove[0]",
    ],
    [
      "removing a name with a space",
      route({ responseHeadersToRemove: ["x a"] }),
      "virtualHosts[0].routes[0].responseHeadersToRemove[0]",
    ],
    [
      "a weighted cluster's header with LF",
      route(
        {},
        {
          cluster: undefined,
          weightedClusters: {
            clusters: [{ name: V1, weight: { value: 1 }, requestHeadersToAdd: add("x-a", "a\nb") }],
          },
        },
      ),
      "virtualHosts[0].routes[0].route.weightedClusters.clusters[0].requestHeadersToAdd[0].header.value",
    ],
    [
      "a host_rewrite_literal with CR LF",
      route({}, { hostRewriteLiteral: "web\r\nx-injected: 1" }),
      "virtualHosts[0].routes[0].route.hostRewriteLiteral",
    ],
  ];
  for (const [what, r, field] of cases) {
    it(`refuses ${what} with ERR_ROUTE_INVALID`, () => {
      assert.throws(
        () => compileEnvoyRouteConfiguration(config([r]), "demo"),
        (err: unknown) =>
          err instanceof RouterError && err.code === "ERR_ROUTE_INVALID" && err.details.field === field,
      );
    });
  }

  it("accepts ordinary names and values, and a host_rewrite_literal with a port", () => {
    const compiled = compileEnvoyRouteConfiguration(
      config([
        route(
          {
            requestHeadersToAdd: add("X-Tenant_ID.v2", "a b\tc;d=é"),
            requestHeadersToRemove: ["x-drop"],
          },
          { hostRewriteLiteral: "web.example:8080" },
        ),
      ]),
      "demo",
    );
    assert.equal(compiled.virtualHosts[0]?.routes[0]?.rule.rewrite?.hostname, "web.example:8080");
  });
});
