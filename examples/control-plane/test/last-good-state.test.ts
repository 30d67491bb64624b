import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { createXdsClient, TypeUrl, type Workload, type XdsChangeEvent, type XdsClient } from "@ambient/xds";
import {
  type ControlPlane,
  controlPlaneChannel,
  type ManifestError,
  startControlPlane,
} from "../src/index.js";

const DEMO_MESH = resolve(import.meta.dirname, "../../../mesh");
const ALLOW_KEY = "demo/echo-allow-sleep";
const ECHO_0 = "Kubernetes//Pod/demo/echo-0";

/** Writes beside the folder and renames in, so no reload sees half a file unless the test means it. */
async function replaceFile(dir: string, name: string, text: string): Promise<void> {
  const tmp = join(dir, "..", `${name}.new`);
  await writeFile(tmp, text);
  await rename(tmp, join(dir, name));
}

function nextChange(client: XdsClient, match: (e: XdsChangeEvent) => boolean): Promise<XdsChangeEvent> {
  return new Promise((resolvePromise) => {
    const off = client.onChange((event) => {
      if (!match(event)) return;
      off();
      resolvePromise(event);
    });
  });
}

async function debugErrors(cp: ControlPlane): Promise<ManifestError[]> {
  const body = (await (await fetch(`http://${cp.adminAddress}/debug/config`)).json()) as {
    errors?: ManifestError[];
  };
  assert.ok(Array.isArray(body.errors), "/debug/config has an errors list");
  return body.errors;
}

describe("last good state wins", { timeout: 60_000 }, () => {
  let dir: string;
  let meshDir: string;
  let controlPlane: ControlPlane;
  let client: XdsClient;
  let policyYaml: string;
  let sleepYaml: string;
  let goodAllow: unknown;
  const logged: { fields: Record<string, unknown>; message: string }[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "control-plane-last-good-"));
    meshDir = join(dir, "mesh");
    // The echo policy and the pods it governs.
    await cp(DEMO_MESH, meshDir, { recursive: true, filter: (src) => !/(web|waypoint)\.yaml$/.test(src) });
    policyYaml = await readFile(join(meshDir, "policy.yaml"), "utf8");
    sleepYaml = await readFile(join(meshDir, "sleep.yaml"), "utf8");
    assert.ok(sleepYaml.includes("labels: { app: sleep }"));
    controlPlane = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      admin: "127.0.0.1:0",
      watch: false,
      xdsDebounceMs: 5,
      logger: {
        debug() {},
        info() {},
        warn() {},
        error(fields, message) {
          logged.push({ fields: fields as Record<string, unknown>, message: message ?? "" });
        },
      },
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
    goodAllow = client.get(TypeUrl.authorization, ALLOW_KEY);
    assert.ok(goodAllow);
  });

  after(async () => {
    client.close();
    await controlPlane.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The policy echo is served with, over xDS, after the last reload has been pushed. */
  async function served(): Promise<{ allow: unknown; echoPolicies: string[] }> {
    // Marker edits of both types: pushes of one type arrive in order, so once the client sees a marker,
    // every earlier push of that type has arrived too.
    const marker = `marker-${Math.random().toString(36).slice(2)}`;
    const seenAddress = nextChange(client, (e) =>
      e.updated.some((r) => r.name === "Kubernetes//Pod/demo/sleep-0"),
    );
    const seenAuthorization = nextChange(client, (e) => e.added.some((r) => r.name === `marker/${marker}`));
    // canonicalRevision follows the version label, so the sleep-0 workload changes.
    await replaceFile(
      meshDir,
      "sleep.yaml",
      sleepYaml.replace("labels: { app: sleep }", `labels: { app: sleep, version: ${marker} }`),
    );
    await replaceFile(
      meshDir,
      "zz-marker.yaml",
      `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ${marker}, namespace: marker }\nspec: { selector: { matchLabels: { app: nothing } }, action: DENY, rules: [{}] }\n`,
    );
    await controlPlane.reload();
    await Promise.all([seenAddress, seenAuthorization]);
    const echo = client.get(TypeUrl.address, ECHO_0)?.workload as Workload | undefined;
    return {
      allow: client.get(TypeUrl.authorization, ALLOW_KEY),
      echoPolicies: echo?.authorizationPolicies ?? [],
    };
  }

  const bad: { name: string; edit: (good: string) => string; message: RegExp }[] = [
    { name: "action: ALLOWW", edit: (g) => g.replace("action: ALLOW", "action: ALLOWW"), message: /action/ },
    {
      name: "a YAML syntax error",
      edit: (g) => g.replace("matchLabels: { app: echo }", "matchLabels: { app: echo"),
      message: /malformed YAML/,
    },
    {
      name: "a tab in the indentation",
      edit: (g) => g.replace("  action: ALLOW", "\taction: ALLOW"),
      message: /malformed YAML/,
    },
    {
      name: "a field of the wrong type",
      edit: (g) => g.replace('ports: ["8080"]', "ports: 8080"),
      message: /must be a list/,
    },
    {
      name: "a truncated file",
      edit: (g) => g.slice(0, g.indexOf("sa/sleep") + 4),
      message: /malformed YAML/,
    },
    { name: "an emptied (0-byte) file", edit: () => "", message: /file is empty/ },
  ];
  for (const c of bad) {
    it(`keeps serving the ALLOW policy after ${c.name}, and reports it`, async () => {
      try {
        logged.length = 0;
        // Written in place (not renamed in), as a careless editor or a crash would.
        await writeFile(join(meshDir, "policy.yaml"), c.edit(policyYaml));
        await controlPlane.reload();
        assert.ok(controlPlane.config().authorizations.has(ALLOW_KEY));
        const now = await served();
        assert.deepEqual(now.allow, goodAllow);
        assert.ok(now.echoPolicies.includes(ALLOW_KEY), JSON.stringify(now.echoPolicies));
        const errors = await debugErrors(controlPlane);
        const mine = errors.filter((e) => e.file === "policy.yaml");
        assert.ok(mine.length >= 1, JSON.stringify(errors));
        assert.ok(
          mine.some(
            (e) =>
              c.message.test(e.message) && e.keeping.includes("AuthorizationPolicy/demo/echo-allow-sleep"),
          ),
          JSON.stringify(mine),
        );
        assert.deepEqual(controlPlane.errors(), errors);
        assert.ok(
          logged.some((l) => l.fields.file === "policy.yaml" && /^manifest not applied: /.test(l.message)),
          JSON.stringify(logged),
        );
      } finally {
        await replaceFile(meshDir, "policy.yaml", policyYaml);
        await controlPlane.reload();
      }
      assert.deepEqual(await debugErrors(controlPlane), []);
    });
  }

  it("removes the policy when the file is deleted or no longer holds it", async () => {
    try {
      await replaceFile(meshDir, "policy.yaml", policyYaml.slice(policyYaml.indexOf("---")));
      const result = await controlPlane.reload();
      assert.deepEqual(result.errors, []);
      assert.equal((await served()).allow, undefined);
    } finally {
      await replaceFile(meshDir, "policy.yaml", policyYaml);
      await controlPlane.reload();
    }
    assert.deepEqual((await served()).allow, goodAllow);
  });
});
