import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

type Labels = Record<string, string | number>;

/**
 * A {@link MetricsSink} backed by a prom-client registry. Asking twice for the same name returns
 * the same metric, so several components may share one.
 */
export function createPromMetricsSink(registry: Registry): MetricsSink {
  const made = new Map<string, unknown>();
  function once<T>(name: string, make: () => T): T {
    const existing = made.get(name);
    if (existing !== undefined) return existing as T;
    const metric = make();
    made.set(name, metric);
    return metric;
  }
  const labelsOf = (labels: MetricLabels | undefined): Labels => ({ ...(labels ?? {}) });
  return {
    counter(name, help, labelNames = []) {
      const c = once(
        name,
        () => new Counter({ name, help, labelNames: [...labelNames], registers: [registry] }),
      );
      return { inc: (labels, value = 1) => c.inc(labelsOf(labels), value) };
    },
    gauge(name, help, labelNames = []) {
      const g = once(
        name,
        () => new Gauge({ name, help, labelNames: [...labelNames], registers: [registry] }),
      );
      return {
        set: (labels, value) => g.set(labelsOf(labels), value),
        inc: (labels, value = 1) => g.inc(labelsOf(labels), value),
        dec: (labels, value = 1) => g.dec(labelsOf(labels), value),
      };
    },
    histogram(name, help, labelNames = [], buckets) {
      const h = once(
        name,
        () =>
          new Histogram({
            name,
            help,
            labelNames: [...labelNames],
            registers: [registry],
            ...(buckets ? { buckets: [...buckets] } : {}),
          }),
      );
      return { observe: (labels, value) => h.observe(labelsOf(labels), value) };
    },
  };
}
