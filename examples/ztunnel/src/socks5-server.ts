/**
 * The SOCKS5 side of a node proxy's outbound path, up to the point where a connection is handed
 * over: the source check (before a byte is read), the cap on handshakes in progress, the deadline
 * on the client's part (until its request is complete), half-close and errors. What to dial and how is the
 * caller's: it gets a {@link Socks5Connect} and answers it.
 */
import type { Socket } from "node:net";
import { ZtunnelError } from "./errors.js";
import { encodeMethodSelection, encodeReply, SOCKS5_METHOD, SOCKS5_REPLY } from "./socks5.js";
import {
  decideGreeting,
  decideRequest,
  type ServiceHostnameResolver,
  type Socks5RequestDecision,
} from "./socks5-request.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";

/** Default time from accept to a complete SOCKS5 request. */
export const DEFAULT_SOCKS5_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default cap on connections that have not had their final reply yet. */
export const DEFAULT_SOCKS5_MAX_HANDSHAKES = 1024;

/** How a connection left the handshake. */
export type Socks5HandshakeOutcome =
  /** Handed over after a success reply. */
  | "connected"
  /** A destination refused with a reply code (bad request, unknown name, failed dial). */
  | "refused"
  /** The client address is not a mesh pod of this node. */
  | "not_local"
  /** Closed at once: too many handshakes in progress. */
  | "limit"
  /** The deadline passed before the request was complete. */
  | "timeout"
  /** The client closed or half-closed before its request was complete. */
  | "client_closed"
  /** A socket error. */
  | "error";

/** A complete, allowed-looking CONNECT request, waiting for the caller's answer. */
export interface Socks5Connect<S> {
  readonly socket: Socket;
  readonly srcIp: string;
  /** What `sourceOf` returned for the client address. */
  readonly source: S;
  readonly request: Extract<Socks5RequestDecision, { kind: "connect" }>;
  /** Handshake bytes read from / written to the client (the success reply included once sent). */
  readonly handshakeBytes: { readonly received: number; readonly sent: number };
  /**
   * Sends the success reply and hands the (paused) socket over. False when the client is gone: the
   * caller then drops what it dialled.
   */
  succeed(): boolean;
  /** Replies `code` and closes. */
  refuse(code: number): void;
}

/** Options of {@link createSocks5Handler}. */
export interface Socks5HandlerOptions<S> {
  /**
   * Time from accept to a complete request (greeting and CONNECT); a client slower than that is
   * closed. The answer to a complete request is the dial's, bounded by its own deadlines. Default
   * {@link DEFAULT_SOCKS5_HANDSHAKE_TIMEOUT_MS}.
   */
  handshakeTimeoutMs?: number;
  /** Connections without a final reply at once; more are closed on accept. Default {@link DEFAULT_SOCKS5_MAX_HANDSHAKES}. */
  maxHandshakes?: number;
  /** The mesh source behind a client address; undefined refuses it (reply 2) without reading anything. */
  sourceOf(ip: string): S | undefined;
  /**
   * The VIP of the mesh Service a requested name stands for, as the client `source` sees names:
   * its own namespace's Service first, and none it may not see.
   */
  resolveHostname(hostname: string, source: S): string | undefined;
  onConnect(connect: Socks5Connect<S>): void;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** A SOCKS5 connection handler for a `net.Server` created with `allowHalfOpen: true`. */
export interface Socks5Handler {
  handle(socket: Socket): void;
  /** Connections accepted and not yet handed over or closed. */
  inProgress(): number;
  /** Handshakes by outcome since start. */
  outcomes(): Readonly<Record<Socks5HandshakeOutcome, number>>;
  /** Destroys every connection still in its handshake. */
  destroyAll(): void;
}

function plainIp(address: string | undefined): string {
  if (address === undefined) return "";
  return address.startsWith("::ffff:") ? address.slice(7) : address;
}

function positive(name: string, value: number | undefined, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new ZtunnelError(
      "ERR_ZTUNNEL_INVALID_OPTION",
      `${name} must be a positive ${integer ? "integer" : "number"}, got ${value}`,
    );
  }
  return value;
}

type Phase = "greeting" | "request" | "dialing" | "refusing" | "done";

export function createSocks5Handler<S>(options: Socks5HandlerOptions<S>): Socks5Handler {
  const timeoutMs = positive(
    "socks5 handshakeTimeoutMs",
    options.handshakeTimeoutMs,
    DEFAULT_SOCKS5_HANDSHAKE_TIMEOUT_MS,
    false,
  );
  const maxHandshakes = positive(
    "socks5 maxHandshakes",
    options.maxHandshakes,
    DEFAULT_SOCKS5_MAX_HANDSHAKES,
    true,
  );
  const logger = options.logger ?? noopLogger;
  const metrics = options.metrics ?? noopMetrics;
  const outcomeCounter = metrics.counter(
    "ztunnel_socks5_handshakes_total",
    "SOCKS5 connections by how they left the handshake",
    ["outcome"],
  );
  const inProgressGauge = metrics.gauge(
    "ztunnel_socks5_handshakes_in_progress",
    "SOCKS5 connections accepted and not yet answered",
  );
  const counts: Record<Socks5HandshakeOutcome, number> = {
    connected: 0,
    refused: 0,
    not_local: 0,
    limit: 0,
    timeout: 0,
    client_closed: 0,
    error: 0,
  };
  const record = (outcome: Socks5HandshakeOutcome): void => {
    counts[outcome]++;
    outcomeCounter.inc({ outcome });
  };
  const pending = new Set<Socket>();
  // One listener for every socket: a closure per connection would keep its handshake state alive.
  const logSocketError = (err: Error): void =>
    logger.debug({ err: err.message }, "SOCKS5 client socket error");

  const handle = (socket: Socket): void => {
    // An error may come in any phase; after hand-over the new owner listens too.
    socket.on("error", logSocketError);
    if (pending.size >= maxHandshakes) {
      record("limit");
      socket.destroy();
      return;
    }
    pending.add(socket);
    inProgressGauge.inc();
    let phase: Phase = "greeting";
    let buffered: Buffer = Buffer.alloc(0);
    let received = 0;
    let sent = 0;
    const srcIp = plainIp(socket.remoteAddress);

    const release = (): void => {
      if (!pending.delete(socket)) return;
      inProgressGauge.dec();
      clearTimeout(timer);
    };
    const fail = (outcome: Socks5HandshakeOutcome): void => {
      if (phase === "done") return;
      if (phase !== "refusing") record(outcome);
      phase = "done";
      release();
      socket.destroy();
    };
    /** Writes the last bytes and closes; the deadline still bounds a client that never closes. */
    const refuse = (bytes: Uint8Array | undefined, outcome: Socks5HandshakeOutcome): void => {
      if (phase === "done" || phase === "refusing") return;
      record(outcome);
      phase = "refusing";
      if (bytes === undefined) socket.end();
      else {
        sent += bytes.length;
        socket.end(bytes);
      }
      // Drain what the client still sends so its FIN is seen.
      socket.resume();
    };
    const onDeadline = (): void => {
      logger.debug({ src: srcIp, phase }, "SOCKS5 handshake deadline passed");
      fail("timeout");
    };
    let timer = setTimeout(onDeadline, timeoutMs);
    const onClose = (): void => {
      if (phase !== "done") {
        if (phase !== "refusing") record("client_closed");
        phase = "done";
      }
      release();
    };
    socket.once("close", onClose);
    const onError = (): void => fail("error");
    socket.on("error", onError);
    // The client half-closed before its request was complete (or while it waits for the reply).
    const onEnd = (): void => {
      if (phase === "refusing") {
        phase = "done";
        release();
        socket.destroy();
      } else fail("client_closed");
    };
    socket.on("end", onEnd);

    const source = options.sourceOf(srcIp);
    if (source === undefined) {
      logger.info({ src: srcIp }, "SOCKS5 source is not a local mesh pod, refused");
      // Nothing is read: the method choice and the refusal go out at once, in the order a
      // client expects them.
      refuse(
        Buffer.concat([encodeMethodSelection(SOCKS5_METHOD.noAuth), encodeReply(SOCKS5_REPLY.notAllowed)]),
        "not_local",
      );
      return;
    }

    // Names in the request are resolved for this client: the same name can stand for another
    // Service in another namespace.
    const resolveHostname: ServiceHostnameResolver = (hostname) => options.resolveHostname(hostname, source);
    const onData = (chunk: Buffer): void => {
      if (phase === "refusing" || phase === "done") return;
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      if (phase === "greeting") {
        const greeting = decideGreeting(buffered);
        if (greeting.kind === "incomplete") return;
        if (greeting.kind === "refuse") {
          logger.debug({ src: srcIp, reason: greeting.reason }, "bad SOCKS5 greeting");
          refuse(greeting.response, "refused");
          return;
        }
        received += greeting.length;
        buffered = buffered.subarray(greeting.length);
        const selection = encodeMethodSelection(SOCKS5_METHOD.noAuth);
        sent += selection.length;
        socket.write(selection);
        phase = "request";
      }
      const decision = decideRequest(buffered, resolveHostname);
      if (decision.kind === "incomplete") return;
      if (decision.kind === "refuse") {
        logger.info({ src: srcIp, reason: decision.reason, reply: decision.reply }, "SOCKS5 request refused");
        refuse(encodeReply(decision.reply), "refused");
        return;
      }
      received += decision.length;
      const rest = buffered.subarray(decision.length);
      buffered = Buffer.alloc(0);
      socket.off("data", onData);
      socket.pause();
      if (rest.length > 0) socket.unshift(rest);
      phase = "dialing";
      // The client's part is done: what it waits for now is the dial, which its own deadlines bound
      // (connect, on-demand lookup, HBONE response) and which answers with a reply code, such as 6
      // for a connect that timed out. The handshake deadline would close the client without one.
      clearTimeout(timer);
      options.onConnect({
        socket,
        srcIp,
        source,
        request: decision,
        handshakeBytes: {
          get received() {
            return received;
          },
          get sent() {
            return sent;
          },
        },
        succeed() {
          if (phase !== "dialing" || socket.destroyed) return false;
          phase = "done";
          release();
          // Handed over: the handshake's listeners (and the state they hold) go with it.
          socket.off("end", onEnd);
          socket.off("close", onClose);
          socket.off("error", onError);
          record("connected");
          const reply = encodeReply(SOCKS5_REPLY.succeeded);
          sent += reply.length;
          socket.write(reply);
          return true;
        },
        refuse(code) {
          if (phase !== "dialing" || socket.destroyed) return;
          refuse(encodeReply(code), "refused");
          // The reply is out and the socket half-closed: a client that never closes its side is held
          // for one more deadline at most, as a client refused during its handshake is.
          timer = setTimeout(onDeadline, timeoutMs);
        },
      });
    };
    socket.on("data", onData);
  };

  return {
    handle,
    inProgress: () => pending.size,
    outcomes: () => ({ ...counts }),
    destroyAll() {
      for (const socket of [...pending]) socket.destroy();
    },
  };
}
