import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SentVersions, versionsOf } from "./sent-versions.js";

const mapOf = (n: number, version = "v1", prefix = "r") =>
  new Map(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, version] as const));

/** Small deterministic generator, so a failing sequence can be replayed. */
function random(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

function assertSame(
  record: SentVersions,
  model: Map<string, string>,
  names: readonly string[],
  at: string,
): void {
  assert.equal(record.size, model.size, `${at}: size`);
  assert.deepEqual([...record.keys()].sort(), [...model.keys()].sort(), `${at}: keys`);
  for (const name of names) {
    assert.equal(record.get(name), model.get(name), `${at}: get ${name}`);
    assert.equal(record.has(name), model.has(name), `${at}: has ${name}`);
  }
}

describe("SentVersions", () => {
  it("behaves as a Map before it shares anything, in the Map's key order", () => {
    const record = new SentVersions();
    record.set("b", "1").set("a", "2").set("b", "3");
    assert.equal(record.size, 2);
    assert.deepEqual([...record.keys()], ["b", "a"]);
    assert.equal(record.get("b"), "3");
    assert.equal(record.delete("b"), true);
    assert.equal(record.delete("b"), false);
    assert.equal(record.has("b"), false);
    assert.equal(record.ownEntries, 1);
  });

  it("shares a base: a fresh record owns nothing, and changes stay in its overlay", () => {
    const base = mapOf(1000);
    const one = new SentVersions();
    const two = new SentVersions();
    one.setAll(base);
    two.setAll(base);
    assert.equal(one.size, 1000);
    assert.equal(one.ownEntries, 0);
    assert.equal(two.ownEntries, 0);
    // One stream receives a change, is told of a removal and subscribes to a new name; the other does not.
    one.set("r1", "v2");
    assert.equal(one.delete("r2"), true);
    one.set("extra", "v1");
    assert.equal(one.ownEntries, 3);
    assert.equal(one.size, 1000);
    assert.equal(one.get("r1"), "v2");
    assert.equal(one.has("r2"), false);
    assert.equal(two.get("r1"), "v1");
    assert.equal(two.has("r2"), true);
    assert.equal(two.has("extra"), false);
    assert.equal(base.get("r1"), "v1", "the shared base is never written");
    assert.equal(base.size, 1000);
    // Setting a base name back to the base's version drops the overlay entry.
    one.set("r1", "v1");
    one.set("r2", "v1");
    assert.equal(one.ownEntries, 1);
  });

  it("keeps names outside a newly recorded list, and the list's versions win", () => {
    const record = new SentVersions();
    record.set("old", "x").set("r3", "stale");
    record.setAll(mapOf(10));
    assert.equal(record.size, 11);
    assert.equal(record.get("old"), "x");
    assert.equal(record.get("r3"), "v1");
    assert.equal(record.ownEntries, 1);
  });

  it("moves onto the latest shared versions when its overlay grows, if that leaves little of its own", () => {
    // The cache during a rollout: every resource changes in turn, and the shared versions of its
    // current state are built when asked for, once per state.
    const cache = mapOf(2000, "v1");
    let snapshot: ReadonlyMap<string, string> | undefined;
    let built = 0;
    const latest = () => {
      if (snapshot === undefined) {
        snapshot = new Map(cache);
        built++;
      }
      return snapshot;
    };
    const record = new SentVersions(latest, 16);
    record.setAll(latest());
    for (let i = 0; i < 2000; i++) {
      cache.set(`r${i}`, "v2");
      snapshot = undefined;
      record.set(`r${i}`, "v2");
      assert.ok(record.ownEntries <= 250, `overlay ${record.ownEntries} after ${i + 1} changes`);
    }
    assert.equal(record.size, 2000);
    assert.equal(record.get("r1999"), "v2");
    assert.equal(record.get("r0"), "v2");
    assert.ok(built >= 8 && built <= 10, `moved ${built - 1} times`);
  });

  it("copies itself into a map of its own when the latest versions are too far from what it holds", () => {
    const record = new SentVersions(() => mapOf(2000, "other"), 16);
    record.setAll(mapOf(2000));
    for (let i = 0; i < 400; i++) record.delete(`r${i}`);
    assert.equal(record.size, 1600);
    assert.equal(record.ownEntries, 1600, "unshared: every entry is its own");
    assert.equal(record.has("r0"), false);
    assert.equal(record.get("r400"), "v1");
  });

  it("agrees with a Map under random operations, bases and compactions", () => {
    const names = Array.from({ length: 60 }, (_, i) => `n${i}`);
    const versions = ["a", "b", "c"];
    for (let seed = 1; seed <= 40; seed++) {
      const pick = random(seed);
      const bases = Array.from({ length: 3 }, () => {
        const m = new Map<string, string>();
        for (const name of names) if (pick(3) > 0) m.set(name, versions[pick(3)] as string);
        return m;
      });
      let latest: Map<string, string> | undefined;
      const record = new SentVersions(() => latest, 4);
      const model = new Map<string, string>();
      for (let step = 0; step < 300; step++) {
        const name = names[pick(names.length)] as string;
        const op = pick(20);
        const at = `seed ${seed} step ${step}`;
        if (op < 8) {
          const version = versions[pick(3)] as string;
          record.set(name, version);
          model.set(name, version);
        } else if (op < 15) {
          assert.equal(record.delete(name), model.delete(name), `${at}: delete ${name}`);
        } else if (op < 17) {
          const base = bases[pick(3)] as Map<string, string>;
          record.setAll(base);
          for (const [n, v] of base) model.set(n, v);
        } else if (op < 19) {
          // Another list, or the state this record is in (as the cache's is for a stream in step).
          latest = pick(2) === 0 ? bases[pick(3)] : new Map(model);
        } else {
          // The keys a first request walks, removing while it goes.
          for (const n of [...record.keys()]) {
            if (pick(2) === 0) assert.equal(record.delete(n), model.delete(n), `${at}: delete walked ${n}`);
          }
        }
        assertSame(record, model, names, at);
      }
    }
  });

  it("builds one versions map per list", () => {
    const list = Object.freeze([
      { name: "a", version: "1" },
      { name: "b", version: "2" },
    ]);
    assert.equal(versionsOf(list), versionsOf(list));
    assert.deepEqual(
      [...versionsOf(list)],
      [
        ["a", "1"],
        ["b", "2"],
      ],
    );
  });
});
