import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { continueTrace, requestId } from "./trace-context.js";

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
  it("makes version 4 UUIDs for x-request-id, all different", () => {
    const ids = Array.from({ length: 2000 }, () => requestId());
    for (const id of ids)
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(new Set(ids).size, ids.length);
  });
  it("keeps identifiers stable after later ones are made", () => {
    const first = continueTrace(undefined, false);
    const copy = { ...first };
    for (let i = 0; i < 100; i++)
      continueTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false);
    assert.deepEqual(first, copy);
    assert.equal(first.traceparent, `00-${first.traceId}-${first.spanId}-00`);
  });
});
