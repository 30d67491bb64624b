import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { WorkloadStore } from "@ambient/example-ztunnel";
import type { Service, Workload } from "@ambient/xds";
import {
  createBackendResolver,
  declaredProtocol,
  declaredWorkloadProtocol,
  resolveServiceBackend,
  serviceAtVip,
  VersionedWorkloadStore,
  workloadEndpoint,
} from "./backends.js";

const ip = (text: string) => Uint8Array.from(text.split(".").map(Number));

function workload(
  name: string,
  address: string,
  services: Workload["services"],
  status = "HEALTHY",
): Workload {
  return {
    uid: `Kubernetes//Pod/demo/${name}`,
    name,
    namespace: "demo",
    addresses: [ip(address)],
    hostname: "",
    network: "",
    tunnelProtocol: "HBONE",
    trustDomain: "",
    serviceAccount: "web",
    node: "node-b",
    canonicalName: "web",
    canonicalRevision: "v1",
    workloadType: "POD",
    workloadName: name,
    nativeTunnel: false,
    services,
    authorizationPolicies: [],
    status,
    clusterId: "Kubernetes",
    networkMode: "STANDARD",
    extensions: [],
  } as unknown as Workload;
}

function service(name: string, vip: string | undefined, appProtocol: string): Service {
  return {
    name,
    namespace: "demo",
    hostname: `${name}.demo.svc.cluster.local`,
    addresses: vip === undefined ? [] : [{ network: "", address: ip(vip) }],
    ports: [{ servicePort: 80, targetPort: 8080, appProtocol }],
  } as unknown as Service;
}

function store(s: WorkloadStore = new WorkloadStore()): WorkloadStore {
  const key = "demo/web.demo.svc.cluster.local";
  const v1 = "demo/web-v1.demo.svc.cluster.local";
  s.upsert(key, { service: service("web", "127.30.0.2", "HTTP11") } as never);
  s.upsert(v1, { service: service("web-v1", undefined, "HTTP2") } as never);
  const ports = { ports: [{ servicePort: 80, targetPort: 8080 }] } as unknown as Workload["services"][string];
  s.upsert("a", { workload: workload("web-a", "127.10.0.7", { [key]: ports, [v1]: ports }) } as never);
  s.upsert("b", { workload: workload("web-b", "127.10.0.8", { [key]: ports }) } as never);
  s.upsert("c", { workload: workload("web-c", "127.10.0.9", { [key]: ports }, "UNHEALTHY") } as never);
  // A host-network pod behind the Service: reached only in plaintext at its node's address.
  s.upsert("h", {
    workload: { ...workload("web-host", "127.20.0.2", { [key]: ports }), networkMode: "HOST_NETWORK" },
  } as never);
  return s;
}

describe("resolveServiceBackend", () => {
  const cases: {
    name: string;
    ref: { kind: string; group: string; name: string; namespace: string; port: number | undefined };
    expect: { address: string; port: number; protocol?: string }[] | undefined;
  }[] = [
    {
      name: "healthy endpoints at the target port, http1 from appProtocol (a host-network pod too)",
      ref: { kind: "Service", group: "", name: "web", namespace: "demo", port: 80 },
      expect: [
        { address: "127.10.0.7", port: 8080, protocol: "http1" },
        { address: "127.10.0.8", port: 8080, protocol: "http1" },
        { address: "127.20.0.2", port: 8080, protocol: "http1" },
      ],
    },
    {
      name: "a subset Service without VIP, http2",
      ref: { kind: "Service", group: "", name: "web-v1", namespace: "demo", port: 80 },
      expect: [{ address: "127.10.0.7", port: 8080, protocol: "http2" }],
    },
    {
      name: "unknown port: known service without endpoints",
      ref: { kind: "Service", group: "", name: "web", namespace: "demo", port: 81 },
      expect: [],
    },
    {
      name: "unknown service",
      ref: { kind: "Service", group: "", name: "nope", namespace: "demo", port: 80 },
      expect: undefined,
    },
    {
      name: "not a Service",
      ref: { kind: "ServiceEntry", group: "networking.istio.io", name: "web", namespace: "demo", port: 80 },
      expect: undefined,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = resolveServiceBackend(store(), c.ref);
      assert.deepEqual(
        got?.map(({ address, port, protocol }) => ({ address, port, ...(protocol ? { protocol } : {}) })),
        c.expect,
      );
    });
  }

  it("dials a pod listed IPv6-first at its IPv4 address, and leaves out pods of other networks", () => {
    const key = "demo/web.demo.svc.cluster.local";
    const ports = {
      ports: [{ servicePort: 80, targetPort: 8080 }],
    } as unknown as Workload["services"][string];
    const s = new WorkloadStore({ network: "net-a" });
    s.upsert(key, {
      service: {
        ...service("web", "127.30.0.2", "HTTP11"),
        addresses: [{ network: "net-a", address: ip("127.30.0.2") }],
      },
    } as never);
    const v6 = Uint8Array.from([0xfd, 0, ...new Array<number>(13).fill(0), 7]);
    const dual = { ...workload("web-a", "127.10.0.7", { [key]: ports }), network: "net-a" };
    s.upsert("a", { workload: { ...dual, addresses: [v6, ip("127.10.0.7")] } } as never);
    s.upsert("b", {
      workload: { ...workload("web-b", "127.10.0.8", { [key]: ports }), network: "net-b" },
    } as never);
    const got = resolveServiceBackend(s, {
      kind: "Service",
      group: "",
      name: "web",
      namespace: "demo",
      port: 80,
    });
    assert.deepEqual(
      got?.map((e) => e.address),
      ["127.10.0.7"],
    );
  });

  it("names the endpoint workload and its SPIFFE ID", () => {
    const [first] =
      resolveServiceBackend(store(), {
        kind: "Service",
        group: "",
        name: "web",
        namespace: "demo",
        port: 80,
      }) ?? [];
    assert.equal(first?.workload?.principal, "spiffe://cluster.local/ns/demo/sa/web");
    assert.equal(first?.workload?.name, "web-a");
  });
});

describe("VersionedWorkloadStore", () => {
  it("knows its host-network addresses through replacements and removals", () => {
    const s = new VersionedWorkloadStore();
    store(s);
    assert.equal(s.hasHostNetworkAddress("127.20.0.2"), true);
    assert.equal(s.hasHostNetworkAddress("127.10.0.7"), false, "a pod's own address is not one");
    const host = (name: string) =>
      ({ workload: { ...workload(name, "127.20.0.2", {}), networkMode: "HOST_NETWORK" } }) as never;
    s.upsert("h2", host("agent"));
    s.remove("h");
    assert.equal(s.hasHostNetworkAddress("127.20.0.2"), true, "another still has it");
    s.upsert("h2", { workload: workload("agent", "127.20.0.3", {}) } as never);
    assert.equal(s.hasHostNetworkAddress("127.20.0.2"), false, "replaced by a pod at another address");
    assert.equal(s.findByAddress("127.20.0.3")?.name, "agent");
  });
});

describe("declaredProtocol", () => {
  it("is http for an HTTP, HTTP/2 or gRPC port, tcp for TCP and TLS, undefined for undeclared and unknown ports", () => {
    const svc = {
      ports: [
        { servicePort: 80, appProtocol: "HTTP11" },
        { servicePort: 81, appProtocol: "HTTP2" },
        { servicePort: 82, appProtocol: "GRPC" },
        { servicePort: 83, appProtocol: "TCP" },
        { servicePort: 84 },
        { servicePort: 85, appProtocol: "TLS" },
      ],
    } as unknown as Service;
    assert.deepEqual(
      [80, 81, 82, 83, 84, 85, 86].map((p) => declaredProtocol(svc, p)),
      ["http", "http", "http", "tcp", undefined, "tcp", undefined],
    );
  });
});

describe("declaredWorkloadProtocol", () => {
  const svc = (name: string, ports: { servicePort: number; targetPort: number; appProtocol: string }[]) =>
    ({ name, namespace: "demo", ports }) as unknown as Service;
  const services = new Map([
    ["demo/db", svc("db", [{ servicePort: 3306, targetPort: 13306, appProtocol: "TCP" }])],
    ["demo/web", svc("web", [{ servicePort: 80, targetPort: 0, appProtocol: "HTTP11" }])],
    ["demo/admin", svc("admin", [{ servicePort: 9000, targetPort: 8080, appProtocol: "UNKNOWN" }])],
    ["demo/api", svc("api", [{ servicePort: 8080, targetPort: 0, appProtocol: "HTTP11" }])],
  ]);
  const store = { services: () => services };
  const backs = (...keys: [string, { servicePort: number; targetPort: number }[]][]) =>
    ({ services: Object.fromEntries(keys.map(([k, ports]) => [k, { ports }])) }) as never;

  it("reads the port as the Services that map to it declare it", () => {
    // The workload's own mapping, else the Service's target port, else the Service port.
    assert.equal(declaredWorkloadProtocol(store, backs(["demo/db", []]), 13306), "tcp");
    assert.equal(
      declaredWorkloadProtocol(store, backs(["demo/db", [{ servicePort: 3306, targetPort: 23306 }]]), 23306),
      "tcp",
    );
    assert.equal(declaredWorkloadProtocol(store, backs(["demo/web", []]), 80), "http");
    assert.equal(
      declaredWorkloadProtocol(store, backs(["demo/db", []]), 3306),
      undefined,
      "not the port it maps",
    );
    assert.equal(declaredWorkloadProtocol(store, backs(), 13306), undefined, "no Service");
  });

  it("leaves a port undeclared when its Services disagree or do not declare it", () => {
    assert.equal(
      declaredWorkloadProtocol(store, backs(["demo/admin", []], ["demo/api", []]), 8080),
      undefined,
    );
    assert.equal(declaredWorkloadProtocol(store, backs(["demo/admin", []]), 8080), undefined);
    assert.equal(declaredWorkloadProtocol(store, backs(["demo/api", []], ["demo/gone", []]), 8080), "http");
  });
});

describe("serviceAtVip", () => {
  it("finds the Service of a VIP and port, and nothing else", () => {
    const s = store();
    assert.deepEqual(serviceAtVip(s, "127.30.0.2", 80), {
      name: "web",
      namespace: "demo",
      hostname: "web.demo.svc.cluster.local",
    });
    assert.equal(serviceAtVip(s, "127.30.0.2", 81), undefined);
    assert.equal(serviceAtVip(s, "127.10.0.7", 8080), undefined);
  });
});

describe("createBackendResolver", () => {
  const web = { kind: "Service", group: "", name: "web", namespace: "demo", port: 80 };
  const addresses = (endpoints: readonly { address: string }[] | undefined) =>
    endpoints?.map((e) => e.address);

  it("answers as resolveServiceBackend, once per store change, with frozen results", () => {
    const s = new VersionedWorkloadStore();
    store(s);
    const resolve = createBackendResolver(s);
    const first = resolve(web);
    assert.deepEqual(first, resolveServiceBackend(s, web));
    assert.equal(resolve(web), first, "the same answer until the store changes");
    assert.ok(
      Object.isFrozen(first) && first?.every((e) => Object.isFrozen(e) && Object.isFrozen(e.workload)),
    );
    assert.equal(resolve({ ...web, name: "nope" }), undefined);
    assert.deepEqual(addresses(resolve({ ...web, name: "web-v1" })), ["127.10.0.7"]);

    const before = s.generation;
    const ports = {
      ports: [{ servicePort: 80, targetPort: 8080 }],
    } as unknown as Workload["services"][string];
    s.upsert("d", {
      workload: workload("web-d", "127.10.0.10", { "demo/web.demo.svc.cluster.local": ports }),
    } as never);
    assert.ok(s.generation > before);
    assert.deepEqual(addresses(resolve(web)), ["127.10.0.7", "127.10.0.8", "127.10.0.10", "127.20.0.2"]);
    assert.equal(s.remove("a"), true);
    assert.deepEqual(addresses(resolve(web)), ["127.10.0.8", "127.10.0.10", "127.20.0.2"]);
    const unchanged = s.generation;
    assert.equal(s.remove("a"), false);
    assert.equal(s.generation, unchanged, "removing nothing is no change");
    s.remove("demo/web.demo.svc.cluster.local");
    assert.equal(resolve(web), undefined, "a removed Service is unknown at once");
  });
});

describe("workloadEndpoint", () => {
  it("makes one endpoint per workload and port, and keeps a bounded number of them", () => {
    const w = workload("db-0", "127.10.0.9", {});
    const first = workloadEndpoint(w, "127.10.0.9", 5432);
    assert.equal(workloadEndpoint(w, "127.10.0.9", 5432), first, "the same object for the same port");
    // A caller sweeping ports: the kept endpoints are let go past the bound, and made again equal.
    for (let port = 1; port <= 2000; port++) workloadEndpoint(w, "127.10.0.9", port);
    const again = workloadEndpoint(w, "127.10.0.9", 5432);
    assert.notEqual(again, first);
    assert.deepEqual(again, first);
  });
});
