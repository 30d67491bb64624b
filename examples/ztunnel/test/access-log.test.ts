// The `connection complete` access log, as two real ztunnels write it for an allowed and a denied
// connection (SOCKS5 -> HBONE -> echo pod).
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf } from "../src/ztunnel.js";
import {
  configureSleepEcho,
  loopbackSubnet,
  socksConnect,
  startTwoNodeMesh,
  type TwoNodeMesh,
} from "./fixtures.js";

const base = loopbackSubnet();
const ip = {
  sleep: `${base}.11`,
  echo: `${base}.12`,
  stranger: `${base}.13`,
  vip: `${base}.100`,
};
const echoHost = "echo.default.svc.cluster.local";

interface Line {
  level: "debug" | "info" | "warn" | "error";
  fields: Record<string, unknown>;
  msg: string;
}

function captureLogger(lines: Line[]) {
  const at = (level: Line["level"]) => (fields: object, msg?: string) =>
    lines.push({ level, fields: fields as Record<string, unknown>, msg: msg ?? "" });
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

async function until<T>(find: () => T | undefined): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error("timed out waiting for an access log line");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const complete = (lines: Line[], srcIp: string) =>
  lines.find((l) => l.msg === "connection complete" && String(l.fields["src.addr"]).startsWith(`${srcIp}:`));

describe("access log", { timeout: 60_000 }, () => {
  let mesh: TwoNodeMesh;
  let echo: Server;
  let echoPort: number;
  const linesA: Line[] = [];
  const linesB: Line[] = [];

  before(async () => {
    echo = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      socket.on("data", () => {});
      // A reply longer than the request, so the two byte counts differ.
      socket.once("end", () => socket.end("a reply of thirty bytes.......")); // 30 bytes
    });
    echo.listen(0, ip.echo);
    await once(echo, "listening");
    echoPort = (echo.address() as AddressInfo).port;
    mesh = await startTwoNodeMesh({
      subnet: base,
      configure: (cp) => configureSleepEcho(cp, ip, echoPort),
      nodeA: { logger: captureLogger(linesA) },
      nodeB: { logger: captureLogger(linesB) },
    });
  });

  after(async () => {
    await mesh?.close();
    echo?.close();
  });

  it("logs an allowed connection once on each side, at info, with Istio's fields", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, ip.vip, 80);
    assert.equal(reply, SOCKS5_REPLY.succeeded);
    const clientPort = socket.localPort;
    const ended = once(socket, "end");
    socket.on("data", () => {});
    socket.end("hello"); // 5 bytes
    await ended;
    socket.destroy();

    const out = await until(() => complete(linesA, ip.sleep));
    const inbound = await until(() => complete(linesB, ip.sleep));
    assert.equal(out.level, "info");
    const { duration: outDuration, ...outFields } = out.fields;
    assert.match(String(outDuration), /^\d+ms$/);
    assert.deepEqual(outFields, {
      "src.addr": `${ip.sleep}:${clientPort}`,
      "src.workload": "sleep",
      "src.namespace": "default",
      "src.identity": "spiffe://cluster.local/ns/default/sa/sleep",
      "src.cluster": "Kubernetes",
      "dst.addr": `${ip.echo}:15008`,
      "dst.hbone_addr": `${ip.echo}:${echoPort}`,
      "dst.service": echoHost,
      "dst.workload": "echo",
      "dst.namespace": "default",
      "dst.identity": "spiffe://cluster.local/ns/default/sa/echo",
      "dst.cluster": "Kubernetes",
      direction: "outbound",
      bytes_sent: 5,
      bytes_recv: 30,
    });

    assert.equal(inbound.level, "info");
    const { duration: inDuration, "src.addr": inSrc, ...inFields } = inbound.fields;
    assert.match(String(inDuration), /^\d+ms$/);
    assert.match(String(inSrc), new RegExp(`^${ip.sleep.replaceAll(".", "\\.")}:\\d+$`));
    assert.deepEqual(inFields, {
      "src.workload": "sleep",
      "src.namespace": "default",
      "src.identity": "spiffe://cluster.local/ns/default/sa/sleep",
      "src.cluster": "Kubernetes",
      "dst.addr": `${ip.echo}:15008`,
      "dst.hbone_addr": `${ip.echo}:${echoPort}`,
      "dst.service": echoHost,
      "dst.workload": "echo",
      "dst.namespace": "default",
      "dst.identity": "spiffe://cluster.local/ns/default/sa/echo",
      "dst.cluster": "Kubernetes",
      direction: "inbound",
      // The echo pod sent the reply and received the request.
      bytes_sent: 30,
      bytes_recv: 5,
    });
    // One line per connection on each side.
    assert.equal(linesA.filter((l) => l.msg === "connection complete").length, 1);
    assert.equal(linesB.filter((l) => l.msg === "connection complete").length, 1);
  });

  it("logs a denied connection at error level with the error, on both sides", async () => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.stranger, ip.vip, 80);
    socket.destroy();
    assert.equal(reply, SOCKS5_REPLY.notAllowed);

    const inbound = await until(() => complete(linesB, ip.stranger));
    assert.equal(inbound.level, "error");
    assert.equal(inbound.fields.error, "policy rejection: denied by default/allow-sleep");
    assert.equal(inbound.fields.direction, "inbound");
    assert.equal(inbound.fields["src.workload"], "stranger");
    assert.equal(inbound.fields["src.namespace"], "other");
    assert.equal(inbound.fields["src.identity"], "spiffe://cluster.local/ns/other/sa/stranger");
    assert.equal(inbound.fields["dst.workload"], "echo");
    assert.equal(inbound.fields.bytes_sent, 0);
    assert.equal(inbound.fields.bytes_recv, 0);

    const out = await until(() => complete(linesA, ip.stranger));
    assert.equal(out.level, "error");
    assert.equal(out.fields.direction, "outbound");
    assert.equal(out.fields["src.identity"], "spiffe://cluster.local/ns/other/sa/stranger");
    assert.equal(out.fields["dst.addr"], `${ip.echo}:15008`);
    assert.equal(out.fields["dst.workload"], "echo");
    assert.equal(out.fields["dst.service"], echoHost);
    assert.equal(typeof out.fields.error, "string");
    assert.notEqual(out.fields.error, "");
    assert.equal(out.fields.bytes_sent, 0);
  });
});
