import assert from "node:assert/strict";
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { WaypointError } from "./errors.js";
import { startWaypoint, withSocketTimeout } from "./waypoint.js";

describe("withSocketTimeout", () => {
  it("emits timeout after the delay, and setTimeout(0) cancels it", async () => {
    const stream = withSocketTimeout(new PassThrough()) as PassThrough & {
      setTimeout(ms: number, cb?: () => void): unknown;
    };
    // The timer is unref'd like a socket's: hold the loop open while waiting for it.
    const hold = setInterval(() => {}, 1000);
    stream.setTimeout(5);
    await once(stream, "timeout");
    let fired = 0;
    stream.on("timeout", () => fired++);
    stream.setTimeout(5);
    stream.setTimeout(0);
    await new Promise((resolve) => setTimeout(resolve, 30));
    clearInterval(hold);
    assert.equal(fired, 0);
    stream.destroy();
  });
});

describe("startWaypoint options", () => {
  const base = {
    gateway: { name: "waypoint", namespace: "demo" },
    ip: "127.10.0.6",
    nodeName: "node-a",
    token: "t",
    rootCertPem: "-----BEGIN CERTIFICATE-----",
    meshDir: ".",
  };
  const cases: { name: string; patch: Record<string, unknown>; message: RegExp }[] = [
    { name: "not an IPv4 address", patch: { ip: "waypoint" }, message: /ip "waypoint" is not IPv4/ },
    { name: "empty token", patch: { token: "" }, message: /token is empty/ },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      await assert.rejects(startWaypoint({ ...base, ...c.patch }), (err: unknown) => {
        assert.ok(err instanceof WaypointError);
        assert.equal(err.code, "ERR_WAYPOINT_INVALID_OPTION");
        assert.match(err.message, c.message);
        return true;
      });
    });
  }
});
