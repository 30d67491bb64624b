import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("./main.ts", import.meta.url));
const run = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", main, ...args], { encoding: "utf8", timeout: 30_000 });

describe("waypoint CLI", () => {
  it("describes every flag in --help", () => {
    const out = run("--help");
    assert.equal(out.status, 0);
    const flags = [...out.stdout.matchAll(/^ {2}(--[a-z-]+)/gm)].map((m) => m[1]);
    for (const flag of [
      "--name",
      "--ip",
      "--node",
      "--control-plane",
      "--mesh-dir",
      "--state-dir",
      "--path-normalization",
      "--admin-ip",
      "--admin-port",
      "--stats-port",
      "--readiness-port",
      "--no-access-log",
      "--log-level",
      "--help",
    ]) {
      assert.ok(flags.includes(flag), `${flag} is not described`);
    }
  });

  it("exits 2 on a port that is not a number", () => {
    const out = run("--stats-port", "http");
    assert.equal(out.status, 2);
    assert.match(out.stderr, /--stats-port must be a port number/);
  });
});
