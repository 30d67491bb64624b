import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("./main.ts", import.meta.url));

function runDemo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", main, ...args],
      { timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

test("`pnpm demo -- --help` prints every flag and exits 0 without starting anything", async () => {
  const { code, stdout, stderr } = await runDemo(["--", "--help"]);
  assert.equal(code, 0, stderr);
  for (const flag of [
    "--mesh-dir",
    "--state-dir",
    "--control-plane",
    "--node-ip-prefix",
    "--keep-running",
    "--help",
  ])
    assert.ok(stdout.includes(flag), `help lacks ${flag}`);
  assert.ok(!stdout.includes("control plane on"), "help must not start the mesh");
});

test("an unknown flag is one error line plus the usage, exit 2", async () => {
  const { code, stderr } = await runDemo(["--", "--no-such-flag"]);
  assert.equal(code, 2);
  assert.match(stderr, /^demo: .*--no-such-flag/);
  assert.match(stderr, /usage: pnpm demo/);
});

test("a busy control-plane address is one line naming it, not a stack trace", async () => {
  const holder = createServer().listen(0, "127.0.0.1");
  await once(holder, "listening");
  const { port } = holder.address() as { port: number };
  try {
    const { code, stderr } = await runDemo(["--control-plane", `127.0.0.1:${port}`]);
    assert.equal(code, 1);
    const lines = stderr.trim().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0] ?? "", new RegExp(`^demo: 127\\.0\\.0\\.1:${port} is already in use`));
  } finally {
    holder.close();
  }
});
