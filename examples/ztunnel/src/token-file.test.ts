import assert from "node:assert/strict";
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ZtunnelError } from "./errors.js";
import { tokenFileReader } from "./token-file.js";

test("a token file is read for every use; a missing or empty file keeps the last good token", () => {
  const dir = mkdtempSync(join(tmpdir(), "ztunnel-token-"));
  try {
    const path = join(dir, "token");
    writeFileSync(path, "first\n");
    const errors: string[] = [];
    const token = tokenFileReader(path, (err) => errors.push(err.message));
    assert.equal(token(), "first");
    writeFileSync(path, "rotated\n");
    assert.equal(token(), "rotated");
    unlinkSync(path);
    assert.equal(token(), "rotated");
    writeFileSync(path, "  \n");
    assert.equal(token(), "rotated");
    writeFileSync(path, "third");
    assert.equal(token(), "third");
    assert.equal(errors.length, 2);
    assert.match(errors[1] ?? "", /is empty/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a token file that is missing or empty at start is refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "ztunnel-token-"));
  try {
    const path = join(dir, "token");
    const refused = (e: unknown) => e instanceof ZtunnelError && e.code === "ERR_ZTUNNEL_INVALID_OPTION";
    assert.throws(() => tokenFileReader(path), refused);
    writeFileSync(path, "\n");
    assert.throws(() => tokenFileReader(path), refused);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
