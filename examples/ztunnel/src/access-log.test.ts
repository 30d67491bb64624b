import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { accessLogRecord, startAccessLog } from "./access-log.js";

describe("accessLogRecord", () => {
  it("leaves out what is unknown, as ztunnel does, and formats the duration in ms", () => {
    assert.deepEqual(
      accessLogRecord(
        { direction: "outbound", srcAddr: "10.0.0.1:40000", dstAddr: "1.1.1.1:443", destination: undefined },
        { sent: 10, received: 20, durationMs: 3.4 },
      ),
      {
        "src.addr": "10.0.0.1:40000",
        "dst.addr": "1.1.1.1:443",
        direction: "outbound",
        bytes_sent: 10,
        bytes_recv: 20,
        duration: "3ms",
      },
    );
  });
});

describe("accessLogRecord fields", () => {
  it("names both parties' clusters, in ztunnel's order of keys", () => {
    const pod = (name: string, clusterId: string) =>
      ({ name, namespace: "default", canonicalName: name, clusterId }) as Workload;
    const record = accessLogRecord(
      {
        direction: "outbound",
        srcAddr: "10.0.0.1:40000",
        source: pod("sleep-1", "Kubernetes"),
        srcIdentity: "spiffe://cluster.local/ns/default/sa/sleep",
        dstAddr: "10.0.0.2:15008",
        hboneAddr: "10.0.0.2:8080",
        destination: pod("echo-1", "west"),
        destinationService: "echo.default.svc.cluster.local",
        dstIdentity: "spiffe://cluster.local/ns/default/sa/echo",
      },
      { sent: 1, received: 2, durationMs: 5, error: "reset" },
    );
    assert.deepEqual(Object.entries(record), [
      ["src.addr", "10.0.0.1:40000"],
      ["src.workload", "sleep-1"],
      ["src.namespace", "default"],
      ["src.identity", "spiffe://cluster.local/ns/default/sa/sleep"],
      ["src.cluster", "Kubernetes"],
      ["dst.addr", "10.0.0.2:15008"],
      ["dst.hbone_addr", "10.0.0.2:8080"],
      ["dst.service", "echo.default.svc.cluster.local"],
      ["dst.workload", "echo-1"],
      ["dst.namespace", "default"],
      ["dst.identity", "spiffe://cluster.local/ns/default/sa/echo"],
      ["dst.cluster", "west"],
      ["direction", "outbound"],
      ["bytes_sent", 1],
      ["bytes_recv", 2],
      ["duration", "5ms"],
      ["error", "reset"],
    ]);
    // A workload without a cluster id names none.
    const bare = accessLogRecord(
      {
        direction: "inbound",
        srcAddr: "a:1",
        source: pod("x", ""),
        dstAddr: "b:2",
        destination: pod("y", ""),
      },
      { sent: 0, received: 0, durationMs: 0 },
    );
    assert.equal("src.cluster" in bare, false);
    assert.equal("dst.cluster" in bare, false);
  });
});

describe("startAccessLog", () => {
  it("writes one line: info when clean, error with the error otherwise", () => {
    const lines: { level: string; fields: object; msg?: string }[] = [];
    const logger = {
      debug: () => {},
      info: (fields: object, msg?: string) => lines.push({ level: "info", fields, msg }),
      warn: () => {},
      error: (fields: object, msg?: string) => lines.push({ level: "error", fields, msg }),
    };
    let t = 100;
    const parties = { direction: "inbound" as const, srcAddr: "a:1", dstAddr: "b:15008" };
    const ok = startAccessLog(logger, parties, () => t);
    t = 142;
    ok.complete({ sent: 1, received: 2 });
    ok.complete({ sent: 9, received: 9, error: "again" });
    const bad = startAccessLog(logger, parties, () => t);
    bad.complete({ sent: 0, received: 0, error: "refused" });
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, (l.fields as Record<string, unknown>).duration]),
      [
        ["info", "connection complete", "42ms"],
        ["error", "connection complete", "0ms"],
      ],
    );
    assert.equal((lines[1]?.fields as Record<string, unknown>).error, "refused");
  });
});
