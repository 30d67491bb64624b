import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { authzCheck } from "./authz-check.js";
import { loadManifests, type ManifestSet } from "./manifests.js";
import { MESH_DIR, run, tempManifests } from "./test-helpers.js";

describe("ambient authz check against the repository's mesh/", () => {
  let mesh: ManifestSet;
  before(async () => {
    mesh = await loadManifests(MESH_DIR);
  });

  // Each case: the call, whether the mesh allows it, and what each hop says.
  const cases: { from: string; to: string; method?: string; allowed: boolean; hops: string[] }[] = [
    {
      from: "sleep-0",
      to: "web:80",
      method: "POST",
      allowed: false,
      hops: [
        "waypoint demo/waypoint L7 denied by demo/web-get-from-sleep, rule 0: no `to` operation matched",
      ],
    },
    {
      from: "sleep-0",
      to: "web:80",
      method: "GET",
      allowed: true,
      hops: [
        "waypoint demo/waypoint L7 allowed by demo/web-get-from-sleep, rule 0",
        "ztunnel (node node-b) L4 allowed by demo/web-only-from-waypoint, rule 0",
        "ztunnel (node node-b) L4 allowed by demo/web-only-from-waypoint, rule 0",
      ],
    },
    {
      from: "demo/stranger",
      to: "web.demo:80",
      allowed: false,
      hops: ["waypoint demo/waypoint L7 denied by demo/web-get-from-sleep, rule 0: no `from` source matched"],
    },
    {
      from: "stranger.demo",
      to: "pod/web-v1:8080",
      allowed: false,
      hops: [
        "ztunnel (node node-b) L4 denied by demo/web-only-from-waypoint, rule 0: principals: cluster.local/ns/demo/sa/stranger is not in [cluster.local/ns/demo/sa/waypoint]",
      ],
    },
    {
      from: "sleep-0",
      to: "echo:80",
      allowed: true,
      hops: [
        "ztunnel (node node-b) L4 allowed by demo/echo-allow-sleep, rule 0",
        "ztunnel (node node-b) L4 allowed by demo/echo-allow-sleep, rule 0",
      ],
    },
    {
      from: "sleep-0",
      to: "echo-0:9090",
      allowed: false,
      hops: [
        "ztunnel (node node-b) L4 denied by demo/echo-allow-sleep, rule 0: destinationPorts: 9090 is not in [8080]",
      ],
    },
  ];
  for (const c of cases) {
    it(`${c.from} -> ${c.to}${c.method ? ` ${c.method}` : ""}: ${c.allowed ? "allowed" : "denied"}`, () => {
      const options: Parameters<typeof authzCheck>[1] = { from: c.from, to: c.to };
      if (c.method !== undefined) options.method = c.method;
      const result = authzCheck(mesh, options);
      assert.equal(result.allowed, c.allowed);
      assert.deepEqual(
        result.hops.map((h) => `${h.enforcedBy} ${h.layer} ${h.explanation}`),
        c.hops,
      );
    });
  }

  it("prints the decision and the explanation, and -o json the same data", async () => {
    const r = await run([
      "authz",
      "check",
      "--from",
      "sleep-0",
      "--to",
      "web:80",
      "--method",
      "POST",
      "--manifests",
      MESH_DIR,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^DENIED {2}demo\/sleep-0 -> service demo\/web:80\n/);
    assert.match(r.stdout, /denied by demo\/web-get-from-sleep, rule 0: no `to` operation matched/);
    const json = await run([
      "authz",
      "check",
      "--from",
      "sleep-0",
      "--to",
      "echo:80",
      "--manifests",
      MESH_DIR,
      "-o",
      "json",
    ]);
    const data = JSON.parse(json.stdout) as { allowed: boolean; hops: { decision: { policy: string } }[] };
    assert.equal(data.allowed, true);
    assert.equal(data.hops[0]?.decision.policy, "demo/echo-allow-sleep");
  });

  it("names a Service's host at the waypoint in the cluster's DNS domain (clusterDomain)", () => {
    const raw = {
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: "no-corp-host", namespace: "demo" },
      spec: {
        targetRefs: [{ group: "gateway.networking.k8s.io", kind: "Gateway", name: "waypoint" }],
        action: "DENY",
        rules: [{ to: [{ operation: { hosts: ["web.demo.svc.corp.internal"] } }] }],
      },
    };
    const policy: ManifestSet["objects"][number] = {
      apiVersion: raw.apiVersion,
      kind: raw.kind,
      metadata: { ...raw.metadata, labels: {} },
      spec: raw.spec,
      raw,
      file: "extra.yaml",
      line: 1,
      locate: () => 1,
    };
    const set: ManifestSet = { ...mesh, objects: [...mesh.objects, policy] };
    const call = { from: "sleep-0", to: "web:80", method: "GET" };
    assert.equal(authzCheck(set, call).allowed, true, "web.demo.svc.cluster.local is not denied");
    const corp = authzCheck(set, { ...call, clusterDomain: "corp.internal" });
    assert.equal(corp.allowed, false);
    assert.match(String(corp.hops[0]?.explanation), /denied by demo\/no-corp-host/);
  });

  it("notes that a ztunnel does not see HTTP attributes", () => {
    const result = authzCheck(mesh, { from: "sleep-0", to: "echo:80", method: "DELETE" });
    assert.equal(result.allowed, true);
    assert.deepEqual(result.notes, [
      "ztunnel enforces L4 only: --method and --path do not apply at a ztunnel",
    ]);
  });

  it("asks to qualify a name that is both a pod and a service", () => {
    assert.throws(() => authzCheck(mesh, { from: "sleep-0", to: "web-v1:80" }), {
      code: "ERR_OBJECT_NOT_FOUND",
      message: /names both a pod and a service: write pod\/web-v1:80 or svc\/web-v1:80/,
    });
  });

  it("fails in one line with what to do for unknown objects, ports and malformed --to", async () => {
    const cases: [string[], RegExp][] = [
      [
        ["--from", "nobody", "--to", "echo:80"],
        /^error: pod "nobody" is not in .*: check the name or pass --manifests <dir>\n$/,
      ],
      [
        ["--from", "sleep-0", "--to", "echo:81"],
        /^error: service demo\/echo has no port 81 \(its ports: 80\): pick one of them\n$/,
      ],
      [
        ["--from", "sleep-0", "--to", "echo"],
        /^error: --to "echo" needs a port: write it as <pod\|service>:<port>/,
      ],
      [
        ["--from", "sleep-0"],
        /^error: required option '--to <target:port>' not specified \(see ambient authz check --help\)\n$/,
      ],
    ];
    for (const [argv, expected] of cases) {
      const r = await run(["authz", "check", "--manifests", MESH_DIR, ...argv]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, expected);
    }
  });
});

describe("ambient authz check against a temp folder", () => {
  let folder: Awaited<ReturnType<typeof tempManifests>>;
  before(async () => {
    folder = await tempManifests({
      "apps.yaml": `
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: a }
spec: { serviceAccountName: client }
status: { podIP: 10.0.0.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: b }
status: { podIP: 10.0.0.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: server, namespace: a, labels: { app: server } }
spec: { nodeName: n1 }
---
apiVersion: v1
kind: Pod
metadata: { name: db, namespace: a, labels: { app: db } }
spec: { nodeName: n1 }
status: { podIP: 10.0.0.4 }
`,
      "deny.yaml": `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-client, namespace: a }
spec:
  selector: { matchLabels: { app: db } }
  action: DENY
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/a/sa/client"] } }] }]
`,
    });
  });
  after(() => folder.remove());

  it("reports the DENY rule that matched", async () => {
    const set = await loadManifests(folder.dir);
    const result = authzCheck(set, { from: "a/client", to: "db:5432" });
    assert.equal(result.allowed, false);
    assert.equal(result.hops[0]?.explanation, "denied by a/deny-client, rule 0: a DENY rule matched");
  });

  it("refuses an ambiguous caller and a pod without an address", async () => {
    const set = await loadManifests(folder.dir);
    assert.throws(() => authzCheck(set, { from: "client", to: "db:5432" }), {
      code: "ERR_OBJECT_NOT_FOUND",
      message: /in several namespaces \(a, b\): qualify it as namespace\/name/,
    });
    assert.throws(() => authzCheck(set, { from: "a/client", to: "server:80" }), {
      code: "ERR_OBJECT_INCOMPLETE",
      message: /pod a\/server has no status.podIP in apps.yaml/,
    });
  });

  it("fails in one line when the folder does not exist", async () => {
    const r = await run([
      "authz",
      "check",
      "--from",
      "a",
      "--to",
      "b:1",
      "--manifests",
      `${folder.dir}/missing`,
    ]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^error: cannot read the manifests folder .*missing \(ENOENT\): pass an existing folder/,
    );
  });
});

describe("ambient authz check: waypoints as istiod binds them", () => {
  let folder: Awaited<ReturnType<typeof tempManifests>>;
  before(async () => {
    folder = await tempManifests({
      "mesh.yaml": `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Namespace
metadata: { name: other, labels: { istio.io/dataplane-mode: ambient, team: shop } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: pods-waypoint, namespace: shop, labels: { istio.io/waypoint-for: workload } }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
---
apiVersion: v1
kind: Pod
metadata: { name: pods-waypoint-0, namespace: shop, labels: { gateway.networking.k8s.io/gateway-name: pods-waypoint } }
spec: { nodeName: node-a, serviceAccountName: pods-waypoint }
status: { podIP: 127.10.9.1 }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop }
spec: { nodeName: node-a, serviceAccountName: client }
status: { podIP: 127.10.9.2 }
---
apiVersion: v1
kind: Pod
metadata: { name: stranger, namespace: other }
spec: { nodeName: node-a, serviceAccountName: stranger }
status: { podIP: 127.10.9.3 }
---
apiVersion: v1
kind: Pod
metadata: { name: db-0, namespace: shop, labels: { app: db, istio.io/use-waypoint: pods-waypoint } }
spec: { nodeName: node-b, serviceAccountName: db }
status: { podIP: 127.10.9.4 }
---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: shop, labels: { istio.io/use-waypoint: pods-waypoint } }
spec: { clusterIP: 127.30.9.1, selector: { app: db }, ports: [{ port: 5432 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: api-0, namespace: other, labels: { app: api, istio.io/use-waypoint: pods-waypoint, istio.io/use-waypoint-namespace: shop } }
spec: { nodeName: node-b, serviceAccountName: api }
status: { podIP: 127.10.9.5 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: shared, namespace: shop, labels: { istio.io/waypoint-for: all } }
spec:
  gatewayClassName: istio-waypoint
  listeners:
    - name: mesh
      port: 15008
      protocol: HBONE
      allowedRoutes:
        namespaces:
          from: Selector
          selector:
            matchLabels: { team: shop }
            matchExpressions: [{ key: istio.io/dataplane-mode, operator: In, values: [ambient] }]
---
apiVersion: v1
kind: Pod
metadata: { name: shared-0, namespace: shop, labels: { gateway.networking.k8s.io/gateway-name: shared } }
spec: { nodeName: node-a, serviceAccountName: shared }
status: { podIP: 127.10.9.6 }
---
apiVersion: v1
kind: Pod
metadata: { name: api-1, namespace: other, labels: { app: api, istio.io/use-waypoint: shared, istio.io/use-waypoint-namespace: shop } }
spec: { nodeName: node-b, serviceAccountName: api }
status: { podIP: 127.10.9.7 }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: client-only, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: pods-waypoint }]
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }] }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: db-from-waypoint, namespace: shop }
spec:
  selector: { matchLabels: { app: db } }
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/pods-waypoint"] } }] }]
`,
    });
  });
  after(() => folder.remove());

  it("checks a pod with its own waypoint at that waypoint, then at its ztunnel with the waypoint as caller", async () => {
    const set = await loadManifests(folder.dir);
    const allowed = authzCheck(set, { from: "shop/client", to: "pod/db-0:5432" });
    assert.equal(allowed.allowed, true);
    assert.deepEqual(
      allowed.hops.map((h) => `${h.enforcedBy} ${h.source} ${h.explanation}`),
      [
        "waypoint shop/pods-waypoint shop/client (spiffe://cluster.local/ns/shop/sa/client) allowed by shop/client-only, rule 0",
        "ztunnel (node node-b) shop/pods-waypoint-0 (spiffe://cluster.local/ns/shop/sa/pods-waypoint) allowed by shop/db-from-waypoint, rule 0",
      ],
    );
    // Another caller is refused at the waypoint: the check stops there, as the mesh does.
    const denied = authzCheck(set, { from: "other/stranger", to: "pod/db-0:5432" });
    assert.equal(denied.allowed, false);
    assert.deepEqual(
      denied.hops.map((h) => h.enforcedBy),
      ["waypoint shop/pods-waypoint"],
    );
  });

  it("in another trust domain, takes cluster.local principals as the mesh's at the waypoint, as written at a ztunnel", async () => {
    // Istio's rules: istiod writes a waypoint's RBAC with the trust domain bundle, and sends a ztunnel
    // the principals as the policy has them.
    const set = await loadManifests(folder.dir);
    const result = authzCheck(set, { from: "shop/client", to: "pod/db-0:5432", trustDomain: "example.org" });
    assert.equal(result.allowed, false);
    assert.deepEqual(
      result.hops.map((h) => `${h.enforcedBy} ${h.explanation}`),
      [
        "waypoint shop/pods-waypoint allowed by shop/client-only, rule 0",
        "ztunnel (node node-b) denied by shop/db-from-waypoint, rule 0: principals: example.org/ns/shop/sa/pods-waypoint is not in [cluster.local/ns/shop/sa/pods-waypoint]",
      ],
    );
  });

  it("does not bind a Service to a waypoint for workloads, and says so", async () => {
    const set = await loadManifests(folder.dir);
    const result = authzCheck(set, { from: "shop/client", to: "svc/db:5432" });
    assert.deepEqual(
      result.hops.map((h) => h.enforcedBy),
      ["ztunnel (node node-b)"],
    );
    // The ztunnel sees the client itself, whom the pod's policy does not admit.
    assert.equal(result.allowed, false);
    assert.ok(
      result.notes.some((n) =>
        n.includes(
          "waypoint shop/pods-waypoint does not take Service traffic (istio.io/waypoint-for: workload)",
        ),
      ),
      result.notes.join("\n"),
    );
  });

  it("does not bind a workload of a namespace the waypoint does not let attach", async () => {
    const set = await loadManifests(folder.dir);
    const result = authzCheck(set, { from: "shop/client", to: "pod/api-0:8080" });
    assert.deepEqual(
      result.hops.map((h) => h.enforcedBy),
      ["ztunnel (node node-b)"],
    );
    assert.ok(
      result.notes.some((n) => n.includes("does not let namespace other attach")),
      result.notes.join("\n"),
    );
    // A waypoint whose HBONE listener selects the namespace by its labels takes it.
    const selected = authzCheck(set, { from: "shop/client", to: "pod/api-1:8080" });
    assert.deepEqual(
      selected.hops.map((h) => h.enforcedBy),
      ["waypoint shop/shared", "ztunnel (node node-b)"],
    );
  });
});
