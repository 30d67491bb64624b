// The logger and metrics shapes are shared by every @ambient package; this package re-exports them.
export {
  type Counter,
  type Gauge,
  type Histogram,
  type Logger,
  type MetricLabels,
  type MetricsSink,
  noopLogger,
  noopMetrics,
} from "@ambient/telemetry";
