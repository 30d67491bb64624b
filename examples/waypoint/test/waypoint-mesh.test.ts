import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import { type AddressInfo, createServer as createNetServer, type Server as NetServer } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  addressRecord,
  createDnsServer,
  type DnsServer,
  RecordType,
  ResponseCode,
  replyTo,
} from "@ambient/dns";
import { type SilentListener, silentListener } from "../../ztunnel/test/fixtures.js";
import type { RunningWaypoint } from "../src/index.js";
import {
  httpOverSocks,
  loopbackSubnet,
  shopWithWaypoint,
  socks5Dial,
  startTestMesh,
  type TestMesh,
  waitFor,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();

// The waypoint takes workload traffic too, so a pod can be bound to it (db-0 below).
const manifests = `
${shopWithWaypoint(ip(6)).replace(
  "metadata: { name: waypoint, namespace: shop }",
  "metadata: { name: waypoint, namespace: shop, labels: { istio.io/waypoint-for: all } }",
)}
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
apiVersion: v1
kind: Pod
metadata: { name: legacy-0, namespace: shop, labels: { app: legacy, istio.io/dataplane-mode: none } }
spec: { nodeName: node-b, serviceAccountName: legacy }
status: { podIP: ${ip(8)} }
---
apiVersion: v1
kind: Service
metadata: { name: legacy, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  clusterIP: ${ip(101)}
  selector: { app: legacy }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
---
apiVersion: v1
kind: Pod
metadata: { name: db-0, namespace: shop, labels: { app: db, istio.io/use-waypoint: waypoint } }
spec: { nodeName: node-b, serviceAccountName: db }
status: { podIP: ${ip(10)} }
---
apiVersion: v1
kind: Pod
metadata: { name: cache-0, namespace: shop, labels: { app: cache } }
spec: { nodeName: node-b, serviceAccountName: cache }
status: { podIP: ${ip(11)} }
---
apiVersion: v1
kind: Service
metadata: { name: cache, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec: { clusterIP: ${ip(103)}, selector: { app: cache }, ports: [{ name: redis, port: 6379 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: mysql-0, namespace: shop, labels: { app: mysql } }
spec: { nodeName: node-b, serviceAccountName: mysql }
status: { podIP: ${ip(12)} }
---
apiVersion: v1
kind: Pod
metadata: { name: mysql-1, namespace: shop, labels: { app: mysql, istio.io/use-waypoint: waypoint } }
spec: { nodeName: node-b, serviceAccountName: mysql }
status: { podIP: ${ip(13)} }
---
apiVersion: v1
kind: Service
metadata: { name: mysql, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec: { clusterIP: ${ip(104)}, selector: { app: mysql }, ports: [{ port: 3306, targetPort: 13306 }] }
---
apiVersion: v1
kind: Service
metadata: { name: external-db, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  clusterIP: ${ip(102)}
  ports: [{ name: http, port: 80, appProtocol: http }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: external-db-1, namespace: shop, labels: { kubernetes.io/service-name: external-db } }
addressType: IPv4
endpoints: [{ addresses: [${ip(9)}] }]
ports: [{ name: http, port: 8080, protocol: TCP }]
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

/**
 * A host outside the mesh behind the waypoint (Istio's egress pattern): a ServiceEntry bound to the
 * waypoint whose one endpoint is known by hostname (`localhost`, the one name every machine resolves).
 */
const externalEntry = (port: number) => `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: external-api, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  hosts: [api.external.test]
  addresses: [${ip(105)}]
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: ${port} }]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints: [{ address: localhost }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: external-api, namespace: shop }
spec:
  parentRefs: [{ group: networking.istio.io, kind: ServiceEntry, name: external-api }]
  rules:
    - matches: [{ path: { type: PathPrefix, value: /v2 } }]
      filters:
        - { type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: / } } }
        - { type: RequestHeaderModifier, requestHeaderModifier: { set: [{ name: x-egress, value: v2 }] } }
      backendRefs: [{ group: networking.istio.io, kind: Hostname, name: api.external.test, port: 80 }]
    - backendRefs: [{ group: networking.istio.io, kind: Hostname, name: api.external.test, port: 80 }]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: external-api-no-admin, namespace: shop }
spec:
  targetRefs: [{ group: networking.istio.io, kind: ServiceEntry, name: external-api }]
  action: DENY
  rules: [{ to: [{ operation: { paths: ["/admin"] } }] }]
`;

/**
 * A third host outside the mesh, whose endpoint's name only the test's own DNS server knows: the
 * waypoint must ask its resolvers (the `nameservers` option), not the system's.
 */
const namedEntry = (port: number) => `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: named-api, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  hosts: [api.named.test]
  addresses: [${ip(107)}]
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: ${port} }]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints: [{ address: backend.named.test }]
`;

/**
 * A TCP host outside the mesh whose server says its piece and half-closes before it reads the client's
 * upload (as a server of a request-reply protocol may after its greeting).
 */
const halfCloseEntry = (port: number) => `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: half-close, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  hosts: [half-close.external.test]
  addresses: [${ip(108)}]
  ports: [{ number: 9000, name: tcp, protocol: TCP, targetPort: ${port} }]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints: [{ address: localhost }]
`;

/** A second host outside the mesh, whose one endpoint never answers a connect (a firewall drops it). */
const silentEntry = (port: number) => `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: silent-api, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  hosts: [api.silent.test]
  addresses: [${ip(106)}]
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: ${port} }]
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints: [{ address: localhost }]
`;

/** One HTTP/1.1 GET to the api Service through a ztunnel's SOCKS5 port; resolves with the raw response text. */
function request(proxy: string, from: string, path: string): Promise<string> {
  return httpOverSocks(
    { proxy, from, to: `${ip(100)}:80` },
    `GET ${path} HTTP/1.1\r\nhost: api.shop\r\ncontent-length: 0\r\n\r\n`,
    { untilResponse: true },
  );
}

describe("waypoint in a mesh: control plane, two ztunnels, one waypoint", { timeout: 60_000 }, () => {
  let mesh: TestMesh;
  let waypoint: RunningWaypoint;
  let ztunnels: TestMesh["ztunnels"];
  let app: Server;
  let legacy: Server;
  let external: Server;
  let db: Server;
  let cache: NetServer;
  let mysql: NetServer;
  let mysqlPod: NetServer;
  let externalApi: Server;
  let silent: SilentListener | undefined;
  let dnsServer: DnsServer | undefined;
  let halfClose: NetServer | undefined;
  const halfCloseReceived: number[] = [];
  const asked: string[] = [];

  before(async () => {
    app = createServer((req, res) => {
      res.end(`api-0 got ${req.method} ${req.url}`);
    });
    app.listen(8080, ip(7));
    await once(app, "listening");
    // A pod outside the mesh (tunnel protocol NONE) behind a Service bound to the waypoint.
    legacy = createServer((req, res) => {
      res.end(`legacy-0 got ${req.method} ${req.url} from ${req.socket.remoteAddress}`);
    });
    legacy.listen(8080, ip(8));
    await once(legacy, "listening");
    // The endpoint of a Service without a selector, known from its EndpointSlice only.
    external = createServer((req, res) => {
      res.end(`external got ${req.method} ${req.url} from ${req.socket.remoteAddress}`);
    });
    external.listen(8080, ip(9));
    await once(external, "listening");
    // A pod bound to the waypoint itself, reached by its own address.
    db = createServer((req, res) => {
      res.end(`db-0 got ${req.method} ${req.url}`);
    });
    db.listen(8080, ip(10));
    await once(db, "listening");
    // A Service whose protocol is not HTTP (Redis), bound to the waypoint.
    cache = createNetServer((socket) => {
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => socket.write(`+PONG ${chunk.length}\r\n`));
    });
    cache.listen(6379, ip(11));
    await once(cache, "listening");
    // A server that speaks first (MySQL's greeting), on MySQL's well-known port: TCP without a name.
    mysql = createNetServer((socket) => {
      socket.on("error", () => {});
      socket.write("mysql greeting\n");
    });
    mysql.listen(13306, ip(12));
    await once(mysql, "listening");
    // Another MySQL pod, bound to the waypoint itself and reached by its own address.
    mysqlPod = createNetServer((socket) => {
      socket.on("error", () => {});
      socket.write("mysql-1 greeting\n");
    });
    mysqlPod.listen(13306, ip(13));
    await once(mysqlPod, "listening");
    // The external host's app, where `localhost` resolves.
    externalApi = createServer((req, res) => {
      const egress = req.headers["x-egress"];
      res.end(
        `external-api got ${req.method} ${req.url} for ${req.headers.host}${egress ? ` x-egress=${egress}` : ""}`,
      );
    });
    externalApi.listen(0, "127.0.0.1");
    await once(externalApi, "listening");
    silent = await silentListener("127.0.0.1");
    halfClose = createNetServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      let bytes = 0;
      socket.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
      });
      socket.on("end", () => halfCloseReceived.push(bytes));
      socket.end("hello, then quiet\n");
    });
    halfClose.listen(0, "127.0.0.1");
    await once(halfClose, "listening");
    dnsServer = createDnsServer({
      handler: ({ message }) => {
        const q = message.questions[0];
        asked.push(`${q?.name}/${q?.type}`);
        const known = q?.name.toLowerCase() === "backend.named.test" && q.type === RecordType.A;
        return replyTo(message, {
          authoritative: true,
          rcode: q?.name.toLowerCase() === "backend.named.test" ? 0 : ResponseCode.NXDOMAIN,
          answers: known ? [addressRecord(q.name, "127.0.0.1", 30)] : [],
        });
      },
    });
    const dns = await dnsServer.listen({ host: "127.0.0.1", port: 0 });
    mesh = await startTestMesh({
      manifests:
        manifests +
        externalEntry((externalApi.address() as AddressInfo).port) +
        silentEntry(silent.port) +
        namedEntry((externalApi.address() as AddressInfo).port) +
        halfCloseEntry((halfClose.address() as AddressInfo).port),
      tempPrefix: "waypoint-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        connectTimeoutMs: 500,
        nameservers: [{ address: "127.0.0.1", port: dns.port }],
      },
    });
    ({ waypoint, ztunnels } = mesh);
  });

  after(async () => {
    await mesh?.close();
    app?.close();
    legacy?.close();
    external?.close();
    db?.close();
    cache?.close();
    mysql?.close();
    mysqlPod?.close();
    externalApi?.close();
    await silent?.close();
    await dnsServer?.close();
    halfClose?.close();
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

  it("sends traffic addressed to a pod bound to it through it, with its policies", async () => {
    const rows = (from: string) =>
      httpOverSocks(
        { proxy: ztunnels[0]?.addresses.socks5 ?? "", from, to: `${ip(10)}:8080` },
        "GET /rows HTTP/1.1\r\nhost: db-0\r\ncontent-length: 0\r\n\r\n",
        { untilResponse: true },
      );
    const allowed = await rows(ip(2));
    assert.match(allowed, /^HTTP\/1\.1 200 /);
    assert.ok(allowed.endsWith("db-0 got GET /rows"), allowed);
    // The waypoint's policy admits the client only: another pod is refused there, not let around it.
    assert.match(await rows(ip(3)), /^HTTP\/1\.1 403 /);
  });

  it("carries what is not HTTP as TCP under its L4 policy", async () => {
    const ping = async (from: string) => {
      const c = await socks5Dial({ proxy: ztunnels[0]?.addresses.socks5 ?? "", from, to: `${ip(103)}:6379` });
      const closed = once(c.socket, "close");
      c.socket.on("data", () => {
        if (c.text().endsWith("\r\n")) c.socket.end();
      });
      c.socket.write("*1\r\n$4\r\nPING\r\n");
      // A refused connection is reset, which is how it ends.
      await closed.catch(() => {});
      return c.text();
    };
    assert.equal(await ping(ip(2)), "+PONG 14\r\n");
    // The waypoint's policy admits the client only.
    assert.equal(await ping(ip(3)), "");
    // Both are in Istio's TCP metrics, the refusal without a flag as behind Envoy's network RBAC
    // filter (which sets none); the bytes of the one carried.
    const lines = (await waypoint.metricsText()).split("\n");
    const series = (name: string, source: string) =>
      lines.filter(
        (l) =>
          l.startsWith(`${name}{`) &&
          l.includes('reporter="waypoint"') &&
          l.includes('request_protocol="tcp"') &&
          l.includes(`source_workload="${source}"`),
      );
    assert.equal(series("istio_tcp_connections_opened_total", "client").length, 1, lines.join("\n"));
    assert.match(series("istio_tcp_connections_closed_total", "client")[0] ?? "", / 1$/);
    assert.match(series("istio_tcp_received_bytes_total", "client")[0] ?? "", / 14$/);
    assert.match(series("istio_tcp_sent_bytes_total", "client")[0] ?? "", / 10$/);
    const refused = series("istio_tcp_connections_closed_total", "other")[0] ?? "";
    assert.match(refused, / 1$/, lines.join("\n"));
    assert.match(refused, /response_flags="-"/);
    assert.ok(series("istio_tcp_connections_closed_total", "client")[0]?.includes('response_flags="-"'));
  });

  it("carries a port declared TCP from the start, so a server that speaks first is heard", async () => {
    const c = await socks5Dial({
      proxy: ztunnels[0]?.addresses.socks5 ?? "",
      from: ip(2),
      to: `${ip(104)}:3306`,
    });
    const closed = once(c.socket, "close");
    c.socket.on("data", () => {
      if (c.text().endsWith("\n")) c.socket.destroy();
    });
    await closed;
    // Either MySQL pod: both back the Service.
    assert.match(c.text(), /^mysql(-1)? greeting\n$/);
  });

  it("carries a pod's own port declared TCP by its Service from the start, through its waypoint", async () => {
    const c = await socks5Dial({
      proxy: ztunnels[0]?.addresses.socks5 ?? "",
      from: ip(2),
      to: `${ip(13)}:13306`,
    });
    const closed = once(c.socket, "close");
    c.socket.on("data", () => {
      if (c.text().endsWith("\n")) c.socket.destroy();
    });
    // A waypoint waiting for the client's first bytes would never let the greeting through.
    const deadline = setTimeout(() => c.socket.destroy(), 5000);
    await closed;
    clearTimeout(deadline);
    assert.equal(c.text(), "mysql-1 greeting\n");
    // Carried by the waypoint (directly, the greeting would be heard anyway).
    const carried = (await waypoint.metricsText())
      .split("\n")
      .filter(
        (l) =>
          l.startsWith("istio_tcp_connections_opened_total{") &&
          l.includes('reporter="waypoint"') &&
          l.includes('destination_workload="mysql-1"'),
      );
    assert.equal(carried.length, 1, "the waypoint counted the connection");
  });

  it("carries a client's upload to a TCP server that half-closed first", async () => {
    const c = await socks5Dial({
      proxy: ztunnels[0]?.addresses.socks5 ?? "",
      from: ip(2),
      to: `${ip(108)}:9000`,
    });
    const closed = once(c.socket, "close");
    // The server half-closes as it accepts; the upload is still on its way through the mesh then.
    const upload = Buffer.alloc(1024 * 1024, 7);
    c.socket.end(upload);
    await closed;
    assert.equal(c.text(), "hello, then quiet\n");
    await waitFor(() => halfCloseReceived.length > 0);
    assert.deepEqual(halfCloseReceived, [upload.length]);
  });

  it("looks up an endpoint's hostname with its resolvers, once per TTL", async () => {
    const send = () =>
      httpOverSocks(
        { proxy: ztunnels[0]?.addresses.socks5 ?? "", from: ip(2), to: `${ip(107)}:80` },
        "GET /named HTTP/1.1\r\nhost: api.named.test\r\ncontent-length: 0\r\n\r\n",
        { untilResponse: true },
      );
    for (let i = 0; i < 2; i++) {
      const text = await send();
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.ok(text.endsWith("external-api got GET /named for api.named.test"), text);
    }
    assert.deepEqual(
      asked.filter((q) => q.startsWith("backend.named.test")),
      ["backend.named.test/1"],
    );
  });

  it("takes a ServiceEntry host bound to it to the address its endpoint's hostname resolves to", async () => {
    const send = (from: string, path = "/status") =>
      httpOverSocks(
        { proxy: ztunnels[0]?.addresses.socks5 ?? "", from, to: `${ip(105)}:80` },
        `GET ${path} HTTP/1.1\r\nhost: api.external.test\r\ncontent-length: 0\r\n\r\n`,
        { untilResponse: true },
      );
    const text = await send(ip(2));
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(text.endsWith("external-api got GET /status for api.external.test"), text);
    // The waypoint's policies apply to it, a policy attached to the ServiceEntry too, and its metrics
    // name the host.
    assert.match(await send(ip(3)), /^HTTP\/1\.1 403 /);
    assert.match(await send(ip(2), "/admin"), /^HTTP\/1\.1 403 /);
    // An HTTPRoute attached to the ServiceEntry (served by the control plane over RDS) routes and
    // rewrites its requests.
    const routed = await send(ip(2), "/v2/status");
    assert.ok(routed.endsWith("external-api got GET /status for api.external.test x-egress=v2"), routed);
    const lines = (await waypoint.metricsText()).split("\n");
    assert.ok(
      lines.some(
        (l) =>
          l.startsWith("istio_requests_total{") &&
          l.includes('destination_service="api.external.test"') &&
          l.includes('response_code="200"'),
      ),
      lines.filter((l) => l.startsWith("istio_requests_total{")).join("\n"),
    );
  });

  it("answers 503 once its connect deadline passed for a backend that never answers", async () => {
    const started = performance.now();
    const text = await httpOverSocks(
      { proxy: ztunnels[0]?.addresses.socks5 ?? "", from: ip(2), to: `${ip(106)}:80` },
      "GET / HTTP/1.1\r\nhost: api.silent.test\r\ncontent-length: 0\r\n\r\n",
      { untilResponse: true },
    );
    assert.match(text, /^HTTP\/1\.1 503 /);
    const tookMs = performance.now() - started;
    assert.ok(tookMs >= 400 && tookMs < 5000, `answered after ${Math.round(tookMs)} ms`);
  });

  it("reaches the EndpointSlice endpoint of a Service without a selector in plaintext", async () => {
    const text = await httpOverSocks(
      { proxy: ztunnels[0]?.addresses.socks5 ?? "", from: ip(2), to: `${ip(102)}:80` },
      "GET /rows HTTP/1.1\r\nhost: external-db.shop\r\ncontent-length: 0\r\n\r\n",
      { untilResponse: true },
    );
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(text.endsWith(`external got GET /rows from ${ip(6)}`), text);
  });

  it("reaches a pod outside the mesh behind a Service in plaintext, from the waypoint's address", async () => {
    const text = await httpOverSocks(
      { proxy: ztunnels[0]?.addresses.socks5 ?? "", from: ip(2), to: `${ip(101)}:80` },
      "GET /old HTTP/1.1\r\nhost: legacy.shop\r\ncontent-length: 0\r\n\r\n",
      { untilResponse: true },
    );
    assert.match(text, /^HTTP\/1\.1 200 /);
    assert.ok(text.endsWith(`legacy-0 got GET /old from ${ip(6)}`), text);
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
