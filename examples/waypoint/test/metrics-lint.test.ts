import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, get, type Server } from "node:http";
import { after, before, describe, it } from "node:test";
import { promtoolCheckMetrics, withSampleInEveryFamily } from "../../../scripts/testing/promtool.js";
import type { RunningWaypoint } from "../src/index.js";
import {
  httpOverSocks,
  loopbackSubnet,
  shopWithWaypoint,
  startTestMesh,
  type TestMesh,
} from "./mesh-fixture.js";

// The exposition text a running waypoint serves on its metrics port, after requests it allowed, refused and could not route,
// linted by the Prometheus project's own `promtool check metrics` (Debian `prometheus`, installed by
// scripts/test-prerequisites.mjs). Any problem it reports fails the test, except the one in ACCEPTED.
// The CLI (src/main.ts) adds prom-client's default Node process metrics on top; three of those are gauges
// named `nodejs_active_{handles,requests,resources}_total`, which promtool flags. They are prom-client's
// names, not this proxy's, so they are outside this check.

/**
 * Lint problems that Istio's own metric names have. They keep Istio's names exactly, because Istio's
 * dashboards, Kiali and users' alerts query them by those names.
 */
const ACCEPTED: readonly { problem: string; reason: string }[] = [
  {
    problem: 'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"',
    reason: "Istio's standard request-duration histogram is in milliseconds under this name",
  },
];

/** promtool's problems less the accepted ones; promtool exits 3 when it found any, 1 when it could not parse. */
async function lint(text: string): Promise<{ code: number; problems: string[] }> {
  const { code, problems } = await promtoolCheckMetrics(text);
  const rejected = problems.filter((p) => !ACCEPTED.some((a) => a.problem === p));
  assert.equal(code, problems.length === 0 ? 0 : 3, problems.join("\n"));
  return { code, problems: rejected };
}

const { cidr, ip } = loopbackSubnet();

const manifests = `
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

function scrape(address: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get(`http://${address}/stats/prometheus`, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body }),
      );
    }).once("error", reject);
  });
}

/** One HTTP/1.1 GET to the api Service through a ztunnel's SOCKS5 port; resolves with the raw response text. */
function request(proxy: string, from: string, path: string): Promise<string> {
  return httpOverSocks(
    { proxy, from, to: `${ip(100)}:80` },
    `GET ${path} HTTP/1.1\r\nhost: api.shop\r\ncontent-length: 0\r\n\r\n`,
    { untilResponse: true },
  );
}

describe("waypoint metric names pass promtool check metrics", { timeout: 60_000 }, () => {
  let mesh: TestMesh;
  let waypoint: RunningWaypoint;
  let app: Server;

  before(async () => {
    app = createServer((req, res) => {
      req.resume();
      res.end(`api-0 got ${req.method} ${req.url}`);
    });
    app.listen(8080, ip(7));
    await once(app, "listening");
    mesh = await startTestMesh({
      manifests,
      tempPrefix: "waypoint-metrics-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { watch: false, podCidrs: [cidr] },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        ports: { admin: 0, metrics: 0, readiness: 0 },
      },
    });
    waypoint = mesh.waypoint;
    const socks5 = mesh.socks5;
    assert.match(await request(socks5, ip(2), "/v1/items"), /^HTTP\/1\.1 200 /);
    assert.match(await request(socks5, ip(2), "/other"), /^HTTP\/1\.1 404 /);
    assert.match(await request(socks5, ip(3), "/v1/items"), /^HTTP\/1\.1 403 /);
  });

  after(async () => {
    await mesh?.close();
    app?.close();
  });

  it("promtool runs and reports a counter without _total, sampled or not (the check can fail)", async () => {
    const bad = "# HELP bad_requests Requests.\n# TYPE bad_requests counter\n";
    for (const text of [`${bad}bad_requests 1\n`, withSampleInEveryFamily(bad)]) {
      const { code, problems } = await promtoolCheckMetrics(text);
      assert.notEqual(code, 0);
      assert.ok(
        problems.some((p) => p.startsWith("bad_requests ") && p.includes("_total")),
        problems.join("\n"),
      );
    }
  });

  it("accepts only the listed problems: a counter without _total still fails", async () => {
    const text =
      "# HELP istio_request_duration_milliseconds D.\n# TYPE istio_request_duration_milliseconds gauge\n" +
      "istio_request_duration_milliseconds 1\n# HELP bad_requests R.\n# TYPE bad_requests counter\nbad_requests 1\n";
    const { problems } = await lint(text);
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? "", /^bad_requests .*_total/);
  });

  it("the waypoint's /stats/prometheus, with Istio request samples", async () => {
    const scraped = await scrape(waypoint.operatorAddresses.metrics);
    assert.equal(scraped.status, 200);
    assert.match(scraped.type, /^text\/plain/);
    const text = scraped.body;
    for (const name of [
      "istio_requests_total",
      "istio_request_duration_milliseconds_bucket",
      "istio_request_bytes_bucket",
      "istio_response_bytes_bucket",
    ]) {
      assert.match(text, new RegExp(`^${name}\\{[^}]*reporter="waypoint"[^}]*\\} [1-9]`, "m"), name);
    }
    for (const code of ["200", "403", "404"]) {
      assert.match(text, new RegExp(`^istio_requests_total\\{[^}]*response_code="${code}"`, "m"), code);
    }
    assert.deepEqual((await lint(text)).problems, []);
    assert.deepEqual((await lint(withSampleInEveryFamily(text))).problems, []);
  });
});
