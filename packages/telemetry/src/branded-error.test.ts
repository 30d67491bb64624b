import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { brandErrorClass, TelemetryError } from "./index.js";

/** Two copies of one package's error class, as its ESM and CJS builds would define them. */
function twoCopies(key: string) {
  class EsmError extends Error {
    constructor(readonly code: string) {
      super(code);
    }
  }
  class CjsError extends Error {
    constructor(readonly code: string) {
      super(code);
    }
  }
  brandErrorClass(EsmError, key);
  brandErrorClass(CjsError, key);
  return { EsmError, CjsError };
}

describe("brandErrorClass", () => {
  it("makes instanceof hold across copies of the class", () => {
    const { EsmError, CjsError } = twoCopies("@ambient/test-a.error");
    const fromCjs = new CjsError("ERR_X");
    assert.ok(fromCjs instanceof EsmError);
    assert.ok(new EsmError("ERR_Y") instanceof CjsError);
    assert.ok(fromCjs instanceof Error);
    assert.equal(fromCjs.code, "ERR_X");
  });

  it("refuses plain errors, another package's errors, primitives and null", () => {
    const { EsmError } = twoCopies("@ambient/test-b.error");
    const { CjsError: OtherPackageError } = twoCopies("@ambient/test-c.error");
    for (const value of [
      new Error("plain"),
      new OtherPackageError("ERR_Z"),
      "ERR_X",
      1,
      undefined,
      null,
      {},
    ]) {
      assert.equal(value instanceof EsmError, false, String(value));
    }
  });

  it("returns the registered brand, which an object can carry without the class", () => {
    class BrandedError extends Error {}
    const brand = brandErrorClass(BrandedError, "@ambient/test-d.error");
    assert.equal(brand, Symbol.for("@ambient/test-d.error"));
    assert.ok(Object.defineProperty(new Error("x"), brand, { value: true }) instanceof BrandedError);
    assert.equal(Object.keys(new BrandedError("y")).length, 0, "the brand is not an enumerable field");
  });
});

describe("brandErrorClass: arguments", () => {
  const invalid = (e: unknown) => {
    assert.ok(e instanceof TelemetryError, `expected TelemetryError, got ${String(e)}`);
    assert.equal(e.code, "ERR_TELEMETRY_INVALID_ARGUMENT", e.message);
    return true;
  };

  it("refuses a class that is not a constructor and a key that is not a non-empty string", () => {
    for (const value of [null, undefined, 1, "E", {}, [], Symbol("x"), () => {}]) {
      assert.throws(() => brandErrorClass(value as never, "@ambient/test-e.error"), invalid, String(value));
    }
    for (const key of [null, undefined, Number.NaN, 5, {}, [], Symbol("k"), ""]) {
      class E extends Error {}
      assert.throws(() => brandErrorClass(E, key as never), invalid, String(key));
    }
  });

  it("branding a class twice with one key returns the brand; with another key is refused", () => {
    class E extends Error {}
    const brand = brandErrorClass(E, "@ambient/test-f.error");
    assert.equal(brandErrorClass(E, "@ambient/test-f.error"), brand);
    assert.throws(() => brandErrorClass(E, "@ambient/test-g.error"), invalid);
    assert.ok(new E("x") instanceof E);
  });

  it("a subclass of a branded class keeps the ordinary instanceof", () => {
    class Base extends Error {}
    brandErrorClass(Base, "@ambient/test-h.error");
    class Sub extends Base {}
    assert.equal(new Base("x") instanceof Sub, false, "a Base is not a Sub");
    assert.ok(new Sub("y") instanceof Sub);
    assert.ok(new Sub("y") instanceof Base);
  });

  it("TelemetryError is itself branded", () => {
    const e = new TelemetryError("ERR_TELEMETRY_INVALID_ARGUMENT", "x");
    assert.ok(e instanceof Error);
    assert.equal(e.name, "TelemetryError");
    assert.equal((e as unknown as Record<symbol, unknown>)[Symbol.for("@ambient/telemetry.error")], true);
  });
});
