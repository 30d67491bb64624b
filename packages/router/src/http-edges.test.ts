import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  entryFor,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";
import type { AccessLogEntry } from "./request-log.js";
import type { Endpoint } from "./upstream.js";

const SERVICE = { destination: { service: { name: "svc", namespace: "default" }, port: 80 } };
const PROTOCOL_ERROR = "upstream_reset_before_response_started{protocol_error}";

/** A response an HTTP/2 client saw: status and head, or the code its stream was reset with. */
interface H2Result {
  status: number | undefined;
  headers: http2.IncomingHttpHeaders;
  body: string;
  rstCode: number;
}

function h2Request(port: number, headers: http2.OutgoingHttpHeaders): Promise<H2Result> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(`http://127.0.0.1:${port}`);
    client.on("error", reject);
    const stream = client.request({ ":authority": "svc", ...headers });
    let head: http2.IncomingHttpHeaders = {};
    let body = "";
    stream.on("response", (h) => {
      head = h;
    });
    stream.on("data", (c: Buffer) => {
      body += c.toString();
    });
    stream.on("error", () => {});
    stream.on("close", () => {
      client.close();
      const status = head[":status"] === undefined ? undefined : Number(head[":status"]);
      resolve({ status, headers: head, body, rstCode: stream.rstCode ?? 0 });
    });
    stream.end();
  });
}

/**
 * An HTTP/1.1 backend of raw bytes: every request head it reads is answered with `response(path)`,
 * the connection kept open.
 */
async function rawBackend(
  response: (path: string) => string,
): Promise<{ server: net.Server; endpoint: Endpoint }> {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    let pending = "";
    socket.on("data", (chunk: Buffer) => {
      pending += chunk.toString("latin1");
      for (let end = pending.indexOf("\r\n\r\n"); end !== -1; end = pending.indexOf("\r\n\r\n")) {
        const path = pending.slice(0, end).split(" ")[1] ?? "/";
        pending = pending.slice(end + 4);
        socket.write(response(path));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { server, endpoint: { address: "127.0.0.1", port, protocol: "http1" } };
}

/** An HTTP/2 frame: the 9-byte header and `payload`. */
function h2Frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** `count` distinct header fields for a response head. */
function manyFields(count: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < count; i++) out[`x-field-${i}`] = "v";
  return out;
}

describe("requests without a host, and HTTP/1.0 (Istio's waypoint: no accept_http_10 unless PILOT_HTTP10)", () => {
  let backend: Backend;
  let wp: Waypoint;
  let accepting: Waypoint;
  const logs: AccessLogEntry[] = [];
  const acceptingLogs: AccessLogEntry[] = [];

  before(async () => {
    backend = await startBackend("b");
    wp = await startWaypoint(
      { "default/svc": [backend.endpoint] },
      { routes: [], accessLog: (e) => logs.push(e) },
      SERVICE,
    );
    accepting = await startWaypoint(
      { "default/svc": [backend.endpoint] },
      { routes: [], acceptHttp10: true, accessLog: (e) => acceptingLogs.push(e) },
      SERVICE,
    );
  });
  after(async () => {
    await wp.close();
    await accepting.close();
    await stopServer(backend.server);
  });

  it("answers HTTP/1.0 426 (low_version) and closes, the backend never asked", async () => {
    const before = backend.requests.length;
    const out = await rawExchange(
      wp.port,
      "GET /h10 HTTP/1.0\r\nhost: svc\r\nconnection: keep-alive\r\n\r\n",
    );
    assert.match(out, /^HTTP\/1\.1 426 /);
    const entry = await entryFor(logs, "/h10");
    assert.equal(entry.response_code, 426);
    assert.equal(entry.response_code_details, "low_version");
    assert.equal(entry.protocol, "HTTP/1.0");
    assert.equal(backend.requests.length, before);
  });

  it("with acceptHttp10, forwards HTTP/1.0 with a Host and answers one without a Host 400", async () => {
    const ok = await rawExchange(accepting.port, "GET /h10-host HTTP/1.0\r\nhost: svc\r\n\r\n");
    assert.match(ok, /^HTTP\/1\.1 200 /);
    assert.equal(JSON.parse(ok.slice(ok.indexOf("\r\n\r\n") + 4)).headers.host, "svc");
    const before = backend.requests.length;
    const out = await rawExchange(accepting.port, "GET /h10-nohost HTTP/1.0\r\n\r\n");
    assert.match(out, /^HTTP\/1\.1 400 /);
    const entry = await entryFor(acceptingLogs, "/h10-nohost");
    assert.equal(entry.response_code_details, "missing_host_header");
    assert.equal(backend.requests.length, before);
  });

  it("answers HTTP/1.1 without a Host 400 (missing_host_header), logged", async () => {
    const out = await rawExchange(wp.port, "GET /h11-nohost HTTP/1.1\r\n\r\n", /\r\n\r\n/);
    assert.match(out, /^HTTP\/1\.1 400 /);
    const entry = await entryFor(logs, "/h11-nohost");
    assert.equal(entry.response_code, 400);
    assert.equal(entry.response_code_details, "missing_host_header");
  });

  it("answers an empty Host 400: an http URI has no empty host (RFC 9110 §4.2.1)", async () => {
    const before = backend.requests.length;
    const out = await rawExchange(wp.port, "GET /h11-empty HTTP/1.1\r\nhost:\r\n\r\n", /\r\n\r\n/);
    assert.match(out, /^HTTP\/1\.1 400 /);
    assert.equal((await entryFor(logs, "/h11-empty")).response_code_details, "missing_host_header");
    assert.equal(backend.requests.length, before);
  });

  it("never forwards HTTP/2 without an authority, or with an empty one: Node's server resets those", async () => {
    const before = backend.requests.length;
    // Node's client always sends an authority: these are the frames of a request without one, which
    // Node's HTTP/2 server resets (RST_STREAM PROTOCOL_ERROR) before the handler sees it.
    const path = Buffer.from("/h2-noauth");
    const block = Buffer.from([0x82, 0x86, 0x04, path.length, ...path]);
    // RST_STREAM on stream 1, PROTOCOL_ERROR, as a pattern of escaped bytes.
    const rst = h2Frame(0x3, 0, 1, Buffer.from([0, 0, 0, 1]));
    const reset = new RegExp([...rst].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join(""));
    const out = await rawExchange(
      wp.port,
      Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
        h2Frame(0x4, 0, 0, Buffer.alloc(0)),
        // HEADERS, END_STREAM | END_HEADERS, stream 1.
        h2Frame(0x1, 0x5, 1, block),
      ]),
      reset,
    );
    assert.match(out, reset);
    // An empty authority, or an empty `host` without one (Node's client takes it for the authority): reset too.
    for (const head of [{ ":authority": "" }, { ":authority": undefined, host: "" }]) {
      const empty = await h2Request(wp.port, { ...head, ":path": "/h2-empty" });
      assert.equal(empty.rstCode, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    }
    assert.equal(backend.requests.length, before);
  });
});

describe("response heads that carry no body (204, 304, HEAD)", () => {
  let raw: { server: net.Server; endpoint: Endpoint };
  let wp: Waypoint;
  const logs: AccessLogEntry[] = [];

  before(async () => {
    raw = await rawBackend((path) => {
      if (path === "/204-zero") return "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
      if (path === "/204-five") return "HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n";
      if (path === "/204-chunked") return "HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n";
      if (path === "/304") return "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\netag: x\r\n\r\n";
      return "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
    });
    wp = await startWaypoint(
      { "default/svc": [raw.endpoint] },
      { routes: [], accessLog: (e) => logs.push(e) },
      SERVICE,
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(raw.server);
  });

  it("drops content-length: 0 from a 204, for HTTP/1.1 and HTTP/2 clients", async () => {
    const h1 = await request(wp.port, { path: "/204-zero" });
    assert.equal(h1.status, 204);
    assert.equal(h1.headers["content-length"], undefined);
    const h2 = await h2Request(wp.port, { ":path": "/204-zero" });
    assert.equal(h2.status, 204);
    assert.equal(h2.rstCode, 0);
    assert.equal(h2.headers["content-length"], undefined);
  });

  for (const path of ["/204-five", "/204-chunked"]) {
    it(`answers a 204 that frames a body (${path}) 502 UPE, as a protocol error`, async () => {
      const h2 = await h2Request(wp.port, { ":path": path });
      assert.equal(h2.status, 502);
      assert.equal(h2.rstCode, 0);
      const entry = await entryFor(logs, path);
      assert.equal(entry.response_flags, "UPE");
      assert.equal(entry.response_code_details, PROTOCOL_ERROR);
      const h1 = await request(wp.port, { path });
      assert.equal(h1.status, 502);
    });
  }

  it("keeps the content-length of a 304 (the selected representation's size, RFC 9110 §8.6)", async () => {
    const h2 = await h2Request(wp.port, { ":path": "/304" });
    assert.equal(h2.status, 304);
    assert.equal(h2.rstCode, 0);
    assert.equal(h2.headers["content-length"], "5");
    const h1 = await request(wp.port, { path: "/304" });
    assert.equal(h1.headers["content-length"], "5");
  });

  it("keeps the content-length of a response to HEAD", async () => {
    const h2 = await h2Request(wp.port, { ":path": "/head", ":method": "HEAD" });
    assert.equal(h2.status, 200);
    assert.equal(h2.rstCode, 0);
    assert.equal(h2.headers["content-length"], "5");
  });
});

describe("response heads with more header fields than Envoy's max_headers_count (100)", () => {
  let h1: Backend;
  let h2: http2.Http2Server;
  let wp: Waypoint;
  /** Fields Node's server adds to every head of `h1` (date, connection, keep-alive, framing). */
  let added = 0;
  const logs: AccessLogEntry[] = [];

  before(async () => {
    h1 = await startBackend("many", (req, res) => {
      const count = Number(new URL(req.url ?? "/", "http://x").searchParams.get("n"));
      res.writeHead(200, manyFields(count));
      res.end("many");
    });
    h2 = http2.createServer();
    h2.on("stream", (stream, headers) => {
      const count = Number(new URL(String(headers[":path"]), "http://x").searchParams.get("n"));
      stream.respond({ ":status": 200, ...manyFields(count) });
      stream.end("many");
    });
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    const h2Port = (h2.address() as AddressInfo).port;
    added = await new Promise<number>((resolve, reject) => {
      http
        .get({ port: h1.port, host: "127.0.0.1", path: "/?n=0" }, (res) => {
          res.resume();
          resolve(res.rawHeaders.length / 2);
        })
        .on("error", reject);
    });
    wp = await startWaypoint(
      {
        "default/svc": [h1.endpoint],
        "default/h2": [{ address: "127.0.0.1", port: h2Port, protocol: "http2" }],
      },
      {
        routes: [
          {
            kind: "HTTPRoute",
            metadata: { name: "r", namespace: "default" },
            spec: {
              parentRefs: [{ kind: "Service", name: "svc", port: 80 }],
              rules: [
                {
                  matches: [{ path: { type: "PathPrefix", value: "/h2" } }],
                  backendRefs: [{ name: "h2", port: 80 }],
                },
                { backendRefs: [{ name: "svc", port: 80 }] },
              ],
            },
          },
        ],
        accessLog: (e) => logs.push(e),
      },
      SERVICE,
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(h1.server);
    await new Promise<void>((resolve) => h2.close(() => resolve()));
  });

  it("passes 100 fields on", async () => {
    const r = await h2Request(wp.port, { ":path": `/h1?n=${100 - added}` });
    assert.equal(r.status, 200);
    assert.equal(r.body, "many");
    assert.equal(r.headers[`x-field-${99 - added}`], "v");
  });

  for (const [name, pathOf] of [
    ["an HTTP/1.1 backend's 200 fields", () => "/h1?n=200"],
    ["an HTTP/2 backend's 200 fields", () => "/h2?n=200"],
    ["an HTTP/1.1 backend's 101 fields", () => `/h1?n=${101 - added}`],
  ] as const) {
    it(`answers ${name} 502 UPE (protocol error), to HTTP/2 and HTTP/1.1 clients`, async () => {
      const path = pathOf();
      const r = await h2Request(wp.port, { ":path": path });
      assert.equal(r.rstCode, 0, "not a reset");
      assert.equal(r.status, 502);
      const entry = await entryFor(logs, path);
      assert.equal(entry.response_flags, "UPE");
      assert.equal(entry.response_code_details, PROTOCOL_ERROR);
      const one = await request(wp.port, { path });
      assert.equal(one.status, 502);
      logs.length = 0;
    });
  }
});
