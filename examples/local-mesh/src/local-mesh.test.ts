import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type LocalMesh, startLocalMesh } from "./local-mesh.js";

// The demo mesh exactly as `pnpm demo` runs it, on the repository's own manifests, with the control
// plane on an ephemeral port.
describe("local demo mesh", () => {
  let mesh: LocalMesh;
  before(async () => {
    mesh = await startLocalMesh({
      meshDir: fileURLToPath(new URL("../../../mesh/", import.meta.url)),
      controlPlaneListen: "127.0.0.1:0",
    });
  });
  after(async () => {
    await mesh?.close();
  });

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
});
