import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import * as prom from "prom-client";
import { createPromClientSink } from "./prom-client.js";

/** Parses exposition text with the Prometheus project's Python parser (Debian python3-prometheus-client). */
function parseWithPrometheus(
  text: string,
): Record<string, { type: string; samples: [string, Record<string, string>, number][] }> {
  const script = [
    "import json, sys",
    "from prometheus_client.parser import text_string_to_metric_families",
    "out = {}",
    "for f in text_string_to_metric_families(sys.stdin.read()):",
    "    out[f.name] = {'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]}",
    "print(json.dumps(out))",
  ].join("\n");
  return JSON.parse(execFileSync("/usr/bin/python3", ["-c", script], { input: text, encoding: "utf8" }));
}

describe("createPromClientSink", () => {
  it("records into prom-client metrics that the Prometheus parser reads back", async () => {
    const registry = new prom.Registry();
    const sink = createPromClientSink(prom, registry);
    const labels = { direction: "inbound", peer: "spiffe://cluster.local/ns/a/sa/b" };
    const opened = sink.counter("hbone_tunnels_opened_total", "Tunnels opened.", ["direction", "peer"]);
    opened.inc(labels);
    opened.inc(labels, 2);
    // A second ask for the same name shares the metric.
    sink.counter("hbone_tunnels_opened_total", "Tunnels opened.", ["direction", "peer"]).inc(labels);
    const open = sink.gauge("hbone_tunnels_open", "Tunnels open.", ["direction"]);
    open.inc({ direction: "inbound" }, 3);
    open.dec({ direction: "inbound" });
    open.set({ direction: "outbound" }, 7);
    const sizes = sink.histogram("hbone_bytes", "Bytes per tunnel.", ["direction"], [10, 100]);
    sizes.observe({ direction: "inbound" }, 5);
    sizes.observe({ direction: "inbound" }, 50);
    sizes.observe({ direction: "inbound" }, 500);

    const families = parseWithPrometheus(await registry.metrics());
    const counter = families.hbone_tunnels_opened;
    assert.equal(counter?.type, "counter");
    assert.deepEqual(
      counter?.samples.find(([n]) => n === "hbone_tunnels_opened_total"),
      ["hbone_tunnels_opened_total", labels, 4],
    );
    assert.equal(families.hbone_tunnels_open?.type, "gauge");
    assert.deepEqual(families.hbone_tunnels_open?.samples.map(([, l, v]) => [l.direction, v]).sort(), [
      ["inbound", 2],
      ["outbound", 7],
    ]);
    const histogram = families.hbone_bytes;
    assert.equal(histogram?.type, "histogram");
    const bucket = (le: string) =>
      histogram?.samples.find(([n, l]) => n === "hbone_bytes_bucket" && l.le === le)?.[2];
    assert.deepEqual([bucket("10"), bucket("100"), bucket("+Inf")], [1, 2, 3]);
    assert.equal(histogram?.samples.find(([n]) => n === "hbone_bytes_sum")?.[2], 555);
  });

  it("records frozen label objects as they are, through every kind of metric and the text output", async () => {
    const registry = new prom.Registry();
    const sink = createPromClientSink(prom, registry);
    const labels = Object.freeze({ k: "a" });
    const c = sink.counter("frozen_total", "help", ["k"]);
    const h = sink.histogram("frozen_size", "help", ["k"], [1, 10]);
    const g = sink.gauge("frozen_level", "help", ["k"]);
    for (let i = 0; i < 3; i++) {
      c.inc(labels);
      h.observe(labels, 5);
      g.inc(labels);
    }
    const parsed = parseWithPrometheus(await registry.metrics());
    assert.deepEqual(parsed.frozen?.samples, [["frozen_total", { k: "a" }, 3]]);
    assert.equal(parsed.frozen_size?.samples.find(([n]) => n === "frozen_size_count")?.[2], 3);
    assert.equal(parsed.frozen_level?.samples[0]?.[2], 3);
    assert.deepEqual(labels, { k: "a" });
  });

  it("copies label objects, so a caller may reuse and change its own", async () => {
    const registry = new prom.Registry();
    const c = createPromClientSink(prom, registry).counter("reused_total", "help", ["k"]);
    const labels: Record<string, string> = { k: "a" };
    c.inc(labels);
    labels.k = "b";
    c.inc(labels);
    const samples = parseWithPrometheus(await registry.metrics()).reused?.samples ?? [];
    assert.deepEqual(
      samples
        .filter(([n]) => n === "reused_total")
        .map(([, l, v]) => [l.k, v])
        .sort(),
      [
        ["a", 1],
        ["b", 1],
      ],
    );
  });

  it("refuses to reuse a name for another kind of metric", () => {
    const sink = createPromClientSink(prom, new prom.Registry());
    sink.counter("x_total", "help");
    assert.throws(() => sink.gauge("x_total", "help"), /already a counter, not a gauge/);
  });
});
