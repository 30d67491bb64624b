// Locality-aware endpoint choice through real proxies: a FAILOVER Service with a pod in the
// client's zone and one in another zone is always answered by the pod in the client's zone.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { encodeGreeting, encodeRequest, parseReply, SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf } from "../src/ztunnel.js";
import { loopbackSubnet, startTwoNodeMesh, type TwoNodeMesh, testService, testWorkload } from "./fixtures.js";

const base = loopbackSubnet();
const ip = {
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
  let mesh: TwoNodeMesh;
  let near: Server;
  let far: Server;

  before(async () => {
    near = await namedServer(ip.near, "near");
    // Both apps listen on the same port number, so the Service's target port fits either.
    const port = (near.address() as AddressInfo).port;
    far = await namedServer(ip.far, "far", port);
    const ports = [{ servicePort: 80, targetPort: port, appProtocol: "TCP" as const }];
    const services = { [key]: { ports } };
    mesh = await startTwoNodeMesh({
      subnet: base,
      configure: (cp) => {
        cp.setWorkload(workload("sleep", "node-a", ip.sleep, "z1"));
        cp.setWorkload(workload("near", "node-b", ip.near, "z1", { services }));
        cp.setWorkload(workload("far", "node-b", ip.far, "z2", { services }));
        cp.setService(
          testService("zoned", ip.vip, ports, {
            loadBalancing: {
              mode: "FAILOVER",
              routingPreference: ["REGION", "ZONE"],
              healthPolicy: "ONLY_HEALTHY",
            },
          }),
        );
      },
    });
  });

  after(async () => {
    await mesh?.close();
    near?.close();
    far?.close();
  });

  it("sends every connection to the endpoint in the client's zone while it is there", async () => {
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) answers.push(await answerThrough(socks5AddressOf(mesh.nodeA)));
    assert.deepEqual(answers, ["near", "near", "near", "near"]);
  });

  it("fails over to the other zone when the near endpoint leaves", async () => {
    mesh.cp.removeWorkload("Kubernetes//Pod/default/near");
    const deadline = Date.now() + 10_000;
    while (mesh.nodeA.configDump().workloads.some((w) => w.name === "near")) {
      if (Date.now() > deadline) throw new Error("the near workload was not removed");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(await answerThrough(socks5AddressOf(mesh.nodeA)), "far");
  });
});
