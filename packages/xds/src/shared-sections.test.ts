import assert from "node:assert/strict";
import { describe, it } from "node:test";
import protobuf from "protobufjs/light.js";
import { deltaNames, openDelta } from "../test/raw-ads.js";
import { type SectionEntry, SharedResourceSections } from "./shared-sections.js";
import { TypeUrl } from "./type-registry.js";
import { createXdsServer } from "./xds-server.js";

const A = TypeUrl.address;
let made = 0;
const entry = (text: string): SectionEntry => {
  const bytes = new TextEncoder().encode(text);
  made++;
  return { name: text, version: `v${made}`, deltaBytes: () => bytes };
};
const plain = (entries: SectionEntry[]) => {
  const w = protobuf.Writer.create();
  for (const e of entries) w.uint32(18).bytes(e.deltaBytes());
  return Buffer.from(w.finish());
};

describe("SharedResourceSections", () => {
  it("encodes a list as the repeated resources field, and reuses it for the same entries", () => {
    const sections = new SharedResourceSections(3);
    const list = ["a", "bb", "ccc", "dddd"].map(entry);
    const first = sections.encode(A, list);
    assert.deepEqual(Buffer.from(first.bytes), plain(list));
    assert.equal(first.shared, true);
    const again = sections.encode(A, [...list]);
    assert.equal(again, first, "same entries, another array: the same shared section");
    assert.equal(again.bytes, first.bytes);
    assert.deepEqual(
      [...first.versions()],
      list.map((e) => [e.name, e.version]),
    );
    assert.equal(again.versions(), first.versions(), "one versions map per shared section");
    // Another entry object (a new version) in the same place is not the same list.
    const changed = [...list];
    changed[2] = entry("ccc");
    const other = sections.encode(A, changed);
    assert.notEqual(other, first);
    assert.equal(other.versions().get("ccc"), changed[2]?.version);
    assert.deepEqual(Buffer.from(sections.encode(A, list.slice(0, 3)).bytes), plain(list.slice(0, 3)));
    // Another type keeps its own slot; short lists are never kept.
    assert.deepEqual(Buffer.from(sections.encode(TypeUrl.cluster, list).bytes), plain(list));
    const short = list.slice(0, 2);
    const shortOnce = sections.encode(A, short);
    assert.equal(shortOnce.shared, false);
    assert.notEqual(shortOnce.bytes, sections.encode(A, short).bytes);
  });

  it("keeps its own copy of a list that can change, and the caller's list when it is frozen", () => {
    const sections = new SharedResourceSections(2);
    const list = ["a", "b", "c"].map(entry);
    const section = sections.encode(A, list);
    const before = [...section.versions()];
    list[1] = entry("z");
    assert.deepEqual([...section.versions()], before, "a later change to the caller's array is not seen");
    const frozen = Object.freeze(["d", "e"].map(entry));
    const shared = sections.encode(A, frozen);
    assert.equal(sections.encode(A, frozen), shared);
    assert.deepEqual([...shared.versions().keys()], ["d", "e"]);
  });

  it("keeps the last response built around a shared section and refers to its bytes there", () => {
    const sections = new SharedResourceSections(2);
    const section = sections.encode(A, ["a", "b", "c"].map(entry));
    const own = Buffer.from(section.bytes);
    const head = Buffer.from([10, 1, 49]);
    const response = Buffer.concat([head, section.bytes, Buffer.from([34, 1, 116])]);
    section.keepResponse({ version: "1", nonceSeq: 7, bytes: response }, head.length);
    assert.equal(section.response?.nonceSeq, 7);
    assert.deepEqual(Buffer.from(section.bytes), own);
    assert.equal(section.bytes.buffer, response.buffer, "one copy of the resources is held, in the response");
    // A list too short to share keeps nothing.
    const short = sections.encode(A, ["d"].map(entry));
    short.keepResponse({ version: "1", nonceSeq: 8, bytes: response }, head.length);
    assert.equal(short.response, undefined);
  });

  it("lets go of a section no stream asked for in idleMs, and keeps one that is still asked for", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
    const sections = new SharedResourceSections(2, 60_000);
    const list = Object.freeze(["a", "b", "c"].map(entry));
    const clusters = Object.freeze(["d", "e"].map(entry));
    const section = sections.encode(A, list);
    const other = sections.encode(TypeUrl.cluster, clusters);
    // Asked for again every 20 s: kept well past 60 s.
    for (let i = 0; i < 6; i++) {
      t.mock.timers.tick(20_000);
      assert.equal(sections.encode(A, list), section, `asked for after ${(i + 1) * 20} s`);
    }
    // The other type was not asked for since it was made: gone, a new section for the same list.
    const again = sections.encode(TypeUrl.cluster, clusters);
    assert.notEqual(again, other);
    assert.deepEqual(Buffer.from(again.bytes), Buffer.from(other.bytes));
    t.mock.timers.tick(59_000);
    assert.equal(sections.encode(A, list), section, "59 s idle: still kept");
    t.mock.timers.tick(60_000);
    assert.notEqual(sections.encode(A, list), section, "60 s idle: encoded again");
    sections.clear();
  });

  it("serves fleets of wildcard clients the same bytes, and a later client the current versions", async () => {
    const server = createXdsServer({ debounceMs: 0 });
    const workload = (i: number, name: string) => ({ workload: { uid: `u${i}`, name, addresses: [] } });
    for (let i = 0; i < 400; i++) server.cache.set(A, `u${i}`, workload(i, `w${i}`));
    const port = await server.listen();
    const streams = [openDelta(port), openDelta(port)];
    try {
      for (const s of streams) s.send({ typeUrl: A });
      const [one, two] = await Promise.all(streams.map((s) => s.next()));
      assert.ok(one !== undefined && two !== undefined);
      assert.equal(one.resources.length, 400);
      assert.deepEqual(
        one.resources.map((r) => [r.name, r.version, Buffer.from(r.resource?.value ?? []).toString("hex")]),
        two.resources.map((r) => [r.name, r.version, Buffer.from(r.resource?.value ?? []).toString("hex")]),
      );
      assert.notEqual(one.nonce, "");
      streams[0]?.send({ typeUrl: A, responseNonce: one.nonce });
      streams[1]?.send({ typeUrl: A, responseNonce: two.nonce });
      server.cache.set(A, "u7", workload(7, "w7-new"));
      const late = openDelta(port);
      streams.push(late);
      late.send({ typeUrl: A });
      const fresh = await late.next();
      const u7 = fresh.resources.find((r) => r.name === "u7");
      assert.equal(fresh.resources.length, 400);
      assert.notEqual(u7?.version, one.resources.find((r) => r.name === "u7")?.version);
      // The earlier streams get only the change.
      const push = await (streams[0] as (typeof streams)[0]).next();
      assert.deepEqual(deltaNames(push), ["u7"]);
    } finally {
      for (const s of streams) s.close();
      await server.close();
    }
  });
});
