// `instanceof` for the package's classes across its two builds. An app can load the ESM and the CJS
// build side by side (an ESM entry point and a CJS library), each with its own copy of every class;
// a plain `instanceof` would then refuse the other copy's objects.

/**
 * Marks the instances of `cls` with `Symbol.for(key)` and makes `value instanceof cls` true for any
 * object so marked, whichever copy of the package made it. A subclass keeps the ordinary check.
 * Returns the brand.
 */
export function brandClass(cls: { prototype: object }, key: string): symbol {
  const brand = Symbol.for(key);
  Object.defineProperty(cls.prototype, brand, { value: true });
  Object.defineProperty(cls, Symbol.hasInstance, {
    // `this` is the class on the right of `instanceof`; for a subclass the ordinary check applies.
    value: function hasInstance(this: unknown, value: unknown): boolean {
      if (this !== cls) return Function.prototype[Symbol.hasInstance].call(this, value);
      return (
        typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true
      );
    },
  });
  return brand;
}
