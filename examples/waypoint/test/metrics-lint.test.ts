import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, get, type Server } from "node:http";
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

/** Problems promtool reports as `<metric> <text>`, and whether it could read the text at all. */
async function promtoolCheckMetrics(text: string): Promise<{ code: number; problems: string[] }> {
  const child = spawn("promtool", ["check", "metrics"], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk;
  });
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk;
  });
  child.stdin.end(text);
  const [code] = (await once(child, "close")) as [number | null];
  return { code: code ?? 1, problems: output.split("\n").filter((line) => line.trim() !== "") };
}

/**
 * promtool skips a family that has no sample (a labelled counter nothing has counted yet), so this adds
 * one zero sample of the right shape to each such family: then every declared name is linted too.
 */
function withSampleInEveryFamily(text: string): string {
  const lines = text.split("\n");
  const out: string[] = [];
  for (const [i, line] of lines.entries()) {
    out.push(line);
    const declared = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (declared === null) continue;
    const [, name, type] = declared as unknown as [string, string, string];
    const next = lines.slice(i + 1).find((l) => !l.startsWith("#"));
    const sampled = /^[^{\s]+/.exec(next ?? "")?.[0];
    if (sampled !== undefined && [name, `${name}_bucket`, `${name}_sum`, `${name}_count`].includes(sampled)) {
      continue;
    }
    if (type === "histogram") out.push(`${name}_bucket{le="+Inf"} 0`, `${name}_sum 0`, `${name}_count 0`);
    else if (type === "summary") out.push(`${name}_sum 0`, `${name}_count 0`);
    else out.push(`${name} 0`);
  }
  return out.join("\n");
}

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

describe("waypoint metric names pass promtool check metrics", { timeout: 60_000 }, () => {
  let dir: string;
  let cp: ControlPlane;
  const ztunnels: RunningZtunnel[] = [];
  let waypoint: RunningWaypoint;
  let app: Server;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "waypoint-metrics-"));
    await writeFile(join(dir, "mesh.yaml"), mesh);
    cp = await startControlPlane({
      meshDir: dir,
      listen: "127.0.0.1:0",
      watch: false,
      podCidrs: [`${base}.0/24`],
    });
    app = createServer((req, res) => {
      req.resume();
      res.end(`api-0 got ${req.method} ${req.url}`);
    });
    app.listen(8080, ip(7));
    await once(app, "listening");
    for (const [i, node] of ["node-a", "node-b"].entries()) {
      ztunnels.push(
        await startZtunnel({
          nodeName: node,
          nodeIp: ip(200 + i),
          controlPlaneAddress: cp.address,
          rootCertPem: cp.rootCertPem,
          token: await cp.tokenFor(node),
          ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
        }),
      );
    }
    waypoint = await startWaypoint({
      gateway: { name: "waypoint", namespace: "shop" },
      ip: ip(6),
      nodeName: "node-a",
      token: await cp.tokenFor("node-a"),
      rootCertPem: cp.rootCertPem,
      controlPlaneAddress: cp.address,
      meshDir: dir,
      ports: { admin: 0, metrics: 0, readiness: 0 },
    });
    await Promise.all([...ztunnels.map((z) => z.ready), waypoint.ready]);
    const socks5 = ztunnels[0]?.addresses.socks5 ?? "";
    assert.match(await request(socks5, ip(2), "/v1/items"), /^HTTP\/1\.1 200 /);
    assert.match(await request(socks5, ip(2), "/other"), /^HTTP\/1\.1 404 /);
    assert.match(await request(socks5, ip(3), "/v1/items"), /^HTTP\/1\.1 403 /);
  });

  after(async () => {
    await waypoint?.close();
    await Promise.all(ztunnels.map((z) => z.close()));
    await cp?.close();
    app?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
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
