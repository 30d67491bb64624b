import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("exits 1 naming --token-file when it cannot be read or is empty, before starting anything", () => {
    const dir = mkdtempSync(join(tmpdir(), "waypoint-cli-"));
    try {
      const rootCert = join(dir, "root-cert.pem");
      writeFileSync(rootCert, "-----BEGIN CERTIFICATE-----\n");
      const missing = join(dir, "no-such-token");
      const out = run("--root-cert", rootCert, "--token-file", missing, "--ip", "127.0.0.1");
      assert.equal(out.status, 1);
      assert.ok(out.stdout.includes(`cannot read the token file ${missing}`), out.stdout);
      const empty = join(dir, "empty-token");
      writeFileSync(empty, "\n");
      const out2 = run("--root-cert", rootCert, "--token-file", empty, "--ip", "127.0.0.1");
      assert.equal(out2.status, 1);
      assert.ok(out2.stdout.includes(`the token file ${empty} is empty`), out2.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads the roots from --root-cert, not from --state-dir", () => {
    const dir = mkdtempSync(join(tmpdir(), "waypoint-cli-"));
    try {
      const missing = join(dir, "no-such-root.pem");
      const out = run("--root-cert", missing, "--state-dir", dir, "--ip", "127.0.0.1");
      assert.equal(out.status, 1);
      assert.ok(out.stdout.includes(missing), out.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("waypoint CLI drain deadline", () => {
  it("exits 2 on a --termination-drain-ms that is not a whole number", () => {
    const out = run("--termination-drain-ms", "soon");
    assert.equal(out.status, 2);
    assert.match(out.stderr, /--termination-drain-ms must be a whole number of ms/);
  });
});
