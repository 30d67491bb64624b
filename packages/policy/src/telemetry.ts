/** Structural logger; a pino logger fits. Libraries never log on their own beyond this. */
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
/** Structural metrics sink; a prom-client adapter fits. */
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
export const noopLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

const noopCounter: Counter = { inc: noop };
const noopGauge: Gauge = { set: noop, inc: noop, dec: noop };
const noopHistogram: Histogram = { observe: noop };

/** A metrics sink whose instruments do nothing. */
export const noopMetrics: MetricsSink = {
  counter: () => noopCounter,
  gauge: () => noopGauge,
  histogram: () => noopHistogram,
};
