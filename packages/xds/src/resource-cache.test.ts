import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { XdsError } from "./errors.js";
import { type CacheChange, ResourceCache } from "./resource-cache.js";
import { TypeUrl } from "./type-registry.js";

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
    assert.deepEqual(cache.stats(), { encodes: 3, encodedBytes: cache.stats().encodedBytes });
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
});
