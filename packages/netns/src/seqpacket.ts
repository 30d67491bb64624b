/**
 * Unix SOCK_SEQPACKET sockets with file-descriptor passing (SCM_RIGHTS), which Node's `net` cannot
 * open. Each message keeps its boundaries, so a protocol needs no framing (ZDS sends one protobuf
 * per message). I/O is non-blocking; readiness comes from a libuv poll watcher on Node's own event
 * loop (`koffi.node.poll`, a `uv_poll_t`), so there is no thread and no timer.
 */
import { EventEmitter } from "node:events";
import { unlinkSync } from "node:fs";
import { NetnsError } from "./errors.js";
import {
  check,
  closeQuietly,
  libc,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSG_TRUNC,
  type PollHandle,
  SCM_RIGHTS,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOL_SOCKET,
  syscallError,
} from "./libc.js";
import { createSocket } from "./netns.js";
import { encodeUnixSockaddr } from "./sockaddr.js";

/** One received message: its bytes and the descriptors that came with it (now yours to close). */
export interface SeqpacketMessage {
  data: Buffer;
  fds: number[];
}

export interface SeqpacketOptions {
  /** Largest message accepted; a longer one is an `ERR_NETNS_MESSAGE_TRUNCATED` error. Default 64 KiB (ztunnel reads ZDS with 1 KiB). */
  maxMessageBytes?: number;
  /** Most descriptors accepted with one message; more is `ERR_NETNS_MESSAGE_TRUNCATED`. Default 8. */
  maxFds?: number;
}

// struct msghdr and struct cmsghdr on 64-bit Linux.
const MSGHDR_BYTES = 56;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;
const MSG_CONTROL = 32;
const MSG_CONTROLLEN = 40;
const MSG_FLAGS = 48;
const CMSG_HEADER_BYTES = 16;
const align8 = (n: number) => (n + 7) & ~7;
const cmsgSpace = (dataBytes: number) => CMSG_HEADER_BYTES + align8(dataBytes);

const EAGAIN = new Set(["EAGAIN", "EWOULDBLOCK"]);

interface Pending {
  data: Buffer;
  fds: number[];
}

/**
 * One end of a seqpacket connection. Events: `'message'` ({@link SeqpacketMessage}), `'error'`
 * (`NetnsError`; the socket closes after it), `'close'` (once, after `close()`, an error, or the peer
 * hanging up). Descriptors received with a message belong to the `'message'` listener.
 */
export class SeqpacketSocket extends EventEmitter {
  #fd: number;
  #poll: PollHandle | undefined;
  #queue: Pending[] = [];
  #closed = false;
  readonly #recvData: Buffer;
  readonly #recvControl: Buffer;
  readonly #recvIov = Buffer.alloc(16);
  readonly #recvHeader = Buffer.alloc(MSGHDR_BYTES);
  readonly #maxFds: number;

  /** Wraps a connected seqpacket descriptor (from `accept`, `socketpair`, or ZDS); takes ownership. */
  constructor(fd: number, options: SeqpacketOptions = {}) {
    super();
    this.#fd = fd;
    this.#maxFds = options.maxFds ?? 8;
    this.#recvData = Buffer.alloc(options.maxMessageBytes ?? 64 * 1024);
    this.#recvControl = Buffer.alloc(cmsgSpace(4 * this.#maxFds));
    const c = libc();
    this.#recvIov.writeBigUInt64LE(c.address(this.#recvData), 0);
    this.#recvIov.writeBigUInt64LE(BigInt(this.#recvData.length), 8);
    this.#recvHeader.writeBigUInt64LE(c.address(this.#recvIov), MSG_IOV);
    this.#recvHeader.writeBigUInt64LE(1n, MSG_IOVLEN);
    this.#recvHeader.writeBigUInt64LE(c.address(this.#recvControl), MSG_CONTROL);
    this.#poll = c.poll(fd, { readable: true, disconnect: true }, (status, events) =>
      this.#onPoll(status, events),
    );
  }

  /**
   * Connects to a listening seqpacket socket at `path`. A Unix connect completes at once, so this is
   * synchronous: it throws `ERR_NETNS_SYSCALL` (`ENOENT`, `ECONNREFUSED`, `EAGAIN` when the
   * listener's backlog is full) or returns a connected socket.
   */
  static connect(path: string, options: SeqpacketOptions = {}): SeqpacketSocket {
    const { addr, length } = encodeUnixSockaddr(path);
    const fd = createSocket({ family: "unix", type: "seqpacket" });
    try {
      check("connect", libc().connect(fd, addr, length), { path });
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    return new SeqpacketSocket(fd, options);
  }

  /** The descriptor; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Sends one message, with `fds` attached as SCM_RIGHTS (the peer gets its own copies; yours stay
   * open). If the peer's queue is full the message waits, with duplicates of `fds`, and goes out in
   * order. Throws `ERR_NETNS_CLOSED` after close, `ERR_NETNS_INVALID_ARGUMENT` for an empty message
   * (a zero-length read means the peer hung up).
   */
  send(data: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed) throw new NetnsError("ERR_NETNS_CLOSED", "the seqpacket socket is closed");
    if (data.length === 0) {
      throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", "a seqpacket message must not be empty", {
        field: "data",
      });
    }
    const buf = Buffer.from(data.buffer, data.byteOffset, data.length);
    if (this.#queue.length === 0 && this.#trySend(buf, fds)) return;
    if (this.#closed) return; // the attempt failed hard and closed the socket
    const c = libc();
    const copies: number[] = [];
    try {
      for (const fd of fds) copies.push(check("fcntl(F_DUPFD_CLOEXEC)", c.dupCloexec(fd), { fd }));
    } catch (err) {
      for (const fd of copies) closeQuietly(fd);
      throw err;
    }
    this.#queue.push({ data: Buffer.from(buf), fds: copies });
    this.#watch();
  }

  /** Returns true when sent, false when the socket would block; on other errors closes the socket. */
  #trySend(data: Buffer, fds: readonly number[]): boolean {
    const c = libc();
    const header = Buffer.alloc(MSGHDR_BYTES);
    const iov = Buffer.alloc(16);
    iov.writeBigUInt64LE(c.address(data), 0);
    iov.writeBigUInt64LE(BigInt(data.length), 8);
    header.writeBigUInt64LE(c.address(iov), MSG_IOV);
    header.writeBigUInt64LE(1n, MSG_IOVLEN);
    let control: Buffer | undefined;
    if (fds.length > 0) {
      control = Buffer.alloc(cmsgSpace(4 * fds.length));
      control.writeBigUInt64LE(BigInt(CMSG_HEADER_BYTES + 4 * fds.length), 0);
      control.writeInt32LE(SOL_SOCKET, 8);
      control.writeInt32LE(SCM_RIGHTS, 12);
      fds.forEach((fd, i) => {
        control?.writeInt32LE(fd, CMSG_HEADER_BYTES + 4 * i);
      });
      header.writeBigUInt64LE(c.address(control), MSG_CONTROL);
      header.writeBigUInt64LE(BigInt(control.length), MSG_CONTROLLEN);
    }
    if (c.sendmsg(this.#fd, header, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return true;
    const err = syscallError("sendmsg", { fd: this.#fd });
    if (EAGAIN.has(err.errno ?? "")) return false;
    this.#fail(err);
    return false;
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const next = this.#queue[0] as Pending;
      if (!this.#trySend(next.data, next.fds)) break;
      this.#queue.shift();
      for (const fd of next.fds) closeQuietly(fd);
    }
    if (!this.#closed) this.#watch();
  }

  /** (Re)starts the watcher: always readable, writable only while messages wait. */
  #watch(): void {
    this.#poll?.start(
      { readable: true, disconnect: true, writable: this.#queue.length > 0 },
      (status, events) => this.#onPoll(status, events),
    );
  }

  #onPoll(status: number, events: { readable: boolean; writable: boolean }): void {
    if (this.#closed) return;
    if (status < 0) {
      this.#fail(
        new NetnsError("ERR_NETNS_SYSCALL", `poll failed: ${status}`, {
          errno: String(status),
          syscall: "poll",
        }),
      );
      return;
    }
    if (events.writable) this.#flush();
    // Also on 'disconnect': whatever the peer sent before hanging up is read first, then EOF.
    this.#drain();
  }

  #drain(): void {
    const c = libc();
    while (!this.#closed) {
      this.#recvHeader.writeBigUInt64LE(BigInt(this.#recvControl.length), MSG_CONTROLLEN);
      this.#recvHeader.writeInt32LE(0, MSG_FLAGS);
      const n = c.recvmsg(this.#fd, this.#recvHeader, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n < 0) {
        const err = syscallError("recvmsg", { fd: this.#fd });
        if (!EAGAIN.has(err.errno ?? "")) this.#fail(err);
        return;
      }
      const fds = this.#receivedFds();
      const flags = this.#recvHeader.readInt32LE(MSG_FLAGS);
      // The control buffer is padded to 8 bytes, so it can hold one descriptor more than asked for.
      if (flags & (MSG_TRUNC | MSG_CTRUNC) || fds.length > this.#maxFds) {
        for (const fd of fds) closeQuietly(fd);
        this.#fail(
          new NetnsError(
            "ERR_NETNS_MESSAGE_TRUNCATED",
            flags & MSG_TRUNC
              ? `a message was longer than ${this.#recvData.length} bytes`
              : `a message carried more than ${this.#maxFds} file descriptors`,
          ),
        );
        return;
      }
      if (n === 0 && fds.length === 0) {
        this.close(); // the peer hung up
        return;
      }
      this.emit("message", {
        data: Buffer.from(this.#recvData.subarray(0, n)),
        fds,
      } satisfies SeqpacketMessage);
    }
  }

  #receivedFds(): number[] {
    const fds: number[] = [];
    const total = Number(this.#recvHeader.readBigUInt64LE(MSG_CONTROLLEN));
    let offset = 0;
    while (offset + CMSG_HEADER_BYTES <= total) {
      const length = Number(this.#recvControl.readBigUInt64LE(offset));
      if (length < CMSG_HEADER_BYTES || offset + length > total) break;
      const level = this.#recvControl.readInt32LE(offset + 8);
      const type = this.#recvControl.readInt32LE(offset + 12);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let at = offset + CMSG_HEADER_BYTES; at + 4 <= offset + length; at += 4) {
          fds.push(this.#recvControl.readInt32LE(at));
        }
      }
      offset += align8(length);
    }
    return fds;
  }

  #fail(err: NetnsError): void {
    if (this.#closed) return;
    this.#shutdown();
    process.nextTick(() => {
      this.emit("error", err);
      this.emit("close");
    });
  }

  #shutdown(): void {
    this.#closed = true;
    // Stop watching before closing: libuv must forget the descriptor before its number is reused.
    this.#poll?.close();
    this.#poll = undefined;
    for (const pending of this.#queue) for (const fd of pending.fds) closeQuietly(fd);
    this.#queue = [];
    closeQuietly(this.#fd);
    this.#fd = -1;
  }

  /** Closes the socket; messages still waiting to be sent are dropped. Emits 'close' once. */
  close(): void {
    if (this.#closed) return;
    this.#shutdown();
    process.nextTick(() => this.emit("close"));
  }

  /** Lets the process exit while this socket is open. */
  unref(): this {
    this.#poll?.unref();
    return this;
  }

  ref(): this {
    this.#poll?.ref();
    return this;
  }
}

/**
 * A listening seqpacket socket on a filesystem path. Events: `'connection'` ({@link SeqpacketSocket}),
 * `'error'`, `'close'`. `close()` stops accepting and removes the path it bound; accepted sockets
 * stay open.
 */
export class SeqpacketServer extends EventEmitter {
  #fd = -1;
  #poll: PollHandle | undefined;
  #path: string | undefined;
  #closed = false;

  constructor(private readonly options: SeqpacketOptions = {}) {
    super();
  }

  /** The bound path, once listening. */
  get path(): string | undefined {
    return this.#path;
  }

  /**
   * Binds `path` and listens. A stale socket file left by a dead process is removed first when
   * `replace` is set (what istio-cni does with its ZDS socket); otherwise binding it fails with `EADDRINUSE`.
   */
  listen(path: string, options: { backlog?: number; replace?: boolean } = {}): this {
    if (this.#closed || this.#fd >= 0) {
      throw new NetnsError("ERR_NETNS_CLOSED", "a SeqpacketServer listens once");
    }
    const { addr, length } = encodeUnixSockaddr(path);
    if (options.replace) {
      try {
        unlinkSync(path);
      } catch {
        // nothing there
      }
    }
    const c = libc();
    const fd = createSocket({ family: "unix", type: "seqpacket" });
    try {
      check("bind", c.bind(fd, addr, length), { path });
      check("listen", c.listen(fd, options.backlog ?? 128), { path });
    } catch (err) {
      closeQuietly(fd);
      throw err;
    }
    this.#fd = fd;
    this.#path = path;
    this.#poll = c.poll(fd, { readable: true }, (status) => this.#accept(status));
    return this;
  }

  #accept(status: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.emit(
        "error",
        new NetnsError("ERR_NETNS_SYSCALL", `poll failed: ${status}`, {
          errno: String(status),
          syscall: "poll",
        }),
      );
      return;
    }
    const c = libc();
    for (;;) {
      const fd = c.accept4(this.#fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        const err = syscallError("accept4", { path: this.#path });
        // ECONNABORTED: the client left before we got to it; EMFILE and friends are worth telling.
        if (!EAGAIN.has(err.errno ?? "") && err.errno !== "ECONNABORTED") this.emit("error", err);
        return;
      }
      this.emit("connection", new SeqpacketSocket(fd, this.options));
      if (this.#closed) return;
    }
  }

  /** Stops listening and removes the socket path. Emits 'close' once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poll?.close();
    this.#poll = undefined;
    if (this.#fd >= 0) closeQuietly(this.#fd);
    this.#fd = -1;
    if (this.#path !== undefined) {
      try {
        unlinkSync(this.#path);
      } catch {
        // already gone
      }
    }
    process.nextTick(() => this.emit("close"));
  }

  unref(): this {
    this.#poll?.unref();
    return this;
  }

  ref(): this {
    this.#poll?.ref();
    return this;
  }
}

/** Creates a {@link SeqpacketServer}; call `listen(path)` on it. */
export function createSeqpacketServer(options: SeqpacketOptions = {}): SeqpacketServer {
  return new SeqpacketServer(options);
}

/** Connects to a seqpacket listener at `path`; see {@link SeqpacketSocket.connect}. */
export function connectSeqpacket(path: string, options: SeqpacketOptions = {}): SeqpacketSocket {
  return SeqpacketSocket.connect(path, options);
}
