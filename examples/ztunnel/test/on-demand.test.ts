// On-demand Address lookup (ztunnel XDS_ON_DEMAND) against a control plane: the proxy starts with its
// node's pods only, reaches a Service and a pod it had never received, and an address the control
// plane does not answer for is decided as before once the bounded wait is over.
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo, Server, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { createHboneServer, type HboneServer } from "@ambient/hbone";
import { SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf } from "../src/ztunnel.js";
import {
  echoServer,
  loopbackSubnet,
  socksConnect,
  startTwoNodeMesh,
  type TwoNodeMesh,
  testService,
  testWorkload as workload,
} from "./fixtures.js";

const base = loopbackSubnet();
const ip = {
  sleep: `${base}.11`,
  echo: `${base}.12`,
  direct: `${base}.14`,
  plain: `${base}.60`,
  silent: `${base}.61`,
  vip: `${base}.100`,
  web: `${base}.15`,
  webVip: `${base}.101`,
  waypoint: `${base}.20`,
  waypointVip: `${base}.102`,
};
const host = "echo.default.svc.cluster.local";
const WAYPOINT_HOST = "waypoint.default.svc.cluster.local";
const ON_DEMAND_TIMEOUT_MS = 300;

/** Sends `text` through a connected SOCKS5 socket to an echo server and returns the echo. */
async function roundTrip(socket: Socket, text: string): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(socket, "end");
  socket.end(text);
  await ended;
  socket.destroy();
  return Buffer.concat(chunks).toString();
}

describe("on-demand ztunnel", { timeout: 60_000 }, () => {
  let mesh: TwoNodeMesh;
  const servers: Server[] = [];
  const warnings: string[] = [];
  const logger = {
    debug: () => {},
    info: () => {},
    warn: (o: object, msg?: string) => warnings.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    error: () => {},
  };
  let echoPort = 0;
  let directPort = 0;
  let waypoint: HboneServer | undefined;

  before(async () => {
    const [echo, direct] = await Promise.all([echoServer(ip.echo), echoServer(ip.direct)]);
    servers.push(echo, direct, await echoServer(ip.plain), await echoServer(ip.silent));
    echoPort = (echo.address() as AddressInfo).port;
    directPort = (direct.address() as AddressInfo).port;
    const ports = [{ servicePort: 80, targetPort: echoPort, appProtocol: "TCP" as const }];
    mesh = await startTwoNodeMesh({
      subnet: base,
      // The control plane never answers for `silent` (its resolver hangs past the proxy's bound).
      controlPlane: {
        resolveTimeoutMs: 2000,
        resolver: ({ names }) =>
          names.includes(`/${ip.silent}`) ? new Promise((resolve) => setTimeout(resolve, 1500)) : undefined,
      },
      configure: (cp) => {
        cp.setWorkload(workload("sleep", "node-a", ip.sleep));
        cp.setWorkload(workload("echo", "node-b", ip.echo, { services: { [`default/${host}`]: { ports } } }));
        cp.setWorkload(workload("direct", "node-b", ip.direct));
        cp.setService(testService("echo", ip.vip, ports));
        // A Service bound to a waypoint named by hostname, as the control plane names waypoints;
        // the waypoint runs as the endpoint of its own Service, on a node without a ztunnel.
        const webPorts = [{ servicePort: 80, targetPort: 8080, appProtocol: "HTTP11" as const }];
        const waypointPorts = [{ servicePort: 15008, targetPort: 15008, appProtocol: "UNKNOWN" as const }];
        cp.setWorkload(
          workload("web", "node-b", ip.web, {
            services: { "default/web.default.svc.cluster.local": { ports: webPorts } },
          }),
        );
        cp.setService(
          testService("web", ip.webVip, webPorts, {
            waypoint: { hostname: { namespace: "default", hostname: WAYPOINT_HOST }, hboneMtlsPort: 15008 },
          }),
        );
        cp.setWorkload(
          workload("waypoint", "node-w", ip.waypoint, {
            tunnelProtocol: "NONE",
            services: { [`default/${WAYPOINT_HOST}`]: { ports: waypointPorts } },
          }),
        );
        cp.setService(testService("waypoint", ip.waypointVip, waypointPorts));
      },
      ztunnel: { logger },
      // Only node-a looks addresses up on demand; node-b serves the echo pods' inbound side, and takes
      // every address as before.
      nodeA: { onDemand: { timeoutMs: ON_DEMAND_TIMEOUT_MS } },
    });
    const svid = await mesh.cp.issue("spiffe://cluster.local/ns/default/sa/waypoint");
    waypoint = createHboneServer({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: mesh.cp.rootCertPem,
      // Answers once the caller has sent all it had, as the echo servers do (not before the SOCKS5
      // reply has been read).
      onTunnel: (tunnel) => {
        const stream = tunnel.accept();
        const got: Buffer[] = [];
        stream.on("data", (c: Buffer) => got.push(c));
        stream.on("end", () =>
          stream.end(
            `waypoint got ${Buffer.concat(got)} for ${tunnel.rawAuthority} from ${tunnel.peerIdentity.toString()}`,
          ),
        );
      },
    });
    await waypoint.listen({ host: ip.waypoint, port: 15008 });
  });

  after(async () => {
    await mesh?.close();
    await waypoint?.close({ timeoutMs: 0 });
    for (const s of servers) s.close();
  });

  it("starts with its node's pods only; the wildcard proxy has every address", () => {
    assert.deepEqual(
      mesh.nodeA.configDump().workloads.map((w) => w.name),
      ["sleep"],
    );
    assert.deepEqual(mesh.nodeA.configDump().services, []);
    assert.deepEqual(
      mesh.nodeA.configDump().localPods.map((p) => p.uid),
      ["Kubernetes//Pod/default/sleep"],
    );
    assert.deepEqual(
      mesh.nodeB
        .configDump()
        .workloads.map((w) => w.name)
        .sort(),
      ["direct", "echo", "sleep", "waypoint", "web"],
    );
    assert.equal(mesh.nodeB.configDump().services.length, 3);
  });

  it("reaches a Service VIP it had not received, over HBONE, with the Service's pods", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await roundTrip(socket, "via vip"), "via vip.");
    const dump = mesh.nodeA.configDump();
    assert.deepEqual(dump.workloads.map((w) => w.name).sort(), ["echo", "sleep"]);
    assert.equal(dump.services.length, 1);
    const metrics = await mesh.nodeB.metricsText();
    assert.match(
      metrics,
      /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*source_workload="sleep"/,
    );
  });

  it("asks for a waypoint named by hostname by namespace/hostname, and tunnels to it", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.webVip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded, "not refused as an unknown waypoint");
    assert.equal(
      await roundTrip(socket, "to web"),
      `waypoint got to web for ${ip.webVip}:80 from spiffe://cluster.local/ns/default/sa/sleep`,
    );
    const dump = mesh.nodeA.configDump();
    assert.ok(dump.services.some((s) => (s as { hostname?: string }).hostname === WAYPOINT_HOST));
    assert.ok(dump.workloads.some((w) => w.name === "waypoint"));
    assert.ok(!warnings.some((w) => w.includes(WAYPOINT_HOST)), "answered, not timed out");
  });

  it("reaches a pod IP it had not received", async () => {
    const { socket, reply } = await socksConnect(
      socks5AddressOf(mesh.nodeA),
      ip.sleep,
      ip.direct,
      directPort,
    );
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await roundTrip(socket, "to the pod"), "to the pod.");
    assert.ok(mesh.nodeA.configDump().workloads.some((w) => w.name === "direct"));
    // Over HBONE: node-b's inbound side saw it with sleep's identity.
    assert.match(
      await mesh.nodeB.metricsText(),
      /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*destination_workload="direct"/,
    );
  });

  it("passes a non-mesh address through once the control plane says it has nothing", async () => {
    const port = (servers[2]?.address() as AddressInfo).port;
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.plain, port);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await roundTrip(socket, "plain"), "plain.");
    assert.ok(!warnings.some((w) => w.includes(ip.plain)), "answered, not timed out");
  });

  it("refuses an address the control plane does not answer for, after the bound: never passed through", async () => {
    const port = (servers[3]?.address() as AddressInfo).port;
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.silent, port);
    socket.destroy();
    // It may be a mesh address the control plane could not answer for in time: passing it through
    // would go around the mesh (and its waypoint) in plaintext.
    assert.equal(reply, SOCKS5_REPLY.hostUnreachable);
    assert.ok(
      warnings.some(
        (w) => w.startsWith("on-demand address lookup unanswered") && w.includes(`/${ip.silent}`),
      ),
      warnings.join("\n"),
    );
  });
});
