import type http2 from "node:http2";
import { RouterError } from "./errors.js";

/**
 * Liveness check of pooled upstream HTTP/2 sessions, as Envoy's `http2_protocol_options.connection_keepalive`
 * (`interval`, `timeout`, `connection_idle_interval`) and the project's HBONE client do it.
 */
export interface SessionLivenessOptions {
  /**
   * A session that has received nothing for this long is sent a PING, by a timer and before a new
   * stream is put on it; 0 sends none.
   */
  pingIntervalMs: number;
  /**
   * A PING unanswered this long (extended while other frames arrive) destroys the session, its streams
   * failing as a reset; 0 never destroys a session for an unanswered PING.
   */
  pingTimeoutMs: number;
}

/**
 * Defaults: ztunnel's HTTP/2 keepalive (`keep_alive_interval` 10 s, `keep_alive_timeout` 20 s), as the
 * HBONE client uses for the same mesh's upstream connections. Envoy's `connection_keepalive` has no
 * default and istiod sets none on a waypoint's plaintext upstream clusters, which leaves a silent
 * backend's session in use until the kernel gives up retransmitting, about 15 minutes.
 */
export const DEFAULT_SESSION_LIVENESS: Readonly<SessionLivenessOptions> = Object.freeze({
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
});

/**
 * Bytes the session's connection has received so far, -1 once it has none. Read from the socket (a
 * TCP or TLS socket, or the wrapper Node puts around any other Duplex) rather than counted in frame
 * events: Node reads the connection natively and reports no DATA frame without a reader.
 */
export function receivedBytes(session: http2.ClientHttp2Session): number {
  if (session.destroyed) return -1;
  try {
    const n = (session.socket as { bytesRead?: unknown }).bytesRead;
    return typeof n === "number" ? n : -1;
  } catch {
    // The socket is no longer bound to the session.
    return -1;
  }
}

/**
 * Watches one session: a PING once it has received nothing for `pingIntervalMs` (by a timer, and
 * before a new stream is put on it), and `onDead` when one goes unanswered for `pingTimeoutMs` with
 * nothing else received meanwhile.
 */
export class SessionLiveness {
  #bytes: number;
  /** When the received byte count was last seen to move (or the watch started). */
  #since = performance.now();
  #timer: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #pinging = false;
  #stopped = false;

  constructor(
    private readonly session: http2.ClientHttp2Session,
    private readonly options: SessionLivenessOptions,
    private readonly onDead: (error: RouterError) => void,
  ) {
    this.#bytes = receivedBytes(session);
    session.once("close", () => this.stop());
    this.#arm(options.pingIntervalMs);
  }

  /** Notes whether bytes arrived since the last look. */
  #observe(): void {
    const bytes = receivedBytes(this.session);
    if (bytes !== this.#bytes) {
      this.#bytes = bytes;
      this.#since = performance.now();
    }
  }

  #arm(ms: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#check, Math.max(1, ms));
    this.#timer.unref();
  }

  readonly #check = (): void => {
    this.#timer = undefined;
    if (this.#stopped || this.#pinging) return;
    this.#observe();
    const quiet = performance.now() - this.#since;
    // Timers may fire a fraction of a millisecond early by this clock.
    if (quiet + 1 >= this.options.pingIntervalMs) this.#ping();
    else this.#arm(this.options.pingIntervalMs - quiet);
  };

  /** Before a new stream goes on the session: a PING if it has been quiet for the interval. */
  beforeStream(): void {
    if (this.#stopped || this.#pinging) return;
    this.#observe();
    if (performance.now() - this.#since >= this.options.pingIntervalMs) this.#ping();
  }

  #ping(): void {
    if (this.#stopped || this.session.destroyed) return;
    const sentAt = performance.now();
    try {
      this.session.ping((err) => {
        if (err || this.#stopped) return;
        this.#pinging = false;
        clearTimeout(this.#deadline);
        this.#deadline = undefined;
        this.#observe();
        this.#arm(this.options.pingIntervalMs);
      });
    } catch {
      // Closing, or too many PINGs unanswered: the session's own end is near.
      return;
    }
    this.#pinging = true;
    // Without a deadline the next PING waits for this one's ACK: an unanswering peer costs one.
    if (this.options.pingTimeoutMs > 0) this.#armDeadline(sentAt);
  }

  #armDeadline(sentAt: number): void {
    this.#deadline = setTimeout(() => {
      this.#deadline = undefined;
      if (this.#stopped) return;
      this.#observe();
      // As Envoy: any frame received meanwhile extends the wait (the ACK may be queued behind data).
      if (this.#since > sentAt) {
        this.#armDeadline(performance.now());
        return;
      }
      this.stop();
      this.onDead(
        new RouterError(
          "ERR_UPSTREAM_RESET",
          `upstream HTTP/2 connection did not answer a PING within ${this.options.pingTimeoutMs} ms`,
        ),
      );
    }, this.options.pingTimeoutMs);
    this.#deadline.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#deadline);
    this.#timer = undefined;
    this.#deadline = undefined;
  }
}
