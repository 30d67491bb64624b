// Two copies of one package can be loaded at once (its ESM and its CJS build, or two versions), and
// each has its own error class, so a plain `instanceof` fails across them. The brand is a registered
// symbol, the same in every copy, and `instanceof` looks for it instead of the class.

import { TelemetryError } from "./errors.js";

const ordinaryHasInstance = Function.prototype[Symbol.hasInstance];

/**
 * Makes `value instanceof errorClass` true for every object that carries the brand `Symbol.for(key)`,
 * which all instances of `errorClass` do, from whichever copy of the package made them. Call it once,
 * right after the class; calling it again with the same key returns the same brand. A subclass of
 * `errorClass` keeps the ordinary `instanceof`.
 *
 * @param errorClass - The package's error class.
 * @param key - The brand's registry key, by convention `"<package name>.error"`.
 * @returns The brand symbol.
 * @throws TelemetryError `ERR_TELEMETRY_INVALID_ARGUMENT` when `errorClass` is not a class, `key` is not
 * a non-empty string, or the class was already branded with another key.
 *
 * @example
 * ```ts
 * export class PolicyError extends Error { ... }
 * brandErrorClass(PolicyError, "@ambient/policy.error");
 * ```
 */
export function brandErrorClass(errorClass: abstract new (...args: never[]) => Error, key: string): symbol {
  if (
    typeof errorClass !== "function" ||
    typeof errorClass.prototype !== "object" ||
    errorClass.prototype === null
  ) {
    throw new TelemetryError("ERR_TELEMETRY_INVALID_ARGUMENT", "brandErrorClass: errorClass must be a class");
  }
  if (typeof key !== "string" || key === "") {
    throw new TelemetryError(
      "ERR_TELEMETRY_INVALID_ARGUMENT",
      "brandErrorClass: key must be a non-empty string",
    );
  }
  const brand = Symbol.for(key);
  if (Object.hasOwn(errorClass, Symbol.hasInstance)) {
    if (Object.getOwnPropertyDescriptor(errorClass.prototype, brand)?.value === true) return brand;
    throw new TelemetryError(
      "ERR_TELEMETRY_INVALID_ARGUMENT",
      `brandErrorClass: ${errorClass.name || "the class"} already has its own instanceof (another brand?), not ${key}`,
    );
  }
  Object.defineProperty(errorClass.prototype, brand, { value: true });
  Object.defineProperty(errorClass, Symbol.hasInstance, {
    // `this` is the class on the right of `instanceof`: a subclass inherits this static method, and
    // for it the ordinary check applies (a base-class instance is not a subclass instance).
    value: function hasInstance(this: unknown, value: unknown): boolean {
      if (this !== errorClass) return ordinaryHasInstance.call(this, value);
      return (
        typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true
      );
    },
  });
  return brand;
}

brandErrorClass(TelemetryError, "@ambient/telemetry.error");
