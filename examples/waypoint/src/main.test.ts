import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const main = fileURLToPath(new URL("./main.ts", import.meta.url));
const run = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", main, ...args], { encoding: "utf8", timeout: 30_000 });

describe("waypoint CLI", () => {
  it("describes every flag it parses in --help", () => {
    const out = run("--help");
    assert.equal(out.status, 0);
    const parsed = [
      ...readFileSync(main, "utf8").matchAll(/^\s+"?([a-z-]+)"?: \{ type: "(?:string|boolean)"/gm),
    ].map((m) => `--${m[1]}`);
    assert.ok(parsed.length >= 14, `found only ${parsed.join(" ")}`);
    const described = new Set(
      [...out.stdout.matchAll(/^ {2}(--[a-z-]+(?:, --[a-z-]+)*)/gm)].flatMap((m) => (m[1] ?? "").split(", ")),
    );
    for (const flag of parsed) assert.ok(described.has(flag), `${flag} is not described`);
  });

  it("exits 2 on a port that is not a number", () => {
    const out = run("--stats-port", "http");
    assert.equal(out.status, 2);
    assert.match(out.stderr, /--stats-port must be a port number/);
  });

  it("exits 1 naming --token-file when it cannot be read or is empty, before starting anything", () => {
    const dir = mkdtempSync(join(tmpdir(), "waypoint-cli-"));
    try {
      const rootCert = join(dir, "root-cert.pem");
      writeFileSync(rootCert, "-----BEGIN CERTIFICATE-----\n");
      const missing = join(dir, "no-such-token");
      const out = run("--root-cert", rootCert, "--token-file", missing, "--ip", "127.0.0.1");
      assert.equal(out.status, 1);
      assert.ok(out.stdout.includes(`cannot read the token file ${missing}`), out.stdout);
      const empty = join(dir, "empty-token");
      writeFileSync(empty, "\n");
      const out2 = run("--root-cert", rootCert, "--token-file", empty, "--ip", "127.0.0.1");
      assert.equal(out2.status, 1);
      assert.ok(out2.stdout.includes(`the token file ${empty} is empty`), out2.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads the roots from --root-cert, not from --state-dir", () => {
    const dir = mkdtempSync(join(tmpdir(), "waypoint-cli-"));
    try {
      const missing = join(dir, "no-such-root.pem");
      const out = run("--root-cert", missing, "--state-dir", dir, "--ip", "127.0.0.1");
      assert.equal(out.status, 1);
      assert.ok(out.stdout.includes(missing), out.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("waypoint CLI cluster id", () => {
  const withEnv = (env: Record<string, string>, ...args: string[]) => {
    const { CLUSTER_ID: _a, ISTIO_META_CLUSTER_ID: _b, ...rest } = process.env;
    return spawnSync(process.execPath, ["--import", "tsx", main, ...args], {
      encoding: "utf8",
      timeout: 30_000,
      env: { ...rest, ...env },
    });
  };
  const missingRoot = join(tmpdir(), "waypoint-cli-no-such-root.pem");

  it("exits 2 on a --cluster-id or ISTIO_META_CLUSTER_ID that is empty or has whitespace", () => {
    for (const [env, args, message] of [
      [{}, ["--cluster-id", "cluster 1"], /--cluster-id must be .*"cluster 1"/],
      [{}, ["--cluster-id="], /--cluster-id must be .*""/],
      [{ ISTIO_META_CLUSTER_ID: "" }, [], /ISTIO_META_CLUSTER_ID must be .*""/],
      [{ ISTIO_META_CLUSTER_ID: "east\n" }, [], /ISTIO_META_CLUSTER_ID must be .*"east\\n"/],
    ] as const) {
      const out = withEnv(env, "--root-cert", missingRoot, ...args);
      assert.equal(out.status, 2, `${args.join(" ")} ${JSON.stringify(env)}: ${out.stderr}${out.stdout}`);
      assert.match(out.stderr, message);
    }
  });

  it("exits 2 on a trust domain or a cluster domain that is not one, from the flag or its variable", () => {
    for (const [env, args, message] of [
      [{}, ["--trust-domain", "Example.org"], /--trust-domain is not a trust domain/],
      [{ TRUST_DOMAIN: "" }, [], /TRUST_DOMAIN is not a trust domain/],
      [{}, ["--cluster-domain", "corp.internal."], /--cluster-domain is not a DNS domain/],
      [{ CLUSTER_DOMAIN: "corp_internal" }, [], /CLUSTER_DOMAIN is not a DNS domain/],
      [
        {},
        ["--trust-domain-aliases", "old.example, Old.Example"],
        /--trust-domain-aliases is not a trust domain/,
      ],
    ] as const) {
      const out = withEnv(env, "--root-cert", missingRoot, ...args);
      assert.equal(out.status, 2, `${args.join(" ")} ${JSON.stringify(env)}: ${out.stderr}${out.stdout}`);
      assert.match(out.stderr, message);
    }
    // The flag wins: the variable it overrides is not read, and the start goes on to the missing roots.
    const out = withEnv(
      { TRUST_DOMAIN: "Not Valid" },
      "--root-cert",
      missingRoot,
      "--trust-domain",
      "example.org",
    );
    assert.equal(out.status, 1, `${out.stderr}${out.stdout}`);
  });

  it("takes the flag over ISTIO_META_CLUSTER_ID, and reads no CLUSTER_ID (istio-proxy does not)", () => {
    // Both get as far as the roots, which are missing: exit 1, not a flag error.
    for (const [env, args] of [
      [{ ISTIO_META_CLUSTER_ID: "a b" }, ["--cluster-id", "cluster1"]],
      [{ CLUSTER_ID: "a b" }, []],
    ] as const) {
      const out = withEnv(env, "--root-cert", missingRoot, ...args);
      assert.equal(out.status, 1, `${args.join(" ")} ${JSON.stringify(env)}: ${out.stderr}${out.stdout}`);
      assert.ok(out.stdout.includes(missingRoot), out.stdout);
    }
  });
});

describe("waypoint CLI drain deadline", () => {
  it("exits 2 on a --termination-drain-ms that is not a whole number", () => {
    const out = run("--termination-drain-ms", "soon");
    assert.equal(out.status, 2);
    assert.match(out.stderr, /--termination-drain-ms must be a whole number of ms/);
  });
});
