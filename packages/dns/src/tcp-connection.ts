// One DNS-over-TCP connection (RFC 1035 4.2.2, RFC 7766): 2-byte length-prefixed frames, queries
// handled concurrently and answered as they finish, reading paused while writes back up or while the
// server has too many queries in flight, closed when idle: no query in flight and no complete query
// received for the idle timeout.
import type net from "node:net";
import type { Logger } from "@ambient/telemetry";
import { isOrdinaryPeerError } from "./node-error.js";

/** What a connection asks of the server that owns it. */
export interface TcpConnectionHooks {
  /** The response bytes for one query frame, or undefined to send nothing. Never rejects. */
  answer(frame: Uint8Array): Promise<Uint8Array | undefined>;
  /** Whether the server-wide in-flight limit lets one more query start now. */
  hasRoom(): boolean;
  /** The connection stopped reading for lack of room; the server calls `resume()` when a query finishes. */
  waitForRoom(connection: TcpConnection): void;
  /** The socket closed. */
  closed(connection: TcpConnection): void;
}

const EMPTY = Buffer.alloc(0);

/** Serves DNS queries on one accepted TCP socket. */
export class TcpConnection {
  readonly #socket: net.Socket;
  readonly #hooks: TcpConnectionHooks;
  readonly #logger: Logger;
  readonly #idleTimeoutMs: number;
  #pending: Buffer = EMPTY;
  #inFlight = 0;
  #writeBlocked = false;
  #peerEnded = false;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(socket: net.Socket, hooks: TcpConnectionHooks, idleTimeoutMs: number, logger: Logger) {
    this.#socket = socket;
    this.#hooks = hooks;
    this.#idleTimeoutMs = idleTimeoutMs;
    this.#logger = logger;
    // The client's FIN must not end our side while answers are still owed (RFC 7766 6.2.4); a server
    // made by the caller may not have been created with allowHalfOpen.
    socket.allowHalfOpen = true;
    socket.setNoDelay(true);
    // Bytes alone do not re-arm the idle timer, only a complete query does (in #start, then #finish):
    // a client trickling a frame that never completes would otherwise hold its connection forever.
    socket.on("data", (chunk: Buffer) => {
      this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
      this.#pump();
    });
    socket.on("end", () => {
      this.#peerEnded = true;
      this.#pump();
    });
    socket.on("drain", () => {
      this.#writeBlocked = false;
      this.#pump();
    });
    socket.on("error", (err) => {
      const fields = { err, remote: socket.remoteAddress, port: socket.remotePort };
      if (isOrdinaryPeerError(err)) this.#logger.debug(fields, "DNS TCP connection failed");
      else this.#logger.warn(fields, "DNS TCP connection failed");
    });
    socket.on("close", () => {
      clearTimeout(this.#idleTimer);
      this.#hooks.closed(this);
    });
    this.#armIdleTimer();
  }

  /** Starts the frames that waited for room in the server's in-flight limit. */
  resume(): void {
    this.#pump();
  }

  /** Closes the connection at once. */
  destroy(): void {
    this.#socket.destroy();
  }

  #armIdleTimer(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    if (this.#inFlight > 0 || this.#socket.destroyed) return;
    this.#idleTimer = setTimeout(() => {
      this.#logger.debug({ remote: this.#socket.remoteAddress }, "DNS TCP connection idle, closing");
      this.#socket.destroy();
    }, this.#idleTimeoutMs);
    this.#idleTimer.unref();
  }

  /** Starts every complete frame it may, then reads on, pauses, or ends the connection. */
  #pump(): void {
    const socket = this.#socket;
    while (!socket.destroyed) {
      if (this.#writeBlocked) {
        socket.pause();
        return;
      }
      if (this.#pending.length < 2) break;
      const length = this.#pending.readUInt16BE(0);
      if (length === 0) {
        this.#logger.debug({ remote: socket.remoteAddress }, "DNS TCP frame of length 0, closing");
        socket.destroy();
        return;
      }
      if (this.#pending.length < 2 + length) break;
      if (!this.#hooks.hasRoom()) {
        // A complete query waits on the server, not on the client: no idle deadline meanwhile.
        clearTimeout(this.#idleTimer);
        socket.pause();
        this.#hooks.waitForRoom(this);
        return;
      }
      // A copy: the handler may keep the query (to forward it) after this buffer is reused.
      const frame = Buffer.from(this.#pending.subarray(2, 2 + length));
      this.#pending = this.#pending.subarray(2 + length);
      this.#start(frame);
    }
    if (socket.destroyed) return;
    if (this.#peerEnded) {
      // Nothing more will arrive: a partial frame is dropped, and our side ends once all is answered.
      if (this.#inFlight === 0 && !socket.writableEnded) socket.end();
      return;
    }
    socket.resume();
  }

  #start(frame: Uint8Array): void {
    this.#inFlight += 1;
    clearTimeout(this.#idleTimer);
    this.#hooks
      .answer(frame)
      .then((response) => this.#finish(response))
      .catch((err: unknown) => {
        this.#logger.error({ err }, "DNS TCP answer failed unexpectedly");
        this.#finish(undefined);
      });
  }

  #finish(response: Uint8Array | undefined): void {
    this.#inFlight -= 1;
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (response !== undefined) {
      const framed = Buffer.allocUnsafe(2 + response.length);
      framed.writeUInt16BE(response.length, 0);
      framed.set(response, 2);
      if (!socket.write(framed)) this.#writeBlocked = true;
    }
    if (this.#inFlight === 0) this.#armIdleTimer();
    if (this.#peerEnded) this.#pump();
  }
}
