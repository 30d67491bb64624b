import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, Socket } from "node:net";
import { after, describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { ConnectionRegistry } from "./connections.js";
import { createDialFailureMetrics } from "./dial-failure.js";
import { createOutbound, type OutboundNetwork } from "./outbound.js";
import { encodeGreeting, encodeRequest } from "./socks5.js";
import { createSocks5Outbound } from "./socks5-outbound.js";
import { createTcpMetrics } from "./tcp-metrics.js";
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
    const outbound = createOutbound({
      store: new WorkloadStore(),
      svidOf: () => Promise.reject(new Error("no certificates here")),
      trustOf: () => "",
      hbonePort: 15008,
      registry: new ConnectionRegistry(),
      tcpMetrics: createTcpMetrics(sink),
      resolveHostname: () => Promise.reject(new Error("no names here")),
      logger: noopLogger,
    });
    const { server, handler } = createSocks5Outbound({
      outbound,
      network,
      store: new WorkloadStore(),
      sourceOf: () => sleep,
      isClosed: () => false,
      logger: noopLogger,
      metrics: noopMetrics,
      dialFailures: createDialFailureMetrics(noopMetrics),
    });
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
