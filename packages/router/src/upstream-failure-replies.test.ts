import assert from "node:assert/strict";
import type http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  closedPort,
  entryFor,
  httpRoute,
  prefixRule,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";
import { compileEnvoyRouteConfiguration, createEnvoyRouteTable } from "./envoy-routes.js";
import { RouterError } from "./errors.js";
import { connectFailureReason } from "./node-error.js";
import type { AccessLogEntry } from "./request-log.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

const EARLY_RESET = "upstream connect error or disconnect/reset before headers.";

/** An HTTP/2 frame: the 9-byte header and `payload`. */
function h2Frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** HPACK: `:status 200` from the static table. */
const STATUS_200 = [0x88];
/** HPACK: `content-length: 100`, a literal without indexing of the static table's name 28. */
const CONTENT_LENGTH_100 = [0x0f, 0x0d, 0x03, ...Buffer.from("100")];

/**
 * An HTTP/2 backend of raw frames that answers every request with the HPACK block `head` (default
 * `:status 200`), one DATA frame of `data` (default "partial"; none when empty) and then RST_STREAM
 * `code`, without END_STREAM: a response cut short by the backend (Node's own server always ends a
 * stream before it resets it).
 */
async function cutShortBackend(
  code: number,
  response: { head?: number[]; data?: string } = {},
): Promise<net.Server> {
  const head = Buffer.from(response.head ?? STATUS_200);
  const data = response.data ?? "partial";
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    socket.write(h2Frame(0x4, 0, 0, Buffer.alloc(0)));
    let pending = Buffer.alloc(0);
    let preface = false;
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!preface) {
        if (pending.length < 24) return;
        pending = pending.subarray(24);
        preface = true;
      }
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3);
        if (pending.length < 9 + length) return;
        const [type, flags] = [pending[3], pending[4] as number];
        const id = pending.readUInt32BE(5) & 0x7fffffff;
        pending = pending.subarray(9 + length);
        if (type === 0x4 && (flags & 0x1) === 0) socket.write(h2Frame(0x4, 0x1, 0, Buffer.alloc(0)));
        if (type === 0x1) {
          const rst = Buffer.alloc(4);
          rst.writeUInt32BE(code);
          // END_HEADERS.
          socket.write(h2Frame(0x1, 0x4, id, head));
          if (data !== "") socket.write(h2Frame(0x0, 0, id, Buffer.from(data)));
          socket.write(h2Frame(0x3, 0, id, rst));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

/** A failed connect as Node reports it. */
function connectError(code: string, address = "10.0.0.1", port = 8080): Error {
  return Object.assign(new Error(`connect ${code} ${address}:${port}`), {
    code,
    syscall: "connect",
    address,
    port,
  });
}

describe("transport failure reasons of failed connects, as Envoy prints them", () => {
  const cases: [name: string, err: unknown, want: string | undefined][] = [
    ["refused", connectError("ECONNREFUSED"), "delayed connect error: Connection refused"],
    ["timed out", connectError("ETIMEDOUT"), "delayed connect error: Connection timed out"],
    ["no route to the host", connectError("EHOSTUNREACH"), "delayed connect error: No route to host"],
    [
      "no route to the network",
      connectError("ENETUNREACH"),
      "immediate connect error: Network is unreachable|remote address:10.0.0.1:8080",
    ],
    [
      "no local port, IPv6",
      connectError("EADDRNOTAVAIL", "fd00::1", 80),
      "immediate connect error: Cannot assign requested address|remote address:[fd00::1]:80",
    ],
    [
      "wrapped in a RouterError",
      new RouterError("ERR_UPSTREAM_CONNECT", "connect failed", { cause: connectError("ECONNREFUSED") }),
      "delayed connect error: Connection refused",
    ],
    ["an errno with no known text", connectError("EWEIRD"), undefined],
    ["not a connect", Object.assign(new Error("reset"), { code: "ECONNRESET", syscall: "read" }), undefined],
    ["not an error", "boom", undefined],
  ];
  for (const [name, err, want] of cases) {
    it(name, () => assert.equal(connectFailureReason(err), want));
  }
});

describe("local replies to upstream failures, as Envoy's router gives them", () => {
  let h1: Backend;
  let h2: http2.Http2Server;
  let cutShort: net.Server[] = [];
  let wp: Waypoint;
  let timeoutWp: Waypoint;
  const logs: AccessLogEntry[] = [];
  const flagLabels = new Map<string, string>();
  const held: (http.ServerResponse | http2.ServerHttp2Stream)[] = [];
  let arrived: (path: string) => void = () => {};

  before(async () => {
    h1 = await startBackend("h1", (req, res) => {
      const path = req.url ?? "";
      arrived(path);
      if (path.startsWith("/close")) {
        req.socket.destroy();
      } else if (path.startsWith("/late-bad-chunk")) {
        // The head and one chunk, then a chunk size that is not hex: broken HTTP after the head.
        req.socket.end("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n");
      } else if (path.startsWith("/short-body")) {
        // 7 of the 100 bytes the head declared, then the connection closes.
        req.socket.end("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial");
      } else if (path.startsWith("/bad-header")) {
        // A header line without a colon: broken HTTP/1.1.
        req.socket.end("HTTP/1.1 200 OK\r\nnot a header line\r\ncontent-length: 2\r\n\r\nok");
      } else {
        held.push(res);
      }
    });
    // A 101 with a broken header line: the upgrade's response head is refused as broken HTTP.
    h1.server.on("upgrade", (_req, socket: net.Socket) => {
      socket.end(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nnot a header line\r\n\r\n",
      );
    });
    h2 = http2.createServer();
    h2.on("stream", (stream, headers) => {
      const path = String(headers[":path"]);
      // Closing a stream with an error code reports that code on the stream itself too.
      stream.on("error", () => {});
      if (path.startsWith("/h2-reset/cancel")) stream.close(http2.constants.NGHTTP2_CANCEL);
      else if (path.startsWith("/h2-reset/no-error")) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      else if (path.startsWith("/h2-reset")) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      else if (path.startsWith("/h2-refuse")) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      else held.push(stream);
    });
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    const h2Endpoint = {
      address: "127.0.0.1",
      port: (h2.address() as AddressInfo).port,
      protocol: "http2" as const,
    };
    const down = { address: "127.0.0.1", port: await closedPort(), protocol: "http1" as const };
    const noError = http2.constants.NGHTTP2_NO_ERROR;
    cutShort = await Promise.all([
      cutShortBackend(http2.constants.NGHTTP2_INTERNAL_ERROR),
      cutShortBackend(http2.constants.NGHTTP2_CANCEL),
      // 7 of the 100 bytes the head declared, then RST_STREAM NO_ERROR.
      cutShortBackend(noError, { head: [...STATUS_200, ...CONTENT_LENGTH_100] }),
      // Heads that declare a length with no body to follow: 200 to HEAD, 304 (`:status 304` is the
      // static table's 11). Node's HTTP/2 client refuses a 204 with a content-length outright.
      cutShortBackend(noError, { head: [...STATUS_200, ...CONTENT_LENGTH_100], data: "" }),
      cutShortBackend(noError, { head: [0x8b, ...CONTENT_LENGTH_100], data: "" }),
    ]);
    const cutShortEndpoint = (i: number) => ({
      address: "127.0.0.1",
      port: ((cutShort[i] as net.Server).address() as AddressInfo).port,
      protocol: "http2" as const,
    });
    const services = {
      "default/cut-internal": [cutShortEndpoint(0)],
      "default/cut-cancel": [cutShortEndpoint(1)],
      "default/cut-length": [cutShortEndpoint(2)],
      "default/cut-length-head": [cutShortEndpoint(3)],
      "default/cut-length-304": [cutShortEndpoint(4)],
      "default/h1": [h1.endpoint],
      "default/h2": [h2Endpoint],
      "default/down": [down],
    };
    const metrics: MetricsSink = {
      counter: (name) => ({
        inc: (labels?: MetricLabels) => {
          if (name !== "istio_requests_total" || labels === undefined) return;
          flagLabels.set(String(labels.response_code), String(labels.response_flags));
        },
      }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    wp = await startWaypoint(services, {
      routes: [
        httpRoute("r", [
          prefixRule("/close", "h1"),
          prefixRule("/bad-header", "h1"),
          prefixRule("/short-body", "h1"),
          prefixRule("/late-bad-chunk", "h1"),
          prefixRule("/hold", "h1"),
          prefixRule("/upgrade", "h1"),
          prefixRule("/h2-reset", "h2"),
          prefixRule("/h2-refuse", "h2"),
          prefixRule("/cut-internal", "cut-internal"),
          prefixRule("/cut-cancel", "cut-cancel"),
          prefixRule("/cut-length/head", "cut-length-head"),
          prefixRule("/cut-length/304", "cut-length-304"),
          prefixRule("/cut-length", "cut-length"),
          prefixRule("/down-once", "down", { retry: { attempts: 0 } }),
          prefixRule("/down", "down"),
        ]),
      ],
      accessLog: (entry) => logs.push(entry),
      metrics,
    });
    // Per-try timeouts are retried only on `5xx`, `gateway-error` or `reset`, which an HTTPRoute
    // retry stanza never names: an RDS route's `retry_on` does.
    const svc = { name: "svc", namespace: "default" };
    timeoutWp = await startWaypoint(
      services,
      { routes: [], accessLog: (entry) => logs.push(entry) },
      { destination: { address: "127.30.0.3", port: 80, service: svc } },
    );
    timeoutWp.handler.setRouteTable(
      createEnvoyRouteTable([
        {
          service: svc,
          port: 80,
          routes: compileEnvoyRouteConfiguration(
            {
              virtualHosts: [
                {
                  domains: ["*"],
                  routes: [
                    {
                      match: { prefix: "/slow" },
                      route: {
                        cluster: "outbound|80||h1.default.svc.cluster.local",
                        timeout: { seconds: 30 },
                        retryPolicy: {
                          retryOn: "5xx",
                          numRetries: { value: 1 },
                          perTryTimeout: { nanos: 100_000_000 },
                          retryBackOff: { baseInterval: { nanos: 1_000_000 } },
                        },
                      },
                    },
                  ],
                },
              ],
            },
            "default",
          ),
        },
      ]),
    );
  });

  after(async () => {
    for (const r of held) r.destroy();
    await wp.close();
    await timeoutWp.close();
    await stopServer(h1.server);
    await new Promise<void>((resolve) => h2.close(() => resolve()));
    for (const server of cutShort) server.close();
  });

  const cases: {
    name: string;
    path: string;
    port?: () => number;
    want: [status: number, flags: string, details: string, body: string];
  }[] = [
    {
      name: "a connection closed before the response: 503 UC",
      path: "/close",
      want: [
        503,
        "UC",
        "upstream_reset_before_response_started{connection_termination}",
        `${EARLY_RESET} reset reason: connection termination`,
      ],
    },
    {
      name: "an invalid header line from the backend: 502 UPE",
      path: "/bad-header",
      want: [
        502,
        "UPE",
        "upstream_reset_before_response_started{protocol_error}",
        `${EARLY_RESET} reset reason: protocol error`,
      ],
    },
    {
      name: "an HTTP/2 stream reset by the backend: 503 UR",
      path: "/h2-reset",
      want: [
        503,
        "UR",
        "upstream_reset_before_response_started{remote_reset}",
        `${EARLY_RESET} reset reason: remote reset`,
      ],
    },
    {
      name: "an HTTP/2 stream the backend reset with CANCEL: 503 UR",
      path: "/h2-reset/cancel",
      want: [
        503,
        "UR",
        "upstream_reset_before_response_started{remote_reset}",
        `${EARLY_RESET} reset reason: remote reset`,
      ],
    },
    {
      name: "an HTTP/2 stream the backend reset with NO_ERROR before its response: 503 UR",
      path: "/h2-reset/no-error",
      want: [
        503,
        "UR",
        "upstream_reset_before_response_started{remote_reset}",
        `${EARLY_RESET} reset reason: remote reset`,
      ],
    },
    {
      name: "an HTTP/2 stream refused on every try: 503 URX,UR",
      path: "/h2-refuse",
      want: [
        503,
        "URX,UR",
        "upstream_reset_before_response_started{remote_refused_stream_reset}",
        `${EARLY_RESET} retried and the latest reset reason: remote refused stream reset`,
      ],
    },
    {
      name: "connections refused on every try: 503 URX,UF",
      path: "/down",
      want: [
        503,
        "URX,UF",
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
        `${EARLY_RESET} retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused`,
      ],
    },
    {
      name: "a connection refused without retries: 503 UF alone",
      path: "/down-once",
      want: [
        503,
        "UF",
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
        `${EARLY_RESET} reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused`,
      ],
    },
    {
      name: "per-try timeouts on every try: 504 URX,UT",
      path: "/slow",
      port: () => timeoutWp.port,
      want: [504, "URX,UT", "upstream_per_try_timeout", "upstream request timeout"],
    },
  ];

  for (const c of cases) {
    it(`answers ${c.name}`, async () => {
      const r = await request(c.port?.() ?? wp.port, { path: c.path });
      const entry = await entryFor(logs, c.path);
      assert.deepEqual(
        [r.status, entry.response_flags, entry.response_code_details, r.body],
        [c.want[0], c.want[1], c.want[2], c.want[3]],
      );
      assert.equal(entry.response_code, c.want[0]);
    });
  }

  it("answers a broken 101 to an upgrade request 502 UPE", async () => {
    const out = await rawExchange(
      wp.port,
      "GET /upgrade HTTP/1.1\r\nhost: svc.example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    );
    const entry = await entryFor(logs, "/upgrade");
    assert.match(out, /^HTTP\/1\.1 502 /);
    assert.ok(out.endsWith(`${EARLY_RESET} reset reason: protocol error`), out);
    assert.deepEqual(
      [entry.response_code, entry.response_flags, entry.response_code_details],
      [502, "UPE", "upstream_reset_before_response_started{protocol_error}"],
    );
  });

  for (const [path, flag, reason] of [
    ["/late-bad-chunk", "UPE", "protocol_error"],
    ["/cut-internal", "UR", "remote_reset"],
    ["/cut-cancel", "UR", "remote_reset"],
    // Node ends such a body as if complete; the declared content-length tells it was cut short.
    ["/cut-length", "UR", "remote_reset"],
    // Node reports the body as aborted when the connection closes before its declared length.
    ["/short-body", "UC", "connection_termination"],
  ] as const) {
    it(`logs a failure after the response started as ${flag} (${path})`, async () => {
      const started = Date.now();
      const out = await rawExchange(wp.port, `GET ${path} HTTP/1.1\r\nhost: svc.example.com\r\n\r\n`);
      const entry = await entryFor(logs, path);
      assert.match(out, /^HTTP\/1\.1 200 /);
      // The client's connection is reset: the body never looks complete (no last chunk, or fewer
      // bytes than its content-length), and the client is not left waiting for the rest (the
      // exchange gives up after 5 s on a connection that stays open).
      assert.ok(!out.endsWith("0\r\n\r\n"), out);
      assert.ok(Date.now() - started < 4000, "the client's connection was left open");
      assert.deepEqual(
        [entry.response_code, entry.response_flags, entry.response_code_details],
        [200, flag, `upstream_reset_after_response_started{${reason}}`],
      );
    });
  }

  for (const [method, path, status] of [
    ["HEAD", "/cut-length/head", 200],
    ["GET", "/cut-length/304", 304],
  ] as const) {
    it(`ends a ${status} to ${method} whose head declares a length normally (${path})`, async () => {
      const out = await rawExchange(
        wp.port,
        `${method} ${path} HTTP/1.1\r\nhost: svc.example.com\r\nconnection: close\r\n\r\n`,
      );
      const entry = await entryFor(logs, path);
      assert.match(out, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.deepEqual(
        [entry.response_code, entry.response_flags, entry.response_code_details],
        [status, "-", "via_upstream"],
      );
    });
  }

  it("logs why the connection could not be made, as Envoy's upstream_transport_failure_reason", async () => {
    await request(wp.port, { path: "/down-once?reason" });
    const refused = await entryFor(logs, "/down-once?reason");
    assert.equal(refused.upstream_transport_failure_reason, "delayed_connect_error:_Connection_refused");
    const reset = await entryFor(logs, "/close");
    assert.equal(reset.upstream_transport_failure_reason, "-");
  });

  it("labels the metrics with the access log's flags, in Envoy's order", async () => {
    await request(wp.port, { path: "/down?metrics" });
    await entryFor(logs, "/down?metrics");
    assert.equal(flagLabels.get("503"), "URX,UF");
  });

  /** Sends `path` over HTTP/2 and, once the backend holds it, runs `leave` on the client side. */
  async function leaveHttp2(
    path: string,
    leave: (client: http2.ClientHttp2Session, req: http2.ClientHttp2Stream) => void,
  ): Promise<AccessLogEntry> {
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    client.on("error", () => {});
    const req = client.request({ ":path": path, ":authority": "svc.example.com" });
    req.on("error", () => {});
    await new Promise<void>((resolve) => {
      arrived = (p) => {
        if (p === path) resolve();
      };
    });
    leave(client, req);
    const entry = await entryFor(logs, path);
    client.destroy();
    return entry;
  }

  it("logs an HTTP/2 client's stream reset as DR http2.remote_reset", async () => {
    const entry = await leaveHttp2("/hold/reset", (_client, req) =>
      req.close(http2.constants.NGHTTP2_CANCEL),
    );
    assert.deepEqual(
      [entry.response_code, entry.response_flags, entry.response_code_details],
      [0, "DR", "http2.remote_reset"],
    );
  });

  it("logs an HTTP/2 client's refused stream as DR http2.remote_refuse", async () => {
    const entry = await leaveHttp2("/hold/refuse", (_client, req) =>
      req.close(http2.constants.NGHTTP2_REFUSED_STREAM),
    );
    assert.deepEqual(
      [entry.response_code, entry.response_flags, entry.response_code_details],
      [0, "DR", "http2.remote_refuse"],
    );
  });

  it("logs an HTTP/2 client's connection going away as DC", async () => {
    const entry = await leaveHttp2("/hold/gone", (client) => client.destroy());
    assert.deepEqual(
      [entry.response_code, entry.response_flags, entry.response_code_details],
      [0, "DC", "downstream_remote_disconnect"],
    );
  });
});
