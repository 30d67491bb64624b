import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, it } from "node:test";
import { applyLastGood, isStandIn, type ManifestError, objectId } from "./last-good.js";
import { type KubeObject, parseManifestFile } from "./manifests.js";
import { failClosedStandIn, translateMesh, validateManifestObject } from "./translate-mesh.js";

const POLICY_YAML = readFileSync(resolve(import.meta.dirname, "../../../mesh/policy.yaml"), "utf8");
const ALLOW = "AuthorizationPolicy/demo/echo-allow-sleep";
const STRICT = "PeerAuthentication/demo/default";
const POD = (name: string, ip: string) =>
  `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: demo }\nstatus: { podIP: ${ip} }\n`;

/** The last good state after reading `text` as `file` from nothing. */
function good(file: string, text: string): Map<string, KubeObject[]> {
  const result = applyLastGood(new Map(), [parseManifestFile({ path: file, text })], validateManifestObject);
  assert.deepEqual(result.errors, []);
  return result.files;
}

function edit(previous: Map<string, KubeObject[]>, file: string, text: string) {
  const result = applyLastGood(previous, [parseManifestFile({ path: file, text })], validateManifestObject);
  const served = result.files.get(file) ?? [];
  return { served, ids: served.map(objectId).sort(), errors: result.errors };
}

describe("applyLastGood: a broken policy edit keeps the last good policy", () => {
  const before = good("policy.yaml", POLICY_YAML);
  const cases: { name: string; text: string; message: RegExp; object?: string }[] = [
    {
      name: "an unknown action (ALLOWW)",
      text: POLICY_YAML.replace("action: ALLOW", "action: ALLOWW"),
      message: /spec\.action/,
      object: ALLOW,
    },
    {
      name: "a YAML syntax error",
      text: POLICY_YAML.replace('principals: ["cluster.local/ns/demo/sa/sleep"]', "principals: [oops"),
      message: /malformed YAML/,
    },
    {
      name: "a tab in the indentation",
      text: POLICY_YAML.replace("  action: ALLOW", "\taction: ALLOW"),
      message: /malformed YAML/,
    },
    {
      name: "a field of the wrong type",
      text: POLICY_YAML.replace('ports: ["8080"]', "ports: 8080"),
      message: /ports: must be a list of strings/,
      object: ALLOW,
    },
    {
      name: "a truncated file",
      text: POLICY_YAML.slice(0, POLICY_YAML.indexOf("sa/sleep") + 4),
      message: /malformed YAML/,
    },
    { name: "an emptied (0-byte) file", text: "", message: /file is empty/ },
    {
      // kubectl would refuse it ("no matches for kind"): it is no new object, and no deletion.
      name: "a misspelt policy kind (AuthorisationPolicy)",
      text: POLICY_YAML.replace("kind: AuthorizationPolicy", "kind: AuthorisationPolicy"),
      message: /security\.istio\.io has no kind "AuthorisationPolicy"/,
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.notEqual(c.text, POLICY_YAML);
      const { served, ids, errors } = edit(before, "policy.yaml", c.text);
      assert.deepEqual(ids, [ALLOW, STRICT].sort());
      // The served ALLOW policy is exactly the last good one, not a half-read one.
      assert.deepEqual(
        served.find((o) => objectId(o) === ALLOW),
        before.get("policy.yaml")?.find((o) => objectId(o) === ALLOW),
      );
      assert.ok(errors.length >= 1);
      const first = errors[0] as ManifestError;
      assert.equal(first.file, "policy.yaml");
      assert.match(first.message, c.message);
      assert.equal(first.object, c.object);
      assert.ok(first.keeping.includes(ALLOW), JSON.stringify(errors));
    });
  }
});

describe("applyLastGood: deletions and valid edits", () => {
  const before = good("policy.yaml", POLICY_YAML);
  const rows: { name: string; text: string; ids: string[]; errors: number }[] = [
    {
      name: "a file that reads but no longer holds an object deletes it",
      text: POLICY_YAML.slice(0, POLICY_YAML.indexOf("---")),
      ids: [ALLOW],
      errors: 0,
    },
    {
      name: "a file with only comments deletes every object",
      text: "# nothing here any more\n",
      ids: [],
      errors: 0,
    },
    {
      name: "a valid edit is served as written",
      text: POLICY_YAML.replace('ports: ["8080"]', 'ports: ["9090"]'),
      ids: [ALLOW, STRICT],
      errors: 0,
    },
    {
      name: "one invalid object keeps its last version, its valid neighbour is updated",
      text: POLICY_YAML.replace("action: ALLOW", "action: DENYY").replace("mode: STRICT", "mode: PERMISSIVE"),
      ids: [ALLOW, STRICT],
      errors: 1,
    },
  ];
  for (const r of rows) {
    it(r.name, () => {
      const { ids, errors } = edit(before, "policy.yaml", r.text);
      assert.deepEqual(ids, [...r.ids].sort());
      assert.equal(errors.length, r.errors, JSON.stringify(errors));
    });
  }

  it("applies the valid part of a partly unreadable file and keeps the rest", () => {
    const { served, errors } = edit(
      before,
      "policy.yaml",
      `${POLICY_YAML.replace("mode: STRICT", "mode: PERMISSIVE")}---\nkind: [\n`,
    );
    const strict = served.find((o) => objectId(o) === STRICT);
    assert.deepEqual(strict?.spec, { mtls: { mode: "PERMISSIVE" } });
    assert.ok(served.some((o) => objectId(o) === ALLOW));
    assert.equal(errors.length, 1);
    assert.equal(errors[0]?.document, 2);
  });

  it("deleting the file removes its objects", () => {
    const result = applyLastGood(before, [], validateManifestObject);
    assert.deepEqual([...result.files], []);
    assert.deepEqual(result.errors, []);
  });

  it("a new object that never validated is not served, and an empty new file is no error", () => {
    const bad = edit(new Map(), "new.yaml", POLICY_YAML.replace("action: ALLOW", "action: ALLOWW"));
    assert.deepEqual(bad.ids, [STRICT]);
    assert.match(bad.errors[0]?.message ?? "", /not served$/);
    assert.deepEqual(bad.errors[0]?.keeping, []);
    assert.deepEqual(edit(new Map(), "new.yaml", "").errors, []);
  });

  it("keeps each file's objects apart, and the first of two same-named objects", () => {
    const pods = good("pods.yaml", POD("a", "127.10.0.2"));
    const previous = new Map([...before, ...pods]);
    const result = applyLastGood(
      previous,
      [
        parseManifestFile({ path: "policy.yaml", text: "" }),
        parseManifestFile({
          path: "pods.yaml",
          text: `${POD("a", "127.10.0.3")}---\n${POD("a", "127.10.0.4")}`,
        }),
      ],
      validateManifestObject,
    );
    assert.equal(result.files.get("policy.yaml")?.length, 2);
    assert.deepEqual(
      result.files.get("pods.yaml")?.map((o) => o.status?.podIP),
      ["127.10.0.3"],
    );
    assert.deepEqual(
      result.errors.map((e) => [e.file, e.object]),
      [
        ["policy.yaml", undefined],
        ["pods.yaml", "Pod/demo/a"],
      ],
    );
  });

  it("a Pod field of the wrong type keeps the last good Pod", () => {
    const pods = good("pods.yaml", POD("a", "127.10.0.2"));
    const { served, errors } = edit(pods, "pods.yaml", POD("a", "[127, 10, 0, 9]"));
    assert.deepEqual(
      served.map((o) => o.status?.podIP),
      ["127.10.0.2"],
    );
    assert.match(errors[0]?.message ?? "", /status\.podIP must be a string/);
  });
});

describe("objectId", () => {
  const object = (kind: string, apiVersion?: string): KubeObject => ({
    kind,
    ...(apiVersion === undefined ? {} : { apiVersion }),
    metadata: { name: "x", namespace: "demo" },
    source: "test",
  });

  it("names a mesh kind by kind, namespace and name, whatever its version", () => {
    assert.equal(objectId(object("Gateway", "gateway.networking.k8s.io/v1")), "Gateway/demo/x");
    assert.equal(objectId(object("Gateway", "gateway.networking.k8s.io/v1beta1")), "Gateway/demo/x");
    assert.equal(objectId(object("Gateway")), "Gateway/demo/x");
    assert.equal(objectId(object("Service", "v1")), "Service/demo/x");
    assert.equal(objectId(object("Widget", "example.com/v1")), "Widget/demo/x");
  });

  it("names the same kind of another API group apart", () => {
    assert.equal(objectId(object("Gateway", "networking.istio.io/v1")), "Gateway.networking.istio.io/demo/x");
    assert.equal(objectId(object("Service", "serving.knative.dev/v1")), "Service.serving.knative.dev/demo/x");
  });

  it("knows each kind the Kubernetes source reads by the group it reads it from", async () => {
    const { MESH_RESOURCES } = await import("./sources/kubernetes-source.js");
    const { MESH_KIND_GROUPS } = await import("./manifests.js");
    for (const r of MESH_RESOURCES) assert.equal(MESH_KIND_GROUPS.get(r.kind), r.group, r.kind);
  });

  it("reads from a cluster every kind the folder serves, but the folder's own Deployments", async () => {
    const { MESH_RESOURCES } = await import("./sources/kubernetes-source.js");
    const { MESH_KIND_GROUPS } = await import("./manifests.js");
    const read = new Set(MESH_RESOURCES.map((r) => `${r.group}/${r.kind}`));
    const missing = [...MESH_KIND_GROUPS]
      .filter(([kind, group]) => kind !== "Deployment" && !read.has(`${group}/${kind}`))
      .map(([kind]) => kind);
    assert.deepEqual(missing, []);
  });
});

describe("applyLastGood: a policy that never validated fails closed", () => {
  /** Reads `text` as `file` after `previous`, with the policies' stand-ins, as the folder source does. */
  function read(previous: Map<string, KubeObject[]>, file: string, text: string) {
    const result = applyLastGood(
      previous,
      [parseManifestFile({ path: file, text })],
      validateManifestObject,
      failClosedStandIn,
    );
    return { files: result.files, served: result.files.get(file) ?? [], errors: result.errors };
  }
  const authorization = (served: KubeObject[]) => {
    const mesh = translateMesh(served, {});
    return mesh.authorizations.get("demo/echo-allow-sleep");
  };

  it("serves a DENY of every request over the ALLOW's workloads, and the policy once it validates", () => {
    // A named port: istiod's webhook refuses it, and this policy never had a good version.
    const broken = POLICY_YAML.replace('ports: ["8080"]', 'ports: ["http"]');
    const first = read(new Map(), "policy.yaml", broken);
    const standIn = first.served.find((o) => objectId(o) === ALLOW);
    assert.ok(standIn !== undefined, "the ALLOW's stand-in is served");
    assert.ok(isStandIn(standIn));
    assert.deepEqual(standIn.spec, {
      selector: { matchLabels: { app: "echo" } },
      action: "DENY",
      rules: [{}],
    });
    assert.match(first.errors[0]?.message ?? "", /serving a stand-in that denies every request it covers/);
    assert.deepEqual(first.errors[0]?.keeping, []);
    // What ztunnel is sent: the echo pods deny every connection.
    const wire = authorization(first.served);
    assert.equal(wire?.action, "DENY");
    assert.equal(wire?.scope, "WORKLOAD_SELECTOR");
    // Still broken: the stand-in again, not taken for a last good version.
    const again = read(first.files, "policy.yaml", broken);
    assert.ok(isStandIn(again.served.find((o) => objectId(o) === ALLOW) as KubeObject));
    assert.deepEqual(again.errors[0]?.keeping, []);
    // Fixed: the policy as written.
    const fixed = read(again.files, "policy.yaml", POLICY_YAML);
    assert.deepEqual(fixed.errors, []);
    assert.equal(authorization(fixed.served)?.action, "ALLOW");
  });

  it("serves STRICT for a PeerAuthentication, and covers the namespace when the selector is the problem", () => {
    const pa = read(new Map(), "policy.yaml", POLICY_YAML.replace("mode: STRICT", "mode: STRICTLY"));
    const strict = pa.served.find((o) => objectId(o) === STRICT) as KubeObject;
    assert.ok(isStandIn(strict));
    assert.deepEqual(strict.spec, { mtls: { mode: "STRICT" } });
    assert.match(pa.errors[0]?.message ?? "", /serving a STRICT stand-in/);
    const wildcard = read(
      new Map(),
      "policy.yaml",
      POLICY_YAML.replace("matchLabels: { app: echo }", 'matchLabels: { app: "echo*" }'),
    );
    const standIn = wildcard.served.find((o) => objectId(o) === ALLOW) as KubeObject;
    assert.deepEqual(standIn.spec, { action: "DENY", rules: [{}] });
    assert.equal(authorization(wildcard.served)?.scope, "NAMESPACE");
  });

  it("keeps a last good version over a stand-in, and serves nothing for another kind", () => {
    const before = good("policy.yaml", POLICY_YAML);
    const edited = read(before, "policy.yaml", POLICY_YAML.replace('ports: ["8080"]', 'ports: ["http"]'));
    const kept = edited.served.find((o) => objectId(o) === ALLOW) as KubeObject;
    assert.equal(isStandIn(kept), false);
    assert.equal(authorization(edited.served)?.action, "ALLOW");
    assert.deepEqual(read(new Map(), "pods.yaml", POD("a", "[127, 10, 0, 9]")).served, []);
  });
});
