import type { Counter, Gauge, Histogram, MetricLabels, MetricsSink } from "../src/telemetry.js";

/** A MetricsSink that keeps current values, keyed by metric name and labels. */
export function recordingMetrics(): MetricsSink & { value(name: string, labels?: MetricLabels): number } {
  const values = new Map<string, number>();
  const keyOf = (name: string, labels?: MetricLabels) => `${name}${JSON.stringify(labels ?? {})}`;
  const add = (name: string, labels: MetricLabels | undefined, delta: number) => {
    const k = keyOf(name, labels);
    values.set(k, (values.get(k) ?? 0) + delta);
  };
  return {
    counter(name): Counter {
      return { inc: (labels, value = 1) => add(name, labels, value) };
    },
    gauge(name): Gauge {
      return {
        set: (labels, value) => values.set(keyOf(name, labels), value),
        inc: (labels, value = 1) => add(name, labels, value),
        dec: (labels, value = 1) => add(name, labels, -value),
      };
    },
    histogram(name): Histogram {
      return { observe: (labels, value) => add(name, labels, value) };
    },
    value: (name, labels) => values.get(keyOf(name, labels)) ?? 0,
  };
}
