// `pnpm start` and the Kubernetes image run the waypoint's build (tsup: src/main.ts -> dist/main.js) with
// plain node. This builds it with the package's own tsup config into a folder as deep as dist/ and runs
// it without a loader: every bare import of the bundle must resolve from this package (the bundled
// @ambient/example-ztunnel modules' imports included), and the default --state-dir must still be
// <repo>/.mesh-state.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { build, type Options } from "tsup";
import config from "../tsup.config.js";

const PACKAGE = resolve(import.meta.dirname, "..");
const REPO = resolve(PACKAGE, "../..");

describe("the built waypoint (dist/main.js)", () => {
  let outDir: string;
  let scratch: string;
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [join(outDir, "main.js"), ...args], {
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, NODE_OPTIONS: "" },
    });

  before(async () => {
    outDir = await mkdtemp(join(PACKAGE, ".built-test-"));
    scratch = await mkdtemp(join(tmpdir(), "waypoint-built-"));
    const options = config as Options;
    const entry = options.entry as Record<string, string>;
    assert.deepEqual(entry, { main: "src/main.ts" });
    await build({
      ...options,
      entry: { main: join(PACKAGE, entry.main as string) },
      outDir,
      config: false,
      silent: true,
    });
  });
  after(async () => {
    await rm(outDir, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  });

  it("is one ES module that loads no TypeScript", async () => {
    assert.ok(existsSync(join(outDir, "main.js")));
    const text = await readFile(join(outDir, "main.js"), "utf8");
    assert.doesNotMatch(text, /from ["'][^"']*\.ts["']/);
    // The ztunnel app's modules are bundled in, not imported through its TypeScript `exports`.
    assert.doesNotMatch(text, /from ["']@ambient\/example-ztunnel["']/);
  });

  it("runs with plain node: --help, and flag errors exit 2", () => {
    const help = run("--help");
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /--path-normalization/);
    const bad = run("--stats-port", "http");
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--stats-port must be a port number/);
  });

  it("defaults --state-dir to <repo>/.mesh-state, as src/main.ts does", () => {
    const out = run("--node", "no-such-node-for-this-test", "--root-cert", join(scratch, "missing.pem"));
    assert.equal(out.status, 1);
    assert.ok(out.stdout.includes(join(scratch, "missing.pem")), out.stdout);
    const token = run("--node", "no-such-node-for-this-test", "--root-cert", join(REPO, "package.json"));
    assert.equal(token.status, 1);
    assert.ok(
      token.stdout.includes(join(REPO, ".mesh-state", "tokens", "no-such-node-for-this-test.jwt")),
      token.stdout,
    );
  });

  it("reads the token through the bundled ztunnel token reader", async () => {
    const empty = join(scratch, "empty.jwt");
    await writeFile(empty, "\n");
    const out = run("--root-cert", join(REPO, "package.json"), "--token-file", empty, "--ip", "127.0.0.1");
    assert.equal(out.status, 1);
    assert.ok(out.stdout.includes(`the token file ${empty} is empty`), out.stdout);
  });
});
