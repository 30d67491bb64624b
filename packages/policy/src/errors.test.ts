import assert from "node:assert/strict";
import { it } from "node:test";
import { PolicyError } from "./errors.js";

it("PolicyError carries code, issues and cause, and instanceof works across package copies", () => {
  const cause = new Error("root");
  const err = new PolicyError("ERR_POLICY_INVALID", "bad", {
    cause,
    issues: [{ path: "spec", message: "x" }],
    document: 2,
  });
  assert.equal(err.name, "PolicyError");
  assert.equal(err.code, "ERR_POLICY_INVALID");
  assert.equal(err.cause, cause);
  assert.deepEqual(err.issues, [{ path: "spec", message: "x" }]);
  assert.equal(err.details.document, 2);
  assert.ok(err instanceof Error);
  assert.ok(!(new Error("x") instanceof PolicyError));
  // What a second (CJS) copy of the class produces: a different class with the same brand.
  const foreign = Object.defineProperty(new Error("other copy"), Symbol.for("@ambient/policy.error"), {
    value: true,
  });
  assert.ok(foreign instanceof PolicyError);
});
