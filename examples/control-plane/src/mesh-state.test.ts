import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { loadMeshState } from "./mesh-state.js";

describe("the state directory's private keys", () => {
  it("are written 0600, and made 0600 again when loaded with wider permissions", async () => {
    const dir = await mkdtemp(join(tmpdir(), "mesh-state-"));
    try {
      const keys = [join(dir, "ca", "ca-key.pem"), join(dir, "token-key.jwk")];
      const first = await loadMeshState(dir, "cluster.local");
      for (const key of keys) assert.equal((await stat(key)).mode & 0o777, 0o600, key);
      // Copied around with a permissive umask, say.
      for (const key of keys) await chmod(key, 0o644);
      const again = await loadMeshState(dir, "cluster.local");
      assert.equal(again.rootCertPem(), first.rootCertPem(), "the same CA is loaded");
      for (const key of keys) assert.equal((await stat(key)).mode & 0o777, 0o600, key);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
