// The fake apiserver, checked with the real @kubernetes/client-node informer (ListWatch + Watch) and
// typed APIs: if these pass, the control plane's informers see the protocol a real server speaks.
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import {
  ApiException,
  AuthenticationV1Api,
  CoordinationV1Api,
  KubeConfig,
  type KubernetesObject,
  ListWatch,
  Watch,
} from "@kubernetes/client-node";
import { KubeRequestError, kubeRequest, listAll, type RawKubeList } from "../../src/sources/kube-client.js";
import { createFakeApiServer, type FakeApiServer, type FakeApiServerOptions } from "./fake-apiserver.js";

const PODS = "/api/v1/pods";

function pod(name: string, extra: Record<string, unknown> = {}) {
  return { apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "default", ...extra }, spec: {} };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("fake apiserver with @kubernetes/client-node", () => {
  let server: FakeApiServer | undefined;
  const informers: ListWatch<KubernetesObject>[] = [];

  afterEach(async () => {
    for (const i of informers.splice(0)) await i.stop();
    await server?.close();
    server = undefined;
  });

  async function start(
    options: FakeApiServerOptions = {},
  ): Promise<{ server: FakeApiServer; kc: KubeConfig }> {
    server = await createFakeApiServer(options);
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    return { server, kc };
  }

  /** A pod informer as the Kubernetes source builds one: paged list, bookmarks, restart after errors. */
  function podInformer(kc: KubeConfig, opts: { pageSize?: number; labelSelector?: string } = {}) {
    const watch = new Watch(kc);
    const selector =
      opts.labelSelector === undefined
        ? ""
        : `&${new URLSearchParams({ labelSelector: opts.labelSelector })}`;
    const path = `${PODS}?allowWatchBookmarks=true${selector}`;
    const informer = new ListWatch<KubernetesObject>(
      path,
      watch,
      async () =>
        (await listAll(kc, PODS, opts.pageSize ?? 500, opts.labelSelector)) as unknown as {
          items: KubernetesObject[];
        } as never,
      false,
    );
    const events: string[] = [];
    let stopped = false;
    informer.on("add", (o) => events.push(`add ${o.metadata?.name}`));
    informer.on("update", (o) => events.push(`update ${o.metadata?.name} ${o.metadata?.resourceVersion}`));
    informer.on("delete", (o) => events.push(`delete ${o.metadata?.name}`));
    informer.on("error", () => {
      // client-node stops an informer on an error; its users restart it.
      if (!stopped) setTimeout(() => void informer.start(), 50);
    });
    informers.push(informer);
    const stop = informer.stop.bind(informer);
    informer.stop = async () => {
      stopped = true;
      await stop();
    };
    return { informer, events };
  }

  const names = (i: ListWatch<KubernetesObject>) =>
    i
      .list()
      .map((o) => o.metadata?.name)
      .sort();
  const lists = (s: FakeApiServer) => s.requests.filter((r) => r.path === PODS && r.query.watch !== "true");
  const watches = (s: FakeApiServer) => s.requests.filter((r) => r.path === PODS && r.query.watch === "true");

  it("lists in chunks with limit and continue, then watches from the list's resourceVersion with bookmarks", async () => {
    const { server, kc } = await start();
    for (const n of ["a", "b", "c", "d", "e"]) server.apply(pod(n));
    const listRv = String(server.resourceVersion());
    const { informer, events } = podInformer(kc, { pageSize: 2 });
    await informer.start();
    assert.deepEqual(names(informer), ["a", "b", "c", "d", "e"]);
    const pages = lists(server);
    assert.equal(pages.length, 3);
    assert.deepEqual(
      pages.map((r) => r.query.limit),
      ["2", "2", "2"],
    );
    assert.equal(pages[0]?.query.continue, undefined);
    assert.ok(pages[1]?.query.continue && pages[2]?.query.continue);
    await until("watch", () => watches(server).length === 1);
    assert.equal(watches(server)[0]?.query.resourceVersion, listRv);
    assert.equal(watches(server)[0]?.query.allowWatchBookmarks, "true");

    server.apply(pod("f"));
    server.apply(pod("a", { labels: { v: "2" } }));
    server.remove("v1", "Pod", "b", "default");
    await until("events", () => events.length === 8);
    assert.deepEqual(events.slice(5), ["add f", `update a ${server.resourceVersion() - 1}`, "delete b"]);
  });

  it("filters lists and watches by labelSelector: objects entering the selection are added, leaving it deleted", async () => {
    const { server, kc } = await start();
    server.apply(pod("a", { labels: { tier: "web" } }));
    server.apply(pod("b", { labels: { tier: "db" } }));
    server.apply(pod("c"));
    server.apply(pod("d", { labels: { tier: "web" } }));
    const { informer, events } = podInformer(kc, { pageSize: 1, labelSelector: "tier!=db" });
    await informer.start();
    assert.deepEqual(names(informer), ["a", "c", "d"], "!= selects objects without the label too");
    assert.ok(lists(server).every((r) => r.query.labelSelector === "tier!=db"));
    await until("watch", () => watches(server).length === 1);

    server.apply(pod("a", { labels: { tier: "db" } })); // leaves
    server.apply(pod("b", { labels: { tier: "web" } })); // enters
    server.apply(pod("b", { labels: { tier: "web", v: "2" } })); // stays
    server.apply(pod("e", { labels: { tier: "db" } })); // never in
    server.remove("v1", "Pod", "c", "default");
    await until("events", () => events.length === 7);
    assert.deepEqual(
      events.slice(3).map((e) => e.split(" ").slice(0, 2).join(" ")),
      ["delete a", "add b", "update b", "delete c"],
    );
    assert.deepEqual(names(informer), ["b", "d"]);

    for (const selector of ["tier in (web,db)", "!tier", "tier", "tier==web,v=2", "tier notin (db)"]) {
      const list = (await listAll(kc, PODS, 500, selector)) as RawKubeList;
      const want = {
        "tier in (web,db)": ["a", "b", "d", "e"],
        "!tier": [],
        tier: ["a", "b", "d", "e"],
        "tier==web,v=2": ["b"],
        "tier notin (db)": ["b", "d"],
      }[selector];
      assert.deepEqual(list.items.map((o) => o.metadata?.name).sort(), want, selector);
    }
    await assert.rejects(listAll(kc, PODS, 500, "tier in web"), (err: unknown) => {
      assert.ok(err instanceof KubeRequestError);
      assert.equal(err.statusCode, 400);
      return true;
    });
  });

  it("advances the informer's resourceVersion by bookmarks when other kinds change", async () => {
    const { server, kc } = await start({ bookmarkIntervalMs: 30 });
    server.apply(pod("a"));
    const { informer, events } = podInformer(kc);
    await informer.start();
    await until("watch", () => server.watchCount() === 1);
    server.apply({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "s", namespace: "default" },
      spec: {},
    });
    const target = String(server.resourceVersion());
    await until("bookmark", () => informer.latestResourceVersion() === target);
    assert.deepEqual(events, ["add a"]);
  });

  it("answers a watch from a compacted resourceVersion with 410, and the informer relists", async () => {
    const { server, kc } = await start();
    for (const n of ["a", "b", "c"]) server.apply(pod(n));
    const { informer, events } = podInformer(kc);
    await informer.start();
    await until("watch", () => server.watchCount() === 1);
    // Down while pods change; back with a fresh watch cache, so the resume is too old.
    await server.restart({
      downMs: 100,
      dropHistory: true,
      whileDown: () => {
        server.remove("v1", "Pod", "b", "default");
        server.apply(pod("d"));
      },
    });
    await until("relist", () => names(informer).join() === "a,c,d", 15_000);
    assert.equal(lists(server).length, 2);
    assert.ok(events.includes("delete b") && events.includes("add d"));
    // The resume that got 410 named the old resourceVersion; the one after the relist the new one.
    await until("the watch after the relist", () => watches(server).length >= 3);
    const [first, resumed, afterRelist] = watches(server).map((r) => Number(r.query.resourceVersion));
    assert.equal(resumed, first);
    assert.equal(afterRelist, server.resourceVersion());
  });

  it("resumes from its resourceVersion after a restart that keeps the history: no relist, nothing lost", async () => {
    const { server, kc } = await start();
    server.apply(pod("a"));
    const { informer } = podInformer(kc);
    await informer.start();
    await until("watch", () => server.watchCount() === 1);
    await server.restart({ downMs: 50, whileDown: () => server.apply(pod("b")) });
    await until("pod b", () => names(informer).join() === "a,b", 15_000);
    assert.equal(lists(server).length, 1);
  });

  it("sends ERROR 410 to open watches on expireWatches(), and the informer relists", async () => {
    const { server, kc } = await start();
    server.apply(pod("a"));
    const { informer } = podInformer(kc);
    await informer.start();
    await until("watch", () => server.watchCount() === 1);
    server.expireWatches();
    await until("relist", () => lists(server).length === 2);
    server.apply(pod("b"));
    await until("pod b", () => names(informer).join() === "a,b");
  });

  it("delivers a slow watch's events late but in order", async () => {
    const { server, kc } = await start();
    server.apply(pod("a"));
    const { informer, events } = podInformer(kc);
    await informer.start();
    await until("watch", () => server.watchCount() === 1);
    server.setWatchDelay(150);
    const t0 = Date.now();
    for (const v of ["1", "2", "3"]) server.apply(pod("a", { labels: { v } }));
    const expected = [2, 1, 0].map((back) => `update a ${server.resourceVersion() - back}`);
    await until("updates", () => events.length === 4);
    assert.ok(Date.now() - t0 >= 140, "held back by the slow watch");
    assert.deepEqual(events.slice(1), expected);
    server.setWatchDelay(0);
    server.apply(pod("b"));
    await until("pod b", () => names(informer).join() === "a,b");
    assert.equal(lists(server).length, 1);
  });

  it("ends watches at timeoutSeconds or its own watch timeout; the informer resumes without a relist", async () => {
    const { server, kc } = await start({ watchTimeoutMs: 150 });
    const { informer } = podInformer(kc);
    await informer.start();
    await until("three watches", () => watches(server).length >= 3, 8_000);
    assert.equal(lists(server).length, 1);
    server.apply(pod("z"));
    await until("pod z", () => names(informer).join() === "z");
    // timeoutSeconds in the request wins over the server's default.
    const res = await fetch(
      `${server.url}${PODS}?watch=true&timeoutSeconds=1&resourceVersion=${server.resourceVersion()}`,
    );
    const t0 = Date.now();
    await res.text();
    assert.ok(Date.now() - t0 >= 900, "ended by timeoutSeconds=1, not the 150 ms default");
  });

  it("refuses an expired continue token with 410; listAll starts over with one unpaged list", async () => {
    const { server, kc } = await start();
    for (const n of ["a", "b", "c"]) server.apply(pod(n));
    const first = (await kubeRequest(kc, "GET", `${PODS}?limit=1`)) as RawKubeList;
    assert.ok(first.metadata.continue);
    server.compact();
    await assert.rejects(
      kubeRequest(kc, "GET", `${PODS}?limit=1&continue=${first.metadata.continue}`),
      (e: unknown) => e instanceof KubeRequestError && e.statusCode === 410 && e.reason === "Expired",
    );
    // listAll across a compaction between its pages: page 1, page 2 refused, one unpaged list.
    let compacted = false;
    server.setRequestHook((r) => {
      if (r.query.continue !== undefined && !compacted) {
        compacted = true;
        server.compact();
      }
    });
    const before = server.requests.length;
    const all = await listAll(kc, PODS, 1);
    assert.deepEqual(names({ list: () => all.items } as never), ["a", "b", "c"]);
    assert.deepEqual(
      server.requests.slice(before).map((r) => [r.query.limit, r.query.continue === undefined]),
      [
        ["1", true],
        ["1", false],
        [undefined, true],
      ],
    );
  });

  it("answers 404 for a custom resource that is not installed, and 401 without the bearer token", async () => {
    const { kc } = await start({ crds: [], bearerToken: "admin-token" });
    await assert.rejects(
      listAll(kc, "/apis/security.istio.io/v1/authorizationpolicies"),
      (e: unknown) => e instanceof KubeRequestError && e.statusCode === 404,
    );
    const noToken = new KubeConfig();
    noToken.loadFromString(server?.kubeconfig().replace("admin-token", "wrong") ?? "");
    await assert.rejects(
      listAll(noToken, PODS),
      (e: unknown) => e instanceof KubeRequestError && e.statusCode === 401,
    );
    assert.equal((await listAll(kc, PODS)).items.length, 0);
  });

  it("reviews tokens (authentication.k8s.io/v1) by audience", async () => {
    const { kc } = await start({
      tokens: {
        "zt-token": {
          username: "system:serviceaccount:istio-system:ztunnel",
          audiences: ["istio-ca"],
          extra: { "authentication.kubernetes.io/pod-name": ["ztunnel-x"] },
        },
      },
    });
    const api = kc.makeApiClient(AuthenticationV1Api);
    const review = (token: string, audiences: string[]) =>
      api.createTokenReview({ body: { spec: { token, audiences } } });
    const ok = await review("zt-token", ["istio-ca"]);
    assert.equal(ok.status?.authenticated, true);
    assert.equal(ok.status?.user?.username, "system:serviceaccount:istio-system:ztunnel");
    assert.deepEqual(ok.status?.user?.extra?.["authentication.kubernetes.io/pod-name"], ["ztunnel-x"]);
    assert.deepEqual(ok.status?.audiences, ["istio-ca"]);
    assert.equal((await review("zt-token", ["other"])).status?.authenticated, false);
    assert.equal((await review("forged", ["istio-ca"])).status?.authenticated, false);
  });

  it("creates, reads and replaces Leases (coordination.k8s.io/v1) with optimistic concurrency", async () => {
    const { kc } = await start();
    const api = kc.makeApiClient(CoordinationV1Api);
    const namespace = "istio-system";
    const created = await api.createNamespacedLease({
      namespace,
      body: { metadata: { name: "cp", namespace }, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } },
    });
    assert.equal(created.spec?.holderIdentity, "a");
    await assert.rejects(
      api.createNamespacedLease({ namespace, body: { metadata: { name: "cp", namespace }, spec: {} } }),
      (e: unknown) => e instanceof ApiException && e.code === 409,
    );
    const read = await api.readNamespacedLease({ name: "cp", namespace });
    const replaced = await api.replaceNamespacedLease({
      name: "cp",
      namespace,
      body: { ...read, spec: { ...read.spec, holderIdentity: "b" } },
    });
    assert.equal(replaced.spec?.holderIdentity, "b");
    // A writer holding the old version loses.
    await assert.rejects(
      api.replaceNamespacedLease({
        name: "cp",
        namespace,
        body: { ...read, spec: { ...read.spec, holderIdentity: "c" } },
      }),
      (e: unknown) => e instanceof ApiException && e.code === 409,
    );
  });
});
