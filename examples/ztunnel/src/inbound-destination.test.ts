import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseAuthority } from "@ambient/hbone";
import type { Service, Workload } from "@ambient/xds";
import { decideInboundDestination, type InboundDecision } from "./inbound-destination.js";
import { WorkloadStore } from "./workload-store.js";

const bytes = (a: string) => Uint8Array.from(a.split(".").map(Number));

function workload(name: string, ip: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `Kubernetes//Pod/demo/${name}`,
    name,
    namespace: "demo",
    addresses: [bytes(ip)],
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
    ...extra,
  };
}

function service(name: string, vip: string, extra: Partial<Service> = {}): Service {
  return {
    name,
    namespace: "demo",
    hostname: `${name}.demo.svc.cluster.local`,
    addresses: [{ network: "", address: bytes(vip) }],
    ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }],
    subjectAltNames: [],
    ipFamilies: "IPV4_ONLY",
    extensions: [],
    canonical: true,
    ingressUseWaypoint: false,
    weightedWaypoints: [],
    visibility: "PUBLIC",
    ...extra,
  } as Service;
}

const waypointAt = (ip: string) => ({
  waypoint: { address: { network: "", address: bytes(ip) }, hboneMtlsPort: 15008 },
});

const store = new WorkloadStore();
store.upsert("echo-0", {
  workload: workload("echo-0", "127.10.0.3", {
    services: {
      "demo/echo.demo.svc.cluster.local": {
        ports: [{ servicePort: 80, targetPort: 9090, appProtocol: "TCP" }],
      },
    },
  }),
});
store.upsert("web-v1", { workload: workload("web-v1", "127.10.0.4") });
store.upsert("remote", { workload: workload("remote", "127.10.0.5", { node: "node-b" }) });
store.upsert("plain", { workload: workload("plain", "127.10.0.6", { tunnelProtocol: "NONE" }) });
store.upsert("wp", { workload: workload("wp", "127.10.0.7") });
store.upsert("pinned", { workload: workload("pinned", "127.10.0.8", waypointAt("127.10.0.7")) });
store.upsert("demo/echo.demo.svc.cluster.local", { service: service("echo", "127.30.0.3") });
// A Service whose target port is the proxy's plaintext inbound listener.
store.upsert("demo/loop.demo.svc.cluster.local", {
  service: service("loop", "127.30.0.5", {
    ports: [{ servicePort: 80, targetPort: 15006, appProtocol: "TCP" }],
  }),
});
store.upsert("demo/web.demo.svc.cluster.local", {
  service: service("web", "127.30.0.4", waypointAt("127.10.0.7")),
});

// A waypoint named, as the control plane names it, by the hostname of its own Service, whose endpoint
// is the waypoint pod `wp2`.
const byHostname = {
  waypoint: {
    hostname: { namespace: "demo", hostname: "wpsvc.demo.svc.cluster.local" },
    hboneMtlsPort: 15008,
  },
};
store.upsert("demo/wpsvc.demo.svc.cluster.local", {
  service: service("wpsvc", "127.30.0.9", {
    ports: [{ servicePort: 15008, targetPort: 15008, appProtocol: "TCP" }],
  }),
});
store.upsert("wp2", {
  workload: workload("wp2", "127.10.0.9", {
    services: {
      "demo/wpsvc.demo.svc.cluster.local": {
        ports: [{ servicePort: 15008, targetPort: 15008, appProtocol: "TCP" }],
      },
    },
  }),
});
store.upsert("demo/shop.demo.svc.cluster.local", { service: service("shop", "127.30.0.6", byHostname) });
store.upsert("tagged", { workload: workload("tagged", "127.10.0.10", byHostname) });

const listener = (podIp: string) => ({ podIp, nodeName: "node-a", illegalPorts: [15008, 15001, 15006] });

describe("decideInboundDestination", () => {
  const cases: [
    string,
    string,
    string,
    // The fields to check; `service` by the Service's hostname.
    { kind: InboundDecision["kind"]; [field: string]: unknown },
  ][] = [
    [
      "the pod's own address",
      "127.10.0.3",
      "127.10.0.3:9090",
      { kind: "forward", ip: "127.10.0.3", port: 9090, via: "pod-address" },
    ],
    ["another local pod's address", "127.10.0.3", "127.10.0.4:8080", { kind: "refuse", status: 400 }],
    ["a remote pod's address", "127.10.0.3", "127.10.0.5:80", { kind: "refuse", status: 400 }],
    ["an address outside the mesh", "127.10.0.3", "127.99.0.1:80", { kind: "refuse", status: 400 }],
    [
      "a Service VIP without this pod as waypoint",
      "127.10.0.3",
      "127.30.0.3:80",
      { kind: "refuse", status: 400 },
    ],
    ["IPv6 address of another pod", "127.10.0.3", "[::ffff:127.10.0.4]:80", { kind: "refuse", status: 400 }],
    [
      "IPv4-mapped spelling of its own address",
      "127.10.0.3",
      "[::ffff:127.10.0.3]:9090",
      { kind: "forward", ip: "127.10.0.3", port: 9090 },
    ],
    [
      "a Service hostname: the pod's own target port",
      "127.10.0.3",
      "echo.demo.svc.cluster.local:80",
      {
        kind: "forward",
        ip: "127.10.0.3",
        port: 9090,
        via: "service-hostname",
        service: "echo.demo.svc.cluster.local",
      },
    ],
    [
      "another Service's hostname still reaches only this pod",
      "127.10.0.3",
      "web.demo.svc.cluster.local:80",
      { kind: "forward", ip: "127.10.0.3", port: 8080, via: "service-hostname" },
    ],
    [
      "an unknown hostname",
      "127.10.0.3",
      "nowhere.demo.svc.cluster.local:80",
      { kind: "refuse", status: 503 },
    ],
    [
      "a hostname port the Service lacks",
      "127.10.0.3",
      "echo.demo.svc.cluster.local:81",
      { kind: "refuse", status: 503 },
    ],
    [
      "waypoint: VIP of a Service it serves, forwarded to the waypoint itself",
      "127.10.0.7",
      "127.30.0.4:80",
      { kind: "forward", ip: "127.10.0.7", port: 80, via: "waypoint", service: "web.demo.svc.cluster.local" },
    ],
    [
      "waypoint: a pod that names it",
      "127.10.0.7",
      "127.10.0.8:8080",
      { kind: "forward", ip: "127.10.0.7", port: 8080, via: "waypoint" },
    ],
    [
      "waypoint: a pod that does not name it",
      "127.10.0.7",
      "127.10.0.3:9090",
      { kind: "refuse", status: 400 },
    ],
    [
      "waypoint by hostname: VIP of a Service it serves",
      "127.10.0.9",
      "127.30.0.6:80",
      {
        kind: "forward",
        ip: "127.10.0.9",
        port: 80,
        via: "waypoint",
        service: "shop.demo.svc.cluster.local",
      },
    ],
    [
      "waypoint by hostname: a pod that names it",
      "127.10.0.9",
      "127.10.0.10:8080",
      { kind: "forward", ip: "127.10.0.9", port: 8080, via: "waypoint" },
    ],
    [
      "waypoint by hostname: another waypoint pod is not it",
      "127.10.0.7",
      "127.30.0.6:80",
      { kind: "refuse", status: 400 },
    ],
    ["not a local pod (other node)", "127.10.0.5", "127.10.0.5:80", { kind: "refuse", status: 503 }],
    ["not an HBONE pod", "127.10.0.6", "127.10.0.6:80", { kind: "refuse", status: 503 }],
    ["the HBONE port itself", "127.10.0.3", "127.10.0.3:15008", { kind: "refuse", status: 503 }],
    // The proxy's in-pod listeners: a dial there would come back to the proxy (a loop).
    ["the plaintext inbound port", "127.10.0.3", "127.10.0.3:15006", { kind: "refuse", status: 503 }],
    ["the outbound capture port", "127.10.0.3", "127.10.0.3:15001", { kind: "refuse", status: 503 }],
    [
      "a Service hostname whose target port is the proxy's",
      "127.10.0.3",
      "loop.demo.svc.cluster.local:80",
      { kind: "refuse", status: 503 },
    ],
  ];
  for (const [name, podIp, authority, want] of cases) {
    it(name, () => {
      const got = decideInboundDestination(listener(podIp), parseAuthority(authority), store);
      for (const [key, value] of Object.entries(want)) {
        const field = (got as unknown as Record<string, unknown>)[key];
        // The Service is given as the object; the cases name it by hostname.
        const seen = key === "service" ? (field as Service | undefined)?.hostname : field;
        assert.deepEqual(seen, value, `${key} of ${JSON.stringify(got)}`);
      }
      // Whatever the authority, a forwarded tunnel goes to the accepting pod.
      if (got.kind === "forward") assert.equal(got.ip, podIp);
    });
  }

  it("waypoint: a ServiceEntry elsewhere reusing the VIP does not take it from the Service", () => {
    // Written after the Service, without a waypoint: the tunnel for the VIP is still the waypoint's.
    const key = "other/web.example.com";
    store.upsert(key, {
      service: service("web-entry", "127.30.0.4", {
        namespace: "other",
        hostname: "web.example.com",
        canonical: false,
      }),
    });
    try {
      const got = decideInboundDestination(listener("127.10.0.7"), parseAuthority("127.30.0.4:80"), store);
      assert.equal(
        got.kind === "forward" ? `${got.via} ${got.service?.hostname}` : got.kind,
        "waypoint web.demo.svc.cluster.local",
      );
    } finally {
      store.remove(key);
    }
  });
});
