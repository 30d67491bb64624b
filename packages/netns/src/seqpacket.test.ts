// SOCK_SEQPACKET with SCM_RIGHTS over real Unix sockets: boundaries, descriptor passing (a network
// namespace the test creates when root, this process's own otherwise), back-pressure, truncation,
// hang-ups. Unix sockets need no privileges, so these run on any Linux.
import assert from "node:assert/strict";
import { mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { assertNoNewFds, createTestNetns, needsLinux, nsOf, once, openFds } from "../test/netns-fixture.js";
import { NetnsError } from "./errors.js";
import { closeQuietly } from "./libc.js";
import {
  connectSeqpacket,
  createSeqpacketServer,
  type SeqpacketMessage,
  type SeqpacketServer,
  type SeqpacketSocket,
} from "./seqpacket.js";

const dir = needsLinux ? "" : mkdtempSync(join(tmpdir(), "ambient-seqpacket-"));
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});
let counter = 0;

/** A listening server and a connected pair on a fresh path. */
async function pair(
  options: { maxMessageBytes?: number; maxFds?: number } = {},
): Promise<{ server: SeqpacketServer; client: SeqpacketSocket; peer: SeqpacketSocket; path: string }> {
  const path = join(dir, `s${counter++}.sock`);
  const server = createSeqpacketServer(options).listen(path);
  const accepted = once<SeqpacketSocket>(server, "connection");
  const client = connectSeqpacket(path, options);
  return { server, client, peer: await accepted, path };
}

function collect(socket: SeqpacketSocket, count: number): Promise<SeqpacketMessage[]> {
  return new Promise((resolve, reject) => {
    const got: SeqpacketMessage[] = [];
    const timer = setTimeout(() => reject(new Error(`got ${got.length} of ${count} messages`)), 10_000);
    socket.on("message", (m: SeqpacketMessage) => {
      got.push(m);
      if (got.length === count) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

describe("SOCK_SEQPACKET sockets", () => {
  it("keeps message boundaries both ways", { skip: needsLinux }, async () => {
    const { server, client, peer } = await pair();
    const atPeer = collect(peer, 3);
    client.send(Buffer.from("one"));
    client.send(new Uint8Array([0, 1, 2, 3]).subarray(1, 3));
    client.send(Buffer.alloc(5000, 7));
    const got = await atPeer;
    assert.deepEqual(
      got.map((m) => m.data.length),
      [3, 2, 5000],
    );
    assert.equal(got[0]?.data.toString(), "one");
    assert.deepEqual([...(got[1]?.data ?? [])], [1, 2]);
    const atClient = collect(client, 1);
    peer.send(Buffer.from("back"));
    assert.equal((await atClient)[0]?.data.toString(), "back");
    client.close();
    peer.close();
    server.close();
  });

  it(
    "passes a network namespace descriptor with SCM_RIGHTS; the sender keeps its own",
    { skip: needsLinux },
    async () => {
      const fdsBefore = openFds();
      const pod = process.getuid?.() === 0 ? createTestNetns() : undefined;
      try {
        const nsFd = openSync(pod?.path ?? "/proc/self/ns/net", "r");
        const devNull = openSync("/dev/null", "r");
        const { server, client, peer } = await pair();
        const atPeer = collect(peer, 2);
        client.send(Buffer.from("add"), [nsFd]);
        client.send(Buffer.from("two"), [devNull, nsFd]);
        const [first, second] = await atPeer;
        assert.equal(first?.fds.length, 1);
        const received = first?.fds[0] as number;
        assert.notEqual(received, nsFd);
        assert.equal(nsOf(received), nsOf(nsFd), "the same namespace arrived");
        assert.equal(second?.fds.length, 2);
        assert.equal(statSync("/dev/null").rdev, statSync(`/proc/self/fd/${second?.fds[0]}`).rdev);
        assert.equal(nsOf(second?.fds[1]), nsOf(nsFd));
        for (const fd of [received, ...(second?.fds ?? []), nsFd, devNull]) closeQuietly(fd);
        client.close();
        peer.close();
        server.close();
        await once(server, "close");
      } finally {
        pod?.remove();
      }
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "queues messages while the peer's queue is full and delivers them in order, descriptors included",
    { skip: needsLinux },
    async () => {
      const fdsBefore = openFds();
      const { server, client, peer } = await pair();
      const count = 300; // far beyond the kernel's queue for an unread seqpacket peer
      const nsFd = openSync("/proc/self/ns/net", "r");
      const atPeer = collect(peer, count);
      for (let i = 0; i < count; i++) client.send(Buffer.from(`m${i}`), i % 50 === 0 ? [nsFd] : []);
      closeQuietly(nsFd); // queued messages hold duplicates of their own
      const got = await atPeer;
      assert.deepEqual(
        got.map((m) => m.data.toString()),
        Array.from({ length: count }, (_, i) => `m${i}`),
      );
      const passed = got.flatMap((m) => m.fds);
      assert.equal(passed.length, count / 50);
      for (const fd of passed) closeQuietly(fd);
      client.close();
      peer.close();
      server.close();
      await once(server, "close");
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "fails with ERR_NETNS_MESSAGE_TRUNCATED, closing the descriptors, when a message does not fit",
    { skip: needsLinux },
    async () => {
      const fdsBefore = openFds();
      const { server, client, peer } = await pair({ maxMessageBytes: 16, maxFds: 1 });
      const failed = once<NetnsError>(peer, "error");
      client.send(Buffer.alloc(17));
      const err = await failed;
      assert.ok(err instanceof NetnsError);
      assert.equal(err.code, "ERR_NETNS_MESSAGE_TRUNCATED");
      assert.ok(peer.closed);

      const second = await pair({ maxFds: 1 });
      const tooMany = once<NetnsError>(second.peer, "error");
      const a = openSync("/dev/null", "r");
      const b = openSync("/dev/null", "r");
      second.client.send(Buffer.from("x"), [a, b]);
      assert.equal((await tooMany).code, "ERR_NETNS_MESSAGE_TRUNCATED");
      for (const fd of [a, b]) closeQuietly(fd);
      for (const s of [client, second.client]) s.close();
      server.close();
      second.server.close();
      await once(second.server, "close");
      await assertNoNewFds(fdsBefore);
    },
  );

  it(
    "reports the peer hanging up as 'close', and refuses to send afterwards",
    { skip: needsLinux },
    async () => {
      const { server, client, peer, path } = await pair();
      const closed = once(peer, "close");
      client.close();
      await closed;
      assert.throws(() => peer.send(Buffer.from("x")), { code: "ERR_NETNS_CLOSED" });
      assert.throws(() => client.send(Buffer.from("x")), { code: "ERR_NETNS_CLOSED" });
      assert.throws(() => connectSeqpacket(join(dir, "nobody.sock")), {
        code: "ERR_NETNS_SYSCALL",
        errno: "ENOENT",
      });
      server.close();
      await once(server, "close");
      assert.throws(() => statSync(path), { code: "ENOENT" }, "closing the server removes its socket file");
      assert.throws(() => connectSeqpacket(path), { errno: "ENOENT" });
    },
  );

  it(
    "refuses empty messages (a zero-length read means hang-up) and a busy path",
    { skip: needsLinux },
    async () => {
      const { server, client, peer, path } = await pair();
      assert.throws(() => client.send(new Uint8Array(0)), { code: "ERR_NETNS_INVALID_ARGUMENT" });
      assert.throws(() => createSeqpacketServer().listen(path), {
        code: "ERR_NETNS_SYSCALL",
        errno: "EADDRINUSE",
      });
      client.close();
      peer.close();
      server.close();
      await once(server, "close");
    },
  );
});
