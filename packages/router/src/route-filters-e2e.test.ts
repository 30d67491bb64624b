import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";

/**
 * Route filters as a client of a Service sees them through the waypoint: the tunnel names the Service
 * and its port, as an HBONE CONNECT to the Service's address does.
 */
describe("route filters on a Service port", () => {
  let echo: Backend;
  let wp: Waypoint;
  before(async () => {
    echo = await startBackend("echo");
    wp = await startWaypoint(
      { "mesh/echo": [echo.endpoint] },
      {
        routes: [
          {
            kind: "HTTPRoute",
            metadata: { name: "echo", namespace: "mesh" },
            spec: {
              parentRefs: [{ group: "", kind: "Service", name: "echo" }],
              rules: [
                {
                  matches: [{ path: { type: "PathPrefix", value: "/moved" } }],
                  filters: [{ type: "RequestRedirect", requestRedirect: { hostname: "example.org" } }],
                },
                {
                  matches: [{ path: { type: "PathPrefix", value: "/same-host" } }],
                  filters: [
                    {
                      type: "RequestRedirect",
                      requestRedirect: { path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/new" } },
                    },
                  ],
                },
                {
                  matches: [{ path: { type: "PathPrefix", value: "/old-site" } }],
                  filters: [
                    {
                      type: "RequestRedirect",
                      requestRedirect: { hostname: "new.example.org", statusCode: 301 },
                    },
                    {
                      type: "ResponseHeaderModifier",
                      responseHeaderModifier: {
                        set: [{ name: "cache-control", value: "max-age=60" }],
                        add: [{ name: "x-moved-by", value: "waypoint" }],
                      },
                    },
                  ],
                },
                {
                  matches: [{ path: { type: "PathPrefix", value: "/identity" } }],
                  filters: [
                    {
                      type: "RequestHeaderModifier",
                      requestHeaderModifier: {
                        set: [{ name: "x-user", value: "verified" }],
                        add: [{ name: "x-tag", value: "waypoint" }],
                        remove: ["x-user", "x-tag"],
                      },
                    },
                  ],
                  backendRefs: [{ name: "echo", port: 8080 }],
                },
              ],
            },
          },
        ],
      },
      { destination: { address: "10.96.0.10", port: 8080, service: { name: "echo", namespace: "mesh" } } },
    );
  });
  after(async () => {
    await wp.close();
    await stopServer(echo.server);
  });

  it("redirects to the Service port when the Host names none", async () => {
    const r = await request(wp.port, { path: "/moved/a?x=1", headers: { host: "echo" } });
    assert.equal(r.status, 302);
    assert.equal(r.headers.location, "http://example.org:8080/moved/a?x=1");
    const same = await request(wp.port, { path: "/same-host/b", headers: { host: "echo.mesh" } });
    assert.equal(same.headers.location, "http://echo.mesh:8080/new/b");
  });

  it("applies the rule's response header modifier to its redirect", async () => {
    const r = await request(wp.port, { path: "/old-site/x", headers: { host: "echo:8080" } });
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, "http://new.example.org:8080/old-site/x");
    assert.equal(r.headers["cache-control"], "max-age=60");
    assert.equal(r.headers["x-moved-by"], "waypoint");
    assert.equal(r.body, "");
  });

  it("replaces a client's header with the configured one when a filter removes and sets it", async () => {
    const r = await request(wp.port, {
      path: "/identity",
      headers: { host: "echo:8080", "x-user": "spoofed", "x-tag": "client" },
    });
    assert.equal(r.status, 200);
    const seen = JSON.parse(r.body) as { headers: Record<string, string> };
    assert.equal(seen.headers["x-user"], "verified");
    assert.equal(seen.headers["x-tag"], "waypoint");
  });
});
