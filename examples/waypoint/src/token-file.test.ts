// The waypoint's node token comes from a file that the kubelet rotates: it must be read again for
// each CA call and xDS stream, not once at start (the `--token-file` flag hands main.ts's reader here).
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "@ambient/example-control-plane";
import { tokenFileReader } from "@ambient/example-ztunnel";
import { loopbackSubnet, shopWithWaypoint } from "../test/mesh-fixture.js";
import { startWaypoint } from "./index.js";

const { ip } = loopbackSubnet();

const MESH = `
${shopWithWaypoint(ip(6))}
`;

describe("waypoint token file", { timeout: 30_000 }, () => {
  let dir: string;
  let cp: ControlPlane;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "waypoint-token-"));
    await writeFile(join(dir, "mesh.yaml"), MESH);
    cp = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      watch: false,
      podCidrs: [`${ip(0)}/24`],
    });
  });
  after(async () => {
    await cp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("calls the token function for the CA call and for each xDS stream", async () => {
    const tokenPath = join(dir, "istio-token");
    await writeFile(tokenPath, `${await cp.tokenFor("node-a")}\n`);
    const reader = tokenFileReader(tokenPath);
    const sent: string[] = [];
    const waypoint = await startWaypoint({
      gateway: { name: "waypoint", namespace: "shop" },
      ip: ip(6),
      nodeName: "node-a",
      token: () => {
        const token = reader();
        sent.push(token);
        return token;
      },
      rootCertPem: cp.rootCertPem,
      controlPlaneAddress: cp.address,
      ports: { admin: 0, metrics: 0, readiness: 0 },
      accessLog: false,
    });
    try {
      await waypoint.ready;
      // One read for the certificate, one for the xDS stream (more if the stream reconnected).
      assert.ok(sent.length >= 2, `read ${sent.length} times`);
    } finally {
      await waypoint.close();
    }
  });
});
