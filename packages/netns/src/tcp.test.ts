// TCP inside network namespaces the tests create: listeners and connections that live in the pod's
// namespace, SO_ORIGINAL_DST behind an iptables REDIRECT, SO_MARK and IP_TRANSPARENT read back.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import dgram from "node:dgram";
import { openSync } from "node:fs";
import type net from "node:net";
import { tmpdir } from "node:os";
import { describe, it } from "node:test";
import {
  assertNoNewFds,
  createTestNetns,
  needsIp6tables,
  needsIptables,
  needsLinux,
  needsRoot,
  nsOf,
  once,
  openFds,
  type TestNetns,
} from "../test/netns-fixture.js";
import { NetnsError } from "./errors.js";
import { getIntOption, IP_TRANSPARENT, libc, SOL_IP } from "./libc.js";
import { adoptNetns, closeFd, createSocketInNetns, type NetnsHandle, openNetns, withNetns } from "./netns.js";
import { encodeSockaddr } from "./sockaddr.js";
import {
  bindInNetns,
  connectFromNetns,
  getOriginalDestination,
  getSocketMark,
  listenInNetns,
  setIpTransparent,
  socketFd,
} from "./tcp.js";

async function withPod(fn: (pod: TestNetns, handle: NetnsHandle) => Promise<void>): Promise<void> {
  const pod = createTestNetns();
  const handle = openNetns(pod.path);
  try {
    await fn(pod, handle);
  } finally {
    handle.close();
    pod.remove();
  }
}

function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Reads everything the socket sends until it ends. */
function readAll(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      text += chunk;
    });
    socket.on("end", () => resolve(text));
    socket.on("error", reject);
  });
}

describe("network namespaces", () => {
  it(
    "runs code inside a namespace and always returns, also when the code throws",
    { skip: needsRoot },
    async () => {
      await withPod(async (_pod, handle) => {
        const home = nsOf();
        const target = nsOf(handle.fd);
        assert.notEqual(target, home);
        assert.equal(
          withNetns(handle, () => nsOf()),
          target,
        );
        assert.equal(nsOf(), home);
        assert.throws(
          () =>
            withNetns(handle, () => {
              throw new Error("boom");
            }),
          /boom/,
        );
        assert.equal(nsOf(), home);
        assert.throws(() => withNetns(handle, async () => 1), { code: "ERR_NETNS_INVALID_ARGUMENT" });
        assert.equal(nsOf(), home);
      });
    },
  );

  it("names the errno and the call when a namespace cannot be opened or entered", { skip: needsRoot }, () => {
    assert.throws(
      () => openNetns("/var/run/netns/ambient-test-does-not-exist"),
      (e: unknown) =>
        e instanceof NetnsError &&
        e.code === "ERR_NETNS_SYSCALL" &&
        e.errno === "ENOENT" &&
        e.syscall === "open",
    );
    const home = nsOf();
    const notANamespace = adoptNetns(openSync("/dev/null", "r"));
    try {
      assert.throws(
        () => createSocketInNetns(notANamespace),
        (e: unknown) => e instanceof NetnsError && e.errno === "EINVAL" && e.syscall === "setns",
      );
    } finally {
      notANamespace.close();
    }
    assert.equal(nsOf(), home);
    assert.throws(() => createSocketInNetns(notANamespace), { code: "ERR_NETNS_CLOSED" });
  });

  it(
    "listens and connects inside the pod's namespace, invisible from the host",
    { skip: needsRoot },
    async () => {
      await withPod(async (pod, handle) => {
        const fdsBefore = openFds();
        const server = await listenInNetns(handle, { host: "127.0.0.1", port: 0 });
        const port = portOf(server);
        assert.match(pod.exec("ss", ["-Hltn", `sport = :${port}`]), new RegExp(`127\\.0\\.0\\.1:${port}`));
        server.on("connection", (s: net.Socket) => s.end(`hello ${s.remoteAddress}`));

        // A source address inside the pod's loopback, bound before connecting.
        const client = connectFromNetns(handle, { host: "127.0.0.1", port, localAddress: "127.0.0.2" });
        await once(client, "connect");
        assert.equal(client.localAddress, "127.0.0.2");
        assert.equal(await readAll(client), "hello 127.0.0.2");
        client.destroy();

        const refused = connectFromNetns(handle, { host: "127.0.0.1", port: port === 1 ? 2 : 1 });
        const err = await once<NodeJS.ErrnoException>(refused, "error");
        assert.equal(err.code, "ECONNREFUSED");

        await close(server);
        await assertNoNewFds(fdsBefore);
      });
    },
  );

  it("speaks IPv6 inside the namespace", { skip: needsRoot }, async () => {
    await withPod(async (_pod, handle) => {
      const server = await listenInNetns(handle, { host: "::1", port: 0, ipv6Only: true });
      server.on("connection", (s: net.Socket) => s.end(String(s.remoteAddress)));
      const client = connectFromNetns(handle, { host: "::1", port: portOf(server) });
      assert.equal(await readAll(client), "::1");
      await close(server);
    });
  });

  it(
    "reports a taken port as EADDRINUSE from bind and leaves nothing open",
    { skip: needsRoot },
    async () => {
      await withPod(async (_pod, handle) => {
        const server = await listenInNetns(handle, { host: "127.0.0.1", port: 0 });
        const fdsBefore = openFds();
        await assert.rejects(
          listenInNetns(handle, { host: "127.0.0.1", port: portOf(server) }),
          (e: unknown) => e instanceof NetnsError && e.errno === "EADDRINUSE" && e.syscall === "bind",
        );
        await assertNoNewFds(fdsBefore);
        // With SO_REUSEPORT on both, a second listener may share the port (a ztunnel upgrade).
        const a = await listenInNetns(handle, { host: "127.0.0.1", port: 0, reusePort: true });
        const b = await listenInNetns(handle, { host: "127.0.0.1", port: portOf(a), reusePort: true });
        assert.equal(portOf(b), portOf(a));
        await Promise.all([close(server), close(a), close(b)]);
      });
    },
  );

  it("sets SO_MARK and IP_TRANSPARENT and reads them back", { skip: needsRoot }, async () => {
    await withPod(async (_pod, handle) => {
      const server = await listenInNetns(handle, {
        host: "127.0.0.1",
        port: 0,
        mark: 0x539,
        transparent: true,
      });
      assert.equal(getSocketMark(server), 0x539);
      assert.equal(getIntOption(socketFd(server), SOL_IP, IP_TRANSPARENT), 1);
      const accepted = once<net.Socket>(server, "connection");
      const client = connectFromNetns(handle, { host: "127.0.0.1", port: portOf(server), mark: 0xffffffff });
      assert.equal(getSocketMark(client), 0xffffffff);
      await once(client, "connect");
      const peer = await accepted;
      assert.equal(getSocketMark(peer), 0x539, "accepted sockets inherit the listener's mark");
      setIpTransparent(peer, false);
      assert.equal(getIntOption(socketFd(peer), SOL_IP, IP_TRANSPARENT), 0);
      assert.throws(() => connectFromNetns(handle, { host: "127.0.0.1", port: 1, mark: -1 }), {
        code: "ERR_NETNS_INVALID_ARGUMENT",
      });
      client.destroy();
      peer.destroy();
      await close(server);
    });
  });

  it("turns Nagle off with noDelay, before the connection is made", { skip: needsRoot }, async () => {
    await withPod(async (_pod, handle) => {
      const server = await listenInNetns(handle, { host: "127.0.0.1", port: 0 });
      const accepted = once<net.Socket>(server, "connection");
      const fast = connectFromNetns(handle, { host: "127.0.0.1", port: portOf(server), noDelay: true });
      // IPPROTO_TCP 6, TCP_NODELAY 1: set on the descriptor before connect(), as net.connect's option.
      assert.equal(getIntOption(socketFd(fast), 6, 1), 1);
      await once(fast, "connect");
      assert.equal(getIntOption(socketFd(fast), 6, 1), 1);
      const peer = await accepted;
      const plain = connectFromNetns(handle, { host: "127.0.0.1", port: portOf(server) });
      await once(plain, "connect");
      assert.equal(getIntOption(socketFd(plain), 6, 1), 0, "Nagle stays on by default, as in net.connect");
      for (const s of [fast, plain, peer]) s.destroy();
      await close(server);
    });
  });

  it("binds a UDP socket in the namespace for node:dgram", { skip: needsRoot }, async () => {
    await withPod(async (pod, handle) => {
      const fd = bindInNetns(handle, { host: "127.0.0.1", port: 0, mark: 0x539 });
      assert.equal(getSocketMark(fd), 0x539);
      const server = dgram.createSocket("udp4");
      await new Promise<void>((resolve) => server.bind({ fd }, resolve));
      const { port } = server.address();
      assert.match(pod.exec("ss", ["-Hlun", `sport = :${port}`]), new RegExp(`127\\.0\\.0\\.1:${port}`));
      server.on("message", (msg, from) =>
        server.send(Buffer.concat([Buffer.from("re:"), msg]), from.port, from.address),
      );
      // A client inside the namespace too: the server is not reachable from the host.
      const clientFd = bindInNetns(handle, { host: "127.0.0.1", port: 0 });
      const client = dgram.createSocket("udp4");
      await new Promise<void>((resolve) => client.bind({ fd: clientFd }, resolve));
      const reply = once<Buffer>(client, "message");
      client.send("dns?", port, "127.0.0.1");
      assert.equal(String(await reply), "re:dns?");
      await Promise.all([server, client].map((s) => new Promise<void>((r) => s.close(() => r()))));
    });
  });

  it("hands out descriptors that really live in the namespace", { skip: needsRoot }, async () => {
    await withPod(async (pod, handle) => {
      const fd = createSocketInNetns(handle, { family: 4, type: "dgram" });
      try {
        const port = 20_000 + Math.floor(Math.random() * 20_000);
        const addr = encodeSockaddr("127.0.0.1", port);
        assert.equal(libc().bind(fd, addr, addr.length), 0);
        assert.match(pod.exec("ss", ["-Hlun", `sport = :${port}`]), new RegExp(`127\\.0\\.0\\.1:${port}`));
      } finally {
        closeFd(fd);
      }
      assert.throws(
        () => closeFd(fd),
        (e: unknown) => e instanceof NetnsError && e.errno === "EBADF",
      );
    });
  });
});

describe("original destination", () => {
  it(
    "reads SO_ORIGINAL_DST of a connection redirected inside the pod, and the listener's own address without one",
    { skip: needsIptables },
    async () => {
      await withPod(async (pod, handle) => {
        const server = await listenInNetns(handle, { host: "127.0.0.1", port: 0, mark: 0x539 });
        const port = portOf(server);
        // As istio-cni's in-pod rules: outbound TCP not marked 0x539 goes to the outbound listener.
        pod.exec("iptables", [
          "-t",
          "nat",
          "-A",
          "OUTPUT",
          "-p",
          "tcp",
          "-d",
          "127.0.0.9",
          "--dport",
          "80",
          "-m",
          "mark",
          "!",
          "--mark",
          "0x539",
          "-j",
          "REDIRECT",
          "--to-ports",
          String(port),
        ]);
        server.on("connection", (s: net.Socket) => {
          try {
            const dst = getOriginalDestination(s);
            s.end(`${dst.family} ${dst.address} ${dst.port}`);
          } catch (err) {
            s.end(String((err as NetnsError).errno));
          }
        });
        const redirected = connectFromNetns(handle, { host: "127.0.0.9", port: 80 });
        assert.equal(await readAll(redirected), "4 127.0.0.9 80");
        const direct = connectFromNetns(handle, { host: "127.0.0.1", port });
        assert.equal(await readAll(direct), `4 127.0.0.1 ${port}`);
        // The mark keeps the proxy's own connection out of the capture: it is refused, not redirected.
        const marked = connectFromNetns(handle, { host: "127.0.0.9", port: 80, mark: 0x539 });
        assert.equal((await once<NodeJS.ErrnoException>(marked, "error")).code, "ECONNREFUSED");
        await close(server);
      });
    },
  );

  it(
    "reads IP6T_SO_ORIGINAL_DST of an IPv6 connection redirected inside the pod",
    { skip: needsIp6tables },
    async () => {
      await withPod(async (pod, handle) => {
        pod.exec("ip", ["-6", "addr", "add", "fd00::9/128", "dev", "lo", "nodad"]);
        const server = await listenInNetns(handle, { host: "::1", port: 0, ipv6Only: true });
        const port = portOf(server);
        pod.exec("ip6tables", [
          "-t",
          "nat",
          "-A",
          "OUTPUT",
          "-p",
          "tcp",
          "-d",
          "fd00::9",
          "--dport",
          "80",
          "-j",
          "REDIRECT",
          "--to-ports",
          String(port),
        ]);
        server.on("connection", (s: net.Socket) => {
          const dst = getOriginalDestination(s);
          s.end(`${dst.family} ${dst.address} ${dst.port}`);
        });
        const redirected = connectFromNetns(handle, { host: "fd00::9", port: 80 });
        assert.equal(await readAll(redirected), "6 fd00::9 80");
        await close(server);
      });
    },
  );
});

describe("without privileges", () => {
  const script = `
const { createSocketInNetns, openNetns } = await import(${JSON.stringify(new URL("./index.ts", import.meta.url).pathname)});
const own = openNetns("/proc/self/ns/net");
const out = {};
try { createSocketInNetns(own); out.setns = "no error"; } catch (e) { out.setns = [e.code, e.errno, e.syscall]; }
console.log(JSON.stringify(out));
`;
  it("reports setns as ERR_NETNS_SYSCALL with errno EPERM", { skip: needsLinux }, () => {
    // As root, the check runs in a child that drops to nobody; otherwise in a child as we are.
    const asRoot = process.getuid?.() === 0;
    const node = [process.execPath, "--import", "tsx", "--input-type=module", "-e", script];
    const [cmd, ...args] = asRoot
      ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...node]
      : node;
    const r = spawnSync(cmd as string, args, {
      encoding: "utf8",
      timeout: 30_000,
      env: { ...process.env, HOME: tmpdir() },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").at(-1) as string), {
      setns: ["ERR_NETNS_SYSCALL", "EPERM", "setns"],
    });
  });
});
