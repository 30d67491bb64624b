import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { type MemoryRelease, startMemoryRelease } from "./memory-release.js";

const MiB = 1024 * 1024;

/** A process whose ArrayBuffer memory and in-flight responses a test sets; `collect` frees the dead. */
function fakeProcess() {
  const state = { live: 10 * MiB, dead: 0, inFlight: 0, collections: 0 };
  return {
    state,
    collect: () => {
      state.collections++;
      state.dead = 0;
    },
    arrayBuffers: () => state.live + state.dead,
    inFlight: () => state.inFlight,
  };
}

/** Runs `steps` against a release over `p` (checks every second), stopped afterwards. */
function withRelease(
  p: ReturnType<typeof fakeProcess>,
  thresholdBytes: number,
  steps: (release: MemoryRelease) => void,
): void {
  const release = startMemoryRelease({ ...p, thresholdBytes, intervalMs: 1000 });
  try {
    steps(release);
  } finally {
    release.stop();
  }
}

describe("startMemoryRelease", () => {
  beforeEach(() => mock.timers.enable({ apis: ["setInterval"] }));
  afterEach(() => mock.timers.reset());

  it("collects once after a push whose buffers are dead, and not again while nothing grows", () => {
    const p = fakeProcess();
    withRelease(p, 64 * MiB, (release) => {
      // The push: 300 MiB of response copies in flight, then taken by the clients.
      p.state.live += 300 * MiB;
      p.state.inFlight = 300 * MiB;
      mock.timers.tick(1000);
      assert.equal(p.state.collections, 0, "no collection while responses are in flight");
      p.state.live -= 300 * MiB;
      p.state.dead += 300 * MiB;
      p.state.inFlight = 0;
      mock.timers.tick(1000);
      assert.equal(p.state.collections, 1);
      assert.equal(release.collections, 1);
      assert.equal(p.arrayBuffers(), 10 * MiB);
      mock.timers.tick(10_000);
      assert.equal(p.state.collections, 1, "nothing left to give back");
    });
  });

  it("leaves growth under the threshold alone, and takes memory in use as the new level", () => {
    const p = fakeProcess();
    withRelease(p, 64 * MiB, () => {
      p.state.dead += 63 * MiB;
      mock.timers.tick(5000);
      assert.equal(p.state.collections, 0);
      // A larger cache: memory in use, which a collection cannot free. One collection, then none.
      p.state.live += 100 * MiB;
      mock.timers.tick(1000);
      assert.equal(p.state.collections, 1);
      mock.timers.tick(5000);
      assert.equal(p.state.collections, 1);
      // 64 MiB more dead above the new level is collected again.
      p.state.dead += 64 * MiB;
      mock.timers.tick(1000);
      assert.equal(p.state.collections, 2);
    });
  });

  it("collects the other clients' dead copies while one client holds its response", () => {
    const p = fakeProcess();
    withRelease(p, 64 * MiB, () => {
      // 100 copies sent; 99 clients read theirs, one stopped reading with its 3 MiB in flight.
      p.state.live += 3 * MiB;
      p.state.inFlight = 3 * MiB;
      p.state.dead += 297 * MiB;
      mock.timers.tick(1000);
      assert.equal(p.state.collections, 1);
      assert.equal(p.arrayBuffers(), 13 * MiB, "the held response stays");
      mock.timers.tick(5000);
      assert.equal(p.state.collections, 1);
      // The stuck client reads at last: its copy is dead but under the threshold, so it waits.
      p.state.live -= 3 * MiB;
      p.state.dead += 3 * MiB;
      p.state.inFlight = 0;
      mock.timers.tick(5000);
      assert.equal(p.state.collections, 1);
    });
  });

  it("follows a lower level that V8 reached by itself", () => {
    const p = fakeProcess();
    p.state.live = 200 * MiB;
    withRelease(p, 64 * MiB, () => {
      p.state.live = 20 * MiB;
      mock.timers.tick(1000);
      // 70 MiB over the 20 MiB level V8 left, not over the 200 MiB the release started from.
      p.state.dead = 70 * MiB;
      mock.timers.tick(1000);
      assert.equal(p.state.collections, 1);
    });
  });

  it("stops checking once stopped", () => {
    const p = fakeProcess();
    const release = startMemoryRelease({ ...p, thresholdBytes: MiB, intervalMs: 1000 });
    release.stop();
    p.state.dead = 100 * MiB;
    mock.timers.tick(10_000);
    assert.equal(p.state.collections, 0);
  });
});
