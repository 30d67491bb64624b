// Dedicated mode end to end, as root on Linux: one workload served in a network namespace this test
// creates (standing in for the namespace of the process the proxy runs beside), with no node agent.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { type RunningZtunnel, startZtunnel } from "../src/index.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";

function skipReason(): string | false {
  if (process.platform !== "linux") return "dedicated mode needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "dedicated mode needs root (setns, ip netns)";
  if (spawnSync("ip", ["-V"], { stdio: "ignore" }).status !== 0) return "iproute2 (ip) is not installed";
  if (spawnSync("ss", ["-V"], { stdio: "ignore" }).status !== 0) return "ss (iproute2) is not installed";
  return false;
}
const skip = skipReason();
if (skip !== false) console.log(`# dedicated mode tests skipped: ${skip}`);

const run = (...args: string[]): string =>
  execFileSync(args[0] as string, args.slice(1), { encoding: "utf8" });

function workload(name: string, address: string): Workload {
  return {
    uid: `Kubernetes//Pod/default/${name}`,
    name,
    namespace: "default",
    addresses: [Uint8Array.from(address.split(".").map(Number))],
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
  };
}

describe("dedicated mode", { skip, timeout: 60_000 }, () => {
  const ns = `amb-${Math.random().toString(36).slice(2, 8)}-solo`;
  // An address that exists only inside the test's namespace.
  const ip = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}.21`;
  let created = false;
  let cp: TestControlPlane | undefined;
  const proxies: RunningZtunnel[] = [];
  const listening = () =>
    run("ip", "netns", "exec", ns, "ss", "-Htln")
      .split("\n")
      .map((line) => line.trim().split(/\s+/)[3] ?? "")
      .filter((local) => local !== "")
      .sort();

  before(async () => {
    run("ip", "netns", "add", ns);
    created = true;
    run("ip", "-n", ns, "link", "set", "lo", "up");
    run("ip", "-n", ns, "addr", "add", `${ip}/32`, "dev", "lo");
    cp = await startTestControlPlane();
    cp.setWorkload(workload("solo", ip));
  });

  after(async () => {
    for (const proxy of proxies) await proxy.close().catch(() => {});
    await cp?.close().catch(() => {});
    if (created) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  });

  const start = async (name: string) => {
    if (cp === undefined) throw new Error("no control plane");
    const proxy = await startZtunnel({
      nodeName: "node-a",
      nodeIp: "127.0.0.1",
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      token: await cp.tokenFor("node-a"),
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      dedicated: { workload: { name, namespace: "default" }, netnsPath: `/var/run/netns/${ns}` },
      inPod: { workloadWaitMs: 500 },
    });
    proxies.push(proxy);
    return proxy;
  };

  it("serves its one workload in the namespace with no node agent, and leaves nothing on close", async () => {
    const proxy = await start("solo");
    await proxy.ready;
    assert.deepEqual(
      proxy.configDump().inPodPods.map((p) => [p.uid, p.ip, p.identity]),
      [["default/solo", ip, "spiffe://cluster.local/ns/default/sa/solo"]],
    );
    const open = listening();
    for (const port of [15001, 15006, 15008])
      assert.ok(
        open.some((local) => local.endsWith(`:${port}`)),
        `${port} listens in the namespace: ${open}`,
      );
    await proxy.close();
    assert.deepEqual(listening(), [], "no listener is left in the namespace");
  });

  it("never becomes ready for a workload that xDS does not know", async () => {
    const proxy = await start("nobody");
    await assert.rejects(proxy.ready, /nobody|not a known workload|workload/i);
    assert.equal(proxy.configDump().ready, false);
    assert.deepEqual(listening(), []);
  });
});
