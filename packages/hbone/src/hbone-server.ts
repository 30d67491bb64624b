import type { AddressInfo, Socket } from "node:net";
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from "node:tls";
import { peerSpiffeId, type SpiffeId } from "@ambient/spiffe";
import { parseAuthority, type TunnelAuthority } from "./authority.js";
import {
  allowPartialTrustChain,
  checkCredentials,
  type HboneCredentials,
  type HboneTlsOptions,
  ownIdentity,
  type PeerChainCheck,
  peerChainCheck,
  serverTlsOptions,
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
import { type H2Headers, type H2Stream, Http2Connection } from "./h2/connection.js";
import { H2_ERROR, MAX_WINDOW } from "./h2/frames.js";
import { HBONE_STATUS, InboundTunnel } from "./inbound-tunnel.js";
import { startKeepalive } from "./keepalive.js";
import { credentialsError, toHboneError } from "./node-error.js";
import { instrument, type Logger, loggerOption, type MetricsSink, metricsOption } from "./telemetry.js";

/** Options of {@link createHboneServer}. */
export interface HboneServerOptions extends HboneCredentials, HboneTlsOptions {
  /**
   * Called once per CONNECT stream. Call `tunnel.accept()` or `tunnel.refuse(status)`; a throw or a
   * rejected promise before either refuses with 503.
   */
  onTunnel: (tunnel: InboundTunnel) => unknown;
  /**
   * Trust domains client identities may belong to. Default: only the trust domain of this server's
   * own certificate; ztunnel's `TrustDomainVerifier`.
   */
  allowedTrustDomains?: readonly string[];
  /** Initial stream window. Default 4 MiB; ztunnel `HTTP2_STREAM_WINDOW_SIZE`. */
  streamWindowBytes?: number;
  /** Connection window. Default 16 MiB; ztunnel `HTTP2_CONNECTION_WINDOW_SIZE`. */
  connectionWindowBytes?: number;
  /**
   * Largest a stream window grows to when window probes (PINGs during uploads) show the window, not
   * the reader, limits a transfer. Default 4x `streamWindowBytes`; equal to it turns growth off.
   */
  maxStreamWindowBytes?: number;
  /** The same for the connection window. Default 4x `connectionWindowBytes`. */
  maxConnectionWindowBytes?: number;
  /** Max frame size. Default 1 MiB; ztunnel `HTTP2_FRAME_SIZE`. */
  maxFrameBytes?: number;
  /** Concurrent streams advertised per connection. Default 200; ztunnel server setting. */
  maxConcurrentStreams?: number;
  /** Max request header list. Default 64 KiB; ztunnel server `max_header_list_size`. */
  maxHeaderListBytes?: number;
  /**
   * Accepted for compatibility and ignored: buffering is bounded by the flow-control windows.
   * @deprecated
   */
  maxSessionMemoryMib?: number;
  /** PING interval; 0 disables. Default 10 s; ztunnel h2 keepalive interval. */
  keepaliveIntervalMs?: number;
  /**
   * Drop a connection whose PING is unanswered this long; 0 keeps sending PINGs but never drops a
   * connection for an unanswered one. Default 20 s; ztunnel h2 keepalive timeout.
   */
  keepaliveTimeoutMs?: number;
  /** TLS handshake timeout. Default 10 s. */
  handshakeTimeoutMs?: number;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Where {@link HboneServer.listen} binds. */
export interface HboneListenOptions {
  /** An integer from 0 to 65535. Default 15008 (ztunnel's HBONE port); pass 0 for an ephemeral port. */
  port?: number;
  /** A non-empty string. Default `"0.0.0.0"`. */
  host?: string;
}

/** Counts of live inbound connections and tunnels. */
export interface HboneServerStats {
  connections: number;
  tunnels: number;
}

/** An HBONE listener: mTLS, HTTP/2, one {@link InboundTunnel} per CONNECT stream. */
export interface HboneServer {
  /**
   * Starts listening; resolves with the bound address. Rejects with `ERR_HBONE_INVALID_ARGUMENT` for a
   * bad port or host, or when the server is already listening.
   */
  listen(options?: HboneListenOptions): Promise<AddressInfo>;
  /** Bound address, or `null` before `listen`. */
  address(): AddressInfo | null;
  stats(): HboneServerStats;
  /** Replaces the certificate (rotation); new connections use it. */
  setCredentials(credentials: HboneCredentials): void;
  /**
   * Stops listening, sends GOAWAY on every connection and waits for open tunnels to finish;
   * connections still open after `timeoutMs` (default 30 s) are destroyed. Their tunnels are
   * destroyed without an `error` (they emit `close` without `end`), and the `signal` of a tunnel not
   * answered yet aborts with an `ERR_HBONE_CLOSED` reason.
   * @throws HboneError `ERR_HBONE_INVALID_ARGUMENT` for a `timeoutMs` that is not a number from 0 to
   * 2^31 - 1.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  /** The underlying Node TLS server, for advanced use (for example `secureConnection` hooks). */
  readonly nodeServer: TlsServer;
}

/** The `options` argument of `listen` and `close`: absent or an object. */
function optionsObject<T extends object>(value: T | undefined, where: string): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${where}: options must be an object`);
  }
  return value;
}

function trustDomainsOption(value: unknown): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((d) => typeof d === "string" && d.length > 0)) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      "allowedTrustDomains must be an array of non-empty trust domain strings",
    );
  }
  return value;
}

/**
 * Creates an HBONE server. It verifies every client certificate against the trust bundle, requires
 * the client's SPIFFE ID to be in an allowed trust domain, and hands each CONNECT to `onTunnel`.
 */
export function createHboneServer(options: HboneServerOptions): HboneServer {
  return new HboneServerImpl(options);
}

class HboneServerImpl implements HboneServer {
  readonly nodeServer: TlsServer;
  #options: HboneServerOptions;
  #logger: Logger;
  #sessions = new Map<Http2Connection, SpiffeId>();
  #tunnels = 0;
  #sockets = new Set<Socket>();
  /** Accepted connections still in the TLS handshake, by {@link connectionKey}, with their deadline. */
  #handshaking = new Map<string, { socket: Socket; timer: NodeJS.Timeout }>();
  #trustDomains: Set<string>;
  /** What the current credentials still check on a verified client; see `peerChainCheck`. */
  #peerChainCheck: PeerChainCheck | undefined;
  #tls: HboneTlsOptions;
  #connectionWindow: number;
  #streamWindow: number;
  #maxConnectionWindow: number;
  #maxStreamWindow: number;
  #maxFrameBytes: number;
  #maxConcurrentStreams: number;
  #maxHeaderListBytes: number;
  #keepaliveIntervalMs: number;
  #keepaliveTimeoutMs: number;
  #metrics: {
    connections: ReturnType<MetricsSink["gauge"]>;
    tunnels: ReturnType<MetricsSink["gauge"]>;
    requests: ReturnType<MetricsSink["counter"]>;
    handshakeFailures: ReturnType<MetricsSink["counter"]>;
  };

  constructor(options: HboneServerOptions) {
    if (typeof options?.onTunnel !== "function") {
      throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", "createHboneServer: onTunnel must be a function");
    }
    const credentials = checkCredentials(options, "createHboneServer");
    this.#options = options;
    this.#logger = loggerOption(options.logger, "createHboneServer");
    this.#tls = { allowTls12: options.allowTls12 === true };
    this.#trustDomains = new Set(
      trustDomainsOption(options.allowedTrustDomains) ?? [ownIdentity(credentials).trustDomain],
    );
    this.#peerChainCheck = peerChainCheck(credentials);
    const d = HBONE_DEFAULTS;
    this.#streamWindow = integerOption(
      "streamWindowBytes",
      options.streamWindowBytes,
      d.streamWindowBytes,
      0,
      MAX_WINDOW,
    );
    this.#maxFrameBytes = maxFrameOption(options.maxFrameBytes);
    this.#maxConcurrentStreams = integerOption(
      "maxConcurrentStreams",
      options.maxConcurrentStreams,
      d.serverMaxConcurrentStreams,
      1,
      MAX_SETTING,
    );
    this.#connectionWindow = integerOption(
      "connectionWindowBytes",
      options.connectionWindowBytes,
      d.connectionWindowBytes,
      0,
      MAX_WINDOW,
    );
    this.#maxStreamWindow = maxWindowOption(
      "maxStreamWindowBytes",
      options.maxStreamWindowBytes,
      this.#streamWindow,
    );
    this.#maxConnectionWindow = maxWindowOption(
      "maxConnectionWindowBytes",
      options.maxConnectionWindowBytes,
      this.#connectionWindow,
    );
    this.#keepaliveIntervalMs = durationOption(
      "keepaliveIntervalMs",
      options.keepaliveIntervalMs,
      d.keepaliveIntervalMs,
    );
    this.#keepaliveTimeoutMs = durationOption(
      "keepaliveTimeoutMs",
      options.keepaliveTimeoutMs,
      d.keepaliveTimeoutMs,
    );
    this.#maxHeaderListBytes = integerOption(
      "maxHeaderListBytes",
      options.maxHeaderListBytes,
      d.serverMaxHeaderListBytes,
      0,
      MAX_SETTING,
    );
    const metrics = metricsOption(options.metrics, "createHboneServer");
    const where = "createHboneServer";
    this.#metrics = {
      connections: instrument(
        metrics,
        "gauge",
        where,
        "hbone_server_connections",
        "Open inbound HBONE connections",
      ),
      tunnels: instrument(
        metrics,
        "gauge",
        where,
        "hbone_server_tunnels",
        "Open inbound HBONE tunnels (CONNECT streams)",
      ),
      requests: instrument(
        metrics,
        "counter",
        where,
        "hbone_server_requests_total",
        "Inbound CONNECT requests by status",
        ["status"],
      ),
      handshakeFailures: instrument(
        metrics,
        "counter",
        where,
        "hbone_server_handshake_failures_total",
        "Failed inbound TLS handshakes",
      ),
    };
    nonNegativeOption("maxSessionMemoryMib", options.maxSessionMemoryMib, d.maxSessionMemoryMib);
    const handshakeTimeout = durationOption(
      "handshakeTimeoutMs",
      options.handshakeTimeoutMs,
      d.connectTimeoutMs,
    );
    try {
      this.nodeServer = createTlsServer({ ...serverTlsOptions(credentials, this.#tls), handshakeTimeout });
      allowPartialTrustChain(this.nodeServer);
    } catch (err) {
      throw credentialsError(err, "createHboneServer");
    }
    this.nodeServer.on("secureConnection", (socket: TLSSocket) => {
      const key = connectionKey(socket);
      const pending = this.#handshaking.get(key);
      if (pending !== undefined) {
        clearTimeout(pending.timer);
        this.#handshaking.delete(key);
      }
      this.#onSecureConnection(socket);
    });
    // Node's `handshakeTimeout` is an idle timer (every byte a peer trickles restarts it), and when it
    // fires it only reports the error. The whole handshake has one deadline instead, from the moment
    // the connection is accepted; TCP keepalive runs from then too, so a peer that vanished mid-way
    // is noticed.
    this.nodeServer.on("connection", (socket: Socket) => {
      this.#sockets.add(socket);
      socket.setKeepAlive(true, HBONE_DEFAULTS.tcpKeepaliveMs);
      const key = connectionKey(socket);
      if (handshakeTimeout > 0) {
        const timer = setTimeout(() => {
          this.#handshaking.delete(key);
          this.#metrics.handshakeFailures.inc();
          this.#logger.debug({ remote: socket.remoteAddress }, "hbone: TLS handshake not done in time");
          socket.destroy();
        }, handshakeTimeout);
        this.#handshaking.set(key, { socket, timer });
      }
      socket.once("close", () => {
        this.#sockets.delete(socket);
        const pending = this.#handshaking.get(key);
        if (pending?.socket === socket) {
          clearTimeout(pending.timer);
          this.#handshaking.delete(key);
        }
      });
    });
    // Node leaves a failed handshake's socket open: the listener of this event has to close it.
    this.nodeServer.on("tlsClientError", (err: Error, socket: Socket) => {
      this.#metrics.handshakeFailures.inc();
      this.#logger.debug(
        { err: toHboneError(err), remote: socket.remoteAddress },
        "hbone: TLS handshake failed",
      );
      socket.destroy();
    });
  }

  listen(options?: HboneListenOptions): Promise<AddressInfo> {
    let port: number;
    let host: string;
    try {
      const o = optionsObject(options, "listen");
      port = integerOption("listen: port", o.port, HBONE_DEFAULTS.port, 0, 65535);
      host = o.host ?? "0.0.0.0";
      if (typeof host !== "string" || host.length === 0) {
        throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `listen: host must be a non-empty string`);
      }
      if (this.nodeServer.listening) {
        throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", "listen: the server is already listening");
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(toHboneError(err, `listen ${host}:${port}`));
      this.nodeServer.once("error", onError);
      this.nodeServer.listen(port, host, () => {
        this.nodeServer.off("error", onError);
        this.nodeServer.on("error", (err) => this.#logger.error({ err }, "hbone: server error"));
        resolve(this.nodeServer.address() as AddressInfo);
      });
    });
  }

  address(): AddressInfo | null {
    const a = this.nodeServer.address();
    return a !== null && typeof a === "object" ? a : null;
  }

  stats(): HboneServerStats {
    return { connections: this.#sessions.size, tunnels: this.#tunnels };
  }

  setCredentials(credentials: HboneCredentials): void {
    checkCredentials(credentials, "setCredentials");
    try {
      this.nodeServer.setSecureContext(serverTlsOptions(credentials, this.#tls));
      allowPartialTrustChain(this.nodeServer);
    } catch (err) {
      throw credentialsError(err, "setCredentials");
    }
    this.#peerChainCheck = peerChainCheck(credentials);
  }

  async close(options?: { timeoutMs?: number }): Promise<void> {
    const timeoutMs = durationOption("close timeoutMs", optionsObject(options, "close").timeoutMs, 30_000);
    const closed = new Promise<void>((resolve) => {
      if (!this.nodeServer.listening) resolve();
      else this.nodeServer.close(() => resolve());
    });
    const sessions = [...this.#sessions.keys()];
    const sessionsClosed = sessions.map(
      (s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve()))),
    );
    for (const s of sessions) s.close();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.all(sessionsClosed), timedOut]);
    clearTimeout(timer);
    // Past the deadline: the tunnels still open end without an 'error' (the shutdown was asked for,
    // and the application may not listen for errors on them), as `net.Server` connections do when
    // destroyed without one.
    const closedError = new HboneError("ERR_HBONE_CLOSED", "the HBONE server was closed");
    for (const s of sessions) if (!s.destroyed) s.destroy(closedError);
    // Sockets still in the TLS handshake (or refused) would hold server.close() until they time out.
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(sessionsClosed);
    await closed;
  }

  #onSecureConnection(socket: TLSSocket): void {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, HBONE_DEFAULTS.tcpKeepaliveMs);
    if (socket.alpnProtocol !== "h2") {
      this.#logger.debug({ remote: socket.remoteAddress }, "hbone: client did not negotiate ALPN h2");
      socket.destroy();
      return;
    }
    const session = new Http2Connection(socket, {
      role: "server",
      streamWindow: this.#streamWindow,
      connectionWindow: this.#connectionWindow,
      maxStreamWindow: this.#maxStreamWindow,
      maxConnectionWindow: this.#maxConnectionWindow,
      maxFrameSize: this.#maxFrameBytes,
      maxHeaderListSize: this.#maxHeaderListBytes,
      maxConcurrentStreams: this.#maxConcurrentStreams,
    });
    const remote = { address: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    let peer: SpiffeId;
    try {
      peer = peerSpiffeId(socket);
    } catch (err) {
      this.#logger.warn({ err, remote: remote.address }, "hbone: client certificate has no usable SPIFFE ID");
      this.#refuseSession(session);
      return;
    }
    if (!this.#trustDomains.has(peer.trustDomain)) {
      this.#logger.warn(
        { peer: peer.toString(), remote: remote.address },
        "hbone: client identity is outside the allowed trust domains",
      );
      this.#refuseSession(session);
      return;
    }
    // Node verified the chain against the roots of every trust domain at once.
    const chainCheck = this.#peerChainCheck;
    if (chainCheck !== undefined) {
      try {
        chainCheck(peer, () => socket.getPeerCertificate(true), "clientAuth");
      } catch (err) {
        this.#logger.warn(
          { err, peer: peer.toString(), remote: remote.address },
          "hbone: client certificate chain does not lead to a root of its own trust domain",
        );
        this.#refuseSession(session);
        return;
      }
    }
    this.#sessions.set(session, peer);
    this.#metrics.connections.inc();
    session.once("close", () => {
      this.#sessions.delete(session);
      this.#metrics.connections.dec();
      if (session.failure !== undefined)
        this.#logger.debug({ err: session.failure, remote: remote.address }, "hbone: connection error");
    });
    session.on("stream", (stream: H2Stream, headers: H2Headers, tooLarge: boolean) =>
      this.#onStream(stream, headers, tooLarge, peer, remote),
    );
    startKeepalive(session, this.#keepaliveIntervalMs, this.#keepaliveTimeoutMs, () => {
      this.#logger.warn({ peer: peer.toString() }, "hbone: keepalive PING unanswered, dropping connection");
      session.destroy(new HboneError("ERR_HBONE_TIMEOUT", "keepalive PING unanswered"));
    });
  }

  /** GOAWAY with INADEQUATE_SECURITY tells the client why; ztunnel fails the handshake instead. */
  #refuseSession(session: Http2Connection): void {
    this.#metrics.handshakeFailures.inc();
    session.destroy(
      new HboneError("ERR_HBONE_IDENTITY", "client identity refused"),
      H2_ERROR.INADEQUATE_SECURITY,
    );
  }

  #respondError(stream: H2Stream, status: number): void {
    this.#metrics.requests.inc({ status });
    if (stream.closed || stream.headersSent) return;
    stream.respond([[":status", String(status)]], true);
    if (!stream.closed) stream.reset(H2_ERROR.NO_ERROR);
  }

  #onStream(
    stream: H2Stream,
    headers: H2Headers,
    tooLarge: boolean,
    peer: SpiffeId,
    remote: { address: string; port: number },
  ): void {
    // A header list over the advertised SETTINGS_MAX_HEADER_LIST_SIZE: 431, as ztunnel's h2 answers.
    if (tooLarge) {
      this.#respondError(stream, 431);
      return;
    }
    if (headers[":method"] !== "CONNECT" || headers[":protocol"] !== undefined) {
      this.#respondError(stream, HBONE_STATUS.badRequest);
      return;
    }
    let authority: TunnelAuthority;
    try {
      authority = parseAuthority(String(headers[":authority"] ?? ""));
    } catch (err) {
      this.#logger.debug({ err }, "hbone: bad CONNECT authority");
      this.#respondError(stream, HBONE_STATUS.badRequest);
      return;
    }
    this.#tunnels++;
    this.#metrics.tunnels.inc();
    stream.onClose(() => {
      this.#tunnels--;
      this.#metrics.tunnels.dec();
    });
    const tunnel = new InboundTunnel(stream, headers, authority, peer, remote, (status) =>
      this.#metrics.requests.inc({ status }),
    );
    const fail = (err: unknown) => {
      this.#logger.warn({ err, authority: tunnel.rawAuthority }, "hbone: tunnel handler failed");
      if (tunnel.state === "pending") tunnel.refuse(HBONE_STATUS.noUpstream);
      else stream.reset(H2_ERROR.INTERNAL_ERROR);
    };
    try {
      const result = this.#options.onTunnel(tunnel);
      if (
        typeof result === "object" &&
        result !== null &&
        typeof (result as Promise<unknown>).then === "function"
      ) {
        (result as Promise<unknown>).then(undefined, fail);
      }
    } catch (err) {
      fail(err);
    }
  }
}

/**
 * A connection's addresses and ports: the same for the accepted TCP socket and the TLS socket made
 * over it, and unique among a listener's open connections.
 */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}
