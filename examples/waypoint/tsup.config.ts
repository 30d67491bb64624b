import { defineConfig } from "tsup";

// The waypoint runs from built JavaScript (`node dist/main.js`), not through a TypeScript loader.
// Workspace packages and npm dependencies stay external (tsup leaves every package.json dependency out),
// except @ambient/example-ztunnel: an app, not a package, whose `exports` point at its TypeScript
// sources, so its modules are bundled in. Their own imports must then resolve from this folder: the
// waypoint's package.json lists them too.
// dist/main.js sits as deep as src/main.ts, so the default --state-dir (from import.meta.url) is the same.
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
  noExternal: ["@ambient/example-ztunnel"],
});
