import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { compileEnvoyRouteConfiguration, type EnvoyRouteConfiguration } from "@ambient/router";
import { TypeUrl, typeRegistry } from "@ambient/xds";
import { parseManifests } from "./manifests.js";
import { type EnvoyConfig, outboundClusterName, translateEnvoy } from "./translate-envoy.js";
import { createTranslationMemo } from "./translate-memo.js";
import { translateMesh } from "./translate-mesh.js";

function translate(yaml: string): EnvoyConfig {
  const { objects, issues } = parseManifests([{ path: "m.yaml", text: yaml }]);
  assert.deepEqual(issues, []);
  return translateEnvoy(objects, translateMesh(objects));
}

const BASE = `
apiVersion: v1
kind: Node
metadata: { name: node-a, labels: { topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z1 } }
---
apiVersion: v1
kind: Node
metadata: { name: node-b, labels: { topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: z2 } }
---
apiVersion: v1
kind: Pod
metadata: { name: echo-0, namespace: demo, labels: { app: echo, version: v1 } }
spec: { nodeName: node-a, containers: [{ name: e, ports: [{ name: grpc, containerPort: 9000 }] }] }
status: { podIP: 127.10.0.3 }
---
apiVersion: v1
kind: Pod
metadata: { name: echo-1, namespace: demo, labels: { app: echo, version: v2 } }
spec: { nodeName: node-b, containers: [{ name: e, ports: [{ name: grpc, containerPort: 9000 }] }] }
status: { podIP: 127.10.0.4 }
---
apiVersion: v1
kind: Pod
metadata: { name: echo-2, namespace: demo, labels: { app: echo, version: v2 } }
spec: { nodeName: node-b, containers: [{ name: e, ports: [{ name: grpc, containerPort: 9000 }] }] }
status: { podIP: 127.10.0.5 }
---
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: demo }
spec: { clusterIP: 127.30.0.1, selector: { app: echo }, ports: [{ port: 80, targetPort: grpc }] }
---
apiVersion: v1
kind: Service
metadata: { name: echo-v1, namespace: demo }
spec: { clusterIP: None, selector: { app: echo, version: v1 }, ports: [{ port: 80, targetPort: 9000 }] }
---
apiVersion: v1
kind: Service
metadata: { name: echo-v2, namespace: demo }
spec: { clusterIP: None, selector: { app: echo, version: v2 }, ports: [{ port: 80, targetPort: 9000 }] }
`;
const ECHO = "echo.demo.svc.cluster.local";
const V1 = outboundClusterName("echo-v1.demo.svc.cluster.local", 80);
const V2 = outboundClusterName("echo-v2.demo.svc.cluster.local", 80);

function routesOf(config: EnvoyConfig, name = `${ECHO}:80`) {
  const rc = config.routeConfigurations.get(name);
  assert.ok(rc, name);
  return rc.virtualHosts?.[0]?.routes ?? [];
}

describe("translateEnvoy: resources per Service port", () => {
  const config = translate(BASE);

  it("names listeners and routes <host>:<port>, clusters and endpoints outbound|<port>||<host>", () => {
    const hosts = ["echo-v1.demo.svc.cluster.local", "echo-v2.demo.svc.cluster.local", ECHO];
    assert.deepEqual(
      [...config.listeners.keys()],
      hosts.map((h) => `${h}:80`),
    );
    assert.deepEqual(
      [...config.routeConfigurations.keys()],
      hosts.map((h) => `${h}:80`),
    );
    assert.deepEqual(
      [...config.clusters.keys()],
      hosts.map((h) => `outbound|80||${h}`),
    );
    assert.deepEqual(
      [...config.clusterLoadAssignments.keys()],
      hosts.map((h) => `outbound|80||${h}`),
    );
    assert.deepEqual(config.issues, []);
  });

  it("makes an API listener whose connection manager reads its routes over ADS and ends with the router", () => {
    const listener = config.listeners.get(`${ECHO}:80`);
    const any = listener?.apiListener?.apiListener;
    assert.ok(any?.typeUrl && any.value);
    const hcm = typeRegistry.unpack({ typeUrl: any.typeUrl, value: any.value }) as {
      rds: { routeConfigName: string; configSource: { ads?: object } };
      httpFilters: { name: string; typedConfig: { typeUrl: string } }[];
    };
    assert.equal(hcm.rds.routeConfigName, `${ECHO}:80`);
    assert.deepEqual(hcm.rds.configSource.ads, {});
    assert.equal(hcm.httpFilters.at(-1)?.typedConfig.typeUrl, TypeUrl.router);
  });

  it("routes everything to the Service when no route attaches, under istiod's host name variants", () => {
    const vh = config.routeConfigurations.get(`${ECHO}:80`)?.virtualHosts?.[0];
    assert.deepEqual(vh?.routes, [
      { name: "default", match: { prefix: "/" }, route: { cluster: `outbound|80||${ECHO}` } },
    ]);
    for (const d of [ECHO, `${ECHO}:80`, "echo", "echo.demo:80", "echo.demo.svc", "127.30.0.1:80"]) {
      assert.ok(vh?.domains?.includes(d), d);
    }
  });

  it("names a dual-stack Service's IPv6 VIP in brackets, with and without the port, as istiod does", () => {
    const dual = translate(
      BASE.replace(
        "spec: { clusterIP: 127.30.0.1,",
        'spec: { clusterIP: 127.30.0.1, clusterIPs: [127.30.0.1, "fd00:10:96::1"],',
      ),
    );
    const vh = dual.routeConfigurations.get(`${ECHO}:80`)?.virtualHosts?.[0];
    for (const d of ["127.30.0.1", "127.30.0.1:80", "[fd00:10:96::1]", "[fd00:10:96::1]:80"]) {
      assert.ok(vh?.domains?.includes(d), `${d} in ${JSON.stringify(vh?.domains)}`);
    }
  });

  it("makes EDS clusters and groups pods by their node's locality, each pod weighing 1", () => {
    const cluster = config.clusters.get(`outbound|80||${ECHO}`);
    assert.equal(cluster?.type, "EDS");
    assert.deepEqual(cluster?.edsClusterConfig?.edsConfig?.ads, {});
    const cla = config.clusterLoadAssignments.get(`outbound|80||${ECHO}`);
    assert.deepEqual(
      cla?.endpoints?.map((e) => ({
        locality: e.locality,
        weight: e.loadBalancingWeight?.value,
        ips: e.lbEndpoints?.map((l) => {
          const s = l.endpoint?.address?.socketAddress;
          return `${s?.address}:${s?.portValue}`;
        }),
      })),
      [
        { locality: { region: "r1", zone: "z1", subZone: "" }, weight: 1, ips: ["127.10.0.3:9000"] },
        {
          locality: { region: "r1", zone: "z2", subZone: "" },
          weight: 2,
          ips: ["127.10.0.4:9000", "127.10.0.5:9000"],
        },
      ],
    );
  });

  it("marks the endpoints of pods that are not Ready or are being deleted UNHEALTHY", () => {
    const yaml = BASE.replace(
      "status: { podIP: 127.10.0.4 }",
      `status: { podIP: 127.10.0.4, conditions: [{ type: Ready, status: "False" }] }`,
    ).replace(
      "metadata: { name: echo-2, namespace: demo, labels: { app: echo, version: v2 } }",
      "metadata: { name: echo-2, namespace: demo, labels: { app: echo, version: v2 }, deletionTimestamp: 2026-12-06T05:00:00Z }",
    );
    const cla = translate(yaml).clusterLoadAssignments.get(`outbound|80||${ECHO}`);
    assert.deepEqual(
      cla?.endpoints?.flatMap((e) =>
        (e.lbEndpoints ?? []).map((l) => [l.endpoint?.address?.socketAddress?.address, l.healthStatus]),
      ),
      [
        ["127.10.0.3", "HEALTHY"],
        ["127.10.0.4", "UNHEALTHY"],
        ["127.10.0.5", "UNHEALTHY"],
      ],
    );
  });

  it("gives a host-network pod's endpoint its node's address", () => {
    const yaml = BASE.replace(
      "spec: { nodeName: node-b, containers: [{ name: e, ports: [{ name: grpc, containerPort: 9000 }] }] }\nstatus: { podIP: 127.10.0.5 }",
      "spec: { nodeName: node-b, hostNetwork: true, containers: [{ name: e, ports: [{ name: grpc, containerPort: 9000 }] }] }\nstatus: { podIP: 192.168.0.2 }",
    );
    assert.notEqual(yaml, BASE);
    const cla = translate(yaml).clusterLoadAssignments.get(`outbound|80||${ECHO}`);
    assert.deepEqual(
      cla?.endpoints?.flatMap((e) =>
        (e.lbEndpoints ?? []).map((l) => {
          const a = l.endpoint?.address?.socketAddress;
          return `${a?.address}:${a?.portValue}`;
        }),
      ),
      ["127.10.0.3:9000", "127.10.0.4:9000", "192.168.0.2:9000"],
    );
  });

  it("marks every endpoint HEALTHY for a Service that publishes not-ready addresses", () => {
    const yaml = BASE.replace(
      "status: { podIP: 127.10.0.4 }",
      `status: { podIP: 127.10.0.4, conditions: [{ type: Ready, status: "False" }] }`,
    ).replace(
      "spec: { clusterIP: 127.30.0.1, selector: { app: echo }, ports: [{ port: 80, targetPort: grpc }] }",
      "spec: { clusterIP: 127.30.0.1, selector: { app: echo }, ports: [{ port: 80, targetPort: grpc }], publishNotReadyAddresses: true }",
    );
    const config = translate(yaml);
    const health = (cluster: string) =>
      config.clusterLoadAssignments
        .get(cluster)
        ?.endpoints?.flatMap((e) => (e.lbEndpoints ?? []).map((l) => l.healthStatus));
    assert.deepEqual(health(`outbound|80||${ECHO}`), ["HEALTHY", "HEALTHY", "HEALTHY"]);
    // The same pod behind a Service that does not: still UNHEALTHY there.
    assert.deepEqual(health(V2), ["UNHEALTHY", "HEALTHY"]);
  });

  it("holds a load assignment's inputs, not its endpoint messages, and encodes it as the message", () => {
    const cla = config.clusterLoadAssignments.get(`outbound|80||${ECHO}`);
    assert.ok(cla !== undefined);
    // Built when read: two reads are two lists; the only own field is the cluster name.
    assert.notEqual(cla.endpoints, cla.endpoints);
    assert.deepEqual(cla.endpoints, cla.endpoints);
    assert.deepEqual(Object.keys(cla), ["clusterName"]);
    const plain = JSON.parse(JSON.stringify(cla));
    assert.equal(plain.endpoints.length, 2);
    assert.deepEqual(
      Buffer.from(typeRegistry.encode(TypeUrl.clusterLoadAssignment, cla)),
      Buffer.from(typeRegistry.encode(TypeUrl.clusterLoadAssignment, plain)),
    );
  });

  it("produces resources that encode (what the cache stores)", () => {
    for (const [map, type] of [
      [config.listeners, TypeUrl.listener],
      [config.routeConfigurations, TypeUrl.routeConfiguration],
      [config.clusters, TypeUrl.cluster],
      [config.clusterLoadAssignments, TypeUrl.clusterLoadAssignment],
    ] as const) {
      for (const value of map.values()) assert.ok(typeRegistry.encode(type, value as never).length > 0);
    }
  });
});

const grpcRoute = (rules: string, name = "echo") => `
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: ${name}, namespace: demo }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, port: 80 }]
  rules:
${rules}`;
const httpRoute = (rules: string, name = "web") => `
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${name}, namespace: demo }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo }]
  rules:
${rules}`;

describe("translateEnvoy: routes", () => {
  const cases: { name: string; yaml: string; routes: unknown[]; issues?: RegExp[] }[] = [
    {
      name: "GRPCRoute weights become weighted clusters",
      yaml: grpcRoute(
        `    - backendRefs: [{ name: echo-v1, port: 80, weight: 1 }, { name: echo-v2, port: 80, weight: 3 }]`,
      ),
      routes: [
        {
          name: "demo.echo.0.0",
          match: { prefix: "/" },
          route: {
            weightedClusters: {
              clusters: [
                { name: V1, weight: { value: 1 } },
                { name: V2, weight: { value: 3 } },
              ],
            },
          },
        },
      ],
    },
    {
      name: "a header match ranks before the catch-all rule, whatever the rule order",
      yaml: grpcRoute(`    - backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ headers: [{ name: X-Version, value: v2 }] }]
      backendRefs: [{ name: echo-v2, port: 80 }]`),
      routes: [
        {
          name: "demo.echo.1.0",
          match: { prefix: "/", headers: [{ name: "x-version", stringMatch: { exact: "v2" } }] },
          route: { cluster: V2 },
        },
        { name: "demo.echo.0.0", match: { prefix: "/" }, route: { cluster: V1 } },
      ],
    },
    {
      name: "gRPC service and method matches become paths (exact > prefix > regex)",
      yaml: grpcRoute(`    - matches: [{ method: { method: Who } }]
      backendRefs: [{ name: echo-v2, port: 80 }]
    - matches: [{ method: { service: test.Echo } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ method: { service: test.Echo, method: Who } }]
      backendRefs: [{ name: echo-v2, port: 80 }]`),
      routes: [
        { name: "demo.echo.2.0", match: { path: "/test.Echo/Who" }, route: { cluster: V2 } },
        { name: "demo.echo.1.0", match: { prefix: "/test.Echo/" }, route: { cluster: V1 } },
        { name: "demo.echo.0.0", match: { safeRegex: { regex: "/[^/]+/Who" } }, route: { cluster: V2 } },
      ],
    },
    {
      name: "PathPrefix matches whole segments: the path itself and below it",
      yaml: httpRoute(`    - matches: [{ path: { type: PathPrefix, value: /api/ }, method: GET }]
      backendRefs: [{ name: echo-v1, port: 80 }]`),
      routes: [
        {
          name: "demo.web.0.0.0",
          match: { path: "/api", headers: [{ name: ":method", stringMatch: { exact: "GET" } }] },
          route: { cluster: V1 },
        },
        {
          name: "demo.web.0.0.1",
          match: { prefix: "/api/", headers: [{ name: ":method", stringMatch: { exact: "GET" } }] },
          route: { cluster: V1 },
        },
      ],
    },
    {
      name: "header edits, query matches, timeouts and retries",
      yaml: httpRoute(`    - matches: [{ path: { type: Exact, value: /x }, queryParams: [{ type: RegularExpression, name: q, value: "a+" }] }]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: X-A, value: "1" }], add: [{ name: x-b, value: "2" }], remove: [X-C] }
        - type: ResponseHeaderModifier
          responseHeaderModifier: { remove: [server] }
      backendRefs: [{ name: echo-v1, port: 80 }]
      timeouts: { request: 10s, backendRequest: 2500ms }
      retry: { attempts: 3, codes: [503], backoff: 100ms }`),
      routes: [
        {
          name: "demo.web.0.0",
          match: {
            path: "/x",
            queryParameters: [{ name: "q", stringMatch: { safeRegex: { regex: "a+" } } }],
          },
          route: {
            cluster: V1,
            timeout: { seconds: 10, nanos: 0 },
            retryPolicy: {
              retryOn: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
              numRetries: { value: 3 },
              retriableStatusCodes: [503],
              perTryTimeout: { seconds: 2, nanos: 500_000_000 },
              retryBackOff: { baseInterval: { seconds: 0, nanos: 100_000_000 } },
            },
          },
          requestHeadersToAdd: [
            { header: { key: "x-a", value: "1" }, appendAction: "OVERWRITE_IF_EXISTS_OR_ADD" },
            { header: { key: "x-b", value: "2" }, appendAction: "APPEND_IF_EXISTS_OR_ADD" },
          ],
          requestHeadersToRemove: ["x-c"],
          responseHeadersToRemove: ["server"],
        },
      ],
    },
    {
      name: "redirect and rewrite keep the rest of a segment prefix",
      yaml: httpRoute(`    - matches: [{ path: { type: PathPrefix, value: /old } }]
      filters: [{ type: RequestRedirect, requestRedirect: { scheme: https, statusCode: 301, path: { type: ReplacePrefixMatch, replacePrefixMatch: /new } } }]
    - matches: [{ path: { type: PathPrefix, value: /v1 } }]
      filters: [{ type: URLRewrite, urlRewrite: { hostname: internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: / } } }]
      backendRefs: [{ name: echo-v1, port: 80 }]`),
      routes: [
        {
          name: "demo.web.0.0.0",
          match: { path: "/old" },
          redirect: {
            schemeRedirect: "https",
            portRedirect: 443,
            responseCode: "MOVED_PERMANENTLY",
            prefixRewrite: "/new",
          },
        },
        {
          name: "demo.web.0.0.1",
          match: { prefix: "/old/" },
          redirect: {
            schemeRedirect: "https",
            portRedirect: 443,
            responseCode: "MOVED_PERMANENTLY",
            prefixRewrite: "/new/",
          },
        },
        {
          name: "demo.web.1.0.0",
          match: { path: "/v1" },
          route: { cluster: V1, hostRewriteLiteral: "internal", prefixRewrite: "/" },
        },
        {
          name: "demo.web.1.0.1",
          match: { prefix: "/v1/" },
          route: { cluster: V1, hostRewriteLiteral: "internal", prefixRewrite: "/" },
        },
      ],
    },
    {
      name: "a mirror at 10 % and a backend with its own header edit",
      yaml: httpRoute(`    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: echo-v2, port: 80 }, percent: 10 } }]
      backendRefs:
        - name: echo-v1
          port: 80
          filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { add: [{ name: x-v, value: "1" }] } }]`),
      routes: [
        {
          name: "demo.web.0.0",
          match: { prefix: "/" },
          route: {
            weightedClusters: {
              clusters: [
                {
                  name: V1,
                  weight: { value: 1 },
                  requestHeadersToAdd: [
                    { header: { key: "x-v", value: "1" }, appendAction: "APPEND_IF_EXISTS_OR_ADD" },
                  ],
                },
              ],
            },
            requestMirrorPolicies: [
              { cluster: V2, runtimeFraction: { defaultValue: { numerator: 10, denominator: "HUNDRED" } } },
            ],
          },
        },
      ],
    },
    {
      name: "no usable backend answers 500 and says why",
      yaml: httpRoute(`    - backendRefs: [{ name: nowhere, port: 80 }]
    - matches: [{ path: { type: Exact, value: /zero } }]
      backendRefs: [{ name: echo-v1, port: 80, weight: 0 }]`),
      routes: [
        { name: "demo.web.1.0", match: { path: "/zero" }, directResponse: { status: 500 } },
        { name: "demo.web.0.0", match: { prefix: "/" }, directResponse: { status: 500 } },
      ],
      issues: [/no Service port nowhere\.demo\.svc\.cluster\.local:80/],
    },
    {
      name: "an invalid backendRef keeps its weight, as the cluster the waypoint answers 500 for",
      yaml: httpRoute(`    - matches: [{ path: { type: Exact, value: /unknown } }]
      backendRefs: [{ name: echo-v1, port: 80 }, { name: nowhere, port: 80 }]
    - matches: [{ path: { type: Exact, value: /kind } }]
      backendRefs: [{ name: echo-v1, port: 80, weight: 3 }, { group: example.com, kind: Foo, name: x }]
    - matches: [{ path: { type: Exact, value: /port } }]
      backendRefs: [{ name: echo-v1, port: 80 }, { name: echo-v2, port: 9999 }]
    - matches: [{ path: { type: Exact, value: /grant } }]
      backendRefs: [{ name: echo-v1, port: 80 }, { name: cart, namespace: shop, port: 80, weight: 0 }, { name: cart, namespace: shop, port: 80, weight: 2 }]`),
      routes: [
        ["unknown", 0, 1, 1],
        ["grant", 3, 1, 2],
        ["kind", 1, 3, 1],
        ["port", 2, 1, 1],
      ].map(([path, rule, valid, invalid]) => ({
        name: `demo.web.${rule}.0`,
        match: { path: `/${path}` },
        route: {
          weightedClusters: {
            clusters: [
              { name: V1, weight: { value: valid } },
              { name: "invalid-backend", weight: { value: invalid } },
            ],
          },
        },
      })),
      issues: [
        /backendRefs\[1\]: no Service port nowhere\.demo\.svc\.cluster\.local:80/,
        /backendRefs\[1\]: only Service and networking\.istio\.io Hostname backends/,
        /backendRefs\[1\]: no Service port echo-v2\.demo\.svc\.cluster\.local:9999/,
        /backendRefs\[1\]: a backend in another namespace is not allowed/,
        /backendRefs\[2\]: a backend in another namespace is not allowed/,
      ],
    },
    {
      name: "GRPCRoute precedence: service characters, then method characters, then headers",
      yaml: grpcRoute(`    - backendRefs: [{ name: echo-v2, port: 80 }]
    - matches: [{ headers: [{ name: x-a, value: "1" }] }]
      backendRefs: [{ name: echo-v2, port: 80 }]
    - matches: [{ method: { method: Baz } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ method: { type: RegularExpression, service: "foo\\\\.Bar", method: "Ba.*" } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ method: { service: foo.Bar, method: Baz } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ method: { type: RegularExpression, service: "foo\\\\.Bar\\\\.v2" } }]
      backendRefs: [{ name: echo-v2, port: 80 }]`),
      routes: [
        // Service "foo\\.Bar\\.v2" (11 characters) before "foo.Bar" (7), regex or not.
        {
          name: "demo.echo.5.0",
          match: { safeRegex: { regex: "/foo\\.Bar\\.v2/[^/]+" } },
          route: { cluster: V2 },
        },
        // Service "foo\\.Bar" (8) and method "Ba.*" (4) before "foo.Bar" (7) and "Baz" (3).
        { name: "demo.echo.3.0", match: { safeRegex: { regex: "/foo\\.Bar/Ba.*" } }, route: { cluster: V1 } },
        { name: "demo.echo.4.0", match: { path: "/foo.Bar/Baz" }, route: { cluster: V1 } },
        // A method alone before a rule without a method match, headers or not.
        { name: "demo.echo.2.0", match: { safeRegex: { regex: "/[^/]+/Baz" } }, route: { cluster: V1 } },
        {
          name: "demo.echo.1.0",
          match: { prefix: "/", headers: [{ name: "x-a", stringMatch: { exact: "1" } }] },
          route: { cluster: V2 },
        },
        { name: "demo.echo.0.0", match: { prefix: "/" }, route: { cluster: V2 } },
      ],
    },
    {
      name: "a rule the router cannot take answers 500; the route's other rules keep working",
      yaml: httpRoute(`    - matches: [{ path: { type: PathPrefix, value: /api } }]
      filters: [{ type: CORS, cors: { allowOrigins: ["https://a.example"] } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ path: { type: PathPrefix, value: /admin } }]
      filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: X-A, value: "1" }, { name: x-a, value: "2" }] } }]
      backendRefs: [{ name: echo-v2, port: 80 }]
    - matches: [{ path: { type: RegularExpression, value: "/(x" } }, { path: { type: Exact, value: /h }, headers: [{ type: RegularExpression, name: x-h, value: "[" }, { name: x-k, value: k }] }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ path: { type: Exact, value: /w } }]
      backendRefs: [{ name: echo-v1, port: 80, weight: -1 }]
    - matches: [{ path: { type: Exact, value: /e } }]
      filters: [{ type: ExtensionRef, extensionRef: { group: example.com, kind: F, name: f } }]
      backendRefs: [{ name: echo-v1, port: 80 }]`),
      routes: [
        // A header match the router cannot read is left out: the rule answers for more, never less.
        {
          name: "demo.web.2.1",
          match: { path: "/h", headers: [{ name: "x-k", stringMatch: { exact: "k" } }] },
          directResponse: { status: 500 },
        },
        { name: "demo.web.3.0", match: { path: "/w" }, directResponse: { status: 500 } },
        { name: "demo.web.4.0", match: { path: "/e" }, directResponse: { status: 500 } },
        {
          name: "demo.web.1.0.0",
          match: { path: "/admin" },
          route: { cluster: V2 },
          requestHeadersToAdd: [
            { header: { key: "x-a", value: "1" }, appendAction: "OVERWRITE_IF_EXISTS_OR_ADD" },
          ],
        },
        {
          name: "demo.web.1.0.1",
          match: { prefix: "/admin/" },
          route: { cluster: V2 },
          requestHeadersToAdd: [
            { header: { key: "x-a", value: "1" }, appendAction: "OVERWRITE_IF_EXISTS_OR_ADD" },
          ],
        },
        { name: "demo.web.0.0.0", match: { path: "/api" }, directResponse: { status: 500 } },
        { name: "demo.web.0.0.1", match: { prefix: "/api/" }, directResponse: { status: 500 } },
        // A path regex the router cannot read answers 500 for any path, still ranked as a regex.
        { name: "demo.web.2.0", match: { prefix: "/" }, directResponse: { status: 500 } },
      ],
      issues: [
        /spec\.rules\[0\]: answers 500: .*filter CORS is not supported/,
        /spec\.rules\[2\]: answers 500: .*spec\.rules\[2\]\.matches\[0\]\.path\.value/,
        /spec\.rules\[3\]: answers 500: .*backendRefs\[0\]\.weight/,
        /spec\.rules\[4\]: answers 500: .*filter ExtensionRef is not supported/,
      ],
    },
    {
      name: "backendRequest bounds the route without retries; attempts 0 turns retries off",
      yaml: httpRoute(`    - matches: [{ path: { type: Exact, value: /t } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
      timeouts: { request: 5s, backendRequest: 200ms }
    - matches: [{ path: { type: Exact, value: /u } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
      timeouts: { request: 0s, backendRequest: 300ms }
    - matches: [{ path: { type: Exact, value: /r } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
      timeouts: { request: 5s, backendRequest: 1s }
      retry: { attempts: 0 }`),
      routes: [
        {
          name: "demo.web.0.0",
          match: { path: "/t" },
          route: { cluster: V1, timeout: { seconds: 0, nanos: 200_000_000 } },
        },
        {
          name: "demo.web.1.0",
          match: { path: "/u" },
          route: { cluster: V1, timeout: { seconds: 0, nanos: 300_000_000 } },
        },
        {
          name: "demo.web.2.0",
          match: { path: "/r" },
          route: {
            cluster: V1,
            timeout: { seconds: 5, nanos: 0 },
            retryPolicy: { numRetries: { value: 0 }, perTryTimeout: { seconds: 1, nanos: 0 } },
          },
        },
      ],
    },
    {
      name: "ReplacePrefixMatch drops a replacement's trailing / on the prefix itself, as Istio",
      yaml: httpRoute(`    - matches: [{ path: { type: PathPrefix, value: /foo } }]
      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /xyz/ } } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ path: { type: PathPrefix, value: /bar } }]
      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: "" } } }]
      backendRefs: [{ name: echo-v1, port: 80 }]`),
      routes: [
        { name: "demo.web.0.0.0", match: { path: "/foo" }, route: { cluster: V1, prefixRewrite: "/xyz" } },
        {
          name: "demo.web.0.0.1",
          match: { prefix: "/foo/" },
          route: { cluster: V1, prefixRewrite: "/xyz/" },
        },
        // An empty replacement is "/" (Gateway API: /foo becomes /, /foo/bar becomes /bar).
        { name: "demo.web.1.0.0", match: { path: "/bar" }, route: { cluster: V1, prefixRewrite: "/" } },
        { name: "demo.web.1.0.1", match: { prefix: "/bar/" }, route: { cluster: V1, prefixRewrite: "/" } },
      ],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const config = translate(BASE + c.yaml);
      assert.deepEqual(routesOf(config), c.routes);
      assert.deepEqual(
        config.issues.map((i) => i.message),
        config.issues.map((i, n) =>
          c.issues?.[n]?.test(i.message) ? i.message : `unexpected: ${i.message}`,
        ),
      );
      assert.equal(config.issues.length, c.issues?.length ?? 0);
      // Other Service ports keep their default route.
      assert.equal(routesOf(config, "echo-v1.demo.svc.cluster.local:80")[0]?.name, "default");
      for (const rc of config.routeConfigurations.values())
        typeRegistry.encode(TypeUrl.routeConfiguration, rc);
    });
  }

  it("reports an invalid route and a consumer route instead of translating them", () => {
    const config = translate(
      `${BASE}${grpcRoute("    - backendRefs: [{ name: echo-v1, port: 80 }]", "bad").replace("spec:", "spec:\n  hostnames: [10.0.0.1]")}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: consumer, namespace: other }
spec:
  parentRefs: [{ group: "", kind: Service, name: echo, namespace: demo }]
  rules: [{ backendRefs: [{ name: echo-v1, port: 80 }] }]
`,
    );
    assert.equal(routesOf(config)[0]?.name, "default");
    assert.deepEqual(
      config.issues.map((i) => i.source),
      ["GRPCRoute/demo/bad", "HTTPRoute/other/consumer"],
    );
  });
});

describe("translateEnvoy: Host in header modifiers", () => {
  // As istiod translates them: setting Host (or adding it) is the route's host rewrite, never a
  // header edit, which a waypoint refuses (Envoy cannot edit host or a pseudo-header); removing it
  // is left out. A URLRewrite hostname wins over it.
  const rules = `    - matches: [{ path: { type: PathPrefix, value: /set } }]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: Host, value: set.example }, { name: x-a, value: "1" }], add: [{ name: host, value: add.example }], remove: [Host, x-b] }
        - type: ResponseHeaderModifier
          responseHeaderModifier: { set: [{ name: host, value: r.example }], remove: [host, x-c] }
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ path: { type: PathPrefix, value: /add } }]
      filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { add: [{ name: Host, value: add.example }] } }]
      backendRefs: [{ name: echo-v1, port: 80 }]
    - matches: [{ path: { type: PathPrefix, value: /rewrite } }]
      filters:
        - { type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: Host, value: set.example }] } }
        - { type: URLRewrite, urlRewrite: { hostname: rewrite.example } }
      backendRefs: [{ name: echo-v1, port: 80 }]`;
  const config = translate(BASE + httpRoute(rules));

  it("is the route's host rewrite, never a host header edit", () => {
    // PathPrefix /x is two routes, `/x` exactly and `/x/` as prefix: the exact one stands for both.
    const byPath = new Map(routesOf(config).map((r) => [r.match?.path, r]));
    const set = byPath.get("/set");
    assert.equal(set?.route?.hostRewriteLiteral, "set.example");
    assert.deepEqual(
      set?.requestHeadersToAdd?.map((h) => h.header?.key),
      ["x-a"],
    );
    assert.deepEqual(set?.requestHeadersToRemove, ["x-b"]);
    assert.equal(set?.responseHeadersToAdd, undefined);
    assert.deepEqual(set?.responseHeadersToRemove, ["x-c"]);
    assert.equal(byPath.get("/add")?.route?.hostRewriteLiteral, "add.example");
    assert.equal(byPath.get("/add")?.requestHeadersToAdd, undefined);
    assert.equal(byPath.get("/rewrite")?.route?.hostRewriteLiteral, "rewrite.example");
  });

  it("gives the waypoint's router a configuration it compiles", () => {
    const rc = config.routeConfigurations.get(`${ECHO}:80`);
    assert.ok(rc);
    compileEnvoyRouteConfiguration(rc as unknown as EnvoyRouteConfiguration, "demo");
  });
});

describe("translateEnvoy: what an edit changes", () => {
  const changed = (a: EnvoyConfig, b: EnvoyConfig): string[] => {
    const out: string[] = [];
    for (const key of ["listeners", "routeConfigurations", "clusters", "clusterLoadAssignments"] as const) {
      const names = new Set([...a[key].keys(), ...b[key].keys()]);
      for (const n of names) {
        if (JSON.stringify(a[key].get(n)) !== JSON.stringify(b[key].get(n))) out.push(`${key}:${n}`);
      }
    }
    return out;
  };

  it("a pod IP change touches the endpoints of its Services only", () => {
    const before = translate(BASE);
    const after = translate(BASE.replace("127.10.0.3", "127.10.0.9"));
    assert.deepEqual(changed(before, after), [
      `clusterLoadAssignments:${V1}`,
      `clusterLoadAssignments:outbound|80||${ECHO}`,
    ]);
  });

  it("a route edit touches that Service port's RouteConfiguration only", () => {
    const before = translate(BASE + grpcRoute("    - backendRefs: [{ name: echo-v1, port: 80 }]"));
    const after = translate(BASE + grpcRoute("    - backendRefs: [{ name: echo-v2, port: 80 }]"));
    assert.deepEqual(changed(before, after), [`routeConfigurations:${ECHO}:80`]);
  });

  it("is pure: the same manifests give the same resources", () => {
    assert.deepEqual(changed(translate(BASE), translate(BASE)), []);
  });
});

describe("translateEnvoy: backends in another namespace (ReferenceGrant)", () => {
  /** A Service of namespace `shop`, and the routes of `demo` that send to it. */
  const SHOP = `
---
apiVersion: v1
kind: Service
metadata: { name: cart, namespace: shop }
spec: { clusterIP: 127.30.0.9, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: orders, namespace: shop }
spec: { clusterIP: 127.30.0.10, ports: [{ port: 80 }] }
`;
  const CART = outboundClusterName("cart.shop.svc.cluster.local", 80);
  const toCart = httpRoute("    - backendRefs: [{ name: cart, namespace: shop, port: 80 }]");
  const grpcToCart = grpcRoute("    - backendRefs: [{ name: cart, namespace: shop, port: 80 }]");
  const grant = (
    from: { group?: string; kind?: string; namespace?: string },
    to: { group?: string; kind?: string; name?: string } = {},
    namespace = "shop",
    apiVersion = "gateway.networking.k8s.io/v1beta1",
  ) => `
---
apiVersion: ${apiVersion}
kind: ReferenceGrant
metadata: { name: from-demo, namespace: ${namespace} }
spec:
  from: [{ group: ${JSON.stringify(from.group ?? "gateway.networking.k8s.io")}, kind: ${from.kind ?? "HTTPRoute"}, namespace: ${from.namespace ?? "demo"} }]
  to: [{ group: ${JSON.stringify(to.group ?? "")}, kind: ${to.kind ?? "Service"}${to.name === undefined ? "" : `, name: ${to.name}`} }]
`;
  const refused = [{ name: "demo.web.0.0", match: { prefix: "/" }, directResponse: { status: 500 } }];

  it("refuses the backend without a grant, and says so", () => {
    const config = translate(BASE + SHOP + toCart);
    assert.deepEqual(routesOf(config), refused);
    assert.equal(config.issues.length, 1);
    assert.equal(config.issues[0]?.source, "HTTPRoute/demo/web");
    assert.match(
      config.issues[0]?.message ?? "",
      /backendRefs\[0\]: a backend in another namespace is not allowed/,
    );
  });

  it("sends to it when a grant in its namespace names the route's kind and namespace", () => {
    for (const to of [{}, { name: "cart" }]) {
      const config = translate(BASE + SHOP + toCart + grant({}, to));
      assert.deepEqual(routesOf(config), [
        { name: "demo.web.0.0", match: { prefix: "/" }, route: { cluster: CART } },
      ]);
      assert.deepEqual(config.issues, []);
    }
    const grpc = translate(BASE + SHOP + grpcToCart + grant({ kind: "GRPCRoute" }));
    assert.deepEqual(routesOf(grpc), [
      { name: "demo.echo.0.0", match: { prefix: "/" }, route: { cluster: CART } },
    ]);
    // A mirror to another namespace is a reference like any other.
    const mirror =
      httpRoute(`    - filters: [{ type: RequestMirror, requestMirror: { backendRef: { name: cart, namespace: shop, port: 80 } } }]
      backendRefs: [{ name: echo-v1, port: 80 }]`);
    assert.deepEqual(routesOf(translate(BASE + SHOP + mirror + grant({}))), [
      {
        name: "demo.web.0.0",
        match: { prefix: "/" },
        route: { cluster: V1, requestMirrorPolicies: [{ cluster: CART }] },
      },
    ]);
    const unmirrored = translate(BASE + SHOP + mirror);
    assert.deepEqual(routesOf(unmirrored), [
      { name: "demo.web.0.0", match: { prefix: "/" }, route: { cluster: V1 } },
    ]);
    assert.equal(unmirrored.issues.length, 1);
  });

  it("refuses it when the grant names another route kind, namespace, Service, group or place", () => {
    const cases: [string, string][] = [
      ["another route kind", grant({ kind: "GRPCRoute" })],
      ["another route group", grant({ group: "networking.istio.io" })],
      ["another route namespace", grant({ namespace: "elsewhere" })],
      ["another Service", grant({}, { name: "orders" })],
      ["another target kind", grant({}, { kind: "Secret" })],
      ["another target group", grant({}, { group: "networking.istio.io" })],
      ["a grant in the route's namespace", grant({}, {}, "demo")],
      ["a grant in a third namespace", grant({}, {}, "elsewhere")],
      ["a kind of another API group", grant({}, {}, "shop", "reference.k8s.io/v1alpha1")],
    ];
    for (const [name, yaml] of cases) {
      const config = translate(BASE + SHOP + toCart + yaml);
      assert.deepEqual(routesOf(config), refused, name);
      assert.ok(
        config.issues.some((i) => /a backend in another namespace is not allowed/.test(i.message)),
        name,
      );
    }
    // A GRPCRoute is not an HTTPRoute.
    assert.deepEqual(routesOf(translate(BASE + SHOP + grpcToCart + grant({})))[0]?.directResponse, {
      status: 500,
    });
  });

  it("reads a grant whose spec is not what the API allows as granting nothing", () => {
    const bad = `
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: bad, namespace: shop }
spec: { from: { group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: demo }, to: [{ group: "", kind: Service }] }
`;
    const config = translate(BASE + SHOP + toCart + bad);
    assert.deepEqual(routesOf(config), refused);
    assert.ok(
      config.issues.some((i) => i.source === "ReferenceGrant/shop/bad"),
      JSON.stringify(config.issues),
    );
  });

  it("takes the backend away again once the grant is gone, with a memo too", () => {
    const parse = (yaml: string) => parseManifests([{ path: "m.yaml", text: yaml }]).objects;
    const granted = parse(BASE + SHOP + toCart + grant({}));
    const revoked = granted.filter((o) => o.kind !== "ReferenceGrant");
    // Grants are no part of the mesh's Address resources: one mesh serves both object lists, so only
    // the grant itself can tell the memo that the routes must be translated again.
    const mesh = translateMesh(granted);
    assert.deepEqual(translateMesh(revoked), mesh);
    const memo = createTranslationMemo();
    assert.equal(routesOf(translateEnvoy(granted, mesh, {}, memo))[0]?.route?.cluster, CART);
    const second = translateEnvoy(revoked, mesh, {}, memo);
    assert.deepEqual(routesOf(second), refused);
    assert.equal(second.issues.length, 1);
    assert.equal(routesOf(translateEnvoy(granted, mesh, {}, memo))[0]?.route?.cluster, CART);
  });
});
