// The composition root of the node proxy: validates options, connects to the control plane (CA and
// xDS), and wires the modules that do the work: state (workload store, policy engine, connections),
// inbound, outbound, socks5, node pods and admin. No protocol logic lives here.
import { once } from "node:events";
import type { Server as HttpServer } from "node:http";
import { type AddressInfo, isIP, type Server } from "node:net";
import { createDnsForwarder, type DnsForwarder, type Nameserver, readResolvConf } from "@ambient/dns";
import { createHboneClient } from "@ambient/hbone";
import { openNetns } from "@ambient/netns";
import { createZdsClient, type ZdsClient } from "@ambient/netns/zds";
import type { WireAuthorization } from "@ambient/policy";
import { trustedRootsOf, type X509Svid } from "@ambient/spiffe";
import { createPromClientSink } from "@ambient/telemetry";
import type { Workload } from "@ambient/xds";
import * as prom from "prom-client";
import { createAdminServers, createConnectionHistory } from "./admin.js";
import { closeOnce } from "./close-once.js";
import { clusterIdProblem, DEFAULT_CLUSTER_ID } from "./cluster-id.js";
import { ConnectionRegistry, type ConnectionSummary } from "./connections.js";
import { controlPlaneChannel, followRoots } from "./control-plane-channel.js";
import { createDialFailureMetrics } from "./dial-failure.js";
import { createDnsProxy, DNS_PROXY_PORT, type DnsProxy, upstreamPlan } from "./dns-proxy.js";
import { ZtunnelError } from "./errors.js";
import { createHostnameResolver } from "./hostname-endpoints.js";
import {
  createInPodProxies,
  type InPodPorts,
  type InPodSummary,
  type InPodWorkload,
  type PodDnsSockets,
} from "./in-pod.js";
import { createInbound } from "./inbound.js";
import { controlPlaneIdentityOf, DEFAULT_TRUST_DOMAIN, trustDomainProblem } from "./mesh-domains.js";
import { createMeshState } from "./mesh-state.js";
import { createNodePods, type LocalPodSummary } from "./node-pods.js";
import { onDemandOf, withOnDemand } from "./on-demand.js";
import { createHostNetwork, createOutbound } from "./outbound.js";
import { createSocks5Outbound } from "./socks5-outbound.js";
import type { Socks5HandshakeOutcome } from "./socks5-server.js";
import { createTcpMetrics, TCP_BYTES_REPORT_MS } from "./tcp-metrics.js";
import { type Logger, noopLogger } from "./telemetry.js";
import { usesHbone } from "./workload-store.js";

export type { ConnectionSummary } from "./connections.js";
export { INPOD_MARK, type InPodPorts, type InPodSummary, type InPodWorkload } from "./in-pod.js";
export { deniedBy } from "./inbound.js";

/** Listening ports of a node proxy (on the node IP, but admin on `adminIp` and `hbone` per pod IP). */
export interface ZtunnelPorts {
  /** Admin (`/config_dump`). Default 15000; ztunnel `ADMIN_PORT`. */
  admin: number;
  /** Prometheus (`/metrics`, `/stats/prometheus`). Default 15020; ztunnel `STATS_PORT`. */
  metrics: number;
  /** Readiness (`/healthz/ready`). Default 15021; ztunnel `READINESS_PORT`. */
  readiness: number;
  /**
   * SOCKS5 outbound, on the node IP, in node mode only (none in in-pod and dedicated modes). Default
   * 15080; ztunnel `SOCKS5_PORT`.
   */
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
  /**
   * This proxy's own pod, named in its xDS node id and metadata (`NAME`, `NAMESPACE`) as Istio's
   * ztunnel names it from `POD_NAME` and `POD_NAMESPACE`: istiod checks that the namespace is the
   * caller's token's. Default `ztunnel-<nodeName>` in `istio-system`.
   */
  pod?: { name: string; namespace: string };
  /**
   * IP of the admin listener (`/config_dump`, `/recent_connections`, and `POST /quitquitquit`, which
   * shuts the proxy down): whoever reaches it can stop the node's data path and read its state, so it
   * should be a loopback address. Default `nodeIp` (the local mesh's node IPs are loopback ones); the
   * CLI keeps it on loopback (`--admin-ip`), as ztunnel binds `ADMIN_PORT` to localhost.
   */
  adminIp?: string;
  /** Control plane (xDS and CA) gRPC target. Default `127.0.0.1:15012`; ztunnel `XDS_ADDRESS`/`CA_ADDRESS`. */
  controlPlaneAddress?: string;
  /** Mesh roots (PEM): verify the control plane and every peer; ztunnel `ROOT_CA`. */
  rootCertPem: string;
  /**
   * Bearer token of the node's service account, sent on CA and xDS calls. A function is called for
   * each CA call and xDS stream, so a projected token the kubelet rotates is picked up (see
   * `tokenFileReader`).
   */
  token: string | (() => string);
  /**
   * The mesh's SPIFFE trust domain (meshConfig `trustDomain`). Default `cluster.local`; ztunnel
   * `TRUST_DOMAIN` (CLI `--trust-domain`). It names the control plane: see `controlPlaneIdentity`.
   */
  trustDomain?: string;
  /**
   * URI SAN the control plane's certificate must carry. Default istiod's identity in `trustDomain`,
   * `spiffe://<trustDomain>/ns/istio-system/sa/istiod`.
   */
  controlPlaneIdentity?: string;
  /**
   * The cluster this proxy runs in: `clusterid` metadata on every xDS stream and CA call, `CLUSTER_ID`
   * in the xDS node metadata. A control plane serves callers of its own cluster only. Non-empty
   * printable ASCII without whitespace. Default `Kubernetes`; ztunnel `ISTIO_META_CLUSTER_ID`, else
   * `CLUSTER_ID` (CLI `--cluster-id`).
   */
  clusterId?: string;
  /** Port overrides (0 = ephemeral for the node listeners). */
  ports?: Partial<ZtunnelPorts>;
  /** Default: no-op. */
  logger?: Logger;
  /** prom-client registry for every metric of this proxy. Default: a new one per proxy. */
  registry?: prom.Registry;
  /** Requested certificate lifetime. Default 24 h; ztunnel `SECRET_TTL`. */
  certificateTtlSeconds?: number;
  /** `tag` of the `istio_build{component="ztunnel"}` gauge (Istio: the build's git tag). Default `unknown`. */
  buildTag?: string;
  /**
   * In-pod mode: pods are handed over with their network namespaces (`addPod`, or ZDS), and each
   * gets its listeners inside its namespace; no listener is opened on pod IPs in this process's
   * namespace. Implied by `zdsSocketPath`.
   */
  inPod?: {
    /** Ports inside each pod: outbound 15001, inboundPlaintext 15006, hbone = `ports.hbone` (15008). */
    ports?: Partial<Omit<InPodPorts, "hbone">>;
    /**
     * A pod added whose workload xDS already has is acknowledged once it is served, or after this
     * long; one xDS does not have yet is acknowledged at once and served when its workload comes.
     * In dedicated mode, how long the proxy waits for its workload in xDS (then it is not ready).
     * Default 3000 ms.
     */
    workloadWaitMs?: number;
    /**
     * Connect to each pod's app from the client's own address (IP_TRANSPARENT), as Istio's ztunnel
     * does (`ENABLE_ORIG_SRC`); needs istio-cni's in-pod reply routing (connmark 0x111, table 100).
     * Default true with a node agent (`zdsSocketPath` or `addPod`), false in dedicated mode.
     */
    originalSource?: boolean;
  };
  /**
   * The DNS proxy of in-pod mode (Istio's ztunnel DNS capture): each served pod gets a resolver on
   * 127.0.0.1:15053 (UDP and TCP) in its namespace, where the capture rules send its port-53 traffic.
   * It answers mesh Service names (Kubernetes Services, ServiceEntry hosts with an address) as the pod
   * would spell them, and forwards every other question to the upstream resolvers unchanged. On by
   * default in in-pod mode; `false` turns it off (the pod's DNS then goes where its rules send it).
   */
  dns?:
    | false
    | {
        /**
         * Upstream resolvers, `ip` or `ip:port` (`[ipv6]:port`), also for endpoints known by hostname
         * (DNS ServiceEntries). Default: the `nameserver` lines of this process's /etc/resolv.conf
         * (127.0.0.1 when there are none, as the C library does).
         */
        nameservers?: readonly string[];
        /** Kubernetes cluster domain. Default `cluster.local`. */
        clusterDomain?: string;
        /** Port inside each pod. Default 15053. */
        port?: number;
        /**
         * Whether mesh names get IPv6 records (a dual-stack Service's IPv6 VIPs). Default true; false
         * answers AAAA for a mesh name with no records, as Istio's ztunnel with `IPV6_ENABLED=false`
         * (this proxy carries IPv4 only, so an app that tries an IPv6 VIP first is not captured).
         */
        ipv6?: boolean;
        /**
         * Per upstream try. Default: resolv.conf's `options timeout:` when the nameservers come from
         * it, else 5000 ms (its rounds: `options attempts:`, else 2).
         */
        timeoutMs?: number;
      };
  /**
   * The node agent's ZDS socket (Unix SOCK_SEQPACKET): the proxy connects as a client and serves the
   * pods it is handed; ztunnel `INPOD_UDS` (`/var/run/ztunnel/ztunnel.sock`). Default: no ZDS.
   */
  zdsSocketPath?: string;
  /**
   * Dedicated mode: serve exactly one workload, with no node agent: its listeners (15001, 15006,
   * 15008) open in `netnsPath`, by default this process's own network namespace, once the workload is
   * known in xDS; ztunnel `PROXY_MODE=dedicated`, for a proxy beside one process or on a VM. Implies
   * in-pod mode; readiness waits for the workload's listeners.
   */
  dedicated?: {
    /** The workload served: its name and namespace (ZDS `WorkloadInfo`), or `uid` of its xDS workload. */
    workload: { name: string; namespace: string; serviceAccount?: string; uid?: string };
    /** Network namespace to serve in. Default `/proc/self/ns/net`. */
    netnsPath?: string;
  };
  /**
   * On-demand Address lookup (ztunnel `XDS_ON_DEMAND=true`): no wildcard Address watch; the control
   * plane sends this node's pods, and an outbound destination (SOCKS5 or captured) the proxy does not
   * know is asked for by `network/IP` (its Service's waypoint too), waiting up to `timeoutMs` (default
   * 5000) before the usual decision; at most `maxUnresolved` (1024) addresses without a resource stay
   * subscribed. Default false: every address, as ztunnel's default. The lookups name `network`
   * unless `onDemand.network` says otherwise.
   */
  onDemand?: boolean | { timeoutMs?: number; maxUnresolved?: number; network?: string };
  /**
   * The network this node is on (ztunnel `NETWORK`, which Istio's chart sets from `global.network`):
   * workload addresses and Service VIPs are looked up on it, and endpoints of other networks are
   * never chosen (this proxy has no network gateway). It must be the network the control plane gives
   * this node's pods, or they are not found. Default `""`, a mesh that names no networks.
   */
  network?: string;
  /**
   * How long {@link RunningZtunnel.shutdown} lets open connections run before it closes them.
   * Default 5000 ms; ztunnel `CONNECTION_TERMINATION_DEADLINE` (the CLI reads it, and
   * `TERMINATION_GRACE_PERIOD_SECONDS`, with `terminationDeadlineMs` of `cli.ts`).
   */
  terminationDeadlineMs?: number;
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
  /** The proxy's own pod (see {@link ZtunnelOptions.pod}). */
  pod: { name: string; namespace: string };
  /** xDS node id, `ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`, as Istio's ztunnel. */
  id: string;
}

/** Where the node listeners ended up (`ip:port`). */
export interface ZtunnelAddresses {
  admin: string;
  metrics: string;
  readiness: string;
  /**
   * The SOCKS5 listener, in node mode (the local mesh's way in); absent in in-pod and dedicated
   * modes, where pods are captured instead.
   */
  socks5?: string;
}

/** The JSON `/config_dump` serves. */
export interface ConfigDump {
  node: ZtunnelNode;
  ready: boolean;
  workloads: Workload[];
  services: unknown[];
  policies: WireAuthorization[];
  localPods: LocalPodSummary[];
  certificates: { identity: string; notAfter: string }[];
  connections: ConnectionSummary[];
  /** In-pod mode: pods served inside their network namespaces. */
  inPodPods: InPodSummary[];
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
  /**
   * In-pod mode: serves `pod` inside its network namespace (listeners on 15001, 15006, 15008, its
   * sockets marked 0x539). Takes ownership of `pod.netns`. Resolves once the listeners are open
   * (and the pod served, when xDS already has its workload); a pod whose workload is not in xDS yet
   * is served when it comes, its early connections held meanwhile. A pod already served in the same
   * namespace is left as it is; one in a new namespace (a re-created sandbox) replaces the old. A
   * listener that cannot be opened rejects the call (`ERR_ZTUNNEL_LISTEN`), yet the pod is kept and
   * its listeners tried again every 5 s until they open or it is removed; not ready meanwhile.
   */
  addPod(pod: InPodWorkload): Promise<void>;
  /** Closes a pod's listeners and connections; false when it was not added. */
  removePod(uid: string): Promise<boolean>;
  /** Sockets this proxy has open for the data path (all, or one in-pod pod's): for leak checks. */
  openSockets(podUid?: string): number;
  /**
   * Shuts down gracefully, as Istio's ztunnel drains on SIGTERM: stops accepting (the SOCKS5 and
   * every pod's listeners close, DNS included; the readiness probe answers 503; the node agent's ZDS
   * connection closes), sends GOAWAY on inbound HBONE connections so peers open no new tunnels on
   * them, and lets open connections run until they end or `deadlineMs` (default
   * `terminationDeadlineMs`) has passed, then closes everything as {@link close} does. Resolves once
   * closed; every call returns the first call's promise. A bad deadline throws
   * `ERR_ZTUNNEL_INVALID_OPTION`. `POST /quitquitquit` on the admin port starts it too.
   */
  shutdown(options?: { deadlineMs?: number }): Promise<void>;
  /** Closes every listener and connection and the control-plane streams at once (a shutdown under way too). */
  close(): Promise<void>;
  /**
   * Resolves once the proxy has closed, whatever closed it (close(), shutdown, `POST /quitquitquit`);
   * rejects as close() does when closing failed.
   */
  readonly closed: Promise<void>;
}

/**
 * The SOCKS5 address (`ip:port`) of a proxy in node mode; throws `ERR_ZTUNNEL_NO_SOCKS5` for one in
 * in-pod or dedicated mode, which opens no SOCKS5 listener.
 */
export function socks5AddressOf(ztunnel: Pick<RunningZtunnel, "addresses">): string {
  const address = ztunnel.addresses.socks5;
  if (address === undefined) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_NO_SOCKS5",
      "this proxy serves captured pods (in-pod or dedicated mode) and has no SOCKS5 listener",
    );
  }
  return address;
}

/** Default of {@link ZtunnelOptions.terminationDeadlineMs}: ztunnel's `CONNECTION_TERMINATION_DEADLINE`. */
export const DEFAULT_TERMINATION_DEADLINE_MS = 5000;

const DEFAULT_PORTS: ZtunnelPorts = {
  admin: 15000,
  metrics: 15020,
  readiness: 15021,
  socks5: 15080,
  hbone: 15008,
};

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

/** `ip`, `ip:port` or `[ipv6]:port` as a nameserver. */
export function parseNameserver(text: string): Nameserver {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const [host, port] =
    bracketed !== null
      ? [bracketed[1] ?? "", bracketed[2]]
      : isIP(text) !== 0
        ? [text, undefined]
        : [text.slice(0, text.lastIndexOf(":")), text.slice(text.lastIndexOf(":") + 1)];
  const portNumber = port === undefined ? 53 : Number(port);
  if (isIP(host) === 0 || !Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `nameserver ${JSON.stringify(text)} is not ip, ip:port or [ipv6]:port`,
    );
  }
  return { address: host, port: portNumber };
}

/** The DNS proxy, forwarding to `upstreams` (the configured ones), else to /etc/resolv.conf's. */
async function startDnsProxy(
  dns: Exclude<ZtunnelOptions["dns"], false>,
  upstreams: Nameserver[] | undefined,
  store: Parameters<typeof createDnsProxy>[0]["store"],
  logger: Logger,
  metrics: Parameters<typeof createDnsProxy>[0]["metrics"],
): Promise<{ proxy: DnsProxy; forwarderFor: (sockets: PodDnsSockets) => DnsForwarder }> {
  const conf =
    upstreams === undefined
      ? await readResolvConf().catch((err: unknown) => {
          logger.warn({ err: (err as Error).message }, "cannot read /etc/resolv.conf; DNS goes to 127.0.0.1");
          return undefined;
        })
      : undefined;
  const plan = upstreamPlan(conf, {
    ...(upstreams === undefined ? {} : { nameservers: upstreams }),
    ...(dns?.timeoutMs === undefined ? {} : { timeoutMs: dns.timeoutMs }),
  });
  const { nameservers } = plan;
  // One forwarder of the proxy's own, and one per pod that makes its sockets in the pod.
  const forwarderFor = (sockets?: PodDnsSockets): DnsForwarder =>
    createDnsForwarder({ ...plan, logger, ...sockets });
  logger.info({ nameservers: nameservers.map((n) => `${n.address}:${n.port}`) }, "dns proxy forwards to");
  const proxy = createDnsProxy({
    store,
    forwarder: forwarderFor(),
    ...(dns?.clusterDomain === undefined ? {} : { clusterDomain: dns.clusterDomain }),
    ...(dns?.ipv6 === undefined ? {} : { ipv6: dns.ipv6 }),
    logger,
    metrics,
  });
  return { proxy, forwarderFor };
}

function validate(options: ZtunnelOptions): void {
  if (isIP(options.nodeIp) === 0) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `nodeIp ${JSON.stringify(options.nodeIp)} is not an IP`,
    );
  }
  if (options.adminIp !== undefined && isIP(options.adminIp) === 0) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `adminIp ${JSON.stringify(options.adminIp)} is not an IP`,
    );
  }
  if (options.nodeName === "") throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "nodeName is empty");
  const podOption: unknown = options.pod;
  if (
    podOption !== undefined &&
    (typeof podOption !== "object" ||
      podOption === null ||
      !["name", "namespace"].every((k) => {
        const v = (podOption as Record<string, unknown>)[k];
        return typeof v === "string" && /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v);
      }))
  ) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      "pod must be { name, namespace }, each a Kubernetes object name",
    );
  }
  const clusterProblem = options.clusterId === undefined ? undefined : clusterIdProblem(options.clusterId);
  if (clusterProblem !== undefined) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `clusterId ${clusterProblem}`);
  }
  const trustProblem =
    options.trustDomain === undefined ? undefined : trustDomainProblem(options.trustDomain);
  if (trustProblem !== undefined) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `trustDomain ${trustProblem}`);
  }
  if (options.token === "" || (typeof options.token !== "string" && typeof options.token !== "function")) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "token must be a non-empty string or a function");
  }
  if (!options.rootCertPem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "rootCertPem holds no PEM certificate");
  }
  if (
    options.dns !== false &&
    options.dns !== undefined &&
    options.onDemand !== undefined &&
    options.onDemand !== false
  ) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      "the DNS proxy needs every Service name: it cannot be on with onDemand (set dns: false)",
    );
  }
  if (options.dns !== false && options.dns !== undefined) {
    const { nameservers, port, timeoutMs } = options.dns;
    if (nameservers !== undefined && nameservers.length === 0) {
      throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", "dns.nameservers is empty");
    }
    if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) {
      throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `dns.port ${port} is not a port`);
    }
    if (timeoutMs !== undefined && !(timeoutMs > 0)) {
      throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `dns.timeoutMs ${timeoutMs} is not positive`);
    }
  }
  checkDeadline("terminationDeadlineMs", options.terminationDeadlineMs);
}

function checkDeadline(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `${name} must be a whole number of ms, got ${value}`,
    );
  }
}

/**
 * Starts a node proxy: fetches the local pods' certificates from the CA (impersonating them), follows
 * the mesh over Delta xDS, serves inbound HBONE on every local pod IP with policy, SOCKS5 outbound on
 * the node IP, and admin, metrics and readiness endpoints. Resolves once the node listeners are bound;
 * `ready` follows when certificates and the first xDS state are in.
 */
export async function startZtunnel(options: ZtunnelOptions): Promise<RunningZtunnel> {
  validate(options);
  // The configured upstream resolvers, parsed once (a bad one throws here, before anything starts).
  const upstreams =
    options.dns === false || options.dns === undefined
      ? undefined
      : options.dns.nameservers?.map(parseNameserver);
  const ports: ZtunnelPorts = { ...DEFAULT_PORTS, ...options.ports };
  // The access log also feeds the admin `/recent_connections`.
  const connectionHistory = createConnectionHistory(options.logger ?? noopLogger);
  const logger = connectionHistory.logger;
  const registry = options.registry ?? new prom.Registry();
  const metrics = createPromClientSink(prom, registry);
  const tcpMetrics = createTcpMetrics(metrics);
  metrics
    .gauge("istio_build", "Istio component build info", ["component", "tag"])
    .set({ component: "ztunnel", tag: options.buildTag ?? "unknown" }, 1);
  const dialFailures = createDialFailureMetrics(metrics);
  const pod = options.pod ?? { name: `ztunnel-${options.nodeName}`, namespace: "istio-system" };
  const node: ZtunnelNode = {
    name: options.nodeName,
    ip: options.nodeIp,
    pod,
    // Istio's ztunnel writes the cluster domain as cluster.local here, whatever the cluster's is.
    id: `ztunnel~${options.nodeIp}~${pod.name}.${pod.namespace}~${pod.namespace}.svc.cluster.local`,
  };
  const address = options.controlPlaneAddress ?? "127.0.0.1:15012";
  const clusterId = options.clusterId ?? DEFAULT_CLUSTER_ID;
  const channel = controlPlaneChannel(
    options.rootCertPem,
    options.controlPlaneIdentity ?? controlPlaneIdentityOf(options.trustDomain ?? DEFAULT_TRUST_DOMAIN),
  );
  const trustOf = trustedRootsOf(options.rootCertPem);

  // ---- control plane and state --------------------------------------------------------------------
  const state = createMeshState({
    address,
    channel,
    token: options.token,
    clusterId,
    node,
    ...(options.certificateTtlSeconds === undefined
      ? {}
      : { certificateTtlSeconds: options.certificateTtlSeconds }),
    onDemand: options.onDemand !== undefined && options.onDemand !== false,
    ...(options.network === undefined ? {} : { network: options.network }),
    logger,
    metrics,
  });
  const { store, engine, secrets, svidOf } = state;
  const connections = new ConnectionRegistry();
  // Open connections' bytes reach the TCP metrics while they last, not only when they close.
  const bytesReport = setInterval(() => connections.reportBytes(), TCP_BYTES_REPORT_MS).unref();

  let closed = false;
  let readyFlag = false;
  const isClosed = () => closed;
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

  // ---- data path ----------------------------------------------------------------------------------
  const inPodPorts = {
    outbound: options.inPod?.ports?.outbound ?? 15001,
    inboundPlaintext: options.inPod?.ports?.inboundPlaintext ?? 15006,
  };
  // On-demand: an unknown destination is asked for (bounded wait) before the same decision, on the
  // outbound side and for an inbound tunnel's target and source alike.
  const onDemand = onDemandOf(options.onDemand, store, state, logger);
  const inbound = createInbound({
    ...(onDemand === undefined ? {} : { onDemand }),
    nodeName: node.name,
    hbonePort: ports.hbone,
    proxyPorts: [inPodPorts.outbound, inPodPorts.inboundPlaintext],
    store,
    engine,
    registry: connections,
    tcpMetrics,
    dialFailures,
    logger,
    isClosed,
  });
  // Endpoints known by hostname (DNS ServiceEntries) resolve through the same upstreams as the DNS proxy.
  const resolveHostname = createHostnameResolver(upstreams === undefined ? {} : { nameservers: upstreams });
  const directOutbound = createOutbound({
    store,
    svidOf,
    trustOf,
    hbonePort: ports.hbone,
    registry: connections,
    tcpMetrics,
    resolveHostname,
    logger,
  });
  const outbound = withOnDemand(directOutbound, onDemand);
  const hostNetwork = createHostNetwork({
    createClient: (credentials) => createHboneClient({ ...credentials, logger, metrics }),
  });
  const nodePods = createNodePods({
    nodeName: node.name,
    hbonePort: ports.hbone,
    store,
    secrets,
    svidOf,
    trustOf,
    onTunnel: (pod, tunnel) => inbound.handleTunnel(pod, tunnel),
    pause,
    isClosed,
    identityInUse: (identity) => inPod.identityInUse(identity),
    logger,
    metrics,
  });
  const inPodMode =
    options.inPod !== undefined || options.zdsSocketPath !== undefined || options.dedicated !== undefined;
  // On by default in in-pod mode, except with on-demand lookups (most Service names unknown).
  const onDemandOn = options.onDemand !== undefined && options.onDemand !== false;
  const dnsOn = inPodMode && options.dns !== false && (options.dns !== undefined || !onDemandOn);
  const dns =
    dnsOn && options.dns !== false
      ? await startDnsProxy(options.dns, upstreams, store, logger, metrics)
      : undefined;
  const dnsProxy = dns?.proxy;
  let stateReady = false;
  const stateReadyWaiters: (() => void)[] = [];
  const inPod = createInPodProxies({
    nodeName: node.name,
    ports: {
      ...inPodPorts,
      hbone: ports.hbone,
      dns: (options.dns === false ? undefined : options.dns?.port) ?? DNS_PROXY_PORT,
    },
    store,
    svidOf,
    trustOf,
    inbound,
    outbound,
    registry: connections,
    isClosed,
    stateReady: () =>
      stateReady || closed ? Promise.resolve() : new Promise((resolve) => stateReadyWaiters.push(resolve)),
    hasState: () => stateReady,
    ...(options.inPod?.workloadWaitMs === undefined ? {} : { workloadWaitMs: options.inPod.workloadWaitMs }),
    proxyMetrics: inPodMode,
    originalSource: options.inPod?.originalSource ?? options.dedicated === undefined,
    logger,
    metrics,
    dialFailures,
    ...(dns === undefined ? {} : { dnsProxy: dns.proxy, dnsForwarderFor: dns.forwarderFor }),
  });
  const removePod = async (uid: string): Promise<boolean> => {
    // Served, or still fetching its certificate: either way the certificate is let go with the last
    // pod that needs it.
    const identity = inPod.identityOf(uid);
    const removed = await inPod.remove(uid);
    if (identity !== undefined && !inPod.identityInUse(identity) && !nodePods.has(identity)) {
      secrets.forget(identity);
    }
    return removed;
  };
  let zds: ZdsClient | undefined;
  if (options.zdsSocketPath !== undefined) {
    zds = createZdsClient({
      path: options.zdsSocketPath,
      handler: {
        addWorkload: ({ uid, workloadInfo, netns }) =>
          inPod.add({
            uid,
            netns,
            workloadInfo: {
              name: workloadInfo.name,
              namespace: workloadInfo.namespace,
              serviceAccount: workloadInfo.serviceAccount,
            },
          }),
        deleteWorkload: async (uid) => {
          await removePod(uid);
        },
      },
      logger,
    });
  }

  const isLocalSource = (ip: string): Workload | undefined => {
    const w = store.findByAddress(ip);
    return w !== undefined && w.node === node.name && usesHbone(w) ? w : undefined;
  };
  const socks5 = createSocks5Outbound({
    outbound,
    network: hostNetwork,
    store,
    sourceOf: isLocalSource,
    // A CONNECT to any of this proxy's own listeners is refused, wherever they were moved.
    proxyPorts: [ports.hbone, inPodPorts.outbound, inPodPorts.inboundPlaintext],
    ...(options.socks5?.handshakeTimeoutMs === undefined
      ? {}
      : { handshakeTimeoutMs: options.socks5.handshakeTimeoutMs }),
    ...(options.socks5?.maxHandshakes === undefined ? {} : { maxHandshakes: options.socks5.maxHandshakes }),
    isClosed,
    logger,
    metrics,
    dialFailures,
  });

  // Certificate rotation: the per-pod listeners take the new SVID; outbound reads it per connection.
  secrets.on("rotated", (event: { identity: { toString(): string }; svid: X509Svid }) => {
    nodePods.rotate(event.identity.toString(), event.svid);
    inPod.rotate(event.identity.toString(), event.svid);
    followRoots(channel, trustOf(event.svid), logger);
  });

  state.onChange((kind) => {
    if (kind === "workloads" && !inPodMode) nodePods.reconcile();
    // Pods added before xDS had their workload are served once it is in.
    if (kind === "workloads") inPod.recheck();
    inbound.recheck();
  });

  // ---- admin --------------------------------------------------------------------------------------
  // In in-pod mode the ztunnel is ready only while the node agent is connected and its snapshot is
  // in, as Istio's: pods added or deleted meanwhile are not seen, though the ones served stay served.
  // Nor while a pod is pending, its listeners not open yet (tried again until they are), as Istio's
  // is not ready while a proxy it could not start is pending.
  function isReady(): boolean {
    return readyFlag && !draining && (zds?.synced ?? true) && inPod.pending().length === 0;
  }
  const configDump = (): ConfigDump => ({
    node,
    ready: isReady(),
    workloads: [...store.workloads().values()],
    services: [...store.services().values()],
    policies: engine.wireAuthorizations(),
    localPods: nodePods.summaries(),
    certificates: secrets.identities().flatMap((id) => {
      const svid = secrets.get(id);
      return svid === undefined ? [] : [{ identity: id.toString(), notAfter: svid.notAfter.toISOString() }];
    }),
    connections: connections.summaries(),
    inPodPods: inPod.summaries(),
    socks5: { handshakesInProgress: socks5.handler.inProgress(), handshakes: socks5.handler.outcomes() },
  });
  const adminServers = createAdminServers({
    configDump,
    recentConnections: connectionHistory.recent,
    registry,
    isReady,
    onQuit: () => {
      logger.info({}, "shutdown asked for on the admin port");
      shutdown().catch(() => {});
    },
  });

  const { close, closed: closedPromise } = closeOnce(() => teardown());
  const teardown = async (): Promise<void> => {
    closed = true;
    clearInterval(bytesReport);
    for (const [t, resolve] of timers) {
      clearTimeout(t);
      resolve();
    }
    timers.clear();
    state.stopUpdates();
    zds?.close();
    for (const resolve of stateReadyWaiters.splice(0)) resolve();
    connections.closeAll();
    socks5.handler.destroyAll();
    const servers: (Server | HttpServer)[] = [
      adminServers.admin,
      adminServers.metrics,
      adminServers.readiness,
      socks5.server,
    ];
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
    await nodePods.close();
    await inPod.close();
    dnsProxy?.close();
    hostNetwork.destroy();
    state.close();
  };

  // ---- graceful shutdown --------------------------------------------------------------------------
  let draining = false;
  let shuttingDown: Promise<void> | undefined;
  /** Nothing is left to finish: no connection, socket or SOCKS5 handshake, every HBONE server closed. */
  const drained = (): boolean =>
    connections.connections().length === 0 &&
    connections.socketCount() === 0 &&
    socks5.handler.inProgress() === 0 &&
    nodePods.drained() &&
    inPod.drained();
  const drainThenClose = async (deadlineMs: number): Promise<void> => {
    if (closed) return close();
    draining = true;
    const deadline = performance.now() + deadlineMs;
    logger.info(
      { deadlineMs, connections: connections.connections().length },
      "shutting down: no new connections, the open ones have until the deadline",
    );
    zds?.close();
    if (socks5.server.listening) socks5.server.close();
    nodePods.drain(deadlineMs);
    inPod.drain(deadlineMs);
    while (!closed && !drained()) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      await pause(Math.min(25, left));
    }
    if (!closed) {
      if (drained()) logger.info({}, "drained");
      else
        logger.warn(
          { connections: connections.connections().length, sockets: connections.socketCount(), deadlineMs },
          "shutdown deadline passed, closing what is open",
        );
    }
    await close();
  };
  const shutdown = (shutdownOptions: { deadlineMs?: number } = {}): Promise<void> => {
    checkDeadline("deadlineMs", shutdownOptions.deadlineMs);
    shuttingDown ??= drainThenClose(
      shutdownOptions.deadlineMs ?? options.terminationDeadlineMs ?? DEFAULT_TERMINATION_DEADLINE_MS,
    );
    return shuttingDown;
  };

  let addresses: ZtunnelAddresses;
  try {
    const [a, m, r, s] = await Promise.all([
      listenTcp(adminServers.admin, options.adminIp ?? node.ip, ports.admin),
      listenTcp(adminServers.metrics, node.ip, ports.metrics),
      listenTcp(adminServers.readiness, node.ip, ports.readiness),
      // In-pod and dedicated modes capture pods instead, and a SOCKS5 dial would leave from a pod's
      // IP in this process's namespace, where it does not exist: no SOCKS5 listener there, as Istio's
      // ztunnel opens none unless asked.
      inPodMode ? undefined : listenTcp(socks5.server, node.ip, ports.socks5),
    ]);
    addresses = {
      admin: hostPort(a),
      metrics: hostPort(m),
      readiness: hostPort(r),
      ...(s === undefined ? {} : { socks5: hostPort(s) }),
    };
  } catch (err) {
    await close();
    throw err;
  }
  logger.info({ nodeName: node.name, ip: node.ip, ...addresses, controlPlane: address }, "ztunnel listening");

  // Dedicated mode is in-pod mode with one pod that nobody hands over: the proxy adds it itself.
  const serveDedicated = async (dedicated: NonNullable<ZtunnelOptions["dedicated"]>): Promise<void> => {
    const { uid, ...workloadInfo } = dedicated.workload;
    // Nobody waits for an answer here: the workload must be known, or the proxy is not ready.
    await inPod.add(
      {
        uid: uid ?? `${workloadInfo.namespace}/${workloadInfo.name}`,
        workloadInfo,
        netns: openNetns(dedicated.netnsPath ?? "/proc/self/ns/net"),
      },
      { requireWorkload: true },
    );
  };

  const ready = (async () => {
    await state.ready();
    if (closed) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "closed before it was ready");
    stateReady = true;
    for (const resolve of stateReadyWaiters.splice(0)) resolve();
    // Pods added before the first xDS state (their changes are not announced) are served from it, and
    // any connection decided before it is decided again against it.
    inPod.recheck();
    inbound.recheck();
    if (!inPodMode) {
      nodePods.reconcile();
      await nodePods.started();
    }
    await zds?.ready();
    if (options.dedicated !== undefined) await serveDedicated(options.dedicated);
    if (closed) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "closed before it was ready");
    readyFlag = true;
    logger.info({ pods: nodePods.size() }, "ztunnel ready");
  })();
  // A proxy closed before it was ready must not leave an unhandled rejection behind.
  ready.catch(() => {});

  return {
    node,
    addresses,
    ready,
    isReady,
    metricsText: () => registry.metrics(),
    configDump,
    addPod: (pod) => inPod.add(pod),
    removePod,
    openSockets: (podUid) => connections.socketCount(podUid),
    shutdown,
    close,
    closed: closedPromise,
  };
}
