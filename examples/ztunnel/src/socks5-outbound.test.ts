import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, Socket } from "node:net";
import { after, describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import {
  passthroughSocks5,
  type SilentListener,
  silentListener,
  socksConnect,
  testService,
} from "../test/fixtures.js";
import { ConnectionRegistry } from "./connections.js";
import { createDialFailureMetrics } from "./dial-failure.js";
import { ZtunnelError } from "./errors.js";
import type { Outbound, OutboundNetwork } from "./outbound.js";
import { encodeGreeting, encodeRequest, SOCKS5_REPLY } from "./socks5.js";
import { createSocks5Outbound } from "./socks5-outbound.js";
import { type MetricLabels, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";

const sleep = {
  uid: "Kubernetes//Pod/default/sleep",
  name: "sleep",
  namespace: "default",
  addresses: [Uint8Array.from([127, 0, 0, 1])],
  hostname: "",
  trustDomain: "",
  serviceAccount: "sleep",
  canonicalName: "sleep",
  canonicalRevision: "v1",
  workloadName: "sleep",
  tunnelProtocol: "HBONE",
  services: {},
  status: "HEALTHY",
} as unknown as Workload;

const servers: Server[] = [];
after(async () => {
  for (const s of servers) await new Promise<void>((resolve) => s.close(() => resolve()));
});

async function listen(server: Server): Promise<number> {
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

/** Resolves when `socket` closes, however it ends (a reset included). */
function closed(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.once("close", () => resolve()));
}

describe("SOCKS5 outbound", () => {
  it("counts a connection its client gave up before the upstream connect ended: opened, then closed", async () => {
    const counted: string[] = [];
    const sink: MetricsSink = {
      ...noopMetrics,
      counter: (name) => ({
        inc: (labels?: MetricLabels) => {
          if (name.startsWith("istio_tcp_connections_")) counted.push(`${name} ${labels?.response_flags}`);
        },
      }),
    };
    const upstream = createServer();
    const upstreamConnections: Socket[] = [];
    upstream.on("connection", (s) => {
      s.on("error", () => {});
      upstreamConnections.push(s);
    });
    const upstreamPort = await listen(upstream);

    // The upstream connect starts when the test says so: after the client has gone.
    let started: (socket: Socket) => void = () => {};
    const connectStarted = new Promise<Socket>((resolve) => {
      started = resolve;
    });
    const network: OutboundNetwork = {
      connectTcp: () => {
        const socket = new Socket({ allowHalfOpen: true });
        started(socket);
        return socket;
      },
      hboneClient: () => {
        throw new Error("no HBONE here");
      },
    };
    const { server, handler } = passthroughSocks5({ network, source: sleep, metrics: sink });
    let accepted: Socket | undefined;
    server.on("connection", (s) => {
      accepted = s;
    });
    const port = await listen(server);

    const client = connect({ host: "127.0.0.1", port });
    client.on("error", () => {});
    await once(client, "connect");
    client.write(Buffer.concat([encodeGreeting(), encodeRequest("127.0.0.1", upstreamPort)]));
    const dialing = await connectStarted;
    assert.ok(accepted);
    const acceptedClosed = closed(accepted);
    // A reset: the proxy's side sees it at once, even with the socket paused.
    client.resetAndDestroy();
    await acceptedClosed;

    const upstreamAccepted = once(upstream, "connection");
    dialing.connect(upstreamPort, "127.0.0.1");
    await upstreamAccepted;
    const upstreamSocket = upstreamConnections[0];
    assert.ok(upstreamSocket);
    if (!upstreamSocket.destroyed) await closed(upstreamSocket);

    assert.deepEqual(counted, [
      "istio_tcp_connections_opened_total -",
      "istio_tcp_connections_closed_total -",
    ]);
    handler.destroyAll();
  });
});

describe("SOCKS5 outbound: a request by hostname", () => {
  /**
   * A SOCKS5 listener for a client in `clientNamespace` whose dials only note the address asked
   * for (and are refused), over `store`.
   */
  async function start(store: WorkloadStore, clientNamespace: string) {
    const dialed: string[] = [];
    const outbound: Outbound = {
      dial: async (_network, _srcIp, _src, request) => {
        dialed.push(request.ip);
        throw new ZtunnelError("ERR_SOCKS5_UNSUPPORTED", "not dialing in this test", {
          reply: SOCKS5_REPLY.hostUnreachable,
        });
      },
      carry: () => {},
      abandon: () => {},
    };
    const { server, handler } = createSocks5Outbound({
      outbound,
      network: {
        connectTcp: () => {
          throw new Error("no TCP here");
        },
        hboneClient: () => {
          throw new Error("no HBONE here");
        },
      },
      store,
      sourceOf: () => ({ ...sleep, namespace: clientNamespace }) as Workload,
      isClosed: () => false,
      logger: noopLogger,
      metrics: noopMetrics,
      dialFailures: createDialFailureMetrics(noopMetrics),
    });
    const port = await listen(server);
    return { port, dialed, handler };
  }

  /** The reply to a CONNECT to `host`:80. */
  async function ask(port: number, host: string): Promise<number> {
    const { socket, reply } = await socksConnect(`127.0.0.1:${port}`, "127.0.0.1", host, 80);
    socket.destroy();
    return reply;
  }

  const ports = [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" as const }];

  it("names the Service of the client's namespace, then the canonical one", async () => {
    const store = new WorkloadStore();
    const host = "api.example.com";
    store.upsert(`default/${host}`, {
      service: testService("api", "240.240.0.1", ports, { hostname: host, namespace: "default" }),
    });
    store.upsert(`other/${host}`, {
      service: testService("api", "240.240.0.2", ports, {
        hostname: host,
        namespace: "other",
        canonical: false,
      }),
    });
    const fromOther = await start(store, "other");
    assert.equal(await ask(fromOther.port, host), SOCKS5_REPLY.hostUnreachable);
    const fromThird = await start(store, "third");
    assert.equal(await ask(fromThird.port, host), SOCKS5_REPLY.hostUnreachable);
    assert.deepEqual(fromOther.dialed, ["240.240.0.2"]);
    assert.deepEqual(fromThird.dialed, ["240.240.0.1"]);
    fromOther.handler.destroyAll();
    fromThird.handler.destroyAll();
  });

  it("does not resolve a Service of NAMESPACE visibility for a client of another namespace", async () => {
    const store = new WorkloadStore();
    const host = "local.example.com";
    store.upsert(`other/${host}`, {
      service: testService("local", "240.240.0.3", ports, {
        hostname: host,
        namespace: "other",
        canonical: false,
        visibility: "NAMESPACE",
      }),
    });
    const fromDefault = await start(store, "default");
    // Not a name this client may know: refused before any dial, as a name that resolves to nothing.
    assert.equal(await ask(fromDefault.port, host), SOCKS5_REPLY.hostUnreachable);
    assert.deepEqual(fromDefault.dialed, []);
    const fromOther = await start(store, "other");
    assert.equal(await ask(fromOther.port, host), SOCKS5_REPLY.hostUnreachable);
    assert.deepEqual(fromOther.dialed, ["240.240.0.3"]);
    fromDefault.handler.destroyAll();
    fromOther.handler.destroyAll();
  });
});

describe("SOCKS5 outbound: a connection whose relay ends in an error", () => {
  it("is counted closed under CONNECT when its upstream socket timed out, without a flag when reset", async () => {
    const closes: string[] = [];
    const sink: MetricsSink = {
      ...noopMetrics,
      counter: (name) => ({
        inc: (labels?: MetricLabels) => {
          if (name === "istio_tcp_connections_closed_total") closes.push(String(labels?.response_flags));
        },
      }),
    };
    const upstream = createServer((s) => {
      s.on("error", () => {});
      s.resume();
    });
    const upstreamPort = await listen(upstream);
    const dialedSockets: Socket[] = [];
    const network: OutboundNetwork = {
      connectTcp: (host, port) => {
        const socket = connect({ host, port, allowHalfOpen: true });
        dialedSockets.push(socket);
        return socket;
      },
      hboneClient: () => {
        throw new Error("no HBONE here");
      },
    };
    const registry = new ConnectionRegistry();
    const { server, handler } = passthroughSocks5({ network, source: sleep, metrics: sink, registry });
    const port = await listen(server);

    const first = await socksConnect(`127.0.0.1:${port}`, "127.0.0.1", "127.0.0.1", upstreamPort);
    assert.equal(first.reply, SOCKS5_REPLY.succeeded);
    first.socket.on("error", () => {});
    // What a connection whose peer stopped answering ends with (keepalive or user timeout).
    dialedSockets[0]?.destroy(Object.assign(new Error("read ETIMEDOUT"), { code: "ETIMEDOUT" }));
    await closed(first.socket);
    while (closes.length < 1) await new Promise((r) => setImmediate(r));

    const second = await socksConnect(`127.0.0.1:${port}`, "127.0.0.1", "127.0.0.1", upstreamPort);
    assert.equal(second.reply, SOCKS5_REPLY.succeeded);
    second.socket.on("error", () => {});
    second.socket.resetAndDestroy();
    while (closes.length < 2) await new Promise((r) => setImmediate(r));

    assert.deepEqual(closes, ["CONNECT", "-"]);
    assert.equal(registry.connections().length, 0);
    handler.destroyAll();
  });
});

describe("SOCKS5 outbound: a destination outside the mesh that never answers the connect", () => {
  // Closed after the test, whichever way it ended: the proxy's side of each client with a reset, so
  // the client is closed too.
  const accepted: Socket[] = [];
  const sockets: Socket[] = [];
  const silent: SilentListener[] = [];
  after(async () => {
    for (const socket of accepted) if (!socket.destroyed) socket.resetAndDestroy();
    for (const socket of sockets) socket.destroy();
    for (const peer of silent) await peer.close();
  });

  it(
    "replies 6 (TTL expired) once the connect deadline passed, and closes the dial",
    { timeout: 5000 },
    async () => {
      const peer = await silentListener("127.0.0.1");
      silent.push(peer);
      const dials: Socket[] = [];
      const network: OutboundNetwork = {
        connectTcp: (host, port) => {
          const socket = connect({ host, port, allowHalfOpen: true });
          dials.push(socket);
          sockets.push(socket);
          return socket;
        },
        hboneClient: () => {
          throw new Error("no HBONE here");
        },
      };
      const { server } = passthroughSocks5({ network, source: sleep, connectTimeoutMs: 300 });
      server.on("connection", (socket) => accepted.push(socket));
      const port = await listen(server);
      const { socket, reply } = await socksConnect(`127.0.0.1:${port}`, "127.0.0.1", "127.0.0.1", peer.port);
      sockets.push(socket);
      assert.equal(reply, SOCKS5_REPLY.ttlExpired);
      assert.equal(dials.length, 1);
      assert.ok(dials[0]?.destroyed, "the connect that got no answer is closed");
    },
  );
});

describe("SOCKS5 outbound: a CONNECT to the proxy itself", () => {
  /** A SOCKS5 listener whose dials only note the address asked for (and are refused). */
  async function start(proxyPorts?: readonly number[]) {
    const dialed: string[] = [];
    const outbound: Outbound = {
      dial: async (_network, _srcIp, _src, request) => {
        dialed.push(`${request.ip}:${request.port}`);
        throw new ZtunnelError("ERR_SOCKS5_UNSUPPORTED", "not dialing in this test", {
          reply: SOCKS5_REPLY.hostUnreachable,
        });
      },
      carry: () => {},
      abandon: () => {},
    };
    const { server, handler } = createSocks5Outbound({
      outbound,
      network: {
        connectTcp: () => {
          throw new Error("no TCP here");
        },
        hboneClient: () => {
          throw new Error("no HBONE here");
        },
      },
      store: new WorkloadStore(),
      sourceOf: () => sleep,
      isClosed: () => false,
      logger: noopLogger,
      metrics: noopMetrics,
      dialFailures: createDialFailureMetrics(noopMetrics),
      ...(proxyPorts === undefined ? {} : { proxyPorts }),
    });
    const port = await listen(server);
    /** The reply to a CONNECT to `host:target` through this listener. */
    const ask = async (host: string, target: number): Promise<number> => {
      const { socket, reply } = await socksConnect(`127.0.0.1:${port}`, "127.0.0.1", host, target);
      socket.destroy();
      return reply;
    };
    return { port, dialed, handler, ask };
  }

  it("refuses its own SOCKS5 port and the proxy's other ports on loopback with reply 2, dialling nothing", async () => {
    const { port, dialed, handler, ask } = await start();
    for (const [host, target] of [
      ["127.0.0.1", port],
      ["127.0.0.1", 15008],
      ["127.0.0.1", 15006],
      ["127.0.0.1", 15001],
      ["127.9.9.9", 15008],
    ] as const) {
      assert.equal(await ask(host, target), SOCKS5_REPLY.notAllowed, `${host}:${target}`);
    }
    assert.deepEqual(dialed, []);
    handler.destroyAll();
  });

  it("dials loopback on other ports, and another address on the proxy's ports", async () => {
    const { dialed, handler, ask } = await start();
    assert.equal(await ask("127.0.0.1", 8080), SOCKS5_REPLY.hostUnreachable);
    assert.equal(await ask("10.0.2.12", 15008), SOCKS5_REPLY.hostUnreachable);
    assert.deepEqual(dialed, ["127.0.0.1:8080", "10.0.2.12:15008"]);
    handler.destroyAll();
  });

  it("takes the proxy's ports from `proxyPorts` when they are not the defaults", async () => {
    const { dialed, handler, ask } = await start([16008]);
    assert.equal(await ask("127.0.0.1", 16008), SOCKS5_REPLY.notAllowed);
    assert.equal(await ask("127.0.0.1", 15008), SOCKS5_REPLY.hostUnreachable);
    assert.deepEqual(dialed, ["127.0.0.1:15008"]);
    handler.destroyAll();
  });
});
