import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { RouterError } from "../src/errors.js";
import { createWaypointHandler } from "../src/waypoint-handler.js";
import {
  type Backend,
  httpRoute,
  rawExchange,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

describe("bad input", () => {
  let a: Backend;
  let wp: Waypoint;
  before(async () => {
    a = await startBackend("a");
    wp = await startWaypoint(
      { "default/a": [a.endpoint] },
      {
        routes: [
          httpRoute("r", [
            {
              matches: [
                { path: { type: "RegularExpression", value: "/re/[a-z]+" } },
                { path: { value: "/ok" } },
              ],
              backendRefs: [{ name: "a", port: 80 }],
            },
          ]),
        ],
        maxHeaderBytes: 8 * 1024,
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
  });

  it("rejects CR/LF header injection with 400 and never forwards it", async () => {
    const before = a.requests.length;
    const out = await rawExchange(
      wp.port,
      "GET /ok HTTP/1.1\r\nhost: svc\r\nx-evil: a\rinjected: 1\r\n\r\n",
      /\r\n\r\n/,
    );
    assert.match(out, /^HTTP\/1\.1 400/);
    const out2 = await rawExchange(
      wp.port,
      "GET /ok HTTP/1.1\r\nhost: svc\r\nx-evil: a\u0000b\r\n\r\n",
      /\r\n\r\n/,
    );
    assert.match(out2, /^HTTP\/1\.1 400/);
    assert.equal(a.requests.length, before);
  });

  it("answers 431 to oversized headers", async () => {
    const out = await rawExchange(
      wp.port,
      `GET /ok HTTP/1.1\r\nhost: svc\r\nx-big: ${"a".repeat(16 * 1024)}\r\n\r\n`,
      /\r\n\r\n/,
    );
    assert.match(out, /^HTTP\/1\.1 431/);
  });

  it("refuses oversized HTTP/2 header blocks without hurting the connection", async () => {
    const client = http2.connect(`http://127.0.0.1:${wp.port}`);
    client.on("error", () => {});
    try {
      const outcome = await new Promise<string>((resolve) => {
        const req = client.request({ ":path": "/ok", ":authority": "svc", "x-big": "a".repeat(16 * 1024) });
        req.on("response", (h) => resolve(`status ${h[":status"]}`));
        req.on("error", (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
        req.on("close", () => resolve(`closed ${req.rstCode}`));
        req.end();
      });
      assert.doesNotMatch(outcome, /status 200/);
      if (!client.destroyed) {
        const ok = await new Promise<number>((resolve, reject) => {
          const req = client.request({ ":path": "/ok", ":authority": "svc" });
          req.on("response", (h) => resolve(Number(h[":status"])));
          req.on("error", reject);
          req.resume();
          req.end();
        });
        assert.equal(ok, 200);
      }
    } finally {
      client.close();
    }
  });

  it("runs regex routes on long hostile paths without blowing up", async () => {
    assert.equal((await request(wp.port, { path: "/re/abc" })).status, 200);
    assert.equal((await request(wp.port, { path: `/re/${"a".repeat(5000)}!` })).status, 404);
  });

  it("rejects invalid and catastrophic routes up front, keeping the current table", () => {
    assert.throws(
      () =>
        wp.handler.setRoutes([
          httpRoute("bad", [{ matches: [{ path: { type: "RegularExpression", value: "(?:a{2}){600}" } }] }]),
        ]),
      (e: unknown) =>
        e instanceof RouterError &&
        e.code === "ERR_REGEX_INVALID" &&
        e.details.field === "spec.rules[0].matches[0].path.value",
    );
    assert.throws(
      () =>
        createWaypointHandler({
          routes: [
            httpRoute("bad", [
              {
                filters: [
                  {
                    type: "RequestHeaderModifier",
                    requestHeaderModifier: { set: [{ name: "x", value: "a\r\nb: c" }] },
                  },
                ],
              },
            ]),
          ],
          connect: () => {
            throw new Error("unused");
          },
          resolveBackend: () => undefined,
        }),
      (e: unknown) => e instanceof RouterError && e.code === "ERR_ROUTE_INVALID",
    );
  });

  it("still serves after all of the above", async () => {
    assert.equal((await request(wp.port, { path: "/ok" })).status, 200);
  });
});
