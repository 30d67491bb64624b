import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";

const MAIN = resolve(import.meta.dirname, "../src/main.ts");

it("the CLI serves, logs JSON lines and exits cleanly on SIGTERM", { timeout: 60_000 }, async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "control-plane-cli-"));
  const child = spawn(
    process.execPath,
    ["--import", "tsx", MAIN, "--state-dir", stateDir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<number | null>((resolveExit) => child.on("exit", (code) => resolveExit(code)));
  try {
    const listening = await new Promise<{ address: string; admin: string }>((resolveLine, reject) => {
      const lines = createInterface({ input: child.stdout });
      lines.on("line", (line) => {
        const entry = JSON.parse(line) as { msg?: string; address?: string; admin?: string };
        if (entry.msg === "control plane listening" && entry.address && entry.admin) {
          resolveLine({ address: entry.address, admin: entry.admin });
        }
      });
      child.once("exit", (code) => reject(new Error(`control plane exited early with ${code}`)));
    });
    assert.match(listening.address, /^127\.0\.0\.1:\d+$/);
    assert.equal((await fetch(`http://${listening.admin}/ready`)).status, 200);
    const metrics = await (await fetch(`http://${listening.admin}/metrics`)).text();
    assert.match(metrics, /ambient_control_plane_resources\{type="workload"\} 7/);
    assert.match(metrics, /process_cpu_seconds_total/);
    assert.ok(existsSync(join(stateDir, "root-cert.pem")));
    assert.ok(existsSync(join(stateDir, "tokens", "node-b.jwt")));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});
