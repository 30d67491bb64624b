import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { it } from "node:test";

const MAIN = resolve(import.meta.dirname, "../src/main.ts");

/** The CLI started under tsx, once it logged that it listens. */
interface RunningCli {
  child: ChildProcess;
  /** The `control plane listening` line. */
  listening: { address: string; admin: string; source?: string };
  exited: Promise<number | null>;
}

/** Starts the CLI with `args` (and `env` over the test run's) and waits until it listens. */
async function startCli(args: string[], env: Record<string, string> = {}): Promise<RunningCli> {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<number | null>((resolveExit) => child.on("exit", (code) => resolveExit(code)));
  try {
    const listening = await new Promise<RunningCli["listening"]>((resolveLine, reject) => {
      createInterface({ input: child.stdout as Readable }).on("line", (line) => {
        const entry = JSON.parse(line) as { msg?: string } & Partial<RunningCli["listening"]>;
        if (entry.msg === "control plane listening" && entry.address && entry.admin) {
          resolveLine({
            address: entry.address,
            admin: entry.admin,
            ...(entry.source ? { source: entry.source } : {}),
          });
        }
      });
      child.once("exit", (code) => reject(new Error(`control plane exited early with ${code}`)));
    });
    return { child, listening, exited };
  } catch (err) {
    if (child.exitCode === null) child.kill("SIGKILL");
    throw err;
  }
}

/** Stops `cli` with SIGTERM and checks it exits 0. */
async function stopCli(cli: RunningCli): Promise<void> {
  cli.child.kill("SIGTERM");
  assert.equal(await cli.exited, 0);
}

it("the CLI serves, logs JSON lines and exits cleanly on SIGTERM", { timeout: 60_000 }, async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "control-plane-cli-"));
  let cli: RunningCli | undefined;
  try {
    cli = await startCli([
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
    ]);
    const { address, admin } = cli.listening;
    assert.match(address, /^127\.0\.0\.1:\d+$/);
    assert.equal((await fetch(`http://${admin}/ready`)).status, 200);
    const metrics = await (await fetch(`http://${admin}/metrics`)).text();
    assert.match(metrics, /ambient_control_plane_resources\{type="workload"\} 7/);
    assert.match(metrics, /process_cpu_seconds_total/);
    assert.ok(existsSync(join(stateDir, "root-cert.pem")));
    assert.ok(existsSync(join(stateDir, "tokens", "node-b.jwt")));
    await stopCli(cli);
  } finally {
    if (cli?.child.exitCode === null) cli.child.kill("SIGKILL");
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
    let cli: RunningCli | undefined;
    try {
      cli = await startCli([
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
      ]);
      assert.equal(cli.listening.source, `kubernetes ${server.url}`);
      const config = (await (await fetch(`http://${cli.listening.admin}/debug/config`)).json()) as {
        workloads: { name: string }[];
      };
      assert.deepEqual(
        config.workloads.map((w) => w.name),
        ["p"],
      );
      // The CA Secret it created for the replicas to share.
      assert.ok(server.get("v1", "Secret", "istio-ca-secret", "istio-system"));
      await stopCli(cli);
    } finally {
      if (cli?.child.exitCode === null) cli.child.kill("SIGKILL");
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  },
);

it(
  "--trust-domain and --domain name every identity and Service host; TRUST_DOMAIN is read without the flag",
  { timeout: 60_000 },
  async () => {
    for (const [args, env] of [
      [["--trust-domain", "example.org", "--domain", "corp.internal"], {}],
      [["--domain", "corp.internal"], { TRUST_DOMAIN: "example.org" }],
    ] as const) {
      const stateDir = await mkdtemp(join(tmpdir(), "control-plane-domains-"));
      let cli: RunningCli | undefined;
      try {
        cli = await startCli(
          ["--state-dir", stateDir, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...args],
          env,
        );
        const { admin } = cli.listening;
        const config = (await (await fetch(`http://${admin}/debug/config`)).json()) as {
          workloads: { name: string; trustDomain: string }[];
          services: { hostname: string }[];
        };
        assert.ok(config.workloads.length > 0 && config.services.length > 0);
        for (const w of config.workloads) assert.equal(w.trustDomain, "example.org", w.name);
        for (const s of config.services)
          assert.match(s.hostname, /^[a-z0-9-]+\.[a-z0-9-]+\.svc\.corp\.internal$/);
        await stopCli(cli);
      } finally {
        if (cli?.child.exitCode === null) cli.child.kill("SIGKILL");
        await rm(stateDir, { recursive: true, force: true });
      }
    }
    for (const [args, message] of [
      [["--trust-domain", "Example.org"], /trustDomain: invalid trust domain "Example\.org"/],
      [["--domain", "corp.internal."], /domainSuffix: "corp\.internal\." is not a DNS domain/],
    ] as const) {
      const bad = await run(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...args]);
      assert.equal(bad.code, 1, args.join(" "));
      assert.match(bad.stderr, message);
    }
  },
);
