import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { ipBytes, testService, testWorkload } from "../test/fixtures.js";
import { WorkloadStore } from "./workload-store.js";

const echoKey = "default/echo.default.svc.cluster.local";
const servesEcho = {
  [echoKey]: { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" as const }] },
};
const echo = testService("echo", "10.96.0.1", [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }]);
const sleep = testWorkload("sleep", "node-a", "10.0.1.11");
const local = testWorkload("echo-0", "node-b", "10.0.2.12", { services: servesEcho });
/** Another network's pod that reuses the local pod's address. */
const twin = testWorkload("echo-twin", "node-z", "10.0.2.12", { network: "net2", serviceAccount: "other" });

function put(store: WorkloadStore, ...workloads: Workload[]): void {
  for (const w of workloads) store.upsert(w.uid, { workload: w });
}

describe("WorkloadStore: addresses are per network", () => {
  it("a workload of another network with a local pod's address does not take the address over", () => {
    const store = new WorkloadStore();
    put(store, local, twin);
    assert.equal(store.findByAddress("10.0.2.12")?.name, "echo-0");
    assert.equal(store.findByAddress("10.0.2.12", "net2")?.name, "echo-twin");
    store.remove(twin.uid);
    assert.equal(store.findByAddress("10.0.2.12")?.name, "echo-0", "removing the twin leaves the local pod");
    assert.equal(store.findByAddress("10.0.2.12", "net2"), undefined);
  });

  it("looks addresses up on the store's own network", () => {
    const store = new WorkloadStore({ network: "net1" });
    put(
      store,
      testWorkload("a", "node-a", "10.0.1.1", { network: "net1" }),
      testWorkload("b", "node-a", "10.0.1.2"),
    );
    assert.equal(store.network, "net1");
    assert.equal(store.findByAddress("10.0.1.1")?.name, "a");
    assert.equal(
      store.findByAddress("10.0.1.2"),
      undefined,
      "an address of the default network is not this one's",
    );
    assert.equal(store.findByAddress("10.0.1.2", "")?.name, "b");
  });

  it("finds a Service by a VIP of its own network only", () => {
    const store = new WorkloadStore();
    store.upsert(echoKey, { service: echo });
    const remoteKey = "default/remote.default.svc.cluster.local";
    store.upsert(remoteKey, {
      service: testService(
        "remote",
        "10.96.0.2",
        [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }],
        {
          addresses: [{ network: "net2", address: ipBytes("10.96.0.2") }],
        },
      ),
    });
    assert.equal(store.serviceAt("10.96.0.1")?.key, echoKey);
    assert.equal(store.serviceAt("10.96.0.2"), undefined);
    assert.equal(store.resolve("10.96.0.2", 80, sleep).kind, "passthrough");
  });

  it("never selects a Service endpoint of another network that it could only reach through a gateway", () => {
    const store = new WorkloadStore();
    store.upsert(echoKey, { service: echo });
    const remote = testWorkload("echo-remote", "node-z", "10.1.2.20", {
      network: "net2",
      services: servesEcho,
    });
    const gatewayed = testWorkload("echo-gw", "node-z", "10.1.2.21", {
      network: "net2",
      services: servesEcho,
      networkGateway: { address: { network: "net2", address: ipBytes("10.1.0.1") }, hboneMtlsPort: 15008 },
    });
    put(store, sleep, local, remote, gatewayed);
    const match = store.findService("10.96.0.1", 80);
    assert.ok(match !== undefined);
    const chosen = new Set<string>();
    for (let i = 0; i < 6; i++) chosen.add(store.selectEndpoint(match, sleep)?.workload.name ?? "(none)");
    assert.deepEqual([...chosen], ["echo-0"]);
  });

  it("a Service whose endpoints are all on another network has no endpoint to dial", () => {
    const store = new WorkloadStore();
    store.upsert(echoKey, { service: echo });
    put(
      store,
      sleep,
      testWorkload("echo-remote", "node-z", "10.1.2.20", { network: "net2", services: servesEcho }),
    );
    assert.equal(store.resolve("10.96.0.1", 80, sleep).kind, "no-endpoint");
  });
});
