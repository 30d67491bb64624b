import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { copyMeshDir, DEFAULT_RULE, editRouteLive } from "./live-edit.js";
import { type LocalMesh, startLocalMesh } from "./local-mesh.js";

// The demo mesh exactly as `pnpm demo` runs it, on a copy of the repository's own manifests (the live
// edits at the end change the copy), with the control plane on an ephemeral port.
describe("local demo mesh", () => {
  let mesh: LocalMesh;
  let copy: Awaited<ReturnType<typeof copyMeshDir>>;
  before(async () => {
    copy = await copyMeshDir(fileURLToPath(new URL("../../../mesh/", import.meta.url)));
    mesh = await startLocalMesh({ meshDir: copy.dir, controlPlaneListen: "127.0.0.1:0" });
  });
  after(async () => {
    await mesh?.close();
    await copy?.remove();
  });

  /** Calls web.demo from `from` (a new connection each time) until `done` holds; at most 5 s. */
  async function webUntil(
    from: string,
    method: string,
    done: (r: { status: number; body: string }) => boolean,
  ): Promise<{ status: number; body: string }> {
    const end = Date.now() + 5000;
    for (;;) {
      const r = await mesh.httpCall(from, "127.30.0.2", 80, { method, path: "/live" });
      if (done(r) || Date.now() > end) return r;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  it("carries sleep's calls to both echo replicas through the Service VIP", async () => {
    const answeredBy = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const { reply, response } = await mesh.call("sleep-0", "127.30.0.1", 80, `ping ${i}`);
      assert.equal(reply, 0);
      assert.match(response, new RegExp(`^echo-[01] heard "ping ${i}"$`));
      answeredBy.add(response.slice(0, 6));
    }
    assert.deepEqual([...answeredBy].sort(), ["echo-0", "echo-1"]);
  });

  it("refuses the stranger by policy", async () => {
    const { reply, response } = await mesh.call("stranger", "127.30.0.1", 80, "let me in");
    assert.equal(reply, 2);
    assert.equal(response, "");
  });

  it("counts the connections in the destination ztunnel's Istio metrics", async () => {
    const text = await mesh.ztunnels.get("node-b")!.metricsText();
    const opened = text
      .split("\n")
      .filter(
        (l) => l.startsWith("istio_tcp_connections_opened_total{") && l.includes('source_workload="sleep-0"'),
      );
    assert.ok(opened.length > 0, text);
  });

  it("routes sleep's GET through the waypoint per the HTTPRoute", async () => {
    const v1 = await mesh.httpCall("sleep-0", "127.30.0.2", 80, { method: "GET", path: "/hello" });
    assert.deepEqual(v1, { reply: 0, status: 200, body: "web-v1 answered GET /hello" });
    const v2 = await mesh.httpCall("sleep-0", "127.30.0.2", 80, {
      method: "GET",
      path: "/hello",
      headers: { "x-version": "v2" },
    });
    assert.deepEqual(v2, { reply: 0, status: 200, body: "web-v2 answered GET /hello" });
  });

  it("refuses a POST, and another identity, at the waypoint with 403", async () => {
    const post = await mesh.httpCall("sleep-0", "127.30.0.2", 80, { method: "POST", path: "/", body: "x" });
    assert.deepEqual(post, { reply: 0, status: 403, body: "RBAC: access denied" });
    const stranger = await mesh.httpCall("stranger", "127.30.0.2", 80, { method: "GET", path: "/" });
    assert.deepEqual(stranger, { reply: 0, status: 403, body: "RBAC: access denied" });
  });

  it("hands the web pods' ztunnel an L4 policy that allows only the waypoint", () => {
    const config = mesh.controlPlane.config();
    const policy = config.authorizations.get("demo/web-only-from-waypoint");
    assert.equal(policy?.scope, "WORKLOAD_SELECTOR");
    assert.equal(policy?.action, "ALLOW");
    assert.deepEqual(
      policy?.groups.flatMap((g) => g.rules.flatMap((r) => r.matches.flatMap((m) => m.principals))),
      [{ exact: "cluster.local/ns/demo/sa/waypoint" }],
    );
    for (const name of ["web-v1", "web-v2"]) {
      const workload = config.workloads.find((w) => w.workload.name === name)?.workload;
      assert.ok(workload?.authorizationPolicies?.includes("demo/web-only-from-waypoint"), name);
    }
  });

  it("refuses a direct call to a web pod that skips the waypoint, at L4", async () => {
    // web-v1's pod IP and target port, not the Service VIP: the waypoint and its L7 policy are not on
    // this path; the web pods' ztunnel must refuse every identity but the waypoint's.
    for (const pod of ["stranger", "sleep-0"]) {
      const direct = await mesh.httpCall(pod, "127.10.0.7", 8080, {
        method: "POST",
        path: "/admin",
        body: "x",
      });
      // SOCKS5 reply 2: connection not allowed by ruleset (the destination ztunnel's L4 deny).
      assert.deepEqual(direct, { reply: 2, status: 0, body: "" }, pod);
    }
    // The waypoint's own connections to web still get through: 200 and 403 as before.
    const get = await mesh.httpCall("sleep-0", "127.30.0.2", 80, { method: "GET", path: "/after" });
    assert.deepEqual(get, { reply: 0, status: 200, body: "web-v1 answered GET /after" });
    const post = await mesh.httpCall("stranger", "127.30.0.2", 80, { method: "POST", path: "/admin" });
    assert.deepEqual(post, { reply: 0, status: 403, body: "RBAC: access denied" });
  });

  it("shows the waypoint as the source of the web connections at the destination ztunnel", async () => {
    const text = await mesh.ztunnels.get("node-b")!.metricsText();
    const line = text
      .split("\n")
      .find(
        (l) =>
          l.startsWith("istio_tcp_connections_opened_total{") &&
          l.includes('source_workload="waypoint-0"') &&
          l.includes('source_principal="spiffe://cluster.local/ns/demo/sa/waypoint"'),
      );
    assert.ok(line, text);
  });

  it("follows a live HTTPRoute edit at the waypoint, fed only over xDS", async () => {
    const web = join(copy.dir, "web.yaml");
    const original = await readFile(web, "utf8");
    try {
      const edit = await editRouteLive(mesh, copy.dir);
      assert.deepEqual([edit.edited, edit.status, edit.body], [true, 200, "web-v2 answered GET /hello"]);
      // What the waypoint holds is the control plane's RouteConfiguration, not a file it read.
      const dump = JSON.parse(
        await (
          await fetch(`http://${mesh.waypoints.get("demo/waypoint")?.operatorAddresses.admin}/config_dump`)
        ).text(),
      );
      assert.deepEqual(
        dump.routes.map((r: { name: string }) => r.name),
        ["inbound-vip|80|http|web.demo.svc.cluster.local"],
      );
    } finally {
      await writeFile(web, original);
    }
    const back = await webUntil("sleep-0", "GET", (r) => r.body.startsWith("web-v1"));
    assert.deepEqual(back, { reply: 0, status: 200, body: "web-v1 answered GET /live" });
  });

  it("follows a live AuthorizationPolicy edit at the waypoint", async () => {
    const web = join(copy.dir, "web.yaml");
    const original = await readFile(web, "utf8");
    assert.ok(original.includes('methods: ["GET"]'));
    try {
      await writeFile(web, original.replace('methods: ["GET"]', 'methods: ["GET", "POST"]'));
      const post = await webUntil("sleep-0", "POST", (r) => r.status === 200);
      assert.deepEqual(post, { reply: 0, status: 200, body: "web-v1 answered POST /live" });
    } finally {
      await writeFile(web, original);
    }
    const refused = await webUntil("sleep-0", "POST", (r) => r.status === 403);
    assert.deepEqual(refused, { reply: 0, status: 403, body: "RBAC: access denied" });
  });

  it("keeps the last good route and policy at the waypoint through a broken edit", async () => {
    const web = join(copy.dir, "web.yaml");
    const original = await readFile(web, "utf8");
    assert.ok(original.includes(DEFAULT_RULE));
    try {
      // The default rule would go to v2 and POST would be allowed, but both objects are invalid.
      await writeFile(
        web,
        original
          .replace(
            DEFAULT_RULE,
            '- matches: [{ path: { type: RegularExpression, value: "(?:a{2}){600}" } }]\n      backendRefs: [{ name: web-v2, port: 80 }]',
          )
          .replace('methods: ["GET"]', 'methods: ["GET", "POST"]')
          .replace("action: ALLOW", "action: MAYBE"),
      );
      await mesh.controlPlane.reload();
      assert.ok(mesh.controlPlane.errors().length > 0, "the control plane reports the broken edit");
      await new Promise((resolve) => setTimeout(resolve, 500));
      const get = await mesh.httpCall("sleep-0", "127.30.0.2", 80, { method: "GET", path: "/live" });
      assert.deepEqual(get, { reply: 0, status: 200, body: "web-v1 answered GET /live" });
      const post = await mesh.httpCall("sleep-0", "127.30.0.2", 80, { method: "POST", path: "/live" });
      assert.deepEqual(post, { reply: 0, status: 403, body: "RBAC: access denied" });
    } finally {
      await writeFile(web, original);
      await mesh.controlPlane.reload();
    }
  });
});
