import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Service, Workload } from "@ambient/xds";
import { addressKey, createOnDemand, missingAddresses, withOnDemand } from "./on-demand.js";
import type { Outbound } from "./outbound.js";
import { noopLogger } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";

const bytes = (ip: string) => Uint8Array.from(ip.split(".").map(Number));
const workload = (uid: string, ip: string) =>
  ({ uid, name: uid, namespace: "ns", addresses: [bytes(ip)], services: {} }) as unknown as Workload;
const waypointAt = (ip: string) =>
  ({ address: { network: "", address: bytes(ip) } }) as unknown as Workload["waypoint"];
const waypointNamed = (namespace: string, hostname: string) =>
  ({ hostname: { namespace, hostname }, hboneMtlsPort: 15008 }) as unknown as Workload["waypoint"];
const WP_HOST = "waypoint.ns.svc.cluster.local";
/** The waypoint's own Service (port 15008), as a waypoint Deployment has. */
const waypointService = (vip: string) =>
  ({
    name: "waypoint",
    namespace: "ns",
    hostname: WP_HOST,
    addresses: [{ network: "", address: bytes(vip) }],
    ports: [{ servicePort: 15008, targetPort: 15008 }],
  }) as unknown as Service;
const waypointPod = (ip: string) =>
  ({
    ...workload("wp", ip),
    status: "HEALTHY",
    services: { [`ns/${WP_HOST}`]: { ports: [{ servicePort: 15008, targetPort: 15008 }] } },
  }) as unknown as Workload;
const service = (vip: string, waypoint?: string) =>
  ({
    name: "web",
    namespace: "ns",
    hostname: "web.ns.svc.cluster.local",
    addresses: [{ network: "", address: bytes(vip) }],
    ports: [{ servicePort: 80, targetPort: 8080 }],
    ...(waypoint === undefined ? {} : { waypoint: { address: { network: "", address: bytes(waypoint) } } }),
  }) as unknown as Service;

function storeWith(...addresses: ({ workload: Workload } | { service: Service })[]): WorkloadStore {
  const store = new WorkloadStore();
  for (const a of addresses) {
    const name = "workload" in a ? a.workload.uid : `${a.service.namespace}/${a.service.hostname}`;
    store.upsert(name, a);
  }
  return store;
}

describe("missingAddresses", () => {
  const cases: [string, WorkloadStore, string, number, string[]][] = [
    ["an unknown IP is asked for", storeWith(), "10.0.0.9", 80, ["/10.0.0.9"]],
    ["a known pod needs nothing", storeWith({ workload: workload("p", "10.0.0.1") }), "10.0.0.1", 80, []],
    [
      "a known Service without waypoint needs nothing",
      storeWith({ service: service("10.96.0.1") }),
      "10.96.0.1",
      80,
      [],
    ],
    [
      "a known Service's unknown waypoint is asked for",
      storeWith({ service: service("10.96.0.1", "10.0.0.50") }),
      "10.96.0.1",
      80,
      ["/10.0.0.50"],
    ],
    [
      "a known waypoint needs nothing",
      storeWith({ service: service("10.96.0.1", "10.0.0.50") }, { workload: workload("wp", "10.0.0.50") }),
      "10.96.0.1",
      80,
      [],
    ],
    [
      "a waypoint known as a Service (by its VIP) needs nothing",
      storeWith(
        { service: service("10.96.0.1", "10.96.0.50") },
        { service: { ...service("10.96.0.50"), hostname: "wp" } },
      ),
      "10.96.0.1",
      80,
      [],
    ],
    [
      "a pod's own unknown waypoint is asked for",
      storeWith({ workload: { ...workload("p", "10.0.0.1"), waypoint: waypointAt("10.0.0.50") } }),
      "10.0.0.1",
      80,
      ["/10.0.0.50"],
    ],
    [
      "a pod's own known waypoint needs nothing",
      storeWith(
        { workload: { ...workload("p", "10.0.0.1"), waypoint: waypointAt("10.0.0.50") } },
        { workload: workload("wp", "10.0.0.50") },
      ),
      "10.0.0.1",
      80,
      [],
    ],
    [
      "a known Service's unknown waypoint named by hostname is asked for by namespace/hostname",
      storeWith({ service: { ...service("10.96.0.1"), waypoint: waypointNamed("ns", WP_HOST) } }),
      "10.96.0.1",
      80,
      [`ns/${WP_HOST}`],
    ],
    [
      "a waypoint named by hostname and known as a Service needs nothing",
      storeWith(
        { service: { ...service("10.96.0.1"), waypoint: waypointNamed("ns", WP_HOST) } },
        { service: waypointService("10.96.0.50") },
      ),
      "10.96.0.1",
      80,
      [],
    ],
    [
      "a pod's own unknown waypoint named by hostname is asked for by namespace/hostname",
      storeWith({ workload: { ...workload("p", "10.0.0.1"), waypoint: waypointNamed("ns", WP_HOST) } }),
      "10.0.0.1",
      80,
      [`ns/${WP_HOST}`],
    ],
    [
      "a VIP on a port the Service lacks needs nothing more",
      storeWith({ service: service("10.96.0.1", "10.0.0.50") }),
      "10.96.0.1",
      81,
      [],
    ],
  ];
  for (const [name, store, ip, port, want] of cases) {
    it(name, () => assert.deepEqual(missingAddresses(store, ip, port), want));
  }

  it("an address is asked for in the proxy's network", () => {
    assert.deepEqual(missingAddresses(storeWith(), "10.0.0.9", 80, "net-1"), ["net-1/10.0.0.9"]);
  });

  it("of Services sharing a VIP, the waypoint of the one the client's namespace gets is asked for", () => {
    // The Kubernetes Service (canonical) has no waypoint; a ServiceEntry of namespace `other` reusing
    // its ClusterIP has one this node does not know yet.
    const store = storeWith(
      { service: { ...service("10.96.0.1"), canonical: true } },
      { service: { ...service("10.96.0.1", "10.0.0.50"), namespace: "other" } },
    );
    assert.deepEqual(missingAddresses(store, "10.96.0.1", 80, "", "other"), ["/10.0.0.50"]);
    assert.deepEqual(missingAddresses(store, "10.96.0.1", 80, "", "ns"), []);
  });

  it("keys are network/IP", () => {
    assert.equal(addressKey("10.0.0.1"), "/10.0.0.1");
    assert.equal(addressKey("10.0.0.1", "net-1"), "net-1/10.0.0.1");
  });
});

describe("createOnDemand", () => {
  it("asks for the destination, then its Service's waypoint, then decides", async () => {
    const store = new WorkloadStore();
    const asked: string[][] = [];
    const onDemand = createOnDemand({
      store,
      logger: noopLogger,
      forget: () => {},
      lookup: async (names) => {
        asked.push(names);
        if (names[0] === "/10.96.0.1")
          store.upsert("ns/web.ns.svc.cluster.local", { service: service("10.96.0.1", "10.0.0.50") });
        if (names[0] === "/10.0.0.50") store.upsert("wp", { workload: workload("wp", "10.0.0.50") });
        return { missing: [], unanswered: [] };
      },
    });
    await onDemand.ensure("10.96.0.1", 80);
    assert.deepEqual(asked, [["/10.96.0.1"], ["/10.0.0.50"]]);
    await onDemand.ensure("10.96.0.1", 80);
    assert.equal(asked.length, 2, "nothing asked once known");
  });

  it("asks for a waypoint named by hostname by namespace/hostname, and waits for it", async () => {
    const store = new WorkloadStore();
    const asked: string[][] = [];
    const onDemand = createOnDemand({
      store,
      logger: noopLogger,
      forget: () => {},
      network: "net-1",
      lookup: async (names) => {
        asked.push(names);
        if (names[0] === "net-1/10.96.0.1") {
          store.upsert("ns/web.ns.svc.cluster.local", {
            service: { ...service("10.96.0.1"), waypoint: waypointNamed("ns", WP_HOST) },
          });
        }
        // The control plane answers the waypoint's Service with the workloads behind it.
        if (names[0] === `ns/${WP_HOST}`) {
          store.upsert(`ns/${WP_HOST}`, { service: waypointService("10.96.0.50") });
          store.upsert("wp", { workload: waypointPod("10.0.0.50") });
        }
        return { missing: [], unanswered: [] };
      },
    });
    await onDemand.ensure("10.96.0.1", 80);
    assert.deepEqual(asked, [["net-1/10.96.0.1"], [`ns/${WP_HOST}`]]);
    const web = store.findService("10.96.0.1", 80);
    assert.ok(web !== undefined);
    const waypoint = store.resolveWaypoint(web.service);
    assert.equal(waypoint.kind === "waypoint" ? waypoint.upstream.ip : waypoint.kind, "10.0.0.50");
  });

  it("an outbound dial asks on behalf of its source's namespace", async () => {
    const store = storeWith(
      { service: { ...service("10.96.0.1"), canonical: true } },
      { service: { ...service("10.96.0.1", "10.0.0.50"), namespace: "other" } },
    );
    const asked: string[] = [];
    const onDemand = createOnDemand({
      store,
      logger: noopLogger,
      forget: () => {},
      lookup: async (names) => {
        asked.push(...names);
        return { missing: names, unanswered: [] };
      },
    });
    const dialed: string[] = [];
    const outbound: Outbound = {
      dial: async (_network, _srcIp, _src, request) => {
        dialed.push(`${request.ip}:${request.port}`);
        return {} as Awaited<ReturnType<Outbound["dial"]>>;
      },
      carry: () => {},
      abandon: () => {},
    };
    const client = { ...workload("curl", "10.0.0.7"), namespace: "other" } as Workload;
    const network = {} as Parameters<Outbound["dial"]>[0];
    await withOnDemand(outbound, onDemand).dial(network, "10.0.0.7", client, { ip: "10.96.0.1", port: 80 });
    assert.deepEqual(asked, ["/10.0.0.50"]);
    assert.deepEqual(dialed, ["10.96.0.1:80"]);
  });

  it("does not ask again for a waypoint hostname the control plane has nothing for", async () => {
    const store = storeWith({ service: { ...service("10.96.0.1"), waypoint: waypointNamed("ns", WP_HOST) } });
    const asked: string[] = [];
    const onDemand = createOnDemand({
      store,
      logger: noopLogger,
      forget: () => {},
      lookup: async (names) => {
        asked.push(...names);
        return { missing: names, unanswered: [] };
      },
    });
    await onDemand.ensure("10.96.0.1", 80);
    await onDemand.ensure("10.96.0.1", 80);
    assert.deepEqual(asked, [`ns/${WP_HOST}`]);
    assert.deepEqual(onDemand.stats(), { lookups: 1, unanswered: 0, unresolved: 1 });
  });

  it("shares one lookup among concurrent connections, and asks once when the answer is 'nothing'", async () => {
    let calls = 0;
    let release: () => void = () => {};
    const onDemand = createOnDemand({
      store: new WorkloadStore(),
      logger: noopLogger,
      forget: () => {},
      lookup: (_names, timeoutMs) => {
        calls++;
        assert.equal(timeoutMs, 250);
        return new Promise((resolve) => {
          release = () => resolve({ missing: [], unanswered: [] });
        });
      },
      timeoutMs: 250,
    });
    const all = Promise.all([onDemand.ensure("10.0.0.9", 80), onDemand.ensure("10.0.0.9", 443)]);
    release();
    await all;
    assert.equal(calls, 1);
    assert.deepEqual(onDemand.stats(), { lookups: 1, unanswered: 0, unresolved: 0 });
  });

  it("never rejects: an unanswered or failed lookup says so, an answer of nothing does not", async () => {
    const unanswered = createOnDemand({
      store: new WorkloadStore(),
      logger: noopLogger,
      forget: () => {},
      lookup: async (names) => ({ missing: [], unanswered: names }),
    });
    assert.equal(await unanswered.ensure("10.0.0.9", 80), false);
    assert.deepEqual(unanswered.stats(), { lookups: 1, unanswered: 1, unresolved: 1 });
    const failing = createOnDemand({
      store: new WorkloadStore(),
      logger: noopLogger,
      forget: () => {},
      lookup: () => Promise.reject(new Error("client closed")),
    });
    assert.equal(await failing.ensure("10.0.0.9", 80), false);
    assert.deepEqual(failing.stats(), { lookups: 1, unanswered: 1, unresolved: 0 });
    const nothing = createOnDemand({
      store: new WorkloadStore(),
      logger: noopLogger,
      forget: () => {},
      lookup: async (names) => ({ missing: names, unanswered: [] }),
    });
    assert.equal(await nothing.ensure("10.0.0.9", 80), true);
  });

  it("does not ask again for what the control plane has nothing for, and bounds what stays subscribed", async () => {
    const store = new WorkloadStore();
    const asked: string[] = [];
    const forgotten: string[] = [];
    const onDemand = createOnDemand({
      store,
      logger: noopLogger,
      maxUnresolved: 2,
      forget: (names) => forgotten.push(...names),
      lookup: async (names) => {
        asked.push(...names);
        if (names[0] === "/10.0.0.3") store.upsert("p3", { workload: workload("p3", "10.0.0.3") });
        return names[0] === "/10.0.0.3"
          ? { missing: [], unanswered: [] }
          : names[0] === "/10.0.0.9"
            ? { missing: [], unanswered: names }
            : { missing: names, unanswered: [] };
      },
    });
    await onDemand.ensure("10.0.0.1", 80);
    await onDemand.ensure("10.0.0.1", 80);
    assert.deepEqual(asked, ["/10.0.0.1"], "an answered 'nothing' is not asked again");
    await onDemand.ensure("10.0.0.9", 80);
    await onDemand.ensure("10.0.0.9", 80);
    assert.deepEqual(asked.slice(1), ["/10.0.0.9", "/10.0.0.9"], "no answer: asked again next time");
    await onDemand.ensure("10.0.0.2", 80);
    assert.deepEqual(forgotten, ["/10.0.0.1"], "the oldest unresolved address is unsubscribed");
    await onDemand.ensure("10.0.0.3", 80);
    assert.deepEqual(onDemand.stats().unresolved, 2, "found addresses are not counted");
    await onDemand.ensure("10.0.0.1", 80);
    assert.equal(asked.at(-1), "/10.0.0.1", "forgotten, so asked again");
  });
});
