// What embedding tunnels costs before the first byte: the time to import @ambient/hbone in a fresh Node
// process, and the packages a consumer's install of it brings. Goals: <= 60 ms and <= 15 packages.
// Run with `pnpm bench` in this package after `pnpm build` (a few seconds; IMPORT_ROUNDS sets the rounds).
//
// Each round starts two fresh processes that time one dynamic import: @ambient/hbone (its built dist,
// through the package's own name), then node:tls as the baseline of loading nothing of ours. The
// package count walks the installed dependencies (and required peers) from this package's manifest,
// which is what npm installs for a consumer; examples/consumer-check checks the same with a real install.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROUNDS = Number(process.env.IMPORT_ROUNDS ?? 15);
const GOAL_MS = 60;
const GOAL_PACKAGES = 15;

/**
 * One fresh process's `await import(spec)`: wall-clock and CPU milliseconds (CPU time is less disturbed
 * by other jobs on a shared machine), and whether a Reflect polyfill appeared.
 */
function timeImport(spec: string): { ms: number; cpuMs: number; reflect: boolean } {
  const script = [
    "const cpu = process.cpuUsage();",
    "const start = performance.now();",
    `await import(${JSON.stringify(spec)});`,
    "const ms = performance.now() - start;",
    "const used = process.cpuUsage(cpu);",
    "const cpuMs = (used.user + used.system) / 1000;",
    'console.log(JSON.stringify({ ms, cpuMs, reflect: typeof Reflect.getMetadata !== "undefined" }));',
  ].join("\n");
  const res = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    cwd: packageDir,
    encoding: "utf8",
    timeout: 30_000,
  });
  if (res.status !== 0) throw new Error(`importing ${spec} failed: ${res.stderr}`);
  return JSON.parse(res.stdout);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

interface Manifest {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

/** The folder `name` resolves to from `fromDir`, following Node's node_modules lookup. */
function findPackage(name: string, fromDir: string): string {
  let dir = fromDir;
  for (;;) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return realpathSync(candidate);
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`${name} is not installed (looked up from ${fromDir})`);
    dir = parent;
  }
}

/** Every package a consumer install of the package in `dir` brings, itself included. */
function installClosure(dir: string): string[] {
  const seen = new Set<string>();
  const visit = (pkgDir: string) => {
    const manifest = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as Manifest;
    const id = `${manifest.name}@${manifest.version}`;
    if (seen.has(id)) return;
    seen.add(id);
    const required = Object.keys(manifest.peerDependencies ?? {}).filter(
      (name) => manifest.peerDependenciesMeta?.[name]?.optional !== true,
    );
    for (const name of [...Object.keys(manifest.dependencies ?? {}), ...required]) {
      visit(findPackage(name, pkgDir));
    }
  };
  visit(dir);
  return [...seen].sort();
}

const hbone: number[] = [];
const hboneCpu: number[] = [];
const tls: number[] = [];
const tlsCpu: number[] = [];
let reflect = false;
timeImport("@ambient/hbone"); // the first start also warms the disk cache
for (let i = 0; i < ROUNDS; i++) {
  const h = timeImport("@ambient/hbone");
  hbone.push(h.ms);
  hboneCpu.push(h.cpuMs);
  reflect ||= h.reflect;
  const t = timeImport("node:tls");
  tls.push(t.ms);
  tlsCpu.push(t.cpuMs);
}
const packages = installClosure(packageDir);
const hboneMs = median(hbone);
const tlsMs = median(tls);

console.log(`@ambient/hbone import bench (node ${process.version}, ${ROUNDS} fresh processes each)\n`);
console.log(
  `import @ambient/hbone: median ${hboneMs.toFixed(1)} ms (min ${Math.min(...hbone).toFixed(1)}, max ${Math.max(...hbone).toFixed(1)})`,
);
console.log(
  `import node:tls:       median ${tlsMs.toFixed(1)} ms (baseline; ratio ${(hboneMs / tlsMs).toFixed(1)})`,
);
console.log(
  `CPU time of the import:  @ambient/hbone ${median(hboneCpu).toFixed(1)} ms, node:tls ${median(tlsCpu).toFixed(1)} ms (medians)`,
);
console.log(`global Reflect polyfill after import: ${reflect ? "yes" : "no"}`);
console.log(`packages a consumer installs: ${packages.length} (${packages.join(", ")})`);
console.log(
  `\ngoals: import <= ${GOAL_MS} ms: ${hboneMs <= GOAL_MS ? "met" : "NOT met"}; ` +
    `<= ${GOAL_PACKAGES} packages: ${packages.length <= GOAL_PACKAGES ? "met" : "NOT met"}`,
);
