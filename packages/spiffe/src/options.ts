import { SpiffeError } from "./errors.js";

/**
 * Longest delay, in ms, that Node's `setTimeout` waits: a longer one fires after 1 ms instead
 * (with a `TimeoutOverflowWarning`).
 */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/** The `ERR_OPTIONS_INVALID` error for option `name` of `scope`, which must be `expected`. */
export function invalidOption(scope: string, name: string, expected: string, value: unknown): SpiffeError {
  return new SpiffeError(
    "ERR_OPTIONS_INVALID",
    `${scope} option ${name} must be ${expected}, got ${describeValue(value)}`,
    { option: name, value },
  );
}

function describeValue(value: unknown): string {
  if (typeof value === "string")
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? "an invalid Date" : value.toISOString();
  if (typeof value === "function") return "a function";
  if (typeof value === "object" && value !== null) return Array.isArray(value) ? "an array" : "an object";
  return String(value);
}

/** Range of a numeric option; bounds are inclusive (`min`, `max`) or exclusive (`above`, `below`). */
export interface NumberRange {
  min?: number;
  max?: number;
  above?: number;
  below?: number;
  integer?: boolean;
}

/**
 * `value`, or `fallback` when it is `undefined`, checked to be a finite number in `range`.
 * @throws SpiffeError `ERR_OPTIONS_INVALID` naming the option and the expected range.
 */
export function numberOption(
  scope: string,
  name: string,
  value: unknown,
  fallback: number,
  range: NumberRange,
): number {
  const v = value === undefined ? fallback : value;
  const problem =
    typeof v !== "number" || !Number.isFinite(v)
      ? "a finite number"
      : range.integer === true && !Number.isInteger(v)
        ? "an integer"
        : range.min !== undefined && v < range.min
          ? `at least ${range.min}`
          : range.above !== undefined && v <= range.above
            ? `above ${range.above}`
            : range.below !== undefined && v >= range.below
              ? `below ${range.below}`
              : range.max !== undefined && v > range.max
                ? `at most ${range.max}`
                : undefined;
  if (problem !== undefined) throw invalidOption(scope, name, problem, value);
  return v as number;
}

/**
 * A delay or timeout option in ms: a finite number in `range` and at most {@link MAX_TIMER_DELAY_MS}.
 * @throws SpiffeError `ERR_OPTIONS_INVALID`
 */
export function msOption(
  scope: string,
  name: string,
  value: unknown,
  fallback: number,
  range: NumberRange,
): number {
  return numberOption(scope, name, value, fallback, {
    ...range,
    max: Math.min(range.max ?? MAX_TIMER_DELAY_MS, MAX_TIMER_DELAY_MS),
  });
}

/**
 * `options` itself, or `{}` when it is `undefined`; anything but a plain object is refused.
 * @throws SpiffeError `ERR_OPTIONS_INVALID`
 */
export function optionsObject<T extends object>(scope: string, options: T | undefined): T {
  if (options === undefined) return {} as T;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new SpiffeError(
      "ERR_OPTIONS_INVALID",
      `${scope} options must be an object, got ${describeValue(options)}`,
      {
        value: options,
      },
    );
  }
  return options;
}

/**
 * `options`, which `scope` cannot do without: anything but a plain object, `undefined` included, is
 * refused.
 * @throws SpiffeError `ERR_OPTIONS_INVALID`
 */
export function requiredOptions<T extends object>(scope: string, options: T): T {
  if (options === undefined) throw invalidOption(scope, "argument", "an options object", options);
  return optionsObject(scope, options);
}
