import { defineConfig } from "tsup";

export default defineConfig({
  // `index` is the programmatic API (ESM and CJS); `bin` is the `ambient` command (tsup keeps its
  // shebang and marks it executable).
  entry: ["src/index.ts", "src/bin.ts"],
  format: ["esm", "cjs"],
  dts: { entry: "src/index.ts" },
  target: "node20",
  platform: "node",
  sourcemap: true,
  clean: true,
  splitting: false,
  treeshake: true,
  // import.meta.url in the CJS build (the version is read from the package.json next to dist/).
  shims: true,
});
