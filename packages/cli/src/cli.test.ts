import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { MESH_DIR, run } from "./test-helpers.js";

const BIN = fileURLToPath(new URL("./bin.ts", import.meta.url));

describe("ambient (the program)", () => {
  it("has --help on every command", async () => {
    for (const argv of [[], ["ztunnel-config"], ["authz"], ["authz", "check"], ["analyze"]]) {
      const r = await run([...argv, "--help"]);
      assert.equal(r.code, 0, argv.join(" "));
      assert.match(r.stdout, /^Usage: ambient/, argv.join(" "));
    }
    const zc = await run(["ztunnel-config", "--help"]);
    for (const flag of ["--node <name>", "--admin <ip:port>", "-o, --output <format>"])
      assert.ok(zc.stdout.includes(flag), flag);
  });

  it("prints the package's version with --version and -V, and lists it in --help", async () => {
    const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    for (const flag of ["--version", "-V"]) {
      const r = await run([flag]);
      assert.deepEqual(r, { code: 0, stdout: `${version}\n`, stderr: "" }, flag);
    }
    assert.match((await run(["--help"])).stdout, /-V, --version +print the version of @ambient\/cli/);
  });

  it("reports an unknown command or option in one line, with exit code 2", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["ztunnel-confg"],
        /^error: unknown command 'ztunnel-confg' \(Did you mean ztunnel-config\?\) \(see ambient --help\)\n$/,
      ],
      [
        ["analyze", MESH_DIR, "--strict"],
        /^error: unknown option '--strict' \(see ambient analyze --help\)\n$/,
      ],
    ];
    for (const [argv, expected] of cases) {
      const r = await run(argv);
      assert.equal(r.code, 2);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, expected);
    }
  });

  it("colours the verdict only on a TTY, and never with NO_COLOR", async () => {
    const argv = ["authz", "check", "--from", "stranger", "--to", "echo:80", "--manifests", MESH_DIR];
    assert.ok((await run(argv, { tty: true })).stdout.startsWith("\u001b[31mDENIED\u001b[39m"));
    assert.match((await run(argv, { tty: false })).stdout, /^DENIED /);
    assert.match((await run(argv, { tty: true, env: { NO_COLOR: "1" } })).stdout, /^DENIED /);
    // An empty NO_COLOR does not count (no-color.org).
    assert.ok((await run(argv, { tty: true, env: { NO_COLOR: "" } })).stdout.startsWith("\u001b[31m"));
  });

  it("runs as a process: exit code 1 from analyze on errors, 0 on the mesh", () => {
    const spawn = (args: string[]) =>
      spawnSync(process.execPath, ["--import", "tsx", BIN, ...args], { encoding: "utf8", timeout: 60_000 });
    const ok = spawn(["analyze", MESH_DIR]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /No problems found/);
    const bad = spawn(["analyze", fileURLToPath(new URL("./fixtures/", import.meta.url))]);
    assert.equal(bad.status, 1, bad.stderr);
    assert.match(bad.stdout, /config-dump-node-a\.json:1 +document 0 +- +kind: missing/);
  });
});
