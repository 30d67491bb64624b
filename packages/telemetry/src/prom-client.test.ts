import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import * as prom from "prom-client";
import { TelemetryError, type TelemetryErrorCode } from "./index.js";
import { createPromClientSink } from "./prom-client.js";

function isCode(code: TelemetryErrorCode) {
  return (e: unknown) => {
    assert.ok(e instanceof TelemetryError, `expected TelemetryError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}
const invalid = isCode("ERR_TELEMETRY_INVALID_ARGUMENT");
const conflict = isCode("ERR_TELEMETRY_METRIC_CONFLICT");
/** A value for a test message (String() throws for symbols, also inside arrays). */
const show = (v: unknown): string =>
  Array.isArray(v) ? `[${v.map(show).join(",")}]` : typeof v === "symbol" ? v.toString() : String(v);

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
    assert.throws(() => sink.gauge("x_total", "help"), conflict);
  });
});

describe("createPromClientSink: arguments", () => {
  const bad: unknown[] = [null, undefined, Number.NaN, 5, "abc", Symbol("s"), []];

  it("refuses a module without the metric classes and a registry that is not an object", () => {
    for (const v of [...bad, {}, { Counter: prom.Counter }]) {
      assert.throws(() => createPromClientSink(v as never, new prom.Registry()), invalid, String(v));
    }
    for (const v of [null, undefined, 5, "abc", Symbol("s")]) {
      assert.throws(() => createPromClientSink(prom, v as never), invalid, String(v));
    }
  });

  it("refuses metric names, help texts and label names Prometheus does not allow", () => {
    const sink = createPromClientSink(prom, new prom.Registry());
    for (const name of [
      ...bad.filter((v) => v !== "abc"),
      {},
      Number.POSITIVE_INFINITY,
      "",
      "1abc",
      "a-b",
      "a b",
      "é",
    ]) {
      assert.throws(() => sink.counter(name as never, "help"), invalid, `name ${String(name)}`);
    }
    for (const help of [...bad.filter((v) => v !== "abc"), {}, ""]) {
      assert.throws(() => sink.counter("h_total", help as never), invalid, `help ${String(help)}`);
    }
    for (const labelNames of [
      "status",
      new Set(["a"]),
      null,
      5,
      {},
      [5],
      [""],
      ["a-b"],
      ["__reserved"],
      ["a", "a"],
      [Symbol("l")],
    ]) {
      assert.throws(
        () => sink.counter("l_total", "help", labelNames as never),
        invalid,
        `labelNames ${show(labelNames)}`,
      );
    }
    assert.throws(() => sink.histogram("le_seconds", "help", ["le"]), invalid, "le is the bucket label");
    sink.counter("ok_total", "help", ["le", "a:b".replace(":", "_")]);
  });

  it("refuses buckets that are not an increasing list of finite numbers", () => {
    const sink = createPromClientSink(prom, new prom.Registry());
    for (const buckets of [
      "0.1",
      null,
      5,
      {},
      [Number.NaN],
      [1, Number.POSITIVE_INFINITY],
      ["1"],
      [3, 1, 2],
      [1, 1],
      [Symbol("b")],
    ]) {
      assert.throws(
        () => sink.histogram("b_seconds", "help", [], buckets as never),
        invalid,
        `buckets ${show(buckets)}`,
      );
    }
    sink.histogram("b_seconds", "help", [], [-1, 0, 0.5]);
    sink.histogram("e_seconds", "help", [], []);
  });

  it("a name asked again must have the same label names and buckets", async () => {
    const registry = new prom.Registry();
    const sink = createPromClientSink(prom, registry);
    sink.counter("c_total", "help", ["a", "b"]);
    sink.counter("c_total", "other help", ["b", "a"]).inc({ a: "1", b: "2" });
    assert.throws(() => sink.counter("c_total", "help", ["a"]), conflict);
    assert.throws(() => sink.counter("c_total", "help"), conflict);
    sink.histogram("h_seconds", "help", ["a"], [1, 2]);
    sink.histogram("h_seconds", "help", ["a"], [1, 2]);
    assert.throws(() => sink.histogram("h_seconds", "help", ["a"], [1, 3]), conflict);
    assert.throws(() => sink.histogram("h_seconds", "help", ["a"]), conflict);
    const text = await registry.metrics();
    assert.match(text, /# HELP c_total help\n/);
  });

  it("refuses names whose series would clash: a histogram's _bucket, _sum and _count, a counter's _total", async () => {
    const registry = new prom.Registry();
    const sink = createPromClientSink(prom, registry);
    sink.histogram("lat", "help", [], [1]);
    for (const name of ["lat_count", "lat_sum", "lat_bucket", "lat_total"]) {
      assert.throws(() => sink.counter(name, "help"), conflict, name);
    }
    assert.throws(() => sink.gauge("lat_sum", "help"), conflict);
    sink.gauge("size_count", "help");
    assert.throws(() => sink.histogram("size", "help"), conflict);
    // OpenMetrics writes a counter as <name without _total>_total, under the family <name without _total>.
    sink.counter("open_total", "help");
    assert.throws(() => sink.gauge("open", "help"), conflict);
    assert.throws(() => sink.counter("open", "help"), conflict);
    sink.counter("latency_total", "help").inc();
    const parsed = parseWithPrometheus(await registry.metrics());
    assert.equal(parsed.lat?.type, "histogram");
  });

  it("a name another sink or prom-client itself registered on the registry is a conflict", () => {
    const registry = new prom.Registry();
    new prom.Counter({ name: "taken_total", help: "help", registers: [registry] });
    assert.throws(() => createPromClientSink(prom, registry).counter("taken_total", "help"), conflict);
  });

  it("instruments refuse label sets and values that are not what the interface says", () => {
    const registry = new prom.Registry();
    const sink = createPromClientSink(prom, registry);
    const c = sink.counter("v_total", "help", ["k"]);
    const g = sink.gauge("v_level", "help", ["k"]);
    const h = sink.histogram("v_size", "help", ["k"], [1]);
    for (const labels of [
      null,
      5,
      "k",
      [],
      Symbol("l"),
      { other: "x" },
      { k: Symbol("v") },
      { k: null },
      { k: {} },
      { k: true },
      { k: Number.NaN },
    ]) {
      const l = labels as never;
      assert.throws(() => c.inc(l), invalid, `counter labels ${String(labels)}`);
      assert.throws(() => g.set(l, 1), invalid, `gauge labels ${String(labels)}`);
      assert.throws(() => h.observe(l, 1), invalid, `histogram labels ${String(labels)}`);
    }
    assert.throws(
      () => c.inc(Object.freeze({ other: "x" }) as never),
      invalid,
      "frozen labels are checked too",
    );
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, -1, "5", null, {}, Symbol("v")]) {
      assert.throws(() => c.inc({ k: "a" }, value as never), invalid, `counter value ${String(value)}`);
    }
    for (const value of [Number.NaN, "5", null, {}, undefined, Symbol("v")]) {
      assert.throws(() => g.set({ k: "a" }, value as never), invalid, `gauge set ${String(value)}`);
    }
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, "5", null, {}, Symbol("v")]) {
      assert.throws(() => g.inc({ k: "a" }, value as never), invalid, `gauge inc ${String(value)}`);
      assert.throws(() => g.dec({ k: "a" }, value as never), invalid, `gauge dec ${String(value)}`);
    }
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, "5", null, undefined, {}]) {
      assert.throws(() => h.observe({ k: "a" }, value as never), invalid, `observe ${String(value)}`);
    }
    // What the interface allows still works: numbers as label values, an undefined value as no label,
    // no labels at all, negative gauge deltas and observations, infinite gauge values.
    c.inc({ k: 200 });
    c.inc({ k: undefined } as never, 0);
    c.inc();
    g.dec({ k: "a" }, -2);
    g.set({ k: "b" }, Number.NEGATIVE_INFINITY);
    h.observe({ k: "a" }, -1);
  });

  it("a refused sample leaves the metric as it was", async () => {
    const registry = new prom.Registry();
    const c = createPromClientSink(prom, registry).counter("kept_total", "help");
    c.inc({}, 2);
    assert.throws(() => c.inc({}, Number.NaN), invalid);
    assert.deepEqual(parseWithPrometheus(await registry.metrics()).kept?.samples, [["kept_total", {}, 2]]);
  });
});
