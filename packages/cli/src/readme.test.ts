import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { it } from "node:test";
import { analyzeManifests, authzCheck, loadManifests } from "./index.js";

it("README example works as written", async () => {
  const lines: string[] = [];
  const log = (...args: unknown[]): void => {
    lines.push(args.map(String).join(" "));
  };
  const cwd = process.cwd();
  // The example runs from the repository root, where mesh/ is.
  process.chdir(new URL("../../../", import.meta.url).pathname);
  try {
    // --- README example start ---
    const mesh = await loadManifests("mesh");
    const check = authzCheck(mesh, { from: "sleep-0", to: "web:80", method: "POST" });
    log(check.allowed, check.hops[0]?.explanation);
    // -> false denied by demo/web-get-from-sleep, rule 0: no `to` operation matched
    log(analyzeManifests(mesh).errors);
    // -> 0
    // --- README example end ---
  } finally {
    process.chdir(cwd);
  }
  assert.deepEqual(lines, [
    "false denied by demo/web-get-from-sleep, rule 0: no `to` operation matched",
    "0",
  ]);
  // The README shows this code and these outputs.
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  assert.ok(readme.includes('authzCheck(mesh, { from: "sleep-0", to: "web:80", method: "POST" })'));
  for (const line of lines) assert.ok(readme.includes(`// -> ${line}`), line);
});
