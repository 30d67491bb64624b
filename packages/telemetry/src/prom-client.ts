import { TelemetryError } from "./errors.js";
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

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/**
 * The names a metric's samples and family take, in the text format and in OpenMetrics (where a counter
 * `x_total` or `x` is the family `x` with the sample `x_total`): two metrics of one sink must not share one.
 */
function seriesNames(kind: string, name: string): string[] {
  if (kind === "histogram") return [name, `${name}_bucket`, `${name}_sum`, `${name}_count`];
  if (kind === "counter") {
    const stem = name.endsWith("_total") ? name.slice(0, -"_total".length) : name;
    return [stem, `${stem}_total`];
  }
  return [name];
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "symbol" || typeof value === "function") return typeof value;
  if (Array.isArray(value)) return "an array";
  if (value === null || typeof value !== "object") return String(value);
  return "an object";
}

function invalid(message: string): TelemetryError {
  return new TelemetryError("ERR_TELEMETRY_INVALID_ARGUMENT", message);
}

function conflict(message: string, cause?: unknown): TelemetryError {
  return new TelemetryError("ERR_TELEMETRY_METRIC_CONFLICT", message, { cause });
}

function checkName(name: unknown): string {
  if (typeof name !== "string" || !METRIC_NAME.test(name)) {
    throw invalid(`metric name must match ${METRIC_NAME.source}, got ${describe(name)}`);
  }
  return name;
}

function checkHelp(name: string, help: unknown): string {
  if (typeof help !== "string" || help === "") {
    throw invalid(`metric ${name}: help must be a non-empty string, got ${describe(help)}`);
  }
  return help;
}

function checkLabelNames(name: string, kind: string, labelNames: unknown): string[] {
  if (!Array.isArray(labelNames)) {
    throw invalid(`metric ${name}: labelNames must be an array of label names, got ${describe(labelNames)}`);
  }
  const seen = new Set<string>();
  for (const label of labelNames as unknown[]) {
    if (typeof label !== "string" || !LABEL_NAME.test(label) || label.startsWith("__")) {
      throw invalid(
        `metric ${name}: label name must match ${LABEL_NAME.source} and not start with __, got ${describe(label)}`,
      );
    }
    if (kind === "histogram" && label === "le") {
      throw invalid(`metric ${name}: le is the bucket label of a histogram`);
    }
    if (seen.has(label)) throw invalid(`metric ${name}: label name ${label} is listed twice`);
    seen.add(label);
  }
  return [...seen];
}

function checkBuckets(name: string, buckets: unknown): number[] {
  if (!Array.isArray(buckets)) {
    throw invalid(`metric ${name}: buckets must be an array of numbers, got ${describe(buckets)}`);
  }
  const out: number[] = [];
  for (const bound of buckets as unknown[]) {
    if (typeof bound !== "number" || !Number.isFinite(bound)) {
      throw invalid(
        `metric ${name}: bucket bounds must be finite numbers (+Inf is added), got ${describe(bound)}`,
      );
    }
    const last = out[out.length - 1];
    if (last !== undefined && bound <= last) {
      throw invalid(`metric ${name}: bucket bounds must increase, got ${bound} after ${last}`);
    }
    out.push(bound);
  }
  return out;
}

const sameList = (a: readonly unknown[] | undefined, b: readonly unknown[] | undefined): boolean =>
  a === b || (a !== undefined && b !== undefined && a.length === b.length && a.every((v, i) => v === b[i]));

/** One metric made by the sink, with what a second ask for its name is compared against. */
interface Made {
  kind: string;
  metric: unknown;
  labelNames: readonly string[];
  labelSet: ReadonlySet<string>;
  buckets: readonly number[] | undefined;
  /** Frozen label objects already checked against `labelSet` (they cannot change since). */
  checked: WeakSet<object>;
}

/**
 * A {@link MetricsSink} that records into prom-client metrics registered on `registry`. Asking again for
 * a name with the same label names (in any order) and buckets returns the same metric, so several
 * library objects (one HBONE server per pod, say) can share it; asking for a name already used by
 * another kind of metric, with other label names or buckets, or by a histogram's `_bucket`, `_sum` or
 * `_count` series, throws `ERR_TELEMETRY_METRIC_CONFLICT`.
 *
 * Names, help texts, label names and buckets are checked against the Prometheus rules, and every sample
 * against the instrument's interface (a label set is an object whose keys are among the metric's label
 * names and whose values are strings or finite numbers, `undefined` meaning absent; counters take
 * finite increments of 0 or more, gauges finite deltas and any value but NaN, histograms finite
 * observations): anything else throws `ERR_TELEMETRY_INVALID_ARGUMENT` and records nothing.
 *
 * @example
 * ```ts
 * import * as prom from "prom-client";
 * const metrics = createPromClientSink(prom, new prom.Registry());
 * ```
 */
export function createPromClientSink<R>(prom: PromClientModule<R>, registry: R): MetricsSink {
  if (
    (typeof prom !== "object" && typeof prom !== "function") ||
    prom === null ||
    typeof prom.Counter !== "function" ||
    typeof prom.Gauge !== "function" ||
    typeof prom.Histogram !== "function"
  ) {
    throw invalid(
      'createPromClientSink: prom must be the prom-client module (import * as prom from "prom-client")',
    );
  }
  if (typeof registry !== "object" || registry === null) {
    throw invalid(`createPromClientSink: registry must be a prom-client Registry, got ${describe(registry)}`);
  }
  const made = new Map<string, Made>();
  /** Every series name a metric of this sink writes (its name; a histogram's suffixed ones), by owner. */
  const series = new Map<string, string>();
  function once<T>(
    kind: string,
    rawName: unknown,
    rawHelp: unknown,
    rawLabelNames: unknown,
    rawBuckets: unknown,
    make: (configuration: PromMetricConfiguration<R>) => T,
  ): { metric: T; entry: Made } {
    const name = checkName(rawName);
    const help = checkHelp(name, rawHelp);
    const labelNames = checkLabelNames(name, kind, rawLabelNames);
    const buckets = rawBuckets === undefined ? undefined : checkBuckets(name, rawBuckets);
    const existing = made.get(name);
    if (existing !== undefined) {
      if (existing.kind !== kind) {
        throw conflict(`metric ${name} is already a ${existing.kind}, not a ${kind}`);
      }
      if (
        existing.labelSet.size !== labelNames.length ||
        !labelNames.every((l) => existing.labelSet.has(l))
      ) {
        throw conflict(
          `metric ${name} already has the label names [${existing.labelNames.join(", ")}], not [${labelNames.join(", ")}]`,
        );
      }
      if (!sameList(existing.buckets, buckets)) {
        throw conflict(
          `metric ${name} already has the buckets ${existing.buckets === undefined ? "of prom-client's default" : `[${existing.buckets.join(", ")}]`}, not ${buckets === undefined ? "the default" : `[${buckets.join(", ")}]`}`,
        );
      }
      return { metric: existing.metric as T, entry: existing };
    }
    const names = seriesNames(kind, name);
    for (const n of names) {
      const owner = series.get(n);
      if (owner !== undefined) {
        throw conflict(`metric ${name} would write the series ${n}, which the metric ${owner} writes`);
      }
    }
    const getSingleMetric = (registry as { getSingleMetric?: unknown }).getSingleMetric;
    if (typeof getSingleMetric === "function" && getSingleMetric.call(registry, name) !== undefined) {
      throw conflict(`metric ${name} is already registered on the registry, by another sink or by hand`);
    }
    let metric: T;
    try {
      metric = make({
        name,
        help,
        labelNames: [...labelNames],
        registers: [registry],
        ...(buckets === undefined ? {} : { buckets: [...buckets] }),
      });
    } catch (err) {
      throw invalid(
        `metric ${name}: prom-client refused it: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    const entry: Made = {
      kind,
      metric,
      labelNames,
      labelSet: new Set(labelNames),
      buckets,
      checked: new WeakSet(),
    };
    made.set(name, entry);
    for (const n of names) series.set(n, name);
    return { metric, entry };
  }
  // prom-client keeps the label objects it is given; callers may reuse theirs, so they are copied (and
  // checked on the way). A frozen object cannot change, so it is checked once and kept as it is
  // (prom-client only reads label objects): callers that hand the same frozen set to every request save
  // a copy per sample.
  const labelsOf = (entry: Made, name: string, labels: MetricLabels | undefined): PromLabels => {
    if (labels === undefined) return {};
    if (typeof labels !== "object" || labels === null || Array.isArray(labels)) {
      throw invalid(`metric ${name}: labels must be an object of label values, got ${describe(labels)}`);
    }
    const frozen = Object.isFrozen(labels);
    if (frozen && entry.checked.has(labels)) return labels as PromLabels;
    const out: PromLabels = {};
    for (const key of Object.keys(labels)) {
      const value = (labels as Record<string, unknown>)[key];
      if (value === undefined) continue;
      if (!entry.labelSet.has(key)) {
        throw invalid(`metric ${name}: ${key} is not one of its labels [${entry.labelNames.join(", ")}]`);
      }
      if (typeof value !== "string" && (typeof value !== "number" || !Number.isFinite(value))) {
        throw invalid(
          `metric ${name}: label ${key} must be a string or a finite number, got ${describe(value)}`,
        );
      }
      out[key] = value;
    }
    if (!frozen) return out;
    entry.checked.add(labels);
    return labels as PromLabels;
  };
  const finite = (name: string, what: string, value: unknown, min = Number.NEGATIVE_INFINITY): number => {
    if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
      throw invalid(
        `metric ${name}: ${what} must be a finite number${min === 0 ? " of 0 or more" : ""}, got ${describe(value)}`,
      );
    }
    return value;
  };
  return {
    counter(name, help, labelNames = []): Counter {
      const { metric: c, entry } = once(
        "counter",
        name,
        help,
        labelNames,
        undefined,
        (cfg) => new prom.Counter(cfg),
      );
      return {
        inc: (labels, value = 1) => {
          const l = labelsOf(entry, name, labels);
          c.inc(l, finite(name, "a counter increment", value, 0));
        },
      };
    },
    gauge(name, help, labelNames = []): Gauge {
      const { metric: g, entry } = once(
        "gauge",
        name,
        help,
        labelNames,
        undefined,
        (cfg) => new prom.Gauge(cfg),
      );
      return {
        set: (labels, value) => {
          const l = labelsOf(entry, name, labels);
          if (typeof value !== "number" || Number.isNaN(value)) {
            throw invalid(
              `metric ${name}: a gauge value must be a number other than NaN, got ${describe(value)}`,
            );
          }
          g.set(l, value);
        },
        inc: (labels, value = 1) => {
          const l = labelsOf(entry, name, labels);
          g.inc(l, finite(name, "a gauge delta", value));
        },
        dec: (labels, value = 1) => {
          const l = labelsOf(entry, name, labels);
          g.dec(l, finite(name, "a gauge delta", value));
        },
      };
    },
    histogram(name, help, labelNames = [], buckets): Histogram {
      const { metric: h, entry } = once(
        "histogram",
        name,
        help,
        labelNames,
        buckets,
        (cfg) => new prom.Histogram(cfg),
      );
      return {
        observe: (labels, value) => {
          const l = labelsOf(entry, name, labels);
          h.observe(l, finite(name, "an observation", value));
        },
      };
    },
  };
}
