import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { createXdsClient, TypeUrl, type Workload, type XdsClient } from "@ambient/xds";
import {
  type ControlPlane,
  controlPlaneChannel,
  DEFAULT_MANIFEST_LIMITS,
  type ManifestError,
  parseManifestFile,
  startControlPlane,
} from "../src/index.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
const ECHO_1 = "Kubernetes//Pod/demo/echo-1";

/** Nine levels of nine aliases: 9^9 strings once expanded. */
function billionLaughs(): string {
  let text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n';
  for (let i = 1; i <= 9; i++)
    text += `l${i}: &l${i} [${Array(9)
      .fill(`*l${i - 1}`)
      .join(", ")}]\n`;
  return `apiVersion: v1\nkind: ConfigMap\nmetadata: { name: lol, namespace: demo }\ndata:\n${text.replace(/^/gm, "  ")}`;
}

describe("manifest limits (pure)", () => {
  it("refuses a billion-laughs document through the alias limit", () => {
    const parsed = parseManifestFile({ path: "lol.yaml", text: billionLaughs() });
    assert.deepEqual(parsed.objects, []);
    assert.match(parsed.problems[0]?.message ?? "", /alias/i);
  });

  it("refuses a file over the size limit without parsing it", () => {
    const text = `# ${"x".repeat(64)}\n`.repeat(20);
    const parsed = parseManifestFile({ path: "big.yaml", text }, { maxFileBytes: 1024 });
    assert.match(parsed.problems[0]?.message ?? "", /over the 1024-byte limit/);
  });

  it("stops reading at the document limit", () => {
    const text = "kind: Namespace\nmetadata: { name: a }\n---\n".repeat(50);
    const parsed = parseManifestFile({ path: "many.yaml", text }, { maxDocuments: 10 });
    assert.deepEqual(parsed.objects, []);
    assert.match(parsed.problems[0]?.message ?? "", /more than 10 YAML documents/);
    assert.equal(parseManifestFile({ path: "many.yaml", text }).objects.length, 50);
  });

  it("stops reading flow collections nested deeper than the limit", () => {
    const depth = 1_000_000;
    const parsed = parseManifestFile({
      path: "deep.yaml",
      text: `${"[".repeat(depth)}${"]".repeat(depth)}\n`,
    });
    assert.deepEqual(parsed.objects, []);
    assert.match(parsed.problems[0]?.message ?? "", /nested deeper than 64/);
    // JSON manifests are flow collections too: at the limit they are read, past it refused.
    const json = (levels: number) =>
      `{"kind":"ConfigMap","metadata":{"name":"x"},"data":${'{"a":'.repeat(levels - 1)}1${"}".repeat(levels)}`;
    assert.deepEqual(
      parseManifestFile({ path: "ok.json", text: json(60) }, { maxFlowDepth: 60 }).problems,
      [],
    );
    assert.match(
      parseManifestFile({ path: "deep.json", text: json(61) }, { maxFlowDepth: 60 }).problems[0]?.message ??
        "",
      /nested deeper than 60/,
    );
  });

  it("stops reading at the token limit", () => {
    const text = `kind: ConfigMap\nmetadata: { name: big }\ndata:\n${"  - x\n".repeat(20_000)}`;
    const parsed = parseManifestFile({ path: "long.yaml", text });
    assert.deepEqual(parsed.objects, []);
    assert.match(parsed.problems[0]?.message ?? "", /more than 50000 YAML tokens/);
    assert.equal(parseManifestFile({ path: "long.yaml", text }, { maxTokens: 1_000_000 }).objects.length, 1);
  });
});

describe("manifest limits (control plane)", { timeout: 60_000 }, () => {
  let dir: string;
  let meshDir: string;
  let controlPlane: ControlPlane;
  let client: XdsClient;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-limits-"));
    meshDir = join(dir, "mesh");
    await cp(DEMO_MESH, meshDir, { recursive: true, filter: (src) => !/(web|waypoint)\.yaml$/.test(src) });
    controlPlane = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      admin: "127.0.0.1:0",
      watchDebounceMs: 20,
      xdsDebounceMs: 5,
    });
    client = createXdsClient({
      address: controlPlane.address,
      ...controlPlaneChannel(controlPlane.rootCertPem),
      node: { id: "ztunnel~127.20.0.2~ztunnel-node-b.istio-system~istio-system.svc.cluster.local" },
      headers: { authorization: `Bearer ${await controlPlane.tokenFor("node-b")}` },
    });
    client.watch(TypeUrl.address);
    client.watch(TypeUrl.authorization);
    await client.ready();
  });

  after(async () => {
    client.close();
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a billion-laughs file and an oversized file, then applies the next good edit", async () => {
    const big = `# filler\n${`# ${"x".repeat(1022)}\n`.repeat(Math.ceil(DEFAULT_MANIFEST_LIMITS.maxFileBytes / 1024) + 64)}`;
    await writeFile(join(meshDir, "lol.yaml"), billionLaughs());
    await writeFile(join(meshDir, "huge.yaml"), big);
    const result = await controlPlane.reload();
    assert.ok(controlPlane.config().authorizations.has("demo/echo-allow-sleep"));
    const byFile = new Map(result.errors.map((e) => [e.file, e.message]));
    assert.match(byFile.get("lol.yaml") ?? "", /alias/i);
    assert.match(byFile.get("huge.yaml") ?? "", /over the \d+-byte limit/);
    const debug = (await (await fetch(`http://${controlPlane.adminAddress}/debug/config`)).json()) as {
      errors: ManifestError[];
    };
    assert.deepEqual(debug.errors.map((e) => e.file).sort(), ["huge.yaml", "lol.yaml"]);

    // A good edit, picked up by the directory watch, reaches the client while both files stay.
    const echo = await readFile(join(meshDir, "echo.yaml"), "utf8");
    const edited = echo.replace(
      /name: echo-1\n(\s+)namespace: demo\n(\s+)labels: \{ app: echo, version: v1 \}/,
      (m) => m.replace("version: v1", "version: v3"),
    );
    assert.notEqual(edited, echo);
    const updated = new Promise<void>((resolveUpdate) => {
      const off = client.onChange(() => {
        const w = client.get(TypeUrl.address, ECHO_1)?.workload as Workload | undefined;
        if (w?.canonicalRevision === "v3") {
          off();
          resolveUpdate();
        }
      });
    });
    await writeFile(join(dir, "echo.yaml.new"), edited);
    await rename(join(dir, "echo.yaml.new"), join(meshDir, "echo.yaml"));
    await updated;
    assert.deepEqual(
      controlPlane
        .errors()
        .map((e) => e.file)
        .sort(),
      ["huge.yaml", "lol.yaml"],
    );
  });

  it("reports a FIFO or a directory named like a manifest instead of waiting on it", async () => {
    const fifo = join(meshDir, "zz-fifo.yaml");
    const made = spawnSync("mkfifo", [fifo]);
    assert.equal(made.status, 0, String(made.stderr));
    await mkdir(join(meshDir, "zz-dir.yaml"));
    try {
      const result = await controlPlane.reload();
      const mine = result.errors.filter((e) => e.file.startsWith("zz-"));
      assert.deepEqual(
        mine.map((e) => [e.file, e.message]),
        [
          ["zz-dir.yaml", "not a regular file"],
          ["zz-fifo.yaml", "not a regular file"],
        ],
      );
      assert.ok(controlPlane.config().authorizations.has("demo/echo-allow-sleep"));
    } finally {
      await unlink(fifo);
      await rm(join(meshDir, "zz-dir.yaml"), { recursive: true });
    }
  });
});
