import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import {
  type ConnectionParties,
  connectionLabels,
  createTcpMetrics,
  type TcpMetricLabels,
} from "./tcp-metrics.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

const sleep = {
  name: "sleep-7f9",
  workloadName: "sleep",
  canonicalName: "sleep",
  namespace: "default",
  trustDomain: "",
  serviceAccount: "sleep",
  tunnelProtocol: "HBONE",
} as Workload;
const echo = {
  ...sleep,
  name: "echo-1",
  workloadName: "echo",
  canonicalName: "echo",
  serviceAccount: "echo",
};
const plain = { ...echo, tunnelProtocol: "NONE" } as Workload;

describe("connectionLabels", () => {
  const cases: [string, ConnectionParties, Partial<TcpMetricLabels>][] = [
    [
      "mesh to mesh via a service",
      {
        reporter: "source",
        source: sleep,
        destination: echo,
        destinationService: "echo.default.svc",
        mutualTls: true,
      },
      {
        source_workload: "sleep",
        source_principal: "spiffe://cluster.local/ns/default/sa/sleep",
        destination_principal: "spiffe://cluster.local/ns/default/sa/echo",
        destination_service: "echo.default.svc",
        connection_security_policy: "mutual_tls",
      },
    ],
    [
      "unknown source with a verified peer",
      {
        reporter: "destination",
        source: undefined,
        sourcePrincipal: "spiffe://td/ns/a/sa/b",
        destination: echo,
        mutualTls: true,
      },
      {
        source_workload: "unknown",
        source_workload_namespace: "unknown",
        source_principal: "spiffe://td/ns/a/sa/b",
      },
    ],
    [
      "passthrough",
      { reporter: "source", source: sleep, destination: undefined, mutualTls: false },
      {
        destination_workload: "unknown",
        destination_principal: "unknown",
        connection_security_policy: "unknown",
      },
    ],
    [
      "non-mesh workload has no principal",
      { reporter: "source", source: sleep, destination: plain, mutualTls: false },
      { destination_workload: "echo", destination_principal: "unknown" },
    ],
  ];
  for (const [name, parties, want] of cases) {
    it(name, () => {
      const labels = connectionLabels(parties);
      assert.equal(labels.reporter, parties.reporter);
      for (const [k, v] of Object.entries(want)) assert.equal(labels[k as keyof TcpMetricLabels], v, k);
    });
  }
});

describe("connectionLabels sharing", () => {
  const parties: ConnectionParties = {
    reporter: "source",
    source: sleep,
    destination: echo,
    destinationService: "echo.default.svc",
    mutualTls: true,
  };

  it("gives connections between the same parties one frozen label set", () => {
    const a = connectionLabels(parties);
    assert.equal(connectionLabels({ ...parties }), a);
    assert.ok(Object.isFrozen(a));
  });

  it("makes new labels when a party differs or a workload was replaced by an update", () => {
    const a = connectionLabels(parties);
    const otherService = connectionLabels({ ...parties, destinationService: "echo-v2.default.svc" });
    assert.notEqual(otherService, a);
    assert.equal(otherService.destination_service, "echo-v2.default.svc");
    assert.notEqual(connectionLabels({ ...parties, mutualTls: false }), a);
    assert.notEqual(connectionLabels({ ...parties, reporter: "destination" }), a);
    assert.equal(
      connectionLabels({ ...parties, sourcePrincipal: "spiffe://x/ns/a/sa/b" }).source_principal,
      "spiffe://x/ns/a/sa/b",
    );
    // The control plane replaces a workload object when it changes: the new one is labelled anew.
    const renamed = { ...echo, workloadName: "echo-next" } as Workload;
    const next = connectionLabels({ ...parties, destination: renamed });
    assert.equal(next.destination_workload, "echo-next");
    assert.equal(connectionLabels(parties).destination_workload, "echo");
    // Absent parties are labelled unknown, and shared too.
    const anonymous = connectionLabels({
      reporter: "destination",
      source: undefined,
      destination: echo,
      mutualTls: true,
    });
    assert.equal(anonymous.source_workload, "unknown");
    assert.equal(
      connectionLabels({ reporter: "destination", source: undefined, destination: echo, mutualTls: true }),
      anonymous,
    );
  });
});

describe("createTcpMetrics", () => {
  it("counts opens, closes and bytes (never negative)", () => {
    const seen: [string, MetricLabels | undefined, number | undefined][] = [];
    const sink: MetricsSink = {
      counter: (name) => ({ inc: (labels, value) => seen.push([name, labels, value]) }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const m = createTcpMetrics(sink);
    m.opened({ reporter: "source" });
    m.closed({ reporter: "source" }, { sent: 5, received: -1 });
    assert.deepEqual(
      seen.map(([n, , v]) => `${n}=${v ?? 1}`),
      [
        "istio_tcp_connections_opened_total=1",
        "istio_tcp_connections_closed_total=1",
        "istio_tcp_sent_bytes_total=5",
        "istio_tcp_received_bytes_total=0",
      ],
    );
  });
});
