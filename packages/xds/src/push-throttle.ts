// The bound on response bytes handed to gRPC and not yet taken by their clients, over every stream of
// a server (or of several servers sharing one throttle). grpc-js frames every response into a copy of
// its own, so pushing the whole state to every stream at once holds streams times state size; under
// the bound, streams take turns instead, in the order they came.
import { XdsError } from "./errors.js";

/** One response written to a stream: counted toward the total until its client takes it or it stalls. */
export interface InFlightResponse {
  readonly bytes: number;
  readonly at: number;
  counted: boolean;
}

/** Options of a {@link PushThrottle}. */
export interface PushThrottleOptions<S> {
  /** Total bytes in flight at which further responses wait. */
  maxBytes: number;
  /** How long a response not taken counts toward the total. */
  stalledMs: number;
  /**
   * Called, in the order they were refused, for streams that may write again. Returns true when the
   * stream takes its turn later (a request waits to be answered): no other stream goes through until
   * it has asked again with {@link PushThrottle.mayWrite}, so the turn is not given out twice.
   */
  admit: (stream: S) => boolean;
  /** Called with how long (ms) a stream waited, each time one is let through. */
  waited?: (ms: number, stream: S) => void;
  /** Clock in ms; default `performance.now`. */
  now?: () => number;
}

/**
 * Counts the bytes of responses in flight over every stream and queues the streams refused a write
 * while the count is at or above the bound. Each response goes out whole, so the count may pass the
 * bound by one response; a response whose client has not taken it within `stalledMs` stops counting,
 * so a client that stopped reading holds back no one for longer than that.
 */
export class PushThrottle<S> {
  readonly #maxBytes: number;
  readonly #stalledMs: number;
  readonly #admit: (stream: S) => boolean;
  readonly #waited: ((ms: number, stream: S) => void) | undefined;
  readonly #now: () => number;
  /** Streams refused a write, in the order they were refused (a Map keeps insertion order), and since when. */
  readonly #waiting = new Map<S, number>();
  /** The stream given a turn it takes later, until it asks again. */
  #holder: S | undefined;
  /** Counted responses in the order they were written, from `#head` on; taken ones are skipped. */
  #responses: InFlightResponse[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;
  #total = 0;
  #peak = 0;

  constructor(options: PushThrottleOptions<S>) {
    this.#maxBytes = options.maxBytes;
    this.#stalledMs = options.stalledMs;
    this.#admit = options.admit;
    this.#waited = options.waited;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Bytes of the responses counted now. */
  get bytes(): number {
    return this.#total;
  }

  /** Highest {@link PushThrottle.bytes} so far. */
  get peakBytes(): number {
    return this.#peak;
  }

  /** Streams waiting for their turn. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** True when `stream` may write a response now; otherwise it joins the queue (once) and false. */
  mayWrite(stream: S): boolean {
    if (this.#holder === stream) {
      this.#holder = undefined;
      // The next stream's turn once this one has written: it writes before the loop turns (a
      // microtask could run first, between the check and the write).
      setImmediate(() => this.#admitWaiting());
    }
    if (this.#holder === undefined && this.#total < this.#maxBytes) {
      this.#waiting.delete(stream);
      return true;
    }
    if (!this.#waiting.has(stream)) this.#waiting.set(stream, this.#now());
    this.#arm();
    return false;
  }

  /** Counts a response of `bytes` written now. */
  sent(bytes: number): InFlightResponse {
    // Also where stalled responses stop counting when no stream waits, so the list stays short.
    this.#uncountStalled();
    const response: InFlightResponse = { bytes, at: this.#now(), counted: true };
    this.#responses.push(response);
    this.#total += bytes;
    if (this.#total > this.#peak) this.#peak = this.#total;
    return response;
  }

  /** The client took `response` (or its stream ended): it no longer counts. Idempotent. */
  taken(response: InFlightResponse): void {
    if (!response.counted) return;
    response.counted = false;
    this.#total -= response.bytes;
    if (this.#responses[this.#head] === response) this.#oldest();
    this.#admitWaiting();
  }

  /** The stream ended: it leaves the queue. */
  forget(stream: S): void {
    this.#waiting.delete(stream);
    if (this.#holder === stream) {
      this.#holder = undefined;
      this.#admitWaiting();
    }
  }

  /** Stops the stall timer and empties the queue. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#waiting.clear();
    this.#holder = undefined;
  }

  #admitWaiting(): void {
    if (this.#waiting.size === 0 || this.#total >= this.#maxBytes || this.#holder !== undefined) return;
    for (const [stream, since] of [...this.#waiting]) {
      if (this.#total >= this.#maxBytes) break;
      // Taken off before the call: a stream refused again inside `admit` goes to the back.
      this.#waiting.delete(stream);
      this.#waited?.(this.#now() - since, stream);
      if (this.#admit(stream)) {
        this.#holder = stream;
        break;
      }
    }
    this.#arm();
  }

  /** The oldest counted response, dropping the taken ones before it. */
  #oldest(): InFlightResponse | undefined {
    const list = this.#responses;
    while (this.#head < list.length && !(list[this.#head] as InFlightResponse).counted) this.#head++;
    if (this.#head > 1024 && this.#head * 2 > list.length) {
      this.#responses = list.slice(this.#head);
      this.#head = 0;
    }
    return this.#responses[this.#head];
  }

  /** Keeps a timer for the next stall while streams wait on counted bytes. */
  #arm(): void {
    if (this.#waiting.size === 0 || this.#total < this.#maxBytes) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      return;
    }
    if (this.#timer !== undefined) return;
    const oldest = this.#oldest();
    if (oldest === undefined) return;
    const delay = Math.max(0, oldest.at + this.#stalledMs - this.#now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#expire();
    }, delay);
    this.#timer.unref();
  }

  /** Stops counting every response older than `stalledMs`. */
  #uncountStalled(): void {
    const cutoff = this.#now() - this.#stalledMs;
    for (let oldest = this.#oldest(); oldest !== undefined && oldest.at <= cutoff; oldest = this.#oldest()) {
      oldest.counted = false;
      this.#total -= oldest.bytes;
    }
  }

  /** The stall timer: stalled responses stop counting and waiting streams go through. */
  #expire(): void {
    this.#uncountStalled();
    this.#admitWaiting();
    this.#arm();
  }
}

/**
 * A limit option: a number above 0 (`Infinity` where `infinite`), or its default when absent. A zero,
 * negative or NaN bound would hold every stream forever, so it is refused.
 */
export function limitOption(
  name: string,
  value: number | undefined,
  fallback: number,
  infinite = false,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !(value > 0) || (!infinite && !Number.isFinite(value))) {
    throw new XdsError(
      "ERR_XDS_INVALID_ARGUMENT",
      `${name} must be a ${infinite ? "" : "finite "}number above 0, got ${String(value)}`,
    );
  }
  return value;
}

/** @internal A stream as an {@link XdsPushThrottle} sees it, whichever server it belongs to. */
export interface ThrottledStream {
  /** Its turn came: true when it takes it later (see {@link PushThrottleOptions.admit}). */
  takeTurn(): boolean;
  /** It waited `ms` for its turn (its server's `pilot_proxy_queue_time`). */
  waited(ms: number): void;
}

/** Options of {@link createXdsPushThrottle}. */
export interface XdsPushThrottleOptions {
  /**
   * Response bytes the streams together may hold that their clients have not taken yet before a
   * stream's next response waits its turn: default 16 MiB. Above 0; `Infinity` for no bound.
   */
  maxTotalBufferedBytes?: number;
  /** How long a response counts toward the bound while its client does not take it: default 5000 ms. */
  stalledResponseMs?: number;
}

/**
 * The bound on unsent response bytes that {@link XdsServer}s count their streams against. Each server
 * makes its own unless given one (`pushThrottle`); servers given the same one share the bound and one
 * queue, in the order their streams came, e.g. a TLS port and a plaintext debug port on one cache.
 */
export class XdsPushThrottle {
  /** @internal */
  readonly inner: PushThrottle<ThrottledStream>;

  constructor(options: XdsPushThrottleOptions = {}) {
    this.inner = new PushThrottle<ThrottledStream>({
      maxBytes: limitOption("maxTotalBufferedBytes", options.maxTotalBufferedBytes, 16 * 1024 * 1024, true),
      stalledMs: limitOption("stalledResponseMs", options.stalledResponseMs, 5000),
      admit: (stream) => stream.takeTurn(),
      waited: (ms, stream) => stream.waited(ms),
    });
  }

  /** Response bytes counted toward the bound now. */
  get bufferedBytes(): number {
    return this.inner.bytes;
  }

  /** Highest {@link XdsPushThrottle.bufferedBytes} so far. */
  get peakBufferedBytes(): number {
    return this.inner.peakBytes;
  }

  /** Streams waiting for their turn, over every server that uses this throttle. */
  get waiting(): number {
    return this.inner.waiting;
  }
}

/** A push throttle to share between servers (`createXdsServer({ pushThrottle })`). */
export function createXdsPushThrottle(options: XdsPushThrottleOptions = {}): XdsPushThrottle {
  return new XdsPushThrottle(options);
}
