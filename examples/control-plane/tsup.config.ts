import { cp } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type Options } from "tsup";

const pageSource = fileURLToPath(new URL("./src/dashboard/page/", import.meta.url));

// The control plane runs from built JavaScript (`node dist/main.js`), not through a TypeScript loader.
// Workspace packages and npm dependencies stay external (tsup leaves every package.json dependency out).
// dist/main.js sits as deep as src/main.ts, so the default --mesh-dir and --state-dir (from
// import.meta.dirname) are the same folders. The live mesh page's files are read next to the module
// that serves them (`new URL("./page/", import.meta.url)`), which is dist/main.js once bundled: they
// are copied to <outDir>/page/.
export default defineConfig((overrides: Options) => {
  const outDir = overrides.outDir ?? "dist";
  return {
    entry: { main: "src/main.ts" },
    outDir,
    format: ["esm"],
    dts: false,
    target: "node20",
    platform: "node",
    sourcemap: false,
    minify: false,
    clean: true,
    splitting: false,
    treeshake: true,
    async onSuccess() {
      await cp(pageSource, join(outDir, "page"), { recursive: true });
    },
  };
});
