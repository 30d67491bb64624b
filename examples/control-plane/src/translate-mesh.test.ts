import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseManifests } from "./manifests.js";
import { ipv4Bytes, type MeshConfig, type TranslateOptions, translateMesh } from "./translate-mesh.js";

function translate(yaml: string, options?: TranslateOptions): MeshConfig {
  const { objects, issues } = parseManifests([{ path: "m.yaml", text: yaml }]);
  assert.deepEqual(issues, []);
  return translateMesh(objects, options);
}

const AMBIENT_NS = `
apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { istio.io/dataplane-mode: ambient } }
`;
const pod = (name: string, ip: string, extra = ""): string => `
---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: demo, labels: { app: ${name.replace(/-\d+$/, "")} } }
spec: { nodeName: node-a, serviceAccountName: ${name.replace(/-\d+$/, "")}${extra} }
status: { podIP: ${ip} }
`;

function workload(config: MeshConfig, name: string) {
  const w = config.workloads.find((x) => x.workload.name === name);
  assert.ok(w, `workload ${name}`);
  return w;
}

describe("translateMesh: workloads", () => {
  const cases: { name: string; yaml: string; options?: TranslateOptions; expect: Record<string, unknown> }[] =
    [
      {
        name: "ambient namespace pod -> HBONE with defaults",
        yaml: AMBIENT_NS + pod("web-0", "127.10.0.9"),
        expect: {
          uid: "Kubernetes//Pod/demo/web-0",
          tunnelProtocol: "HBONE",
          serviceAccount: "web",
          node: "node-a",
          canonicalName: "web",
          canonicalRevision: "latest",
          workloadType: "POD",
          workloadName: "web-0",
          status: "HEALTHY",
          clusterId: "Kubernetes",
          trustDomain: undefined,
        },
      },
      {
        name: "namespace without the label -> NONE",
        yaml: `apiVersion: v1\nkind: Namespace\nmetadata: { name: demo }\n${pod("web-0", "127.10.0.9")}`,
        expect: { tunnelProtocol: "NONE" },
      },
      {
        name: "pod label opts out of an ambient namespace",
        yaml:
          AMBIENT_NS +
          "---\nkind: Pod\nmetadata: { name: web-0, namespace: demo, labels: { istio.io/dataplane-mode: none } }\nstatus: { podIP: 127.10.0.9 }\n",
        expect: { tunnelProtocol: "NONE", serviceAccount: "default", node: "" },
      },
      {
        name: "explicit uid, version label, custom cluster and trust domain",
        yaml:
          AMBIENT_NS +
          "---\nkind: Pod\nmetadata: { name: api, namespace: demo, uid: abc-123, labels: { app: api, version: v2 } }\nspec: { serviceAccountName: api }\nstatus: { podIP: 127.10.0.9 }\n",
        options: { clusterId: "c1", trustDomain: "example.org" },
        expect: { uid: "abc-123", canonicalRevision: "v2", clusterId: "c1", trustDomain: "example.org" },
      },
    ];
  for (const c of cases) {
    it(c.name, () => {
      const config = translate(c.yaml, c.options);
      assert.equal(config.workloads.length, 1);
      const w = config.workloads[0];
      assert.ok(w);
      for (const [field, value] of Object.entries(c.expect)) {
        assert.deepEqual((w.workload as Record<string, unknown>)[field], value, field);
      }
      assert.equal(w.key, w.workload.uid);
    });
  }

  it("names a controller's pod after its workload, and its canonical service from Kubernetes' labels", () => {
    const config = translate(`${AMBIENT_NS}
---
apiVersion: v1
kind: Pod
metadata:
  name: shop-7d9f8b6c5-x2kq4
  generateName: shop-7d9f8b6c5-
  namespace: demo
  labels: { pod-template-hash: 7d9f8b6c5, app.kubernetes.io/name: storefront, app.kubernetes.io/version: 2.1.0 }
  ownerReferences: [{ apiVersion: apps/v1, kind: ReplicaSet, name: shop-7d9f8b6c5, controller: true }]
spec: { nodeName: node-a }
status: { podIP: 127.10.0.20 }
`);
    const w = workload(config, "shop-7d9f8b6c5-x2kq4").workload;
    assert.deepEqual(
      [w.workloadName, w.workloadType, w.canonicalName, w.canonicalRevision],
      ["shop", "POD", "storefront", "2.1.0"],
    );
  });

  it("encodes the pod IP as 4 bytes and aliases it as network/IP", () => {
    const w = workload(translate(AMBIENT_NS + pod("web-0", "127.10.0.9")), "web-0");
    assert.deepEqual(w.workload.addresses, [new Uint8Array([127, 10, 0, 9])]);
    assert.deepEqual(w.aliases, ["/127.10.0.9"]);
  });

  it("keeps a pod's workload as a few values and builds the message when it is read", () => {
    const config = translate(AMBIENT_NS + pod("web-0", "127.10.0.9"));
    const w = workload(config, "web-0");
    const first = w.workload;
    assert.notEqual(w.workload, first, "a new message per read: none is held");
    assert.deepEqual(w.workload, first);
    // What the workload holds besides the message's accessor: no message, no address bytes.
    const held = Object.entries(w)
      .filter(([k, v]) => k !== "workload" && typeof v === "object" && v !== null)
      .map(([, v]) => v as unknown);
    assert.ok(!held.some((v) => v instanceof Uint8Array || (v as { uid?: unknown }).uid !== undefined));
    // Deep equality, spreading and JSON see the message, as on a plain workload.
    assert.ok(Object.keys(w).includes("workload"));
    assert.deepEqual({ ...w }.workload, first);
    const json = JSON.parse(JSON.stringify(w)) as {
      key: string;
      aliases: string[];
      workload: { name: string };
    };
    assert.deepEqual(Object.keys(json), ["key", "aliases", "workload"]);
    assert.equal(json.workload.name, "web-0");
    const other = workload(translate(AMBIENT_NS + pod("web-0", "127.10.0.9")), "web-0");
    assert.deepEqual(other, w);
    const moved = workload(translate(AMBIENT_NS + pod("web-0", "127.10.0.8")), "web-0");
    assert.notDeepEqual(moved, w);
  });

  it("expands a Deployment over its annotated pod IPs and nodes", () => {
    const config = translate(`${AMBIENT_NS}---
kind: Deployment
metadata:
  name: api
  namespace: demo
  annotations: { ambient.dev/pod-ips: "127.10.0.5, 127.10.0.6,127.10.0.7", ambient.dev/nodes: "node-a,node-b" }
spec:
  template:
    metadata: { labels: { app: api } }
    spec: { serviceAccountName: api-sa }
`);
    assert.deepEqual(
      config.workloads.map((w) => [
        w.workload.name,
        w.workload.node,
        w.workload.workloadType,
        w.workload.workloadName,
      ]),
      [
        ["api-0", "node-a", "DEPLOYMENT", "api"],
        ["api-1", "node-b", "DEPLOYMENT", "api"],
        ["api-2", "node-a", "DEPLOYMENT", "api"],
      ],
    );
    assert.deepEqual(config.nodes.get("node-b"), ["spiffe://cluster.local/ns/demo/sa/api-sa"]);
  });

  it("skips bad and duplicate pod IPs with an issue", () => {
    const config = translate(
      AMBIENT_NS + pod("a-0", "127.10.0.9") + pod("b-0", "127.10.0.9") + pod("c-0", "10.0.0.300"),
    );
    assert.deepEqual(
      config.workloads.map((w) => w.workload.name),
      ["a-0"],
    );
    assert.equal(config.issues.length, 2);
    assert.match(config.issues[0]?.message ?? "", /already used by Pod\/demo\/a-0/);
    assert.match(config.issues[1]?.message ?? "", /not an IPv4 address/);
  });
});

describe("translateMesh: what makes a pod HBONE (captureSignal)", () => {
  const yaml = `${AMBIENT_NS}${pod("web-0", "127.10.0.9")}${pod("web-1", "127.10.0.10").replace(
    "labels: { app: web }",
    "labels: { app: web }, annotations: { ambient.istio.io/redirection: enabled }",
  )}${pod("other-0", "127.10.0.11")
    .replace("namespace: demo", "namespace: plain")
    .replace(
      "labels: { app: other }",
      "labels: { app: other }, annotations: { ambient.istio.io/redirection: enabled }",
    )}`;
  const tunnels = (config: MeshConfig) =>
    Object.fromEntries(config.workloads.map((w) => [w.workload.name, w.workload.tunnelProtocol]));

  it("dataplane-mode (the default): the pod's or its namespace's label", () => {
    const config = translate(yaml);
    assert.deepEqual(tunnels(config), { "web-0": "HBONE", "web-1": "HBONE", "other-0": "NONE" });
  });

  it("networking.istio.io/tunnel: http is a pod that speaks HBONE itself, captured or not", () => {
    const native = pod("gw-0", "127.10.0.12")
      .replace("namespace: demo", "namespace: plain")
      .replace("labels: { app: gw }", "labels: { app: gw, networking.istio.io/tunnel: http }");
    for (const captureSignal of ["dataplane-mode", "redirection"] as const) {
      const config = translate(native, { captureSignal });
      const w = workload(config, "gw-0").workload;
      assert.deepEqual([w.tunnelProtocol, w.nativeTunnel], ["HBONE", true], captureSignal);
      assert.deepEqual(config.nodes.get("node-a"), [], "no ztunnel asks for its identity");
    }
    assert.equal(workload(translate(yaml), "web-0").workload.nativeTunnel, undefined);
  });

  it("redirection: istio-cni's annotation, whatever the labels", () => {
    const config = translate(yaml, { captureSignal: "redirection" });
    assert.deepEqual(tunnels(config), { "web-0": "NONE", "web-1": "HBONE", "other-0": "HBONE" });
    // Only a captured pod's identity is its node's to ask for.
    assert.deepEqual(config.nodes.get("node-a"), [
      "spiffe://cluster.local/ns/demo/sa/web",
      "spiffe://cluster.local/ns/plain/sa/other",
    ]);
  });
});

describe("translateMesh: pod lifecycle", () => {
  // A pod with a status of its own: the phase, the Ready condition, a deletion in progress.
  const podWith = (name: string, ip: string, status: string, metadata = ""): string => `
---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: demo, labels: { app: web }${metadata} }
spec: { nodeName: node-a, serviceAccountName: ${name} }
status: { podIP: ${ip}, ${status} }
`;
  const SVC = `
---
kind: Service
metadata: { name: web, namespace: demo }
spec: { selector: { app: web }, clusterIP: 127.30.0.1, ports: [{ port: 80, targetPort: 8080 }] }
`;

  it("marks a pod UNHEALTHY while its Ready condition is not True or it is being deleted, as istiod does; unlike istiod, a pod with no Ready condition is HEALTHY", () => {
    const config = translate(
      AMBIENT_NS +
        SVC +
        podWith("ready", "127.10.0.1", `phase: Running, conditions: [{ type: Ready, status: "True" }]`) +
        podWith("starting", "127.10.0.2", `phase: Pending, conditions: [{ type: Ready, status: "False" }]`) +
        podWith("unknown", "127.10.0.3", `phase: Running, conditions: [{ type: Ready, status: Unknown }]`) +
        podWith(
          "leaving",
          "127.10.0.4",
          `phase: Running, conditions: [{ type: Ready, status: "True" }]`,
          ", deletionTimestamp: 2026-12-06T05:00:00Z",
        ) +
        // Hand-written: no Ready condition. istiod makes these two UNHEALTHY; here they are taken as
        // ready, since only a folder manifest lacks the condition the API server's pods carry.
        podWith("declared", "127.10.0.5", "phase: Running") +
        podWith("other-conditions", "127.10.0.6", `conditions: [{ type: PodScheduled, status: "True" }]`),
    );
    const status = Object.fromEntries(config.workloads.map((w) => [w.workload.name, w.workload.status]));
    assert.deepEqual(status, {
      ready: "HEALTHY",
      starting: "UNHEALTHY",
      unknown: "UNHEALTHY",
      leaving: "UNHEALTHY",
      declared: "HEALTHY",
      "other-conditions": "HEALTHY",
    });
    // Unhealthy pods are still workloads behind the Service (ztunnel skips them unless the Service
    // publishes not-ready addresses), and their nodes still get their identities.
    for (const w of config.workloads) assert.ok(w.workload.services?.["demo/web.demo.svc.cluster.local"]);
    assert.equal(config.nodes.get("node-a")?.length, 6);
    assert.deepEqual(config.issues, []);
  });

  it("serves no workload for a finished pod, and its IP goes to the pod that has it now", () => {
    const config = translate(
      AMBIENT_NS +
        podWith("job-done", "127.10.0.7", "phase: Succeeded") +
        podWith("job-failed", "127.10.0.8", "phase: Failed") +
        podWith("web-new", "127.10.0.7", `phase: Running, conditions: [{ type: Ready, status: "True" }]`),
    );
    assert.deepEqual(
      config.workloads.map((w) => [w.workload.name, w.aliases[0]]),
      [["web-new", "/127.10.0.7"]],
    );
    // Finishing is a pod's normal end, not a problem in the manifests; nor is the reused IP.
    assert.deepEqual(config.issues, []);
    assert.deepEqual(config.nodes.get("node-a"), ["spiffe://cluster.local/ns/demo/sa/web-new"]);
  });

  it("serves a pending pod once it has an IP, and reports only a declared pod without one", () => {
    const config = translate(
      AMBIENT_NS +
        podWith("scheduling", '""', "phase: Pending") +
        podWith("starting", "127.10.0.2", "phase: Pending") +
        podWith("declared", '""', "phase: Running"),
    );
    assert.deepEqual(
      config.workloads.map((w) => [w.workload.name, w.workload.status]),
      [["starting", "HEALTHY"]],
    );
    assert.deepEqual(
      config.issues.map((i) => i.source),
      ["Pod/demo/declared"],
    );
  });
});

describe("translateMesh: host-network pods", () => {
  const hostPod = (name: string, ip: string, labels = "app: agent"): string => `
---
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: demo, labels: { ${labels} } }
spec: { nodeName: node-a, serviceAccountName: ${name}, hostNetwork: true }
status: { phase: Running, podIP: ${ip} }
`;

  it("serves them at their node's address as HOST_NETWORK: shared, no alias, no HBONE, no identity", () => {
    const config = translate(
      AMBIENT_NS +
        hostPod("agent", "192.168.0.10") +
        hostPod("exporter", "192.168.0.10", "app: exporter, istio.io/dataplane-mode: ambient") +
        pod("web-0", "127.10.0.9") +
        `
---
kind: Service
metadata: { name: agent, namespace: demo }
spec: { selector: { app: agent }, clusterIP: 127.30.0.7, ports: [{ port: 80, targetPort: 7070 }] }
`,
    );
    assert.deepEqual(config.issues, []);
    const agent = workload(config, "agent");
    const exporter = workload(config, "exporter");
    for (const w of [agent, exporter]) {
      assert.equal(w.workload.networkMode, "HOST_NETWORK");
      assert.equal(w.workload.tunnelProtocol, "NONE");
      assert.deepEqual([...(w.workload.addresses?.[0] ?? [])], [192, 168, 0, 10]);
      assert.deepEqual(w.aliases, []);
    }
    assert.deepEqual(agent.workload.services?.["demo/agent.demo.svc.cluster.local"], {
      ports: [{ servicePort: 80, targetPort: 7070 }],
    });
    assert.equal(workload(config, "web-0").workload.networkMode, undefined);
    // The node's identities are its captured pods' only.
    assert.deepEqual(config.nodes.get("node-a"), ["spiffe://cluster.local/ns/demo/sa/web"]);
  });

  it("checks their address as a node's, not against the pod ranges, and lets a pod have the same", () => {
    const config = translate(
      AMBIENT_NS + hostPod("agent", "127.10.0.9") + pod("web-0", "127.10.0.9") + hostPod("bad", "0.0.0.0"),
    );
    assert.deepEqual(
      config.workloads.map((w) => w.workload.name),
      ["agent", "web-0"],
    );
    assert.deepEqual(
      config.issues.map((i) => i.message),
      ["Pod/demo/bad: pod IP 0.0.0.0 is unspecified (0.0.0.0/8): not served"],
    );
  });
});

describe("translateMesh: pod addresses", () => {
  const bad = ["0.0.0.0", "224.0.0.1", "255.255.255.255", "127.0.0.1", "127.20.0.1", "8.8.8.8"];
  it("reports and skips pods at unspecified, multicast, broadcast or out-of-range addresses", () => {
    const config = translate(
      AMBIENT_NS + pod("good-0", "127.10.0.9") + bad.map((ip, i) => pod(`bad-${i}`, `"${ip}"`)).join(""),
    );
    assert.deepEqual(
      config.workloads.map((w) => w.workload.name),
      ["good-0"],
    );
    assert.deepEqual(
      config.issues.map((i) => i.source),
      bad.map((_, i) => `Pod/demo/bad-${i}`),
    );
    assert.match(config.issues[0]?.message ?? "", /^Pod\/demo\/bad-0: pod IP 0\.0\.0\.0 is unspecified/);
    assert.match(
      config.issues[3]?.message ?? "",
      /127\.0\.0\.1 is outside the pod ranges \(127\.10\.0\.0\/16\)/,
    );
    // The bad pods' nodes get no identities from them.
    assert.deepEqual(config.nodes.get("node-a"), ["spiffe://cluster.local/ns/demo/sa/good"]);
  });

  it("serves pods in configured ranges and refuses a range that is not one", () => {
    const config = translate(AMBIENT_NS + pod("web-0", "10.244.1.5"), { podCidrs: ["10.244.0.0/16"] });
    assert.deepEqual(
      config.workloads.map((w) => w.aliases[0]),
      ["/10.244.1.5"],
    );
    assert.throws(() => translate(AMBIENT_NS, { podCidrs: ["10.244.0.0"] }), {
      code: "ERR_CONTROL_PLANE_CONFIG",
    });
  });
});

describe("translateMesh: services", () => {
  const svc = (ports: string, clusterIP = "127.30.0.1"): string => `
---
kind: Service
metadata: { name: web, namespace: demo }
spec:
  clusterIP: ${clusterIP}
  selector: { app: web }
  ports: ${ports}
`;
  const cases: {
    name: string;
    ports: string;
    service: { servicePort: number; targetPort: number; appProtocol?: string }[];
    workload: { servicePort: number; targetPort: number }[];
  }[] = [
    {
      name: "numeric targetPort",
      ports: "[{ port: 80, targetPort: 8080 }]",
      service: [{ servicePort: 80, targetPort: 8080 }],
      workload: [{ servicePort: 80, targetPort: 8080 }],
    },
    {
      name: "no targetPort means the service port",
      ports: "[{ port: 9090, appProtocol: grpc }]",
      service: [{ servicePort: 9090, targetPort: 9090, appProtocol: "GRPC" }],
      workload: [{ servicePort: 9090, targetPort: 9090 }],
    },
    {
      name: "the protocol from appProtocol, the port's name, or a server-first well-known port",
      ports: "[{ name: grpc-api, port: 9090 }, { name: http, port: 81, appProtocol: redis }, { port: 25 }]",
      service: [
        { servicePort: 9090, targetPort: 9090, appProtocol: "GRPC" },
        { servicePort: 81, targetPort: 81, appProtocol: "TCP" },
        { servicePort: 25, targetPort: 25, appProtocol: "TCP" },
      ],
      workload: [
        { servicePort: 9090, targetPort: 9090 },
        { servicePort: 81, targetPort: 81 },
        { servicePort: 25, targetPort: 25 },
      ],
    },
    {
      name: "named targetPort resolves per pod",
      ports: "[{ port: 80, targetPort: http }, { port: 81, targetPort: missing }]",
      service: [
        { servicePort: 80, targetPort: 0 },
        { servicePort: 81, targetPort: 0 },
      ],
      workload: [{ servicePort: 80, targetPort: 8080 }],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const extra = ", containers: [{ name: c, ports: [{ name: http, containerPort: 8080 }] }]";
      const config = translate(AMBIENT_NS + pod("web-0", "127.10.0.9", extra) + svc(c.ports));
      const s = config.services[0];
      assert.ok(s);
      assert.equal(s.key, "demo/web.demo.svc.cluster.local");
      assert.deepEqual(s.aliases, ["/127.30.0.1"]);
      assert.deepEqual(s.service.addresses, [{ network: "", address: new Uint8Array([127, 30, 0, 1]) }]);
      assert.deepEqual(s.service.ports, c.service);
      assert.deepEqual(workload(config, "web-0").workload.services, {
        "demo/web.demo.svc.cluster.local": { ports: c.workload },
      });
    });
  }

  it("resolves a named targetPort among TCP container ports, native sidecars' included", () => {
    // A sidecar started as an init container that keeps running (restartPolicy: Always) serves like
    // any container; a UDP port of that name is not where ztunnel's TCP goes.
    const extra = `, initContainers: [
        { name: setup, ports: [{ name: setup, containerPort: 7000 }] },
        { name: proxy, restartPolicy: Always, ports: [{ name: proxy, containerPort: 15001 }] }],
      containers: [{ name: c, ports: [{ name: dns, containerPort: 53, protocol: UDP }, { name: http, containerPort: 8080, protocol: TCP }] }]`;
    const ports =
      "[{ port: 80, targetPort: http }, { port: 81, targetPort: proxy }, { port: 82, targetPort: setup }, { port: 53, targetPort: dns }]";
    const config = translate(AMBIENT_NS + pod("web-0", "127.10.0.9", extra) + svc(ports));
    assert.deepEqual(workload(config, "web-0").workload.services, {
      "demo/web.demo.svc.cluster.local": {
        ports: [
          { servicePort: 80, targetPort: 8080 },
          { servicePort: 81, targetPort: 15001 },
        ],
      },
    });
  });

  it("selects only pods of its namespace with matching labels", () => {
    const other = `
---
kind: Pod
metadata: { name: web-9, namespace: other, labels: { app: web } }
status: { podIP: 127.10.0.10 }
`;
    const config = translate(
      AMBIENT_NS + pod("web-0", "127.10.0.9") + pod("db-0", "127.10.0.8") + other + svc("[{ port: 80 }]"),
    );
    assert.deepEqual(Object.keys(workload(config, "web-0").workload.services ?? {}), [
      "demo/web.demo.svc.cluster.local",
    ]);
    assert.deepEqual(workload(config, "db-0").workload.services, {});
    assert.deepEqual(workload(config, "web-9").workload.services, {});
  });

  it("sets ingressUseWaypoint from the Service's label, else its Namespace's, read as a Go bool", () => {
    const service = (name: string, labels: string, vip: number) => `
---
kind: Service
metadata: { name: ${name}, namespace: demo${labels === "" ? "" : `, labels: { ${labels} }`} }
spec: { clusterIP: 127.30.0.${vip}, selector: { app: ${name} }, ports: [{ port: 80 }] }
`;
    const ns = (labels: string) =>
      `apiVersion: v1\nkind: Namespace\nmetadata: { name: demo, labels: { ${labels} } }\n`;
    const services = [
      service("plain", "", 1),
      service("yes", 'istio.io/ingress-use-waypoint: "true"', 2),
      service("one", 'istio.io/ingress-use-waypoint: "1"', 3),
      service("shout", 'istio.io/ingress-use-waypoint: "TRUE"', 4),
      service("no", 'istio.io/ingress-use-waypoint: "false"', 5),
      service("typo", 'istio.io/ingress-use-waypoint: "yes"', 6),
    ].join("");
    const flags = (config: MeshConfig) =>
      Object.fromEntries(config.services.map((s) => [s.service.name, s.service.ingressUseWaypoint === true]));
    assert.deepEqual(flags(translate(ns("a: b") + services)), {
      plain: false,
      yes: true,
      one: true,
      shout: true,
      no: false,
      typo: false,
    });
    // The Namespace's label applies where the Service has none of its own.
    assert.deepEqual(flags(translate(ns('istio.io/ingress-use-waypoint: "true"') + services)), {
      plain: true,
      yes: true,
      one: true,
      shout: true,
      no: false,
      typo: false,
    });
  });

  it("sends spec.ipFamilies as ip_families: one family only, or DUAL", () => {
    const service = (name: string, families: string, vip: number) => `
---
kind: Service
metadata: { name: ${name}, namespace: demo }
spec: { clusterIP: 127.30.0.${vip}, selector: { app: ${name} }, ports: [{ port: 80 }]${families} }
`;
    const config = translate(
      service("none", "", 1) +
        service("v4", ", ipFamilies: [IPv4]", 2) +
        service("v6", ", ipFamilies: [IPv6]", 3) +
        service("dual", ", ipFamilies: [IPv4, IPv6]", 4),
    );
    assert.deepEqual(Object.fromEntries(config.services.map((s) => [s.service.name, s.service.ipFamilies])), {
      none: undefined,
      v4: "IPV4_ONLY",
      v6: "IPV6_ONLY",
      dual: "DUAL",
    });
  });

  it("serves every spec.clusterIPs address of a dual-stack Service as a VIP, IPv6 first or second", () => {
    // As istiod's getVIPs: with spec.clusterIP alone, a client dialing the other family's VIP is not
    // captured as the Service's traffic, and a Service whose first family is IPv6 is not served at all.
    const dual = (name: string, ips: string[]) => `
---
kind: Service
metadata: { name: ${name}, namespace: demo }
spec:
  clusterIP: "${ips[0]}"
  clusterIPs: [${ips.map((ip) => `"${ip}"`).join(", ")}]
  ipFamilies: [${ips.map((ip) => (ip.includes(":") ? "IPv6" : "IPv4")).join(", ")}]
  selector: { app: web }
  ports: [{ port: 80 }]
`;
    const config = translate(
      AMBIENT_NS +
        pod("web-0", "127.10.0.9") +
        dual("v4-first", ["127.30.0.1", "fd00:10:96::a"]) +
        // Kept as bytes, aliased in the canonical text ztunnel and istiod print.
        dual("v6-first", ["fd00:10:96:0:0:0:0:B", "127.30.0.2"]),
    );
    assert.deepEqual(config.issues, []);
    const v6 = (...groups: number[]) => new Uint8Array(groups.flatMap((g) => [g >> 8, g & 255]));
    assert.deepEqual(
      config.services.map((s) => [s.service.name, s.aliases, s.service.addresses, s.service.ipFamilies]),
      [
        [
          "v4-first",
          ["/127.30.0.1", "/fd00:10:96::a"],
          [
            { network: "", address: new Uint8Array([127, 30, 0, 1]) },
            { network: "", address: v6(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xa) },
          ],
          "DUAL",
        ],
        [
          "v6-first",
          ["/fd00:10:96::b", "/127.30.0.2"],
          [
            { network: "", address: v6(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0xb) },
            { network: "", address: new Uint8Array([127, 30, 0, 2]) },
          ],
          "DUAL",
        ],
      ],
    );
    assert.deepEqual(Object.keys(workload(config, "web-0").workload.services ?? {}), [
      "demo/v4-first.demo.svc.cluster.local",
      "demo/v6-first.demo.svc.cluster.local",
    ]);
  });

  it("reports a Service with a cluster IP that is no IP address, or taken by another in either family", () => {
    const service = (name: string, ips: string) => `
---
kind: Service
metadata: { name: ${name}, namespace: demo }
spec: { clusterIPs: [${ips}], ports: [{ port: 80 }] }
`;
    const config = translate(
      service("first", `"127.30.0.1", "fd00::1"`) +
        service("garbage", `"127.30.0.3", "fd00::1::2"`) +
        service("same-v6", `"127.30.0.4", "fd00:0::1"`),
    );
    assert.deepEqual(
      config.services.map((s) => s.service.name),
      ["first"],
    );
    assert.deepEqual(
      config.issues.map((i) => i.message),
      [
        'spec.clusterIPs "fd00::1::2" is not an IP address',
        "spec.clusterIPs fd00::1 is already used by demo/first.demo.svc.cluster.local",
      ],
    );
  });

  it("marks a Kubernetes Service canonical: its hostname is its own in every namespace", () => {
    // A ztunnel asked for a hostname several Services have picks the client's namespace's, else the
    // canonical one: without the mark, a ServiceEntry another namespace writes for this hostname
    // could be answered to clients of a third namespace instead of the Service.
    const entry = `
---
apiVersion: v1
kind: Namespace
metadata: { name: other }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: shadow, namespace: other }
spec: { hosts: [web.demo.svc.cluster.local], addresses: [127.30.0.9], resolution: STATIC, ports: [{ number: 80, name: http }] }
`;
    const config = translate(AMBIENT_NS + svc("[{ port: 80 }]") + entry);
    assert.deepEqual(
      config.services.map((s) => [s.key, s.service.canonical]),
      [
        ["demo/web.demo.svc.cluster.local", true],
        ["other/web.demo.svc.cluster.local", undefined],
      ],
    );
  });

  it("serves no Service for an ExternalName Service: its name is left to the cluster's DNS", () => {
    // A Service without an address is answered by ztunnel's DNS proxy from its endpoints: an
    // ExternalName Service has none, and its CNAME would go unanswered.
    const external = `
---
kind: Service
metadata: { name: api, namespace: demo }
spec: { type: ExternalName, externalName: api.example.com, selector: { app: web }, ports: [{ port: 443 }] }
`;
    const config = translate(AMBIENT_NS + pod("web-0", "127.10.0.9") + svc("[{ port: 80 }]") + external);
    assert.deepEqual(
      config.services.map((s) => s.key),
      ["demo/web.demo.svc.cluster.local"],
    );
    assert.deepEqual(Object.keys(workload(config, "web-0").workload.services ?? {}), [
      "demo/web.demo.svc.cluster.local",
    ]);
    assert.deepEqual(config.issues, []);
  });

  it("headless service has no address; a taken VIP is an issue", () => {
    const second = `
---
kind: Service
metadata: { name: web2, namespace: demo }
spec: { clusterIP: 127.30.0.1, ports: [{ port: 80 }] }
`;
    const config = translate(
      AMBIENT_NS +
        svc("[{ port: 80 }]", "None") +
        svc("[{ port: 80 }]").replace("name: web,", "name: web1,") +
        second,
    );
    assert.deepEqual(
      config.services.map((s) => [s.key, s.service.addresses?.length]),
      [
        ["demo/web.demo.svc.cluster.local", 0],
        ["demo/web1.demo.svc.cluster.local", 1],
      ],
    );
    assert.match(config.issues[0]?.message ?? "", /already used by demo\/web1/);
  });
});

describe("translateMesh: authorization", () => {
  const allow = (name: string, selector: string, namespace = "demo"): string => `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ${name}, namespace: ${namespace} }
spec:
  ${selector}
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/demo/sa/sleep"] } }] }]
`;
  it("lists selector policies on the workloads they select, not namespace or global ones", () => {
    const config = translate(
      AMBIENT_NS +
        pod("echo-0", "127.10.0.3") +
        pod("sleep-0", "127.10.0.2") +
        allow("echo-only", "selector: { matchLabels: { app: echo } }") +
        allow("ns-wide", "") +
        allow("mesh-echo", "selector: { matchLabels: { app: echo } }", "istio-system") +
        allow("mesh-wide", "", "istio-system"),
    );
    assert.deepEqual(workload(config, "echo-0").workload.authorizationPolicies, [
      "demo/echo-only",
      "istio-system/mesh-echo",
    ]);
    assert.deepEqual(workload(config, "sleep-0").workload.authorizationPolicies, []);
    assert.deepEqual(
      [...config.authorizations].map(([k, a]) => [k, a.scope]),
      [
        ["demo/echo-only", "WORKLOAD_SELECTOR"],
        ["demo/ns-wide", "NAMESPACE"],
        ["istio-system/mesh-echo", "WORKLOAD_SELECTOR"],
        ["istio-system/mesh-wide", "GLOBAL"],
      ],
    );
  });

  it("lists a policy whose matchLabels is empty on every workload of its namespace, the root's on all; selector: {} on none", () => {
    // As istiod: every workload's labels hold an empty set of labels, so an empty matchLabels
    // selects them all; a selector without matchLabels selects nothing.
    const other = `
---
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: cart-0, namespace: shop, labels: { app: cart } }
spec: { nodeName: node-a, serviceAccountName: cart }
status: { podIP: 127.10.0.4 }
`;
    const config = translate(
      AMBIENT_NS +
        pod("echo-0", "127.10.0.3") +
        pod("sleep-0", "127.10.0.2") +
        other +
        allow("every-pod", "selector: { matchLabels: {} }") +
        allow("no-pod", "selector: {}") +
        allow("mesh-every-pod", "selector: { matchLabels: {} }", "istio-system"),
    );
    assert.deepEqual(workload(config, "echo-0").workload.authorizationPolicies, [
      "demo/every-pod",
      "istio-system/mesh-every-pod",
    ]);
    assert.deepEqual(workload(config, "sleep-0").workload.authorizationPolicies, [
      "demo/every-pod",
      "istio-system/mesh-every-pod",
    ]);
    assert.deepEqual(workload(config, "cart-0").workload.authorizationPolicies, [
      "istio-system/mesh-every-pod",
    ]);
    assert.equal(config.authorizations.get("demo/every-pod")?.scope, "WORKLOAD_SELECTOR");
  });

  it("a root-namespace PeerAuthentication with a selector of no labels never loosens the mesh-wide mode", () => {
    // istiod takes such a policy as mesh-wide only for the root namespace's own workloads. Here it is
    // mesh-wide when STRICT too (stricter), but a PERMISSIVE one, however old, leaves STRICT in force.
    const pa = (name: string, spec: string, created: string) => `
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: ${name}, namespace: istio-system, creationTimestamp: "${created}" }
spec: ${spec}
`;
    const keys = (yaml: string) =>
      workload(translate(AMBIENT_NS + pod("echo-0", "127.10.0.3") + yaml), "echo-0").workload
        .authorizationPolicies;
    const strict = ["istio-system/istio_converted_static_strict"];
    const defaultStrict = pa("default", "{ mtls: { mode: STRICT } }", "2026-02-01T00:00:00Z");
    assert.deepEqual(
      keys(
        defaultStrict +
          pa(
            "loose",
            "{ selector: { matchLabels: {} }, mtls: { mode: PERMISSIVE } }",
            "2026-01-01T00:00:00Z",
          ),
      ),
      strict,
    );
    assert.deepEqual(
      keys(
        defaultStrict + pa("loose", "{ selector: {}, mtls: { mode: PERMISSIVE } }", "2026-01-01T00:00:00Z"),
      ),
      strict,
    );
    assert.deepEqual(
      keys(pa("tight", "{ selector: { matchLabels: {} }, mtls: { mode: STRICT } }", "2026-01-01T00:00:00Z")),
      strict,
    );
  });

  it("STRICT PeerAuthentication adds the static strict policy to the workloads it covers", () => {
    const pa = `
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: demo }
spec: { mtls: { mode: STRICT } }
`;
    const config = translate(AMBIENT_NS + pod("echo-0", "127.10.0.3") + pa);
    assert.deepEqual(workload(config, "echo-0").workload.authorizationPolicies, [
      "istio-system/istio_converted_static_strict",
    ]);
    const strict = config.authorizations.get("istio-system/istio_converted_static_strict");
    assert.equal(strict?.action, "DENY");
    assert.equal(translate(AMBIENT_NS + pod("echo-0", "127.10.0.3")).authorizations.size, 0);
  });

  it("serves the static strict policy while any PeerAuthentication exists, before a workload lists it", () => {
    const strictKey = "istio-system/istio_converted_static_strict";
    const pa = (namespace: string, mode: string): string => `
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: ${namespace} }
spec: { mtls: { mode: ${mode} } }
`;
    // A STRICT namespace with no pod yet: its first pod's Workload lists the policy, and a ztunnel that
    // gets that Workload before a separate push of the policy would skip the unknown key and accept
    // plaintext. The policy is served ahead of any workload that lists it.
    const empty = translate(AMBIENT_NS + pa("demo", "STRICT"));
    assert.equal(empty.workloads.length, 0);
    assert.deepEqual(empty.authorizations.get(strictKey)?.groups[0]?.rules[0]?.matches[0]?.notPrincipals, [
      { presence: {} },
    ]);
    // No workload is STRICT: the policy is there all the same, listed by none.
    const permissive = translate(AMBIENT_NS + pod("echo-0", "127.10.0.3") + pa("istio-system", "PERMISSIVE"));
    assert.deepEqual(workload(permissive, "echo-0").workload.authorizationPolicies, []);
    assert.deepEqual([...permissive.authorizations.keys()], [strictKey]);
  });

  it("converts port-level mTLS against the oldest namespace-wide and mesh-wide PeerAuthentication", () => {
    const peer = (name: string, namespace: string, created: string, spec: string): string => `
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: ${name}, namespace: ${namespace}, creationTimestamp: "${created}" }
spec: ${spec}
`;
    const exception = peer(
      "echo-ports",
      "demo",
      "2024-03-01T00:00:00Z",
      "{ selector: { matchLabels: { app: echo } }, portLevelMtls: { 9090: { mode: PERMISSIVE } } }",
    );
    const cases = [
      {
        name: "namespace",
        policies:
          peer("late", "demo", "2024-02-01T00:00:00Z", "{ mtls: { mode: PERMISSIVE } }") +
          peer("early", "demo", "2024-01-01T00:00:00Z", "{ mtls: { mode: STRICT } }"),
      },
      {
        name: "mesh",
        policies:
          peer("late", "istio-system", "2024-02-01T00:00:00Z", "{ mtls: { mode: PERMISSIVE } }") +
          peer("early", "istio-system", "2024-01-01T00:00:00Z", "{ mtls: { mode: STRICT } }"),
      },
    ];
    for (const c of cases) {
      const config = translate(AMBIENT_NS + pod("echo-0", "127.10.0.3") + c.policies + exception);
      // The oldest policy is STRICT: the workload lists the converted policy in place of the static one.
      assert.deepEqual(
        workload(config, "echo-0").workload.authorizationPolicies,
        ["demo/converted_peer_authentication_echo-ports"],
        c.name,
      );
      const converted = config.authorizations.get("demo/converted_peer_authentication_echo-ports");
      assert.ok(converted, `${c.name}: the listed policy is sent`);
      const rules = converted.groups[0]?.rules ?? [];
      assert.deepEqual(rules[0]?.matches[0]?.notDestinationPorts, [9090], c.name);
      assert.deepEqual(rules[1]?.matches[0]?.notPrincipals, [{ presence: {} }], c.name);
    }
  });

  it("an invalid policy is an issue and is not served", () => {
    const bad = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: broken, namespace: demo }
spec: { action: MAYBE }
`;
    const config = translate(AMBIENT_NS + bad);
    assert.equal(config.authorizations.size, 0);
    assert.equal(config.issues.length, 1);
    assert.equal(config.issues[0]?.source, "AuthorizationPolicy/demo/broken");
  });
});

describe("translateMesh: nodes", () => {
  it("maps each node to the identities of its mesh pods", () => {
    const offMesh = `
---
kind: Pod
metadata: { name: legacy, namespace: plain }
spec: { nodeName: node-c, serviceAccountName: legacy }
status: { podIP: 127.10.0.20 }
`;
    const config = translate(
      AMBIENT_NS + pod("sleep-0", "127.10.0.2") + pod("stranger-0", "127.10.0.5") + offMesh,
    );
    assert.deepEqual(Object.fromEntries(config.nodes), {
      "node-a": ["spiffe://cluster.local/ns/demo/sa/sleep", "spiffe://cluster.local/ns/demo/sa/stranger"],
      "node-c": [],
    });
  });
});

describe("ipv4Bytes", () => {
  const table: [string, number[] | undefined][] = [
    ["127.10.0.2", [127, 10, 0, 2]],
    ["0.0.0.0", [0, 0, 0, 0]],
    ["256.1.1.1", undefined],
    ["1.2.3", undefined],
    ["01.2.3.4", undefined],
    ["::1", undefined],
  ];
  for (const [text, bytes] of table) {
    it(text, () =>
      assert.deepEqual(ipv4Bytes(text), bytes === undefined ? undefined : new Uint8Array(bytes)),
    );
  }
});

describe("translateMesh: waypoints", () => {
  const gateway = (extra: string) => `
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: demo${extra} }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
`;
  const service = (labels: string) => `
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo${labels} }
spec: { clusterIP: 127.30.0.2, selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
`;
  const cases: { name: string; yaml: string; waypoint?: string; issue?: RegExp }[] = [
    {
      name: "service label + status address",
      yaml: `${gateway("")}status: { addresses: [{ type: IPAddress, value: 127.10.0.6 }] }\n${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      waypoint: "127.10.0.6",
    },
    {
      name: "namespace label + annotation",
      yaml: `apiVersion: v1\nkind: Namespace\nmetadata: { name: demo, labels: { istio.io/use-waypoint: waypoint } }\n${gateway(", annotations: { ambient.dev/address: 127.10.0.7 }")}${service("")}`,
      waypoint: "127.10.0.7",
    },
    {
      name: "use-waypoint none on the service overrides the namespace",
      yaml: `apiVersion: v1\nkind: Namespace\nmetadata: { name: demo, labels: { istio.io/use-waypoint: waypoint } }\n${gateway(", annotations: { ambient.dev/address: 127.10.0.7 }")}${service(", labels: { istio.io/use-waypoint: none }")}`,
    },
    {
      name: "unknown waypoint is an issue",
      yaml: service(", labels: { istio.io/use-waypoint: nowhere }"),
      issue: /demo\/nowhere is not a known istio-waypoint Gateway/,
    },
    {
      name: "gateway without an address is an issue",
      yaml: `${gateway("")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      issue: /waypoint has no IPv4 address/,
    },
    {
      name: "a waypoint at 0.0.0.0 is an issue (a connection there reaches the local host)",
      yaml: `${gateway("")}status: { addresses: [{ type: IPAddress, value: 0.0.0.0 }] }\n${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      issue: /waypoint address: 0\.0\.0\.0 is unspecified/,
    },
    {
      name: "a waypoint for all traffic takes a Service",
      yaml: `${gateway(", labels: { istio.io/waypoint-for: all }, annotations: { ambient.dev/address: 127.10.0.6 }")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      waypoint: "127.10.0.6",
    },
    {
      name: "a waypoint for workload traffic only does not take a Service (an issue)",
      yaml: `${gateway(", labels: { istio.io/waypoint-for: workload }, annotations: { ambient.dev/address: 127.10.0.6 }")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      issue:
        /waypoint demo\/waypoint does not take Service traffic \(istio\.io\/waypoint-for: workload\): not bound/,
    },
    {
      name: "a waypoint for no traffic does not take a Service (an issue)",
      yaml: `${gateway(", labels: { istio.io/waypoint-for: none }, annotations: { ambient.dev/address: 127.10.0.6 }")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      issue: /does not take Service traffic \(istio\.io\/waypoint-for: none\)/,
    },
    {
      name: "the GatewayClass's waypoint-for is the default: workload only (an issue)",
      yaml: `apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: istio-waypoint, labels: { istio.io/waypoint-for: workload } }\n${gateway(", annotations: { ambient.dev/address: 127.10.0.6 }")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      issue: /does not take Service traffic \(istio\.io\/waypoint-for: workload\)/,
    },
    {
      name: "the Gateway's waypoint-for overrides its class's",
      yaml: `apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: istio-waypoint, labels: { istio.io/waypoint-for: workload } }\n${gateway(", labels: { istio.io/waypoint-for: service }, annotations: { ambient.dev/address: 127.10.0.6 }")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      waypoint: "127.10.0.6",
    },
    {
      name: "a waypoint outside the pod ranges is an issue",
      yaml: `${gateway(", annotations: { ambient.dev/address: 127.0.0.1 }")}${service(", labels: { istio.io/use-waypoint: waypoint }")}`,
      issue: /waypoint address: 127\.0\.0\.1 is outside the pod ranges/,
    },
  ];
  it("binds to a waypoint at a Service's cluster IP outside the pod ranges, as the leader writes it on Kubernetes", () => {
    // On a cluster the Gateway's address is its Service's cluster IP, from the Service range, never
    // from the pod ranges; istiod binds to it, and a ztunnel reaches it through that Service's pods.
    const waypointService = `
---
apiVersion: v1
kind: Service
metadata: { name: waypoint, namespace: demo, labels: { gateway.networking.k8s.io/gateway-name: waypoint } }
spec: { clusterIP: 10.96.0.20, selector: { gateway.networking.k8s.io/gateway-name: waypoint }, ports: [{ name: mesh, port: 15008 }] }
`;
    const yaml = `${gateway("")}status: { addresses: [{ type: IPAddress, value: 10.96.0.20 }] }\n${waypointService}${service(", labels: { istio.io/use-waypoint: waypoint }")}`;
    const config = translate(yaml, { podCidrs: ["10.244.0.0/16"] });
    const web = config.services.find((s) => s.key === "demo/web.demo.svc.cluster.local");
    assert.deepEqual(web?.service.waypoint, {
      address: { network: "", address: ipv4Bytes("10.96.0.20") },
      hboneMtlsPort: 15008,
    });
    assert.deepEqual(config.issues, []);
    // An address no Service has is still checked against the pod ranges.
    const elsewhere = translate(yaml.replace("clusterIP: 10.96.0.20", "clusterIP: 10.96.0.21"), {
      podCidrs: ["10.244.0.0/16"],
    });
    assert.equal(
      elsewhere.services.find((s) => s.key === "demo/web.demo.svc.cluster.local")?.service.waypoint,
      undefined,
    );
    assert.match(
      elsewhere.issues[0]?.message ?? "",
      /waypoint address: 10\.96\.0\.20 is outside the pod ranges/,
    );
  });

  describe("takes the waypoint's address from status.addresses by type, not position", () => {
    // Istio's controller writes the Hostname of the waypoint's Service first, then its IP; a waypoint
    // dropped over the order of its addresses would leave what is bound to it going around it.
    const waypointService = `
---
apiVersion: v1
kind: Service
metadata: { name: waypoint, namespace: demo, labels: { gateway.istio.io/managed: istio.io-mesh-controller } }
spec: { clusterIP: 10.96.0.20, selector: { gateway.networking.k8s.io/gateway-name: waypoint }, ports: [{ name: mesh, port: 15008 }] }
`;
    const webPod = `
---
apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: demo, labels: { app: web, istio.io/use-waypoint: waypoint } }
spec: { nodeName: node-a, serviceAccountName: web }
status: { podIP: 10.244.0.7 }
`;
    const withStatus = (addresses: string, extra = waypointService) =>
      `${AMBIENT_NS}${gateway(", labels: { istio.io/waypoint-for: all }")}status: { addresses: ${addresses} }\n${extra}${service(", labels: { istio.io/use-waypoint: waypoint }")}${webPod}`;
    const options = { podCidrs: ["10.244.0.0/16"] };
    const waypointIps = (config: MeshConfig) => ({
      service: [
        ...(config.services.find((s) => s.key === "demo/web.demo.svc.cluster.local")?.service.waypoint
          ?.address?.address ?? []),
      ].join("."),
      workload: [...(workload(config, "web-0").workload.waypoint?.address?.address ?? [])].join("."),
    });
    const cases: { name: string; addresses: string; extra?: string; ip?: string; issue?: RegExp }[] = [
      {
        name: "a Hostname first, then the IPAddress (as Istio's controller writes it)",
        addresses:
          "[{ type: Hostname, value: waypoint.demo.svc.cluster.local }, { type: IPAddress, value: 10.96.0.20 }]",
        ip: "10.96.0.20",
      },
      {
        name: "a Hostname only: the cluster IP of the Service it names, in the Gateway's namespace",
        addresses: "[{ type: Hostname, value: waypoint.demo.svc.cluster.local }]",
        ip: "10.96.0.20",
      },
      {
        name: "a Hostname no Service has, then an IPAddress: the IPAddress",
        addresses:
          "[{ type: Hostname, value: elsewhere.demo.svc.cluster.local }, { type: IPAddress, value: 10.96.0.20 }]",
        ip: "10.96.0.20",
      },
      {
        name: "an address of another type, or no IP, is passed over for a later IPAddress",
        addresses:
          "[{ type: example.com/custom, value: 10.244.0.9 }, { type: IPAddress, value: not-an-ip }, { value: 10.96.0.20 }]",
        ip: "10.96.0.20",
      },
      {
        name: "a Hostname only, of a Service in another namespace: not bound, an issue",
        addresses: "[{ type: Hostname, value: waypoint.demo.svc.cluster.local }]",
        extra: waypointService.replace("namespace: demo", "namespace: other"),
        issue: /waypoint has no IPv4 address/,
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const config = translate(withStatus(c.addresses, c.extra), options);
        if (c.ip !== undefined) {
          assert.deepEqual(waypointIps(config), { service: c.ip, workload: c.ip });
          assert.deepEqual(config.issues, []);
        } else {
          assert.deepEqual(waypointIps(config), { service: "", workload: "" });
          assert.ok(
            config.issues.some((i) => c.issue?.test(i.message)),
            JSON.stringify(config.issues),
          );
        }
      });
    }
  });

  for (const c of cases) {
    it(c.name, () => {
      const config = translate(c.yaml);
      const svc = config.services.find((s) => s.key === "demo/web.demo.svc.cluster.local");
      assert.ok(svc);
      const wp = svc.service.waypoint;
      if (c.waypoint === undefined) assert.equal(wp, undefined);
      else {
        assert.deepEqual(wp, {
          address: { network: "", address: ipv4Bytes(c.waypoint) },
          hboneMtlsPort: 15008,
        });
      }
      if (c.issue)
        assert.ok(
          config.issues.some((i) => c.issue?.test(i.message)),
          JSON.stringify(config.issues),
        );
    });
  }

  describe("a Service of another namespace binds only where the waypoint's HBONE listener allows it", () => {
    const waypointIn = (listeners: string) => `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: demo, annotations: { ambient.dev/address: 127.10.0.6 } }
spec: { gatewayClassName: istio-waypoint, listeners: ${listeners} }
---
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { team: a } }
---
apiVersion: v1
kind: Service
metadata:
  name: cart
  namespace: shop
  labels: { istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: demo }
spec: { clusterIP: 127.30.0.9, selector: { app: cart }, ports: [{ port: 80 }] }
`;
    const hbone = (allowed: string) => `[{ name: mesh, port: 15008, protocol: HBONE${allowed} }]`;
    const cases: [string, string, boolean][] = [
      ["no allowedRoutes: its own namespace only", hbone(""), false],
      ["from: Same", hbone(", allowedRoutes: { namespaces: { from: Same } }"), false],
      ["from: All", hbone(", allowedRoutes: { namespaces: { from: All } }"), true],
      [
        "a listener on another port does not count",
        "[{ name: x, port: 15009, protocol: HBONE, allowedRoutes: { namespaces: { from: All } } }]",
        false,
      ],
      ["no listeners", "[]", false],
      [
        "Selector, matchLabels",
        hbone(", allowedRoutes: { namespaces: { from: Selector, selector: { matchLabels: { team: a } } } }"),
        true,
      ],
      [
        "Selector, other labels",
        hbone(", allowedRoutes: { namespaces: { from: Selector, selector: { matchLabels: { team: b } } } }"),
        false,
      ],
      [
        "Selector, In",
        hbone(
          ", allowedRoutes: { namespaces: { from: Selector, selector: { matchExpressions: [{ key: team, operator: In, values: [a, c] }] } } }",
        ),
        true,
      ],
      [
        "Selector, NotIn",
        hbone(
          ", allowedRoutes: { namespaces: { from: Selector, selector: { matchExpressions: [{ key: team, operator: NotIn, values: [a] }] } } }",
        ),
        false,
      ],
      [
        "Selector without a selector selects nothing",
        hbone(", allowedRoutes: { namespaces: { from: Selector } }"),
        false,
      ],
    ];
    for (const [name, listeners, bound] of cases) {
      it(name, () => {
        const config = translate(waypointIn(listeners));
        const cart = config.services.find((x) => x.key === "shop/cart.shop.svc.cluster.local");
        assert.ok(cart);
        assert.equal(cart.service.waypoint !== undefined, bound);
        const refused = config.issues.filter((i) =>
          /does not allow namespace shop to attach/.test(i.message),
        );
        assert.equal(refused.length, bound ? 0 : 1, JSON.stringify(config.issues));
      });
    }

    it("applies to a namespace's use-waypoint label too", () => {
      const config = translate(
        waypointIn(hbone(""))
          .replace(
            "labels: { team: a }",
            "labels: { team: a, istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: demo }",
          )
          .replace(
            "  labels: { istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: demo }\n",
            "",
          ),
      );
      const cart = config.services.find((x) => x.key === "shop/cart.shop.svc.cluster.local");
      assert.equal(cart?.service.waypoint, undefined);
      assert.ok(config.issues.some((i) => /does not allow namespace shop to attach/.test(i.message)));
    });
  });

  describe("a waypoint's own Service is bound to no waypoint (gateway.istio.io/managed, as istiod reads it)", () => {
    // The namespace's use-waypoint label would otherwise bind the Service in front of the waypoint's
    // pods to that same waypoint, and a ztunnel would send traffic for the waypoint back through it.
    const mesh = (managed: string, waypointServiceLabels = "") => `
apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: demo, labels: { istio.io/waypoint-for: all } }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
status: { addresses: [{ type: IPAddress, value: 10.96.0.20 }] }
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: demo
  labels: { gateway.networking.k8s.io/gateway-name: waypoint${managed === "" ? "" : `, gateway.istio.io/managed: ${managed}`}${waypointServiceLabels} }
spec: { clusterIP: 10.96.0.20, selector: { gateway.networking.k8s.io/gateway-name: waypoint }, ports: [{ name: mesh, port: 15008 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: waypoint-0, namespace: demo, labels: { gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none } }
spec: { nodeName: node-a, serviceAccountName: waypoint }
status: { podIP: 10.244.0.6 }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo }
spec: { clusterIP: 10.96.0.30, selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: demo, labels: { app: web } }
spec: { nodeName: node-a, serviceAccountName: web }
status: { podIP: 10.244.0.7 }
`;
    const options = { podCidrs: ["10.244.0.0/16"] };
    const expected = { address: { network: "", address: ipv4Bytes("10.96.0.20") }, hboneMtlsPort: 15008 };
    const waypointOfService = (config: MeshConfig, name: string) => {
      const found = config.services.find((s) => s.key === `demo/${name}.demo.svc.cluster.local`);
      assert.ok(found, name);
      return found.service.waypoint;
    };
    const cases: { name: string; managed: string; bound: boolean }[] = [
      {
        name: "managed by the mesh controller (a waypoint's Service): not bound",
        managed: "istio.io-mesh-controller",
        bound: false,
      },
      {
        name: "managed by the east-west controller (an east-west gateway's Service): not bound",
        managed: "istio.io-eastwest-controller",
        bound: false,
      },
      { name: "without the label: bound as any other Service of the namespace", managed: "", bound: true },
      {
        name: "managed by another controller (an ingress gateway's Service): bound",
        managed: "istio.io-gateway-controller",
        bound: true,
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const config = translate(mesh(c.managed), options);
        assert.deepEqual(config.issues, []);
        assert.deepEqual(waypointOfService(config, "waypoint"), c.bound ? expected : undefined);
        // The namespace's other Services keep their waypoint, and its pods theirs (a waypoint for all).
        assert.deepEqual(waypointOfService(config, "web"), expected);
        assert.deepEqual(workload(config, "web-0").workload.waypoint, expected);
        assert.equal(
          workload(config, "waypoint-0").workload.waypoint,
          undefined,
          "a waypoint's own pod has none",
        );
      });
    }

    it("the label wins over the Service's own use-waypoint, with no issue", () => {
      for (const own of ["waypoint", "nowhere"]) {
        const config = translate(
          mesh("istio.io-mesh-controller", `, istio.io/use-waypoint: ${own}`),
          options,
        );
        assert.deepEqual(config.issues, [], own);
        assert.equal(waypointOfService(config, "waypoint"), undefined, own);
      }
    });

    it("applies to a ServiceEntry too", () => {
      const entry = (labels: string) => `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ext, namespace: demo${labels} }
spec: { hosts: [ext.example], addresses: [10.96.0.40], resolution: STATIC, ports: [{ number: 80, name: http }], endpoints: [{ address: 192.0.2.10 }] }
`;
      const waypointOfEntry = (config: MeshConfig) =>
        config.services.find((s) => s.key === "demo/ext.example")?.service.waypoint;
      const managed = translate(
        `${mesh("")}${entry(", labels: { gateway.istio.io/managed: istio.io-mesh-controller }")}`,
        options,
      );
      assert.equal(waypointOfEntry(managed), undefined);
      assert.deepEqual(waypointOfEntry(translate(`${mesh("")}${entry("")}`, options)), expected);
    });
  });

  describe("a workload's own waypoint (istio.io/use-waypoint on the pod or its namespace)", () => {
    const mesh = (waypointFor: string, podLabels: string, nsLabels = "istio.io/dataplane-mode: ambient") => `
apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { ${nsLabels} } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: demo
  labels: { istio.io/waypoint-for: ${waypointFor} }
  annotations: { ambient.dev/address: 127.10.0.6 }
spec: { gatewayClassName: istio-waypoint, listeners: [{ name: mesh, port: 15008, protocol: HBONE }] }
---
apiVersion: v1
kind: Pod
metadata: { name: waypoint-0, namespace: demo, labels: { gateway.networking.k8s.io/gateway-name: waypoint } }
spec: { nodeName: node-a, serviceAccountName: waypoint }
status: { podIP: 127.10.0.6 }
---
apiVersion: v1
kind: Pod
metadata: { name: api-0, namespace: demo, labels: { app: api${podLabels} } }
spec: { nodeName: node-a, serviceAccountName: api }
status: { podIP: 127.10.0.7 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: vm-1, namespace: demo, labels: { app: vm${podLabels} } }
spec: { address: 192.0.2.9 }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: demo }
spec: { clusterIP: 127.30.0.7, selector: { app: api }, ports: [{ port: 80 }] }
`;
    const waypointOf = (config: MeshConfig, name: string) =>
      config.workloads.find((w) => w.workload.name === name)?.workload.waypoint;
    const expected = { address: { network: "", address: ipv4Bytes("127.10.0.6") }, hboneMtlsPort: 15008 };
    const cases: { name: string; yaml: string; bound: boolean; serviceBound?: boolean }[] = [
      {
        name: "the pod's label, a waypoint for workloads",
        yaml: mesh("workload", ", istio.io/use-waypoint: waypoint"),
        bound: true,
      },
      {
        name: "a waypoint for all traffic",
        yaml: mesh("all", ", istio.io/use-waypoint: waypoint"),
        bound: true,
      },
      {
        name: "a waypoint for Services only takes no workload (and no issue)",
        yaml: mesh("service", ", istio.io/use-waypoint: waypoint"),
        bound: false,
      },
      {
        name: "the namespace's label binds its workloads and Services to a waypoint for all",
        yaml: mesh("all", "", "istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint"),
        bound: true,
        serviceBound: true,
      },
      {
        name: "the pod's none overrides its namespace",
        yaml: mesh("all", ", istio.io/use-waypoint: none", "istio.io/use-waypoint: waypoint"),
        bound: false,
        serviceBound: true,
      },
      {
        name: "an unknown waypoint binds nothing",
        yaml: mesh("all", ", istio.io/use-waypoint: other"),
        bound: false,
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const config = translate(c.yaml);
        assert.deepEqual(config.issues, []);
        for (const name of ["api-0", "vm-1"])
          assert.deepEqual(waypointOf(config, name), c.bound ? expected : undefined, name);
        assert.equal(waypointOf(config, "waypoint-0"), undefined, "a waypoint's own pod has none");
        const service = config.services.find((x) => x.key === "demo/api.demo.svc.cluster.local");
        assert.equal(service?.service.waypoint !== undefined, c.serviceBound ?? false);
      });
    }

    it("an inline ServiceEntry endpoint is bound by its own labels", () => {
      const config = translate(`${mesh("workload", "")}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ext, namespace: demo }
spec:
  hosts: [ext.example]
  addresses: [127.30.0.8]
  resolution: STATIC
  ports: [{ number: 80, name: http }]
  endpoints:
    - { address: 192.0.2.10, labels: { istio.io/use-waypoint: waypoint } }
    - { address: 192.0.2.11 }
`);
      const byAddress = (ip: string) =>
        config.workloads.find((w) => w.key.endsWith(`/ServiceEntry/demo/ext/${ip}`))?.workload.waypoint;
      assert.deepEqual(byAddress("192.0.2.10"), expected);
      assert.equal(byAddress("192.0.2.11"), undefined);
    });

    it("only from a namespace the waypoint lets attach", () => {
      const config = translate(
        `${mesh("workload", "")}
---
apiVersion: v1
kind: Namespace
metadata: { name: other }
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: other
  labels: { istio.io/use-waypoint: waypoint, istio.io/use-waypoint-namespace: demo }
spec: { nodeName: node-a, serviceAccountName: web }
status: { podIP: 127.10.0.8 }
`,
      );
      assert.equal(waypointOf(config, "web-0"), undefined);
    });
  });

  it("a waypoint pod gets no HBONE but its node may request its identity", () => {
    const config = translate(
      `${AMBIENT_NS}${pod("waypoint-0", "127.10.0.6")}`.replace(
        "labels: { app: waypoint }",
        "labels: { app: waypoint, gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none }",
      ),
    );
    assert.equal(workload(config, "waypoint-0").workload.tunnelProtocol, "NONE");
    assert.deepEqual(config.nodes.get("node-a"), ["spiffe://cluster.local/ns/demo/sa/waypoint"]);
  });
});
