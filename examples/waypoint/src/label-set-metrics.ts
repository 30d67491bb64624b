/**
 * Counters and histograms for the waypoint's per-request metrics that cost little per sample. The router
 * hands the same frozen label set (Istio's 25 labels) to every request with the same parties and
 * outcome; prom-client checks and hashes all labels of every sample, four samples per request. Here a
 * frozen set is checked and keyed once, and each later sample is a lookup by object and a few additions.
 * The series are served by the same prom-client registry, in the text prom-client itself writes.
 */
import type { Counter, Gauge, Histogram, MetricLabels, MetricsSink } from "@ambient/telemetry";
import type * as prom from "prom-client";

type Labels = Record<string, string | number>;

/** One exported sample, in the shape prom-client's registry formats (`sharedLabels` after `labels`). */
interface Sample {
  labels: Labels;
  sharedLabels?: Labels;
  value: number;
  metricName?: string;
}

/** A metric's samples as prom-client's `get()` returns them. */
interface ServedValues {
  name: string;
  help: string;
  type: string;
  values: Sample[];
  aggregator: "sum";
}

/** What a prom-client registry reads from a metric it serves (`get`, `getForPromString`, `reset`). */
interface ServedMetric {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "histogram";
  readonly aggregator: "sum";
  get(): Promise<ServedValues>;
  reset(): void;
}

/**
 * The series of one metric, by label set. A frozen set cannot change, so it is looked up by identity
 * after its first sample; sets with the same labels and values share one series either way.
 */
class SeriesByLabels<S> {
  readonly #byObject = new WeakMap<object, S>();
  readonly #byKey = new Map<string, { labels: Labels; series: S }>();

  constructor(
    private readonly metric: string,
    private readonly labelNames: readonly string[],
    private readonly create: () => S,
  ) {}

  get(labels: MetricLabels | undefined): S {
    const given = labels ?? {};
    const frozen = Object.isFrozen(given);
    if (frozen) {
      const known = this.#byObject.get(given);
      if (known !== undefined) return known;
    }
    for (const name in given) {
      if (!this.labelNames.includes(name)) {
        throw new TypeError(`label ${JSON.stringify(name)} is not a label of ${this.metric}`);
      }
    }
    // prom-client's identity of a series: the values as strings, unset labels left out.
    let key = "";
    for (const name of this.labelNames) {
      const value = given[name];
      key += value === undefined ? "\u0001" : `${value}`;
      key += "\u0000";
    }
    let entry = this.#byKey.get(key);
    if (entry === undefined) {
      entry = { labels: { ...given }, series: this.create() };
      this.#byKey.set(key, entry);
    }
    if (frozen) this.#byObject.set(given, entry.series);
    return entry.series;
  }

  entries(): IterableIterator<{ labels: Labels; series: S }> {
    return this.#byKey.values();
  }
}

function checkValue(metric: string, value: number): void {
  if (!Number.isFinite(value)) throw new TypeError(`${metric}: value ${value} is not a finite number`);
}

class LabelSetCounter implements ServedMetric, Counter {
  readonly type = "counter";
  readonly aggregator = "sum";
  #series: SeriesByLabels<{ value: number }>;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
  ) {
    this.#series = this.#newSeries();
  }

  #newSeries(): SeriesByLabels<{ value: number }> {
    return new SeriesByLabels(this.name, this.labelNames, () => ({ value: 0 }));
  }

  inc(labels?: MetricLabels, value = 1): void {
    checkValue(this.name, value);
    if (value < 0) throw new TypeError(`${this.name}: a counter cannot decrease`);
    this.#series.get(labels).value += value;
  }

  async get(): Promise<ServedValues> {
    const values: Sample[] = [];
    for (const { labels, series } of this.#series.entries()) values.push({ labels, value: series.value });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.#series = this.#newSeries();
  }
}

interface HistogramSeries {
  /** Observations per bucket (not cumulative); the last slot counts those above every bound. */
  counts: number[];
  sum: number;
  count: number;
}

class LabelSetHistogram implements ServedMetric, Histogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  #series: SeriesByLabels<HistogramSeries>;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    private readonly bounds: readonly number[],
  ) {
    this.#series = this.#newSeries();
  }

  #newSeries(): SeriesByLabels<HistogramSeries> {
    const slots = this.bounds.length + 1;
    return new SeriesByLabels(this.name, this.labelNames, () => ({
      counts: new Array<number>(slots).fill(0),
      sum: 0,
      count: 0,
    }));
  }

  observe(labels: MetricLabels, value: number): void {
    checkValue(this.name, value);
    const series = this.#series.get(labels);
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    (series.counts[i] as number)++;
    series.sum += value;
    series.count++;
  }

  /** Buckets with `le` first and the series' labels after it, then `_sum` and `_count`, as prom-client. */
  async getForPromString(): Promise<ServedValues> {
    const values: Sample[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, series } of this.#series.entries()) {
      let cumulative = 0;
      for (const [i, bound] of this.bounds.entries()) {
        cumulative += series.counts[i] as number;
        values.push({ labels: { le: bound }, sharedLabels: labels, value: cumulative, metricName: bucket });
      }
      values.push({ labels: { le: "+Inf" }, sharedLabels: labels, value: series.count, metricName: bucket });
      values.push({ labels: {}, sharedLabels: labels, value: series.sum, metricName: `${this.name}_sum` });
      values.push({
        labels: {},
        sharedLabels: labels,
        value: series.count,
        metricName: `${this.name}_count`,
      });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** The same samples with every label in `labels`, as prom-client's `get()`. */
  async get(): Promise<ServedValues> {
    const data = await this.getForPromString();
    data.values = data.values.map(({ labels, sharedLabels, value, metricName }) => ({
      labels: { ...labels, ...sharedLabels },
      value,
      ...(metricName === undefined ? {} : { metricName }),
    }));
    return data;
  }

  reset(): void {
    this.#series = this.#newSeries();
  }
}

/**
 * A {@link MetricsSink} whose counters and histograms are registered on `registry` and cheap per sample
 * for frozen label sets; gauges come from `fallback` (a prom-client sink on the same registry).
 * Asking again for a name returns the same metric; a name already taken in the registry throws.
 */
export function createLabelSetSink(registry: prom.Registry, fallback: MetricsSink): MetricsSink {
  const made = new Map<string, LabelSetCounter | LabelSetHistogram>();
  const register = <M extends LabelSetCounter | LabelSetHistogram>(name: string, make: () => M): M => {
    const existing = made.get(name);
    if (existing !== undefined) {
      const wanted = make();
      if (existing.type !== wanted.type) {
        throw new TypeError(`metric ${name} is already a ${existing.type}, not a ${wanted.type}`);
      }
      return existing as M;
    }
    const metric = make();
    // The registry serves any object with prom-client's get()/reset(); its types only name its classes.
    registry.registerMetric(metric as unknown as prom.Metric);
    made.set(name, metric);
    return metric;
  };
  return {
    counter: (name, help, labelNames = []): Counter =>
      register(name, () => new LabelSetCounter(name, help, labelNames)),
    histogram: (name, help, labelNames = [], buckets = DEFAULT_BUCKETS): Histogram =>
      register(name, () => new LabelSetHistogram(name, help, labelNames, [...buckets])),
    gauge: (name, help, labelNames): Gauge => fallback.gauge(name, help, labelNames),
  };
}

/** prom-client's default buckets, for a histogram asked for without its own. */
const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
