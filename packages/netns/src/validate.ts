/** Argument checks shared by the package: each refuses bad input with `ERR_NETNS_INVALID_ARGUMENT`. */
import { NetnsError } from "./errors.js";

/** Longest delay Node's timers honour; a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

function invalid(field: string, value: unknown, expected: string): NetnsError {
  return new NetnsError(
    "ERR_NETNS_INVALID_ARGUMENT",
    `${field} must be ${expected}, got ${describe(value)}`,
    {
      field,
      value,
    },
  );
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  if (value === null || typeof value !== "object") return String(value);
  return Array.isArray(value) ? "an array" : "an object";
}

/** An integer in [min, max], else `ERR_NETNS_INVALID_ARGUMENT` naming `field`. */
export function requireInteger(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(field, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

/** A file descriptor: a non-negative 32-bit integer. */
export function requireFd(value: unknown, field = "fd"): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 2 ** 31 - 1) {
    throw invalid(field, value, "a file descriptor (a non-negative integer)");
  }
  return value;
}

/** A delay in milliseconds Node's timers can honour: a finite number from `min` to 2^31-1. */
export function requireMs(value: unknown, field: string, min = 0): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > MAX_TIMER_MS) {
    throw invalid(field, value, `a number of milliseconds from ${min} to ${MAX_TIMER_MS}`);
  }
  return value;
}

/** A non-empty string. */
export function requireString(value: unknown, field: string): string {
  if (typeof value !== "string" || value === "") throw invalid(field, value, "a non-empty string");
  return value;
}

/** A function. */
export function requireFunction(value: unknown, field: string): void {
  if (typeof value !== "function") throw invalid(field, value, "a function");
}

/** A non-null object. */
export function requireObject(value: unknown, field: string): void {
  if (typeof value !== "object" || value === null) throw invalid(field, value, "an object");
}

/** A logger with the four methods. */
export function requireLogger(logger: unknown): void {
  requireObject(logger, "logger");
  for (const level of ["debug", "info", "warn", "error"] as const) {
    requireFunction((logger as Record<string, unknown>)[level], `logger.${level}`);
  }
}
