// The ztunnel program (src/main.ts) run as node-a against a test control plane, for tests of what its
// command line and environment decide.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestControlPlane } from "./control-plane.js";

const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));

/** What a run of the program showed. */
export interface ZtunnelRun {
  ready: boolean;
  /** Its stdout and stderr. */
  out: string;
  /** `/config_dump` when the wait ended, while the program still ran. */
  dump?: { ready: boolean; workloads: { name: string }[]; certificates: { identity: string }[] };
}

/**
 * Runs src/main.ts as node-a at `nodeIp` against `cp` (its root and a node-a token from it), with `env`
 * as its whole environment, until it is ready, exits, or `until` says to stop waiting (else 20 s);
 * reads its `/config_dump`, then ends it and removes its files.
 */
export async function runZtunnelProgram(
  cp: TestControlPlane,
  nodeIp: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  until: (out: string) => boolean = () => false,
): Promise<ZtunnelRun> {
  const dir = mkdtempSync(join(tmpdir(), "ztunnel-program-"));
  writeFileSync(join(dir, "root-cert.pem"), cp.rootCertPem);
  writeFileSync(join(dir, "node-a.jwt"), await cp.tokenFor("node-a"));
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      main,
      "--node-ip",
      nodeIp,
      "--control-plane",
      cp.address,
      "--root-cert",
      join(dir, "root-cert.pem"),
      "--token-file",
      join(dir, "node-a.jwt"),
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"], env },
  );
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    const deadline = Date.now() + 20_000;
    const isReady = () => out.includes("ready: point SOCKS5 clients here");
    while (!isReady() && !until(out) && child.exitCode === null && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (child.exitCode !== null) return { ready: false, out };
    const response = await fetch(`http://${nodeIp}:15000/config_dump`);
    return { ready: isReady(), out, dump: (await response.json()) as ZtunnelRun["dump"] };
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}
