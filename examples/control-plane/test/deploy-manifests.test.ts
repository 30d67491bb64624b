// deploy/kubernetes/ parses, and says what the code needs: the RBAC grants exactly the informers,
// Secrets and Lease the control plane uses (no more), and every command line names flags that exist.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { PLUGGED_CA_SECRET, SELF_SIGNED_CA_SECRET } from "../src/sources/kubernetes-ca.js";
import { MESH_RESOURCES } from "../src/sources/kubernetes-source.js";
import { ROOT_CERT_CONFIG_MAP } from "../src/sources/root-cert-publisher.js";

const REPO = resolve(import.meta.dirname, "../../..");
const DEPLOY = join(REPO, "deploy/kubernetes");

interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [field: string]: unknown;
}
interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

async function manifests(): Promise<Doc[]> {
  const docs: Doc[] = [];
  for (const name of (await readdir(DEPLOY)).filter((n) => n.endsWith(".yaml")).sort()) {
    for (const doc of parseAllDocuments(await readFile(join(DEPLOY, name), "utf8"))) {
      assert.deepEqual(doc.errors, [], name);
      const value = doc.toJS() as Doc;
      assert.ok(
        value.apiVersion && value.kind && value.metadata?.name,
        `${name}: apiVersion, kind, metadata.name`,
      );
      docs.push(value);
    }
  }
  return docs;
}

function find(docs: Doc[], kind: string, name: string): Doc {
  const doc = docs.find((d) => d.kind === kind && d.metadata.name === name);
  assert.ok(doc, `${kind} ${name}`);
  return doc;
}

/** `group/resource` -> verbs (and names, when limited). */
function grants(rules: Rule[]): Map<string, { verbs: Set<string>; names: string[] | undefined }[]> {
  const out = new Map<string, { verbs: Set<string>; names: string[] | undefined }[]>();
  for (const r of rules) {
    for (const g of r.apiGroups) {
      for (const res of r.resources) {
        const key = `${g}/${res}`;
        out.set(key, [...(out.get(key) ?? []), { verbs: new Set(r.verbs), names: r.resourceNames }]);
      }
    }
  }
  return out;
}

function containerArgs(doc: Doc): string[] {
  const spec = (doc.spec as { template: { spec: { containers: { args?: string[] }[] } } }).template.spec;
  return spec.containers[0]?.args ?? [];
}

describe("deploy/kubernetes manifests", () => {
  it("parse as Kubernetes objects, each with apiVersion, kind and name", async () => {
    const docs = await manifests();
    assert.ok(docs.length >= 12);
  });

  it("grant the control plane list+watch on exactly what its informers read, and no wildcard", async () => {
    const docs = await manifests();
    const clusterRole = find(docs, "ClusterRole", "ambient-control-plane");
    const rules = clusterRole.rules as Rule[];
    for (const r of rules) {
      for (const field of [r.apiGroups, r.resources, r.verbs])
        assert.ok(!field.includes("*"), JSON.stringify(r));
    }
    const byResource = grants(rules);
    const watched = [...byResource].filter(([, gs]) => gs.some((g) => g.verbs.has("watch"))).map(([k]) => k);
    assert.deepEqual(watched.sort(), MESH_RESOURCES.map((r) => `${r.group}/${r.plural}`).sort());
    for (const key of watched) {
      const verbs = [...(byResource.get(key) ?? [])].flatMap((g) => [...g.verbs]).sort();
      assert.deepEqual(verbs, ["list", "watch"], `${key}: read through informers only`);
    }
    // The leader's status writes, and nothing more on those objects.
    for (const key of [
      "gateway.networking.k8s.io/gateways/status",
      "networking.istio.io/serviceentries/status",
    ]) {
      assert.deepEqual([...(byResource.get(key)?.[0]?.verbs ?? [])], ["patch"], key);
    }
    assert.deepEqual(
      [...(byResource.get("authentication.k8s.io/tokenreviews")?.[0]?.verbs ?? [])],
      ["create"],
    );
    assert.ok(!byResource.has("/secrets"), "no Secret access cluster-wide");
    const configMaps = byResource.get("/configmaps") ?? [];
    for (const g of configMaps) {
      if (g.verbs.has("get") || g.verbs.has("update")) assert.deepEqual(g.names, [ROOT_CERT_CONFIG_MAP]);
    }
  });

  it("limit Secrets and the Lease in istio-system to the names the code uses", async () => {
    const docs = await manifests();
    const role = find(docs, "Role", "ambient-control-plane");
    assert.equal(role.metadata.namespace, "istio-system");
    const byResource = grants(role.rules as Rule[]);
    const secretReads = (byResource.get("/secrets") ?? []).filter((g) => g.verbs.has("get"));
    assert.deepEqual(
      secretReads.map((g) => g.names?.sort()),
      [[PLUGGED_CA_SECRET, SELF_SIGNED_CA_SECRET].sort()],
    );
    for (const g of byResource.get("/secrets") ?? []) {
      assert.ok(!g.verbs.has("list") && !g.verbs.has("watch"), "no Secret listing");
      // Only the self-signed root is written back (by the leader, after re-issuing it).
      if (g.verbs.has("update") || g.verbs.has("patch")) assert.deepEqual(g.names, [SELF_SIGNED_CA_SECRET]);
    }
    const leaseUpdates = (byResource.get("coordination.k8s.io/leases") ?? []).filter((g) =>
      g.verbs.has("update"),
    );
    assert.deepEqual(
      leaseUpdates.map((g) => g.names),
      [["ambient-control-plane-leader"]],
    );
    // Bound to the service account the Deployment runs as.
    for (const kind of ["RoleBinding", "ClusterRoleBinding"]) {
      const binding = find(docs, kind, "ambient-control-plane");
      assert.deepEqual(binding.subjects, [
        { kind: "ServiceAccount", name: "istiod", namespace: "istio-system" },
      ]);
    }
  });

  it("give ztunnel the capture capabilities and a bound istio-ca token, and nothing more", async () => {
    const docs = await manifests();
    const ds = find(docs, "DaemonSet", "ztunnel");
    const pod = (ds.spec as { template: { spec: Record<string, unknown> } }).template.spec;
    assert.equal(pod.automountServiceAccountToken, false);
    const container = (
      pod.containers as {
        securityContext: { privileged: boolean; capabilities: { add: string[]; drop: string[] } };
      }[]
    )[0];
    assert.equal(container?.securityContext.privileged, false);
    assert.deepEqual(container?.securityContext.capabilities.drop, ["ALL"]);
    assert.deepEqual(container?.securityContext.capabilities.add.sort(), [
      "NET_ADMIN",
      "NET_RAW",
      "SYS_ADMIN",
    ]);
    const token = JSON.stringify(pod.volumes);
    assert.match(token, /"serviceAccountToken":\{"audience":"istio-ca"/);
  });

  it("run entry points that exist with flags they accept", async () => {
    const docs = await manifests();
    // [manifest, first argument, the source file that must exist, the file that names its flags]
    // Each app runs its build (tsup, src/main.ts -> dist/main.js) with the image's plain `node`, no loader.
    const cases: [Doc, string, string, string][] = [
      [
        find(docs, "Deployment", "istiod"),
        "examples/control-plane/dist/main.js",
        "examples/control-plane/src/main.ts",
        "examples/control-plane/src/main.ts",
      ],
      [
        find(docs, "DaemonSet", "ztunnel"),
        "examples/ztunnel/dist/main.js",
        "examples/ztunnel/src/main.ts",
        "examples/ztunnel/src/cli.ts",
      ],
      [
        find(docs, "Deployment", "waypoint"),
        "examples/waypoint/dist/main.js",
        "examples/waypoint/src/main.ts",
        "examples/waypoint/src/main.ts",
      ],
    ];
    const dockerfile = await readFile(join(REPO, "deploy/kubernetes/Dockerfile"), "utf8");
    assert.match(dockerfile, /^ENTRYPOINT \["node"\]$/m);
    assert.match(dockerfile, /pnpm build/);
    for (const [doc, entry] of cases) {
      const container = (doc.spec as { template: { spec: { containers: { command?: string[] }[] } } })
        .template.spec.containers[0];
      assert.equal(container?.command, undefined, `${entry}: the image's entry point (node) runs it`);
      const app = join(REPO, entry.replace("/dist/main.js", ""));
      // The entry is the app's own or the examples' shared build definition's (examples/tsup-app.ts).
      let tsup = await readFile(join(app, "tsup.config.ts"), "utf8");
      if (/\bappBuild\b/.test(tsup)) tsup = await readFile(join(REPO, "examples/tsup-app.ts"), "utf8");
      assert.match(tsup, /entry: \{ main: "src\/main\.ts" \}/);
      const scripts = (
        JSON.parse(await readFile(join(app, "package.json"), "utf8")) as {
          scripts: Record<string, string>;
        }
      ).scripts;
      assert.equal(scripts.build, "tsup", `${entry}: pnpm build makes it`);
      // `pnpm start` is `node [Node flags] dist/main.js`; the container runs the same Node flags.
      const start = scripts.start?.split(" ") ?? [];
      assert.equal(start[0], "node");
      assert.equal(start.at(-1), "dist/main.js");
      const nodeFlags = start.slice(1, -1);
      assert.deepEqual(containerArgs(doc).slice(0, nodeFlags.length + 1), [...nodeFlags, entry]);
    }
    for (const [doc, entry, main, flagsFile] of cases) {
      const args = containerArgs(doc);
      const appArgs = args.slice(args.indexOf(entry));
      assert.equal(appArgs[0], entry);
      assert.ok(existsSync(join(REPO, main)), main);
      const source = await readFile(join(REPO, flagsFile), "utf8");
      for (const flag of appArgs.filter((a) => a.startsWith("--"))) {
        const name = flag.slice(2);
        assert.ok(
          source.includes(`"${name}"`) || source.includes(`  ${name}: {`),
          `${entry} accepts ${flag}`,
        );
      }
    }
    // The waypoint reads its rotating token and the roots straight from the projected volume.
    const waypointArgs = containerArgs(find(docs, "Deployment", "waypoint"));
    const volume = (flag: string) => waypointArgs[waypointArgs.indexOf(flag) + 1];
    assert.equal(volume("--token-file"), "/var/run/ambient/istio-token");
    assert.equal(volume("--root-cert"), "/var/run/ambient/root-cert.pem");
    const gateway = find(docs, "Gateway", "waypoint");
    const service = find(docs, "Service", "waypoint");
    assert.equal(
      service.metadata.namespace,
      gateway.metadata.namespace,
      "the Service the leader reads the address from",
    );
  });
});
