import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { type AddressInfo, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf } from "../src/ztunnel.js";
import { startTestControlPlane } from "./control-plane.js";
import {
  configureSleepEcho,
  echoServer,
  loopbackSubnet,
  socksConnect,
  startTwoNodeMesh,
  type TwoNodeMesh,
} from "./fixtures.js";

// Graceful shutdown, as Istio's ztunnel drains on SIGTERM. Each test has its own two-node mesh on a
// subnet of its own (node mode listens on the pods' addresses), as each shuts a proxy down.
interface Addresses {
  sleep: string;
  echo: string;
  stranger: string;
  vip: string;
}

function status(address: string, path: string, method = "GET"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`http://${address}${path}`, { method }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once("error", reject);
    req.end();
  });
}

/** Whether a TCP connect to `address` is refused (the listener is closed). */
function refused(address: string): Promise<boolean> {
  const [host, port] = address.split(":");
  return new Promise((resolve) => {
    const socket = connect({ host, port: Number(port) });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

/** Writes `text` and resolves with what the echo sends back first. */
async function echoOnce(socket: Socket, text: string): Promise<string> {
  const reply = once(socket, "data");
  socket.write(text);
  return String((await reply)[0]);
}

function readToEnd(socket: Socket): Promise<string> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once("end", () => resolve(Buffer.concat(chunks).toString()));
    socket.once("error", reject);
  });
}

describe("ztunnel graceful shutdown", { timeout: 60_000 }, () => {
  const cleanups: (() => Promise<void>)[] = [];
  /** A two-node mesh (sleep on node-a, echo on node-b behind a Service VIP) on a fresh subnet. */
  const startMesh = async (): Promise<{ mesh: TwoNodeMesh; ip: Addresses }> => {
    const base = loopbackSubnet();
    const ip = { sleep: `${base}.11`, echo: `${base}.12`, stranger: `${base}.13`, vip: `${base}.100` };
    const echo: Server = await echoServer(ip.echo);
    const echoPort = (echo.address() as AddressInfo).port;
    let mesh: TwoNodeMesh;
    try {
      mesh = await startTwoNodeMesh({
        subnet: base,
        configure: (cp) => configureSleepEcho(cp, ip, echoPort),
      });
    } catch (err) {
      echo.close();
      throw err;
    }
    cleanups.push(async () => {
      await mesh.close();
      echo.close();
    });
    return { mesh, ip };
  };

  after(async () => {
    await Promise.allSettled(cleanups.map((c) => c()));
  });

  it("drains the destination's proxy: readiness fails, new tunnels are refused, an open one carries on and its end completes the shutdown", async () => {
    const { mesh, ip } = await startMesh();
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    assert.equal(await echoOnce(socket, "before"), "before");

    let done = false;
    const shutdown = mesh.nodeB.shutdown({ deadlineMs: 30_000 }).then(() => {
      done = true;
    });
    assert.equal(mesh.nodeB.isReady(), false);
    assert.equal((await status(mesh.nodeB.addresses.readiness, "/healthz/ready")).status, 503);
    // node-b's inbound listener for the pod is closed, and its connection to node-a said GOAWAY: a
    // new call cannot get in.
    const again = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    again.socket.destroy();
    assert.notEqual(again.reply, SOCKS5_REPLY.succeeded);
    // The open connection still carries both ways, half-close included.
    assert.equal(await echoOnce(socket, "during"), "during");
    assert.equal(done, false, "the shutdown waits for the open connection");
    const rest = readToEnd(socket);
    socket.end("bye");
    assert.equal(await rest, "bye.");
    socket.destroy();
    await shutdown;
    assert.ok(await refused(mesh.nodeB.addresses.readiness), "node-b closed once drained");
    // The other proxy is untouched.
    assert.equal(mesh.nodeA.isReady(), true);
  });

  it("drains the source's proxy up to its deadline: the SOCKS5 listener closes, what is still open is cut then", async () => {
    const { mesh, ip } = await startMesh();
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    socket.on("error", () => {});
    // Cut with a reset: "close" comes, maybe after an ECONNRESET "error".
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    // Long enough for the checks below on a busy machine; the connection is cut when it passes.
    const shutdown = mesh.nodeA.shutdown({ deadlineMs: 4000 });
    assert.ok(await refused(socks5AddressOf(mesh.nodeA)), "no new SOCKS5 connection is accepted");
    assert.equal(await echoOnce(socket, "still"), "still");
    await shutdown;
    await closed;
    assert.equal(mesh.nodeA.configDump().connections.length, 0);
    assert.ok(await refused(mesh.nodeA.addresses.admin));
  });

  it("ends a shutdown at once on close(), and shuts down on POST /quitquitquit", async () => {
    const { mesh, ip } = await startMesh();
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    socket.on("error", () => {});
    // Cut with a reset: "close" comes, maybe after an ECONNRESET "error".
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    const shutdown = mesh.nodeB.shutdown({ deadlineMs: 60_000 });
    assert.equal(mesh.nodeB.shutdown(), shutdown, "one shutdown, the same promise");
    await mesh.nodeB.close();
    await shutdown;
    await closed;
    await mesh.nodeB.closed;

    // Istio's admin endpoint: POST only; it answers, then the proxy drains and closes.
    assert.equal((await status(mesh.nodeA.addresses.admin, "/quitquitquit")).status, 405);
    assert.equal(mesh.nodeA.isReady(), true);
    const quit = await status(mesh.nodeA.addresses.admin, "/quitquitquit", "POST");
    assert.deepEqual(quit, { status: 200, body: "shutdown now\n" });
    await mesh.nodeA.closed;
    assert.ok(await refused(socks5AddressOf(mesh.nodeA)));
  });

  it("refuses a bad deadline", async () => {
    const { mesh } = await startMesh();
    for (const deadlineMs of [-1, Number.NaN, 1.5]) {
      assert.throws(() => mesh.nodeA.shutdown({ deadlineMs }), { code: "ERR_ZTUNNEL_INVALID_OPTION" });
    }
  });
});

describe("the ztunnel program on SIGTERM and POST /quitquitquit", { timeout: 60_000 }, () => {
  const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));

  /** Runs src/main.ts against a test control plane until it is ready; `stop` ends it, as it exits. */
  const runProgram = async (
    stop: (child: ChildProcess, admin: string) => Promise<void>,
  ): Promise<{ code: number | null; out: string }> => {
    const cp = await startTestControlPlane();
    const dir = mkdtempSync(join(tmpdir(), "ztunnel-main-"));
    const nodeIp = `${loopbackSubnet()}.1`;
    try {
      writeFileSync(join(dir, "root-cert.pem"), cp.rootCertPem);
      writeFileSync(join(dir, "node-a.jwt"), await cp.tokenFor("node-a"));
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          main,
          "--node-ip",
          nodeIp,
          "--control-plane",
          cp.address,
          "--root-cert",
          join(dir, "root-cert.pem"),
          "--token-file",
          join(dir, "node-a.jwt"),
          "--termination-deadline-ms",
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
        const deadline = Date.now() + 30_000;
        while (!out.includes("ready: point SOCKS5 clients here")) {
          if (Date.now() > deadline || child.exitCode !== null) throw new Error(`not ready:\n${out}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await stop(child, `${nodeIp}:15000`);
        return { code: await exited, out };
      } finally {
        clearTimeout(killer);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
    } finally {
      await cp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it("drains and exits 0 on SIGTERM", async () => {
    const { code, out } = await runProgram(async (child) => {
      child.kill("SIGTERM");
    });
    assert.equal(code, 0, out);
    assert.match(out, /"signal":"SIGTERM","deadlineMs":20000,"msg":"shutting down"/);
    assert.match(out, /"msg":"drained"/);
  });

  it("drains and exits 0 after answering POST /quitquitquit", async () => {
    const { code, out } = await runProgram(async (_child, admin) => {
      assert.deepEqual(await status(admin, "/quitquitquit", "POST"), { status: 200, body: "shutdown now\n" });
    });
    assert.equal(code, 0, out);
    assert.match(out, /shutdown asked for on the admin port/);
  });
});
