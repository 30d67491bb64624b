// Earlier code for a bench's "before" side: files of packages/xds/src as they were at a git commit,
// copied out of git into node_modules/.cache and run against this tree for everything else.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** This tree's packages/xds/src. */
export const src = join(here, "../src");

/**
 * Writes `files` (names under src, without `.ts`) as they were at `commit` into
 * `node_modules/.cache/<cacheName>/<commit>`. They import each other there and every other module
 * from this tree's src. Returns the directory.
 */
export function baselineFiles(commit: string, cacheName: string, files: readonly string[]): string {
  const dir = join(here, "../node_modules/.cache", cacheName, commit);
  mkdirSync(dir, { recursive: true });
  const root = execFileSync("git", ["rev-parse", "--show-toplevel"], { cwd: here }).toString().trim();
  for (const name of files) {
    const text = execFileSync("git", ["show", `${commit}:packages/xds/src/${name}.ts`], {
      cwd: root,
    }).toString();
    const rewritten = text.replace(/from "\.\/([\w/-]+)\.js"/g, (whole, imported: string) =>
      files.includes(imported) ? whole : `from "${pathToFileURL(join(src, `${imported}.ts`)).href}"`,
    );
    writeFileSync(join(dir, `${name}.ts`), rewritten);
  }
  return dir;
}
