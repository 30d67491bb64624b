import type { Counter, Gauge, Histogram, MetricLabels, MetricsSink } from "./index.js";

/** Label values as prom-client takes them (it may keep the object, so it is mutable). */
export type PromLabels = Record<string, string | number>;

/** What {@link createPromClientSink} passes to prom-client's metric constructors. */
export interface PromMetricConfiguration<R> {
  name: string;
  help: string;
  labelNames: string[];
  registers: R[];
  buckets?: number[];
}

/**
 * The part of the `prom-client` module the adapter uses: its `Counter`, `Gauge` and `Histogram`
 * classes. Pass the module itself (`import * as prom from "prom-client"`); this package does not
 * depend on prom-client.
 */
export interface PromClientModule<R> {
  Counter: new (
    configuration: PromMetricConfiguration<R>,
  ) => {
    inc(labels: PromLabels, value?: number): void;
  };
  Gauge: new (
    configuration: PromMetricConfiguration<R>,
  ) => {
    set(labels: PromLabels, value: number): void;
    inc(labels: PromLabels, value?: number): void;
    dec(labels: PromLabels, value?: number): void;
  };
  Histogram: new (
    configuration: PromMetricConfiguration<R>,
  ) => {
    observe(labels: PromLabels, value: number): void;
  };
}

/**
 * A {@link MetricsSink} that records into prom-client metrics registered on `registry`. Asking again for
 * a name returns the same metric, so several library objects (one HBONE server per pod, say) can share
 * it; asking for a name already used by another kind of metric throws.
 *
 * @example
 * ```ts
 * import * as prom from "prom-client";
 * const metrics = createPromClientSink(prom, new prom.Registry());
 * ```
 */
export function createPromClientSink<R>(prom: PromClientModule<R>, registry: R): MetricsSink {
  const made = new Map<string, { kind: string; metric: unknown }>();
  function once<T>(kind: string, name: string, make: () => T): T {
    const existing = made.get(name);
    if (existing !== undefined) {
      if (existing.kind !== kind) {
        throw new TypeError(`metric ${name} is already a ${existing.kind}, not a ${kind}`);
      }
      return existing.metric as T;
    }
    const metric = make();
    made.set(name, { kind, metric });
    return metric;
  }
  // prom-client keeps the label objects it is given; callers may reuse theirs. A frozen object cannot
  // change, so it is kept as it is (prom-client only reads label objects): callers that hand the same
  // frozen set to every request save a copy per sample.
  const copy = (labels: MetricLabels | undefined): PromLabels =>
    labels !== undefined && Object.isFrozen(labels) ? (labels as PromLabels) : { ...labels };
  const config = (
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets?: readonly number[],
  ): PromMetricConfiguration<R> => ({
    name,
    help,
    labelNames: [...labelNames],
    registers: [registry],
    ...(buckets === undefined ? {} : { buckets: [...buckets] }),
  });
  return {
    counter(name, help, labelNames = []): Counter {
      const c = once("counter", name, () => new prom.Counter(config(name, help, labelNames)));
      return { inc: (labels, value = 1) => c.inc(copy(labels), value) };
    },
    gauge(name, help, labelNames = []): Gauge {
      const g = once("gauge", name, () => new prom.Gauge(config(name, help, labelNames)));
      return {
        set: (labels, value) => g.set(copy(labels), value),
        inc: (labels, value = 1) => g.inc(copy(labels), value),
        dec: (labels, value = 1) => g.dec(copy(labels), value),
      };
    },
    histogram(name, help, labelNames = [], buckets): Histogram {
      const h = once("histogram", name, () => new prom.Histogram(config(name, help, labelNames, buckets)));
      return { observe: (labels, value) => h.observe(copy(labels), value) };
    },
  };
}
