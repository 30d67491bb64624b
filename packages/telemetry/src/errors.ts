/** Stable error codes of `@ambient/telemetry`. */
export type TelemetryErrorCode =
  /**
   * An argument is of the wrong type or out of range: a metric, label or help text Prometheus does not
   * allow, buckets that are not increasing finite numbers, a label set or sample value that is not what
   * the instrument takes, a `brandErrorClass` class or key of the wrong kind.
   */
  | "ERR_TELEMETRY_INVALID_ARGUMENT"
  /**
   * A metric name is already taken: by another kind of metric, by one with other label names or buckets,
   * by a histogram's `_bucket`, `_sum` or `_count` series, or on the registry by someone else.
   */
  | "ERR_TELEMETRY_METRIC_CONFLICT";

/** The one error class of `@ambient/telemetry`; `instanceof` works across ESM and CJS copies. */
export class TelemetryError extends Error {
  readonly code: TelemetryErrorCode;

  constructor(code: TelemetryErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TelemetryError";
    this.code = code;
  }
}
