import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { continueTrace } from "./trace-context.js";

describe("trace context", () => {
  it("continues a valid traceparent", () => {
    const t = continueTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false);
    assert.equal(t.traceId, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert.equal(t.parentSpanId, "00f067aa0ba902b7");
    assert.equal(t.flags, "01");
    assert.equal(t.traceparent, `00-${t.traceId}-${t.spanId}-01`);
    assert.notEqual(t.spanId, "00f067aa0ba902b7");
  });
  it("starts a new trace for missing or invalid headers", () => {
    for (const bad of [
      undefined,
      "",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
      "zz",
    ]) {
      const t = continueTrace(bad, true);
      assert.equal(t.parentSpanId, undefined, String(bad));
      assert.match(t.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    }
  });
  it("accepts future versions with extra fields", () => {
    assert.equal(
      continueTrace("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", false).traceId,
      "4bf92f3577b34da6a3ce929d0e0e4736",
    );
  });
  it("makes unique span ids", () => {
    const ids = new Set(Array.from({ length: 1000 }, () => continueTrace(undefined, false).spanId));
    assert.equal(ids.size, 1000);
  });
});
