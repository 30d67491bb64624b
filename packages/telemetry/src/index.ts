/**
 * The telemetry shapes shared by every `@ambient` package. Libraries take a {@link Logger} and a
 * {@link MetricsSink} as options and default to the no-op ones here; apps pass pino and a prom-client
 * adapter. Both are plain structural interfaces, so nothing here depends on a logging or metrics library.
 *
 * @packageDocumentation
 */

/** Structured logger: the first argument holds fields, the second the message. A pino logger fits as is. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Label values of one metric sample, by label name. */
export type MetricLabels = Readonly<Record<string, string | number>>;

/** A monotonically increasing count. */
export interface Counter {
  inc(labels?: MetricLabels, value?: number): void;
}

/** A value that goes up and down (open connections, streams in flight). */
export interface Gauge {
  set(labels: MetricLabels, value: number): void;
  inc(labels?: MetricLabels, value?: number): void;
  dec(labels?: MetricLabels, value?: number): void;
}

/** Observations counted into buckets (durations, sizes). */
export interface Histogram {
  observe(labels: MetricLabels, value: number): void;
}

/**
 * Creates the instruments a library records into. Called once per metric name when the library object
 * is created; a small adapter over prom-client's `Counter`, `Gauge` and `Histogram` fits it.
 */
export interface MetricsSink {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
  histogram(
    name: string,
    help: string,
    labelNames?: readonly string[],
    buckets?: readonly number[],
  ): Histogram;
}

const noop = (): void => {};
const noopCounter: Counter = Object.freeze({ inc: noop });
const noopGauge: Gauge = Object.freeze({ set: noop, inc: noop, dec: noop });
const noopHistogram: Histogram = Object.freeze({ observe: noop });

/** A logger that drops everything. */
export const noopLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

/** A metrics sink whose instruments do nothing (and are shared, so creating them costs nothing). */
export const noopMetrics: MetricsSink = Object.freeze({
  counter: () => noopCounter,
  gauge: () => noopGauge,
  histogram: () => noopHistogram,
});

export { brandErrorClass } from "./branded-error.js";
export { TelemetryError, type TelemetryErrorCode } from "./errors.js";
export {
  createPromClientSink,
  type PromClientModule,
  type PromLabels,
  type PromMetricConfiguration,
} from "./prom-client.js";
