import assert from "node:assert/strict";
import type http from "node:http";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type Backend,
  closedPort,
  entryFor,
  httpRoute,
  rawExchange,
  request,
  prefixRule as rule,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "../test/harness.js";
import type { AccessLogEntry } from "./request-log.js";

describe("response code details of every answer", () => {
  let backend: Backend;
  let wp: Waypoint;
  let idleWp: Waypoint;
  const logs: AccessLogEntry[] = [];
  const held: http.ServerResponse[] = [];
  let arrived: (path: string) => void = () => {};

  before(async () => {
    backend = await startBackend("b", (req, res) => {
      const path = req.url ?? "";
      arrived(path);
      if (path.startsWith("/ok")) {
        res.end("ok");
      } else if (path.startsWith("/reset")) {
        req.socket.destroy();
      } else if (path.startsWith("/late-reset")) {
        res.writeHead(200, { "content-length": "100" });
        res.write("partial", () => req.socket.destroy());
      } else {
        // Never answered: the proxy's timers or the client end it.
        held.push(res);
      }
    });
    const down = { address: "127.0.0.1", port: await closedPort(), protocol: "http1" as const };
    const services = {
      "default/svc": [backend.endpoint],
      "default/empty": [],
      "default/down": [down],
      "default/missing": undefined,
    };
    wp = await startWaypoint(
      services,
      {
        routes: [
          httpRoute("r", [
            rule("/ok", "svc"),
            rule("/reset", "svc"),
            rule("/late-reset", "svc"),
            rule("/hang-request", "svc", { timeouts: { request: "100ms" } }),
            rule("/hang-try", "svc", {
              timeouts: { request: "30s", backendRequest: "100ms" },
              retry: { attempts: 0 },
            }),
            rule("/hang-route", "svc", { timeouts: { request: "30s", backendRequest: "100ms" } }),
            rule("/hang-client", "svc"),
            rule("/redirect", undefined, {
              filters: [{ type: "RequestRedirect", requestRedirect: { hostname: "elsewhere.example" } }],
            }),
            rule("/no-backend", undefined),
            rule("/zero", undefined, { backendRefs: [{ name: "svc", port: 80, weight: 0 }] }),
            rule("/empty", "empty"),
            rule("/down", "down"),
            rule("/missing", "missing"),
            rule("/denied", "svc"),
            rule("/jwt", "svc"),
            rule("/bad", "svc"),
          ]),
        ],
        maxHeaderBytes: 4096,
        accessLog: (entry) => logs.push(entry),
        authenticate: (input) =>
          input.headers.authorization === undefined
            ? { kind: "anonymous" }
            : { kind: "rejected", reason: "bad signature" },
        policy: {
          evaluate: (r) =>
            r.http?.path === "/denied"
              ? { allowed: false, reason: "", policy: "default/deny", action: "DENY", rule: 0 }
              : { allowed: true, reason: "" },
        },
      },
      { peerIdentity: "spiffe://cluster.local/ns/default/sa/client" },
    );
    idleWp = await startWaypoint(
      services,
      {
        routes: [httpRoute("idle", [rule("/hang-idle", "svc")])],
        streamIdleTimeoutMs: 100,
        accessLog: (entry) => logs.push(entry),
      },
      {},
    );
  });

  after(async () => {
    for (const res of held) res.destroy();
    await wp.close();
    await idleWp.close();
    await stopServer(backend.server);
  });

  const cases: {
    name: string;
    path: string;
    send?: (path: string) => Promise<unknown>;
    want: [status: number, flags: string, details: string];
  }[] = [
    { name: "a backend's response", path: "/ok", want: [200, "-", "via_upstream"] },
    { name: "no route", path: "/nowhere", want: [404, "NR", "route_not_found"] },
    { name: "a redirect", path: "/redirect", want: [302, "-", "direct_response"] },
    { name: "a rule without backends", path: "/no-backend", want: [500, "-", "direct_response"] },
    { name: "backends all of weight 0", path: "/zero", want: [500, "-", "direct_response"] },
    { name: "a backend not known", path: "/missing", want: [500, "-", "cluster_not_found"] },
    { name: "a backend without endpoints", path: "/empty", want: [503, "UH", "no_healthy_upstream"] },
    {
      name: "connections refused, retried",
      path: "/down",
      want: [
        503,
        "URX,UF",
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
      ],
    },
    {
      name: "a connection closed before the response",
      path: "/reset",
      want: [503, "UC", "upstream_reset_before_response_started{connection_termination}"],
    },
    {
      name: "a connection closed in the response body",
      path: "/late-reset",
      send: (path) => rawExchange(wp.port, `GET ${path} HTTP/1.1\r\nhost: svc.example.com\r\n\r\n`),
      want: [200, "UC", "upstream_reset_after_response_started{connection_termination}"],
    },
    { name: "the request timeout", path: "/hang-request", want: [504, "UT", "response_timeout"] },
    {
      name: "the backend request timeout beside a retry stanza",
      path: "/hang-try",
      want: [504, "UT", "upstream_per_try_timeout"],
    },
    {
      name: "the backend request timeout without a retry stanza (the route's timeout)",
      path: "/hang-route",
      want: [504, "UT", "response_timeout"],
    },
    {
      name: "the stream idle timeout",
      path: "/hang-idle",
      send: (path) => request(idleWp.port, { path }),
      want: [504, "SI", "stream_idle_timeout"],
    },
    {
      name: "a client that leaves before the response",
      path: "/hang-client",
      send: (path) =>
        new Promise<void>((resolve) => {
          const socket = net.connect(wp.port, "127.0.0.1");
          arrived = (p) => {
            if (p === path) socket.destroy();
          };
          socket.on("close", () => resolve());
          socket.on("error", () => {});
          socket.write(`GET ${path} HTTP/1.1\r\nhost: svc.example.com\r\n\r\n`);
        }),
      want: [0, "DC", "downstream_remote_disconnect"],
    },
    {
      name: "a rejected credential",
      path: "/jwt",
      send: (path) => request(wp.port, { path, headers: { authorization: "Bearer forged" } }),
      want: [401, "-", "jwt_authn_access_denied{Jwt_verification_fails}"],
    },
    {
      name: "a policy denial (unchanged)",
      path: "/denied",
      want: [403, "-", "rbac_access_denied_matched_policy[ns[default]-policy[deny]-rule[0]]"],
    },
    {
      name: "a path that cannot be normalized",
      path: "/bad%zz",
      want: [400, "-", "path_normalization_failed"],
    },
    {
      name: "a header list over the limit",
      path: "/bad-headers",
      send: (path) => {
        const headers: Record<string, string> = {};
        for (let i = 0; i < 150; i++) headers[`x-h${i}`] = "v";
        return request(wp.port, { path, headers });
      },
      want: [431, "-", "http1.headers_too_large"],
    },
    {
      name: "an upgrade request with a body",
      path: "/ok-upgrade",
      send: (path) =>
        rawExchange(
          wp.port,
          `GET ${path} HTTP/1.1\r\nhost: svc.example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: 3\r\n\r\nabc`,
        ),
      want: [400, "-", "upgrade_failed"],
    },
  ];

  for (const c of cases) {
    it(`names ${c.name} as Envoy does`, async () => {
      await (c.send ?? ((path: string) => request(wp.port, { path })))(c.path);
      const entry = await entryFor(logs, c.path);
      assert.deepEqual([entry.response_code, entry.response_flags, entry.response_code_details], c.want);
      assert.equal(entry.connection_termination_details, "-");
    });
  }
});
