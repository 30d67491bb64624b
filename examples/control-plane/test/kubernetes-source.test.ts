// The Kubernetes source against the fake apiserver, through a running control plane and real xDS
// clients: the same objects give the same xDS as the folder source, one pod change is one push,
// missing CRDs are skipped, and the informers survive the apiserver's faults.
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { createXdsClient, TypeUrl, type XdsChangeEvent, type XdsClient } from "@ambient/xds";
import { KubeConfig } from "@kubernetes/client-node";
import { type ControlPlane, parseManifests, startControlPlane } from "../src/index.js";
import { createKubernetesSource, type KubernetesSourceOptions } from "../src/sources/kubernetes-source.js";
import {
  createFakeApiServer,
  type FakeApiServer,
  type KubeJson,
  MESH_CRDS,
} from "./fake-apiserver/fake-apiserver.js";
import { servedXds, XDS_TYPES } from "./served-xds.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
/** The workload of pod `demo/<name>`, keyed by uid in Kubernetes (by name in the demo folder). */
function workloadOf(cp: ControlPlane, name: string) {
  return cp.config().workloads.find((w) => w.workload.name === name && w.workload.namespace === "demo");
}

async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * ServiceEntries and WorkloadEntries beside the demo mesh: a VM behind an external host (selected by
 * label), inline endpoints, a DNS host, and a selector that also picks the echo pods.
 */
const NETWORKING_OBJECTS: KubeJson[] = [
  // A Deployment's pod that is not ready: its workload name, canonical labels and health come from
  // fields the folder and the informer cache must both keep.
  {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "shop-7d9f8b6c5-x2kq4",
      generateName: "shop-7d9f8b6c5-",
      namespace: "demo",
      uid: "uid-shop",
      labels: { "pod-template-hash": "7d9f8b6c5", "app.kubernetes.io/name": "storefront" },
      ownerReferences: [
        { apiVersion: "apps/v1", kind: "ReplicaSet", name: "shop-7d9f8b6c5", controller: true },
      ],
    },
    spec: { nodeName: "node-a", containers: [{ name: "shop", ports: [{ containerPort: 8080 }] }] },
    status: { phase: "Running", podIP: "127.10.0.60", conditions: [{ type: "Ready", status: "False" }] },
  },
  {
    apiVersion: "networking.istio.io/v1",
    kind: "ServiceEntry",
    metadata: { name: "vm-api", namespace: "demo" },
    spec: {
      hosts: ["api.vm.example"],
      addresses: ["127.30.0.50"],
      resolution: "STATIC",
      location: "MESH_INTERNAL",
      ports: [{ number: 80, name: "http", targetPort: 8080 }],
      workloadSelector: { labels: { app: "vm-api" } },
    },
  },
  {
    apiVersion: "networking.istio.io/v1",
    kind: "WorkloadEntry",
    metadata: { name: "vm-1", namespace: "demo", labels: { app: "vm-api" } },
    spec: { address: "192.0.2.10", serviceAccount: "vm", ports: { http: 9090 }, locality: "r1/z1" },
  },
  {
    apiVersion: "networking.istio.io/v1",
    kind: "ServiceEntry",
    metadata: { name: "inline", namespace: "demo" },
    spec: {
      hosts: ["inline.example"],
      addresses: ["127.30.0.51"],
      resolution: "STATIC",
      ports: [{ number: 443, name: "tls" }],
      endpoints: [{ address: "192.0.2.20" }, { address: "192.0.2.21", weight: 2 }],
    },
  },
  {
    apiVersion: "networking.istio.io/v1",
    kind: "ServiceEntry",
    metadata: { name: "external", namespace: "demo" },
    spec: { hosts: ["httpbin.example"], resolution: "DNS", ports: [{ number: 80, name: "http" }] },
  },
  {
    apiVersion: "networking.istio.io/v1",
    kind: "ServiceEntry",
    metadata: { name: "echo-alias", namespace: "demo" },
    spec: {
      hosts: ["echo.alias.example"],
      addresses: ["127.30.0.52"],
      ports: [{ number: 80, name: "http", targetPort: 8080 }],
      workloadSelector: { labels: { app: "echo" } },
    },
  },
  // A JWT rule for the web Service: the waypoint in front of it gets it as a WaypointPolicy.
  {
    apiVersion: "security.istio.io/v1",
    kind: "RequestAuthentication",
    metadata: { name: "web-jwt", namespace: "demo" },
    spec: {
      targetRefs: [{ group: "", kind: "Service", name: "web" }],
      jwtRules: [{ issuer: "https://issuer.example", jwksUri: "http://127.0.0.1:9/jwks" }],
    },
  },
];

/**
 * A Service without a selector and its EndpointSlices, as a controller writes them: a non-pod endpoint
 * ready, one not ready, and a pod's endpoint (served from the pod, not the slice).
 */
const SLICE_OBJECTS: KubeJson[] = [
  {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "legacy-db", namespace: "demo" },
    spec: { clusterIP: "127.30.0.40", ports: [{ name: "sql", port: 5432, targetPort: 15432 }] },
  },
  {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: "legacy-db-1",
      namespace: "demo",
      labels: { "kubernetes.io/service-name": "legacy-db" },
    },
    addressType: "IPv4",
    endpoints: [
      { addresses: ["127.30.0.41"], conditions: { ready: true, serving: true }, nodeName: "node-a" },
      { addresses: ["127.30.0.42"], conditions: { ready: false } },
      { addresses: ["127.10.0.3"], targetRef: { kind: "Pod", name: "echo-0", namespace: "demo" } },
    ],
    ports: [{ name: "sql", port: 15432, protocol: "TCP" }],
  },
  // What Kubernetes' EndpointSlice controller writes for the echo Service (it has a selector).
  {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name: "echo-abcde",
      namespace: "demo",
      labels: {
        "kubernetes.io/service-name": "echo",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
      },
    },
    addressType: "IPv4",
    endpoints: [
      {
        addresses: ["127.10.0.3"],
        conditions: { ready: true },
        targetRef: { kind: "Pod", name: "echo-0", namespace: "demo" },
      },
    ],
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  },
];

/** Gateway API's ReferenceGrant, which the fake server does not install unless asked. */
const REFERENCE_GRANT_CRD = {
  group: "gateway.networking.k8s.io",
  version: "v1beta1",
  kind: "ReferenceGrant",
  plural: "referencegrants",
  namespaced: true,
} as const;

/**
 * Routes of `demo` to Services of `shop`: a ReferenceGrant there lets HTTPRoutes of `demo` reach
 * `cart`, and nothing else (`orders` stays out of reach).
 */
const GRANT_OBJECTS: KubeJson[] = [
  {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "cart", namespace: "shop" },
    spec: { clusterIP: "127.30.0.60", ports: [{ name: "http", port: 80 }] },
  },
  {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "orders", namespace: "shop" },
    spec: { clusterIP: "127.30.0.61", ports: [{ name: "http", port: 80 }] },
  },
  {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: "front", namespace: "demo" },
    spec: { clusterIP: "127.30.0.62", ports: [{ name: "http", port: 80 }] },
  },
  {
    apiVersion: "gateway.networking.k8s.io/v1",
    kind: "HTTPRoute",
    metadata: { name: "front", namespace: "demo" },
    spec: {
      parentRefs: [{ group: "", kind: "Service", name: "front", port: 80 }],
      rules: [
        {
          matches: [{ path: { type: "PathPrefix", value: "/orders" } }],
          backendRefs: [{ name: "orders", namespace: "shop", port: 80 }],
        },
        { backendRefs: [{ name: "cart", namespace: "shop", port: 80 }] },
      ],
    },
  },
  {
    apiVersion: "gateway.networking.k8s.io/v1beta1",
    kind: "ReferenceGrant",
    metadata: { name: "demo-routes", namespace: "shop" },
    spec: {
      from: [{ group: "gateway.networking.k8s.io", kind: "HTTPRoute", namespace: "demo" }],
      to: [{ group: "", kind: "Service", name: "cart" }],
    },
  },
];
const FRONT = "front.demo.svc.cluster.local:80";
const CART = "outbound|80||cart.shop.svc.cluster.local";

/** The routes of `front`'s RouteConfiguration: where each sends (a cluster, or a status). */
function frontRoutes(cp: ControlPlane): string[] {
  const routes = cp.envoyConfig().routeConfigurations.get(FRONT)?.virtualHosts?.[0]?.routes ?? [];
  return routes.map((r) => r.route?.cluster ?? `status ${r.directResponse?.status ?? "?"}`);
}

/** The waypoints' class, cluster-scoped: its `istio.io/waypoint-for` is the default of its Gateways. */
const GATEWAY_CLASS: KubeJson = {
  apiVersion: "gateway.networking.k8s.io/v1",
  kind: "GatewayClass",
  metadata: { name: "istio-waypoint", labels: { "istio.io/waypoint-for": "all" } },
  spec: { controllerName: "istio.io/mesh-controller" },
};

/** The demo mesh's objects, as plain JSON. */
async function demoObjects(): Promise<KubeJson[]> {
  const files = await Promise.all(
    (await readdir(DEMO_MESH))
      .filter((n) => n.endsWith(".yaml"))
      .map(async (n) => ({ path: n, text: await readFile(join(DEMO_MESH, n), "utf8") })),
  );
  return parseManifests(files).objects.map(({ source: _source, ...o }) => o as unknown as KubeJson);
}

function kubeConfigOf(server: FakeApiServer): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig());
  return kc;
}

describe("kubernetes source", { timeout: 60_000 }, () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function fake(options: Parameters<typeof createFakeApiServer>[0] = {}): Promise<FakeApiServer> {
    const server = await createFakeApiServer({ bookmarkIntervalMs: 200, ...options });
    cleanups.push(() => server.close());
    return server;
  }

  async function kubernetesPlane(
    server: FakeApiServer,
    sourceOptions: Partial<KubernetesSourceOptions> = {},
  ): Promise<ControlPlane> {
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server), ...sourceOptions });
    cleanups.push(() => source.close());
    const cp = await startControlPlane({
      source,
      listen: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      requireXdsToken: false,
      xdsDebounceMs: 5,
    });
    cleanups.push(() => cp.close());
    return cp;
  }

  function client(cp: ControlPlane): XdsClient {
    const c = createXdsClient({
      address: cp.plaintextAddress as string,
      node: { id: "ztunnel~127.0.0.1~ztunnel-a.istio-system~istio-system.svc.cluster.local" },
    });
    cleanups.push(() => c.close());
    c.watch(TypeUrl.address);
    c.watch(TypeUrl.authorization);
    return c;
  }

  it("gives the same xDS resources as the folder source for the same objects", async () => {
    const server = await fake({ crds: [...MESH_CRDS, REFERENCE_GRANT_CRD] });
    for (const o of [
      ...(await demoObjects()),
      ...NETWORKING_OBJECTS,
      ...SLICE_OBJECTS,
      ...GRANT_OBJECTS,
      GATEWAY_CLASS,
    ]) {
      server.apply(o);
    }
    // A slice that names a pod (by its uid, which the server gave it) as an endpoint of legacy-db.
    const shopPod = server.get("v1", "Pod", "shop-7d9f8b6c5-x2kq4", "demo") as KubeJson;
    server.apply({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        name: "legacy-db-2",
        namespace: "demo",
        labels: { "kubernetes.io/service-name": "legacy-db" },
      },
      addressType: "IPv4",
      endpoints: [
        {
          addresses: ["127.10.0.60"],
          targetRef: {
            kind: "Pod",
            name: shopPod.metadata.name,
            namespace: "demo",
            uid: shopPod.metadata.uid,
          },
        },
      ],
      ports: [{ name: "sql", port: 15432, protocol: "TCP" }],
    } as KubeJson);
    // The folder holds what the API server stored (uid, resourceVersion, creationTimestamp included).
    const dir = await mkdtemp(join(tmpdir(), "k8s-vs-folder-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const kc = kubeConfigOf(server);
    const stored: unknown[] = [];
    for (const plural of ["namespaces", "pods", "services", "serviceaccounts"]) {
      const list = (await (await fetch(`${server.url}/api/v1/${plural}`)).json()) as { items: unknown[] };
      stored.push(...list.items);
    }
    for (const [group, plurals] of [
      ["security.istio.io", ["authorizationpolicies", "peerauthentications", "requestauthentications"]],
      ["gateway.networking.k8s.io", ["gatewayclasses", "gateways", "httproutes", "grpcroutes"]],
      ["networking.istio.io", ["serviceentries", "workloadentries"]],
      ["discovery.k8s.io", ["endpointslices"]],
    ] as const) {
      for (const plural of plurals) {
        const list = (await (await fetch(`${server.url}/apis/${group}/v1/${plural}`)).json()) as {
          items: unknown[];
        };
        stored.push(...list.items);
      }
    }
    const grants = (await (
      await fetch(`${server.url}/apis/gateway.networking.k8s.io/v1beta1/referencegrants`)
    ).json()) as { items: unknown[] };
    assert.equal(grants.items.length, 1);
    stored.push(...grants.items);
    await writeFile(
      join(dir, "stored.json"),
      JSON.stringify({ apiVersion: "v1", kind: "List", items: stored }),
    );
    const folder = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      requireXdsToken: false,
      watch: false,
      // The Kubernetes source reads allocated ServiceEntry addresses from status, which only a leader
      // writes (kubernetes-control-plane.test.ts); no one writes them here, so the folder does not
      // allocate either.
      allocateServiceEntryAddresses: false,
    });
    cleanups.push(() => folder.close());
    const kube = await kubernetesPlane(server);
    assert.ok(kc.getCurrentCluster());

    assert.ok(folder.config().workloads.length >= 5, "the demo mesh has workloads");
    assert.ok(folder.envoyConfig().listeners.size > 0, "and routes that make Envoy listeners");
    // The ServiceEntries and WorkloadEntries are in what both serve.
    const entryKeys = [
      "demo/api.vm.example",
      "demo/inline.example",
      "demo/httpbin.example",
      "demo/echo.alias.example",
      "Kubernetes/networking.istio.io/WorkloadEntry/demo/vm-1",
      "Kubernetes/networking.istio.io/ServiceEntry/demo/inline/192.0.2.20",
      "Kubernetes/networking.istio.io/ServiceEntry/demo/inline/192.0.2.21",
      "Kubernetes/networking.istio.io/ServiceEntry/demo/external/httpbin.example",
      "Kubernetes/discovery.k8s.io/EndpointSlice/demo/legacy-db-1/127.30.0.41",
      "Kubernetes/discovery.k8s.io/EndpointSlice/demo/legacy-db-1/127.30.0.42",
    ];
    for (const cp of [folder, kube]) {
      const keys = [...cp.config().services, ...cp.config().workloads].map((r) => r.key);
      for (const key of entryKeys) assert.ok(keys.includes(key), `${key} in ${keys.join(", ")}`);
      assert.ok(
        Object.keys(workloadOf(cp, "echo-0")?.workload.services ?? {}).includes("demo/echo.alias.example"),
        "the selector picks the echo pods",
      );
      const shop = workloadOf(cp, "shop-7d9f8b6c5-x2kq4")?.workload;
      assert.deepEqual(
        shop?.services?.["demo/legacy-db.demo.svc.cluster.local"],
        { ports: [{ servicePort: 5432, targetPort: 15432 }] },
        "a pod a slice names is an endpoint of its Service",
      );
      assert.deepEqual(
        [shop?.workloadName, shop?.canonicalName, shop?.status],
        ["shop", "storefront", "UNHEALTHY"],
      );
      assert.deepEqual(
        cp.config().issues.filter((i) => /ServiceEntry|WorkloadEntry|EndpointSlice/.test(i.source)),
        [],
      );
      assert.ok(
        !cp.config().workloads.some((w) => w.key.endsWith("/legacy-db-1/127.10.0.3")),
        "a pod's endpoint is the pod's workload",
      );
      // The grant opens `cart` to demo's HTTPRoutes, not `orders`.
      assert.deepEqual(frontRoutes(cp), ["status 500", "status 500", CART]);
      assert.deepEqual(
        cp
          .config()
          .issues.filter((i) => i.source === "HTTPRoute/demo/front")
          .map((i) => i.message.split(":")[0]),
        ["spec.rules[0].backendRefs[0]"],
      );
    }
    const names = {
      routes: [...folder.envoyConfig().routeConfigurations.keys()],
      endpoints: [...folder.envoyConfig().clusterLoadAssignments.keys()],
    };
    const fromFolder = await servedXds(folder.plaintextAddress as string, names);
    const fromKube = await servedXds(kube.plaintextAddress as string, names);
    for (const t of XDS_TYPES) {
      assert.ok(Object.keys(fromFolder[t] ?? {}).length > 0, `${t} is not empty`);
      assert.deepEqual(fromKube[t], fromFolder[t], t);
    }
    assert.deepEqual(kube.errors(), []);
  });

  it("pushes one Address resource for one pod update, and nothing for a change xDS does not carry", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const cp = await kubernetesPlane(server);
    const c = client(cp);
    await c.ready();
    const events: XdsChangeEvent[] = [];
    c.onChange((e) => events.push(e));

    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...echo, metadata: { ...echo.metadata, annotations: { unrelated: "yes" } } });
    server.apply({ ...echo, status: { ...(echo.status as object), podIP: "127.10.0.99" } });
    await until("the push", () => events.length > 0);
    // Anything more would have come with the same debounce; wait well past it.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(events.length, 1);
    const [event] = events as [XdsChangeEvent];
    assert.equal(event.typeUrl, TypeUrl.address);
    // A pod with a uid is keyed by it, and by `<cluster>//Pod/<ns>/<name>` only without one (istiod
    // always keys a pod that way; ztunnel takes the key as opaque).
    assert.deepEqual(
      event.updated.map((r) => r.name),
      [echo.metadata.uid],
    );
    assert.deepEqual(event.added, []);
    assert.deepEqual(event.removed, []);
  });

  it("follows a pod's lifecycle: unready and deleting pods are UNHEALTHY, a finished pod frees its IP", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const cp = await kubernetesPlane(server);
    const c = client(cp);
    await c.ready();
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    const uid = echo.metadata.uid as string;
    const ip = (echo.status as { podIP: string }).podIP;
    const workloadOf = (name: string) =>
      [...c.resources(TypeUrl.address).values()]
        .map(
          (r) =>
            (r.resource as { workload?: { name?: string; status?: unknown; addresses?: Uint8Array[] } })
              .workload,
        )
        .find((w) => w?.name === name);
    const statusOf = () =>
      (c.resources(TypeUrl.address).get(uid)?.resource as { workload?: { status?: unknown } })?.workload
        ?.status;
    assert.notEqual(statusOf(), "UNHEALTHY");
    const running = { ...(echo.status as object), phase: "Running" };

    server.apply({ ...echo, status: { ...running, conditions: [{ type: "Ready", status: "False" }] } });
    await until("the unready pod's status", () => statusOf() === "UNHEALTHY");
    server.apply({ ...echo, status: { ...running, conditions: [{ type: "Ready", status: "True" }] } });
    await until("the ready pod's status", () => statusOf() !== "UNHEALTHY");
    const ready = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...ready, metadata: { ...ready.metadata, deletionTimestamp: "2026-12-06T05:00:00Z" } });
    await until("the deleting pod's status", () => statusOf() === "UNHEALTHY");

    // It finishes (as a Job's pod does, keeping its IP in its status), and the kubelet gives the IP
    // to a new pod: that one is served at it, with no conflict.
    const deleting = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...deleting, status: { ...(deleting.status as object), phase: "Succeeded" } });
    await until("the finished pod to go", () => !c.resources(TypeUrl.address).has(uid));
    server.apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "next-0", namespace: "demo", uid: "uid-next-0", labels: { app: "echo" } },
      spec: echo.spec,
      status: { phase: "Running", podIP: ip, conditions: [{ type: "Ready", status: "True" }] },
    });
    await until("the new pod at the freed IP", () => workloadOf("next-0") !== undefined);
    assert.equal([...(workloadOf("next-0")?.addresses?.[0] ?? [])].join("."), ip);
    assert.deepEqual(cp.errors(), []);
  });

  it("keeps neither managedFields nor kubectl's last-applied copy in the informer cache", async () => {
    const server = await fake();
    const bulky = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: "bulky",
        namespace: "demo",
        annotations: { "kubectl.kubernetes.io/last-applied-configuration": "{...}", keep: "me" },
        managedFields: [{ manager: "kubectl", operation: "Update", fieldsV1: { "f:spec": {} } }],
      },
      spec: { nodeName: "node-a" },
      status: { podIP: "127.10.0.44" },
    };
    server.apply(bulky);
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server) });
    cleanups.push(() => source.close());
    const listed = source.pod("demo", "bulky");
    assert.equal(listed?.metadata?.managedFields, undefined);
    assert.deepEqual(listed?.metadata?.annotations, { keep: "me" });
    let seen = false;
    source.start(() => {
      seen = true;
    });
    server.apply({ ...bulky, status: { podIP: "127.10.0.45" } });
    await until("the update", () => seen && source.pod("demo", "bulky")?.status?.podIP === "127.10.0.45");
    const watched = source.pod("demo", "bulky");
    assert.equal(watched?.metadata?.managedFields, undefined);
    assert.deepEqual(watched?.metadata?.annotations, { keep: "me" });
  });

  it("holds one object per Pod: the informer cache's is the one the snapshot serves", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server) });
    cleanups.push(() => source.close());
    const first = await source.snapshot();
    first.accept();
    const served = first.objects.find((o) => o.kind === "Pod" && o.metadata.name === "echo-0");
    assert.ok(served !== undefined);
    assert.equal(served, source.pod("demo", "echo-0") as unknown, "listed: the same object");
    assert.equal(served.source, "Pod/demo/echo-0");
    assert.match(String(source.pod("demo", "echo-0")?.metadata?.resourceVersion), /^\d+$/);
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...echo, status: { ...(echo.status as object), podIP: "127.10.0.98" } });
    await until("the update", () => source.pod("demo", "echo-0")?.status?.podIP === "127.10.0.98");
    const second = await source.snapshot();
    const change = second.changes?.find((c) => c.id === "Pod/demo/echo-0");
    assert.equal(change?.before, served);
    assert.equal(change?.after, source.pod("demo", "echo-0") as unknown, "watched: the same object");
    second.accept();
  });

  it("keeps the pods per node in step with the informer cache through updates, deletes and a relist", async () => {
    const server = await fake();
    const pod = (name: string, node: string | undefined, ip: string): KubeJson => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, namespace: "demo", uid: `uid-${name}` },
      spec: { ...(node === undefined ? {} : { nodeName: node }), serviceAccountName: name },
      status: { phase: "Running", podIP: ip },
    });
    for (const p of [
      pod("a", "node-1", "127.10.0.1"),
      pod("b", "node-1", "127.10.0.2"),
      pod("c", "node-2", "127.10.0.3"),
    ]) {
      server.apply(p);
    }
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server), retryDelayMs: 50 });
    cleanups.push(() => source.close());
    // Each node's pods, by name, and each the object the cache holds now (no stale version).
    const onNode = (node: string) => {
      const pods = source.podsOnNode(node);
      for (const p of pods)
        assert.equal(p, source.pod("demo", p.metadata?.name as string), "the cached object");
      return pods.map((p) => p.metadata?.name).sort();
    };
    const settled = (what: string, expected: Record<string, string[]>) =>
      until(what, () =>
        Object.entries(expected).every(([node, names]) => onNode(node).join() === names.join()),
      );
    await settled("the list", { "node-1": ["a", "b"], "node-2": ["c"] });
    // An update on the same node, a pod scheduled (no node, then one), a delete.
    server.apply(pod("a", "node-1", "127.10.0.11"));
    server.apply(pod("d", undefined, "127.10.0.4"));
    server.remove("v1", "Pod", "c", "demo");
    await settled("the watch", { "node-1": ["a", "b"], "node-2": [] });
    assert.equal(source.pod("demo", "a")?.status?.podIP, "127.10.0.11");
    server.apply(pod("d", "node-2", "127.10.0.4"));
    await settled("d scheduled", { "node-1": ["a", "b"], "node-2": ["d"] });
    // History lost while the server is down: the relist updates one pod, adds one and drops one.
    await server.restart({
      downMs: 100,
      dropHistory: true,
      whileDown: () => {
        server.remove("v1", "Pod", "b", "demo");
        server.apply(pod("a", "node-1", "127.10.0.21"));
        server.apply(pod("e", "node-2", "127.10.0.5"));
      },
    });
    await settled("the relist", { "node-1": ["a"], "node-2": ["d", "e"] });
    assert.equal(source.pod("demo", "a")?.status?.podIP, "127.10.0.21");
  });

  it("reports resources whose CRDs are not installed, serves the rest, and picks a CRD up once installed", async () => {
    const server = await fake({ crds: [] });
    for (const o of await demoObjects()) {
      if (o.apiVersion === "v1") server.apply(o);
    }
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server), missingRetryMs: 100 });
    cleanups.push(() => source.close());
    assert.deepEqual(source.missing().sort(), [
      "gateway.networking.k8s.io/v1/gatewayclasses",
      "gateway.networking.k8s.io/v1/gateways",
      "gateway.networking.k8s.io/v1/grpcroutes",
      "gateway.networking.k8s.io/v1/httproutes",
      "gateway.networking.k8s.io/v1beta1/referencegrants",
      "networking.istio.io/v1/serviceentries",
      "networking.istio.io/v1/workloadentries",
      "security.istio.io/v1/authorizationpolicies",
      "security.istio.io/v1/peerauthentications",
      "security.istio.io/v1/requestauthentications",
    ]);
    const cp = await startControlPlane({
      source,
      listen: "127.0.0.1:0",
      plaintextListen: "127.0.0.1:0",
      requireXdsToken: false,
      xdsDebounceMs: 5,
    });
    cleanups.push(() => cp.close());
    assert.ok(workloadOf(cp, "echo-0") !== undefined);
    assert.equal(cp.config().authorizations.size, 0);

    server.installCrd({
      group: "security.istio.io",
      version: "v1",
      kind: "AuthorizationPolicy",
      plural: "authorizationpolicies",
      namespaced: true,
    });
    for (const o of await demoObjects()) if (o.kind === "AuthorizationPolicy") server.apply(o);
    await until("the policies", () => cp.config().authorizations.size > 0);
    assert.ok(!source.missing().includes("security.istio.io/v1/authorizationpolicies"));
  });

  it("takes a backend in another namespace away when its ReferenceGrant goes, and gives it back", async () => {
    const server = await fake({ crds: [...MESH_CRDS, REFERENCE_GRANT_CRD] });
    for (const o of [...(await demoObjects()), ...GRANT_OBJECTS]) server.apply(o);
    const cp = await kubernetesPlane(server);
    assert.deepEqual(frontRoutes(cp), ["status 500", "status 500", CART]);

    assert.ok(server.remove("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "demo-routes", "shop"));
    await until("the grant's removal", () => frontRoutes(cp).at(-1) === "status 500");
    assert.deepEqual(frontRoutes(cp), ["status 500", "status 500", "status 500"]);

    const grant = GRANT_OBJECTS.at(-1) as KubeJson;
    server.apply(grant);
    await until("the grant again", () => frontRoutes(cp).at(-1) === CART);
  });

  it("reports what changed since the accepted snapshot, read from the informer caches", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server) });
    cleanups.push(() => source.close());
    const first = await source.snapshot();
    assert.equal(first.changes, undefined, "the first snapshot is a full one");
    first.accept();
    const podIp = (name: string) =>
      (source.pod("demo", name)?.status as { podIP?: string } | undefined)?.podIP;
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...echo, status: { ...(echo.status as object), podIP: "127.10.0.99" } });
    server.remove("v1", "Pod", "sleep-0", "demo");
    await until(
      "the informer",
      () => podIp("echo-0") === "127.10.0.99" && source.pod("demo", "sleep-0") === undefined,
    );
    const second = await source.snapshot();
    const summary = (snapshot: typeof second) =>
      (snapshot.changes ?? [])
        .map((c) => [c.id, c.before?.status?.podIP ?? null, c.after?.status?.podIP ?? null])
        .sort();
    assert.deepEqual(summary(second), [
      ["Pod/demo/echo-0", "127.10.0.3", "127.10.0.99"],
      ["Pod/demo/sleep-0", "127.10.0.2", null],
    ]);
    // Not accepted (the reload failed): the next snapshot reports the same changes, and one more.
    const stranger = server.get("v1", "Pod", "stranger", "demo") as KubeJson;
    server.apply({ ...stranger, spec: { ...(stranger.spec as object), nodeName: 7 } });
    await until("the invalid pod", () => source.pod("demo", "stranger")?.spec?.nodeName === 7);
    const third = await source.snapshot();
    assert.deepEqual(summary(third), summary(second), "an invalid update keeps the last good pod: no change");
    assert.deepEqual(
      third.errors.map((e) => [e.object, e.keeping]),
      [["Pod/demo/stranger", ["Pod/demo/stranger"]]],
    );
    // The objects, when read, are the accepted ones with the changes applied.
    const ids = third.objects.map((o) => `${o.kind}/${o.metadata.namespace ?? "default"}/${o.metadata.name}`);
    assert.ok(!ids.includes("Pod/demo/sleep-0"));
    assert.equal(third.objects.find((o) => o.metadata.name === "echo-0")?.status?.podIP, "127.10.0.99");
    third.accept();
    const fourth = await source.snapshot();
    assert.deepEqual(fourth.changes, []);
    assert.equal(fourth.errors.length, 1);
  });

  it("reports no change for updates the translation does not read: node heartbeats, a selector Service's slice", async () => {
    const server = await fake();
    const nodeObject = {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "node-a", labels: { zone: "a" } },
    };
    for (const o of [...(await demoObjects()), ...SLICE_OBJECTS, nodeObject]) server.apply(o);
    const source = await createKubernetesSource({ kubeConfig: kubeConfigOf(server) });
    cleanups.push(() => source.close());
    (await source.snapshot()).accept();
    let reloads = 0;
    source.start(() => reloads++);
    const nodeVersion = () => source.object("Node", undefined, "node-a")?.metadata?.resourceVersion;
    const sliceVersion = () =>
      source.object("EndpointSlice", "demo", "legacy-db-1")?.metadata?.resourceVersion;
    const endpointsOf = (name: string) =>
      (source.object("EndpointSlice", "demo", name) as { endpoints?: unknown } | undefined)?.endpoints;

    // The slices Kubernetes makes for a Service with a selector are not even listed or watched.
    assert.equal(source.object("EndpointSlice", "demo", "echo-abcde"), undefined);
    // The watch begins once the list is in: its request may still be on its way.
    const slicePaths = () => server.requests.filter((r) => r.path.endsWith("/endpointslices"));
    await until("a list and a watch", () => slicePaths().length >= 2);
    const sliceRequests = slicePaths();
    for (const r of sliceRequests) {
      assert.equal(
        r.query.labelSelector,
        "endpointslice.kubernetes.io/managed-by!=endpointslice-controller.k8s.io",
      );
    }

    // A heartbeat (status, annotations); a slice's fields the mesh does not read (zone, serving); and
    // the EndpointSlice controller following the echo pods.
    const before = [nodeVersion(), sliceVersion()];
    const storedNode = server.get("v1", "Node", "node-a") as KubeJson;
    const echoSlice = server.get("discovery.k8s.io/v1", "EndpointSlice", "echo-abcde", "demo") as KubeJson & {
      endpoints: unknown[];
    };
    server.apply({
      ...echoSlice,
      endpoints: [
        ...echoSlice.endpoints,
        { addresses: ["127.10.0.2"], targetRef: { kind: "Pod", name: "sleep-0", namespace: "demo" } },
      ],
    });
    const legacySlice = server.get(
      "discovery.k8s.io/v1",
      "EndpointSlice",
      "legacy-db-1",
      "demo",
    ) as KubeJson & {
      endpoints: Record<string, unknown>[];
    };
    server.apply({
      ...legacySlice,
      endpoints: legacySlice.endpoints.map((e) => ({
        ...e,
        zone: "z1",
        hints: { forZones: [{ name: "z1" }] },
      })),
    });
    server.apply({
      ...storedNode,
      metadata: { ...storedNode.metadata, annotations: { "node.alpha.kubernetes.io/ttl": "0" } },
      status: { conditions: [{ type: "Ready", status: "True", lastHeartbeatTime: "2026-12-06T08:00:00Z" }] },
    });
    await until("the updates in the informer caches", () => {
      const now = [nodeVersion(), sliceVersion()];
      return now[0] !== before[0] && now[1] !== before[1];
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(reloads, 0, "no reload for them");
    assert.deepEqual((await source.snapshot()).changes, []);
    const cached = source.object("Node", undefined, "node-a");
    assert.deepEqual(
      [cached?.status, cached?.spec, cached?.metadata?.annotations],
      [undefined, undefined, undefined],
    );
    assert.deepEqual(
      endpointsOf("legacy-db-1"),
      [
        { addresses: ["127.30.0.41"], conditions: { ready: true } },
        { addresses: ["127.30.0.42"], conditions: { ready: false } },
        { targetRef: { kind: "Pod", name: "echo-0", namespace: "demo" } },
      ],
      "a slice keeps its non-pod endpoints with the ready condition, and the pods it names",
    );

    // What it reads is a change: a node's labels, another slice's endpoints.
    const legacy = server.get("discovery.k8s.io/v1", "EndpointSlice", "legacy-db-1", "demo") as KubeJson;
    const node = server.get("v1", "Node", "node-a") as KubeJson;
    const beforeChanges = [nodeVersion(), sliceVersion()];
    server.apply({ ...node, metadata: { ...node.metadata, labels: { zone: "b" } } });
    server.apply({ ...legacy, endpoints: [{ addresses: ["127.30.0.43"] }] });
    // They come on two watches: a reload can follow the Node alone, so wait for both caches.
    await until("both changes in the informer caches", () => {
      const now = [nodeVersion(), sliceVersion()];
      return now[0] !== beforeChanges[0] && now[1] !== beforeChanges[1];
    });
    await until("the reload", () => reloads > 0);
    const changes = (await source.snapshot()).changes ?? [];
    assert.deepEqual(changes.map((c) => c.id).sort(), [
      "EndpointSlice/demo/legacy-db-1",
      "Node/default/node-a",
    ]);
  });

  it("keeps the last good version of a policy whose update does not validate", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const cp = await kubernetesPlane(server);
    const before = [...cp.config().authorizations.keys()].sort();
    assert.ok(before.includes("demo/echo-allow-sleep"));
    const policy = server.get(
      "security.istio.io/v1",
      "AuthorizationPolicy",
      "echo-allow-sleep",
      "demo",
    ) as KubeJson;
    server.apply({ ...policy, spec: { ...(policy.spec as object), action: "MAYBE" } });
    await until("the error", () => cp.errors().length > 0);
    assert.equal(cp.errors()[0]?.object, "AuthorizationPolicy/demo/echo-allow-sleep");
    assert.deepEqual(cp.errors()[0]?.keeping, ["AuthorizationPolicy/demo/echo-allow-sleep"]);
    assert.deepEqual([...cp.config().authorizations.keys()].sort(), before);
  });

  it("serves a policy that never validated as a stand-in that fails closed, until it validates", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const cp = await kubernetesPlane(server);
    const policy: KubeJson = {
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: "echo-from-sleep-on-http", namespace: "demo" },
      spec: {
        selector: { matchLabels: { app: "echo" } },
        action: "ALLOW",
        // A named port: istiod's webhook refuses it.
        rules: [
          {
            from: [{ source: { principals: ["cluster.local/ns/demo/sa/sleep"] } }],
            to: [{ operation: { ports: ["http"] } }],
          },
        ],
      },
    };
    server.apply(policy);
    const key = "demo/echo-from-sleep-on-http";
    await until("the stand-in", () => cp.config().authorizations.get(key) !== undefined);
    assert.equal(cp.config().authorizations.get(key)?.action, "DENY");
    const error = cp.errors().find((e) => e.object === "AuthorizationPolicy/demo/echo-from-sleep-on-http");
    assert.match(error?.message ?? "", /serving a stand-in that denies every request it covers/);
    const current = server.get(
      "security.istio.io/v1",
      "AuthorizationPolicy",
      "echo-from-sleep-on-http",
      "demo",
    ) as KubeJson;
    server.apply({
      ...current,
      spec: {
        ...(current.spec as object),
        rules: [
          {
            from: [{ source: { principals: ["cluster.local/ns/demo/sa/sleep"] } }],
            to: [{ operation: { ports: ["8080"] } }],
          },
        ],
      },
    });
    await until("the policy as written", () => cp.config().authorizations.get(key)?.action === "ALLOW");
    assert.equal(
      cp.errors().find((e) => e.object === "AuthorizationPolicy/demo/echo-from-sleep-on-http"),
      undefined,
    );
  });

  it("keeps the last good ServiceEntry and WorkloadEntry when an update does not validate", async () => {
    const server = await fake();
    for (const o of [...(await demoObjects()), ...NETWORKING_OBJECTS, ...SLICE_OBJECTS]) server.apply(o);
    const cp = await kubernetesPlane(server);
    const vm = "Kubernetes/networking.istio.io/WorkloadEntry/demo/vm-1";
    const served = () => ({
      service: cp.config().services.find((s) => s.key === "demo/api.vm.example")?.service.ports,
      workload: cp.config().workloads.find((w) => w.key === vm)?.workload.services,
    });
    const before = served();
    assert.deepEqual(before.service, [{ servicePort: 80, targetPort: 8080 }]);
    assert.deepEqual(before.workload, {
      "demo/api.vm.example": { ports: [{ servicePort: 80, targetPort: 9090 }] },
    });
    const entry = server.get("networking.istio.io/v1", "ServiceEntry", "vm-api", "demo") as KubeJson;
    server.apply({ ...entry, spec: { ...(entry.spec as object), ports: [{ number: 0 }] } });
    const workloadEntry = server.get("networking.istio.io/v1", "WorkloadEntry", "vm-1", "demo") as KubeJson;
    server.apply({
      ...workloadEntry,
      spec: { ...(workloadEntry.spec as object), address: "not an address" },
    });
    await until("both errors", () => cp.errors().length === 2);
    assert.deepEqual(
      cp
        .errors()
        .map((e) => [e.object, e.keeping])
        .sort(),
      [
        ["ServiceEntry/demo/vm-api", ["ServiceEntry/demo/vm-api"]],
        ["WorkloadEntry/demo/vm-1", ["WorkloadEntry/demo/vm-1"]],
      ],
    );
    assert.match(cp.errors()[0]?.message ?? "", /serving its last good version/);
    assert.deepEqual(served(), before);
  });

  it("converges after an apiserver restart that lost its watch history (410, relist)", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    const cp = await kubernetesPlane(server, { retryDelayMs: 50 });
    assert.ok(workloadOf(cp, "echo-0") !== undefined);
    await server.restart({
      downMs: 100,
      dropHistory: true,
      whileDown: () => server.remove("v1", "Pod", "echo-0", "demo"),
    });
    await until("echo-0 gone", () => workloadOf(cp, "echo-0") === undefined, 15_000);
  });

  it("starts, and follows changes, when a watch request is never answered: it gives up on it and watches again", async () => {
    const server = await fake();
    for (const o of await demoObjects()) server.apply(o);
    // The first watch of Pods is accepted and never answered, not even the response's head.
    server.holdWatches("Pod", 1);
    const cp = await kubernetesPlane(server, { watchResponseTimeoutMs: 300, retryDelayMs: 50 });
    assert.ok(workloadOf(cp, "echo-0") !== undefined);
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...echo, status: { ...(echo.status as object), podIP: "127.10.0.97" } });
    await until(
      "the change",
      () => [...(workloadOf(cp, "echo-0")?.workload.addresses?.[0] ?? [])].join(".") === "127.10.0.97",
    );
    // The request given up on is closed, not left open beside the new watch.
    await until("the held watch closed", () => server.heldRequestCount() === 0);
    const podWatches = server.requests.filter((r) => r.path === "/api/v1/pods" && r.query.watch === "true");
    assert.ok(podWatches.length >= 2, `${podWatches.length} pod watches`);
  });

  it("drops a watch that went silent and resumes it", async () => {
    const server = await fake({ bookmarkIntervalMs: 50 });
    for (const o of await demoObjects()) server.apply(o);
    const cp = await kubernetesPlane(server, { watchIdleTimeoutMs: 400, retryDelayMs: 50 });
    const podWatches = () =>
      server.requests.filter((r) => r.path === "/api/v1/pods" && r.query.watch === "true");
    await until("the first pod watch", () => podWatches().length > 0);
    const first = podWatches().length;
    // Nothing, not even a bookmark, reaches the client for a while.
    server.setWatchDelay(60_000);
    await until("a new pod watch", () => podWatches().length > first, 10_000);
    server.setWatchDelay(0);
    const echo = server.get("v1", "Pod", "echo-0", "demo") as KubeJson;
    server.apply({ ...echo, status: { ...(echo.status as object), podIP: "127.10.0.98" } });
    await until(
      "the change",
      () => [...(workloadOf(cp, "echo-0")?.workload.addresses?.[0] ?? [])].join(".") === "127.10.0.98",
    );
    const pods = server.requests.filter((r) => r.path === "/api/v1/pods" && r.query.watch !== "true");
    assert.equal(pods.length, 1, "resumed from its resourceVersion, not relisted");
  });
});
