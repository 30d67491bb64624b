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

/** Open descriptors of this process, to prove a test leaked none. */
export function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
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
