import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createPromClientSink, type MetricsSink } from "@ambient/telemetry";
import * as prom from "prom-client";
import { createLabelSetSink } from "./label-set-metrics.js";

const NAMES = ["reporter", "response_code", "source_principal"] as const;

/** The same samples into `sink`: frozen sets reused, equal sets as distinct objects, unfrozen sets. */
function record(sink: MetricsSink): void {
  const total = sink.counter("t_requests_total", "Requests.", NAMES);
  const duration = sink.histogram("t_duration_ms", "Duration.", NAMES, [1, 10, 100]);
  const ok = Object.freeze({ reporter: "waypoint", response_code: "200", source_principal: "spiffe://a" });
  const denied = { reporter: "waypoint", response_code: "403", source_principal: 'say "hi"\n' };
  for (const ms of [0.5, 1, 7, 10, 11, 250, 0]) {
    total.inc(ok);
    duration.observe(ok, ms);
  }
  // Same values, another frozen object (a label-set cache that started over): the same series.
  const again = Object.freeze({ ...ok });
  total.inc(again, 2);
  duration.observe(again, 99.5);
  total.inc(denied);
  duration.observe(denied, 3);
  denied.response_code = "404"; // an unfrozen set may change between samples
  total.inc(denied);
  duration.observe(denied, 1e9);
  // Labels left out, in another order.
  total.inc({ response_code: "500" });
  duration.observe({ response_code: "500", reporter: "waypoint" }, 42);
}

describe("createLabelSetSink", () => {
  it("serves the text and JSON prom-client serves for the same samples", async () => {
    const reference = new prom.Registry();
    record(createPromClientSink(prom, reference));
    const registry = new prom.Registry();
    record(createLabelSetSink(registry, createPromClientSink(prom, registry)));
    const text = await registry.metrics();
    assert.equal(text, await reference.metrics());
    assert.match(text, /^t_requests_total\{[^}]*response_code="200"[^}]*\} 9$/m);
    assert.match(text, /^t_duration_ms_bucket\{le="10",reporter="waypoint",response_code="200"/m);
    // prom-client adds an empty `exemplar` to each histogram sample; exemplars are not used here.
    const withoutExemplars = (json: unknown) =>
      JSON.parse(JSON.stringify(json, (key, value) => (key === "exemplar" ? undefined : value)));
    assert.deepEqual(
      withoutExemplars(await registry.getMetricsAsJSON()),
      withoutExemplars(await reference.getMetricsAsJSON()),
    );
  });

  it("refuses a label the metric does not have, and a value that is not a finite number", () => {
    const registry = new prom.Registry();
    const sink = createLabelSetSink(registry, createPromClientSink(prom, registry));
    const total = sink.counter("t_total", "T.", ["a"]);
    const h = sink.histogram("t_h", "H.", ["a"], [1]);
    assert.throws(() => total.inc(Object.freeze({ b: "x" })), TypeError);
    assert.throws(() => h.observe({ a: "x" }, Number.NaN), TypeError);
    assert.throws(() => total.inc({ a: "x" }, -1), TypeError);
  });

  it("returns the same metric for a name asked again, refuses it as another kind, resets with the registry", async () => {
    const registry = new prom.Registry();
    const sink = createLabelSetSink(registry, createPromClientSink(prom, registry));
    const a = sink.counter("t_total", "T.", ["a"]);
    assert.equal(sink.counter("t_total", "T.", ["a"]), a);
    assert.throws(() => sink.histogram("t_total", "T.", ["a"]), TypeError);
    a.inc(Object.freeze({ a: "x" }));
    assert.match(await registry.metrics(), /^t_total\{a="x"\} 1$/m);
    registry.resetMetrics();
    assert.doesNotMatch(await registry.metrics(), /^t_total\{/m);
  });
});
