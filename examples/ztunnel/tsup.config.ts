import { defineConfig } from "tsup";

// The ztunnel runs from built JavaScript (`node dist/main.js`), not through a TypeScript loader.
// Workspace packages and npm dependencies stay external (tsup leaves every package.json dependency out).
// dist/main.js sits as deep as src/main.ts, so paths main.ts computes from import.meta.url
// (the default --state-dir) resolve to the same folder.
export default defineConfig({
  entry: { main: "src/main.ts" },
  format: ["esm"],
  dts: false,
  target: "node20",
  platform: "node",
  sourcemap: false,
  minify: false,
  clean: true,
  splitting: false,
  treeshake: true,
});
