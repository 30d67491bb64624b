import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { structToJson, TypeUrl, typeRegistry } from "@ambient/xds";
import { parseManifests } from "./manifests.js";
import { translateEnvoy } from "./translate-envoy.js";
import { translateMesh } from "./translate-mesh.js";
import { translateWaypoint, type WaypointConfig } from "./translate-waypoint.js";

function translate(yaml: string): WaypointConfig & { envoy: ReturnType<typeof translateEnvoy> } {
  const { objects, issues } = parseManifests([{ path: "m.yaml", text: yaml }]);
  assert.deepEqual(issues, []);
  const mesh = translateMesh(objects);
  const envoy = translateEnvoy(objects, mesh);
  return { ...translateWaypoint(objects, mesh, envoy), envoy };
}

const MESH = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/use-waypoint: waypoint } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: demo }
spec: { gatewayClassName: istio-waypoint }
status: { addresses: [{ value: 127.10.0.6 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: shop }
spec: { gatewayClassName: istio-waypoint }
status: { addresses: [{ value: 127.10.0.9 }] }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo, labels: { istio.io/use-waypoint: waypoint } }
spec: { clusterIP: 127.30.0.2, ports: [{ port: 80, targetPort: 8080, appProtocol: http }, { name: admin, port: 9090 }] }
---
apiVersion: v1
kind: Service
metadata: { name: web-v1, namespace: demo }
spec: { clusterIP: None, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: demo }
spec: { clusterIP: 127.30.0.1, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Service
metadata: { name: cart, namespace: shop }
spec: { clusterIP: 127.30.0.5, ports: [{ port: 8080 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: web, namespace: demo }
spec:
  parentRefs: [{ group: "", kind: Service, name: web, port: 80 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /api } }]
      backendRefs: [{ name: web-v1, port: 80 }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: web-get, namespace: demo }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  rules: [{ to: [{ operation: { methods: [GET], ports: ["80"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: pods-only-waypoint, namespace: demo }
spec:
  selector: { matchLabels: { app: web } }
  rules: [{ from: [{ source: { principals: [cluster.local/ns/demo/sa/waypoint] } }] }]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: demo }
spec:
  targetRefs: [{ group: "", kind: Service, name: web }]
  jwtRules: [{ issuer: https://issuer.example, jwksUri: "http://127.0.0.1:9/jwks", forwardOriginalToken: true }]
`;

describe("translateWaypoint", () => {
  const out = translate(MESH);

  it("serves a RouteConfiguration per port of each Service bound to a waypoint, and no other", () => {
    assert.deepEqual(
      [...out.routeConfigurations.keys()],
      [
        "inbound-vip|8080|http|cart.shop.svc.cluster.local",
        "inbound-vip|80|http|web.demo.svc.cluster.local",
        "inbound-vip|9090|http|web.demo.svc.cluster.local",
      ],
    );
  });

  it("serves no RouteConfiguration for the waypoint's own Service, though its namespace uses the waypoint", () => {
    const own = translate(`${MESH}
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: shop
  labels: { gateway.networking.k8s.io/gateway-name: waypoint, gateway.istio.io/managed: istio.io-mesh-controller }
spec: { clusterIP: 127.30.0.6, selector: { gateway.networking.k8s.io/gateway-name: waypoint }, ports: [{ name: mesh, port: 15008 }] }
`);
    assert.deepEqual([...own.routeConfigurations.keys()], [...out.routeConfigurations.keys()]);
  });

  it("keeps the Service's routes in Envoy's order, in one virtual host for any Host", () => {
    const rc = out.routeConfigurations.get("inbound-vip|80|http|web.demo.svc.cluster.local");
    const proxyless = out.envoy.routeConfigurations.get("web.demo.svc.cluster.local:80");
    assert.equal(rc?.virtualHosts?.length, 1);
    assert.deepEqual(rc?.virtualHosts?.[0]?.domains, ["*"]);
    assert.deepEqual(rc?.virtualHosts?.[0]?.routes, proxyless?.virtualHosts?.[0]?.routes);
    assert.deepEqual(
      rc?.virtualHosts?.[0]?.routes?.map((r) => r.match),
      [{ path: "/api" }, { prefix: "/api/" }],
    );
    // A Service port without routes of its own routes to itself.
    const admin = out.routeConfigurations.get("inbound-vip|9090|http|web.demo.svc.cluster.local");
    assert.deepEqual(admin?.virtualHosts?.[0]?.routes, [
      {
        name: "default",
        match: { prefix: "/" },
        route: { cluster: "outbound|9090||web.demo.svc.cluster.local" },
      },
    ]);
    // Every resource encodes as the RDS type.
    for (const r of out.routeConfigurations.values()) typeRegistry.encode(TypeUrl.routeConfiguration, r);
  });

  it("sends policies with targetRefs, spec unchanged, and leaves selector policies to ztunnel", () => {
    assert.deepEqual(
      [...out.policies.keys()],
      ["AuthorizationPolicy/demo/web-get", "RequestAuthentication/demo/jwt"],
    );
    const policy = out.policies.get("AuthorizationPolicy/demo/web-get");
    const decoded = typeRegistry.decode(
      TypeUrl.waypointPolicy,
      typeRegistry.encode(TypeUrl.waypointPolicy, policy ?? {}),
    );
    assert.equal(decoded.kind, "AuthorizationPolicy");
    assert.equal(decoded.apiVersion, "security.istio.io/v1");
    assert.deepEqual([decoded.namespace, decoded.name], ["demo", "web-get"]);
    assert.deepEqual(structToJson(decoded.spec), {
      targetRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }],
      rules: [{ to: [{ operation: { methods: ["GET"], ports: ["80"] } }] }],
    });
    const jwt = typeRegistry.decode(
      TypeUrl.waypointPolicy,
      typeRegistry.encode(TypeUrl.waypointPolicy, out.policies.get("RequestAuthentication/demo/jwt") ?? {}),
    );
    assert.deepEqual(structToJson(jwt.spec).jwtRules, [
      { issuer: "https://issuer.example", jwksUri: "http://127.0.0.1:9/jwks", forwardOriginalToken: true },
    ]);
    assert.deepEqual(out.issues, []);
  });

  it("is pure: the same manifests give the same resources", () => {
    const again = translate(MESH);
    assert.deepEqual(again.routeConfigurations, out.routeConfigurations);
    assert.deepEqual(again.policies, out.policies);
  });

  it("gives a bound Service port without routes of its own the routes attached to its waypoint Gateway", () => {
    const out = translate(`${MESH}
---
apiVersion: v1
kind: Service
metadata: { name: basket-v2, namespace: shop }
spec: { clusterIP: 127.30.0.7, ports: [{ port: 8080 }] }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: all, namespace: shop }
spec:
  parentRefs: [{ kind: Gateway, name: waypoint }]
  rules: [{ matches: [{ path: { type: Exact, value: /v2 } }], backendRefs: [{ name: basket-v2, port: 8080 }] }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: gateway-route-of-demo, namespace: demo }
spec:
  parentRefs: [{ kind: Gateway, name: waypoint }]
  rules: [{ backendRefs: [{ name: web-v1, port: 80 }] }]
`);
    // shop/cart (bound through its namespace's label) has no route of its own.
    const cart = out.routeConfigurations.get("inbound-vip|8080|http|cart.shop.svc.cluster.local");
    assert.deepEqual(
      cart?.virtualHosts?.[0]?.routes?.map((r) => [r.match, r.route?.cluster]),
      [[{ path: "/v2" }, "outbound|8080||basket-v2.shop.svc.cluster.local"]],
    );
    // demo/web has a route of its own on port 80: the Gateway's route does not replace it there...
    const web = out.routeConfigurations.get("inbound-vip|80|http|web.demo.svc.cluster.local");
    assert.deepEqual(
      web?.virtualHosts?.[0]?.routes?.map((r) => r.match),
      [{ path: "/api" }, { prefix: "/api/" }],
    );
    // ...but applies on port 9090, which has none.
    const admin = out.routeConfigurations.get("inbound-vip|9090|http|web.demo.svc.cluster.local");
    assert.equal(
      admin?.virtualHosts?.[0]?.routes?.[0]?.route?.cluster,
      "outbound|80||web-v1.demo.svc.cluster.local",
    );
  });

  it("finds the waypoint Gateway of a route by its address of type IPAddress, whatever comes first in status", () => {
    // Istio's controller writes a Hostname address first; the waypoint is the same Gateway.
    const hostnameFirst = MESH.replace(
      "status: { addresses: [{ value: 127.10.0.9 }] }",
      "status: { addresses: [{ type: Hostname, value: waypoint.elsewhere.example }, { type: IPAddress, value: 127.10.0.9 }] }",
    );
    assert.notEqual(hostnameFirst, MESH);
    const out = translate(`${hostnameFirst}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: all, namespace: shop }
spec:
  parentRefs: [{ kind: Gateway, name: waypoint }]
  rules: [{ matches: [{ path: { type: Exact, value: /v2 } }], backendRefs: [{ name: cart, port: 8080 }] }]
`);
    const cart = out.routeConfigurations.get("inbound-vip|8080|http|cart.shop.svc.cluster.local");
    assert.deepEqual(
      cart?.virtualHosts?.[0]?.routes?.map((r) => r.match),
      [{ path: "/v2" }],
    );
  });

  it("lets a route attached to the waypoint Gateway reach another namespace's Service only with a ReferenceGrant", () => {
    const route = `${MESH}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: to-echo, namespace: shop }
spec:
  parentRefs: [{ kind: Gateway, name: waypoint }]
  rules: [{ backendRefs: [{ name: echo, namespace: demo, port: 80 }] }]
`;
    const grant = `
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: { name: shop-routes, namespace: demo }
spec:
  from: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop }]
  to: [{ group: "", kind: Service, name: echo }]
`;
    const cartRoutes = (out: WaypointConfig) =>
      out.routeConfigurations
        .get("inbound-vip|8080|http|cart.shop.svc.cluster.local")
        ?.virtualHosts?.[0]?.routes?.map((r) => r.route?.cluster ?? r.directResponse?.status);
    const granted = translate(route + grant);
    assert.deepEqual(cartRoutes(granted), ["outbound|80||echo.demo.svc.cluster.local"]);
    assert.equal(
      granted.issues.some((i) => i.source === "HTTPRoute/shop/to-echo"),
      false,
    );
    const refused = translate(route);
    assert.notDeepEqual(cartRoutes(refused), ["outbound|80||echo.demo.svc.cluster.local"]);
    assert.ok(
      refused.issues.some((i) => i.source === "HTTPRoute/shop/to-echo" && /RefNotPermitted/.test(i.message)),
    );
  });

  it("serves an egress host's routes: attached by a ServiceEntry parentRef, to Hostname backends", () => {
    const egress = `${MESH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: httpbin, namespace: shop }
spec:
  hosts: [httpbin.example.org]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: httpbin-v2, namespace: shop }
spec:
  hosts: [v2.httpbin.example.org]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: DNS
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: httpbin, namespace: shop }
spec:
  parentRefs: [{ group: networking.istio.io, kind: ServiceEntry, name: httpbin }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v2 } }]
      filters: [{ type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-egress, value: v2 }] } }]
      backendRefs: [{ group: networking.istio.io, kind: Hostname, name: v2.httpbin.example.org, port: 80 }]
    - backendRefs: [{ group: networking.istio.io, kind: Hostname, name: httpbin.example.org, port: 80 }]
`;
    const out = translate(egress);
    // Both entries are bound through the shop namespace's label; httpbin has a route of its own.
    const own = out.routeConfigurations.get("inbound-vip|80|http|httpbin.example.org");
    assert.deepEqual(
      own?.virtualHosts?.[0]?.routes?.map((r) => [
        r.match,
        r.route?.cluster,
        r.requestHeadersToAdd?.[0]?.header?.key,
      ]),
      [
        [{ path: "/v2" }, "outbound|80||v2.httpbin.example.org", "x-egress"],
        [{ prefix: "/v2/" }, "outbound|80||v2.httpbin.example.org", "x-egress"],
        [{ prefix: "/" }, "outbound|80||httpbin.example.org", undefined],
      ],
    );
    const other = out.routeConfigurations.get("inbound-vip|80|http|v2.httpbin.example.org");
    assert.deepEqual(
      other?.virtualHosts?.[0]?.routes?.map((r) => r.route?.cluster),
      ["outbound|80||v2.httpbin.example.org"],
    );
    assert.deepEqual(out.envoy.issues, []);

    // A Service parentRef of the same name does not attach to the entry, and an unknown host is reported.
    const wrong = translate(
      egress
        .replace(
          "parentRefs: [{ group: networking.istio.io, kind: ServiceEntry, name: httpbin }]",
          'parentRefs: [{ group: "", kind: Service, name: httpbin }]',
        )
        .replace("name: v2.httpbin.example.org, port: 80 }]", "name: v3.httpbin.example.org, port: 80 }]"),
    );
    assert.deepEqual(
      wrong.routeConfigurations
        .get("inbound-vip|80|http|httpbin.example.org")
        ?.virtualHosts?.[0]?.routes?.map((r) => r.name),
      ["default"],
    );
    const unknown = translate(
      egress.replace(
        "name: v2.httpbin.example.org, port: 80 }]",
        "name: v3.httpbin.example.org, port: 80 }]",
      ),
    );
    assert.ok(
      unknown.envoy.issues.some((i) =>
        /no ServiceEntry or Service host v3\.httpbin\.example\.org:80/.test(i.message),
      ),
      JSON.stringify(unknown.envoy.issues),
    );
  });
});
