import { defineConfig } from "tsup";

export default defineConfig({
  entry: { index: "src/index.ts", zds: "src/zds/index.ts" },
  format: ["esm", "cjs"],
  dts: true,
  target: "node20",
  platform: "node",
  sourcemap: true,
  clean: true,
  splitting: false,
  treeshake: true,
  // import.meta.url in the CJS build (koffi is required lazily through createRequire).
  shims: true,
});
