import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { RouterError } from "../src/errors.js";
import type { AccessLogEntry } from "../src/request-log.js";
import { ISTIO_TCP_LABELS } from "../src/request-metrics.js";
import type { MetricsSink } from "../src/telemetry.js";
import { createWaypointHandler } from "../src/waypoint-handler.js";
import {
  type Backend,
  httpRoute,
  request,
  startBackend,
  startWaypoint,
  stopServer,
  type Waypoint,
} from "./harness.js";

describe("Service attachment, default routes and live route updates", () => {
  let reviews: Backend;
  let reviewsV2: Backend;
  let ratings: Backend;
  let wp: Waypoint;
  before(async () => {
    reviews = await startBackend("reviews");
    reviewsV2 = await startBackend("reviews-v2");
    ratings = await startBackend("ratings");
    wp = await startWaypoint(
      {
        "bookinfo/reviews": [reviews.endpoint],
        "bookinfo/reviews-v2": [reviewsV2.endpoint],
        "bookinfo/ratings": [ratings.endpoint],
      },
      {
        routes: [
          {
            kind: "HTTPRoute",
            metadata: { name: "reviews", namespace: "bookinfo" },
            spec: {
              parentRefs: [{ group: "", kind: "Service", name: "reviews", port: 9080 }],
              rules: [
                {
                  matches: [{ headers: [{ name: "end-user", value: "jason" }] }],
                  backendRefs: [{ name: "reviews-v2", port: 9080 }],
                },
              ],
            },
          },
        ],
      },
      {
        destination: {
          address: "10.96.0.20",
          port: 9080,
          service: { name: "reviews", namespace: "bookinfo" },
        },
      },
    );
  });
  after(async () => {
    await wp.close();
    await Promise.all([reviews, reviewsV2, ratings].map((b) => stopServer(b.server)));
  });

  it("applies routes attached to the destination Service and 404s unmatched requests", async () => {
    assert.equal(
      (await request(wp.port, { path: "/r", headers: { "end-user": "jason" } })).headers["x-backend"],
      "reviews-v2",
    );
    assert.equal((await request(wp.port, { path: "/r" })).status, 404);
  });

  it("routes a Service without routes to itself on the destination port", async () => {
    wp.info.destination = {
      address: "10.96.0.30",
      port: 9080,
      service: { name: "ratings", namespace: "bookinfo" },
    };
    try {
      const r = await request(wp.port, { path: "/ratings/1" });
      assert.equal(r.status, 200);
      assert.equal(r.headers["x-backend"], "ratings");
    } finally {
      wp.info.destination = {
        address: "10.96.0.20",
        port: 9080,
        service: { name: "reviews", namespace: "bookinfo" },
      };
    }
  });

  it("swaps routes live and keeps the old table when new routes are invalid", async () => {
    wp.handler.setRoutes([
      {
        kind: "HTTPRoute",
        metadata: { name: "reviews", namespace: "bookinfo" },
        spec: {
          parentRefs: [{ group: "", kind: "Service", name: "reviews" }],
          rules: [{ backendRefs: [{ name: "reviews", port: 9080 }] }],
        },
      },
    ]);
    assert.equal((await request(wp.port, { path: "/r" })).headers["x-backend"], "reviews");
    assert.throws(
      () => wp.handler.setRoutes([httpRoute("bad", [{ matches: [{ method: "BREW" }] }])]),
      RouterError,
    );
    assert.equal((await request(wp.port, { path: "/r" })).headers["x-backend"], "reviews");
  });

  it("rejects bad options", () => {
    assert.throws(
      () =>
        createWaypointHandler({ routes: [], connect: undefined as never, resolveBackend: () => undefined }),
      (e: unknown) => e instanceof RouterError && e.code === "ERR_OPTIONS_INVALID",
    );
    assert.throws(
      () =>
        createWaypointHandler({
          routes: [],
          connect: () => undefined as never,
          resolveBackend: () => undefined,
          loadBalancing: "random" as never,
        }),
      (e: unknown) => e instanceof RouterError && e.code === "ERR_OPTIONS_INVALID",
    );
  });
});

describe("default route of a Service without routes", () => {
  it("keeps balancing across its endpoints from one request to the next", async () => {
    const a = await startBackend("details-a");
    const b = await startBackend("details-b");
    const wp = await startWaypoint(
      { "bookinfo/details": [a.endpoint, b.endpoint] },
      { routes: [], loadBalancing: "round-robin" },
      { destination: { port: 9080, service: { name: "details", namespace: "bookinfo" } } },
    );
    try {
      const seen: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await request(wp.port, { path: "/details/1" });
        assert.equal(r.status, 200);
        seen.push(String(r.headers["x-backend"]));
      }
      assert.deepEqual(
        seen.filter((_, i) => i % 2 === 0),
        Array(3).fill(seen[0]),
      );
      assert.deepEqual(
        seen.filter((_, i) => i % 2 === 1),
        Array(3).fill(seen[1]),
      );
      assert.notEqual(seen[0], seen[1]);
    } finally {
      await wp.close();
      await Promise.all([a, b].map((s) => stopServer(s.server)));
    }
  });
});

describe("a tunnel addressed to a workload (its own waypoint)", () => {
  it("sends requests without a route of their own to the original destination, and 404s without one", async () => {
    const db = await startBackend("db-0");
    const entries: { upstream_cluster: string; route_name: string; upstream_host: string }[] = [];
    const counted: Record<string, string | number>[] = [];
    const metrics: MetricsSink = {
      counter: (name) => ({
        inc: (labels) =>
          name === "istio_requests_total" && labels !== undefined && counted.push({ ...labels }),
      }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const wp = await startWaypoint(
      {},
      { routes: [], accessLog: (e) => entries.push(e), metrics },
      {
        destination: {
          address: db.endpoint.address,
          port: db.endpoint.port,
          endpoint: {
            ...db.endpoint,
            workload: { name: "db", namespace: "data", principal: "spiffe://cluster.local/ns/data/sa/db" },
          },
        },
      },
    );
    try {
      for (let i = 0; i < 2; i++) {
        const r = await request(wp.port, { path: "/rows" });
        assert.equal(r.status, 200);
        assert.equal(r.headers["x-backend"], "db-0");
      }
      assert.deepEqual(
        entries.map((e) => [e.upstream_cluster, e.route_name, e.upstream_host]),
        Array(2).fill([
          `inbound-pod|${db.endpoint.port}||${db.endpoint.address}`,
          "default",
          `${db.endpoint.address}:${db.endpoint.port}`,
        ]),
      );
      assert.equal(counted[0]?.destination_service, "unknown", "no Service");
      assert.equal(counted[0]?.destination_workload, "db");

      // Without the endpoint (and without a Service) nothing routes it.
      wp.info.destination = { address: db.endpoint.address, port: db.endpoint.port };
      assert.equal((await request(wp.port, { path: "/rows" })).status, 404);
    } finally {
      await wp.close();
      await stopServer(db.server);
    }
  });
});

describe("a tunnel whose bytes are not HTTP (opaqueTcp)", () => {
  /** A TCP backend that answers everything it got, once the client has half-closed. */
  async function tcpBackend(name: string) {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => chunks.push(c));
      socket.on("end", () => socket.end(`${name} got ${Buffer.concat(chunks).toString("hex")}`));
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { server, endpoint: { address: "127.0.0.1", port: (server.address() as net.AddressInfo).port } };
  }

  /** Sends `bytes` through the waypoint, half-closes, and reads until the waypoint closes. */
  async function send(port: number, bytes: Buffer): Promise<string> {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => {});
    socket.write(bytes.subarray(0, 1));
    await new Promise((r) => setTimeout(r, 20));
    socket.end(bytes.subarray(1));
    await once(socket, "close");
    return Buffer.concat(chunks).toString();
  }

  const postgresStartup = Buffer.from("0000000804d2162f", "hex");
  const HALF_OPEN = { allowHalfOpen: true };

  it("carries it as TCP to the Service's endpoint, or the workload's, with half-close", async () => {
    const db = await tcpBackend("db-0");
    const wp = await startWaypoint(
      { "data/db": [db.endpoint] },
      { routes: [], opaqueTcp: true },
      { destination: { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } } },
      HALF_OPEN,
    );
    try {
      assert.equal(await send(wp.port, postgresStartup), `db-0 got ${postgresStartup.toString("hex")}`);
      wp.info.destination = { address: db.endpoint.address, port: db.endpoint.port, endpoint: db.endpoint };
      assert.equal(
        await send(wp.port, Buffer.from("*1\r\n$4\r\nPING\r\n")),
        `db-0 got ${Buffer.from("*1\r\n$4\r\nPING\r\n").toString("hex")}`,
      );
      // HTTP is still HTTP: routed (here to nothing: 404), not piped; so is what a server might read as
      // HTTP (empty lines first), and a lower-case method is refused as HTTP, never piped around policy.
      wp.info.destination = { address: "10.0.0.9", port: 80 };
      for (const text of ["GET / HTTP/1.1", "\r\nGET / HTTP/1.1"]) {
        const head = await send(wp.port, Buffer.from(`${text}\r\nhost: db\r\nconnection: close\r\n\r\n`));
        assert.match(head, /^HTTP\/1\.1 404 /, JSON.stringify(text));
      }
      wp.info.destination = { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } };
      const lower = await send(wp.port, Buffer.from("get /admin HTTP/1.1\r\nhost: db\r\n\r\n"));
      assert.match(lower, /^HTTP\/1\.1 400 /);
      // A port declared HTTP is HTTP only.
      wp.info.destination = { ...wp.info.destination, httpOnly: true };
      assert.match(await send(wp.port, postgresStartup), /^HTTP\/1\.1 400 /);
    } finally {
      await wp.close();
      await stopServer(db.server);
    }
  });

  it("closes a tunnel after tcpIdleTimeoutMs without a byte either way, and not one that carries bytes", async () => {
    // An echo that never ends a connection itself.
    const echo = net.createServer((socket) => {
      socket.on("error", () => {});
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    const endpoint = { address: "127.0.0.1", port: (echo.address() as net.AddressInfo).port };
    const wp = await startWaypoint(
      { "data/db": [endpoint] },
      { routes: [], opaqueTcp: true, tcpIdleTimeoutMs: 1000 },
      { destination: { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } } },
      HALF_OPEN,
    );
    const open = async () => {
      const socket = net.connect({ port: wp.port, host: "127.0.0.1" });
      socket.on("error", () => {});
      const echoed: Buffer[] = [];
      socket.on("data", (c: Buffer) => echoed.push(c));
      // Destroyed by the waypoint: a reset, so the close is awaited without its error.
      const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(performance.now())));
      socket.write(postgresStartup);
      while (Buffer.concat(echoed).length < postgresStartup.length)
        await new Promise((r) => setTimeout(r, 10));
      return { socket, closed, echoed };
    };
    try {
      const idle = await open();
      const busy = await open();
      const started = performance.now();
      // The busy one sends a byte every 100 ms for 1.5 s: longer than an idle period, never idle for one.
      for (let i = 0; i < 15; i++) {
        await new Promise((r) => setTimeout(r, 100));
        busy.socket.write("x");
      }
      const idleClosedAt = await Promise.race([
        idle.closed,
        new Promise<number>((r) => setTimeout(() => r(-1), 3000)),
      ]);
      assert.ok(idleClosedAt > 0, "the idle tunnel is still open");
      assert.ok(
        idleClosedAt - started < 2500,
        `idle tunnel closed after ${Math.round(idleClosedAt - started)} ms`,
      );
      assert.equal(busy.socket.destroyed, false, "the busy tunnel was closed");
      // Every byte it sent came back (the last one may still be on its way).
      for (let i = 0; i < 50 && Buffer.concat(busy.echoed).length < postgresStartup.length + 15; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(Buffer.concat(busy.echoed).length, postgresStartup.length + 15);
      // Once it stops, it is closed too.
      const stoppedAt = performance.now();
      const busyClosedAt = await busy.closed;
      assert.ok(
        busyClosedAt - stoppedAt >= 800,
        `closed ${Math.round(busyClosedAt - stoppedAt)} ms after its last byte`,
      );
    } finally {
      await wp.close();
      await stopServer(echo);
    }
  });

  it("takes a reset while the upstream is still connecting as a close", async () => {
    const db = await tcpBackend("db-0");
    const wp = await startWaypoint(
      { "data/db": [db.endpoint] },
      {
        routes: [],
        opaqueTcp: true,
        connect: async (ep) => {
          await new Promise((r) => setTimeout(r, 100));
          return net.connect(ep.port, ep.address);
        },
      },
      { destination: { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } } },
      HALF_OPEN,
    );
    try {
      const socket = net.connect({ port: wp.port, host: "127.0.0.1" });
      socket.on("error", () => {});
      await once(socket, "connect");
      socket.write(postgresStartup);
      await new Promise((r) => setTimeout(r, 20));
      socket.resetAndDestroy();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await send(wp.port, postgresStartup), `db-0 got ${postgresStartup.toString("hex")}`);
    } finally {
      await wp.close();
      await stopServer(db.server);
    }
  });

  it("counts each TCP tunnel in Istio's TCP metrics and logs it once, refusals included", async () => {
    const db = await tcpBackend("db-0");
    const counted: { name: string; labels: Record<string, string | number>; value: number }[] = [];
    const metrics: MetricsSink = {
      counter: (name) => ({
        inc: (labels, value) => counted.push({ name, labels: { ...labels }, value: value ?? 1 }),
      }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const entries: AccessLogEntry[] = [];
    const peer = "spiffe://cluster.local/ns/a/sa/client";
    const wp = await startWaypoint(
      {
        "data/db": [
          {
            ...db.endpoint,
            workload: { name: "db", namespace: "data", principal: "spiffe://cluster.local/ns/data/sa/db" },
          },
        ],
      },
      {
        routes: [],
        opaqueTcp: true,
        metrics,
        accessLog: (e) => entries.push(e),
        policy: {
          evaluate: (r) =>
            r.source.identity === peer
              ? { allowed: true, reason: "ok", policy: "data/allow-client", action: "ALLOW" }
              : { allowed: false, reason: "nope" },
        },
      },
      {
        peerIdentity: peer,
        source: { name: "client", namespace: "a" },
        destination: { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } },
      },
      HALF_OPEN,
    );
    try {
      const reply = await send(wp.port, postgresStartup);
      await new Promise((r) => setTimeout(r, 50));
      const sum = (name: string) => counted.filter((c) => c.name === name).reduce((n, c) => n + c.value, 0);
      assert.equal(sum("istio_tcp_connections_opened_total"), 1);
      assert.equal(sum("istio_tcp_connections_closed_total"), 1);
      assert.equal(sum("istio_tcp_received_bytes_total"), postgresStartup.length);
      assert.equal(sum("istio_tcp_sent_bytes_total"), Buffer.byteLength(reply));
      assert.equal(sum("istio_requests_total"), 0, "no request metrics for TCP");
      const labels = counted.find((c) => c.name === "istio_tcp_connections_opened_total")?.labels;
      assert.deepEqual(Object.keys(labels ?? {}).sort(), [...ISTIO_TCP_LABELS].sort());
      assert.equal(labels?.reporter, "waypoint");
      assert.equal(labels?.request_protocol, "tcp");
      assert.equal(labels?.response_flags, "-");
      assert.equal(labels?.source_workload, "client");
      assert.equal(labels?.source_principal, peer);
      assert.equal(labels?.destination_workload, "db");
      assert.equal(labels?.destination_service, "db.data.svc.cluster.local");
      assert.equal(labels?.connection_security_policy, "mutual_tls");
      assert.equal(entries.length, 1);
      const entry = entries[0] as AccessLogEntry;
      assert.equal(entry.method, "-");
      assert.equal(entry.protocol, "-");
      assert.equal(entry.response_code, 0);
      assert.equal(entry.response_flags, "-");
      assert.equal(entry.bytes_received, postgresStartup.length);
      assert.equal(entry.bytes_sent, Buffer.byteLength(reply));
      assert.equal(entry.upstream_host, `${db.endpoint.address}:${db.endpoint.port}`);
      assert.equal(entry.upstream_cluster, "outbound|5432||db.data.svc.cluster.local");
      assert.equal(entry.downstream_local_address, "10.96.0.40:5432");
      assert.equal(entry.source_principal, peer);
      assert.equal(entry.destination_principal, "spiffe://cluster.local/ns/data/sa/db");
      assert.deepEqual(entry.authorization, {
        result: "allowed",
        policy: "data/allow-client",
        action: "ALLOW",
      });

      // Refused: counted opened and closed with why, no bytes, and logged.
      counted.length = 0;
      wp.info.peerIdentity = "spiffe://cluster.local/ns/a/sa/other";
      assert.equal(await send(wp.port, postgresStartup), "");
      wp.info.peerIdentity = peer;
      wp.info.destination = { address: "10.0.0.9", port: 1 };
      assert.equal(await send(wp.port, postgresStartup), "");
      await new Promise((r) => setTimeout(r, 50));
      const flags = counted
        .filter((c) => c.name === "istio_tcp_connections_closed_total")
        .map((c) => c.labels.response_flags);
      // Envoy has no response flag for a policy denial: the network RBAC filter leaves the reason in
      // the connection's termination details instead.
      assert.deepEqual(flags, ["-", "NR"]);
      assert.equal(sum("istio_tcp_connections_opened_total"), 2);
      assert.equal(sum("istio_tcp_received_bytes_total") + sum("istio_tcp_sent_bytes_total"), 0);
      assert.deepEqual(
        entries
          .slice(1)
          .map((e) => [
            e.response_flags,
            e.upstream_cluster,
            e.bytes_received,
            e.response_code_details,
            e.connection_termination_details,
          ]),
        [
          ["-", "-", 0, "-", "rbac_access_denied_matched_policy[none]"],
          ["NR", "-", 0, "-", "-"],
        ],
      );
      assert.equal(entry.response_code_details, "-");
      assert.equal(entry.connection_termination_details, "-");
      assert.deepEqual((entries[1] as AccessLogEntry).authorization, {
        result: "denied",
        policy: "-",
        action: "-",
      });
    } finally {
      await wp.close();
      await stopServer(db.server);
    }
  });

  it("adds an open TCP tunnel's bytes to the counters while it is open", { timeout: 20_000 }, async () => {
    const echo = net.createServer((socket) => {
      // The tunnel cut at the end (the client gone, the handler closed) reaches this side as a reset.
      socket.on("error", () => {});
      socket.pipe(socket);
    });
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    const endpoint = { address: "127.0.0.1", port: (echo.address() as net.AddressInfo).port };
    const received: number[] = [];
    const metrics: MetricsSink = {
      counter: (name) => ({
        inc: (_labels, value) => {
          if (name === "istio_tcp_received_bytes_total") received.push(value ?? 1);
        },
      }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const wp = await startWaypoint(
      { "data/cache": [endpoint] },
      { routes: [], opaqueTcp: true, metrics },
      { destination: { address: "10.96.0.41", port: 6379, service: { name: "cache", namespace: "data" } } },
    );
    const socket = net.connect({ port: wp.port, host: "127.0.0.1" });
    try {
      socket.on("error", () => {});
      await once(socket, "connect");
      socket.write("*1\r\n$4\r\nPING\r\n");
      await once(socket, "data");
      // Still open: the report every 5 s carries the bytes so far.
      const deadline = Date.now() + 8000;
      while (received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(received, [14]);
    } finally {
      socket.destroy();
      await wp.close();
      await stopServer(echo);
    }
  });

  it("carries a destination declared TCP from the start, so its server may speak first", async () => {
    const smtp = net.createServer((socket) => {
      socket.on("error", () => {});
      socket.write("220 mail ready\r\n");
      socket.on("data", (c: Buffer) => socket.end(`250 got ${c.length}\r\n`));
    });
    await new Promise<void>((resolve) => smtp.listen(0, "127.0.0.1", resolve));
    const endpoint = { address: "127.0.0.1", port: (smtp.address() as net.AddressInfo).port };
    const destination = { address: "10.96.0.42", port: 25, service: { name: "mail", namespace: "data" } };
    const wp = await startWaypoint(
      { "data/mail": [endpoint] },
      { routes: [], opaqueTcp: true, headersTimeoutMs: 300 },
      { destination: { ...destination, tcpOnly: true } },
      HALF_OPEN,
    );
    const greeting = async (): Promise<string> => {
      const socket = net.connect({ port: wp.port, host: "127.0.0.1" });
      socket.on("error", () => {});
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => {
        chunks.push(c);
        if (Buffer.concat(chunks).includes("\r\n")) socket.destroy();
      });
      await once(socket, "close");
      return Buffer.concat(chunks).toString();
    };
    try {
      assert.equal(await greeting(), "220 mail ready\r\n");
      // The client's bytes still go both ways after the greeting.
      assert.match(await send(wp.port, Buffer.from("HELO x\r\n")), /^220 mail ready\r\n250 got \d+\r\n$/);
      // Undeclared, the handler waits for the client as the server waits for it: the headers deadline ends it.
      wp.info.destination = destination;
      assert.equal(await greeting(), "");
      // Declared HTTP wins over declared TCP.
      wp.info.destination = { ...destination, tcpOnly: true, httpOnly: true };
      assert.equal(await greeting(), "");
    } finally {
      await wp.close();
      await stopServer(smtp);
    }
  });

  it("applies L4 policy first, and closes what it cannot carry", async () => {
    const db = await tcpBackend("db-0");
    const denied = await startWaypoint(
      { "data/db": [db.endpoint] },
      {
        routes: [],
        opaqueTcp: true,
        policy: {
          evaluate: (r) =>
            r.http === undefined && r.source.identity === "spiffe://cluster.local/ns/a/sa/ok"
              ? { allowed: true, reason: "ok" }
              : { allowed: false, reason: "nope" },
        },
      },
      {
        peerIdentity: "spiffe://cluster.local/ns/a/sa/other",
        destination: { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } },
      },
      HALF_OPEN,
    );
    const nowhere = await startWaypoint(
      {},
      { routes: [], opaqueTcp: true },
      { destination: { address: "10.0.0.9", port: 1 } },
    );
    const off = await startWaypoint(
      { "data/db": [db.endpoint] },
      { routes: [] },
      {
        destination: { address: "10.96.0.40", port: 5432, service: { name: "db", namespace: "data" } },
      },
    );
    try {
      assert.equal(await send(denied.port, postgresStartup), "", "denied: closed, nothing sent on");
      denied.info.peerIdentity = "spiffe://cluster.local/ns/a/sa/ok";
      assert.equal(await send(denied.port, postgresStartup), `db-0 got ${postgresStartup.toString("hex")}`);
      assert.equal(await send(nowhere.port, postgresStartup), "", "no Service and no workload");
      assert.match(await send(off.port, postgresStartup), /^HTTP\/1\.1 400 /, "off: bad HTTP, as before");
    } finally {
      await Promise.all([denied.close(), nowhere.close(), off.close()]);
      await stopServer(db.server);
    }
  });
});
