// How the bench starts a reference app (ztunnel, waypoint, control plane): from its built JavaScript,
// never through a TypeScript loader, except for an older tree given to compare against that predates
// examples/<app>/dist/main.js.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** The reference apps that build `examples/<app>/dist/main.js`. */
export type BenchApp = "ztunnel" | "waypoint" | "control-plane";

export interface AppEntry {
  /**
   * Node arguments before the app's own flags: the Node and V8 flags of the app's `pnpm start`, the
   * script, and a loader only for an old tree.
   */
  readonly nodeArgs: readonly string[];
  /** The Node flags of `pnpm start` that lead {@link nodeArgs} (none for an old tree under tsx). */
  readonly startFlags: readonly string[];
  /** For the bench log: what runs. */
  readonly describe: string;
  /** True when the app runs its sources under tsx (an older tree without a build). */
  readonly underTsx: boolean;
}

/**
 * The entry point of `app` in `root`. This tree (`repoRoot`) must have been built (`pnpm build`); a different
 * tree without `examples/<app>/dist/main.js` falls back to its `src/main.ts` under `tsx`, and says so.
 */
export function appEntry(app: BenchApp, root: string, repoRoot: string): AppEntry {
  const built = join(root, `examples/${app}/dist/main.js`);
  if (existsSync(built)) {
    const flags = startFlags(join(root, `examples/${app}/package.json`));
    return {
      nodeArgs: [...flags, built],
      startFlags: flags,
      describe: ["node", ...flags, `examples/${app}/dist/main.js`].join(" "),
      underTsx: false,
    };
  }
  if (resolve(root) === resolve(repoRoot)) {
    throw new Error(
      `${built} is missing: build the repository first (pnpm build, or pnpm --filter @ambient/example-${app} build)`,
    );
  }
  const source = join(root, `examples/${app}/src/main.ts`);
  return {
    nodeArgs: ["--import", "tsx", source],
    startFlags: [],
    describe: `node --import tsx examples/${app}/src/main.ts (this tree has no dist/main.js)`,
    underTsx: true,
  };
}

/**
 * The Node flags of an app's `start` script (`node [flags] dist/main.js`), so that the bench runs the
 * app as `pnpm start` and the Kubernetes manifests do. A tree whose script runs something else has none.
 */
export function startFlags(packageJson: string): string[] {
  if (!existsSync(packageJson)) return [];
  const { scripts } = JSON.parse(readFileSync(packageJson, "utf8")) as { scripts?: Record<string, string> };
  const words = (scripts?.start ?? "").trim().split(/\s+/);
  if (words[0] !== "node" || words.at(-1) !== "dist/main.js") return [];
  return words.slice(1, -1);
}
