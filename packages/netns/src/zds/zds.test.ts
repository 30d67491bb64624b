// The ZDS client (ztunnel side) against the ZDS server (node agent side) over a real seqpacket
// socket with real network namespace descriptors; and each of them against a hand-driven peer for
// the cases a well-behaved counterpart never produces.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it, type TestContext } from "node:test";
import {
  assertNoNewFds,
  createTestNetns,
  needsLinux,
  needsRoot,
  nsOf,
  once,
  openFds,
} from "../../test/netns-fixture.js";
import { NetnsError } from "../errors.js";
import { type NetnsHandle, openNetns } from "../netns.js";
import {
  connectSeqpacket,
  createSeqpacketServer,
  type SeqpacketMessage,
  type SeqpacketSocket,
} from "../seqpacket.js";
import { connectFromNetns, listenInNetns } from "../tcp.js";
import {
  createZdsClient,
  type ZdsClient,
  type ZdsClientHandler,
  type ZdsDeleteReason,
  type ZdsWorkload,
} from "./client.js";
import { decodeAck, decodeHello, encodeHello, encodeRequest, type ZdsWorkloadInfo } from "./codec.js";
import { createZdsServer } from "./server.js";

const dir = needsLinux ? "" : mkdtempSync(join(tmpdir(), "ambient-zds-"));
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});
let counter = 0;
const socketPath = () => join(dir, `zds${counter++}.sock`);
const info = (name: string): ZdsWorkloadInfo => ({ name, namespace: "shop", serviceAccount: name });
/** A real namespace descriptor that needs no privileges: this process's own. */
const ownNetns = (): NetnsHandle => openNetns("/proc/self/ns/net");

/** A handler that records calls and owns what it is given, as an in-pod proxy manager would. */
class RecordingHandler implements ZdsClientHandler {
  readonly served = new Map<string, ZdsWorkload>();
  readonly log: string[] = [];
  refuse = new Set<string>();

  addWorkload(workload: ZdsWorkload): void {
    this.log.push(`add ${workload.uid}`);
    if (this.refuse.has(workload.uid)) throw new Error(`cannot start ${workload.uid}`);
    this.served.set(workload.uid, workload);
  }

  deleteWorkload(uid: string, reason: ZdsDeleteReason): void {
    this.log.push(`del ${uid} ${reason}`);
    this.served.get(uid)?.netns.close();
    this.served.delete(uid);
  }

  closeAll(): void {
    for (const w of this.served.values()) w.netns.close();
    this.served.clear();
  }
}

/** A ZDS server on a fresh socket path and a recording handler, both closed when the test ends. */
function serverAndHandler(t: TestContext) {
  const path = socketPath();
  const server = createZdsServer({ path }).listen();
  t.after(() => server.close());
  const handler = new RecordingHandler();
  t.after(() => handler.closeAll());
  return { path, server, handler };
}

/** Closes the client, the handler's namespaces and the server, then checks no descriptor was left open. */
async function closeAndCheckFds(
  fdsBefore: Map<number, string>,
  client: { close(): void },
  handler: RecordingHandler,
  server: { close(): void },
): Promise<void> {
  client.close();
  handler.closeAll();
  server.close();
  await assertNoNewFds(fdsBefore);
}

async function until(check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("ZDS", () => {
  it(
    "replays the node agent's pods as a snapshot, then adds and deletes live",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const path = socketPath();
      const server = createZdsServer({ path }).listen();
      t.after(() => server.close());
      assert.equal(await server.addWorkload({ uid: "a", workloadInfo: info("a"), netns: ownNetns() }), false);
      await server.addWorkload({ uid: "b", workloadInfo: info("b"), netns: ownNetns() });

      const handler = new RecordingHandler();
      t.after(() => handler.closeAll());
      const client = createZdsClient({ path, handler });
      t.after(() => client.close());
      await client.ready();
      assert.ok(client.synced);
      assert.deepEqual(handler.log, ["add a", "add b"]);
      assert.equal(handler.served.get("a")?.workloadInfo.name, "a");
      assert.equal(nsOf(handler.served.get("a")?.netns.fd), nsOf(), "the namespace itself arrived");
      await until(() => server.connections === 1, "the server to count the client");

      assert.equal(await server.addWorkload({ uid: "c", workloadInfo: info("c"), netns: ownNetns() }), true);
      assert.deepEqual(await server.deleteWorkload("a"), []);
      assert.deepEqual(handler.log, ["add a", "add b", "add c", "del a deleted"]);
      assert.deepEqual(client.workloads().sort(), ["b", "c"]);
      assert.deepEqual(server.workloads().sort(), ["b", "c"]);

      await closeAndCheckFds(fdsBefore, client, handler, server);
    },
  );

  it(
    "NACKs a pod the handler cannot start, closes its namespace, and keeps the connection",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const { path, server, handler } = serverAndHandler(t);
      handler.refuse.add("bad");
      const client = createZdsClient({ path, handler });
      t.after(() => client.close());
      await client.ready();
      const nacks: unknown[] = [];
      client.on("nack", (n) => nacks.push(n));

      await assert.rejects(
        server.addWorkload({ uid: "bad", workloadInfo: info("bad"), netns: ownNetns() }),
        (e: unknown) =>
          e instanceof NetnsError &&
          e.code === "ERR_ZDS_NACK" &&
          String(e.details.reason).includes("cannot start bad"),
      );
      assert.equal(nacks.length, 1);
      assert.ok(client.connected);
      assert.equal(
        await server.addWorkload({ uid: "good", workloadInfo: info("good"), netns: ownNetns() }),
        true,
      );
      assert.deepEqual(client.workloads(), ["good"]);

      await closeAndCheckFds(fdsBefore, client, handler, server);
    },
  );

  it(
    "passes the delete of a pod whose add it NACKed to the handler; a pod it never saw only gets an ACK",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const { path, server, handler } = serverAndHandler(t);
      handler.refuse.add("bad");
      const client = createZdsClient({ path, handler });
      t.after(() => client.close());
      await client.ready();

      await assert.rejects(
        server.addWorkload({ uid: "bad", workloadInfo: info("bad"), netns: ownNetns() }),
        (e: unknown) => e instanceof NetnsError && e.code === "ERR_ZDS_NACK",
      );
      assert.deepEqual(await server.deleteWorkload("bad"), []);
      assert.deepEqual(await server.deleteWorkload("never"), []);
      assert.deepEqual(handler.log, ["add bad", "del bad deleted"]);
      // Told once: a second delete is of a pod the client no longer knows.
      assert.deepEqual(await server.deleteWorkload("bad"), []);
      assert.deepEqual(handler.log, ["add bad", "del bad deleted"]);
      assert.deepEqual(client.workloads(), []);

      // Refused, then added again in the same namespace: back to the handler (to try now), no delete.
      await assert.rejects(server.addWorkload({ uid: "bad", workloadInfo: info("bad"), netns: ownNetns() }));
      handler.refuse.delete("bad");
      assert.equal(
        await server.addWorkload({ uid: "bad", workloadInfo: info("bad"), netns: ownNetns() }),
        true,
      );
      assert.deepEqual(handler.log, ["add bad", "del bad deleted", "add bad", "add bad"]);
      assert.deepEqual(client.workloads(), ["bad"]);

      await closeAndCheckFds(fdsBefore, client, handler, server);
    },
  );

  it(
    "leaves a refused pod's namespace to a handler that keeps it pending, until its delete or a snapshot drops it",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const path = socketPath();
      const first = createZdsServer({ path }).listen();
      t.after(() => first.close());
      const handler = new RecordingHandler();
      t.after(() => handler.closeAll());
      /** Pods the handler could not start but keeps, with their namespaces, to try again. */
      const pending = new Map<string, ZdsWorkload>();
      handler.addWorkload = (workload: ZdsWorkload) => {
        handler.log.push(`add ${workload.uid}`);
        pending.get(workload.uid)?.netns.close();
        pending.set(workload.uid, workload);
        throw new NetnsError("ERR_NETNS_SYSCALL", `cannot start ${workload.uid}`, {
          errno: "EADDRINUSE",
          pending: true,
        });
      };
      const deleteWorkload = handler.deleteWorkload.bind(handler);
      handler.deleteWorkload = (uid: string, reason: ZdsDeleteReason) => {
        deleteWorkload(uid, reason);
        pending.get(uid)?.netns.close();
        pending.delete(uid);
      };
      const client = createZdsClient({ path, handler, reconnectInitialDelayMs: 5 });
      t.after(() => client.close());
      await client.ready();

      for (const uid of ["deleted", "dropped"]) {
        await assert.rejects(
          first.addWorkload({ uid, workloadInfo: info(uid), netns: ownNetns() }),
          (e: unknown) => e instanceof NetnsError && e.code === "ERR_ZDS_NACK",
        );
        assert.equal(pending.get(uid)?.netns.closed, false, "the handler still has the namespace");
      }
      assert.deepEqual(await first.deleteWorkload("deleted"), []);
      assert.deepEqual(handler.log, ["add deleted", "add dropped", "del deleted deleted"]);

      // The restarted node agent no longer knows "dropped": its snapshot's reconcile removes it.
      first.close();
      await once(client, "disconnect");
      const second = createZdsServer({ path }).listen();
      t.after(() => second.close());
      await once(client, "snapshot", 10_000);
      assert.deepEqual(handler.log, [
        "add deleted",
        "add dropped",
        "del deleted deleted",
        "del dropped not-in-snapshot",
      ]);
      assert.equal(pending.size, 0);

      client.close();
      handler.closeAll();
      second.close();
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "keeps a long NACK within the 1 KiB a node agent reads, in the snapshot and live, on one connection",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const { path, server, handler } = serverAndHandler(t);
      // A refusal whose text alone is past what istio-cni (and our server) read in one answer.
      const long = `cannot start: ${"é".repeat(800)}`;
      handler.addWorkload = (workload: ZdsWorkload) => {
        handler.log.push(`add ${workload.uid}`);
        throw new Error(long);
      };
      await server.addWorkload({ uid: "early", workloadInfo: info("early"), netns: ownNetns() });
      const client = createZdsClient({ path, handler });
      t.after(() => client.close());
      let disconnects = 0;
      client.on("disconnect", () => disconnects++);

      // Refused in the snapshot: the snapshot still completes.
      await once(server, "synced");
      assert.ok(client.synced);
      await assert.rejects(
        server.addWorkload({ uid: "late", workloadInfo: info("late"), netns: ownNetns() }),
        (e: unknown) => {
          if (!(e instanceof NetnsError) || e.code !== "ERR_ZDS_NACK") return false;
          const reason = String(e.details.reason);
          assert.match(reason, /^failed to start the proxy for late: cannot start: é+/);
          assert.ok(Buffer.byteLength(reason) <= 1000, `${Buffer.byteLength(reason)} bytes`);
          assert.doesNotMatch(reason, /\uFFFD/, "cut on a character boundary");
          return true;
        },
      );
      assert.equal(disconnects, 0);
      assert.ok(client.connected);
      assert.deepEqual(handler.log, ["add early", "add late"]);

      client.close();
      server.close();
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "reconnects after the node agent restarts and reconciles: missing pods go, kept and unchanged pods stay",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const path = socketPath();
      const first = createZdsServer({ path }).listen();
      t.after(() => first.close());
      for (const uid of ["stay", "keep", "gone"]) {
        await first.addWorkload({ uid, workloadInfo: info(uid), netns: ownNetns() });
      }
      const handler = new RecordingHandler();
      t.after(() => handler.closeAll());
      const client = createZdsClient({ path, handler });
      t.after(() => client.close());
      await client.ready();
      const stayNetns = handler.served.get("stay")?.netns;
      first.close();
      await once(client, "disconnect");
      assert.ok(!client.synced && !client.connected);

      // The restarted node agent knows "stay" (same namespace), "keep" without a namespace it could
      // open, and a new pod; "gone" was deleted while nobody was connected.
      const second = createZdsServer({ path }).listen();
      t.after(() => second.close());
      await second.addWorkload({ uid: "stay", workloadInfo: info("stay"), netns: ownNetns() });
      await second.addWorkload({ uid: "keep", workloadInfo: info("keep") });
      await second.addWorkload({ uid: "new", workloadInfo: info("new"), netns: ownNetns() });
      const synced = once(second, "synced");
      await once(client, "snapshot", 10_000);
      await synced;
      assert.ok(client.synced);

      // "new" is part of the snapshot, so it is added before the reconcile at SnapshotSent.
      assert.deepEqual(handler.log, [
        "add stay",
        "add keep",
        "add gone",
        "add new",
        "del gone not-in-snapshot",
      ]);
      assert.equal(handler.served.get("stay")?.netns, stayNetns, "an unchanged pod is not restarted");
      assert.deepEqual(client.workloads().sort(), ["keep", "new", "stay"]);

      client.close();
      handler.closeAll();
      second.close();
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "client: NACKs protocol violations, drops the connection and comes back with a new hello",
    { skip: needsLinux },
    async (t) => {
      const fdsBefore = openFds();
      const path = socketPath();
      const agent = createSeqpacketServer().listen(path);
      t.after(() => agent.close());
      const handler = new RecordingHandler();
      t.after(() => handler.closeAll());
      const client = createZdsClient({ path, handler, reconnectInitialDelayMs: 5 });
      t.after(() => client.close());

      const next = async () => {
        const socket = await once<SeqpacketSocket>(agent, "connection");
        const messages: SeqpacketMessage[] = [];
        let closed = false;
        socket.on("message", (m: SeqpacketMessage) => messages.push(m));
        socket.on("close", () => {
          closed = true;
        });
        await until(() => messages.length === 1, "a hello");
        assert.deepEqual(decodeHello(messages[0]?.data ?? new Uint8Array()), { version: 1 });
        return {
          socket,
          closed: () => until(() => closed, "the client to hang up"),
          async ask(data: Uint8Array, fds: number[] = []) {
            const seen = messages.length;
            socket.send(data, fds);
            await until(() => messages.length > seen, "an answer");
            return decodeAck(messages[seen]?.data ?? new Uint8Array()).error;
          },
        };
      };

      let peer = await next();
      const netns = ownNetns();
      // An Add without its descriptor.
      assert.match(
        await peer.ask(encodeRequest({ type: "add", uid: "x", workloadInfo: info("x") })),
        /exactly one/,
      );
      await peer.closed();

      peer = await next();
      // A descriptor that is not a network namespace.
      const devNull = openNetns("/dev/null");
      assert.match(
        await peer.ask(encodeRequest({ type: "add", uid: "x", workloadInfo: info("x") }), [devNull.fd]),
        /not a network namespace/,
      );
      devNull.close();

      peer = await next();
      // An Add without workload_info (ztunnel treats that as a protocol error too).
      assert.match(await peer.ask(encodeRequest({ type: "add", uid: "x" }), [netns.fd]), /workload_info/);

      peer = await next();
      // Keep after SnapshotSent; SnapshotSent twice.
      assert.equal(await peer.ask(encodeRequest({ type: "snapshot-sent" })), "");
      assert.match(await peer.ask(encodeRequest({ type: "keep", uid: "k" })), /after SnapshotSent/);

      peer = await next();
      assert.equal(
        await peer.ask(encodeRequest({ type: "add", uid: "ok", workloadInfo: info("ok") }), [netns.fd]),
        "",
      );
      assert.equal(await peer.ask(encodeRequest({ type: "snapshot-sent" })), "");
      assert.match(await peer.ask(encodeRequest({ type: "snapshot-sent" })), /twice/);
      assert.match(await (await next()).ask(new Uint8Array([0x22, 0x00])), /payload/);
      assert.deepEqual(handler.log, ["add ok"]);

      client.close();
      handler.closeAll();
      netns.close();
      agent.close();
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "client: ready() settles when the client is closed before any snapshot",
    { skip: needsLinux },
    async () => {
      const handler = new RecordingHandler();
      // Nobody listens there: the client keeps trying to connect.
      const client = createZdsClient({ path: socketPath(), handler });
      const outcome = (p: Promise<void>) => {
        const seen: { value?: unknown } = {};
        p.then(
          () => {
            seen.value = "resolved";
          },
          (e: unknown) => {
            seen.value = e;
          },
        );
        return seen;
      };
      const waiting = outcome(client.ready());
      client.close();
      await new Promise((r) => setImmediate(r));
      const closedError = (e: unknown) => e instanceof NetnsError && e.code === "ERR_NETNS_CLOSED";
      assert.ok(closedError(waiting.value), `ready() gave ${String(waiting.value)}`);
      const later = outcome(client.ready());
      await new Promise((r) => setImmediate(r));
      assert.ok(closedError(later.value), `ready() after close gave ${String(later.value)}`);
    },
  );

  it(
    "server: a ztunnel that stops answering is timed out and disconnected",
    { skip: needsLinux },
    async (t) => {
      const path = socketPath();
      const server = createZdsServer({ path, ackTimeoutMs: 200 }).listen();
      t.after(() => server.close());
      const mute = connectSeqpacket(path);
      t.after(() => mute.close());
      mute.send(encodeHello());
      await until(() => server.connections === 1, "the hello");
      const closed = once(mute, "close");
      await assert.rejects(
        server.addWorkload({ uid: "p", workloadInfo: info("p"), netns: ownNetns() }),
        (e: unknown) =>
          e instanceof NetnsError && (e.code === "ERR_ZDS_TIMEOUT" || e.code === "ERR_ZDS_DISCONNECTED"),
      );
      await closed;
      await until(() => server.connections === 0, "the server to drop it");
      // A connection that never says hello is dropped as well.
      const silent = connectSeqpacket(path);
      t.after(() => silent.close());
      await once(silent, "close");
      server.close();
    },
  );
});

describe("ZDS into a pod's namespace", () => {
  it(
    "hands a created namespace to the client, which serves a listener inside it",
    { skip: needsRoot },
    async (t) => {
      const pod = createTestNetns();
      const path = socketPath();
      const server = createZdsServer({ path }).listen();
      t.after(() => server.close());
      const listeners = new Map<string, net.Server>();
      const client: ZdsClient = createZdsClient({
        path,
        handler: {
          async addWorkload({ uid, netns }) {
            const listener = await listenInNetns(netns, { host: "127.0.0.1", port: 0, mark: 0x539 });
            listener.on("connection", (s: net.Socket) => s.end(`served ${uid}`));
            listeners.set(uid, listener);
            netns.close(); // the listener keeps the namespace alive
          },
          async deleteWorkload(uid) {
            await new Promise((r) => listeners.get(uid)?.close(r));
            listeners.delete(uid);
          },
        },
      });
      try {
        await client.ready();
        await server.addWorkload({ uid: "web-0", workloadInfo: info("web-0"), netns: openNetns(pod.path) });
        const port = (listeners.get("web-0")?.address() as net.AddressInfo).port;
        assert.match(pod.exec("ss", ["-Hltn", `sport = :${port}`]), /127\.0\.0\.1/);
        const local = openNetns(pod.path);
        const conn = connectFromNetns(local, { host: "127.0.0.1", port });
        local.close();
        let text = "";
        conn.setEncoding("utf8").on("data", (d: string) => {
          text += d;
        });
        await once(conn, "end");
        assert.equal(text, "served web-0");
        await server.deleteWorkload("web-0");
        assert.equal(listeners.size, 0);
        assert.equal(pod.exec("ss", ["-Hltn", `sport = :${port}`]).trim(), "");
      } finally {
        client.close();
        server.close();
        for (const l of listeners.values()) l.close();
        pod.remove();
      }
    },
  );
});
