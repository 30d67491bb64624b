// The packages as a user gets them: `pnpm pack` every published package, install the tarballs with npm
// into new projects outside the workspace, then load every entry point from ESM and CommonJS and compile
// against the types with tsc (node16 and nodenext from ESM and CommonJS files, and bundler resolution),
// with `skipLibCheck` off. The @ambient packages come only from the tarballs; their peers and
// TypeScript's Node types come from the npm registry.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const root = resolve(here, "../../..");
const fixtures = join(here, "fixtures");
const tsc = createRequire(import.meta.url).resolve("typescript/lib/tsc.js");

/**
 * The app's own grpc-js: the lowest minor every package's peer range accepts (`@ambient/spiffe`'s
 * ^1.12, for its certificate-provider credentials; `@ambient/xds` takes ^1.10), not the workspace's copy.
 */
const APP_GRPC = "~1.12.0";
/** Peers of `@ambient/spiffe/ca` and TypeScript's Node types, as an app would install them. */
const APP_PEERS: Record<string, string> = {
  "@grpc/grpc-js": APP_GRPC,
  "@peculiar/x509": "^2.2.0",
  "reflect-metadata": "^0.2.0",
  jose: "^6.0.0",
  protobufjs: "^7.2.5",
  "@types/node": "^20.19.0",
};
/** Goal for a data plane that embeds only tunnels (issue: <= 15 packages installed). */
const HBONE_MAX_PACKAGES = 15;

interface Published {
  name: string;
  dir: string;
  manifest: {
    version: string;
    dependencies?: Record<string, string>;
    exports?: Record<string, unknown>;
    repository?: { url?: string; directory?: string };
    homepage?: string;
    bugs?: { url?: string };
    files?: string[];
  };
  subpaths: string[];
  tarball: string;
}

function run(cmd: string, args: string[], cwd: string, timeout: number): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      cmd,
      args,
      {
        cwd,
        timeout,
        killSignal: "SIGKILL",
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, CI: "true" },
      },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(`${cmd} ${args.join(" ")} (in ${cwd}) failed: ${err.message}\n${stdout}\n${stderr}`),
          );
        else resolvePromise(stdout);
      },
    );
  });
}

function publishedPackages(): Omit<Published, "tarball">[] {
  const found: Omit<Published, "tarball">[] = [];
  for (const entry of readdirSync(join(root, "packages")).sort()) {
    const dir = join(root, "packages", entry);
    const file = join(dir, "package.json");
    if (!existsSync(file)) continue;
    const manifest = JSON.parse(readFileSync(file, "utf8"));
    if (manifest.private) continue;
    const subpaths = Object.keys(manifest.exports ?? { ".": null }).filter((k) => !k.endsWith(".json"));
    found.push({ name: manifest.name, dir, manifest, subpaths });
  }
  return found;
}

/** The @ambient packages `name` needs at run time, itself included. */
function closure(name: string, all: Map<string, Published>): Published[] {
  const seen = new Map<string, Published>();
  const visit = (n: string) => {
    const pkg = all.get(n);
    if (pkg === undefined || seen.has(n)) return;
    seen.set(n, pkg);
    for (const dep of Object.keys(pkg.manifest.dependencies ?? {})) visit(dep);
  };
  visit(name);
  return [...seen.values()];
}

/**
 * Writes a project that depends on `deps` (tarballs) and `extra` (registry ranges) and installs it. The
 * @ambient names are pinned to the tarballs with `overrides`, so npm never looks them up in the registry.
 */
async function npmProject(dir: string, deps: Published[], extra: Record<string, string>): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const dependencies: Record<string, string> = { ...extra };
  const overrides: Record<string, string> = {};
  for (const p of deps) {
    dependencies[p.name] = `file:${relative(dir, p.tarball)}`;
    overrides[p.name] = `$${p.name}`;
  }
  writeFileSync(
    join(dir, "package.json"),
    `${JSON.stringify({ name: "consumer", version: "1.0.0", private: true, dependencies, overrides }, null, 2)}\n`,
  );
  await run(
    "npm",
    ["install", "--no-audit", "--no-fund", "--no-update-notifier", "--ignore-scripts", "--loglevel=error"],
    dir,
    240_000,
  );
}

/** Installed packages under `dir/node_modules`, nested ones included. */
function installedPackages(dir: string): string[] {
  const found: string[] = [];
  const walk = (modules: string) => {
    if (!existsSync(modules)) return;
    for (const entry of readdirSync(modules)) {
      if (entry.startsWith(".")) continue;
      const names = entry.startsWith("@")
        ? readdirSync(join(modules, entry)).map((s) => `${entry}/${s}`)
        : [entry];
      for (const name of names) {
        if (!existsSync(join(modules, name, "package.json"))) continue;
        found.push(name);
        walk(join(modules, name, "node_modules"));
      }
    }
  };
  walk(join(dir, "node_modules"));
  return found.sort();
}

function typescriptSources(packages: Published[]): string {
  const lines: string[] = [];
  let i = 0;
  for (const p of packages) {
    for (const sub of p.subpaths) {
      const spec = sub === "." ? p.name : `${p.name}/${sub.slice(2)}`;
      lines.push(
        `import * as entry${i} from "${spec}";`,
        `export const exports${i}: number = Object.keys(entry${i}).length;`,
      );
      i += 1;
    }
  }
  // The peer dependency at the type level: credentials typed by the app's grpc-js go into the xDS client.
  lines.push(
    'import { TrustBundle } from "@ambient/spiffe";',
    'import { grpcChannelCredentials } from "@ambient/spiffe/grpc";',
    'import { createXdsClient } from "@ambient/xds";',
    'import * as grpc from "@grpc/grpc-js";',
    "export function connect(bundle: TrustBundle): void {",
    '  const { credentials, channelOptions } = grpcChannelCredentials({ bundle, expectedIds: ["spiffe://cluster.local/ns/istio-system/sa/istiod"] });',
    "  const own: grpc.ChannelCredentials = credentials;",
    '  createXdsClient({ address: "127.0.0.1:15012", node: { id: "n" }, credentials: own, channelOptions }).close();',
    "}",
  );
  return `${lines.join("\n")}\n`;
}

// The package's test script raises the file's time limit to 10 minutes: on a loaded machine the npm
// install and the three compilations take longer than the repository's two-minute default.
describe("consumers of the packed packages", { concurrency: false, timeout: 600_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), "ambient-consumer-"));
  const app = join(work, "app");
  const packages = new Map<string, Published>();

  before(
    async () => {
      const tarballs = join(work, "tarballs");
      for (const p of publishedPackages()) {
        const dest = join(tarballs, p.name.replace("/", "+"));
        mkdirSync(dest, { recursive: true });
        await run("pnpm", ["pack", "--pack-destination", dest], p.dir, 120_000);
        const [file] = readdirSync(dest).filter((f) => f.endsWith(".tgz"));
        assert.ok(file, `pnpm pack wrote no tarball for ${p.name}`);
        packages.set(p.name, { ...p, tarball: join(dest, file) });
      }
      assert.ok(
        packages.has("@ambient/spiffe") && packages.has("@ambient/xds") && packages.has("@ambient/hbone"),
      );
      await npmProject(app, [...packages.values()], APP_PEERS);
      // The scripts must sit in the project: packages resolve from the importing file's folder.
      for (const f of readdirSync(fixtures)) copyFileSync(join(fixtures, f), join(app, f));
    },
    { timeout: 420_000 },
  );

  after(() => rmSync(work, { recursive: true, force: true }));

  it("declares where it comes from and ships its changelog; README links work on npm", () => {
    for (const p of packages.values()) {
      const installed = join(app, "node_modules", p.name);
      const manifest = JSON.parse(readFileSync(join(installed, "package.json"), "utf8"));
      const folder = relative(root, p.dir);
      assert.equal(manifest.repository?.directory, folder, `${p.name} repository.directory`);
      assert.match(
        manifest.repository?.url ?? "",
        /^git\+https:\/\/github\.com\/.+\.git$/,
        `${p.name} repository.url`,
      );
      assert.match(manifest.homepage ?? "", /^https:\/\//, `${p.name} homepage`);
      assert.match(manifest.bugs?.url ?? "", /^https:\/\//, `${p.name} bugs.url`);
      assert.ok(manifest.files?.includes("CHANGELOG.md"), `${p.name} files lists CHANGELOG.md`);
      assert.ok(!JSON.stringify(manifest).includes("workspace:"), `${p.name} still has workspace: ranges`);
      const readme = readFileSync(join(installed, "README.md"), "utf8");
      for (const [, target] of readme.matchAll(/\]\(([^)\s]+)\)/g)) {
        assert.match(
          target ?? "",
          /^(https?:\/\/|#)/,
          `${p.name} README links to ${target}, which npm cannot show`,
        );
      }
    }
  });

  it("loads every entry point with import, and the main ones change nothing global", async () => {
    const list = [...packages.values()].map(({ name, subpaths }) => ({ name, subpaths }));
    const out = await run(process.execPath, [join(app, "import-all.mjs"), JSON.stringify(list)], app, 60_000);
    assert.match(out, /^esm: \d+ packages/m);
  });

  it("loads every entry point with require", async () => {
    const list = [...packages.values()].map(({ name, subpaths }) => ({ name, subpaths }));
    const out = await run(
      process.execPath,
      [join(app, "require-all.cjs"), JSON.stringify(list)],
      app,
      60_000,
    );
    assert.match(out, /^cjs: \d+ packages/m);
  });

  it("takes credentials and servers built with the app's own @grpc/grpc-js", async () => {
    const out = await run(process.execPath, [join(app, "grpc-peer.mjs")], app, 60_000);
    assert.match(out, /with the app's @grpc\/grpc-js 1\.12\.\d+/);
  });

  const compilers: Array<[string, Record<string, string>, string[]]> = [
    ["node16", { module: "node16" }, ["node16.cts", "node16.mts"]],
    ["nodenext", { module: "nodenext" }, ["nodenext.cts", "nodenext.mts"]],
    ["bundler", { module: "esnext", moduleResolution: "bundler" }, ["bundler.ts"]],
  ];
  // Three independent compilations, each on files of its own: run side by side, they take the time of
  // the slowest.
  describe("tsc", { concurrency: true, timeout: 300_000 }, () => {
    for (const [label, options, files] of compilers) {
      const name = `compiles with ${label} resolution, from ${files.join(" and ")}, without skipLibCheck`;
      it(name, { timeout: 300_000 }, async () => {
        const source = typescriptSources([...packages.values()]);
        for (const f of files) writeFileSync(join(app, f), source);
        const config = {
          compilerOptions: {
            ...options,
            target: "es2022",
            strict: true,
            skipLibCheck: false,
            noEmit: true,
            types: ["node"],
          },
          files,
        };
        writeFileSync(join(app, `tsconfig.${label}.json`), JSON.stringify(config, null, 2));
        await run(process.execPath, [tsc, "-p", `tsconfig.${label}.json`], app, 240_000);
      });
    }
  });

  it(`installs @ambient/hbone alone as at most ${HBONE_MAX_PACKAGES} packages, none of them gRPC, X.509 or JWT`, async () => {
    const dir = join(work, "tunnels-only");
    await npmProject(dir, closure("@ambient/hbone", packages), {});
    const installed = installedPackages(dir);
    assert.ok(
      installed.length <= HBONE_MAX_PACKAGES,
      `${installed.length} packages: ${installed.join(", ")}`,
    );
    for (const heavy of ["@grpc/grpc-js", "protobufjs", "jose", "@peculiar/x509", "reflect-metadata"]) {
      assert.ok(!installed.includes(heavy), `${heavy} is installed with @ambient/hbone`);
    }
    const script =
      'await import("@ambient/hbone"); if (typeof Reflect.getMetadata !== "undefined") process.exit(3);';
    await run(process.execPath, ["--input-type=module", "-e", script], dir, 30_000);
  });
});
