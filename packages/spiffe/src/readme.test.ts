import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

describe("README example", () => {
  it("runs as written and prints the verified and the allowed identity", async () => {
    const readme = readFileSync(join(here, "..", "README.md"), "utf8");
    const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(block, "README has a ts code block");
    const source = block
      .replace('from "@ambient/spiffe"', `from ${JSON.stringify(pathToFileURL(join(here, "index.ts")).href)}`)
      .replace(
        'from "@ambient/spiffe/ca"',
        `from ${JSON.stringify(pathToFileURL(join(here, "ca.ts")).href)}`,
      );
    assert.doesNotMatch(
      source,
      /from "@ambient\//,
      "the example imports only @ambient/spiffe and @ambient/spiffe/ca",
    );
    const dir = mkdtempSync(join(tmpdir(), "spiffe-readme-"));
    try {
      const file = join(dir, "example.mts");
      writeFileSync(file, source);
      const output = await new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          ["--import", "tsx", file],
          { cwd: join(here, ".."), timeout: 30_000 },
          (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
        );
      });
      assert.equal(
        output,
        "verified: spiffe://cluster.local/ns/shop/sa/web\nhello spiffe://cluster.local/ns/shop/sa/web\n",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
