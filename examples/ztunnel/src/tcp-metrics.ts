import type { Workload } from "@ambient/xds";
import type { MetricLabels, MetricsSink } from "./telemetry.js";
import { identityOf } from "./workload-store.js";

/** Label names of the Istio TCP metrics, as ztunnel reports them. */
export const TCP_METRIC_LABELS = [
  "reporter",
  "source_workload",
  "source_canonical_service",
  "source_workload_namespace",
  "source_principal",
  "destination_workload",
  "destination_canonical_service",
  "destination_workload_namespace",
  "destination_principal",
  "destination_service",
  "connection_security_policy",
] as const;

export type TcpMetricLabels = Record<(typeof TCP_METRIC_LABELS)[number], string>;

/** What one connection is labelled with. */
export interface ConnectionParties {
  reporter: "source" | "destination";
  source: Workload | undefined;
  /** Verified peer identity when the source is not in the store (or to override it). */
  sourcePrincipal?: string;
  destination: Workload | undefined;
  /** `hostname` of the Service the client addressed, if any. */
  destinationService?: string;
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
 * Istio's labels for a connection, `unknown` where a party is not a mesh workload. Connections between
 * the same workloads share one frozen object: an open connection holds no label set of its own, and
 * the metrics sink can keep it as it is instead of copying it for each of the five samples. Workloads
 * are replaced, not changed, when the control plane updates them, so a changed workload gets new labels.
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
  const key = `${p.reporter}\n${p.sourcePrincipal ?? "\0"}\n${p.destinationService ?? "\0"}\n${p.mutualTls}`;
  let labels = sets.get(key);
  if (labels === undefined) {
    if (sets.size >= MAX_LABEL_SETS_PER_PAIR) sets.clear();
    labels = makeLabels(p);
    sets.set(key, labels);
  }
  return labels;
}

function makeLabels(p: ConnectionParties): TcpMetricLabels {
  return Object.freeze({
    reporter: p.reporter,
    source_workload: p.source?.workloadName || p.source?.name || UNKNOWN,
    source_canonical_service: p.source?.canonicalName || UNKNOWN,
    source_workload_namespace: p.source?.namespace || UNKNOWN,
    source_principal: p.sourcePrincipal ?? principal(p.source),
    destination_workload: p.destination?.workloadName || p.destination?.name || UNKNOWN,
    destination_canonical_service: p.destination?.canonicalName || UNKNOWN,
    destination_workload_namespace: p.destination?.namespace || UNKNOWN,
    destination_principal: p.destination?.tunnelProtocol === "HBONE" ? principal(p.destination) : UNKNOWN,
    destination_service: p.destinationService ?? UNKNOWN,
    connection_security_policy: p.mutualTls ? "mutual_tls" : "unknown",
  });
}

/** The four Istio TCP metrics. */
export interface TcpMetrics {
  opened(labels: MetricLabels): void;
  closed(labels: MetricLabels, bytes: { sent: number; received: number }): void;
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
    closed: (labels, bytes) => {
      closed.inc(labels);
      sent.inc(labels, Math.max(0, bytes.sent));
      received.inc(labels, Math.max(0, bytes.received));
    },
  };
}
