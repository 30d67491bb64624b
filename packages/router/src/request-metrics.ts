import type { Counter, Histogram, MetricLabels, MetricsSink } from "./telemetry.js";

/** Istio's standard request metric labels, in the order Istio lists them. */
export const ISTIO_REQUEST_LABELS = [
  "reporter",
  "source_workload",
  "source_canonical_service",
  "source_canonical_revision",
  "source_workload_namespace",
  "source_principal",
  "source_app",
  "source_version",
  "source_cluster",
  "destination_workload",
  "destination_workload_namespace",
  "destination_principal",
  "destination_app",
  "destination_version",
  "destination_service",
  "destination_service_name",
  "destination_service_namespace",
  "destination_canonical_service",
  "destination_canonical_revision",
  "destination_cluster",
  "request_protocol",
  "response_code",
  "grpc_response_status",
  "response_flags",
  "connection_security_policy",
] as const;

export type IstioRequestLabel = (typeof ISTIO_REQUEST_LABELS)[number];

/**
 * Istio's TCP metric labels, as its waypoints report them: the request labels without the response's
 * code and gRPC status (`request_protocol` is `tcp`).
 */
export const ISTIO_TCP_LABELS = ISTIO_REQUEST_LABELS.filter(
  (l) => l !== "response_code" && l !== "grpc_response_status",
) as readonly IstioTcpLabel[];

export type IstioTcpLabel = Exclude<IstioRequestLabel, "response_code" | "grpc_response_status">;

/** Istio's default duration buckets (milliseconds). */
const DURATION_BUCKETS = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
  3600000,
];
/** Istio's default size buckets (bytes). */
const SIZE_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];

/** The four Istio HTTP request metrics, reported with `reporter="waypoint"`. */
export class RequestMetrics {
  private readonly total: Counter;
  private readonly duration: Histogram;
  private readonly requestBytes: Histogram;
  private readonly responseBytes: Histogram;

  constructor(sink: MetricsSink) {
    this.total = sink.counter(
      "istio_requests_total",
      "Requests handled by the waypoint.",
      ISTIO_REQUEST_LABELS,
    );
    this.duration = sink.histogram(
      "istio_request_duration_milliseconds",
      "Request duration in milliseconds.",
      ISTIO_REQUEST_LABELS,
      DURATION_BUCKETS,
    );
    this.requestBytes = sink.histogram(
      "istio_request_bytes",
      "Request size (headers and body) in bytes.",
      ISTIO_REQUEST_LABELS,
      SIZE_BUCKETS,
    );
    this.responseBytes = sink.histogram(
      "istio_response_bytes",
      "Response size (headers and body) in bytes.",
      ISTIO_REQUEST_LABELS,
      SIZE_BUCKETS,
    );
  }

  record(labels: MetricLabels, durationMs: number, requestBytes: number, responseBytes: number): void {
    this.total.inc(labels, 1);
    this.duration.observe(labels, durationMs);
    this.requestBytes.observe(labels, requestBytes);
    this.responseBytes.observe(labels, responseBytes);
  }
}

/** The four Istio TCP metrics, reported with `reporter="waypoint"` for tunnels carried as TCP. */
export class TcpConnectionMetrics {
  private readonly opened: Counter;
  private readonly closed: Counter;
  private readonly sent: Counter;
  private readonly received: Counter;

  constructor(sink: MetricsSink) {
    this.opened = sink.counter(
      "istio_tcp_connections_opened_total",
      "TCP connections the waypoint opened.",
      ISTIO_TCP_LABELS,
    );
    this.closed = sink.counter(
      "istio_tcp_connections_closed_total",
      "TCP connections the waypoint closed.",
      ISTIO_TCP_LABELS,
    );
    this.sent = sink.counter(
      "istio_tcp_sent_bytes_total",
      "Bytes sent toward the source (response direction) on TCP connections.",
      ISTIO_TCP_LABELS,
    );
    this.received = sink.counter(
      "istio_tcp_received_bytes_total",
      "Bytes received from the source (request direction) on TCP connections.",
      ISTIO_TCP_LABELS,
    );
  }

  open(labels: MetricLabels): void {
    this.opened.inc(labels, 1);
  }

  /** Bytes moved since the last report, each way. */
  bytes(labels: MetricLabels, sent: number, received: number): void {
    if (sent > 0) this.sent.inc(labels, sent);
    if (received > 0) this.received.inc(labels, received);
  }

  close(labels: MetricLabels): void {
    this.closed.inc(labels, 1);
  }
}
