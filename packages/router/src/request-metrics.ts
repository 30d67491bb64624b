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
