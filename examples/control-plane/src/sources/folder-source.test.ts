// The folder source's watch: when a change is reported.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createFolderSource } from "./folder-source.js";

describe("folder source watch", () => {
  it(
    "reports a change by maxDebounceMs even when the quiet time is longer",
    { timeout: 30_000 },
    async (t) => {
      const dir = await mkdtemp(join(tmpdir(), "folder-source-"));
      // A quiet time no test waits out: only the maximum wait can report this change in time.
      const source = createFolderSource({ dir, debounceMs: 600_000, maxDebounceMs: 200 });
      t.after(async () => {
        await source.close();
        await rm(dir, { recursive: true, force: true });
      });
      const changed = new Promise<void>((resolve) => source.start(resolve));
      await writeFile(join(dir, "mesh.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n");
      await changed;
      const snapshot = await source.snapshot();
      assert.deepEqual(
        snapshot.objects.map((o) => `${o.kind}/${o.metadata.name}`),
        ["Namespace/demo"],
      );
    },
  );
});
