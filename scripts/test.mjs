#!/usr/bin/env node
// The one command that checks the whole repository: build, lint, typecheck, package exports (attw),
// then every package's tests. It ends with a single line "N passed, N failed" summed over all packages
// and exits non-zero if anything failed. It starts with scripts/test-prerequisites.mjs, which installs
// the Debian programs the tests use (or stops at once with the command to run).
//   node scripts/test.mjs              everything
//   node scripts/test.mjs --only-tests  the test suites only (assumes a build)
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const onlyTests = process.argv.includes("--only-tests");

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      process.stdout.write(chunk);
    });
    child.stderr.on("data", (chunk) => {
      out += chunk;
      process.stderr.write(chunk);
    });
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), out }));
  });
}

function workspaces() {
  const dirs = [];
  for (const root of ["packages", "examples"]) {
    if (!existsSync(root)) continue;
    for (const name of readdirSync(root).sort()) {
      const manifest = join(root, name, "package.json");
      if (!existsSync(manifest)) continue;
      const pkg = JSON.parse(readFileSync(manifest, "utf8"));
      if (pkg.scripts?.test) dirs.push({ dir: join(root, name), name: pkg.name });
    }
  }
  // The mesh benchmark's package sits at the top level; its test only checks the harness wiring.
  if (existsSync(join("bench", "package.json"))) {
    const pkg = JSON.parse(readFileSync(join("bench", "package.json"), "utf8"));
    if (pkg.scripts?.test) dirs.push({ dir: "bench", name: pkg.name });
  }
  return dirs;
}

let passed = 0;
let failed = 0;
const problems = [];

console.log("=== test prerequisites");
if (
  (await run(process.execPath, [fileURLToPath(new URL("test-prerequisites.mjs", import.meta.url))])).code !==
  0
) {
  console.log("0 passed, 1 failed");
  process.exit(1);
}

if (!onlyTests) {
  for (const [label, args] of [
    ["build", ["turbo", "run", "build"]],
    ["lint", ["biome", "ci", "--error-on-warnings", "."]],
    ["typecheck", ["turbo", "run", "typecheck"]],
    ["attw", ["turbo", "run", "attw"]],
  ]) {
    console.log(`\n=== ${label}`);
    const { code } = await run("pnpm", ["exec", ...args]);
    if (code !== 0) {
      problems.push(label);
      failed += 1;
      // Nothing else can be trusted after a failed build.
      if (label === "build") break;
    }
  }
}

if (!problems.includes("build")) {
  for (const { dir, name } of workspaces()) {
    console.log(`\n=== test ${name} (node ${process.version})`);
    const { code, out } = await run("pnpm", ["run", "--silent", "test"], { cwd: dir });
    // node:test's spec reporter closes with "ℹ pass N" / "ℹ fail N"; the tap reporter with "# pass N".
    const pass = [...out.matchAll(/^(?:ℹ|#) pass (\d+)$/gm)].map((m) => Number(m[1]));
    const fail = [...out.matchAll(/^(?:ℹ|#) fail (\d+)$/gm)].map((m) => Number(m[1]));
    const p = pass.reduce((a, b) => a + b, 0);
    const f = fail.reduce((a, b) => a + b, 0);
    passed += p;
    failed += f;
    if (code !== 0) {
      problems.push(`test ${name}`);
      // A suite that crashed before reporting still counts as a failure.
      if (f === 0) failed += 1;
    }
  }
}

if (problems.length > 0) console.log(`\nfailed: ${problems.join(", ")}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(problems.length > 0 ? 1 : 0);
