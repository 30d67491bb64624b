// On-demand Address lookup (ztunnel XDS_ON_DEMAND) against a control plane: the proxy starts with its
// node's pods only, reaches a Service and a pod it had never received, and an address the control
// plane does not answer for is decided as before once the bounded wait is over.
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo, Server, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import type { Service } from "@ambient/xds";
import { type RunningZtunnel, startZtunnel } from "../src/index.js";
import { SOCKS5_REPLY } from "../src/socks5.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import { ipBytes as bytes, echoServer, socksConnect, testWorkload as workload } from "./fixtures.js";

const base = `127.${40 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 256)}`;
const ip = {
  nodeA: `${base}.1`,
  nodeB: `${base}.2`,
  sleep: `${base}.11`,
  echo: `${base}.12`,
  direct: `${base}.14`,
  plain: `${base}.60`,
  silent: `${base}.61`,
  vip: `${base}.100`,
};
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
  let cp: TestControlPlane;
  let nodeA: RunningZtunnel;
  let nodeB: RunningZtunnel;
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

  before(async () => {
    // The control plane never answers for `silent` (its resolver hangs past the proxy's bound).
    cp = await startTestControlPlane({
      resolveTimeoutMs: 2000,
      resolver: ({ names }) =>
        names.includes(`/${ip.silent}`) ? new Promise((resolve) => setTimeout(resolve, 1500)) : undefined,
    });
    const [echo, direct] = await Promise.all([echoServer(ip.echo), echoServer(ip.direct)]);
    servers.push(echo, direct, await echoServer(ip.plain), await echoServer(ip.silent));
    echoPort = (echo.address() as AddressInfo).port;
    directPort = (direct.address() as AddressInfo).port;
    const serviceKey = "default/echo.default.svc.cluster.local";
    cp.setWorkload(workload("sleep", "node-a", ip.sleep));
    cp.setWorkload(
      workload("echo", "node-b", ip.echo, {
        services: {
          [serviceKey]: { ports: [{ servicePort: 80, targetPort: echoPort, appProtocol: "TCP" }] },
        },
      }),
    );
    cp.setWorkload(workload("direct", "node-b", ip.direct));
    const service: Service = {
      name: "echo",
      namespace: "default",
      hostname: "echo.default.svc.cluster.local",
      addresses: [{ network: "", address: bytes(ip.vip) }],
      ports: [{ servicePort: 80, targetPort: echoPort, appProtocol: "TCP" }],
      subjectAltNames: [],
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
      logger,
    };
    nodeA = await startZtunnel({
      ...common,
      nodeName: "node-a",
      nodeIp: ip.nodeA,
      token: await cp.tokenFor("node-a"),
      onDemand: { timeoutMs: ON_DEMAND_TIMEOUT_MS },
    });
    // node-b serves the echo pods' inbound side, and takes every address as before.
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
    for (const s of servers) s.close();
  });

  it("starts with its node's pods only; the wildcard proxy has every address", () => {
    assert.deepEqual(
      nodeA.configDump().workloads.map((w) => w.name),
      ["sleep"],
    );
    assert.deepEqual(nodeA.configDump().services, []);
    assert.deepEqual(
      nodeA.configDump().localPods.map((p) => p.uid),
      ["Kubernetes//Pod/default/sleep"],
    );
    assert.deepEqual(
      nodeB
        .configDump()
        .workloads.map((w) => w.name)
        .sort(),
      ["direct", "echo", "sleep"],
    );
    assert.equal(nodeB.configDump().services.length, 1);
  });

  it("reaches a Service VIP it had not received, over HBONE, with the Service's pods", async () => {
    const { socket, reply } = await socksConnect(nodeA.addresses.socks5, ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await roundTrip(socket, "via vip"), "via vip.");
    const dump = nodeA.configDump();
    assert.deepEqual(dump.workloads.map((w) => w.name).sort(), ["echo", "sleep"]);
    assert.equal(dump.services.length, 1);
    const metrics = await nodeB.metricsText();
    assert.match(
      metrics,
      /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*source_workload="sleep"/,
    );
  });

  it("reaches a pod IP it had not received", async () => {
    const { socket, reply } = await socksConnect(nodeA.addresses.socks5, ip.sleep, ip.direct, directPort);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await roundTrip(socket, "to the pod"), "to the pod.");
    assert.ok(nodeA.configDump().workloads.some((w) => w.name === "direct"));
    // Over HBONE: node-b's inbound side saw it with sleep's identity.
    assert.match(
      await nodeB.metricsText(),
      /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*destination_workload="direct"/,
    );
  });

  it("passes a non-mesh address through once the control plane says it has nothing", async () => {
    const port = (servers[2]?.address() as AddressInfo).port;
    const { socket, reply } = await socksConnect(nodeA.addresses.socks5, ip.sleep, ip.plain, port);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await roundTrip(socket, "plain"), "plain.");
    assert.ok(!warnings.some((w) => w.includes(ip.plain)), "answered, not timed out");
  });

  it("decides an address the control plane does not answer for as today, after the bound", async () => {
    const port = (servers[3]?.address() as AddressInfo).port;
    const { socket, reply } = await socksConnect(nodeA.addresses.socks5, ip.sleep, ip.silent, port);
    assert.equal(reply, SOCKS5_REPLY.succeeded, "passthrough, as for any unknown address");
    assert.equal(await roundTrip(socket, "silent"), "silent.");
    assert.ok(
      warnings.some(
        (w) => w.startsWith("on-demand address lookup unanswered") && w.includes(`/${ip.silent}`),
      ),
      warnings.join("\n"),
    );
  });
});
