/**
 * One reconnect policy for every gRPC channel to the control plane. grpc-js keeps its own connection
 * back-off (1 s growing to 120 s by default) under any retry loop above it, so after a long outage the
 * two stack; these channel options cap grpc-js at the same bound as the xDS client's own loop.
 */
import type { ChannelOptions } from "@grpc/grpc-js";
import { MAX_TIMER_MS } from "./checks.js";
import { XdsError } from "./errors.js";

/** Reconnect delays to the control plane. */
export interface ReconnectBackoff {
  /** First delay: default 10 ms; ztunnel's xDS back-off starts at 10 ms. */
  initialBackoffMs?: number;
  /** Longest delay, jitter included: default 15000 ms; ztunnel caps at 15 s. */
  maxBackoffMs?: number;
}

/** The defaults of {@link ReconnectBackoff}, as ztunnel's xDS client. */
export const DEFAULT_RECONNECT_BACKOFF: Readonly<Required<ReconnectBackoff>> = Object.freeze({
  initialBackoffMs: 10,
  maxBackoffMs: 15_000,
});

/** grpc-js spreads each back-off by up to +/-20% (`BACKOFF_JITTER`), also once it reached its cap. */
const GRPC_JITTER = 0.2;

/** Fills in and checks a {@link ReconnectBackoff}. */
export function resolveReconnectBackoff(backoff: ReconnectBackoff = {}): Required<ReconnectBackoff> {
  const initialBackoffMs = backoff.initialBackoffMs ?? DEFAULT_RECONNECT_BACKOFF.initialBackoffMs;
  const maxBackoffMs = backoff.maxBackoffMs ?? DEFAULT_RECONNECT_BACKOFF.maxBackoffMs;
  if (!Number.isFinite(initialBackoffMs) || initialBackoffMs < 1) {
    throw new XdsError(
      "ERR_XDS_INVALID_ARGUMENT",
      `initialBackoffMs must be at least 1, got ${initialBackoffMs}`,
    );
  }
  if (!Number.isFinite(maxBackoffMs) || maxBackoffMs < initialBackoffMs || maxBackoffMs > MAX_TIMER_MS) {
    throw new XdsError(
      "ERR_XDS_INVALID_ARGUMENT",
      `maxBackoffMs must be a number from initialBackoffMs (${initialBackoffMs}) to ${MAX_TIMER_MS}, got ${maxBackoffMs}`,
    );
  }
  return { initialBackoffMs, maxBackoffMs };
}

/**
 * grpc-js channel options that keep its connection back-off within `maxBackoffMs` (after its jitter)
 * and start it at `initialBackoffMs`; DNS re-resolution is allowed as often. The xDS client applies
 * them itself; spread them into any other channel to the same control plane (the CA client).
 */
export function reconnectChannelOptions(backoff: ReconnectBackoff = {}): ChannelOptions {
  const { initialBackoffMs, maxBackoffMs } = resolveReconnectBackoff(backoff);
  const max = Math.max(1, Math.floor(maxBackoffMs / (1 + GRPC_JITTER)));
  return {
    "grpc.initial_reconnect_backoff_ms": Math.min(Math.ceil(initialBackoffMs), max),
    "grpc.max_reconnect_backoff_ms": max,
    "grpc.dns_min_time_between_resolutions_ms": max,
  };
}
