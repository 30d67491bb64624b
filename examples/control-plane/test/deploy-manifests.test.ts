// deploy/kubernetes/ parses, and says what the code needs: the RBAC grants exactly the informers,
// Secrets and Lease the control plane uses (no more), every command line names flags that exist and
// leaves none at a default made for the local demo, and what Istio's charts set for a real cluster
// (Linux nodes, ztunnel upgrades beside the old pod, no capture of the proxies) is set here too.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
// The ztunnel's command line is a pure function of its arguments and environment: the DaemonSet's own
// is run through it below.
import { parseZtunnelCli } from "../../ztunnel/src/cli.js";
import { parseManifests } from "../src/manifests.js";
import { PLUGGED_CA_SECRET, SELF_SIGNED_CA_SECRET } from "../src/sources/kubernetes-ca.js";
import { MESH_RESOURCES } from "../src/sources/kubernetes-source.js";
import { ROOT_CERT_CONFIG_MAP } from "../src/sources/root-cert-publisher.js";
import { translateMesh } from "../src/translate-mesh.js";

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

interface PodTemplate {
  metadata: { labels?: Record<string, string> };
  spec: {
    nodeSelector?: Record<string, string>;
    terminationGracePeriodSeconds?: number;
    containers: {
      args?: string[];
      env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
    }[];
  };
}

function podTemplate(doc: Doc): PodTemplate {
  return (doc.spec as { template: PodTemplate }).template;
}

/**
 * What the kubelet fills the downward API fields with on a node of a real cluster, for the checks
 * (the namespace and labels are the manifest's own).
 */
const DOWNWARD: Record<string, string> = {
  "metadata.name": "pod-7d9f8-x2x4q",
  "spec.nodeName": "worker-1",
  "spec.serviceAccountName": "ztunnel",
  "status.podIP": "10.244.1.7",
  "status.hostIP": "192.168.10.21",
};

/**
 * The first container's environment as a real cluster gives it, and its arguments after `entry` with
 * `$(VAR)` expanded as the kubelet does. A `$(VAR)` the container does not define is left as it is by
 * the kubelet, so it fails here.
 */
function commandLine(doc: Doc, entry: string): { args: string[]; env: Record<string, string> } {
  const template = podTemplate(doc);
  const container = template.spec.containers[0];
  assert.ok(container, `${doc.metadata.name}: a container`);
  const downward = (field: string): string | undefined => {
    if (field === "metadata.namespace") return doc.metadata.namespace;
    const label = /^metadata\.labels\['(.+)'\]$/.exec(field)?.[1];
    return label === undefined ? DOWNWARD[field] : template.metadata.labels?.[label];
  };
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    const field = e.valueFrom?.fieldRef?.fieldPath;
    const value = e.value ?? (field === undefined ? undefined : downward(field));
    assert.ok(value !== undefined, `${doc.metadata.name}: env ${e.name} has a value`);
    env[e.name] = value;
  }
  const all = container.args ?? [];
  const args = all.slice(all.indexOf(entry) + 1).map((arg) =>
    arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
      assert.ok(name in env, `${doc.metadata.name}: $(${name}) names no env var of the container`);
      return env[name] as string;
    }),
  );
  return { args, env };
}

/** The value given to `--flag` (as `--flag value` or `--flag=value`), if any. */
function flagValue(args: readonly string[], flag: string): string | undefined {
  const at = args.indexOf(`--${flag}`);
  if (at >= 0) return args[at + 1];
  return args.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
}

/**
 * A value that only suits the local demo: a loopback address, the repository's state folder (the
 * default of every file the CA writes there), its node and namespace names.
 */
const DEMO_VALUE = /\b127\.\d|\blocalhost\b|::1\b|<repo>|<state-dir>|\.mesh-state|\bnode-[a-z]\b|\bdemo\b/i;

/**
 * Every flag an app's `--help` names, with what it says of the flag's default: the value of a usage
 * line's `[--flag value]`, and the words from "default" to the closing parenthesis (or the end) of its
 * description, the lines that start with the flag (`  --flag`, `  --a, --b`) and those indented under it.
 */
function helpDefaults(help: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const add = (flag: string, text: string) => out.set(flag, [...(out.get(flag) ?? []), text]);
  for (const m of help.matchAll(/\[--([a-z][a-z-]*) ([^\]]+)\]/g)) add(m[1] as string, m[2] as string);
  let flags: string[] = [];
  let text = "";
  const flush = () => {
    for (const flag of flags) {
      add(flag, "");
      for (const said of text.match(/\bdefault\b[^)]*/gi) ?? []) add(flag, said);
    }
    flags = [];
    text = "";
  };
  for (const line of help.split("\n")) {
    const head = /^ {2}(?:-[a-z], )?(--[a-z][a-z-]*(?:, --[a-z][a-z-]*)*)(.*)$/.exec(line);
    if (head) {
      flush();
      flags = (head[1] as string).split(", ").map((f) => f.slice(2));
      text = head[2] as string;
    } else if (flags.length > 0 && /^ {3,}\S/.test(line)) text += ` ${line.trim()}`;
    else flush();
  }
  flush();
  return out;
}

function helpOf(main: string): string {
  const run = spawnSync(process.execPath, ["--import", "tsx", join(REPO, main), "--help"], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  assert.equal(run.status, 0, `${main} --help: ${run.stderr}`);
  return run.stdout;
}

/** The three apps: their manifest, entry point in the image, and source of `--help`. */
const APPS = [
  { kind: "Deployment", name: "istiod", entry: "examples/control-plane/dist/main.js" },
  { kind: "DaemonSet", name: "ztunnel", entry: "examples/ztunnel/dist/main.js" },
  { kind: "Deployment", name: "waypoint", entry: "examples/waypoint/dist/main.js" },
] as const;

/**
 * Flags whose default suits only the local demo and that a manifest may leave out, each with why and
 * the condition under which the default is not used (checked against the manifest's arguments).
 */
const DEMO_DEFAULT_UNUSED: Record<string, Record<string, { why: string; holds(args: string[]): boolean }>> = {
  "examples/control-plane/dist/main.js": {
    "mesh-dir": { why: "--kubernetes reads the cluster", holds: (a) => a.includes("--kubernetes") },
    "state-dir": {
      why: "--kubernetes keeps the CA in Secrets",
      holds: (a) => a.includes("--kubernetes"),
    },
    "pod-cidr": {
      why: "with --kubernetes the default is every address",
      holds: (a) => a.includes("--kubernetes"),
    },
  },
  "examples/ztunnel/dist/main.js": {
    "state-dir": {
      why: "only the default folder of --root-cert and --token-file, both given",
      holds: (a) => a.includes("--root-cert") && a.includes("--token-file"),
    },
    "admin-ip": {
      why: "loopback by design (it shuts the proxy down on a POST); 127.0.0.1 on a pod IP",
      holds: (a) => !a.includes("--admin-ip"),
    },
  },
  "examples/waypoint/dist/main.js": {
    "state-dir": {
      why: "only the default folder of --root-cert and --token-file, both given",
      holds: (a) => a.includes("--root-cert") && a.includes("--token-file"),
    },
  },
};

/** Flags whose value is a loopback address on purpose: listeners only the pod itself may reach. */
const LOOPBACK_BY_DESIGN = new Set(["admin-ip"]);

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
  it("leave no flag at a default that only suits the local demo (loopback, the repo's state, node-a, demo)", async () => {
    const docs = await manifests();
    for (const app of APPS) {
      const doc = find(docs, app.kind, app.name);
      const { args } = commandLine(doc, app.entry);
      const defaults = helpDefaults(helpOf(app.entry.replace("/dist/main.js", "/src/main.ts")));
      assert.ok(defaults.size >= 10, `${app.entry}: --help names only ${[...defaults.keys()].join(" ")}`);
      const exempt = DEMO_DEFAULT_UNUSED[app.entry] ?? {};
      const demoDefaulted = [...defaults].filter(([, said]) => said.some((t) => DEMO_VALUE.test(t)));
      for (const [flag, said] of demoDefaulted) {
        if (flagValue(args, flag) !== undefined) continue;
        const unused = exempt[flag];
        assert.ok(
          unused?.holds(args),
          `${app.entry}: --${flag} is left at a default for the local demo (${said.filter((t) => DEMO_VALUE.test(t)).join("; ")}): set it in ${app.kind} ${app.name}${unused ? ` (${unused.why}, which does not hold)` : ""}`,
        );
      }
      // No exemption outlives the default it excuses.
      for (const flag of Object.keys(exempt)) {
        assert.ok(
          demoDefaulted.some(([f]) => f === flag),
          `${app.entry}: --${flag} is exempted but its default is no longer a demo value`,
        );
      }
      // Nor does a manifest write one in itself (what the downward API gives is the cluster's).
      const written = containerArgs(doc).slice(containerArgs(doc).indexOf(app.entry) + 1);
      for (const [i, arg] of written.entries()) {
        const flag = written[i - 1]?.startsWith("--") ? written[i - 1]?.slice(2) : undefined;
        if (arg.startsWith("--") || (flag !== undefined && LOOPBACK_BY_DESIGN.has(flag))) continue;
        assert.ok(!DEMO_VALUE.test(arg), `${app.entry}: ${written[i - 1]} ${arg} suits only the local demo`);
      }
      for (const e of podTemplate(doc).spec.containers[0]?.env ?? []) {
        const value = e.value ?? "";
        assert.ok(!DEMO_VALUE.test(value), `${app.entry}: env ${e.name}=${value} suits only the local demo`);
      }
      // Every flag given is one the app describes.
      for (const flag of args.filter((a) => a.startsWith("--"))) {
        assert.ok(defaults.has(flag.slice(2).split("=")[0] as string), `${app.entry}: --help names ${flag}`);
      }
    }
  });

  it("run the ztunnel's own command line as a node of a cluster: the pod's IP, admin on loopback", async () => {
    const docs = await manifests();
    const ds = find(docs, "DaemonSet", "ztunnel");
    const { args, env } = commandLine(ds, "examples/ztunnel/dist/main.js");
    const cli = parseZtunnelCli(args, env);
    assert.equal(cli.kind, "run", JSON.stringify(cli));
    if (cli.kind !== "run") return;
    assert.equal(cli.args.node, DOWNWARD["spec.nodeName"]);
    assert.equal(cli.nodeIp, DOWNWARD["status.podIP"]);
    // POST /quitquitquit and /config_dump: only from inside the ztunnel's pod (kubectl port-forward).
    assert.match(cli.adminIp, /^127\.|^::1$/);
    assert.equal(cli.args["zds-socket"], "/var/run/ztunnel/ztunnel.sock");
    assert.equal(cli.args["control-plane"], "istiod.istio-system.svc:15012");
    // The drain ends 5 s before the kubelet's SIGKILL.
    const grace = podTemplate(ds).spec.terminationGracePeriodSeconds;
    assert.equal(env.TERMINATION_GRACE_PERIOD_SECONDS, String(grace));
    assert.equal(cli.terminationDeadlineMs, ((grace ?? 30) - 5) * 1000);
    assert.notEqual(cli.dns, false, "the DNS proxy istio-cni's DNS capture sends pods to");
  });

  it("serve the waypoint Gateway of the pod's own namespace and label, as its Service selects it", async () => {
    const docs = await manifests();
    const deployment = find(docs, "Deployment", "waypoint");
    const { args } = commandLine(deployment, "examples/waypoint/dist/main.js");
    const gateway = find(docs, "Gateway", "waypoint");
    assert.equal(flagValue(args, "namespace"), gateway.metadata.namespace);
    assert.equal(flagValue(args, "name"), gateway.metadata.name);
    assert.equal(deployment.metadata.namespace, gateway.metadata.namespace);
    const service = find(docs, "Service", "waypoint");
    const selector = (service.spec as { selector: Record<string, string> }).selector;
    const labels = podTemplate(deployment).metadata.labels ?? {};
    for (const [key, value] of Object.entries(selector)) assert.equal(labels[key], value, key);
  });

  it("label the waypoint's Service as Istio's deployment controller does, so a namespace's use-waypoint leaves it out", async () => {
    const template = join(DEPLOY, "30-waypoint-template.yaml");
    const { objects } = parseManifests([
      { path: template, text: await readFile(template, "utf8") },
      {
        path: "labelled.yaml",
        text: `apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { istio.io/use-waypoint: waypoint } }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: demo }
spec: { clusterIP: 10.96.0.30, selector: { app: web }, ports: [{ port: 80 }] }
`,
      },
    ]);
    const service = objects.find((o) => o.kind === "Service" && o.metadata.name === "waypoint");
    const gateway = objects.find((o) => o.kind === "Gateway" && o.metadata.name === "waypoint");
    assert.ok(service && gateway);
    assert.equal(service.metadata.labels?.["gateway.istio.io/managed"], "istio.io-mesh-controller");
    // As on a cluster: the Service gets a cluster IP, which the leader writes into the Gateway's status.
    service.spec = { ...service.spec, clusterIP: "10.96.0.20" };
    gateway.status = { addresses: [{ type: "IPAddress", value: "10.96.0.20" }] };
    const mesh = translateMesh(objects, { podCidrs: ["10.244.0.0/16"] });
    const waypointOf = (name: string) =>
      mesh.services.find((s) => s.key === `demo/${name}.demo.svc.cluster.local`)?.service.waypoint;
    assert.equal(waypointOf("waypoint"), undefined, "traffic for the waypoint is not sent through it");
    assert.notEqual(waypointOf("web"), undefined, "the namespace's other Services use the waypoint");
  });

  it("use only namespaces a manifest or a README step creates", async () => {
    const docs = await manifests();
    const readme = await readFile(join(DEPLOY, "README.md"), "utf8");
    const created = new Set([
      ...docs.filter((d) => d.kind === "Namespace").map((d) => d.metadata.name),
      ...[...readme.matchAll(/kubectl create namespace ([a-z0-9-]+)/g)].map((m) => m[1] as string),
    ]);
    const used = new Set([
      ...docs.flatMap((d) => (d.metadata.namespace === undefined ? [] : [d.metadata.namespace])),
      ...[...readme.matchAll(/kubectl (?:-n ([a-z0-9-]+) |label namespace ([a-z0-9-]+))/g)].map(
        (m) => (m[1] ?? m[2]) as string,
      ),
    ]);
    for (const namespace of used)
      assert.ok(created.has(namespace), `namespace ${namespace} is never created`);
  });

  it("give the waypoint's Service the ports Istio's deployment controller gives it", async () => {
    const docs = await manifests();
    const gateway = find(docs, "Gateway", "waypoint");
    const service = find(docs, "Service", "waypoint");
    const ports = (service.spec as { ports: { name: string; port: number; appProtocol?: string }[] }).ports;
    // One port per listener, its appProtocol the listener's protocol in lower case, and the status
    // port the readiness probe reads.
    for (const listener of (gateway.spec as { listeners: { name: string; port: number; protocol: string }[] })
      .listeners) {
      const port = ports.find((p) => p.port === listener.port);
      assert.equal(port?.appProtocol, listener.protocol.toLowerCase(), listener.name);
    }
    const container = podTemplate(find(docs, "Deployment", "waypoint")).spec.containers[0] as {
      readinessProbe: { httpGet: { port: number } };
    };
    const probe = container.readinessProbe;
    assert.ok(
      ports.some((p) => p.name === "status-port" && p.port === probe.httpGet.port),
      "status-port 15021",
    );
  });

  it("agree on the cluster id: the proxies always send Kubernetes", async () => {
    const docs = await manifests();
    const { args, env } = commandLine(
      find(docs, "Deployment", "istiod"),
      "examples/control-plane/dist/main.js",
    );
    const clusterId = flagValue(args, "cluster-id") || env.CLUSTER_ID || "Kubernetes";
    assert.equal(clusterId, "Kubernetes", "the control plane refuses callers of any other cluster id");
  });

  it("agree on the trust domain and the cluster's DNS domain, read as each program reads them", async () => {
    const docs = await manifests();
    const cp = commandLine(find(docs, "Deployment", "istiod"), "examples/control-plane/dist/main.js");
    const want = {
      trust: flagValue(cp.args, "trust-domain") || cp.env.TRUST_DOMAIN || "cluster.local",
      dns: flagValue(cp.args, "domain") || "cluster.local",
    };
    for (const [kind, name, entry] of [
      ["DaemonSet", "ztunnel", "examples/ztunnel/dist/main.js"],
      ["Deployment", "waypoint", "examples/waypoint/dist/main.js"],
    ] as const) {
      const { args, env } = commandLine(find(docs, kind, name), entry);
      assert.deepEqual(
        {
          trust: flagValue(args, "trust-domain") || env.TRUST_DOMAIN || "cluster.local",
          dns: flagValue(args, "cluster-domain") || env.CLUSTER_DOMAIN || "cluster.local",
        },
        want,
        `${name} is told what the control plane is`,
      );
      // Set where an operator changes it, not left to a default the control plane's may not share.
      assert.ok(env.TRUST_DOMAIN !== undefined && env.CLUSTER_DOMAIN !== undefined, name);
    }
  });

  it("schedule every pod on Linux nodes, and keep the proxies' own pods out of capture", async () => {
    const docs = await manifests();
    for (const app of APPS) {
      const pod = podTemplate(find(docs, app.kind, app.name));
      assert.equal(
        pod.spec.nodeSelector?.["kubernetes.io/os"],
        "linux",
        `${app.name}: the image is Linux only`,
      );
    }
    for (const [kind, name] of [
      ["DaemonSet", "ztunnel"],
      ["Deployment", "waypoint"],
    ] as const) {
      assert.equal(
        podTemplate(find(docs, kind, name)).metadata.labels?.["istio.io/dataplane-mode"],
        "none",
        name,
      );
    }
  });

  it("upgrade a node's ztunnel beside the old one, which drains", async () => {
    const docs = await manifests();
    const strategy = (find(docs, "DaemonSet", "ztunnel").spec as { updateStrategy?: unknown }).updateStrategy;
    assert.deepEqual(strategy, { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
  });

  it("keep the local demo's state and this machine's builds out of the image", async () => {
    const ignored = (await readFile(join(DEPLOY, "Dockerfile.dockerignore"), "utf8"))
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    // Whatever git leaves out is local (state, installs, builds), at any depth.
    const gitignored = (await readFile(join(REPO, ".gitignore"), "utf8"))
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    for (const entry of gitignored) {
      const path = entry.replace(/\/$/, "");
      const wanted = path.startsWith("/") ? path.slice(1) : `**/${path}`;
      assert.ok(ignored.includes(wanted), `Dockerfile.dockerignore: ${wanted} (${entry} in .gitignore)`);
    }
    assert.ok(ignored.includes("**/.mesh-state"), "the demo's CA key and node tokens");
  });
});
