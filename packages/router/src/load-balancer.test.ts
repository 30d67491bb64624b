import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createEndpointPicker, createWeightedPicker } from "./load-balancer.js";

describe("load balancing", () => {
  const eps = ["a", "b", "c"];
  it("round robin rotates and avoids already-tried endpoints", () => {
    const p = createEndpointPicker<string>("round-robin", (e) => e);
    assert.deepEqual([p.pick(eps), p.pick(eps), p.pick(eps), p.pick(eps)], ["a", "b", "c", "a"]);
    for (let i = 0; i < 5; i++) assert.notEqual(p.pick(eps, new Set(["a"])), "a");
    assert.equal(p.pick(["a"], new Set(["a"])), "a");
    assert.equal(p.pick([]), undefined);
  });
  it("least request prefers idle endpoints and rotates among ties", () => {
    const p = createEndpointPicker<string>("least-request", (e) => e);
    const doneA = p.begin("a");
    p.begin("b");
    assert.equal(p.pick(eps), "c");
    assert.equal(p.pick(eps), "c");
    doneA();
    doneA();
    const picks = new Set([p.pick(eps), p.pick(eps), p.pick(eps), p.pick(eps)]);
    assert.deepEqual([...picks].sort(), ["a", "c"]);
  });
  it("weighted picks are exactly proportional and skip weight 0", () => {
    const pick = createWeightedPicker(
      [
        { n: "x", w: 3 },
        { n: "y", w: 1 },
        { n: "z", w: 0 },
      ],
      (i) => i.w,
    );
    const counts: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const n = pick()?.n ?? "none";
      counts[n] = (counts[n] ?? 0) + 1;
    }
    assert.deepEqual(counts, { x: 30, y: 10 });
    assert.equal(createWeightedPicker([{ w: 0 }], (i) => i.w)(), undefined);
  });
});
