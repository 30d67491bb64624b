// A waypoint shuts down as istio-proxy drains on SIGTERM: readiness fails, ztunnels are told (GOAWAY)
// to open new tunnels elsewhere, and a request in flight is answered before the connection closes.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, get, type Server as HttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { startControlPlane } from "@ambient/example-control-plane";
import {
  loopbackSubnet,
  shopPod,
  shopServiceOnWaypoint,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
  waitFor,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();

const manifests = `
${shopWithWaypoint(ip(6))}
---
${shopPod({ name: "client", app: "client", node: "node-a", ip: ip(2) })}
---
${shopPod({ name: "web-0", app: "web", node: "node-b", ip: ip(11) })}
---
${shopServiceOnWaypoint({ name: "web", clusterIp: ip(103) })}
`;

function status(address: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(`http://${address}${path}`, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).once("error", reject);
  });
}

describe("waypoint graceful shutdown", { timeout: 60_000 }, () => {
  let mesh: TestMesh;
  let web: HttpServer;
  /** Responses web holds until the test lets them go. */
  const held: (() => void)[] = [];

  before(async () => {
    web = createHttpServer((req, res) => {
      const answer = () => res.writeHead(200, { "content-length": "3" }).end("web");
      if (req.url === "/slow") held.push(answer);
      else answer();
    });
    await new Promise<void>((resolve) => web.listen(8080, ip(11), resolve));
    mesh = await startTestMesh({
      manifests,
      tempPrefix: "waypoint-shutdown-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        ports: { admin: 0, metrics: 0, readiness: 0 },
      },
    });
  });

  after(async () => {
    await mesh?.close();
    web?.close();
  });

  it("fails readiness, answers the request in flight with connection: close, refuses new ones, then closes", async () => {
    const route = { proxy: mesh.socks5, from: ip(2), to: `${ip(103)}:80` };
    const c = await socks5Dial(route);
    const closed = new Promise<void>((resolve) => c.socket.once("close", () => resolve()));
    c.socket.write(`GET / HTTP/1.1\r\nhost: web.shop.svc.cluster.local\r\n\r\n`);
    await waitFor(() => c.text().endsWith("web"));
    assert.match(c.text(), /^HTTP\/1\.1 200/);
    c.socket.write(`GET /slow HTTP/1.1\r\nhost: web.shop.svc.cluster.local\r\n\r\n`);
    await waitFor(() => held.length === 1);

    let done = false;
    const shutdown = mesh.waypoint.shutdown({ deadlineMs: 30_000 }).then(() => {
      done = true;
    });
    assert.equal(await status(mesh.waypoint.operatorAddresses.readiness, "/healthz/ready"), 503);
    // The waypoint takes no new tunnel: its listener is closed and its connections said GOAWAY.
    await assert.rejects(socks5Dial(route));
    assert.equal(done, false, "the request in flight holds the shutdown");

    for (const go of held.splice(0)) go();
    await closed;
    const second = c.text().slice(c.text().indexOf("web") + 3);
    assert.match(second, /^HTTP\/1\.1 200/);
    assert.match(second, /\r\nconnection: close\r\n/i);
    assert.match(second, /web$/);
    await shutdown;
    assert.equal(done, true);
  });
});

describe("the waypoint program on SIGTERM", { timeout: 60_000 }, () => {
  it("drains and exits 0", async () => {
    const sub = loopbackSubnet();
    const dir = mkdtempSync(join(tmpdir(), "waypoint-main-"));
    const meshDir = join(dir, "mesh");
    mkdirSync(meshDir);
    writeFileSync(join(meshDir, "mesh.yaml"), shopWithWaypoint(sub.ip(6)));
    const cp = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      watch: false,
      podCidrs: [sub.cidr],
    });
    try {
      writeFileSync(join(dir, "root-cert.pem"), cp.rootCertPem);
      writeFileSync(join(dir, "node-a.jwt"), await cp.tokenFor("node-a"));
      const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          main,
          "--name",
          "waypoint",
          "--namespace",
          "shop",
          "--ip",
          sub.ip(6),
          "--control-plane",
          cp.address,
          "--root-cert",
          join(dir, "root-cert.pem"),
          "--token-file",
          join(dir, "node-a.jwt"),
          "--admin-port",
          "0",
          "--stats-port",
          "0",
          "--readiness-port",
          "0",
          "--termination-drain-ms",
          "20000",
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let out = "";
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
      });
      child.stderr.on("data", (c: Buffer) => {
        out += c.toString();
      });
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      const killer = setTimeout(() => child.kill("SIGKILL"), 45_000);
      try {
        await waitFor(() => out.includes("waypoint ready") || child.exitCode !== null, 30_000);
        assert.match(out, /waypoint ready/);
        child.kill("SIGTERM");
        assert.equal(await exited, 0, out);
        assert.match(out, /"signal":"SIGTERM","deadlineMs":20000,"msg":"shutting down"/);
      } finally {
        clearTimeout(killer);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
    } finally {
      await cp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
