import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  httpRoute,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

interface Echo {
  id: string;
  url: string;
  body: string;
  headers: Record<string, string>;
}

describe("filters", () => {
  let a: Backend;
  let shadow: Backend;
  let wp: Waypoint;
  before(async () => {
    a = await startBackend("a", (req, res, body, backend) => {
      res.setHeader("x-upstream", "1");
      res.setHeader("x-secret", "s");
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: backend.id, url: req.url, body, headers: req.headers }));
    });
    shadow = await startBackend("shadow", (_req, res) => {
      // A slow, failing mirror must not affect the main response.
      setTimeout(() => {
        res.writeHead(500);
        res.end("mirror failed");
      }, 50);
    });
    wp = await startWaypoint(
      { "default/a": [a.endpoint], "default/shadow": [shadow.endpoint] },
      {
        routes: [
          httpRoute("filters", [
            {
              matches: [{ path: { value: "/headers" } }],
              filters: [
                {
                  type: "RequestHeaderModifier",
                  requestHeaderModifier: {
                    set: [{ name: "x-set", value: "set" }],
                    add: [{ name: "x-add", value: "two" }],
                    remove: ["x-remove"],
                  },
                },
                {
                  type: "ResponseHeaderModifier",
                  responseHeaderModifier: { add: [{ name: "x-resp", value: "added" }], remove: ["x-secret"] },
                },
              ],
              backendRefs: [
                {
                  name: "a",
                  port: 80,
                  filters: [
                    {
                      type: "RequestHeaderModifier",
                      requestHeaderModifier: { set: [{ name: "x-backend-filter", value: "yes" }] },
                    },
                  ],
                },
              ],
            },
            {
              matches: [{ path: { value: "/old" } }],
              filters: [
                {
                  type: "RequestRedirect",
                  requestRedirect: {
                    scheme: "https",
                    hostname: "new.example.com",
                    statusCode: 301,
                    path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/new" },
                  },
                },
              ],
            },
            {
              matches: [{ path: { type: "Exact", value: "/moved" } }],
              filters: [
                {
                  type: "RequestRedirect",
                  requestRedirect: {
                    port: 8443,
                    path: { type: "ReplaceFullPath", replaceFullPath: "/there" },
                  },
                },
              ],
            },
            {
              matches: [{ path: { value: "/v1" } }],
              filters: [
                {
                  type: "URLRewrite",
                  urlRewrite: {
                    hostname: "internal.example.com",
                    path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/api/v2" },
                  },
                },
              ],
              backendRefs: [{ name: "a", port: 80 }],
            },
            {
              matches: [{ path: { value: "/full" } }],
              filters: [
                {
                  type: "URLRewrite",
                  urlRewrite: { path: { type: "ReplaceFullPath", replaceFullPath: "/replaced" } },
                },
              ],
              backendRefs: [{ name: "a", port: 80 }],
            },
            {
              matches: [{ path: { value: "/mirror" } }],
              filters: [
                { type: "RequestMirror", requestMirror: { backendRef: { name: "shadow", port: 80 } } },
              ],
              backendRefs: [{ name: "a", port: 80 }],
            },
          ]),
        ],
      },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(a.server);
    await stopServer(shadow.server);
  });

  it("modifies request and response headers", async () => {
    const r = await request(wp.port, {
      path: "/headers",
      headers: { "x-set": "original", "x-add": "one", "x-remove": "gone" },
    });
    assert.equal(r.status, 200);
    const echo = JSON.parse(r.body) as Echo;
    assert.equal(echo.headers["x-set"], "set");
    assert.equal(echo.headers["x-add"], "one,two");
    assert.equal(echo.headers["x-remove"], undefined);
    assert.equal(echo.headers["x-backend-filter"], "yes");
    assert.equal(r.headers["x-resp"], "added");
    assert.equal(r.headers["x-secret"], undefined);
    assert.equal(r.headers["x-upstream"], "1");
  });

  it("redirects", async () => {
    const r = await request(wp.port, { path: "/old/page?q=1" });
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, "https://new.example.com/new/page?q=1");
    const r2 = await request(wp.port, { path: "/moved", headers: { host: "svc.example.com:8080" } });
    assert.equal(r2.status, 302);
    assert.equal(r2.headers.location, "http://svc.example.com:8443/there");
  });

  it("rewrites prefix, full path and host", async () => {
    const echo = JSON.parse((await request(wp.port, { path: "/v1/users?x=1" })).body) as Echo;
    assert.equal(echo.url, "/api/v2/users?x=1");
    assert.equal(echo.headers.host, "internal.example.com");
    const full = JSON.parse((await request(wp.port, { path: "/full/a/b" })).body) as Echo;
    assert.equal(full.url, "/replaced");
    assert.equal(full.headers.host, "svc.example.com");
  });

  it("mirrors requests with their body without affecting the response", async () => {
    const r = await request(wp.port, { method: "POST", path: "/mirror/x", body: "mirrored body" });
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as Echo).body, "mirrored body");
    for (let i = 0; i < 100 && shadow.requests.length === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(shadow.requests.length, 1);
    assert.equal(shadow.requests[0]?.body, "mirrored body");
    assert.equal(shadow.requests[0]?.headers.host, "svc.example.com-shadow");
  });
});
