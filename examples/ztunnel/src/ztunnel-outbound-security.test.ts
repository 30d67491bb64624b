import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { startNodeZtunnel, startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { ipBytes, loopbackSubnet, socksConnect, testService, testWorkload } from "../test/fixtures.js";
import { encodeGreeting, SOCKS5_REPLY } from "./socks5.js";
import { type RunningZtunnel, socks5AddressOf } from "./ztunnel.js";

// Where the outbound decision must fail closed: a pod listed by its IPv6 address first, a Service
// endpoint of another network, a pod of another network reusing a local address, the proxy itself.
const base = loopbackSubnet();
const ip = {
  node: `${base}.1`,
  sleep: `${base}.11`,
  echo: `${base}.12`,
  web6: `${base}.13`,
  waypoint: `${base}.14`,
  web6w: `${base}.15`,
  remote: `${base}.20`,
  vip: `${base}.100`,
};
/** `fd00::<last>`: an IPv6 address as workload address bytes. */
const v6 = (last: number) => Uint8Array.from([0xfd, 0, ...new Array<number>(13).fill(0), last]);
const echoKey = "demo/echo.demo.svc.cluster.local";

/** A TCP server on `host` that counts connections and keeps what it is sent. */
async function appServer(host: string) {
  const seen = { connections: 0, bytes: "" };
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    seen.connections++;
    socket.on("error", () => {});
    socket.on("data", (c: Buffer) => {
      seen.bytes += c.toString("latin1");
    });
    socket.once("end", () => socket.end());
  });
  server.listen(0, host);
  await once(server, "listening");
  return { server, seen, port: (server.address() as AddressInfo).port };
}

/** Lets a refused or dialled connection play out, then closes the client's end. */
async function settle(socket: Socket): Promise<void> {
  await new Promise((r) => setTimeout(r, 200));
  socket.destroy();
}

describe("ztunnel outbound fails closed", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let ztunnel: RunningZtunnel;
  let echo: Awaited<ReturnType<typeof appServer>>;
  let web6: Awaited<ReturnType<typeof appServer>>;
  let web6w: Awaited<ReturnType<typeof appServer>>;
  let remote: Awaited<ReturnType<typeof appServer>>;
  const socks = (host: string, port: number) => socksConnect(socks5AddressOf(ztunnel), ip.sleep, host, port);

  before(async () => {
    cp = await startTestControlPlane();
    echo = await appServer(ip.echo);
    web6 = await appServer(ip.web6);
    web6w = await appServer(ip.web6w);
    remote = await appServer(ip.remote);
    const pod = (name: string, address: string, extra: Parameters<typeof testWorkload>[3] = {}) =>
      testWorkload(name, "node-a", address, { namespace: "demo", ...extra });
    const servesEcho = (port: number) => ({
      [echoKey]: { ports: [{ servicePort: 80, targetPort: port, appProtocol: "TCP" as const }] },
    });
    const waypoint = { address: { network: "", address: ipBytes(ip.waypoint) }, hboneMtlsPort: 15008 };
    cp.setWorkload(pod("sleep", ip.sleep));
    cp.setWorkload(pod("echo-0", ip.echo, { services: servesEcho(echo.port) }));
    // HBONE pods of another node (no proxy listens there), dual-stack with the IPv6 address first.
    cp.setWorkload(pod("waypoint", ip.waypoint, { node: "node-b" }));
    cp.setWorkload(pod("web6", ip.web6, { node: "node-b", addresses: [v6(0x13), ipBytes(ip.web6)] }));
    cp.setWorkload(
      pod("web6w", ip.web6w, { node: "node-b", addresses: [v6(0x15), ipBytes(ip.web6w)], waypoint }),
    );
    // An endpoint of echo on another network, with no network gateway; plain TCP, so a direct dial
    // would reach its listener.
    cp.setWorkload(
      pod("echo-remote", ip.remote, {
        node: "node-z",
        network: "net2",
        tunnelProtocol: "NONE",
        services: servesEcho(remote.port),
      }),
    );
    cp.setService(
      testService("echo", ip.vip, [{ servicePort: 80, targetPort: 0, appProtocol: "TCP" }], {
        namespace: "demo",
      }),
    );
    ztunnel = await startNodeZtunnel(cp, ip.node);
  });

  after(async () => {
    await ztunnel?.close();
    await cp?.close();
    for (const s of [echo, web6, web6w, remote]) s?.server.close();
  });

  it("never sends plaintext to an HBONE pod whose first address is IPv6", async () => {
    const { socket, reply } = await socks(ip.web6, web6.port);
    socket.end("PLAINTEXT");
    await settle(socket);
    assert.notEqual(reply, SOCKS5_REPLY.succeeded, "its HBONE port has no listener: the connect fails");
    assert.deepEqual(web6.seen, { connections: 0, bytes: "" });
  });

  it("never goes around the waypoint of such a pod", async () => {
    const { socket, reply } = await socks(ip.web6w, web6w.port);
    socket.end("AROUND-THE-WAYPOINT");
    await settle(socket);
    assert.notEqual(reply, SOCKS5_REPLY.succeeded, "the waypoint has no listener: the connect fails");
    assert.deepEqual(web6w.seen, { connections: 0, bytes: "" });
  });

  it("never dials a Service endpoint of another network that has no gateway", async () => {
    for (let i = 0; i < 4; i++) {
      const { socket, reply } = await socks(ip.vip, 80);
      assert.equal(reply, SOCKS5_REPLY.succeeded);
      socket.end("x");
      await once(socket, "close");
    }
    assert.equal(remote.seen.connections, 0);
    assert.equal(echo.seen.connections, 4);
  });

  it("keeps a local pod's address when a pod of another network reuses it", async () => {
    cp.setWorkload(
      testWorkload("echo-twin", "node-z", ip.echo, {
        namespace: "demo",
        network: "net2",
        serviceAccount: "other",
      }),
    );
    for (let i = 0; !ztunnel.configDump().workloads.some((w) => w.name === "echo-twin"); i++) {
      assert.ok(i < 100, "the twin never arrived");
      await new Promise((r) => setTimeout(r, 20));
    }
    const { socket, reply } = await socks(ip.echo, echo.port);
    socket.destroy();
    assert.equal(reply, SOCKS5_REPLY.succeeded);
  });

  it("refuses a CONNECT to its own SOCKS5 listener with reply 2, and answers no nested greeting", async () => {
    const [host, port] = socks5AddressOf(ztunnel).split(":");
    const { socket, reply } = await socks(host as string, Number(port));
    let nested = Buffer.alloc(0);
    socket.on("data", (c: Buffer) => {
      nested = Buffer.concat([nested, c]);
    });
    socket.on("error", () => {});
    if (!socket.destroyed) socket.write(encodeGreeting());
    await settle(socket);
    assert.equal(reply, SOCKS5_REPLY.notAllowed);
    assert.equal(nested.length, 0);
  });
});
