// The V8 flags the reference proxies (ztunnel, waypoint) run with. `pnpm start` and the Kubernetes
// manifests pass them (V8 does not take them from NODE_OPTIONS); a proxy started some other way says
// which ones it lacks. Why each: README, "Runtime flags".

/** Node flags of the proxies' `pnpm start`, in order. */
export const PROXY_NODE_FLAGS: readonly string[] = ["--initial-old-space-size=64", "--min-semi-space-size=8"];

/** `--a_b=1` and `--a-b 1` name the same V8 flag as `--a-b=1`: the name, with dashes. */
function flagName(arg: string): string {
  const eq = arg.indexOf("=");
  return (eq === -1 ? arg : arg.slice(0, eq)).replaceAll("_", "-");
}

/**
 * The flags of {@link PROXY_NODE_FLAGS} that `execArgv` does not set, whatever value it gives them
 * (an operator may have chosen another on purpose).
 */
export function missingProxyNodeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  const given = new Set(execArgv.filter((a) => a.startsWith("--")).map(flagName));
  return PROXY_NODE_FLAGS.filter((flag) => !given.has(flagName(flag)));
}

/**
 * Logs one warning naming the flags of {@link PROXY_NODE_FLAGS} this process runs without, and what
 * that costs (`cost`); nothing when it has them all.
 */
export function warnMissingProxyNodeFlags(
  logger: { warn(obj: object, msg: string): void },
  cost: string,
): void {
  const missing = missingProxyNodeFlags();
  if (missing.length === 0) return;
  logger.warn(
    { missing },
    `started without these Node flags (pnpm start passes them): ${cost} (README, Runtime flags)`,
  );
}
