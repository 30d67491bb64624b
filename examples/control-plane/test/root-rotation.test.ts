// The control plane's own CA root, re-issued for its key as istiod rotates its self-signed root: the
// new root signs, both are on disk and in every CA answer, the serving certificate moves to the new
// root, and clients that know only one of the two roots keep working, whichever it is.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateKeyPair } from "@ambient/spiffe";
import { createCertificateAuthority, createCertificateServiceClient, createCsr } from "@ambient/spiffe/ca";
import { createPromClientSink } from "@ambient/telemetry";
import * as prom from "prom-client";
import {
  type ControlPlane,
  ControlPlaneError,
  type ControlPlaneOptions,
  controlPlaneChannel,
  startControlPlane,
} from "../src/index.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
const ECHO_ID = "spiffe://cluster.local/ns/demo/sa/echo";
const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n/g;

function blocks(pem: string): string[] {
  return pem.match(PEM_BLOCK) ?? [];
}

/** A certificate for echo (node-b) from `cp`, over a channel that trusts only `rootsPem`. */
async function requestSvid(cp: ControlPlane, rootsPem: string): Promise<string[]> {
  const client = createCertificateServiceClient({
    address: cp.address,
    ...controlPlaneChannel(rootsPem),
    token: await cp.tokenFor("node-b"),
  });
  try {
    const keys = await generateKeyPair();
    const csr = await createCsr({ spiffeId: ECHO_ID, privateKeyPem: keys.privateKeyPem });
    return await client.createCertificate(csr, { impersonatedIdentity: ECHO_ID });
  } finally {
    client.close();
  }
}

describe("control plane root rotation", { timeout: 60_000 }, () => {
  let dir: string;
  let meshDir: string;
  const planes: ControlPlane[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-rotation-"));
    meshDir = join(dir, "mesh");
    await cp(DEMO_MESH, meshDir, { recursive: true, filter: (src) => !/(web|waypoint)\.yaml$/.test(src) });
  });
  after(async () => {
    await Promise.allSettled(planes.map((p) => p.close()));
    await rm(dir, { recursive: true, force: true });
  });

  const start = async (options: Partial<ControlPlaneOptions>): Promise<ControlPlane> => {
    const plane = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      watch: false,
      extraNodes: [],
      ...options,
    });
    planes.push(plane);
    return plane;
  };

  /** `openssl verify` of a leaf (with its chain's middle) against `rootsPem` alone. */
  const opensslVerify = async (name: string, chain: string[], rootsPem: string): Promise<string> => {
    const work = join(dir, "openssl");
    await mkdir(work, { recursive: true });
    await writeFile(join(work, `${name}-roots.pem`), rootsPem);
    await writeFile(join(work, `${name}-leaf.pem`), chain[0] as string);
    return execFileSync("openssl", ["verify", "-CAfile", `${name}-roots.pem`, `${name}-leaf.pem`], {
      cwd: work,
      encoding: "utf8",
      timeout: 20_000,
    });
  };

  it("re-issues its root for the same key: on disk, in CA answers, in the serving certificate, after a restart", async () => {
    const stateDir = join(dir, "state-manual");
    const registry = new prom.Registry();
    const first = await start({
      stateDir,
      rootRotation: false,
      metrics: createPromClientSink(prom, registry),
    });
    const oldRoot = first.rootCertPem;
    assert.equal(blocks(oldRoot).length, 1);
    const before = await requestSvid(first, oldRoot);
    assert.equal(before.at(-1), oldRoot);
    const keyBefore = await readFile(join(stateDir, "ca", "ca-key.pem"), "utf8");
    const expiry = async () =>
      Number(
        /^citadel_server_root_cert_expiry_timestamp (\S+)$/m.exec(await registry.metrics())?.[1] ??
          Number.NaN,
      );
    assert.equal(await expiry(), Date.parse(new X509Certificate(oldRoot).validTo) / 1000);

    await first.rotateRoot();
    const both = first.rootCertPem;
    const [kept, newRoot] = blocks(both) as [string, string];
    assert.equal(kept, oldRoot);
    assert.notEqual(newRoot, oldRoot);
    assert.equal(new X509Certificate(newRoot).subject, new X509Certificate(oldRoot).subject);
    // The state directory has what a restart and the node agents need.
    assert.equal(await readFile(join(stateDir, "root-cert.pem"), "utf8"), both);
    assert.equal(await readFile(join(stateDir, "ca", "root-cert.pem"), "utf8"), both);
    assert.equal(await readFile(join(stateDir, "ca", "ca-cert.pem"), "utf8"), newRoot);
    assert.equal(await readFile(join(stateDir, "ca", "ca-key.pem"), "utf8"), keyBefore);
    assert.equal(await expiry(), Date.parse(new X509Certificate(newRoot).validTo) / 1000);
    // The serving certificate is under the new root now.
    const serving = new X509Certificate(first.servingCertPem.match(PEM_BLOCK)?.[0] as string);
    assert.ok(serving.checkIssued(new X509Certificate(newRoot)));

    // A client that knows only the old root, and one that knows only the new one, both reach it; the
    // answer lists both roots in its last element and its leaf verifies against either alone.
    for (const trusted of [oldRoot, newRoot]) {
      const chain = await requestSvid(first, trusted);
      assert.equal(chain.at(-1), both);
      assert.match(await opensslVerify("old", chain, oldRoot), /OK/);
      assert.match(await opensslVerify("new", chain, newRoot), /OK/);
    }
    // A certificate from before the rotation verifies against the new root alone.
    assert.match(await opensslVerify("before", before, newRoot), /OK/);
    await first.close();

    const second = await start({ stateDir, rootRotation: false });
    assert.equal(second.rootCertPem, both);
    assert.equal((await requestSvid(second, oldRoot)).at(-1), both);
    // Loaded back from the state directory, the root is still the control plane's own.
    await second.rotateRoot();
    assert.equal(blocks(second.rootCertPem).length, 3);
  });

  it("rotates a root inside its grace period by itself, at the first check", async () => {
    // A root made 200 s ago that lives 30 s more: far inside istiod's 20% grace period.
    const stateDir = join(dir, "state-due");
    const made = await createCertificateAuthority({
      clock: () => new Date(Date.now() - 200_000),
      rootTtlSeconds: 230,
    });
    const oldCacerts = made.exportCacerts();
    await mkdir(join(stateDir, "ca"), { recursive: true });
    await writeFile(join(stateDir, "ca", "ca-cert.pem"), oldCacerts.caCertPem);
    await writeFile(join(stateDir, "ca", "ca-key.pem"), oldCacerts.caKeyPem, { mode: 0o600 });
    await writeFile(join(stateDir, "ca", "root-cert.pem"), oldCacerts.rootCertPem);
    const plane = await start({ stateDir, rootRotation: { checkIntervalSeconds: 0.2 } });
    // Until the check, the serving certificate is capped at the old root's expiry.
    const deadline = Date.now() + 10_000;
    while (blocks(plane.rootCertPem).length < 2 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const [oldRoot, newRoot] = blocks(plane.rootCertPem) as [string, string];
    assert.equal(oldRoot, oldCacerts.rootCertPem);
    assert.ok(newRoot, "rotated within 10 s");
    // The new root lives the default 10 years, so it is not rotated again at the next checks.
    const years = (Date.parse(new X509Certificate(newRoot).validTo) - Date.now()) / (365 * 86_400_000);
    assert.ok(years > 9.9 && years < 10.1, `new root lives ${years} years`);
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(blocks(plane.rootCertPem).length, 2);
    const onDisk = async () => readFile(join(stateDir, "root-cert.pem"), "utf8");
    while ((await onDisk()) !== plane.rootCertPem && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await onDisk(), plane.rootCertPem);
    // The serving certificate was re-issued under the new root, for its full lifetime.
    const servingUntil = Date.parse(
      new X509Certificate(plane.servingCertPem.match(PEM_BLOCK)?.[0] as string).validTo,
    );
    assert.ok(servingUntil > Date.now() + 86_400_000, "serving certificate no longer capped at the old root");
    const chain = await requestSvid(plane, oldRoot);
    assert.equal(chain.at(-1), plane.rootCertPem);
    assert.match(await opensslVerify("due", chain, newRoot), /OK/);
  });

  it("never rotates a plugged-in CA, and checks its rotation options", async () => {
    const ca = await createCertificateAuthority();
    const plugged = await start({ cacerts: ca.exportCacerts() });
    await assert.rejects(
      plugged.rotateRoot(),
      (err: unknown) => err instanceof ControlPlaneError && err.code === "ERR_CONTROL_PLANE_STATE",
    );
    for (const rootRotation of [
      { checkIntervalSeconds: 0 },
      { gracePercent: 100 },
      { retireAfterSeconds: Number.NaN },
    ]) {
      await assert.rejects(
        start({ rootRotation }),
        (err: unknown) => err instanceof ControlPlaneError && err.code === "ERR_CONTROL_PLANE_CONFIG",
      );
    }
  });
});
