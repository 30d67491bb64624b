import type { Duplex } from "node:stream";
import { HboneError } from "./errors.js";
import { abortError, toHboneError } from "./node-error.js";
import { TunnelStream } from "./tunnel-stream.js";

/** Bytes moved by {@link pipeTunnel}. */
export interface PipeTunnelResult {
  /** Bytes read from `a` and written to `b`. */
  aToB: number;
  /** Bytes read from `b` and written to `a`. */
  bToA: number;
}

/** Options of {@link pipeTunnel}. */
export interface PipeTunnelOptions {
  /** Aborting destroys both streams and rejects with `ERR_HBONE_ABORTED` (the reason as `cause`). */
  signal?: AbortSignal;
}

/**
 * Copies `a` to `b` and `b` to `a` until both directions ended. Honours back-pressure (a slow writer
 * pauses its source), forwards half-close (the end of `a` ends `b`'s writable side while `b` to `a` keeps
 * flowing), and on an error or reset on either side destroys the other with that error, so the peer
 * sees a reset rather than a clean end. TCP sockets should be created with `allowHalfOpen: true`.
 *
 * Resolves with the byte counts; rejects with an HboneError whose message includes them, or with
 * `ERR_HBONE_INVALID_ARGUMENT` (touching neither stream) when `a` or `b` is not a duplex stream or
 * `signal` is not an AbortSignal.
 */
export function pipeTunnel(a: Duplex, b: Duplex, options: PipeTunnelOptions = {}): Promise<PipeTunnelResult> {
  if (!isDuplex(a) || !isDuplex(b)) {
    return Promise.reject(
      new HboneError("ERR_HBONE_INVALID_ARGUMENT", "pipeTunnel: a and b must be duplex streams"),
    );
  }
  if (options === null || typeof options !== "object") {
    return Promise.reject(
      new HboneError("ERR_HBONE_INVALID_ARGUMENT", "pipeTunnel: options must be an object"),
    );
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    return Promise.reject(
      new HboneError("ERR_HBONE_INVALID_ARGUMENT", "pipeTunnel: signal must be an AbortSignal"),
    );
  }
  if (options.signal?.aborted !== true) {
    // A tunnel and a plain socket: the tunnel's HTTP/2 stream is joined to the socket directly.
    if (b instanceof TunnelStream && !(a instanceof TunnelStream)) {
      const relayed = relay(b, a, options.signal, "bToA");
      if (relayed !== undefined) return relayed;
    } else if (a instanceof TunnelStream && !(b instanceof TunnelStream)) {
      const relayed = relay(a, b, options.signal, "aToB");
      if (relayed !== undefined) return relayed;
    }
  }
  const result: PipeTunnelResult = { aToB: 0, bToA: 0 };
  return new Promise((resolve, reject) => {
    let failed = false;
    const pending = new Set<Duplex>([a, b]);
    const cleanups: (() => void)[] = [];

    const fail = (err: unknown, aborted = false) => {
      if (failed) return;
      failed = true;
      for (const c of cleanups) c();
      const context = `tunnel copy after ${result.aToB}/${result.bToA} bytes`;
      const mapped = aborted ? abortError(err, context) : toHboneError(err, context);
      abort(a, mapped);
      abort(b, mapped);
      reject(mapped);
    };

    const pump = (src: Duplex, dst: Duplex, count: "aToB" | "bToA") => {
      const onData = (chunk: Buffer) => {
        result[count] += chunk.length;
        if (!dst.write(chunk)) src.pause();
      };
      const onDrain = () => src.resume();
      const onEnd = () => dst.end();
      src.on("data", onData);
      dst.on("drain", onDrain);
      src.once("end", onEnd);
      cleanups.push(() => {
        src.off("data", onData);
        dst.off("drain", onDrain);
        src.off("end", onEnd);
      });
    };

    const watch = (s: Duplex) => {
      const onError = (err: Error) => fail(err);
      const onClose = () => {
        if (failed) return;
        if (!s.readableEnded || !s.writableFinished) {
          const err = new Error("stream closed before both directions finished");
          fail(Object.assign(err, { code: "ERR_STREAM_PREMATURE_CLOSE" }));
          return;
        }
        pending.delete(s);
        if (pending.size === 0) {
          for (const c of cleanups) c();
          resolve(result);
        }
      };
      s.on("error", onError);
      s.once("close", onClose);
      cleanups.push(() => {
        s.off("close", onClose);
      });
    };

    // Error listeners first: failing destroys both streams with the error, which they then emit.
    watch(a);
    watch(b);
    if (options.signal) {
      const signal = options.signal;
      if (signal.aborted) {
        fail(signal.reason, true);
        return;
      }
      const onAbort = () => fail(signal.reason, true);
      signal.addEventListener("abort", onAbort, { once: true });
      cleanups.push(() => signal.removeEventListener("abort", onAbort));
    }
    pump(a, b, "aToB");
    pump(b, a, "bToA");
  });
}

/**
 * {@link pipeTunnel} through {@link TunnelStream._relay}; `undefined` when the tunnel cannot be relayed
 * directly (it was already read from or written to). `tunnelToSocket` names the result field that
 * counts the tunnel's bytes.
 */
function relay(
  tunnel: TunnelStream,
  socket: Duplex,
  signal: AbortSignal | undefined,
  tunnelToSocket: "aToB" | "bToA",
): Promise<PipeTunnelResult> | undefined {
  type Counts = { toSocket: number; fromSocket: number };
  let settle: ((err: unknown, counts: Counts) => void) | undefined;
  let early: [unknown, Counts] | undefined;
  const started = tunnel._relay(socket, (err, counts) => {
    if (settle === undefined) early = [err, counts];
    else settle(err, counts);
  });
  if (!started) return undefined;
  return new Promise((resolve, reject) => {
    const onAbort = () => tunnel.destroy(abortError(signal?.reason, "tunnel copy"));
    settle = (err, counts) => {
      signal?.removeEventListener("abort", onAbort);
      const result: PipeTunnelResult =
        tunnelToSocket === "aToB"
          ? { aToB: counts.toSocket, bToA: counts.fromSocket }
          : { aToB: counts.fromSocket, bToA: counts.toSocket };
      if (err === undefined) {
        resolve(result);
        return;
      }
      const mapped = toHboneError(err, `tunnel copy after ${result.aToB}/${result.bToA} bytes`);
      abort(socket, mapped);
      reject(mapped);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (early !== undefined) settle(...early);
  });
}

function isDuplex(s: unknown): s is Duplex {
  const d = s as Partial<Duplex> | null;
  return (
    typeof d === "object" &&
    d !== null &&
    typeof d.on === "function" &&
    typeof d.write === "function" &&
    typeof d.destroy === "function"
  );
}

/** Destroys `s`; a TCP socket is reset (RST) so its peer sees an abort, not a clean end. */
function abort(s: Duplex, err: Error): void {
  if (s.destroyed) return;
  const reset = (s as Duplex & { resetAndDestroy?: () => void }).resetAndDestroy;
  if (typeof reset === "function" && (s as Duplex & { _handle?: unknown })._handle) {
    try {
      reset.call(s);
      return;
    } catch {
      // Not connected yet: fall through to a plain destroy.
    }
  }
  s.destroy(err);
}
