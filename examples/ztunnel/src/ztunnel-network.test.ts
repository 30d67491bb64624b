// A node on a named network (`network` option, ztunnel's NETWORK): the control plane gives its pods
// that network, and the proxy finds them, and their Service's endpoints, on it.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { startNodeZtunnel, startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { ipBytes, loopbackSubnet, socksConnect, testService, testWorkload } from "../test/fixtures.js";
import { SOCKS5_REPLY } from "./socks5.js";
import { type RunningZtunnel, socks5AddressOf } from "./ztunnel.js";

const base = loopbackSubnet();
const ip = { node: `${base}.1`, sleep: `${base}.11`, echo: `${base}.12`, vip: `${base}.100` };
const NETWORK = "net-a";

describe("ztunnel on a named network", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let app: Server;
  const running: RunningZtunnel[] = [];

  before(async () => {
    cp = await startTestControlPlane();
    app = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", (d: Buffer) => socket.end(`echo ${d}`));
    });
    app.listen(0, ip.echo);
    await once(app, "listening");
    const port = (app.address() as AddressInfo).port;
    const key = "demo/echo.demo.svc.cluster.local";
    cp.setWorkload(testWorkload("sleep", "node-a", ip.sleep, { namespace: "demo", network: NETWORK }));
    cp.setWorkload(
      testWorkload("echo-0", "node-a", ip.echo, {
        namespace: "demo",
        network: NETWORK,
        services: { [key]: { ports: [{ servicePort: 80, targetPort: port, appProtocol: "TCP" }] } },
      }),
    );
    cp.setService(
      testService("echo", ip.vip, [{ servicePort: 80, targetPort: port, appProtocol: "TCP" }], {
        namespace: "demo",
        addresses: [{ network: NETWORK, address: ipBytes(ip.vip) }],
      }),
    );
  });

  after(async () => {
    await Promise.all(running.map((z) => z.close()));
    await cp?.close();
    app?.close();
  });

  const start = async (network?: string): Promise<RunningZtunnel> => {
    const ztunnel = await startNodeZtunnel(cp, ip.node, network === undefined ? {} : { network });
    running.push(ztunnel);
    return ztunnel;
  };

  const echoThrough = async (ztunnel: RunningZtunnel, host: string, port: number) => {
    const { socket, reply } = await socksConnect(socks5AddressOf(ztunnel), ip.sleep, host, port);
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    if (reply === SOCKS5_REPLY.succeeded) {
      socket.write("ping");
      await once(socket, "end");
    }
    socket.destroy();
    return { reply, text: Buffer.concat(chunks).toString() };
  };

  it("serves its pods and their Service on the network it is told", async () => {
    const ztunnel = await start(NETWORK);
    assert.deepEqual(await echoThrough(ztunnel, ip.vip, 80), {
      reply: SOCKS5_REPLY.succeeded,
      text: "echo ping",
    });
    const port = (app.address() as AddressInfo).port;
    assert.deepEqual(await echoThrough(ztunnel, ip.echo, port), {
      reply: SOCKS5_REPLY.succeeded,
      text: "echo ping",
    });
    // The next proxy serves the same node (and would take the same pod addresses).
    await ztunnel.close();
  });

  it("does not take pods of another network for its own", async () => {
    // Told no network: the pods the control plane places on net-a are not this node's to serve.
    const ztunnel = await start();
    const { reply } = await echoThrough(ztunnel, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.notAllowed);
  });
});
