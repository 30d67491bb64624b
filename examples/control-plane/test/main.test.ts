import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { it } from "node:test";

const MAIN = resolve(import.meta.dirname, "../src/main.ts");

it("the CLI serves, logs JSON lines and exits cleanly on SIGTERM", { timeout: 60_000 }, async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "control-plane-cli-"));
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      MAIN,
      // As `pnpm start -- ...` passes them.
      "--",
      "--state-dir",
      stateDir,
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--pod-cidr",
      "10.244.0.0/16,127.10.0.0/24",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<number | null>((resolveExit) => child.on("exit", (code) => resolveExit(code)));
  try {
    const listening = await new Promise<{ address: string; admin: string }>((resolveLine, reject) => {
      const lines = createInterface({ input: child.stdout });
      lines.on("line", (line) => {
        const entry = JSON.parse(line) as { msg?: string; address?: string; admin?: string };
        if (entry.msg === "control plane listening" && entry.address && entry.admin) {
          resolveLine({ address: entry.address, admin: entry.admin });
        }
      });
      child.once("exit", (code) => reject(new Error(`control plane exited early with ${code}`)));
    });
    assert.match(listening.address, /^127\.0\.0\.1:\d+$/);
    assert.equal((await fetch(`http://${listening.admin}/ready`)).status, 200);
    const metrics = await (await fetch(`http://${listening.admin}/metrics`)).text();
    assert.match(metrics, /ambient_control_plane_resources\{type="workload"\} 7/);
    assert.match(metrics, /process_cpu_seconds_total/);
    assert.ok(existsSync(join(stateDir, "root-cert.pem")));
    assert.ok(existsSync(join(stateDir, "tokens", "node-b.jwt")));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolveRun) => {
    const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("exit", (code) => resolveRun({ code, stdout, stderr }));
  });
}

it("--help after pnpm's -- separator describes every flag", { timeout: 60_000 }, async () => {
  const source = await readFile(MAIN, "utf8");
  const block = source.slice(source.indexOf("options: {"), source.indexOf("}).values"));
  const flags = [...block.matchAll(/^\s+"?([a-z][a-z-]*)"?: \{ type:/gm)].map((m) => `--${m[1]}`);
  assert.ok(flags.length >= 8, flags.join(" "));
  for (const args of [["--", "--help"], ["-h"]]) {
    const { code, stdout, stderr } = await run(args);
    assert.equal(code, 0, `${args.join(" ")}: ${stderr}`);
    for (const flag of flags) {
      assert.match(stdout, new RegExp(`^\\s+(-h, )?${flag}\\b.*\\S`, "m"), `${flag} in --help`);
    }
  }
});

it(
  "refuses an unknown flag, a bad push buffer, a bad capture signal and a bad pod range with a message",
  { timeout: 60_000 },
  async () => {
    const unknown = await run(["--", "--nope"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /Unknown option '--nope'[\s\S]*usage:/);
    for (const value of ["0", "1.5", "lots"]) {
      const buffer = await run(["--xds-push-buffer-mib", value]);
      assert.equal(buffer.code, 2, value);
      assert.match(buffer.stderr, /--xds-push-buffer-mib must be a positive integer[\s\S]*usage:/);
    }
    const signal = await run(["--capture-signal", "label"]);
    assert.equal(signal.code, 2);
    assert.match(signal.stderr, /--capture-signal must be dataplane-mode or redirection[\s\S]*usage:/);
    const bad = await run([
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--pod-cidr",
      "127.10.0.1/16",
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /pod CIDR "127\.10\.0\.1\/16" has host bits set/);
  },
);

it(
  "--kubernetes reads the cluster of --kubeconfig and exits cleanly on SIGTERM",
  { timeout: 60_000 },
  async () => {
    const { createFakeApiServer } = await import("./fake-apiserver/fake-apiserver.js");
    const server = await createFakeApiServer({ crds: [] });
    const dir = await mkdtemp(join(tmpdir(), "control-plane-kube-cli-"));
    server.apply({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "p", namespace: "default" },
      spec: { nodeName: "n1", serviceAccountName: "a" },
      status: { podIP: "127.10.0.7" },
    });
    const kubeconfig = join(dir, "kubeconfig");
    await writeFile(kubeconfig, server.kubeconfig());
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        MAIN,
        "--kubernetes",
        "--kubeconfig",
        kubeconfig,
        "--pod-name",
        "cli-replica",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--xds-debounce-ms",
        "10",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const exited = new Promise<number | null>((resolveExit) => child.on("exit", (code) => resolveExit(code)));
    try {
      const admin = await new Promise<string>((resolveLine, reject) => {
        const lines = createInterface({ input: child.stdout });
        lines.on("line", (line) => {
          const entry = JSON.parse(line) as { msg?: string; admin?: string; source?: string };
          if (entry.msg === "control plane listening" && entry.admin) {
            assert.equal(entry.source, `kubernetes ${server.url}`);
            resolveLine(entry.admin);
          }
        });
        child.once("exit", (code) => reject(new Error(`control plane exited early with ${code}`)));
      });
      const config = (await (await fetch(`http://${admin}/debug/config`)).json()) as {
        workloads: { name: string }[];
      };
      assert.deepEqual(
        config.workloads.map((w) => w.name),
        ["p"],
      );
      // The CA Secret it created for the replicas to share.
      assert.ok(server.get("v1", "Secret", "istio-ca-secret", "istio-system"));
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);
