import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { parse } from "yaml";
import type { Finding } from "./analyze.js";
import { MESH_DIR, run, tempManifests } from "./test-helpers.js";

const BROKEN = {
  "policy.yaml": `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: bad-cidr, namespace: demo }
spec:
  selector: { matchLabels: { app: api } }
  rules:
    - from:
        - source:
            ipBlocks: ["10.0.0.0/8", "not-a-cidr"]
      to:
        - operation: { ports: [8080] }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: typo, namespace: demo }
spec:
  action: ALOW
  rulez: []
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ghost-target, namespace: demo }
spec:
  targetRefs:
    - { group: gateway.networking.k8s.io, kind: Gateway, name: no-such-waypoint }
    - { group: networking.istio.io, kind: ServiceEntry, name: no-such-entry }
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/demo/sa/nobody"] } }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: selects-nothing, namespace: demo }
spec:
  selector: { matchLabels: { app: missing } }
  rules: [{}]
`,
  "pods.yaml": `
apiVersion: v1
kind: ServiceAccount
metadata: { name: api, namespace: demo }
---
apiVersion: v1
kind: Pod
metadata: { name: api-0, namespace: demo, labels: { app: api } }
spec: { serviceAccountName: api }
status: { podIP: 127.10.0.9 }
---
apiVersion: v1
kind: Pod
metadata: { name: api-1, namespace: demo, labels: { app: api } }
spec: { serviceAccountName: apii }
status: { podIP: 127.10.0.9 }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: demo, labels: { istio.io/use-waypoint: missing-waypoint } }
spec:
  selector: { app: api }
  ports: [{ name: http, port: 80, targetPort: web }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: pods-only, namespace: demo, labels: { istio.io/waypoint-for: workload } }
spec: { gatewayClassName: istio-waypoint }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: services-only, namespace: demo }
spec: { gatewayClassName: istio-waypoint }
---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: demo, labels: { istio.io/use-waypoint: pods-only } }
spec: { ports: [{ port: 5432 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: worker-0, namespace: demo, labels: { istio.io/use-waypoint: services-only } }
status: { podIP: 127.10.0.20 }
`,
  "syntax.yaml": "apiVersion: v1\nkind: Pod\nmetadata: { name: broken\n",
  "nokind.yaml": "apiVersion: v1\nmetadata: { name: x }\n",
};

describe("ambient analyze", () => {
  let broken: Awaited<ReturnType<typeof tempManifests>>;
  before(async () => {
    broken = await tempManifests(BROKEN);
  });
  after(() => broken.remove());

  it("finds nothing wrong in the repository's mesh/ and exits 0", async () => {
    const r = await run(["analyze", MESH_DIR]);
    assert.equal(r.stderr, "");
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^✔ No problems found in /);
  });

  it("names file, object and field path of every problem, and exits 1", async () => {
    const r = await run(["analyze", broken.dir, "-o", "json"]);
    assert.equal(r.code, 1);
    const { findings, errors } = JSON.parse(r.stdout) as { findings: Finding[]; errors: number };
    const got = findings.map((f) => `${f.severity} ${f.check} ${f.file} ${f.object} ${f.field}`);
    const expected = [
      "error InvalidPolicy policy.yaml AuthorizationPolicy demo/bad-cidr spec.rules[0].from[0].source.ipBlocks[1]",
      "error InvalidPolicy policy.yaml AuthorizationPolicy demo/bad-cidr spec.rules[0].to[0].operation",
      "error InvalidPolicy policy.yaml AuthorizationPolicy demo/bad-cidr spec.rules[0].to[0].operation.ports[0]",
      "error InvalidPolicy policy.yaml AuthorizationPolicy demo/typo spec.action",
      "error InvalidPolicy policy.yaml AuthorizationPolicy demo/typo spec.rulez",
      "error ReferencedResourceNotFound policy.yaml AuthorizationPolicy demo/ghost-target spec.targetRefs[0]",
      "error ReferencedResourceNotFound policy.yaml AuthorizationPolicy demo/ghost-target spec.targetRefs[1]",
      "warning SelectorMatchesNothing policy.yaml AuthorizationPolicy demo/selects-nothing spec.selector.matchLabels",
      "error DuplicateAddress pods.yaml Pod demo/api-1 status.podIP",
      "warning UnknownServiceAccount pods.yaml Pod demo/api-1 spec.serviceAccountName",
      'error ReferencedResourceNotFound pods.yaml Service demo/api metadata.labels["istio.io/use-waypoint"]',
      "warning TargetPortNotFound pods.yaml Service demo/api spec.ports[0].targetPort",
      'warning WaypointNotBound pods.yaml Service demo/db metadata.labels["istio.io/use-waypoint"]',
      'warning WaypointNotBound pods.yaml Pod demo/worker-0 metadata.labels["istio.io/use-waypoint"]',
      "warning UnknownServiceAccount policy.yaml AuthorizationPolicy demo/ghost-target spec.rules[0].from[0].source.principals[0]",
      "error UnreadableManifest syntax.yaml document 0 ",
      "error UnreadableManifest nokind.yaml document 0 ",
    ];
    assert.deepEqual([...got].sort(), [...expected].sort());
    assert.equal(errors, expected.filter((e) => e.startsWith("error")).length);
    // Errors come first.
    const firstWarning = findings.findIndex((f) => f.severity === "warning");
    assert.ok(findings.slice(firstWarning).every((f) => f.severity === "warning"));
    const cidr = findings.find((f) => f.field === "spec.rules[0].from[0].source.ipBlocks[1]");
    assert.equal(cidr?.line, 10, "the line of the field");
    const typo = findings.find((f) => f.field === "spec.rulez");
    assert.equal(typo?.line, 19);
    const waypoint = findings.find((f) => f.field === 'metadata.labels["istio.io/use-waypoint"]');
    assert.equal(waypoint?.line, 20);
  });

  it("prints an aligned table with a summary, coloured only on a TTY without NO_COLOR", async () => {
    const plain = await run(["analyze", broken.dir]);
    assert.equal(plain.code, 1);
    assert.ok(!plain.stdout.includes("\u001b["));
    const lines = plain.stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^SEVERITY +FILE +OBJECT +FIELD +MESSAGE$/);
    const fileColumn = (lines[0] ?? "").indexOf("FILE");
    for (const line of lines.slice(1, -1))
      assert.match(line.slice(fileColumn), /^(policy|pods|syntax|nokind)\.yaml/);
    assert.match(lines.at(-1) ?? "", /^11 error\(s\), 6 warning\(s\) in /);
    assert.match(
      plain.stdout,
      /policy\.yaml:10 +AuthorizationPolicy demo\/bad-cidr +spec\.rules\[0\]\.from\[0\]\.source\.ipBlocks\[1\]/,
    );

    const tty = await run(["analyze", broken.dir], { tty: true });
    assert.ok(tty.stdout.includes("\u001b[31mError\u001b[39m"));
    const noColor = await run(["analyze", broken.dir], { tty: true, env: { NO_COLOR: "1" } });
    assert.ok(!noColor.stdout.includes("\u001b["));
    assert.equal(noColor.stdout, plain.stdout);
  });

  it("finds the field's line inside a kind: List", async () => {
    const list = await tempManifests({
      "list.yaml": [
        "apiVersion: v1",
        "kind: List",
        "items:",
        "  - apiVersion: security.istio.io/v1",
        "    kind: PeerAuthentication",
        "    metadata: { name: ok, namespace: demo }",
        "  - apiVersion: security.istio.io/v1",
        "    kind: PeerAuthentication",
        "    metadata: { name: bad, namespace: demo }",
        "    spec:",
        "      mtls: { mode: STRUCT }",
        "",
      ].join("\n"),
    });
    try {
      const r = await run(["analyze", list.dir, "-o", "json"]);
      assert.equal(r.code, 1);
      const { findings } = JSON.parse(r.stdout) as { findings: Finding[] };
      assert.deepEqual(
        findings.map((f) => `${f.file}:${f.line} ${f.object} ${f.field}`),
        ["list.yaml:11 PeerAuthentication demo/bad spec.mtls.mode"],
      );
    } finally {
      await list.remove();
    }
  });

  it("exits 0 when there are only warnings, and -o yaml gives the same findings", async () => {
    const warnOnly = await tempManifests({
      "svc.yaml":
        "apiVersion: v1\nkind: Service\nmetadata: { name: lonely, namespace: demo }\nspec: { selector: { app: none }, ports: [{ port: 80 }] }\n",
    });
    try {
      const r = await run(["analyze", warnOnly.dir, "-o", "yaml"]);
      assert.equal(r.code, 0, r.stdout);
      const data = parse(r.stdout) as { errors: number; warnings: number; findings: Finding[] };
      assert.equal(data.errors, 0);
      assert.equal(data.warnings, 1);
      assert.deepEqual(
        data.findings.map((f) => `${f.file}:${f.line} ${f.object} ${f.field}: ${f.message}`),
        ["svc.yaml:4 Service demo/lonely spec.selector: selects no pod in namespace demo"],
      );
      const dup = await tempManifests({ "a.yaml": BROKEN["pods.yaml"], "b.yaml": BROKEN["pods.yaml"] });
      try {
        const d = await run(["analyze", dup.dir, "-o", "json"]);
        const findings = (JSON.parse(d.stdout) as { findings: Finding[] }).findings;
        assert.equal(findings.filter((f) => f.check === "DuplicateObject" && f.file === "b.yaml").length, 8);
      } finally {
        await dup.remove();
      }
    } finally {
      await warnOnly.remove();
    }
  });
});
