// A CA root rotation through real ztunnels, across the old root's expiry. The control plane starts
// with a root that has seconds to live; the ztunnels are given only that root. The control plane
// re-issues its root (same key, as istiod), the ztunnels renew their certificates (capped at the old
// root's expiry, so due at once) and learn the new root from the CA's answers; after the old root has
// expired, a connection from an identity that never connected before (a new TLS handshake on both
// sides) still goes through.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import {
  loopbackSubnet,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();
const OLD_ROOT_SECONDS_LEFT = 20;

function manifests(): string {
  return `
${shopWithWaypoint(ip(6))}
---
apiVersion: v1
kind: Pod
metadata: { name: early, namespace: shop }
spec: { nodeName: node-a, serviceAccountName: early }
status: { podIP: ${ip(2)} }
---
apiVersion: v1
kind: Pod
metadata: { name: late, namespace: shop }
spec: { nodeName: node-a, serviceAccountName: late }
status: { podIP: ${ip(3)} }
---
apiVersion: v1
kind: Pod
metadata: { name: echo, namespace: shop }
spec: { nodeName: node-b, serviceAccountName: echo }
status: { podIP: ${ip(4)} }
`;
}

describe("CA root rotation through the ztunnels", { timeout: 120_000 }, () => {
  let mesh: TestMesh;
  let echo: Server;
  let port = 0;
  let oldRootPem = "";
  let oldRootExpires = 0;
  let stateDir = "";

  before(async () => {
    echo = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", (chunk: Buffer) => socket.end(`echo: ${chunk.toString()}`));
    });
    echo.listen(0, ip(4));
    await once(echo, "listening");
    port = (echo.address() as AddressInfo).port;

    // The control plane's state directory holds a self-signed root made 200 s ago that expires soon.
    const made = await createCertificateAuthority({
      clock: () => new Date(Date.now() - 200_000),
      rootTtlSeconds: 200 + OLD_ROOT_SECONDS_LEFT,
    });
    const old = made.exportCacerts();
    oldRootPem = old.rootCertPem;
    oldRootExpires = Date.parse(new X509Certificate(oldRootPem).validTo);
    stateDir = await mkdtemp(join(tmpdir(), "waypoint-root-rotation-state-"));
    await mkdir(join(stateDir, "ca"), { recursive: true });
    await writeFile(join(stateDir, "ca", "ca-cert.pem"), old.caCertPem);
    await writeFile(join(stateDir, "ca", "ca-key.pem"), old.caKeyPem, { mode: 0o600 });
    await writeFile(join(stateDir, "ca", "root-cert.pem"), old.rootCertPem);
    mesh = await startTestMesh({
      manifests: manifests(),
      tempPrefix: "waypoint-root-rotation-",
      nodeIps: [ip(20), ip(21)],
      controlPlane: { watch: false, podCidrs: [cidr], stateDir, rootRotation: false },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        ports: { admin: 0, metrics: 0, readiness: 0 },
        accessLog: false,
      },
    });
  });

  after(async () => {
    await mesh?.close();
    echo?.close();
    if (stateDir !== "") await rm(stateDir, { recursive: true, force: true });
  });

  const say = async (from: string, text: string): Promise<string> => {
    const c = await socks5Dial({ proxy: mesh.socks5, from, to: `${ip(4)}:${port}` });
    const closed = once(c.socket, "close");
    c.socket.write(text);
    await closed;
    return c.text();
  };

  it("keeps connections working across the re-issue and the old root's expiry", async () => {
    assert.equal(mesh.controlPlane.rootCertPem, oldRootPem, "the ztunnels were given the old root only");
    assert.ok(oldRootExpires - Date.now() > 5_000, "the old root still has a few seconds");
    assert.equal(await say(ip(2), "before"), "echo: before");

    await mesh.controlPlane.rotateRoot();
    assert.equal(await say(ip(2), "after the re-issue"), "echo: after the re-issue");

    // Past the old root's expiry, a peer that trusts only the old root refuses echo's ztunnel.
    await new Promise((r) => setTimeout(r, Math.max(0, oldRootExpires - Date.now() + 1_500)));
    const refused = await new Promise<string>((resolve) => {
      const socket = tls.connect({
        host: ip(4),
        port: 15008,
        ca: oldRootPem,
        ALPNProtocols: ["h2"],
        checkServerIdentity: () => undefined,
      });
      socket.once("secureConnect", () => {
        socket.destroy();
        resolve("connected");
      });
      socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    assert.equal(refused, "CERT_HAS_EXPIRED");

    // The ztunnels were configured with that root alone; what they learned from the CA lets a new
    // identity's first tunnel through, both handshakes under the new root.
    assert.equal(await say(ip(3), "after the old root expired"), "echo: after the old root expired");
    assert.equal(await say(ip(2), "and the early pod"), "echo: and the early pod");
  });
});
