// `pnpm start` and the Kubernetes image run the control plane's build (tsup: src/main.ts -> dist/main.js)
// with plain node. This builds it with the package's own tsup config into a folder as deep as dist/ and
// runs it without a loader: the bundle's imports resolve from this package, the default --mesh-dir is
// still <repo>/mesh, and the live mesh page's files (read next to the bundle) are served.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { build, type Options } from "tsup";
import config from "../tsup.config.js";

const PACKAGE = resolve(import.meta.dirname, "..");

describe("the built control plane (dist/main.js)", () => {
  let outDir: string;
  let stateDir: string;

  before(async () => {
    outDir = await mkdtemp(join(PACKAGE, ".built-test-"));
    stateDir = await mkdtemp(join(tmpdir(), "control-plane-built-"));
    const options = (config as (overrides: Options) => Options)({ outDir });
    assert.deepEqual(options.entry, { main: "src/main.ts" });
    await build({
      ...options,
      entry: { main: join(PACKAGE, "src/main.ts") },
      config: false,
      silent: true,
    });
  });
  after(async () => {
    await rm(outDir, { recursive: true, force: true });
    await rm(stateDir, { recursive: true, force: true });
  });

  it("serves <repo>/mesh and the live mesh page with plain node", { timeout: 60_000 }, async () => {
    const child = spawn(
      process.execPath,
      [
        join(outDir, "main.js"),
        "--state-dir",
        stateDir,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--pod-cidr",
        "10.244.0.0/16,127.10.0.0/24",
      ],
      { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, NODE_OPTIONS: "" } },
    );
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)));
    try {
      const admin = await new Promise<string>((done, reject) => {
        createInterface({ input: child.stdout }).on("line", (line) => {
          const entry = JSON.parse(line) as { msg?: string; admin?: string };
          if (entry.msg === "control plane listening" && entry.admin) done(entry.admin);
        });
        child.once("exit", (code) => reject(new Error(`control plane exited early with ${code}`)));
      });
      // The default --mesh-dir: the demo mesh's seven workloads.
      const metrics = await (await fetch(`http://${admin}/metrics`)).text();
      assert.match(metrics, /ambient_control_plane_resources\{type="workload"\} 7/);
      const page = await fetch(`http://${admin}/dashboard`);
      assert.equal(page.status, 200);
      assert.equal(await page.text(), await readFile(join(PACKAGE, "src/dashboard/page/index.html"), "utf8"));
      const script = await fetch(`http://${admin}/dashboard/app.js`);
      assert.equal(script.status, 200);
      assert.equal(await script.text(), await readFile(join(PACKAGE, "src/dashboard/page/app.js"), "utf8"));
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });
});
