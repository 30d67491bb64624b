/**
 * Lets the waypoint bench run a second, "before" waypoint in the same run as the current one, for
 * before/after lines measured under the same load. A snapshot folder (`AMBIENT_BENCH_BASELINE`) holds
 * copies of some of the repository's files at their repository paths (for example
 * `packages/router/dist/`, `examples/waypoint/src/`). Loaded with `--import` after tsx, this hook
 * makes the process use the snapshot's copy of any module it has one of, and resolves the bare
 * imports of snapshot files as if they sat at their original place (so their dependencies resolve
 * through the repository's node_modules). Nothing changes when the variable is unset.
 */
import { register } from "node:module";
import { pathToFileURL } from "node:url";

const snapshot = process.env.AMBIENT_BENCH_BASELINE;
if (snapshot !== undefined && snapshot !== "") {
  const repoRoot = new URL("../../", import.meta.url).href;
  const snapshotUrl = pathToFileURL(snapshot.endsWith("/") ? snapshot : `${snapshot}/`).href;
  // Plain JavaScript, run on the loader thread.
  const hooks = `
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
const repo = ${JSON.stringify(repoRoot)};
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
  register(`data:text/javascript,${encodeURIComponent(hooks)}`);
}
