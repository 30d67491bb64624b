import { Duplex } from "node:stream";
import type { SpiffeId } from "@ambient/spiffe";
import { HboneError } from "./errors.js";
import type { H2Stream } from "./h2/connection.js";
import { H2_ERROR } from "./h2/frames.js";
import { resetError } from "./node-error.js";

/**
 * Bytes a relayed socket may hold unsent before the tunnel stops giving window back to its sender,
 * and bytes queued toward the HTTP/2 connection before the socket is no longer read.
 */
const RELAY_BUFFER_BYTES = 1024 * 1024;
/** Tunnel data arriving in pieces this large is bulk: written to the socket once per event-loop turn. */
const RELAY_BATCH_BYTES = 8 * 1024;
/** A batch toward the socket is written once it holds this much, without waiting for the turn's end. */
const RELAY_BATCH_FLUSH_BYTES = 256 * 1024;

/** A {@link TunnelStream} joined straight to a socket by {@link TunnelStream._relay}. */
interface Relay {
  socket: Duplex;
  /** Bytes from the tunnel written to the socket / read from the socket and sent into the tunnel. */
  toSocket: number;
  fromSocket: number;
  /** Tunnel bytes the socket has not taken yet: given back to the sender's window on `drain`. */
  owed: number;
  /** The socket is paused until the tunnel took what was queued. */
  paused: boolean;
  /** The socket is corked until the end of this event-loop turn ({@link RELAY_BATCH_BYTES}). */
  batching: boolean;
  socketClosed: boolean;
  done: boolean;
  /** Ends the relay once: `err` undefined when both directions finished cleanly. */
  finish(err: unknown): void;
}

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
 * by the peer or a broken connection surfaces as an `error` carrying an {@link HboneError}. A tunnel
 * ended by its own client's or server's shutdown (`destroy()`, or `close({ timeoutMs })` running
 * out) is destroyed without an error: it emits 'close' without 'end' (`readableAborted` is true).
 * Back-pressure follows HTTP/2 flow control: while the reader is paused, no window is given back to
 * the sender, so it stops after one stream window. Bytes still buffered when the peer ended its side
 * give their connection window back as the reader takes them.
 */
export class TunnelStream extends Duplex implements TunnelInfo {
  readonly authority: string;
  readonly peerIdentity: SpiffeId;
  readonly headers: Readonly<TunnelHeaders>;
  #h2: H2Stream;
  /**
   * Bytes pushed while the reader was over its high-water mark: credited when it reads again (by
   * `_read`, or after the peer's END_STREAM by `read`).
   */
  #owed = 0;
  #sawEnd = false;
  #endSent = false;
  #relay: Relay | undefined;

  constructor(h2: H2Stream, info: TunnelInfo) {
    super({ allowHalfOpen: true, writableHighWaterMark: 256 * 1024, readableHighWaterMark: 256 * 1024 });
    this.authority = info.authority;
    this.peerIdentity = info.peerIdentity;
    this.headers = info.headers;
    this.#h2 = h2;
    // The tunnel is its stream's sink itself: no object and closures of its own per tunnel.
    h2.attach(this);
  }

  /** HTTP/2 stream id, for logs. */
  get streamId(): number {
    return this.#h2.id;
  }

  /** @internal The HTTP/2 stream sink: a DATA payload. */
  _h2Data(chunk: Buffer): void {
    const relay = this.#relay;
    if (relay !== undefined) {
      // Straight to the socket: the window is given back once the socket took the bytes.
      const n = chunk.length;
      if (relay.done) {
        this.#h2.consume(n);
        return;
      }
      relay.toSocket += n;
      const socket = relay.socket;
      if (n >= RELAY_BATCH_BYTES && !relay.batching) {
        // A full TLS record's worth: bulk. What else arrives in this turn of the event loop (the
        // rest of the socket read, a frame's short tail) joins it in one write.
        relay.batching = true;
        socket.cork();
        setImmediate(endRelayBatch, relay);
      }
      socket.write(chunk);
      if (relay.batching && socket.writableLength >= RELAY_BATCH_FLUSH_BYTES) endRelayBatch(relay);
      if (relay.owed === 0 && socket.writableLength <= RELAY_BUFFER_BYTES) this.#h2.consume(n);
      else relay.owed += n;
      return;
    }
    if (this.push(chunk)) this.#h2.consume(chunk.length);
    else this.#owed += chunk.length;
  }

  /** @internal The HTTP/2 stream sink: the peer ended its side. */
  _h2End(): void {
    this.#sawEnd = true;
    const relay = this.#relay;
    if (relay !== undefined) {
      if (relay.done) return;
      if (relay.owed === 0) {
        relay.socket.end();
        return;
      }
      // An ended socket emits no more `drain`: what it still holds is given back once it took all.
      const h2 = this.#h2;
      relay.socket.end(() => {
        const owed = relay.owed;
        relay.owed = 0;
        h2.consume(owed);
      });
      return;
    }
    this.push(null);
    this.#creditOwedAfterEnd();
  }

  /**
   * After the end Node calls `_read` no more, so the bytes owed are given back here instead, once
   * the reader took the buffer below its high-water mark (when `_read` would have run). Only the
   * connection window reopens: the peer sends nothing more on this stream.
   */
  #creditOwedAfterEnd(): void {
    const owed = this.#owed;
    if (owed === 0 || this.readableLength >= this.readableHighWaterMark) return;
    this.#owed = 0;
    this.#h2.consume(owed);
  }

  /** @internal The HTTP/2 stream sink: the stream closed. */
  _h2Closed(rstCode: number, err: HboneError | undefined): void {
    if (this.destroyed) return;
    const failure = this.#closeFailure(rstCode, err);
    const relay = this.#relay;
    if (relay !== undefined) {
      if (failure !== undefined) relay.finish(failure);
      else if (relay.socketClosed) relay.finish(undefined);
      return;
    }
    if (failure === undefined) return;
    // Ended by this side's own shutdown (the client's destroy(), a close() past its deadline):
    // destroyed without an error, as `net` and `http2` do on destroy() without one; the tunnel
    // emits 'close' but no 'end'.
    if (failure.code === "ERR_HBONE_CLOSED") this.destroy();
    else this.destroy(failure);
  }

  /** Why the HTTP/2 stream's close loses data, if it does. */
  #closeFailure(rstCode: number, err: HboneError | undefined): HboneError | undefined {
    if (err !== undefined) return err;
    // Both directions already ended: nothing can be lost, whatever code the stream closed with.
    if (this.#sawEnd && this.#endSent) return undefined;
    if (rstCode !== H2_ERROR.NO_ERROR) return resetError(rstCode, "peer");
    return new HboneError(
      "ERR_HBONE_CONNECTION",
      `tunnel ${this.authority} closed before both sides finished`,
    );
  }

  /**
   * Joins this tunnel straight to `socket` (what {@link pipeTunnel} does, without the stream
   * machinery in between): tunnel bytes are written to the socket, socket bytes to the HTTP/2 stream,
   * each end forwarded as a half-close, back-pressure through the HTTP/2 windows and by pausing the
   * socket. `done` runs once, with the byte counts and the failure if there was one; on a failure
   * this tunnel is reset and destroyed, and the socket is left for the caller to abort. Returns false
   * (and does nothing) when the tunnel was already read from, written to or ended: then use the
   * stream interface.
   * @internal
   */
  _relay(
    socket: Duplex,
    done: (err: unknown, counts: { toSocket: number; fromSocket: number }) => void,
  ): boolean {
    if (
      this.#relay !== undefined ||
      this.destroyed ||
      this.#sawEnd ||
      this.#endSent ||
      this.#owed !== 0 ||
      this.readableLength !== 0 ||
      this.readableFlowing !== null ||
      this.writableLength !== 0 ||
      this.writableEnded ||
      this.listenerCount("data") !== 0 ||
      this.listenerCount("readable") !== 0 ||
      this.#h2.closed
    ) {
      return false;
    }
    const h2 = this.#h2;
    const relay: Relay = {
      socket,
      toSocket: 0,
      fromSocket: 0,
      owed: 0,
      paused: false,
      batching: false,
      socketClosed: false,
      done: false,
      finish: (err) => {
        if (relay.done) return;
        relay.done = true;
        socket.off("data", onSocketData);
        socket.off("end", onSocketEnd);
        socket.off("drain", onSocketDrain);
        socket.off("close", onSocketClose);
        // A failure resets the stream (CANCEL); after a clean finish it is already closed.
        if (err !== undefined && !h2.closed) h2.reset(H2_ERROR.CANCEL);
        if (!this.destroyed) this.destroy();
        done(err, { toSocket: relay.toSocket, fromSocket: relay.fromSocket });
      },
    };
    // Made the first time the socket has to wait (an idle tunnel never needs it).
    let resume: ((err?: Error | null) => void) | undefined;
    const onSocketData = (chunk: Buffer) => {
      const n = chunk.length;
      relay.fromSocket += n;
      // Stop reading once the HTTP/2 stream has to queue (no window) or the connection's socket is
      // backed up; `resume` runs when this chunk has been handed on and that socket drained.
      const conn = h2.connection;
      const blocked =
        h2.queued ||
        n > h2.sendWindow ||
        n > conn._sendWindow ||
        conn.socket.writableLength + n > RELAY_BUFFER_BYTES;
      if (blocked) {
        relay.paused = true;
        socket.pause();
        resume ??= (err?: Error | null) => {
          if (err) {
            relay.finish(err);
            return;
          }
          if (relay.paused && !relay.done) {
            relay.paused = false;
            socket.resume();
          }
        };
        h2.write(chunk, resume);
      } else {
        h2.write(chunk);
      }
    };
    const onSocketEnd = () => {
      this.#endSent = true;
      if (h2.closed) {
        relay.finish(new HboneError("ERR_HBONE_CONNECTION", `tunnel ${this.authority} closed before end()`));
        return;
      }
      h2.end((err) => {
        if (err) relay.finish(err);
      });
    };
    const onSocketDrain = () => {
      const owed = relay.owed;
      if (owed === 0 || socket.writableLength > RELAY_BUFFER_BYTES) return;
      relay.owed = 0;
      h2.consume(owed);
    };
    const onSocketError = (err: Error) => relay.finish(err);
    const onSocketClose = () => {
      if (!socket.readableEnded || !socket.writableFinished) {
        const err = new Error("stream closed before both directions finished");
        relay.finish(Object.assign(err, { code: "ERR_STREAM_PREMATURE_CLOSE" }));
        return;
      }
      relay.socketClosed = true;
      if (h2.closed) relay.finish(this.#closeFailure(h2.rstCode ?? H2_ERROR.NO_ERROR, undefined));
    };
    this.#relay = relay;
    // Errors of either side end the relay and reach `done`; these listeners stay so that a late
    // error after the end is not an unhandled one.
    this.on("error", onSocketError);
    socket.on("data", onSocketData);
    // `on`, not `once`: each fires at most once, and `finish` removes them; a `once` wrapper would be
    // two more objects per open tunnel.
    socket.on("end", onSocketEnd);
    socket.on("drain", onSocketDrain);
    socket.on("error", onSocketError);
    socket.on("close", onSocketClose);
    socket.resume();
    return true;
  }

  override _read(): void {
    const owed = this.#owed;
    if (owed === 0) return;
    this.#owed = 0;
    this.#h2.consume(owed);
  }

  // Buffered bytes leave through `read()` whichever way they are read (`data` events, async
  // iteration, `pipe`).
  override read(size?: number): Buffer | null {
    const chunk = super.read(size);
    if (this.#owed !== 0 && this.#sawEnd) this.#creditOwedAfterEnd();
    return chunk;
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
    const relay = this.#relay;
    if (relay !== undefined && !relay.done) {
      // Destroyed from outside while relaying: that ends the relay as a failure.
      relay.finish(
        err ??
          Object.assign(new Error("tunnel destroyed before both directions finished"), {
            code: "ERR_STREAM_PREMATURE_CLOSE",
          }),
      );
    }
    const h2 = this.#h2;
    if (!h2.closed && (err !== null || !this.#sawEnd || !this.#endSent)) h2.reset(H2_ERROR.CANCEL);
    cb(err);
  }
}

/** Ends a relay's batch toward its socket (from `setImmediate`, or once the batch is large). */
function endRelayBatch(relay: Relay): void {
  if (!relay.batching) return;
  relay.batching = false;
  relay.socket.uncork();
}
