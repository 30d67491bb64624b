/** Structured logger; a pino logger fits this shape. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export type MetricLabels = Readonly<Record<string, string | number>>;

export interface Counter {
  inc(labels?: MetricLabels, value?: number): void;
}

export interface Gauge {
  set(labels: MetricLabels, value: number): void;
  inc(labels?: MetricLabels, value?: number): void;
  dec(labels?: MetricLabels, value?: number): void;
}

export interface Histogram {
  observe(labels: MetricLabels, value: number): void;
}

/** Factory for metrics; a prom-client adapter fits this shape. */
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

/** A logger that drops everything. */
export const noopLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

const noopCounter: Counter = Object.freeze({ inc: noop });
const noopGauge: Gauge = Object.freeze({ set: noop, inc: noop, dec: noop });
const noopHistogram: Histogram = Object.freeze({ observe: noop });

/** A metrics sink whose instruments record nothing. */
export const noopMetrics: MetricsSink = Object.freeze({
  counter: () => noopCounter,
  gauge: () => noopGauge,
  histogram: () => noopHistogram,
});
