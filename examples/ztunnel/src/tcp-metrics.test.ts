import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HboneError } from "@ambient/hbone";
import type { Workload } from "@ambient/xds";
import {
  type ConnectionParties,
  connectionLabels,
  countRefused,
  createTcpMetrics,
  MeteredConnection,
  relayCloseFlag,
  TCP_METRIC_LABELS,
  type TcpMetricLabels,
} from "./tcp-metrics.js";
import type { MetricLabels, MetricsSink } from "./telemetry.js";

const sleep = {
  name: "sleep-7f9",
  workloadName: "sleep",
  canonicalName: "sleep",
  canonicalRevision: "v1",
  clusterId: "Kubernetes",
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
  canonicalRevision: "v2",
  serviceAccount: "echo",
};
const echoService = { name: "echo", namespace: "default", hostname: "echo.default.svc.cluster.local" };
const plain = { ...echo, tunnelProtocol: "NONE" } as Workload;

describe("connectionLabels", () => {
  const cases: [string, ConnectionParties, Partial<TcpMetricLabels>][] = [
    [
      "mesh to mesh via a service",
      {
        reporter: "source",
        source: sleep,
        destination: echo,
        destinationService: echoService,
        mutualTls: true,
      },
      {
        source_workload: "sleep",
        source_canonical_service: "sleep",
        source_canonical_revision: "v1",
        source_app: "sleep",
        source_version: "v1",
        source_cluster: "Kubernetes",
        source_principal: "spiffe://cluster.local/ns/default/sa/sleep",
        destination_principal: "spiffe://cluster.local/ns/default/sa/echo",
        destination_service: "echo.default.svc.cluster.local",
        destination_service_name: "echo",
        destination_service_namespace: "default",
        destination_canonical_revision: "v2",
        destination_version: "v2",
        destination_app: "echo",
        request_protocol: "tcp",
        response_flags: "-",
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
        source_app: "unknown",
        source_cluster: "unknown",
        source_principal: "spiffe://td/ns/a/sa/b",
        destination_service: "unknown",
        destination_service_name: "unknown",
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
      // Only mutual TLS proves who the source is: a plaintext connection names no source principal,
      // whether the proxy reports it as the source or as the destination, even when the source's
      // address belongs to a mesh workload.
      "plaintext outbound names no source principal",
      { reporter: "source", source: sleep, destination: plain, mutualTls: false },
      { source_workload: "sleep", source_principal: "unknown", connection_security_policy: "unknown" },
    ],
    [
      "plaintext inbound from a mesh workload's address names no source principal",
      { reporter: "destination", source: sleep, destination: echo, mutualTls: false },
      {
        source_workload: "sleep",
        source_workload_namespace: "default",
        source_principal: "unknown",
        destination_principal: "spiffe://cluster.local/ns/default/sa/echo",
        connection_security_policy: "unknown",
      },
    ],
    [
      "mutual TLS outbound names the proxy's own source identity",
      { reporter: "source", source: sleep, destination: echo, mutualTls: true },
      { source_principal: "spiffe://cluster.local/ns/default/sa/sleep" },
    ],
    [
      // A destination workload is labelled with its identity whether or not the connection to it is
      // mutual TLS (queries pick a backend by `destination_principal`); `connection_security_policy`
      // says whether that identity was proved.
      "a workload outside the mesh is named by its identity over plain TCP too",
      { reporter: "source", source: sleep, destination: plain, mutualTls: false },
      {
        destination_workload: "echo",
        destination_principal: "spiffe://cluster.local/ns/default/sa/echo",
        connection_security_policy: "unknown",
      },
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
    destinationService: echoService,
    mutualTls: true,
  };

  it("gives connections between the same parties one frozen label set", () => {
    const a = connectionLabels(parties);
    assert.equal(connectionLabels({ ...parties }), a);
    assert.ok(Object.isFrozen(a));
  });

  it("makes new labels when a party differs or a workload was replaced by an update", () => {
    const a = connectionLabels(parties);
    const otherService = connectionLabels({
      ...parties,
      destinationService: { ...echoService, name: "echo-v2", hostname: "echo-v2.default.svc.cluster.local" },
    });
    assert.notEqual(otherService, a);
    assert.equal(otherService.destination_service, "echo-v2.default.svc.cluster.local");
    assert.equal(otherService.destination_service_name, "echo-v2");
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
  it("counts opens, bytes (never negative) and closes, a refusal under its flag", () => {
    const seen: [string, MetricLabels | undefined, number | undefined][] = [];
    const sink: MetricsSink = {
      counter: (name) => ({ inc: (labels, value) => seen.push([name, labels, value]) }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const m = createTcpMetrics(sink);
    const labels = connectionLabels({
      reporter: "source",
      source: sleep,
      destination: echo,
      mutualTls: true,
    });
    m.opened(labels);
    m.bytes(labels, 5, -1);
    m.closed(labels);
    countRefused(m, labels, "DENY");
    assert.deepEqual(
      seen.map(([n, l, v]) => `${n}=${v ?? 1} ${l?.response_flags}`),
      [
        "istio_tcp_connections_opened_total=1 -",
        "istio_tcp_sent_bytes_total=5 -",
        "istio_tcp_received_bytes_total=0 -",
        "istio_tcp_connections_closed_total=1 -",
        "istio_tcp_connections_opened_total=1 -",
        "istio_tcp_connections_closed_total=1 DENY",
      ],
    );
    for (const [, l] of seen) assert.deepEqual(Object.keys(l ?? {}), [...TCP_METRIC_LABELS]);
  });

  it("reports an open connection's bytes as they grow, and the rest at its close", () => {
    const seen: string[] = [];
    const sink: MetricsSink = {
      counter: (name) => ({ inc: (_labels, value) => seen.push(`${name}=${value ?? 1}`) }),
      gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
      histogram: () => ({ observe: () => {} }),
    };
    const labels = connectionLabels({
      reporter: "source",
      source: sleep,
      destination: echo,
      mutualTls: true,
    });
    const totals = { sent: 0, received: 0 };
    const c = new (class extends MeteredConnection {
      sentBytes = () => totals.sent;
      receivedBytes = () => totals.received;
    })(labels, createTcpMetrics(sink));
    c.reportBytes();
    assert.deepEqual(seen, [], "nothing moved: nothing reported");
    totals.received = 10;
    totals.sent = 4;
    c.reportBytes();
    totals.received = 15;
    c.reportBytes();
    c.reportClosed();
    assert.deepEqual(seen, [
      "istio_tcp_sent_bytes_total=4",
      "istio_tcp_received_bytes_total=10",
      "istio_tcp_sent_bytes_total=0",
      "istio_tcp_received_bytes_total=5",
      "istio_tcp_sent_bytes_total=0",
      "istio_tcp_received_bytes_total=0",
      "istio_tcp_connections_closed_total=1",
    ]);
  });
});

describe("relayCloseFlag", () => {
  const errno = (code: string) => Object.assign(new Error(code), { code });
  const reset = (rstCode: number) => new HboneError("ERR_HBONE_RESET", `reset ${rstCode}`, { rstCode });
  const mapped = (nodeCode: string) =>
    new HboneError("ERR_HBONE_CONNECTION", `tunnel copy: ${nodeCode}`, { nodeCode });
  const goaway = (goawayCode: number) =>
    new HboneError("ERR_HBONE_CONNECTION", `the peer closed the connection (GOAWAY ${goawayCode})`, {
      goawayCode,
    });

  it("counts the ends of a connection either side may cause as a normal close", () => {
    for (const [what, err] of [
      ["no error", undefined],
      ["a reset by either side", mapped("ECONNRESET")],
      ["a write to a closed peer", mapped("EPIPE")],
      ["a socket no longer connected", errno("ENOTCONN")],
      ["a close before both directions ended", mapped("ERR_STREAM_PREMATURE_CLOSE")],
      ["a stream reset with NO_ERROR", reset(0x0)],
      ["a stream reset with STREAM_CLOSED", reset(0x5)],
      ["a stream reset with CANCEL", reset(0x8)],
      ["the HTTP/2 connection closed under the tunnel", new HboneError("ERR_HBONE_CONNECTION", "closed")],
      ["the HTTP/2 connection closed after a GOAWAY with NO_ERROR", goaway(0x0)],
    ] as const) {
      assert.equal(relayCloseFlag(err), "-", what);
    }
  });

  it("counts a relay that failed under CONNECT", () => {
    for (const [what, err] of [
      ["a stream reset with INTERNAL_ERROR", reset(0x2)],
      ["a stream reset with PROTOCOL_ERROR", reset(0x1)],
      ["a timed-out socket", errno("ETIMEDOUT")],
      ["a timed-out socket, mapped", new HboneError("ERR_HBONE_TIMEOUT", "t", { nodeCode: "ETIMEDOUT" })],
      ["an unreachable host", mapped("EHOSTUNREACH")],
      ["an HTTP/2 protocol error", new HboneError("ERR_HBONE_PROTOCOL", "HTTP/2 PROTOCOL_ERROR")],
      ["the HTTP/2 connection ended by a GOAWAY with PROTOCOL_ERROR", goaway(0x1)],
      ["the HTTP/2 connection ended by a GOAWAY with INTERNAL_ERROR", goaway(0x2)],
      [
        "a TLS failure",
        new HboneError("ERR_HBONE_TLS", "bad record mac", { nodeCode: "ERR_SSL_BAD_RECORD_MAC" }),
      ],
      ["an error of no known kind", new Error("something else")],
    ] as const) {
      assert.equal(relayCloseFlag(err), "CONNECT", what);
    }
  });

  it("leaves the flag a connection was already given (a late DENY) as it is", () => {
    const closes: string[] = [];
    const metrics = {
      opened() {},
      bytes() {},
      closed: (_l: TcpMetricLabels, flag = "-") => closes.push(flag),
    };
    const labels = connectionLabels({
      reporter: "source",
      source: sleep,
      destination: echo,
      mutualTls: true,
    });
    const connection = () =>
      new (class extends MeteredConnection {
        sentBytes = () => 0;
        receivedBytes = () => 0;
      })(labels, metrics);
    connection().reportClosed(errno("ETIMEDOUT"));
    connection().reportClosed(errno("ECONNRESET"));
    const denied = connection();
    denied.closeFlag = "DENY";
    denied.reportClosed(errno("ETIMEDOUT"));
    assert.deepEqual(closes, ["CONNECT", "-", "DENY"]);
  });
});
