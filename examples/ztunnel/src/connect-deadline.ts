// A deadline for the TCP connects the proxy makes itself: to a pod's app (inbound) and to a destination
// outside the mesh (passthrough). Without one, a connect nobody answers lasts as long as the kernel
// retries its SYN (over two minutes with Linux's defaults) while the client waits for an answer.
import type { Socket } from "node:net";
import { ZtunnelError } from "./errors.js";

/** How long a TCP connect may take before it fails with `ETIMEDOUT`: ztunnel's `CONNECTION_TIMEOUT`. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** A `connectTimeoutMs` option: a positive number of ms, {@link DEFAULT_CONNECT_TIMEOUT_MS} when unset. */
export function connectTimeoutOption(value: number | undefined): number {
  if (value === undefined) return DEFAULT_CONNECT_TIMEOUT_MS;
  if (!(Number.isFinite(value) && value > 0)) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `connectTimeoutMs must be a positive number, got ${value}`,
    );
  }
  return value;
}

/**
 * Destroys `socket` with an `ETIMEDOUT` error, as the kernel fails a connect it gave up on, unless it
 * has connected (or closed) within `timeoutMs`; `target` names the destination in the message.
 * Returns `socket`.
 */
export function withConnectDeadline<S extends Socket>(socket: S, timeoutMs: number, target: string): S {
  if (socket.destroyed || !socket.pending) return socket;
  const timer = setTimeout(() => {
    const err = Object.assign(new Error(`connect ETIMEDOUT ${target} (no answer in ${timeoutMs} ms)`), {
      code: "ETIMEDOUT",
      syscall: "connect",
    });
    socket.destroy(err);
  }, timeoutMs);
  // Removed once settled: an open connection keeps nothing of its connect.
  const settled = (): void => {
    clearTimeout(timer);
    socket.off("connect", settled);
    socket.off("close", settled);
  };
  socket.on("connect", settled);
  socket.on("close", settled);
  return socket;
}
