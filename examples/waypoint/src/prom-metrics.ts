import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

type Labels = Record<string, string | number>;

/**
 * A {@link MetricsSink} backed by a prom-client registry. Metrics are created once per name, so several
 * components (one HBONE server per pod) can share one name.
 */
export function createPromMetricsSink(registry: Registry): MetricsSink {
  const counters = new Map<string, Counter>();
  const gauges = new Map<string, Gauge>();
  const histograms = new Map<string, Histogram>();
  const labels = (l: MetricLabels | undefined): Labels => ({ ...(l ?? {}) });
  return {
    counter(name, help, labelNames = []) {
      let c = counters.get(name);
      if (c === undefined) {
        c = new Counter({ name, help, labelNames: [...labelNames], registers: [registry] });
        counters.set(name, c);
      }
      const metric = c;
      return { inc: (l, value = 1) => metric.inc(labels(l), value) };
    },
    gauge(name, help, labelNames = []) {
      let g = gauges.get(name);
      if (g === undefined) {
        g = new Gauge({ name, help, labelNames: [...labelNames], registers: [registry] });
        gauges.set(name, g);
      }
      const metric = g;
      return {
        set: (l, value) => metric.set(labels(l), value),
        inc: (l, value = 1) => metric.inc(labels(l), value),
        dec: (l, value = 1) => metric.dec(labels(l), value),
      };
    },
    histogram(name, help, labelNames = [], buckets) {
      let h = histograms.get(name);
      if (h === undefined) {
        h = new Histogram({
          name,
          help,
          labelNames: [...labelNames],
          registers: [registry],
          ...(buckets === undefined ? {} : { buckets: [...buckets] }),
        });
        histograms.set(name, h);
      }
      const metric = h;
      return { observe: (l, value) => metric.observe(labels(l), value) };
    },
  };
}
