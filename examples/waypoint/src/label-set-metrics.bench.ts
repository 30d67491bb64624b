/**
 * CPU per request of the waypoint's four request metric samples (one counter, three histograms under
 * Istio's 25 labels, one frozen label set), through prom-client's own metrics and through
 * `createLabelSetSink`, alternating in one process. Not a test: a number to read beside the proxy bench.
 * Usage: node --import tsx src/label-set-metrics.bench.ts [requests per round, default 200000]
 */
import { ISTIO_REQUEST_LABELS } from "@ambient/router";
import { createPromClientSink, type MetricsSink } from "@ambient/telemetry";
import * as prom from "prom-client";
import { createLabelSetSink } from "./label-set-metrics.js";

const requests = Number(process.argv[2] ?? 200_000);
const labels = Object.freeze(Object.fromEntries(ISTIO_REQUEST_LABELS.map((name) => [name, `${name}-value`])));

function usPerRequest(make: (registry: prom.Registry) => MetricsSink): number {
  const sink = make(new prom.Registry());
  const total = sink.counter("istio_requests_total", "Requests.", ISTIO_REQUEST_LABELS);
  const duration = sink.histogram(
    "istio_request_duration_milliseconds",
    "Duration.",
    ISTIO_REQUEST_LABELS,
    [
      0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
      3600000,
    ],
  );
  const sizes = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000];
  const requestBytes = sink.histogram("istio_request_bytes", "Request bytes.", ISTIO_REQUEST_LABELS, sizes);
  const responseBytes = sink.histogram(
    "istio_response_bytes",
    "Response bytes.",
    ISTIO_REQUEST_LABELS,
    sizes,
  );
  const start = process.cpuUsage();
  for (let i = 0; i < requests; i++) {
    total.inc(labels, 1);
    duration.observe(labels, i % 300);
    requestBytes.observe(labels, 1100);
    responseBytes.observe(labels, 1200);
  }
  const used = process.cpuUsage(start);
  return (used.user + used.system) / requests;
}

const prometheus = (registry: prom.Registry) => createPromClientSink(prom, registry);
const labelSets = (registry: prom.Registry) =>
  createLabelSetSink(registry, createPromClientSink(prom, registry));
for (let round = 1; round <= 3; round++) {
  const a = usPerRequest(prometheus);
  const b = usPerRequest(labelSets);
  console.log(
    `round ${round}: prom-client ${a.toFixed(2)} us/request, label sets ${b.toFixed(2)} us/request (${(b / a).toFixed(3)})`,
  );
}
