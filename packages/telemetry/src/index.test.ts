import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./index.js";

describe("telemetry shapes", () => {
  it("no-op logger and instruments accept every call and record nothing", () => {
    noopLogger.debug({ a: 1 }, "x");
    noopLogger.error({});
    const c = noopMetrics.counter("c_total", "help", ["l"]);
    c.inc();
    c.inc({ l: "v" }, 2);
    noopMetrics.gauge("g", "help").set({}, 1);
    noopMetrics.histogram("h", "help", ["l"], [1, 2]).observe({ l: 1 }, 3);
    assert.equal(noopMetrics.counter("other_total", "help"), c);
    assert.ok(Object.isFrozen(noopLogger) && Object.isFrozen(noopMetrics) && Object.isFrozen(c));
  });

  it("a recording sink and logger fit the interfaces", () => {
    const lines: string[] = [];
    const logger: Logger = {
      debug: (obj, msg) => lines.push(`debug ${msg} ${JSON.stringify(obj)}`),
      info: (obj, msg) => lines.push(`info ${msg} ${JSON.stringify(obj)}`),
      warn: (obj, msg) => lines.push(`warn ${msg} ${JSON.stringify(obj)}`),
      error: (obj, msg) => lines.push(`error ${msg} ${JSON.stringify(obj)}`),
    };
    const samples = new Map<string, number>();
    const key = (name: string, labels: object | undefined) => `${name}${JSON.stringify(labels ?? {})}`;
    const sink: MetricsSink = {
      counter: (name) => ({
        inc: (labels, value = 1) =>
          samples.set(key(name, labels), (samples.get(key(name, labels)) ?? 0) + value),
      }),
      gauge: (name) => ({
        set: (labels, value) => samples.set(key(name, labels), value),
        inc: (labels, value = 1) =>
          samples.set(key(name, labels), (samples.get(key(name, labels)) ?? 0) + value),
        dec: (labels, value = 1) =>
          samples.set(key(name, labels), (samples.get(key(name, labels)) ?? 0) - value),
      }),
      histogram: (name) => ({ observe: (labels, value) => samples.set(key(name, labels), value) }),
    };
    logger.info({ peer: "spiffe://cluster.local/ns/a/sa/b" }, "tunnel open");
    sink.counter("opened_total", "help").inc({ dir: "in" });
    sink.counter("opened_total", "help").inc({ dir: "in" }, 2);
    sink.gauge("open", "help").inc({});
    sink.gauge("open", "help").dec({});
    assert.deepEqual(lines, ['info tunnel open {"peer":"spiffe://cluster.local/ns/a/sa/b"}']);
    assert.equal(samples.get('opened_total{"dir":"in"}'), 3);
    assert.equal(samples.get("open{}"), 0);
  });
});
