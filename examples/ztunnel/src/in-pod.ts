// In-pod mode: a pod handed over with its network namespace gets its own logical proxy, with
// listeners opened inside that namespace, as Istio's ztunnel does for pods istio-cni captures:
// 15001 (outbound, redirected by the pod's iptables), 15006 (plaintext inbound), 15008 (HBONE
// inbound) and, with the DNS proxy on, 15053 on 127.0.0.1 (UDP and TCP, the pod's DNS). Every socket
// the proxy makes there carries mark 0x539, which the capture rules skip.
import dgram from "node:dgram";
import { fstatSync } from "node:fs";
import type { Server as NetServer, Socket } from "node:net";
import { connect, createServer, isIPv4 } from "node:net";
import {
  createDnsServer,
  type DnsForwarder,
  type DnsForwarderOptions,
  type DnsHandler,
  type DnsMessage,
  type DnsRequest,
  type DnsServer,
} from "@ambient/dns";
import { createHboneClient, createHboneServer, type HboneClient, type HboneServer } from "@ambient/hbone";
import {
  bindInNetns,
  closeFd,
  connectFromNetns,
  getOriginalDestination,
  listenInNetns,
  NetnsError,
  type NetnsHandle,
} from "@ambient/netns";
import type { X509Svid } from "@ambient/spiffe";
import type { Workload } from "@ambient/xds";
import { ClosingServers, type ConnectionRegistry } from "./connections.js";
import { type DialFailureMetrics, errnoOf } from "./dial-failure.js";
import type { DnsProxy } from "./dns-proxy.js";
import { ZtunnelError } from "./errors.js";
import { decideCapturedOutbound } from "./in-pod-decisions.js";
import type { Inbound, InboundPod } from "./inbound.js";
import { isLoopbackIp } from "./ip-address.js";
import type { Outbound, OutboundNetwork } from "./outbound.js";
import { KEEPALIVE_SERVER_OPTIONS } from "./socket-keepalive.js";
import { type Logger, type MetricsSink, noopMetrics } from "./telemetry.js";
import { identityOf, ipv4Of, type WorkloadStore } from "./workload-store.js";

/** ztunnel `DEFAULT_INPOD_MARK`: the pod's capture rules let packets with this mark pass. */
export const INPOD_MARK = 0x539;
/** Connection mark istio-cni gives the proxy's connections to the app (its `InpodTProxyMark`). */
export const INPOD_TPROXY_MARK = 0x111;

/**
 * istio-cni's in-pod routing for the replies to connections the proxy makes from the client's address
 * (original source), as the commands that install it in a pod's namespace: a packet marked 0x539 (the
 * proxy's, arriving over `lo`) gives its connection mark 0x111; the app's replies take that mark back
 * and table 100, a local route, delivers them to the proxy's transparent socket, not out of `eth0`.
 * Each entry is an argument list for `ip netns exec <ns> ...`.
 */
export function inPodReplyRouting(): string[][] {
  const mark = (value: number) => `0x${value.toString(16)}/0xfff`;
  return [
    [
      "iptables",
      "-w",
      "-t",
      "mangle",
      "-A",
      "PREROUTING",
      "-m",
      "mark",
      "--mark",
      mark(INPOD_MARK),
      "-j",
      "CONNMARK",
      "--set-xmark",
      mark(INPOD_TPROXY_MARK),
    ],
    [
      "iptables",
      "-w",
      "-t",
      "mangle",
      "-A",
      "OUTPUT",
      "-m",
      "connmark",
      "--mark",
      mark(INPOD_TPROXY_MARK),
      "-j",
      "CONNMARK",
      "--restore-mark",
      "--nfmask",
      "0xffffffff",
      "--ctmask",
      "0xffffffff",
    ],
    ["ip", "rule", "add", "fwmark", mark(INPOD_TPROXY_MARK), "pref", "32764", "lookup", "100"],
    ["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"],
  ];
}

/**
 * istio-cni's DNS capture in a pod's namespace, as the commands that install it: port 53 over UDP
 * (not leaving on `lo`) and TCP (not to 127.0.0.1), unless the proxy sent it (mark 0x539), goes to
 * the proxy's resolver on 127.0.0.1:`port`; a resolver inside the pod itself is left alone, as
 * istio-cni leaves it. Installed ahead of the TCP capture, which would otherwise take TCP port 53 to
 * 15001.
 *
 * The proxy forwards each query from the pod on a fresh port, so the app and the proxy can use the
 * same source port towards the same nameserver while conntrack still remembers the other's flow. NAT
 * is decided on a flow's first packet only: without more, the app's query would follow the proxy's
 * flow straight to the nameserver, or the proxy's would follow the app's back to the proxy. So the
 * proxy's UDP to port 53 and every UDP reply from port 53 arriving from outside are tracked in
 * conntrack zone 1 (raw table), apart from the app's flows, as istio-cni tracks them. Each entry is an
 * argument list for `ip netns exec <ns> ...`.
 */
export function inPodDnsCapture(port = 15053): string[][] {
  const mark = `0x${INPOD_MARK.toString(16)}/0xfff`;
  const redirects = ["udp", "tcp"].map((proto) => [
    "iptables",
    "-w",
    "-t",
    "nat",
    "-A",
    "OUTPUT",
    ...(proto === "udp" ? ["!", "-o", "lo"] : ["!", "-d", "127.0.0.1/32"]),
    "-p",
    proto,
    "--dport",
    "53",
    "-m",
    "mark",
    "!",
    "--mark",
    mark,
    "-j",
    "REDIRECT",
    "--to-ports",
    String(port),
  ]);
  const raw = (chain: string, ...match: string[]) => [
    ...["iptables", "-w", "-t", "raw", "-A", chain, "-p", "udp", "-m", "mark"],
    ...match,
    ...["-j", "CT", "--zone", "1"],
  ];
  return [
    ...redirects,
    raw("OUTPUT", "--mark", mark, "--dport", "53"),
    raw("PREROUTING", "!", "--mark", mark, "--sport", "53"),
  ];
}

/** The address istio-cni SNATs the kubelet's health probes to (its `HostProbeSNATAddress`). */
export const KUBELET_PROBE_SOURCE = "169.254.7.127";

/** Options of {@link inPodTcpCapture}. */
export interface InPodTcpCaptureOptions {
  /** The proxy's listeners in the pod. Default 15001, 15006 and 15008. */
  ports?: Partial<Pick<InPodPorts, "outbound" | "inboundPlaintext" | "hbone">>;
  /**
   * Destination ports left alone both ways, as iptables spells them (`"9000"`, `"9000:9099"`).
   * Traffic on them never reaches the proxy, so no AuthorizationPolicy and no mTLS applies to it:
   * istio-cni has no such setting for ambient pods (its exclude-port annotations are for sidecars).
   * For measurements beside the mesh and ports deliberately outside it. Default none.
   */
  excludePorts?: readonly string[];
}

/**
 * istio-cni's in-pod TCP capture, the REDIRECT variant (as ztunnel's own redirect script), as the
 * commands that install it in a pod's namespace with IP `podIp`. nat `OUTPUT`: TCP marked 0x539 (the
 * proxy's own), to the kubelet's probe address, leaving on `lo`, for the pod itself or for an
 * excluded port returns; the rest goes to the outbound listener (15001). nat `PREROUTING`: from `lo`,
 * from the kubelet's probe address (169.254.7.127), to the HBONE port (15008) or to an excluded port
 * returns; the rest goes to the plaintext inbound listener (15006). IPv6 TCP, which the IPv4-only
 * proxy cannot take, is refused both ways (filter `INPUT`/`OUTPUT`, loopback and excluded ports
 * aside). Istio redirects
 * inbound with the same nat REDIRECT; the proxy reads the destination the app was called on from
 * conntrack. Install {@link inPodDnsCapture} first, and
 * {@link inPodReplyRouting} for original source. Each entry is an argument list for
 * `ip netns exec <ns> ...`.
 */
export function inPodTcpCapture(podIp: string, options: InPodTcpCaptureOptions = {}): string[][] {
  if (!isIPv4(podIp)) {
    throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `pod IP ${JSON.stringify(podIp)} is not IPv4`);
  }
  const excluded = options.excludePorts ?? [];
  for (const ports of excluded) {
    const range = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(ports);
    const first = Number(range?.[1]);
    const last = Number(range?.[2] ?? range?.[1]);
    if (range === null || first < 1 || last > 65535 || first > last) {
      throw new ZtunnelError(
        "ERR_ZTUNNEL_INVALID_OPTION",
        `excluded ports ${JSON.stringify(ports)} are not a port or first:last`,
      );
    }
  }
  const outbound = String(options.ports?.outbound ?? 15001);
  const inbound = String(options.ports?.inboundPlaintext ?? 15006);
  const hbone = String(options.ports?.hbone ?? 15008);
  const nat = (...rule: string[]) => ["iptables", "-w", "-t", "nat", ...rule];
  const out = (...rule: string[]) => nat("-A", "AMBIENT_OUTPUT", ...rule);
  const pre = (...rule: string[]) => nat("-A", "AMBIENT_PREROUTING", ...rule);
  return [
    nat("-N", "AMBIENT_OUTPUT"),
    nat("-A", "OUTPUT", "-p", "tcp", "-j", "AMBIENT_OUTPUT"),
    out("-m", "mark", "--mark", `0x${INPOD_MARK.toString(16)}/0xfff`, "-j", "RETURN"),
    // Replies to the kubelet's probes, which istio-cni's host rules SNAT to this address.
    out("-d", `${KUBELET_PROBE_SOURCE}/32`, "-p", "tcp", "-j", "RETURN"),
    out("-o", "lo", "-j", "RETURN"),
    out("-d", `${podIp}/32`, "-j", "RETURN"),
    ...excluded.map((ports) => out("-p", "tcp", "--dport", ports, "-j", "RETURN")),
    out("-p", "tcp", "-j", "REDIRECT", "--to-ports", outbound),
    nat("-N", "AMBIENT_PREROUTING"),
    nat("-A", "PREROUTING", "-p", "tcp", "-j", "AMBIENT_PREROUTING"),
    pre("-i", "lo", "-j", "RETURN"),
    // The kubelet's probes (SNATed to this address on the node by istio-cni) reach the app directly,
    // so a STRICT policy does not fail them.
    pre("-s", `${KUBELET_PROBE_SOURCE}/32`, "-p", "tcp", "-j", "RETURN"),
    pre("-p", "tcp", "--dport", hbone, "-j", "RETURN"),
    ...excluded.map((ports) => pre("-p", "tcp", "--dport", ports, "-j", "RETURN")),
    pre("-p", "tcp", "-j", "REDIRECT", "--to-ports", inbound),
    // The proxy listens on IPv4 only, so IPv6 TCP (a link-local address is enough) cannot be sent to
    // it: it is refused both ways instead of passing around the proxy's policies (istio-cni's IPv6
    // rules send it to the proxy, which would refuse it too). Loopback, replies of accepted
    // connections and the excluded ports are left alone, as over IPv4.
    ...(["INPUT", "OUTPUT"] as const).flatMap((chain) => {
      const rule = (...r: string[]) => ["ip6tables", "-w", "-A", chain, ...r];
      return [
        rule(chain === "INPUT" ? "-i" : "-o", "lo", "-j", "ACCEPT"),
        rule("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
        ...excluded.map((ports) => rule("-p", "tcp", "--dport", ports, "-j", "ACCEPT")),
        rule("-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"),
      ];
    }),
  ];
}

/** Ports of the listeners inside each pod's namespace. */
export interface InPodPorts {
  /** Outbound capture. Default 15001. */
  outbound: number;
  /** Plaintext inbound capture. Default 15006. */
  inboundPlaintext: number;
  /** HBONE inbound. Default 15008 (the `hbone` port of the proxy). */
  hbone: number;
  /** DNS proxy on 127.0.0.1, UDP and TCP, when it is on. Default 15053. */
  dns?: number;
}

/** A pod to serve in its namespace. */
export interface InPodWorkload {
  /** Pod uid as the node agent knows it; also the workload uid in xDS, if it matches one. */
  uid: string;
  /** Name, namespace and service account (ZDS `WorkloadInfo`): used when no xDS workload has `uid`. */
  workloadInfo?: { name: string; namespace: string; serviceAccount?: string };
  /** The pod's network namespace; the proxy owns it from the call on and closes it on removal. */
  netns: NetnsHandle;
}

/** A pod served in its namespace, as `/config_dump` lists it. */
export interface InPodSummary {
  uid: string;
  ip: string;
  identity: string;
  workload: string;
}

export interface InPodOptions {
  nodeName: string;
  ports: InPodPorts;
  store: WorkloadStore;
  svidOf(identity: string): Promise<X509Svid>;
  /** The roots a workload trusts, given its certificate (`trustedRootsOf`). */
  trustOf(svid: X509Svid): string;
  inbound: Inbound;
  outbound: Outbound;
  registry: ConnectionRegistry;
  /** True once the proxy is closing: pending adds give up. */
  isClosed(): boolean;
  /** Resolves when the first xDS state is in (a pod's workload must be known to serve it). */
  stateReady(): Promise<void>;
  /**
   * True once that state is in. No pod is served before (its connections are held): the workloads
   * may be in while the policies that cover them are not yet.
   */
  hasState(): boolean;
  /**
   * How long an add whose workload xDS already knows waits for the pod to be served (its
   * certificate) before it resolves anyway, and how long an add with `requireWorkload` waits for
   * its workload to appear in xDS. Default 3000 ms, within the node agent's 5 s answer timeout.
   */
  workloadWaitMs?: number;
  /**
   * How long a connection accepted before its pod is served (its workload or certificate still to
   * come) is held before it is reset, and a DNS question asked before xDS has the pod's workload
   * before it is answered SERVFAIL. Default {@link HELD_CONNECTION_MS}.
   */
  heldConnectionMs?: number;
  /**
   * How often a pod whose listeners could not be opened (a port still held in its namespace by a
   * proxy that is going away) is tried again, until it is removed. Default
   * {@link LISTEN_RETRY_MS}, as Istio's ztunnel retries the pods it could not start.
   */
  listenRetryMs?: number;
  /** Count the proxies in Istio's `istio_inpod_*` metrics (in-pod mode). Default false. */
  proxyMetrics?: boolean;
  /**
   * Connect to each pod's app from the client's own address (IP_TRANSPARENT), so the app sees who
   * called, as Istio's ztunnel does in in-pod mode (`ENABLE_ORIG_SRC`). It needs istio-cni's in-pod
   * routing of the replies (connmark 0x111, `ip rule fwmark 0x111/0xfff lookup 100`, a local route
   * in table 100). Default false: the app sees its own pod's address.
   */
  originalSource?: boolean;
  logger: Logger;
  metrics: MetricsSink;
  /** Counts refused dials of captured connections by errno. */
  dialFailures?: DialFailureMetrics;
  /** Answers each pod's DNS on 127.0.0.1:`ports.dns` in its namespace. Default: no DNS listeners. */
  dnsProxy?: DnsProxy;
  /**
   * Makes a pod's own DNS forwarder with the sockets given (see {@link podDnsSockets}), so the names
   * the mesh does not have are asked from the pod's namespace, as Istio's ztunnel does. Default: the
   * DNS proxy's forwarder, from this process's namespace.
   */
  dnsForwarderFor?: (sockets: PodDnsSockets) => DnsForwarder;
}

/** How a pod's DNS forwarder makes its sockets. */
export type PodDnsSockets = Required<Pick<DnsForwarderOptions, "createUdpSocket" | "connectTcp">>;

/** What a pod's proxy serves with, once its workload (with its IP) and certificate are in. */
interface PodServing {
  ip: string;
  workload: Workload;
  hboneServer: HboneServer;
  network: OutboundNetwork & { destroy(): Promise<void> };
  inboundPod: InboundPod;
}

type ListenerKind = "hbone" | "outbound" | "plaintext";

/** A connection accepted before its pod was served: paused until then, or reset at its deadline. */
interface HeldConnection {
  kind: ListenerKind;
  timer: NodeJS.Timeout;
  onError(): void;
}

interface InPodProxy {
  uid: string;
  pod: InPodWorkload;
  netns: NetnsHandle;
  /** Which namespace `netns` is (see {@link netnsIdOf}), so an add of the same one is recognised. */
  netnsId: string | undefined;
  /** The pod's TCP listeners (HBONE, outbound, plaintext inbound), open from the add on. */
  servers: NetServer[];
  /** Every listener is open; until then the pod is not served, and its listeners are tried again. */
  listening: boolean;
  /** The next try to open the listeners, while they are not. */
  retryTimer: NodeJS.Timeout | undefined;
  /** A try to open the listeners again under way. */
  reopening: Promise<void> | undefined;
  dnsServer: DnsServer | undefined;
  dnsForwarder: DnsForwarder | undefined;
  /** Answers the pod's DNS as its xDS workload; undefined until xDS has it. */
  dnsHandler: DnsHandler | undefined;
  /** DNS questions asked before xDS had the workload: each is answered by the handler once it comes. */
  dnsWaiting: Set<(handler: DnsHandler | undefined) => void>;
  held: Map<Socket, HeldConnection>;
  serving: PodServing | undefined;
  /**
   * The identity it is served as, from the moment its certificate is asked for (before it is
   * served): the proxy must not forget a certificate a pod is still starting with.
   */
  identity: string | undefined;
  /** A certificate fetch for the pod is in flight. */
  starting: boolean;
  /** "waiting for its workload" was logged. */
  waitLogged: boolean;
  removed: boolean;
  /** Resolves once the pod is served, or removed. */
  settled: Promise<void>;
  settle(): void;
}

export interface InPodProxies {
  /**
   * Opens the pod's listeners in its namespace and resolves once they are open, as Istio's ztunnel
   * acknowledges a ZDS add: the pod is served as soon as xDS has its workload (with its IP) and its
   * certificate is in; connections that come before wait, for up to `heldConnectionMs`. When
   * the workload is already known, it resolves once the pod is served (or after `workloadWaitMs`).
   * A pod already served in the same namespace stays as it is (the node agent repeats adds, as in
   * its snapshot after a reconnect) and `netns` is closed; one served in another namespace (its
   * sandbox was re-created) is removed first. When a listener cannot be opened, it rejects with
   * `ERR_ZTUNNEL_LISTEN` and `details.pending` set (the node agent hears a NACK, and the pod does not
   * start without its proxy), yet keeps the pod and `netns`: its listeners are tried again every
   * `listenRetryMs` until they open or it is removed, and an add of it again in the same namespace
   * tries them at once and answers as that went.
   * With `requireWorkload` (dedicated mode, where nobody waits for an answer), it waits up to
   * `workloadWaitMs` for the workload before opening anything, and rejects (closing `netns`) when
   * it does not come, a listener cannot be opened or the pod cannot be served.
   */
  add(pod: InPodWorkload, addOptions?: { requireWorkload?: boolean }): Promise<void>;
  /** Closes the pod's listeners and every connection it carries; false when it was not added. */
  remove(uid: string): Promise<boolean>;
  has(uid: string): boolean;
  /** The uids of the pods kept pending because their listeners could not be opened yet. */
  pending(): string[];
  /** Workloads changed in xDS: pods waiting for theirs are served when it came. */
  recheck(): void;
  /** New SVID for `identity`: the HBONE listeners serving it take it. */
  rotate(identity: string, svid: X509Svid): void;
  /** Whether a pod, served or with its certificate on the way, is served as `identity`. */
  identityInUse(identity: string): boolean;
  /** The identity the pod `uid` is served as, or has its certificate asked for as; none before that. */
  identityOf(uid: string): string | undefined;
  /** The pods served (pods still waiting for their workload are not listed). */
  summaries(): InPodSummary[];
  /**
   * Graceful shutdown: every pod's listeners close (TCP and DNS; connections held for a pod not
   * served yet are reset) and its HBONE server sends GOAWAY on its connections, whose tunnels have
   * `deadlineMs` to end (then they are reset). Open connections carry on; pods stay until close().
   * Adds fail from now on (`ERR_ZTUNNEL_CLOSED`), and no listener opens again.
   */
  drain(deadlineMs: number): void;
  /** Since {@link InPodProxies.drain}: every pod's HBONE server has closed, its connections with it. */
  drained(): boolean;
  close(): Promise<void>;
}

/**
 * How long a connection to a pod that is not served yet (its workload or certificate still to come)
 * is held before it is reset.
 */
export const HELD_CONNECTION_MS = 10_000;

/** How often listeners that could not be opened are tried again: ztunnel's `RETRY_DURATION`. */
export const LISTEN_RETRY_MS = 5000;

/** The identity of the namespace a handle points at (its nsfs device and inode), if it is open. */
function netnsIdOf(netns: NetnsHandle): string | undefined {
  if (netns.closed) return undefined;
  try {
    const st = fstatSync(netns.fd);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

function checkDelay(name: string, value: number | undefined): void {
  if (value !== undefined && !(Number.isSafeInteger(value) && value >= 0)) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `${name} must be a whole number of ms, got ${value}`,
    );
  }
}

function closeServer(server: NetServer): Promise<void> {
  return new Promise((resolve) => {
    if (server.listening) server.close(() => resolve());
    else resolve();
  });
}

export function createInPodProxies(options: InPodOptions): InPodProxies {
  const { store, registry, logger, metrics, trustOf, inbound, outbound } = options;
  checkDelay("heldConnectionMs", options.heldConnectionMs);
  checkDelay("listenRetryMs", options.listenRetryMs);
  const heldConnectionMs = options.heldConnectionMs ?? HELD_CONNECTION_MS;
  const listenRetryMs = options.listenRetryMs ?? LISTEN_RETRY_MS;
  const proxies = new Map<string, InPodProxy>();
  /** Pods being added, so a removal that races an add wins. */
  const adding = new Map<string, { cancelled: boolean }>();
  /** A graceful shutdown began: nothing opens any more. */
  let draining = false;
  /** The pods' HBONE servers a drain is closing. */
  const closing = new ClosingServers();
  // Istio's ztunnel names (src/inpod/metrics.rs), so its dashboards read them; in in-pod mode only,
  // as Istio's ztunnel registers them. promtool flags the gauges' `_count` suffix: they are Istio's names.
  const sink = options.proxyMetrics === true ? metrics : noopMetrics;
  const activeGauge = sink.gauge(
    "istio_inpod_active_proxy_count",
    "Workloads with an active in-pod proxy",
    [],
  );
  const pendingGauge = sink.gauge(
    "istio_inpod_pending_proxy_count",
    "Workloads whose in-pod proxy is being started",
    [],
  );
  const started = sink.counter("istio_inpod_proxies_started_total", "In-pod proxies started", []);
  const stopped = sink.counter("istio_inpod_proxies_stopped_total", "In-pod proxies stopped", []);
  const countProxies = (): void => {
    let serving = 0;
    for (const p of proxies.values()) if (p.serving !== undefined) serving++;
    activeGauge.set({}, serving);
    pendingGauge.set({}, adding.size + proxies.size - serving);
  };

  countProxies();
  const originalSource = new OriginalSource(options.originalSource === true, logger);

  const findWorkload = (pod: InPodWorkload): Workload | undefined => {
    // The store keys a workload by its uid.
    const byUid = pod.uid === "" ? undefined : store.workloads().get(pod.uid);
    if (byUid !== undefined) return byUid;
    const info = pod.workloadInfo;
    if (info === undefined) return undefined;
    return [...store.workloads().values()].find(
      (w) => w.name === info.name && w.namespace === info.namespace && w.node === options.nodeName,
    );
  };

  const waitForWorkload = async (pod: InPodWorkload): Promise<Workload> => {
    await options.stateReady();
    const deadline = Date.now() + (options.workloadWaitMs ?? 3000);
    for (;;) {
      const w = findWorkload(pod);
      if (w !== undefined) return w;
      if (options.isClosed()) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "the proxy is closing");
      if (Date.now() >= deadline) {
        throw new ZtunnelError(
          "ERR_ZTUNNEL_UNKNOWN_WORKLOAD",
          `pod ${pod.uid} is not a known workload on this node`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  /** Set once IP_TRANSPARENT was refused (no CAP_NET_ADMIN): later pods do not try again. */
  let transparentRefused = false;
  /**
   * Opens one of the pod's TCP listeners on 0.0.0.0:`port`, marked. SO_REUSEPORT, so the ztunnel
   * that replaces this one (an upgrade runs both side by side while istio-cni hands the pods to the
   * newer) can bind the same ports in the pod. IP_TRANSPARENT where allowed, as Istio's ztunnel sets
   * it on its in-pod listeners (best effort): the capture rules (nat REDIRECT, here and in istio-cni)
   * reach a listener either way, so without CAP_NET_ADMIN the listener is opened without it, with
   * one warning.
   */
  const listenInPod = async (netns: NetnsHandle, port: number, server: NetServer): Promise<void> => {
    const listen = (transparent: boolean) =>
      listenInNetns(netns, { host: "0.0.0.0", port, mark: INPOD_MARK, reusePort: true, transparent, server });
    if (!transparentRefused) {
      try {
        await listen(true);
        return;
      } catch (err) {
        if (!(err instanceof NetnsError && err.errno === "EPERM")) throw err;
        transparentRefused = true;
        logger.warn(
          { err: (err as Error).message },
          "cannot make in-pod listeners transparent (IP_TRANSPARENT needs CAP_NET_ADMIN); opening them without",
        );
      }
    }
    await listen(false);
  };

  /** Serves `proxy` as `workload`: fetches its certificate, then hands on what waited. */
  const serve = async (proxy: InPodProxy, workload: Workload, ip: string): Promise<void> => {
    const identity = identityOf(workload);
    proxy.identity = identity;
    const svid = await options.svidOf(identity);
    if (proxy.removed || proxy.serving !== undefined) return;
    const { netns, uid } = proxy;
    const connectUpstream = (host: string, port: number, sourceIp: string): Socket =>
      originalSource.connect(netns, uid, ip, host, port, sourceIp);
    const inboundPod: InboundPod = { uid, ip, workloadUid: workload.uid, connectUpstream };
    const hboneServer = createHboneServer({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: trustOf(svid),
      onTunnel: (tunnel) => inbound.handleTunnel(inboundPod, tunnel),
      logger,
      metrics,
    });
    proxy.serving = { ip, workload, hboneServer, network: podNetwork(netns), inboundPod };
    answerDnsAs(proxy, workload);
    started.inc({});
    countProxies();
    logger.info({ pod: uid, ip, identity }, "in-pod proxy up");
    const held = [...proxy.held];
    proxy.held.clear();
    for (const [socket, hold] of held) {
      clearTimeout(hold.timer);
      socket.off("error", hold.onError);
      if (!socket.destroyed) dispatch(proxy, hold.kind, socket);
    }
    proxy.settle();
  };

  /**
   * Has the pod's DNS answered as `workload` from now on, the questions that waited for it first.
   * Its namespace and network decide the answers (which short names mean what, which Service
   * addresses the pod may reach), so nothing is answered before xDS tells them.
   */
  const answerDnsAs = (proxy: InPodProxy, workload: Workload): void => {
    if (proxy.dnsServer === undefined || options.dnsProxy === undefined) return;
    const handler = options.dnsProxy.handlerFor(workload, proxy.dnsForwarder);
    proxy.dnsHandler = handler;
    releaseDns(proxy, handler);
  };

  /** Hands the questions waiting for the pod's workload to `handler`; undefined fails them. */
  const releaseDns = (proxy: InPodProxy, handler: DnsHandler | undefined): void => {
    const waiting = [...proxy.dnsWaiting];
    proxy.dnsWaiting.clear();
    for (const release of waiting) release(handler);
  };

  /**
   * A DNS question from the pod: answered as its workload, or, before xDS has it, once it comes.
   * A question still waiting after `heldConnectionMs` is answered SERVFAIL (the DNS server's answer
   * to a rejection): a resolver tries again, where an answer made up without the pod's network and
   * namespace could be wrong and be cached. One still waiting when the pod goes is dropped with the
   * pod's DNS listener, unanswered: the pod is going too.
   */
  const answerDns = (proxy: InPodProxy, request: DnsRequest): ReturnType<DnsHandler> => {
    if (proxy.dnsHandler !== undefined) return proxy.dnsHandler(request);
    logger.debug(
      { pod: proxy.uid, name: request.message.questions[0]?.name },
      "dns question held until its pod's workload comes",
    );
    return new Promise<DnsMessage | Uint8Array>((resolve, reject) => {
      const release = (handler: DnsHandler | undefined): void => {
        clearTimeout(timer);
        if (handler === undefined) {
          reject(new ZtunnelError("ERR_ZTUNNEL_UNKNOWN_WORKLOAD", `pod ${proxy.uid} has no workload in xDS`));
          return;
        }
        try {
          resolve(handler(request));
        } catch (err) {
          reject(err);
        }
      };
      const timer = setTimeout(() => {
        proxy.dnsWaiting.delete(release);
        release(undefined);
      }, heldConnectionMs);
      proxy.dnsWaiting.add(release);
    });
  };

  /** Serves `proxy` if its workload (with an IPv4 address) is known now; logs once that it waits. */
  const tryServe = (proxy: InPodProxy): void => {
    if (proxy.removed || !proxy.listening || proxy.serving !== undefined || proxy.starting) return;
    // Tried again when the state is in (`recheck`).
    if (!options.hasState()) return;
    const workload = findWorkload(proxy.pod);
    // The DNS needs the workload only, not its address or certificate.
    if (workload !== undefined && proxy.dnsHandler === undefined) answerDnsAs(proxy, workload);
    const ip = workload === undefined ? undefined : ipv4Of(workload);
    if (workload === undefined || ip === undefined) {
      if (!proxy.waitLogged) {
        proxy.waitLogged = true;
        logger.info(
          {
            pod: proxy.uid,
            workload: workload === undefined ? undefined : `${workload.namespace}/${workload.name}`,
          },
          workload === undefined
            ? "in-pod proxy waiting for its workload"
            : "in-pod proxy waiting for its workload's IPv4 address",
        );
      }
      return;
    }
    proxy.starting = true;
    serve(proxy, workload, ip)
      .catch((err: unknown) => {
        if (proxy.removed) return;
        logger.warn({ pod: proxy.uid, err: (err as Error).message }, "in-pod proxy cannot start yet");
        // Nothing else may change to bring it back (a CA that was down): try again shortly.
        setTimeout(() => tryServe(proxy), 1000).unref();
      })
      .finally(() => {
        proxy.starting = false;
      });
  };

  /** A connection a pod's listener accepted: handed on if the pod is served, else held. */
  const accepted = (proxy: InPodProxy, kind: ListenerKind, socket: Socket): void => {
    if (proxy.removed) {
      socket.destroy();
      return;
    }
    if (proxy.serving !== undefined) {
      dispatch(proxy, kind, socket);
      return;
    }
    // Paused (the listeners accept paused): what the client sends waits in the kernel meanwhile.
    const onError = () => {};
    const timer = setTimeout(() => {
      proxy.held.delete(socket);
      logger.info(
        { pod: proxy.uid, listener: kind, src: `${socket.remoteAddress}:${socket.remotePort}` },
        "connection reset: its pod is still waiting for its workload",
      );
      socket.resetAndDestroy();
    }, heldConnectionMs);
    timer.unref();
    socket.on("error", onError);
    socket.once("close", () => {
      const hold = proxy.held.get(socket);
      if (hold === undefined) return;
      clearTimeout(hold.timer);
      proxy.held.delete(socket);
    });
    proxy.held.set(socket, { kind, timer, onError });
    logger.debug(
      { pod: proxy.uid, listener: kind, src: `${socket.remoteAddress}:${socket.remotePort}` },
      "connection held until its pod is served",
    );
  };

  const dispatch = (proxy: InPodProxy, kind: ListenerKind, socket: Socket): void => {
    const serving = proxy.serving as PodServing;
    switch (kind) {
      case "hbone":
        // The TLS server takes the raw socket (and its handle) as if it had accepted it.
        serving.hboneServer.nodeServer.emit("connection", socket);
        return;
      case "outbound":
        registry.trackSocket(socket, proxy.uid);
        serveOutbound(proxy.uid, serving.ip, serving.workload, serving.network, socket);
        return;
      case "plaintext": {
        // Accepted paused: it reads again once the relay takes it, as a socket accepted unpaused
        // (Node's stream state has a setter; the typings call it read-only).
        (socket as { readableFlowing: boolean | null }).readableFlowing = null;
        let destination: { address: string; port: number };
        try {
          destination = getOriginalDestination(socket);
        } catch (err) {
          logger.warn(
            { pod: proxy.uid, err: (err as Error).message },
            "inbound plaintext without original destination",
          );
          socket.resetAndDestroy();
          return;
        }
        inbound.handlePlaintext(serving.inboundPod, socket, {
          ip: destination.address,
          port: destination.port,
        });
        return;
      }
    }
  };

  /** Destroys the connections the pod holds until it is served. */
  const dropHeld = (proxy: InPodProxy): void => {
    for (const [socket, hold] of proxy.held) {
      clearTimeout(hold.timer);
      socket.destroy();
    }
    proxy.held.clear();
  };

  /** Closes the pod's listeners (TCP and DNS) and the connections they hold. */
  const closeListeners = async (proxy: InPodProxy): Promise<void> => {
    dropHeld(proxy);
    releaseDns(proxy, undefined);
    proxy.dnsHandler = undefined;
    const closing = [...proxy.servers.map(closeServer), proxy.dnsServer?.close()];
    proxy.dnsForwarder?.close();
    proxy.servers = [];
    proxy.dnsServer = undefined;
    proxy.dnsForwarder = undefined;
    proxy.listening = false;
    await Promise.all(closing);
  };

  /**
   * Opens the pod's listeners in its namespace. On failure, or when the pod was removed meanwhile,
   * nothing it opened stays open, and it throws.
   */
  const openListeners = async (p: InPodProxy): Promise<void> => {
    const { netns, pod } = p;
    try {
      // Every listener accepts paused, so a connection that comes before the pod is served waits
      // with what it sent; the kernel queues those that come before the first accept.
      const hboneListener = createServer({ pauseOnConnect: true, ...KEEPALIVE_SERVER_OPTIONS }, (socket) =>
        accepted(p, "hbone", socket),
      );
      p.servers.push(hboneListener);
      await listenInPod(netns, options.ports.hbone, hboneListener);
      const outboundServer = createServer(
        { allowHalfOpen: true, pauseOnConnect: true, ...KEEPALIVE_SERVER_OPTIONS },
        (socket) => accepted(p, "outbound", socket),
      );
      p.servers.push(outboundServer);
      await listenInPod(netns, options.ports.outbound, outboundServer);
      // A relay writes each piece as it arrives: no Nagle delay on any of the pod's sockets.
      const plaintextServer = createServer(
        { allowHalfOpen: true, noDelay: true, pauseOnConnect: true, ...KEEPALIVE_SERVER_OPTIONS },
        (socket) => accepted(p, "plaintext", socket),
      );
      p.servers.push(plaintextServer);
      await listenInPod(netns, options.ports.inboundPlaintext, plaintextServer);
      if (options.dnsProxy !== undefined) {
        // The pod's DNS listens from the start; its questions wait for the workload (answerDns).
        p.dnsForwarder = options.dnsForwarderFor?.(podDnsSockets(netns));
        p.dnsServer = createDnsServer({ handler: (request) => answerDns(p, request), logger });
        await listenDns(netns, options.ports.dns ?? 15053, p.dnsServer);
      }
      if (p.removed) {
        throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", `pod ${pod.uid} was removed while its listeners opened`);
      }
      if (draining) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "the proxy is shutting down");
      p.listening = true;
    } catch (err) {
      // A listener still opening when the pod was removed is listening by now: closed here.
      await closeListeners(p);
      throw err;
    }
  };

  /** Tries the pod's listeners again after `listenRetryMs`, and again, until they open or it goes. */
  const retryListeners = (p: InPodProxy, err: unknown): void => {
    logger.warn(
      { pod: p.uid, err: (err as Error).message, retryInMs: listenRetryMs },
      "in-pod proxy cannot open its listeners, retrying",
    );
    clearTimeout(p.retryTimer);
    p.retryTimer = setTimeout(() => {
      p.retryTimer = undefined;
      if (p.removed || draining || options.isClosed()) return;
      reopen(p).catch(() => {
        // the next try is scheduled
      });
    }, listenRetryMs);
    p.retryTimer.unref();
  };

  /**
   * Opens a pending pod's listeners now (its retry, or an add of it again): once open the pod is
   * served as any; on failure the next try is scheduled and it throws.
   */
  const reopen = (p: InPodProxy): Promise<void> => {
    if (p.listening || p.removed || draining) return Promise.resolve();
    if (p.reopening !== undefined) return p.reopening;
    clearTimeout(p.retryTimer);
    p.retryTimer = undefined;
    const attempt = openListeners(p)
      .then(
        () => {
          logger.info({ pod: p.uid }, "in-pod proxy listening");
          countProxies();
          tryServe(p);
        },
        (err: unknown) => {
          if (!p.removed && !options.isClosed()) retryListeners(p, err);
          throw err;
        },
      )
      .finally(() => {
        p.reopening = undefined;
      });
    p.reopening = attempt;
    return attempt;
  };

  /**
   * The answer to an add whose listeners did not open: a refusal (the node agent fails the pod's
   * start), marked pending, so the ZDS client leaves the namespace to the pod, which is kept.
   */
  const pendingError = (uid: string, err: unknown): ZtunnelError =>
    new ZtunnelError(
      "ERR_ZTUNNEL_LISTEN",
      `cannot open the listeners of pod ${uid} (tried again every ${listenRetryMs} ms): ${(err as Error).message}`,
      { cause: err, pending: true },
    );

  const add = async (pod: InPodWorkload, addOptions: { requireWorkload?: boolean } = {}): Promise<void> => {
    if (draining) {
      pod.netns.close();
      throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "the proxy is shutting down");
    }
    const netnsId = netnsIdOf(pod.netns);
    const existing = proxies.get(pod.uid);
    if (existing !== undefined && netnsId !== undefined && existing.netnsId === netnsId) {
      // Served in this very namespace already (the node agent repeats its adds, as in the snapshot
      // after a reconnect): nothing changes, and the handle given is not needed.
      if (pod.netns !== existing.netns) pod.netns.close();
      // Pending: tried now, and the answer tells how that went, as for its first add.
      if (!existing.listening && !existing.removed) {
        try {
          await reopen(existing);
        } catch (err) {
          if (existing.removed) throw err;
          throw pendingError(existing.uid, err);
        }
      }
      return;
    }
    // The latest add of a pod wins over one still under way.
    const earlier = adding.get(pod.uid);
    if (earlier !== undefined) earlier.cancelled = true;
    const state = { cancelled: false };
    adding.set(pod.uid, state);
    countProxies();
    let proxy: InPodProxy | undefined;
    /** Why the listeners did not open, when the pod is kept to try them again. */
    let listenFailure: { err: unknown } | undefined;
    try {
      // Another namespace for the same pod: its sandbox was re-created. The old one's proxy goes.
      if (existing !== undefined) await dropProxy(existing);
      if (addOptions.requireWorkload === true) await waitForWorkload(pod);
      if (options.isClosed()) throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", "the proxy is closing");
      if (state.cancelled)
        throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", `pod ${pod.uid} was removed while being added`);
      const { netns } = pod;
      let settle = () => {};
      const settled = new Promise<void>((resolve) => {
        settle = resolve;
      });
      const p: InPodProxy = {
        uid: pod.uid,
        pod,
        netns,
        netnsId,
        servers: [],
        listening: false,
        retryTimer: undefined,
        reopening: undefined,
        dnsServer: undefined,
        dnsForwarder: undefined,
        dnsHandler: undefined,
        dnsWaiting: new Set(),
        held: new Map(),
        serving: undefined,
        identity: undefined,
        starting: false,
        waitLogged: false,
        removed: false,
        settled,
        settle,
      };
      proxy = p;
      try {
        await openListeners(p);
      } catch (err) {
        // Dedicated mode has nobody to serve the pod later: it fails at once.
        if (addOptions.requireWorkload === true || state.cancelled || options.isClosed()) throw err;
        listenFailure = { err };
      }
      if (state.cancelled)
        throw new ZtunnelError("ERR_ZTUNNEL_CLOSED", `pod ${pod.uid} was removed while being added`);
      proxies.set(pod.uid, p);
    } catch (err) {
      if (proxy !== undefined) await closeListeners(proxy);
      registry.closeAll(pod.uid);
      pod.netns.close();
      throw err;
    } finally {
      if (adding.get(pod.uid) === state) adding.delete(pod.uid);
      countProxies();
    }

    if (listenFailure !== undefined) {
      // Refused, so the node agent does not start the pod without its proxy (istio-cni fails the
      // CNI ADD; a snapshot's refusal it logs), yet kept and tried again (a port may be held by a
      // proxy that is still going away), as Istio's ztunnel keeps the pods it could not start
      // pending; a removal ends the tries.
      retryListeners(proxy, listenFailure.err);
      throw pendingError(pod.uid, listenFailure.err);
    }
    if (addOptions.requireWorkload === true) {
      const workload = findWorkload(pod);
      const ip = workload === undefined ? undefined : ipv4Of(workload);
      try {
        if (workload === undefined || ip === undefined) {
          throw new ZtunnelError("ERR_ZTUNNEL_UNKNOWN_WORKLOAD", `pod ${pod.uid} has no IPv4 address`);
        }
        proxy.starting = true;
        await serve(proxy, workload, ip);
      } catch (err) {
        await remove(pod.uid);
        throw err;
      } finally {
        proxy.starting = false;
      }
      return;
    }
    const known = findWorkload(pod) !== undefined;
    tryServe(proxy);
    // A pod xDS already knows is answered once it is served (its certificate fetched), within the
    // wait; one it does not know yet is answered at once, as the node agent waits for the answer
    // before the pod can start, and the pod gets its address only after that.
    if (known && proxy.serving === undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        proxy.settled,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, options.workloadWaitMs ?? 3000);
        }),
      ]);
      clearTimeout(timer);
    }
  };

  /**
   * Connections that leave from inside the pod's namespace, marked, without Nagle delay; one HBONE
   * pool per pod.
   */
  const podNetwork = (netns: NetnsHandle): OutboundNetwork & { destroy(): Promise<void> } => {
    let client: HboneClient | undefined;
    return {
      connectTcp: (host, port, localAddress) =>
        connectFromNetns(netns, {
          host,
          port,
          localAddress,
          mark: INPOD_MARK,
          allowHalfOpen: true,
          noDelay: true,
        }),
      hboneClient(credentials) {
        client ??= createHboneClient({
          ...credentials,
          connectSocket: (target, sourceAddress) =>
            connectFromNetns(netns, {
              host: target.host,
              port: target.port,
              ...(sourceAddress === undefined ? {} : { localAddress: sourceAddress }),
              mark: INPOD_MARK,
            }),
          logger,
          metrics,
        });
        return client;
      },
      destroy: async () => {
        await client?.destroy();
      },
    };
  };

  const serveOutbound = (
    uid: string,
    ip: string,
    src: Workload,
    network: OutboundNetwork,
    socket: Socket,
  ) => {
    let requested: { ip: string; port: number };
    try {
      const dst = getOriginalDestination(socket);
      requested = { ip: dst.address, port: dst.port };
    } catch (err) {
      logger.warn({ pod: uid, err: (err as Error).message }, "outbound capture without original destination");
      socket.resetAndDestroy();
      return;
    }
    const target = `${requested.ip}:${requested.port}`;
    const decision = decideCapturedOutbound(
      { ip, proxyPorts: Object.values(options.ports) },
      {
        address: requested.ip,
        port: requested.port,
      },
    );
    if (decision.kind === "refuse") {
      logger.warn({ pod: uid, dst: target, reason: decision.reason }, "outbound capture refused");
      socket.resetAndDestroy();
      return;
    }
    outbound.dial(network, ip, src, requested, socket.remotePort).then(
      (dialed) => {
        if (socket.destroyed || !proxies.has(uid)) {
          outbound.abandon(dialed, "client closed before the dial ended");
          socket.destroy();
          return;
        }
        outbound.carry({ socket, dialed, srcIp: ip, src, requested: target, owner: uid });
      },
      (err: unknown) => {
        const errno = options.dialFailures?.record("outbound", err) ?? errnoOf(err) ?? "unknown";
        logger.info({ src: ip, dst: target, err: (err as Error).message, errno }, "outbound refused");
        socket.resetAndDestroy();
      },
    );
  };

  const remove = async (uid: string): Promise<boolean> => {
    const pending = adding.get(uid);
    if (pending !== undefined) pending.cancelled = true;
    const proxy = proxies.get(uid);
    if (proxy === undefined) return false;
    await dropProxy(proxy);
    return true;
  };

  /** Stops a pod's proxy: its listeners, every connection it carries, its namespace handle. */
  const dropProxy = async (proxy: InPodProxy): Promise<void> => {
    if (proxy.removed) return;
    const { uid } = proxy;
    if (proxies.get(uid) === proxy) proxies.delete(uid);
    proxy.removed = true;
    clearTimeout(proxy.retryTimer);
    proxy.retryTimer = undefined;
    proxy.settle();
    originalSource.forget(uid);
    const { serving } = proxy;
    if (serving !== undefined) stopped.inc({});
    countProxies();
    // The pod is gone (its veth with it): no GOAWAY, just close everything at once.
    const closing = [closeListeners(proxy), serving?.hboneServer.close({ timeoutMs: 0 }).catch(() => {})];
    registry.closeAll(uid);
    await Promise.all(closing);
    await serving?.network.destroy();
    registry.closeAll(uid);
    proxy.netns.close();
    logger.info({ pod: uid, ip: serving?.ip }, "in-pod proxy removed");
  };

  const served = (): (InPodProxy & { serving: PodServing })[] =>
    [...proxies.values()].filter((p): p is InPodProxy & { serving: PodServing } => p.serving !== undefined);

  return {
    add,
    remove,
    has: (uid) => proxies.has(uid),
    pending: () => [...proxies.values()].filter((p) => !p.listening).map((p) => p.uid),
    recheck() {
      for (const p of proxies.values()) tryServe(p);
    },
    rotate(identity, svid) {
      for (const p of served()) {
        if (identityOf(p.serving.workload) === identity) {
          p.serving.hboneServer.setCredentials({
            key: svid.privateKeyPem,
            certChain: svid.certChainPem,
            trustBundle: trustOf(svid),
          });
        }
      }
    },
    identityInUse: (identity) => [...proxies.values()].some((p) => !p.removed && p.identity === identity),
    identityOf: (uid) => proxies.get(uid)?.identity,
    summaries: () =>
      served().map((p) => ({
        uid: p.uid,
        ip: p.serving.ip,
        identity: identityOf(p.serving.workload),
        workload: `${p.serving.workload.namespace}/${p.serving.workload.name}`,
      })),
    drain(deadlineMs) {
      if (draining) return;
      draining = true;
      for (const s of adding.values()) s.cancelled = true;
      for (const p of proxies.values()) {
        clearTimeout(p.retryTimer);
        p.retryTimer = undefined;
        closeListeners(p).catch(() => {});
        if (p.serving !== undefined) closing.close(p.serving.hboneServer, deadlineMs);
      }
    },
    drained: () => closing.done,
    async close() {
      for (const s of adding.values()) s.cancelled = true;
      await Promise.all([...proxies.keys()].map(remove));
    },
  };
}

/**
 * Opens the pod's DNS listeners, UDP and TCP on 127.0.0.1:`port` in its namespace (where the capture
 * rules redirect port 53), marked so their replies and connections are not captured again, and has
 * `server` serve them. On failure nothing is left open but `server`, which the caller closes.
 */
async function listenDns(netns: NetnsHandle, port: number, server: DnsServer): Promise<void> {
  // SO_REUSEPORT as the TCP listeners: a replacing ztunnel binds the same port beside this one.
  const fd = bindInNetns(netns, { host: "127.0.0.1", port, mark: INPOD_MARK, reusePort: true });
  const udp = dgram.createSocket("udp4");
  try {
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind({ fd }, () => {
        udp.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    // A socket that never took the descriptor does not close it.
    try {
      udp.close();
    } catch {
      // never running
    }
    try {
      closeFd(fd);
    } catch {
      // already closed with the socket
    }
    throw err;
  }
  server.serveUdp(udp);
  const tcp = await listenInNetns(netns, {
    host: "127.0.0.1",
    port,
    mark: INPOD_MARK,
    reusePort: true,
    server: createServer(),
  });
  server.serveTcp(tcp);
}

/**
 * The sockets of a pod's forwarded DNS queries: made in the pod's namespace and marked, so the pod's
 * DNS capture lets them pass and the resolver sees the pod's address (Istio's ztunnel forwards from
 * the pod too). A loopback nameserver is this host's own resolver, which no pod reaches: its queries
 * leave from this process's namespace.
 */
export function podDnsSockets(netns: NetnsHandle): PodDnsSockets {
  return {
    createUdpSocket(family, nameserver) {
      const socket = dgram.createSocket(family === 6 ? "udp6" : "udp4");
      if (isLoopbackIp(nameserver.address)) return socket;
      const fd = bindInNetns(netns, { host: family === 6 ? "::" : "0.0.0.0", port: 0, mark: INPOD_MARK });
      try {
        socket.bind({ fd });
      } catch (err) {
        closeFd(fd);
        throw err;
      }
      return socket;
    },
    connectTcp: (nameserver) =>
      isLoopbackIp(nameserver.address)
        ? connect({ host: nameserver.address, port: nameserver.port, noDelay: true })
        : connectFromNetns(netns, {
            host: nameserver.address,
            port: nameserver.port,
            mark: INPOD_MARK,
            noDelay: true,
          }),
  };
}

/**
 * The in-pod connections to a pod's app, from the client's address when the original source is kept.
 * A pod where IP_TRANSPARENT cannot be set (no CAP_NET_ADMIN) falls back to the pod's own address
 * for its later connections, logged once, as Istio's ztunnel turns original source off when its
 * listener cannot be made transparent.
 */
class OriginalSource {
  /** Pods whose transparent connect failed at the socket level. */
  readonly #fallback = new Set<string>();

  constructor(
    readonly enabled: boolean,
    readonly logger: Logger,
  ) {}

  connect(
    netns: NetnsHandle,
    uid: string,
    podIp: string,
    host: string,
    port: number,
    sourceIp: string,
  ): Socket {
    const plain = () =>
      connectFromNetns(netns, { host, port, mark: INPOD_MARK, allowHalfOpen: true, noDelay: true });
    // The pod calling itself (through its own 15006) keeps its address; so does a client address that
    // is not IPv4, which the pod's routing does not know.
    if (!this.enabled || this.#fallback.has(uid) || sourceIp === podIp || !isIPv4(sourceIp)) return plain();
    try {
      return connectFromNetns(netns, {
        host,
        port,
        mark: INPOD_MARK,
        transparent: true,
        localAddress: sourceIp,
        allowHalfOpen: true,
        noDelay: true,
      });
    } catch (err) {
      this.#fallback.add(uid);
      this.logger.warn(
        { pod: uid, err: (err as Error).message },
        "cannot connect from the client's address in this pod (IP_TRANSPARENT); using the pod's own",
      );
      return plain();
    }
  }

  /** Forgets a removed pod. */
  forget(uid: string): void {
    this.#fallback.delete(uid);
  }
}
