import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import {
  entryFor,
  httpRoute,
  prefixRule,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
} from "../test/harness.js";
import type { AccessLogEntry } from "./request-log.js";
import type { WaypointHandlerOptions } from "./waypoint-handler.js";

/** The delays of every `setTimeout` set while `run` runs. */
async function timerDelays(run: () => Promise<void>): Promise<number[]> {
  const delays: number[] = [];
  const original = globalThis.setTimeout;
  globalThis.setTimeout = ((callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    delays.push(ms ?? 0);
    return original(callback, ms, ...args);
  }) as typeof setTimeout;
  try {
    await run();
  } finally {
    globalThis.setTimeout = original;
  }
  return delays;
}

describe("stream idle timeout, as Istio's waypoint sets it", () => {
  const proxiedRequest = async (options: Partial<WaypointHandlerOptions>) => {
    const backend = await startBackend("b");
    const wp = await startWaypoint(
      { "default/b": [backend.endpoint] },
      { routes: [httpRoute("r", [prefixRule("/", "b")])], ...options },
    );
    try {
      return await timerDelays(async () => {
        assert.equal((await request(wp.port, { path: "/x" })).status, 200);
      });
    } finally {
      await wp.close();
      await stopServer(backend.server);
    }
  };

  it("is off by default (istiod sets stream_idle_timeout 0s on the waypoint's HTTP connection manager)", async () => {
    const delays = await proxiedRequest({});
    assert.ok(!delays.includes(300_000), `timers set: ${delays.join(", ")}`);
  });

  it("is armed when the option sets one", async () => {
    const delays = await proxiedRequest({ streamIdleTimeoutMs: 300_000 });
    assert.ok(delays.includes(300_000), `timers set: ${delays.join(", ")}`);
  });
});

describe("backend response heads, as large as Envoy accepts them", () => {
  const BIG = "b".repeat(40 * 1024);
  /** A GET whose client takes response heads of up to 128 KiB (Node's default is 16 KiB). */
  const getBig = (port: number) =>
    new Promise<{ status: number; body: string; big: number | undefined }>((resolve, reject) => {
      const req = http.get(
        { host: "127.0.0.1", port, path: "/big", agent: false, maxHeaderSize: 128 * 1024 },
        (res) => {
          let body = "";
          res.on("data", (c: Buffer) => {
            body += c.toString();
          });
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body, big: (res.headers["x-big"] as string)?.length }),
          );
        },
      );
      req.on("error", reject);
    });

  it("relays a 40 KiB response header from an HTTP/1.1 backend", async () => {
    const backend = await startBackend("h1", (_req, res) => {
      res.writeHead(200, { "x-big": BIG });
      res.end("ok");
    });
    const wp = await startWaypoint(
      { "default/h1": [backend.endpoint] },
      { routes: [httpRoute("r", [prefixRule("/", "h1")])] },
    );
    try {
      assert.deepEqual(await getBig(wp.port), { status: 200, body: "ok", big: BIG.length });
    } finally {
      await wp.close();
      await stopServer(backend.server);
    }
  });

  it("relays a 40 KiB response header from an HTTP/2 backend", async () => {
    const backend = http2.createServer();
    backend.on("stream", (stream) => {
      stream.respond({ ":status": 200, "x-big": BIG });
      stream.end("ok");
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const port = (backend.address() as AddressInfo).port;
    const wp = await startWaypoint(
      { "default/h2": [{ address: "127.0.0.1", port, protocol: "http2" }] },
      { routes: [httpRoute("r", [prefixRule("/", "h2")])] },
    );
    try {
      assert.deepEqual(await getBig(wp.port), { status: 200, body: "ok", big: BIG.length });
    } finally {
      await wp.close();
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    }
  });

  it("relays a 40 KiB header of a backend's 101 to a WebSocket upgrade", async () => {
    const backend = await startBackend("ws");
    backend.server.on("upgrade", (_req, socket: net.Socket) => {
      socket.on("error", () => {});
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-big: ${BIG}\r\n\r\nhello`,
      );
    });
    const wp = await startWaypoint(
      { "default/ws": [backend.endpoint] },
      { routes: [httpRoute("r", [prefixRule("/", "ws")])] },
    );
    try {
      const out = await rawExchange(
        wp.port,
        "GET /ws HTTP/1.1\r\nhost: svc.example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        /hello$/,
      );
      assert.match(out, /^HTTP\/1\.1 101 /);
      assert.ok(out.includes(`x-big: ${BIG}\r\n`), out.slice(0, 200));
      assert.ok(out.endsWith("hello"));
    } finally {
      await wp.close();
      await stopServer(backend.server);
    }
  });
});

describe("upgrades other than WebSocket, as Istio configures only websocket upgrades", () => {
  it("answers `Upgrade: foo` 403 upgrade_failed and closes the connection; serves `Upgrade: h2c` as HTTP", async () => {
    const backend = await startBackend("b");
    const logs: AccessLogEntry[] = [];
    const wp = await startWaypoint(
      { "default/b": [backend.endpoint] },
      { routes: [httpRoute("r", [prefixRule("/", "b")])], accessLog: (entry) => logs.push(entry) },
    );
    try {
      const foo = await rawExchange(
        wp.port,
        "GET /foo HTTP/1.1\r\nhost: svc.example.com\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n",
      );
      assert.match(foo, /^HTTP\/1\.1 403 /);
      assert.match(foo, /\r\nconnection: close\r\n/i);
      const entry = await entryFor(logs, "/foo");
      assert.deepEqual([entry.response_code, entry.response_code_details], [403, "upgrade_failed"]);
      assert.equal(backend.requests.length, 0);

      const h2c = await rawExchange(
        wp.port,
        "GET /h2c HTTP/1.1\r\nhost: svc.example.com\r\nconnection: Upgrade, HTTP2-Settings\r\n" +
          "upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
        /"body":""\}$/,
      );
      assert.match(h2c, /^HTTP\/1\.1 200 /);
      assert.equal(backend.requests.length, 1);
      assert.equal(backend.requests[0]?.headers.upgrade, undefined);
    } finally {
      await wp.close();
      await stopServer(backend.server);
    }
  });
});

describe("the server response header, as Istio's waypoint overwrites it", () => {
  const serverOf = async (options: Partial<WaypointHandlerOptions>) => {
    const backend = await startBackend("b", (req, res) => {
      if (req.url === "/ws") return;
      res.writeHead(200, { server: "Apache/2.4.1 (Unix)" });
      res.end("ok");
    });
    backend.server.on("upgrade", (_req, socket: net.Socket) => {
      socket.on("error", () => {});
      socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nserver: ws-backend\r\n\r\n",
      );
    });
    const wp = await startWaypoint(
      { "default/b": [backend.endpoint] },
      {
        routes: [
          httpRoute("r", [
            prefixRule("/moved", undefined, {
              filters: [{ type: "RequestRedirect", requestRedirect: { hostname: "elsewhere.example" } }],
            }),
            prefixRule("/unknown-service", "unknown"),
            prefixRule("/", "b"),
          ]),
        ],
        ...options,
      },
    );
    try {
      const proxied = await request(wp.port, { path: "/x" });
      const local = await request(wp.port, { path: "/unknown-service" });
      const redirect = await request(wp.port, { path: "/moved" });
      const upgraded = await rawExchange(
        wp.port,
        "GET /ws HTTP/1.1\r\nhost: svc.example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        /\r\n\r\n$/,
      );
      return {
        proxied: proxied.headers.server,
        redirect: [redirect.status, redirect.headers.server],
        upgraded: /\r\nserver: ([^\r]*)\r\n/.exec(upgraded)?.[1],
        local: [local.status, local.headers.server],
      };
    } finally {
      await wp.close();
      await stopServer(backend.server);
    }
  };

  it("is istio-envoy on proxied responses, redirects, upgrades and local replies by default", async () => {
    const got = await serverOf({});
    assert.deepEqual(got, {
      proxied: "istio-envoy",
      redirect: [302, "istio-envoy"],
      upgraded: "istio-envoy",
      local: [500, "istio-envoy"],
    });
  });

  it("is the backend's with serverName empty (Istio's proxyHeaders.server.disabled)", async () => {
    const got = await serverOf({ serverName: "" });
    assert.deepEqual(got, {
      proxied: "Apache/2.4.1 (Unix)",
      redirect: [302, undefined],
      upgraded: "ws-backend",
      local: [500, undefined],
    });
  });
});
