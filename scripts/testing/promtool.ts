// Test helpers shared by the apps' metric-name checks: `promtool check metrics` (Debian prometheus)
// over an exposition text, and a way to make promtool lint families that have no sample yet.
import { spawn } from "node:child_process";
import { once } from "node:events";

/** Problems promtool reports as `<metric> <text>`, and whether it could read the text at all. */
export async function promtoolCheckMetrics(text: string): Promise<{ code: number; problems: string[] }> {
  const child = spawn("promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk;
  });
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk;
  });
  child.stdin.end(text);
  const [code] = (await once(child, "close")) as [number | null];
  return { code: code ?? 1, problems: output.split("\n").filter((line) => line.trim() !== "") };
}

/**
 * promtool skips a family that has no sample (a labelled counter nothing has counted yet), so this adds
 * one zero sample of the right shape to each such family: then every declared name is linted too.
 */
export function withSampleInEveryFamily(text: string): string {
  const lines = text.split("\n");
  const out: string[] = [];
  for (const [i, line] of lines.entries()) {
    out.push(line);
    const declared = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (declared === null) continue;
    const [, name, type] = declared as unknown as [string, string, string];
    const next = lines.slice(i + 1).find((l) => !l.startsWith("#"));
    const sampled = /^[^{\s]+/.exec(next ?? "")?.[0];
    if (sampled !== undefined && [name, `${name}_bucket`, `${name}_sum`, `${name}_count`].includes(sampled)) {
      continue;
    }
    if (type === "histogram") out.push(`${name}_bucket{le="+Inf"} 0`, `${name}_sum 0`, `${name}_count 0`);
    else if (type === "summary") out.push(`${name}_sum 0`, `${name}_count 0`);
    else out.push(`${name} 0`);
  }
  return out.join("\n");
}
