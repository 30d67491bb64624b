import type { Options } from "tsup";

// How the reference apps build: each runs from built JavaScript (`node dist/main.js`), not through a
// TypeScript loader. One ESM bundle of src/main.ts; workspace packages and npm dependencies stay
// external (tsup leaves every package.json dependency out). dist/main.js sits as deep as src/main.ts,
// so paths an app computes from import.meta.url (default state and mesh folders) are the same folders.
export const appBuild = {
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
} satisfies Options;
