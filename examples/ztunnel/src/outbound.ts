// Outbound: from a local pod to wherever it asked (SOCKS5) or was going (in-pod capture on 15001).
// The destination is decided by the workload store's pure functions; this module dials it (HBONE to a
// waypoint or a mesh pod, plain TCP otherwise) and carries the bytes.
import { once } from "node:events";
import { connect, type Socket } from "node:net";
import {
  formatForwarded,
  formatWorkloadBaggage,
  type HboneClient,
  type HboneCredentials,
  pipeTunnel,
  type TunnelStream,
} from "@ambient/hbone";
import { SpiffeId, type X509Svid } from "@ambient/spiffe";
import type { Workload } from "@ambient/xds";
import { type AccessLogEntry, errorText, logConnectionFailed, startAccessLog } from "./access-log.js";
import { connectTimeoutOption, withConnectDeadline } from "./connect-deadline.js";
import type { ConnectionRegistry } from "./connections.js";
import { ZtunnelError } from "./errors.js";
import type { HostnameResolver } from "./hostname-endpoints.js";
import { withKeepAlive } from "./socket-keepalive.js";
import { SOCKS5_REPLY } from "./socks5.js";
import {
  type ConnectionParties,
  connectionLabels,
  countRefused,
  type createTcpMetrics,
  MeteredConnection,
  type ServiceDescription,
  type TcpMetricLabels,
  type TcpMetrics,
} from "./tcp-metrics.js";
import type { Logger } from "./telemetry.js";
import {
  identityOf,
  networkOf,
  pickDestinationIp,
  usesHbone,
  type WaypointResolution,
  type WaypointUpstream,
  type WorkloadStore,
} from "./workload-store.js";

/** Where outbound connections of one source leave from: this process's namespace, or a pod's. */
export interface OutboundNetwork {
  /** Plain TCP to a destination outside the mesh, from `localAddress`. */
  connectTcp(host: string, port: number, localAddress: string): Socket;
  /** The HBONE client to tunnel with (pooled connections live in it). */
  hboneClient(credentials: HboneCredentials): HboneClient;
}

/** A dialed destination. */
export interface DialedOutbound {
  stream: TunnelStream | Socket;
  labels: TcpMetricLabels;
  destination: string;
  dstId?: string;
  /** The connection's access log line, written when it ends (or by whoever drops it). */
  accessLog: AccessLogEntry;
}

export interface OutboundOptions {
  store: WorkloadStore;
  svidOf(identity: string): Promise<X509Svid>;
  /** The roots a workload trusts, given its certificate (`trustedRootsOf`). */
  trustOf(svid: X509Svid): string;
  hbonePort: number;
  registry: ConnectionRegistry;
  tcpMetrics: ReturnType<typeof createTcpMetrics>;
  /** Resolves endpoints known only by hostname (DNS ServiceEntries). */
  resolveHostname: HostnameResolver;
  /**
   * How long a plain TCP connect to a destination outside the mesh may take before the connection is
   * refused (`ETIMEDOUT`: SOCKS5 reply 6, a captured connection reset). Default
   * `DEFAULT_CONNECT_TIMEOUT_MS` (10 s); ztunnel `CONNECTION_TIMEOUT`.
   */
  connectTimeoutMs?: number;
  logger: Logger;
}

/** What a client connection carried before the proxied bytes began (the SOCKS5 handshake). */
export interface HandshakeBytes {
  sent: number;
  received: number;
}

export interface Outbound {
  /**
   * Dials `request` (a canonical IP, or the VIP of a Service) for `src`; throws on refusal, after
   * writing the access log line. `srcPort` is the client's port, for the log.
   */
  dial(
    network: OutboundNetwork,
    srcIp: string,
    src: Workload,
    request: { ip: string; port: number },
    srcPort?: number,
  ): Promise<DialedOutbound>;
  /** Tracks and pipes an accepted client connection to a dialed destination until both ends close. */
  carry(options: {
    socket: Socket;
    dialed: DialedOutbound;
    srcIp: string;
    src: Workload;
    requested: string;
    handshakeBytes?: HandshakeBytes;
    owner?: string;
  }): void;
  /**
   * Drops a dialed destination whose client went away (or whose proxy closed) before it could be
   * carried: the connection was opened all the same, so it is counted opened and closed, and its
   * access log line written with `error`.
   */
  abandon(dialed: DialedOutbound, error: string): void;
}

/**
 * `ip:port`, an IPv6 address in brackets: the form of a CONNECT authority and of an address in the
 * logs (the HBONE client checks the authority it sends).
 */
function hostPort(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The node's own namespace: plain `net.connect`, one shared HBONE client. */
export function createHostNetwork(options: {
  createClient(credentials: HboneCredentials): HboneClient;
}): OutboundNetwork & { destroy(): void } {
  let client: HboneClient | undefined;
  return {
    connectTcp: (host, port, localAddress) =>
      connect({ host, port, localAddress, allowHalfOpen: true, noDelay: true }),
    hboneClient(credentials) {
      client ??= options.createClient(credentials);
      return client;
    },
    destroy: () => client?.destroy(),
  };
}

export function createOutbound(options: OutboundOptions): Outbound {
  const { store, trustOf, registry, tcpMetrics, logger } = options;
  const connectTimeoutMs = connectTimeoutOption(options.connectTimeoutMs);

  // One credentials object per SVID: the HBONE client caches what it derives from it (the identity
  // parsed from the certificate), so a new object per connection would parse it again each time.
  const credentialsBySvid = new WeakMap<X509Svid, HboneCredentials>();
  const credentialsOf = async (identity: string): Promise<HboneCredentials> => {
    const svid = await options.svidOf(identity);
    let credentials = credentialsBySvid.get(svid);
    if (credentials === undefined) {
      credentials = { key: svid.privateKeyPem, certChain: svid.certChainPem, trustBundle: trustOf(svid) };
      credentialsBySvid.set(svid, credentials);
    }
    return credentials;
  };

  const dial: Outbound["dial"] = async (network, srcIp, src, request, srcPort) => {
    // `ip` is canonical: an address the client gave, or the VIP of the Service it named.
    const host = request.ip;
    const srcAddr = srcPort === undefined ? srcIp : `${srcIp}:${srcPort}`;
    const requested = hostPort(host, request.port);
    const refuse = (err: ZtunnelError): never => {
      logConnectionFailed(logger, {
        direction: "outbound",
        srcAddr,
        dstAddr: requested,
        error: err.message,
      });
      throw err;
    };
    /** Refuses with SOCKS5 reply 4 (a captured connection is reset): nowhere this proxy may send it. */
    const unreachable = (reason: string): never =>
      refuse(new ZtunnelError("ERR_SOCKS5_UNSUPPORTED", reason, { reply: SOCKS5_REPLY.hostUnreachable }));
    /**
     * Runs `connect` with the access log started; a failure is logged, and counted as a connection
     * closed with `CONNECT`, before it is rethrown.
     */
    const logged = async <T>(
      parties: Omit<Parameters<typeof startAccessLog>[1], "direction" | "srcAddr" | "source">,
      labels: TcpMetricLabels,
      connect: () => Promise<T>,
    ): Promise<{ value: T; accessLog: AccessLogEntry }> => {
      const accessLog = startAccessLog(logger, { direction: "outbound", srcAddr, source: src, ...parties });
      try {
        return { value: await connect(), accessLog };
      } catch (err) {
        accessLog.complete({ sent: 0, received: 0, error: errorText(err) });
        countRefused(tcpMetrics, labels, "CONNECT");
        throw err;
      }
    };
    const labelsFor = (
      destination: Workload | undefined,
      service: ServiceDescription | undefined,
      mutualTls: boolean,
    ): TcpMetricLabels => {
      const parties: ConnectionParties = { reporter: "source", source: src, destination, mutualTls };
      if (service !== undefined) parties.destinationService = service;
      return connectionLabels(parties);
    };
    /**
     * A tunnel to a waypoint, with the original destination as the authority: the waypoint picks the
     * endpoint (a Service's) or goes on to it (a workload's own waypoint).
     */
    const throughWaypoint = async (
      resolution: Exclude<WaypointResolution, { kind: "none" }>,
      authority: string,
      destinationService: ServiceDescription | undefined,
    ): Promise<DialedOutbound> => {
      // Never around it: the waypoint is where the destination's policy is enforced.
      if (resolution.kind === "unreachable") return unreachable(resolution.reason);
      const waypoint: WaypointUpstream = resolution.upstream;
      const wpWorkload = waypoint.workload;
      const dstId = identityOf(wpWorkload);
      const address = hostPort(waypoint.ip, waypoint.port);
      const service =
        destinationService === undefined ? {} : { destinationService: destinationService.hostname };
      const labels = labelsFor(wpWorkload, destinationService, true);
      const { value: tunnel, accessLog } = await logged(
        {
          srcIdentity: identityOf(src),
          dstAddr: address,
          hboneAddr: authority,
          destination: wpWorkload,
          ...service,
          dstIdentity: dstId,
        },
        labels,
        async () => {
          const creds = await credentialsOf(identityOf(src));
          return network.hboneClient(creds).connect({
            address,
            authority,
            expectedIdentities: [dstId],
            headers: connectHeaders(src, srcAddr, destinationService?.hostname),
            sourceAddress: srcIp,
            credentials: creds,
          });
        },
      );
      return { stream: tunnel, labels, destination: authority, dstId, accessLog };
    };
    // A Service bound to a waypoint: the waypoint picks the endpoint, so tunnel to it with the
    // original VIP:port as the authority. Any port of the Service: its waypoint decides what the
    // Service serves, as ztunnel finds a Service's waypoint by address alone.
    const viaWaypoint = store.serviceAt(host, src.namespace);
    const waypoint =
      viaWaypoint === undefined ? undefined : store.resolveWaypoint(viaWaypoint.service, src, host);
    if (viaWaypoint !== undefined && waypoint !== undefined && waypoint.kind !== "none") {
      return throughWaypoint(waypoint, requested, viaWaypoint.service);
    }
    const dest = store.resolve(host, request.port, src);
    if (dest.kind === "no-endpoint")
      return unreachable(`service ${dest.service.key} has no healthy endpoint`);
    if (dest.kind === "unknown-port") {
      return unreachable(`service ${dest.service.key} has no port ${dest.port}`);
    }
    const endpoint = dest.kind === "passthrough" ? undefined : dest.endpoint;
    const service = dest.kind === "service" ? dest.service.service : undefined;
    const destinationService = service?.hostname;
    const dstWorkload = endpoint?.workload;
    // Another network's workload is reached only through its network gateway, which this proxy does
    // not take: never directly (ztunnel fails such a connection with no gateway).
    if (dstWorkload !== undefined && networkOf(dstWorkload) !== networkOf(src)) {
      return unreachable(
        `workload ${dstWorkload.name} is on network ${JSON.stringify(networkOf(dstWorkload))}, reachable only through a network gateway`,
      );
    }
    // The address asked for when the workload has it, else one of its family (the Service's
    // `ipFamilies` permitting): never its first address whatever its family.
    const dstIp =
      dstWorkload === undefined ? undefined : pickDestinationIp(dstWorkload, host, service?.ipFamilies);
    // A pod addressed directly whose own traffic goes through a waypoint (`istio.io/use-waypoint` on
    // the workload): to the waypoint, with the address asked for as the authority; not when the
    // caller is that waypoint (one of its instances, by identity and address). Decided on the
    // workload alone, whatever its addresses.
    const workloadWaypoint =
      dest.kind === "workload" && !store.isWaypointOf(dest.endpoint.workload, src, srcIp)
        ? store.resolveWaypoint(dest.endpoint.workload, src, host)
        : undefined;
    if (workloadWaypoint !== undefined && workloadWaypoint.kind !== "none") {
      return throughWaypoint(workloadWaypoint, requested, undefined);
    }
    // A mesh workload with no address to dial is refused: neither its HBONE nor its app port is ever
    // reached some other way (the address asked for is a VIP, or not the workload's to choose).
    if (
      dstWorkload !== undefined &&
      dstIp === undefined &&
      (usesHbone(dstWorkload) || dstWorkload.addresses.length > 0)
    ) {
      return unreachable(
        `workload ${dstWorkload.name} has no ${host.includes(":") ? "IPv6" : "IPv4"} address to reach it at`,
      );
    }
    if (
      endpoint !== undefined &&
      dstWorkload !== undefined &&
      dstIp !== undefined &&
      usesHbone(dstWorkload)
    ) {
      const dstId = identityOf(dstWorkload);
      const address = hostPort(dstIp, options.hbonePort);
      const authority = hostPort(dstIp, endpoint.targetPort);
      // The endpoint may present its workload's identity or one its Service names (a ServiceEntry's
      // subjectAltNames), as Istio's ztunnel accepts; what is not a SPIFFE ID is passed over.
      const expectedIdentities = [dstId, ...serviceSans(service)];
      const labels = labelsFor(dstWorkload, service, true);
      const { value: tunnel, accessLog } = await logged(
        {
          srcIdentity: identityOf(src),
          dstAddr: address,
          hboneAddr: authority,
          destination: dstWorkload,
          ...(destinationService === undefined ? {} : { destinationService }),
          dstIdentity: dstId,
        },
        labels,
        async () => {
          const creds = await credentialsOf(identityOf(src));
          return network.hboneClient(creds).connect({
            address,
            authority,
            expectedIdentities,
            headers: connectHeaders(src, srcAddr, service?.hostname),
            sourceAddress: srcIp,
            credentials: creds,
          });
        },
      );
      return { stream: tunnel, labels, destination: authority, dstId, accessLog };
    }
    // Not in the mesh: plain TCP from the pod's own address, to an endpoint known by hostname (it has
    // no address) at the address its name resolves to.
    const byName = dstIp === undefined && dstWorkload !== undefined ? dstWorkload.hostname : "";
    const targetPort = endpoint?.targetPort ?? request.port;
    let targetHost = byName !== "" ? byName : (dstIp ?? host);
    const labels = labelsFor(dstWorkload, service, false);
    const { value: socket, accessLog } = await logged(
      {
        dstAddr: `${targetHost}:${targetPort}`,
        destination: dstWorkload,
        ...(destinationService === undefined ? {} : { destinationService }),
      },
      labels,
      async () => {
        if (byName !== "") targetHost = await options.resolveHostname(byName);
        const socket = withConnectDeadline(
          withKeepAlive(network.connectTcp(targetHost, targetPort, srcIp)),
          connectTimeoutMs,
          `${targetHost}:${targetPort}`,
        );
        try {
          await once(socket, "connect");
        } catch (err) {
          socket.destroy();
          throw err;
        }
        return socket;
      },
    );
    return { stream: socket, labels, destination: `${targetHost}:${targetPort}`, accessLog };
  };

  const carry: Outbound["carry"] = ({ socket, dialed, srcIp, src, requested, handshakeBytes, owner }) => {
    const { stream } = dialed;
    registry.trackSocket(socket, owner);
    // The handshake is over: its byte counts are final, and only the numbers are kept (not the
    // handshake's state), for as long as the connection is open.
    const carried = new CarriedOutbound(
      socket,
      dialed.labels,
      dialed.accessLog,
      handshakeBytes?.received ?? 0,
      handshakeBytes?.sent ?? 0,
      registry,
      tcpMetrics,
    );
    carried.id = registry.add({
      direction: "outbound",
      source: srcIp,
      destination: dialed.destination,
      sourceIdentity: identityOf(src),
      ...(dialed.dstId === undefined ? {} : { destinationIdentity: dialed.dstId }),
      ...(owner === undefined ? {} : { owner }),
      traffic: carried,
      close() {
        stream.destroy();
        socket.resetAndDestroy();
      },
    });
    tcpMetrics.opened(dialed.labels);
    logger.debug({ src: srcIp, dst: dialed.destination, requested }, "outbound connection opened");
    // The relay writes each piece as it arrives: no Nagle delay toward the pod either.
    socket.setNoDelay(true);
    socket.resume();
    pipeTunnel(socket, stream).then(
      () => carried.finish(undefined),
      (err: unknown) => carried.finish(err),
    );
  };

  const abandon: Outbound["abandon"] = (dialed, error) => {
    dialed.stream.destroy();
    // Nothing failed on the way to the destination: the close carries no response flag.
    tcpMetrics.opened(dialed.labels);
    tcpMetrics.closed(dialed.labels);
    dialed.accessLog.complete({ sent: 0, received: 0, error });
  };

  return { dial, carry, abandon };
}

/**
 * What an open outbound connection keeps until it ends: one object rather than a closure over the
 * dial's and the handshake's state, so an idle tunnel holds no more than it needs.
 */
class CarriedOutbound extends MeteredConnection {
  id = 0;

  constructor(
    readonly socket: Socket,
    labels: TcpMetricLabels,
    readonly accessLog: AccessLogEntry,
    readonly handshakeReceived: number,
    readonly handshakeSent: number,
    readonly registry: ConnectionRegistry,
    tcpMetrics: TcpMetrics,
  ) {
    super(labels, tcpMetrics);
  }

  /** Bytes written back to the pod (toward the source). */
  sentBytes(): number {
    return this.socket.bytesWritten - this.handshakeSent;
  }

  /** Bytes the pod sent. */
  receivedBytes(): number {
    return this.socket.bytesRead - this.handshakeReceived;
  }

  finish(err: unknown): void {
    this.registry.delete(this.id);
    this.reportClosed(err);
    // The pod sent what this proxy received from it, and received what was written back.
    this.accessLog.complete({
      sent: this.receivedBytes(),
      received: this.sentBytes(),
      ...(err === undefined ? {} : { error: errorText(err) }),
    });
  }
}

/** The SPIFFE IDs among a Service's `subjectAltNames`. */
function serviceSans(service: { subjectAltNames?: readonly string[] } | undefined): string[] {
  const out: string[] = [];
  for (const san of service?.subjectAltNames ?? []) {
    if (SpiffeId.tryParse(san) !== undefined) out.push(san);
  }
  return out;
}

/**
 * The headers Istio's ztunnel puts on its CONNECT besides `traceparent` (proxy/outbound.rs): the source
 * workload's `baggage` (cluster, namespace, workload, canonical service and revision, locality), which
 * a waypoint's and a peer's telemetry read, and `forwarded` with the client's address and, through a
 * Service, its hostname. A source whose fields cannot be written as baggage sends none.
 */
function connectHeaders(
  src: Workload,
  srcAddr: string,
  serviceHostname: string | undefined,
): Record<string, string> {
  const headers: Record<string, string> = {
    forwarded: formatForwarded({
      for: srcAddr,
      ...(serviceHostname === undefined ? {} : { host: serviceHostname }),
    }),
  };
  try {
    headers.baggage = formatWorkloadBaggage({
      clusterId: src.clusterId,
      namespace: src.namespace,
      workloadName: src.workloadName,
      workloadType: (src.workloadType ?? "DEPLOYMENT").toLowerCase() as
        | "deployment"
        | "cronjob"
        | "pod"
        | "job",
      service: src.canonicalName,
      revision: src.canonicalRevision,
      ...(src.locality === undefined ? {} : { region: src.locality.region, zone: src.locality.zone }),
    });
  } catch {
    // Not writable as baggage: the CONNECT goes without it, as telemetry is all it serves.
  }
  return headers;
}
