import assert from "node:assert/strict";
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { withSocketMethods } from "./upstream.js";

type SocketLike = PassThrough & { setTimeout(ms: number, callback?: () => void): unknown };

describe("withSocketMethods", () => {
  it("gives a tunnel stream a setTimeout that fires, and that 0 cancels", async () => {
    const stream = withSocketMethods(new PassThrough()) as SocketLike;
    // The timer is unref'd like a socket's: hold the event loop open while waiting for it.
    const hold = setInterval(() => {}, 1000);
    try {
      stream.setTimeout(5);
      await once(stream, "timeout");
      let fired = 0;
      stream.setTimeout(5, () => fired++);
      stream.setTimeout(0);
      await new Promise((resolve) => setTimeout(resolve, 30));
      assert.equal(fired, 0);
    } finally {
      clearInterval(hold);
      stream.destroy();
    }
  });

  it("keeps a stream's own socket methods", () => {
    const own = () => "own";
    const stream = new PassThrough() as PassThrough & Record<string, unknown>;
    stream.setTimeout = own;
    withSocketMethods(stream);
    assert.equal(stream.setTimeout, own);
    assert.equal(typeof stream.setKeepAlive, "function");
    stream.destroy();
  });
});
