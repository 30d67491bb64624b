import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import * as prom from "prom-client";
import { createAdminServers, createConnectionHistory } from "./admin.js";
import type { Logger } from "./telemetry.js";

function recordingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = (level: string) => (_obj: object, msg?: string) => lines.push(`${level} ${msg ?? ""}`);
  return {
    logger: { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") },
    lines,
  };
}

describe("createConnectionHistory", () => {
  it("keeps the access log lines, passes every line on, and forgets lines over the window or the cap", () => {
    let clock = Date.parse("2026-12-05T08:00:00Z");
    const inner = recordingLogger();
    const history = createConnectionHistory(inner.logger, {
      maxEntries: 3,
      windowMs: 60_000,
      now: () => clock,
    });
    history.logger.info({ "src.workload": "sleep-0", bytes_sent: 5 }, "connection complete");
    history.logger.debug({}, "inbound connection opened");
    history.logger.info({}, "ztunnel ready");
    history.logger.error(
      { "src.workload": "stranger", error: "policy rejection: denied by demo/echo-allow-sleep" },
      "connection complete",
    );
    history.logger.warn({ "dst.addr": "127.10.0.9:80", error: "no endpoint" }, "connection failed");
    assert.deepEqual(inner.lines, [
      "info connection complete",
      "debug inbound connection opened",
      "info ztunnel ready",
      "error connection complete",
      "warn connection failed",
    ]);
    const first = history.recent();
    assert.equal(first.startedAt, "2026-12-05T08:00:00.000Z");
    assert.deepEqual(
      first.connections.map((c) => [c.seq, c.message, c.fields.error ?? ""]),
      [
        [1, "connection complete", ""],
        [2, "connection complete", "policy rejection: denied by demo/echo-allow-sleep"],
        [3, "connection failed", "no endpoint"],
      ],
    );
    // A fourth line pushes the oldest out (cap 3).
    history.logger.info({ "src.workload": "sleep-0" }, "connection complete");
    assert.deepEqual(
      history.recent().connections.map((c) => c.seq),
      [2, 3, 4],
    );
    // A minute later, all are gone.
    clock += 60_001;
    assert.deepEqual(history.recent().connections, []);
  });
});

describe("admin /recent_connections", () => {
  it("serves the history as JSON, next to /config_dump", async () => {
    const history = createConnectionHistory(recordingLogger().logger);
    history.logger.error(
      {
        "src.identity": "spiffe://cluster.local/ns/demo/sa/stranger",
        error: "policy rejection: denied by p",
      },
      "connection complete",
    );
    const { admin } = createAdminServers({
      configDump: () => ({ ok: true }),
      recentConnections: history.recent,
      registry: new prom.Registry(),
      isReady: () => true,
    });
    admin.listen(0, "127.0.0.1");
    await new Promise((resolve) => admin.once("listening", resolve));
    try {
      const base = `http://127.0.0.1:${(admin.address() as AddressInfo).port}`;
      const res = await fetch(`${base}/recent_connections`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as { connections: { fields: Record<string, unknown> }[] };
      assert.equal(body.connections.length, 1);
      assert.equal(body.connections[0]?.fields.error, "policy rejection: denied by p");
      assert.equal((await fetch(`${base}/config_dump`)).status, 200);
      assert.equal((await fetch(`${base}/recent`)).status, 404);
    } finally {
      admin.closeAllConnections();
      await new Promise((resolve) => admin.close(resolve));
    }
  });

  it("answers 404 where no history is given", async () => {
    const { admin } = createAdminServers({
      configDump: () => ({}),
      registry: new prom.Registry(),
      isReady: () => true,
    });
    admin.listen(0, "127.0.0.1");
    await new Promise((resolve) => admin.once("listening", resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(admin.address() as AddressInfo).port}/recent_connections`);
      assert.equal(res.status, 404);
    } finally {
      admin.closeAllConnections();
      await new Promise((resolve) => admin.close(resolve));
    }
  });
});

/** A request with the given Host header, as a page whose name was rebound to 127.0.0.1 sends it. */
function requestWithHost(
  port: number,
  method: string,
  path: string,
  host: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, method, path, headers: { host } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        body += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("admin: requests addressed by a name other than localhost (DNS rebinding)", () => {
  it("answers only Hosts that are IP literals or localhost; a refused POST /quitquitquit does not quit", async () => {
    let quits = 0;
    const { admin } = createAdminServers({
      configDump: () => ({ ok: true }),
      registry: new prom.Registry(),
      isReady: () => true,
      onQuit: () => quits++,
    });
    admin.listen(0, "127.0.0.1");
    await new Promise((resolve) => admin.once("listening", resolve));
    const port = (admin.address() as AddressInfo).port;
    try {
      for (const host of [
        "rebind.example.com",
        `rebind.example.com:${port}`,
        "127.0.0.1.nip.io",
        "localhost.example",
      ]) {
        const dump = await requestWithHost(port, "GET", "/config_dump", host);
        assert.equal(dump.status, 403, host);
        assert.doesNotMatch(dump.body, /ok/);
        assert.equal((await requestWithHost(port, "POST", "/quitquitquit", host)).status, 403, host);
      }
      assert.equal(quits, 0);
      for (const host of [
        `127.0.0.1:${port}`,
        "127.20.0.1",
        `localhost:${port}`,
        "LOCALHOST.",
        "[::1]:15000",
        "10.0.0.7",
      ]) {
        assert.equal((await requestWithHost(port, "GET", "/config_dump", host)).status, 200, host);
      }
    } finally {
      admin.closeAllConnections();
      await new Promise((resolve) => admin.close(resolve));
    }
  });
});
