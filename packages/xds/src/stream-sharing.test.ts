// Delta streams in step share their record of what they hold and the bytes of their first response;
// these tests make streams leave that shared state in different ways and check each one's view.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { deltaNames, openDelta } from "../test/raw-ads.js";
import { structFromJson } from "./struct.js";
import { TypeUrl } from "./type-registry.js";
import { createXdsServer, type XdsServer } from "./xds-server.js";

const A = TypeUrl.address;
const COUNT = 300; // above the shared section's 256-entry minimum
const workload = (i: number, name: string) => ({ workload: { uid: `u${i}`, name, addresses: [] } });
const allNames = Array.from({ length: COUNT }, (_, i) => `u${i}`);

describe("Delta streams sharing their state", () => {
  let server: XdsServer;
  let port: number;
  before(async () => {
    server = createXdsServer({ debounceMs: 0 });
    server.cache.batch(() => {
      for (let i = 0; i < COUNT; i++) server.cache.set(A, `u${i}`, workload(i, `w${i}`));
    });
    port = await server.listen();
  });
  after(() => server.close());

  it("sends streams in step one response, then follows each one's own changes", async () => {
    const [a, b, c] = [openDelta(port), openDelta(port), openDelta(port)];
    try {
      const firsts = [];
      for (const s of [a, b, c]) {
        s.send({ typeUrl: A });
        firsts.push(await s.next());
      }
      const [fa, fb, fc] = firsts;
      assert.ok(fa !== undefined && fb !== undefined && fc !== undefined);
      assert.deepEqual(deltaNames(fa), [...allNames].sort());
      // The same response, nonce included: each stream's first, so the nonce is new to each.
      assert.equal(fb.nonce, fa.nonce);
      assert.equal(fc.nonce, fa.nonce);
      // a NACKs, b ACKs; c ACKs and leaves wildcard, keeping one name.
      a.send({ typeUrl: A, responseNonce: fa.nonce, errorDetail: { code: 3, message: "bad" } });
      b.send({ typeUrl: A, responseNonce: fb.nonce });
      c.send({
        typeUrl: A,
        responseNonce: fc.nonce,
        resourceNamesUnsubscribe: ["*"],
        resourceNamesSubscribe: ["u0"],
      });
      const kept = await c.next();
      assert.deepEqual(deltaNames(kept), ["u0"]);
      assert.notEqual(kept.nonce, fc.nonce);
      c.send({ typeUrl: A, responseNonce: kept.nonce });

      server.cache.set(A, "u8", workload(8, "w8-new"));
      const [pa, pb, pc] = await Promise.all([a.next(), b.next(), c.next()]);
      assert.deepEqual(deltaNames(pa), ["u8"]);
      assert.deepEqual(deltaNames(pb), ["u8"]);
      // c no longer follows u8: it held it, so it is told to drop it.
      assert.deepEqual(deltaNames(pc), []);
      assert.deepEqual(pc.removedResources, ["u8"]);
      for (const [s, p] of [
        [a, pa],
        [b, pb],
        [c, pc],
      ] as const)
        s.send({ typeUrl: A, responseNonce: p.nonce });

      // Back to wildcard: c is sent what it dropped, and nothing it still holds.
      c.send({ typeUrl: A, resourceNamesSubscribe: ["*"] });
      const back = await c.next();
      assert.deepEqual(deltaNames(back), ["u8"]);
      assert.equal(back.resources[0]?.version, pa.resources[0]?.version);
      c.send({ typeUrl: A, responseNonce: back.nonce });

      // A later change reaches all three; a deletion is a removal for all three.
      server.cache.set(A, "u9", workload(9, "w9-new"));
      const again = await Promise.all([a.next(), b.next(), c.next()]);
      for (const r of again) assert.deepEqual(deltaNames(r), ["u9"]);
      for (const [i, s] of [a, b, c].entries()) s.send({ typeUrl: A, responseNonce: again[i]?.nonce ?? "" });
      server.cache.delete(A, "u10");
      for (const r of await Promise.all([a.next(), b.next(), c.next()])) {
        assert.deepEqual(r.removedResources, ["u10"]);
      }
    } finally {
      for (const s of [a, b, c]) s.close();
      server.cache.set(A, "u10", workload(10, "w10"));
    }
  });

  it("gives a stream a new nonce when it is sent the same section again", async () => {
    const s = openDelta(port);
    const other = openDelta(port);
    try {
      s.send({ typeUrl: A, resourceNamesSubscribe: allNames });
      const first = await s.next();
      assert.equal(first.resources.length, COUNT);
      s.send({ typeUrl: A, responseNonce: first.nonce, resourceNamesUnsubscribe: allNames });
      s.send({ typeUrl: A, resourceNamesSubscribe: allNames });
      const second = await s.next();
      assert.equal(second.resources.length, COUNT);
      assert.notEqual(second.nonce, first.nonce, "a nonce never repeats on one stream");
      // A stale ACK is told apart: the stream still waits for the second one.
      s.send({ typeUrl: A, responseNonce: first.nonce });
      s.send({ typeUrl: A, responseNonce: second.nonce });
      // Another stream asking for the same names is sent the response as it was built.
      other.send({ typeUrl: A, resourceNamesSubscribe: allNames });
      const shared = await other.next();
      assert.equal(shared.nonce, second.nonce);
      // The first stream's ACK was taken: a change is pushed to it.
      server.cache.set(A, "u3", workload(3, "w3-new"));
      assert.deepEqual(deltaNames(await s.next()), ["u3"]);
      const ctx = server.streams().find((c) => c.acks.get(A)?.nonce === second.nonce);
      assert.ok(ctx !== undefined, "the ACK recorded is the second response's");
    } finally {
      s.close();
      other.close();
    }
  });

  it("answers a reconnecting stream's initial versions from a shared record", async () => {
    const first = openDelta(port);
    const versions: Record<string, string> = {};
    try {
      first.send({ typeUrl: A });
      const full = await first.next();
      for (const r of full.resources) versions[r.name] = r.version;
    } finally {
      first.close();
    }
    server.cache.set(A, "u5", workload(5, "w5-newer"));
    const s = openDelta(port);
    try {
      s.send({ typeUrl: A, initialResourceVersions: { ...versions, gone: "x" } });
      const resync = await s.next();
      assert.deepEqual(deltaNames(resync), ["u5"]);
      assert.deepEqual(resync.removedResources, ["gone"]);
    } finally {
      s.close();
    }
  });
  it("keeps each stream's view under a visibility hook, sharing only between streams with the same view", async () => {
    const hooked = createXdsServer({
      debounceMs: 0,
      visible: (context, resource) =>
        Number(resource.name.slice(1)) % 2 === (context.node?.metadata.ODD === "yes" ? 1 : 0),
    });
    hooked.cache.batch(() => {
      for (let i = 0; i < 2 * COUNT; i++) hooked.cache.set(A, `u${i}`, workload(i, `w${i}`));
    });
    const hookedPort = await hooked.listen();
    const node = (odd: boolean) => ({ id: "zt", metadata: structFromJson({ ODD: odd ? "yes" : "no" }) });
    const streams = [openDelta(hookedPort), openDelta(hookedPort), openDelta(hookedPort)];
    try {
      const views = [];
      for (const [i, s] of streams.entries()) {
        s.send({ typeUrl: A, node: node(i === 1) });
        views.push(await s.next());
      }
      const [even, odd, evenAgain] = views;
      assert.ok(even !== undefined && odd !== undefined && evenAgain !== undefined);
      assert.equal(even.resources.length, COUNT);
      assert.ok(even.resources.every((r) => Number(r.name.slice(1)) % 2 === 0));
      assert.ok(odd.resources.every((r) => Number(r.name.slice(1)) % 2 === 1));
      assert.equal(odd.resources.length, COUNT);
      assert.deepEqual(deltaNames(evenAgain), deltaNames(even));
      for (const [i, s] of streams.entries()) s.send({ typeUrl: A, responseNonce: views[i]?.nonce ?? "" });
      hooked.cache.set(A, "u2", workload(2, "w2-new"));
      hooked.cache.set(A, "u3", workload(3, "w3-new"));
      const pushes = await Promise.all(streams.map((s) => s.next()));
      assert.deepEqual(pushes.map(deltaNames), [["u2"], ["u3"], ["u2"]]);
    } finally {
      for (const s of streams) s.close();
      await hooked.close();
    }
  });
});
