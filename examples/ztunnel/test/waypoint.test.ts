import assert from "node:assert/strict";
import { once } from "node:events";
import { connect } from "node:net";
import { after, before, describe, it } from "node:test";
import { createHboneServer, type HboneServer } from "@ambient/hbone";
import type { Service } from "@ambient/xds";
import { type RunningZtunnel, socks5AddressOf, startZtunnel } from "../src/index.js";
import { encodeGreeting, encodeRequest, parseReply, SOCKS5_REPLY } from "../src/socks5.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import { ipBytes as bytes, loopbackSubnet, testService, testWorkload as workload } from "./fixtures.js";

const base = loopbackSubnet();
const ip = {
  nodeA: `${base}.1`,
  sleep: `${base}.11`,
  web: `${base}.12`,
  waypoint: `${base}.20`,
  db: `${base}.13`,
  cache: `${base}.14`,
  vip: `${base}.100`,
  lostVip: `${base}.101`,
  nowhere: `${base}.30`,
  api: `${base}.15`,
  apiVip: `${base}.102`,
  waypointVip: `${base}.103`,
  apiByVip: `${base}.104`,
  other: `${base}.16`,
};
const WAYPOINT_HOST = "waypoint.default.svc.cluster.local";

function service(name: string, vip: string, waypointIp: string): Service {
  return testService(name, vip, [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }], {
    waypoint: { address: { network: "", address: bytes(waypointIp) }, hboneMtlsPort: 15008 },
  });
}

/** SOCKS5 CONNECT, then half-close and read until the peer closes. */
async function call(proxy: string, host: string, port: number): Promise<{ reply: number; answer: string }> {
  const [h, p] = proxy.split(":");
  const socket = connect({ host: h, port: Number(p), localAddress: ip.sleep, allowHalfOpen: true });
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(host, port));
  let buffered = Buffer.alloc(0);
  let reply: number | undefined;
  const answer: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => {
    if (reply !== undefined) {
      answer.push(chunk);
      return;
    }
    buffered = Buffer.concat([buffered, chunk]);
    const parsed = buffered.length < 2 ? undefined : parseReply(buffered.subarray(2));
    if (parsed === undefined) return;
    reply = parsed.reply;
    const rest = buffered.subarray(2 + parsed.length);
    if (rest.length > 0) answer.push(rest);
    socket.end();
  });
  socket.on("error", () => {});
  await once(socket, "close");
  return { reply: reply ?? -1, answer: Buffer.concat(answer).toString() };
}

describe("outbound to a Service or a pod bound to a waypoint", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let nodeA: RunningZtunnel;
  let waypoint: HboneServer;

  before(async () => {
    cp = await startTestControlPlane();
    cp.setWorkload(workload("sleep", "node-a", ip.sleep));
    // The endpoint's node has no ztunnel here: a direct dial would fail, only the waypoint answers.
    cp.setWorkload(
      workload("web", "node-b", ip.web, {
        services: {
          "default/web.default.svc.cluster.local": {
            ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" }],
          },
        },
      }),
    );
    // The waypoint is also the endpoint of its own Service (`waypoint`, port 15008), as a waypoint
    // Deployment is: the control plane then names it by that Service's hostname.
    cp.setWorkload(
      workload("waypoint", "node-w", ip.waypoint, {
        tunnelProtocol: "NONE",
        services: {
          [`default/${WAYPOINT_HOST}`]: {
            ports: [{ servicePort: 15008, targetPort: 15008, appProtocol: "UNKNOWN" }],
          },
        },
      }),
    );
    cp.setService(
      testService(
        "waypoint",
        ip.waypointVip,
        [{ servicePort: 15008, targetPort: 15008, appProtocol: "UNKNOWN" }],
        {
          hostname: WAYPOINT_HOST,
        },
      ),
    );
    const byHostname = {
      waypoint: { hostname: { namespace: "default", hostname: WAYPOINT_HOST }, hboneMtlsPort: 15008 },
    };
    const apiPorts = [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" as const }];
    cp.setWorkload(
      workload("api", "node-b", ip.api, {
        services: {
          "default/api.default.svc.cluster.local": { ports: apiPorts },
          "default/api-by-vip.default.svc.cluster.local": { ports: apiPorts },
        },
      }),
    );
    cp.setService(testService("api", ip.apiVip, apiPorts, byHostname));
    cp.setService(
      testService("api-by-vip", ip.apiByVip, apiPorts, {
        waypoint: { address: { network: "", address: bytes(ip.waypointVip) }, hboneMtlsPort: 15008 },
      }),
    );
    cp.setWorkload(workload("other", "node-b", ip.other, byHostname));
    cp.setService(service("web", ip.vip, ip.waypoint));
    // Pods bound to a waypoint themselves (istio.io/use-waypoint on the workload): db's is known,
    // cache's is no workload.
    const own = (at: string) => ({
      waypoint: { address: { network: "", address: bytes(at) }, hboneMtlsPort: 15008 },
    });
    cp.setWorkload(workload("db", "node-b", ip.db, own(ip.waypoint)));
    cp.setWorkload(workload("cache", "node-b", ip.cache, own(ip.nowhere)));
    cp.setService(service("lost", ip.lostVip, ip.nowhere));
    const svid = await cp.issue("spiffe://cluster.local/ns/default/sa/waypoint");
    waypoint = createHboneServer({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: cp.rootCertPem,
      onTunnel: (tunnel) => {
        const stream = tunnel.accept();
        stream.resume();
        stream.end(`waypoint got ${tunnel.rawAuthority} from ${tunnel.peerIdentity.toString()}`);
      },
    });
    await waypoint.listen({ host: ip.waypoint, port: 15008 });
    nodeA = await startZtunnel({
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      nodeName: "node-a",
      nodeIp: ip.nodeA,
      token: await cp.tokenFor("node-a"),
    });
    await nodeA.ready;
  });

  after(async () => {
    await nodeA?.close();
    await waypoint?.close({ timeoutMs: 0 });
    await cp?.close();
  });

  it("tunnels to the waypoint with the original VIP:port and the source pod's identity", async () => {
    const { reply, answer } = await call(socks5AddressOf(nodeA), ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(answer, `waypoint got ${ip.vip}:80 from spiffe://cluster.local/ns/default/sa/sleep`);
  });

  it("tunnels to the waypoint on a port the Service does not declare, never around it", async () => {
    // ztunnel finds a Service's waypoint by its address alone; before, an undeclared port was passed
    // through in plaintext, straight to the VIP.
    const { reply, answer } = await call(socks5AddressOf(nodeA), ip.vip, 22);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(answer, `waypoint got ${ip.vip}:22 from spiffe://cluster.local/ns/default/sa/sleep`);
  });

  it("refuses when the waypoint address is no known workload", async () => {
    const { reply } = await call(socks5AddressOf(nodeA), ip.lostVip, 80);
    assert.equal(reply, SOCKS5_REPLY.hostUnreachable);
  });

  it("tunnels to a pod's own waypoint with the pod's address:port, when the pod is addressed directly", async () => {
    const { reply, answer } = await call(socks5AddressOf(nodeA), ip.db, 5432);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(answer, `waypoint got ${ip.db}:5432 from spiffe://cluster.local/ns/default/sa/sleep`);
  });

  it("tunnels to a waypoint named by its Service's hostname, as the control plane names it", async () => {
    const { reply, answer } = await call(socks5AddressOf(nodeA), ip.apiVip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(answer, `waypoint got ${ip.apiVip}:80 from spiffe://cluster.local/ns/default/sa/sleep`);
  });

  it("tunnels to a waypoint named by its Service's VIP", async () => {
    const { reply, answer } = await call(socks5AddressOf(nodeA), ip.apiByVip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(answer, `waypoint got ${ip.apiByVip}:80 from spiffe://cluster.local/ns/default/sa/sleep`);
  });

  it("tunnels a pod addressed directly to its own waypoint named by hostname", async () => {
    const { reply, answer } = await call(socks5AddressOf(nodeA), ip.other, 9000);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(answer, `waypoint got ${ip.other}:9000 from spiffe://cluster.local/ns/default/sa/sleep`);
  });

  it("refuses a pod whose own waypoint is no known workload, rather than going around it", async () => {
    const { reply } = await call(socks5AddressOf(nodeA), ip.cache, 6379);
    assert.equal(reply, SOCKS5_REPLY.hostUnreachable);
  });
});
