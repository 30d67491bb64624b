/**
 * Summarizes V8 CPU profiles (`pnpm bench -- --cpu-prof` writes them to bench/profiles/): for each file,
 * which proxy it is, the busy time, the garbage collector's share of it and the functions with the most
 * self time. Samples from the first `--skip-seconds` (default 0) are left out, to drop the start-up.
 * Usage: node --import tsx src/profile-summary.ts [--skip-seconds=N] [--top=N] profiles/*.cpuprofile
 */
import { readFileSync } from "node:fs";

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const skipSeconds = Number(args.find((a) => a.startsWith("--skip-seconds="))?.split("=")[1] ?? 0);
const top = Number(args.find((a) => a.startsWith("--top="))?.split("=")[1] ?? 15);
const files = args.filter((a) => !a.startsWith("--"));

function shortUrl(url: string): string {
  const pnpm = url.lastIndexOf("node_modules/");
  if (pnpm !== -1) return url.slice(pnpm + "node_modules/".length);
  const repo = url.indexOf("/work/");
  return repo === -1 ? url.replace(/^node:/, "") : url.slice(url.indexOf("/", repo + 6) + 1);
}

for (const file of files) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const what = profile.nodes.some((n) => n.callFrame.url.includes("ztunnel/src/"))
    ? "ztunnel"
    : profile.nodes.some((n) => n.callFrame.url.includes("tls-relay"))
      ? "node-tls relay"
      : "other";
  const selfUs = new Map<string, number>();
  let time = profile.startTime;
  let busy = 0;
  for (const [i, id] of profile.samples.entries()) {
    const delta = profile.timeDeltas[i] ?? 0;
    time += delta;
    if (time - profile.startTime < skipSeconds * 1e6) continue;
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined || frame.functionName === "(idle)") continue;
    busy += delta;
    const key = `${frame.functionName || "(anonymous)"} ${shortUrl(frame.url)}${frame.url === "" ? "" : `:${frame.lineNumber + 1}`}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + delta);
  }
  const gc = selfUs.get("(garbage collector) ") ?? 0;
  console.log(
    `== ${file} (${what}): busy ${(busy / 1e6).toFixed(2)} s, garbage collector ${((100 * gc) / Math.max(1, busy)).toFixed(1)}% of it`,
  );
  for (const [key, us] of [...selfUs].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((100 * us) / Math.max(1, busy)).toFixed(1).padStart(6)}%  ${key}`);
  }
}
