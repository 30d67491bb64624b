import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { XdsError } from "./errors.js";
import { type CacheChange, ResourceCache } from "./resource-cache.js";
import { TypeUrl, typeRegistry } from "./type-registry.js";

const workload = (uid: string, name: string) => ({ workload: { uid, name, namespace: "ns" } });

describe("ResourceCache", () => {
  it("stores, versions and decodes resources; identical content is a no-op", () => {
    const cache = new ResourceCache();
    const changes: CacheChange[] = [];
    cache.onChange((c) => changes.push(c));
    cache.set(TypeUrl.address, "u1", workload("u1", "a"));
    const v1 = cache.entry(TypeUrl.address, "u1")?.version;
    assert.equal(cache.version(TypeUrl.address), "1");
    cache.set(TypeUrl.address, "u1", workload("u1", "a"));
    assert.equal(changes.length, 1);
    assert.equal(cache.entry(TypeUrl.address, "u1")?.version, v1);
    cache.set(TypeUrl.address, "u1", workload("u1", "b"));
    assert.notEqual(cache.entry(TypeUrl.address, "u1")?.version, v1);
    assert.equal(cache.get(TypeUrl.address, "u1")?.workload?.name, "b");
    assert.equal(cache.version(TypeUrl.address), "2");
    assert.equal(cache.version(TypeUrl.authorization), "0");
    const stats = cache.stats();
    assert.equal(stats.encodes, 3);
    assert.ok(stats.encodedBytes > 0);
  });

  it("resolves aliases and drops them with the resource", () => {
    const cache = new ResourceCache();
    cache.set(TypeUrl.address, "u1", workload("u1", "a"), { aliases: ["net/10.0.0.1"] });
    assert.equal(cache.resolveName(TypeUrl.address, "net/10.0.0.1"), "u1");
    assert.equal(cache.get(TypeUrl.address, "net/10.0.0.1")?.workload?.uid, "u1");
    cache.set(TypeUrl.address, "u1", workload("u1", "a"), { aliases: ["net/10.0.0.2"] });
    assert.equal(cache.resolveName(TypeUrl.address, "net/10.0.0.1"), undefined);
    assert.equal(cache.delete(TypeUrl.address, "u1"), true);
    assert.equal(cache.delete(TypeUrl.address, "u1"), false);
    assert.equal(cache.resolveName(TypeUrl.address, "net/10.0.0.2"), undefined);
  });

  it("coalesces a batch into one change per type", () => {
    const cache = new ResourceCache();
    const changes: CacheChange[] = [];
    cache.onChange((c) => changes.push(c));
    cache.batch(() => {
      for (let i = 0; i < 10; i++) cache.set(TypeUrl.address, `u${i}`, workload(`u${i}`, "x"));
      cache.set(TypeUrl.authorization, "ns/p", { name: "p", namespace: "ns" });
      cache.delete(TypeUrl.address, "u3");
    });
    assert.equal(changes.length, 2);
    assert.equal(changes.find((c) => c.typeUrl === TypeUrl.address)?.names.size, 10);
    assert.equal(cache.size(TypeUrl.address), 9);
    assert.equal(cache.size(), 10);
    assert.deepEqual(cache.names(TypeUrl.authorization), ["ns/p"]);
  });

  it("rejects unknown types and bad names", () => {
    const cache = new ResourceCache();
    assert.throws(
      () => cache.set("type.googleapis.com/nope.Nope", "x", {}),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_UNKNOWN_TYPE",
    );
    assert.throws(
      () => cache.set(TypeUrl.address, "*", {}),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_INVALID_ARGUMENT",
    );
    assert.equal(cache.size(), 0);
  });

  describe("stored bytes", () => {
    type Internal = { deltaBytes(): Uint8Array; anyBytes(): Uint8Array };
    const internal = (cache: ResourceCache, typeUrl: string, name: string) =>
      cache.internalEntry(typeUrl, name) as unknown as Internal;
    /** What a fresh encoding of the entry's Delta `Resource` gives, by the generated encoder. */
    const fresh = (cache: ResourceCache, typeUrl: string, name: string) => {
      const e = cache.entry(typeUrl, name);
      assert.ok(e !== undefined, name);
      return Buffer.from(
        typeRegistry.encode("envoy.service.discovery.v3.Resource", {
          version: e.version,
          name: e.name,
          aliases: [...e.aliases],
          resource: { typeUrl, value: e.payload },
        }),
      );
    };
    const payloadOf = (i: number, size = 40 + (i % 50)) =>
      new Uint8Array(size).map((_, j) => (i * 31 + j * 7) & 255);
    const versionOf = (payload: Uint8Array) =>
      createHash("sha256").update(payload).digest("base64url").slice(0, 16);

    it("equal a fresh encoding of the Delta Resource, its Any and its payload", () => {
      const cache = new ResourceCache();
      const big = payloadOf(1, 9000);
      const cases: [string, Uint8Array, string[]][] = [
        ["plain", payloadOf(2), []],
        ["with-aliases", payloadOf(3), ["net/10.0.0.3", "net/10.0.0.3", "with-aliases", "net/::3"]],
        ["ünïcode/名前", payloadOf(4), ["ä/1"]],
        ["empty", new Uint8Array(0), []],
        ["big", big, ["net/10.0.0.9"]],
        ["mid", payloadOf(5, 2500), []],
      ];
      for (const [name, payload, aliases] of cases)
        cache.setEncoded(TypeUrl.address, name, payload, { aliases });
      for (const [name, payload] of cases) {
        const e = cache.entry(TypeUrl.address, name);
        assert.ok(e !== undefined);
        assert.deepEqual(Buffer.from(e.payload), Buffer.from(payload), name);
        assert.equal(e.version, versionOf(payload), "the version clients see is unchanged");
        assert.deepEqual(
          Buffer.from(internal(cache, TypeUrl.address, name).deltaBytes()),
          fresh(cache, TypeUrl.address, name),
        );
        assert.deepEqual(
          Buffer.from(internal(cache, TypeUrl.address, name).anyBytes()),
          Buffer.from(
            typeRegistry.encode("google.protobuf.Any", { typeUrl: TypeUrl.address, value: payload }),
          ),
        );
      }
      assert.deepEqual(cache.entry(TypeUrl.address, "with-aliases")?.aliases, ["net/10.0.0.3", "net/::3"]);
      assert.equal(
        cache.entry(TypeUrl.address, "plain")?.aliases,
        cache.entry(TypeUrl.address, "empty")?.aliases,
        "entries without aliases share one empty list",
      );
    });

    it("keep a frozen alias list as given, and copy one that can still change", () => {
      const cache = new ResourceCache();
      const frozen = Object.freeze(["net/10.0.0.1", "net/::1"]);
      cache.setEncoded(TypeUrl.address, "f", payloadOf(6), { aliases: frozen });
      assert.equal(cache.entry(TypeUrl.address, "f")?.aliases, frozen, "no copy of a frozen list");
      // A frozen list the cache would change (a repeat, the name itself) is still cleaned into a copy.
      const messy = Object.freeze(["net/10.0.0.2", "net/10.0.0.2", "m"]);
      cache.setEncoded(TypeUrl.address, "m", payloadOf(7), { aliases: messy });
      assert.deepEqual(cache.entry(TypeUrl.address, "m")?.aliases, ["net/10.0.0.2"]);
      const open = ["net/10.0.0.3"];
      cache.setEncoded(TypeUrl.address, "o", payloadOf(8), { aliases: open });
      open[0] = "net/10.0.0.4";
      open.push("net/10.0.0.5");
      assert.deepEqual(cache.entry(TypeUrl.address, "o")?.aliases, ["net/10.0.0.3"]);
      assert.equal(cache.entry(TypeUrl.address, "o")?.payload.length, payloadOf(8).length);
      assert.equal(cache.resolveName(TypeUrl.address, "net/10.0.0.4"), undefined);
      assert.equal(cache.resolveName(TypeUrl.address, "net/10.0.0.3"), "o");
      assert.equal(cache.resolveName(TypeUrl.address, "net/::1"), "f");
    });

    it("keep their own copy: a caller's payload changed after setEncoded does not change the cache", () => {
      const cache = new ResourceCache();
      const payload = payloadOf(9);
      const before = Buffer.from(payload);
      cache.setEncoded(TypeUrl.address, "a", payload);
      payload.fill(0);
      assert.deepEqual(Buffer.from(cache.entry(TypeUrl.address, "a")?.payload ?? []), before);
      assert.equal(cache.entry(TypeUrl.address, "a")?.version, versionOf(before));
    });

    it("of an entry survive the other entries in its slab being replaced and deleted", () => {
      const cache = new ResourceCache();
      const n = 400; // about 40 slabs' worth of small entries
      for (let i = 0; i < n; i++)
        cache.setEncoded(TypeUrl.address, `r${i}`, payloadOf(i), {
          aliases: [`net/10.0.${i >> 8}.${i & 255}`],
        });
      const kept = new Map<string, { entry: unknown; bytes: Buffer }>();
      for (let i = 0; i < n; i += 37) {
        const name = `r${i}`;
        kept.set(name, {
          entry: cache.entry(TypeUrl.address, name),
          bytes: fresh(cache, TypeUrl.address, name),
        });
      }
      // Every other entry is replaced (new bytes written after them) or deleted, twice over.
      for (let round = 1; round <= 2; round++) {
        for (let i = 0; i < n; i++) {
          if (kept.has(`r${i}`)) continue;
          if (i % 5 === 0) cache.delete(TypeUrl.address, `r${i}`);
          else cache.setEncoded(TypeUrl.address, `r${i}`, payloadOf(i + 1000 * round));
        }
      }
      for (const [name, { entry, bytes }] of kept) {
        assert.equal(cache.entry(TypeUrl.address, name), entry, "an unchanged entry is the same object");
        assert.deepEqual(Buffer.from(internal(cache, TypeUrl.address, name).deltaBytes()), bytes, name);
        assert.equal(
          cache.resolveName(
            TypeUrl.address,
            `net/10.0.${Number(name.slice(1)) >> 8}.${Number(name.slice(1)) & 255}`,
          ),
          name,
        );
      }
      for (let i = 0; i < n; i++) {
        const name = `r${i}`;
        if (kept.has(name)) continue;
        const e = cache.entry(TypeUrl.address, name);
        if (i % 5 === 0) assert.equal(e, undefined);
        else {
          assert.deepEqual(Buffer.from(e?.payload ?? []), Buffer.from(payloadOf(i + 2000)), name);
          assert.deepEqual(
            Buffer.from(internal(cache, TypeUrl.address, name).deltaBytes()),
            fresh(cache, TypeUrl.address, name),
          );
          assert.deepEqual(e?.aliases, []);
        }
      }
    });

    it("are repacked when long-lived entries would keep mostly dead slabs alive", () => {
      const cache = new ResourceCache();
      const n = 2000;
      for (let i = 0; i < n; i++) cache.setEncoded(TypeUrl.address, `r${i}`, payloadOf(i));
      // One entry in fifty stays; the others change again and again, leaving their bytes behind in
      // slabs that a survivor keeps.
      const survivors = new Map<string, { entry: unknown; bytes: Buffer }>();
      for (let i = 0; i < n; i += 50) {
        const name = `r${i}`;
        survivors.set(name, {
          entry: cache.entry(TypeUrl.address, name),
          bytes: fresh(cache, TypeUrl.address, name),
        });
      }
      let peak = 0;
      for (let round = 1; round <= 20; round++) {
        for (let i = 0; i < n; i++) {
          if (i % 50 === 0) continue;
          cache.setEncoded(TypeUrl.address, `r${i}`, payloadOf(i + 10_000 * round));
        }
        const { slabBytesInUse, slabBytesWritten } = cache.stats();
        peak = Math.max(peak, slabBytesWritten / slabBytesInUse);
        assert.ok(
          slabBytesWritten <= 2 * slabBytesInUse + 5 * 16 * 1024,
          `round ${round}: ${slabBytesWritten} bytes of slabs for ${slabBytesInUse} in use`,
        );
      }
      assert.ok(peak > 1, "the slabs did carry dead bytes between repacks");
      for (const [name, { entry, bytes }] of survivors) {
        assert.equal(cache.entry(TypeUrl.address, name), entry, "a moved entry is the same object");
        assert.deepEqual(Buffer.from(internal(cache, TypeUrl.address, name).deltaBytes()), bytes, name);
      }
      for (let i = 1; i < n; i += 49) {
        if (i % 50 === 0) continue;
        const name = `r${i}`;
        assert.deepEqual(
          Buffer.from(cache.entry(TypeUrl.address, name)?.payload ?? []),
          Buffer.from(payloadOf(i + 200_000)),
        );
        assert.deepEqual(
          Buffer.from(internal(cache, TypeUrl.address, name).deltaBytes()),
          fresh(cache, TypeUrl.address, name),
        );
      }
      // Deleting everything leaves nothing in use.
      for (let i = 0; i < n; i++) cache.delete(TypeUrl.address, `r${i}`);
      assert.equal(cache.stats().slabBytesInUse, 0);
    });
  });
});
