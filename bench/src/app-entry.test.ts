import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { appEntry, startFlags } from "./app-entry.js";
import { baselineHookImport } from "./waypoint-baseline-hook.js";

describe("appEntry", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "app-entry-"));
    for (const app of ["waypoint", "control-plane"]) {
      await mkdir(join(dir, `built/examples/${app}/dist`), { recursive: true });
      await writeFile(join(dir, `built/examples/${app}/dist/main.js`), "");
      await mkdir(join(dir, `old/examples/${app}/src`), { recursive: true });
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const app of ["waypoint", "control-plane"] as const) {
    it(`runs a built tree's examples/${app}/dist/main.js with no loader`, () => {
      const entry = appEntry(app, join(dir, "built"), join(dir, "built"));
      assert.deepEqual(entry.nodeArgs, [join(dir, `built/examples/${app}/dist/main.js`)]);
      assert.equal(entry.underTsx, false);
      assert.ok(!entry.describe.includes("tsx"));
    });

    it(`falls back to tsx for another tree without examples/${app}/dist/main.js`, () => {
      const entry = appEntry(app, join(dir, "old"), join(dir, "built"));
      assert.deepEqual(entry.nodeArgs, ["--import", "tsx", join(dir, `old/examples/${app}/src/main.ts`)]);
      assert.equal(entry.underTsx, true);
      assert.match(entry.describe, /tsx.*no dist\/main\.js/);
    });
  }

  it("passes the Node flags of the app's start script before the script", async () => {
    const app = join(dir, "flags/examples/ztunnel");
    await mkdir(join(app, "dist"), { recursive: true });
    await writeFile(join(app, "dist/main.js"), "");
    const start = "node --initial-old-space-size=64 --stack-size=2000 dist/main.js";
    await writeFile(join(app, "package.json"), JSON.stringify({ scripts: { start } }));
    const entry = appEntry("ztunnel", join(dir, "flags"), join(dir, "flags"));
    assert.deepEqual(entry.nodeArgs, [
      "--initial-old-space-size=64",
      "--stack-size=2000",
      join(app, "dist/main.js"),
    ]);
    assert.equal(
      entry.describe,
      "node --initial-old-space-size=64 --stack-size=2000 examples/ztunnel/dist/main.js",
    );
    assert.deepEqual(entry.startFlags, ["--initial-old-space-size=64", "--stack-size=2000"]);
  });

  it("takes no flags from a start script that does not run node dist/main.js", async () => {
    const pkg = join(dir, "other-package.json");
    await writeFile(pkg, JSON.stringify({ scripts: { start: "tsx --inspect src/main.ts" } }));
    assert.deepEqual(startFlags(pkg), []);
    assert.deepEqual(startFlags(join(dir, "missing.json")), []);
  });

  it("runs this repository's apps with the flags of their pnpm start", () => {
    const repo = fileURLToPath(new URL("../../", import.meta.url));
    for (const app of ["ztunnel", "waypoint", "control-plane"] as const) {
      const start = JSON.parse(readFileSync(join(repo, `examples/${app}/package.json`), "utf8")).scripts
        .start;
      assert.equal(
        ["node", ...startFlags(join(repo, `examples/${app}/package.json`)), "dist/main.js"].join(" "),
        start,
      );
    }
  });

  it("refuses this tree's waypoint without a build", () => {
    assert.throws(() => appEntry("waypoint", join(dir, "old"), join(dir, "old")), /example-waypoint build/);
  });
});

describe("baselineHookImport", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "baseline-hook-"));
    // A "repository" whose entry imports a relative module and a bare one, and a snapshot with its own
    // copies of the entry and of the relative module.
    await mkdir(join(dir, "repo/app/node_modules/dep"), { recursive: true });
    await writeFile(join(dir, "repo/app/package.json"), '{ "type": "module" }');
    await writeFile(join(dir, "repo/app/node_modules/dep/package.json"), '{ "name": "dep", "main": "i.js" }');
    await writeFile(join(dir, "repo/app/node_modules/dep/i.js"), "module.exports = 'dep';");
    await writeFile(join(dir, "repo/app/part.js"), "export const part = 'current';");
    const main = "import { part } from './part.js'; import dep from 'dep'; console.log(part, dep);";
    await writeFile(join(dir, "repo/app/main.js"), main);
    await mkdir(join(dir, "snap/app"), { recursive: true });
    await writeFile(join(dir, "snap/app/package.json"), '{ "type": "module" }');
    await writeFile(join(dir, "snap/app/part.js"), "export const part = 'before';");
    await writeFile(join(dir, "snap/app/main.js"), main);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const run = (args: string[]) =>
    spawnSync(process.execPath, args, {
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, NODE_OPTIONS: "" },
    });

  it("makes plain node (no tsx) load the snapshot's copies, bare imports resolved from the repository", () => {
    const hook = baselineHookImport(join(dir, "snap"), join(dir, "repo"));
    assert.match(hook, /^data:text\/javascript,/);
    const fromSnapshot = run(["--import", hook, join(dir, "snap/app/main.js")]);
    assert.equal(fromSnapshot.status, 0, fromSnapshot.stderr);
    assert.equal(fromSnapshot.stdout.trim(), "before dep");
    const fromRepository = run(["--import", hook, join(dir, "repo/app/main.js")]);
    assert.equal(fromRepository.stdout.trim(), "before dep", "a repository module with a copy is replaced");
    const without = run([join(dir, "repo/app/main.js")]);
    assert.equal(without.stdout.trim(), "current dep");
  });
});
