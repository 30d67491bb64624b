/**
 * TCP in a pod's network namespace: listeners and outbound connections whose sockets live in the
 * namespace but are served by Node's own `net` module, plus the socket options a transparent proxy
 * needs (original destination, mark, transparent, freebind).
 */
import net from "node:net";
import { NetnsError } from "./errors.js";
import {
  check,
  closeQuietly,
  getIntOption,
  IP_FREEBIND,
  IP_TRANSPARENT,
  IP6T_SO_ORIGINAL_DST,
  IPV6_FREEBIND,
  IPV6_TRANSPARENT,
  IPV6_V6ONLY,
  libc,
  SO_DOMAIN,
  SO_MARK,
  SO_ORIGINAL_DST,
  SO_REUSEADDR,
  SO_REUSEPORT,
  SOL_IP,
  SOL_IPV6,
  SOL_SOCKET,
  setIntOption,
  syscallError,
} from "./libc.js";
import { createSocketInNetns, type NetnsHandle } from "./netns.js";
import { decodeSockaddr, encodeSockaddr, ipFamily, type SocketAddress } from "./sockaddr.js";
import { requireFd, requireInteger, requireMs } from "./validate.js";

/** A descriptor, or a Node socket or server whose descriptor is meant. */
export type FdLike = number | net.Socket | net.Server;

/**
 * The descriptor behind a Node socket or server (`_handle.fd`), or the number itself. Throws
 * `ERR_NETNS_CLOSED` when the socket has none (not yet connected, destroyed) and
 * `ERR_NETNS_INVALID_ARGUMENT` for a number that is not a non-negative integer.
 */
export function socketFd(target: FdLike): number {
  if (typeof target === "number") return requireFd(target);
  if (!(target instanceof net.Socket) && !(target instanceof net.Server)) {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      "expected a descriptor, a net.Socket or a net.Server",
      {
        field: "target",
      },
    );
  }
  const fd = (target as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) {
    throw new NetnsError("ERR_NETNS_CLOSED", "the socket has no open descriptor (destroyed or not yet open)");
  }
  return fd;
}

/** 4 or 6: the family of an IP socket. */
function socketFamily(fd: number): 4 | 6 {
  return getIntOption(fd, SOL_SOCKET, SO_DOMAIN) === 10 ? 6 : 4;
}

/** Sets SO_MARK (needs CAP_NET_ADMIN). ztunnel marks its own sockets 0x539 so capture rules skip them. */
export function setSocketMark(target: FdLike, mark: number): void {
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) {
    throw new NetnsError(
      "ERR_NETNS_INVALID_ARGUMENT",
      `mark must be a 32-bit unsigned integer, got ${mark}`,
      {
        field: "mark",
        value: mark,
      },
    );
  }
  setIntOption(socketFd(target), SOL_SOCKET, SO_MARK, mark | 0, "setsockopt(SO_MARK)");
}

/** Reads SO_MARK back. */
export function getSocketMark(target: FdLike): number {
  return getIntOption(socketFd(target), SOL_SOCKET, SO_MARK) >>> 0;
}

/**
 * Sets IP_TRANSPARENT (IPV6_TRANSPARENT on an IPv6 socket; needs CAP_NET_ADMIN): a listener then
 * accepts TPROXY'd connections for any address, an outbound socket may bind a foreign address.
 */
export function setIpTransparent(target: FdLike, on = true): void {
  const fd = socketFd(target);
  if (socketFamily(fd) === 6)
    setIntOption(fd, SOL_IPV6, IPV6_TRANSPARENT, on ? 1 : 0, "setsockopt(IPV6_TRANSPARENT)");
  else setIntOption(fd, SOL_IP, IP_TRANSPARENT, on ? 1 : 0, "setsockopt(IP_TRANSPARENT)");
}

/** Sets IP_FREEBIND (IPV6_FREEBIND): bind to an address the host does not (yet) have. */
export function setIpFreebind(target: FdLike, on = true): void {
  const fd = socketFd(target);
  if (socketFamily(fd) === 6)
    setIntOption(fd, SOL_IPV6, IPV6_FREEBIND, on ? 1 : 0, "setsockopt(IPV6_FREEBIND)");
  else setIntOption(fd, SOL_IP, IP_FREEBIND, on ? 1 : 0, "setsockopt(IP_FREEBIND)");
}

/**
 * Where a connection redirected by iptables/nftables NAT (REDIRECT, DNAT) was going: getsockopt
 * SO_ORIGINAL_DST (SOL_IP) on an IPv4 socket; on an IPv6 socket IP6T_SO_ORIGINAL_DST (SOL_IPV6),
 * then SO_ORIGINAL_DST for an IPv4 peer of a dual-stack listener. Throws `ERR_NETNS_SYSCALL` with
 * `errno: "ENOENT"` when conntrack has no entry for it. A connection made straight to the listener
 * reports the listener's own address: callers must refuse that loop.
 */
export function getOriginalDestination(target: FdLike): SocketAddress {
  const fd = socketFd(target);
  const c = libc();
  const v4 = { level: SOL_IP, name: SO_ORIGINAL_DST, bytes: 16 };
  const v6 = { level: SOL_IPV6, name: IP6T_SO_ORIGINAL_DST, bytes: 28 };
  let first: NetnsError | undefined;
  for (const { level, name, bytes } of socketFamily(fd) === 6 ? [v6, v4] : [v4]) {
    const buf = Buffer.alloc(bytes);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(bytes);
    if (c.getsockopt(fd, level, name, buf, len) === 0)
      return decodeSockaddr(buf.subarray(0, len.readUInt32LE()));
    first ??= syscallError("getsockopt(SO_ORIGINAL_DST)", { fd });
  }
  throw first as NetnsError;
}

/** Socket options shared by listeners and outbound sockets. */
export interface NetnsSocketOptions {
  /** SO_MARK for the socket. Default none; ztunnel uses 1337 (0x539), `DEFAULT_INPOD_MARK`. */
  mark?: number;
  /** IP_TRANSPARENT (IPV6_TRANSPARENT). Default false; ztunnel sets it on in-pod listeners. */
  transparent?: boolean;
}

export interface ListenInNetnsOptions extends NetnsSocketOptions {
  /** Address to bind, canonical IPv4 or IPv6 (`"0.0.0.0"`, `"::"`, `"127.0.0.1"`). Names are refused. */
  host: string;
  /** Port to bind; 0 picks one (read it from `server.address()`). */
  port: number;
  /** listen() backlog, an integer from 0 to 2^31-1 (the kernel caps it at `net.core.somaxconn`). Default 511, like Node. */
  backlog?: number;
  /** SO_REUSEPORT, so a second listener (a ztunnel being upgraded) can bind the same port. Default false; ztunnel `INPOD_PORT_REUSE`. */
  reusePort?: boolean;
  /** For `"::"`: accept IPv6 only (IPV6_V6ONLY). Default false (dual stack). */
  ipv6Only?: boolean;
}

/**
 * Creates a TCP socket in `netns`, sets its options, binds and listens; returns the listening
 * descriptor for any Node server's `listen({ fd })` (net, tls, http, http2). On failure nothing is
 * left open.
 */
export function createListeningSocket(netns: NetnsHandle, options: ListenInNetnsOptions): number {
  const backlog = requireInteger(options.backlog ?? 511, "backlog", 0, 2 ** 31 - 1);
  const fd = bindInNetns(netns, { ...options, type: "stream" });
  try {
    check("listen", libc().listen(fd, backlog), { netns: netns.path });
    return fd;
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
}

export interface BindInNetnsOptions extends Omit<ListenInNetnsOptions, "backlog"> {
  /** `"dgram"` (UDP) or `"stream"` (TCP). Default `"dgram"`. */
  type?: "dgram" | "stream";
}

/**
 * Creates a socket in `netns`, sets SO_REUSEADDR and the given options, and binds it; returns the
 * descriptor. For UDP hand it to `dgram.createSocket("udp4").bind({ fd })` (a DNS proxy on 15053 in
 * the pod); for TCP prefer {@link createListeningSocket}. On failure nothing is left open.
 */
export function bindInNetns(netns: NetnsHandle, options: BindInNetnsOptions): number {
  const family = ipFamily(options.host);
  const addr = encodeSockaddr(options.host, options.port);
  const fd = createSocketInNetns(netns, { family, type: options.type ?? "dgram" });
  try {
    setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)");
    if (options.reusePort) setIntOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "setsockopt(SO_REUSEPORT)");
    if (family === 6 && options.ipv6Only)
      setIntOption(fd, SOL_IPV6, IPV6_V6ONLY, 1, "setsockopt(IPV6_V6ONLY)");
    applySocketOptions(fd, options);
    check("bind", libc().bind(fd, addr, addr.length), {
      host: options.host,
      port: options.port,
      netns: netns.path,
    });
    return fd;
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
}

function applySocketOptions(fd: number, options: NetnsSocketOptions): void {
  if (options.mark !== undefined) setSocketMark(fd, options.mark);
  if (options.transparent) setIpTransparent(fd);
}

/**
 * Listens inside `netns` with a Node server: `options.server` (any `net.Server`, so also tls, http,
 * http2 servers) or a new `net.Server`. Resolves once listening; rejects with `ERR_NETNS_SYSCALL`
 * (`EADDRINUSE`, `EPERM`, ...) or `ERR_NETNS_INVALID_ARGUMENT` (a `server` that is not a
 * `net.Server` or already listens) with nothing left open. Closing the server closes the socket.
 */
export function listenInNetns<S extends net.Server = net.Server>(
  netns: NetnsHandle,
  options: ListenInNetnsOptions & { server?: S },
): Promise<S> {
  const given = options.server;
  if (given !== undefined && !(given instanceof net.Server)) {
    return Promise.reject(
      new NetnsError(
        "ERR_NETNS_INVALID_ARGUMENT",
        "server must be a net.Server (or a tls, http, http2 server)",
        {
          field: "server",
        },
      ),
    );
  }
  if (given?.listening) {
    return Promise.reject(
      new NetnsError("ERR_NETNS_INVALID_ARGUMENT", "server is already listening", { field: "server" }),
    );
  }
  let fd: number;
  try {
    fd = createListeningSocket(netns, options);
  } catch (err) {
    return Promise.reject(err);
  }
  const server = given ?? (net.createServer() as S);
  return new Promise<S>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once("error", onError);
    try {
      server.listen({ fd }, () => {
        server.off("error", onError);
        resolve(server);
      });
    } catch (cause) {
      // Node refused the descriptor before taking it over: it is still ours to close.
      server.off("error", onError);
      closeQuietly(fd);
      reject(
        new NetnsError(
          "ERR_NETNS_INVALID_ARGUMENT",
          `server refused the listening socket: ${String(cause)}`,
          {
            field: "server",
            cause,
          },
        ),
      );
    }
  });
}

export interface ConnectFromNetnsOptions extends NetnsSocketOptions {
  /** Destination address, canonical IPv4 or IPv6. Names are refused: resolve them first. */
  host: string;
  port: number;
  /** Source address to bind before connecting (with `transparent` or `freebind` it may be foreign). */
  localAddress?: string;
  /** Source port; default 0 (the kernel picks). */
  localPort?: number;
  /** IP_FREEBIND (IPV6_FREEBIND) before binding `localAddress`. Default false. */
  freebind?: boolean;
  /** Passed to `net.Socket`: keep the writable side open after the peer ends. Default false. */
  allowHalfOpen?: boolean;
  /**
   * TCP_NODELAY (no Nagle delay), as `net.connect`'s option of that name. Default false. A relay
   * wants it: it writes each piece once, as it arrives, and Nagle would hold a piece back until the
   * previous one is acknowledged.
   */
  noDelay?: boolean;
  /**
   * Node's `socket.setTimeout` in ms, from 0 to 2^31-1; 0 (default) none. The socket emits
   * 'timeout'; it is not closed for you.
   */
  timeout?: number;
}

/**
 * Opens a TCP connection that leaves from inside `netns`: the socket is created in the namespace,
 * marked, optionally bound, and then connected by Node itself, so the returned `net.Socket` behaves
 * like one from `net.connect`: 'connect' when established, 'error' (`ECONNREFUSED`, ...) otherwise.
 * Socket creation problems (setns, bind) and bad options throw synchronously as `NetnsError`, with
 * nothing left open.
 */
export function connectFromNetns(netns: NetnsHandle, options: ConnectFromNetnsOptions): net.Socket {
  const timeout = options.timeout === undefined ? 0 : requireMs(options.timeout, "timeout");
  const family = ipFamily(options.host);
  encodeSockaddr(options.host, options.port); // validates the port before anything is opened
  const local =
    options.localAddress !== undefined || options.localPort !== undefined
      ? encodeSockaddr(
          options.localAddress ?? (family === 4 ? "0.0.0.0" : "::"),
          options.localPort ?? 0,
          "localAddress",
        )
      : undefined;
  if (options.localAddress !== undefined && ipFamily(options.localAddress, "localAddress") !== family) {
    throw new NetnsError("ERR_NETNS_INVALID_ARGUMENT", "localAddress and host must be of the same family", {
      field: "localAddress",
      value: options.localAddress,
    });
  }
  const fd = createSocketInNetns(netns, { family, type: "stream" });
  let socket: net.Socket;
  try {
    applySocketOptions(fd, options);
    if (options.freebind) setIpFreebind(fd);
    if (local) check("bind", libc().bind(fd, local, local.length), { localAddress: options.localAddress });
    // manualStart: do not start reading an unconnected socket (it would read EOF at once); Node
    // starts reading itself once connect() completes, as for any socket it connects.
    socket = new net.Socket({
      fd,
      manualStart: true,
      allowHalfOpen: options.allowHalfOpen ?? false,
    } as net.SocketConstructorOpts);
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
  try {
    // Set on the descriptor now, before connect(): the first segment already leaves without delay.
    if (options.noDelay) socket.setNoDelay(true);
    if (timeout > 0) socket.setTimeout(timeout);
    return socket.connect({ host: options.host, port: options.port });
  } catch (err) {
    socket.destroy();
    throw err;
  }
}
