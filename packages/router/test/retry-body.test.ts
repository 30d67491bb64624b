import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { RequestBody } from "../src/request-body.js";
import type { AccessLogEntry } from "../src/request-log.js";
import { entryFor, httpRoute, startWaypoint, stopServer, type Waypoint } from "./harness.js";

/**
 * A request body streamed to a first attempt that is answered 503 part-way: the retry must get the
 * whole body or not happen at all, never a body cut short.
 */
describe("request bodies of retried requests", () => {
  /** The bytes the client sends before the first attempt answers, then the rest. */
  const FIRST = Buffer.alloc(8 * 1024, 1);
  /** Four times the retry buffer: the body as a whole can never be replayed. */
  const REST = Buffer.alloc(256 * 1024, 2);
  const WHOLE = Buffer.concat([FIRST, REST]);
  const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

  let backend: http.Server;
  let wp: Waypoint;
  let attempts = 0;
  /** Resolved once the backend has answered the first attempt. */
  let firstAnswered: Promise<void> = Promise.resolve();
  let markFirstAnswered = () => {};
  const logs: AccessLogEntry[] = [];

  before(async () => {
    // The first attempt of each request is answered 503 once the client's first bytes are in; the
    // second answers what it received.
    backend = http.createServer((req, res) => {
      const n = ++attempts;
      const hash = createHash("sha256");
      let got = 0;
      req.on("error", () => {});
      req.on("data", (c: Buffer) => {
        got += c.length;
        hash.update(c);
        if (n === 1 && got >= FIRST.length && !res.headersSent) {
          res.writeHead(503, { "content-type": "text/plain", "content-length": "9" });
          res.end("try again");
          markFirstAnswered();
        }
      });
      req.on("end", () => {
        if (!res.headersSent) res.end(JSON.stringify({ got, sha: hash.digest("hex") }));
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
    const endpoint = {
      address: "127.0.0.1",
      port: (backend.address() as AddressInfo).port,
      protocol: "http1" as const,
    };
    wp = await startWaypoint(
      { "default/upload": [endpoint] },
      {
        retryBufferBytes: 64 * 1024,
        accessLog: (e) => logs.push(e),
        routes: [
          httpRoute("r", [
            {
              backendRefs: [{ name: "upload", port: 80 }],
              // A long back-off, so the client's remaining bytes arrive while the retry waits.
              retry: { attempts: 2, codes: [503], backoff: "1s" },
            },
          ]),
        ],
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(backend);
  });

  /**
   * POSTs FIRST, waits until the first attempt was answered, then sends REST: those bytes reach the
   * waypoint while it backs off before the retry.
   */
  async function upload(path: string, contentLength: boolean): Promise<{ status: number; body: string }> {
    attempts = 0;
    firstAnswered = new Promise<void>((resolve) => {
      markFirstAnswered = resolve;
    });
    const req = http.request({
      host: "127.0.0.1",
      port: wp.port,
      method: "POST",
      path,
      agent: false,
      headers: {
        host: "upload.example.com",
        ...(contentLength ? { "content-length": WHOLE.length } : {}),
      },
    });
    const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error("no complete response within 10 s"));
      }, 10_000);
      req.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() });
        });
        res.on("error", reject);
      });
    });
    req.write(FIRST);
    await firstAnswered;
    req.end(REST);
    return response;
  }

  for (const contentLength of [false, true]) {
    const framing = contentLength ? "content-length" : "chunked";
    it(`replays the whole body to the retry when more of it arrives during the back-off (${framing})`, async () => {
      const r = await upload(`/whole-${framing}`, contentLength);
      assert.equal(r.status, 200, r.body);
      assert.deepEqual(JSON.parse(r.body), { got: WHOLE.length, sha: sha(WHOLE) });
      assert.equal(attempts, 2);
    });
  }

  it("answers with the last attempt's response when the body can no longer be replayed after the back-off", async () => {
    // Stands in for a body that kept being read while no attempt took it and outgrew the retry
    // buffer: it cannot be sent again once the back-off is over.
    const detach = Object.getOwnPropertyDescriptor(RequestBody.prototype, "detach");
    assert.ok(detach !== undefined);
    RequestBody.prototype.detach = function (this: RequestBody) {
      const internals = this as unknown as { target: unknown; chunks: Buffer[] };
      internals.target = undefined;
      internals.chunks = [];
      this.replayable = false;
    };
    try {
      const r = await upload("/not-replayable", false);
      assert.equal(r.status, 503);
      assert.equal(r.body, "try again");
      assert.equal(attempts, 1, "no retry went out");
      const entry = await entryFor(logs, "/not-replayable");
      assert.equal(entry.response_code, 503);
      assert.equal(entry.response_flags, "-");
      assert.equal(entry.response_code_details, "via_upstream");
    } finally {
      Object.defineProperty(RequestBody.prototype, "detach", detach);
    }
  });
});
