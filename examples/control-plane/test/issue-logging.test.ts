// A standing issue or manifest error is logged once when it appears and once when it is gone, not at
// every reload: in Kubernetes mode a reload follows every pod change.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "../src/control-plane.js";
import type { ManifestError } from "../src/last-good.js";
import type { KubeObject } from "../src/manifests.js";
import type { ConfigSource } from "../src/sources/config-source.js";

const pod = (name: string, ip: string): KubeObject => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: "demo" },
  spec: { nodeName: "node-a" },
  status: { phase: "Running", podIP: ip },
  source: `Pod/demo/${name}`,
});

describe("logging of issues and manifest errors", () => {
  const planes: ControlPlane[] = [];
  after(async () => {
    for (const cp of planes) await cp.close();
  });

  it("logs each one when it appears and when it is resolved, not at every reload", async () => {
    let objects: KubeObject[] = [pod("a", "127.10.0.1"), pod("bad", "8.8.8.8")];
    let errors: ManifestError[] = [{ file: "policy.yaml", message: "malformed YAML", keeping: [] }];
    const source: ConfigSource = {
      description: "in memory",
      async snapshot() {
        return { objects, errors, accept() {} };
      },
      start() {},
      async close() {},
    };
    const logged: { level: string; message: string }[] = [];
    const log = (level: string) => (_fields: unknown, message?: string) =>
      logged.push({ level, message: message ?? "" });
    const cp = await startControlPlane({
      source,
      listen: "127.0.0.1:0",
      requireXdsToken: false,
      logger: { debug() {}, info: log("info"), warn: log("warn"), error: log("error") },
    });
    planes.push(cp);
    const about = (text: string) => logged.filter((l) => l.message.includes(text));
    assert.deepEqual(
      about("8.8.8.8").map((l) => l.level),
      ["warn"],
    );
    assert.deepEqual(
      about("malformed YAML").map((l) => l.level),
      ["error"],
    );

    // Other changes: the standing issue and error are not logged again, a new issue is.
    objects = [...objects, pod("b", "127.10.0.2"), pod("worse", "0.0.0.0")];
    await cp.reload();
    await cp.reload();
    assert.deepEqual(
      about("8.8.8.8").map((l) => l.level),
      ["warn"],
    );
    assert.deepEqual(
      about("0.0.0.0").map((l) => l.level),
      ["warn"],
    );
    assert.deepEqual(
      about("malformed YAML").map((l) => l.level),
      ["error"],
    );
    assert.equal(cp.config().issues.length, 2);

    // Fixed: each is logged as resolved, once.
    objects = objects.map((o) => (o.metadata.name === "bad" ? pod("bad", "127.10.0.3") : o));
    errors = [];
    await cp.reload();
    await cp.reload();
    assert.deepEqual(
      about("8.8.8.8").map((l) => [l.level, l.message.startsWith("resolved: ")]),
      [
        ["warn", false],
        ["info", true],
      ],
    );
    assert.deepEqual(
      about("malformed YAML").map((l) => [l.level, l.message.startsWith("resolved: ")]),
      [
        ["error", false],
        ["info", true],
      ],
    );
    assert.equal(about("0.0.0.0").length, 1);
    assert.deepEqual(
      cp.config().issues.map((i) => i.source),
      ["Pod/demo/worse"],
    );
  });
});
