import assert from "node:assert/strict";
import { describe, it } from "node:test";
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
