// A mesh installed with another trust domain than cluster.local (meshConfig trustDomain): every identity,
// the control plane's included, is spiffe://example.org/... The ztunnel must be told
// (`trustDomain`, CLI `--trust-domain`, else ztunnel's TRUST_DOMAIN): it checks the control plane's
// certificate for istiod's identity in that domain, and refuses the control plane otherwise.
import assert from "node:assert/strict";
import type { AddressInfo, Server, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf, startZtunnel } from "../src/ztunnel.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import {
  configureSleepEcho,
  echoServer,
  loopbackSubnet,
  socksConnect,
  startTwoNodeMesh,
  type TwoNodeMesh,
  testWorkload,
} from "./fixtures.js";
import { runZtunnelProgram } from "./run-ztunnel.js";

const TRUST_DOMAIN = "example.org";

function readAll(socket: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    socket.on("data", (c: Buffer) => {
      text += c.toString();
    });
    socket.once("end", () => resolve(text));
    socket.once("error", reject);
  });
}

describe("a mesh in the trust domain example.org", { timeout: 90_000 }, () => {
  const subnet = loopbackSubnet();
  const ip = { sleep: `${subnet}.11`, echo: `${subnet}.12`, stranger: `${subnet}.13`, vip: `${subnet}.100` };
  let mesh: TwoNodeMesh;
  let echo: Server;

  before(async () => {
    echo = await echoServer(ip.echo);
    const echoPort = (echo.address() as AddressInfo).port;
    mesh = await startTwoNodeMesh({
      subnet,
      controlPlane: { trustDomain: TRUST_DOMAIN },
      configure: (cp) => configureSleepEcho(cp, ip, echoPort, TRUST_DOMAIN),
      ztunnel: { trustDomain: TRUST_DOMAIN },
    });
  });

  after(async () => {
    await mesh?.close();
    echo?.close();
  });

  it("gives each pod a certificate in that domain, and policy names its principals", async () => {
    const dump = (await (await fetch(`http://${mesh.nodeA.addresses.admin}/config_dump`)).json()) as {
      certificates: { identity: string }[];
    };
    assert.deepEqual(dump.certificates.map((c) => c.identity).sort(), [
      `spiffe://${TRUST_DOMAIN}/ns/default/sa/sleep`,
      `spiffe://${TRUST_DOMAIN}/ns/other/sa/stranger`,
    ]);
    const allowed = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(allowed.reply, SOCKS5_REPLY.succeeded);
    const received = readAll(allowed.socket);
    allowed.socket.end("across the mesh");
    assert.equal(await received, "across the mesh.");
    allowed.socket.destroy();
    const refused = await socksConnect(socks5AddressOf(mesh.nodeA), ip.stranger, ip.vip, 80);
    refused.socket.destroy();
    assert.equal(refused.reply, SOCKS5_REPLY.notAllowed);
  });

  it("a ztunnel told nothing refuses that control plane's certificate and never becomes ready", async () => {
    const warnings: string[] = [];
    const ignore = () => {};
    const node = await startZtunnel({
      controlPlaneAddress: mesh.cp.address,
      rootCertPem: mesh.cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      nodeName: "node-a",
      nodeIp: `${subnet}.3`,
      token: await mesh.cp.tokenFor("node-a"),
      logger: {
        debug: ignore,
        info: ignore,
        warn: (fields: object, msg?: string) => warnings.push(`${msg ?? ""} ${JSON.stringify(fields)}`),
        error: (fields: object, msg?: string) => warnings.push(`${msg ?? ""} ${JSON.stringify(fields)}`),
      },
    });
    try {
      const ready = await Promise.race([
        node.ready.then(() => true),
        new Promise<false>((resolve) => setTimeout(() => resolve(false), 4000)),
      ]);
      assert.equal(ready, false);
      assert.ok(
        warnings.some((w) =>
          /SVID spiffe:\/\/example\.org\/ns\/istio-system\/sa\/istiod .* no roots/.test(w),
        ),
        warnings.join("\n"),
      );
    } finally {
      await node.close();
    }
  });
});

describe("the ztunnel program's trust domain", { timeout: 90_000 }, () => {
  const { TRUST_DOMAIN: _unset, ...environment } = process.env;
  let cp: TestControlPlane;
  const subnet = loopbackSubnet();

  before(async () => {
    cp = await startTestControlPlane({ trustDomain: TRUST_DOMAIN });
    cp.setWorkload(testWorkload("sleep", "node-a", `${subnet}.10`, { trustDomain: TRUST_DOMAIN }));
  });

  after(async () => {
    await cp?.close();
  });

  for (const [how, args, env] of [
    ["--trust-domain", ["--trust-domain", TRUST_DOMAIN], {}],
    ["TRUST_DOMAIN", [], { TRUST_DOMAIN }],
  ] as const) {
    it(`told by ${how}, it is ready with its pod's certificate in that domain`, async () => {
      const run = await runZtunnelProgram(cp, `${subnet}.1`, [...args], { ...environment, ...env });
      assert.ok(run.ready, run.out);
      assert.deepEqual(
        run.dump?.certificates.map((c) => c.identity),
        [`spiffe://${TRUST_DOMAIN}/ns/default/sa/sleep`],
      );
    });
  }

  it("stops at once on a trust domain that is not one, saying why", async () => {
    const run = await runZtunnelProgram(cp, `${subnet}.1`, ["--trust-domain", "Example.org"], environment);
    assert.equal(run.ready, false);
    assert.match(run.out, /--trust-domain is not a trust domain/);
  });
});
