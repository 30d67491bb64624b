import { cp } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig, type Options } from "tsup";
import { appBuild } from "../tsup-app.js";

const pageSource = fileURLToPath(new URL("./src/dashboard/page/", import.meta.url));

// The live mesh page's files are read next to the module that serves them (`new URL("./page/",
// import.meta.url)`), which is dist/main.js once bundled: they are copied to <outDir>/page/.
export default defineConfig((overrides: Options) => {
  const outDir = overrides.outDir ?? "dist";
  return {
    ...appBuild,
    outDir,
    async onSuccess() {
      await cp(pageSource, join(outDir, "page"), { recursive: true });
    },
  };
});
