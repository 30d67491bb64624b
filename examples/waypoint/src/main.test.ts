import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("./main.ts", import.meta.url));
const run = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", main, ...args], { encoding: "utf8", timeout: 30_000 });

describe("waypoint CLI", () => {
  it("describes every flag it parses in --help", () => {
    const out = run("--help");
    assert.equal(out.status, 0);
    const parsed = [
      ...readFileSync(main, "utf8").matchAll(/^\s+"?([a-z-]+)"?: \{ type: "(?:string|boolean)"/gm),
    ].map((m) => `--${m[1]}`);
    assert.ok(parsed.length >= 14, `found only ${parsed.join(" ")}`);
    const described = new Set(
      [...out.stdout.matchAll(/^ {2}(--[a-z-]+(?:, --[a-z-]+)*)/gm)].flatMap((m) => (m[1] ?? "").split(", ")),
    );
    for (const flag of parsed) assert.ok(described.has(flag), `${flag} is not described`);
  });

  it("exits 2 on a port that is not a number", () => {
    const out = run("--stats-port", "http");
    assert.equal(out.status, 2);
    assert.match(out.stderr, /--stats-port must be a port number/);
  });
});
