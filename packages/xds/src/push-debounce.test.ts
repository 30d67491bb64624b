import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { PushDebouncer } from "./push-debounce.js";

// Fake timers move setTimeout and Date together: the order of flushes is asserted, not real time.
describe("PushDebouncer", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  function debouncer(leadingEdge: boolean, windowMs = 100) {
    const flushes: number[] = [];
    const d: PushDebouncer = new PushDebouncer({
      windowMs,
      leadingEdge,
      flush: () => {
        flushes.push(Date.now() - 1_000_000);
        d.flushed(true);
      },
    });
    return { d, flushes };
  }

  it("trailing: every push waits the window from its first change", () => {
    const { d, flushes } = debouncer(false);
    d.changed();
    mock.timers.tick(99);
    assert.deepEqual(flushes, []);
    d.changed();
    mock.timers.tick(1);
    assert.deepEqual(flushes, [100]);
    mock.timers.tick(500);
    d.changed();
    mock.timers.tick(100);
    assert.deepEqual(flushes, [100, 700]);
  });

  it("leading edge: a change after a quiet window goes out on the next turn", () => {
    const { d, flushes } = debouncer(true);
    d.changed();
    d.changed();
    assert.deepEqual(flushes, [], "not inside the turn that made the change");
    mock.timers.tick(0);
    assert.deepEqual(flushes, [0], "one flush for both changes");
    mock.timers.tick(1000);
    d.changed();
    mock.timers.tick(0);
    assert.deepEqual(flushes, [0, 1000]);
  });

  it("leading edge: a burst is merged into one push per window", () => {
    const { d, flushes } = debouncer(true);
    d.changed();
    mock.timers.tick(0);
    // Changes 10, 20, ... 90 ms after that push: held until the window from the last push ends.
    for (let i = 0; i < 9; i++) {
      mock.timers.tick(10);
      d.changed();
    }
    assert.deepEqual(flushes, [0]);
    mock.timers.tick(10);
    assert.deepEqual(flushes, [0, 100]);
    // A steady stream of changes: never more than one push per 100 ms.
    for (let i = 0; i < 50; i++) {
      mock.timers.tick(7);
      d.changed();
    }
    mock.timers.tick(200);
    const gaps = flushes.slice(1).map((t, i) => t - (flushes[i] ?? 0));
    assert.ok(
      gaps.every((g) => g >= 100),
      `gaps ${gaps.join(", ")}`,
    );
    assert.ok(flushes.length <= 2 + Math.ceil(350 / 100) + 1, `flushes ${flushes.join(", ")}`);
  });

  it("a flush by a caller restarts the window, and stop cancels the timer", () => {
    const { d, flushes } = debouncer(true);
    d.flushed(true); // e.g. flushNow() after an on-demand resolver wrote to the cache
    d.changed();
    mock.timers.tick(50);
    assert.deepEqual(flushes, []);
    mock.timers.tick(50);
    assert.deepEqual(flushes, [100]);
    d.changed();
    d.stop();
    mock.timers.tick(1000);
    d.changed();
    mock.timers.tick(1000);
    assert.deepEqual(flushes, [100]);
  });

  it("a flush with nothing pending does not restart the window", () => {
    const { d, flushes } = debouncer(true);
    d.flushed(false);
    d.changed();
    mock.timers.tick(0);
    assert.deepEqual(flushes, [0]);
  });
});
