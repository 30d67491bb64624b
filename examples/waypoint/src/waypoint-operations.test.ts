// The waypoint's operator surface and RequestAuthentication over real HBONE: a client pod's bytes enter
// its ztunnel's SOCKS5 port, travel an HBONE tunnel to the waypoint, and leave over HBONE to the pod.
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFile, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { pino } from "pino";
import {
  httpOverSocks,
  loopbackSubnet,
  shopWithWaypoint,
  startTestMesh,
  type TestMesh,
  waitFor,
} from "../test/mesh-fixture.js";
import { WaypointError } from "./errors.js";
import { type RunningWaypoint, startWaypoint } from "./index.js";

const { cidr, ip } = loopbackSubnet();
const CLIENT = "spiffe://cluster.local/ns/shop/sa/client";
const WAYPOINT = "spiffe://cluster.local/ns/shop/sa/waypoint";
const ISSUER_A = "https://a.example.test";
const ISSUER_B = "https://b.example.test";

const pod = (name: string, app: string, node: string, sa: string, n: number) => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: shop, labels: { app: ${app} } }
spec: { nodeName: ${node}, serviceAccountName: ${sa} }
status: { podIP: ${ip(n)} }
`;

function meshYaml(jwksA: string, jwksUriB: string): string {
  return [
    shopWithWaypoint(ip(6)),
    pod("client", "client", "node-a", "client", 2),
    pod("api-0", "api", "node-b", "api", 7),
    `
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
  rules: [{ backendRefs: [{ name: api, port: 80 }] }]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: issuer-a, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  jwtRules:
    - issuer: ${ISSUER_A}
      audiences: [api]
      jwks: '${jwksA}'
      outputPayloadToHeader: x-jwt-payload
      outputClaimToHeaders: [{ header: x-user, claim: sub }]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: issuer-b, namespace: shop }
spec:
  targetRefs: [{ group: "", kind: Service, name: api }]
  jwtRules:
    - issuer: ${ISSUER_B}
      jwksUri: ${jwksUriB}
      fromHeaders: [{ name: x-jwt }]
      forwardOriginalToken: true
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: members, namespace: shop }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]
  rules:
    - to: [{ operation: { notPaths: ["/members", "/members/*", "/admin"] } }]
    - from: [{ source: { requestPrincipals: ["${ISSUER_A}/alice", "${ISSUER_B}/*"] } }]
      to: [{ operation: { paths: ["/members", "/members/*"] } }]
      when: [{ key: "request.auth.claims[groups]", values: [dev] }]
    - to: [{ operation: { paths: ["/admin"] } }]
      when: [{ key: "request.headers[x-user]", values: [admin] }]
`,
  ].join("\n---\n");
}

/** Writes `data` from the client pod to the api Service VIP; resolves with everything received once the connection closes. */
const exchange = (proxy: string, data: string) =>
  httpOverSocks({ proxy, from: ip(2), to: `${ip(100)}:80` }, data);

async function httpGet(
  address: string,
  path: string,
): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(`http://${address}${path}`);
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: await res.text() };
}

describe("waypoint operator endpoints, access log and RequestAuthentication", { timeout: 120_000 }, () => {
  let mesh: TestMesh;
  let dir: string;
  let cp: TestMesh["controlPlane"];
  let waypoint: RunningWaypoint;
  let app: Server;
  let jwksServer: Server;
  let jwksFetches = 0;
  const seen: { url: string; authorization: string; xJwt: string }[] = [];
  const identityHeaders: { user: string; payload: string }[] = [];
  const logLines: Record<string, unknown>[] = [];
  let socks = "";
  let keyA: CryptoKey;
  let otherKey: CryptoKey;
  let keyB: CryptoKey;

  const token = (
    key: CryptoKey,
    claims: Record<string, unknown>,
    opts: { iss?: string; aud?: string; exp?: string | number; kid?: string } = {},
  ) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "ES256", kid: opts.kid ?? "a1" })
      .setIssuer(opts.iss ?? ISSUER_A)
      .setSubject(String(claims.sub ?? "alice"))
      .setAudience(opts.aud ?? "api")
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? "10m")
      .sign(key);

  before(async () => {
    const a = await generateKeyPair("ES256");
    const b = await generateKeyPair("ES256");
    keyA = a.privateKey;
    keyB = b.privateKey;
    otherKey = (await generateKeyPair("ES256")).privateKey;
    const jwk = async (k: CryptoKey, kid: string): Promise<JWK> => ({
      ...(await exportJWK(k)),
      kid,
      alg: "ES256",
    });
    const jwksA = JSON.stringify({ keys: [await jwk(a.publicKey, "a1")] });
    const jwksB = JSON.stringify({ keys: [await jwk(b.publicKey, "b1")] });
    jwksServer = createServer((_req, res) => {
      jwksFetches++;
      res.writeHead(200, { "content-type": "application/json" }).end(jwksB);
    });
    jwksServer.listen(0, "127.0.0.1");
    await once(jwksServer, "listening");
    const jwksPort = (jwksServer.address() as { port: number }).port;

    app = createServer((req: IncomingMessage, res) => {
      seen.push({
        url: req.url ?? "",
        authorization: String(req.headers.authorization ?? "-"),
        xJwt: String(req.headers["x-jwt"] ?? "-"),
      });
      identityHeaders.push({
        user: String(req.headers["x-user"] ?? "-"),
        payload: String(req.headers["x-jwt-payload"] ?? "-"),
      });
      req.resume();
      res.end(`api got ${req.url}`);
    });
    app.listen(8080, ip(7));
    await once(app, "listening");
    const logger = pino({ level: "info" }, { write: (line: string) => logLines.push(JSON.parse(line)) });
    mesh = await startTestMesh({
      manifests: meshYaml(jwksA, `http://127.0.0.1:${jwksPort}/jwks.json`),
      tempPrefix: "waypoint-operations-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        ports: { admin: 0, metrics: 0, readiness: 0 },
        logger,
      },
    });
    ({ dir, controlPlane: cp, waypoint, socks5: socks } = mesh);
  });

  after(async () => {
    await mesh?.close();
    app?.closeAllConnections();
    app?.close();
    jwksServer?.closeAllConnections();
    jwksServer?.close();
  });

  const get = async (path: string, extra = "") => {
    const text = await exchange(
      socks,
      `GET ${path} HTTP/1.1\r\nhost: api.shop\r\nconnection: close\r\n${extra}\r\n`,
    );
    return Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0);
  };
  const bearer = (t: string) => `authorization: Bearer ${t}\r\n`;

  it("binds readiness and metrics on the waypoint's address and admin on a loopback address", () => {
    assert.match(waypoint.operatorAddresses.readiness, new RegExp(`^${ip(6).replaceAll(".", "\\.")}:\\d+$`));
    assert.match(waypoint.operatorAddresses.metrics, new RegExp(`^${ip(6).replaceAll(".", "\\.")}:\\d+$`));
    assert.match(waypoint.operatorAddresses.admin, /^127\.\d+\.\d+\.\d+:\d+$/);
  });

  it("answers ready once the certificate and configuration are in, 404 elsewhere", async () => {
    const ready = await httpGet(waypoint.operatorAddresses.readiness, "/healthz/ready");
    assert.deepEqual([ready.status, ready.body], [200, "ready\n"]);
    assert.equal((await httpGet(waypoint.operatorAddresses.readiness, "/metrics")).status, 404);
  });

  it("passes a request without a token unauthenticated: open paths 200, requestPrincipals paths 403", async () => {
    assert.equal(await get("/open"), 200);
    assert.equal(await get("/members"), 403);
    assert.equal(await get("/open", "authorization: Basic dXNlcjpwdw==\r\n"), 200);
  });

  it("feeds a verified token's principal and claims to L7 policy and drops the token upstream", async () => {
    const before = seen.length;
    assert.equal(await get("/members", bearer(await token(keyA, { sub: "alice", groups: ["dev"] }))), 200);
    assert.deepEqual(seen.slice(before), [{ url: "/members", authorization: "-", xJwt: "-" }]);
    assert.equal(await get("/members", bearer(await token(keyA, { sub: "alice", groups: ["ops"] }))), 403);
    assert.equal(await get("/members", bearer(await token(keyA, { sub: "bob", groups: ["dev"] }))), 403);
    const param = await token(keyA, { sub: "alice", groups: ["dev"] });
    assert.equal(await get(`/members?access_token=${param}`), 200);
  });

  it("removes client-set output headers before policy and the backend, and sets them from a verified token", async () => {
    const spoofed = "x-user: admin\r\nx-jwt-payload: eyJzdWIiOiJhZG1pbiJ9\r\n";
    // An anonymous client cannot claim the identity policy reads from the header.
    assert.equal(await get("/admin", spoofed), 403);
    let before = identityHeaders.length;
    assert.equal(await get("/open", spoofed), 200);
    assert.deepEqual(identityHeaders.slice(before), [{ user: "-", payload: "-" }]);
    // alice's token gives alice's values, whatever the client sent.
    const alice = await token(keyA, { sub: "alice" });
    assert.equal(await get("/admin", `${spoofed}${bearer(alice)}`), 403);
    before = identityHeaders.length;
    assert.equal(await get("/open", `${spoofed}${bearer(alice)}`), 200);
    assert.deepEqual(identityHeaders.slice(before), [{ user: "alice", payload: alice.split(".")[1] }]);
    const admin = await token(keyA, { sub: "admin" });
    assert.equal(await get("/admin", bearer(admin)), 200);
  });

  it("answers 401 to a bad token and never forwards the request", async () => {
    const before = seen.length;
    const cases = [
      await token(otherKey, { sub: "alice", groups: ["dev"] }),
      await token(keyA, { sub: "alice" }, { aud: "other" }),
      await token(keyA, { sub: "alice" }, { exp: Math.floor(Date.now() / 1000) - 3600 }),
      await token(keyA, { sub: "alice" }, { iss: "https://unknown.example.test" }),
      "not-a-jwt",
    ];
    for (const t of cases) assert.equal(await get("/open", bearer(t)), 401, t);
    assert.equal(seen.length, before);
  });

  it("verifies a token in a custom header against keys fetched from jwksUri, for the Service it targets", async () => {
    const before = seen.length;
    const t = await token(keyB, { sub: "carol", groups: ["dev"] }, { iss: ISSUER_B, kid: "b1" });
    assert.equal(await get("/members", `x-jwt: ${t}\r\n`), 200);
    assert.ok(jwksFetches >= 1);
    // forwardOriginalToken: true keeps the header.
    assert.deepEqual(seen.slice(before), [{ url: "/members", authorization: "-", xJwt: t }]);
    const forged = await token(keyA, { sub: "carol", groups: ["dev"] }, { iss: ISSUER_B, kid: "b1" });
    assert.equal(await get("/members", `x-jwt: ${forged}\r\n`), 401);
  });

  it("writes one access log line per request with Istio's fields at info level", async () => {
    logLines.length = 0;
    const t = await token(keyA, { sub: "alice", groups: ["dev"] });
    assert.equal(
      await get(
        "/members?q=1",
        `${bearer(t)}user-agent: probe/2\r\nx-request-id: rid-7\r\nx-forwarded-for: 192.0.2.9\r\n`,
      ),
      200,
    );
    assert.equal(await get("/members"), 403);
    await waitFor(() => logLines.filter((l) => l.msg === "access").length >= 2);
    const access = logLines.filter((l) => l.msg === "access");
    assert.equal(access.length, 2);
    const [ok, denied] = access as [Record<string, unknown>, Record<string, unknown>];
    assert.equal(ok.level, 30);
    assert.match(String(ok.start_time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(typeof ok.duration, "number");
    assert.deepEqual(
      {
        method: ok.method,
        path: ok.path,
        protocol: ok.protocol,
        response_code: ok.response_code,
        response_flags: ok.response_flags,
        bytes_received: ok.bytes_received,
        bytes_sent: ok.bytes_sent,
        x_forwarded_for: ok.x_forwarded_for,
        user_agent: ok.user_agent,
        request_id: ok.request_id,
        authority: ok.authority,
        upstream_host: ok.upstream_host,
        upstream_cluster: ok.upstream_cluster,
        route_name: ok.route_name,
        source_principal: ok.source_principal,
        destination_principal: ok.destination_principal,
        request_principal: ok.request_principal,
        downstream_local_address: ok.downstream_local_address,
      },
      {
        method: "GET",
        path: "/members?q=1",
        protocol: "HTTP/1.1",
        response_code: 200,
        response_flags: "-",
        bytes_received: 0,
        bytes_sent: "api got /members?q=1".length,
        x_forwarded_for: "192.0.2.9",
        user_agent: "probe/2",
        request_id: "rid-7",
        authority: "api.shop",
        upstream_host: `${ip(7)}:8080`,
        upstream_cluster: "outbound|80||api.shop.svc.cluster.local",
        // The Envoy route's name from RDS: <namespace>.<route>.<rule>.<match>.
        route_name: "shop.api.0.0",
        source_principal: CLIENT,
        destination_principal: "spiffe://cluster.local/ns/shop/sa/api",
        request_principal: `${ISSUER_A}/alice`,
        downstream_local_address: `${ip(100)}:80`,
      },
    );
    // As Envoy logs an RBAC denial: no response flag, the reason in the response code details (no
    // rule of the one ALLOW policy matched, so none is named).
    assert.deepEqual(
      [
        denied.response_code,
        denied.response_flags,
        denied.response_code_details,
        denied.connection_termination_details,
        denied.upstream_host,
        denied.request_principal,
      ],
      [403, "-", "rbac_access_denied_matched_policy[none]", "-", "-", "-"],
    );
    assert.deepEqual([ok.response_code_details, ok.connection_termination_details], ["via_upstream", "-"]);
    // The policy that decided each: rule 1 allowed alice; no rule of the one ALLOW policy allowed the
    // anonymous request, so that policy refused it.
    assert.deepEqual(ok.authorization, {
      result: "allowed",
      policy: "shop/members",
      action: "ALLOW",
      rule: 1,
    });
    assert.deepEqual(denied.authorization, { result: "denied", policy: "shop/members", action: "ALLOW" });
  });

  it("serves the requests of the last minute with their deciding policy on the admin /recent_requests", async () => {
    assert.equal(await get("/open?probe=recent"), 200);
    assert.equal(await get("/members?probe=recent"), 403);
    const res = await httpGet(waypoint.operatorAddresses.admin, "/recent_requests");
    assert.equal(res.status, 200);
    assert.match(res.type, /^application\/json/);
    const body = JSON.parse(res.body) as {
      startedAt: string;
      requests: { seq: number; time: string; fields: Record<string, unknown> }[];
    };
    assert.ok(Date.parse(body.startedAt) <= Date.now());
    const seqs = body.requests.map((r) => r.seq);
    assert.deepEqual(
      seqs,
      seqs.map((_, i) => (seqs[0] ?? 0) + i),
    );
    const probes = body.requests
      .filter((r) => String(r.fields.path).endsWith("probe=recent"))
      .map((r) => [r.fields.path, r.fields.response_code, r.fields.source_principal, r.fields.authorization]);
    assert.deepEqual(probes, [
      [
        "/open?probe=recent",
        200,
        CLIENT,
        { result: "allowed", policy: "shop/members", action: "ALLOW", rule: 0 },
      ],
      ["/members?probe=recent", 403, CLIENT, { result: "denied", policy: "shop/members", action: "ALLOW" }],
    ]);
    // Only on the loopback admin listener, and only GET.
    assert.equal((await httpGet(waypoint.operatorAddresses.metrics, "/recent_requests")).status, 404);
    const post = await fetch(`http://${waypoint.operatorAddresses.admin}/recent_requests`, {
      method: "POST",
    });
    assert.equal(post.status, 404);
  });

  it("serves istio_requests_total on /metrics and /stats/prometheus", async () => {
    for (const path of ["/metrics", "/stats/prometheus"]) {
      const res = await httpGet(waypoint.operatorAddresses.metrics, path);
      assert.equal(res.status, 200);
      assert.match(res.type, /^text\/plain/);
      assert.match(res.body, /^# TYPE istio_requests_total counter$/m);
      assert.match(res.body, /^istio_requests_total\{[^}]*response_code="401"[^}]*\} \d+$/m);
      assert.match(
        res.body,
        /^istio_requests_total\{[^}]*reporter="waypoint"[^}]*response_code="200"[^}]*\} \d+$/m,
      );
      assert.match(res.body, /^istio_request_duration_milliseconds_bucket\{le="\+Inf",reporter="waypoint"/m);
      // The calling pod is named in the source labels (Kiali draws its graph edges from them), found
      // by the address its tunnel came from; its principal is the one mutual TLS proved.
      const fromClient = res.body
        .split("\n")
        .filter((l) => l.startsWith("istio_requests_total{") && l.includes('response_code="200"'));
      assert.ok(fromClient.length > 0, res.body);
      for (const line of fromClient) {
        for (const label of [
          'source_workload="client"',
          'source_canonical_service="client"',
          'source_canonical_revision="latest"',
          'source_workload_namespace="shop"',
          `source_principal="${CLIENT}"`,
          'destination_workload="api-0"',
        ]) {
          assert.ok(line.includes(label), `${label} in ${line}`);
        }
      }
      // The policy engine's decisions, counted per label set like the request metrics.
      assert.match(res.body, /^ambient_policy_decisions_total\{decision="allow"\} [1-9]\d*$/m);
      assert.match(res.body, /^ambient_policy_decisions_total\{decision="deny"\} [1-9]\d*$/m);
    }
    assert.equal((await httpGet(waypoint.operatorAddresses.metrics, "/config_dump")).status, 404);
  });

  it("dumps routes, backends, policies and the certificate on /config_dump, addresses as text", async () => {
    const res = await httpGet(waypoint.operatorAddresses.admin, "/config_dump");
    assert.equal(res.status, 200);
    assert.match(res.type, /^application\/json/);
    const dump = JSON.parse(res.body);
    assert.equal(dump.ready, true);
    assert.equal(dump.identity, WAYPOINT);
    assert.equal(dump.certificates.length, 1);
    assert.equal(dump.certificates[0].identity, WAYPOINT);
    assert.ok(Date.parse(dump.certificates[0].notAfter) > Date.now());
    // The RouteConfigurations in force, as received over RDS.
    assert.deepEqual(
      dump.routes.map((r: { name: string }) => r.name),
      ["inbound-vip|80|http|api.shop.svc.cluster.local"],
    );
    assert.deepEqual(
      dump.authorizationPolicies.map((p: { metadata: { name: string } }) => p.metadata.name),
      ["members"],
    );
    assert.deepEqual(
      dump.requestAuthentications.map((r: { name: string; targets: string[] }) => `${r.name} ${r.targets}`),
      ["shop/issuer-a Gateway shop/waypoint", "shop/issuer-b Service shop/api"],
    );
    const api = dump.backends.find((b: { service: string }) => b.service === "shop/api");
    assert.deepEqual(
      api.addresses.map((a: { address: string }) => a.address),
      [ip(100)],
    );
    assert.deepEqual(
      api.endpoints.map((e: { address: string; port: number }) => `${e.address}:${e.port}`),
      [`${ip(7)}:8080`],
    );
    assert.doesNotMatch(res.body, /"type": "Buffer"|"0": \d+/);
    assert.equal((await httpGet(waypoint.operatorAddresses.admin, "/healthz/ready")).status, 404);
  });

  it("keeps the last good RequestAuthentication when an edit breaks it", async () => {
    const good = await token(keyA, { sub: "alice", groups: ["dev"] });
    const text = await readFile(join(dir, "mesh.yaml"), "utf8");
    // issuer-a loses its issuer: invalid, so the version in force stays.
    await writeFile(
      join(dir, "mesh.yaml"),
      text.replace(`- issuer: ${ISSUER_A}\n`, `- issuerUrl: ${ISSUER_A}\n`),
    );
    logLines.length = 0;
    try {
      // The control plane serves it; the waypoint NACKs it and keeps the version in force.
      await cp.reload();
      await waitFor(() =>
        logLines.some(
          (l) =>
            l.msg === "xds update refused; last good kept" &&
            String(l.message).includes("shop/issuer-a: spec.jwtRules[0].issuer is required"),
        ),
      );
      assert.equal(await get("/members", bearer(good)), 200);
      assert.equal(
        await get("/members", bearer(await token(otherKey, { sub: "alice", groups: ["dev"] }))),
        401,
      );
    } finally {
      await writeFile(join(dir, "mesh.yaml"), text);
      // The version in force is this one already.
      await cp.reload();
    }
  });

  it("keeps a not-ready 503 while the control plane is unreachable, and refuses a non-loopback admin address", async () => {
    const options = {
      gateway: { name: "waypoint", namespace: "shop" },
      ip: ip(16),
      nodeName: "node-a",
      token: "t",
      rootCertPem: cp.rootCertPem,
      controlPlaneAddress: `${ip(250)}:9`,
      ports: { admin: 0, metrics: 0, readiness: 0 },
    };
    await assert.rejects(startWaypoint({ ...options, adminIp: "192.0.2.1" }), (err: unknown) => {
      assert.ok(err instanceof WaypointError);
      assert.equal(err.code, "ERR_WAYPOINT_INVALID_OPTION");
      return true;
    });
    const stalled = await startWaypoint(options);
    stalled.ready.catch(() => {});
    try {
      const res = await httpGet(stalled.operatorAddresses.readiness, "/healthz/ready");
      assert.deepEqual([res.status, res.body], [503, "not ready\n"]);
      assert.equal(
        JSON.parse((await httpGet(stalled.operatorAddresses.admin, "/config_dump")).body).ready,
        false,
      );
    } finally {
      await stalled.close();
    }
  });
});
