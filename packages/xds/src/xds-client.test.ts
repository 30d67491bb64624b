import assert from "node:assert/strict";
import http2 from "node:http2";
import { type AddressInfo, connect as connectTcp, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { adsServiceDefinition } from "./ads-service.js";
import { XdsError } from "./errors.js";
import { DEFAULT_RECONNECT_BACKOFF, reconnectChannelOptions } from "./reconnect.js";
import { TypeUrl } from "./type-registry.js";
import { createXdsClient, type XdsChangeEvent, type XdsClient } from "./xds-client.js";
import { createXdsServer, type XdsServer } from "./xds-server.js";

const A = TypeUrl.address;
const workload = (uid: string, name: string, ip: number) => ({
  workload: { uid, name, namespace: "ns", addresses: [new Uint8Array([10, 0, 0, ip])] },
});

/** Resolves when `check` holds, re-checking after every change event of the client. */
function until(client: XdsClient, check: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (check()) return resolve();
    const stop = client.onChange(() => {
      if (check()) {
        stop();
        resolve();
      }
    });
  });
}

for (const protocol of ["delta", "sotw"] as const) {
  describe(`XdsClient over ${protocol}`, () => {
    let server: XdsServer;
    let port: number;
    before(async () => {
      server = createXdsServer({ debounceMs: 0 });
      server.cache.batch(() => {
        for (let i = 1; i <= 3; i++)
          server.cache.set(A, `u${i}`, workload(`u${i}`, `w${i}`, i), { aliases: [`net/10.0.0.${i}`] });
      });
      port = await server.listen();
    });
    after(() => server.close());

    const connect = (extra: Partial<Parameters<typeof createXdsClient>[0]> = {}) =>
      createXdsClient({ address: `127.0.0.1:${port}`, protocol, node: { id: `test-${protocol}` }, ...extra });

    it(
      "becomes ready with the full state and reports typed added/updated/removed events",
      { timeout: 20_000 },
      async () => {
        const client = connect();
        const events: XdsChangeEvent[] = [];
        client.onChange((e) => events.push(e));
        client.watch(A);
        await client.ready();
        assert.deepEqual([...client.resources(A).keys()].sort(), ["u1", "u2", "u3"]);
        assert.equal(client.get(A, "u1")?.workload?.name, "w1");
        events.length = 0;
        server.cache.set(A, "u4", workload("u4", "w4", 4));
        await until(client, () => client.get(A, "u4") !== undefined);
        server.cache.set(A, "u1", workload("u1", "renamed", 1), { aliases: ["net/10.0.0.1"] });
        await until(client, () => client.get(A, "u1")?.workload?.name === "renamed");
        server.cache.delete(A, "u4");
        await until(client, () => client.get(A, "u4") === undefined);
        assert.deepEqual(
          events.map((e) => [e.added.map((r) => r.name), e.updated.map((r) => r.name), e.removed]),
          [
            [["u4"], [], []],
            [[], ["u1"], []],
            [[], [], ["u4"]],
          ],
        );
        client.close();
      },
    );

    it(
      "reconnects in the middle of updates and converges on the server state",
      { timeout: 20_000 },
      async () => {
        const client = connect({ initialBackoffMs: 5, maxBackoffMs: 50 });
        const states: boolean[] = [];
        client.onConnection((up) => states.push(up));
        client.watch(A);
        await client.ready();
        for (let i = 0; i < 20; i++) {
          server.cache.set(A, "u2", workload("u2", `step-${i}`, 2), { aliases: ["net/10.0.0.2"] });
          server.cache.set(A, `tmp-${i}`, workload(`tmp-${i}`, "t", 50));
          if (i > 0) server.cache.delete(A, `tmp-${i - 1}`);
          if (i === 5 || i === 12) server.closeStreams();
          await new Promise((r) => setImmediate(r));
        }
        await until(
          client,
          () =>
            client.get(A, "u2")?.workload?.name === "step-19" &&
            client.get(A, "tmp-19") !== undefined &&
            client.resources(A).size === server.cache.size(A),
        );
        assert.ok(states.includes(false), "the stream was broken at least once");
        assert.deepEqual([...client.resources(A).keys()].sort(), server.cache.names(A).sort());
        client.close();
      },
    );

    it(
      "NACKs a response its validator rejects and keeps the previous resources",
      { timeout: 20_000 },
      async () => {
        const client = connect({
          validate: (_t, _n, r) =>
            (r as { workload?: { name: string } }).workload?.name === "poison"
              ? "poisoned workload"
              : undefined,
        });
        const nacks: string[] = [];
        client.onNack((_t, message) => nacks.push(message));
        client.watch(A);
        await client.ready();
        const before = client.get(A, "u3");
        const nacked = new Promise<void>((resolve) => client.onNack(() => resolve()));
        server.cache.set(A, "u3", workload("u3", "poison", 3), { aliases: ["net/10.0.0.3"] });
        await nacked;
        assert.deepEqual(client.get(A, "u3"), before);
        assert.deepEqual(nacks, ["poisoned workload"]);
        server.cache.set(A, "u3", workload("u3", "fixed", 3), { aliases: ["net/10.0.0.3"] });
        await until(client, () => client.get(A, "u3")?.workload?.name === "fixed");
        const ctx = server.streams().find((c) => c.nacks.length > 0);
        assert.equal(ctx?.nacks[0]?.errorDetail.message, "poisoned workload");
        client.close();
      },
    );

    it("sends a NACK with error_detail code INTERNAL, as Envoy does", { timeout: 20_000 }, async () => {
      const own = createXdsServer({ debounceMs: 0 });
      own.cache.set(A, "bad", workload("bad", "poison", 21));
      const ownPort = await own.listen();
      const client = createXdsClient({
        address: `127.0.0.1:${ownPort}`,
        protocol,
        node: { id: `nack-code-${protocol}` },
        validate: (_t, _n, r) =>
          (r as { workload?: { name: string } }).workload?.name === "poison"
            ? "poisoned workload"
            : undefined,
      });
      try {
        const nacked = new Promise<void>((resolve) => client.onNack(() => resolve()));
        client.watch(A);
        await nacked;
        const stream = () => own.streams().find((c) => c.node?.id === `nack-code-${protocol}`);
        while ((stream()?.nacks.length ?? 0) === 0) await new Promise((r) => setTimeout(r, 5));
        // 13 is INTERNAL: what Envoy puts in every NACK, and what istiod logs next to the message.
        assert.deepEqual(stream()?.nacks[0]?.errorDetail, { code: 13, message: "poisoned workload" });
      } finally {
        client.close();
        await own.close();
      }
    });

    it(
      "cuts a NACK's message on the wire to 4096 characters, as Envoy does",
      { timeout: 20_000 },
      async () => {
        const own = createXdsServer({ debounceMs: 0 });
        own.cache.set(A, "bad", workload("bad", "poison", 22));
        const ownPort = await own.listen();
        const reason = `${"x".repeat(4090)}0123456789`;
        const client = createXdsClient({
          address: `127.0.0.1:${ownPort}`,
          protocol,
          node: { id: `nack-cut-${protocol}` },
          validate: () => reason,
        });
        try {
          const seen: string[] = [];
          const nacked = new Promise<void>((resolve) =>
            client.onNack((_t, message) => {
              seen.push(message);
              resolve();
            }),
          );
          client.watch(A);
          await nacked;
          const stream = () => own.streams().find((c) => c.node?.id === `nack-cut-${protocol}`);
          while ((stream()?.nacks.length ?? 0) === 0) await new Promise((r) => setTimeout(r, 5));
          // The listener hears the whole reason; the control plane gets its first 4096 characters.
          assert.deepEqual(seen, [reason]);
          assert.equal(stream()?.nacks[0]?.errorDetail?.message, `${reason.slice(0, 4096)}...(truncated)`);
        } finally {
          client.close();
          await own.close();
        }
      },
    );

    it(
      "with rejectScope resource, applies the good resources of a response and NACKs naming the bad one",
      { timeout: 20_000 },
      async () => {
        const own = createXdsServer({ debounceMs: 0 });
        own.cache.batch(() => {
          own.cache.set(A, "g1", workload("g1", "good-1", 11));
          own.cache.set(A, "bad", workload("bad", "poison", 12));
          own.cache.set(A, "g2", workload("g2", "good-2", 13));
        });
        const ownPort = await own.listen();
        const client = createXdsClient({
          address: `127.0.0.1:${ownPort}`,
          protocol,
          node: { id: `per-resource-${protocol}` },
          rejectScope: "resource",
          validate: (_t, _n, r) =>
            (r as { workload?: { name: string } }).workload?.name === "poison"
              ? "poisoned workload"
              : undefined,
        });
        try {
          const nacks: string[] = [];
          const events: XdsChangeEvent[] = [];
          client.onNack((_t, message) => nacks.push(message));
          client.onChange((e) => events.push(e));
          client.watch(A);
          // The first response holds a bad resource, yet the type is ready with the good ones.
          await client.ready();
          assert.deepEqual([...client.resources(A).keys()].sort(), ["g1", "g2"]);
          assert.deepEqual(nacks, ["bad: poisoned workload"]);
          assert.deepEqual(
            events[0]?.rejected?.map((r) => [r.name, r.reason]),
            [["bad", "poisoned workload"]],
          );
          const stream = () => own.streams().find((c) => c.node?.id === `per-resource-${protocol}`);
          while ((stream()?.nacks.length ?? 0) === 0) await new Promise((r) => setTimeout(r, 5));
          assert.equal(stream()?.nacks[0]?.errorDetail.message, "bad: poisoned workload");

          // A known resource that turns bad keeps its last good value; the rest of the push applies.
          const before = client.get(A, "g1");
          own.cache.batch(() => {
            own.cache.set(A, "g1", workload("g1", "poison", 11));
            own.cache.set(A, "g3", workload("g3", "good-3", 14));
          });
          await until(client, () => client.get(A, "g3") !== undefined);
          assert.deepEqual(client.get(A, "g1"), before);
          assert.deepEqual(client.get(A, "g2")?.workload?.name, "good-2");
          // SotW sends the whole set again, so the NACK names "bad" too.
          assert.deepEqual(
            nacks.at(-1)?.split("; "),
            protocol === "delta"
              ? ["g1: poisoned workload"]
              : ["g1: poisoned workload", "bad: poisoned workload"],
          );

          // Fixed, it is taken; a rejected resource the server removes is reported removed.
          own.cache.set(A, "g1", workload("g1", "fixed", 11));
          await until(client, () => client.get(A, "g1")?.workload?.name === "fixed");
          own.cache.delete(A, "bad");
          await until(client, () => events.some((e) => e.removed.includes("bad")));
          assert.deepEqual([...client.resources(A).keys()].sort(), ["g1", "g2", "g3"]);
        } finally {
          client.close();
          await own.close();
        }
      },
    );

    it("watches named resources and drops them on unsubscribe", { timeout: 20_000 }, async () => {
      const client = connect();
      client.watch(A, { names: ["u1"] });
      await client.ready(A);
      assert.deepEqual([...client.resources(A).keys()], ["u1"]);
      client.subscribe(A, ["u2"]);
      await until(client, () => client.get(A, "u2") !== undefined);
      client.unsubscribe(A, ["u1"]);
      assert.equal(client.get(A, "u1"), undefined);
      server.cache.set(A, "u1", workload("u1", "after-unsubscribe", 1), { aliases: ["net/10.0.0.1"] });
      server.cache.set(A, "u2", workload("u2", "marker", 2), { aliases: ["net/10.0.0.2"] });
      await until(client, () => client.get(A, "u2")?.workload?.name === "marker");
      assert.equal(client.get(A, "u1"), undefined);
      client.close();
    });

    it(
      "stays wildcard after unsubscribing the one name it also asked for by name",
      { timeout: 20_000 },
      async () => {
        const client = connect({ node: { id: `wildcard-and-name-${protocol}` } });
        try {
          client.watch(A, { wildcard: true, names: ["u1"] });
          await client.ready(A);
          assert.equal(client.resources(A).size, server.cache.size(A));
          const subscription = () => {
            const ctx = server.streams().find((c) => c.node?.id === `wildcard-and-name-${protocol}`);
            return ctx === undefined ? undefined : server.subscriptions(ctx.id)?.get(A);
          };
          client.unsubscribe(A, ["u1"]);
          // The server has taken the unsubscribe before the change below is made.
          while (subscription()?.names.includes("u1") !== false) await new Promise((r) => setTimeout(r, 5));
          assert.equal(subscription()?.wildcard, true);
          server.cache.set(A, "u2", workload("u2", `wildcard-${protocol}`, 2), { aliases: ["net/10.0.0.2"] });
          await until(
            client,
            () =>
              client.get(A, "u2")?.workload?.name === `wildcard-${protocol}` ||
              client.resources(A).size === 0,
          );
          assert.deepEqual([...client.resources(A).keys()].sort(), server.cache.names(A).sort());
        } finally {
          client.close();
        }
      },
    );
  });
}

describe("XdsClient (delta specifics)", () => {
  let server: XdsServer;
  let port: number;
  before(async () => {
    server = createXdsServer({ debounceMs: 0 });
    server.cache.set(A, "u1", workload("u1", "w1", 1), { aliases: ["net/10.0.0.1"] });
    server.cache.set(A, "u2", workload("u2", "w2", 2), { aliases: ["net/10.0.0.2"] });
    port = await server.listen();
  });
  after(() => server.close());

  it("subscribes to nothing, then looks up an alias on demand", { timeout: 20_000 }, async () => {
    const client = createXdsClient({ address: `127.0.0.1:${port}`, node: { id: "zt" } });
    client.watch(A, { wildcard: false });
    await client.ready(A);
    assert.equal(client.resources(A).size, 0);
    client.subscribe(A, ["net/10.0.0.2"]);
    await until(client, () => client.get(A, "u2") !== undefined);
    assert.deepEqual(client.resources(A).get("u2")?.aliases, ["net/10.0.0.2"]);
    client.close();
  });

  it(
    "lookup waits for the answer: found (with what the server adds), missing",
    { timeout: 20_000 },
    async () => {
      const related = createXdsServer({
        debounceMs: 0,
        // u1 comes with net/10.0.0.2, as a Service's pods come with its VIP.
        related: ({ names, subscribed }) =>
          names.includes("net/10.0.0.2") || (names.includes("u1") && subscribed.has("net/10.0.0.2"))
            ? ["u1"]
            : [],
      });
      related.cache.set(A, "u1", workload("u1", "w1", 1), { aliases: ["net/10.0.0.1"] });
      related.cache.set(A, "u2", workload("u2", "w2", 2), { aliases: ["net/10.0.0.2"] });
      const relatedPort = await related.listen();
      const client = createXdsClient({ address: `127.0.0.1:${relatedPort}`, node: { id: "zt" } });
      client.watch(A, { wildcard: false });
      await client.ready(A);
      assert.equal(client.resources(A).size, 0);
      const result = await client.lookup(A, ["net/10.0.0.2", "net/10.9.9.9"]);
      assert.equal(result.found.get("net/10.0.0.2")?.name, "u2");
      assert.deepEqual(result.missing, ["net/10.9.9.9"]);
      assert.deepEqual(result.unanswered, []);
      // The server's addition is held too, and follows later changes.
      assert.equal(client.get(A, "u1")?.workload?.name, "w1");
      related.cache.set(A, "u1", workload("u1", "renamed", 1), { aliases: ["net/10.0.0.1"] });
      await until(client, () => client.get(A, "u1")?.workload?.name === "renamed");
      // A name the client holds resolves as found.
      assert.equal((await client.lookup(A, ["u2"])).found.get("u2")?.name, "u2");
      // An alias given up while it had no resource does not keep out a later resource with it.
      assert.deepEqual((await client.lookup(A, ["net/10.0.0.3"])).missing, ["net/10.0.0.3"]);
      client.unsubscribe(A, ["net/10.0.0.3"]);
      related.cache.set(A, "u1", workload("u1", "renamed-again", 1), {
        aliases: ["net/10.0.0.1", "net/10.0.0.3"],
      });
      await until(client, () => client.get(A, "u1")?.workload?.name === "renamed-again");
      client.close();
      await related.close();
    },
  );

  it("lookup gives up after its timeout, and on close", { timeout: 20_000 }, async () => {
    let release: () => void = () => {};
    const slow = createXdsServer({
      debounceMs: 0,
      resolveTimeoutMs: 10_000,
      resolver: () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
    });
    const slowPort = await slow.listen();
    const client = createXdsClient({ address: `127.0.0.1:${slowPort}`, node: { id: "zt" } });
    client.watch(A, { wildcard: false });
    await client.ready(A);
    const timedOut = await client.lookup(A, ["net/10.7.7.7"], { timeoutMs: 50 });
    assert.deepEqual(timedOut, { found: new Map(), missing: [], unanswered: ["net/10.7.7.7"] });
    const pending = client.lookup(A, ["net/10.7.7.8"], { timeoutMs: 10_000 });
    client.close();
    assert.deepEqual((await pending).unanswered, ["net/10.7.7.8"]);
    release();
    await slow.close();
  });

  it("lookup is for delta streams with a watch", async () => {
    const sotw = createXdsClient({ address: "127.0.0.1:1", protocol: "sotw", node: { id: "zt" } });
    await assert.rejects(sotw.lookup(A, ["x"]), (e: unknown) => e instanceof XdsError);
    sotw.watch(A, { names: ["x"] });
    await assert.rejects(
      sotw.lookup(A, ["x"]),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_INVALID_ARGUMENT",
    );
    sotw.close();
  });

  it(
    "after a reconnect receives only what changed (initial_resource_versions)",
    { timeout: 20_000 },
    async () => {
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        node: { id: "zt" },
        initialBackoffMs: 5,
      });
      client.watch(A);
      await client.ready();
      const events: XdsChangeEvent[] = [];
      client.onChange((e) => events.push(e));
      const reconnected = new Promise<void>((resolve) => {
        let down = false;
        client.onConnection((up) => {
          if (!up) down = true;
          else if (down) resolve();
        });
      });
      server.closeStreams();
      server.cache.set(A, "u1", workload("u1", "changed-while-away", 1), { aliases: ["net/10.0.0.1"] });
      await until(client, () => client.get(A, "u1")?.workload?.name === "changed-while-away");
      await reconnected;
      assert.deepEqual(
        events.flatMap((e) => [...e.added, ...e.updated].map((r) => r.name)),
        ["u1"],
      );
      client.close();
    },
  );

  it("NACKs a resource that does not decode and keeps going", { timeout: 20_000 }, async () => {
    const client = createXdsClient({ address: `127.0.0.1:${port}`, node: { id: "zt" } });
    client.watch(A);
    await client.ready();
    const nacked = new Promise<string>((resolve) => client.onNack((_t, m) => resolve(m)));
    // A truncated payload: field 1 (workload) claims 5 bytes, carries 1.
    server.cache.setEncoded(A, "broken", Buffer.from([0x0a, 0x05, 0x01]));
    assert.match(await nacked, /cannot decode istio\.workload\.Address/);
    assert.equal(client.get(A, "broken"), undefined);
    server.cache.delete(A, "broken");
    server.cache.set(A, "u5", workload("u5", "w5", 5));
    await until(client, () => client.get(A, "u5") !== undefined);
    client.close();
  });

  it(
    "with rejectScope resource, applies what decodes and NACKs the undecodable resource by name",
    { timeout: 20_000 },
    async () => {
      const own = createXdsServer({ debounceMs: 0 });
      own.cache.batch(() => {
        own.cache.set(A, "ok1", workload("ok1", "w1", 21));
        // A truncated payload: field 1 (workload) claims 5 bytes, carries 1.
        own.cache.setEncoded(A, "broken", Buffer.from([0x0a, 0x05, 0x01]));
        own.cache.set(A, "ok2", workload("ok2", "w2", 22));
      });
      const ownPort = await own.listen();
      const client = createXdsClient({
        address: `127.0.0.1:${ownPort}`,
        node: { id: "zt-per-resource" },
        rejectScope: "resource",
        initialBackoffMs: 5,
      });
      try {
        const nacked = new Promise<string>((resolve) => client.onNack((_t, m) => resolve(m)));
        client.watch(A);
        await client.ready();
        assert.deepEqual([...client.resources(A).keys()].sort(), ["ok1", "ok2"]);
        assert.match(await nacked, /^broken: cannot decode istio\.workload\.Address/);
        // Listed on reconnect (with no version), so its removal while away is still told.
        const removed = new Promise<void>((resolve) =>
          client.onChange((e) => {
            if (e.removed.includes("broken")) resolve();
          }),
        );
        own.closeStreams();
        own.cache.delete(A, "broken");
        await removed;
        assert.deepEqual([...client.resources(A).keys()].sort(), ["ok1", "ok2"]);
      } finally {
        client.close();
        await own.close();
      }
    },
  );

  it("resyncs with a restarted server and receives only what differs", { timeout: 20_000 }, async () => {
    const first = createXdsServer({ debounceMs: 0 });
    for (let i = 1; i <= 5; i++) first.cache.set(A, `r${i}`, workload(`r${i}`, `w${i}`, i));
    const p = await first.listen();
    const client = createXdsClient({
      address: `127.0.0.1:${p}`,
      node: { id: "zt" },
      initialBackoffMs: 5,
      maxBackoffMs: 100,
    });
    client.watch(A);
    await client.ready();
    const events: XdsChangeEvent[] = [];
    client.onChange((e) => events.push(e));
    await first.close();
    const second = createXdsServer({ debounceMs: 0 });
    for (let i = 1; i <= 4; i++)
      second.cache.set(A, `r${i}`, workload(`r${i}`, i === 2 ? "new" : `w${i}`, i));
    await second.listen(`127.0.0.1:${p}`);
    await until(
      client,
      () => client.get(A, "r2")?.workload?.name === "new" && client.get(A, "r5") === undefined,
    );
    // Versions are content hashes: the new server agreed with the client on r1, r3 and r4.
    assert.deepEqual(
      events.map((e) => [e.added.map((r) => r.name), e.updated.map((r) => r.name), e.removed]),
      [[[], ["r2"], ["r5"]]],
    );
    client.close();
    await second.close();
  });

  it("validates its options and refuses use after close", () => {
    assert.throws(() => createXdsClient({ address: "", node: { id: "x" } }), XdsError);
    const client = createXdsClient({ address: `127.0.0.1:${port}`, node: { id: "x" } });
    assert.throws(
      () => client.watch("type.googleapis.com/nope.Nope"),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_UNKNOWN_TYPE",
    );
    client.close();
    assert.throws(
      () => client.watch(A),
      (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_CLOSED",
    );
  });
});

describe("XdsClient stream ends and messages, as Istio's ztunnel counts them", () => {
  it("reports each response's type and resource bytes", { timeout: 20_000 }, async () => {
    const server = createXdsServer({ debounceMs: 0 });
    server.cache.set(A, "u1", workload("u1", "w1", 1), { aliases: ["net/10.0.0.1"] });
    const port = await server.listen();
    for (const protocol of ["delta", "sotw"] as const) {
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        protocol,
        node: { id: `msg-${protocol}` },
      });
      const messages: [string, number][] = [];
      client.onMessage((typeUrl, bytes) => messages.push([typeUrl, bytes]));
      client.watch(A);
      await client.ready();
      const payload = server.cache.entry(A, "u1")?.payload.length ?? 0;
      assert.ok(payload > 0);
      assert.deepEqual(messages, [[A, payload]], protocol);
      client.close();
    }
    await server.close();
  });

  it(
    "tells a server it never reached from one that went away after answering",
    { timeout: 20_000 },
    async () => {
      // A port with nothing behind it: the stream ends before any response.
      const probe = createServer();
      await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
      const deadPort = (probe.address() as { port: number }).port;
      await new Promise((resolve) => probe.close(resolve));
      const unreachable = createXdsClient({
        address: `127.0.0.1:${deadPort}`,
        node: { id: "end-unreachable" },
        initialBackoffMs: 50,
        maxBackoffMs: 100,
      });
      const first = new Promise<string>((resolve) => unreachable.onStreamEnd((reason) => resolve(reason)));
      unreachable.watch(A);
      assert.equal(await first, "ConnectionError");
      unreachable.close();

      const server = createXdsServer({ debounceMs: 0 });
      server.cache.set(A, "u1", workload("u1", "w1", 1));
      const port = await server.listen();
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        node: { id: "end-answered" },
        initialBackoffMs: 5,
      });
      const reasons: string[] = [];
      client.onStreamEnd((reason) => reasons.push(reason));
      client.watch(A);
      await client.ready();
      // The server ends its streams (UNAVAILABLE) after answering: the client reconnects.
      server.closeStreams();
      const deadline = Date.now() + 5000;
      while (reasons.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(reasons, ["Reconnect"]);
      // A listener that throws does not stop the client.
      client.onStreamEnd(() => {
        throw new Error("listener bug");
      });
      server.closeStreams();
      while (reasons.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(reasons, ["Reconnect", "Reconnect"]);
      server.cache.set(A, "u2", workload("u2", "w2", 2));
      await until(client, () => client.get(A, "u2") !== undefined);
      client.close();
      await server.close();
    },
  );
});

describe("XdsClient stream end reasons from a server that ends streams itself", () => {
  it("reports Complete for OK and Error for a refusal", { timeout: 20_000 }, async () => {
    // A bare ADS server whose first stream ends with OK and the others with PERMISSION_DENIED.
    let calls = 0;
    const server = new grpc.Server();
    const end = (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      calls++;
      if (calls === 1) call.end();
      else call.emit("error", { code: grpc.status.PERMISSION_DENIED, details: "not you" });
    };
    server.addService(adsServiceDefinition, {
      StreamAggregatedResources: end,
      DeltaAggregatedResources: end,
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const client = createXdsClient({
      address: `127.0.0.1:${port}`,
      node: { id: "end-reasons" },
      initialBackoffMs: 5,
    });
    const reasons: string[] = [];
    client.onStreamEnd((reason) => reasons.push(reason));
    client.watch(A);
    const deadline = Date.now() + 5000;
    while (reasons.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    client.close();
    server.forceShutdown();
    assert.deepEqual(reasons.slice(0, 2), ["Complete", "Error"]);
  });
});

describe("XdsClient flow control", () => {
  /** The SETTINGS and connection window a client opens with, as an HTTP/2 server sees them. */
  async function windowsOf(
    channelOptions?: Record<string, number>,
  ): Promise<{ stream: number; connection: number }> {
    const server = http2.createServer();
    const seen = new Promise<{ stream: number; connection: number }>((resolve) => {
      server.on("stream", (stream) => {
        const session = stream.session;
        // The connection window arrives as a WINDOW_UPDATE right after the client's SETTINGS.
        setTimeout(() => {
          resolve({
            stream: session?.remoteSettings.initialWindowSize ?? -1,
            connection: session?.state.remoteWindowSize ?? -1,
          });
          stream.close(http2.constants.NGHTTP2_CANCEL);
        }, 100);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const client = createXdsClient({
      address: `127.0.0.1:${port}`,
      node: { id: "ztunnel~127.0.0.1~t.default~default.svc.cluster.local" },
      ...(channelOptions === undefined ? {} : { channelOptions }),
    });
    try {
      client.watch(TypeUrl.address);
      return await seen;
    } finally {
      client.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  it("opens with a 4 MiB receive window, or the one given", { timeout: 20_000 }, async () => {
    const byDefault = await windowsOf();
    assert.equal(byDefault.stream, 4 * 1024 * 1024);
    assert.ok(byDefault.connection >= 4 * 1024 * 1024, `connection window ${byDefault.connection}`);
    const given = await windowsOf({ "grpc-node.flow_control_window": 65_535 });
    assert.equal(given.stream, 65_535);
  });
});

describe("XdsClient after a control-plane outage", () => {
  it(
    "reconnects within maxBackoffMs of the server's return, however long it was down",
    { timeout: 60_000 },
    async () => {
      const cap = 1000;
      const outageMs = 4500;
      const slackMs = 700;
      const serve = async (at: string) => {
        const s = createXdsServer({ debounceMs: 0 });
        s.cache.set(A, "u1", workload("u1", "w1", 1));
        return { server: s, port: await s.listen(at) };
      };
      let { server, port } = await serve("127.0.0.1:0");
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        node: { id: "outage" },
        initialBackoffMs: 10,
        maxBackoffMs: cap,
      });
      client.watch(A);
      await client.ready();
      await server.close();

      // While "down", the port drops every connection and logs when the client tries again.
      const attempts: number[] = [];
      let onAttempt: (() => void) | undefined;
      const down = createServer((socket) => {
        attempts.push(performance.now());
        socket.destroy();
        onAttempt?.();
      });
      await new Promise<void>((resolve, reject) => {
        down.once("error", reject);
        down.listen(port, "127.0.0.1", () => resolve());
      });
      const downSince = performance.now();
      // Come back right after one of the client's attempts once the outage is long enough: the wait
      // for its next attempt is then its whole current back-off.
      await new Promise<void>((resolve, reject) => {
        const giveUp = setTimeout(() => reject(new Error("no connection attempt in 30 s")), 30_000);
        onAttempt = () => {
          if (performance.now() - downSince < outageMs) return;
          onAttempt = undefined;
          clearTimeout(giveUp);
          resolve();
        };
      });
      await new Promise<void>((resolve) => down.close(() => resolve()));

      let connectedAt: number | undefined;
      const stop = client.onConnection((up) => {
        if (up) connectedAt ??= performance.now();
      });
      ({ server } = await serve(`127.0.0.1:${port}`));
      const upAt = performance.now();
      const limit = cap + slackMs;
      while (connectedAt === undefined && performance.now() - upAt < limit * 4) {
        await new Promise((r) => setTimeout(r, 20));
      }
      stop();
      const tookMs = connectedAt === undefined ? Number.POSITIVE_INFINITY : connectedAt - upAt;
      // grpc-js' own back-off (1 s growing to 120 s by default) no longer stacks on the client's.
      const gaps = attempts.slice(1).map((t, i) => t - (attempts[i] as number));
      const widest = Math.max(...gaps);
      const name = client.get(A, "u1")?.workload?.name;
      client.close();
      await server.close();
      assert.ok(tookMs <= limit, `reconnected ${Math.round(tookMs)} ms after the server came back`);
      assert.ok(attempts.length >= 4, `${attempts.length} attempts in ${outageMs} ms`);
      assert.ok(widest <= limit, `attempts up to ${Math.round(widest)} ms apart (cap ${cap} ms)`);
      assert.equal(name, "w1");
    },
  );

  it(
    "gives up on a connection that never completes after connectTimeoutMs and connects on a new channel",
    { timeout: 30_000 },
    async () => {
      const server = createXdsServer({ debounceMs: 0 });
      server.cache.set(A, "u1", workload("u1", "w1", 1));
      const serverPort = await server.listen("127.0.0.1:0");
      // In front of the server: the first connection is accepted and never answered (a hung process
      // whose kernel still accepts; read here only to see it end), every later one is passed through.
      const held: Socket[] = [];
      const front = createServer((socket) => {
        if (held.length === 0) {
          held.push(socket);
          socket.resume();
          return;
        }
        const upstream = connectTcp(serverPort, "127.0.0.1");
        socket.pipe(upstream).pipe(socket);
        const end = () => {
          socket.destroy();
          upstream.destroy();
        };
        socket.on("error", end).on("close", end);
        upstream.on("error", end).on("close", end);
      });
      await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", () => resolve()));
      const frontPort = (front.address() as AddressInfo).port;
      const ends: string[] = [];
      const client = createXdsClient({
        address: `127.0.0.1:${frontPort}`,
        node: { id: "hung-server" },
        connectTimeoutMs: 400,
      });
      client.onStreamEnd((reason, error) => ends.push(`${reason} ${error.code} ${error.message}`));
      try {
        const started = performance.now();
        client.watch(A);
        await client.ready();
        const tookMs = performance.now() - started;
        assert.equal(client.get(A, "u1")?.workload?.name, "w1");
        assert.equal(held.length, 1);
        assert.ok(tookMs >= 400 && tookMs < 5000, `ready after ${Math.round(tookMs)} ms`);
        assert.deepEqual(ends, [
          `ConnectionError ERR_XDS_UNAVAILABLE xds stream broken: no connection to 127.0.0.1:${frontPort} within 400 ms`,
        ]);
        // The connection given up on is closed by the client, not left open.
        const first = held[0] as Socket;
        if (!first.destroyed) await new Promise((resolve) => first.once("close", resolve));
      } finally {
        client.close();
        for (const socket of held) socket.destroy();
        await new Promise((resolve) => front.close(resolve));
        await server.close();
      }
    },
  );

  it("ends a connection attempt still in progress when it is closed", { timeout: 20_000 }, async () => {
    const held: Socket[] = [];
    const hung = createServer((socket) => {
      held.push(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", () => resolve()));
    const client = createXdsClient({
      address: `127.0.0.1:${(hung.address() as AddressInfo).port}`,
      node: { id: "closed-while-connecting" },
    });
    try {
      client.watch(A);
      while (held.length === 0) await new Promise((r) => setTimeout(r, 10));
      client.close();
      const socket = held[0] as Socket;
      if (!socket.destroyed) await new Promise((resolve) => socket.once("close", resolve));
    } finally {
      client.close();
      for (const socket of held) socket.destroy();
      await new Promise((resolve) => hung.close(resolve));
    }
  });

  it("refuses a connectTimeoutMs that is no deadline", () => {
    for (const connectTimeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(
        () => createXdsClient({ address: "127.0.0.1:1", node: { id: "x" }, connectTimeoutMs }),
        (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_INVALID_ARGUMENT",
        String(connectTimeoutMs),
      );
    }
  });

  it("caps grpc-js' reconnect back-off, jitter included, at maxBackoffMs", () => {
    assert.deepEqual(reconnectChannelOptions(), {
      "grpc.initial_reconnect_backoff_ms": 10,
      "grpc.max_reconnect_backoff_ms": 12_500,
      "grpc.dns_min_time_between_resolutions_ms": 12_500,
    });
    assert.deepEqual(DEFAULT_RECONNECT_BACKOFF, { initialBackoffMs: 10, maxBackoffMs: 15_000 });
    const small = reconnectChannelOptions({ initialBackoffMs: 1000, maxBackoffMs: 1000 });
    assert.equal(small["grpc.max_reconnect_backoff_ms"], 833);
    assert.equal(small["grpc.initial_reconnect_backoff_ms"], 833);
  });

  it("rejects back-off options that cannot bound the reconnect time", () => {
    for (const extra of [
      { initialBackoffMs: 0 },
      { maxBackoffMs: 5, initialBackoffMs: 10 },
      { maxBackoffMs: Number.NaN },
    ]) {
      assert.throws(
        () => createXdsClient({ address: "127.0.0.1:1", node: { id: "x" }, ...extra }),
        (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_INVALID_ARGUMENT",
        JSON.stringify(extra),
      );
    }
  });

  it(
    "calls a headers function for every stream and keeps the last good headers when it throws",
    {
      timeout: 20_000,
    },
    async () => {
      const seen: string[] = [];
      const authServer = createXdsServer({
        debounceMs: 0,
        authenticate: async ({ headers }) => {
          seen.push(headers.authorization?.[0] ?? "");
          return undefined;
        },
      });
      authServer.cache.set(A, "h1", workload("h1", "w1", 1));
      const p = await authServer.listen();
      // A rotating token file as the kubelet keeps it: read for each stream, briefly unreadable.
      const tokens: (string | Error)[] = ["token-1", new Error("ENOENT"), "token-3"];
      let calls = 0;
      const client = createXdsClient({
        address: `127.0.0.1:${p}`,
        node: { id: "zt" },
        initialBackoffMs: 5,
        headers: () => {
          const next = tokens[Math.min(calls++, tokens.length - 1)];
          if (next instanceof Error) throw next;
          return { authorization: `Bearer ${next}` };
        },
      });
      try {
        client.watch(A);
        await client.ready();
        for (let i = 0; i < 2; i++) {
          const before = seen.length;
          authServer.closeStreams();
          while (seen.length === before) await new Promise((r) => setTimeout(r, 10));
        }
        assert.deepEqual(seen, ["Bearer token-1", "Bearer token-1", "Bearer token-3"]);
      } finally {
        client.close();
        await authServer.close();
      }
    },
  );
});
