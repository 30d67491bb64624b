// The main entry point stays light: what it loads at run time reaches only Node's own modules and
// @ambient/telemetry, never the optional peers that `/ca` and `/grpc` need. A data plane such as
// @ambient/hbone imports it, and does not install those peers.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const manifest = JSON.parse(readFileSync(join(here, "..", "package.json"), "utf8"));
/** The optional peer dependencies, as package.json declares them. */
const PEERS = Object.keys(manifest.peerDependencies ?? {});

/** Specifiers a module loads at run time: `import type` / `export type` are erased, the rest stays. */
function runtimeImports(file: string): string[] {
  const source = readFileSync(file, "utf8");
  const found: string[] = [];
  for (const m of source.matchAll(/^(?:import|export)\s+(type\s+)?(?:[^;]*?\s+from\s+)?"([^"]+)";/gm)) {
    if (m[1] === undefined) found.push(m[2] as string);
  }
  return found;
}

/** Every package an entry point reaches through its relative imports, with the file that imports it. */
function reachedPackages(entry: string): Map<string, string> {
  const packages = new Map<string, string>();
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of runtimeImports(file)) {
      if (spec.startsWith(".")) visit(join(dirname(file), spec.replace(/\.js$/, ".ts")));
      else if (!packages.has(spec)) packages.set(spec, file);
    }
  };
  visit(join(here, entry));
  return packages;
}

describe("entry points", () => {
  it("the main entry point loads only Node's modules and @ambient/telemetry", () => {
    const reached = reachedPackages("index.ts");
    for (const [spec, from] of reached) {
      assert.ok(
        spec.startsWith("node:") || spec === "@ambient/telemetry",
        `${spec} is loaded by the main entry point (imported in ${from})`,
      );
    }
  });

  it("the /grpc entry point adds only @grpc/grpc-js to what the main entry point may load", () => {
    const extra = [...reachedPackages("grpc.ts").keys()].filter(
      (s) => !s.startsWith("node:") && s !== "@ambient/telemetry",
    );
    assert.deepEqual(extra.sort(), ["@grpc/grpc-js"]);
  });

  it("every peer is optional, and the /ca entry point needs every peer and nothing else from outside", () => {
    for (const peer of PEERS) assert.equal(manifest.peerDependenciesMeta?.[peer]?.optional, true, peer);
    const extra = [...reachedPackages("ca.ts").keys()].filter((s) => !s.startsWith("node:"));
    assert.deepEqual(extra.filter((s) => s !== "@ambient/telemetry").sort(), [...PEERS].sort());
  });
});
