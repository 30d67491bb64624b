import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { noopLogger, WorkloadStore } from "@ambient/example-ztunnel";
import { createAuthorizationEngine } from "@ambient/policy";
import type { RouteTable } from "@ambient/router";
import {
  createXdsClient,
  createXdsServer,
  type MessageInit,
  type Service,
  structFromJson,
  TypeUrl,
  type WaypointPolicy,
  type XdsChangeEvent,
  type XdsClient,
  type XdsServer,
} from "@ambient/xds";
import { withWaypointClassTarget } from "./policy-targets.js";
import { RequestAuthenticationStore } from "./request-authentication.js";
import {
  appliesTo,
  boundRouteNames,
  isBoundTo,
  policyObject,
  resourceProblem,
  type WaypointSelf,
  WaypointXdsConfig,
  waypointXdsChecks,
} from "./xds-config.js";

const SELF: WaypointSelf = { gateway: { name: "waypoint", namespace: "shop" }, ip: "127.0.0.6" };
const WEB_ROUTES = "inbound-vip|80|http|web.shop.svc.cluster.local";
const V1 = "outbound|80||web-v1.shop.svc.cluster.local";
const V2 = "outbound|80||web-v2.shop.svc.cluster.local";

function service(name: string, waypoint?: Service["waypoint"], ports = [80]): Service {
  return {
    name,
    namespace: "shop",
    hostname: `${name}.shop.svc.cluster.local`,
    addresses: [],
    ports: ports.map((p) => ({ servicePort: p, targetPort: 8080, appProtocol: "UNKNOWN" })),
    subjectAltNames: [],
    ...(waypoint === undefined ? {} : { waypoint }),
  } as unknown as Service;
}
const byIp = (ip: string) => ({
  address: { network: "", address: new Uint8Array(ip.split(".").map(Number)) },
  hboneMtlsPort: 15008,
});

describe("which Services a waypoint serves", () => {
  const cases: [string, Service["waypoint"], boolean][] = [
    ["its own IP", byIp("127.0.0.6"), true],
    ["another waypoint's IP", byIp("127.0.0.9"), false],
    [
      "its own IP as an IPv4-mapped IPv6 address (::ffff:127.0.0.6)",
      {
        address: {
          network: "",
          address: new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 127, 0, 0, 6]),
        },
        hboneMtlsPort: 15008,
      },
      true,
    ],
    [
      "a 16-byte address that is not IPv4-mapped",
      {
        address: { network: "", address: new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 6]) },
        hboneMtlsPort: 15008,
      },
      false,
    ],
    [
      "a 5-byte address",
      { address: { network: "", address: new Uint8Array([127, 0, 0, 6, 0]) }, hboneMtlsPort: 15008 },
      false,
    ],
    [
      "its Gateway's host name",
      {
        hostname: { namespace: "shop", hostname: "waypoint.shop.svc.cluster.local" },
        hboneMtlsPort: 15008,
      } as Service["waypoint"],
      true,
    ],
    [
      "a same-named Gateway of another namespace",
      {
        hostname: { namespace: "other", hostname: "waypoint.other.svc.cluster.local" },
        hboneMtlsPort: 15008,
      } as Service["waypoint"],
      false,
    ],
    ["no waypoint", undefined, false],
  ];
  for (const [what, waypoint, bound] of cases) {
    it(what, () => assert.equal(isBoundTo(service("web", waypoint), SELF), bound));
  }
  it("subscribes to the routes of every port of the bound Services only", () => {
    assert.deepEqual(
      boundRouteNames(
        [service("web", byIp("127.0.0.6"), [80, 9090]), service("echo"), service("db", byIp("127.0.0.9"))],
        SELF,
      ),
      [WEB_ROUTES, "inbound-vip|9090|http|web.shop.svc.cluster.local"],
    );
  });

  it("subscribes to the routes of a ServiceEntry host bound to it", () => {
    const entry = { ...service("httpbin", byIp("127.0.0.6")), hostname: "httpbin.example.org" } as Service;
    assert.deepEqual(boundRouteNames([entry, service("web")], SELF), [
      "inbound-vip|80|http|httpbin.example.org",
    ]);
  });
});

describe("resourceProblem (the NACK decision)", () => {
  const policy = (kind: string, spec: Record<string, unknown>): WaypointPolicy =>
    ({
      kind,
      apiVersion: "security.istio.io/v1",
      name: "p",
      namespace: "shop",
      spec: structFromJson(spec as never),
    }) as WaypointPolicy;
  const cases: [string, string, string, unknown, RegExp | undefined][] = [
    [
      "a good route",
      TypeUrl.routeConfiguration,
      WEB_ROUTES,
      { virtualHosts: [{ domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: V1 } }] }] },
      undefined,
    ],
    [
      "a route name that names no Service port",
      TypeUrl.routeConfiguration,
      "web.shop.svc.cluster.local:80",
      { virtualHosts: [] },
      /not a waypoint route name/,
    ],
    [
      "a route the router cannot follow",
      TypeUrl.routeConfiguration,
      WEB_ROUTES,
      {
        virtualHosts: [
          { domains: ["*"], routes: [{ match: { prefix: "/" }, route: { clusterHeader: "x" } }] },
        ],
      },
      /only cluster and weightedClusters/,
    ],
    [
      "a valid AuthorizationPolicy",
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/p",
      policy("AuthorizationPolicy", {
        action: "DENY",
        rules: [{ to: [{ operation: { methods: ["POST"] } }] }],
      }),
      undefined,
    ],
    [
      "an AuthorizationPolicy with an unknown action",
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/p",
      policy("AuthorizationPolicy", { action: "MAYBE" }),
      /action/,
    ],
    [
      "a RequestAuthentication without issuer",
      TypeUrl.waypointPolicy,
      "RequestAuthentication/shop/p",
      policy("RequestAuthentication", { jwtRules: [{ jwksUri: "http://127.0.0.1:1/k" }] }),
      /issuer is required/,
    ],
    [
      "a RequestAuthentication whose outputClaimToHeaders names no header",
      TypeUrl.waypointPolicy,
      "RequestAuthentication/shop/p",
      policy("RequestAuthentication", {
        jwtRules: [
          { issuer: "i", jwksUri: "http://127.0.0.1:1/k", outputClaimToHeaders: [{ claim: "sub" }] },
        ],
      }),
      /outputClaimToHeaders\[0\]\.header must be a header name/,
    ],
    [
      "a RequestAuthentication with output headers, cookies and spaceDelimitedClaims",
      TypeUrl.waypointPolicy,
      "RequestAuthentication/shop/p",
      policy("RequestAuthentication", {
        jwtRules: [
          {
            issuer: "i",
            jwksUri: "http://127.0.0.1:1/k",
            outputPayloadToHeader: "x-jwt-payload",
            outputClaimToHeaders: [{ header: "x-user", claim: "sub" }],
            fromCookies: ["session"],
            spaceDelimitedClaims: ["roles"],
          },
        ],
      }),
      undefined,
    ],
    [
      "another kind",
      TypeUrl.waypointPolicy,
      "PeerAuthentication/shop/p",
      policy("PeerAuthentication", {}),
      /not a waypoint policy/,
    ],
  ];
  for (const [what, typeUrl, name, resource, problem] of cases) {
    it(what, () => {
      const found = resourceProblem(typeUrl, name, resource, SELF);
      if (problem === undefined) assert.equal(found, undefined);
      else assert.match(found ?? "", problem);
    });
  }
  it("applies policies that target its Gateway or a Service, and no others", () => {
    const target = (kind: string, refs: unknown[]) => policy(kind, { targetRefs: refs });
    const gw = { group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" };
    assert.equal(appliesTo(target("AuthorizationPolicy", [gw]), SELF), true);
    assert.equal(
      appliesTo(target("AuthorizationPolicy", [{ group: "", kind: "Service", name: "web" }]), SELF),
      true,
    );
    assert.equal(appliesTo(target("AuthorizationPolicy", [{ ...gw, name: "other" }]), SELF), false);
    assert.equal(appliesTo(target("RequestAuthentication", [gw]), SELF), true);
    assert.equal(
      appliesTo(policy("AuthorizationPolicy", { selector: { matchLabels: { app: "web" } } }), SELF),
      false,
    );
  });

  it("applies no policy whose references reach into another namespace, and the root's on the GatewayClass", () => {
    const inNamespace = (namespace: string, refs: unknown[]) =>
      ({ ...policy("AuthorizationPolicy", { targetRefs: refs }), namespace }) as WaypointPolicy;
    const gw = { group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint", namespace: "shop" };
    const web = { group: "", kind: "Service", name: "web", namespace: "shop" };
    const cls = { group: "gateway.networking.k8s.io", kind: "GatewayClass", name: "istio-waypoint" };
    assert.equal(appliesTo(inNamespace("shop", [gw]), SELF), true);
    assert.equal(appliesTo(inNamespace("tenant", [gw]), SELF), false);
    assert.equal(appliesTo(inNamespace("istio-system", [gw]), SELF), false);
    assert.equal(appliesTo(inNamespace("tenant", [web]), SELF), false);
    assert.equal(appliesTo(inNamespace("istio-system", [cls]), SELF), true);
    assert.equal(appliesTo(inNamespace("shop", [cls]), SELF), false);
  });

  it("gives the policy engine the Kubernetes shape back", () => {
    assert.deepEqual(policyObject(policy("AuthorizationPolicy", { action: "DENY" })), {
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: "p", namespace: "shop" },
      spec: { action: "DENY" },
    });
  });
});

describe("WaypointXdsConfig over a real xDS stream", () => {
  let server: XdsServer;
  let client: XdsClient;
  let config: WaypointXdsConfig;
  const tables: RouteTable[] = [];
  const nacks: string[] = [];
  const policy = createAuthorizationEngine({ l7Attachment: "waypoint" });
  const routes = (cluster: string) => ({
    name: WEB_ROUTES,
    virtualHosts: [
      {
        name: "web",
        domains: ["*"],
        routes: [{ name: cluster, match: { prefix: "/" }, route: { cluster } }],
      },
    ],
  });
  const apPolicy = (methods: string[]): MessageInit<WaypointPolicy> => ({
    kind: "AuthorizationPolicy",
    apiVersion: "security.istio.io/v1",
    name: "web-get",
    namespace: "shop",
    spec: structFromJson({
      targetRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }],
      rules: [{ to: [{ operation: { methods } }] }],
    }),
  });
  const routed = () =>
    tables.at(-1)?.match({
      host: "web",
      path: "/",
      method: "GET",
      headers: {},
      target: { service: { name: "web", namespace: "shop" }, port: 80 },
    })?.rule.route;
  const allowed = (method: string) =>
    policy.evaluate({
      source: { ip: "127.0.0.2", identity: "spiffe://cluster.local/ns/shop/sa/client" },
      destination: {
        ip: "127.30.0.2",
        port: 80,
        targets: [
          { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" },
        ],
      },
      http: { method, path: "/", host: "web", headers: {} },
    }).allowed;
  const policySpec = () => JSON.stringify(config.inForce().policies.map((p) => p.spec));
  async function until(check: () => boolean): Promise<void> {
    const end = Date.now() + 5000;
    while (!check()) {
      if (Date.now() > end) throw new Error("condition not met in time");
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  before(async () => {
    server = createXdsServer({ debounceMs: 5 });
    const web = service("web", byIp(SELF.ip));
    server.cache.set(TypeUrl.address, "shop/web.shop.svc.cluster.local", { service: web as never });
    server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, routes(V1));
    server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/web-get", apPolicy(["GET"]));
    const port = await server.listen("127.0.0.1:0");
    client = createXdsClient({
      address: `127.0.0.1:${port}`,
      node: { id: "waypoint~127.0.0.6~waypoint.shop~shop.svc.cluster.local" },
      validate: (typeUrl, name, resource) => resourceProblem(typeUrl, name, resource, SELF),
    });
    client.onNack((_typeUrl, message) => nacks.push(message));
    config = new WaypointXdsConfig(client, SELF, {
      store: new WorkloadStore(),
      handler: { setRouteTable: (t) => tables.push(t) },
      policy,
      requestAuthentications: new RequestAuthenticationStore(SELF.gateway),
      logger: noopLogger,
    });
    await config.ready();
  });
  after(async () => {
    client?.close();
    await server?.close();
  });

  it("puts the routes of its bound Service and its policy in force", () => {
    assert.equal(routed(), V1);
    assert.match(policySpec(), /"GET"/);
    assert.equal(allowed("GET"), true);
    assert.equal(allowed("POST"), false);
  });

  it("follows a route edit, keeps the last good route through a NACK, then takes the next good one", async () => {
    server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, routes(V2));
    await until(() => routed() === V2);
    const generation = config.generation;
    server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, routes("blackhole"));
    await until(() => nacks.some((m) => m.includes("blackhole")));
    assert.equal(routed(), V2, "the NACKed route never reached the router");
    assert.equal(config.generation, generation);
    server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, routes(V1));
    await until(() => routed() === V1);
  });

  it("follows a policy edit and keeps the last good policy through a NACK", async () => {
    server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/web-get", apPolicy(["POST"]));
    await until(() => policySpec().includes('"POST"'));
    const bad = apPolicy(["GET"]);
    bad.spec = structFromJson({ targetRefs: [{ kind: "Gateway", name: "waypoint" }], action: "MAYBE" });
    server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/web-get", bad);
    await until(() => nacks.some((m) => m.includes("AuthorizationPolicy/shop/web-get")));
    assert.match(policySpec(), /"POST"/);
    assert.equal(allowed("GET"), false, "GET stays refused by the POST-only policy in force");
    assert.equal(allowed("POST"), true);
  });

  it("enforces the root namespace's policy on the waypoint GatewayClass, and none reaching into its namespace", async () => {
    const root = (name: string, spec: Record<string, unknown>): MessageInit<WaypointPolicy> => ({
      kind: "AuthorizationPolicy",
      apiVersion: "security.istio.io/v1",
      name,
      namespace: "istio-system",
      spec: structFromJson(spec as never),
    });
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/istio-system/no-admin",
      root("no-admin", {
        targetRefs: [{ group: "gateway.networking.k8s.io", kind: "GatewayClass", name: "istio-waypoint" }],
        action: "DENY",
        rules: [{ to: [{ operation: { paths: ["/admin"] } }] }],
      }),
    );
    // Allow-all, meant for a root-namespace Service but also naming shop's web across namespaces.
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/istio-system/reach",
      root("reach", {
        targetRefs: [
          { group: "", kind: "Service", name: "web", namespace: "shop" },
          { group: "", kind: "Service", name: "mesh-api" },
        ],
        rules: [{}],
      }),
    );
    await until(() => policySpec().includes("mesh-api"));
    const toWeb = (method: string, path: string) => {
      const request = {
        source: { ip: "127.0.0.2", identity: "spiffe://cluster.local/ns/shop/sa/client" },
        destination: {
          ip: "127.30.0.2",
          port: 80,
          targets: [
            { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" },
            { kind: "Service", group: "", name: "web", namespace: "shop" },
          ],
        },
        http: { method, path, host: "web", headers: {} },
      };
      return policy.evaluate(config.classTargeted ? withWaypointClassTarget(request) : request).allowed;
    };
    assert.equal(toWeb("POST", "/"), true);
    assert.equal(toWeb("POST", "/admin"), false, "the GatewayClass policy applies at the waypoint");
    assert.equal(toWeb("GET", "/"), false, "the root's allow-all on shop/web does not attach");
    server.cache.delete(TypeUrl.waypointPolicy, "AuthorizationPolicy/istio-system/no-admin");
    server.cache.delete(TypeUrl.waypointPolicy, "AuthorizationPolicy/istio-system/reach");
    await until(() => !policySpec().includes("mesh-api") && !config.classTargeted);
    assert.equal(toWeb("POST", "/admin"), true);
  });

  it("drops the routes of a Service no longer bound to it", async () => {
    server.cache.set(TypeUrl.address, "shop/web.shop.svc.cluster.local", {
      service: service("web") as never,
    });
    await until(() => routed() === undefined);
  });
});

describe("WaypointXdsConfig rejects a bad resource alone", () => {
  const API_ROUTES = "inbound-vip|80|http|api.shop.svc.cluster.local";
  const GATEWAY = { group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" };
  let server: XdsServer;
  let client: XdsClient;
  let config: WaypointXdsConfig;
  let ready = false;
  const tables: RouteTable[] = [];
  const nacks: string[] = [];
  const policy = createAuthorizationEngine({ l7Attachment: "waypoint" });
  const routes = (name: string, route: Record<string, unknown>) => ({
    name,
    // The route is named after its cluster: the route table answers with the name.
    virtualHosts: [
      { name, domains: ["*"], routes: [{ name: String(route.cluster), match: { prefix: "/" }, route }] },
    ],
  });
  const ap = (name: string, spec: Record<string, unknown>): MessageInit<WaypointPolicy> => ({
    kind: "AuthorizationPolicy",
    apiVersion: "security.istio.io/v1",
    name,
    namespace: "shop",
    spec: structFromJson(spec as never),
  });
  const webGet = (methods: string[]) =>
    ap("web-get", {
      targetRefs: [{ group: "", kind: "Service", name: "web" }],
      rules: [{ to: [{ operation: { methods } }] }],
    });
  // Fails validation: a source field no policy version has.
  const unreadableRule = [{ from: [{ source: { principals: ["a"], cosmicRays: true } }] }];
  const target = (name: string) => ({ service: { name, namespace: "shop" }, port: 80 });
  const routed = (name: string) =>
    tables.at(-1)?.match({ host: name, path: "/", method: "GET", headers: {}, target: target(name) })?.rule
      .route;
  const allowedIn = (namespace: string, service: string, method: string) =>
    policy.evaluate({
      source: { ip: "127.0.0.2", identity: "spiffe://cluster.local/ns/shop/sa/client" },
      destination: {
        ip: "127.30.0.2",
        port: 80,
        targets: [
          { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" },
          { kind: "Service", group: "", name: service, namespace },
        ],
      },
      http: { method, path: "/", host: service, headers: {} },
    }).allowed;
  const allowed = (service: string, method: string) => allowedIn("shop", service, method);
  const policySpec = () => JSON.stringify(config.inForce().policies.map((p) => p.spec));
  async function until(check: () => boolean): Promise<void> {
    const end = Date.now() + 5000;
    while (!check()) {
      if (Date.now() > end) throw new Error("condition not met in time");
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  before(async () => {
    server = createXdsServer({ debounceMs: 5 });
    for (const name of ["web", "api"]) {
      server.cache.set(TypeUrl.address, `shop/${name}.shop.svc.cluster.local`, {
        service: service(name, byIp(SELF.ip)) as never,
      });
    }
    server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, routes(WEB_ROUTES, { cluster: V1 }));
    // Never accepted: the router cannot follow a cluster named by a header.
    server.cache.set(TypeUrl.routeConfiguration, API_ROUTES, routes(API_ROUTES, { clusterHeader: "x" }));
    server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/web-get", webGet(["GET"]));
    // Unreadable, and for another waypoint: it must hold nothing back here.
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/elsewhere",
      ap("elsewhere", { targetRefs: [{ ...GATEWAY, name: "other" }], action: "DENY", rules: unreadableRule }),
    );
    const port = await server.listen("127.0.0.1:0");
    client = createXdsClient({
      address: `127.0.0.1:${port}`,
      node: { id: "waypoint~127.0.0.6~waypoint.shop~shop.svc.cluster.local" },
      ...waypointXdsChecks(SELF),
    });
    client.onNack((_typeUrl, message) => nacks.push(message));
    config = new WaypointXdsConfig(client, SELF, {
      store: new WorkloadStore(),
      handler: { setRouteTable: (t) => tables.push(t) },
      policy,
      requestAuthentications: new RequestAuthenticationStore(SELF.gateway),
      logger: noopLogger,
    });
    config.ready().then(() => {
      ready = true;
    });
  });
  after(async () => {
    client?.close();
    await server?.close();
  });

  it("gets ready with the good resources of a first response that holds bad ones", async () => {
    await until(() => ready);
    assert.equal(routed("web"), V1);
    assert.equal(allowed("web", "GET"), true);
    assert.equal(allowed("web", "POST"), false);
    assert.equal(
      allowed("api", "POST"),
      true,
      "the unreadable policy of another waypoint applies nowhere here",
    );
    assert.ok(nacks.some((m) => m.includes("AuthorizationPolicy/shop/elsewhere")));
    assert.ok(nacks.some((m) => m.includes(API_ROUTES)));
  });

  it("serves a port whose routes it never accepted with no route, not with the Service's default", () => {
    assert.equal(tables.at(-1)?.hasRoutesFor(target("api")), true);
    assert.equal(routed("api"), undefined);
  });

  it("applies the good route of a response and NACKs the bad one by name", async () => {
    const before = nacks.length;
    server.cache.batch(() => {
      server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, routes(WEB_ROUTES, { cluster: V2 }));
      server.cache.set(
        TypeUrl.routeConfiguration,
        API_ROUTES,
        routes(API_ROUTES, { clusterHeader: "still-bad" }),
      );
    });
    await until(() => routed("web") === V2);
    await until(() => nacks.length > before);
    assert.match(nacks.at(-1) ?? "", /inbound-vip\|80\|http\|api\.shop/);
    assert.doesNotMatch(nacks.at(-1) ?? "", /web\.shop/);
    assert.equal(routed("api"), undefined);
  });

  it("applies a good policy change next to an ALLOW policy it cannot read, which allows nothing", async () => {
    assert.equal(allowed("api", "GET"), true, "no policy on api yet");
    server.cache.batch(() => {
      server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/web-get", webGet(["GET", "POST"]));
      server.cache.set(
        TypeUrl.waypointPolicy,
        "AuthorizationPolicy/shop/api-callers",
        ap("api-callers", {
          targetRefs: [{ group: "", kind: "Service", name: "api" }],
          rules: unreadableRule,
        }),
      );
    });
    await until(() => policySpec().includes('"POST"'));
    assert.ok(nacks.some((m) => m.includes("AuthorizationPolicy/shop/api-callers")));
    assert.equal(allowed("web", "POST"), true);
    assert.equal(allowed("api", "GET"), false, "what the unread ALLOW policy allows is unknown: nothing");
    // Once readable it is enforced as written; once gone, api is open again.
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/api-callers",
      ap("api-callers", {
        targetRefs: [{ group: "", kind: "Service", name: "api" }],
        rules: [{ to: [{ operation: { methods: ["GET"] } }] }],
      }),
    );
    await until(() => allowed("api", "GET"));
    assert.equal(allowed("api", "POST"), false);
    server.cache.delete(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/api-callers");
    await until(() => allowed("api", "POST"));
  });

  it("denies all it targets for a DENY policy it never read, and keeps the last good one of a policy it read", async () => {
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/no-delete",
      ap("no-delete", { targetRefs: [GATEWAY], action: "DENY", rules: unreadableRule }),
    );
    await until(() => nacks.some((m) => m.includes("AuthorizationPolicy/shop/no-delete")));
    assert.equal(allowed("web", "GET"), false);
    assert.equal(allowed("api", "GET"), false);
    const good = {
      targetRefs: [GATEWAY],
      action: "DENY",
      rules: [{ to: [{ operation: { methods: ["DELETE"] } }] }],
    };
    server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/no-delete", ap("no-delete", good));
    await until(() => allowed("web", "GET"));
    assert.equal(allowed("api", "DELETE"), false);
    // A bad edit of a policy in force leaves it as it was, next to a good edit of another.
    const nacked = nacks.length;
    server.cache.batch(() => {
      server.cache.set(
        TypeUrl.waypointPolicy,
        "AuthorizationPolicy/shop/no-delete",
        ap("no-delete", { ...good, rules: unreadableRule }),
      );
      server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/web-get", webGet(["GET", "PUT"]));
    });
    await until(() => policySpec().includes('"PUT"'));
    await until(() => nacks.length > nacked);
    assert.match(nacks.at(-1) ?? "", /AuthorizationPolicy\/shop\/no-delete/);
    assert.equal(allowed("web", "PUT"), true);
    assert.equal(allowed("api", "GET"), true);
    assert.equal(allowed("api", "DELETE"), false, "the last good no-delete stays in force");
  });

  it("reads a policy whose targets it cannot read as covering all its namespace can attach to here", async () => {
    const tenantPolicy = {
      ...ap("broken", { targetRefs: "db", action: "DENY", rules: [{}] }),
      namespace: "tenant",
    };
    server.cache.set(TypeUrl.waypointPolicy, "AuthorizationPolicy/tenant/broken", tenantPolicy);
    await until(() => nacks.some((m) => m.includes("AuthorizationPolicy/tenant/broken")));
    // A Service of that namespace bound later is covered too.
    server.cache.set(TypeUrl.address, "tenant/db.tenant.svc.cluster.local", {
      service: {
        ...service("db", byIp(SELF.ip)),
        namespace: "tenant",
        hostname: "db.tenant.svc.cluster.local",
      } as never,
    });
    await until(() => !allowedIn("tenant", "db", "GET"));
    assert.equal(
      allowed("web", "GET"),
      true,
      "another namespace's policy attaches to none of shop's Services",
    );
    // From the Gateway's namespace it could target the Gateway: every request.
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/broken",
      ap("broken", { targetRefs: [{ kind: 7 }], action: "DENY", rules: [{}] }),
    );
    await until(() => !allowed("web", "GET"));
    server.cache.batch(() => {
      server.cache.delete(TypeUrl.waypointPolicy, "AuthorizationPolicy/tenant/broken");
      server.cache.delete(TypeUrl.waypointPolicy, "AuthorizationPolicy/shop/broken");
    });
    await until(() => allowed("web", "GET") && allowedIn("tenant", "db", "GET"));
  });
});

describe("WaypointXdsConfig and a policy that did not decode", () => {
  it("denies all the policy's namespace can attach to here until it is read", () => {
    let emit: (event: XdsChangeEvent) => void = () => {};
    const fake = {
      onChange: (listener: (event: XdsChangeEvent) => void) => {
        emit = listener;
      },
      watch: () => {},
      get: () => undefined,
    } as unknown as XdsClient;
    const policy = createAuthorizationEngine({ l7Attachment: "waypoint" });
    const config = new WaypointXdsConfig(fake, SELF, {
      store: new WorkloadStore(),
      handler: { setRouteTable: () => {} },
      policy,
      requestAuthentications: new RequestAuthenticationStore(SELF.gateway),
      logger: noopLogger,
    });
    const allowed = () =>
      policy.evaluate({
        source: { ip: "127.0.0.2", identity: "spiffe://cluster.local/ns/shop/sa/client" },
        destination: {
          ip: "127.30.0.2",
          port: 80,
          targets: [
            { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" },
          ],
        },
        http: { method: "GET", path: "/", host: "web", headers: {} },
      }).allowed;
    const event = (rejected: string[], removed: string[] = []): XdsChangeEvent => ({
      typeUrl: TypeUrl.waypointPolicy,
      added: [],
      updated: [],
      removed,
      rejected: rejected.map((name) => ({ name, reason: "cannot decode" })),
    });
    emit(event(["AuthorizationPolicy/tenant/unread", "RequestAuthentication/shop/unread"]));
    assert.equal(allowed(), true, "a policy of another namespace cannot attach to the Gateway");
    emit(event(["AuthorizationPolicy/shop/unread"]));
    assert.equal(allowed(), false);
    assert.deepEqual(config.inForce().policies[0]?.spec, {
      targetRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }],
      action: "DENY",
      rules: [{}],
    });
    emit(event([], ["AuthorizationPolicy/shop/unread"]));
    assert.equal(allowed(), true);
  });
});

describe("resourceProblem: names and Addresses", () => {
  const ap = (name: string): WaypointPolicy =>
    ({
      kind: "AuthorizationPolicy",
      apiVersion: "security.istio.io/v1",
      name,
      namespace: "shop",
      spec: structFromJson({ action: "DENY", rules: [{ to: [{ operation: { paths: ["/admin"] } }] }] }),
    }) as WaypointPolicy;
  const web = service("web", byIp(SELF.ip));
  const cases: [string, string, string, unknown, RegExp | undefined][] = [
    [
      "a policy under its kind/namespace/name",
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/deny-admin",
      ap("deny-admin"),
      undefined,
    ],
    [
      "a policy whose body names another policy",
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/other",
      ap("deny-admin"),
      /AuthorizationPolicy\/shop\/deny-admin sent under the name AuthorizationPolicy\/shop\/other/,
    ],
    [
      "a policy under another kind's name",
      TypeUrl.waypointPolicy,
      "RequestAuthentication/shop/deny-admin",
      ap("deny-admin"),
      /sent under the name/,
    ],
    [
      "a Service under namespace/hostname",
      TypeUrl.address,
      "shop/web.shop.svc.cluster.local",
      { service: web },
      undefined,
    ],
    ["an Address of neither kind", TypeUrl.address, "shop/web.shop.svc.cluster.local", {}, /neither/],
    [
      "a Service under another name",
      TypeUrl.address,
      "shop/api.shop.svc.cluster.local",
      { service: web },
      /sent under the name/,
    ],
    [
      "a Service whose waypoint address has no family",
      TypeUrl.address,
      "shop/web.shop.svc.cluster.local",
      {
        service: {
          ...web,
          waypoint: {
            address: { network: "", address: Uint8Array.of(127, 0, 0, 6, 0) },
            hboneMtlsPort: 15008,
          },
        },
      },
      /waypoint/,
    ],
  ];
  for (const [what, typeUrl, name, resource, problem] of cases) {
    it(what, () => {
      const found = resourceProblem(typeUrl, name, resource, SELF);
      if (problem === undefined) assert.equal(found, undefined);
      else assert.match(found ?? "", problem);
    });
  }
});

describe("WaypointXdsConfig and resources sent under the wrong name", () => {
  const GATEWAY = { group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" };
  const WEB = "shop/web.shop.svc.cluster.local";
  let server: XdsServer;
  let client: XdsClient;
  let config: WaypointXdsConfig;
  const store = new WorkloadStore();
  const nacks: string[] = [];
  const policy = createAuthorizationEngine({ l7Attachment: "waypoint" });
  const ap = (name: string, spec: Record<string, unknown>): MessageInit<WaypointPolicy> => ({
    kind: "AuthorizationPolicy",
    apiVersion: "security.istio.io/v1",
    name,
    namespace: "shop",
    spec: structFromJson(spec as never),
  });
  const allowed = (path: string) =>
    policy.evaluate({
      source: { ip: "127.0.0.2", identity: "spiffe://cluster.local/ns/shop/sa/client" },
      destination: {
        ip: "127.30.0.2",
        port: 80,
        targets: [
          { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" },
        ],
      },
      http: { method: "GET", path, host: "web", headers: {} },
    }).allowed;
  async function until(check: () => boolean): Promise<void> {
    const end = Date.now() + 5000;
    while (!check()) {
      if (Date.now() > end) throw new Error("condition not met in time");
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  /** Waits for the client's answer to a change: a NACK naming `name`, or a change put in force. */
  async function answered(name: string, generation: number): Promise<boolean> {
    await until(() => nacks.some((m) => m.includes(name)) || config.generation > generation);
    return nacks.some((m) => m.includes(name));
  }

  before(async () => {
    server = createXdsServer({ debounceMs: 5 });
    server.cache.set(TypeUrl.address, WEB, { service: service("web", byIp(SELF.ip)) as never });
    server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, {
      name: WEB_ROUTES,
      virtualHosts: [
        { name: "web", domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: V1 } }] },
      ],
    });
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/deny-admin",
      ap("deny-admin", {
        targetRefs: [GATEWAY],
        action: "DENY",
        rules: [{ to: [{ operation: { paths: ["/admin"] } }] }],
      }),
    );
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/allow-all",
      ap("allow-all", { targetRefs: [GATEWAY], action: "ALLOW", rules: [{}] }),
    );
    const port = await server.listen("127.0.0.1:0");
    client = createXdsClient({
      address: `127.0.0.1:${port}`,
      node: { id: "waypoint~127.0.0.6~waypoint.shop~shop.svc.cluster.local" },
      ...waypointXdsChecks(SELF),
    });
    client.onNack((_typeUrl, message) => nacks.push(message));
    config = new WaypointXdsConfig(client, SELF, {
      store,
      handler: { setRouteTable: () => {} },
      policy,
      requestAuthentications: new RequestAuthenticationStore(SELF.gateway),
      logger: noopLogger,
    });
    await config.ready();
  });
  after(async () => {
    client?.close();
    await server?.close();
  });

  it("NACKs a policy whose body names another policy, which stays in force", async () => {
    assert.equal(allowed("/admin"), false);
    assert.equal(allowed("/"), true);
    const generation = config.generation;
    server.cache.set(
      TypeUrl.waypointPolicy,
      "AuthorizationPolicy/shop/other",
      ap("deny-admin", { targetRefs: [GATEWAY], action: "ALLOW", rules: [{}] }),
    );
    assert.equal(
      await answered("AuthorizationPolicy/shop/other", generation),
      true,
      "the policy was accepted",
    );
    assert.equal(allowed("/admin"), false, "the DENY named by the other policy's body stays");
    assert.ok(
      config.inForce().policies.some((p) => JSON.stringify(p).includes('"action":"DENY"')),
      "deny-admin is still in force",
    );
  });

  it("NACKs an Address of neither kind under a bound Service's name, which stays bound", async () => {
    const generation = config.generation;
    server.cache.set(TypeUrl.address, WEB, {});
    assert.equal(await answered(WEB, generation), true, "the Address was accepted");
    const web = store.services().get(WEB);
    assert.ok(web !== undefined, "the Service is still known");
    assert.equal(config.serves(web), true);
  });
});

describe("WaypointXdsConfig stands in for an unread policy under its xDS name only", () => {
  it("does not let a rejected policy's body take the place of the policy it names", () => {
    let emit: (event: XdsChangeEvent) => void = () => {};
    const fake = {
      onChange: (listener: (event: XdsChangeEvent) => void) => {
        emit = listener;
      },
      watch: () => {},
      get: () => undefined,
    } as unknown as XdsClient;
    const policy = createAuthorizationEngine({ l7Attachment: "waypoint" });
    const config = new WaypointXdsConfig(fake, SELF, {
      store: new WorkloadStore(),
      handler: { setRouteTable: () => {} },
      policy,
      requestAuthentications: new RequestAuthenticationStore(SELF.gateway),
      logger: noopLogger,
    });
    const gw = [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }];
    const body = (name: string, spec: Record<string, unknown>) => ({
      kind: "AuthorizationPolicy",
      apiVersion: "security.istio.io/v1",
      name,
      namespace: "shop",
      spec: structFromJson(spec as never),
    });
    const resource = (name: string, spec: Record<string, unknown>) => ({
      name: `AuthorizationPolicy/shop/${name}`,
      version: "1",
      aliases: [],
      resource: body(name, spec),
    });
    const allowed = (path: string) =>
      policy.evaluate({
        source: { ip: "127.0.0.2", identity: "spiffe://cluster.local/ns/shop/sa/client" },
        destination: {
          ip: "127.30.0.2",
          port: 80,
          targets: [
            { kind: "Gateway", group: "gateway.networking.k8s.io", name: "waypoint", namespace: "shop" },
          ],
        },
        http: { method: "GET", path, host: "web", headers: {} },
      }).allowed;
    emit({
      typeUrl: TypeUrl.waypointPolicy,
      added: [
        resource("deny-admin", {
          targetRefs: gw,
          action: "DENY",
          rules: [{ to: [{ operation: { paths: ["/admin"] } }] }],
        }),
        resource("allow-all", { targetRefs: gw, action: "ALLOW", rules: [{}] }),
      ],
      updated: [],
      removed: [],
    });
    assert.equal(allowed("/admin"), false);
    emit({
      typeUrl: TypeUrl.waypointPolicy,
      added: [],
      updated: [],
      removed: [],
      rejected: [
        {
          name: "AuthorizationPolicy/shop/other",
          reason: "sent under another name",
          resource: body("deny-admin", { targetRefs: gw, action: "ALLOW", rules: [{}] }),
        },
      ],
    });
    assert.equal(allowed("/admin"), false, "deny-admin stays in force");
    const names = config
      .inForce()
      .policies.map((p) => (p.metadata as { name: string }).name)
      .sort();
    assert.deepEqual(names, ["allow-all", "deny-admin", "other"]);
  });
});

describe("WaypointXdsConfig and a Service bound once it runs", () => {
  it("serves its port with no route until its routes are answered; a port with none gets the default", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The server holds its answer for a route name it does not have until the test lets it go.
    const server = createXdsServer({
      debounceMs: 5,
      resolver: async ({ typeUrl }) => {
        if (typeUrl === TypeUrl.routeConfiguration) await gate;
      },
    });
    const port = await server.listen("127.0.0.1:0");
    const client = createXdsClient({
      address: `127.0.0.1:${port}`,
      node: { id: "waypoint~127.0.0.6~waypoint.shop~shop.svc.cluster.local" },
      validate: (typeUrl, name, resource) => resourceProblem(typeUrl, name, resource, SELF),
    });
    const tables: RouteTable[] = [];
    const config = new WaypointXdsConfig(client, SELF, {
      store: new WorkloadStore(),
      handler: { setRouteTable: (t) => tables.push(t) },
      policy: createAuthorizationEngine({ l7Attachment: "waypoint" }),
      requestAuthentications: new RequestAuthenticationStore(SELF.gateway),
      logger: noopLogger,
    });
    const target = (name: string) => ({ service: { name, namespace: "shop" }, port: 80 });
    const routed = (name: string) =>
      tables.at(-1)?.match({ host: name, path: "/", method: "GET", headers: {}, target: target(name) });
    const until = async (check: () => boolean) => {
      const end = Date.now() + 5000;
      while (!check()) {
        if (Date.now() > end) throw new Error("condition not met in time");
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    try {
      await config.ready();
      server.cache.set(TypeUrl.address, "shop/web.shop.svc.cluster.local", {
        service: service("web", byIp(SELF.ip)) as never,
      });
      // Bound, routes asked for and not answered: no route (404), never the default route to web.
      await until(() => tables.at(-1)?.hasRoutesFor(target("web")) === true);
      assert.equal(routed("web"), undefined);
      server.cache.set(TypeUrl.routeConfiguration, WEB_ROUTES, {
        name: WEB_ROUTES,
        virtualHosts: [
          {
            name: "web",
            domains: ["*"],
            routes: [{ name: V1, match: { prefix: "/" }, route: { cluster: V1 } }],
          },
        ],
      });
      release();
      await until(() => routed("web")?.rule.route === V1);
      // A Service whose port has no RouteConfiguration at all: the server says so, and the Service's
      // own default route is in force.
      const before = tables.length;
      server.cache.set(TypeUrl.address, "shop/api.shop.svc.cluster.local", {
        service: service("api", byIp(SELF.ip)) as never,
      });
      await until(
        () =>
          tables.slice(before).some((t) => t.hasRoutesFor(target("api"))) &&
          tables.at(-1)?.hasRoutesFor(target("api")) === false,
      );
      assert.equal(routed("web")?.rule.route, V1);
    } finally {
      release();
      client.close();
      await server.close();
    }
  });
});
