import { HboneError } from "@ambient/hbone";
import type { Service, Workload } from "@ambient/xds";
import type { MetricsSink } from "./telemetry.js";
import { identityOf } from "./workload-store.js";

/** Label names of the Istio TCP metrics, as Istio's ztunnel reports them, in its order. */
export const TCP_METRIC_LABELS = [
  "reporter",
  "source_workload",
  "source_canonical_service",
  "source_canonical_revision",
  "source_workload_namespace",
  "source_principal",
  "source_app",
  "source_version",
  "source_cluster",
  "destination_service",
  "destination_service_namespace",
  "destination_service_name",
  "destination_workload",
  "destination_canonical_service",
  "destination_canonical_revision",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "destination_version",
  "destination_cluster",
  "request_protocol",
  "response_flags",
  "connection_security_policy",
] as const;

export type TcpMetricLabels = Record<(typeof TCP_METRIC_LABELS)[number], string>;

/**
 * `response_flags` of a connection: `-`, `DENY` (authorization policy refused it), `CONNECT` (its
 * upstream could not be reached) or `H2_HANDSHAKE_FAILURE` (its HBONE stream was gone before it could
 * be answered), as Istio's ztunnel sets them on `istio_tcp_connections_closed_total`.
 */
export type TcpResponseFlag = "-" | "DENY" | "CONNECT" | "H2_HANDSHAKE_FAILURE";

/** The Service a connection was addressed to, as the labels name it. */
export type ServiceDescription = Pick<Service, "hostname" | "name" | "namespace">;

/** What one connection is labelled with. */
export interface ConnectionParties {
  reporter: "source" | "destination";
  source: Workload | undefined;
  /**
   * The source identity mutual TLS verified: the peer's on inbound (whether or not the source is in the
   * store). Without it, an outbound connection over mutual TLS names the source workload's own identity.
   */
  sourcePrincipal?: string;
  destination: Workload | undefined;
  /** The Service the client addressed, if any. */
  destinationService?: ServiceDescription;
  mutualTls: boolean;
}

const UNKNOWN = "unknown";

function principal(w: Workload | undefined): string {
  return w === undefined ? UNKNOWN : identityOf(w);
}

/** Label sets already made, by source workload, then destination workload, then the rest. */
const labelCache = new WeakMap<object, WeakMap<object, Map<string, TcpMetricLabels>>>();
/** Stands for an absent workload in {@link labelCache}. */
const NO_WORKLOAD = {};
/** Label sets kept per pair of workloads before that pair's entries are dropped and made again. */
const MAX_LABEL_SETS_PER_PAIR = 64;

/**
 * Istio's labels for a connection, `unknown` where a party is not a mesh workload, `response_flags`
 * `-`. Connections between the same workloads share one frozen object: an open connection holds no
 * label set of its own, and the metrics sink can keep it as it is instead of copying it for each of
 * the five samples. Workloads are replaced, not changed, when the control plane updates them, so a
 * changed workload gets new labels.
 */
export function connectionLabels(p: ConnectionParties): TcpMetricLabels {
  const source = p.source ?? NO_WORKLOAD;
  const destination = p.destination ?? NO_WORKLOAD;
  let bySource = labelCache.get(source);
  if (bySource === undefined) {
    bySource = new WeakMap();
    labelCache.set(source, bySource);
  }
  let sets = bySource.get(destination);
  if (sets === undefined) {
    sets = new Map();
    bySource.set(destination, sets);
  }
  const svc = p.destinationService;
  const service = svc === undefined ? "\0" : `${svc.namespace}/${svc.name}/${svc.hostname}`;
  const key = `${p.reporter}\n${p.sourcePrincipal ?? "\0"}\n${service}\n${p.mutualTls}`;
  let labels = sets.get(key);
  if (labels === undefined) {
    if (sets.size >= MAX_LABEL_SETS_PER_PAIR) sets.clear();
    labels = makeLabels(p);
    sets.set(key, labels);
  }
  return labels;
}

/** `value`, or `unknown` when it is absent or empty. */
function known(value: string | undefined): string {
  return value === undefined || value === "" ? UNKNOWN : value;
}

function makeLabels(p: ConnectionParties): TcpMetricLabels {
  const src = p.source;
  const dst = p.destination;
  const svc = p.destinationService;
  return Object.freeze({
    reporter: p.reporter,
    source_workload: known(src?.workloadName || src?.name),
    source_canonical_service: known(src?.canonicalName),
    source_canonical_revision: known(src?.canonicalRevision),
    source_workload_namespace: known(src?.namespace),
    // Only mutual TLS proves who the source is: a plaintext connection names no source principal, even
    // from the address of a mesh workload (an address proves nothing), as Istio's ztunnel labels it.
    source_principal: p.mutualTls ? (p.sourcePrincipal ?? principal(src)) : UNKNOWN,
    // Istio's ztunnel reports the canonical name and revision as app and version.
    source_app: known(src?.canonicalName),
    source_version: known(src?.canonicalRevision),
    source_cluster: known(src?.clusterId),
    destination_service: known(svc?.hostname),
    destination_service_namespace: known(svc?.namespace),
    destination_service_name: known(svc?.name),
    destination_workload: known(dst?.workloadName || dst?.name),
    destination_canonical_service: known(dst?.canonicalName),
    destination_canonical_revision: known(dst?.canonicalRevision),
    destination_workload_namespace: known(dst?.namespace),
    // The destination workload's identity whether or not the connection to it is mutual TLS, as Istio's
    // ztunnel labels it: queries tell backends apart by it, and `connection_security_policy` says
    // whether it was proved. Only a destination that is no known workload is `unknown`.
    destination_principal: principal(dst),
    destination_app: known(dst?.canonicalName),
    destination_version: known(dst?.canonicalRevision),
    destination_cluster: known(dst?.clusterId),
    request_protocol: "tcp",
    response_flags: "-",
    connection_security_policy: p.mutualTls ? "mutual_tls" : UNKNOWN,
  });
}

/** The label sets with another `response_flags`, made once per label set and flag. */
const flaggedCache = new WeakMap<TcpMetricLabels, Map<TcpResponseFlag, TcpMetricLabels>>();

function flagged(labels: TcpMetricLabels, flag: TcpResponseFlag): TcpMetricLabels {
  if (flag === labels.response_flags) return labels;
  let byFlag = flaggedCache.get(labels);
  if (byFlag === undefined) {
    byFlag = new Map();
    flaggedCache.set(labels, byFlag);
  }
  let out = byFlag.get(flag);
  if (out === undefined) {
    out = Object.freeze({ ...labels, response_flags: flag });
    byFlag.set(flag, out);
  }
  return out;
}

/**
 * Errnos (and Node.js stream codes) with which a relay ends when one side simply went away: a reset, a
 * write to a peer that already closed, a socket no longer connected, a close before both directions
 * ended. A TCP connection may end so at any time; Istio's ztunnel counts these as a normal close.
 */
const NORMAL_END_CODES = new Set([
  "ECONNRESET",
  "EPIPE",
  "ENOTCONN",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_WRITE_AFTER_END",
  "ERR_SOCKET_CLOSED",
]);

/** HTTP/2 codes of a tunnel stream reset that only ends it: NO_ERROR, STREAM_CLOSED, CANCEL. */
const NORMAL_END_RST_CODES = new Set([0x0, 0x5, 0x8]);
/** The HTTP/2 error code of a graceful GOAWAY. */
const GOAWAY_NO_ERROR = 0x0;

/**
 * The `response_flags` of a connection whose relay (the copy after the connect) ended with `err`:
 * `-` for no error or an end either side may cause (a reset, a closed peer, a tunnel stream reset with
 * NO_ERROR, STREAM_CLOSED or CANCEL, the HTTP/2 connection closing under the tunnel), `CONNECT` for
 * any other failure (a timeout, an unreachable peer, an HTTP/2 protocol or TLS error, a stream reset
 * with an error code, an HTTP/2 connection ended by a GOAWAY with an error code), as Istio's ztunnel
 * flags the close.
 */
export function relayCloseFlag(err: unknown): "-" | "CONNECT" {
  if (err === undefined || err === null) return "-";
  if (err instanceof HboneError) {
    if (err.rstCode !== undefined) return NORMAL_END_RST_CODES.has(err.rstCode) ? "-" : "CONNECT";
    // A GOAWAY with an error code is one side giving up on the whole connection, not a close: the
    // tunnels it cut failed. (A GOAWAY with NO_ERROR only drains; its tunnels end as the connection does.)
    if (err.goawayCode !== undefined && err.goawayCode !== GOAWAY_NO_ERROR) return "CONNECT";
    if (err.nodeCode !== undefined) return NORMAL_END_CODES.has(err.nodeCode) ? "-" : "CONNECT";
    switch (err.code) {
      // The HTTP/2 connection or stream closed under the tunnel (the peer's connection ended), or
      // this proxy closed or aborted it: nothing failed on the way.
      case "ERR_HBONE_CONNECTION":
      case "ERR_HBONE_CLOSED":
      case "ERR_HBONE_ABORTED":
        return "-";
      default:
        return "CONNECT";
    }
  }
  const code = typeof err === "object" && "code" in err ? (err as { code: unknown }).code : undefined;
  return typeof code === "string" && NORMAL_END_CODES.has(code) ? "-" : "CONNECT";
}

/** The four Istio TCP metrics. */
export interface TcpMetrics {
  opened(labels: TcpMetricLabels): void;
  /** Adds bytes moved since the last call for the connection: toward the source, and from it. */
  bytes(labels: TcpMetricLabels, sent: number, received: number): void;
  /** Counts the close, under `flag` when the connection was refused or failed. */
  closed(labels: TcpMetricLabels, flag?: TcpResponseFlag): void;
}

/** Registers `istio_tcp_connections_{opened,closed}_total` and `istio_tcp_{sent,received}_bytes_total`. */
export function createTcpMetrics(sink: MetricsSink): TcpMetrics {
  const opened = sink.counter(
    "istio_tcp_connections_opened_total",
    "TCP connections opened",
    TCP_METRIC_LABELS,
  );
  const closed = sink.counter(
    "istio_tcp_connections_closed_total",
    "TCP connections closed",
    TCP_METRIC_LABELS,
  );
  const sent = sink.counter(
    "istio_tcp_sent_bytes_total",
    "Bytes sent toward the source (response direction)",
    TCP_METRIC_LABELS,
  );
  const received = sink.counter(
    "istio_tcp_received_bytes_total",
    "Bytes received from the source (request direction)",
    TCP_METRIC_LABELS,
  );
  return {
    opened: (labels) => opened.inc(labels),
    bytes: (labels, s, r) => {
      sent.inc(labels, Math.max(0, s));
      received.inc(labels, Math.max(0, r));
    },
    closed: (labels, flag = "-") => closed.inc(flagged(labels, flag)),
  };
}

/** How often the bytes of open connections are added to the counters. */
export const TCP_BYTES_REPORT_MS = 5000;

/**
 * The byte counts of one carried connection: what the counters were last given, so each report adds
 * only what moved since. The proxy reports every open connection every {@link TCP_BYTES_REPORT_MS}
 * (a long-lived connection shows its traffic while it lasts, as Istio's ztunnel counts bytes as they
 * move) and once more when it closes, reading the sockets' own totals: no work per chunk.
 */
export abstract class MeteredConnection {
  #reportedSent = 0;
  #reportedReceived = 0;
  /** The flag its close is counted under: `DENY` once a policy change closed it while open. */
  closeFlag: TcpResponseFlag = "-";

  constructor(
    readonly labels: TcpMetricLabels,
    readonly tcpMetrics: TcpMetrics,
  ) {}

  /** Bytes toward the source so far. */
  abstract sentBytes(): number;
  /** Bytes from the source so far. */
  abstract receivedBytes(): number;

  /** Adds the bytes moved since the last report (at close even when none did). */
  reportBytes(closing = false): void {
    const sent = this.sentBytes();
    const received = this.receivedBytes();
    if (!closing && sent === this.#reportedSent && received === this.#reportedReceived) return;
    this.tcpMetrics.bytes(this.labels, sent - this.#reportedSent, received - this.#reportedReceived);
    this.#reportedSent = sent;
    this.#reportedReceived = received;
  }

  /**
   * Reports the last bytes and counts the close: under the flag already set (a late `DENY`), else
   * under the one the relay's error calls for ({@link relayCloseFlag}).
   */
  reportClosed(err?: unknown): void {
    this.reportBytes(true);
    const flag = this.closeFlag === "-" ? relayCloseFlag(err) : this.closeFlag;
    this.tcpMetrics.closed(this.labels, flag);
  }
}

/** Counts a connection that was refused (`DENY`) or whose upstream failed (`CONNECT`): opened and closed. */
export function countRefused(tcpMetrics: TcpMetrics, labels: TcpMetricLabels, flag: TcpResponseFlag): void {
  tcpMetrics.opened(labels);
  tcpMetrics.closed(labels, flag);
}
