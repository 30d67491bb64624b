// The logger and metrics shapes every @ambient package takes (a pino logger and a prom-client adapter fit).
export {
  type Counter,
  type Gauge,
  type Histogram,
  type Logger,
  type MetricLabels,
  type MetricsSink,
  noopLogger,
  noopMetrics,
} from "@ambient/xds";
