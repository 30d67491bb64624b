// The DNS capture rules against the kernel, as root on Linux: a pod namespace with `inPodDnsCapture()`
// installed, a listener standing in for the proxy's resolver on 127.0.0.1:15053, and a nameserver in
// a second namespace across a veth. The proxy forwards each query from the pod on a fresh port, so
// the app and the proxy can use the same source port towards the same nameserver within conntrack's
// UDP timeout. Both flows must still go where the rules send them: the app's to the proxy, the
// proxy's to the nameserver. Everything the test makes it removes.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import dgram from "node:dgram";
import { after, before, describe, it } from "node:test";
import { bindInNetns, closeFd, type NetnsHandle, openNetns } from "@ambient/netns";
import { INPOD_MARK, inPodDnsCapture } from "../src/index.js";

function skipReason(): string | false {
  if (process.platform !== "linux") return "DNS capture needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "DNS capture needs root (setns, iptables, ip netns)";
  for (const [program, args] of [
    ["ip", ["-V"]],
    ["iptables", ["--version"]],
  ] as const) {
    if (spawnSync(program, [...args], { stdio: "ignore" }).status !== 0) return `${program} is not installed`;
  }
  return false;
}
const skip = skipReason();
if (skip !== false) console.log(`# DNS capture conntrack tests skipped: ${skip}`);

const run = (...args: string[]): string =>
  execFileSync(args[0] as string, args.slice(1), { encoding: "utf8" });

/** A UDP socket in `netns` bound to `port` on every address, marked as the proxy's when `mark`. */
function udpIn(netns: NetnsHandle, port: number, mark?: number): dgram.Socket {
  const fd = bindInNetns(netns, { host: "0.0.0.0", port, ...(mark === undefined ? {} : { mark }) });
  const socket = dgram.createSocket("udp4");
  try {
    socket.bind({ fd });
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return socket;
}

/** Who answered a datagram sent from `socket` to `to`: the reply's text, or "" after 1 s without one. */
function ask(socket: dgram.Socket, to: { address: string; port: number }, text: string): Promise<string> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      socket.off("message", onMessage);
      resolve("");
    }, 1000);
    const onMessage = (reply: Buffer) => {
      clearTimeout(timer);
      resolve(reply.toString());
    };
    socket.once("message", onMessage);
    socket.send(text, to.port, to.address);
  });
}

function close(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => socket.close(() => resolve()));
}

describe("DNS capture rules keep the app's and the proxy's queries apart", { skip, timeout: 60_000 }, () => {
  const id = Math.random().toString(36).slice(2, 8);
  const pod = `amb-${id}-ct`;
  const peer = `amb-${id}-ns`;
  const net10 = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}`;
  const nameserver = { address: `${net10}.53`, port: 53 };
  const made: string[] = [];
  const sockets: dgram.Socket[] = [];
  let podNs: NetnsHandle | undefined;
  // Source ports for the cases, from a random spot of a range the kernel does not hand out itself
  // (ip_local_port_range starts at 32768).
  let nextPort = 20000 + Math.floor(Math.random() * 10000);

  before(async () => {
    for (const ns of [pod, peer]) {
      run("ip", "netns", "add", ns);
      made.push(ns);
      run("ip", "-n", ns, "link", "set", "lo", "up");
    }
    run("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer);
    run("ip", "-n", pod, "addr", "add", `${net10}.11/24`, "dev", "eth0");
    run("ip", "-n", peer, "addr", "add", `${nameserver.address}/24`, "dev", "eth0");
    for (const ns of [pod, peer]) run("ip", "-n", ns, "link", "set", "eth0", "up");
    for (const command of inPodDnsCapture()) run("ip", "netns", "exec", pod, ...command);

    podNs = openNetns(`/var/run/netns/${pod}`);
    const peerNs = openNetns(`/var/run/netns/${peer}`);
    try {
      // The nameserver and the proxy's resolver answer with who they are.
      const servers = [
        { netns: peerNs, host: nameserver.address, port: 53, name: "nameserver" },
        { netns: podNs, host: "127.0.0.1", port: 15053, name: "proxy" },
      ];
      for (const s of servers) {
        const fd = bindInNetns(s.netns, { host: s.host, port: s.port });
        const socket = dgram.createSocket("udp4");
        socket.bind({ fd });
        socket.on("message", (query, from) => socket.send(`${s.name}:${query}`, from.port, from.address));
        sockets.push(socket);
      }
    } finally {
      peerNs.close();
    }
  });

  after(async () => {
    await Promise.all(sockets.map(close));
    podNs?.close();
    for (const ns of made) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  });

  it("a fresh app query goes to the proxy and a fresh proxy query to the nameserver", async () => {
    const netns = podNs as NetnsHandle;
    const app = udpIn(netns, nextPort++);
    const proxy = udpIn(netns, nextPort++, INPOD_MARK);
    try {
      assert.equal(await ask(app, nameserver, "app"), "proxy:app");
      assert.equal(await ask(proxy, nameserver, "forwarded"), "nameserver:forwarded");
    } finally {
      await Promise.all([close(app), close(proxy)]);
    }
  });

  it("an app query on a port the proxy just forwarded from still goes to the proxy", async () => {
    const netns = podNs as NetnsHandle;
    const port = nextPort++;
    const proxy = udpIn(netns, port, INPOD_MARK);
    assert.equal(await ask(proxy, nameserver, "forwarded"), "nameserver:forwarded");
    await close(proxy);
    const app = udpIn(netns, port);
    try {
      assert.equal(await ask(app, nameserver, "app"), "proxy:app");
    } finally {
      await close(app);
    }
  });

  it("a proxy query on a port the app just used still goes to the nameserver", async () => {
    const netns = podNs as NetnsHandle;
    const port = nextPort++;
    const app = udpIn(netns, port);
    assert.equal(await ask(app, nameserver, "app"), "proxy:app");
    await close(app);
    const proxy = udpIn(netns, port, INPOD_MARK);
    try {
      assert.equal(await ask(proxy, nameserver, "forwarded"), "nameserver:forwarded");
    } finally {
      await close(proxy);
    }
  });
});
