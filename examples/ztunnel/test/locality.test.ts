// Locality-aware endpoint choice through real proxies: a FAILOVER Service with a pod in the
// client's zone and one in another zone is always answered by the pod in the client's zone.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import type { Service, Workload } from "@ambient/xds";
import { type RunningZtunnel, startZtunnel } from "../src/index.js";
import { encodeGreeting, encodeRequest, parseReply, SOCKS5_REPLY } from "../src/socks5.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import { ipBytes as bytes, testWorkload } from "./fixtures.js";

const base = `127.${40 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 256)}`;
const ip = {
  nodeA: `${base}.1`,
  nodeB: `${base}.2`,
  sleep: `${base}.11`,
  near: `${base}.21`,
  far: `${base}.22`,
  vip: `${base}.100`,
};
const host = "zoned.default.svc.cluster.local";
const key = `default/${host}`;

/** A TCP app that answers every connection with its name. */
async function namedServer(address: string, name: string, port = 0): Promise<Server> {
  const server = createServer((socket) => {
    socket.on("error", () => {});
    socket.end(name);
  });
  server.listen(port, address);
  await once(server, "listening");
  return server;
}

/** One SOCKS5 CONNECT from the sleep pod to the VIP; the app's answer after the reply. */
async function answerThrough(proxy: string): Promise<string> {
  const [proxyHost, proxyPort] = proxy.split(":");
  const socket = connect({ host: proxyHost, port: Number(proxyPort), localAddress: ip.sleep });
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(ip.vip, 80));
  await once(socket, "end");
  socket.destroy();
  // Skip the method selection (2 bytes), then the CONNECT reply.
  const afterMethod = Buffer.concat(chunks).subarray(2);
  const reply = parseReply(afterMethod);
  assert.ok(reply);
  assert.equal(reply.reply, SOCKS5_REPLY.succeeded);
  return afterMethod.subarray(reply.length).toString();
}

const workload = (name: string, node: string, address: string, zone: string, extra: Partial<Workload> = {}) =>
  testWorkload(name, node, address, { locality: { region: "r1", zone, subzone: "" }, ...extra });

describe("locality-aware load balancing", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let nodeA: RunningZtunnel;
  let nodeB: RunningZtunnel;
  let near: Server;
  let far: Server;

  before(async () => {
    cp = await startTestControlPlane();
    near = await namedServer(ip.near, "near");
    // Both apps listen on the same port number, so the Service's target port fits either.
    const port = (near.address() as AddressInfo).port;
    far = await namedServer(ip.far, "far", port);
    const services = {
      [key]: { ports: [{ servicePort: 80, targetPort: port, appProtocol: "TCP" as const }] },
    };
    cp.setWorkload(workload("sleep", "node-a", ip.sleep, "z1"));
    cp.setWorkload(workload("near", "node-b", ip.near, "z1", { services }));
    cp.setWorkload(workload("far", "node-b", ip.far, "z2", { services }));
    const service: Service = {
      name: "zoned",
      namespace: "default",
      hostname: host,
      addresses: [{ network: "", address: bytes(ip.vip) }],
      ports: [{ servicePort: 80, targetPort: port, appProtocol: "TCP" }],
      subjectAltNames: [],
      loadBalancing: {
        mode: "FAILOVER",
        routingPreference: ["REGION", "ZONE"],
        healthPolicy: "ONLY_HEALTHY",
      },
      ipFamilies: "IPV4_ONLY",
      extensions: [],
      canonical: true,
      ingressUseWaypoint: false,
      weightedWaypoints: [],
      visibility: "PUBLIC",
    };
    cp.setService(service);
    const common = {
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
    };
    nodeA = await startZtunnel({
      ...common,
      nodeName: "node-a",
      nodeIp: ip.nodeA,
      token: await cp.tokenFor("node-a"),
    });
    nodeB = await startZtunnel({
      ...common,
      nodeName: "node-b",
      nodeIp: ip.nodeB,
      token: await cp.tokenFor("node-b"),
    });
    await Promise.all([nodeA.ready, nodeB.ready]);
  });

  after(async () => {
    await Promise.all([nodeA?.close(), nodeB?.close()]);
    await cp?.close();
    near?.close();
    far?.close();
  });

  it("sends every connection to the endpoint in the client's zone while it is there", async () => {
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) answers.push(await answerThrough(nodeA.addresses.socks5));
    assert.deepEqual(answers, ["near", "near", "near", "near"]);
  });

  it("fails over to the other zone when the near endpoint leaves", async () => {
    cp.removeWorkload("Kubernetes//Pod/default/near");
    const deadline = Date.now() + 10_000;
    while (nodeA.configDump().workloads.some((w) => w.name === "near")) {
      if (Date.now() > deadline) throw new Error("the near workload was not removed");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(await answerThrough(nodeA.addresses.socks5), "far");
  });
});
