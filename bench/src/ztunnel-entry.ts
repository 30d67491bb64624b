// How the bench starts a reference ztunnel: from its built JavaScript, never through a TypeScript loader,
// except for an older tree given with --base-tree that predates examples/ztunnel/dist/main.js.
import { type AppEntry, appEntry } from "./app-entry.js";

export type ZtunnelEntry = AppEntry;

/**
 * The ztunnel entry point in `root`. This tree (`repoRoot`) must have been built (`pnpm build`); a different
 * tree without `examples/ztunnel/dist/main.js` falls back to its `src/main.ts` under `tsx`, and says so.
 */
export function ztunnelEntry(root: string, repoRoot: string): ZtunnelEntry {
  return appEntry("ztunnel", root, repoRoot);
}
