// The admin port's debug paths from another host: the control plane runs in one test namespace, a
// caller in another, joined by a veth pair the test makes; both namespaces (and with them the pair)
// are removed at the end.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";

const MAIN = resolve(import.meta.dirname, "../src/main.ts");
const root = process.platform === "linux" && process.getuid?.() === 0;

/** `ip netns exec <ns> node -e <fetch>`: the status of a GET from inside `ns`. */
function statusFrom(ns: string, url: string): number {
  const script = `fetch(${JSON.stringify(url)}).then((r) => console.log(r.status), (e) => { console.error(e); process.exit(1); })`;
  const out = execFileSync("ip", ["netns", "exec", ns, process.execPath, "-e", script], {
    encoding: "utf8",
    timeout: 15_000,
  });
  return Number(out.trim());
}

describe("the control plane's debug paths", { skip: root ? false : "needs root on Linux (ip netns)" }, () => {
  const tag = randomBytes(3).toString("hex");
  const plane = `ambient-test-cp-${tag}`;
  const caller = `ambient-test-peer-${tag}`;
  const made: string[] = [];
  after(() => {
    for (const ns of made) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  });

  it(
    "answer callers on its own host, and refuse other hosts 403 while /ready and /metrics serve them",
    { timeout: 60_000 },
    async () => {
      for (const ns of [plane, caller]) {
        execFileSync("ip", ["netns", "add", ns]);
        made.push(ns);
        execFileSync("ip", ["-n", ns, "link", "set", "lo", "up"]);
      }
      // A private /30 on a link only these two namespaces have.
      execFileSync("ip", [
        "-n",
        plane,
        "link",
        "add",
        "cp0",
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
        "netns",
        caller,
      ]);
      execFileSync("ip", ["-n", plane, "addr", "add", "10.254.17.1/30", "dev", "cp0"]);
      execFileSync("ip", ["-n", caller, "addr", "add", "10.254.17.2/30", "dev", "peer0"]);
      execFileSync("ip", ["-n", plane, "link", "set", "cp0", "up"]);
      execFileSync("ip", ["-n", caller, "link", "set", "peer0", "up"]);

      const stateDir = await mkdtemp(join(tmpdir(), "control-plane-admin-"));
      const child = spawn(
        "ip",
        [
          "netns",
          "exec",
          plane,
          process.execPath,
          "--import",
          "tsx",
          MAIN,
          "--state-dir",
          stateDir,
          "--listen",
          "127.0.0.1:0",
          "--admin",
          "0.0.0.0:0",
        ],
        { stdio: ["ignore", "pipe", "inherit"], cwd: resolve(import.meta.dirname, "..") },
      );
      try {
        const port = await new Promise<string>((done, reject) => {
          createInterface({ input: child.stdout }).on("line", (line) => {
            const entry = JSON.parse(line) as { msg?: string; admin?: string };
            if (entry.msg === "control plane listening" && entry.admin)
              done(entry.admin.split(":").pop() as string);
          });
          child.once("exit", (code) => reject(new Error(`control plane exited early with ${code}`)));
        });
        const remote = `http://10.254.17.1:${port}`;
        assert.equal(statusFrom(caller, `${remote}/debug/config`), 403);
        assert.equal(statusFrom(caller, `${remote}/dashboard`), 403);
        assert.equal(statusFrom(caller, `${remote}/dashboard/data`), 403);
        assert.equal(statusFrom(caller, `${remote}/ready`), 200);
        assert.equal(statusFrom(caller, `${remote}/metrics`), 200);
        // From the control plane's own host (as kubectl port-forward arrives in its pod).
        assert.equal(statusFrom(plane, `http://127.0.0.1:${port}/debug/config`), 200);
        assert.equal(statusFrom(plane, `http://127.0.0.1:${port}/dashboard`), 200);
      } finally {
        child.kill("SIGKILL");
        await new Promise((r) => child.once("exit", r));
        await rm(stateDir, { recursive: true, force: true });
      }
    },
  );
});
