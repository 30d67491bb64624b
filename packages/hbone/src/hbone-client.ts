import type { Socket } from "node:net";
import { type Duplex, Stream } from "node:stream";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { peerSpiffeId, type SpiffeId } from "@ambient/spiffe";
import { parseAuthority, type TunnelAuthority } from "./authority.js";
import {
  ConnectionPool,
  type DialedConnection,
  type PooledConnection,
  poolKeyString,
} from "./connection-pool.js";
import {
  checkCredentials,
  clientTlsOptions,
  type HboneCredentials,
  type HboneTlsOptions,
  localCertificateOf,
  normaliseIdentities,
  ownIdentity,
  trustKey,
} from "./credentials.js";
import {
  durationOption,
  HBONE_DEFAULTS,
  integerOption,
  MAX_SETTING,
  maxFrameOption,
  maxWindowOption,
  nonNegativeOption,
} from "./defaults.js";
import { HboneError } from "./errors.js";
import { type H2Headers, type H2Stream, Http2Connection, outgoingFields } from "./h2/connection.js";
import { H2_ERROR, MAX_WINDOW } from "./h2/frames.js";
import { createTraceparent, formatTraceparent, HBONE_HEADER_NAMES } from "./headers.js";
import { startKeepalive } from "./keepalive.js";
import { abortError, credentialsError, resetError, toHboneError } from "./node-error.js";
import { instrument, type Logger, loggerOption, type MetricsSink, metricsOption } from "./telemetry.js";
import { TunnelStream } from "./tunnel-stream.js";

/** Options of {@link createHboneClient}. The credentials are the default source identity. */
export interface HboneClientOptions extends HboneCredentials, HboneTlsOptions {
  /** Initial stream window. Default 4 MiB; ztunnel `HTTP2_STREAM_WINDOW_SIZE`. */
  streamWindowBytes?: number;
  /** Connection window, sent as WINDOW_UPDATE at start. Default 16 MiB; ztunnel `HTTP2_CONNECTION_WINDOW_SIZE`. */
  connectionWindowBytes?: number;
  /**
   * Largest a stream window grows to when window probes (PINGs during downloads) show the window, not
   * the reader, limits a transfer. Default 4x `streamWindowBytes`; equal to it turns growth off.
   */
  maxStreamWindowBytes?: number;
  /** The same for the connection window. Default 4x `connectionWindowBytes`. */
  maxConnectionWindowBytes?: number;
  /** Max frame size. Default 1 MiB; ztunnel `HTTP2_FRAME_SIZE`. */
  maxFrameBytes?: number;
  /** Max response header list. Default 16 KiB; ztunnel client `max_header_list_size`. */
  maxHeaderListBytes?: number;
  /** Streams per pooled connection (also capped by the peer). Default 100; ztunnel `POOL_MAX_STREAMS_PER_CONNECTION`. */
  maxStreamsPerConnection?: number;
  /** Close a pooled connection unused this long. Default 5 min; ztunnel `POOL_UNUSED_RELEASE_TIMEOUT`. */
  poolIdleTimeoutMs?: number;
  /** TCP + TLS dial timeout. Default 10 s; ztunnel `CONNECTION_TIMEOUT`. */
  connectTimeoutMs?: number;
  /** Wait for the CONNECT response (and before it, for a peer allowing no new streams). Default 15 s. */
  responseTimeoutMs?: number;
  /** PING interval; 0 disables. Default 10 s; ztunnel h2 keepalive interval. */
  keepaliveIntervalMs?: number;
  /**
   * Drop a connection whose PING is unanswered this long; 0 keeps sending PINGs but never drops a
   * connection for an unanswered one. Default 20 s; ztunnel h2 keepalive timeout.
   */
  keepaliveTimeoutMs?: number;
  /**
   * Accepted for compatibility and ignored: buffering is bounded by the flow-control windows.
   * @deprecated
   */
  maxSessionMemoryMib?: number;
  /**
   * Opens the TCP connection of each new pooled connection, e.g. from inside a pod's network
   * namespace (`connectFromNetns`); TLS then runs over it. Default: `net.connect` from
   * `sourceAddress`. Connections are pooled per client, so use one client per network.
   */
  connectSocket?: (target: { host: string; port: number }, sourceAddress: string | undefined) => Socket;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Extra request headers; `traceparent` defaults to a fresh random one per tunnel. */
export type HboneRequestHeaders = Readonly<Record<string, string>>;

/** Options of {@link HboneClient.connect}. */
export interface HboneConnectOptions {
  /** The peer's HBONE listener, `ip:port` (usually port 15008). */
  address: string;
  /** CONNECT target: `ip:port`, `[ipv6]:port` or `hostname:port`. */
  authority: string;
  /** The peer certificate's URI SAN must be one of these SPIFFE IDs. */
  expectedIdentities: readonly (string | SpiffeId)[];
  /** Request headers such as `forwarded` and `baggage` (see the header helpers). */
  headers?: HboneRequestHeaders;
  /** Local IP to dial from; part of the pool key. Default: chosen by the OS. */
  sourceAddress?: string;
  /** Client certificate for this tunnel (source identity); default the client's own. */
  credentials?: HboneCredentials;
  /** Aborting rejects the connect with `ERR_HBONE_ABORTED` (the signal's reason as `cause`). */
  signal?: AbortSignal;
}

/** Options of {@link HboneClient.connectDouble}. */
export interface HboneDoubleConnectOptions {
  /** The east-west gateway: its HBONE address and identities (outer, pooled hop). */
  gateway: { address: string; expectedIdentities: readonly (string | SpiffeId)[] };
  /** `service-hostname:port` on the remote network; used by both CONNECTs. */
  authority: string;
  /** Final identities (the Service's SANs), checked by the inner TLS handshake. */
  expectedIdentities: readonly (string | SpiffeId)[];
  /** Sent as `x-forwarded-network` on the inner CONNECT. */
  forwardedNetwork?: string;
  /** Headers for both CONNECTs. */
  headers?: HboneRequestHeaders;
  sourceAddress?: string;
  credentials?: HboneCredentials;
  signal?: AbortSignal;
}

/** Counts of pooled outbound connections and open tunnels. */
export interface HboneClientStats {
  connections: number;
  streams: number;
  /** Unpooled inner sessions of double-HBONE tunnels. */
  innerSessions: number;
}

/** HBONE client with a connection pool. */
export interface HboneClient {
  /** Opens a tunnel; resolves once the peer answered 200. */
  connect(options: HboneConnectOptions): Promise<TunnelStream>;
  /** Opens a tunnel through a gateway: an inner mTLS + CONNECT inside an outer tunnel (not pooled). */
  connectDouble(options: HboneDoubleConnectOptions): Promise<TunnelStream>;
  stats(): HboneClientStats;
  /**
   * GOAWAY on every connection; resolves when open tunnels finished. New connects fail, and dials
   * in progress end at once (their `connect()` rejects with `ERR_HBONE_CLOSED`). Tunnels still open
   * after `timeoutMs` (default 30 s, as `HboneServer.close`) are destroyed with their connections,
   * as by {@link HboneClient.destroy}.
   * @throws HboneError `ERR_HBONE_INVALID_ARGUMENT` for a `timeoutMs` that is not a number from 0 to
   * 2^31 - 1.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  /**
   * Destroys every connection and tunnel at once, and ends every dial in progress. Pending
   * `connect()` calls reject with `ERR_HBONE_CLOSED`; open tunnels are destroyed without an `error`
   * (they emit `close` without `end`).
   */
  destroy(): Promise<void>;
}

/** Creates an HBONE client. */
export function createHboneClient(options: HboneClientOptions): HboneClient {
  return new HboneClientImpl(options);
}

function signalOption(value: unknown, where: string): AbortSignal | undefined {
  if (value === undefined || value instanceof AbortSignal) return value;
  throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: signal must be an AbortSignal`);
}

function headersOption(value: unknown, where: string): HboneRequestHeaders | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${where}: headers must be an object of header names to string values`,
    );
  }
  return value as HboneRequestHeaders;
}

function urlHost(a: TunnelAuthority): string {
  return a.family === 6 ? `[${a.host}]` : a.host;
}

interface Limits {
  streamWindow: number;
  connectionWindow: number;
  maxStreamWindow: number;
  maxConnectionWindow: number;
  maxFrame: number;
  maxHeaderList: number;
  maxStreams: number;
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
}

class HboneClientImpl implements HboneClient {
  #credentials: HboneCredentials;
  #tls: HboneTlsOptions;
  #limits: Limits;
  #logger: Logger;
  #pool: ConnectionPool;
  #inner = new Set<Http2Connection>();
  #closed = false;
  /** Aborted by close() and destroy(): every dial in progress ends at once with `ERR_HBONE_CLOSED`. */
  #closing = new AbortController();
  /** Sockets of dials in progress; close() and destroy() resolve once each of them has closed. */
  #dialSockets = new Set<Duplex>();
  #connectSocket: HboneClientOptions["connectSocket"];

  constructor(options: HboneClientOptions) {
    this.#credentials = checkCredentials(options, "createHboneClient");
    this.#tls = { allowTls12: options.allowTls12 === true };
    checkTls(this.#credentials, this.#tls, "createHboneClient");
    if (options.connectSocket !== undefined && typeof options.connectSocket !== "function") {
      throw new HboneError(
        "ERR_HBONE_INVALID_ARGUMENT",
        `createHboneClient: connectSocket must be a function returning a socket, got ${options.connectSocket === null ? "null" : typeof options.connectSocket}`,
      );
    }
    this.#connectSocket = options.connectSocket;
    const d = HBONE_DEFAULTS;
    const streamWindow = integerOption(
      "streamWindowBytes",
      options.streamWindowBytes,
      d.streamWindowBytes,
      0,
      MAX_WINDOW,
    );
    const connectionWindow = integerOption(
      "connectionWindowBytes",
      options.connectionWindowBytes,
      d.connectionWindowBytes,
      0,
      MAX_WINDOW,
    );
    this.#limits = {
      streamWindow,
      connectionWindow,
      maxStreamWindow: maxWindowOption("maxStreamWindowBytes", options.maxStreamWindowBytes, streamWindow),
      maxConnectionWindow: maxWindowOption(
        "maxConnectionWindowBytes",
        options.maxConnectionWindowBytes,
        connectionWindow,
      ),
      maxFrame: maxFrameOption(options.maxFrameBytes),
      maxHeaderList: integerOption(
        "maxHeaderListBytes",
        options.maxHeaderListBytes,
        d.clientMaxHeaderListBytes,
        0,
        MAX_SETTING,
      ),
      maxStreams: integerOption(
        "maxStreamsPerConnection",
        options.maxStreamsPerConnection,
        d.maxStreamsPerConnection,
        1,
        MAX_SETTING,
      ),
      connectTimeoutMs: durationOption("connectTimeoutMs", options.connectTimeoutMs, d.connectTimeoutMs, 1),
      responseTimeoutMs: durationOption(
        "responseTimeoutMs",
        options.responseTimeoutMs,
        d.responseTimeoutMs,
        1,
      ),
      keepaliveIntervalMs: durationOption(
        "keepaliveIntervalMs",
        options.keepaliveIntervalMs,
        d.keepaliveIntervalMs,
      ),
      keepaliveTimeoutMs: durationOption(
        "keepaliveTimeoutMs",
        options.keepaliveTimeoutMs,
        d.keepaliveTimeoutMs,
      ),
    };
    nonNegativeOption("maxSessionMemoryMib", options.maxSessionMemoryMib, d.maxSessionMemoryMib, 1);
    this.#logger = loggerOption(options.logger, "createHboneClient");
    const metrics = metricsOption(options.metrics, "createHboneClient");
    this.#pool = new ConnectionPool({
      maxStreamsPerConnection: this.#limits.maxStreams,
      idleTimeoutMs: durationOption("poolIdleTimeoutMs", options.poolIdleTimeoutMs, d.poolIdleTimeoutMs),
      // A stream the peer does not allow yet is part of the wait for the CONNECT response.
      streamWaitTimeoutMs: this.#limits.responseTimeoutMs,
      connectionsGauge: instrument(
        metrics,
        "gauge",
        "createHboneClient",
        "hbone_client_connections",
        "Open pooled outbound HBONE connections",
      ),
      streamsGauge: instrument(
        metrics,
        "gauge",
        "createHboneClient",
        "hbone_client_streams",
        "Open outbound HBONE tunnels (CONNECT streams)",
      ),
    });
  }

  stats(): HboneClientStats {
    return {
      connections: this.#pool.connectionCount,
      streams: this.#pool.streamCount,
      innerSessions: this.#inner.size,
    };
  }

  async connect(options: HboneConnectOptions): Promise<TunnelStream> {
    if (this.#closed) throw new HboneError("ERR_HBONE_CLOSED", "HBONE client is closed");
    const target = parseAuthority(String(options?.address));
    if (target.kind !== "ip") {
      throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `address must be ip:port, got ${options.address}`);
    }
    parseAuthority(String(options.authority));
    const expected = normaliseIdentities(options.expectedIdentities, "connect");
    const credentials =
      options.credentials === undefined
        ? this.#credentials
        : checkTls(checkCredentials(options.credentials, "connect"), this.#tls, "connect");
    const headers = this.#requestHeaders(options.authority, headersOption(options.headers, "connect"));
    const signal = signalOption(options.signal, "connect");
    if (signal?.aborted) throw abortError(signal.reason, `connect ${options.address}`);
    const key = poolKeyString({
      sourceIdentity: ownIdentity(credentials).toString(),
      destinationIdentities: expected,
      destination: `${target.host}:${target.port}`,
      sourceAddress: options.sourceAddress ?? "",
      trustRoots: trustKey(credentials),
      certificate: localCertificateOf(credentials).key,
    });
    let conn: PooledConnection;
    try {
      conn = await this.#pool.acquire(
        key,
        // The dial is shared by every caller waiting on this key, so no caller's signal cancels it.
        () => this.#dial(target, credentials, expected, options.sourceAddress),
        signal,
      );
    } catch (err) {
      if (signal?.aborted && err === signal.reason) throw abortError(err, `connect ${options.address}`);
      throw toHboneError(err, `connect ${options.address}`);
    }
    try {
      const { stream, response } = await this.#request(conn.session, headers, signal);
      const tunnel = new TunnelStream(stream, {
        authority: String(options.authority),
        peerIdentity: conn.peerIdentity,
        headers: response,
      });
      // A closure of its own: one made here would keep this call's whole scope for the tunnel's life.
      stream.onClose(releaser(this.#pool, conn));
      return tunnel;
    } catch (err) {
      this.#pool.release(conn);
      const mapped = toHboneError(err, `CONNECT ${options.authority} via ${options.address}`);
      if (mapped.code === "ERR_HBONE_CONNECTION" || mapped.code === "ERR_HBONE_PROTOCOL")
        this.#pool.evict(conn);
      throw mapped;
    }
  }

  async connectDouble(options: HboneDoubleConnectOptions): Promise<TunnelStream> {
    if (typeof options?.gateway?.address !== "string") {
      throw new HboneError(
        "ERR_HBONE_INVALID_ARGUMENT",
        "connectDouble: gateway { address, expectedIdentities } is required",
      );
    }
    const authority = parseAuthority(String(options.authority));
    const expected = normaliseIdentities(options.expectedIdentities, "connectDouble");
    const credentials =
      options.credentials === undefined
        ? this.#credentials
        : checkTls(checkCredentials(options.credentials, "connectDouble"), this.#tls, "connectDouble");
    signalOption(options.signal, "connectDouble");
    const innerHeaders: Record<string, string> = {
      ...(headersOption(options.headers, "connectDouble") ?? {}),
    };
    if (options.forwardedNetwork !== undefined) {
      innerHeaders[HBONE_HEADER_NAMES.forwardedNetwork] = options.forwardedNetwork;
    }
    const headers = this.#requestHeaders(options.authority, innerHeaders);
    const outer = await this.connect({
      address: options.gateway?.address,
      authority: options.authority,
      expectedIdentities: options.gateway?.expectedIdentities,
      ...(options.headers ? { headers: options.headers } : {}),
      ...(options.sourceAddress ? { sourceAddress: options.sourceAddress } : {}),
      credentials,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let session: Http2Connection | undefined;
    try {
      const { socket, peerIdentity } = await this.#handshake(
        () => tlsConnect({ ...clientTlsOptions(credentials, this.#tls, expected), socket: outer }),
        `inner TLS to ${options.authority}`,
        options.signal,
        undefined,
      );
      this.#dialSockets.delete(socket);
      session = this.#session(socket, `${urlHost(authority)}:${authority.port}`);
      const s = session;
      this.#inner.add(s);
      s.once("close", () => {
        this.#inner.delete(s);
        if (!outer.destroyed) outer.destroy();
      });
      outer.once("close", () => {
        if (!s.destroyed) s.destroy();
      });
      const { stream, response } = await this.#request(s, headers, options.signal);
      stream.onClose(() => s.close());
      return new TunnelStream(stream, {
        authority: String(options.authority),
        peerIdentity,
        headers: response,
      });
    } catch (err) {
      session?.destroy();
      outer.destroy();
      throw toHboneError(err, `double HBONE to ${options.authority}`);
    }
  }

  async close(options?: { timeoutMs?: number }): Promise<void> {
    if (options !== undefined && (typeof options !== "object" || options === null)) {
      throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", "close: options must be an object");
    }
    const timeoutMs = durationOption("close timeoutMs", options?.timeoutMs, 30_000);
    this.#closed = true;
    // A dial has nothing to finish gracefully: it ends now, whichever step it is at.
    await this.#abortDials();
    for (const s of this.#inner) s.close();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    });
    const late = await Promise.race([this.#pool.close(false).then(() => false), timedOut]);
    clearTimeout(timer);
    if (late) await this.destroy();
  }

  async destroy(): Promise<void> {
    this.#closed = true;
    await this.#abortDials();
    // The client's own shutdown: its tunnels end without an 'error' (see TunnelStream), and a
    // CONNECT still waiting for its answer rejects with ERR_HBONE_CLOSED.
    const closed = new HboneError("ERR_HBONE_CLOSED", "the HBONE client was closed");
    for (const s of this.#inner) s.destroy(closed);
    await this.#pool.close(true, closed);
  }

  /**
   * Ends every dial in progress: the connect() calls waiting for it reject with `ERR_HBONE_CLOSED`.
   * Resolves once the dials' sockets closed and those rejections were delivered.
   */
  async #abortDials(): Promise<void> {
    if (!this.#closing.signal.aborted) {
      this.#closing.abort(new HboneError("ERR_HBONE_CLOSED", "HBONE client is closed"));
    }
    if (this.#dialSockets.size === 0) return;
    // Still in the set means no "close" event yet (`closed` turns true earlier, at destroy()).
    await Promise.all(
      [...this.#dialSockets].map((socket) => new Promise<void>((resolve) => socket.once("close", resolve))),
    );
    // A failed dial reaches its callers through a chain of promises (pool, connect()); it has run
    // its course by the next turn of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
  }

  #requestHeaders(authority: string, extra: HboneRequestHeaders | undefined): [string, string][] {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(extra ?? {})) {
      if (name.startsWith(":")) {
        throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `headers: pseudo-header ${name} cannot be set`);
      }
      if (typeof value !== "string") {
        throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `headers: ${name} must be a string`);
      }
      headers[name.toLowerCase()] = value;
    }
    if (headers[HBONE_HEADER_NAMES.traceparent] === undefined) {
      headers[HBONE_HEADER_NAMES.traceparent] = formatTraceparent(createTraceparent());
    }
    return outgoingFields(headers, [
      [":method", "CONNECT"],
      [":authority", authority],
    ]);
  }

  async #dial(
    target: TunnelAuthority,
    credentials: HboneCredentials,
    expected: readonly string[],
    sourceAddress: string | undefined,
  ): Promise<DialedConnection> {
    const started = Date.now();
    const { socket, peerIdentity } = await this.#handshake(
      () =>
        this.#connectSocket === undefined
          ? tlsConnect({
              ...clientTlsOptions(credentials, this.#tls, expected),
              host: target.host,
              port: target.port,
              ...(sourceAddress ? { localAddress: sourceAddress } : {}),
            })
          : tlsConnect({
              ...clientTlsOptions(credentials, this.#tls, expected),
              socket: connectedSocket(
                this.#connectSocket({ host: target.host, port: target.port }, sourceAddress),
              ),
            }),
      `dial ${target.host}:${target.port}`,
      undefined,
      target.port,
    );
    socket.setNoDelay(true);
    socket.setKeepAlive(true, HBONE_DEFAULTS.tcpKeepaliveMs);
    const session = this.#session(socket, `${urlHost(target)}:${target.port}`);
    // The pool hands the connection to every caller waiting for this dial at once, so it has to know
    // the peer's SETTINGS_MAX_CONCURRENT_STREAMS first, or a burst would open streams the peer
    // refuses. The SETTINGS are already arriving: the handshake waited for the peer's first bytes.
    const closing = this.#closing.signal;
    const onClosing = () =>
      session.destroy(
        new HboneError("ERR_HBONE_CLOSED", `dial ${target.host}:${target.port}: the HBONE client was closed`),
      );
    try {
      if (closing.aborted) onClosing();
      else closing.addEventListener("abort", onClosing, { once: true });
      await peerSettings(session, Math.max(1, this.#limits.connectTimeoutMs - (Date.now() - started)));
    } catch (err) {
      session.destroy();
      throw toHboneError(err, `dial ${target.host}:${target.port}`);
    } finally {
      closing.removeEventListener("abort", onClosing);
    }
    // The dial is done: from here the connection is the pool's to close.
    this.#dialSockets.delete(socket);
    // A peer that refused this side (GOAWAY right after its SETTINGS) leaves nothing to pool.
    if (session.closed || session.destroyed) {
      const failure =
        session.failure ?? new HboneError("ERR_HBONE_CONNECTION", "the peer closed the connection at once");
      session.destroy();
      throw failure;
    }
    const peerNotAfter = Date.parse(socket.getPeerCertificate().valid_to);
    const expiresAt = Math.min(
      localCertificateOf(credentials).notAfter,
      Number.isNaN(peerNotAfter) ? Number.POSITIVE_INFINITY : peerNotAfter,
    );
    return { session, peerIdentity, expiresAt };
  }

  /**
   * TLS handshake with timeout and abort; checks ALPN and the peer identity, then waits for the
   * server's first bytes (its HTTP/2 SETTINGS). With TLS 1.3 the server judges the client certificate
   * only after the client's handshake is done, so this is where a rejection (alert) shows up.
   * Closing the client ends it too. The socket stays in `#dialSockets` until it closes or the
   * caller, done with the dial, takes it out. `port` is the HBONE port dialled, named by a timeout.
   */
  #handshake(
    open: () => TLSSocket,
    what: string,
    signal: AbortSignal | undefined,
    port: number | undefined,
  ): Promise<{ socket: TLSSocket; peerIdentity: SpiffeId }> {
    return new Promise((resolve, reject) => {
      const closing = this.#closing.signal;
      if (closing.aborted) {
        reject(new HboneError("ERR_HBONE_CLOSED", `${what}: the HBONE client was closed`));
        return;
      }
      let socket: TLSSocket;
      try {
        socket = open();
      } catch (err) {
        reject(toHboneError(err, what));
        return;
      }
      const s = socket;
      this.#dialSockets.add(s);
      s.once("close", () => this.#dialSockets.delete(s));
      let peerIdentity: SpiffeId | undefined;
      const timer = setTimeout(() => {
        const hint = port === undefined ? "" : `, maybe a NetworkPolicy is blocking HBONE port ${port}`;
        socket.destroy(
          new HboneError(
            "ERR_HBONE_TIMEOUT",
            `${what}: connection timed out after ${this.#limits.connectTimeoutMs} ms${hint}`,
          ),
        );
      }, this.#limits.connectTimeoutMs);
      const onAbort = () =>
        socket.destroy(new HboneError("ERR_HBONE_ABORTED", `${what}: aborted`, { cause: signal?.reason }));
      signal?.addEventListener("abort", onAbort, { once: true });
      const onClosing = () =>
        socket.destroy(new HboneError("ERR_HBONE_CLOSED", `${what}: the HBONE client was closed`));
      closing.addEventListener("abort", onClosing, { once: true });
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        closing.removeEventListener("abort", onClosing);
        socket.off("error", onError);
        socket.off("close", onClose);
        socket.off("secureConnect", onSecure);
        socket.off("readable", onReadable);
      };
      const fail = (err: HboneError) => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const onError = (err: Error) => fail(toHboneError(err, what));
      const onClose = () =>
        fail(
          new HboneError(
            "ERR_HBONE_TLS",
            peerIdentity === undefined
              ? `${what}: connection closed during the TLS handshake`
              : `${what}: the peer closed the connection after the handshake (it rejected this client's certificate)`,
          ),
        );
      const onReadable = () => {
        if (socket.readableLength === 0 || peerIdentity === undefined) return;
        cleanup();
        resolve({ socket, peerIdentity });
      };
      const onSecure = () => {
        if (socket.alpnProtocol !== "h2") {
          fail(new HboneError("ERR_HBONE_PROTOCOL", `${what}: peer did not negotiate ALPN h2`));
          return;
        }
        try {
          peerIdentity = peerSpiffeId(socket);
        } catch (err) {
          fail(new HboneError("ERR_HBONE_IDENTITY", `${what}: ${(err as Error).message}`, { cause: err }));
          return;
        }
        socket.on("readable", onReadable);
      };
      socket.once("error", onError);
      socket.once("close", onClose);
      socket.once("secureConnect", onSecure);
    });
  }

  #session(socket: Duplex, peer: string): Http2Connection {
    const l = this.#limits;
    const session = new Http2Connection(socket, {
      role: "client",
      streamWindow: l.streamWindow,
      connectionWindow: l.connectionWindow,
      maxStreamWindow: l.maxStreamWindow,
      maxConnectionWindow: l.maxConnectionWindow,
      maxFrameSize: l.maxFrame,
      maxHeaderListSize: l.maxHeaderList,
    });
    session.once("close", () => {
      if (session.failure !== undefined)
        this.#logger.debug({ err: session.failure, peer }, "hbone: client connection ended");
    });
    startKeepalive(session, l.keepaliveIntervalMs, l.keepaliveTimeoutMs, () => {
      this.#logger.warn({ peer }, "hbone: keepalive PING unanswered, dropping connection");
      session.destroy(new HboneError("ERR_HBONE_TIMEOUT", "keepalive PING unanswered"));
    });
    return session;
  }

  /** Sends the CONNECT and waits for the response; anything but 200 rejects. */
  #request(
    session: Http2Connection,
    fields: readonly (readonly [string, string])[],
    signal: AbortSignal | undefined,
  ): Promise<{ stream: H2Stream; response: H2Headers }> {
    return new Promise((resolve, reject) => {
      let stream: H2Stream;
      try {
        stream = session.request(fields);
      } catch (err) {
        reject(session.failure ?? toHboneError(err));
        return;
      }
      let settled = false;
      const finish = (err: HboneError | undefined, response?: H2Headers) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        stream.onResponse = undefined;
        // Settled: the tunnel must not keep this request's timer and closures for its whole life.
        stream.offClose(onClosed);
        if (err) {
          stream.reset(H2_ERROR.CANCEL);
          reject(err);
        } else resolve({ stream, response: response ?? {} });
      };
      const timer = setTimeout(
        () =>
          finish(
            new HboneError(
              "ERR_HBONE_TIMEOUT",
              `no CONNECT response within ${this.#limits.responseTimeoutMs} ms`,
            ),
          ),
        this.#limits.responseTimeoutMs,
      );
      const onAbort = () =>
        finish(new HboneError("ERR_HBONE_ABORTED", "CONNECT aborted", { cause: signal?.reason }));
      signal?.addEventListener("abort", onAbort, { once: true });
      const onClosed = () => {
        const code = stream.rstCode ?? H2_ERROR.NO_ERROR;
        // A dying connection closes its streams with the reason it knows (TLS alert, GOAWAY code).
        finish(
          session.failure ??
            (code === H2_ERROR.NO_ERROR
              ? new HboneError("ERR_HBONE_CONNECTION", "stream closed before the CONNECT response")
              : resetError(code, "peer")),
        );
      };
      stream.onClose(onClosed);
      stream.onResponse = (response) => {
        const status = Number(response[":status"]);
        if (status === 200) finish(undefined, response);
        else {
          const reason = response["x-hbone-reason"];
          finish(
            new HboneError(
              "ERR_HBONE_REFUSED",
              `CONNECT refused with status ${status}${typeof reason === "string" ? ` (${reason})` : ""}`,
              { status },
            ),
          );
        }
      };
    });
  }
}

/** Builds (and caches) the TLS context of `credentials`, so OpenSSL refuses a bad key here. */
function checkTls(credentials: HboneCredentials, tls: HboneTlsOptions, where: string): HboneCredentials {
  try {
    clientTlsOptions(credentials, tls, []);
  } catch (err) {
    throw credentialsError(err, where);
  }
  return credentials;
}

/** Resolves once the peer's first SETTINGS frame has been applied to `session`. */
function peerSettings(session: Http2Connection, timeoutMs: number): Promise<void> {
  if (session.sawPeerSettings) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const settle = (err?: HboneError) => {
      clearTimeout(timer);
      session.off("remoteSettings", onSettings);
      session.off("close", onClose);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onSettings = () => settle();
    const onClose = () =>
      settle(
        session.failure ??
          new HboneError("ERR_HBONE_CONNECTION", "the connection closed before the peer's SETTINGS"),
      );
    const timer = setTimeout(
      () =>
        settle(
          new HboneError("ERR_HBONE_TIMEOUT", `no HTTP/2 SETTINGS from the peer within ${timeoutMs} ms`),
        ),
      timeoutMs,
    );
    session.on("remoteSettings", onSettings);
    session.once("close", onClose);
  });
}

/** A pool release for one tunnel's stream close, run at most once. */
function releaser(pool: ConnectionPool, conn: PooledConnection): () => void {
  let released = false;
  return () => {
    if (released) return;
    released = true;
    pool.release(conn);
  };
}

/** What a `connectSocket` option returned: TLS runs over it, so it must be a stream. */
function connectedSocket(socket: unknown): Socket {
  if (!(socket instanceof Stream) || typeof (socket as Partial<Duplex>).write !== "function") {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      "connectSocket must return a socket (a net.Socket or another Duplex stream)",
    );
  }
  return socket as Socket;
}
