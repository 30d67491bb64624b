/**
 * The two-way byte relay behind a tunnel carried as TCP and an upgraded (WebSocket) connection. It
 * passes each side's end on as a half-close and ends only once both directions are done, so bytes one
 * side sent before its FIN still reach the other; a failure on either side resets both.
 */
import { type Duplex, finished } from "node:stream";

/** Which side of a relay failed. */
export type RelaySide = "client" | "upstream";

/** How a relay ended. */
export type RelayEnd =
  /** Both directions finished: each side's readable ended and its writable finished. */
  | { kind: "finished" }
  /** A side failed (an error, or a close before both of its directions finished): both were reset. */
  | { kind: "failed"; side: RelaySide; error: Error }
  /** No byte moved either way for the idle timeout: both were closed. */
  | { kind: "idle" };

/**
 * Destroys `stream` as an abort its peer can tell from a clean end: a TCP socket is reset (RST), any
 * other stream (an HTTP/2 tunnel stream: RST_STREAM) is destroyed with `error`.
 */
export function abortStream(stream: Duplex, error: Error): void {
  if (stream.destroyed) return;
  const socket = stream as Duplex & { resetAndDestroy?: () => unknown; _handle?: unknown };
  if (typeof socket.resetAndDestroy === "function" && socket._handle) {
    try {
      socket.resetAndDestroy();
      return;
    } catch {
      // Not a TCP handle (TLS, a pipe): destroyed below.
    }
  }
  stream.destroy(error);
}

/**
 * Carries bytes both ways between `client` and `upstream` with back-pressure (a side that cannot take
 * more pauses the other), passing each side's end on as the other's half-close. `onEnd` runs once: when
 * both directions finished; when either side failed, after both were reset; or when no byte moved
 * either way for `idleMs` (0: no limit), after both were destroyed. TCP sockets should be half-open
 * (`allowHalfOpen: true`), else a socket ends its own writes at its peer's FIN.
 */
export function relayStreams(
  client: Duplex,
  upstream: Duplex,
  idleMs: number,
  onEnd: (end: RelayEnd) => void,
): void {
  let over = false;
  let open = 2;
  let timer: NodeJS.Timeout | undefined;
  /** Ends the relay once: `close` takes both streams down, then `onEnd` hears how it ended. */
  const end = (how: RelayEnd, close: () => void) => {
    over = true;
    if (timer !== undefined) clearTimeout(timer);
    close();
    onEnd(how);
  };
  const watch = (stream: Duplex, side: RelaySide) => {
    // Errors are read by `finished`; this keeps one that comes after it reported from being thrown.
    stream.on("error", () => {});
    finished(stream, (err) => {
      if (over) return;
      if (err === undefined || err === null) {
        open--;
        if (open === 0) end({ kind: "finished" }, () => {});
        return;
      }
      const error = err instanceof Error ? err : new Error(String(err));
      end({ kind: "failed", side, error }, () => {
        abortStream(client, error);
        abortStream(upstream, error);
      });
    });
  };
  watch(client, "client");
  watch(upstream, "upstream");
  upstream.pipe(client);
  client.pipe(upstream);
  if (idleMs <= 0) return;
  // A time per chunk, one timer re-armed for what is left when it fires: nothing per chunk but a write.
  let lastByteAt = performance.now();
  const moved = () => {
    lastByteAt = performance.now();
  };
  client.on("data", moved);
  upstream.on("data", moved);
  const check = () => {
    if (over) return;
    const idle = performance.now() - lastByteAt;
    if (idle < idleMs) {
      arm(idleMs - idle);
      return;
    }
    end({ kind: "idle" }, () => {
      upstream.destroy();
      client.destroy();
    });
  };
  const arm = (ms: number) => {
    timer = setTimeout(check, ms);
    timer.unref();
  };
  arm(idleMs);
}
