// Interop with an independent HTTP/2 + TLS stack: Debian's python3-h2 over Python's ssl module.
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { HboneError } from "../../src/errors.js";
import { createHboneClient } from "../../src/hbone-client.js";
import type { InboundTunnel } from "../../src/inbound-tunnel.js";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../fixtures.js";
import { readAll, startServer, type TestServer } from "../harness.js";

const PYTHON = "/usr/bin/python3";
const here = fileURLToPath(new URL(".", import.meta.url));

function runPython(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(PYTHON, [join(here, "hbone_client.py"), ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python client failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}"));
    });
  });
}

describe("interop: python3-h2 client -> our server", () => {
  let pki: TestPki;
  let srv: TestServer;
  let limited: TestServer;
  let creds: ReturnType<TestPki["issue"]>;
  const seen: InboundTunnel[] = [];

  async function echo(t: InboundTunnel): Promise<void> {
    seen.push(t);
    if (t.authority.port === 401) return t.refuse(401);
    const stream = t.accept({ baggage: "k8s.namespace.name=nodeserver" });
    const data = await readAll(stream);
    stream.end(Buffer.concat([Buffer.from("echo:"), data]));
  }

  before(async () => {
    pki = createTestPki();
    srv = await startServer(pki, { onTunnel: echo });
    limited = await startServer(pki, {
      maxConcurrentStreams: 3,
      onTunnel: (t) => void t.accept().on("error", () => {}),
    });
    creds = pki.issue(CLIENT_ID);
  });
  after(async () => {
    await srv.server.close({ timeoutMs: 500 });
    await limited.server.close({ timeoutMs: 500 });
    pki.cleanup();
  });

  const args = (port: number) => [
    "127.0.0.1",
    String(port),
    creds.certPath,
    creds.keyPath,
    join(pki.dir, "root.pem"),
    SERVER_ID,
  ];

  it("opens a tunnel and moves 300 KiB both ways (TLS 1.3, ALPN h2, headers parsed)", async () => {
    const r = await runPython([...args(srv.port), "echo", "10.0.0.1:8080", String(300 * 1024)]);
    assert.equal(r.version, "TLSv1.3");
    assert.equal(r.alpn, "h2");
    assert.deepEqual(r.peerSans, [SERVER_ID]);
    assert.equal(r.status, 200);
    assert.equal(r.bodyOk, true);
    assert.equal((r.headers as Record<string, string>).baggage, "k8s.namespace.name=nodeserver");
    const t = seen.at(-1);
    assert.equal(t?.peerIdentity.toString(), CLIENT_ID);
    assert.equal(t?.baggage?.get("k8s.namespace.name"), "interop");
    assert.deepEqual(t?.forwarded, [{ for: "10.9.9.9:999" }]);
  });

  it("sees ztunnel's HTTP/2 settings and a 16 MiB connection window", async () => {
    const r = await runPython([...args(srv.port), "settings"]);
    assert.deepEqual(r.settings, {
      initialWindowSize: 4 * 1024 * 1024,
      maxFrameSize: 1024 * 1024,
      maxConcurrentStreams: 200,
      maxHeaderListSize: 64 * 1024,
      enablePush: 0,
    });
    assert.equal(r.connectionWindow, 16 * 1024 * 1024);
  });

  it("gets 401 from a refusal and 400 for a bad authority", async () => {
    assert.equal((await runPython([...args(srv.port), "status", "10.0.0.1:401"])).status, 401);
    assert.equal((await runPython([...args(srv.port), "status", "not-an-authority"])).status, 400);
  });

  it("refuses streams beyond the advertised limit without dropping the connection", async () => {
    const r = await runPython([...args(limited.port), "flood", "10.0.0.1:80", "6"]);
    const statuses = r.statuses as (number | null)[];
    const resets = r.resets as (number | null)[];
    assert.deepEqual(statuses.slice(0, 3), [200, 200, 200]);
    for (let i = 3; i < 6; i++) assert.equal(statuses[i], null, `stream ${i} must not be served`);
    // REFUSED_STREAM (7) or PROTOCOL_ERROR (1): either way the extra streams never reach the app.
    for (let i = 3; i < 6; i++)
      assert.ok(resets[i] === 7 || resets[i] === 1 || r.goaway !== undefined, JSON.stringify(r));
  });

  it("rejects an oversized header list and keeps serving", async () => {
    const r = await runPython([...args(srv.port), "bigheader", "10.0.0.1:80", String(80 * 1024)]);
    assert.equal(r.bigStatus, 431, JSON.stringify(r));
    assert.equal(r.afterStatus, 200, "the connection still serves tunnels");
  });
});

describe("interop: our client -> python3-h2 server", () => {
  let pki: TestPki;
  let py: ChildProcess;
  let port: number;
  let report: Promise<Record<string, unknown>>;

  before(async () => {
    pki = createTestPki();
    const serverCreds = pki.issue(SERVER_ID);
    py = spawn(
      PYTHON,
      [join(here, "hbone_server.py"), serverCreds.certPath, serverCreds.keyPath, join(pki.dir, "root.pem")],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const lines = createInterface({ input: py.stdout as NodeJS.ReadableStream });
    const iterator = lines[Symbol.asyncIterator]();
    const first = await iterator.next();
    port = (JSON.parse(String(first.value)) as { port: number }).port;
    report = iterator.next().then((r) => JSON.parse(String(r.value)) as Record<string, unknown>);
  });
  after(() => {
    if (py.exitCode === null) py.kill();
    pki.cleanup();
  });

  it("tunnels bytes through a python server, gets 401 on refusal, sends no SNI", async () => {
    const client = createHboneClient(pki.issue(CLIENT_ID));
    const address = `127.0.0.1:${port}`;
    const tunnel = await client.connect({
      address,
      authority: "10.0.0.2:9080",
      expectedIdentities: [SERVER_ID],
      headers: { baggage: "k8s.namespace.name=nodeclient" },
    });
    assert.equal(tunnel.headers.baggage, "k8s.namespace.name=pyserver");
    assert.equal(tunnel.peerIdentity.toString(), SERVER_ID);
    const payload = Buffer.alloc(200 * 1024, 9);
    tunnel.end(payload);
    const reply = await readAll(tunnel);
    assert.equal(reply.length, payload.length + 5);
    assert.equal(reply.subarray(0, 5).toString(), "echo:");
    await assert.rejects(
      client.connect({ address, authority: "deny:1", expectedIdentities: [SERVER_ID] }),
      (e: unknown) => e instanceof HboneError && e.code === "ERR_HBONE_REFUSED" && e.status === 401,
    );
    await client.close();
    const seen = await report;
    assert.equal(seen.alpn, "h2");
    assert.equal(seen.version, "TLSv1.3");
    assert.deepEqual(seen.peerSans, [CLIENT_ID]);
    assert.ok(
      (seen.sni as unknown[]).every((n) => n === null),
      `no SNI expected, got ${JSON.stringify(seen.sni)}`,
    );
    const streams = seen.streams as Record<string, string>[];
    assert.equal(streams[0]?.[":method"], "CONNECT");
    assert.equal(streams[0]?.[":authority"], "10.0.0.2:9080");
    assert.equal(streams[0]?.[":path"], undefined);
    assert.equal(streams[0]?.[":scheme"], undefined);
    assert.equal(streams[0]?.baggage, "k8s.namespace.name=nodeclient");
    assert.equal(streams[0]?.traceparent?.length, 55);
    assert.deepEqual(seen.clientSettings, {
      initialWindowSize: 4 * 1024 * 1024,
      maxFrameSize: 1024 * 1024,
      maxHeaderListSize: 16 * 1024,
      enablePush: 0,
    });
    assert.equal(seen.connectionWindow, 16 * 1024 * 1024);
  });
});
