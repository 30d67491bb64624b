import { constants, type Http2Stream, type IncomingHttpHeaders } from "node:http2";
import { addAbortSignal, Duplex } from "node:stream";
import type { SpiffeId } from "@ambient/spiffe";
import { HboneError } from "./errors.js";
import { resetError, toHboneError } from "./node-error.js";

/** What a {@link TunnelStream} knows about its tunnel. */
export interface TunnelInfo {
  /** The CONNECT `:authority` of the tunnel. */
  readonly authority: string;
  /** SPIFFE identity of the other end of the mTLS connection. */
  readonly peerIdentity: SpiffeId;
  /** Response headers (client side) or request headers (server side) of the CONNECT. */
  readonly headers: Readonly<IncomingHttpHeaders>;
}

/**
 * The bytes of one HBONE tunnel as a Node Duplex. `end()` sends END_STREAM (half-close: the other
 * direction keeps flowing); `destroy()` before both sides ended resets the stream with CANCEL; a reset
 * by the peer or a broken connection surfaces as an `error` carrying an {@link HboneError}.
 * Back-pressure follows HTTP/2 flow control: a paused reader stops window updates to the sender.
 */
export class TunnelStream extends Duplex implements TunnelInfo {
  readonly authority: string;
  readonly peerIdentity: SpiffeId;
  readonly headers: Readonly<IncomingHttpHeaders>;
  #h2: Http2Stream;
  #pendingWrite: (() => void) | undefined;
  #h2Paused = false;
  #sawEnd = false;
  #endSent = false;
  #h2Closed = false;
  #resetByUs = false;

  constructor(h2: Http2Stream, info: TunnelInfo) {
    super({ allowHalfOpen: true, writableHighWaterMark: 256 * 1024, readableHighWaterMark: 256 * 1024 });
    this.authority = info.authority;
    this.peerIdentity = info.peerIdentity;
    this.headers = info.headers;
    this.#h2 = h2;
    // Built on an already destroyed stream (the client left first): its close may be long gone.
    if (h2.destroyed) this.#h2Closed = true;
    h2.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) {
        this.#h2Paused = true;
        h2.pause();
      }
    });
    h2.once("end", () => {
      // A destroyed stream also ends; only an end before destruction is the peer's END_STREAM.
      // Otherwise the close handler reports the reset, so a relay never mistakes it for EOF.
      if (h2.destroyed) return;
      this.#sawEnd = true;
      this.push(null);
    });
    h2.on("drain", () => this.#flushPending());
    h2.on("error", (err) => {
      if (!this.destroyed) this.destroy(toHboneError(err, `tunnel ${this.authority}`));
    });
    h2.once("close", () => this.#onH2Close());
  }

  /** HTTP/2 stream id, for logs. */
  get streamId(): number | undefined {
    return this.#h2.id;
  }

  #flushPending(): void {
    const cb = this.#pendingWrite;
    this.#pendingWrite = undefined;
    cb?.();
  }

  #onH2Close(): void {
    this.#h2Closed = true;
    if (this.destroyed) return;
    // Both directions already ended: nothing can be lost, whatever code the stream closed with
    // (Node 22 reports CANCEL when the session is torn down right after a complete exchange).
    if (this.#sawEnd && this.#endSent) return;
    const code = this.#h2.rstCode ?? constants.NGHTTP2_NO_ERROR;
    if (code !== constants.NGHTTP2_NO_ERROR && !this.#resetByUs) {
      this.destroy(resetError(code, "peer"));
    } else if (!this.#sawEnd || !this.#endSent) {
      this.destroy(
        new HboneError("ERR_HBONE_CONNECTION", `tunnel ${this.authority} closed before both sides finished`),
      );
    }
  }

  override _read(): void {
    // Resume only what back-pressure paused: a redundant resume costs event-loop turns per chunk.
    if (!this.#h2Paused) return;
    this.#h2Paused = false;
    this.#h2.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.#h2.write(chunk)) cb();
    else this.#pendingWrite = cb;
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    const h2 = this.#h2;
    h2.cork();
    let ok = true;
    for (const { chunk } of chunks) ok = h2.write(chunk);
    h2.uncork();
    if (ok) cb();
    else this.#pendingWrite = cb;
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.#h2.destroyed) {
      cb(new HboneError("ERR_HBONE_CONNECTION", `tunnel ${this.authority} closed before end()`));
      return;
    }
    this.#endSent = true;
    this.#h2.end(() => cb());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const h2 = this.#h2;
    this.#pendingWrite = undefined;
    if (this.#h2Closed) {
      cb(err);
      return;
    }
    if (err || !this.#sawEnd || !this.#endSent) {
      this.#resetByUs = true;
      resetStream(h2);
    }
    h2.once("close", () => cb(err));
  }
}

/**
 * Sends RST_STREAM(CANCEL) without a preceding END_STREAM. (`Http2Stream.close()` ends the writable
 * side first, which the peer would read as a clean EOF before the reset.) Aborting through
 * `addAbortSignal` is the public way to make Node reset with CANCEL.
 */
export function resetStream(h2: Http2Stream): void {
  if (h2.destroyed) return;
  h2.on("error", () => {});
  const controller = new AbortController();
  addAbortSignal(controller.signal, h2);
  controller.abort();
}
