import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Service, Workload } from "@ambient/xds";
import {
  addressProblem,
  identityOf,
  ipFromBytes,
  pickEndpoint,
  serviceForTargetPort,
  serviceVip,
  WorkloadStore,
  waypointOf,
} from "./workload-store.js";

function ip(text: string): Uint8Array {
  return Uint8Array.from(text.split(".").map(Number));
}

function workload(name: string, init: Partial<Workload> & { ip: string }): Workload {
  const { ip: address, ...rest } = init;
  return {
    uid: `Kubernetes//Pod/default/${name}`,
    name,
    namespace: "default",
    addresses: [ip(address)],
    hostname: "",
    network: "",
    tunnelProtocol: "HBONE",
    trustDomain: "",
    serviceAccount: name,
    node: "node-a",
    canonicalName: name,
    canonicalRevision: "latest",
    workloadType: "POD",
    workloadName: name,
    nativeTunnel: false,
    services: {},
    authorizationPolicies: [],
    status: "HEALTHY",
    clusterId: "Kubernetes",
    networkMode: "STANDARD",
    extensions: [],
    ...rest,
  };
}

const echoService: Service = {
  name: "echo",
  namespace: "default",
  hostname: "echo.default.svc.cluster.local",
  addresses: [{ network: "", address: ip("127.30.0.1") }],
  ports: [
    { servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" },
    { servicePort: 90, targetPort: 0, appProtocol: "UNKNOWN" },
  ],
  subjectAltNames: [],
  ipFamilies: "AUTOMATIC",
  extensions: [],
  canonical: true,
  ingressUseWaypoint: false,
  weightedWaypoints: [],
  visibility: "PUBLIC",
};
const svcKey = "default/echo.default.svc.cluster.local";
const ports = (servicePort: number, targetPort: number) => ({
  [svcKey]: { ports: [{ servicePort, targetPort, appProtocol: "UNKNOWN" as const }] },
});

function store(): WorkloadStore {
  const s = new WorkloadStore();
  s.upsert(svcKey, { service: echoService });
  s.upsert("Kubernetes//Pod/default/echo-1", {
    workload: workload("echo-1", { ip: "127.10.0.2", node: "node-b", services: ports(80, 8080) }),
  });
  s.upsert("Kubernetes//Pod/default/echo-2", {
    workload: workload("echo-2", { ip: "127.10.0.3", node: "node-b", services: ports(80, 9090) }),
  });
  s.upsert("Kubernetes//Pod/default/echo-sick", {
    workload: workload("echo-sick", { ip: "127.10.0.4", status: "UNHEALTHY", services: ports(80, 8080) }),
  });
  s.upsert("Kubernetes//Pod/default/sleep", { workload: workload("sleep", { ip: "127.10.0.1" }) });
  return s;
}

describe("WorkloadStore", () => {
  it("findByAddress", () => {
    const s = store();
    const cases: [string, string | undefined][] = [
      ["127.10.0.1", "sleep"],
      ["127.10.0.2", "echo-1"],
      ["127.30.0.1", undefined],
      ["10.0.0.1", undefined],
    ];
    for (const [address, name] of cases) assert.equal(s.findByAddress(address)?.name, name, address);
  });

  it("findService maps service ports to target ports", () => {
    const s = store();
    const cases: [string, number, number | undefined][] = [
      ["127.30.0.1", 80, 8080],
      ["127.30.0.1", 90, 90],
      ["127.30.0.1", 81, undefined],
      ["127.10.0.2", 80, undefined],
    ];
    for (const [vip, port, target] of cases) assert.equal(s.findService(vip, port)?.targetPort, target);
  });

  it("selects healthy endpoints round robin with each endpoint's target port", () => {
    const s = store();
    const match = s.findService("127.30.0.1", 80);
    assert.ok(match);
    const picks = [1, 2, 3, 4].map(() => {
      const e = s.selectEndpoint(match);
      return `${e?.workload.name}:${e?.targetPort}`;
    });
    assert.deepEqual(picks, ["echo-1:8080", "echo-2:9090", "echo-1:8080", "echo-2:9090"]);
  });

  it("counts an endpoint known by hostname, but not one with neither address nor hostname", () => {
    const s = store();
    s.upsert("se-endpoint", {
      workload: workload("external", {
        ip: "0.0.0.0",
        addresses: [],
        hostname: "api.example.com",
        tunnelProtocol: "NONE",
        services: ports(80, 443),
      }),
    });
    s.upsert("nowhere", {
      workload: workload("nowhere", { ip: "0.0.0.0", addresses: [], services: ports(80, 8080) }),
    });
    const match = s.findService("127.30.0.1", 80);
    assert.ok(match);
    const names = s.endpointsOf(match).map((e) => `${e.workload.name}:${e.targetPort}`);
    assert.deepEqual(names.sort(), ["echo-1:8080", "echo-2:9090", "external:443"]);
    // Never found by an address it does not have.
    assert.equal(s.findByAddress("0.0.0.0"), undefined);
  });

  it("resolve: service, workload, passthrough, no endpoint", () => {
    const s = store();
    assert.equal(s.resolve("127.30.0.1", 80).kind, "service");
    const direct = s.resolve("127.10.0.2", 7);
    assert.equal(direct.kind, "workload");
    assert.equal(direct.kind === "workload" ? direct.endpoint.targetPort : 0, 7);
    assert.deepEqual(s.resolve("127.99.0.1", 22), { kind: "passthrough", ip: "127.99.0.1", port: 22 });
    // A Service's address on a port it does not declare: not passed through around the mesh.
    const undeclared = s.resolve("127.30.0.1", 22);
    assert.equal(undeclared.kind, "unknown-port");
    assert.equal(
      undeclared.kind === "unknown-port" ? undeclared.service.key : "",
      "default/echo.default.svc.cluster.local",
    );
    // Port 90 has no target port of its own (a named one) and no endpoint's port map lists it.
    assert.equal(s.resolve("127.30.0.1", 90).kind, "no-endpoint");
    s.upsert("default/lonely", {
      service: {
        ...echoService,
        hostname: "lonely",
        addresses: [{ network: "", address: ip("127.30.0.2") }],
      },
    });
    assert.equal(s.resolve("127.30.0.2", 80).kind, "no-endpoint");
  });

  it("a Service port without a target port (a named one) reaches only the endpoints that map it", () => {
    // `targetPort: http` on the Service: the control plane sends target port 0 and lists the port in
    // the port map of each pod that has a container port named `http`, with that pod's number; a pod
    // without one does not list the port and is no endpoint of it (as in Kubernetes' EndpointSlices).
    const s = store();
    s.upsert("Kubernetes//Pod/default/echo-named", {
      workload: workload("echo-named", {
        ip: "127.10.0.6",
        services: { [svcKey]: { ports: [{ servicePort: 90, targetPort: 9191, appProtocol: "UNKNOWN" }] } },
      }),
    });
    const match = s.findService("127.30.0.1", 90);
    assert.ok(match);
    assert.deepEqual(
      s.endpointsOf(match).map((e) => `${e.workload.name}:${e.targetPort}`),
      ["echo-named:9191"],
    );
    const picks = [1, 2, 3].map(() => {
      const d = s.resolve("127.30.0.1", 90);
      return d.kind === "service" ? `${d.endpoint.workload.name}:${d.endpoint.targetPort}` : d.kind;
    });
    assert.deepEqual(picks, ["echo-named:9191", "echo-named:9191", "echo-named:9191"]);
    s.remove("Kubernetes//Pod/default/echo-named");
    // No pod has the named port: nothing to dial, rather than the Service port on a pod without it.
    assert.equal(s.resolve("127.30.0.1", 90).kind, "no-endpoint");
  });

  it("loadBalancing: round robin among the nearest endpoints for the source, STRICT, PASSTHROUGH, ALLOW_ALL", () => {
    const s = store();
    const zoned = (name: string, address: string, zone: string, targetPort: number) =>
      s.upsert(`Kubernetes//Pod/default/${name}`, {
        workload: workload(name, {
          ip: address,
          locality: { region: "r1", zone, subzone: "" },
          services: ports(80, targetPort),
        }),
      });
    zoned("echo-1", "127.10.0.2", "z1", 8080);
    zoned("echo-2", "127.10.0.3", "z2", 9090);
    zoned("echo-3", "127.10.0.5", "z1", 7070);
    const from = (zone: string) =>
      workload("client", { ip: "127.10.0.9", locality: { region: "r1", zone, subzone: "" } });
    const withLb = (loadBalancing: Service["loadBalancing"]) =>
      s.upsert(svcKey, {
        service: { ...echoService, ...(loadBalancing === undefined ? {} : { loadBalancing }) },
      });
    const picks = (source: Workload, n: number) =>
      Array.from({ length: n }, () => {
        const d = s.resolve("127.30.0.1", 80, source);
        return d.kind === "service" ? d.endpoint.workload.name : d.kind;
      });

    withLb({ mode: "FAILOVER", routingPreference: ["REGION", "ZONE"], healthPolicy: "ONLY_HEALTHY" });
    assert.deepEqual(picks(from("z1"), 4), ["echo-1", "echo-3", "echo-1", "echo-3"]);
    assert.deepEqual(picks(from("z2"), 2), ["echo-2", "echo-2"]);
    // Nothing in z9: failover to the whole region.
    assert.deepEqual(new Set(picks(from("z9"), 3)), new Set(["echo-1", "echo-2", "echo-3"]));

    withLb({ mode: "STRICT", routingPreference: ["REGION", "ZONE"], healthPolicy: "ONLY_HEALTHY" });
    assert.deepEqual(picks(from("z9"), 1), ["no-endpoint"]);
    assert.deepEqual(picks(from("z2"), 1), ["echo-2"]);

    // Default: plain round robin over every healthy endpoint, whatever the source.
    withLb(undefined);
    assert.deepEqual(new Set(picks(from("z1"), 3)), new Set(["echo-1", "echo-2", "echo-3"]));

    withLb({ mode: "PASSTHROUGH", routingPreference: [], healthPolicy: "ONLY_HEALTHY" });
    assert.deepEqual(s.resolve("127.30.0.1", 80, from("z1")), {
      kind: "passthrough",
      ip: "127.30.0.1",
      port: 80,
    });

    withLb({ mode: "UNSPECIFIED_MODE", routingPreference: [], healthPolicy: "ALLOW_ALL" });
    const match = s.findService("127.30.0.1", 80);
    assert.ok(match);
    assert.ok(s.endpointsOf(match).some((e) => e.workload.name === "echo-sick"));
  });

  it("updates and removals re-index addresses", () => {
    const s = store();
    s.upsert("Kubernetes//Pod/default/echo-1", {
      workload: workload("echo-1", { ip: "127.10.0.9", node: "node-b" }),
    });
    assert.equal(s.findByAddress("127.10.0.2"), undefined);
    assert.equal(s.findByAddress("127.10.0.9")?.name, "echo-1");
    assert.equal(s.remove("Kubernetes//Pod/default/echo-1"), true);
    assert.equal(s.remove("Kubernetes//Pod/default/echo-1"), false);
    assert.equal(s.findByAddress("127.10.0.9"), undefined);
    assert.equal(s.remove(svcKey), true);
    assert.equal(s.findService("127.30.0.1", 80), undefined);
  });

  it("keeps each Service's endpoints in step as workloads join, change Services and leave", () => {
    const s = store();
    const match = s.findService("127.30.0.1", 80);
    assert.ok(match);
    const endpoints = () => s.endpointsOf(match).map((e) => e.workload.name);
    assert.deepEqual(endpoints(), ["echo-1", "echo-2"]);
    assert.deepEqual(
      s.workloadsOfService(svcKey).map((w) => w.name),
      ["echo-1", "echo-2"],
    );
    // A new endpoint takes its place in uid order; one that leaves the Service, or the mesh, goes.
    s.upsert("Kubernetes//Pod/default/echo-0", {
      workload: workload("echo-0", { ip: "127.10.0.5", services: ports(80, 8080) }),
    });
    assert.deepEqual(endpoints(), ["echo-0", "echo-1", "echo-2"]);
    s.upsert("Kubernetes//Pod/default/echo-1", { workload: workload("echo-1", { ip: "127.10.0.2" }) });
    assert.deepEqual(endpoints(), ["echo-0", "echo-2"]);
    s.remove("Kubernetes//Pod/default/echo-2");
    assert.deepEqual(endpoints(), ["echo-0"]);
    // Back into the Service, and recovering health.
    s.upsert("Kubernetes//Pod/default/echo-1", {
      workload: workload("echo-1", { ip: "127.10.0.2", services: ports(80, 8080) }),
    });
    s.upsert("Kubernetes//Pod/default/echo-sick", {
      workload: workload("echo-sick", { ip: "127.10.0.4", services: ports(80, 8080) }),
    });
    assert.deepEqual(endpoints(), ["echo-0", "echo-1", "echo-sick"]);
    for (const name of ["echo-0", "echo-1", "echo-sick"]) s.remove(`Kubernetes//Pod/default/${name}`);
    assert.deepEqual(endpoints(), []);
    assert.deepEqual(s.workloadsOfService(svcKey), []);
  });

  it("never finds a host-network workload by address, nor as a node's pod, only as an endpoint", () => {
    const s = store();
    // Two host-network pods on node-b share its address; a meshed pod at the same address is found.
    for (const name of ["agent", "exporter"]) {
      s.upsert(`Kubernetes//Pod/default/${name}`, {
        workload: workload(name, {
          ip: "127.20.0.2",
          node: "node-b",
          networkMode: "HOST_NETWORK",
          tunnelProtocol: "NONE",
          services: name === "agent" ? ports(80, 7070) : {},
        }),
      });
    }
    assert.equal(s.findByAddress("127.20.0.2"), undefined);
    assert.deepEqual(s.resolve("127.20.0.2", 7070), { kind: "passthrough", ip: "127.20.0.2", port: 7070 });
    assert.deepEqual(
      s
        .workloadsOnNode("node-b")
        .map((w) => w.name)
        .sort(),
      ["echo-1", "echo-2"],
    );
    const match = s.findService("127.30.0.1", 80);
    assert.ok(match);
    assert.ok(s.endpointsOf(match).some((e) => e.workload.name === "agent" && e.targetPort === 7070));
    // Replacing or removing one leaves a workload of that address alone.
    s.upsert("Kubernetes//Pod/default/node-b-pod", {
      workload: workload("node-b-pod", { ip: "127.20.0.2" }),
    });
    s.upsert("Kubernetes//Pod/default/agent", {
      workload: workload("agent", { ip: "127.20.0.2", networkMode: "HOST_NETWORK" }),
    });
    assert.equal(s.remove("Kubernetes//Pod/default/exporter"), true);
    assert.equal(s.findByAddress("127.20.0.2")?.name, "node-b-pod");
  });

  it("findServiceByHostname: the client's namespace, then the canonical Service, then the first", () => {
    const s = store();
    // A ServiceEntry in a namespace that sorts first reuses the Service's hostname.
    const shadow: Service = {
      ...echoService,
      namespace: "aaa",
      addresses: [{ network: "", address: ip("240.240.0.9") }],
      canonical: false,
    };
    s.upsert("aaa/echo.default.svc.cluster.local", { service: shadow });
    assert.equal(s.findServiceByHostname("echo.default.svc.cluster.local")?.namespace, "default");
    assert.equal(s.findServiceByHostname("echo.default.svc.cluster.local", "aaa")?.namespace, "aaa");
    s.upsert(svcKey, { service: { ...echoService, canonical: false } });
    assert.equal(s.findServiceByHostname("echo.default.svc.cluster.local")?.namespace, "aaa");
  });

  it("findServiceByHostname with a client namespace passes over Services of NAMESPACE visibility elsewhere", () => {
    const s = store();
    // A ServiceEntry with `exportTo: ["."]` in namespace aaa, the only one with its hostname.
    const hidden: Service = {
      ...echoService,
      namespace: "aaa",
      hostname: "local.example.com",
      addresses: [{ network: "", address: ip("240.240.0.5") }],
      canonical: false,
      visibility: "NAMESPACE",
    };
    s.upsert("aaa/local.example.com", { service: hidden });
    assert.equal(s.findServiceByHostname("local.example.com", "aaa")?.namespace, "aaa");
    assert.equal(s.findServiceByHostname("local.example.com", "default"), undefined);
    // With no client namespace (a lookup for no particular client) it is known.
    assert.equal(s.findServiceByHostname("local.example.com")?.namespace, "aaa");
    // Hidden, it does not hide a Service of that hostname another namespace may see.
    s.upsert("bbb/local.example.com", {
      service: { ...hidden, namespace: "bbb", visibility: "PUBLIC" },
    });
    assert.equal(s.findServiceByHostname("local.example.com", "default")?.namespace, "bbb");
    assert.equal(s.findServiceByHostname("local.example.com", "aaa")?.namespace, "aaa");
  });

  it("several Services on one VIP: the client's namespace's, else the canonical one; all are kept", () => {
    const s = store();
    // A ServiceEntry in another namespace reuses the Kubernetes Service's ClusterIP, written after it.
    const seKey = "aaa/echo.example.com";
    const entry: Service = {
      ...echoService,
      namespace: "aaa",
      hostname: "echo.example.com",
      canonical: false,
    };
    s.upsert(seKey, { service: entry });
    s.upsert("Kubernetes//Pod/aaa/se-1", {
      workload: workload("se-1", {
        namespace: "aaa",
        ip: "127.10.0.9",
        services: { [seKey]: { ports: [{ servicePort: 80, targetPort: 7070, appProtocol: "UNKNOWN" }] } },
      }),
    });
    const vip = "127.30.0.1";
    const keyFor = (namespace?: string) => s.findService(vip, 80, namespace)?.key;
    assert.equal(keyFor("default"), svcKey);
    assert.equal(keyFor("aaa"), seKey);
    // A client in a third namespace, or none named: the canonical Service, however the two were written.
    assert.equal(keyFor("zzz"), svcKey);
    assert.equal(keyFor(), svcKey);
    assert.equal(s.findServiceByVip(vip)?.namespace, "default");
    assert.equal(s.findServiceByVip(vip, "aaa")?.namespace, "aaa");
    const fromAaa = s.resolve(vip, 80, workload("curl", { namespace: "aaa", ip: "127.10.0.8" }));
    assert.equal(fromAaa.kind === "service" ? fromAaa.endpoint.workload.name : fromAaa.kind, "se-1");
    const fromDefault = s.resolve(vip, 80, workload("sleep", { ip: "127.10.0.1" }));
    assert.equal(fromDefault.kind === "service" ? fromDefault.service.key : fromDefault.kind, svcKey);

    // An update of one leaves the other at the VIP; so does the removal of one.
    s.upsert(svcKey, { service: { ...echoService } });
    assert.equal(keyFor("aaa"), seKey);
    assert.ok(s.remove(svcKey));
    assert.equal(keyFor("default"), seKey);
    assert.equal(keyFor(), seKey);
    s.upsert(svcKey, { service: echoService });
    assert.ok(s.remove(seKey));
    assert.equal(keyFor("aaa"), svcKey);
    assert.ok(s.remove(svcKey));
    assert.equal(keyFor("aaa"), undefined);

    // Without a canonical one, or with two of one namespace: the first by key, whatever the order written.
    s.upsert("ccc/b.example.com", { service: { ...entry, namespace: "ccc", hostname: "b.example.com" } });
    s.upsert("ccc/a.example.com", { service: { ...entry, namespace: "ccc", hostname: "a.example.com" } });
    s.upsert("bbb/z.example.com", { service: { ...entry, namespace: "bbb", hostname: "z.example.com" } });
    assert.equal(keyFor(), "bbb/z.example.com");
    assert.equal(keyFor("ccc"), "ccc/a.example.com");
  });

  it("a Service of NAMESPACE visibility is found by address only from its own namespace", () => {
    const s = store();
    // A ServiceEntry with `exportTo: ["."]`, at an address of its own.
    const localKey = "aaa/local.example.com";
    const local: Service = {
      ...echoService,
      namespace: "aaa",
      hostname: "local.example.com",
      addresses: [{ network: "", address: ip("240.240.0.5") }],
      canonical: false,
      visibility: "NAMESPACE",
    };
    s.upsert(localKey, { service: local });
    assert.equal(s.findService("240.240.0.5", 80, "aaa")?.key, localKey);
    assert.equal(s.findService("240.240.0.5", 80, "default"), undefined);
    assert.equal(s.findServiceByVip("240.240.0.5", "default"), undefined);
    assert.deepEqual(s.resolve("240.240.0.5", 80, workload("sleep", { ip: "127.10.0.1" })), {
      kind: "passthrough",
      ip: "240.240.0.5",
      port: 80,
    });
    // With no client namespace (a lookup for no particular client) it is known.
    assert.equal(s.findServiceByVip("240.240.0.5")?.hostname, "local.example.com");

    // Hidden, it does not hide a Service another namespace may see: a range that holds the address.
    s.upsert("default/range.example.com", {
      service: {
        ...echoService,
        hostname: "range.example.com",
        addresses: [{ network: "", address: ip("240.240.0.0"), length: 16 }],
        canonical: false,
      },
    });
    assert.equal(s.findService("240.240.0.5", 80, "default")?.key, "default/range.example.com");
    assert.equal(s.findService("240.240.0.5", 80, "aaa")?.key, localKey);

    // Sharing the VIP of a Service all may see, it takes that VIP from its own namespace only.
    s.upsert(localKey, { service: { ...local, addresses: echoService.addresses } });
    assert.equal(s.findService("127.30.0.1", 80, "aaa")?.key, localKey);
    assert.equal(s.findService("127.30.0.1", 80, "zzz")?.key, svcKey);
    // A range of NAMESPACE visibility captures nothing for another namespace's clients.
    s.upsert("bbb/hidden-range", {
      service: {
        ...local,
        namespace: "bbb",
        hostname: "hidden-range",
        addresses: [{ network: "", address: ip("240.241.0.0"), length: 16 }],
      },
    });
    assert.equal(s.findService("240.241.0.1", 80, "bbb")?.key, "bbb/hidden-range");
    assert.equal(s.findService("240.241.0.1", 80, "default"), undefined);
  });

  it("a Service address with a prefix length is a range: any address in it reaches the Service", () => {
    const s = store();
    // A ServiceEntry with `addresses: [240.240.0.0/16]`, sent as the range's address and length.
    const range: Service = {
      ...echoService,
      name: "range",
      hostname: "range.example.com",
      addresses: [{ network: "", address: ip("240.240.0.0"), length: 16 }],
      canonical: false,
    };
    const rangeKey = "default/range.example.com";
    s.upsert(rangeKey, { service: range });
    s.upsert("Kubernetes//Pod/default/echo-1", {
      workload: workload("echo-1", {
        ip: "127.10.0.2",
        node: "node-b",
        services: {
          ...ports(80, 8080),
          [rangeKey]: { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }] },
        },
      }),
    });
    for (const inside of ["240.240.0.0", "240.240.3.7", "240.240.255.255"]) {
      assert.equal(s.findService(inside, 80)?.key, rangeKey, inside);
      assert.equal(s.findServiceByVip(inside)?.hostname, "range.example.com", inside);
      const dest = s.resolve(inside, 80);
      assert.equal(dest.kind === "service" ? dest.service.key : dest.kind, rangeKey, inside);
    }
    for (const outside of ["240.241.0.0", "240.239.255.255"]) {
      assert.equal(s.findServiceByVip(outside), undefined, outside);
      assert.deepEqual(s.resolve(outside, 80), { kind: "passthrough", ip: outside, port: 80 });
    }
    // A range's first address is not an address of the Service to dial it at.
    assert.equal(serviceVip(range), undefined);
    // A full-length prefix is a single address.
    assert.equal(
      serviceVip({ addresses: [{ network: "", address: ip("240.240.1.1"), length: 32 }] }),
      "240.240.1.1",
    );

    // The longest prefix wins; an exact address wins over every range.
    const narrow: Service = {
      ...range,
      name: "narrow",
      hostname: "narrow.example.com",
      addresses: [{ network: "", address: ip("240.240.7.0"), length: 24 }],
    };
    s.upsert("default/narrow.example.com", { service: narrow });
    assert.equal(s.findServiceByVip("240.240.7.9")?.hostname, "narrow.example.com");
    assert.equal(s.findServiceByVip("240.240.8.9")?.hostname, "range.example.com");
    s.upsert("default/single", {
      service: {
        ...range,
        name: "single",
        hostname: "single.example.com",
        addresses: [{ network: "", address: ip("240.240.7.9") }],
      },
    });
    assert.equal(s.findServiceByVip("240.240.7.9")?.hostname, "single.example.com");

    // Removed or replaced, a Service's range no longer captures anything.
    s.remove("default/narrow.example.com");
    assert.equal(s.findServiceByVip("240.240.7.10")?.hostname, "range.example.com");

    // Of overlapping ranges, one in the client's namespace comes first, however wide.
    s.upsert("other/narrow.example.com", { service: { ...narrow, namespace: "other" } });
    assert.equal(s.findServiceByVip("240.240.7.10")?.namespace, "other");
    assert.equal(s.findServiceByVip("240.240.7.10", "default")?.hostname, "range.example.com");
    const fromDefault = s.resolve("240.240.7.10", 80, workload("sleep", { ip: "127.10.0.1" }));
    assert.equal(fromDefault.kind === "service" ? fromDefault.service.key : fromDefault.kind, rangeKey);
    s.remove("other/narrow.example.com");
    s.upsert(rangeKey, { service: { ...range, addresses: [] } });
    assert.equal(s.findServiceByVip("240.240.3.7"), undefined);
  });

  it("an IPv6 range, and a prefix length longer than the address, which names nothing: the Service is refused", () => {
    const s = new WorkloadStore();
    // fd00::12:0/112
    const v6 = Uint8Array.from([0xfd, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0, 0]);
    s.upsert("default/v6", {
      service: { ...echoService, hostname: "v6", addresses: [{ network: "", address: v6, length: 112 }] },
    });
    assert.equal(s.findServiceByVip("fd00::12:34")?.hostname, "v6");
    assert.equal(s.findServiceByVip("fd00::13:34"), undefined);
    assert.throws(() =>
      s.upsert("default/bad", {
        service: {
          ...echoService,
          hostname: "bad",
          addresses: [{ network: "", address: ip("240.240.9.9"), length: 33 }],
        },
      }),
    );
    assert.equal(s.findServiceByVip("240.240.9.9"), undefined);
    assert.equal(s.services().has("default/bad"), false);
  });

  it("workloadsOnNode", () => {
    assert.deepEqual(
      store()
        .workloadsOnNode("node-b")
        .map((w) => w.name)
        .sort(),
      ["echo-1", "echo-2"],
    );
  });
});

describe("resolveWaypoint", () => {
  const WP_HOST = "waypoint.default.svc.cluster.local";
  const wpKey = `default/${WP_HOST}`;
  const hbonePorts = {
    [wpKey]: { ports: [{ servicePort: 15008, targetPort: 15008, appProtocol: "UNKNOWN" as const }] },
  };
  const s = store();
  s.upsert(wpKey, {
    service: {
      ...echoService,
      name: "waypoint",
      hostname: WP_HOST,
      addresses: [{ network: "", address: ip("127.30.0.8") }],
      ports: [{ servicePort: 15008, targetPort: 15008, appProtocol: "UNKNOWN" }],
    },
  });
  s.upsert("Kubernetes//Pod/default/wp-1", {
    workload: workload("wp-1", { ip: "127.10.0.21", tunnelProtocol: "NONE", services: hbonePorts }),
  });
  s.upsert("Kubernetes//Pod/default/wp-sick", {
    workload: workload("wp-sick", {
      ip: "127.10.0.22",
      tunnelProtocol: "NONE",
      status: "UNHEALTHY",
      services: hbonePorts,
    }),
  });
  const byHost = (namespace: string, hostname: string) => ({
    waypoint: { hostname: { namespace, hostname }, hboneMtlsPort: 15008 },
  });
  const byIp = (address: string, hboneMtlsPort = 15008) => ({
    waypoint: { address: { network: "", address: ip(address) }, hboneMtlsPort },
  });
  const cases: { name: string; target: Pick<Service, "waypoint">; want: string }[] = [
    { name: "no waypoint", target: {}, want: "none" },
    {
      name: "by the hostname of its Service: a healthy endpoint",
      target: byHost("default", WP_HOST),
      want: "wp-1 127.10.0.21:15008",
    },
    {
      name: "by its Service's VIP: a healthy endpoint",
      target: byIp("127.30.0.8"),
      want: "wp-1 127.10.0.21:15008",
    },
    {
      name: "by a workload's address: that workload",
      target: byIp("127.10.0.1", 15009),
      want: "sleep 127.10.0.1:15009",
    },
    {
      name: "by hostname, another namespace's is not it",
      target: byHost("other", WP_HOST),
      want: "unreachable",
    },
    {
      name: "an empty hostname names no workload (not every one without a hostname)",
      target: byHost("default", ""),
      want: "unreachable",
    },
    { name: "an unknown address", target: byIp("127.10.9.9"), want: "unreachable" },
    { name: "a Service without the HBONE port", target: byIp("127.30.0.1"), want: "unreachable" },
    {
      name: "no destination at all",
      target: { waypoint: { hboneMtlsPort: 15008 } } as Pick<Service, "waypoint">,
      want: "unreachable",
    },
    {
      name: "address bytes of no family",
      target: { waypoint: { address: { network: "", address: Uint8Array.of(1, 2) }, hboneMtlsPort: 15008 } },
      want: "unreachable",
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = s.resolveWaypoint(c.target);
      const text =
        got.kind === "waypoint"
          ? `${got.upstream.workload.name} ${got.upstream.ip}:${got.upstream.port}`
          : got.kind;
      assert.equal(text, c.want);
    });
  }

  it("isWaypointOf: an instance of the waypoint by identity and address", () => {
    const wp = s.findByAddress("127.10.0.21");
    const sick = s.findByAddress("127.10.0.22");
    const sleep = s.findByAddress("127.10.0.1");
    assert.ok(wp && sick && sleep);
    assert.equal(s.isWaypointOf(byHost("default", WP_HOST), wp, "127.10.0.21"), true);
    assert.equal(s.isWaypointOf(byIp("127.30.0.8"), sick, "127.10.0.22"), true);
    assert.equal(s.isWaypointOf(byHost("default", WP_HOST), sleep, "127.10.0.1"), false);
    // The identity alone is not enough: the address must be the instance's.
    assert.equal(s.isWaypointOf(byHost("default", WP_HOST), wp, "127.10.0.1"), false);
    assert.equal(s.isWaypointOf(byIp("127.10.0.1"), sleep, "127.10.0.1"), true);
    assert.equal(s.isWaypointOf({}, wp, "127.10.0.21"), false);
    assert.equal(s.isWaypointOf(byHost("default", ""), sleep, "127.10.0.1"), false);
  });
});

describe("identityOf", () => {
  const cases: [Partial<Workload>, string][] = [
    [
      { trustDomain: "", namespace: "default", serviceAccount: "sleep" },
      "spiffe://cluster.local/ns/default/sa/sleep",
    ],
    [
      { trustDomain: "example.org", namespace: "shop", serviceAccount: "api" },
      "spiffe://example.org/ns/shop/sa/api",
    ],
    [{ trustDomain: "", namespace: "x", serviceAccount: "" }, "spiffe://cluster.local/ns/x/sa/default"],
  ];
  for (const [w, want] of cases) {
    it(want, () => assert.equal(identityOf(workload("w", { ip: "1.2.3.4", ...w })), want));
  }
});

describe("pickEndpoint and ipFromBytes", () => {
  it("pickEndpoint", () => {
    const e = [1, 2, 3].map((n) => ({ workload: workload(`w${n}`, { ip: `1.1.1.${n}` }), targetPort: n }));
    assert.equal(pickEndpoint([], 3), undefined);
    assert.equal(pickEndpoint(e, 0)?.targetPort, 1);
    assert.equal(pickEndpoint(e, 4)?.targetPort, 2);
  });
  it("ipFromBytes", () => {
    assert.equal(ipFromBytes(ip("127.0.0.1")), "127.0.0.1");
    assert.equal(ipFromBytes(new Uint8Array(3)), undefined);
    assert.equal(ipFromBytes(new Uint8Array(16)), "::");
    assert.equal(ipFromBytes(Uint8Array.from([...new Uint8Array(10), 255, 255, 127, 0, 0, 9])), "127.0.0.9");
  });
});

describe("serviceForTargetPort", () => {
  const w = workload("echo", {
    ip: "1.1.1.1",
    services: {
      "default/b.default.svc.cluster.local": {
        ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }],
      },
      "default/a.default.svc.cluster.local": {
        ports: [{ servicePort: 81, targetPort: 8080, appProtocol: "UNKNOWN" }],
      },
      "default/c.default.svc.cluster.local": {
        ports: [{ servicePort: 90, targetPort: 9090, appProtocol: "UNKNOWN" }],
      },
    },
  });
  const cases: [number, string | undefined][] = [
    [8080, "a.default.svc.cluster.local"],
    [9090, "c.default.svc.cluster.local"],
    [7070, undefined],
  ];
  for (const [port, want] of cases)
    it(`port ${port}`, () => assert.equal(serviceForTargetPort(w, port), want));
});

describe("waypointOf", () => {
  const cases: { name: string; waypoint: unknown; expect: ReturnType<typeof waypointOf> }[] = [
    { name: "no waypoint", waypoint: undefined, expect: undefined },
    {
      name: "address with port",
      waypoint: { address: { network: "", address: ip("127.10.0.6") }, hboneMtlsPort: 15008 },
      expect: { ip: "127.10.0.6", port: 15008 },
    },
    {
      name: "address without port defaults to 15008",
      waypoint: { address: { network: "", address: ip("127.10.0.9") }, hboneMtlsPort: 0 },
      expect: { ip: "127.10.0.9", port: 15008 },
    },
    {
      name: "hostname waypoint is not resolved",
      waypoint: {
        hostname: { namespace: "demo", hostname: "waypoint.demo.svc.cluster.local" },
        hboneMtlsPort: 15008,
      },
      expect: undefined,
    },
    {
      name: "malformed address bytes",
      waypoint: { address: { network: "", address: Uint8Array.of(1, 2) }, hboneMtlsPort: 15008 },
      expect: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(waypointOf({ waypoint: c.waypoint } as Pick<Service, "waypoint">), c.expect);
    });
  }
});

describe("WorkloadStore keeps the last good entry", () => {
  it("refuses an Address that is neither a workload nor a service, and keeps what the name held", () => {
    const s = store();
    assert.throws(
      () => s.upsert(svcKey, {}),
      (err: Error & { code?: string }) => err.code === "ERR_ZTUNNEL_INVALID_OPTION",
    );
    assert.equal(s.findService("127.30.0.1", 80)?.key, svcKey);
    assert.throws(() => s.upsert("Kubernetes//Pod/default/sleep", {}));
    assert.equal(s.findByAddress("127.10.0.1")?.name, "sleep");
  });

  it("refuses a workload with an address of no family, and keeps the one in force", () => {
    const s = store();
    const bad = workload("sleep", { ip: "127.10.0.1" });
    bad.addresses = [Uint8Array.of(127, 10, 0, 1, 1)];
    assert.throws(() => s.upsert("Kubernetes//Pod/default/sleep", { workload: bad }));
    assert.equal(s.findByAddress("127.10.0.1")?.name, "sleep");
  });

  it("refuses a Service whose address does not parse, and keeps the one in force", () => {
    const s = store();
    const bad = { ...echoService, addresses: [{ network: "", address: Uint8Array.of(10, 96, 0, 12, 1) }] };
    assert.throws(() => s.upsert(svcKey, { service: bad }));
    assert.equal(s.findService("127.30.0.1", 80)?.key, svcKey);
  });

  it("removing a name that no longer holds a uid leaves the workload another name holds", () => {
    const s = new WorkloadStore();
    const echo = workload("echo", { ip: "127.10.0.12" });
    s.upsert("old-name", { workload: echo });
    s.upsert(echo.uid, { workload: echo });
    assert.equal(s.remove("old-name"), false);
    assert.equal(s.workloads().has(echo.uid), true);
    assert.equal(s.findByAddress("127.10.0.12")?.name, "echo");
    assert.equal(s.remove(echo.uid), true);
    assert.equal(s.findByAddress("127.10.0.12"), undefined);
  });

  it("a name that takes over a uid drops the addresses the other name had indexed", () => {
    const s = new WorkloadStore();
    s.upsert("old-name", { workload: workload("echo", { ip: "127.10.0.12" }) });
    s.upsert("Kubernetes//Pod/default/echo", { workload: workload("echo", { ip: "127.10.0.13" }) });
    assert.equal(s.findByAddress("127.10.0.12"), undefined);
    assert.equal(s.findByAddress("127.10.0.13")?.name, "echo");
  });
});

describe("addressProblem (the NACK decision for Address resources)", () => {
  const echo = workload("echo", { ip: "127.10.0.12" });
  const uid = echo.uid;
  const withWaypoint = (waypoint: unknown) => ({ ...echo, waypoint }) as Workload;
  const cases: [string, string, unknown, RegExp | undefined][] = [
    ["a workload under its uid", uid, { workload: echo }, undefined],
    ["a Service under namespace/hostname", svcKey, { service: echoService }, undefined],
    [
      "a workload without address (an endpoint known by hostname)",
      uid,
      { workload: { ...echo, addresses: [], hostname: "db.example.com" } },
      undefined,
    ],
    [
      "an IPv6 workload and a Service range",
      svcKey,
      {
        service: {
          ...echoService,
          addresses: [
            { network: "", address: ip("10.20.0.0"), length: 16 },
            { network: "", address: new Uint8Array(16).fill(0xfd, 0, 1) },
          ],
        },
      },
      undefined,
    ],
    ["neither a workload nor a service (a kind this proxy does not know)", uid, {}, /neither/],
    ["no message at all", uid, undefined, /not an Address/],
    ["a workload under another name", "old-name", { workload: echo }, /sent under the name old-name/],
    ["a workload without uid", "", { workload: { ...echo, uid: "" } }, /uid/],
    [
      "a workload with a 5-byte address",
      uid,
      { workload: { ...echo, addresses: [Uint8Array.of(127, 10, 0, 12, 1)] } },
      /5 bytes/,
    ],
    [
      "a workload whose waypoint address has no family",
      uid,
      {
        workload: withWaypoint({
          address: { network: "", address: Uint8Array.of(1, 2) },
          hboneMtlsPort: 15008,
        }),
      },
      /waypoint/,
    ],
    [
      "a workload whose waypoint names no destination",
      uid,
      { workload: withWaypoint({ hboneMtlsPort: 15008 }) },
      /waypoint/,
    ],
    [
      "a Service under another name",
      "default/other.default.svc.cluster.local",
      { service: echoService },
      /sent under the name default\/other/,
    ],
    ["a Service without hostname", "default/", { service: { ...echoService, hostname: "" } }, /hostname/],
    [
      "a Service with a 5-byte address",
      svcKey,
      { service: { ...echoService, addresses: [{ network: "", address: Uint8Array.of(10, 96, 0, 12, 1) }] } },
      /5 bytes/,
    ],
    [
      "a Service address with a prefix longer than the address",
      svcKey,
      { service: { ...echoService, addresses: [{ network: "", address: ip("10.96.0.12"), length: 33 }] } },
      /prefix/,
    ],
    [
      "a Service whose waypoint address has no family",
      svcKey,
      {
        service: {
          ...echoService,
          waypoint: {
            address: { network: "", address: Uint8Array.of(127, 0, 0, 50, 0) },
            hboneMtlsPort: 15008,
          },
        },
      },
      /waypoint/,
    ],
  ];
  for (const [what, name, resource, problem] of cases) {
    it(what, () => {
      const found = addressProblem(name, resource);
      if (problem === undefined) assert.equal(found, undefined);
      else assert.match(found ?? "", problem);
    });
  }
});
