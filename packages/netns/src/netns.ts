/**
 * Network namespace handles and the one way in: switch the calling thread into a namespace, make
 * the sockets, switch back. A socket stays in the namespace it was created in for its whole life,
 * so only `socket()` needs the switch; bind, listen, connect and all I/O happen from home.
 */
import { closeSync, openSync } from "node:fs";
import { NetnsError } from "./errors.js";
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  CLONE_NEWNET,
  check,
  libc,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_SEQPACKET,
  SOCK_STREAM,
  syscallError,
} from "./libc.js";
import { requireFd } from "./validate.js";

/** An open network namespace: a file descriptor on `/var/run/netns/<name>` or `/proc/<pid>/ns/net`. */
export interface NetnsHandle {
  /** The descriptor; -1 once closed. */
  readonly fd: number;
  /** Where it was opened from, or `"fd:<n>"` when adopted with {@link adoptNetns}. */
  readonly path: string;
  readonly closed: boolean;
  /** Closes the descriptor. Sockets made in the namespace keep working; the namespace lives on while any does. */
  close(): void;
}

class Handle implements NetnsHandle {
  #fd: number;
  constructor(
    fd: number,
    readonly path: string,
  ) {
    this.#fd = fd;
  }
  get fd(): number {
    return this.#fd;
  }
  get closed(): boolean {
    return this.#fd < 0;
  }
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    closeSync(fd);
  }
}

/**
 * Opens a network namespace by path (`/var/run/netns/<name>` for `ip netns` names,
 * `/proc/<pid>/ns/net` for a process). Throws `ERR_NETNS_INVALID_ARGUMENT` for a path that is not a
 * non-empty string, `ERR_NETNS_SYSCALL` (`ENOENT`, `EACCES`) when it cannot be opened and
 * `ERR_NETNS_UNSUPPORTED` off Linux. The handle owns the descriptor: close it.
 */
export function openNetns(path: string): NetnsHandle {
  if (typeof path !== "string" || path === "" || path.includes("\0")) {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      "openNetns needs a path: /var/run/netns/<name> or /proc/<pid>/ns/net",
      { field: "path", value: path },
    );
  }
  libc();
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (cause) {
    const errno = (cause as NodeJS.ErrnoException).code ?? "EIO";
    throw new NetnsError("ERR_NETNS_SYSCALL", `open ${path} failed: ${errno}`, {
      errno,
      syscall: "open",
      path,
      cause,
    });
  }
  return new Handle(fd, path);
}

/**
 * Wraps a namespace descriptor received from elsewhere (a ZDS `AddWorkload` carries one over
 * SCM_RIGHTS). The handle takes ownership: closing it closes `fd`. Nothing is checked here; a
 * descriptor that is not a network namespace makes the first {@link withNetns} fail with `EINVAL`.
 */
export function adoptNetns(fd: number, path = `fd:${fd}`): NetnsHandle {
  if (!Number.isInteger(fd) || fd < 0) {
    throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", `not a file descriptor: ${fd}`, {
      field: "fd",
      value: fd,
    });
  }
  if (typeof path !== "string") {
    throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", "adoptNetns: path must be a string label", {
      field: "path",
      value: path,
    });
  }
  return new Handle(fd, path);
}

/**
 * Runs `fn` with the calling thread inside `netns`, then puts the thread back in the namespace it
 * was in, also when `fn` throws.
 *
 * Thread caveat: `setns` moves one thread. In Node that is the main thread, which runs `fn` and
 * nothing else meanwhile; libuv's thread pool (DNS, files) stays where it was. So `fn` must be
 * synchronous and should only create sockets: anything Node defers (a `listen` waiting on a lookup,
 * a promise) runs after the switch back, in the home namespace. A `fn` that returns a promise is
 * refused with `ERR_NETNS_INVALID_ARGUMENT` (after switching back).
 *
 * Switching back can only fail if the home namespace went away, which cannot happen to a namespace
 * this process is in; if it does, `ERR_NETNS_RESTORE` is thrown and the process should exit.
 */
export function withNetns<T>(netns: NetnsHandle, fn: () => T): T {
  if (typeof netns !== "object" || netns === null || typeof netns.closed !== "boolean") {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      "withNetns needs a NetnsHandle from openNetns or adoptNetns",
      {
        field: "netns",
        value: netns,
      },
    );
  }
  if (typeof fn !== "function") {
    throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", "withNetns needs a function to run", { field: "fn" });
  }
  if (netns.closed) throw new NetnsError("ERR_NETNS_CLOSED", `network namespace ${netns.path} is closed`);
  const c = libc();
  // The namespace this very thread is in now, so it can be restored exactly.
  const home = openSync("/proc/thread-self/ns/net", "r");
  let result: T;
  try {
    if (c.setns(netns.fd, CLONE_NEWNET) < 0) throw syscallError("setns", { path: netns.path });
    try {
      result = fn();
    } finally {
      if (c.setns(home, CLONE_NEWNET) < 0) {
        const cause = syscallError("setns");
        // biome-ignore lint/correctness/noUnsafeFinally: a failed restore must win over anything fn threw.
        throw new NetnsError(
          "ERR_NETNS_RESTORE",
          `could not return to the home network namespace after entering ${netns.path}`,
          { cause, errno: cause.errno, syscall: "setns" },
        );
      }
    }
  } finally {
    closeSync(home);
  }
  if (typeof (result as { then?: unknown } | null)?.then === "function") {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      "withNetns runs synchronous code only: the promise's work would run outside the namespace",
    );
  }
  return result;
}

/** Address family of a socket made by {@link createSocketInNetns}. */
export type SocketFamily = 4 | 6 | "unix";
/** Socket type of a socket made by {@link createSocketInNetns}. */
export type SocketKind = "stream" | "dgram" | "seqpacket";

export interface CreateSocketOptions {
  /** `4` (AF_INET), `6` (AF_INET6) or `"unix"`. Default 4. */
  family?: SocketFamily;
  /** `"stream"` (TCP), `"dgram"` (UDP) or `"seqpacket"`. Default `"stream"`. */
  type?: SocketKind;
}

const DOMAINS: Record<string, number> = { 4: AF_INET, 6: AF_INET6, unix: AF_UNIX };
const TYPES: Record<SocketKind, number> = {
  stream: SOCK_STREAM,
  dgram: SOCK_DGRAM,
  seqpacket: SOCK_SEQPACKET,
};

/** Creates a non-blocking, close-on-exec socket in the current namespace; returns its descriptor. */
export function createSocket(options: CreateSocketOptions = {}): number {
  const family = options.family ?? 4;
  const type = options.type ?? "stream";
  const domain = DOMAINS[String(family)];
  const kind = TYPES[type];
  if (domain === undefined || kind === undefined) {
    throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", `unknown socket family ${family} or type ${type}`, {
      family,
      type,
    });
  }
  return check("socket", libc().socket(domain, kind | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), { family, type });
}

/**
 * Creates a socket inside `netns` and returns its descriptor (non-blocking, close-on-exec). The
 * caller owns it: hand it to Node (`server.listen({ fd })`, `new net.Socket({ fd })`) or close it
 * with {@link closeFd}.
 */
export function createSocketInNetns(netns: NetnsHandle, options: CreateSocketOptions = {}): number {
  return withNetns(netns, () => createSocket(options));
}

/**
 * Closes a descriptor this package gave you; throws `ERR_NETNS_SYSCALL` (`EBADF`) if it was not open
 * and `ERR_NETNS_INVALID_ARGUMENT` for anything but a non-negative integer.
 */
export function closeFd(fd: number): void {
  requireFd(fd);
  check("close", libc().close(fd), { fd });
}
