// Two copies of one package can be loaded at once (its ESM and its CJS build, or two versions), and
// each has its own error class, so a plain `instanceof` fails across them. The brand is a registered
// symbol, the same in every copy, and `instanceof` looks for it instead of the class.

/**
 * Makes `value instanceof errorClass` true for every object that carries the brand `Symbol.for(key)`,
 * which all instances of `errorClass` do, from whichever copy of the package made them. Call it once,
 * right after the class.
 *
 * @param errorClass - The package's error class.
 * @param key - The brand's registry key, by convention `"<package name>.error"`.
 * @returns The brand symbol.
 *
 * @example
 * ```ts
 * export class PolicyError extends Error { ... }
 * brandErrorClass(PolicyError, "@ambient/policy.error");
 * ```
 */
export function brandErrorClass(errorClass: abstract new (...args: never[]) => Error, key: string): symbol {
  const brand = Symbol.for(key);
  Object.defineProperty(errorClass.prototype, brand, { value: true });
  Object.defineProperty(errorClass, Symbol.hasInstance, {
    value: (value: unknown): boolean =>
      typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true,
  });
  return brand;
}
