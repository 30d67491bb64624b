import { once } from "node:events";
import { createServer as createHttpServer, type Server as HttpServer, type ServerResponse } from "node:http";
import {
  type AddressInfo,
  connect,
  createServer as createTcpServer,
  isIP,
  type Server,
  type Socket,
} from "node:net";
import {
  createHboneClient,
  createHboneServer,
  HBONE_STATUS,
  type HboneClient,
  HboneError,
  type HboneServer,
  type InboundTunnel,
  pipeTunnel,
  type TunnelStream,
} from "@ambient/hbone";
import {
  type AuthorizationDecision,
  type AuthorizationRequest,
  createAuthorizationEngine,
  type PolicyExplanation,
  type WireAuthorization,
} from "@ambient/policy";
import type { X509Svid } from "@ambient/spiffe";
import { createCertificateServiceClient, SecretManager } from "@ambient/spiffe/ca";
import { createPromClientSink } from "@ambient/telemetry";
import {
  createXdsClient,
  TypeUrl,
  type Workload,
  type WorkloadAddress,
  type XdsChangeEvent,
} from "@ambient/xds";
import * as prom from "prom-client";
import { adminJson } from "./admin-json.js";
import { controlPlaneChannel } from "./control-plane-channel.js";
import { ZtunnelError } from "./errors.js";
import { decideInboundDestination } from "./inbound-destination.js";
import { SOCKS5_REPLY } from "./socks5.js";
import { createSocks5Handler, type Socks5Connect, type Socks5HandshakeOutcome } from "./socks5-server.js";
import { connectionLabels, createTcpMetrics, type TcpMetricLabels } from "./tcp-metrics.js";
import { type Logger, noopLogger } from "./telemetry.js";
import {
  identityOf,
  serviceForTargetPort,
  serviceVip,
  usesHbone,
  WorkloadStore,
  waypointOf,
} from "./workload-store.js";

/** Listening ports of a node proxy (all on the node IP except `hbone`, which is per pod IP). */
export interface ZtunnelPorts {
  /** Admin (`/config_dump`). Default 15000; ztunnel `ADMIN_PORT`. */
  admin: number;
  /** Prometheus (`/metrics`, `/stats/prometheus`). Default 15020; ztunnel `STATS_PORT`. */
  metrics: number;
  /** Readiness (`/healthz/ready`). Default 15021; ztunnel `READINESS_PORT`. */
  readiness: number;
  /** SOCKS5 outbound. Default 15080; ztunnel `SOCKS5_PORT`. */
  socks5: number;
  /** Inbound HBONE on every local pod IP, and the port dialled on remote pods. Default 15008. */
  hbone: number;
}

/** Options of {@link startZtunnel}. */
export interface ZtunnelOptions {
  /** Kubernetes node name this proxy serves; ztunnel `NODE_NAME`. */
  nodeName: string;
  /** IP the node listeners bind to; ztunnel `INSTANCE_IP`. */
  nodeIp: string;
  /** Control plane (xDS and CA) gRPC target. Default `127.0.0.1:15012`; ztunnel `XDS_ADDRESS`/`CA_ADDRESS`. */
  controlPlaneAddress?: string;
  /** Mesh roots (PEM): verify the control plane and every peer; ztunnel `ROOT_CA`. */
  rootCertPem: string;
  /** Bearer token of the node's service account, sent on CA and xDS calls. */
  token: string;
  /** URI SAN the control plane's certificate must carry. Default `spiffe://cluster.local/ns/istio-system/sa/istiod`. */
  controlPlaneIdentity?: string;
  /** Sent as `clusterid` on CA calls. Default `Kubernetes`; ztunnel `CLUSTER_ID`. */
  clusterId?: string;
  /** Port overrides (0 = ephemeral for the node listeners). */
  ports?: Partial<ZtunnelPorts>;
  /** Default: no-op. */
  logger?: Logger;
  /** prom-client registry for every metric of this proxy. Default: a new one per proxy. */
  registry?: prom.Registry;
  /** Requested certificate lifetime. Default 24 h; ztunnel `SECRET_TTL`. */
  certificateTtlSeconds?: number;
  /** SOCKS5 listener limits. */
  socks5?: {
    /** Time from accept to the final reply (the dial included). Default 10 000 ms. */
    handshakeTimeoutMs?: number;
    /** Connections without a final reply at once; more are closed on accept and counted. Default 1024. */
    maxHandshakes?: number;
  };
}

/** The node a proxy serves. */
export interface ZtunnelNode {
  name: string;
  ip: string;
  /** xDS node id, `ztunnel~<ip>~ztunnel-<node>.istio-system~istio-system.svc.cluster.local`. */
  id: string;
}

/** Where the node listeners ended up (`ip:port`). */
export interface ZtunnelAddresses {
  admin: string;
  metrics: string;
  readiness: string;
  socks5: string;
}

/** One open proxied connection, as `/config_dump` lists it. */
export interface ConnectionSummary {
  id: number;
  direction: "inbound" | "outbound";
  source: string;
  destination: string;
  sourceIdentity?: string;
  destinationIdentity?: string;
}

/** The JSON `/config_dump` serves. */
export interface ConfigDump {
  node: ZtunnelNode;
  ready: boolean;
  workloads: Workload[];
  services: unknown[];
  policies: WireAuthorization[];
  localPods: { uid: string; ip: string; identity: string; listening: boolean }[];
  certificates: { identity: string; notAfter: string }[];
  connections: ConnectionSummary[];
  /** SOCKS5 connections not yet answered, and how handshakes ended since start. */
  socks5: { handshakesInProgress: number; handshakes: Readonly<Record<Socks5HandshakeOutcome, number>> };
}

/** A running node proxy. */
export interface RunningZtunnel {
  readonly node: ZtunnelNode;
  readonly addresses: ZtunnelAddresses;
  /** Resolves once the first xDS state is in and every local pod has its certificate and listener. */
  readonly ready: Promise<void>;
  isReady(): boolean;
  /** Prometheus text of every metric of this proxy. */
  metricsText(): Promise<string>;
  configDump(): ConfigDump;
  /** Closes every listener and connection and the control-plane streams. */
  close(): Promise<void>;
}

const DEFAULT_PORTS: ZtunnelPorts = {
  admin: 15000,
  metrics: 15020,
  readiness: 15021,
  socks5: 15080,
  hbone: 15008,
};
const RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

interface LocalPod {
  uid: string;
  ip: string;
  identity: string;
  server?: HboneServer;
  started: Promise<void>;
  stopped: boolean;
}

interface OpenConnection {
  id: number;
  direction: "inbound" | "outbound";
  source: string;
  destination: string;
  sourceIdentity?: string;
  destinationIdentity?: string;
  /** Inbound only: the policy request as of the current state (workload policies may change). */
  policyRequest?: () => AuthorizationRequest;
  close(): void;
}

function plainIp(address: string | undefined): string {
  if (address === undefined) return "";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

function ipOf(w: Workload): string | undefined {
  const bytes = w.addresses[0];
  return bytes === undefined || bytes.length !== 4 ? undefined : Array.from(bytes).join(".");
}

function hostPort(info: AddressInfo): string {
  return `${info.address}:${info.port}`;
}

async function listenTcp(server: Server | HttpServer, host: string, port: number): Promise<AddressInfo> {
  server.listen(port, host);
  try {
    await once(server, "listening");
  } catch (cause) {
    throw new ZtunnelError("ERR_ZTUNNEL_LISTEN", `cannot listen on ${host}:${port}`, { cause });
  }
  return server.address() as AddressInfo;
}

/**
 * The policy a denial names: the DENY policy that matched, or the ALLOW policies of which none
 * matched (the engine names no single policy then).
 */
export function deniedBy(decision: AuthorizationDecision, explain: () => PolicyExplanation[]): string {
  if (decision.policy !== undefined) return decision.policy;
  const allow = explain()
    .filter((p) => p.action === "ALLOW" && !p.dryRun)
    .map((p) => p.policy);
  return allow.length > 0 ? allow.join(", ") : "policy";
}

/** SOCKS5 reply code for a failed dial. */
function socksReplyFor(err: unknown): number {
  if (err instanceof HboneError) {
    if (err.code === "ERR_HBONE_REFUSED") {
      const status = (err as { status?: number }).status;
      return status === HBONE_STATUS.denied ? SOCKS5_REPLY.notAllowed : SOCKS5_REPLY.connectionRefused;
    }
    if (err.code === "ERR_HBONE_TIMEOUT") return SOCKS5_REPLY.ttlExpired;
    return SOCKS5_REPLY.hostUnreachable;
  }
  const code = (err as { code?: string }).code;
  if (code === "ECONNREFUSED") return SOCKS5_REPLY.connectionRefused;
  if (code === "EHOSTUNREACH" || code === "ENOTFOUND") return SOCKS5_REPLY.hostUnreachable;
  if (code === "ENETUNREACH") return SOCKS5_REPLY.networkUnreachable;
  return SOCKS5_REPLY.generalFailure;
}

/**
 * Starts a node proxy: fetches the local pods' certificates from the CA (impersonating them), follows
 * the mesh over Delta xDS, serves inbound HBONE on every local pod IP with policy, SOCKS5 outbound on
 * the node IP, and admin, metrics and readiness endpoints. Resolves once the node listeners are bound;
 * `ready` follows when certificates and the first xDS state are in.
 */
export async function startZtunnel(options: ZtunnelOptions): Promise<RunningZtunnel> {
  if (isIP(options.nodeIp) === 0) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `nodeIp ${JSON.stringify(options.nodeIp)} is not an IP`,
    );
  }
  if (options.nodeName === "") throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "nodeName is empty");
  if (options.token === "") throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "token is empty");
  if (!options.rootCertPem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "rootCertPem holds no PEM certificate");
  }
  const ports: ZtunnelPorts = { ...DEFAULT_PORTS, ...options.ports };
  const logger = options.logger ?? noopLogger;
  const registry = options.registry ?? new prom.Registry();
  const metrics = createPromClientSink(prom, registry);
  const tcpMetrics = createTcpMetrics(metrics);
  const node: ZtunnelNode = {
    name: options.nodeName,
    ip: options.nodeIp,
    id: `ztunnel~${options.nodeIp}~ztunnel-${options.nodeName}.istio-system~istio-system.svc.cluster.local`,
  };
  const address = options.controlPlaneAddress ?? "127.0.0.1:15012";
  const channel = controlPlaneChannel(options.rootCertPem, options.controlPlaneIdentity);
  const trustBundle = options.rootCertPem;

  const store = new WorkloadStore();
  const engine = createAuthorizationEngine({ logger, metrics });
  const caClient = createCertificateServiceClient({
    address,
    ...channel,
    token: options.token,
    clusterId: options.clusterId ?? "Kubernetes",
  });
  const secrets = new SecretManager({
    client: caClient,
    impersonate: true,
    logger,
    metrics,
    ...(options.certificateTtlSeconds === undefined ? {} : { ttlSeconds: options.certificateTtlSeconds }),
  });
  const xds = createXdsClient({
    address,
    ...channel,
    node: { id: node.id, metadata: { NODE_NAME: node.name, CLUSTER_ID: options.clusterId ?? "Kubernetes" } },
    headers: { authorization: `Bearer ${options.token}` },
    logger,
    metrics,
  });

  const pods = new Map<string, LocalPod>();
  const connections = new Map<number, OpenConnection>();
  const sockets = new Set<Socket>();
  const timers = new Map<NodeJS.Timeout, () => void>();
  /** A delay that close() cuts short. */
  const pause = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.set(t, resolve);
    });
  let nextConnectionId = 1;
  let hboneClient: HboneClient | undefined;
  let closed = false;
  let readyFlag = false;

  const svidOf = async (identity: string): Promise<X509Svid> =>
    secrets.get(identity) ?? secrets.fetch(identity);

  // Certificate rotation: the per-pod listeners take the new SVID; outbound reads it per connection.
  secrets.on("rotated", (event: { identity: { toString(): string }; svid: X509Svid }) => {
    for (const pod of pods.values()) {
      if (pod.identity === event.identity.toString() && pod.server !== undefined) {
        pod.server.setCredentials({
          key: event.svid.privateKeyPem,
          certChain: event.svid.certChainPem,
          trustBundle,
        });
      }
    }
  });

  // ---- inbound -----------------------------------------------------------------------------------

  const inboundRequest = (
    src: string,
    peer: string,
    dstIp: string,
    dstPort: number,
  ): AuthorizationRequest => {
    const dst = store.findByAddress(dstIp);
    return {
      source: { ip: src, identity: peer },
      destination: {
        ip: dstIp,
        port: dstPort,
        workload: {
          namespace: dst?.namespace ?? "",
          name: dst?.name ?? "",
          authorizationPolicies: dst?.authorizationPolicies ?? [],
        },
      },
    };
  };

  const handleInbound = (pod: LocalPod, tunnel: InboundTunnel): void => {
    const target = decideInboundDestination(
      { podIp: pod.ip, nodeName: node.name, illegalPorts: [ports.hbone] },
      tunnel.authority,
      store,
    );
    if (target.kind === "refuse") {
      logger.warn({ authority: tunnel.rawAuthority, pod: pod.ip, reason: target.reason }, "inbound refused");
      tunnel.refuse(target.status, target.reason);
      return;
    }
    const dst = target.workload;
    const authority = { host: target.ip, port: target.port };
    const srcIp = plainIp(tunnel.remoteAddress);
    const peer = tunnel.peerIdentity.toString();
    const request = inboundRequest(srcIp, peer, authority.host, authority.port);
    const decision = engine.evaluate(request);
    const logFields = {
      src: srcIp,
      peer,
      dst: `${authority.host}:${authority.port}`,
      reason: decision.reason,
    };
    if (!decision.allowed) {
      logger.info(
        { ...logFields, policy: decision.policy },
        `denied by ${deniedBy(decision, () => engine.explain(request))}`,
      );
      tunnel.refuse(HBONE_STATUS.denied, decision.reason);
      return;
    }
    const upstream = connect({ host: authority.host, port: authority.port, allowHalfOpen: true });
    sockets.add(upstream);
    upstream.once("close", () => sockets.delete(upstream));
    upstream.once("error", (err) => {
      if (tunnel.state === "pending") {
        logger.warn({ ...logFields, err: err.message }, "inbound upstream dial failed");
        tunnel.refuse(HBONE_STATUS.noUpstream, "upstream unavailable");
      }
    });
    upstream.once("connect", () => {
      if (tunnel.state !== "pending" || closed) {
        upstream.destroy();
        return;
      }
      const stream = tunnel.accept();
      const destinationService = target.service ?? serviceForTargetPort(dst, authority.port);
      const labels = connectionLabels({
        reporter: "destination",
        source: store.findByAddress(srcIp),
        sourcePrincipal: peer,
        destination: dst,
        ...(destinationService === undefined ? {} : { destinationService }),
        mutualTls: true,
      });
      const id = nextConnectionId++;
      connections.set(id, {
        id,
        direction: "inbound",
        source: srcIp,
        destination: `${authority.host}:${authority.port}`,
        sourceIdentity: peer,
        destinationIdentity: identityOf(dst),
        policyRequest: () => inboundRequest(srcIp, peer, authority.host, authority.port),
        close() {
          stream.destroy();
          upstream.resetAndDestroy();
        },
      });
      tcpMetrics.opened(labels);
      logger.debug(logFields, "inbound connection opened");
      const finish = () => {
        connections.delete(id);
        tcpMetrics.closed(labels, { sent: upstream.bytesRead, received: upstream.bytesWritten });
        logger.debug(
          { ...logFields, sent: upstream.bytesRead, received: upstream.bytesWritten },
          "inbound closed",
        );
      };
      pipeTunnel(stream, upstream).then(finish, finish);
    });
  };

  const recheckConnections = (): void => {
    const inbound = [...connections.values()].flatMap((c) =>
      c.policyRequest === undefined ? [] : [{ tracked: c, request: c.policyRequest() }],
    );
    for (const { connection, decision } of engine.reevaluate(inbound)) {
      logger.info(
        {
          src: connection.tracked.source,
          dst: connection.tracked.destination,
          policy: decision.policy,
          reason: decision.reason,
        },
        `open connection denied by ${deniedBy(decision, () => engine.explain(connection.request))}, closing`,
      );
      connection.tracked.close();
    }
  };

  // ---- local pods ---------------------------------------------------------------------------------

  const startPod = async (pod: LocalPod): Promise<void> => {
    let attempt = 0;
    while (!pod.stopped && !closed) {
      try {
        const svid = await svidOf(pod.identity);
        if (pod.stopped || closed) return;
        const server = createHboneServer({
          key: svid.privateKeyPem,
          certChain: svid.certChainPem,
          trustBundle,
          onTunnel: (tunnel) => handleInbound(pod, tunnel),
          logger,
          metrics,
        });
        try {
          await server.listen({ host: pod.ip, port: ports.hbone });
        } catch (err) {
          await server.close({ timeoutMs: 0 }).catch(() => {});
          throw err;
        }
        pod.server = server;
        if (pod.stopped || closed) await server.close({ timeoutMs: 0 });
        else logger.info({ pod: pod.uid, ip: pod.ip, identity: pod.identity }, "inbound HBONE listener up");
        return;
      } catch (err) {
        // Own back-off: calling fetch again restarts the CA request at once.
        const retryInMs = Math.min(MAX_RETRY_MS, RETRY_MS * 2 ** attempt++);
        logger.warn(
          { pod: pod.uid, err: (err as Error).message, retryInMs },
          "local pod not ready, retrying",
        );
        await pause(retryInMs);
      }
    }
  };

  const stopPod = (pod: LocalPod): void => {
    pod.stopped = true;
    pods.delete(pod.uid);
    pod.server?.close({ timeoutMs: 1000 }).catch(() => {});
    if (![...pods.values()].some((p) => p.identity === pod.identity)) secrets.forget(pod.identity);
    logger.info({ pod: pod.uid, ip: pod.ip }, "local pod removed");
  };

  const reconcilePods = (): void => {
    const wanted = new Map<string, Workload>();
    for (const w of store.workloadsOnNode(node.name)) if (usesHbone(w)) wanted.set(w.uid, w);
    for (const pod of [...pods.values()]) {
      const w = wanted.get(pod.uid);
      if (w === undefined || ipOf(w) !== pod.ip || identityOf(w) !== pod.identity) stopPod(pod);
    }
    for (const [uid, w] of wanted) {
      const ip = ipOf(w);
      if (pods.has(uid) || ip === undefined) continue;
      const pod: LocalPod = { uid, ip, identity: identityOf(w), started: Promise.resolve(), stopped: false };
      pod.started = startPod(pod);
      pods.set(uid, pod);
    }
  };

  const isLocalSource = (ip: string): Workload | undefined => {
    const w = store.findByAddress(ip);
    return w !== undefined && w.node === node.name && usesHbone(w) ? w : undefined;
  };

  // ---- xDS ----------------------------------------------------------------------------------------

  xds.onChange((event: XdsChangeEvent) => {
    if (event.typeUrl === TypeUrl.address) {
      for (const r of [...event.added, ...event.updated]) store.upsert(r.name, r.resource as WorkloadAddress);
      for (const name of event.removed) store.remove(name);
      reconcilePods();
    } else if (event.typeUrl === TypeUrl.authorization) {
      for (const r of [...event.added, ...event.updated]) {
        try {
          engine.setAuthorization(r.resource as unknown as WireAuthorization);
        } catch (err) {
          logger.warn({ policy: r.name, err: (err as Error).message }, "authorization ignored");
        }
      }
      for (const name of event.removed) {
        const slash = name.indexOf("/");
        if (slash > 0) engine.delete("Authorization", name.slice(0, slash), name.slice(slash + 1));
      }
    }
    recheckConnections();
  });
  xds.onConnection((connected, error) => {
    if (connected) logger.info({ address }, "xDS connected");
    else logger.warn({ address, err: error?.message }, "xDS disconnected");
  });
  xds.onNack((typeUrl, message) => logger.warn({ typeUrl, message }, "xDS response rejected"));
  xds.watch(TypeUrl.address);
  xds.watch(TypeUrl.authorization);

  // ---- outbound (SOCKS5) --------------------------------------------------------------------------

  const dialOutbound = async (
    srcIp: string,
    src: Workload,
    request: { ip: string; port: number },
  ): Promise<{
    stream: TunnelStream | Socket;
    labels: TcpMetricLabels;
    destination: string;
    dstId?: string;
  }> => {
    // `ip` is canonical: an address the client gave, or the VIP of the Service it named.
    const host = request.ip;
    // A Service bound to a waypoint: the waypoint picks the endpoint, so tunnel to it with the
    // original VIP:port as the authority.
    const viaWaypoint = store.findService(host, request.port);
    const waypoint = viaWaypoint === undefined ? undefined : waypointOf(viaWaypoint.service);
    if (viaWaypoint !== undefined && waypoint !== undefined) {
      const wpWorkload = store.findByAddress(waypoint.ip);
      if (wpWorkload === undefined) {
        throw new ZtunnelError("ERR_SOCKS5_UNSUPPORTED", `waypoint ${waypoint.ip} is not a known workload`, {
          reply: SOCKS5_REPLY.hostUnreachable,
        });
      }
      const srcId = identityOf(src);
      const dstId = identityOf(wpWorkload);
      const svid = await svidOf(srcId);
      const creds = { key: svid.privateKeyPem, certChain: svid.certChainPem, trustBundle };
      hboneClient ??= createHboneClient({ ...creds, logger, metrics });
      const authority = `${host}:${request.port}`;
      const tunnel = await hboneClient.connect({
        address: `${waypoint.ip}:${waypoint.port}`,
        authority,
        expectedIdentities: [dstId],
        sourceAddress: srcIp,
        credentials: creds,
      });
      const labels = connectionLabels({
        reporter: "source",
        source: src,
        destination: wpWorkload,
        destinationService: viaWaypoint.service.hostname,
        mutualTls: true,
      });
      return { stream: tunnel, labels, destination: authority, dstId };
    }
    const dest = store.resolve(host, request.port);
    if (dest.kind === "no-endpoint") {
      throw new ZtunnelError(
        "ERR_SOCKS5_UNSUPPORTED",
        `service ${dest.service.key} has no healthy endpoint`,
        {
          reply: SOCKS5_REPLY.hostUnreachable,
        },
      );
    }
    const endpoint = dest.kind === "passthrough" ? undefined : dest.endpoint;
    const destinationService = dest.kind === "service" ? dest.service.service.hostname : undefined;
    const dstWorkload = endpoint?.workload;
    const dstIp = dstWorkload === undefined ? undefined : ipOf(dstWorkload);
    if (
      endpoint !== undefined &&
      dstWorkload !== undefined &&
      dstIp !== undefined &&
      usesHbone(dstWorkload)
    ) {
      const srcId = identityOf(src);
      const dstId = identityOf(dstWorkload);
      const svid = await svidOf(srcId);
      const creds = { key: svid.privateKeyPem, certChain: svid.certChainPem, trustBundle };
      hboneClient ??= createHboneClient({ ...creds, logger, metrics });
      const tunnel = await hboneClient.connect({
        address: `${dstIp}:${ports.hbone}`,
        authority: `${dstIp}:${endpoint.targetPort}`,
        expectedIdentities: [dstId],
        sourceAddress: srcIp,
        credentials: creds,
      });
      const labels = connectionLabels({
        reporter: "source",
        source: src,
        destination: dstWorkload,
        ...(destinationService === undefined ? {} : { destinationService }),
        mutualTls: true,
      });
      return { stream: tunnel, labels, destination: `${dstIp}:${endpoint.targetPort}`, dstId };
    }
    // Not in the mesh: plain TCP from the pod's own address.
    const targetHost = dstIp ?? host;
    const targetPort = endpoint?.targetPort ?? request.port;
    const socket = connect({ host: targetHost, port: targetPort, localAddress: srcIp, allowHalfOpen: true });
    try {
      await once(socket, "connect");
    } catch (err) {
      socket.destroy();
      throw err;
    }
    const labels = connectionLabels({
      reporter: "source",
      source: src,
      destination: dstWorkload,
      ...(destinationService === undefined ? {} : { destinationService }),
      mutualTls: false,
    });
    return { stream: socket, labels, destination: `${targetHost}:${targetPort}` };
  };

  const serveSocksConnect = async (connect: Socks5Connect<Workload>): Promise<void> => {
    const { socket, srcIp, source: src, request } = connect;
    const target = `${request.hostname ?? request.ip}:${request.port}`;
    let dialed: Awaited<ReturnType<typeof dialOutbound>>;
    try {
      dialed = await dialOutbound(srcIp, src, request);
    } catch (err) {
      const code =
        err instanceof ZtunnelError && typeof err.details.reply === "number"
          ? err.details.reply
          : socksReplyFor(err);
      logger.info({ src: srcIp, dst: target, err: (err as Error).message, reply: code }, "outbound refused");
      connect.refuse(code);
      return;
    }
    const { stream, labels } = dialed;
    if (closed || !connect.succeed()) {
      stream.destroy();
      return;
    }
    const id = nextConnectionId++;
    const srcId = identityOf(src);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    connections.set(id, {
      id,
      direction: "outbound",
      source: srcIp,
      destination: dialed.destination,
      sourceIdentity: srcId,
      ...(dialed.dstId === undefined ? {} : { destinationIdentity: dialed.dstId }),
      close() {
        stream.destroy();
        socket.resetAndDestroy();
      },
    });
    tcpMetrics.opened(labels);
    logger.debug({ src: srcIp, dst: dialed.destination, requested: target }, "outbound connection opened");
    socket.resume();
    const finish = () => {
      connections.delete(id);
      const received = socket.bytesRead - connect.handshakeBytes.received;
      const sent = socket.bytesWritten - connect.handshakeBytes.sent;
      tcpMetrics.closed(labels, { sent, received });
      logger.debug({ src: srcIp, dst: dialed.destination, sent, received }, "outbound connection closed");
    };
    pipeTunnel(socket, stream).then(finish, finish);
  };

  const socksHandler = createSocks5Handler<Workload>({
    ...(options.socks5?.handshakeTimeoutMs === undefined
      ? {}
      : { handshakeTimeoutMs: options.socks5.handshakeTimeoutMs }),
    ...(options.socks5?.maxHandshakes === undefined ? {} : { maxHandshakes: options.socks5.maxHandshakes }),
    sourceOf: isLocalSource,
    resolveHostname: (hostname) => {
      const service = store.findServiceByHostname(hostname);
      return service === undefined ? undefined : serviceVip(service);
    },
    onConnect: (connect) =>
      serveSocksConnect(connect).catch((err: unknown) => {
        logger.warn({ src: connect.srcIp, err: (err as Error).message }, "SOCKS5 connection failed");
        connect.socket.destroy();
      }),
    logger,
    metrics,
  });

  // ---- listeners ----------------------------------------------------------------------------------

  const configDump = (): ConfigDump => ({
    node,
    ready: readyFlag,
    workloads: [...store.workloads().values()],
    services: [...store.services().values()],
    policies: engine.wireAuthorizations(),
    localPods: [...pods.values()].map((p) => ({
      uid: p.uid,
      ip: p.ip,
      identity: p.identity,
      listening: p.server !== undefined,
    })),
    certificates: secrets.identities().flatMap((id) => {
      const svid = secrets.get(id);
      return svid === undefined ? [] : [{ identity: id.toString(), notAfter: svid.notAfter.toISOString() }];
    }),
    connections: [...connections.values()].map(({ policyRequest: _p, close: _c, ...summary }) => summary),
    socks5: { handshakesInProgress: socksHandler.inProgress(), handshakes: socksHandler.outcomes() },
  });

  const sendJson = (res: ServerResponse, status: number, body: unknown): void => {
    const text = adminJson(body);
    res.writeHead(status, { "content-type": "application/json" }).end(text);
  };

  const admin = createHttpServer((req, res) => {
    if (req.url === "/config_dump") sendJson(res, 200, configDump());
    else res.writeHead(404).end("not found\n");
  });
  const metricsServer = createHttpServer((req, res) => {
    if (req.url === "/metrics" || req.url === "/stats/prometheus") {
      registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else res.writeHead(404).end("not found\n");
  });
  const readiness = createHttpServer((req, res) => {
    if (req.url === "/healthz/ready")
      res.writeHead(readyFlag ? 200 : 503).end(readyFlag ? "ready\n" : "not ready\n");
    else res.writeHead(404).end("not found\n");
  });
  const socks = createTcpServer({ allowHalfOpen: true, pauseOnConnect: false }, socksHandler.handle);

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const [t, resolve] of timers) {
      clearTimeout(t);
      resolve();
    }
    timers.clear();
    xds.close();
    for (const c of connections.values()) c.close();
    for (const s of sockets) s.destroy();
    socksHandler.destroyAll();
    const servers: (Server | HttpServer)[] = [admin, metricsServer, readiness, socks];
    await Promise.all(
      servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            if ("closeAllConnections" in s) s.closeAllConnections();
            if (s.listening) s.close(() => resolve());
            else resolve();
          }),
      ),
    );
    await Promise.all(
      [...pods.values()].map(async (p) => {
        p.stopped = true;
        await p.started.catch(() => {});
        await p.server?.close({ timeoutMs: 500 }).catch(() => {});
      }),
    );
    pods.clear();
    hboneClient?.destroy();
    secrets.close();
    caClient.close();
  };

  let addresses: ZtunnelAddresses;
  try {
    const [a, m, r, s] = await Promise.all([
      listenTcp(admin, node.ip, ports.admin),
      listenTcp(metricsServer, node.ip, ports.metrics),
      listenTcp(readiness, node.ip, ports.readiness),
      listenTcp(socks, node.ip, ports.socks5),
    ]);
    addresses = { admin: hostPort(a), metrics: hostPort(m), readiness: hostPort(r), socks5: hostPort(s) };
  } catch (err) {
    await close();
    throw err;
  }
  logger.info({ nodeName: node.name, ip: node.ip, ...addresses, controlPlane: address }, "ztunnel listening");

  const ready = (async () => {
    await xds.ready();
    if (closed) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "closed before it was ready");
    reconcilePods();
    await Promise.all([...pods.values()].map((p) => p.started));
    if (closed) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "closed before it was ready");
    readyFlag = true;
    logger.info({ pods: pods.size }, "ztunnel ready");
  })();
  // A proxy closed before it was ready must not leave an unhandled rejection behind.
  ready.catch(() => {});

  return {
    node,
    addresses,
    ready,
    isReady: () => readyFlag,
    metricsText: () => registry.metrics(),
    configDump,
    close,
  };
}
