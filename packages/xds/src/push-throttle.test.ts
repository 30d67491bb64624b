import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { PushThrottle } from "./push-throttle.js";

// Fake timers move setTimeout and Date together: stalls are asserted in steps of the fake clock.
describe("PushThrottle", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  function throttle(maxBytes = 100, stalledMs = 5000) {
    const admitted: string[] = [];
    const waits: number[] = [];
    let onAdmit: (stream: string) => boolean | undefined = () => false;
    const t = new PushThrottle<string>({
      maxBytes,
      stalledMs,
      now: () => Date.now(),
      waited: (ms) => waits.push(ms),
      admit: (stream) => {
        admitted.push(stream);
        return onAdmit(stream) === true;
      },
    });
    const setOnAdmit = (fn: (stream: string) => boolean | undefined): void => {
      onAdmit = fn;
    };
    return { t, admitted, waits, setOnAdmit };
  }

  it("lets streams write below the bound and queues them at it, letting them through in order", () => {
    const { t, admitted } = throttle();
    assert.equal(t.mayWrite("a"), true);
    const a = t.sent(60);
    assert.equal(t.mayWrite("b"), true);
    // A response goes out whole: the total passes the bound by it.
    const b = t.sent(70);
    assert.equal(t.bytes, 130);
    for (const s of ["c", "d", "c", "e"]) assert.equal(t.mayWrite(s), false);
    assert.equal(t.waiting, 3, "a stream waits once");
    t.taken(a);
    // 70 < 100: one turn is given, and the first in line writes, filling the bound again.
    assert.deepEqual(admitted, ["c", "d", "e"]);
    assert.equal(t.waiting, 0);
    assert.equal(t.peakBytes, 130);
    t.taken(b);
    t.taken(b);
    assert.equal(t.bytes, 0, "taken twice counts once");
  });

  it("stops at the bound while letting streams through, and sends a refused stream to the back", () => {
    const { t, admitted, setOnAdmit } = throttle();
    const first = t.sent(150);
    for (const s of ["a", "b", "c"]) assert.equal(t.mayWrite(s), false);
    // "a" writes a large response on its turn; "b" is refused again inside its turn.
    setOnAdmit((s) => {
      if (s === "a") t.sent(120);
      if (s === "b") assert.equal(t.mayWrite("b"), false);
      return false;
    });
    t.taken(first);
    assert.deepEqual(admitted, ["a"]);
    assert.equal(t.waiting, 2);
    assert.equal(t.mayWrite("a"), false);
    assert.equal(t.waiting, 3);
  });

  it("gives one turn at a time to streams that take it later", async () => {
    const { t, admitted, setOnAdmit } = throttle();
    const first = t.sent(100);
    for (const s of ["a", "b", "c"]) t.mayWrite(s);
    // "a" and "b" answer a request later; "c" would write at once.
    setOnAdmit((s) => s !== "c");
    t.taken(first);
    assert.deepEqual(admitted, ["a"]);
    assert.equal(t.mayWrite("b"), false, "not while a holds the turn");
    assert.equal(t.mayWrite("a"), true);
    t.sent(10);
    assert.deepEqual(admitted, ["a"], "the next turn waits for a's write");
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(admitted, ["a", "b"]);
    // A holder that ends without writing passes the turn on.
    t.forget("b");
    assert.deepEqual(admitted, ["a", "b", "c"]);
    assert.equal(t.waiting, 0);
  });

  it("stops counting a response its client has not taken within stalledMs", () => {
    const { t, admitted } = throttle(100, 5000);
    const stuck = t.sent(200);
    mock.timers.tick(1000);
    assert.equal(t.mayWrite("a"), false);
    mock.timers.tick(3999);
    assert.deepEqual(admitted, []);
    mock.timers.tick(1);
    assert.deepEqual(admitted, ["a"]);
    assert.equal(t.bytes, 0);
    // Taken late: nothing more to subtract.
    t.taken(stuck);
    assert.equal(t.bytes, 0);
  });

  it("waits for each stalled response in turn", () => {
    const { t, admitted } = throttle(100, 5000);
    t.sent(150);
    mock.timers.tick(2000);
    t.sent(150);
    assert.equal(t.mayWrite("a"), false);
    mock.timers.tick(3000);
    assert.deepEqual(admitted, [], "the second response still counts");
    assert.equal(t.bytes, 150);
    mock.timers.tick(2000);
    assert.deepEqual(admitted, ["a"]);
    assert.equal(t.bytes, 0);
  });

  it("reports how long each stream waited, from its first refusal", () => {
    const { t, waits } = throttle();
    const r = t.sent(100);
    t.mayWrite("a");
    mock.timers.tick(100);
    t.mayWrite("b");
    t.mayWrite("a");
    mock.timers.tick(150);
    t.taken(r);
    assert.deepEqual(waits, [250, 150]);
  });

  it("stops counting stalled responses when no stream waits", () => {
    const { t } = throttle(1000, 5000);
    t.sent(10);
    t.sent(20);
    mock.timers.tick(5000);
    t.sent(30);
    assert.equal(t.bytes, 30);
  });

  it("forgets a stream that ended while it waited", () => {
    const { t, admitted } = throttle();
    const r = t.sent(100);
    t.mayWrite("a");
    t.mayWrite("b");
    t.forget("a");
    t.taken(r);
    assert.deepEqual(admitted, ["b"]);
  });

  it("close empties the queue and stops the stall timer", () => {
    const { t, admitted } = throttle();
    t.sent(100);
    t.mayWrite("a");
    t.close();
    mock.timers.tick(10_000);
    assert.deepEqual(admitted, []);
    assert.equal(t.waiting, 0);
  });
});
