import assert from "node:assert/strict";
import { once } from "node:events";
import { get } from "node:http";
import { type AddressInfo, connect, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { promtoolCheckMetrics, withSampleInEveryFamily } from "../../../scripts/testing/promtool.js";
import { encodeGreeting, encodeRequest, parseReply, SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf } from "../src/ztunnel.js";
import {
  loopbackSubnet,
  startTwoNodeMesh,
  type TwoNodeMesh,
  testService,
  testWorkload as workload,
} from "./fixtures.js";

// The exposition text that two running ztunnels serve on their metrics port, after a proxied connection,
// linted by the Prometheus project's own `promtool check metrics` (Debian `prometheus`, installed by
// scripts/test-prerequisites.mjs). Any problem it reports fails the test: no lint is accepted.
// The CLI (src/main.ts) adds prom-client's default Node process metrics on top; three of those are gauges
// named `nodejs_active_{handles,requests,resources}_total`, which promtool flags. They are prom-client's
// names, not this proxy's, so they are outside this check.

const base = loopbackSubnet();
const ip = {
  sleep: `${base}.11`,
  echo: `${base}.12`,
  vip: `${base}.100`,
};
const echoHost = "echo.default.svc.cluster.local";

function scrape(address: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    get(`http://${address}/metrics`, (res) => {
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

/** One connection from the sleep pod through node A's SOCKS5 port to the echo Service; resolves with the echo. */
async function echoThroughMesh(socks5: string, message: string): Promise<string> {
  const [host, port] = socks5.split(":");
  const socket = connect({ host, port: Number(port), localAddress: ip.sleep, allowHalfOpen: true });
  socket.on("error", () => {});
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(ip.vip, 80));
  let buffered = Buffer.alloc(0);
  let reply: number | undefined;
  const closed = once(socket, "close");
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    if (reply !== undefined || buffered.length < 2) return;
    const parsed = parseReply(buffered.subarray(2));
    if (parsed === undefined) return;
    reply = parsed.reply;
    buffered = buffered.subarray(2 + parsed.length);
    if (reply === SOCKS5_REPLY.succeeded) socket.end(message);
    else socket.destroy();
  });
  await closed;
  assert.equal(reply, SOCKS5_REPLY.succeeded);
  return buffered.toString();
}

describe("ztunnel metric names pass promtool check metrics", { timeout: 60_000 }, () => {
  let mesh: TwoNodeMesh;
  let echo: Server;

  before(async () => {
    echo = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      socket.pipe(socket);
    });
    echo.listen(0, ip.echo);
    await once(echo, "listening");
    const echoPort = (echo.address() as AddressInfo).port;
    const ports = [{ servicePort: 80, targetPort: echoPort, appProtocol: "TCP" as const }];
    mesh = await startTwoNodeMesh({
      subnet: base,
      configure: (cp) => {
        cp.setWorkload(workload("sleep", "node-a", ip.sleep));
        cp.setWorkload(
          workload("echo", "node-b", ip.echo, { services: { [`default/${echoHost}`]: { ports } } }),
        );
        cp.setService(testService("echo", ip.vip, ports));
      },
    });
    assert.equal(await echoThroughMesh(socks5AddressOf(mesh.nodeA), "ping"), "ping");
  });

  after(async () => {
    await mesh?.close();
    echo?.close();
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

  for (const side of ["source", "destination"] as const) {
    it(`the ${side} ztunnel's /metrics, with Istio TCP samples`, async () => {
      const node = side === "source" ? mesh.nodeA : mesh.nodeB;
      const scraped = await scrape(node.addresses.metrics);
      assert.equal(scraped.status, 200);
      assert.match(scraped.type, /^text\/plain/);
      for (const name of [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
      ]) {
        assert.match(scraped.body, new RegExp(`^${name}\\{[^}]*reporter="${side}"[^}]*\\} [1-9]`, "m"), name);
      }
      // Istio's ztunnel meta and xDS metrics, under its names.
      assert.match(scraped.body, /^istio_build\{component="ztunnel",tag="unknown"\} 1$/m);
      assert.match(
        scraped.body,
        /^istio_xds_message_total\{url="type\.googleapis\.com\/istio\.workload\.Address"\} [1-9]/m,
      );
      assert.match(
        scraped.body,
        /^istio_xds_message_bytes_total\{url="type\.googleapis\.com\/istio\.workload\.Address"\} [1-9]/m,
      );
      const { code, problems } = await promtoolCheckMetrics(scraped.body);
      assert.deepEqual(problems, []);
      assert.equal(code, 0);
      const declared = await promtoolCheckMetrics(withSampleInEveryFamily(scraped.body));
      assert.deepEqual(declared.problems, []);
      assert.equal(declared.code, 0);
    });
  }
});
