// Inbound: what arrives for a local pod, over HBONE (15008) or, in-pod, as plaintext (15006). Each
// connection is authorized on the same parsed destination it is then connected to, and kept in the
// registry so a policy change can close it.
import { connect, isIPv4, isIPv6, type Socket } from "node:net";
import {
  encodeProxyHeader,
  HBONE_STATUS,
  type InboundTunnel,
  type ProxyEndpoint,
  pipeTunnel,
} from "@ambient/hbone";
import type {
  AuthorizationDecision,
  AuthorizationEngine,
  AuthorizationRequest,
  PolicyExplanation,
} from "@ambient/policy";
import { SpiffeId } from "@ambient/spiffe";
import type { Workload } from "@ambient/xds";
import { errorText, logConnectionFailed, startAccessLog } from "./access-log.js";
import { connectTimeoutOption, withConnectDeadline } from "./connect-deadline.js";
import type { ConnectionRegistry } from "./connections.js";
import { type DialFailureMetrics, errnoOf, upstreamRefusalReason } from "./dial-failure.js";
import { decidePlaintextInbound, type PlaintextInboundDecision } from "./in-pod-decisions.js";
import { decideInboundDestination, type InboundDecision } from "./inbound-destination.js";
import { canonicalIp } from "./ip-address.js";
import type { OnDemand } from "./on-demand.js";
import { withKeepAlive } from "./socket-keepalive.js";
import {
  connectionLabels,
  countRefused,
  type createTcpMetrics,
  MeteredConnection,
  type ServiceDescription,
  type TcpMetricLabels,
  type TcpMetrics,
} from "./tcp-metrics.js";
import type { Logger } from "./telemetry.js";
import { identityOf, serviceKeyForTargetPort, type WorkloadStore } from "./workload-store.js";

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

/**
 * Why a tunnel's peer cannot be served, or undefined when it can. Only an Istio identity,
 * `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, is an identity to ztunnel: its
 * handshake refuses a client certificate that names no other, so policy never sees one (which
 * `principals: ["*"]` would admit).
 */
export function istioPeerProblem(peer: string): string | undefined {
  if (SpiffeId.tryParse(peer)?.toIstio() !== undefined) return undefined;
  return `peer ${peer} is not an Istio identity (spiffe://<trust domain>/ns/<namespace>/sa/<service account>)`;
}

/**
 * Opens the connection to the local application on behalf of a client at `sourceIp` (its address as
 * the tunnel or the plaintext connection gave it), so a connector that keeps the original source can
 * connect from it.
 */
export type UpstreamConnector = (host: string, port: number, sourceIp: string) => Socket;

/** The pod an inbound connection is for. */
export interface InboundPod {
  uid: string;
  ip: string;
  /**
   * The uid of the xDS workload served here (default `uid`): a connection is decided for this
   * workload only, never for another that claims the pod's address in the store meanwhile.
   */
  workloadUid?: string;
  /** Where connections to the app are made from (default: this process's namespace). */
  connectUpstream?: UpstreamConnector;
}

export interface InboundOptions {
  nodeName: string;
  /** The HBONE port, never a valid inner destination. */
  hbonePort: number;
  /**
   * The proxy's other listener ports in a pod (in-pod: outbound 15001, plaintext inbound 15006). No
   * tunnel or plaintext connection is sent on to them, nor to the HBONE port: the dial would reach the
   * proxy's own listener and loop (Istio's `illegal_ports`, refused with 503). Default none.
   */
  proxyPorts?: readonly number[];
  store: WorkloadStore;
  engine: AuthorizationEngine;
  registry: ConnectionRegistry;
  tcpMetrics: ReturnType<typeof createTcpMetrics>;
  /** Counts failed connects to the local app by errno. */
  dialFailures?: DialFailureMetrics;
  logger: Logger;
  isClosed(): boolean;
  /**
   * On-demand Address lookups (`XDS_ON_DEMAND`), when the node is sent only its own pods: a tunnel
   * target that may name an address this pod is the waypoint of, and a source the node does not
   * know, are asked for (a bounded wait) before the connection is decided. Default none: every
   * address is already known.
   */
  onDemand?: Pick<OnDemand, "ensure">;
  /**
   * How long the connect to the pod's app may take: then the tunnel is refused with 503
   * (`upstream connect failed (ETIMEDOUT)`) or the plaintext connection reset. Default
   * `DEFAULT_CONNECT_TIMEOUT_MS` (10 s); ztunnel `CONNECTION_TIMEOUT`.
   */
  connectTimeoutMs?: number;
}

export interface Inbound {
  /**
   * Serves one HBONE CONNECT stream for `pod`; with on-demand lookups, the promise settles once the
   * tunnel is answered (a rejection is answered 503 by the HBONE server).
   */
  handleTunnel(pod: InboundPod, tunnel: InboundTunnel): void | Promise<void>;
  /**
   * Serves one plaintext connection captured for `pod` (15006), to its original destination:
   * authorized with no peer identity, so STRICT PeerAuthentication refuses it.
   */
  handlePlaintext(pod: InboundPod, socket: Socket, destination: { ip: string; port: number }): void;
  /** Re-evaluates open inbound connections after a policy change and closes the denied ones. */
  recheck(): void;
}

// No Nagle delay toward the pod: a relay writes each piece once, as it arrives (ztunnel sets
// TCP_NODELAY on its sockets too).
const defaultConnector: UpstreamConnector = (host, port) =>
  connect({ host, port, allowHalfOpen: true, noDelay: true });

/**
 * The PROXY protocol v2 header a connection through an application tunnel starts with: the client's
 * address, the address it asked for, and its SPIFFE identity in TLV 0xD0. When the two addresses are
 * of different families the header carries neither (family UNSPEC, still the PROXY command over
 * STREAM), only the identity.
 */
export function applicationTunnelHeader(
  source: ProxyEndpoint,
  destination: ProxyEndpoint,
  identity: string,
): Buffer {
  return isIPv4(source.address) === isIPv4(destination.address)
    ? encodeProxyHeader({ command: "PROXY", source, destination, sourceIdentity: identity })
    : encodeProxyHeader({ command: "PROXY", sourceIdentity: identity });
}

function plainIp(address: string | undefined): string {
  if (address === undefined) return "";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

export function createInbound(options: InboundOptions): Inbound {
  const { store, engine, registry, tcpMetrics, logger } = options;
  const proxyPorts = options.proxyPorts ?? [];
  const connectTimeoutMs = connectTimeoutOption(options.connectTimeoutMs);
  /** The connection to the pod's app, failed with ETIMEDOUT when it gets no answer in time. */
  const connectApp = (pod: InboundPod, host: string, port: number, sourceIp: string): Socket =>
    withConnectDeadline(
      withKeepAlive((pod.connectUpstream ?? defaultConnector)(host, port, sourceIp)),
      connectTimeoutMs,
      `${host}:${port}`,
    );
  const recordDialFailure = (err: unknown): string =>
    options.dialFailures?.record("inbound", err) ?? errnoOf(err) ?? "unknown";

  /**
   * The policy request for a connection to `served`, the pod's workload the connection was decided
   * for: its current version in the store (policies attached since), else that one as it was when
   * the connection was decided (last good state: a workload gone from the store meanwhile does not
   * leave the connection under no policy of its own), never a workload found by address.
   */
  const inboundRequest = (
    src: string,
    peer: string | undefined,
    served: Workload,
    dstIp: string,
    dstPort: number,
  ): AuthorizationRequest => {
    const dst = store.workloads().get(served.uid) ?? served;
    return {
      source: peer === undefined ? { ip: src } : { ip: src, identity: peer },
      destination: {
        ip: dstIp,
        port: dstPort,
        workload: {
          namespace: dst.namespace,
          name: dst.name,
          authorizationPolicies: dst.authorizationPolicies,
        },
      },
    };
  };

  /** Authorizes; logs and returns false on a denial. */
  const authorize = (request: AuthorizationRequest, logFields: Record<string, unknown>) => {
    const decision = engine.evaluate(request);
    if (!decision.allowed) {
      logger.info(
        { ...logFields, reason: decision.reason, policy: decision.policy },
        `denied by ${deniedBy(decision, () => engine.explain(request))}`,
      );
    }
    return decision;
  };

  // Counts recheck() calls: every change of policies or workloads. A connection is decided before
  // its upstream is dialed but joins the registry (what recheck() sees) only once the dial is done,
  // so a change in between would never reach it; it is decided again then, on the state in force.
  let changes = 0;
  const deniedSince = (
    decidedAt: number,
    request: () => AuthorizationRequest,
  ): { decision: AuthorizationDecision; request: AuthorizationRequest } | undefined => {
    if (changes === decidedAt) return undefined;
    const current = request();
    const decision = engine.evaluate(current);
    return decision.allowed ? undefined : { decision, request: current };
  };
  const logLateDenial = (
    late: { decision: AuthorizationDecision; request: AuthorizationRequest },
    logFields: Record<string, unknown>,
  ): string => {
    const by = deniedBy(late.decision, () => engine.explain(late.request));
    logger.info(
      { ...logFields, reason: late.decision.reason, policy: late.decision.policy },
      `denied by ${by} (policy changed while connecting)`,
    );
    return by;
  };

  /**
   * The Service through which `dst` serves `targetPort`, for labelling inbound connections, whose
   * tunnels name only the pod; only its key's parts when the Service itself is not known.
   */
  const serviceAtTargetPort = (dst: Workload, targetPort: number): ServiceDescription | undefined => {
    const key = serviceKeyForTargetPort(dst, targetPort);
    if (key === undefined) return undefined;
    const slash = key.indexOf("/");
    return (
      store.services().get(key) ?? {
        namespace: key.slice(0, slash),
        name: "",
        hostname: key.slice(slash + 1),
      }
    );
  };

  const decideTunnel = (pod: InboundPod, tunnel: InboundTunnel): InboundDecision =>
    decideInboundDestination(
      {
        podIp: pod.ip,
        workloadUid: pod.workloadUid ?? pod.uid,
        nodeName: options.nodeName,
        illegalPorts: [options.hbonePort, ...proxyPorts],
      },
      tunnel.authority,
      store,
    );

  /**
   * Whether a source address is worth asking the control plane for: only to name the source workload
   * in metrics and the access log (policy reads the source's address and proven identity, never its
   * workload), so one it already knows is not asked for.
   */
  const unknownSource = (srcIp: string): boolean => srcIp !== "" && store.findByAddress(srcIp) === undefined;

  const handleTunnel = (pod: InboundPod, tunnel: InboundTunnel): void | Promise<void> => {
    // Refused as ztunnel's handshake refuses it, before any lookup or policy: answered as a denial.
    const peerProblem = istioPeerProblem(tunnel.peerIdentity.toString());
    if (peerProblem !== undefined) {
      const srcAddr = `${plainIp(tunnel.remoteAddress)}:${tunnel.remotePort}`;
      const dstAddr = `${pod.ip}:${options.hbonePort}`;
      logConnectionFailed(logger, { direction: "inbound", srcAddr, dstAddr, error: peerProblem });
      tunnel.refuse(HBONE_STATUS.denied, peerProblem);
      return;
    }
    const target = decideTunnel(pod, tunnel);
    if (options.onDemand === undefined) {
      serveTunnel(pod, tunnel, target);
      return;
    }
    return lookUpThenServeTunnel(options.onDemand, pod, tunnel, target);
  };

  /**
   * On-demand: a node that was sent only its own pods cannot tell, from what it holds, whether an
   * address the tunnel names is a Service or workload this pod is the waypoint of; it asks the
   * control plane before refusing the tunnel with 400. An unknown source is asked for too, for the
   * connection's telemetry. Each lookup is a bounded wait; the decision is then made again on the
   * store as it is.
   */
  const lookUpThenServeTunnel = async (
    onDemand: Pick<OnDemand, "ensure">,
    pod: InboundPod,
    tunnel: InboundTunnel,
    first: InboundDecision,
  ): Promise<void> => {
    // Whether the tunnel needs no answer any more: its client left, or the proxy closed meanwhile (a
    // tunnel still waiting is then refused rather than left open).
    const gone = () => {
      if (tunnel.state !== "pending") return true;
      if (!options.isClosed()) return false;
      tunnel.refuse(HBONE_STATUS.noUpstream, "proxy closing");
      return true;
    };
    let target = first;
    const { authority } = tunnel;
    if (target.kind === "refuse" && target.status === 400 && authority.kind === "ip") {
      const ip = canonicalIp(authority.host)?.text;
      if (ip !== undefined && ip !== pod.ip) {
        await onDemand.ensure(ip, authority.port);
        if (gone()) return;
        target = decideTunnel(pod, tunnel);
      }
    }
    if (target.kind === "forward" && unknownSource(plainIp(tunnel.remoteAddress))) {
      // The source is a pod, not a Service: the port plays no part in asking for it.
      await onDemand.ensure(plainIp(tunnel.remoteAddress), 0);
      if (gone()) return;
      target = decideTunnel(pod, tunnel);
    }
    serveTunnel(pod, tunnel, target);
  };

  const serveTunnel = (pod: InboundPod, tunnel: InboundTunnel, target: InboundDecision): void => {
    const srcIp = plainIp(tunnel.remoteAddress);
    const srcAddr = `${srcIp}:${tunnel.remotePort}`;
    const dstAddr = `${pod.ip}:${options.hbonePort}`;
    if (target.kind === "refuse") {
      logConnectionFailed(logger, {
        direction: "inbound",
        srcAddr,
        dstAddr,
        error: `authority ${tunnel.rawAuthority}: ${target.reason}`,
      });
      tunnel.refuse(target.status, target.reason);
      return;
    }
    const dst = target.workload;
    const authority = { host: target.ip, port: target.port };
    const peer = tunnel.peerIdentity.toString();
    // A pod with an application tunnel: the connection goes to the tunnel's port (`authority.port`,
    // what policy sees too) and, for PROXY, starts with a header naming the client and its target.
    const appTunnel = target.applicationTunnel;
    const request = inboundRequest(srcIp, peer, dst, authority.host, authority.port);
    const decision = engine.evaluate(request);
    const decidedAt = changes;
    const destinationService = target.service ?? serviceAtTargetPort(dst, authority.port);
    const source = store.findByAddress(srcIp);
    const labels = connectionLabels({
      reporter: "destination",
      source,
      sourcePrincipal: peer,
      destination: dst,
      ...(destinationService === undefined ? {} : { destinationService }),
      mutualTls: true,
    });
    const accessLog = startAccessLog(logger, {
      direction: "inbound",
      srcAddr,
      source,
      srcIdentity: peer,
      dstAddr,
      hboneAddr: appTunnel === undefined ? `${authority.host}:${authority.port}` : tunnel.rawAuthority,
      destination: dst,
      ...(destinationService === undefined ? {} : { destinationService: destinationService.hostname }),
      dstIdentity: identityOf(dst),
    });
    const logFields = {
      src: srcIp,
      peer,
      dst: `${authority.host}:${authority.port}`,
      reason: decision.reason,
    };
    if (!decision.allowed) {
      const by = deniedBy(decision, () => engine.explain(request));
      logger.info({ ...logFields, policy: decision.policy }, `denied by ${by}`);
      accessLog.complete({ sent: 0, received: 0, error: `policy rejection: denied by ${by}` });
      countRefused(tcpMetrics, labels, "DENY");
      tunnel.refuse(HBONE_STATUS.denied, decision.reason);
      return;
    }
    // The connection counts as opened from here, as the tunnel was authorized: a connect to the app
    // that fails, or that the client does not wait for, is counted opened and closed with its cause.
    // A PROXY tunnel in a pod's own network namespace goes to the pod's loopback, from loopback, so
    // the app can listen there only, out of reach of anything but this proxy; the client's address
    // is in the header.
    const loopback = isIPv6(pod.ip) ? "::1" : "127.0.0.1";
    const upstream =
      appTunnel?.protocol === "PROXY" && pod.connectUpstream !== undefined
        ? connectApp(pod, loopback, authority.port, loopback)
        : connectApp(pod, authority.host, authority.port, srcIp);
    registry.trackSocket(upstream, pod.connectUpstream === undefined ? undefined : pod.uid);
    // A failed dial, not an error of the relay once the app took the connection (pipeTunnel's).
    let dialed = false;
    upstream.once("error", (err) => {
      if (dialed) return;
      const errno = recordDialFailure(err);
      logger.warn({ ...logFields, err: err.message, errno }, "inbound upstream dial failed");
      accessLog.complete({ sent: 0, received: 0, error: `upstream unavailable: ${err.message}` });
      countRefused(tcpMetrics, labels, "CONNECT");
      // The errno goes back to the peer: it answers its client with the reply code that fits it.
      if (tunnel.state === "pending") tunnel.refuse(HBONE_STATUS.noUpstream, upstreamRefusalReason(err));
    });
    upstream.once("connect", () => {
      dialed = true;
      if (tunnel.state !== "pending" || options.isClosed()) {
        // The stream reset while dialing cannot be answered: a failure of the HBONE stream. A proxy
        // closing meanwhile is no failure of this connection: closed without a flag, and the tunnel
        // still waiting is refused, as one that arrives while the proxy closes.
        const closing = tunnel.state === "pending";
        countRefused(tcpMetrics, labels, closing ? "-" : "H2_HANDSHAKE_FAILURE");
        accessLog.complete({ sent: 0, received: 0, error: "tunnel closed before the upstream connected" });
        if (closing) tunnel.refuse(HBONE_STATUS.noUpstream, "proxy closing");
        upstream.destroy();
        return;
      }
      const late = deniedSince(decidedAt, () =>
        inboundRequest(srcIp, peer, dst, authority.host, authority.port),
      );
      if (late !== undefined) {
        const by = logLateDenial(late, logFields);
        accessLog.complete({ sent: 0, received: 0, error: `policy rejection: denied by ${by}` });
        countRefused(tcpMetrics, labels, "DENY");
        tunnel.refuse(HBONE_STATUS.denied, late.decision.reason);
        upstream.destroy();
        return;
      }
      const stream = tunnel.accept();
      // The header is the proxy's, not the client's: it is left out of the bytes counted.
      let headerBytes = 0;
      if (appTunnel?.protocol === "PROXY") {
        const header = applicationTunnelHeader(
          { address: srcIp, port: tunnel.remotePort },
          { address: appTunnel.target.ip, port: appTunnel.target.port },
          peer,
        );
        headerBytes = header.length;
        upstream.write(header);
      }
      const carried = new CarriedInbound(upstream, labels, tcpMetrics, headerBytes);
      const id = registry.add({
        direction: "inbound",
        source: srcIp,
        destination: `${authority.host}:${authority.port}`,
        sourceIdentity: peer,
        destinationIdentity: identityOf(dst),
        policyRequest: () => inboundRequest(srcIp, peer, dst, authority.host, authority.port),
        ...(pod.connectUpstream === undefined ? {} : { owner: pod.uid }),
        traffic: carried,
        close() {
          stream.destroy();
          upstream.resetAndDestroy();
        },
      });
      tcpMetrics.opened(labels);
      logger.debug(logFields, "inbound connection opened");
      const finish = (err?: unknown) => {
        registry.delete(id);
        carried.reportClosed(err);
        accessLog.complete({
          sent: carried.sentBytes(),
          received: carried.receivedBytes(),
          ...(err === undefined ? {} : { error: errorText(err) }),
        });
      };
      pipeTunnel(stream, upstream).then(
        () => finish(),
        (err: unknown) => finish(err),
      );
    });
  };

  const decidePlaintext = (pod: InboundPod, destination: { ip: string; port: number }) =>
    decidePlaintextInbound(
      { ip: pod.ip, workloadUid: pod.workloadUid ?? pod.uid, hbonePort: options.hbonePort, proxyPorts },
      { address: destination.ip, port: destination.port },
      store,
    );

  const handlePlaintext = (pod: InboundPod, socket: Socket, destination: { ip: string; port: number }) => {
    registry.trackSocket(socket, pod.uid);
    const target = decidePlaintext(pod, destination);
    const srcIp = plainIp(socket.remoteAddress);
    const onDemand = options.onDemand;
    if (onDemand === undefined || target.kind === "refuse" || !unknownSource(srcIp)) {
      servePlaintext(pod, socket, destination, target);
      return;
    }
    // On-demand: the source is asked for first, for the connection's telemetry (as for a tunnel).
    // A reset meanwhile must not go unhandled; the socket is found destroyed after the wait.
    const ignore = () => {};
    socket.on("error", ignore);
    onDemand
      .ensure(srcIp, 0)
      .then(() => {
        socket.off("error", ignore);
        if (socket.destroyed || options.isClosed()) return;
        servePlaintext(pod, socket, destination, decidePlaintext(pod, destination));
      })
      .catch((err: unknown) => {
        logger.warn({ src: srcIp, pod: pod.ip, err: errorText(err) }, "inbound plaintext failed");
        socket.resetAndDestroy();
      });
  };

  const servePlaintext = (
    pod: InboundPod,
    socket: Socket,
    destination: { ip: string; port: number },
    target: PlaintextInboundDecision,
  ) => {
    const srcIp = plainIp(socket.remoteAddress);
    const srcAddr = `${srcIp}:${socket.remotePort}`;
    const dstAddr = `${destination.ip}:${destination.port}`;
    const owner = pod.uid;
    const logFields = { src: srcIp, dst: `${destination.ip}:${destination.port}`, pod: pod.ip };
    if (target.kind === "refuse") {
      logger.warn({ ...logFields, reason: target.reason }, "inbound plaintext refused");
      logConnectionFailed(logger, { direction: "inbound", srcAddr, dstAddr, error: target.reason });
      socket.resetAndDestroy();
      return;
    }
    const dst = target.workload;
    const source = store.findByAddress(srcIp);
    const destinationService = serviceAtTargetPort(dst, destination.port);
    const labels = connectionLabels({
      reporter: "destination",
      source,
      destination: dst,
      ...(destinationService === undefined ? {} : { destinationService }),
      mutualTls: false,
    });
    const accessLog = startAccessLog(logger, {
      direction: "inbound",
      srcAddr,
      source,
      dstAddr,
      destination: dst,
      ...(destinationService === undefined ? {} : { destinationService: destinationService.hostname }),
    });
    const request = inboundRequest(srcIp, undefined, dst, destination.ip, destination.port);
    const decision = authorize(request, { ...logFields, peer: "none" });
    const decidedAt = changes;
    if (!decision.allowed) {
      accessLog.complete({
        sent: 0,
        received: 0,
        error: `policy rejection: denied by ${deniedBy(decision, () => engine.explain(request))}`,
      });
      countRefused(tcpMetrics, labels, "DENY");
      socket.resetAndDestroy();
      return;
    }
    const upstream = connectApp(pod, destination.ip, destination.port, srcIp);
    registry.trackSocket(upstream, owner);
    // A failed dial, not an error of the relay once the app took the connection (that one ends the
    // relay, and its access line carries the bytes moved and the error).
    let dialed = false;
    upstream.once("error", (err) => {
      if (dialed) return;
      const errno = recordDialFailure(err);
      logger.warn({ ...logFields, err: err.message, errno }, "inbound upstream dial failed");
      accessLog.complete({ sent: 0, received: 0, error: `upstream unavailable: ${err.message}` });
      countRefused(tcpMetrics, labels, "CONNECT");
      socket.resetAndDestroy();
    });
    upstream.once("connect", () => {
      dialed = true;
      if (options.isClosed() || socket.destroyed) {
        // Opened all the same, and nothing failed on the way to the app: closed without a flag.
        tcpMetrics.opened(labels);
        tcpMetrics.closed(labels);
        accessLog.complete({ sent: 0, received: 0, error: "client closed before the upstream connected" });
        upstream.destroy();
        return;
      }
      const late = deniedSince(decidedAt, () =>
        inboundRequest(srcIp, undefined, dst, destination.ip, destination.port),
      );
      if (late !== undefined) {
        const by = logLateDenial(late, { ...logFields, peer: "none" });
        accessLog.complete({ sent: 0, received: 0, error: `policy rejection: denied by ${by}` });
        countRefused(tcpMetrics, labels, "DENY");
        socket.resetAndDestroy();
        upstream.destroy();
        return;
      }
      const carried = new CarriedInbound(upstream, labels, tcpMetrics);
      const id = registry.add({
        direction: "inbound",
        source: srcIp,
        destination: `${destination.ip}:${destination.port}`,
        destinationIdentity: identityOf(dst),
        policyRequest: () => inboundRequest(srcIp, undefined, dst, destination.ip, destination.port),
        owner,
        traffic: carried,
        close() {
          socket.resetAndDestroy();
          upstream.resetAndDestroy();
        },
      });
      tcpMetrics.opened(labels);
      logger.debug(logFields, "inbound plaintext connection opened");
      const finish = (err?: unknown) => {
        registry.delete(id);
        carried.reportClosed(err);
        accessLog.complete({
          sent: upstream.bytesRead,
          received: upstream.bytesWritten,
          ...(err === undefined ? {} : { error: errorText(err) }),
        });
      };
      pipeTunnel(socket, upstream).then(
        () => finish(),
        (err: unknown) => finish(err),
      );
    });
  };

  const recheck = (): void => {
    changes++;
    const inbound = registry
      .connections()
      .flatMap((c) => (c.policyRequest === undefined ? [] : [{ tracked: c, request: c.policyRequest() }]));
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
      // Its close is counted as a policy denial (ztunnel's late rejection), not as a normal end.
      const { traffic } = connection.tracked;
      if (traffic instanceof MeteredConnection) traffic.closeFlag = "DENY";
      connection.tracked.close();
    }
  };

  return { handleTunnel, handlePlaintext, recheck };
}

/** An open inbound connection's byte counts, read from its upstream socket. */
class CarriedInbound extends MeteredConnection {
  constructor(
    readonly upstream: Socket,
    labels: TcpMetricLabels,
    tcpMetrics: TcpMetrics,
    /** Bytes the proxy wrote to the pod itself first (a PROXY header), not the source's. */
    readonly ownBytes = 0,
  ) {
    super(labels, tcpMetrics);
  }

  /** Bytes the pod sent back toward the source. */
  sentBytes(): number {
    return this.upstream.bytesRead;
  }

  /** Bytes from the source written to the pod. */
  receivedBytes(): number {
    return Math.max(0, this.upstream.bytesWritten - this.ownBytes);
  }
}
