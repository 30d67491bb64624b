// The requests to the API server share one keep-alive agent per kubeconfig: a burst of token reviews
// (one per xDS stream and CSR) opens a bounded number of connections, not one TLS connection each.
import assert from "node:assert/strict";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import { KubeConfig } from "@kubernetes/client-node";
import {
  KubeRequestError,
  kubeRequest,
  listAll,
  MAX_API_SERVER_SOCKETS,
  watchRequest,
} from "./kube-client.js";

async function tlsApiServer(handler: (path: string) => { status: number; body: unknown } | undefined) {
  const ca = await createCertificateAuthority();
  const svid = await ca.issue({ spiffeId: "spiffe://cluster.local/ns/default/sa/kubernetes" });
  let connections = 0;
  const held: (() => void)[] = [];
  const server = createServer({ key: svid.privateKeyPem, cert: svid.certChainPem }, (req, res) => {
    const answer = handler(req.url ?? "");
    const send = () => {
      res.writeHead(answer?.status ?? 200, { "content-type": "application/json" });
      res.end(JSON.stringify(answer?.body ?? {}));
    };
    if (answer === undefined) held.push(send);
    else send();
  });
  server.on("secureConnection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: "c",
        server: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return {
    kc,
    connections: () => connections,
    release: () => {
      for (const send of held.splice(0)) send();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("kubeRequest over TLS", () => {
  it("reuses its connections: 50 requests in turn make one", { timeout: 30_000 }, async () => {
    const api = await tlsApiServer(() => ({ status: 201, body: { status: { authenticated: true } } }));
    try {
      for (let i = 0; i < 50; i++) {
        const review = (await kubeRequest(api.kc, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
          contentType: "application/json",
          value: { spec: { token: `t${i}` } },
        })) as { status: { authenticated: boolean } };
        assert.equal(review.status.authenticated, true);
      }
      assert.equal(api.connections(), 1);
    } finally {
      await api.close();
    }
  });

  it(
    "opens at most MAX_API_SERVER_SOCKETS at once, the rest wait their turn within their deadline",
    { timeout: 30_000 },
    async () => {
      // The server holds every answer until the test lets them go.
      const api = await tlsApiServer(() => undefined);
      try {
        const requests = Array.from({ length: 200 }, () =>
          kubeRequest(api.kc, "GET", "/api/v1/namespaces", undefined, 5_000).then(
            () => "answered",
            (err: unknown) => (err instanceof Error ? err.message : String(err)),
          ),
        );
        const deadline = Date.now() + 5_000;
        while (api.connections() < MAX_API_SERVER_SOCKETS && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(api.connections(), MAX_API_SERVER_SOCKETS);
        // Those answered go on to the waiting ones on the same connections.
        const releaser = setInterval(api.release, 20);
        const outcomes = await Promise.all(requests);
        clearInterval(releaser);
        assert.deepEqual(new Set(outcomes), new Set(["answered"]));
        assert.equal(api.connections(), MAX_API_SERVER_SOCKETS);
        // A request that waits for a connection past its deadline fails with it.
        api.release();
        const stuck = Array.from({ length: MAX_API_SERVER_SOCKETS + 1 }, () =>
          kubeRequest(api.kc, "GET", "/api/v1/pods", undefined, 300).catch((err: unknown) => err),
        );
        const errors = await Promise.all(stuck);
        assert.ok(errors.every((e) => e instanceof Error && !(e instanceof KubeRequestError)));
        assert.match((errors.at(-1) as Error).message, /no answer in 300 ms/);
      } finally {
        await api.close();
      }
    },
  );
});

/** A plaintext API server that answers lists with `list` and every watch with the lines of `watch`. */
async function lineApiServer(list: unknown, watch: string[]) {
  const server = createHttpServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    if ((req.url ?? "").includes("watch=true")) res.end(watch.map((line) => `${line}\n`).join(""));
    else res.end(JSON.stringify(list));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: "c",
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return {
    kc,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Runs one watch to its end: the events handed on, and what `done` got. */
async function watchOnce(kc: KubeConfig, handler: (type: string) => unknown = () => undefined) {
  const types: string[] = [];
  const ended = await new Promise<unknown>((resolve) => {
    void watchRequest(
      kc,
      "/api/v1/pods",
      {},
      (type) => {
        types.push(type);
        return handler(type) as undefined;
      },
      resolve,
    );
  });
  return { types, ended };
}

describe("watchRequest and listAll with what the API server should never send", () => {
  const good = JSON.stringify({ type: "ADDED", object: { metadata: { name: "a", resourceVersion: "2" } } });

  for (const [name, line] of [
    ["null", "null"],
    ["an object with null metadata", JSON.stringify({ type: "MODIFIED", object: { metadata: null } })],
    ["an object without metadata", JSON.stringify({ type: "ADDED", object: {} })],
    ["no type", JSON.stringify({ object: { metadata: {} } })],
  ] as const) {
    it(`ends the watch with an error at an event that is ${name}, after the good ones`, async () => {
      const api = await lineApiServer({ items: [] }, [good, line, good]);
      try {
        const { types, ended } = await watchOnce(api.kc);
        assert.deepEqual(types, ["ADDED"]);
        assert.match(String((ended as Error | null)?.message), /without a type and an object with metadata/);
      } finally {
        await api.close();
      }
    });
  }

  it("ends the watch with the error a handler throws or rejects with", async () => {
    const api = await lineApiServer({ items: [] }, [good, good]);
    try {
      const thrown = await watchOnce(api.kc, () => {
        throw new Error("handler threw");
      });
      assert.equal((thrown.ended as Error).message, "handler threw");
      const rejected = await watchOnce(api.kc, () => Promise.reject(new Error("handler rejected")));
      assert.equal((rejected.ended as Error).message, "handler rejected");
    } finally {
      await api.close();
    }
  });

  it("refuses a list with an item that is not an object with metadata", async () => {
    const api = await lineApiServer(
      { metadata: {}, items: [{ metadata: { name: "a" } }, { kind: "Pod" }] },
      [],
    );
    try {
      await assert.rejects(listAll(api.kc, "/api/v1/pods"), /not objects with metadata/);
    } finally {
      await api.close();
    }
  });
});
