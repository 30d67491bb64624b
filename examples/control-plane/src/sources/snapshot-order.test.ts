import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type OrderKey, SnapshotOrder } from "./snapshot-order.js";

const key = (rank: number, created: string, id: string): OrderKey => ({ rank, created, id });
const ids = (keys: readonly OrderKey[], order: readonly number[]) => order.map((i) => keys[i]?.id);
/** What the order must be: a fresh sort of the keys themselves. */
const fresh = (keys: readonly OrderKey[]) =>
  [...keys]
    .sort((a, b) => a.rank - b.rank || a.created.localeCompare(b.created) || a.id.localeCompare(b.id))
    .map((k) => k.id);

describe("SnapshotOrder", () => {
  it("orders by kind, then older first, then by name", () => {
    const keys = [
      key(3, "2026-12-02T00:00:00Z", "Pod/demo/b"),
      key(2, "2026-12-03T00:00:00Z", "Service/demo/s"),
      key(3, "2026-12-01T00:00:00Z", "Pod/demo/z"),
      key(3, "2026-12-02T00:00:00Z", "Pod/demo/a"),
      key(3, "", "Pod/demo/no-time"),
    ];
    const order = new SnapshotOrder().sort(keys);
    assert.deepEqual(ids(keys, order), [
      "Service/demo/s",
      "Pod/demo/no-time",
      "Pod/demo/z",
      "Pod/demo/a",
      "Pod/demo/b",
    ]);
  });

  it("reuses the last order for the same keys and sorts again when any key, or the count, changes", () => {
    const sorter = new SnapshotOrder();
    const walk = (n: number, created: (i: number) => string) =>
      Array.from({ length: n }, (_, i) => key(i % 3, created(i), `Pod/ns/p-${(i * 7) % n}`));
    const first = walk(50, () => "2026-12-01T00:00:00Z");
    const order = sorter.sort(first);
    assert.deepEqual(ids(first, order), fresh(first));
    // New key objects with equal keys (a status update): the same order, not sorted again.
    const again = walk(50, () => "2026-12-01T00:00:00Z");
    assert.equal(sorter.sort(again), order);
    // One creation time changed (a pod replaced under the same name): sorted again.
    const replaced = walk(50, (i) => (i === 10 ? "2026-11-30T00:00:00Z" : "2026-12-01T00:00:00Z"));
    assert.deepEqual(ids(replaced, sorter.sort(replaced)), fresh(replaced));
    assert.notDeepEqual(ids(replaced, sorter.sort(replaced)), ids(first, order));
    // An object added, then one removed.
    const added = [...replaced, key(0, "2026-01-01T00:00:00Z", "Pod/ns/old")];
    assert.deepEqual(ids(added, sorter.sort(added)), fresh(added));
    const removed = added.slice(1);
    assert.deepEqual(ids(removed, sorter.sort(removed)), fresh(removed));
  });

  it("compares with the keys as they were, not with the key objects it was given", () => {
    const sorter = new SnapshotOrder();
    const keys = [key(3, "", "Pod/ns/b"), key(3, "", "Pod/ns/a")];
    assert.deepEqual(ids(keys, sorter.sort(keys)), ["Pod/ns/a", "Pod/ns/b"]);
    // The same key objects, one edited in place: that is a change of key, so they are sorted again.
    (keys[1] as { created: string }).created = "2026-12-01T00:00:00Z";
    assert.deepEqual(ids(keys, sorter.sort(keys)), ["Pod/ns/b", "Pod/ns/a"]);
  });
});
