// The waypoint Gateway status the leader writes, read back from the (fake) API server: `Accepted` and
// `Programmed` with the Gateway's generation, the listener status, and the address of the Service in
// front of the waypoint. What `kubectl wait --for=condition=Programmed` and `istioctl waypoint apply
// --wait` read.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import {
  type StatusCondition,
  type WaypointStatusUpdate,
  waypointStatusUpdates,
  writeGatewayStatus,
} from "../src/sources/gateway-status.js";
import type { RawKubeObject } from "../src/sources/kube-client.js";
import {
  type KubernetesControlPlane,
  startKubernetesControlPlane,
} from "../src/sources/kubernetes-control-plane.js";
import { createFakeApiServer, type FakeApiServer, type KubeJson } from "./fake-apiserver/fake-apiserver.js";

const GATEWAY_API = "gateway.networking.k8s.io/v1";

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

interface GatewayStatus {
  addresses?: { type?: string; value: string }[];
  conditions?: Condition[];
  listeners?: { name: string; attachedRoutes: number; supportedKinds: unknown[]; conditions: Condition[] }[];
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function waypoint(name: string, generation: number, spec?: Record<string, unknown>): KubeJson {
  return {
    apiVersion: GATEWAY_API,
    kind: "Gateway",
    metadata: { name, namespace: "demo", generation },
    spec: spec ?? {
      gatewayClassName: "istio-waypoint",
      listeners: [{ name: "mesh", port: 15008, protocol: "HBONE" }],
    },
  };
}

function service(name: string, clusterIP: string): KubeJson {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name, namespace: "demo", labels: { "gateway.networking.k8s.io/gateway-name": name } },
    spec: {
      clusterIP,
      ports: [
        { name: "status-port", port: 15021 },
        { name: "mesh", port: 15008 },
      ],
    },
  };
}

/** A condition without its time, which only the writer's clock decides. */
function timeless(c: Condition | undefined): Omit<Condition, "lastTransitionTime"> | undefined {
  if (c === undefined) return undefined;
  const { lastTransitionTime, ...rest } = c;
  assert.match(lastTransitionTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  return rest;
}

describe("waypoint Gateway status on kubernetes", { timeout: 60_000 }, () => {
  let server: FakeApiServer;
  let replica: KubernetesControlPlane;

  const status = (name = "waypoint"): GatewayStatus =>
    (server.get(GATEWAY_API, "Gateway", name, "demo")?.status ?? {}) as GatewayStatus;
  const condition = (type: string, name = "waypoint"): Condition | undefined =>
    status(name).conditions?.find((c) => c.type === type);
  const statusWrites = (name: string): number =>
    server.requests.filter(
      (r) =>
        r.method === "PATCH" && r.path === `/apis/${GATEWAY_API}/namespaces/demo/gateways/${name}/status`,
    ).length;
  /**
   * Waits for the leader to write a Gateway applied now. Gateway events reach the informer in order,
   * so once that one is written, the pass that wrote it saw every earlier Gateway as the API server
   * had it: a status that was due then would have been written in the same pass.
   */
  let sentinels = 0;
  const settle = async (): Promise<void> => {
    const name = `sentinel-${++sentinels}`;
    server.apply(waypoint(name, 1));
    await until(`${name} written`, () => condition("Programmed", name) !== undefined);
  };

  before(async () => {
    server = await createFakeApiServer({ bookmarkIntervalMs: 200 });
    server.apply({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "demo", labels: { "istio.io/dataplane-mode": "ambient" } },
    });
    server.apply(waypoint("waypoint", 1));
    server.apply(service("waypoint", "127.10.2.50"));
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    replica = await startKubernetesControlPlane({
      kubeConfig: kc,
      identity: "replica-1",
      listen: "127.0.0.1:0",
      xdsDebounceMs: 5,
      statusIntervalMs: 50,
      // Long durations: nothing here waits for a lease to expire, and a stalled process keeps leading.
      leaderElection: { leaseDurationSeconds: 15, renewDeadlineMs: 10_000, retryPeriodMs: 50 },
      rootRotation: false,
    });
  });

  after(async () => {
    await replica?.close();
    await server.close();
  });

  it("writes Accepted and Programmed for the Gateway's generation, the listener status and the address", async () => {
    await until("Programmed", () => condition("Programmed") !== undefined);
    const written = status();
    assert.deepEqual(written.addresses, [{ type: "IPAddress", value: "127.10.2.50" }]);
    assert.deepEqual(written.conditions?.map(timeless), [
      {
        type: "Accepted",
        status: "True",
        reason: "Accepted",
        message: "Resource accepted",
        observedGeneration: 1,
      },
      {
        type: "Programmed",
        status: "True",
        reason: "Programmed",
        message: "Resource programmed, assigned to service(s) waypoint.demo.svc.cluster.local:15008",
        observedGeneration: 1,
      },
    ]);
    const ok = (type: string, reason: string) => ({
      type,
      status: "True",
      reason,
      message: "No errors found",
      observedGeneration: 1,
    });
    assert.equal(written.listeners?.length, 1);
    const [listener] = written.listeners ?? [];
    assert.equal(listener?.name, "mesh");
    assert.equal(listener?.attachedRoutes, 0);
    // HBONE carries no route kind of the Gateway API.
    assert.deepEqual(listener?.supportedKinds, []);
    assert.deepEqual(listener?.conditions.map(timeless), [
      ok("Accepted", "Accepted"),
      { ...ok("Conflicted", "NoConflicts"), status: "False" },
      ok("Programmed", "Programmed"),
      ok("ResolvedRefs", "ResolvedRefs"),
    ]);
    await settle();
    assert.equal(statusWrites("waypoint"), 1, "a current status is not written again");
  });

  it("rewrites the conditions for a new generation, keeping their transition times", async () => {
    const before = status();
    const since = condition("Programmed")?.lastTransitionTime;
    const gw = server.get(GATEWAY_API, "Gateway", "waypoint", "demo") as KubeJson;
    // A spec edit: the API server bumps the generation and keeps the status.
    server.apply({
      ...gw,
      metadata: { ...gw.metadata, generation: 2 },
      spec: {
        gatewayClassName: "istio-waypoint",
        listeners: [
          { name: "mesh", port: 15008, protocol: "HBONE", allowedRoutes: { namespaces: { from: "All" } } },
        ],
      },
    });
    await until("observedGeneration 2", () =>
      (status().conditions ?? []).every((c) => c.observedGeneration === 2),
    );
    const after = status();
    assert.deepEqual(after.addresses, before.addresses);
    assert.equal(condition("Programmed")?.lastTransitionTime, since, "no transition: the time is kept");
    assert.deepEqual(
      after.listeners?.[0]?.conditions.map((c) => c.observedGeneration),
      [2, 2, 2, 2],
    );
    await settle();
    assert.equal(statusWrites("waypoint"), 2, "one write for the new generation, none after it");
  });

  it("sets Programmed False and keeps the address when the Service goes, and takes a new Service's address", async () => {
    const writes = statusWrites("waypoint");
    server.remove("v1", "Service", "waypoint", "demo");
    await until("Programmed False", () => condition("Programmed")?.status === "False");
    assert.deepEqual(timeless(condition("Programmed")), {
      type: "Programmed",
      status: "False",
      reason: "AddressNotUsable",
      message:
        'Failed to assign to any requested addresses: hostname "waypoint.demo.svc.cluster.local" not found',
      observedGeneration: 2,
    });
    // Once the waypoint was ready its address stays: what is bound to it keeps going to it (and
    // fails while nothing answers there) instead of going around it.
    assert.deepEqual(status().addresses, [{ type: "IPAddress", value: "127.10.2.50" }]);
    assert.equal(condition("Accepted")?.status, "True");
    await settle();
    assert.equal(statusWrites("waypoint"), writes + 1);

    server.apply(service("waypoint", "127.10.2.51"));
    await until("the new address", () => status().addresses?.[0]?.value === "127.10.2.51");
    await until("Programmed True", () => condition("Programmed")?.status === "True");
    assert.deepEqual(status().addresses, [{ type: "IPAddress", value: "127.10.2.51" }]);
  });
});

describe("writeGatewayStatus", () => {
  it("writes while the replica leads, and stops before the next write once it does not", async () => {
    const server = await createFakeApiServer();
    try {
      for (const name of ["a", "b", "c"]) server.apply(waypoint(name, 1));
      const kc = new KubeConfig();
      kc.loadFromString(server.kubeconfig());
      const update = (name: string): WaypointStatusUpdate => ({
        namespace: "demo",
        name,
        status: { addresses: [{ type: "IPAddress", value: "127.10.2.50" }] },
      });
      // The lease is lost while the first write is on its way.
      let leads = true;
      server.setRequestHook((r) => {
        if (r.method === "PATCH") leads = false;
      });
      const written = await writeGatewayStatus(kc, ["a", "b", "c"].map(update), undefined, () => leads);
      assert.deepEqual(
        written.map((u) => u.name),
        ["a"],
      );
      assert.deepEqual(
        server.requests.filter((r) => r.method === "PATCH").map((r) => r.path.split("/").at(-2)),
        ["a"],
      );
    } finally {
      await server.close();
    }
  });
});

describe("waypointStatusUpdates", () => {
  const T0 = new Date("2025-01-02T03:04:05.678Z");
  const T1 = new Date("2025-01-02T04:00:00Z");
  const svc = (clusterIP: string, ports = [15021, 15008]): RawKubeObject => ({
    metadata: { name: "wp", namespace: "demo" },
    spec: { clusterIP, ports: ports.map((port) => ({ port })) },
  });
  const gw = (
    listeners: unknown[] = [{ name: "mesh", port: 15008, protocol: "HBONE" }],
    extra: { generation?: number; status?: Record<string, unknown> } = {},
  ): RawKubeObject => ({
    metadata: {
      name: "wp",
      namespace: "demo",
      resourceVersion: "7",
      ...(extra.generation === undefined ? {} : { generation: extra.generation }),
    },
    spec: { gatewayClassName: "istio-waypoint", listeners },
    ...(extra.status === undefined ? {} : { status: extra.status }),
  });
  const plan = (g: RawKubeObject, s: RawKubeObject | undefined, now = T0, domainSuffix?: string) =>
    waypointStatusUpdates([g], (ns, name) => (ns === "demo" && name === "wp" ? s : undefined), {
      now,
      ...(domainSuffix === undefined ? {} : { domainSuffix }),
    });
  /** The Gateway as the API server has it after the merge patch of `update`. */
  const applied = (g: RawKubeObject, update: WaypointStatusUpdate | undefined): RawKubeObject => ({
    ...g,
    status: { ...(g.status ?? {}), ...(update?.status ?? {}) },
  });
  const find = (conditions: unknown[] | undefined, type: string) =>
    (conditions as StatusCondition[] | undefined)?.find((c) => c.type === type);

  it("stamps new conditions with the time, to the second, and plans from the cached resourceVersion", () => {
    const [u] = plan(gw(undefined, { generation: 3 }), svc("10.0.0.5"));
    assert.equal(u?.resourceVersion, "7");
    assert.deepEqual(u?.status.addresses, [{ type: "IPAddress", value: "10.0.0.5" }]);
    assert.deepEqual(find(u?.status.conditions, "Accepted"), {
      type: "Accepted",
      status: "True",
      observedGeneration: 3,
      lastTransitionTime: "2025-01-02T03:04:05Z",
      reason: "Accepted",
      message: "Resource accepted",
    });
  });

  it("plans nothing for a status it wrote, however much later", () => {
    const g = gw(undefined, { generation: 1 });
    const once = applied(g, plan(g, svc("10.0.0.5"))[0]);
    assert.deepEqual(plan(once, svc("10.0.0.5"), T1), []);
  });

  it("keeps the transition time for a new generation, and stamps a new status", () => {
    const g = gw(undefined, { generation: 1 });
    const once = applied(g, plan(g, svc("10.0.0.5"))[0]);
    const bumped = { ...once, metadata: { ...once.metadata, generation: 2 } };
    const [regen] = plan(bumped, svc("10.0.0.5"), T1);
    assert.equal(regen?.status.addresses, undefined, "the address is current");
    const p = find(regen?.status.conditions, "Programmed");
    assert.equal(p?.observedGeneration, 2);
    assert.equal(p?.lastTransitionTime, "2025-01-02T03:04:05Z");
    assert.ok(regen?.status.listeners?.[0]?.conditions.every((c) => c.observedGeneration === 2));
    const [gone] = plan(applied(bumped, regen), undefined, T1);
    const down = find(gone?.status.conditions, "Programmed");
    assert.equal(down?.status, "False");
    assert.equal(down?.lastTransitionTime, "2025-01-02T04:00:00Z");
    assert.equal(gone?.status.addresses, undefined, "the address is kept");
    assert.equal(gone?.status.listeners, undefined, "the listeners did not change");
  });

  it("keeps conditions of other types", () => {
    const other = { type: "Custom", status: "True", reason: "X", message: "y", lastTransitionTime: "t" };
    const [u] = plan(gw(undefined, { status: { conditions: [other] } }), svc("10.0.0.5"));
    assert.deepEqual(
      (u?.status.conditions as StatusCondition[]).map((c) => c.type),
      ["Custom", "Accepted", "Programmed"],
    );
    assert.equal(find(u?.status.conditions, "Accepted")?.observedGeneration, undefined, "no generation");
  });

  const rows: [string, RawKubeObject, RawKubeObject | undefined, Partial<StatusCondition>][] = [
    [
      "a headless Service",
      gw(),
      svc("None"),
      {
        status: "False",
        reason: "AddressNotUsable",
        message:
          'Failed to assign to any requested addresses: hostname "wp.demo.svc.cluster.local" has no cluster IP',
      },
    ],
    [
      "a listener port the Service lacks",
      gw([
        { name: "mesh", port: 15008, protocol: "HBONE" },
        { name: "http", port: 1234, protocol: "HTTP" },
      ]),
      svc("10.0.0.5"),
      {
        status: "False",
        reason: "AddressNotUsable",
        message:
          'Assigned to service(s) wp.demo.svc.cluster.local:15008, but failed to assign to all requested addresses: port 1234 not found for hostname "wp.demo.svc.cluster.local"',
      },
    ],
    [
      "two listener ports on the Service",
      gw([
        { name: "mesh", port: 15008, protocol: "HBONE" },
        { name: "status", port: 15021, protocol: "HTTP" },
      ]),
      svc("10.0.0.5"),
      {
        status: "True",
        reason: "Programmed",
        message:
          "Resource programmed, assigned to service(s) wp.demo.svc.cluster.local:15008 and wp.demo.svc.cluster.local:15021",
      },
    ],
  ];
  for (const [name, g, s, want] of rows) {
    it(`Programmed for ${name}`, () => {
      const [u] = plan(g, s);
      const p = find(u?.status.conditions, "Programmed");
      for (const [k, v] of Object.entries(want)) assert.equal(p?.[k as keyof StatusCondition], v, k);
    });
  }

  it("uses the cluster's DNS suffix in the Service host", () => {
    const [u] = plan(gw(), svc("10.0.0.5"), T0, "example.org");
    assert.equal(
      find(u?.status.conditions, "Programmed")?.message,
      "Resource programmed, assigned to service(s) wp.demo.svc.example.org:15008",
    );
  });

  it("refuses a listener other than HBONE on 15008, and route kinds HBONE cannot serve", () => {
    const [u] = plan(
      gw([
        { name: "http", port: 1234, protocol: "HTTP" },
        {
          name: "mesh",
          port: 15008,
          protocol: "HBONE",
          allowedRoutes: { kinds: [{ kind: "HTTPRoute" }] },
        },
      ]),
      svc("10.0.0.5", [15008, 1234]),
    );
    const [http, mesh] = u?.status.listeners ?? [];
    assert.deepEqual(http?.supportedKinds, [
      { group: "gateway.networking.k8s.io", kind: "HTTPRoute" },
      { group: "gateway.networking.k8s.io", kind: "GRPCRoute" },
    ]);
    assert.deepEqual(
      { ...find(http?.conditions, "Accepted"), lastTransitionTime: undefined },
      {
        type: "Accepted",
        status: "False",
        lastTransitionTime: undefined,
        reason: "UnsupportedProtocol",
        message: 'Expected a single listener on port 15008 with protocol "HBONE"',
      },
    );
    assert.equal(find(mesh?.conditions, "Accepted")?.status, "True");
    assert.deepEqual(mesh?.supportedKinds, []);
    assert.equal(find(mesh?.conditions, "ResolvedRefs")?.reason, "InvalidRouteKinds");
    assert.equal(find(mesh?.conditions, "ResolvedRefs")?.status, "False");
  });

  it("leaves other classes alone", () => {
    assert.deepEqual(plan({ ...gw(), spec: { gatewayClassName: "istio" } }, svc("10.0.0.5")), []);
  });
});
