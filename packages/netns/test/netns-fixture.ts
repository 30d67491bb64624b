// Test network namespaces: each test makes its own (`ambient-test-<random>`), with loopback up,
// and every one made is removed in `after` even when a test fails. Tests that cannot run here get a
// skip reason instead of passing silently.
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fstatSync, readdirSync, readlinkSync } from "node:fs";
import { after } from "node:test";

function probe(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: "ignore", timeout: 10_000 });
  return r.status === 0;
}

/** Why Linux-only tests cannot run here, or false when they can. */
export const needsLinux: string | false =
  process.platform === "linux" ? false : `needs Linux, this is ${process.platform}`;

/** Why tests that create namespaces cannot run here, or false when they can. */
export const needsRoot: string | false =
  needsLinux ||
  (process.getuid?.() !== 0
    ? "needs root to create network namespaces"
    : !probe("ip", ["-V"])
      ? "needs iproute2 (`ip`)"
      : false);

/** Why the iptables tests cannot run here, or false when they can. */
export const needsIptables: string | false =
  needsRoot || (!probe("iptables", ["--version"]) ? "needs iptables (Debian package iptables)" : false);

/** Why the ip6tables tests cannot run here, or false when they can. */
export const needsIp6tables: string | false =
  needsRoot || (!probe("ip6tables", ["--version"]) ? "needs ip6tables (Debian package iptables)" : false);

const made = new Set<string>();

export interface TestNetns {
  name: string;
  /** `/var/run/netns/<name>`, for openNetns. */
  path: string;
  /** Runs a command inside the namespace (`ip netns exec`), returning stdout. */
  exec(cmd: string, args: string[]): string;
  remove(): void;
}

/** Creates `ambient-test-<random>` with loopback up; removed by `remove()` or, at the latest, in `after`. */
export function createTestNetns(): TestNetns {
  const name = `ambient-test-${randomBytes(4).toString("hex")}`;
  execFileSync("ip", ["netns", "add", name], { stdio: "pipe" });
  made.add(name);
  const remove = () => {
    if (!made.delete(name)) return;
    // Deleting the namespace also drops its links and its iptables rules.
    spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  };
  try {
    execFileSync("ip", ["-n", name, "link", "set", "lo", "up"], { stdio: "pipe" });
  } catch (err) {
    remove();
    throw err;
  }
  return {
    name,
    path: `/var/run/netns/${name}`,
    exec: (cmd, args) =>
      execFileSync("ip", ["netns", "exec", name, cmd, ...args], {
        encoding: "utf8",
        stdio: "pipe",
        timeout: 10_000,
      }),
    remove,
  };
}

after(() => {
  for (const name of [...made]) {
    made.delete(name);
    spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  }
});

/**
 * Open sockets and namespace descriptors of this process (`fd -> what it is`), to prove a test
 * leaked none. Other kinds are left out: Node opens and closes its own (io_uring, epoll, pipes) at
 * times of its choosing.
 */
export function openFds(): Map<number, string> {
  const found = new Map<number, string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile (the descriptor of the listing itself)
    }
    if (/^(socket|net):\[/.test(target) || target.includes("/netns/") || target.endsWith("/ns/net")) {
      found.set(Number(fd), target);
    }
  }
  return found;
}

/** How many {@link openFds} there are. */
export function openFdCount(): number {
  return openFds().size;
}

/** The descriptors open now that were not in `before`, described, for assertion messages. */
export function newFds(before: Map<number, string>): string[] {
  return [...openFds()].filter(([fd, t]) => before.get(fd) !== t).map(([fd, t]) => `${fd} -> ${t}`);
}

/** The namespace the calling thread is in, or a namespace descriptor refers to: `net:[<inode>]`. */
export function nsOf(fd?: number): string {
  return fd === undefined ? readlinkSync("/proc/thread-self/ns/net") : `net:[${fstatSync(fd).ino}]`;
}

/** Waits for `emitter` to emit `event` (bounded). */
export function once<T = unknown>(
  emitter: { once(event: string, fn: (value: T) => void): unknown },
  event: string,
  ms = 5000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${ms} ms`)), ms);
    emitter.once(event, (value: T) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/**
 * Waits (bounded) until every socket and namespace descriptor opened since `before` is closed; fails
 * naming the ones left. Closing can lag a little behind a callback (libuv closes handles on its loop).
 */
export async function assertNoNewFds(before: Map<number, string>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  let left = newFds(before);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
    left = newFds(before);
  }
  if (left.length > 0) throw new Error(`descriptors left open: ${left.join(", ")}`);
}
