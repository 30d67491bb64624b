import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type ControlPlane, startControlPlane } from "@ambient/example-control-plane";
import {
  encodeGreeting,
  encodeRequest,
  parseReply,
  type RunningZtunnel,
  startZtunnel,
} from "@ambient/example-ztunnel";
import { type RunningWaypoint, startWaypoint } from "../src/index.js";

// A fresh 127.x.y.0/24 per run, so this never shares an address with another suite.
const base = `127.${40 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 256)}`;
const ip = (n: number) => `${base}.${n}`;

const mesh = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: shop }
spec: { gatewayClassName: istio-waypoint }
status: { addresses: [{ type: IPAddress, value: ${ip(6)} }] }
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: shop
  labels: { gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none }
spec: { nodeName: node-a, serviceAccountName: waypoint }
status: { podIP: ${ip(6)} }
---
apiVersion: v1
kind: Pod
metadata: { name: client, namespace: shop, labels: { app: client } }
spec: { nodeName: node-a, serviceAccountName: client }
status: { podIP: ${ip(2)} }
---
apiVersion: v1
kind: Pod
metadata: { name: other, namespace: shop, labels: { app: other } }
spec: { nodeName: node-a, serviceAccountName: other }
status: { podIP: ${ip(3)} }
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
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api, namespace: shop }
spec:
  parentRefs: [{ group: "", kind: Service, name: api, port: 80 }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v1 } }]
      filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /internal } } }]
      backendRefs: [{ name: api, port: 80 }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: api-client-only, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  rules: [{ from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }] }]
`;

/** One HTTP/1.1 request through a ztunnel's SOCKS5 port; resolves with the raw response text. */
async function request(proxy: string, from: string, path: string): Promise<string> {
  const [h, p] = proxy.split(":");
  const socket = connect({ host: h, port: Number(p), localAddress: from, allowHalfOpen: true });
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(ip(100), 80));
  let buffered = Buffer.alloc(0);
  let connected = false;
  let text = "";
  socket.on("data", (chunk: Buffer) => {
    if (connected) {
      text += chunk.toString();
    } else {
      buffered = Buffer.concat([buffered, chunk]);
      const parsed = buffered.length < 2 ? undefined : parseReply(buffered.subarray(2));
      if (parsed === undefined) return;
      connected = true;
      if (parsed.reply !== 0) {
        socket.end();
        return;
      }
      text += buffered.subarray(2 + parsed.length).toString();
      socket.write(`GET ${path} HTTP/1.1\r\nhost: api.shop\r\ncontent-length: 0\r\n\r\n`);
    }
    const length = /content-length: (\d+)\r\n/i.exec(text);
    const end = text.indexOf("\r\n\r\n");
    if (length && end !== -1 && text.length - end - 4 >= Number(length[1])) socket.end();
  });
  socket.on("error", () => {});
  await once(socket, "close");
  return text;
}

describe("waypoint in a mesh: control plane, two ztunnels, one waypoint", { timeout: 60_000 }, () => {
  let dir: string;
  let cp: ControlPlane;
  const ztunnels: RunningZtunnel[] = [];
  let waypoint: RunningWaypoint;
  let app: Server;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "waypoint-"));
    await writeFile(join(dir, "mesh.yaml"), mesh);
    cp = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      watch: false,
      podCidrs: [`${base}.0/24`],
    });
    app = createServer((req, res) => {
      res.end(`api-0 got ${req.method} ${req.url}`);
    });
    app.listen(8080, ip(7));
    await once(app, "listening");
    for (const [i, node] of ["node-a", "node-b"].entries()) {
      const z = await startZtunnel({
        nodeName: node,
        nodeIp: ip(200 + i),
        controlPlaneAddress: cp.address,
        rootCertPem: cp.rootCertPem,
        token: await cp.tokenFor(node),
        ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      });
      ztunnels.push(z);
    }
    waypoint = await startWaypoint({
      gateway: { name: "waypoint", namespace: "shop" },
      ip: ip(6),
      nodeName: "node-a",
      token: await cp.tokenFor("node-a"),
      rootCertPem: cp.rootCertPem,
      controlPlaneAddress: cp.address,
      meshDir: dir,
    });
    await Promise.all([...ztunnels.map((z) => z.ready), waypoint.ready]);
  });

  after(async () => {
    await waypoint?.close();
    await Promise.all(ztunnels.map((z) => z.close()));
    await cp?.close();
    app?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("holds the waypoint identity from the CA", () => {
    assert.equal(waypoint.identity, "spiffe://cluster.local/ns/shop/sa/waypoint");
    assert.equal(waypoint.address, `${ip(6)}:15008`);
  });

  it("routes and rewrites the allowed client's request per the HTTPRoute", async () => {
    const text = await request(ztunnels[0]?.addresses.socks5 ?? "", ip(2), "/v1/items");
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(text.endsWith("api-0 got GET /internal/items"), text);
  });

  it("answers 404 for a path no rule matches", async () => {
    const text = await request(ztunnels[0]?.addresses.socks5 ?? "", ip(2), "/other");
    assert.match(text, /^HTTP\/1\.1 404 /);
  });

  it("refuses another identity with 403 RBAC: access denied", async () => {
    const text = await request(ztunnels[0]?.addresses.socks5 ?? "", ip(3), "/v1/items");
    assert.match(text, /^HTTP\/1\.1 403 /);
    assert.ok(text.endsWith("RBAC: access denied"), text);
  });

  it("counts requests in Istio's request metrics", async () => {
    const text = await waypoint.metricsText();
    assert.match(text, /istio_requests_total\{[^}]*response_code="200"/);
    assert.match(text, /istio_requests_total\{[^}]*response_code="403"/);
  });
});
