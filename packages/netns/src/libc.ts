/**
 * The C library calls this package makes, bound through koffi on first use. Importing the package
 * loads nothing native, so it imports everywhere; the first call on another platform throws
 * `ERR_NETNS_UNSUPPORTED`. Constants are Linux's generic values (x86_64, arm64, riscv64, ...).
 */
import { createRequire } from "node:module";
import { endianness } from "node:os";
import { getSystemErrorName } from "node:util";
import { NetnsError } from "./errors.js";

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_TYPE = 3;
export const SO_ERROR = 4;
export const SO_REUSEPORT = 15;
export const SO_MARK = 36;
export const SO_DOMAIN = 39;
export const SOL_IP = 0;
export const IP_FREEBIND = 15;
export const IP_TRANSPARENT = 19;
export const SO_ORIGINAL_DST = 80;
export const SOL_IPV6 = 41;
export const IPV6_V6ONLY = 26;
export const IPV6_TRANSPARENT = 75;
export const IPV6_FREEBIND = 78;
export const IP6T_SO_ORIGINAL_DST = 80;
export const CLONE_NEWNET = 0x40000000;
export const SCM_RIGHTS = 1;
export const MSG_CTRUNC = 0x8;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const F_DUPFD_CLOEXEC = 1030;
/** ioctl NS_GET_NSTYPE, _IO(0xb7, 0x3): which kind of namespace a descriptor refers to (Linux 4.11+). */
export const NS_GET_NSTYPE = 0xb703;

type Fn = (...args: unknown[]) => number;

/** The bound calls. Every pointer argument is a Buffer or a bigint address. */
export interface Libc {
  setns(fd: number, nstype: number): number;
  socket(domain: number, type: number, protocol: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, length: number): number;
  getsockopt(fd: number, level: number, name: number, value: Buffer, length: Buffer): number;
  bind(fd: number, addr: Buffer, length: number): number;
  listen(fd: number, backlog: number): number;
  connect(fd: number, addr: Buffer, length: number): number;
  accept4(fd: number, addr: null, length: null, flags: number): number;
  sendmsg(fd: number, msg: Buffer, flags: number): number;
  recvmsg(fd: number, msg: Buffer, flags: number): number;
  close(fd: number): number;
  dupCloexec(fd: number): number;
  /** ioctl(fd, NS_GET_NSTYPE): the CLONE_NEW* flag of a namespace descriptor, or -1 (errno set). */
  nsType(fd: number): number;
  /** The errno of the last call on this thread. */
  errno(): number;
  /** Address of a Buffer's bytes, for pointers stored inside structs (msghdr, iovec). */
  address(buffer: Buffer): bigint;
  /** The `koffi.node.poll` watcher (a libuv uv_poll_t on Node's loop). */
  poll(fd: number, options: PollOptions, callback: PollCallback): PollHandle;
}

export interface PollOptions {
  readable?: boolean;
  writable?: boolean;
  disconnect?: boolean;
}
/** koffi calls back with libuv's status (0 or a negative errno) and the events seen. */
export type PollCallback = (status: number, events: { readable: boolean; writable: boolean }) => void;
export interface PollHandle {
  start(options: PollOptions, callback: PollCallback): void;
  stop(): void;
  close(): void;
  unref(): void;
  ref(): void;
}

let cached: Libc | undefined;

/** Binds the calls on first use; throws `ERR_NETNS_UNSUPPORTED` where that cannot work. */
export function libc(): Libc {
  if (cached) return cached;
  if (process.platform !== "linux") {
    throw new NetnsError("ERR_NETNS_UNSUPPORTED", `network namespaces need Linux, not ${process.platform}`, {
      platform: process.platform,
    });
  }
  if (endianness() !== "LE" || !["x64", "arm64", "riscv64", "loong64"].includes(process.arch)) {
    throw new NetnsError(
      "ERR_NETNS_UNSUPPORTED",
      `@ambient/netns lays out C structs for 64-bit little-endian Linux, not ${process.arch}`,
      { arch: process.arch },
    );
  }
  // biome-ignore lint/suspicious/noExplicitAny: koffi's module object, typed at the boundary below.
  let koffi: any;
  try {
    koffi = createRequire(import.meta.url)("koffi");
  } catch (cause) {
    throw new NetnsError("ERR_NETNS_UNSUPPORTED", "the koffi FFI module did not load", { cause });
  }
  // dlopen(NULL): the symbols node itself links against, whichever C library that is.
  // biome-ignore lint/suspicious/noExplicitAny: koffi's library handle.
  let lib: any;
  try {
    lib = koffi.load(null);
  } catch (cause) {
    throw new NetnsError("ERR_NETNS_UNSUPPORTED", "the C library could not be loaded through koffi", {
      cause,
    });
  }
  const fn = (proto: string): Fn => lib.func(proto);
  const fcntl = fn("int fcntl(int fd, int cmd, ...)");
  const ioctl = fn("int ioctl(int fd, unsigned long request, ...)");
  cached = {
    setns: fn("int setns(int fd, int nstype)"),
    socket: fn("int socket(int domain, int type, int protocol)"),
    setsockopt: fn("int setsockopt(int fd, int level, int name, void *value, uint32_t length)"),
    getsockopt: fn("int getsockopt(int fd, int level, int name, void *value, void *length)"),
    bind: fn("int bind(int fd, void *addr, uint32_t length)"),
    listen: fn("int listen(int fd, int backlog)"),
    connect: fn("int connect(int fd, void *addr, uint32_t length)"),
    accept4: fn("int accept4(int fd, void *addr, void *length, int flags)"),
    sendmsg: fn("intptr_t sendmsg(int fd, void *msg, int flags)"),
    recvmsg: fn("intptr_t recvmsg(int fd, void *msg, int flags)"),
    close: fn("int close(int fd)"),
    dupCloexec: (fd: number) => fcntl(fd, F_DUPFD_CLOEXEC, "int", 0),
    nsType: (fd: number) => ioctl(fd, NS_GET_NSTYPE),
    errno: () => koffi.errno(),
    address: (buffer: Buffer) => koffi.address(buffer),
    poll: (fd, options, callback) => koffi.node.poll(fd, options, callback),
  } as Libc;
  return cached;
}

/** The errno name for a number (`1` → `"EPERM"`), as Node and libuv spell it. */
export function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `E${errno}`;
  }
}

/** The error for a failed call; reads errno, so call it right after the call that failed. */
export function syscallError(syscall: string, details: Record<string, unknown> = {}): NetnsError {
  const errno = errnoName(libc().errno());
  return new NetnsError("ERR_NETNS_SYSCALL", `${syscall} failed: ${errno}`, { ...details, errno, syscall });
}

/** Runs a call that returns -1 on failure, turning that into an `ERR_NETNS_SYSCALL`. */
export function check(syscall: string, result: number, details?: Record<string, unknown>): number {
  if (result < 0) throw syscallError(syscall, details);
  return result;
}

/** Closes a descriptor, ignoring errors (used on cleanup paths). */
export function closeQuietly(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/** Sets an int-valued socket option. */
export function setIntOption(fd: number, level: number, name: number, value: number, syscall: string): void {
  const buf = Buffer.alloc(4);
  buf.writeInt32LE(value);
  check(syscall, libc().setsockopt(fd, level, name, buf, 4), { fd, level, option: name });
}

/** Reads an int-valued socket option. */
export function getIntOption(fd: number, level: number, name: number): number {
  const buf = Buffer.alloc(4);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(4);
  check("getsockopt", libc().getsockopt(fd, level, name, buf, len), { fd, level, option: name });
  return buf.readInt32LE();
}
