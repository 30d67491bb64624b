import type { SpiffeId } from "@ambient/spiffe";
import { HboneError } from "./errors.js";
import type { Http2Connection } from "./h2/connection.js";
import type { Gauge } from "./telemetry.js";

/**
 * The pool key: (source identity, sorted destination identities, destination ip:port, source ip).
 * Source IP is part of it because source addresses may be spoofed per workload.
 */
export interface PoolKey {
  sourceIdentity: string;
  destinationIdentities: readonly string[];
  destination: string;
  sourceAddress: string;
}

export function poolKeyString(key: PoolKey): string {
  return JSON.stringify([
    key.sourceIdentity,
    [...key.destinationIdentities].sort(),
    key.destination,
    key.sourceAddress,
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
}

interface Bucket {
  connections: PooledConnection[];
  dialing: Promise<void> | undefined;
}

export interface ConnectionPoolOptions {
  maxStreamsPerConnection: number;
  idleTimeoutMs: number;
  connectionsGauge: Gauge;
  streamsGauge: Gauge;
}

/**
 * Per-key lists of HTTP/2 connections. A connection takes streams until it reaches its cap; then one
 * new connection is dialed per key at a time while other callers wait for it (no thundering herd).
 */
export class ConnectionPool {
  #buckets = new Map<string, Bucket>();
  #options: ConnectionPoolOptions;
  #closed = false;
  #all = new Set<PooledConnection>();
  #streams = 0;

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
    dial: () => Promise<{ session: Http2Connection; peerIdentity: SpiffeId }>,
    signal?: AbortSignal,
  ): Promise<PooledConnection> {
    for (;;) {
      if (this.#closed) throw new HboneError("ERR_HBONE_CLOSED", "HBONE client is closed");
      signal?.throwIfAborted();
      let bucket = this.#buckets.get(key);
      if (bucket === undefined) {
        bucket = { connections: [], dialing: undefined };
        this.#buckets.set(key, bucket);
      }
      const conn = bucket.connections.find((c) => c.usable && c.active < c.maxStreams);
      if (conn !== undefined) {
        this.#reserve(conn);
        return conn;
      }
      let dialing = bucket.dialing;
      if (dialing === undefined) {
        const b = bucket;
        dialing = dial()
          .then(({ session, peerIdentity }) => this.#add(key, b, session, peerIdentity))
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
  }

  /** Stops new streams on `conn`; it closes once its streams are done. */
  evict(conn: PooledConnection): void {
    this.#retire(conn, false);
  }

  /** Closes every connection: gracefully (GOAWAY, open tunnels finish) or at once. */
  async close(force: boolean): Promise<void> {
    this.#closed = true;
    const all = [...this.#all];
    const done = all.map(
      (c) =>
        new Promise<void>((resolve) => (c.session.destroyed ? resolve() : c.session.once("close", resolve))),
    );
    for (const c of all) {
      this.#retire(c, false);
      if (force) c.session.destroy();
      else if (!c.session.closed) c.session.close();
    }
    await Promise.all(done);
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

  #add(key: string, bucket: Bucket, session: Http2Connection, peerIdentity: SpiffeId): void {
    const conn: PooledConnection = {
      session,
      peerIdentity,
      active: 0,
      maxStreams: this.#options.maxStreamsPerConnection,
      usable: true,
      idleTimer: undefined,
    };
    const capFromPeer = () => {
      const peerMax = session.remoteSettings?.maxConcurrentStreams;
      conn.maxStreams =
        typeof peerMax === "number" && peerMax > 0
          ? Math.min(peerMax, this.#options.maxStreamsPerConnection)
          : this.#options.maxStreamsPerConnection;
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
