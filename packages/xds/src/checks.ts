import { XdsError } from "./errors.js";

/** Longest delay a Node.js timer keeps: a longer one fires after 1 ms instead. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

function invalid(message: string): XdsError {
  return new XdsError("ERR_XDS_INVALID_ARGUMENT", message);
}

/** Checks a duration option in ms: a finite number from `min` to {@link MAX_TIMER_MS}. */
export function checkMs(name: string, value: unknown, min = 0): void {
  if (value === undefined) return;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > MAX_TIMER_MS) {
    throw invalid(`${name} must be a number of ms from ${min} to ${MAX_TIMER_MS}, got ${String(value)}`);
  }
}

/** Checks a count option: a whole number of at least `min`. */
export function checkCount(name: string, value: unknown, min = 1): void {
  if (value === undefined) return;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw invalid(`${name} must be a whole number of at least ${min}, got ${String(value)}`);
  }
}

/** Checks a size option in bytes: a finite number above 0. */
export function checkBytes(name: string, value: unknown): void {
  if (value === undefined) return;
  if (typeof value !== "number" || !Number.isFinite(value) || !(value > 0)) {
    throw invalid(`${name} must be a number of bytes above 0, got ${String(value)}`);
  }
}

/** Checks a hook option: a function. */
export function checkFunction(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== "function") {
    throw invalid(`${name} must be a function, got ${typeof value}`);
  }
}

/** Checks a flag option: a boolean. */
export function checkBoolean(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== "boolean") {
    throw invalid(`${name} must be a boolean, got ${typeof value}`);
  }
}

/** Checks a list of names: an array of strings. */
export function checkNames(name: string, value: unknown, typeUrl?: string): asserts value is string[] {
  if (!Array.isArray(value) || !value.every((n) => typeof n === "string")) {
    throw new XdsError("ERR_XDS_INVALID_ARGUMENT", `${name} must be an array of strings`, { typeUrl });
  }
}
