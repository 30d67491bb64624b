import { defineConfig } from "tsup";

export default defineConfig({
  // One bundle per entry point; shared modules go to chunks so that the entry points share one
  // SpiffeId and TrustBundle class.
  entry: ["src/index.ts", "src/ca.ts", "src/grpc.ts"],
  format: ["esm", "cjs"],
  dts: true,
  target: "node20",
  platform: "node",
  sourcemap: true,
  clean: true,
  splitting: true,
  treeshake: true,
});
