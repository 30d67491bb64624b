// The waypoint follows the control plane live: a route edit and a policy edit in the manifest folder
// reach requests on a connection that stays open; a broken edit changes nothing; and a tunnel for a
// Service not bound to the waypoint is refused. The time from the file write to the first request
// served by the edit is reported (a test diagnostic), not asserted: this process runs the control plane,
// two ztunnels and the waypoint on a shared machine. It is about 250 ms on an idle one (the control
// plane's 100 ms file debounce plus its 100 ms push debounce).
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { controlPlaneChannel } from "@ambient/example-ztunnel";
import { createHboneClient, HboneError } from "@ambient/hbone";
import { createCertificateServiceClient, SecretManager } from "@ambient/spiffe/ca";
import {
  loopbackSubnet,
  type SocksConnection,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();

const ROUTE = (prefix: string) => `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: api, port: 80 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v1 } }]
      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: ${prefix} } } }]
      backendRefs: [{ name: api, port: 80 }]
`;

const POLICY = (methods: string) => `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: api-client-only, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }], to: [{ operation: { methods: [${methods}] } }] }]
`;

const BASE = `
${shopWithWaypoint(ip(6))}
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { nodeName: node-a, serviceAccountName: client }
status: { podIP: ${ip(2)} }
---
apiVersion: v1
kind: Pod
metadata: { name: api-0, namespace: shop, labels: { app: api } }
spec: { nodeName: node-b, serviceAccountName: api }
status: { podIP: ${ip(7)} }
---
apiVersion: v1
kind: Service
metadata: { name: api, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  clusterIP: ${ip(100)}
  selector: { app: api }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
---
# The same pods behind a Service that is not bound to the waypoint.
apiVersion: v1
kind: Service
metadata: { name: api-direct, namespace: shop }
spec:
  clusterIP: ${ip(101)}
  selector: { app: api }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
`;

/** HTTP/1.1 requests one after the other on one connection (kept alive) through the ztunnel. */
function keptAlive(c: SocksConnection) {
  let offset = 0;
  return async (method: string, path: string): Promise<{ status: number; body: string }> => {
    c.socket.write(`${method} ${path} HTTP/1.1\r\nhost: api.shop\r\ncontent-length: 0\r\n\r\n`);
    const end = Date.now() + 10_000;
    for (;;) {
      const text = c.text().slice(offset);
      const head = text.indexOf("\r\n\r\n");
      const length = /content-length: (\d+)\r\n/i.exec(text.slice(0, head + 2));
      if (head !== -1 && length !== null && text.length - head - 4 >= Number(length[1])) {
        const total = head + 4 + Number(length[1]);
        offset += total;
        assert.doesNotMatch(text.slice(0, head), /connection: close/i, "the connection must stay open");
        return { status: Number(text.slice(9, 12)), body: text.slice(head + 4, total) };
      }
      if (Date.now() > end || c.socket.destroyed)
        throw new Error(`no response on the kept-alive connection: ${text}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
}

describe("the waypoint follows the control plane live", { timeout: 120_000 }, () => {
  let mesh: TestMesh;
  let app: Server;
  let conn: SocksConnection;
  let send: ReturnType<typeof keptAlive>;
  const write = (route: string, policy: string) =>
    writeFile(join(mesh.dir, "mesh.yaml"), [BASE, route, policy].join("\n---\n"));

  /** Sends on the kept-alive connection until `done` holds (10 s at most); the time from `since` to that answer, in ms. */
  async function until(
    since: number,
    method: string,
    path: string,
    done: (r: { status: number; body: string }) => boolean,
  ): Promise<number> {
    for (;;) {
      const r = await send(method, path);
      if (done(r)) return Date.now() - since;
      if (Date.now() - since > 10_000) throw new Error(`still ${r.status} ${r.body}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  before(async () => {
    app = createServer((req, res) => {
      req.resume();
      res.end(`api-0 got ${req.method} ${req.url}`);
    });
    app.listen(8080, ip(7));
    await once(app, "listening");
    mesh = await startTestMesh({
      manifests: [BASE, ROUTE("/internal"), POLICY("GET")].join("\n---\n"),
      tempPrefix: "waypoint-live-",
      nodeIps: [ip(200), ip(201)],
      // The control plane watches the folder, as in the demo (default debounces: 100 ms each).
      controlPlane: { podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: { gateway: { name: "waypoint", namespace: "shop" }, ip: ip(6) },
    });
    conn = await socks5Dial({ proxy: mesh.socks5, from: ip(2), to: `${ip(100)}:80` });
    send = keptAlive(conn);
  });

  after(async () => {
    conn?.socket.destroy();
    await mesh?.close();
    app?.close();
  });

  it("starts from the manifests: the rewrite, and GET only", async () => {
    assert.deepEqual(await send("GET", "/v1/a"), { status: 200, body: "api-0 got GET /internal/a" });
    assert.deepEqual(await send("POST", "/v1/a"), { status: 403, body: "RBAC: access denied" });
  });

  it("applies an HTTPRoute edit to the next requests on the open connection", async (t) => {
    const since = Date.now();
    await write(ROUTE("/edited"), POLICY("GET"));
    const ms = await until(since, "GET", "/v1/a", (r) => r.body === "api-0 got GET /edited/a");
    t.diagnostic(`route edit in force after ${ms} ms`);
  });

  it("applies an AuthorizationPolicy edit the same way", async (t) => {
    const since = Date.now();
    await write(ROUTE("/edited"), POLICY("GET, POST"));
    const ms = await until(since, "POST", "/v1/a", (r) => r.status === 200);
    t.diagnostic(`policy edit in force after ${ms} ms`);
    assert.deepEqual(await send("POST", "/v1/b"), { status: 200, body: "api-0 got POST /edited/b" });
  });

  it("keeps the last good route and policy through a broken edit", async () => {
    const before = mesh.waypoint.configGeneration();
    // Both documents are broken: an unsafe regex and an unknown action.
    await writeFile(
      join(mesh.dir, "mesh.yaml"),
      [
        BASE,
        ROUTE("/edited").replace(
          "type: PathPrefix, value: /v1",
          'type: RegularExpression, value: "(?:a{2}){600}"',
        ),
        POLICY("GET, POST").replace("targetRefs:", "action: MAYBE\n  targetRefs:"),
      ].join("\n---\n"),
    );
    await mesh.controlPlane.reload();
    assert.ok(mesh.controlPlane.errors().length > 0, "the control plane reports the broken edit");
    // Well past both debounces: nothing changed at the waypoint.
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(mesh.waypoint.configGeneration(), before);
    assert.deepEqual(await send("POST", "/v1/c"), { status: 200, body: "api-0 got POST /edited/c" });
    assert.equal((await readFile(join(mesh.dir, "mesh.yaml"), "utf8")).includes("MAYBE"), true);
  });

  it("refuses a tunnel for a Service VIP not bound to it, and accepts one for its own", async () => {
    const cp = mesh.controlPlane;
    const caClient = createCertificateServiceClient({
      address: cp.address,
      ...controlPlaneChannel(cp.rootCertPem),
      token: await cp.tokenFor("node-a"),
      clusterId: "Kubernetes",
    });
    const secrets = new SecretManager({ client: caClient, impersonate: true });
    const svid = await secrets.fetch("spiffe://cluster.local/ns/shop/sa/client");
    const credentials = {
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: cp.rootCertPem,
    };
    const hbone = createHboneClient(credentials);
    try {
      const tunnel = (vip: string) =>
        hbone.connect({
          address: mesh.waypoint.address,
          authority: `${vip}:80`,
          expectedIdentities: [mesh.waypoint.identity],
          sourceAddress: ip(2),
          credentials,
        });
      await assert.rejects(tunnel(ip(101)), (err: unknown) => {
        assert.ok(err instanceof HboneError, String(err));
        assert.equal(err.code, "ERR_HBONE_REFUSED");
        assert.equal(err.status, 400);
        return true;
      });
      const own = await tunnel(ip(100));
      own.destroy();
    } finally {
      hbone.destroy();
      secrets.close();
      caClient.close();
    }
  });
});
