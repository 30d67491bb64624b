// SOCKS5 outbound (15080 on the node IP): the handshake is socks5-server.ts's; this wires its CONNECT
// requests to the outbound dialer, answering with the reply code a failure maps to.
import { type AddressInfo, createServer, type Server } from "node:net";
import type { Workload } from "@ambient/xds";
import { type DialFailureMetrics, socksReplyFor } from "./dial-failure.js";
import { isProxySelfCall } from "./in-pod-decisions.js";
import { canonicalIp } from "./ip-address.js";
import type { Outbound, OutboundNetwork } from "./outbound.js";
import { KEEPALIVE_SERVER_OPTIONS } from "./socket-keepalive.js";
import { SOCKS5_REPLY } from "./socks5.js";
import { createSocks5Handler, type Socks5Connect, type Socks5Handler } from "./socks5-server.js";
import type { Logger, MetricsSink } from "./telemetry.js";
import { serviceVip, type WorkloadStore } from "./workload-store.js";

export interface Socks5OutboundOptions {
  outbound: Outbound;
  network: OutboundNetwork;
  store: WorkloadStore;
  /** The mesh workload behind a client address, when it is a local pod. */
  sourceOf(ip: string): Workload | undefined;
  handshakeTimeoutMs?: number;
  maxHandshakes?: number;
  /**
   * The proxy's own listener ports besides this SOCKS5 port (which is always added), which a client
   * may not CONNECT to on loopback or on the address it reached this listener at: reply 2 (not
   * allowed). Default {@link DEFAULT_PROXY_PORTS} (HBONE 15008, 15006, 15001); ztunnel `illegal_ports`.
   */
  proxyPorts?: readonly number[];
  isClosed(): boolean;
  logger: Logger;
  metrics: MetricsSink;
  dialFailures: DialFailureMetrics;
}

/** The proxy's ports a SOCKS5 client may not reach on loopback: HBONE, plaintext inbound, outbound capture. */
export const DEFAULT_PROXY_PORTS: readonly number[] = [15008, 15006, 15001];

/** A SOCKS5 listener (not yet listening) and its handshake bookkeeping. */
export function createSocks5Outbound(options: Socks5OutboundOptions): {
  server: Server;
  handler: Socks5Handler;
} {
  const { outbound, network, logger } = options;
  const proxyPorts = options.proxyPorts ?? DEFAULT_PROXY_PORTS;

  const serve = async (connect: Socks5Connect<Workload>): Promise<void> => {
    const { socket, srcIp, source: src, request } = connect;
    const requested = `${request.hostname ?? request.ip}:${request.port}`;
    // The proxy itself (its own SOCKS5 port included) is no destination: refused before any dial.
    const listening = server.address() as AddressInfo | null;
    const localIp = socket.localAddress === undefined ? undefined : canonicalIp(socket.localAddress);
    const ownIps = localIp === undefined ? [] : [localIp.text];
    const ports = listening === null ? proxyPorts : [...proxyPorts, listening.port];
    if (isProxySelfCall({ address: request.ip, port: request.port }, { ownIps, ports })) {
      logger.info(
        { src: srcIp, dst: requested, reply: SOCKS5_REPLY.notAllowed },
        "outbound refused: destination is the proxy itself",
      );
      connect.refuse(SOCKS5_REPLY.notAllowed);
      return;
    }
    let dialed: Awaited<ReturnType<Outbound["dial"]>>;
    try {
      dialed = await outbound.dial(network, srcIp, src, request, socket.remotePort);
    } catch (err) {
      const code = socksReplyFor(err);
      const errno = options.dialFailures.record("outbound", err);
      logger.info(
        { src: srcIp, dst: requested, err: (err as Error).message, errno, reply: code },
        "outbound refused",
      );
      connect.refuse(code);
      return;
    }
    if (options.isClosed() || !connect.succeed()) {
      outbound.abandon(dialed, "client closed before the reply");
      return;
    }
    outbound.carry({ socket, dialed, srcIp, src, requested, handshakeBytes: connect.handshakeBytes });
  };

  const handler = createSocks5Handler<Workload>({
    ...(options.handshakeTimeoutMs === undefined ? {} : { handshakeTimeoutMs: options.handshakeTimeoutMs }),
    ...(options.maxHandshakes === undefined ? {} : { maxHandshakes: options.maxHandshakes }),
    sourceOf: options.sourceOf,
    // As the client's DNS would answer: its own namespace's Service first, none it may not see.
    resolveHostname: (hostname, source) => {
      const service = options.store.findServiceByHostname(hostname, source.namespace);
      return service === undefined ? undefined : serviceVip(service);
    },
    onConnect: (connect) =>
      serve(connect).catch((err: unknown) => {
        logger.warn({ src: connect.srcIp, err: (err as Error).message }, "SOCKS5 connection failed");
        connect.socket.destroy();
      }),
    logger,
    metrics: options.metrics,
  });
  const server = createServer(
    { allowHalfOpen: true, pauseOnConnect: false, ...KEEPALIVE_SERVER_OPTIONS },
    handler.handle,
  );
  return { server, handler };
}
