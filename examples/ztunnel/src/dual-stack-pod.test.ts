// A local pod listed with its IPv6 address first (an IPv6-primary dual-stack cluster): this proxy
// carries IPv4, so it serves the pod at its IPv4 address, whatever the order of its addresses.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { startNodeZtunnel, startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { ipBytes, loopbackSubnet, socksConnect, testWorkload } from "../test/fixtures.js";
import { SOCKS5_REPLY } from "./socks5.js";
import { type RunningZtunnel, socks5AddressOf } from "./ztunnel.js";

const base = loopbackSubnet();
const ip = { node: `${base}.1`, sleep: `${base}.11`, echo: `${base}.12` };
/** `fd00::<last>` as workload address bytes. */
const v6 = (last: number) => Uint8Array.from([0xfd, 0, ...new Array<number>(13).fill(0), last]);

describe("a local pod listed IPv6-first", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let ztunnel: RunningZtunnel;
  let app: Server;

  before(async () => {
    cp = await startTestControlPlane();
    app = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", (d: Buffer) => socket.end(`echo ${d}`));
    });
    app.listen(0, ip.echo);
    await once(app, "listening");
    const dualStack = (name: string, address: string, last: number) =>
      testWorkload(name, "node-a", address, { namespace: "demo", addresses: [v6(last), ipBytes(address)] });
    cp.setWorkload(dualStack("sleep", ip.sleep, 0x11));
    cp.setWorkload(dualStack("echo-0", ip.echo, 0x12));
    ztunnel = await startNodeZtunnel(cp, ip.node);
  });

  after(async () => {
    await ztunnel?.close();
    await cp?.close();
    app?.close();
  });

  it("is served at its IPv4 address, as source and as destination", async () => {
    const port = (app.address() as AddressInfo).port;
    const { socket, reply } = await socksConnect(socks5AddressOf(ztunnel), ip.sleep, ip.echo, port);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.write("ping");
    await once(socket, "end");
    socket.destroy();
    assert.equal(Buffer.concat(chunks).toString(), "echo ping");
    // Tunnelled: the destination pod's HBONE listener took it.
    const metrics = await ztunnel.metricsText();
    assert.match(metrics, /istio_tcp_connections_opened_total\{[^}]*reporter="destination"[^}]*\} [1-9]/);
  });
});
