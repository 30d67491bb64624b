import type { SpiffeId } from "@ambient/spiffe";
import { HboneError } from "./errors.js";
import type { Http2Connection } from "./h2/connection.js";
import type { Gauge } from "./telemetry.js";

/**
 * The pool key: (source identity, sorted destination identities, destination ip:port, source ip,
 * trusted roots, own certificate). Source IP is part of it because source addresses may be spoofed per workload; the
 * roots because a connection's peer was verified against the roots of the dial that opened it, and
 * callers may pass different bundles (trust domains) per dial.
 */
export interface PoolKey {
  sourceIdentity: string;
  destinationIdentities: readonly string[];
  destination: string;
  sourceAddress: string;
  /** Identifies the trust bundle the peer's chain is verified against (see `trustKey`). */
  trustRoots: string;
  /**
   * Identifies the certificate this side presents (see `localCertificateOf`): a renewed certificate
   * opens connections of its own, and those made with the one it replaced take no new streams.
   */
  certificate: string;
}

export function poolKeyString(key: PoolKey): string {
  return JSON.stringify([
    key.sourceIdentity,
    [...key.destinationIdentities].sort(),
    key.destination,
    key.sourceAddress,
    key.trustRoots,
    key.certificate,
  ]);
}

/** One pooled HTTP/2 connection. */
export interface PooledConnection {
  readonly session: Http2Connection;
  readonly peerIdentity: SpiffeId;
  /** Streams opened (or being opened) on it. */
  active: number;
  /** Current cap: min(pool cap, peer's SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxStreams: number;
  usable: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  /**
   * When the first of the two certificates its handshake proved expires (ms since the epoch): from
   * then on it takes no new streams, as a new handshake with them would fail.
   */
  expiresAt: number;
}

/** What a dial gives the pool. */
export interface DialedConnection {
  session: Http2Connection;
  peerIdentity: SpiffeId;
  /** See {@link PooledConnection.expiresAt}. Default: never. */
  expiresAt?: number;
}

interface Bucket {
  connections: PooledConnection[];
  dialing: Promise<void> | undefined;
}

export interface ConnectionPoolOptions {
  maxStreamsPerConnection: number;
  idleTimeoutMs: number;
  /** How long a caller waits for a peer that allows no new streams (SETTINGS_MAX_CONCURRENT_STREAMS 0). */
  streamWaitTimeoutMs: number;
  connectionsGauge: Gauge;
  streamsGauge: Gauge;
}

/**
 * Per-key lists of HTTP/2 connections. A connection takes streams until it reaches its cap; then one
 * new connection is dialed per key at a time while other callers wait for it (no thundering herd).
 * A peer that allows no new streams at all (SETTINGS_MAX_CONCURRENT_STREAMS 0) is waited for instead:
 * another connection to it would be told the same.
 */
export class ConnectionPool {
  #buckets = new Map<string, Bucket>();
  #options: ConnectionPoolOptions;
  #closed = false;
  #all = new Set<PooledConnection>();
  #streams = 0;
  /** Callers waiting for a connection to make room; woken by any change, they look again. */
  #roomWaiters = new Set<() => void>();

  constructor(options: ConnectionPoolOptions) {
    this.#options = options;
  }

  get connectionCount(): number {
    return this.#all.size;
  }

  get streamCount(): number {
    return this.#streams;
  }

  /** Reserves a stream slot on a usable connection for `key`, dialing when none has room. */
  async acquire(
    key: string,
    dial: () => Promise<DialedConnection>,
    signal?: AbortSignal,
  ): Promise<PooledConnection> {
    let deadline: number | undefined;
    for (;;) {
      if (this.#closed) throw new HboneError("ERR_HBONE_CLOSED", "HBONE client is closed");
      signal?.throwIfAborted();
      const held = this.#buckets.get(key);
      if (held !== undefined) this.#retireExpired(held);
      let bucket = this.#buckets.get(key);
      if (bucket === undefined) {
        bucket = { connections: [], dialing: undefined };
        this.#buckets.set(key, bucket);
      }
      // A connection the peer closed (or that failed) before its "close" event reached the pool takes
      // no stream either: it is retired here, and the next one is looked for.
      for (const c of [...bucket.connections]) if (c.session.closed) this.#retire(c, false);
      const conn = bucket.connections.find((c) => c.usable && c.active < c.maxStreams);
      if (conn !== undefined) {
        this.#reserve(conn);
        return conn;
      }
      // RFC 9113 6.5.2: 0 allows no new stream until the peer raises it in a later SETTINGS.
      if (bucket.connections.some((c) => c.usable && c.maxStreams === 0)) {
        deadline ??= Date.now() + this.#options.streamWaitTimeoutMs;
        await this.#waitForRoom(deadline, signal);
        continue;
      }
      let dialing = bucket.dialing;
      if (dialing === undefined) {
        const b = bucket;
        dialing = dial()
          .then((dialed) => this.#add(key, b, dialed))
          .finally(() => {
            b.dialing = undefined;
            if (b.connections.length === 0 && this.#buckets.get(key) === b) this.#buckets.delete(key);
          });
        b.dialing = dialing;
      }
      await waitFor(dialing, signal);
    }
  }

  /** Returns a stream slot taken by {@link acquire}. */
  release(conn: PooledConnection): void {
    conn.active--;
    this.#streams--;
    this.#options.streamsGauge.dec();
    if (conn.active === 0 && conn.usable) this.#startIdleTimer(conn);
    else if (conn.active === 0 && !conn.usable && !conn.session.closed) conn.session.close();
    this.#wakeRoomWaiters();
  }

  /** Stops new streams on `conn`; it closes once its streams are done. */
  evict(conn: PooledConnection): void {
    this.#retire(conn, false);
  }

  /**
   * Closes every connection: gracefully (GOAWAY, open tunnels finish) or at once, with `reason` as
   * the connections' failure (what their open streams close with).
   */
  async close(force: boolean, reason?: HboneError): Promise<void> {
    this.#closed = true;
    this.#wakeRoomWaiters();
    const all = [...this.#all];
    const done = all.map(
      (c) =>
        new Promise<void>((resolve) => (c.session.destroyed ? resolve() : c.session.once("close", resolve))),
    );
    for (const c of all) {
      this.#retire(c, false);
      if (force) c.session.destroy(reason);
      else if (!c.session.closed) c.session.close();
    }
    await Promise.all(done);
  }

  #waitForRoom(deadline: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      const settle = (err?: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#roomWaiters.delete(wake);
        if (err === undefined) resolve();
        else reject(err);
      };
      const wake = () => settle();
      const onAbort = () => settle(signal?.reason);
      const timer = setTimeout(
        () =>
          settle(
            new HboneError(
              "ERR_HBONE_TIMEOUT",
              `the peer allowed no new HTTP/2 stream (SETTINGS_MAX_CONCURRENT_STREAMS 0) within ${this.#options.streamWaitTimeoutMs} ms`,
            ),
          ),
        Math.max(0, deadline - Date.now()),
      );
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#roomWaiters.add(wake);
    });
  }

  #wakeRoomWaiters(): void {
    if (this.#roomWaiters.size === 0) return;
    const waiters = [...this.#roomWaiters];
    this.#roomWaiters.clear();
    for (const wake of waiters) wake();
  }

  #startIdleTimer(conn: PooledConnection): void {
    if (this.#options.idleTimeoutMs <= 0) return;
    conn.idleTimer = setTimeout(() => this.#retire(conn, true), this.#options.idleTimeoutMs);
    conn.idleTimer.unref();
  }

  #reserve(conn: PooledConnection): void {
    conn.active++;
    this.#streams++;
    this.#options.streamsGauge.inc();
    if (conn.idleTimer !== undefined) {
      clearTimeout(conn.idleTimer);
      conn.idleTimer = undefined;
    }
  }

  /** Retires the connections of `bucket` whose certificates expired: their streams finish. */
  #retireExpired(bucket: Bucket): void {
    const now = Date.now();
    // Checked on every acquire: the list is copied (retiring edits it) only when one has expired.
    if (!bucket.connections.some((conn) => conn.expiresAt <= now)) return;
    for (const conn of [...bucket.connections]) if (conn.expiresAt <= now) this.#retire(conn, false);
  }

  #add(key: string, bucket: Bucket, { session, peerIdentity, expiresAt }: DialedConnection): void {
    const conn: PooledConnection = {
      session,
      peerIdentity,
      active: 0,
      maxStreams: this.#options.maxStreamsPerConnection,
      usable: true,
      idleTimer: undefined,
      expiresAt: expiresAt ?? Number.POSITIVE_INFINITY,
    };
    const capFromPeer = () => {
      const peerMax = session.remoteSettings?.maxConcurrentStreams;
      // 0 is a limit like any other (RFC 9113 6.5.2): the connection is full until it is raised.
      conn.maxStreams =
        typeof peerMax === "number"
          ? Math.min(peerMax, this.#options.maxStreamsPerConnection)
          : this.#options.maxStreamsPerConnection;
      this.#wakeRoomWaiters();
    };
    capFromPeer();
    session.on("remoteSettings", capFromPeer);
    session.once("goaway", () => this.#retire(conn, false));
    session.once("close", () => {
      this.#retire(conn, false);
      if (this.#all.delete(conn)) this.#options.connectionsGauge.dec();
    });
    bucket.connections.push(conn);
    if (!this.#buckets.has(key)) this.#buckets.set(key, bucket);
    this.#all.add(conn);
    this.#options.connectionsGauge.inc();
    if (this.#closed) {
      this.#retire(conn, false);
      session.close();
      return;
    }
    // Idle from the start: the callers waiting for this dial take their streams at once (which stops
    // the timer), but when all of them gave up meanwhile nothing else would ever close it.
    this.#startIdleTimer(conn);
  }

  #retire(conn: PooledConnection, closeNow: boolean): void {
    if (conn.idleTimer !== undefined) {
      clearTimeout(conn.idleTimer);
      conn.idleTimer = undefined;
    }
    if (conn.usable) {
      conn.usable = false;
      for (const [key, bucket] of this.#buckets) {
        const i = bucket.connections.indexOf(conn);
        if (i >= 0) {
          bucket.connections.splice(i, 1);
          if (bucket.connections.length === 0 && bucket.dialing === undefined) this.#buckets.delete(key);
          break;
        }
      }
    }
    if ((closeNow || conn.active === 0) && !conn.session.closed && !conn.session.destroyed)
      conn.session.close();
    this.#wakeRoomWaiters();
  }
}

function waitFor(promise: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return promise;
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (err) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
