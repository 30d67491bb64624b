import { HboneError } from "./errors.js";
import { MAX_MAX_FRAME, MAX_WINDOW, MIN_MAX_FRAME } from "./h2/frames.js";

/**
 * Default limits, matching ztunnel's. Every option that takes one of these documents it.
 */
export const HBONE_DEFAULTS = Object.freeze({
  /** HBONE listener port; ztunnel `HBONE` port 15008. */
  port: 15008,
  /** Initial HTTP/2 stream window; ztunnel `HTTP2_STREAM_WINDOW_SIZE`. */
  streamWindowBytes: 4 * 1024 * 1024,
  /** HTTP/2 connection window, 4x the stream window; ztunnel `HTTP2_CONNECTION_WINDOW_SIZE`. */
  connectionWindowBytes: 16 * 1024 * 1024,
  /**
   * How far a receive window may grow when window probes show it limits a transfer, as a multiple of
   * the configured window (the `maxStreamWindowBytes` and `maxConnectionWindowBytes` options).
   */
  windowGrowthFactor: 4,
  /** Largest HTTP/2 frame accepted; ztunnel `HTTP2_FRAME_SIZE`. */
  maxFrameBytes: 1024 * 1024,
  /** Concurrent streams a server advertises; ztunnel server `max_concurrent_streams`. */
  serverMaxConcurrentStreams: 200,
  /** Streams a client puts on one pooled connection; ztunnel `POOL_MAX_STREAMS_PER_CONNECTION`. */
  maxStreamsPerConnection: 100,
  /** Header list limit advertised by clients; ztunnel client `max_header_list_size`. */
  clientMaxHeaderListBytes: 16 * 1024,
  /** Header list limit advertised by servers; ztunnel server `max_header_list_size`. */
  serverMaxHeaderListBytes: 64 * 1024,
  /** Interval between keepalive PINGs; ztunnel h2 `keep_alive_interval`. */
  keepaliveIntervalMs: 10_000,
  /** An unanswered PING drops the connection after this; ztunnel h2 `keep_alive_timeout`. */
  keepaliveTimeoutMs: 20_000,
  /** Unused pooled connections are closed after this; ztunnel `POOL_UNUSED_RELEASE_TIMEOUT`. */
  poolIdleTimeoutMs: 5 * 60_000,
  /** TCP + TLS dial timeout; ztunnel `CONNECTION_TIMEOUT`. */
  connectTimeoutMs: 10_000,
  /** Wait for the CONNECT response; covers the peer's own 10 s upstream dial. */
  responseTimeoutMs: 15_000,
  /** Accepted by the `maxSessionMemoryMib` options and ignored (deprecated): the windows bound buffering. */
  maxSessionMemoryMib: 1024,
  /** TCP keepalive idle time; ztunnel `SocketConfig` keepalive time. */
  tcpKeepaliveMs: 180_000,
});

/** TLS 1.3 suites, matching ztunnel's. */
export const TLS13_CIPHERSUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256";
/** TLS 1.2 suites used only when TLS 1.2 is explicitly enabled (ztunnel `TLS12_ENABLED`). */
export const TLS12_CIPHERS =
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256";

/** The `maxFrameBytes` option: HTTP/2 allows 16 KiB to 16 MiB - 1 (RFC 9113, 6.5.2). */
export function maxFrameOption(value: number | undefined): number {
  const v = value ?? HBONE_DEFAULTS.maxFrameBytes;
  if (!Number.isInteger(v) || v < MIN_MAX_FRAME || v > MAX_MAX_FRAME) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `maxFrameBytes must be an integer from ${MIN_MAX_FRAME} to ${MAX_MAX_FRAME}, got ${value}`,
    );
  }
  return v;
}

/**
 * A `max...WindowBytes` option: at least the configured `window`, at most 2^31 - 1; default
 * {@link HBONE_DEFAULTS.windowGrowthFactor} times the window.
 */
export function maxWindowOption(name: string, value: number | undefined, window: number): number {
  if (value === undefined) return Math.min(MAX_WINDOW, window * HBONE_DEFAULTS.windowGrowthFactor);
  if (!Number.isInteger(value) || value < window || value > MAX_WINDOW) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${name} must be an integer from the window (${window}) to ${MAX_WINDOW}, got ${value}`,
    );
  }
  return value;
}

/** Longest delay Node's timers hold (2^31 - 1 ms); a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 0x7fffffff;

/** A duration option in ms: a number from `min` to {@link MAX_TIMER_MS}; `fallback` when absent. */
export function durationOption(name: string, value: unknown, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > MAX_TIMER_MS) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${name} must be a number of milliseconds from ${min} to ${MAX_TIMER_MS}, got ${String(value)}`,
    );
  }
  return value;
}

/** An integer option from `min` to `max`; `fallback` when absent. */
export function integerOption(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${name} must be an integer from ${min} to ${max}, got ${String(value)}`,
    );
  }
  return value;
}

/** Largest SETTINGS_MAX_CONCURRENT_STREAMS and SETTINGS_MAX_HEADER_LIST_SIZE (32-bit values). */
export const MAX_SETTING = 0xffffffff;

/** A non-negative number option (no upper bound); `fallback` when absent. */
export function nonNegativeOption(name: string, value: unknown, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `${name} must be a number >= ${min}, got ${String(value)}`,
    );
  }
  return value;
}
