import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type LocalMesh, startLocalMesh } from "@ambient/example-local-mesh/src/local-mesh.js";
import { run } from "./test-helpers.js";

// The commands against the real demo mesh (control plane on an ephemeral port), as an operator runs
// them while `pnpm demo --keep-running` is up.

/** Opens a SOCKS5 CONNECT from `podIp` through `socks` to `host:port` and keeps it open. */
async function openSocks(socks: string, podIp: string, host: string, port: number): Promise<Socket> {
  const [socksHost = "", socksPort = ""] = socks.split(":");
  const socket = connect({ host: socksHost, port: Number(socksPort), localAddress: podIp });
  socket.setTimeout(20_000, () => socket.destroy(new Error("SOCKS5 timeout")));
  const read = (n: number) =>
    new Promise<Buffer>((resolve, reject) => {
      let buffered = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length >= n) {
          socket.off("data", onData);
          socket.off("error", reject);
          if (buffered.length > n) socket.unshift(buffered.subarray(n));
          resolve(buffered.subarray(0, n));
        }
      };
      socket.on("data", onData);
      socket.once("error", reject);
    });
  socket.write(Buffer.from([5, 1, 0]));
  assert.deepEqual([...(await read(2))], [5, 0]);
  const ip = host.split(".").map(Number);
  socket.write(Buffer.from([5, 1, 0, 1, ...ip, port >> 8, port & 0xff]));
  const reply = await read(10);
  assert.equal(reply[1], 0, "the ztunnel connected");
  return socket;
}

describe("ambient against the running local mesh", () => {
  let mesh: LocalMesh;
  let admins: string[];
  const meshDir = fileURLToPath(new URL("../../../mesh/", import.meta.url));
  before(async () => {
    mesh = await startLocalMesh({
      meshDir,
      controlPlaneListen: "127.0.0.1:0",
    });
    await Promise.all([...mesh.ztunnels.values()].map((z) => z.ready));
    admins = [...mesh.ztunnels.values()].flatMap((z) => ["--admin", z.addresses.admin]);
  });
  after(async () => {
    await mesh?.close();
  });

  it("lists the demo's workloads, services, policies and certificates from the ztunnels", async () => {
    const workloads = await run(["ztunnel-config", "workloads", ...admins]);
    assert.equal(workloads.code, 0, workloads.stderr);
    for (const pod of ["sleep-0", "stranger", "echo-0", "echo-1", "web-v1", "web-v2", "waypoint-0"]) {
      assert.match(workloads.stdout, new RegExp(`\\ndemo +${pod} +127\\.10\\.0\\.\\d+ +node-[ab] `));
    }
    const services = await run(["ztunnel-config", "services", ...admins]);
    assert.match(services.stdout, /\ndemo +web +127\.30\.0\.2 +waypoint-0 +2\n/);
    const policies = await run(["ztunnel-config", "policies", ...admins]);
    assert.match(policies.stdout, /\ndemo +web-only-from-waypoint +ALLOW +WORKLOAD_SELECTOR\n/);
    const certs = await run(["ztunnel-config", "certificates", "--node", "node-b", ...admins]);
    assert.match(certs.stdout, /\nnode-b +spiffe:\/\/cluster\.local\/ns\/demo\/sa\/echo +\S+ +Valid\n/);
  });

  it("shows a connection sleep-0 holds open to echo on both nodes", async () => {
    const socks5 = mesh.ztunnels.get("node-a")?.addresses.socks5;
    assert.ok(socks5, "node-a's SOCKS5 listener");
    const socket = await openSocks(socks5, "127.10.0.2", "127.30.0.1", 80);
    try {
      const r = await run(["ztunnel-config", "connections", "-o", "json", ...admins]);
      assert.equal(r.code, 0, r.stderr);
      const items = JSON.parse(r.stdout) as { node: string; direction: string; sourceIdentity: string }[];
      const fromSleep = items.filter((i) => i.sourceIdentity === "spiffe://cluster.local/ns/demo/sa/sleep");
      assert.deepEqual(fromSleep.map((i) => `${i.node} ${i.direction}`).sort(), [
        "node-a outbound",
        "node-b inbound",
      ]);
    } finally {
      socket.destroy();
    }
  });

  it("agrees with the mesh: what authz check denies, the mesh refuses", async () => {
    const check = await run([
      "authz",
      "check",
      "--from",
      "stranger",
      "--to",
      "echo:80",
      "--manifests",
      meshDir,
    ]);
    assert.match(check.stdout, /^DENIED /);
    const refused = await mesh.call("stranger", "127.30.0.1", 80, "let me in");
    assert.equal(refused.reply, 2, "SOCKS5 reply 2: not allowed by ruleset");
    const allowed = await run([
      "authz",
      "check",
      "--from",
      "sleep-0",
      "--to",
      "echo:80",
      "--manifests",
      meshDir,
    ]);
    assert.match(allowed.stdout, /^ALLOWED /);
    // The same answers from the ztunnels' own state.
    const live = ["--live", ...admins];
    assert.match(
      (await run(["authz", "check", "--from", "stranger", "--to", "echo:80", ...live])).stdout,
      /^DENIED /,
    );
    assert.match(
      (await run(["authz", "check", "--from", "sleep-0", "--to", "echo:80", ...live])).stdout,
      /^ALLOWED /,
    );
    const answered = await mesh.call("sleep-0", "127.30.0.1", 80, "hello");
    assert.equal(answered.reply, 0);
  });
});
