import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { brandErrorClass } from "./index.js";

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
