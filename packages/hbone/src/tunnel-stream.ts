import { Duplex } from "node:stream";
import type { SpiffeId } from "@ambient/spiffe";
import { HboneError } from "./errors.js";
import type { H2Stream } from "./h2/connection.js";
import { H2_ERROR } from "./h2/frames.js";
import { resetError } from "./node-error.js";

/**
 * Header fields of a CONNECT request or response as Node shows them: lower-case names, repeated fields
 * joined (`set-cookie` a list).
 */
export type TunnelHeaders = Record<string, string | string[] | undefined>;

/** What a {@link TunnelStream} knows about its tunnel. */
export interface TunnelInfo {
  /** The CONNECT `:authority` of the tunnel. */
  readonly authority: string;
  /** SPIFFE identity of the other end of the mTLS connection. */
  readonly peerIdentity: SpiffeId;
  /** Response headers (client side) or request headers (server side) of the CONNECT. */
  readonly headers: Readonly<TunnelHeaders>;
}

/**
 * The bytes of one HBONE tunnel as a Node Duplex. `end()` sends END_STREAM (half-close: the other
 * direction keeps flowing); `destroy()` before both sides ended resets the stream with CANCEL; a reset
 * by the peer or a broken connection surfaces as an `error` carrying an {@link HboneError}.
 * Back-pressure follows HTTP/2 flow control: while the reader is paused, no window is given back to
 * the sender, so it stops after one stream window.
 */
export class TunnelStream extends Duplex implements TunnelInfo {
  readonly authority: string;
  readonly peerIdentity: SpiffeId;
  readonly headers: Readonly<TunnelHeaders>;
  #h2: H2Stream;
  /** Bytes pushed while the reader was over its high-water mark: credited when it reads again. */
  #owed = 0;
  #sawEnd = false;
  #endSent = false;

  constructor(h2: H2Stream, info: TunnelInfo) {
    super({ allowHalfOpen: true, writableHighWaterMark: 256 * 1024, readableHighWaterMark: 256 * 1024 });
    this.authority = info.authority;
    this.peerIdentity = info.peerIdentity;
    this.headers = info.headers;
    this.#h2 = h2;
    h2.attach({
      data: (chunk) => this.#onData(chunk),
      end: () => this.#onEnd(),
      closed: (rstCode, err) => this.#onClosed(rstCode, err),
    });
  }

  /** HTTP/2 stream id, for logs. */
  get streamId(): number {
    return this.#h2.id;
  }

  #onData(chunk: Buffer): void {
    if (this.push(chunk)) this.#h2.consume(chunk.length);
    else this.#owed += chunk.length;
  }

  #onEnd(): void {
    this.#sawEnd = true;
    this.push(null);
  }

  #onClosed(rstCode: number, err: HboneError | undefined): void {
    if (this.destroyed) return;
    if (err !== undefined) {
      this.destroy(err);
      return;
    }
    // Both directions already ended: nothing can be lost, whatever code the stream closed with.
    if (this.#sawEnd && this.#endSent) return;
    if (rstCode !== H2_ERROR.NO_ERROR) this.destroy(resetError(rstCode, "peer"));
    else
      this.destroy(
        new HboneError("ERR_HBONE_CONNECTION", `tunnel ${this.authority} closed before both sides finished`),
      );
  }

  override _read(): void {
    const owed = this.#owed;
    if (owed === 0) return;
    this.#owed = 0;
    this.#h2.consume(owed);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#h2.write(chunk, cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    const h2 = this.#h2;
    const last = chunks.length - 1;
    for (let i = 0; i < last; i++) h2.write((chunks[i] as { chunk: Buffer }).chunk);
    h2.write((chunks[last] as { chunk: Buffer }).chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.#h2.closed) {
      cb(new HboneError("ERR_HBONE_CONNECTION", `tunnel ${this.authority} closed before end()`));
      return;
    }
    this.#endSent = true;
    this.#h2.end(cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const h2 = this.#h2;
    if (!h2.closed && (err !== null || !this.#sawEnd || !this.#endSent)) h2.reset(H2_ERROR.CANCEL);
    cb(err);
  }
}
