/**
 * Lets the waypoint bench run a second, "before" waypoint in the same run as the current one, for
 * before/after lines measured under the same load. A snapshot folder holds copies of some of the
 * repository's files at their repository paths (for example `packages/router/dist/`,
 * `examples/waypoint/src/` or `examples/waypoint/dist/`). Given to node with `--import` (after tsx when the
 * snapshot's waypoint runs from its sources), the module this returns registers resolve hooks that make the
 * process use the snapshot's copy of any module it has one of, and resolve the bare imports of snapshot
 * files as if they sat at their original place (so their dependencies resolve through the repository's
 * node_modules). It is a `data:` URL of plain JavaScript, so a built waypoint needs no TypeScript loader
 * to take it.
 */
import { pathToFileURL } from "node:url";

/** A `data:` module URL for `node --import` that redirects the process's modules to `snapshot`'s copies. */
export function baselineHookImport(snapshot: string, repoRoot: string): string {
  const repoUrl = pathToFileURL(repoRoot.endsWith("/") ? repoRoot : `${repoRoot}/`).href;
  const snapshotUrl = pathToFileURL(snapshot.endsWith("/") ? snapshot : `${snapshot}/`).href;
  // Plain JavaScript, run on the loader thread.
  const hooks = `
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
const repo = ${JSON.stringify(repoUrl)};
const snap = ${JSON.stringify(snapshotUrl)};
const bare = (s) => !s.startsWith(".") && !s.startsWith("/") && !/^[a-z]+:/.test(s);
export async function resolve(specifier, context, next) {
  let ctx = context;
  if (bare(specifier) && context.parentURL?.startsWith(snap)) {
    ctx = { ...context, parentURL: repo + context.parentURL.slice(snap.length) };
  }
  const resolved = await next(specifier, ctx);
  if (resolved.url.startsWith(repo) && !resolved.url.includes("/node_modules/.pnpm/")) {
    const copy = snap + resolved.url.slice(repo.length);
    if (existsSync(fileURLToPath(copy))) return { ...resolved, url: copy, shortCircuit: true };
  }
  return resolved;
}
`;
  const registration = `import { register } from "node:module";\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});\n`;
  return `data:text/javascript,${encodeURIComponent(registration)}`;
}
