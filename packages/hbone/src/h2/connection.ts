import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { HboneError } from "../errors.js";
import { http2ErrorName, resetError, toHboneError } from "../node-error.js";
import {
  CLIENT_PREFACE,
  DEFAULT_WINDOW,
  defaultSettings,
  encodeSettings,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PADDED,
  FLAG_PRIORITY,
  FRAME_CONTINUATION,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADER_BYTES,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_PRIORITY,
  FRAME_PUSH_PROMISE,
  FRAME_RST_STREAM,
  FRAME_SETTINGS,
  FRAME_WINDOW_UPDATE,
  frame,
  H2_ERROR,
  type H2Settings,
  MAX_MAX_FRAME,
  MAX_WINDOW,
  MIN_MAX_FRAME,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  writeFrameHeader,
} from "./frames.js";
import { encodeHeaders, HpackDecoder, HpackError } from "./hpack.js";

// A compact HTTP/2 (RFC 9113) endpoint for HBONE: CONNECT streams carrying opaque bytes. It does all of
// HTTP/2's connection management (SETTINGS, flow control, PING, GOAWAY, stream states, header blocks)
// and hands DATA payloads to the tunnel streams as slices of the socket's own buffers.

/** Header fields as Node shows them: lower-case names, repeated fields joined (`set-cookie` a list). */
export type H2Headers = Record<string, string | string[] | undefined>;

/** A connection-level protocol violation: GOAWAY with `h2Code`, then the connection closes. */
class ConnectionError extends Error {
  constructor(
    readonly h2Code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Receives what happens on an {@link H2Stream}. */
export interface H2StreamSink {
  /** DATA payload; call {@link H2Stream.consume} once the bytes are taken, to reopen the window. */
  _h2Data(chunk: Buffer): void;
  /** The peer sent END_STREAM. */
  _h2End(): void;
  /**
   * The stream is closed: `rstCode` is the peer's RST_STREAM code, `H2_ERROR.NO_ERROR` after a
   * clean end in both directions or our own reset; `err` is set when the connection failed.
   */
  _h2Closed(rstCode: number, err: HboneError | undefined): void;
}

interface QueuedWrite {
  data: Buffer;
  end: boolean;
  cb: ((err?: Error | null) => void) | undefined;
}

type Buffered =
  | { kind: "data"; chunk: Buffer }
  | { kind: "end" }
  | { kind: "closed"; code: number; err?: HboneError };

/** One HTTP/2 stream of an {@link Http2Connection}. */
export class H2Stream {
  readonly id: number;
  /** Set once the stream closed: the peer's RST_STREAM code or NO_ERROR. */
  rstCode: number | undefined;
  /** Client side: called with the final (non-1xx) response headers. */
  onResponse: ((headers: H2Headers, endStream: boolean) => void) | undefined;
  #conn: Http2Connection;
  #sink: H2StreamSink | undefined;
  #buffered: Buffered[] = [];
  /** Bytes the peer may still send us; bytes we may still send. */
  recvWindow: number;
  sendWindow: number;
  /** Received but not yet consumed by the sink: given back to the connection window on close. */
  #unconsumed = 0;
  /** Consumed but not yet announced with WINDOW_UPDATE. */
  #credit = 0;
  /** The window this stream is given (its announced size); grows with {@link _grow}. */
  #window: number;
  /** Bytes received while the connection's window probe {@link #probeEpoch} was out. */
  #probeEpoch = 0;
  #probeBytes = 0;
  #queue: QueuedWrite[] = [];
  /** END_STREAM sent (or queued behind data) / received. */
  localEnded = false;
  remoteEnded = false;
  #endQueued = false;
  headersSent = false;
  responded = false;
  closed = false;
  #closeListeners: (() => void)[] = [];

  constructor(conn: Http2Connection, id: number, recvWindow: number, sendWindow: number) {
    this.#conn = conn;
    this.id = id;
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
    this.#window = recvWindow;
  }

  /** Connects the stream to its consumer; events that arrived before are replayed in order. */
  attach(sink: H2StreamSink): void {
    this.#sink = sink;
    const buffered = this.#buffered;
    this.#buffered = [];
    for (const b of buffered) {
      if (b.kind === "data") sink._h2Data(b.chunk);
      else if (b.kind === "end") sink._h2End();
      else sink._h2Closed(b.code, b.err);
    }
  }

  /** The connection this stream belongs to. */
  get connection(): Http2Connection {
    return this.#conn;
  }

  /** Whether written data waits in this stream's queue (for window). */
  get queued(): boolean {
    return this.#queue.length > 0;
  }

  /** Runs `listener` once the stream is closed (at once if it already is). */
  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.#closeListeners.push(listener);
  }

  /** Forgets a listener given to {@link onClose} (and whatever it holds). */
  offClose(listener: () => void): void {
    const i = this.#closeListeners.indexOf(listener);
    if (i >= 0) this.#closeListeners.splice(i, 1);
  }

  /** Sends response headers (server side). */
  respond(fields: readonly (readonly [string, string])[], endStream: boolean): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    if (endStream) {
      this.localEnded = true;
      this.#endQueued = true;
    }
    this.#conn._sendHeaders(this.id, fields, endStream);
    if (endStream) this.#maybeClose();
  }

  /** Queues DATA; `cb` runs once it is handed to the socket (and the socket took it without waiting). */
  write(data: Buffer, cb?: (err?: Error | null) => void): void {
    if (this.closed || this.#endQueued) {
      cb?.(new HboneError("ERR_HBONE_CONNECTION", "write on a closed HTTP/2 stream"));
      return;
    }
    const conn = this.#conn;
    const n = data.length;
    if (
      this.#queue.length === 0 &&
      n <= this.sendWindow &&
      n <= conn._sendWindow &&
      n <= conn._peerMaxFrame
    ) {
      // Nothing queued and the windows allow it: one frame now.
      this.sendWindow -= n;
      conn._sendData(this.id, data, false);
      if (cb !== undefined) conn._afterWrite(cb);
      return;
    }
    this.#queue.push({ data, end: false, cb });
    conn._flushStream(this);
  }

  /** Queues END_STREAM behind the data already written. */
  end(cb?: (err?: Error | null) => void): void {
    if (this.closed || this.#endQueued) {
      cb?.(this.closed ? new HboneError("ERR_HBONE_CONNECTION", "end on a closed HTTP/2 stream") : null);
      return;
    }
    this.#endQueued = true;
    this.#queue.push({ data: EMPTY, end: true, cb });
    this.#conn._flushStream(this);
  }

  /** Resets the stream (RST_STREAM `code`) and drops whatever was queued. */
  reset(code: number = H2_ERROR.CANCEL): void {
    if (this.closed) return;
    this.#conn._sendReset(this.id, code);
    this._close(H2_ERROR.NO_ERROR, undefined);
  }

  /** The sink took `n` bytes: they count toward the next WINDOW_UPDATE. */
  consume(n: number): void {
    // After close, whatever was unconsumed has already been given back to the connection.
    if (this.closed) return;
    this.#unconsumed -= n;
    this._credit(n);
  }

  /** Gives `n` received bytes back to both windows (WINDOW_UPDATE in quarter-window steps). */
  _credit(n: number): void {
    this.#conn._consume(n);
    if (this.remoteEnded || this.closed) return;
    this.#credit += n;
    if (this.#credit >= this.#window / WINDOW_UPDATE_FRACTION) {
      this.recvWindow += this.#credit;
      this.#conn._sendWindowUpdate(this.id, this.#credit);
      this.#credit = 0;
    }
  }

  /** The stream's current window size (what it announced, grown or not). */
  get window(): number {
    return this.#window;
  }

  /** Counts a DATA frame of `n` bytes toward the window probe `epoch` (see {@link Http2Connection}). */
  _probeCount(epoch: number, n: number): void {
    if (this.#probeEpoch !== epoch) {
      this.#probeEpoch = epoch;
      this.#probeBytes = 0;
    }
    this.#probeBytes += n;
  }

  /**
   * The window probe `epoch` came back: when this stream received most of its window within that
   * round trip while its reader kept up, the window (not the reader) limits it, so it grows up to
   * `max` with a WINDOW_UPDATE of the difference.
   */
  _probed(epoch: number, max: number): void {
    if (this.#probeEpoch !== epoch || this.remoteEnded || this.closed) return;
    const bytes = this.#probeBytes;
    const window = this.#window;
    if (window >= max || bytes * 3 < window * 2 || this.#unconsumed > window / WINDOW_UPDATE_FRACTION) return;
    const grow = Math.min(max, 2 * bytes) - window;
    if (grow <= 0) return;
    this.#window += grow;
    this.recvWindow += grow;
    this.#conn._sendWindowUpdate(this.id, grow);
  }

  _receiveData(chunk: Buffer): void {
    this.#unconsumed += chunk.length;
    if (this.#sink !== undefined) this.#sink._h2Data(chunk);
    else this.#buffered.push({ kind: "data", chunk });
  }

  _receiveEnd(): void {
    if (this.remoteEnded || this.closed) return;
    this.remoteEnded = true;
    if (this.#sink !== undefined) this.#sink._h2End();
    else this.#buffered.push({ kind: "end" });
    this.#maybeClose();
  }

  /** Sends what the windows allow. Returns true when the stream still waits for connection window. */
  _flush(): boolean {
    const conn = this.#conn;
    const queue = this.#queue;
    while (queue.length > 0 && !this.closed) {
      const item = queue[0] as QueuedWrite;
      const left = item.data.length;
      if (left > 0) {
        const n = Math.min(left, this.sendWindow, conn._sendWindow, conn._peerMaxFrame);
        if (n <= 0) return this.sendWindow > 0;
        const last = n === left;
        const payload = last ? item.data : item.data.subarray(0, n);
        this.sendWindow -= n;
        conn._sendData(this.id, payload, false);
        if (!last) {
          item.data = item.data.subarray(n);
          continue;
        }
      } else if (item.end) {
        conn._sendData(this.id, EMPTY, true);
        this.localEnded = true;
      }
      queue.shift();
      if (item.cb !== undefined) conn._afterWrite(item.cb);
      if (item.end) this.#maybeClose();
    }
    return false;
  }

  #maybeClose(): void {
    if (this.localEnded && this.remoteEnded) this._close(H2_ERROR.NO_ERROR, undefined);
  }

  /** Closes the stream locally; tells the sink (or buffers that for a later attach). */
  _close(code: number, err: HboneError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    this.rstCode = code;
    const dropped = this.#queue;
    this.#queue = [];
    if (this.#unconsumed > 0) {
      this.#conn._consume(this.#unconsumed);
      this.#unconsumed = 0;
    }
    this.#conn._streamClosed(this);
    // The sink hears the reason first, so a writer waiting for window learns of the reset itself.
    if (this.#sink !== undefined) this.#sink._h2Closed(code, err);
    else this.#buffered.push({ kind: "closed", code, ...(err ? { err } : {}) });
    if (dropped.length > 0) {
      const failure =
        err ??
        (code === H2_ERROR.NO_ERROR
          ? new HboneError("ERR_HBONE_CONNECTION", "HTTP/2 stream closed")
          : resetError(code, "peer"));
      for (const w of dropped) w.cb?.(failure);
    }
    const listeners = this.#closeListeners;
    this.#closeListeners = [];
    for (const listener of listeners) listener();
  }
}

const EMPTY = Buffer.alloc(0);
/**
 * WINDOW_UPDATE is sent once a quarter of a window was consumed, so a sender that waits for it still
 * has three quarters in flight (nghttp2 and ztunnel's h2 wait for half; Go's x/net/http2 for 4 KiB).
 */
const WINDOW_UPDATE_FRACTION = 4;
/** A window probe starts after a quarter of the stream window (at most this) since the last one... */
const PROBE_MIN_BYTES = 1024 * 1024;
/** ...and at most this often, so a bulk transfer costs a few PINGs per second. */
const PROBE_INTERVAL_MS = 25;
/** A batch of DATA frames is written once it holds this much, without waiting for the turn's end. */
const BATCH_FLUSH_BYTES = 256 * 1024;

/** Options of {@link Http2Connection}. */
export interface Http2ConnectionOptions {
  role: "client" | "server";
  /** Stream window announced in SETTINGS. */
  streamWindow: number;
  /** Connection window, grown with a WINDOW_UPDATE right after the SETTINGS. */
  connectionWindow: number;
  /** Largest frame we accept. */
  maxFrameSize: number;
  /** Header list limit we announce and enforce. */
  maxHeaderListSize: number;
  /** Server: concurrent streams we announce and enforce. */
  maxConcurrentStreams?: number;
  /**
   * Largest a stream window may grow to when a window probe shows the window, not the reader, limits
   * the transfer. Default `streamWindow` (no growth).
   */
  maxStreamWindow?: number;
  /** The same for the connection window. Default `connectionWindow`. */
  maxConnectionWindow?: number;
}

/**
 * A header block larger than this many times the header list limit, plus one frame of the default
 * size, ends the connection (ENHANCE_YOUR_CALM), whether it comes in one HEADERS frame or continues
 * in CONTINUATION frames: decoding it would cost far more than any list the limit lets through.
 */
const MAX_HEADER_BLOCK_FACTOR = 4;
const MAX_HEADER_BLOCK_SLACK = 16_384;
/** CONTINUATION frames one header block may use (empty ones would otherwise be free to send). */
const MAX_CONTINUATIONS = 256;
/**
 * Resets of unanswered streams by a client, or resets provoked by it: burst size and sustained rate
 * per second before ENHANCE_YOUR_CALM.
 */
const RESET_BURST = 1000;
const RESET_RATE = 500;
/**
 * Replies a peer may provoke (PING and SETTINGS ACKs, RST_STREAM for its bad or refused streams) while
 * it does not read what is already waiting in the socket: beyond this it is cut off.
 */
const MAX_UNREAD_REPLIES = 10_000;

enum ParseState {
  Preface,
  Header,
  Payload,
  Data,
}

const FORBIDDEN_FIELDS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);
const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path", ":protocol"]);
// Field values may not contain NUL, CR or LF, nor start or end with whitespace (RFC 9113, 8.2.1).
const BAD_VALUE = /[\0\r\n]|^[ \t]|[ \t]$/;
const BAD_NAME = /[^!#$%&'*+\-.^_`|~0-9a-z]/;
// NUL, CR, LF, or anything beyond Latin-1 (field values are octets).
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what this rejects.
const BAD_OUTGOING_VALUE = /[\0\r\n]|[^\u0000-\u00ff]/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Characters of an RFC 3986 authority (userinfo, host, port). */
const AUTHORITY_CHARS = /^[A-Za-z0-9\-._~%!$&'()*+,;=:@[\]]+$/;

/**
 * One HTTP/2 connection over an established (TLS) socket. Server side emits `stream`
 * `(stream, headers, tooLarge)`; both sides emit `remoteSettings`, `goaway` `(code, lastStreamId)`,
 * `ping` (a PING from the peer) and finally `close`.
 */
export class Http2Connection extends EventEmitter {
  readonly socket: Duplex;
  readonly role: "client" | "server";
  remoteSettings: H2Settings = defaultSettings();
  /** Why the connection ended, when it was not a clean close. */
  failure: HboneError | undefined;
  /** The peer sent GOAWAY, or we began a graceful close: no new streams. */
  closed = false;
  destroyed = false;
  _sendWindow = DEFAULT_WINDOW;
  _peerMaxFrame = MIN_MAX_FRAME;
  #options: Http2ConnectionOptions;
  #streams = new Map<number, H2Stream>();
  #decoder = new HpackDecoder();
  #nextStreamId: number;
  #lastPeerStreamId = 0;
  #goawaySent = false;
  #connCredit = 0;
  #connRecvWindow = DEFAULT_WINDOW;
  /** The connection window's current size (announced; grows like a stream's). */
  #connWindow: number;
  #maxStreamWindow: number;
  #maxConnWindow: number;
  /**
   * Window probes (BDP estimation, as hyper's adaptive window and gRPC do): a PING is sent while
   * DATA flows, and the DATA bytes received before its ACK are what the peer could send in one round
   * trip. When that is most of a window, the window limits the transfer, and it grows.
   */
  #probing: boolean;
  #probeOut = false;
  #probeEpoch = 0;
  #probeBytes = 0;
  #probeIdleBytes = 0;
  #probeNextAt = 0;
  #probeMinBytes: number;
  #localSettingsAcked = false;
  #sawPeerSettings = false;
  /** Streams that wait for connection window. */
  #blocked = new Set<H2Stream>();
  #drainWaiters: ((err?: Error | null) => void)[] = [];
  #pings = new Map<string, (err: Error | null) => void>();
  #pingSeq = 0;
  // Parser state.
  #state: ParseState;
  #carry: Buffer | undefined;
  #frameLength = 0;
  #frameType = 0;
  #frameFlags = 0;
  #frameStream = 0;
  #payloadParts: Buffer[] = [];
  #payloadLeft = 0;
  #dataStream: H2Stream | undefined;
  #dataLeft = 0;
  #padLeft = 0;
  #needPadLength = false;
  #headerBlock: { streamId: number; flags: number; parts: Buffer[]; size: number } | undefined;
  #closeTimer: NodeJS.Timeout | undefined;
  #closeEmitted = false;
  /** Large DATA frames of this turn of the event loop are held in the corked socket until its end. */
  #batching = false;
  readonly #endBatch = (): void => {
    if (!this.#batching) return;
    this.#batching = false;
    this.socket.uncork();
  };

  constructor(socket: Duplex, options: Http2ConnectionOptions) {
    super();
    this.socket = socket;
    this.role = options.role;
    this.#options = options;
    this.#nextStreamId = options.role === "client" ? 1 : 2;
    this.#state = options.role === "server" ? ParseState.Preface : ParseState.Header;
    this.#connWindow = Math.max(DEFAULT_WINDOW, options.connectionWindow);
    this.#maxStreamWindow = Math.min(
      MAX_WINDOW,
      Math.max(options.streamWindow, options.maxStreamWindow ?? 0),
    );
    this.#maxConnWindow = Math.min(MAX_WINDOW, Math.max(this.#connWindow, options.maxConnectionWindow ?? 0));
    this.#probeMinBytes = Math.min(
      PROBE_MIN_BYTES,
      Math.floor(options.streamWindow / WINDOW_UPDATE_FRACTION),
    );
    this.#probing = this.#maxStreamWindow > options.streamWindow || this.#maxConnWindow > this.#connWindow;
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("drain", () => this.#onDrain());
    socket.on("end", () => this.#onSocketEnd());
    socket.on("error", (err: Error) => this.#fail(toHboneError(err, "HTTP/2 connection")));
    socket.on("close", () => this.#onSocketClose());
    // The socket may have been paused while its first bytes were awaited.
    socket.resume();
    const local: H2Settings = {
      headerTableSize: 4096,
      enablePush: false,
      maxConcurrentStreams: options.role === "server" ? options.maxConcurrentStreams : undefined,
      initialWindowSize: options.streamWindow,
      maxFrameSize: options.maxFrameSize,
      maxHeaderListSize: options.maxHeaderListSize,
    };
    const out: Buffer[] = [];
    if (options.role === "client") out.push(CLIENT_PREFACE);
    out.push(frame(FRAME_SETTINGS, 0, 0, encodeSettings(local)));
    if (options.connectionWindow > DEFAULT_WINDOW) {
      out.push(windowUpdate(0, options.connectionWindow - DEFAULT_WINDOW));
      this.#connRecvWindow = options.connectionWindow;
    }
    this.#write(Buffer.concat(out));
  }

  /** Opens a stream with a request header block (client side). */
  request(fields: readonly (readonly [string, string])[]): H2Stream {
    if (this.destroyed || this.closed) {
      throw new HboneError("ERR_HBONE_CONNECTION", "the HTTP/2 connection is closing");
    }
    const id = this.#nextStreamId;
    if (id > MAX_WINDOW) {
      this.close();
      throw new HboneError("ERR_HBONE_CONNECTION", "the HTTP/2 connection ran out of stream ids");
    }
    this.#nextStreamId += 2;
    const stream = new H2Stream(this, id, this.#options.streamWindow, this.remoteSettings.initialWindowSize);
    this.#streams.set(id, stream);
    stream.headersSent = true;
    this._sendHeaders(id, fields, false);
    return stream;
  }

  /** Sends a PING; `cb` runs with the ACK or with an error if the connection ends first. */
  ping(cb: (err: Error | null) => void): void {
    if (this.destroyed) {
      cb(new HboneError("ERR_HBONE_CONNECTION", "connection closed"));
      return;
    }
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(++this.#pingSeq >>> 0, 4);
    this.#pings.set(payload.toString("hex"), cb);
    this.#write(frame(FRAME_PING, 0, 0, payload));
  }

  /**
   * Graceful close: GOAWAY, no new streams, and the socket closes once every open stream finished.
   */
  close(): void {
    if (this.destroyed) return;
    this.closed = true;
    this.#sendGoaway(H2_ERROR.NO_ERROR, "");
    this.#maybeFinish();
  }

  /**
   * Ends the connection now. With a `code`, a GOAWAY carrying it is flushed first. Open streams
   * close with `err` (or a connection error).
   */
  destroy(err?: HboneError, code?: number): void {
    if (this.destroyed) return;
    if (err !== undefined && this.failure === undefined) this.failure = err;
    if (code !== undefined) this.#sendGoaway(code, err?.message ?? "");
    this.#teardown(code !== undefined);
  }

  // ---- used by H2Stream ----

  _sendHeaders(streamId: number, fields: readonly (readonly [string, string])[], endStream: boolean): void {
    const block = encodeHeaders(fields);
    const max = this._peerMaxFrame;
    const endFlag = endStream ? FLAG_END_STREAM : 0;
    if (block.length <= max) {
      this.#write(frame(FRAME_HEADERS, FLAG_END_HEADERS | endFlag, streamId, block));
      return;
    }
    const frames: Buffer[] = [];
    for (let off = 0; off < block.length; off += max) {
      const last = off + max >= block.length;
      const type = off === 0 ? FRAME_HEADERS : FRAME_CONTINUATION;
      const flags = (off === 0 ? endFlag : 0) | (last ? FLAG_END_HEADERS : 0);
      frames.push(frame(type, flags, streamId, block.subarray(off, off + max)));
    }
    this.#write(Buffer.concat(frames));
  }

  _sendData(streamId: number, payload: Buffer, endStream: boolean): void {
    const flags = endStream ? FLAG_END_STREAM : 0;
    this._sendWindow -= payload.length;
    if (payload.length < 4096) {
      this.#write(frame(FRAME_DATA, flags, streamId, payload));
      return;
    }
    const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
    writeFrameHeader(header, 0, payload.length, FRAME_DATA, flags, streamId);
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return;
    if (!this.#batching) {
      // Bulk data: the frames written until the end of this event-loop turn leave in one TLS write,
      // so TLS records are full and the peer reads (and forwards) fewer, larger pieces.
      this.#batching = true;
      socket.cork();
      setImmediate(this.#endBatch);
    }
    socket.write(header);
    socket.write(payload);
    // A long turn (many reads in a row) leaves in pieces of a few records, not all at its end.
    if (this.#batching && socket.writableLength >= BATCH_FLUSH_BYTES) this.#endBatch();
  }

  _sendReset(streamId: number, code: number): void {
    const payload = Buffer.allocUnsafe(4);
    payload.writeUInt32BE(code);
    this.#write(frame(FRAME_RST_STREAM, 0, streamId, payload));
  }

  _sendWindowUpdate(streamId: number, increment: number): void {
    this.#write(windowUpdate(streamId, increment));
  }

  /** Connection-level consumption: reopens the connection window in quarter-window steps. */
  _consume(n: number): void {
    this.#connCredit += n;
    if (this.#connCredit >= this.#connWindow / WINDOW_UPDATE_FRACTION && !this.destroyed) {
      this.#connRecvWindow += this.#connCredit;
      this.#write(windowUpdate(0, this.#connCredit));
      this.#connCredit = 0;
    }
  }

  /** Runs a write callback now, or after the socket drained if it is over its high-water mark. */
  _afterWrite(cb: (err?: Error | null) => void): void {
    if (this.socket.writableNeedDrain) this.#drainWaiters.push(cb);
    else cb();
  }

  _streamClosed(stream: H2Stream): void {
    this.#streams.delete(stream.id);
    this.#blocked.delete(stream);
    if (this.#dataStream === stream) this.#dataStream = undefined;
    this.#maybeFinish();
  }

  // ---- writing ----

  #write(buf: Buffer): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(buf);
  }

  #sendGoaway(code: number, debug: string): void {
    if (this.#goawaySent && code === H2_ERROR.NO_ERROR) return;
    this.#goawaySent = true;
    const text = Buffer.from(debug.slice(0, 256), "latin1");
    const payload = Buffer.allocUnsafe(8 + text.length);
    payload.writeUInt32BE(this.#lastPeerStreamId, 0);
    payload.writeUInt32BE(code, 4);
    text.copy(payload, 8);
    this.#write(frame(FRAME_GOAWAY, 0, 0, payload));
  }

  #onDrain(): void {
    this.#unreadReplies = 0;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const cb of waiters) cb();
  }

  #flushBlocked(): void {
    for (const stream of this.#blocked) {
      if (this._sendWindow <= 0) return;
      this.#blocked.delete(stream);
      if (stream._flush()) this.#blocked.add(stream);
    }
  }

  // ---- closing ----

  #maybeFinish(): void {
    if (!this.closed || this.destroyed || this.#streams.size > 0) return;
    // Nothing left to carry: end our side; the peer closes its side in turn.
    this.destroyed = true;
    this.#failStreams(undefined);
    this.socket.end();
    this.#closeTimer = setTimeout(() => this.socket.destroy(), 2000);
    this.#closeTimer.unref();
  }

  #teardown(flush: boolean): void {
    this.destroyed = true;
    this.closed = true;
    this.#failStreams(this.failure ?? new HboneError("ERR_HBONE_CONNECTION", "HTTP/2 connection closed"));
    if (flush && !this.socket.destroyed) {
      this.socket.end();
      this.#closeTimer = setTimeout(() => this.socket.destroy(), 1000);
      this.#closeTimer.unref();
    } else {
      this.socket.destroy();
    }
  }

  #failStreams(err: HboneError | undefined): void {
    const failure = err ?? new HboneError("ERR_HBONE_CONNECTION", "HTTP/2 connection closed");
    for (const stream of [...this.#streams.values()]) stream._close(H2_ERROR.NO_ERROR, failure);
    for (const cb of this.#pings.values()) cb(failure);
    this.#pings.clear();
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const cb of waiters) cb(failure);
  }

  #fail(err: HboneError): void {
    if (this.failure === undefined) this.failure = err;
    if (!this.destroyed) this.#teardown(false);
  }

  #onSocketEnd(): void {
    if (this.destroyed) return;
    if (this.#streams.size > 0) {
      this.#fail(new HboneError("ERR_HBONE_CONNECTION", "the peer closed the connection"));
    } else {
      this.closed = true;
      this.#teardown(true);
    }
  }

  #onSocketClose(): void {
    clearTimeout(this.#closeTimer);
    if (!this.destroyed) {
      this.#fail(new HboneError("ERR_HBONE_CONNECTION", "the connection closed"));
    }
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.emit("close");
  }

  #connectionError(code: number, message: string): void {
    const err = new HboneError("ERR_HBONE_PROTOCOL", `HTTP/2 ${http2ErrorName(code)}: ${message}`, {
      goawayCode: code,
    });
    this.destroy(err, code);
  }

  // ---- reading ----

  #onData(input: Buffer): void {
    try {
      const carry = this.#carry;
      if (carry === undefined) {
        this.#parse(input, 0);
        return;
      }
      // A frame header (or the preface) split across reads: complete just that part, so the
      // payload after it is still sliced from the socket's buffer rather than copied.
      this.#carry = undefined;
      const need =
        (this.#state === ParseState.Preface ? CLIENT_PREFACE.length : FRAME_HEADER_BYTES) - carry.length;
      if (input.length <= need) {
        this.#parse(Buffer.concat([carry, input]), 0);
        return;
      }
      this.#parse(Buffer.concat([carry, input.subarray(0, need)]), 0);
      this.#parse(input, need);
    } catch (err) {
      if (err instanceof ConnectionError) this.#connectionError(err.h2Code, err.message);
      else if (err instanceof HpackError) this.#connectionError(H2_ERROR.COMPRESSION_ERROR, err.message);
      else {
        // An exception from application code run by an event (a 'data' listener, the tunnel
        // handler): end this connection and let it surface as Node would.
        this.#connectionError(H2_ERROR.INTERNAL_ERROR, (err as Error)?.message ?? String(err));
        throw err;
      }
    }
  }

  #parse(chunk: Buffer, start: number): void {
    let off = start;
    const length = chunk.length;
    while (off < length && !this.destroyed) {
      switch (this.#state) {
        case ParseState.Preface: {
          if (length - off < CLIENT_PREFACE.length) {
            if (!CLIENT_PREFACE.subarray(0, length - off).equals(chunk.subarray(off))) {
              throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "bad connection preface");
            }
            this.#carry = chunk.subarray(off);
            return;
          }
          if (!CLIENT_PREFACE.equals(chunk.subarray(off, off + CLIENT_PREFACE.length))) {
            throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "bad connection preface");
          }
          off += CLIENT_PREFACE.length;
          this.#state = ParseState.Header;
          break;
        }
        case ParseState.Header: {
          if (length - off < FRAME_HEADER_BYTES) {
            this.#carry = chunk.subarray(off);
            return;
          }
          const frameLength =
            ((chunk[off] as number) << 16) | ((chunk[off + 1] as number) << 8) | (chunk[off + 2] as number);
          this.#frameLength = frameLength;
          this.#frameType = chunk[off + 3] as number;
          this.#frameFlags = chunk[off + 4] as number;
          this.#frameStream = chunk.readUInt32BE(off + 5) & MAX_WINDOW;
          off += FRAME_HEADER_BYTES;
          this.#beginFrame();
          break;
        }
        case ParseState.Payload: {
          const take = Math.min(this.#payloadLeft, length - off);
          this.#payloadParts.push(chunk.subarray(off, off + take));
          off += take;
          this.#payloadLeft -= take;
          if (this.#payloadLeft === 0) {
            const parts = this.#payloadParts;
            this.#payloadParts = [];
            this.#state = ParseState.Header;
            this.#onFrame(parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts));
          }
          break;
        }
        case ParseState.Data: {
          if (this.#needPadLength) {
            const pad = chunk[off++] as number;
            this.#needPadLength = false;
            if (pad >= this.#frameLength)
              throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "padding longer than the frame");
            this.#dataLeft = this.#frameLength - 1 - pad;
            this.#padLeft = pad;
            this.#padTotal = pad + 1;
          } else if (this.#dataLeft > 0) {
            const take = Math.min(this.#dataLeft, length - off);
            const slice = off === 0 && take === length ? chunk : chunk.subarray(off, off + take);
            off += take;
            this.#dataLeft -= take;
            const stream = this.#dataStream;
            if (stream !== undefined) stream._receiveData(slice);
            else this._consume(take);
          } else {
            const skip = Math.min(this.#padLeft, length - off);
            off += skip;
            this.#padLeft -= skip;
          }
          if (this.#dataLeft === 0 && this.#padLeft === 0 && !this.#needPadLength) this.#endData();
          break;
        }
      }
    }
  }

  #beginFrame(): void {
    const type = this.#frameType;
    const length = this.#frameLength;
    if (length > this.#options.maxFrameSize) {
      throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, `frame of ${length} bytes is over the limit`);
    }
    if (this.#headerBlock !== undefined && type !== FRAME_CONTINUATION) {
      throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "header block interrupted by another frame");
    }
    if (!this.#sawPeerSettings && type !== FRAME_SETTINGS) {
      throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "the first frame must be SETTINGS");
    }
    if (type === FRAME_DATA) {
      this.#beginData();
      return;
    }
    if (length === 0) {
      this.#state = ParseState.Header;
      this.#onFrame(EMPTY);
      return;
    }
    this.#payloadLeft = length;
    this.#state = ParseState.Payload;
  }

  #beginData(): void {
    const id = this.#frameStream;
    const length = this.#frameLength;
    if (id === 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "DATA on stream 0");
    if (length > this.#connRecvWindow) {
      throw new ConnectionError(H2_ERROR.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    }
    this.#connRecvWindow -= length;
    const padded = (this.#frameFlags & FLAG_PADDED) !== 0;
    this.#needPadLength = padded;
    this.#dataLeft = padded ? 0 : length;
    this.#padLeft = 0;
    this.#padTotal = 0;
    if (padded && length === 0)
      throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "padded DATA without padding length");
    let stream = this.#streams.get(id);
    if (stream === undefined) {
      this.#checkNotIdle(id, "DATA");
    } else if (stream.remoteEnded) {
      this.#resetFor(stream, id, H2_ERROR.STREAM_CLOSED);
      stream = undefined;
    } else if (this.role === "client" && !stream.responded) {
      // A response is its HEADERS first (RFC 9113 8.1): DATA before them makes it malformed.
      this.#resetFor(stream, id, H2_ERROR.PROTOCOL_ERROR);
      stream = undefined;
    } else if (length > stream.recvWindow + this.#preAckSlack()) {
      this.#resetFor(stream, id, H2_ERROR.FLOW_CONTROL_ERROR);
      stream = undefined;
    } else {
      stream.recvWindow -= length;
      if (this.#probing && length > 0) this.#probe(stream, length);
    }
    this.#dataStream = stream;
    this.#state = ParseState.Data;
    if (length === 0) this.#endData();
  }

  #endData(): void {
    this.#state = ParseState.Header;
    const stream = this.#dataStream;
    this.#dataStream = undefined;
    // The padding (and its length octet) is flow-controlled but carries nothing: give it back now.
    const overhead = this.#padTotal;
    if (stream === undefined) {
      // Payload of a closed stream was already counted as consumed; only padding remains.
      if (overhead > 0) this._consume(overhead);
      return;
    }
    if (overhead > 0) stream._credit(overhead);
    if (this.#frameFlags & FLAG_END_STREAM) stream._receiveEnd();
  }

  /** Padding octets (and the pad length octet) of the current DATA frame. */
  #padTotal = 0;

  /** Counts a DATA frame for the window probe out, or starts one once enough data flowed. */
  #probe(stream: H2Stream, length: number): void {
    if (this.#probeOut) {
      this.#probeBytes += length;
      stream._probeCount(this.#probeEpoch, length);
      return;
    }
    this.#probeIdleBytes += length;
    if (this.#probeIdleBytes < this.#probeMinBytes) return;
    const now = performance.now();
    if (now < this.#probeNextAt) return;
    this.#probeOut = true;
    this.#probeIdleBytes = 0;
    this.#probeBytes = 0;
    const epoch = ++this.#probeEpoch;
    this.ping((err) => this.#probed(epoch, err));
  }

  /** A window probe's ACK: grows the windows that limited what arrived in that round trip. */
  #probed(epoch: number, err: Error | null): void {
    this.#probeOut = false;
    this.#probeNextAt = performance.now() + PROBE_INTERVAL_MS;
    if (err !== null || this.destroyed) return;
    const bytes = this.#probeBytes;
    const window = this.#connWindow;
    const unconsumed = window - this.#connRecvWindow - this.#connCredit;
    if (
      window < this.#maxConnWindow &&
      bytes * 3 >= window * 2 &&
      unconsumed <= window / WINDOW_UPDATE_FRACTION
    ) {
      const grow = Math.min(this.#maxConnWindow, 2 * bytes) - window;
      if (grow > 0) {
        this.#connWindow += grow;
        this.#connRecvWindow += grow;
        this.#write(windowUpdate(0, grow));
      }
    }
    for (const stream of this.#streams.values()) stream._probed(epoch, this.#maxStreamWindow);
  }

  /**
   * Until the peer acknowledged our SETTINGS it may still assume the default stream window; when
   * ours is smaller, the difference is tolerated.
   */
  #preAckSlack(): number {
    return this.#localSettingsAcked ? 0 : Math.max(0, DEFAULT_WINDOW - this.#options.streamWindow);
  }

  #checkNotIdle(id: number, what: string): void {
    const peerInitiated = this.role === "server" ? id % 2 === 1 : id % 2 === 0;
    const idle = peerInitiated ? id > this.#lastPeerStreamId : id >= this.#nextStreamId;
    if (idle) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, `${what} on idle stream ${id}`);
  }

  #onFrame(payload: Buffer): void {
    const id = this.#frameStream;
    const flags = this.#frameFlags;
    switch (this.#frameType) {
      case FRAME_HEADERS:
        this.#onHeaders(id, flags, payload);
        return;
      case FRAME_CONTINUATION:
        this.#onContinuation(id, flags, payload);
        return;
      case FRAME_SETTINGS:
        this.#onSettings(id, flags, payload);
        return;
      case FRAME_WINDOW_UPDATE:
        this.#onWindowUpdate(id, payload);
        return;
      case FRAME_PING:
        this.#onPing(id, flags, payload);
        return;
      case FRAME_RST_STREAM:
        this.#onReset(id, payload);
        return;
      case FRAME_GOAWAY:
        this.#onGoaway(id, payload);
        return;
      case FRAME_PRIORITY:
        if (id === 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "PRIORITY on stream 0");
        if (payload.length !== 5 && this.#streams.has(id))
          this.#resetFor(this.#streams.get(id), id, H2_ERROR.FRAME_SIZE_ERROR);
        return;
      case FRAME_PUSH_PROMISE:
        throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "PUSH_PROMISE although push is disabled");
      default:
        // Unknown frame types are ignored (RFC 9113, 4.1).
        return;
    }
  }

  #onSettings(id: number, flags: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "SETTINGS on a stream");
    if (flags & FLAG_ACK) {
      if (payload.length !== 0)
        throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      this.#localSettingsAcked = true;
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "SETTINGS length");
    const s = this.remoteSettings;
    let windowDelta = 0;
    for (let off = 0; off < payload.length; off += 6) {
      const key = payload.readUInt16BE(off);
      const value = payload.readUInt32BE(off + 2);
      switch (key) {
        case SETTINGS_HEADER_TABLE_SIZE:
          s.headerTableSize = value;
          break;
        case SETTINGS_ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1");
          s.enablePush = value === 1;
          break;
        case SETTINGS_MAX_CONCURRENT_STREAMS:
          s.maxConcurrentStreams = value;
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE:
          if (value > MAX_WINDOW)
            throw new ConnectionError(H2_ERROR.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large");
          windowDelta += value - s.initialWindowSize;
          s.initialWindowSize = value;
          break;
        case SETTINGS_MAX_FRAME_SIZE:
          if (value < 16_384 || value > MAX_MAX_FRAME)
            throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
          s.maxFrameSize = value;
          this._peerMaxFrame = value;
          break;
        case SETTINGS_MAX_HEADER_LIST_SIZE:
          s.maxHeaderListSize = value;
          break;
        default:
          break; // unknown settings are ignored
      }
    }
    this.#countReply();
    this.#write(frame(FRAME_SETTINGS, FLAG_ACK, 0));
    this.#sawPeerSettings = true;
    if (windowDelta !== 0) {
      for (const stream of this.#streams.values()) {
        stream.sendWindow += windowDelta;
        if (stream.sendWindow > MAX_WINDOW)
          throw new ConnectionError(H2_ERROR.FLOW_CONTROL_ERROR, "stream window overflow after SETTINGS");
      }
      if (windowDelta > 0) for (const stream of [...this.#streams.values()]) this._flushStream(stream);
    }
    this.emit("remoteSettings", s);
  }

  /** Whether the first SETTINGS of the peer arrived. */
  get sawPeerSettings(): boolean {
    return this.#sawPeerSettings;
  }

  #unreadReplies = 0;
  /**
   * Counts a reply the peer provoked. While the socket is backed up (the peer is not reading), replies
   * pile up in memory; past {@link MAX_UNREAD_REPLIES} the connection ends with ENHANCE_YOUR_CALM.
   */
  #countReply(): void {
    if (!this.socket.writableNeedDrain) {
      this.#unreadReplies = 0;
      return;
    }
    if (++this.#unreadReplies > MAX_UNREAD_REPLIES) {
      throw new ConnectionError(
        H2_ERROR.ENHANCE_YOUR_CALM,
        "the peer provokes replies but does not read them",
      );
    }
  }

  /**
   * A reset the peer provoked (a bad or refused stream), counted as a reply. On the server it also
   * draws on the reset budget: a client that makes the server reset its streams (a WINDOW_UPDATE of
   * 0, DATA past the window or after END_STREAM, ...) frees each stream's slot as fast as one that
   * resets them itself ("MadeYouReset").
   */
  #resetFor(stream: H2Stream | undefined, id: number, code: number): void {
    this.#countReply();
    if (this.role === "server") this.#limitResets();
    if (stream !== undefined) stream.reset(code);
    else this._sendReset(id, code);
  }

  /** Sends what a stream's queue and the windows allow; remembers it if the connection window ran out. */
  _flushStream(stream: H2Stream): void {
    if (stream._flush()) this.#blocked.add(stream);
  }

  #onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "WINDOW_UPDATE length");
    const increment = payload.readUInt32BE(0) & MAX_WINDOW;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      this._sendWindow += increment;
      if (this._sendWindow > MAX_WINDOW)
        throw new ConnectionError(H2_ERROR.FLOW_CONTROL_ERROR, "connection window overflow");
      this.#flushBlocked();
      return;
    }
    const stream = this.#streams.get(id);
    if (stream === undefined) {
      this.#checkNotIdle(id, "WINDOW_UPDATE");
      return;
    }
    if (increment === 0) {
      this.#resetFor(stream, id, H2_ERROR.PROTOCOL_ERROR);
      return;
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      this.#resetFor(stream, id, H2_ERROR.FLOW_CONTROL_ERROR);
      return;
    }
    this._flushStream(stream);
  }

  #onPing(id: number, flags: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "PING on a stream");
    if (payload.length !== 8) throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "PING length");
    if (flags & FLAG_ACK) {
      const key = payload.toString("hex");
      const cb = this.#pings.get(key);
      this.#pings.delete(key);
      cb?.(null);
      return;
    }
    this.#countReply();
    this.#write(frame(FRAME_PING, FLAG_ACK, 0, payload));
    this.emit("ping", payload);
  }

  #onReset(id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (payload.length !== 4) throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "RST_STREAM length");
    const stream = this.#streams.get(id);
    if (stream === undefined) {
      this.#checkNotIdle(id, "RST_STREAM");
      return;
    }
    // Only a stream reset before the server answered it is the rapid-reset pattern (the server worked
    // on it, a dial for HBONE, and the client did not wait): a tunnel reset once established is a
    // client going away, which busy proxies see hundreds of times a second.
    if (this.role === "server" && !stream.headersSent) this.#limitResets();
    stream._close(payload.readUInt32BE(0), undefined);
  }

  /**
   * Streams the client opens and resets before the server answered them cost the server work each
   * (the "rapid reset" attack), and so do streams it makes the server reset: a token bucket shared by
   * both allows bursts of {@link RESET_BURST} and {@link RESET_RATE} per second. Resets of answered
   * streams are not counted.
   */
  #resetTokens = RESET_BURST;
  #resetRefilled = Date.now();
  #limitResets(): void {
    const now = Date.now();
    this.#resetTokens = Math.min(
      RESET_BURST,
      this.#resetTokens + ((now - this.#resetRefilled) * RESET_RATE) / 1000,
    );
    this.#resetRefilled = now;
    this.#resetTokens -= 1;
    if (this.#resetTokens < 0)
      throw new ConnectionError(H2_ERROR.ENHANCE_YOUR_CALM, "too many stream resets");
  }

  #onGoaway(id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "GOAWAY on a stream");
    if (payload.length < 8) throw new ConnectionError(H2_ERROR.FRAME_SIZE_ERROR, "GOAWAY length");
    const last = payload.readUInt32BE(0) & MAX_WINDOW;
    const code = payload.readUInt32BE(4);
    this.closed = true;
    if (code !== H2_ERROR.NO_ERROR && this.failure === undefined) {
      // The code stays on the error the remaining streams end with: a tunnel cut by a peer that gave
      // up on the connection failed, unlike one whose connection merely closed.
      this.failure = new HboneError(
        code === H2_ERROR.INADEQUATE_SECURITY ? "ERR_HBONE_IDENTITY" : "ERR_HBONE_CONNECTION",
        code === H2_ERROR.INADEQUATE_SECURITY
          ? "the peer refused this side's identity (GOAWAY INADEQUATE_SECURITY)"
          : `the peer closed the connection (GOAWAY ${http2ErrorName(code)})`,
        { goawayCode: code },
      );
    }
    this.emit("goaway", code, last);
    // Streams we opened above the peer's last processed id were never seen: they may be retried.
    for (const stream of [...this.#streams.values()]) {
      const ours = this.role === "client" ? stream.id % 2 === 1 : stream.id % 2 === 0;
      if (ours && stream.id > last) stream._close(H2_ERROR.REFUSED_STREAM, undefined);
    }
    this.#maybeFinish();
  }

  #onHeaders(id: number, flags: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "HEADERS on stream 0");
    let start = 0;
    let end = payload.length;
    if (flags & FLAG_PADDED) {
      const pad = payload[0] as number;
      start = 1;
      end -= pad;
    }
    if (flags & FLAG_PRIORITY) start += 5;
    if (start > end)
      throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "HEADERS padding or priority too long");
    const fragment = payload.subarray(start, end);
    this.#checkHeaderBlock(fragment.length, 0);
    if (flags & FLAG_END_HEADERS) {
      this.#onHeaderBlock(id, flags, fragment);
      return;
    }
    this.#headerBlock = { streamId: id, flags, parts: [Buffer.from(fragment)], size: fragment.length };
  }

  #onContinuation(id: number, flags: number, payload: Buffer): void {
    const block = this.#headerBlock;
    if (block === undefined || block.streamId !== id) {
      throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "unexpected CONTINUATION");
    }
    block.size += payload.length;
    this.#checkHeaderBlock(block.size, block.parts.length);
    block.parts.push(Buffer.from(payload));
    if (flags & FLAG_END_HEADERS) {
      this.#headerBlock = undefined;
      this.#onHeaderBlock(id, block.flags, Buffer.concat(block.parts));
    }
  }

  /**
   * Ends the connection when a header block is too large: `size` octets so far, the last of them in
   * its `continuation`th CONTINUATION frame (0: in the HEADERS frame).
   */
  #checkHeaderBlock(size: number, continuation: number): void {
    if (
      size > this.#options.maxHeaderListSize * MAX_HEADER_BLOCK_FACTOR + MAX_HEADER_BLOCK_SLACK ||
      continuation >= MAX_CONTINUATIONS
    ) {
      throw new ConnectionError(H2_ERROR.ENHANCE_YOUR_CALM, "header block too large");
    }
  }

  #onHeaderBlock(id: number, flags: number, block: Buffer): void {
    const limit = this.#options.maxHeaderListSize;
    const { fields, listSize } = this.#decoder.decode(block, limit);
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    const stream = this.#streams.get(id);
    if (this.role === "server") {
      if (stream !== undefined) {
        // Trailers: allowed only to end the stream; their content means nothing to a tunnel.
        if (!endStream) this.#resetFor(stream, id, H2_ERROR.PROTOCOL_ERROR);
        else stream._receiveEnd();
        return;
      }
      if (id % 2 === 0) throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, `client opened even stream ${id}`);
      if (id <= this.#lastPeerStreamId)
        throw new ConnectionError(H2_ERROR.STREAM_CLOSED, `HEADERS on closed stream ${id}`);
      this.#lastPeerStreamId = id;
      if (this.#goawaySent || this.closed) {
        this.#resetFor(undefined, id, H2_ERROR.REFUSED_STREAM);
        return;
      }
      const max = this.#options.maxConcurrentStreams;
      if (max !== undefined && this.#streams.size >= max) {
        this.#resetFor(undefined, id, H2_ERROR.REFUSED_STREAM);
        return;
      }
      const tooLarge = listSize > limit;
      const headers = tooLarge ? undefined : toHeaders(fields, "request");
      const opened = new H2Stream(
        this,
        id,
        this.#options.streamWindow,
        this.remoteSettings.initialWindowSize,
      );
      this.#streams.set(id, opened);
      if (!tooLarge && headers === undefined) {
        this.#resetFor(opened, id, H2_ERROR.PROTOCOL_ERROR);
        return;
      }
      // A request that ends with its headers: the EOF waits in the stream for whoever attaches.
      if (endStream) opened._receiveEnd();
      this.emit("stream", opened, headers ?? {}, tooLarge);
      return;
    }
    // Client side.
    if (stream === undefined) {
      if (id % 2 === 0)
        throw new ConnectionError(H2_ERROR.PROTOCOL_ERROR, "HEADERS on a stream the server opened");
      this.#checkNotIdle(id, "HEADERS");
      return;
    }
    if (stream.responded) {
      if (!endStream) this.#resetFor(stream, id, H2_ERROR.PROTOCOL_ERROR);
      else stream._receiveEnd();
      return;
    }
    const headers = listSize > limit ? undefined : toHeaders(fields, "response");
    if (headers === undefined) {
      this.#resetFor(stream, id, H2_ERROR.PROTOCOL_ERROR);
      return;
    }
    const status = Number(headers[":status"]);
    if (status >= 100 && status < 200) {
      if (endStream) this.#resetFor(stream, id, H2_ERROR.PROTOCOL_ERROR);
      return;
    }
    stream.responded = true;
    stream.onResponse?.(headers, endStream);
    if (endStream) stream._receiveEnd();
  }
}

/**
 * Header fields to send, from a record: names lower-cased; a name that is not a token or a value
 * with NUL, CR or LF throws ERR_HBONE_INVALID_ARGUMENT.
 */
export function outgoingFields(
  headers: Readonly<Record<string, string | number>>,
  pseudo: readonly (readonly [string, string])[],
): [string, string][] {
  const fields: [string, string][] = pseudo.map(([n, v]) => [n, v]);
  for (const [rawName, rawValue] of Object.entries(headers)) {
    const name = rawName.toLowerCase();
    const value = String(rawValue);
    if (name.length === 0 || BAD_NAME.test(name) || FORBIDDEN_FIELDS.has(name)) {
      throw new HboneError(
        "ERR_HBONE_INVALID_ARGUMENT",
        `header name ${JSON.stringify(rawName)} cannot be sent`,
      );
    }
    if (BAD_OUTGOING_VALUE.test(value)) {
      throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `header ${name} has a value that cannot be sent`);
    }
    fields.push([name, value.trim()]);
  }
  return fields;
}

function windowUpdate(streamId: number, increment: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(increment);
  return frame(FRAME_WINDOW_UPDATE, 0, streamId, payload);
}

/**
 * Checks a header list against HTTP/2's rules for requests or responses (RFC 9113, 8.2-8.3) and
 * builds the header object; `undefined` when the message is malformed.
 */
function toHeaders(fields: readonly [string, string][], kind: "request" | "response"): H2Headers | undefined {
  const headers: H2Headers = {};
  let regular = false;
  for (const [name, value] of fields) {
    if (BAD_VALUE.test(value)) return undefined;
    if (name.startsWith(":")) {
      if (regular || headers[name] !== undefined) return undefined;
      if (kind === "request" ? !REQUEST_PSEUDO.has(name) : name !== ":status") return undefined;
      headers[name] = value;
      continue;
    }
    regular = true;
    if (name.length === 0 || BAD_NAME.test(name) || FORBIDDEN_FIELDS.has(name)) return undefined;
    if (name === "te" && value !== "trailers") return undefined;
    // Own fields only: a field named like an Object member (`constructor`) is no repeat.
    const previous = Object.hasOwn(headers, name) ? headers[name] : undefined;
    if (previous === undefined) headers[name] = name === "set-cookie" ? [value] : value;
    else if (Array.isArray(previous)) previous.push(value);
    else headers[name] = `${previous}${name === "cookie" ? "; " : ", "}${value}`;
  }
  if (kind === "response") return /^[1-5]\d\d$/.test(String(headers[":status"])) ? headers : undefined;
  const method = headers[":method"];
  if (method === undefined || !TOKEN.test(String(method))) return undefined;
  const authority = headers[":authority"];
  if (authority !== undefined && !AUTHORITY_CHARS.test(String(authority))) return undefined;
  if (method === "CONNECT" && headers[":protocol"] === undefined) {
    if (
      headers[":authority"] === undefined ||
      headers[":scheme"] !== undefined ||
      headers[":path"] !== undefined
    ) {
      return undefined;
    }
  } else if (headers[":scheme"] === undefined || headers[":path"] === undefined) {
    return undefined;
  }
  return headers;
}
