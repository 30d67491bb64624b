// How the bench starts a reference ztunnel: from its built JavaScript, never through a TypeScript loader,
// except for an older tree given with --base-tree that predates examples/ztunnel/dist/main.js.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

export interface ZtunnelEntry {
  /** Node arguments before the ztunnel's own flags: the script, and a loader only for an old base tree. */
  readonly nodeArgs: readonly string[];
  /** For the bench log: what runs. */
  readonly describe: string;
}

/**
 * The ztunnel entry point in `root`. This tree (`repoRoot`) must have been built (`pnpm build`); a different
 * tree without `examples/ztunnel/dist/main.js` falls back to its `src/main.ts` under `tsx`, and says so.
 */
export function ztunnelEntry(root: string, repoRoot: string): ZtunnelEntry {
  const built = join(root, "examples/ztunnel/dist/main.js");
  if (existsSync(built)) return { nodeArgs: [built], describe: "node examples/ztunnel/dist/main.js" };
  if (resolve(root) === resolve(repoRoot)) {
    throw new Error(
      `${built} is missing: build the repository first (pnpm build, or pnpm --filter @ambient/example-ztunnel build)`,
    );
  }
  const source = join(root, "examples/ztunnel/src/main.ts");
  return {
    nodeArgs: ["--import", "tsx", source],
    describe: "node --import tsx examples/ztunnel/src/main.ts (this base tree has no dist/main.js)",
  };
}
