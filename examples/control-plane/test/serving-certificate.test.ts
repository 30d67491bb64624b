// The control plane's serving certificate is accepted by a client that verifies the host name, as
// Istio's ztunnel does for `istiod.istio-system.svc`: Node's TLS check and `openssl verify`.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { checkServerIdentity, connect, type PeerCertificate } from "node:tls";
import "reflect-metadata";
import { createXdsClient, TypeUrl } from "@ambient/xds";
import * as x509 from "@peculiar/x509";
import { type ControlPlane, controlPlaneChannel, startControlPlane } from "../src/index.js";

const ISTIOD = "istiod.istio-system.svc";

/** A TLS handshake that checks the server the way ztunnel does: the mesh root and the host name. */
function handshake(controlPlane: ControlPlane): Promise<{ peer: PeerCertificate; authorized: boolean }> {
  const colon = controlPlane.address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: controlPlane.address.slice(0, colon),
      port: Number(controlPlane.address.slice(colon + 1)),
      servername: ISTIOD,
      ca: controlPlane.rootCertPem,
      ALPNProtocols: ["h2"],
    });
    socket.once("secureConnect", () => {
      resolve({ peer: socket.getPeerCertificate(), authorized: socket.authorized });
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

describe("serving certificate", { timeout: 30_000 }, () => {
  let dir: string;
  let controlPlane: ControlPlane;
  let peer: PeerCertificate;
  let authorized: boolean;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "cp-serving-"));
    await writeFile(join(dir, "empty.yaml"), "");
    controlPlane = await startControlPlane({
      meshDir: join(dir),
      listen: "127.0.0.1:0",
      servingHosts: ["istiod.mesh.example", "127.0.0.2"],
      watch: false,
    });
    ({ peer, authorized } = await handshake(controlPlane));
  });

  after(async () => {
    await controlPlane?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("has istiod's SPIFFE ID as its one URI SAN, and the DNS names and IPs clients dial", () => {
    const [leafPem] =
      controlPlane.servingCertPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ??
      [];
    assert.ok(leafPem);
    const leaf = new x509.X509Certificate(leafPem);
    const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
    assert.ok(san?.critical, "the subject is empty, so the SAN is critical");
    const names = san.names.toJSON();
    assert.deepEqual(
      names.filter((n) => n.type === "url").map((n) => n.value),
      ["spiffe://cluster.local/ns/istio-system/sa/istiod"],
    );
    assert.deepEqual(
      names.filter((n) => n.type === "dns").map((n) => n.value),
      [ISTIOD, "istiod.mesh.example"],
    );
    assert.deepEqual(
      names.filter((n) => n.type === "ip").map((n) => n.value),
      ["127.0.0.1", "127.0.0.2"],
    );
  });

  it("passes Node's host name check for istiod.istio-system.svc over a real handshake", () => {
    assert.equal(authorized, true);
    assert.equal(checkServerIdentity(ISTIOD, peer), undefined);
    assert.equal(checkServerIdentity("istiod.mesh.example", peer), undefined);
    assert.ok(checkServerIdentity("istiod.other.svc", peer) instanceof Error);
  });

  it("passes openssl verify -verify_hostname against the mesh root", async () => {
    const blocks =
      controlPlane.servingCertPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ??
      [];
    const [leaf, ...rest] = blocks;
    assert.ok(leaf);
    await writeFile(join(dir, "leaf.pem"), `${leaf}\n`);
    await writeFile(join(dir, "chain.pem"), `${rest.join("\n")}\n`);
    await writeFile(join(dir, "root.pem"), controlPlane.rootCertPem);
    const verify = (host: string) =>
      spawnSync(
        "openssl",
        [
          "verify",
          "-CAfile",
          join(dir, "root.pem"),
          "-untrusted",
          join(dir, "chain.pem"),
          "-purpose",
          "sslserver",
          "-verify_hostname",
          host,
          join(dir, "leaf.pem"),
        ],
        { encoding: "utf8" },
      );
    const ok = verify(ISTIOD);
    assert.equal(ok.status, 0, ok.stderr + ok.stdout);
    assert.match(ok.stdout, /OK/);
    const ip = spawnSync(
      "openssl",
      [
        "verify",
        "-CAfile",
        join(dir, "root.pem"),
        "-untrusted",
        join(dir, "chain.pem"),
        "-verify_ip",
        "127.0.0.2",
        join(dir, "leaf.pem"),
      ],
      { encoding: "utf8" },
    );
    assert.equal(ip.status, 0, ip.stderr + ip.stdout);
    const wrong = verify("istiod.other.svc");
    assert.notEqual(wrong.status, 0);
    assert.match(wrong.stderr + wrong.stdout, /hostname mismatch/);
  });
});

describe("serving certificate renewal", { timeout: 30_000 }, () => {
  it("gives new connections the renewed certificate while open streams carry on", async () => {
    const dir = await mkdtemp(join(tmpdir(), "cp-renew-"));
    const gauges = new Map<string, number>();
    const logged: string[] = [];
    const quiet = () => {};
    const controlPlane = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      watch: false,
      xdsDebounceMs: 5,
      servingCertTtlSeconds: 3,
      logger: { debug: quiet, warn: quiet, error: quiet, info: (_f, m) => logged.push(m ?? "") },
      metrics: {
        counter: () => ({ inc: quiet }),
        histogram: () => ({ observe: quiet }),
        gauge: (name) => ({
          set: (_labels, value) => gauges.set(name, value),
          inc: quiet,
          dec: quiet,
        }),
      },
    });
    const client = createXdsClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      node: { id: "ztunnel~127.20.0.1~ztunnel-node-a.istio-system~istio-system.svc.cluster.local" },
      headers: { authorization: `Bearer ${await controlPlane.tokenFor("node-a")}` },
    });
    try {
      client.watch(TypeUrl.address);
      await client.ready();
      const leafOf = (pem: string) =>
        new x509.X509Certificate(
          (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [])[0] as string,
        );
      const first = leafOf(controlPlane.servingCertPem);
      assert.equal(
        (await handshake(controlPlane)).peer.serialNumber.toLowerCase(),
        first.serialNumber.toLowerCase(),
      );
      const expiry = "ambient_control_plane_serving_cert_expiry_timestamp_seconds";
      assert.equal(gauges.get(expiry), first.notAfter.getTime() / 1000);

      // Renewed at half its life (1.5 s): new handshakes get the new one, verified as before.
      const deadline = Date.now() + 10_000;
      while (leafOf(controlPlane.servingCertPem).serialNumber === first.serialNumber) {
        assert.ok(Date.now() < deadline, "timed out waiting for the renewal");
        await new Promise((r) => setTimeout(r, 50));
      }
      const second = leafOf(controlPlane.servingCertPem);
      const { peer } = await handshake(controlPlane);
      assert.equal(peer.serialNumber.toLowerCase(), second.serialNumber.toLowerCase());
      assert.equal(checkServerIdentity(ISTIOD, peer), undefined);
      assert.equal(gauges.get(expiry), second.notAfter.getTime() / 1000);
      assert.ok(logged.includes("serving certificate renewed"));

      // The stream opened before the renewal still gets pushes.
      const pushed = new Promise<void>((resolve) => {
        const off = client.onChange((event) => {
          if (event.added.some((r) => r.name.endsWith("/late-0"))) {
            off();
            resolve();
          }
        });
      });
      await writeFile(
        join(dir, "late.yaml"),
        "kind: Pod\nmetadata: { name: late-0, namespace: demo }\nspec: { nodeName: node-a }\nstatus: { podIP: 127.10.0.42 }\n",
      );
      await controlPlane.reload();
      await pushed;
    } finally {
      client.close();
      await controlPlane.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses a lifetime under a second", async () => {
    for (const servingCertTtlSeconds of [0, 0.5, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(
        startControlPlane({ meshDir: tmpdir(), listen: "127.0.0.1:0", watch: false, servingCertTtlSeconds }),
        { code: "ERR_CONTROL_PLANE_CONFIG" },
        String(servingCertTtlSeconds),
      );
    }
  });
});
