// ServiceEntry and WorkloadEntry through translateMesh, against what istiod's ambient index sends for
// the same objects (ambientindex_serviceentry_test.go, ambientindex_workloadentry_test.go), as tables.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ControlPlaneError } from "./errors.js";
import { type KubeObject, parseManifests } from "./manifests.js";
import { translateEnvoy } from "./translate-envoy.js";
import { type MeshConfig, translateMesh, validateManifestObject } from "./translate-mesh.js";
import { parseServiceEntry } from "./translate-service-entry.js";

function objects(yaml: string): KubeObject[] {
  const parsed = parseManifests([{ path: "m.yaml", text: yaml }]);
  assert.deepEqual(parsed.issues, []);
  return parsed.objects;
}

function translate(yaml: string): MeshConfig {
  return translateMesh(objects(yaml), { podCidrs: ["127.10.0.0/16"] });
}

const ip = (bytes: Uint8Array | undefined) => (bytes === undefined ? undefined : [...bytes].join("."));

function service(config: MeshConfig, key: string) {
  const s = config.services.find((x) => x.key === key);
  assert.ok(s, `service ${key}; have ${config.services.map((x) => x.key).join(", ")}`);
  return s;
}

function workload(config: MeshConfig, uid: string) {
  const w = config.workloads.find((x) => x.key === uid);
  assert.ok(w, `workload ${uid}; have ${config.workloads.map((x) => x.key).join(", ")}`);
  return w;
}

const NS = `
apiVersion: v1
kind: Namespace
metadata: { name: ns1 }
`;
const se = (name: string, spec: string, meta = "") => `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ${name}, namespace: ns1${meta} }
spec: ${spec}
`;
const we = (name: string, spec: string, meta = "") => `
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: ${name}, namespace: ns1${meta} }
spec: ${spec}
`;
const pod = (name: string, podIp: string, labels: string, ns = "ns1") => `
---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, labels: ${labels} }
spec: { nodeName: node1, serviceAccountName: sa1, containers: [{ name: c, ports: [{ name: http, containerPort: 8080 }] }] }
status: { podIP: ${podIp} }
`;

describe("ServiceEntry -> Address services", () => {
  it("one Service per host, named after the ServiceEntry, ports with targetPort defaulting to the port and their protocol", () => {
    const config = translate(
      NS +
        se(
          "name1",
          `{ hosts: [se.istio.io], addresses: [240.240.23.45], resolution: STATIC,
             ports: [{ number: 80, name: http, targetPort: 8080, protocol: HTTP }, { number: 443, name: tls, protocol: TLS },
                     { number: 27017, name: db, protocol: MONGO }, { number: 9000, name: port-9000 }],
             subjectAltNames: ["spiffe://cluster.local/ns/ns1/sa/vm"] }`,
        ),
    );
    const s = service(config, "ns1/se.istio.io");
    assert.deepEqual(s.aliases, ["/240.240.23.45"]);
    assert.equal(s.service.name, "name1");
    assert.equal(s.service.namespace, "ns1");
    assert.equal(s.service.hostname, "se.istio.io");
    assert.deepEqual(
      s.service.addresses?.map((a) => ip(a.address)),
      ["240.240.23.45"],
    );
    // The protocol is the port's `protocol`, not its name.
    assert.deepEqual(s.service.ports, [
      { servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" },
      { servicePort: 443, targetPort: 443, appProtocol: "TLS" },
      { servicePort: 27017, targetPort: 27017, appProtocol: "TCP" },
      { servicePort: 9000, targetPort: 9000 },
    ]);
    assert.deepEqual(s.service.subjectAltNames, ["spiffe://cluster.local/ns/ns1/sa/vm"]);
    assert.deepEqual(config.issues, []);
  });

  const cases: { name: string; yaml: string; served: Record<string, string[]>; issue?: RegExp }[] = [
    {
      name: "a /32 CIDR is a VIP",
      yaml: se(
        "a",
        "{ hosts: [a.example.com], addresses: [240.240.0.1/32], ports: [{ number: 80, name: port-80 }] }",
      ),
      served: { "ns1/a.example.com": ["240.240.0.1"] },
    },
    {
      name: "no addresses and resolution NONE: a Service without VIP",
      yaml: se("a", "{ hosts: [a.example.com], resolution: NONE, ports: [{ number: 80, name: port-80 }] }"),
      served: { "ns1/a.example.com": [] },
    },
    {
      name: "allocated status.addresses are used for their host unless resolution is NONE",
      yaml: `${se(
        "a",
        "{ hosts: [a.example.com, b.example.com], resolution: DNS, ports: [{ number: 80, name: http, protocol: HTTP }] }",
      )}status: { addresses: [{ host: a.example.com, value: 240.240.0.9 }] }\n`,
      served: { "ns1/a.example.com": ["240.240.0.9"], "ns1/b.example.com": [] },
    },
    {
      name: "allocated status.addresses of a wildcard host are used with resolution DYNAMIC_DNS only",
      yaml: `${se(
        "a",
        "{ hosts: ['*.a.example.com'], resolution: DYNAMIC_DNS, ports: [{ number: 80, name: http, protocol: HTTP }] }",
      )}status: { addresses: [{ host: '*.a.example.com', value: 240.240.0.9 }] }\n${se(
        "b",
        "{ hosts: ['*.b.example.com'], resolution: DNS, ports: [{ number: 80, name: port-80 }], endpoints: [{ address: b.vm.example }] }",
      )}status: { addresses: [{ host: '*.b.example.com', value: 240.240.0.10 }] }\n`,
      served: { "ns1/*.a.example.com": ["240.240.0.9"], "ns1/*.b.example.com": [] },
    },
    {
      name: "allocated status.addresses are not used when the entry opts out of allocation",
      yaml: `${se(
        "a",
        "{ hosts: [a.example.com], resolution: DNS, ports: [{ number: 80, name: port-80 }] }",
        ", labels: { networking.istio.io/enable-autoallocate-ip: 'False' }",
      )}status: { addresses: [{ host: a.example.com, value: 240.240.0.9 }] }\n`,
      served: { "ns1/a.example.com": [] },
    },
    {
      name: "two hosts, one address: the first host has the VIP",
      yaml: se(
        "a",
        "{ hosts: [a.example.com, b.example.com], addresses: [240.240.0.1], ports: [{ number: 80, name: port-80 }] }",
      ),
      served: { "ns1/a.example.com": ["240.240.0.1"], "ns1/b.example.com": [] },
      issue: /host b\.example\.com: spec\.addresses are served for host a\.example\.com only/,
    },
    {
      name: "a VIP a Service already has: the Service keeps it",
      yaml: `
---
apiVersion: v1
kind: Service
metadata: { name: svc, namespace: ns1 }
spec: { clusterIP: 240.240.0.1, ports: [{ port: 80 }] }
${se("a", "{ hosts: [a.example.com], addresses: [240.240.0.1], ports: [{ number: 80, name: port-80 }] }")}`,
      served: { "ns1/svc.ns1.svc.cluster.local": ["240.240.0.1"] },
      issue: /address 240\.240\.0\.1 is already used by ns1\/svc\.ns1\.svc\.cluster\.local: not served/,
    },
    {
      name: "a host that is a Service's name: the Service keeps the key",
      yaml: `
---
apiVersion: v1
kind: Service
metadata: { name: svc, namespace: ns1 }
spec: { clusterIP: 240.240.0.1, ports: [{ port: 80 }] }
${se("a", "{ hosts: [svc.ns1.svc.cluster.local], addresses: [240.240.0.2], ports: [{ number: 80, name: port-80 }] }")}`,
      served: { "ns1/svc.ns1.svc.cluster.local": ["240.240.0.1"] },
      issue: /ns1\/svc\.ns1\.svc\.cluster\.local is already a Service: not served/,
    },
    {
      name: "an IPv6 address is reported, not served",
      yaml: se(
        "a",
        "{ hosts: [a.example.com], addresses: ['2001:db8::1'], ports: [{ number: 80, name: port-80 }] }",
      ),
      served: {},
      issue: /2001:db8::1 is not IPv4/,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const config = translate(NS + c.yaml);
      assert.deepEqual(
        Object.fromEntries(
          config.services.map((s) => [s.key, s.service.addresses?.map((a) => ip(a.address) ?? "") ?? []]),
        ),
        c.served,
      );
      if (c.issue === undefined) assert.deepEqual(config.issues, []);
      else
        assert.ok(
          config.issues.some((i) => c.issue?.test(i.message)),
          JSON.stringify(config.issues),
        );
    });
  }

  it("serves a CIDR address as a range: its network address with the prefix length, aliased network/IP/length", () => {
    const config = translate(
      NS +
        se(
          "range",
          "{ hosts: [a.example.com], addresses: [10.40.0.0/16, 10.50.7.9/24, 10.60.0.1/32], resolution: NONE, ports: [{ number: 443, name: port-443 }] }",
        ),
    );
    const s = service(config, "ns1/a.example.com");
    assert.deepEqual(
      s.service.addresses?.map((a) => ({ address: ip(a.address), length: a.length })),
      [
        { address: "10.40.0.0", length: 16 },
        // Host bits are cleared: the range is 10.50.7.0/24.
        { address: "10.50.7.0", length: 24 },
        // A single address is a VIP, with no length.
        { address: "10.60.0.1", length: undefined },
      ],
    );
    assert.deepEqual(s.aliases, ["/10.40.0.0/16", "/10.50.7.0/24", "/10.60.0.1"]);
    assert.deepEqual(config.issues, []);
  });

  it("a range is one ServiceEntry's: the same range again is reported, a VIP inside it is not", () => {
    const config = translate(
      NS +
        se(
          "a",
          "{ hosts: [a.example.com], addresses: [10.40.0.0/16], resolution: NONE, ports: [{ number: 443, name: port-443 }] }",
        ) +
        se(
          "b",
          "{ hosts: [b.example.com], addresses: [10.40.0.0/16], resolution: NONE, ports: [{ number: 443, name: port-443 }] }",
        ) +
        se(
          "c",
          "{ hosts: [c.example.com], addresses: [10.40.1.1], resolution: NONE, ports: [{ number: 443, name: port-443 }] }",
        ),
    );
    assert.deepEqual(
      config.services.map((s) => [s.key, s.aliases]),
      [
        ["ns1/a.example.com", ["/10.40.0.0/16"]],
        ["ns1/c.example.com", ["/10.40.1.1"]],
      ],
    );
    assert.ok(
      config.issues.some((i) =>
        /host b\.example\.com: address 10\.40\.0\.0\/16 is already used by ns1\/a\.example\.com/.test(
          i.message,
        ),
      ),
      JSON.stringify(config.issues),
    );
  });

  it("an address that is not an IPv4 address or range leaves the ServiceEntry without Services", () => {
    const config = translate(
      NS +
        se(
          "a",
          "{ hosts: [a.example.com], addresses: [10.40.0.0/33], ports: [{ number: 80, name: port-80 }] }",
        ),
    );
    assert.deepEqual(config.services, []);
    assert.ok(
      config.issues.some((i) => /10\.40\.0\.0\/33 is not an IPv4 address or range/.test(i.message)),
      JSON.stringify(config.issues),
    );
  });

  it("marks the oldest ServiceEntry of a hostname canonical when no Kubernetes Service has it", () => {
    const config = translate(`${NS}
---
apiVersion: v1
kind: Namespace
metadata: { name: ns0 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: late, namespace: ns0, creationTimestamp: "2024-05-02T00:00:00Z" }
spec: { hosts: [api.example.com, b.example.com], resolution: NONE, ports: [{ number: 443, name: port-443 }] }
${se("early", "{ hosts: [api.example.com], resolution: NONE, ports: [{ number: 443, name: port-443 }] }", ', creationTimestamp: "2024-05-01T00:00:00Z"')}`);
    assert.deepEqual(
      config.services.map((s) => [s.key, s.service.canonical]),
      [
        ["ns0/api.example.com", undefined],
        ["ns0/b.example.com", true],
        ["ns1/api.example.com", true],
      ],
    );
  });

  it("is bound to a waypoint by the use-waypoint label, and asks for close endpoints by annotation", () => {
    const config = translate(`
apiVersion: v1
kind: Namespace
metadata: { name: ns1 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: wp, namespace: ns1 }
spec: { gatewayClassName: istio-waypoint }
status: { addresses: [{ value: 127.10.0.6 }] }
${se(
  "a",
  "{ hosts: [a.example.com], addresses: [240.240.0.1], resolution: STATIC, ports: [{ number: 80, name: port-80 }] }",
  ", labels: { istio.io/use-waypoint: wp }, annotations: { networking.istio.io/traffic-distribution: PreferClose }",
)}`);
    const s = service(config, "ns1/a.example.com").service;
    assert.equal(ip(s.waypoint?.address?.address), "127.10.0.6");
    assert.equal(s.waypoint?.hboneMtlsPort, 15008);
    assert.equal(s.loadBalancing?.mode, "FAILOVER");
  });

  it("asks for close endpoints by its Namespace's annotation when it has none of its own", () => {
    const config = translate(`
apiVersion: v1
kind: Namespace
metadata: { name: ns1, annotations: { networking.istio.io/traffic-distribution: PreferSameNode } }
${se("a", "{ hosts: [a.example.com], addresses: [240.240.0.1], resolution: STATIC, ports: [{ number: 80, name: port-80 }] }")}
${se("b", "{ hosts: [b.example.com], addresses: [240.240.0.2], resolution: STATIC, ports: [{ number: 80, name: port-80 }] }", ", annotations: { networking.istio.io/traffic-distribution: PreferClose }")}`);
    assert.deepEqual(service(config, "ns1/a.example.com").service.loadBalancing, {
      routingPreference: ["NETWORK", "REGION", "ZONE", "SUBZONE", "NODE"],
      mode: "FAILOVER",
    });
    assert.deepEqual(service(config, "ns1/b.example.com").service.loadBalancing, {
      routingPreference: ["NETWORK", "REGION", "ZONE"],
      mode: "FAILOVER",
    });
  });
});

describe("ServiceEntry -> Address services: resolution NONE", () => {
  it("passes traffic through to the address dialled: PASSTHROUGH, every endpoint allowed, no locality preference", () => {
    // An entry that names external addresses (resolution NONE) has no endpoints of its own: its
    // traffic goes to the address the client dialled, not to an endpoint chosen among none.
    const annotation = ", annotations: { networking.istio.io/traffic-distribution: PreferClose }";
    const config = translate(
      NS +
        se(
          "redis",
          "{ hosts: [redis.example.com], addresses: [240.240.0.7], resolution: NONE, ports: [{ number: 6379, name: tcp-redis, protocol: TCP }] }",
          annotation,
        ) +
        se(
          "api",
          "{ hosts: [api.example.com], addresses: [240.240.0.8], resolution: STATIC, endpoints: [{ address: 203.0.113.5 }], ports: [{ number: 443, name: port-443 }] }",
          annotation,
        ),
    );
    assert.deepEqual(service(config, "ns1/redis.example.com").service.loadBalancing, {
      mode: "PASSTHROUGH",
      healthPolicy: "ALLOW_ALL",
    });
    assert.equal(service(config, "ns1/api.example.com").service.loadBalancing?.mode, "FAILOVER");
    assert.deepEqual(config.issues, []);
  });
});

describe("ServiceEntry -> Envoy resources", () => {
  it("a host's listener, route and endpoints: the WorkloadEntry at its port, no Kubernetes short names", () => {
    const objs = objects(
      NS +
        se(
          "vm-api",
          "{ hosts: [api.vm.example], addresses: [240.240.0.1], workloadSelector: { labels: { app: vm } }, ports: [{ number: 80, name: http }] }",
        ) +
        we("vm-1", "{ address: 140.140.0.1, labels: { app: vm }, ports: { http: 9090 } }"),
    );
    const envoy = translateEnvoy(objs, translateMesh(objs));
    assert.ok(envoy.listeners.has("api.vm.example:80"));
    const domains = envoy.routeConfigurations.get("api.vm.example:80")?.virtualHosts?.[0]?.domains;
    assert.deepEqual(domains, ["api.vm.example", "api.vm.example:80", "240.240.0.1", "240.240.0.1:80"]);
    const endpoints = envoy.clusterLoadAssignments.get("outbound|80||api.vm.example")?.endpoints;
    assert.deepEqual(
      endpoints?.flatMap((e) => e.lbEndpoints?.map((l) => l.endpoint?.address?.socketAddress) ?? []),
      [{ address: "140.140.0.1", portValue: 9090 }],
    );
  });

  it("endpoints keep an entry endpoint's weight and locality, and a pod's weight of 1", () => {
    const objs = objects(
      NS +
        se(
          "mixed",
          `{ hosts: [mixed.example], addresses: [240.240.0.2], resolution: STATIC,
             ports: [{ number: 80, name: http, targetPort: 8080 }],
             endpoints: [{ address: 192.0.2.7, weight: 3, locality: r1/z1 }, { address: 192.0.2.8 }] }`,
        ),
    );
    const endpoints = translateEnvoy(objs, translateMesh(objs)).clusterLoadAssignments.get(
      "outbound|80||mixed.example",
    )?.endpoints;
    assert.deepEqual(
      endpoints?.map((e) => ({
        locality: e.locality,
        weight: e.loadBalancingWeight?.value,
        endpoints: e.lbEndpoints?.map((l) => [
          l.endpoint?.address?.socketAddress?.address,
          l.endpoint?.address?.socketAddress?.portValue,
          l.loadBalancingWeight?.value,
          l.healthStatus,
        ]),
      })),
      [
        {
          locality: { region: "", zone: "", subZone: "" },
          weight: 1,
          endpoints: [["192.0.2.8", 8080, 1, "HEALTHY"]],
        },
        {
          locality: { region: "r1", zone: "z1", subZone: "" },
          weight: 3,
          endpoints: [["192.0.2.7", 8080, 3, "HEALTHY"]],
        },
      ],
    );
  });
});

describe("ServiceEntry and WorkloadEntry -> Address workloads", () => {
  it("inline endpoints: one workload each, uid by address, the endpoint's named port overrides", () => {
    const config = translate(
      NS +
        se(
          "name1",
          `{ hosts: [se.istio.io], addresses: [240.240.23.45], resolution: STATIC,
             ports: [{ number: 80, name: http, targetPort: 8080 }],
             endpoints: [{ address: 127.0.0.1, ports: { http: 8081 } }, { address: 192.0.2.7, serviceAccount: vm, weight: 3, locality: r1/z1 }] }`,
        ),
    );
    const a = workload(config, "Kubernetes/networking.istio.io/ServiceEntry/ns1/name1/127.0.0.1");
    assert.deepEqual(a.aliases, ["/127.0.0.1"]);
    assert.deepEqual(
      { ...a.workload, addresses: a.workload.addresses?.map((b) => ip(b)) },
      {
        uid: "Kubernetes/networking.istio.io/ServiceEntry/ns1/name1/127.0.0.1",
        name: "name1",
        namespace: "ns1",
        addresses: ["127.0.0.1"],
        network: "",
        tunnelProtocol: "NONE",
        serviceAccount: "",
        node: "",
        canonicalName: "name1",
        canonicalRevision: "latest",
        workloadType: "POD",
        workloadName: "name1",
        services: { "ns1/se.istio.io": { ports: [{ servicePort: 80, targetPort: 8081 }] } },
        authorizationPolicies: [],
        status: "HEALTHY",
        clusterId: "Kubernetes",
      },
    );
    const b = workload(config, "Kubernetes/networking.istio.io/ServiceEntry/ns1/name1/192.0.2.7").workload;
    assert.deepEqual(b.services, { "ns1/se.istio.io": { ports: [{ servicePort: 80, targetPort: 8080 }] } });
    assert.equal(b.serviceAccount, "vm");
    assert.deepEqual(b.capacity, { value: 3 });
    assert.deepEqual(b.locality, { region: "r1", zone: "z1", subzone: "" });
  });

  it("DNS resolution without endpoints or selector: one workload per host, by hostname", () => {
    const config = translate(
      NS +
        se(
          "ext",
          "{ hosts: [api.example.com, web.example.com], resolution: DNS, ports: [{ number: 443, name: tls, protocol: TLS }] }",
        ),
    );
    const w = workload(
      config,
      "Kubernetes/networking.istio.io/ServiceEntry/ns1/ext/api.example.com",
    ).workload;
    assert.equal(w.hostname, "api.example.com");
    assert.deepEqual(w.addresses, []);
    assert.deepEqual(w.services, {
      "ns1/api.example.com": { ports: [{ servicePort: 443, targetPort: 443 }] },
    });
    assert.equal(config.workloads.length, 2, "one per host");
  });

  it("DYNAMIC_DNS without endpoints or selector: one workload per host, wildcards included", () => {
    const config = translate(
      NS +
        se(
          "ext",
          "{ hosts: ['*.example.com'], resolution: DYNAMIC_DNS, ports: [{ number: 80, name: http, protocol: HTTP }] }",
        ),
    );
    const w = workload(config, "Kubernetes/networking.istio.io/ServiceEntry/ns1/ext/*.example.com").workload;
    assert.equal(w.hostname, "*.example.com");
    assert.deepEqual(w.addresses, []);
    assert.deepEqual(w.services, {
      "ns1/*.example.com": { ports: [{ servicePort: 80, targetPort: 80 }] },
    });
    assert.equal(config.workloads.length, 1);
    assert.deepEqual(config.issues, []);
  });

  it("workloadSelector picks pods and WorkloadEntries of its namespace only", () => {
    const config = translate(
      NS +
        pod("pod1", "127.10.0.10", "{ app: a }") +
        pod("pod2", "127.10.0.11", "{ app: other }") +
        pod("pod3", "127.10.0.12", "{ app: a }", "other") +
        we("name0", "{ address: 140.140.0.10, serviceAccount: sa1, labels: { app: a } }") +
        we("name1", "{ address: 140.140.0.11, ports: { http: 9090 } }", ", labels: { app: a }") +
        we("name2", "{ address: 140.140.0.12, labels: { app: other } }") +
        se(
          "name1",
          "{ hosts: [se.istio.io], addresses: [240.240.23.45], workloadSelector: { labels: { app: a } }, ports: [{ number: 80, name: http, targetPort: 8080 }] }",
        ),
    );
    const services = (uid: string) => workload(config, uid).workload.services;
    const port8080 = { "ns1/se.istio.io": { ports: [{ servicePort: 80, targetPort: 8080 }] } };
    assert.deepEqual(services("Kubernetes//Pod/ns1/pod1"), port8080);
    assert.deepEqual(services("Kubernetes//Pod/ns1/pod2"), {});
    assert.deepEqual(services("Kubernetes//Pod/other/pod3"), {});
    assert.deepEqual(services("Kubernetes/networking.istio.io/WorkloadEntry/ns1/name0"), port8080);
    // Labels in the metadata count too; the WorkloadEntry's named port wins.
    assert.deepEqual(services("Kubernetes/networking.istio.io/WorkloadEntry/ns1/name1"), {
      "ns1/se.istio.io": { ports: [{ servicePort: 80, targetPort: 9090 }] },
    });
    assert.deepEqual(services("Kubernetes/networking.istio.io/WorkloadEntry/ns1/name2"), {});
    const name0 = workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/name0").workload;
    assert.equal(name0.name, "name0");
    assert.equal(name0.serviceAccount, "sa1");
    assert.equal(name0.canonicalName, "a");
    assert.equal(name0.workloadName, "name0");
    assert.equal(name0.tunnelProtocol, "NONE");
    assert.deepEqual(config.issues, []);
  });

  it("a pod a workloadSelector picks serves a port at its container port of the same name", () => {
    // As for a WorkloadEntry's `ports`: the ServiceEntry's port name finds the pod's TCP container
    // port, over the entry's target port; a port the pod does not name goes to the target port.
    const config = translate(
      NS +
        pod("pod1", "127.10.0.10", "{ app: a }") +
        se(
          "name1",
          "{ hosts: [se.istio.io], addresses: [240.240.23.45], workloadSelector: { labels: { app: a } }, ports: [{ number: 8002, name: web }, { number: 81, name: http-alt, targetPort: 9090 }, { number: 82, name: http, targetPort: 7070 }] }",
        ),
    );
    assert.deepEqual(workload(config, "Kubernetes//Pod/ns1/pod1").workload.services, {
      "ns1/se.istio.io": {
        ports: [
          { servicePort: 8002, targetPort: 8002 },
          { servicePort: 81, targetPort: 9090 },
          { servicePort: 82, targetPort: 8080 },
        ],
      },
    });
    assert.deepEqual(config.issues, []);
  });

  it("a Service selects WorkloadEntries; a named targetPort must be in the entry's ports", () => {
    const config = translate(`${NS}
---
apiVersion: v1
kind: Service
metadata: { name: svc, namespace: ns1 }
spec:
  clusterIP: 240.240.0.1
  selector: { app: vm }
  ports: [{ name: web, port: 80, targetPort: http }, { name: raw, port: 81, targetPort: 7000 }]
${we("with-port", "{ address: 140.140.0.20, ports: { http: 8080 }, labels: { app: vm } }")}
${we("without", "{ address: 140.140.0.21, labels: { app: vm } }")}`);
    const key = "ns1/svc.ns1.svc.cluster.local";
    assert.deepEqual(
      workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/with-port").workload.services,
      {
        [key]: {
          ports: [
            { servicePort: 80, targetPort: 8080 },
            { servicePort: 81, targetPort: 7000 },
          ],
        },
      },
    );
    assert.deepEqual(
      workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/without").workload.services,
      { [key]: { ports: [{ servicePort: 81, targetPort: 7000 }] } },
    );
  });

  it("a Service port with a number target goes to the WorkloadEntry's port of the Service port's name", () => {
    // WorkloadEntry `ports` map a service port name to the entry's own port, over the target port.
    const config = translate(`${NS}
---
apiVersion: v1
kind: Service
metadata: { name: svc, namespace: ns1 }
spec:
  clusterIP: 240.240.0.1
  selector: { app: vm }
  ports: [{ name: http, port: 80, targetPort: 8080 }, { name: raw, port: 81, targetPort: 7000 }, { name: other, port: 82 }]
${we("vm", "{ address: 140.140.0.20, ports: { http: 9080, '82': 9082 }, labels: { app: vm } }")}`);
    assert.deepEqual(
      workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm").workload.services,
      {
        "ns1/svc.ns1.svc.cluster.local": {
          ports: [
            { servicePort: 80, targetPort: 9080 },
            { servicePort: 81, targetPort: 7000 },
            { servicePort: 82, targetPort: 82 },
          ],
        },
      },
    );
    assert.deepEqual(config.issues, []);
  });

  it("a port name that is also an Object property (constructor) is looked up in the entry's own ports only", () => {
    const config = translate(`${NS}
---
apiVersion: v1
kind: Service
metadata: { name: svc, namespace: ns1 }
spec:
  clusterIP: 240.240.0.1
  selector: { app: vm }
  ports: [{ name: constructor, port: 80, targetPort: 8080 }, { name: web, port: 81, targetPort: constructor }]
${we("vm", "{ address: 140.140.0.20, labels: { app: vm } }")}
${se("ext", "{ hosts: [se.istio.io], addresses: [240.240.0.2], resolution: STATIC, ports: [{ number: 443, name: constructor }], endpoints: [{ address: 140.140.0.30 }] }")}`);
    assert.deepEqual(
      workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm").workload.services,
      {
        "ns1/svc.ns1.svc.cluster.local": { ports: [{ servicePort: 80, targetPort: 8080 }] },
      },
    );
    assert.deepEqual(
      workload(config, "Kubernetes/networking.istio.io/ServiceEntry/ns1/ext/140.140.0.30").workload.services,
      { "ns1/se.istio.io": { ports: [{ servicePort: 443, targetPort: 443 }] } },
    );
    assert.deepEqual(config.issues, []);
  });

  it("policies, tunnel, network, workload name and canonical labels of a WorkloadEntry", () => {
    const config = translate(`${NS}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: vm-only, namespace: ns1 }
spec: { selector: { matchLabels: { app: vm } }, action: ALLOW, rules: [{}] }
${we(
  "vm-1",
  "{ address: 140.140.0.30, network: net2, labels: { app: vm, app.kubernetes.io/version: v2 } }",
  ", labels: { service.istio.io/workload-name: vms }, annotations: { ambient.istio.io/redirection: enabled }",
)}
${we(
  "vm-2",
  "{ address: 140.140.0.31 }",
  ", labels: { service.istio.io/workload-name: vms }, annotations: { istio.io/autoRegistrationGroup: group-a }",
)}`);
    const w = workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm-1");
    assert.deepEqual(w.aliases, ["net2/140.140.0.30"]);
    assert.equal(w.workload.network, "net2");
    assert.deepEqual(w.workload.authorizationPolicies, ["ns1/vm-only"]);
    assert.equal(w.workload.tunnelProtocol, "HBONE");
    assert.equal(w.workload.workloadName, "vms");
    assert.equal(w.workload.canonicalName, "vm");
    assert.equal(w.workload.canonicalRevision, "v2");
    // The auto-registration group wins over the label.
    assert.equal(
      workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm-2").workload.workloadName,
      "group-a",
    );
  });

  const conflicts: { name: string; yaml: string; issue: RegExp; served: string[] }[] = [
    {
      name: "a pod keeps its IP; the WorkloadEntry is not served",
      yaml: pod("pod1", "127.10.0.10", "{ app: a }") + we("dup", "{ address: 127.10.0.10 }"),
      issue: /WorkloadEntry\/ns1\/dup.*address 127\.10\.0\.10 is already used by Pod\/ns1\/pod1/,
      served: ["Kubernetes//Pod/ns1/pod1"],
    },
    {
      name: "a WorkloadEntry keeps its IP before an inline endpoint",
      yaml:
        we("first", "{ address: 140.140.0.1 }") +
        se("later", "{ hosts: [x.example.com], resolution: STATIC, endpoints: [{ address: 140.140.0.1 }] }"),
      issue: /ServiceEntry\/ns1\/later endpoint 140\.140\.0\.1.*already used by WorkloadEntry\/ns1\/first/,
      served: ["Kubernetes/networking.istio.io/WorkloadEntry/ns1/first"],
    },
    {
      name: "a multicast address is refused",
      yaml: we("mc", "{ address: 224.0.0.1 }"),
      issue: /address 224\.0\.0\.1 is multicast \(224\.0\.0\.0\/4\): not served/,
      served: [],
    },
  ];
  for (const c of conflicts) {
    it(c.name, () => {
      const config = translate(NS + c.yaml);
      assert.deepEqual(
        config.workloads.map((w) => w.key),
        c.served,
      );
      assert.ok(
        config.issues.some((i) => c.issue.test(`${i.source} ${i.message}`)),
        JSON.stringify(config.issues),
      );
    });
  }
});

describe("ServiceEntry and WorkloadEntry validation", () => {
  const cases: { name: string; yaml: string; problem: RegExp | undefined }[] = [
    { name: "v1beta1 is read", yaml: "", problem: undefined },
    {
      name: "another API group",
      yaml: "apiVersion: example.com/v1",
      problem: /apiVersion must be one of networking\.istio\.io\/v1/,
    },
    { name: "no hosts", yaml: "spec: { ports: [] }", problem: /spec\.hosts must name at least one host/ },
    { name: "a host that is not a name", yaml: "spec: { hosts: ['a b'] }", problem: /spec\.hosts\[0\]/ },
    {
      name: "a port out of range",
      yaml: "spec: { hosts: [a.example.com], ports: [{ number: 70000, name: big }] }",
      problem: /spec\.ports\[0\]\.number must be a port number/,
    },
    {
      name: "the same port twice",
      yaml: "spec: { hosts: [a.example.com], ports: [{ number: 80, name: a }, { number: 80, name: b }] }",
      problem: /80 is listed twice/,
    },
    {
      name: "an unknown resolution",
      yaml: "spec: { hosts: [a.example.com], resolution: MAGIC }",
      problem: /spec\.resolution must be one of/,
    },
    {
      name: "an unknown location",
      yaml: "spec: { hosts: [a.example.com], location: MESH_SOMEWHERE }",
      problem: /spec\.location must be one of MESH_EXTERNAL, MESH_INTERNAL/,
    },
    {
      name: "selector and endpoints together",
      yaml: "spec: { hosts: [a.example.com], workloadSelector: { labels: { app: a } }, endpoints: [{ address: 1.2.3.4 }] }",
      problem: /cannot be given together with spec\.workloadSelector/,
    },
    {
      name: "a STATIC endpoint named by hostname",
      yaml: "spec: { hosts: [a.example.com], resolution: STATIC, endpoints: [{ address: vm.example.com }] }",
      problem: /spec\.endpoints\[0\]\.address "vm\.example\.com" must be an IPv4 address/,
    },
    {
      name: "an endpoint address that is neither IP nor name",
      yaml: "spec: { hosts: [a.example.com], resolution: DNS, endpoints: [{ address: 'unix:///sock' }] }",
      problem: /is neither an IPv4 address nor a DNS name/,
    },
    {
      name: "an address that is not an IP",
      yaml: "spec: { hosts: [a.example.com], addresses: [example.com] }",
      problem: /spec\.addresses\[0\] "example\.com" is not an IP address or CIDR/,
    },
    // istiod's admission rules on endpoints and port names.
    {
      name: "endpoints with resolution NONE",
      yaml: "spec: { hosts: [a.example.com], endpoints: [{ address: 1.2.3.4 }] }",
      problem: /spec\.endpoints cannot be set with resolution NONE/,
    },
    {
      name: "two endpoints with resolution DNS_ROUND_ROBIN",
      yaml: "spec: { hosts: [a.example.com], resolution: DNS_ROUND_ROBIN, endpoints: [{ address: a.vm.example }, { address: b.vm.example }] }",
      problem: /spec\.endpoints has 2 endpoints: DNS_ROUND_ROBIN takes at most one/,
    },
    {
      name: "an endpoint port the entry does not define",
      yaml: "spec: { hosts: [a.example.com], resolution: STATIC, ports: [{ number: 80, name: http }], endpoints: [{ address: 1.2.3.4, ports: { grpc: 9000 } }] }",
      problem: /spec\.endpoints\[0\]\.ports\.grpc names no port of spec\.ports/,
    },
    {
      name: "an endpoint port the entry defines",
      yaml: "spec: { hosts: [a.example.com], resolution: DNS, ports: [{ number: 80, name: http }], endpoints: [{ address: vm.example.com, ports: { http: 8080 } }] }",
      problem: undefined,
    },
    {
      name: "a wildcard host with resolution DNS and no endpoints",
      yaml: "spec: { hosts: [api.example.com, '*.example.com'], resolution: DNS, ports: [{ number: 443, name: tls, protocol: TLS }] }",
      problem:
        /spec\.hosts\[1\] "\*\.example\.com" must be a fully qualified name \(no wildcard, a top-level label not all digits\) with resolution DNS and no endpoints/,
    },
    {
      name: "an all-numeric top-level label with resolution DNS_ROUND_ROBIN and no endpoints",
      yaml: "spec: { hosts: [db.internal.123], resolution: DNS_ROUND_ROBIN, ports: [{ number: 5432, name: port-5432 }] }",
      problem: /spec\.hosts\[0\] "db\.internal\.123" must be a fully qualified name/,
    },
    {
      name: "a wildcard host with resolution DNS and an endpoint",
      yaml: "spec: { hosts: ['*.example.com'], resolution: DNS, endpoints: [{ address: vm.example.com }], ports: [{ number: 443, name: tls, protocol: TLS }] }",
      problem: undefined,
    },
    // istiod's admission rules for DYNAMIC_DNS, and for several hosts on one port.
    {
      name: "DYNAMIC_DNS with wildcard hosts and HTTP, TLS, GRPC and HTTP2 ports",
      yaml: "spec: { hosts: ['*.a.example.com', '*.b.example.com'], resolution: DYNAMIC_DNS, location: MESH_INTERNAL, ports: [{ number: 80, name: http, protocol: http }, { number: 443, name: tls, protocol: TLS }, { number: 9000, name: grpc, protocol: GRPC }, { number: 9001, name: http2, protocol: HTTP2 }] }",
      problem: undefined,
    },
    {
      name: "DYNAMIC_DNS with a host that is not a wildcard",
      yaml: "spec: { hosts: ['*.example.com', api.example.com], resolution: DYNAMIC_DNS, ports: [{ number: 80, name: http, protocol: HTTP }] }",
      problem:
        /spec\.hosts\[1\] "api\.example\.com" must be a wildcard \(\*\.domain\) with resolution DYNAMIC_DNS/,
    },
    {
      name: "DYNAMIC_DNS with addresses",
      yaml: "spec: { hosts: ['*.example.com'], resolution: DYNAMIC_DNS, addresses: [240.0.0.1], ports: [{ number: 80, name: http, protocol: HTTP }] }",
      problem: /spec\.addresses cannot be set with resolution DYNAMIC_DNS/,
    },
    {
      name: "DYNAMIC_DNS with endpoints",
      yaml: "spec: { hosts: ['*.example.com'], resolution: DYNAMIC_DNS, endpoints: [{ address: 1.2.3.4 }], ports: [{ number: 80, name: http, protocol: HTTP }] }",
      problem: /spec\.endpoints cannot be set with resolution DYNAMIC_DNS/,
    },
    {
      name: "DYNAMIC_DNS with a TCP port",
      yaml: "spec: { hosts: ['*.example.com'], resolution: DYNAMIC_DNS, ports: [{ number: 5432, name: tcp, protocol: TCP }] }",
      problem:
        /spec\.ports\[0\]\.protocol "TCP" is not HTTP, TLS, GRPC or HTTP2, which resolution DYNAMIC_DNS needs/,
    },
    {
      name: "DYNAMIC_DNS with a port without protocol",
      yaml: "spec: { hosts: ['*.example.com'], resolution: DYNAMIC_DNS, ports: [{ number: 80, name: port-80 }] }",
      problem: /spec\.ports\[0\]\.protocol \(none\) is not HTTP, TLS, GRPC or HTTP2/,
    },
    {
      name: "several hosts with resolution DNS on a TCP port",
      yaml: "spec: { hosts: [a.example.com, b.example.com], resolution: DNS, ports: [{ number: 80, name: http, protocol: HTTP }, { number: 5432, name: tcp, protocol: TCP }] }",
      problem: /spec\.ports\[1\] is neither HTTP nor TLS: with several hosts and resolution DNS/,
    },
    {
      name: "several hosts with resolution NONE on a TCP port",
      yaml: "spec: { hosts: [a.example.com, b.example.com], ports: [{ number: 5432, name: tcp, protocol: TCP }] }",
      problem: undefined,
    },
    {
      name: "several hosts with resolution STATIC on HTTPS and gRPC-Web ports",
      yaml: "spec: { hosts: [a.example.com, b.example.com], resolution: STATIC, endpoints: [{ address: 1.2.3.4 }], ports: [{ number: 443, name: https, protocol: HTTPS }, { number: 8080, name: grpc-web, protocol: GRPC-Web }] }",
      problem: undefined,
    },
    // Port names and protocols, as istiod's admission and the CRD's schema check them.
    {
      name: "a port without a name",
      yaml: "spec: { hosts: [a.example.com], ports: [{ number: 80, protocol: HTTP }] }",
      problem: /spec\.ports\[0\]\.name is required/,
    },
    {
      name: "a port name that is not a DNS-1123 label",
      yaml: "spec: { hosts: [a.example.com], ports: [{ number: 80, name: http_web }] }",
      problem: /spec\.ports\[0\]\.name "http_web" is not a DNS-1123 label/,
    },
    {
      name: "a port name longer than 63 characters",
      yaml: `spec: { hosts: [a.example.com], ports: [{ number: 80, name: ${"p".repeat(64)} }] }`,
      problem: /spec\.ports\[0\]\.name "p{64}" is not a DNS-1123 label/,
    },
    {
      name: "two ports with the same name",
      yaml: "spec: { hosts: [a.example.com], ports: [{ number: 80, name: http }, { number: 8080, name: http }] }",
      problem: /spec\.ports\[1\]\.name "http" is listed twice/,
    },
    {
      name: "a port protocol Istio does not know",
      yaml: "spec: { hosts: [a.example.com], ports: [{ number: 80, name: web, protocol: HTTP3 }] }",
      problem: /spec\.ports\[0\]\.protocol "HTTP3" is not a protocol Istio knows/,
    },
    {
      name: "an endpoint port name that is not a DNS-1123 label",
      yaml: "spec: { hosts: [a.example.com], resolution: STATIC, ports: [{ number: 80, name: http }], endpoints: [{ address: 1.2.3.4, ports: { http_1: 8080 } }] }",
      problem: /spec\.endpoints\[0\]\.ports\.http_1 is not a port name/,
    },
    {
      // The schema allows endpoint port names of 62 characters at most, one fewer than a port's.
      name: "an endpoint port name of 63 characters, naming a port of the entry",
      yaml: `spec: { hosts: [a.example.com], resolution: STATIC, ports: [{ number: 80, name: ${"p".repeat(63)} }], endpoints: [{ address: 1.2.3.4, ports: { ${"p".repeat(63)}: 8080 } }] }`,
      problem: /spec\.endpoints\[0\]\.ports\.p{63} is not a port name/,
    },
    {
      name: "port names in any case, up to 63 characters, and every protocol Istio knows in any case",
      yaml: `spec: { hosts: [a.example.com], resolution: STATIC, endpoints: [{ address: 1.2.3.4, ports: { Web-1: 8080, ${"q".repeat(62)}: 9090 } }],
        ports: [{ number: 80, name: Web-1, protocol: http }, { number: 81, name: 9x, protocol: Grpc-Web }, { number: 82, name: ${"p".repeat(63)}, protocol: http_proxy },
                { number: 83, name: ${"q".repeat(62)}, protocol: tcp }, { number: 84, name: udp, protocol: UDP }, { number: 85, name: mongo, protocol: MONGO },
                { number: 86, name: redis, protocol: Redis }, { number: 87, name: mysql, protocol: mysql }, { number: 88, name: tls, protocol: Tls },
                { number: 89, name: https, protocol: HTTPS }, { number: 90, name: h2, protocol: http2 }, { number: 91, name: grpc, protocol: gRPC },
                { number: 92, name: sniffed, protocol: "" }, { number: 93, name: x } ] }`,
      problem: undefined,
    },
  ];
  for (const c of cases) {
    it(`ServiceEntry: ${c.name}`, () => {
      const base = {
        apiVersion: "networking.istio.io/v1beta1",
        kind: "ServiceEntry",
        metadata: { name: "a", namespace: "ns1" },
        spec: { hosts: ["a.example.com"] },
        source: "m.yaml#0",
      };
      const patch = c.yaml === "" ? {} : objects(`kind: X\nmetadata: { name: x }\n${c.yaml}`)[0];
      const { kind: _k, metadata: _m, source: _s, ...fields } = patch as KubeObject;
      const obj = { ...base, ...fields } as KubeObject;
      const problem = validateManifestObject(obj);
      if (c.problem === undefined) assert.equal(problem, undefined);
      else assert.match(problem ?? "", c.problem);
      if (c.problem !== undefined) {
        assert.throws(
          () => parseServiceEntry(obj),
          (err: unknown) =>
            err instanceof ControlPlaneError && err.code === "ERR_CONTROL_PLANE_INVALID_OBJECT",
        );
      }
    });
  }

  it("ServiceEntry: DYNAMIC_DNS in MESH_INTERNAL bound to a waypoint", () => {
    const [obj] = objects(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: a, namespace: ns1, labels: { istio.io/use-waypoint: waypoint } }
spec: { hosts: ['*.example.com'], resolution: DYNAMIC_DNS, location: MESH_INTERNAL, ports: [{ number: 80, name: http, protocol: HTTP }] }
`);
    assert.match(
      validateManifestObject(obj as KubeObject) ?? "",
      /spec\.location MESH_INTERNAL with resolution DYNAMIC_DNS cannot go through a waypoint/,
    );
    const external = {
      ...(obj as KubeObject),
      spec: { ...(obj as KubeObject).spec, location: "MESH_EXTERNAL" },
    };
    assert.equal(validateManifestObject(external), undefined);
  });

  const weCases: { name: string; spec: string; problem: RegExp }[] = [
    { name: "no address", spec: "{ ports: { http: 80 } }", problem: /spec\.address is required/ },
    {
      name: "a port that is not a number",
      spec: "{ address: 1.2.3.4, ports: { http: x } }",
      problem: /spec\.ports\.http/,
    },
    { name: "a negative weight", spec: "{ address: 1.2.3.4, weight: -1 }", problem: /spec\.weight/ },
    {
      name: "labels that are not strings",
      spec: "{ address: 1.2.3.4, labels: { a: [1] } }",
      problem: /spec\.labels\.a/,
    },
    // istiod checks a WorkloadEntry's port names as a ServiceEntry's; the schema allows 62 characters.
    {
      name: "a port name that is not a DNS-1123 label",
      spec: "{ address: 1.2.3.4, ports: { http_web: 80 } }",
      problem: /spec\.ports\.http_web is not a port name/,
    },
    {
      name: "a port name of 63 characters",
      spec: `{ address: 1.2.3.4, ports: { ${"p".repeat(63)}: 80 } }`,
      problem: /spec\.ports\.p{63} is not a port name/,
    },
  ];
  for (const c of weCases) {
    it(`WorkloadEntry: ${c.name}`, () => {
      const [obj] = objects(
        `apiVersion: networking.istio.io/v1alpha3\nkind: WorkloadEntry\nmetadata: { name: w, namespace: ns1 }\nspec: ${c.spec}\n`,
      );
      assert.match(validateManifestObject(obj as KubeObject) ?? "", c.problem);
    });
  }

  it("WorkloadEntry: port names in any case, of up to 62 characters", () => {
    const [obj] = objects(
      `apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: w, namespace: ns1 }\nspec: { address: 1.2.3.4, ports: { Http-1: 80, "9090": 90, ${"p".repeat(62)}: 91 } }\n`,
    );
    assert.equal(validateManifestObject(obj as KubeObject), undefined);
  });

  it("a ServiceEntry the port rules accept translates as it did before them", () => {
    const config = translate(
      NS +
        se(
          "vm-api",
          `{ hosts: [api.vm.example], addresses: [240.240.0.3], resolution: STATIC,
             ports: [{ number: 80, name: Http-Web, protocol: http, targetPort: 8080 }, { number: 443, name: tls, protocol: Tls },
                     { number: 5432, name: db }],
             endpoints: [{ address: 192.0.2.20, ports: { Http-Web: 9080, db: 6432 } }] }`,
        ) +
        we("vm-2", "{ address: 192.0.2.21, labels: { app: vm }, ports: { Http-Web: 9081 } }"),
    );
    assert.deepEqual(config.issues, []);
    assert.deepEqual(service(config, "ns1/api.vm.example").service.ports, [
      { servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" },
      { servicePort: 443, targetPort: 443, appProtocol: "TLS" },
      { servicePort: 5432, targetPort: 5432 },
    ]);
    assert.deepEqual(
      workload(config, "Kubernetes/networking.istio.io/ServiceEntry/ns1/vm-api/192.0.2.20").workload.services,
      {
        "ns1/api.vm.example": {
          ports: [
            { servicePort: 80, targetPort: 9080 },
            { servicePort: 443, targetPort: 443 },
            { servicePort: 5432, targetPort: 6432 },
          ],
        },
      },
    );
    assert.ok(workload(config, "Kubernetes/networking.istio.io/WorkloadEntry/ns1/vm-2"));
  });

  it("an invalid entry is reported by the translation and serves nothing", () => {
    const config = translate(NS + we("bad", "{ address: 1.2.3.4, weight: -1 }"));
    assert.deepEqual(config.workloads, []);
    assert.match(config.issues[0]?.message ?? "", /invalid WorkloadEntry\/ns1\/bad: spec\.weight/);
  });
});
