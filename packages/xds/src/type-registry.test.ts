import assert from "node:assert/strict";
import { describe, it } from "node:test";
import protobuf from "protobufjs/light.js";
import { isStale } from "../scripts/gen-proto.js";
import { XdsError } from "./errors.js";
import { descriptor } from "./gen/descriptor.js";
import type { istio } from "./gen/types.js";
import { ResourceCache } from "./resource-cache.js";
import { structFromJson, structToJson } from "./struct.js";
import { TypeRegistry, TypeUrl, typeRegistry } from "./type-registry.js";

const root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);

describe("generated descriptor and types", () => {
  it("match proto/** (run `pnpm gen` after editing a .proto)", () => {
    assert.equal(isStale(), false);
  });
});

// Field numbers that must stay wire-compatible with istiod, ztunnel and Envoy.
const FIELD_NUMBERS: [string, Record<string, number>][] = [
  [
    "envoy.service.discovery.v3.DiscoveryRequest",
    { versionInfo: 1, node: 2, resourceNames: 3, typeUrl: 4, responseNonce: 5, errorDetail: 6 },
  ],
  [
    "envoy.service.discovery.v3.DiscoveryResponse",
    { versionInfo: 1, resources: 2, canary: 3, typeUrl: 4, nonce: 5, controlPlane: 6 },
  ],
  [
    "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    {
      node: 1,
      typeUrl: 2,
      resourceNamesSubscribe: 3,
      resourceNamesUnsubscribe: 4,
      initialResourceVersions: 5,
      responseNonce: 6,
      errorDetail: 7,
    },
  ],
  [
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    { systemVersionInfo: 1, resources: 2, typeUrl: 4, nonce: 5, removedResources: 6, controlPlane: 7 },
  ],
  [
    "envoy.service.discovery.v3.Resource",
    { version: 1, resource: 2, name: 3, aliases: 4, ttl: 6, metadata: 9 },
  ],
  [
    "envoy.config.core.v3.Node",
    { id: 1, cluster: 2, metadata: 3, locality: 4, userAgentName: 6, clientFeatures: 10 },
  ],
  ["envoy.config.core.v3.ConfigSource", { path: 1, ads: 3, self: 5, resourceApiVersion: 6 }],
  ["envoy.config.core.v3.SocketAddress", { protocol: 1, address: 2, portValue: 3, namedPort: 4 }],
  ["envoy.config.listener.v3.Listener", { name: 1, address: 2, filterChains: 3, apiListener: 19 }],
  [
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    { codecType: 1, statPrefix: 2, rds: 3, routeConfig: 4, httpFilters: 5 },
  ],
  ["envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", { name: 1, typedConfig: 4 }],
  ["envoy.config.route.v3.Route", { match: 1, route: 2, name: 14, nonForwardingAction: 18 }],
  ["envoy.config.route.v3.RouteAction", { cluster: 1, clusterHeader: 2, weightedClusters: 3, timeout: 8 }],
  [
    "envoy.config.cluster.v3.Cluster",
    {
      name: 1,
      type: 2,
      edsClusterConfig: 3,
      connectTimeout: 4,
      lbPolicy: 6,
      loadAssignment: 33,
      lrsServer: 42,
    },
  ],
  [
    "envoy.config.endpoint.v3.LocalityLbEndpoints",
    { locality: 1, lbEndpoints: 2, loadBalancingWeight: 3, priority: 5 },
  ],
  [
    "envoy.config.endpoint.v3.LbEndpoint",
    { endpoint: 1, healthStatus: 2, metadata: 3, loadBalancingWeight: 4 },
  ],
  ["istio.workload.Address", { workload: 1, service: 2 }],
  [
    "istio.workload.Workload",
    {
      uid: 20,
      name: 1,
      namespace: 2,
      addresses: 3,
      hostname: 21,
      network: 4,
      tunnelProtocol: 5,
      trustDomain: 6,
      serviceAccount: 7,
      waypoint: 8,
      networkGateway: 19,
      node: 9,
      canonicalName: 10,
      canonicalRevision: 11,
      workloadType: 12,
      workloadName: 13,
      nativeTunnel: 14,
      applicationTunnel: 23,
      services: 22,
      authorizationPolicies: 16,
      status: 17,
      clusterId: 18,
      locality: 24,
      networkMode: 25,
      extensions: 26,
      capacity: 27,
    },
  ],
  [
    "istio.workload.Service",
    {
      name: 1,
      namespace: 2,
      hostname: 3,
      addresses: 4,
      ports: 5,
      subjectAltNames: 6,
      waypoint: 7,
      loadBalancing: 8,
      ipFamilies: 9,
      extensions: 10,
      canonical: 11,
      ingressUseWaypoint: 12,
      weightedWaypoints: 13,
      visibility: 14,
    },
  ],
  ["istio.workload.GatewayAddress", { hostname: 1, address: 2, hbonePort: 0, hboneMtlsPort: 3 }],
  ["istio.workload.NetworkAddress", { network: 1, address: 2, length: 3 }],
  [
    "istio.security.Authorization",
    { name: 1, namespace: 2, scope: 3, action: 4, groups: 5, dryRun: 6, extensions: 7 },
  ],
  [
    "istio.security.Match",
    {
      namespaces: 1,
      notNamespaces: 2,
      principals: 3,
      notPrincipals: 4,
      sourceIps: 5,
      notSourceIps: 6,
      destinationIps: 7,
      notDestinationIps: 8,
      destinationPorts: 9,
      notDestinationPorts: 10,
      serviceAccounts: 11,
      notServiceAccounts: 12,
      extensions: 13,
    },
  ],
  ["istio.security.StringMatch", { exact: 1, prefix: 2, suffix: 3, presence: 4 }],
];

describe("field numbers", () => {
  for (const [name, fields] of FIELD_NUMBERS) {
    it(name, () => {
      const type = root.lookupType(name);
      for (const [field, id] of Object.entries(fields)) {
        if (id === 0) assert.equal(type.fields[field], undefined, `${name}.${field} must not exist`);
        else assert.equal(type.fields[field]?.id, id, `${name}.${field}`);
      }
    });
  }
  it("enum values", () => {
    assert.deepEqual(
      { ...root.lookupEnum("istio.workload.TunnelProtocol").values },
      {
        NONE: 0,
        HBONE: 1,
        LEGACY_ISTIO_MTLS: 2,
      },
    );
    assert.deepEqual(
      { ...root.lookupEnum("istio.security.Scope").values },
      { GLOBAL: 0, NAMESPACE: 1, WORKLOAD_SELECTOR: 2 },
    );
    assert.deepEqual({ ...root.lookupEnum("istio.security.Action").values }, { ALLOW: 0, DENY: 1 });
    assert.equal(root.lookupEnum("envoy.config.cluster.v3.Cluster.DiscoveryType").values.EDS, 3);
    assert.equal(root.lookupEnum("envoy.config.core.v3.HealthStatus").values.HEALTHY, 1);
  });
});

describe("typeRegistry", () => {
  it("decodes istio.security.Authorization into the shared wire shape", () => {
    const input: istio.security.Authorization = {
      name: "allow-frontend",
      namespace: "shop",
      scope: "WORKLOAD_SELECTOR",
      action: "ALLOW",
      dryRun: false,
      extensions: [],
      groups: [
        {
          rules: [
            {
              matches: [
                {
                  namespaces: [{ exact: "shop" }],
                  notNamespaces: [],
                  principals: [{ suffix: "/sa/frontend" }, { presence: {} }],
                  notPrincipals: [{ prefix: "spiffe://evil" }],
                  sourceIps: [{ address: Buffer.from([10, 1, 0, 0]), length: 16 }],
                  notSourceIps: [],
                  destinationIps: [],
                  notDestinationIps: [],
                  destinationPorts: [8080],
                  notDestinationPorts: [],
                  serviceAccounts: [{ namespace: "shop", serviceAccount: "frontend" }],
                  notServiceAccounts: [],
                  extensions: [],
                },
              ],
            },
          ],
        },
      ],
    };
    const bytes = typeRegistry.encode(TypeUrl.authorization, input);
    const decoded = typeRegistry.decode(TypeUrl.authorization, bytes);
    assert.deepEqual(decoded, input);
    const match = decoded.groups[0]?.rules[0]?.matches[0];
    assert.ok(match?.sourceIps[0]?.address instanceof Uint8Array);
    // Oneofs carry only the member that is set.
    assert.deepEqual(Object.keys(match?.principals[0] ?? {}), ["suffix"]);
  });

  it("carries a waypoint policy's spec through a Struct unchanged", () => {
    const spec = {
      targetRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }],
      action: "DENY",
      rules: [{ to: [{ operation: { methods: ["POST"], ports: ["8080"] } }], when: [] }],
    };
    const input = {
      kind: "AuthorizationPolicy",
      apiVersion: "security.istio.io/v1",
      name: "no-post",
      namespace: "demo",
      spec: structFromJson(spec),
    };
    const decoded = typeRegistry.decode(
      TypeUrl.waypointPolicy,
      typeRegistry.encode(TypeUrl.waypointPolicy, input),
    );
    assert.equal(decoded.kind, "AuthorizationPolicy");
    assert.equal(decoded.namespace, "demo");
    assert.deepEqual(structToJson(decoded.spec), spec);
  });

  it("fills scalar defaults, leaves unset messages out, and keeps proto3 optional presence", () => {
    const decoded = typeRegistry.decode(
      TypeUrl.authorization,
      typeRegistry.encode(TypeUrl.authorization, {}),
    );
    assert.deepEqual(decoded, {
      name: "",
      namespace: "",
      scope: "GLOBAL",
      action: "ALLOW",
      groups: [],
      dryRun: false,
      extensions: [],
    });
    const a = typeRegistry.decode(
      "istio.workload.NetworkAddress",
      typeRegistry.encode("istio.workload.NetworkAddress", {}),
    );
    assert.equal("length" in a, false);
    const b = typeRegistry.decode(
      "istio.workload.NetworkAddress",
      typeRegistry.encode("istio.workload.NetworkAddress", { length: 0 }),
    );
    assert.equal(b.length, 0);
  });

  it("round-trips an Address with a map, wrappers and nested oneofs", () => {
    const bytes = typeRegistry.encode(TypeUrl.address, {
      workload: {
        uid: "Kubernetes//Pod/shop/web-0",
        addresses: [new Uint8Array([10, 0, 0, 7])],
        tunnelProtocol: "HBONE",
        services: { "shop/web.shop.svc.cluster.local": { ports: [{ servicePort: 80, targetPort: 8080 }] } },
        waypoint: {
          hostname: { namespace: "shop", hostname: "waypoint.shop.svc.cluster.local" },
          hboneMtlsPort: 15008,
        },
        capacity: { value: 3 },
      },
    });
    const decoded = typeRegistry.decode(TypeUrl.address, bytes);
    assert.equal(decoded.service, undefined);
    const w = decoded.workload;
    assert.equal(w?.tunnelProtocol, "HBONE");
    assert.deepEqual([...(w?.addresses[0] ?? [])], [10, 0, 0, 7]);
    assert.deepEqual(w?.services["shop/web.shop.svc.cluster.local"]?.ports[0], {
      servicePort: 80,
      targetPort: 8080,
      appProtocol: "UNKNOWN",
    });
    assert.equal(w?.waypoint?.hostname?.hostname, "waypoint.shop.svc.cluster.local");
    assert.equal(w?.waypoint?.address, undefined);
    assert.equal(w?.capacity?.value, 3);
  });

  it("decodes 64-bit integers to numbers, bytes to Buffers, and writes fields in field order", () => {
    const duration = typeRegistry.decode(
      "google.protobuf.Duration",
      typeRegistry.encode("google.protobuf.Duration", { seconds: 90, nanos: 5 }),
    );
    assert.deepEqual(duration, { seconds: 90, nanos: 5 });
    assert.equal(typeof duration.seconds, "number");
    const address = typeRegistry.decode(
      "istio.workload.NetworkAddress",
      typeRegistry.encode("istio.workload.NetworkAddress", {
        network: "n1",
        address: new Uint8Array([10, 0, 0, 1]),
      }),
    );
    assert.ok(Buffer.isBuffer(address.address));
    assert.deepEqual(Object.keys(address), ["network", "address"]);
    // Two decodes never share arrays.
    const bytes = typeRegistry.encode(TypeUrl.authorization, { name: "p", groups: [{ rules: [] }] });
    const one = typeRegistry.decode(TypeUrl.authorization, bytes);
    const two = typeRegistry.decode(TypeUrl.authorization, bytes);
    assert.notEqual(one.groups, two.groups);
    assert.deepEqual(one, two);
  });

  it("packs and unpacks Any by type URL", () => {
    const any = typeRegistry.pack(TypeUrl.router, {});
    assert.equal(any.typeUrl, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    const hcm = typeRegistry.pack(TypeUrl.httpConnectionManager, {
      rds: { configSource: { ads: {} }, routeConfigName: "r" },
      httpFilters: [{ name: "router", typedConfig: any }],
    });
    const back = typeRegistry.unpack(hcm) as {
      rds: { routeConfigName: string; configSource: { ads: object } };
    };
    assert.equal(back.rds.routeConfigName, "r");
    assert.deepEqual(back.rds.configSource.ads, {});
  });

  it("accepts extra message types from a JSON descriptor", () => {
    const registry = new TypeRegistry();
    registry.add({
      nested: {
        example: {
          nested: {
            Ping: {
              fields: { id: { type: "string", id: 1 }, at: { type: "google.protobuf.Duration", id: 2 } },
            },
          },
        },
      },
    });
    const any = registry.pack("type.googleapis.com/example.Ping", { id: "p", at: { seconds: 3 } } as never);
    assert.deepEqual(registry.unpack(any), { id: "p", at: { seconds: 3, nanos: 0 } });
    assert.equal(typeRegistry.has("example.Ping"), false);
  });

  it("rejects unknown types, malformed bytes and malformed Any with typed errors", () => {
    assert.throws(
      () => typeRegistry.encode("type.googleapis.com/no.such.Type", {}),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_UNKNOWN_TYPE",
    );
    assert.throws(
      () => typeRegistry.decode(TypeUrl.address, Buffer.from([0x0a, 0xff, 0xff, 0x01])),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_DECODE",
    );
    assert.throws(
      () => typeRegistry.unpack({ typeUrl: 5 } as never),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_DECODE",
    );
    assert.throws(
      () => typeRegistry.encode(TypeUrl.address, { workload: "not an object" } as never),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_ENCODE",
    );
    assert.equal(typeRegistry.has(TypeUrl.listener), true);
    assert.equal(typeRegistry.has(""), false);
  });
  it("refuses keys the message lacks, naming the field and the message", () => {
    const refuses = (
      typeUrl: string,
      value: unknown,
      expected: { code: string; field: string; messageType: string; message?: RegExp },
    ) => {
      assert.throws(
        () => typeRegistry.encode(typeUrl, value as never),
        (e: unknown) => {
          assert.ok(e instanceof XdsError, String(e));
          assert.equal(e.code, expected.code);
          assert.equal(e.field, expected.field);
          assert.equal(e.messageType, expected.messageType);
          assert.ok(e.message.includes(expected.field), e.message);
          if (expected.message) assert.match(e.message, expected.message);
          return true;
        },
      );
    };
    // ztunnel's copy of authorization.proto says rules[].clauses[]; istiod's (ours) groups[].rules[].
    // Before, this encoded as a DENY policy without rules, which never matches.
    refuses(
      TypeUrl.authorization,
      {
        name: "deny-evil",
        namespace: "shop",
        action: "DENY",
        rules: [{ clauses: [{ matches: [{ principals: [{ exact: "cluster.local/ns/evil/sa/x" }] }] }] }],
      },
      { code: "ERR_XDS_UNKNOWN_FIELD", field: "rules", messageType: "istio.security.Authorization" },
    );
    // A snake_case name deep inside: the whole path, the message that lacks it, and the right name.
    refuses(
      TypeUrl.authorization,
      {
        name: "p",
        groups: [{ rules: [{ matches: [{ not_source_ips: [{ address: Buffer.from([10, 0, 0, 1]) }] }] }] }],
      },
      {
        code: "ERR_XDS_UNKNOWN_FIELD",
        field: "groups[0].rules[0].matches[0].not_source_ips",
        messageType: "istio.security.Match",
        message: /"notSourceIps"/,
      },
    );
    refuses(
      TypeUrl.authorization,
      { name: "p", groups: [{ rules: [{ matches: [{ principals: [{ exakt: "x" }] }] }] }] },
      {
        code: "ERR_XDS_UNKNOWN_FIELD",
        field: "groups[0].rules[0].matches[0].principals[0].exakt",
        messageType: "istio.security.StringMatch",
      },
    );
    // Map values, oneof names and Any in protobufjs' "@type" form are checked as well.
    refuses(
      TypeUrl.address,
      { workload: { uid: "u", services: { "shop/web": { ports: [{ service_port: 80 }] } } } },
      {
        code: "ERR_XDS_UNKNOWN_FIELD",
        field: 'workload.services["shop/web"].ports[0].service_port',
        messageType: "istio.workload.Port",
      },
    );
    refuses(
      TypeUrl.address,
      { type: { uid: "u" } },
      { code: "ERR_XDS_UNKNOWN_FIELD", field: "type", messageType: "istio.workload.Address" },
    );
    refuses(
      TypeUrl.httpConnectionManager,
      { httpFilters: [{ name: "router", typedConfig: { "@type": TypeUrl.router, dynamic_stats: true } }] },
      {
        code: "ERR_XDS_UNKNOWN_FIELD",
        field: "httpFilters[0].typedConfig.dynamic_stats",
        messageType: "envoy.extensions.filters.http.router.v3.Router",
      },
    );
    // The server's cache refuses it too, instead of serving a policy without rules.
    const cache = new ResourceCache();
    assert.throws(
      () => cache.set(TypeUrl.authorization, "shop/p", { name: "p", namespace: "shop", rules: [] } as never),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_UNKNOWN_FIELD" && e.field === "rules",
    );
    assert.equal(cache.get(TypeUrl.authorization, "shop/p"), undefined);
  });

  it("refuses values protobufjs would coerce to something else", () => {
    const code = (value: unknown) => {
      try {
        typeRegistry.encode(TypeUrl.authorization, value as never);
        return "encoded";
      } catch (e) {
        return e instanceof XdsError ? `${e.code} ${e.field}` : String(e);
      }
    };
    // An unknown enum name used to become the default, ALLOW.
    assert.equal(code({ action: "DENIED" }), "ERR_XDS_ENCODE action");
    assert.equal(code({ action: 1 }), "encoded");
    assert.equal(
      code({ groups: [{ rules: [{ matches: [{ destinationPorts: ["80"] }] }] }] }),
      "ERR_XDS_ENCODE groups[0].rules[0].matches[0].destinationPorts[0]",
    );
    assert.equal(code({ groups: { rules: [] } }), "ERR_XDS_ENCODE groups");
    assert.equal(code({ dryRun: "false" }), "ERR_XDS_ENCODE dryRun");
    assert.equal(code({ name: 5 }), "ERR_XDS_ENCODE name");
    assert.equal(code({ groups: [null] }), "ERR_XDS_ENCODE groups[0]");
    // Two members of one oneof: only one would survive the round trip.
    assert.equal(
      code({ groups: [{ rules: [{ matches: [{ principals: [{ exact: "a", prefix: "b" }] }] }] }] }),
      "ERR_XDS_ENCODE groups[0].rules[0].matches[0].principals[0].prefix",
    );
    // Absent values are fine in every form.
    assert.equal(code({ name: undefined, groups: null, scope: undefined }), "encoded");
  });
});
