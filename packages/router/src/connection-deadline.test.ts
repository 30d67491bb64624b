import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ConnectionDeadline } from "./connection-deadline.js";

describe("ConnectionDeadline", () => {
  it("never expires with a request in flight, and starts over from the end of each request", async () => {
    let expired = 0;
    const deadline = new ConnectionDeadline(200, () => expired++);
    try {
      deadline.begin();
      await sleep(300); // past the first deadline, with the request in flight
      assert.equal(expired, 0);
      deadline.end();
      await sleep(100); // half of the deadline since that end
      assert.equal(expired, 0);
      deadline.begin();
      deadline.end(); // a second request: the deadline counts from here
      await sleep(150); // 250 ms after the first end, 150 after the second
      assert.equal(expired, 0);
      await sleep(150);
      assert.equal(expired, 1);
    } finally {
      deadline.stop();
    }
  });

  it("counts overlapping requests (HTTP/2 streams) and never fires once stopped", async () => {
    let expired = 0;
    const deadline = new ConnectionDeadline(100, () => expired++);
    deadline.begin();
    deadline.begin();
    deadline.end();
    await sleep(150);
    assert.equal(expired, 0);
    deadline.end();
    deadline.stop();
    await sleep(150);
    assert.equal(expired, 0);
  });
});
