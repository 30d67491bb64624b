import assert from "node:assert/strict";
import { once } from "node:events";
import { get } from "node:http";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { socks5AddressOf, startZtunnel } from "../src/index.js";
import { SOCKS5_REPLY } from "../src/socks5.js";
import {
  configureSleepEcho,
  echoServer,
  ipBytes,
  loopbackSubnet,
  socksConnect,
  startTwoNodeMesh,
  type TwoNodeMesh,
  testWorkload,
} from "./fixtures.js";

// A fresh 127.x.y.0/24 per run so parallel runs never share an address: node-a is .1, node-b .2.
const base = loopbackSubnet();
const ip = {
  sleep: `${base}.11`,
  echo: `${base}.12`,
  stranger: `${base}.13`,
  outsider: `${base}.50`,
  plain: `${base}.60`,
  vip: `${base}.100`,
};
const echoHost = "echo.default.svc.cluster.local";

/** SOCKS5 CONNECT from `from` through `proxy`; resolves with the socket and the reply code. */
function readAll(socket: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once("end", () => resolve(Buffer.concat(chunks).toString()));
    socket.once("error", reject);
  });
}

function httpGet(address: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(`http://${address}${path}`, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    }).once("error", reject);
  });
}

function counterValue(text: string, name: string, match: Record<string, string>): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(match).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 10));
}

const workload = (
  name: string,
  namespace: string,
  node: string,
  address: string,
  extra: Partial<Workload> = {},
) => testWorkload(name, node, address, { namespace, ...extra });

describe("two ztunnels, one control plane", { timeout: 60_000 }, () => {
  let mesh: TwoNodeMesh;
  let echo: Server;
  let plain: Server;
  let echoPort: number;
  const logs: string[] = [];
  const warnings: string[] = [];
  const logger = {
    debug: () => {},
    info: (_o: object, msg?: string) => logs.push(msg ?? ""),
    warn: (o: object, msg?: string) => warnings.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    error: () => {},
  };

  before(async () => {
    echo = await echoServer(ip.echo);
    plain = await echoServer(ip.plain);
    echoPort = (echo.address() as AddressInfo).port;
    mesh = await startTwoNodeMesh({
      subnet: base,
      configure: (cp) => configureSleepEcho(cp, ip, echoPort),
      ztunnel: { logger },
    });
  });

  after(async () => {
    await mesh?.close();
    echo?.close();
    plain?.close();
  });

  it("is ready, with certificates and state in /config_dump", async () => {
    const readiness = await httpGet(mesh.nodeA.addresses.readiness, "/healthz/ready");
    assert.equal(readiness.status, 200);
    const dump = JSON.parse((await httpGet(mesh.nodeA.addresses.admin, "/config_dump")).body) as {
      workloads: unknown[];
      localPods: { identity: string; listening: boolean }[];
      policies: { name: string }[];
    };
    assert.equal(dump.workloads.length, 3);
    assert.deepEqual(dump.localPods.map((p) => p.identity).sort(), [
      "spiffe://cluster.local/ns/default/sa/sleep",
      "spiffe://cluster.local/ns/other/sa/stranger",
    ]);
    assert.ok(dump.localPods.every((p) => p.listening));
    assert.deepEqual(
      dump.policies.map((p) => p.name),
      ["allow-sleep"],
    );
  });

  it("sleep reaches echo through SOCKS5 -> HBONE via the Service VIP, with half-close", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    const received = readAll(socket);
    socket.write("hello ");
    socket.end("through the mesh");
    assert.equal(await received, "hello through the mesh.");
    socket.destroy();
  });

  it("resolves the Service by hostname", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, echoHost, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    const received = readAll(socket);
    socket.end("by name");
    assert.equal(await received, "by name.");
    socket.destroy();
  });

  it("refuses the stranger pod by policy (HBONE 401 -> SOCKS5 not allowed)", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.stranger, ip.vip, 80);
    socket.destroy();
    assert.equal(reply, SOCKS5_REPLY.notAllowed);
    assert.ok(
      logs.some((l) => l === "denied by default/allow-sleep"),
      logs.join("\n"),
    );
    // Counted on both sides: refused by policy at the destination, a tunnel not opened at the source.
    const refused = { source_workload: "stranger", destination_service_name: "echo" };
    assert.equal(
      counterValue(await mesh.nodeB.metricsText(), "istio_tcp_connections_closed_total", {
        ...refused,
        reporter: "destination",
        response_flags: "DENY",
      }),
      1,
    );
    assert.equal(
      counterValue(await mesh.nodeA.metricsText(), "istio_tcp_connections_closed_total", {
        ...refused,
        reporter: "source",
        response_flags: "CONNECT",
      }),
      1,
    );
  });

  it("refuses a source that is not a local pod", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.outsider, ip.vip, 80);
    socket.destroy();
    assert.equal(reply, SOCKS5_REPLY.notAllowed);
    // echo is a pod of node-b, not node-a.
    const other = await socksConnect(socks5AddressOf(mesh.nodeA), ip.echo, ip.vip, 80);
    other.socket.destroy();
    assert.equal(other.reply, SOCKS5_REPLY.notAllowed);
  });

  it("closes a client that does not speak SOCKS5", async () => {
    const [host, port] = socks5AddressOf(mesh.nodeA).split(":");
    const socket = connect({ host, port: Number(port), localAddress: ip.sleep });
    await once(socket, "connect");
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.write("GET / HTTP/1.1\r\n\r\n");
    await closed;
  });

  it("gets no certificates for another node's pods (CA node authorizer)", async () => {
    const impostor = await startZtunnel({
      controlPlaneAddress: mesh.cp.address,
      rootCertPem: mesh.cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0, hbone: 0 },
      logger,
      nodeName: "node-a",
      nodeIp: `${base}.3`,
      token: await mesh.cp.tokenFor("node-b"),
    });
    try {
      await until(() =>
        warnings.some(
          (w) => w.startsWith("local pod not ready") && /impersonation authentication failure/.test(w),
        ),
      );
      assert.equal(impostor.isReady(), false);
      assert.equal(impostor.configDump().certificates.length, 0);
      assert.equal((await httpGet(impostor.addresses.readiness, "/healthz/ready")).status, 503);
    } finally {
      await impostor.close();
    }
  });

  it("binds the admin listener on adminIp, and metrics, readiness and SOCKS5 on the node IP", async () => {
    const proxy = await startZtunnel({
      controlPlaneAddress: mesh.cp.address,
      rootCertPem: mesh.cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0, hbone: 0 },
      logger,
      // A node without pods: only its own listeners open.
      nodeName: "node-z",
      nodeIp: `${base}.4`,
      adminIp: "127.0.0.1",
      token: await mesh.cp.tokenFor("node-z"),
    });
    try {
      const adminPort = proxy.addresses.admin.split(":").at(-1);
      assert.equal(proxy.addresses.admin, `127.0.0.1:${adminPort}`);
      for (const listener of [proxy.addresses.metrics, proxy.addresses.readiness, socks5AddressOf(proxy)]) {
        assert.ok(listener.startsWith(`${base}.4:`), listener);
      }
      assert.equal((await httpGet(proxy.addresses.admin, "/config_dump")).status, 200);
      // Not on the node IP: in a pod, that is the address every other pod reaches.
      const onNodeIp = connect({ host: `${base}.4`, port: Number(adminPort) });
      const [err] = (await once(onNodeIp, "error")) as [NodeJS.ErrnoException];
      assert.equal(err.code, "ECONNREFUSED");
    } finally {
      await proxy.close();
    }
  });

  it("passes non-mesh destinations through as plain TCP", async () => {
    const port = (plain.address() as AddressInfo).port;
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.plain, port);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    const received = readAll(socket);
    socket.end("plain");
    assert.equal(await received, "plain.");
    socket.destroy();
  });

  it("answers an app port that refuses with reply 5, and both sides name the errno", async () => {
    // A port of the echo pod nobody listens on: node-b's connect to it is refused.
    const closed = createServer();
    closed.listen(0, ip.echo);
    await once(closed, "listening");
    const { port } = closed.address() as AddressInfo;
    await new Promise((done) => closed.close(done));
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.echo, port);
    socket.destroy();
    assert.equal(reply, SOCKS5_REPLY.connectionRefused);
    const failures = { direction: "inbound", errno: "ECONNREFUSED" };
    assert.equal(counterValue(await mesh.nodeB.metricsText(), "ztunnel_connect_failures_total", failures), 1);
    const flagged = { reporter: "destination", response_flags: "CONNECT", source_workload: "sleep" };
    assert.equal(
      counterValue(await mesh.nodeB.metricsText(), "istio_tcp_connections_closed_total", flagged),
      1,
    );
    assert.equal(
      counterValue(await mesh.nodeA.metricsText(), "ztunnel_connect_failures_total", {
        direction: "outbound",
        errno: "ECONNREFUSED",
      }),
      1,
    );
    assert.ok(
      warnings.some(
        (w) => w.startsWith("inbound upstream dial failed") && w.includes('"errno":"ECONNREFUSED"'),
      ),
      warnings.join("\n"),
    );
  });

  it("reports Istio TCP metrics on both sides", async () => {
    const source = await mesh.nodeA.metricsText();
    const destination = await mesh.nodeB.metricsText();
    const outbound = { reporter: "source", source_workload: "sleep", destination_workload: "echo" };
    const inbound = {
      reporter: "destination",
      source_principal: "spiffe://cluster.local/ns/default/sa/sleep",
      destination_workload: "echo",
      destination_service: echoHost,
      destination_service_name: "echo",
      destination_service_namespace: "default",
      request_protocol: "tcp",
      response_flags: "-",
      connection_security_policy: "mutual_tls",
    };
    assert.ok(counterValue(source, "istio_tcp_connections_opened_total", outbound) >= 2);
    assert.ok(counterValue(source, "istio_tcp_connections_closed_total", outbound) >= 2);
    assert.ok(counterValue(destination, "istio_tcp_connections_opened_total", inbound) >= 2);
    // "hello through the mesh." + "by name" went each way.
    assert.ok(counterValue(destination, "istio_tcp_received_bytes_total", inbound) >= 29);
    assert.ok(counterValue(destination, "istio_tcp_sent_bytes_total", inbound) >= 29);
    assert.ok(counterValue(source, "istio_tcp_received_bytes_total", outbound) >= 29);
    assert.match(destination, /hbone_server_requests_total/);
    const scraped = await httpGet(mesh.nodeB.addresses.metrics, "/stats/prometheus");
    assert.equal(scraped.status, 200);
    assert.match(scraped.body, /istio_tcp_connections_opened_total/);
  });

  it("adds an open connection's bytes to the TCP metrics while it is open", { timeout: 20_000 }, async () => {
    const inbound = { reporter: "destination", source_workload: "sleep", response_flags: "-" };
    const received = async () =>
      counterValue(await mesh.nodeB.metricsText(), "istio_tcp_received_bytes_total", inbound);
    const before = await received();
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    try {
      socket.write("x".repeat(1000));
      // Reported within one 5 s period, with the connection still open.
      const deadline = Date.now() + 8000;
      while ((await received()) < before + 1000 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(await received(), before + 1000);
      assert.equal(socket.destroyed, false);
    } finally {
      socket.destroy();
    }
  });

  it("starts and stops a pod's listener as the pod comes and goes", async () => {
    const lateIp = `${base}.14`;
    const late = await echoServer(lateIp);
    try {
      const port = (late.address() as AddressInfo).port;
      const uid = "Kubernetes//Pod/default/late";
      mesh.cp.setWorkload(workload("late", "default", "node-b", lateIp));
      const listening = () => mesh.nodeB.configDump().localPods.some((p) => p.ip === lateIp && p.listening);
      await until(listening);
      // node-a, where the call starts, must know the workload too: to a proxy that does not, the
      // address is outside the mesh and the call goes straight to it as plain TCP.
      const address = ipBytes(lateIp);
      const knownOnA = () =>
        mesh.nodeA
          .configDump()
          .workloads.some((w) => w.addresses.some((a) => Buffer.from(a).equals(address)));
      await until(knownOnA);
      const inboundToLate = {
        reporter: "destination",
        destination_workload: "late",
        connection_security_policy: "mutual_tls",
      };
      const opened = async () =>
        counterValue(await mesh.nodeB.metricsText(), "istio_tcp_connections_opened_total", inboundToLate);
      const openedBefore = await opened();
      const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, lateIp, port);
      assert.equal(reply, SOCKS5_REPLY.succeeded);
      const received = readAll(socket);
      socket.end("late");
      assert.equal(await received, "late.");
      // Through node-b's new listener over HBONE, not around it: node-b counted one mTLS connection in.
      assert.equal(await opened(), openedBefore + 1, "node-b took the call in over HBONE");
      socket.destroy();
      const connections = mesh.nodeB.configDump().connections;
      assert.ok(connections.every((c) => c.destination !== `${lateIp}:${port}`));
      mesh.cp.removeWorkload(uid);
      await until(() => !mesh.nodeB.configDump().localPods.some((p) => p.ip === lateIp));
      assert.ok(mesh.nodeB.configDump().certificates.every((c) => !c.identity.endsWith("/sa/late")));
    } finally {
      late.close();
    }
  });

  it("closes an open connection when a DENY policy arrives", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    socket.on("error", () => {});
    const first = once(socket, "data");
    socket.write("ping");
    assert.equal(String((await first)[0]), "ping");
    // The proxy resets the connection: "close" comes, maybe after an ECONNRESET "error".
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    mesh.cp.applyPolicy(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-sleep, namespace: default }
spec:
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/default/sa/sleep"] } }]
`);
    await closed;
    assert.ok(
      logs.some((l) => l.startsWith("open connection denied by default/deny-sleep")),
      logs.join("\n"),
    );
    const again = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    again.socket.destroy();
    assert.equal(again.reply, SOCKS5_REPLY.notAllowed);
  });
});
