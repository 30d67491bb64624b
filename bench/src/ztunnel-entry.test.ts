import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ztunnelEntry } from "./ztunnel-entry.js";

describe("ztunnelEntry", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ztunnel-entry-"));
    await mkdir(join(dir, "built/examples/ztunnel/dist"), { recursive: true });
    await writeFile(join(dir, "built/examples/ztunnel/dist/main.js"), "");
    await mkdir(join(dir, "old/examples/ztunnel/src"), { recursive: true });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("runs a built tree's dist/main.js with no loader", () => {
    const entry = ztunnelEntry(join(dir, "built"), join(dir, "built"));
    assert.deepEqual(entry.nodeArgs, [join(dir, "built/examples/ztunnel/dist/main.js")]);
    assert.ok(!entry.describe.includes("tsx"));
  });

  it("falls back to tsx only for a base tree without dist/main.js, and says so", () => {
    const entry = ztunnelEntry(join(dir, "old"), join(dir, "built"));
    assert.deepEqual(entry.nodeArgs, ["--import", "tsx", join(dir, "old/examples/ztunnel/src/main.ts")]);
    assert.match(entry.describe, /tsx.*no dist\/main\.js/);
  });

  it("refuses this tree without a build instead of loading its sources", () => {
    assert.throws(() => ztunnelEntry(join(dir, "old"), join(dir, "old/")), /missing: build the repository/);
  });
});
