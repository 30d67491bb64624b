// The logger and metrics shapes are shared by every @ambient package; this package re-exports them.
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "@ambient/telemetry";
import { HboneError } from "./errors.js";

export {
  type Counter,
  type Gauge,
  type Histogram,
  type Logger,
  type MetricLabels,
  type MetricsSink,
  noopLogger,
  noopMetrics,
} from "@ambient/telemetry";

const LEVELS = ["debug", "info", "warn", "error"] as const;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object without them" : typeof value;
}

const hasMethods = (value: unknown, names: readonly string[]): boolean =>
  typeof value === "object" &&
  value !== null &&
  names.every((name) => typeof (value as Record<string, unknown>)[name] === "function");

/**
 * The `logger` option: a {@link Logger} (pino fits) or, when absent, {@link noopLogger}. Checked up front:
 * a logger without its methods would otherwise throw from inside an event handler the first time it logs.
 */
export function loggerOption(value: unknown, where: string): Logger {
  if (value === undefined) return noopLogger;
  if (!hasMethods(value, LEVELS)) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${where}: logger must have debug, info, warn and error methods, got ${describe(value)}`,
    );
  }
  return value as Logger;
}

/** The `metrics` option: a {@link MetricsSink} or, when absent, {@link noopMetrics}. */
export function metricsOption(value: unknown, where: string): MetricsSink {
  if (value === undefined) return noopMetrics;
  if (!hasMethods(value, ["counter", "gauge", "histogram"])) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${where}: metrics must be a MetricsSink with counter, gauge and histogram methods, got ${describe(value)}`,
    );
  }
  return value as MetricsSink;
}

const INSTRUMENT_METHODS = { counter: ["inc"], gauge: ["set", "inc", "dec"] } as const;

/**
 * Asks `sink` for one instrument and checks what it gives back, so that a sink that throws or returns
 * something without the instrument's methods is an option error now rather than a crash at the first
 * connection.
 */
export function instrument<K extends "counter" | "gauge">(
  sink: MetricsSink,
  kind: K,
  where: string,
  name: string,
  help: string,
  labelNames?: readonly string[],
): ReturnType<MetricsSink[K]> {
  let made: unknown;
  try {
    made = sink[kind](name, help, labelNames);
  } catch (err) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: metrics.${kind}("${name}") threw`, {
      cause: err,
    });
  }
  if (!hasMethods(made, INSTRUMENT_METHODS[kind])) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${where}: metrics.${kind}("${name}") must return an object with ${INSTRUMENT_METHODS[kind].join(", ")} methods`,
    );
  }
  return made as ReturnType<MetricsSink[K]>;
}
