import {
  constants,
  createSecureServer,
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { peerSpiffeId, type SpiffeId } from "@ambient/spiffe";
import { parseAuthority, type TunnelAuthority } from "./authority.js";
import {
  checkCredentials,
  type HboneCredentials,
  type HboneTlsOptions,
  ownIdentity,
  serverTlsOptions,
} from "./credentials.js";
import { HBONE_DEFAULTS } from "./defaults.js";
import { HboneError } from "./errors.js";
import { HBONE_STATUS, InboundTunnel } from "./inbound-tunnel.js";
import { startKeepalive } from "./keepalive.js";
import { toHboneError } from "./node-error.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";

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
  /** Max frame size. Default 1 MiB; ztunnel `HTTP2_FRAME_SIZE`. */
  maxFrameBytes?: number;
  /** Concurrent streams advertised per connection. Default 200; ztunnel server setting. */
  maxConcurrentStreams?: number;
  /** Max request header list. Default 64 KiB; ztunnel server `max_header_list_size`. */
  maxHeaderListBytes?: number;
  /** Node `maxSessionMemory` in MiB. Default 1024 (windows bound the real use). */
  maxSessionMemoryMib?: number;
  /** PING interval; 0 disables. Default 10 s; ztunnel h2 keepalive interval. */
  keepaliveIntervalMs?: number;
  /** Drop a connection whose PING is unanswered this long. Default 20 s; ztunnel h2 keepalive timeout. */
  keepaliveTimeoutMs?: number;
  /** TLS handshake timeout. Default 10 s. */
  handshakeTimeoutMs?: number;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Where {@link HboneServer.listen} binds. */
export interface HboneListenOptions {
  /** Default 15008 (ztunnel's HBONE port); pass 0 for an ephemeral port. */
  port?: number;
  /** Default `"0.0.0.0"`. */
  host?: string;
}

/** Counts of live inbound connections and tunnels. */
export interface HboneServerStats {
  connections: number;
  tunnels: number;
}

/** An HBONE listener: mTLS, HTTP/2, one {@link InboundTunnel} per CONNECT stream. */
export interface HboneServer {
  /** Starts listening; resolves with the bound address. */
  listen(options?: HboneListenOptions): Promise<AddressInfo>;
  /** Bound address, or `null` before `listen`. */
  address(): AddressInfo | null;
  stats(): HboneServerStats;
  /** Replaces the certificate (rotation); new connections use it. */
  setCredentials(credentials: HboneCredentials): void;
  /**
   * Stops listening, sends GOAWAY on every connection and waits for open tunnels to finish;
   * connections still open after `timeoutMs` (default 30 s) are destroyed.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
  /** The underlying Node server, for advanced use. */
  readonly nodeServer: Http2SecureServer;
}

/** Header list size as HTTP/2 counts it: name + value + 32 octets per field. */
function headerListSize(headers: IncomingHttpHeaders): number {
  let size = 0;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) size += name.length + String(v ?? "").length + 32;
  }
  return size;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) {
    throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `${name} must be a non-negative number, got ${value}`);
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
  readonly nodeServer: Http2SecureServer;
  #options: HboneServerOptions;
  #logger: Logger;
  #sessions = new Map<ServerHttp2Session, SpiffeId>();
  #tunnels = 0;
  #sockets = new Set<Socket>();
  #trustDomains: Set<string>;
  #tls: HboneTlsOptions;
  #connectionWindow: number;
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
    this.#logger = options.logger ?? noopLogger;
    this.#tls = { allowTls12: options.allowTls12 === true };
    this.#trustDomains = new Set(options.allowedTrustDomains ?? [ownIdentity(credentials).trustDomain]);
    const d = HBONE_DEFAULTS;
    const streamWindow = positive("streamWindowBytes", options.streamWindowBytes, d.streamWindowBytes);
    this.#connectionWindow = positive(
      "connectionWindowBytes",
      options.connectionWindowBytes,
      d.connectionWindowBytes,
    );
    this.#keepaliveIntervalMs = positive(
      "keepaliveIntervalMs",
      options.keepaliveIntervalMs,
      d.keepaliveIntervalMs,
    );
    this.#keepaliveTimeoutMs = positive(
      "keepaliveTimeoutMs",
      options.keepaliveTimeoutMs,
      d.keepaliveTimeoutMs,
    );
    this.#maxHeaderListBytes = positive(
      "maxHeaderListBytes",
      options.maxHeaderListBytes,
      d.serverMaxHeaderListBytes,
    );
    const metrics = options.metrics ?? noopMetrics;
    this.#metrics = {
      connections: metrics.gauge("hbone_server_connections", "Open inbound HBONE connections"),
      tunnels: metrics.gauge("hbone_server_tunnels", "Open inbound HBONE tunnels (CONNECT streams)"),
      requests: metrics.counter("hbone_server_requests_total", "Inbound CONNECT requests by status", [
        "status",
      ]),
      handshakeFailures: metrics.counter(
        "hbone_server_handshake_failures_total",
        "Failed inbound TLS handshakes",
      ),
    };
    this.nodeServer = createSecureServer({
      ...serverTlsOptions(credentials, this.#tls),
      allowHTTP1: false,
      handshakeTimeout: positive("handshakeTimeoutMs", options.handshakeTimeoutMs, d.connectTimeoutMs),
      unknownProtocolTimeout: 1000,
      maxSessionMemory: positive("maxSessionMemoryMib", options.maxSessionMemoryMib, d.maxSessionMemoryMib),
      settings: {
        enablePush: false,
        initialWindowSize: streamWindow,
        maxFrameSize: positive("maxFrameBytes", options.maxFrameBytes, d.maxFrameBytes),
        maxConcurrentStreams: positive(
          "maxConcurrentStreams",
          options.maxConcurrentStreams,
          d.serverMaxConcurrentStreams,
        ),
        maxHeaderListSize: positive(
          "maxHeaderListBytes",
          options.maxHeaderListBytes,
          d.serverMaxHeaderListBytes,
        ),
      },
    });
    this.nodeServer.on("session", (session) => this.#onSession(session));
    this.nodeServer.on("stream", (stream, headers) => this.#onStream(stream, headers));
    this.nodeServer.on("connection", (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
    });
    this.nodeServer.on("secureConnection", (socket: TLSSocket) => {
      socket.setNoDelay(true);
      socket.setKeepAlive(true, HBONE_DEFAULTS.tcpKeepaliveMs);
    });
    this.nodeServer.on("unknownProtocol", (socket: Socket) => {
      this.#logger.debug({ remote: socket.remoteAddress }, "hbone: client did not negotiate ALPN h2");
      socket.destroy();
    });
    this.nodeServer.on("tlsClientError", (err: Error, socket: Socket) => {
      this.#metrics.handshakeFailures.inc();
      this.#logger.debug(
        { err: toHboneError(err), remote: socket.remoteAddress },
        "hbone: TLS handshake failed",
      );
    });
    this.nodeServer.on("sessionError", (err) => {
      this.#logger.debug({ err: toHboneError(err) }, "hbone: session error");
    });
  }

  listen(options: HboneListenOptions = {}): Promise<AddressInfo> {
    const port = options.port ?? HBONE_DEFAULTS.port;
    const host = options.host ?? "0.0.0.0";
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
    this.nodeServer.setSecureContext(serverTlsOptions(credentials, this.#tls));
  }

  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const closed = new Promise<void>((resolve) => {
      if (!this.nodeServer.listening) resolve();
      else this.nodeServer.close(() => resolve());
    });
    const sessions = [...this.#sessions.keys()];
    const sessionsClosed = sessions.map(
      (s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve()))),
    );
    for (const s of sessions) if (!s.closed) s.close();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    await Promise.race([Promise.all(sessionsClosed), timedOut]);
    clearTimeout(timer);
    for (const s of sessions) if (!s.destroyed) s.destroy();
    // Sockets still in the TLS handshake (or refused) would hold server.close() until they time out.
    for (const socket of this.#sockets) socket.destroy();
    await Promise.all(sessionsClosed);
    await closed;
  }

  #onSession(session: ServerHttp2Session): void {
    session.on("error", (err) => this.#logger.debug({ err: toHboneError(err) }, "hbone: connection error"));
    const socket = session.socket as TLSSocket;
    let peer: SpiffeId;
    try {
      peer = peerSpiffeId(socket);
    } catch (err) {
      this.#logger.warn(
        { err, remote: socket.remoteAddress },
        "hbone: client certificate has no usable SPIFFE ID",
      );
      this.#refuseSession(session);
      return;
    }
    if (!this.#trustDomains.has(peer.trustDomain)) {
      this.#logger.warn(
        { peer: peer.toString(), remote: socket.remoteAddress },
        "hbone: client identity is outside the allowed trust domains",
      );
      this.#refuseSession(session);
      return;
    }
    this.#sessions.set(session, peer);
    this.#metrics.connections.inc();
    session.once("close", () => {
      this.#sessions.delete(session);
      this.#metrics.connections.dec();
    });
    try {
      session.setLocalWindowSize(this.#connectionWindow);
    } catch (err) {
      this.#logger.debug({ err }, "hbone: could not grow the connection window");
    }
    startKeepalive(session, this.#keepaliveIntervalMs, this.#keepaliveTimeoutMs, () => {
      this.#logger.warn({ peer: peer.toString() }, "hbone: keepalive PING unanswered, dropping connection");
      session.destroy(new HboneError("ERR_HBONE_TIMEOUT", "keepalive PING unanswered"));
    });
  }

  /** GOAWAY with INADEQUATE_SECURITY tells the client why; ztunnel fails the handshake instead. */
  #refuseSession(session: ServerHttp2Session): void {
    this.#metrics.handshakeFailures.inc();
    session.destroy(
      new HboneError("ERR_HBONE_IDENTITY", "client identity refused"),
      constants.NGHTTP2_INADEQUATE_SECURITY,
    );
  }

  #respondError(stream: ServerHttp2Stream, status: number): void {
    this.#metrics.requests.inc({ status });
    if (!stream.destroyed && !stream.headersSent) stream.respond({ ":status": status }, { endStream: true });
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on("error", (err) => this.#logger.debug({ err: toHboneError(err) }, "hbone: stream error"));
    const peer = this.#sessions.get(stream.session as ServerHttp2Session);
    if (peer === undefined) {
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    // Node advertises SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it; answer 431 like ztunnel's h2.
    if (headerListSize(headers) > this.#maxHeaderListBytes) {
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
    stream.once("close", () => {
      this.#tunnels--;
      this.#metrics.tunnels.dec();
    });
    const tunnel = new InboundTunnel(stream, headers, authority, peer, (status) =>
      this.#metrics.requests.inc({ status }),
    );
    const fail = (err: unknown) => {
      this.#logger.warn({ err, authority: tunnel.rawAuthority }, "hbone: tunnel handler failed");
      if (tunnel.state === "pending") tunnel.refuse(HBONE_STATUS.noUpstream);
      else if (!stream.destroyed) stream.close(constants.NGHTTP2_INTERNAL_ERROR);
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
