#!/usr/bin/env node
// Runs one package's tests with Node's built-in runner (TypeScript through tsx).
// Node 20's --test takes file paths, not globs, so the test files are listed here.
// Usage (from a package folder): node ../../scripts/run-node-tests.mjs [extra node --test args]
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

function findTests(dir) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return [];
  }
  const found = [];
  for (const entry of entries) {
    if (entry === "node_modules" || entry === "dist") continue;
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    else if (/\.test\.(ts|mts|js|mjs)$/.test(entry)) found.push(path);
  }
  return found;
}

const files = [...findTests("src"), ...findTests("test")].sort();
if (files.length === 0) {
  console.error(`no test files under ${process.cwd()}/{src,test}`);
  process.exit(1);
}
// A test that hangs (a leaked handle, a peer that never answers) must fail, not stall CI: each test
// gets two minutes, and the whole package run is killed after fifteen.
const TEST_TIMEOUT_MS = 120_000;
const PACKAGE_TIMEOUT_MS = 15 * 60_000;
const result = spawnSync(
  process.execPath,
  [
    "--import",
    "tsx",
    "--test",
    "--test-reporter=spec",
    `--test-timeout=${TEST_TIMEOUT_MS}`,
    ...process.argv.slice(2),
    ...files,
  ],
  { stdio: "inherit", timeout: PACKAGE_TIMEOUT_MS, killSignal: "SIGKILL" },
);
if (result.error) console.error(`test run of ${process.cwd()} stopped: ${result.error.message}`);
process.exit(result.status ?? 1);
