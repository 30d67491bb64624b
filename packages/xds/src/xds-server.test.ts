import assert from "node:assert/strict";
import http2 from "node:http2";
import { type AddressInfo, connect as connectTcp, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { deltaNames, openDelta, openSotw } from "../test/raw-ads.js";
import { ADS_SERVICE } from "./ads-service.js";
import { XdsError } from "./errors.js";
import { descriptor } from "./gen/descriptor.js";
import { createXdsPushThrottle } from "./push-throttle.js";
import { ResourceCache } from "./resource-cache.js";
import type { NackRecord } from "./server-session.js";
import { structFromJson } from "./struct.js";
import type { Counter, MetricsSink } from "./telemetry.js";
import { TypeUrl, typeRegistry } from "./type-registry.js";
import { createXdsClient } from "./xds-client.js";
import { createXdsServer, DEFAULT_XDS_SERVER_OPTIONS, type XdsServer } from "./xds-server.js";

const A = TypeUrl.address;
const workload = (uid: string, name: string, ip: number) => ({
  workload: { uid, name, namespace: "ns", addresses: [new Uint8Array([10, 0, 0, ip])] },
});

function seed(server: XdsServer, n: number): void {
  server.cache.batch(() => {
    for (let i = 1; i <= n; i++)
      server.cache.set(A, `u${i}`, workload(`u${i}`, `w${i}`, i), { aliases: [`net/10.0.0.${i}`] });
  });
}

describe("Delta ADS server", () => {
  let server: XdsServer;
  let port: number;
  const nacks: NackRecord[] = [];
  const counts = new Map<string, number>();
  const gauges = new Map<string, number>();
  const metrics: MetricsSink = {
    counter: (name) => {
      const c: Counter = { inc: (_l, v = 1) => counts.set(name, (counts.get(name) ?? 0) + v) };
      return c;
    },
    gauge: (name) => ({
      set: () => {},
      inc: (l, v = 1) =>
        gauges.set(`${name}${JSON.stringify(l)}`, (gauges.get(`${name}${JSON.stringify(l)}`) ?? 0) + v),
      dec: (l, v = 1) =>
        gauges.set(`${name}${JSON.stringify(l)}`, (gauges.get(`${name}${JSON.stringify(l)}`) ?? 0) - v),
    }),
    histogram: () => ({ observe: () => {} }),
  };

  before(async () => {
    server = createXdsServer({ debounceMs: 0, onNack: (_c, n) => nacks.push(n), metrics });
    seed(server, 3);
    port = await server.listen();
  });
  after(() => server.close());

  it("serves a legacy wildcard subscription, pushes only changes, and removes deleted names", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: A, node: { id: "ztunnel~10.0.0.9~zt.istio-system~istio-system.svc.cluster.local" } });
    const first = await s.next();
    assert.deepEqual(deltaNames(first), ["u1", "u2", "u3"]);
    assert.notEqual(first.nonce, "");
    assert.deepEqual(first.resources.find((r) => r.name === "u1")?.aliases, ["net/10.0.0.1"]);
    assert.equal(first.resources[0]?.resource?.typeUrl, A);
    s.send({ typeUrl: A, responseNonce: first.nonce });
    server.cache.set(A, "u2", workload("u2", "changed", 2));
    const push = await s.next();
    assert.deepEqual(deltaNames(push), ["u2"]);
    assert.notEqual(push.nonce, first.nonce);
    s.send({ typeUrl: A, responseNonce: push.nonce });
    server.cache.delete(A, "u2");
    const removal = await s.next();
    assert.deepEqual(removal.resources, []);
    assert.deepEqual(removal.removedResources, ["u2"]);
    s.send({ typeUrl: A, responseNonce: removal.nonce });
    server.cache.set(A, "u2", workload("u2", "w2", 2), { aliases: ["net/10.0.0.2"] });
    assert.deepEqual(deltaNames(await s.next()), ["u2"]);
    s.close();
  });

  it("serves named subscriptions, marks missing names removed, and ignores other names", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1", "nope"] });
    const first = await s.next();
    assert.deepEqual(deltaNames(first), ["u1"]);
    assert.deepEqual(first.removedResources, ["nope"]);
    s.send({ typeUrl: A, responseNonce: first.nonce });
    server.cache.set(A, "u3", workload("u3", "other", 3), { aliases: ["net/10.0.0.3"] });
    server.cache.set(A, "u1", workload("u1", "mine", 1), { aliases: ["net/10.0.0.1"] });
    const push = await s.next();
    // The u3 change never reached this stream: the next response is about u1.
    assert.deepEqual(deltaNames(push), ["u1"]);
    s.send({
      typeUrl: A,
      responseNonce: push.nonce,
      resourceNamesUnsubscribe: ["u1"],
      resourceNamesSubscribe: ["u3"],
    });
    const swapped = await s.next();
    assert.deepEqual(deltaNames(swapped), ["u3"]);
    s.close();
  });

  it("supports subscribe-to-nothing with on-demand alias lookups", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["*"], resourceNamesUnsubscribe: ["*"] });
    const first = await s.next();
    assert.deepEqual(first.resources, []);
    s.send({ typeUrl: A, responseNonce: first.nonce });
    server.cache.set(A, "u9", workload("u9", "new", 9), { aliases: ["net/10.0.0.9"] });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["net/10.0.0.1"] });
    const lookup = await s.next();
    assert.deepEqual(deltaNames(lookup), ["u1"]);
    s.close();
  });

  it("honours initial_resource_versions on reconnect: sends what changed, removes what is gone", async () => {
    const s1 = openDelta(port);
    s1.send({ typeUrl: A });
    const have = await s1.next();
    s1.close();
    const versions = Object.fromEntries(have.resources.map((r) => [r.name, r.version]));
    server.cache.set(A, "u1", workload("u1", "moved", 1), { aliases: ["net/10.0.0.1"] });
    server.cache.delete(A, "u9");
    const s2 = openDelta(port);
    s2.send({ typeUrl: A, initialResourceVersions: versions });
    const resync = await s2.next();
    assert.deepEqual(deltaNames(resync), ["u1"]);
    assert.deepEqual(resync.removedResources, ["u9"]);
    s2.close();
  });

  it("records a NACK with its error detail and keeps serving", async () => {
    const s = openDelta(port);
    s.send({
      typeUrl: A,
      node: { id: "nacker", metadata: structFromJson({ NAME: "zt", INSTANCE_IPS: "10.0.0.9" }) },
    });
    const first = await s.next();
    const before = counts.get("pilot_total_xds_rejects") ?? 0;
    s.send({ typeUrl: A, responseNonce: first.nonce, errorDetail: { code: 3, message: "bad workload u1" } });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1"] });
    await s.next();
    const nack = nacks.at(-1);
    assert.equal(nack?.errorDetail.message, "bad workload u1");
    assert.equal(nack?.nonce, first.nonce);
    assert.equal(counts.get("pilot_total_xds_rejects"), before + 1);
    const ctx = server.streams().find((c) => c.node?.id === "nacker");
    assert.deepEqual(ctx?.node?.metadata, { NAME: "zt", INSTANCE_IPS: "10.0.0.9" });
    assert.equal(ctx?.nacks.length, 1);
    assert.ok((gauges.get('pilot_xds{"protocol":"delta","kind":"other"}') ?? 0) >= 1);
    assert.ok((counts.get("pilot_xds_pushes") ?? 0) > 0);
    s.close();
  });

  it("labels streams with one of Istio's node kinds, 'other' for any other node id prefix", async () => {
    const opened = [];
    for (const id of [
      "ztunnel~10.0.0.1~zt.istio-system~cluster.local",
      "waypoint~x~y~z",
      "made-up-1~a",
      "made-up-2~a",
    ]) {
      const s = openDelta(port);
      s.send({ typeUrl: A, node: { id } });
      await s.next();
      opened.push(s);
    }
    assert.ok((gauges.get('pilot_xds{"protocol":"delta","kind":"ztunnel"}') ?? 0) >= 1);
    assert.ok((gauges.get('pilot_xds{"protocol":"delta","kind":"waypoint"}') ?? 0) >= 1);
    // A client names its own node: the labels it can make are bounded.
    const kinds = [...gauges.keys()]
      .filter((k) => k.startsWith("pilot_xds{"))
      .map((k) => JSON.parse(k.slice(9)).kind);
    assert.ok(!kinds.some((k: string) => k.startsWith("made-up")), kinds.join(", "));
    for (const s of opened) s.close();
  });

  it("holds pushes for a stream that never ACKs without delaying other streams", async () => {
    const silent = openDelta(port);
    const acking = openDelta(port);
    let syncs = 0;
    // Requests on one stream are handled in order: a reply on another type proves the ACK was seen.
    const ackAndSync = async (s: typeof silent, nonce: string) => {
      s.send({ typeUrl: A, responseNonce: nonce });
      s.send({ typeUrl: TypeUrl.authorization, resourceNamesSubscribe: [`sync-${++syncs}`] });
      const r = await s.next();
      assert.equal(r.typeUrl, TypeUrl.authorization);
    };
    silent.send({ typeUrl: A, resourceNamesSubscribe: ["u2"] });
    acking.send({ typeUrl: A, resourceNamesSubscribe: ["u2"] });
    await ackAndSync(silent, (await silent.next()).nonce);
    await ackAndSync(acking, (await acking.next()).nonce);
    const set = (name: string) => {
      server.cache.set(A, "u2", workload("u2", name, 2), { aliases: ["net/10.0.0.2"] });
      server.flushNow();
    };
    set("v1");
    const s1 = await silent.next();
    await ackAndSync(acking, (await acking.next()).nonce);
    set("v2");
    await ackAndSync(acking, (await acking.next()).nonce);
    set("v3");
    const a3 = await acking.next();
    // The silent stream got one push; its ACK releases exactly one more with the latest version.
    silent.send({ typeUrl: A, responseNonce: s1.nonce });
    const s2 = await silent.next();
    assert.equal(s2.typeUrl, A);
    assert.equal(s2.resources[0]?.version, a3.resources[0]?.version);
    silent.close();
    acking.close();
  });

  it("still applies subscriptions that carry a stale nonce", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1"] });
    await s.next();
    s.send({ typeUrl: A, responseNonce: "stale", resourceNamesSubscribe: ["u3"] });
    assert.deepEqual(deltaNames(await s.next()), ["u3"]);
    s.close();
  });

  it("does not take a NACK of a type the stream never asked for as a subscription", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: A, responseNonce: "elsewhere", errorDetail: { code: 3, message: "not requested" } });
    s.send({ typeUrl: TypeUrl.authorization, resourceNamesSubscribe: ["sync"] });
    assert.equal((await s.next()).typeUrl, TypeUrl.authorization);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1"] });
    const named = await s.next();
    assert.equal(named.typeUrl, A);
    assert.deepEqual(deltaNames(named), ["u1"]);
    s.close();
  });

  it("ignores unknown type URLs and keeps the stream", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: "type.googleapis.com/no.such.Type", resourceNamesSubscribe: ["x"] });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1"] });
    const res = await s.next();
    assert.equal(res.typeUrl, A);
    s.close();
  });

  it("closes a stream that sends undecodable bytes, leaving other streams alone", async () => {
    const good = openDelta(port);
    good.send({ typeUrl: A, resourceNamesSubscribe: ["u1"] });
    await good.next();
    const bad = openDelta(port);
    bad.sendRaw(Buffer.from([0x12, 0x05, 0x41]));
    const status = await bad.status;
    assert.equal(status.code, 3);
    good.send({ typeUrl: A, resourceNamesSubscribe: ["u3"] });
    assert.deepEqual(deltaNames(await good.next()), ["u3"]);
    good.close();
  });

  it("survives a flood of subscribe/unsubscribe with bounded state", async () => {
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["*"], resourceNamesUnsubscribe: ["*"] });
    await s.next();
    for (let i = 0; i < 500; i++) {
      s.send({ typeUrl: A, resourceNamesSubscribe: [`flood-${i}`] });
      s.send({ typeUrl: A, resourceNamesUnsubscribe: [`flood-${i}`] });
    }
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1"] });
    let last = await s.next();
    while (last.resources.length === 0) last = await s.next();
    assert.deepEqual(deltaNames(last), ["u1"]);
    const id = server.streams().at(-1)?.id ?? -1;
    assert.deepEqual(server.subscriptions(id)?.get(A), { wildcard: false, names: ["u1"] });
    s.close();
  });

  it("coalesces changes inside the debounce window into one push", async () => {
    const debounced = createXdsServer({ debounceMs: 50 });
    seed(debounced, 2);
    const p = await debounced.listen();
    const s = openDelta(p);
    s.send({ typeUrl: A });
    const first = await s.next();
    s.send({ typeUrl: A, responseNonce: first.nonce });
    for (let i = 0; i < 5; i++) debounced.cache.set(A, "u1", workload("u1", `n${i}`, 1));
    debounced.cache.set(A, "u2", workload("u2", "x", 2));
    const push = await s.next();
    assert.deepEqual(deltaNames(push), ["u1", "u2"]);
    s.close();
    await debounced.close();
  });

  it("with a leading edge, a change after a quiet window is pushed without waiting for the window", async () => {
    // A window of ten minutes: the trailing debounce would hold this push past the 10 s bound below.
    const leading = createXdsServer({ debounceMs: 600_000, debounceLeadingEdge: true });
    seed(leading, 2);
    const p = await leading.listen();
    const s = openDelta(p);
    s.send({ typeUrl: A });
    const first = await s.next();
    s.send({ typeUrl: A, responseNonce: first.nonce });
    // Two writes in one turn still make one push.
    leading.cache.set(A, "u1", workload("u1", "n1", 1));
    leading.cache.set(A, "u2", workload("u2", "x", 2));
    let bound: NodeJS.Timeout | undefined;
    try {
      const push = await Promise.race([
        s.next(),
        new Promise<never>((_, reject) => {
          bound = setTimeout(() => reject(new Error("no push within 10 s")), 10_000);
        }),
      ]);
      assert.deepEqual(deltaNames(push), ["u1", "u2"]);
    } finally {
      clearTimeout(bound);
      s.close();
      await leading.close();
    }
  });
});

describe("server hooks", () => {
  it("refuses streams the auth hook rejects and attaches the identity of accepted ones", async () => {
    const server = createXdsServer({
      debounceMs: 0,
      authenticate: ({ headers, node }) => {
        if (headers.authorization?.[0] !== "Bearer good") throw new Error("bad token");
        if (node?.id === "blocked") throw new XdsError("ERR_XDS_PERMISSION_DENIED", "node not allowed");
        return { subject: "ztunnel" };
      },
    });
    const port = await server.listen();
    const anonymous = openDelta(port);
    anonymous.send({ typeUrl: A });
    assert.equal((await anonymous.status).code, 16);
    const blocked = openDelta(port, { authorization: "Bearer good" });
    blocked.send({ typeUrl: A, node: { id: "blocked" } });
    assert.equal((await blocked.status).code, 7);
    const ok = openDelta(port, { authorization: "Bearer good" });
    ok.send({ typeUrl: A, node: { id: "zt" } });
    await ok.next();
    assert.deepEqual(server.streams()[0]?.identity, { subject: "ztunnel" });
    ok.close();
    await server.close();
  });

  it("asks the resolver for unknown names before answering", async () => {
    const asked: string[] = [];
    const server = createXdsServer({
      debounceMs: 0,
      resolver: ({ names, cache, typeUrl, context }) => {
        asked.push(`${context.node?.id}:${names.join(",")}`);
        for (const name of names) {
          if (name === "net/10.9.9.9")
            cache.set(typeUrl, "u-od", workload("u-od", "od", 9), { aliases: [name] });
        }
      },
    });
    const port = await server.listen();
    const s = openDelta(port);
    s.send({
      typeUrl: A,
      node: { id: "zt" },
      resourceNamesSubscribe: ["*"],
      resourceNamesUnsubscribe: ["*"],
    });
    await s.next();
    s.send({ typeUrl: A, resourceNamesSubscribe: ["net/10.9.9.9", "net/10.8.8.8"] });
    const res = await s.next();
    assert.deepEqual(deltaNames(res), ["u-od"]);
    assert.deepEqual(res.removedResources, ["net/10.8.8.8"]);
    assert.deepEqual(asked, ["zt:net/10.9.9.9,net/10.8.8.8"]);
    s.close();
    await server.close();
  });

  it("answers a VIP or hostname with the Service and the workloads the related hook names", async (t) => {
    const seen: string[][] = [];
    const svc = (vip: number) => ({
      service: {
        name: "web",
        namespace: "ns",
        hostname: "web.ns.svc.cluster.local",
        addresses: [{ network: "net", address: new Uint8Array([10, 96, 0, vip]) }],
      },
    });
    const backing = (uid: string, ip: number, node = "other") => ({
      workload: {
        uid,
        name: uid,
        namespace: "ns",
        node,
        addresses: [new Uint8Array([10, 0, 0, ip])],
        services: { "ns/web.ns.svc.cluster.local": { ports: [] } },
      },
    });
    // Filled before the server exists: no change is still on its way to the stream when it opens (the
    // hook below would take a changed Service's pods for ones the stream asked about).
    const cache = new ResourceCache();
    cache.batch(() => {
      cache.set(A, "ns/web.ns.svc.cluster.local", svc(1), { aliases: ["net/10.96.0.1"] });
      cache.set(A, "pod-1", backing("pod-1", 1), { aliases: ["net/10.0.0.1"] });
      cache.set(A, "local", backing("local", 5, "node-a"), { aliases: ["net/10.0.0.5"] });
      cache.set(A, "stranger", workload("stranger", "s", 7), { aliases: ["net/10.0.0.7"] });
    });
    const server = createXdsServer({
      cache,
      debounceMs: 0,
      // What the control plane supplies: a Service's workloads, and the pods of the client's node.
      related: ({ names, subscribed, cache, context, typeUrl }) => {
        seen.push([...names]);
        const out: string[] = [];
        for (const name of cache.names(typeUrl)) {
          const w = cache.get(A, name)?.workload;
          if (w === undefined) continue;
          if (w.node === context.node?.metadata.NODE_NAME) out.push(name);
          for (const asked of [...names, ...subscribed]) {
            const primary = cache.resolveName(A, asked);
            if (primary !== undefined && w.services[primary] !== undefined) out.push(name);
          }
        }
        return out;
      },
    });
    const port = await server.listen();
    const s = openDelta(port);
    // Closed whatever the assertions find: a stream left open would hold the file until its timeout.
    t.after(async () => {
      s.close();
      await server.close();
    });
    s.send({
      typeUrl: A,
      node: { id: "zt", metadata: structFromJson({ NODE_NAME: "node-a" }) },
      resourceNamesSubscribe: ["*"],
      resourceNamesUnsubscribe: ["*"],
    });
    const first = await s.next();
    assert.deepEqual(deltaNames(first), ["local"], "subscribing to nothing still brings the node's pods");
    s.send({ typeUrl: A, responseNonce: first.nonce });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["net/10.96.0.1", "net/10.1.2.3"] });
    const answer = await s.next();
    assert.deepEqual(deltaNames(answer), ["ns/web.ns.svc.cluster.local", "pod-1"]);
    assert.deepEqual(answer.resources.find((r) => r.name === "ns/web.ns.svc.cluster.local")?.aliases, [
      "net/10.96.0.1",
    ]);
    assert.deepEqual(answer.removedResources, ["net/10.1.2.3"], "an unknown name is reported removed");
    s.send({ typeUrl: A, responseNonce: answer.nonce });
    // A new pod behind the Service joins the subscription; a pod of no interest does not reach it.
    server.cache.set(A, "unrelated", workload("unrelated", "u", 8), { aliases: ["net/10.0.0.8"] });
    server.cache.set(A, "pod-2", backing("pod-2", 2), { aliases: ["net/10.0.0.2"] });
    const push = await s.next();
    assert.deepEqual(deltaNames(push), ["pod-2"]);
    s.send({ typeUrl: A, responseNonce: push.nonce });
    // By hostname: the Service's primary name is its `namespace/hostname`.
    s.send({ typeUrl: A, resourceNamesSubscribe: ["ns/web.ns.svc.cluster.local"] });
    assert.deepEqual(deltaNames(await s.next()), ["ns/web.ns.svc.cluster.local"]);
    const subs = server.subscriptions(server.streams()[0]?.id ?? -1)?.get(A);
    assert.equal(subs?.wildcard, false);
    assert.deepEqual([...(subs?.names ?? [])].sort(), [
      "local",
      "net/10.1.2.3",
      "net/10.96.0.1",
      "ns/web.ns.svc.cluster.local",
      "pod-1",
      "pod-2",
    ]);
    assert.deepEqual(seen[0], [], "the hook sees the first request");
  });

  it("stops following the resource that answered an alias once the alias is unsubscribed", async () => {
    const server = createXdsServer({
      debounceMs: 0,
      // u2 comes with net/10.0.0.1; u3 with it too, and is also "on the client's node".
      related: ({ names, subscribed }) => [
        ...(names.includes("net/10.0.0.1") || subscribed.has("net/10.0.0.1") ? ["u2"] : []),
        "u3",
      ],
    });
    seed(server, 3);
    const port = await server.listen();
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["*"], resourceNamesUnsubscribe: ["*"] });
    const first = await s.next();
    assert.deepEqual(deltaNames(first), ["u3"]);
    s.send({ typeUrl: A, responseNonce: first.nonce });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["net/10.0.0.1"] });
    const answer = await s.next();
    assert.deepEqual(deltaNames(answer), ["u1", "u2"]);
    s.send({ typeUrl: A, responseNonce: answer.nonce });
    const id = server.streams()[0]?.id ?? -1;
    s.send({ typeUrl: A, resourceNamesUnsubscribe: ["net/10.0.0.1"] });
    for (let i = 0; i < 200 && server.subscriptions(id)?.get(A)?.names.includes("u1"); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    // u1 answered the alias and is released (the hook does not name it); what the hook added stays.
    assert.deepEqual([...(server.subscriptions(id)?.get(A)?.names ?? [])].sort(), ["u2", "u3"]);
    server.cache.set(A, "u1", workload("u1", "changed", 1), { aliases: ["net/10.0.0.1"] });
    server.cache.set(A, "u3", workload("u3", "changed", 3), { aliases: ["net/10.0.0.3"] });
    assert.deepEqual(deltaNames(await s.next()), ["u3"]);
    s.close();
    await server.close();
  });

  it("a wildcard stream never calls the related hook, and a throwing hook adds nothing", async () => {
    let calls = 0;
    const server = createXdsServer({
      debounceMs: 0,
      related: () => {
        calls++;
        throw new Error("broken hook");
      },
    });
    seed(server, 2);
    const port = await server.listen();
    const wild = openDelta(port);
    wild.send({ typeUrl: A });
    assert.deepEqual(deltaNames(await wild.next()), ["u1", "u2"]);
    assert.equal(calls, 0);
    const named = openDelta(port);
    named.send({ typeUrl: A, resourceNamesSubscribe: ["net/10.0.0.2"] });
    assert.deepEqual(deltaNames(await named.next()), ["u2"]);
    assert.equal(calls, 1);
    wild.close();
    named.close();
    await server.close();
  });

  it("shows each stream only what its visibility hook allows, by node metadata", async () => {
    const Z = TypeUrl.authorization;
    const server = createXdsServer({
      debounceMs: 0,
      visible: (context, resource) =>
        resource.name.startsWith(`${String(context.node?.metadata.NAMESPACE)}/`),
    });
    server.cache.set(Z, "a/p1", { name: "p1", namespace: "a" });
    server.cache.set(Z, "b/p2", { name: "p2", namespace: "b" });
    const port = await server.listen();
    const delta = openDelta(port);
    delta.send({ typeUrl: Z, node: { id: "zt-a", metadata: structFromJson({ NAMESPACE: "a" }) } });
    assert.deepEqual(deltaNames(await delta.next()), ["a/p1"]);
    delta.send({ typeUrl: Z, resourceNamesSubscribe: ["b/p2"] });
    assert.deepEqual((await delta.next()).removedResources, ["b/p2"]);
    const sotw = openSotw(port);
    sotw.send({ typeUrl: Z, node: { id: "zt-b", metadata: structFromJson({ NAMESPACE: "b" }) } });
    const res = await sotw.next();
    assert.equal(res.resources.length, 1);
    delta.close();
    sotw.close();
    await server.close();
  });

  it("can be added to an existing grpc-js server", async () => {
    const grpcServer = new grpc.Server();
    const server = createXdsServer({ debounceMs: 0 });
    server.cache.set(A, "u1", workload("u1", "w1", 1));
    server.addTo(grpcServer);
    const port = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    const s = openDelta(port);
    s.send({ typeUrl: A });
    assert.deepEqual(deltaNames(await s.next()), ["u1"]);
    s.close();
    await server.close();
    grpcServer.forceShutdown();
  });

  it("keeps what an on-demand client holds subscribed when it reconnects with initial_resource_versions", async () => {
    const server = createXdsServer({ debounceMs: 0 });
    seed(server, 3);
    const port = await server.listen();
    const before = openDelta(port);
    before.send({ typeUrl: A, resourceNamesSubscribe: ["*"], resourceNamesUnsubscribe: ["*"] });
    await before.next();
    before.send({ typeUrl: A, resourceNamesSubscribe: ["net/10.0.0.1", "u2"] });
    const held = await before.next();
    before.close();
    const versions = Object.fromEntries(held.resources.map((r) => [r.name, r.version]));
    assert.deepEqual(Object.keys(versions).sort(), ["u1", "u2"]);
    server.cache.set(A, "u2", workload("u2", "changed-while-away", 2), { aliases: ["net/10.0.0.2"] });
    // ztunnel with XDS_ON_DEMAND reconnects by subscribing to nothing and listing what it holds
    // (a name it asked for and got no answer yet with an empty version).
    const after = openDelta(port);
    after.send({
      typeUrl: A,
      resourceNamesSubscribe: ["*"],
      resourceNamesUnsubscribe: ["*"],
      initialResourceVersions: { ...versions, gone: "v-old", pending: "" },
    });
    const resync = await after.next();
    assert.deepEqual(deltaNames(resync), ["u2"]);
    assert.deepEqual([...resync.removedResources].sort(), ["gone", "pending"]);
    const id = server.streams().at(-1)?.id ?? -1;
    assert.deepEqual([...(server.subscriptions(id)?.get(A)?.names ?? [])].sort(), [
      "gone",
      "pending",
      "u1",
      "u2",
    ]);
    after.send({ typeUrl: A, responseNonce: resync.nonce });
    // What it holds is still followed: a change to it is pushed, before the answer to a later request.
    server.cache.set(A, "u1", workload("u1", "changed-after", 1), { aliases: ["net/10.0.0.1"] });
    server.flushNow();
    after.send({ typeUrl: A, resourceNamesSubscribe: ["u3"] });
    assert.deepEqual(deltaNames(await after.next()), ["u1"]);
    after.close();
    await server.close();
  });

  it("lets a wildcard client that holds more resources than maxNamesPerType reconnect", async () => {
    const server = createXdsServer({ debounceMs: 0, maxNamesPerType: 2 });
    seed(server, 4);
    const port = await server.listen();
    const before = openDelta(port);
    before.send({ typeUrl: A });
    const held = await before.next();
    before.close();
    assert.equal(held.resources.length, 4);
    const versions = Object.fromEntries(held.resources.map((r) => [r.name, r.version]));
    const after = openDelta(port);
    after.send({ typeUrl: A, initialResourceVersions: versions });
    const resync = await after.next();
    assert.deepEqual(resync.resources, []);
    assert.deepEqual(resync.removedResources, []);
    after.close();
    // Names an on-demand client holds are subscriptions, and still count toward the cap.
    const onDemand = openDelta(port);
    onDemand.send({
      typeUrl: A,
      resourceNamesSubscribe: ["*"],
      resourceNamesUnsubscribe: ["*"],
      initialResourceVersions: versions,
    });
    assert.equal((await onDemand.status).code, 3);
    await server.close();
  });

  it("tells a client of the deletion of a resource it still asks for by name after giving up its alias", async () => {
    const server = createXdsServer({ debounceMs: 0 });
    seed(server, 3);
    const port = await server.listen();
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["*"], resourceNamesUnsubscribe: ["*"] });
    const first = await s.next();
    s.send({ typeUrl: A, responseNonce: first.nonce });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1", "net/10.0.0.1"] });
    const answer = await s.next();
    assert.deepEqual(deltaNames(answer), ["u1"]);
    s.send({ typeUrl: A, responseNonce: answer.nonce });
    s.send({ typeUrl: A, resourceNamesUnsubscribe: ["net/10.0.0.1"] });
    // Requests on one stream are handled in order: this answer proves the unsubscribe was applied.
    s.send({ typeUrl: TypeUrl.authorization, resourceNamesSubscribe: ["sync"] });
    assert.equal((await s.next()).typeUrl, TypeUrl.authorization);
    server.cache.delete(A, "u1");
    server.flushNow();
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u3"] });
    const removal = await s.next();
    assert.deepEqual(removal.removedResources, ["u1"]);
    s.close();
    await server.close();
  });

  it("keeps following a resource asked for by alias after its primary name is unsubscribed", async () => {
    const server = createXdsServer({ debounceMs: 0 });
    seed(server, 3);
    const port = await server.listen();
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["*"], resourceNamesUnsubscribe: ["*"] });
    const first = await s.next();
    s.send({ typeUrl: A, responseNonce: first.nonce });
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u1", "net/10.0.0.1"] });
    const answer = await s.next();
    assert.deepEqual(deltaNames(answer), ["u1"]);
    s.send({ typeUrl: A, responseNonce: answer.nonce });
    s.send({ typeUrl: A, resourceNamesUnsubscribe: ["u1"] });
    // Requests on one stream are handled in order: this answer proves the unsubscribe was applied.
    s.send({ typeUrl: TypeUrl.authorization, resourceNamesSubscribe: ["sync"] });
    assert.equal((await s.next()).typeUrl, TypeUrl.authorization);
    const id = server.streams()[0]?.id ?? -1;
    assert.deepEqual([...(server.subscriptions(id)?.get(A)?.names ?? [])].sort(), ["net/10.0.0.1", "u1"]);
    // The client still holds u1 through its alias: it must hear of its removal.
    server.cache.delete(A, "u1");
    server.flushNow();
    s.send({ typeUrl: A, resourceNamesSubscribe: ["u3"] });
    const removal = await s.next();
    assert.deepEqual(removal.removedResources, ["u1"]);
    s.close();
    await server.close();
  });

  it("closes a stream that subscribes to more names than allowed", async () => {
    const server = createXdsServer({ maxNamesPerType: 3 });
    const port = await server.listen();
    const s = openDelta(port);
    s.send({ typeUrl: A, resourceNamesSubscribe: ["a", "b", "c", "d"] });
    assert.equal((await s.status).code, 3);
    await server.close();
  });
});

describe("SotW ADS server", () => {
  let server: XdsServer;
  let port: number;
  const EDS = TypeUrl.clusterLoadAssignment;
  const cla = (name: string, p: number) => ({
    clusterName: name,
    endpoints: [
      { lbEndpoints: [{ endpoint: { address: { socketAddress: { address: "10.0.0.1", portValue: p } } } }] },
    ],
  });

  before(async () => {
    server = createXdsServer({ debounceMs: 0 });
    server.cache.batch(() => {
      server.cache.set(TypeUrl.cluster, "c1", { name: "c1", type: "EDS" });
      server.cache.set(TypeUrl.cluster, "c2", { name: "c2", type: "EDS" });
      server.cache.set(EDS, "c1", cla("c1", 80));
      server.cache.set(EDS, "c2", cla("c2", 81));
    });
    port = await server.listen();
  });
  after(() => server.close());

  it("sends the full set for wildcard types, nothing on ACK, and the full set again on change", async () => {
    const s = openSotw(port);
    s.send({ typeUrl: TypeUrl.cluster, node: { id: "grpc" } });
    const first = await s.next();
    assert.equal(first.resources.length, 2);
    assert.equal(first.versionInfo, server.cache.version(TypeUrl.cluster));
    s.send({ typeUrl: TypeUrl.cluster, versionInfo: first.versionInfo, responseNonce: first.nonce });
    server.cache.set(TypeUrl.cluster, "c3", { name: "c3" });
    const push = await s.next();
    const ctx = server.streams().find((c) => c.node?.id === "grpc");
    assert.deepEqual(ctx?.acks.get(TypeUrl.cluster), { nonce: first.nonce, versionInfo: first.versionInfo });
    assert.equal(push.resources.length, 3);
    assert.notEqual(push.versionInfo, first.versionInfo);
    s.close();
  });

  it("serves named EDS resources and pushes only when a watched name changes", async () => {
    const s = openSotw(port);
    s.send({ typeUrl: EDS, resourceNames: ["c1"] });
    const first = await s.next();
    assert.equal(first.resources.length, 1);
    s.send({
      typeUrl: EDS,
      versionInfo: first.versionInfo,
      resourceNames: ["c1"],
      responseNonce: first.nonce,
    });
    server.cache.set(EDS, "c2", cla("c2", 91));
    server.cache.set(EDS, "c1", cla("c1", 90));
    const push = await s.next();
    assert.equal(push.resources.length, 1);
    s.close();
  });

  it("records NACKs with the version kept, and ignores requests with a stale nonce", async () => {
    const s = openSotw(port);
    s.send({ typeUrl: EDS, resourceNames: ["c1"] });
    const first = await s.next();
    s.send({ typeUrl: EDS, resourceNames: ["c1"], responseNonce: "old", versionInfo: "" });
    s.send({
      typeUrl: EDS,
      resourceNames: ["c1"],
      responseNonce: first.nonce,
      versionInfo: "",
      errorDetail: { code: 14, message: "rejected" },
    });
    s.send({ typeUrl: EDS, resourceNames: ["c1", "c2"], responseNonce: first.nonce, versionInfo: "" });
    const next = await s.next();
    // Only the request that changed the names (with a current nonce) was answered.
    assert.equal(next.resources.length, 2);
    const ctx = server.streams().find((c) => c.nacks.length > 0);
    assert.equal(ctx?.nacks[0]?.errorDetail.message, "rejected");
    s.close();
  });

  it("answers the first request of a type even when it carries a nonce of an earlier stream", async () => {
    const s = openSotw(port);
    // A client back from a reconnect may still echo the last nonce it saw on its old stream.
    s.send({
      typeUrl: TypeUrl.cluster,
      versionInfo: "v-old",
      responseNonce: "earlier-stream",
      node: { id: "re" },
    });
    s.send({ typeUrl: EDS, resourceNames: ["c1"] });
    const first = await s.next();
    assert.equal(first.typeUrl, TypeUrl.cluster);
    assert.ok(first.resources.length >= 2);
    const second = await s.next();
    assert.equal(second.typeUrl, EDS);
    // Its ACK is taken as one, and an old nonce after that is still stale.
    s.send({ typeUrl: TypeUrl.cluster, versionInfo: first.versionInfo, responseNonce: first.nonce });
    s.send({ typeUrl: TypeUrl.cluster, resourceNames: ["c1"], responseNonce: "earlier-stream" });
    s.send({ typeUrl: EDS, resourceNames: ["c2"], responseNonce: second.nonce });
    const third = await s.next();
    assert.equal(third.typeUrl, EDS);
    const ctx = server.streams().find((c) => c.node?.id === "re");
    assert.equal(ctx?.acks.get(TypeUrl.cluster)?.nonce, first.nonce);
    s.close();
  });

  it("does not take a NACK of a type the stream never asked for as a subscription", async () => {
    const s = openSotw(port);
    s.send({
      typeUrl: TypeUrl.cluster,
      responseNonce: "elsewhere",
      errorDetail: { code: 3, message: "not requested" },
    });
    s.send({ typeUrl: EDS, resourceNames: ["c1"] });
    const first = await s.next();
    assert.equal(first.typeUrl, EDS);
    s.send({ typeUrl: TypeUrl.cluster, responseNonce: "" });
    const clusters = await s.next();
    assert.equal(clusters.typeUrl, TypeUrl.cluster);
    assert.ok(clusters.resources.length >= 2);
    s.close();
  });
});

describe("slow consumer", () => {
  const DELTA_REQ = "envoy.service.discovery.v3.DeltaDiscoveryRequest";
  const DELTA_RES = "envoy.service.discovery.v3.DeltaDiscoveryResponse";
  const SIZE = 8000;
  // About 8 KB per resource, so a few responses fill the HTTP/2 window of a client that stops reading.
  const big = (i: number, rev: number) => ({
    workload: {
      uid: `b${i}`,
      name: `w${i}`,
      namespace: "ns",
      canonicalName: "x".repeat(SIZE),
      canonicalRevision: `r${rev}`,
      addresses: [new Uint8Array([10, 1, 0, i])],
    },
  });
  const grpcFrame = (name: string, message: object): Buffer => {
    const body = typeRegistry.encode(name, message as never);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(body.length, 1);
    return Buffer.concat([header, body]);
  };

  async function until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  interface RawResponse {
    typeUrl: string;
    nonce: string;
    resources: { name: string; version: string }[];
  }

  /**
   * A bare HTTP/2 gRPC Delta stream on a connection of its own with a 64 KiB window: once paused it
   * takes one window of responses and no more. It ACKs each response it reads for which `ack` says so.
   */
  function openRaw(port: number, ack: (res: RawResponse) => boolean = () => true) {
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 65535 } });
    session.on("error", () => {});
    const stream = session.request({
      ":method": "POST",
      ":path": `/${ADS_SERVICE}/DeltaAggregatedResources`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.on("error", () => {});
    const client = {
      stream,
      /** Version of each resource last received, and how many times each was sent. */
      seen: new Map<string, string>(),
      sends: new Map<string, number>(),
      responses: 0,
      send: (request: object) => stream.write(grpcFrame(DELTA_REQ, request)),
      // Destroyed, not closed: a paused stream with data waiting would keep the session open.
      close: () => session.destroy(),
    };
    let pending = Buffer.alloc(0);
    stream.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const body = pending.subarray(5, 5 + pending.readUInt32BE(1));
        pending = pending.subarray(5 + body.length);
        const res = typeRegistry.decode(DELTA_RES, body) as RawResponse;
        client.responses++;
        for (const r of res.resources) {
          client.seen.set(r.name, r.version);
          client.sends.set(r.name, (client.sends.get(r.name) ?? 0) + 1);
        }
        if (ack(res)) client.send({ typeUrl: res.typeUrl, responseNonce: res.nonce });
      }
    });
    return client;
  }

  it("bounds the bytes buffered for a stream that stops reading and coalesces its pushes", async () => {
    const maxBufferedBytes = 16 * 1024;
    // Past the limit the server writes at most one more response per request it handles.
    const bound = maxBufferedBytes + 2 * (SIZE + 200);
    const server = createXdsServer({ debounceMs: 60_000, maxBufferedBytes });
    const NAMES = 100;
    const policy = (rev: number) => ({ name: "p1", namespace: "ns", groups: [], dryRun: rev % 2 === 1 });
    const setPolicy = (rev: number) =>
      server.cache.set(TypeUrl.authorization, "ns/p1", { ...policy(rev), name: `p1-r${rev}` });
    server.cache.batch(() => {
      for (let i = 1; i <= NAMES; i++) server.cache.set(A, `b${i}`, big(i, 0));
      setPolicy(0);
    });
    const port = await server.listen();
    const fast = openDelta(port);
    // Only the policy is ACKed before the stall; after it, everything is.
    const raw = openRaw(port, (res) => res.typeUrl === TypeUrl.authorization || !raw.stream.isPaused());
    const { stream: slow, seen, sends } = raw;
    try {
      fast.send({ typeUrl: A, node: { id: "fast" }, resourceNamesSubscribe: ["b1"] });
      let ack = (await fast.next()).nonce;
      const fastId = server.streams().find((c) => c.node?.id === "fast")?.id ?? -1;
      slow.write(grpcFrame(DELTA_REQ, { typeUrl: TypeUrl.authorization, node: { id: "slow" } }));
      const slowCtx = () => server.streams().find((c) => c.node?.id === "slow");
      await until(() => slowCtx()?.acks.has(TypeUrl.authorization) === true, "the policy ACK");
      const slowId = slowCtx()?.id ?? -1;
      slow.pause();
      // Every new name forces a response (~8 KB each, ~800 KB in all) whether or not it was ACKed.
      for (let i = 1; i <= NAMES; i++) {
        slow.write(grpcFrame(DELTA_REQ, { typeUrl: A, resourceNamesSubscribe: [`b${i}`] }));
      }
      const stats = () => {
        const s = server.streamStats(slowId);
        assert.ok(s, "slow stream is open");
        return s;
      };
      // Blocked, and the client's stream window is used up: nothing more can leave the server.
      await until(
        () => stats().blocked && stats().queuedRequests > 0 && slow.state.localWindowSize === 0,
        "the slow stream to block",
      );
      const responsesWhenBlocked = stats().responses;
      assert.equal(
        server.bufferedBytes(),
        stats().bufferedBytes + (server.streamStats(fastId)?.bufferedBytes ?? 0),
        "the server's total is the streams' sum",
      );
      assert.ok(server.bufferedBytes() > 0);
      assert.ok(responsesWhenBlocked < NAMES, `${responsesWhenBlocked} responses written`);

      // Many updates while it is blocked: the other stream gets every one of them.
      const UPDATES = 100;
      for (let rev = 1; rev <= UPDATES; rev++) {
        server.cache.set(A, "b1", big(1, rev));
        setPolicy(rev);
        server.flushNow();
        fast.send({ typeUrl: A, responseNonce: ack });
        const r = await fast.next();
        assert.deepEqual(deltaNames(r), ["b1"]);
        assert.equal(r.resources[0]?.version, server.cache.entry(A, "b1")?.version);
        ack = r.nonce;
        assert.ok(stats().bufferedBytes <= bound, `${stats().bufferedBytes} buffered`);
      }
      const held = stats();
      // A write already on the wire when the window closed may free room for one more response.
      assert.ok(
        held.responses <= responsesWhenBlocked + 2,
        `${held.responses - responsesWhenBlocked} written`,
      );
      assert.ok(held.peakBufferedBytes <= bound, `peak ${held.peakBufferedBytes} > ${bound}`);
      assert.ok(held.queuedRequests <= 64, `${held.queuedRequests} queued requests`);
      assert.equal(server.streamStats(fastId)?.blocked, false);

      // Reading again (and ACKing what it reads) brings it to the latest state, not through each update.
      const policySends = sends.get("ns/p1") ?? 0;
      const b1Sends = sends.get("b1") ?? 0;
      const latest = server.cache.entry(A, "b1")?.version;
      const latestPolicy = server.cache.entry(TypeUrl.authorization, "ns/p1")?.version;
      slow.resume();
      await until(
        () => seen.size === NAMES + 1 && seen.get("b1") === latest && seen.get("ns/p1") === latestPolicy,
        "the slow stream to catch up",
      );
      assert.equal((sends.get("ns/p1") ?? 0) - policySends, 1, `policy sent again for ${UPDATES} updates`);
      assert.ok((sends.get("b1") ?? 0) - b1Sends <= 2, `b1 sent ${sends.get("b1")} times`);
      assert.ok(raw.responses <= NAMES + 4, `${raw.responses} responses`);
      assert.ok(stats().peakBufferedBytes <= bound, `peak ${stats().peakBufferedBytes} > ${bound}`);
      await until(() => server.bufferedBytes() === 0, "every response to leave the server");
    } finally {
      raw.close();
      fast.close();
      await server.close();
    }
  });

  it("bounds the response bytes of every stream together and lets waiting streams through in turn", async () => {
    const maxTotalBufferedBytes = 64 * 1024;
    const queueTimes: number[] = [];
    const server = createXdsServer({
      debounceMs: 60_000,
      maxTotalBufferedBytes,
      metrics: {
        counter: () => ({ inc: () => {} }),
        gauge: () => ({ set: () => {}, inc: () => {}, dec: () => {} }),
        histogram: (name) => ({
          observe: (_labels, value) => {
            if (name === "pilot_proxy_queue_time") queueTimes.push(value);
          },
        }),
      },
    });
    // About 160 KB: one response to a wildcard subscription passes the bound on its own.
    const NAMES = 20;
    server.cache.batch(() => {
      for (let i = 1; i <= NAMES; i++) server.cache.set(A, `b${i}`, big(i, 0));
    });
    const port = await server.listen();
    const clients = [0, 1, 2, 3].map(() => openRaw(port));
    try {
      for (const [i, c] of clients.entries()) {
        c.stream.pause();
        c.send({ typeUrl: A, node: { id: `c${i}` }, resourceNamesSubscribe: ["*"] });
      }
      const stats = () => server.streams().map((ctx) => server.streamStats(ctx.id));
      await until(
        () =>
          stats().length === 4 &&
          stats().filter((s) => s?.responses === 1).length === 1 &&
          stats().filter((s) => s?.waiting === true && s.responses === 0).length === 3,
        "one stream to be sent its state and three to wait",
      );
      const response = server.bufferedBytes();
      assert.ok(response > maxTotalBufferedBytes, `${response} bytes: one whole response`);
      const first = clients.findIndex((_, i) => {
        const ctx = server.streams().find((c) => c.node?.id === `c${i}`);
        return ctx !== undefined && server.streamStats(ctx.id)?.responses === 1;
      });
      // Changes while they wait: the first stream holds them (not ACKed), the others are sent the
      // latest state when their turn comes.
      for (let rev = 1; rev <= 5; rev++) {
        server.cache.set(A, "b1", big(1, rev));
        server.flushNow();
      }
      assert.equal(stats().filter((s) => s?.waiting === true).length, 3);
      assert.ok(server.bufferedBytes() === response, "nothing more was written");
      (clients[first] as (typeof clients)[number]).stream.resume();
      await until(
        () => stats().filter((s) => s?.responses === 1 && !s.waiting).length === 1,
        "the next stream's turn",
      );
      for (const c of clients) c.stream.resume();
      const latest = server.cache.entry(A, "b1")?.version;
      await until(
        () => clients.every((c) => c.seen.size === NAMES && c.seen.get("b1") === latest),
        "every stream to reach the latest state",
      );
      await until(() => server.bufferedBytes() === 0, "every response to leave the server");
      const peak = server.peakBufferedBytes();
      assert.ok(peak >= response && peak < maxTotalBufferedBytes + response, `peak ${peak}`);
      for (const [i, c] of clients.entries()) {
        const b1 = c.sends.get("b1") ?? 0;
        assert.ok(b1 <= (i === first ? 2 : 1), `client ${i}: b1 sent ${b1} times`);
      }
      // Each of the three waited until the one before it was taken.
      assert.ok(queueTimes.length >= 3, `${queueTimes.length} waits observed`);
      assert.ok(
        queueTimes.every((s) => s >= 0 && s < 10),
        queueTimes.join(", "),
      );
    } finally {
      for (const c of clients) c.close();
      await server.close();
    }
  });

  it("refuses bounds that would hold every stream, with a typed error", () => {
    for (const options of [
      { maxTotalBufferedBytes: 0 },
      { maxTotalBufferedBytes: -1 },
      { maxTotalBufferedBytes: Number.NaN },
      { stalledResponseMs: 0 },
      { stalledResponseMs: Number.POSITIVE_INFINITY },
    ]) {
      assert.throws(
        () => createXdsServer(options),
        (err: unknown) => err instanceof XdsError && err.code === "ERR_XDS_INVALID_ARGUMENT",
        JSON.stringify(options),
      );
    }
    // No bound at all is a choice a caller may make.
    void createXdsServer({ maxTotalBufferedBytes: Number.POSITIVE_INFINITY }).close();
  });

  it("stops counting a response its client does not take after stalledResponseMs", async () => {
    const server = createXdsServer({
      debounceMs: 60_000,
      maxTotalBufferedBytes: 64 * 1024,
      stalledResponseMs: 300,
    });
    server.cache.batch(() => {
      for (let i = 1; i <= 20; i++) server.cache.set(A, `b${i}`, big(i, 0));
    });
    const port = await server.listen();
    const stuck = openRaw(port);
    const reader = openRaw(port);
    try {
      stuck.stream.pause();
      stuck.send({ typeUrl: A, node: { id: "stuck" }, resourceNamesSubscribe: ["*"] });
      const idOf = (node: string) => server.streams().find((c) => c.node?.id === node)?.id ?? -1;
      await until(() => server.streamStats(idOf("stuck"))?.responses === 1, "the stuck stream's response");
      const started = Date.now();
      reader.send({ typeUrl: A, node: { id: "reader" }, resourceNamesSubscribe: ["*"] });
      await until(() => server.streamStats(idOf("reader"))?.waiting === true, "the reader to wait");
      await until(() => reader.seen.size === 20, "the reader's state");
      const waited = Date.now() - started;
      assert.ok(waited >= 250, `the reader waited ${waited} ms`);
      // The stuck stream still holds its response; it no longer counts toward the total.
      assert.ok((server.streamStats(idOf("stuck"))?.bufferedBytes ?? 0) > 64 * 1024);
    } finally {
      stuck.close();
      reader.close();
      await server.close();
    }
  });

  it("shares one bound between servers given the same pushThrottle, and outlives one of them", async () => {
    const pushThrottle = createXdsPushThrottle({ maxTotalBufferedBytes: 64 * 1024 });
    const first = createXdsServer({ debounceMs: 60_000, pushThrottle });
    const second = createXdsServer({ debounceMs: 60_000, pushThrottle, cache: first.cache });
    first.cache.batch(() => {
      for (let i = 1; i <= 20; i++) first.cache.set(A, `b${i}`, big(i, 0));
    });
    const firstPort = await first.listen();
    const secondPort = await second.listen();
    const held = openRaw(firstPort);
    const reader = openRaw(secondPort);
    let firstClosed = false;
    try {
      held.stream.pause();
      held.send({ typeUrl: A, node: { id: "held" }, resourceNamesSubscribe: ["*"] });
      await until(
        () => first.streams().length === 1 && pushThrottle.bufferedBytes > 64 * 1024,
        "a response over the bound",
      );
      const response = pushThrottle.bufferedBytes;
      // The other server's stream waits for the first server's response, not a bound of its own.
      reader.send({ typeUrl: A, node: { id: "reader" }, resourceNamesSubscribe: ["*"] });
      const readerId = () => second.streams()[0]?.id ?? -1;
      await until(() => second.streamStats(readerId())?.waiting === true, "the reader to wait");
      assert.equal(pushThrottle.waiting, 1);
      assert.equal(reader.seen.size, 0);
      // Closing the first server ends its stream and releases its response; the queue goes on.
      await first.close();
      firstClosed = true;
      await until(() => reader.seen.size === 20, "the reader's state once the first server closed");
      await until(() => pushThrottle.bufferedBytes === 0, "every response to leave");
      assert.equal(pushThrottle.waiting, 0);
      assert.ok(pushThrottle.peakBufferedBytes >= response, `peak ${pushThrottle.peakBufferedBytes}`);
      assert.ok(
        pushThrottle.peakBufferedBytes < 64 * 1024 + response,
        `peak ${pushThrottle.peakBufferedBytes}`,
      );
      assert.equal(second.peakBufferedBytes(), pushThrottle.peakBufferedBytes);
    } finally {
      held.close();
      reader.close();
      if (!firstClosed) await first.close();
      await second.close();
    }
  });

  it("refuses a shared throttle together with bounds of its own, or one not made by createXdsPushThrottle", () => {
    const pushThrottle = createXdsPushThrottle();
    for (const options of [
      { pushThrottle, maxTotalBufferedBytes: 1024 },
      { pushThrottle, stalledResponseMs: 100 },
      { pushThrottle: { bufferedBytes: 0, peakBufferedBytes: 0, waiting: 0 } as never },
    ]) {
      assert.throws(
        () => createXdsServer(options),
        (err: unknown) => err instanceof XdsError && err.code === "ERR_XDS_INVALID_ARGUMENT",
      );
    }
    for (const options of [{ maxTotalBufferedBytes: 0 }, { stalledResponseMs: Number.NaN }]) {
      assert.throws(
        () => createXdsPushThrottle(options),
        (err: unknown) => err instanceof XdsError && err.code === "ERR_XDS_INVALID_ARGUMENT",
      );
    }
  });
});

describe("keepalive", () => {
  it("pings by default as istiod does: 30 s, closed 10 s after an unanswered PING", () => {
    assert.deepEqual(DEFAULT_XDS_SERVER_OPTIONS, {
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
    });
  });

  it(
    "drops the stream of a client that stopped answering, and keeps one that answers",
    { timeout: 20_000 },
    async () => {
      const server = createXdsServer({ debounceMs: 0 });
      seed(server, 1);
      const port = await server.listen("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), {
        "grpc.keepalive_time_ms": 300,
        // Room for a loaded machine: the answering client is in this process too.
        "grpc.keepalive_timeout_ms": 1000,
      });
      // Between one client and the server, a link that can be cut without a word to either end.
      const links: { client: Socket; upstream: Socket }[] = [];
      const front = createServer((client) => {
        const upstream = connectTcp(port, "127.0.0.1");
        client.pipe(upstream).pipe(client);
        client.on("error", () => {});
        upstream.on("error", () => {});
        links.push({ client, upstream });
      });
      await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", () => resolve()));
      const through = createXdsClient({
        address: `127.0.0.1:${(front.address() as AddressInfo).port}`,
        node: { id: "through-the-link" },
      });
      const direct = createXdsClient({ address: `127.0.0.1:${port}`, node: { id: "direct" } });
      try {
        through.watch(A);
        direct.watch(A);
        await Promise.all([through.ready(), direct.ready()]);
        const ids = () => server.streams().map((s) => s.node?.id ?? "");
        assert.deepEqual(ids().sort(), ["direct", "through-the-link"]);
        for (const { client, upstream } of links) {
          client.unpipe(upstream);
          upstream.unpipe(client);
          client.pause();
          upstream.pause();
        }
        const cutAt = Date.now();
        while (ids().includes("through-the-link")) {
          assert.ok(Date.now() - cutAt < 10_000, "the cut client's stream is still served after 10 s");
          await new Promise((r) => setTimeout(r, 20));
        }
        // Several PINGs later, the client that answers them is still served.
        await new Promise((r) => setTimeout(r, 1500));
        assert.deepEqual(ids(), ["direct"]);
      } finally {
        through.close();
        direct.close();
        for (const { client, upstream } of links) {
          client.destroy();
          upstream.destroy();
        }
        await new Promise((resolve) => front.close(resolve));
        await server.close();
      }
    },
  );
});

describe("streams not yet authenticated", () => {
  it(
    "closes a stream that sends no request within authenticationTimeoutMs",
    { timeout: 20_000 },
    async () => {
      const server = createXdsServer({ debounceMs: 0, authenticationTimeoutMs: 1000 });
      seed(server, 1);
      const port = await server.listen();
      try {
        const silent = openDelta(port);
        const started = Date.now();
        const status = await silent.status;
        assert.equal(status.code, grpc.status.UNAUTHENTICATED);
        assert.match(status.details, /no authenticated discovery request within 1000 ms/);
        assert.ok(Date.now() - started < 5000);
        assert.equal(server.streams().length, 0);
        // A stream that asks in time is served, and stays past the deadline.
        const asking = openDelta(port);
        asking.send({ typeUrl: A, node: { id: "n1" }, resourceNamesSubscribe: ["*"] });
        assert.equal((await asking.next()).resources.length, 1);
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(server.streams().length, 1);
        asking.close();
      } finally {
        await server.close();
      }
    },
  );

  it(
    "refuses streams past maxUnauthenticatedStreams, and counts a stream out once authenticated",
    { timeout: 20_000 },
    async () => {
      let admit: () => void = () => {};
      const admitted = new Promise<void>((resolve) => {
        admit = resolve;
      });
      const server = createXdsServer({
        debounceMs: 0,
        maxUnauthenticatedStreams: 2,
        // Authentication waits until the test lets it through.
        authenticate: async () => {
          await admitted;
          return "ok";
        },
      });
      seed(server, 1);
      const port = await server.listen();
      try {
        const waiting = [openDelta(port), openDelta(port)];
        for (const s of waiting) s.send({ typeUrl: A, node: { id: "n" }, resourceNamesSubscribe: ["*"] });
        while (server.streams().length < 2) await new Promise((r) => setTimeout(r, 10));
        const third = openDelta(port);
        const status = await third.status;
        assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
        assert.match(status.details, /too many xds streams not yet authenticated/);
        admit();
        for (const s of waiting) assert.equal((await s.next()).resources.length, 1);
        // Both are authenticated now: a new stream is taken again.
        const fourth = openDelta(port);
        fourth.send({ typeUrl: A, node: { id: "n" }, resourceNamesSubscribe: ["*"] });
        assert.equal((await fourth.next()).resources.length, 1);
        for (const s of [...waiting, fourth]) s.close();
      } finally {
        await server.close();
      }
    },
  );

  it("refuses limits that are no bound", () => {
    for (const options of [
      { maxUnauthenticatedStreams: 0 },
      { maxUnauthenticatedStreams: 1.5 },
      { authenticationTimeoutMs: 0 },
      { authenticationTimeoutMs: Number.POSITIVE_INFINITY },
    ]) {
      assert.throws(
        () => createXdsServer(options),
        (e: unknown) => e instanceof XdsError && e.code === "ERR_XDS_INVALID_ARGUMENT",
        JSON.stringify(options),
      );
    }
  });
});

describe("what one stream may make the server hold", () => {
  /** Full names of every message type the descriptor holds (the server knows each as a type URL). */
  function messageNames(ns: { nested?: Record<string, unknown> }, prefix = ""): string[] {
    const out: string[] = [];
    for (const [name, value] of Object.entries(ns.nested ?? {})) {
      const full = prefix === "" ? name : `${prefix}.${name}`;
      const node = value as { fields?: unknown; nested?: Record<string, unknown> };
      if (node.fields !== undefined) out.push(full);
      if (node.nested !== undefined) out.push(...messageNames(node, full));
    }
    return out;
  }

  it("closes a stream that watches more than 32 types, or names a resource with more than 4096 characters", async () => {
    const server = createXdsServer({ debounceMs: 0 });
    seed(server, 1);
    const port = await server.listen();
    try {
      const types = messageNames(descriptor as { nested?: Record<string, unknown> }).map(
        (n) => `type.googleapis.com/${n}`,
      );
      assert.ok(types.length > 33, `${types.length} message types`);
      const many = openDelta(port);
      for (const typeUrl of types.slice(0, 33))
        many.send({ typeUrl, node: { id: "n" }, resourceNamesSubscribe: ["x"] });
      const status = await many.status;
      assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
      assert.match(status.details, /more than 32 resource types on one stream/);
      const long = openDelta(port);
      long.send({ typeUrl: A, node: { id: "n" }, resourceNamesSubscribe: ["x".repeat(4097)] });
      const longStatus = await long.status;
      assert.equal(longStatus.code, grpc.status.INVALID_ARGUMENT);
      assert.match(longStatus.details, /a resource name longer than 4096 characters/);
      const sotw = openSotw(port);
      sotw.send({ typeUrl: A, node: { id: "n" }, resourceNames: ["y".repeat(4097)] });
      assert.equal((await sotw.status).code, grpc.status.INVALID_ARGUMENT);
      // 32 types (the Address type among them) and names of 4096 characters are served.
      const fine = openDelta(port);
      const others = types.filter((t) => t !== A).slice(0, 31);
      for (const typeUrl of others)
        fine.send({ typeUrl, node: { id: "n" }, resourceNamesSubscribe: ["z".repeat(4096)] });
      fine.send({ typeUrl: A, node: { id: "n" }, resourceNamesSubscribe: ["u1"] });
      let response = await fine.next();
      while (response.typeUrl !== A) response = await fine.next();
      assert.equal(response.resources[0]?.name, "u1");
      assert.equal(server.streams().length, 1);
      fine.close();
    } finally {
      await server.close();
    }
  });
});
