import type { SpiffeId } from "@ambient/spiffe";
import type { TunnelAuthority } from "./authority.js";
import { HboneError } from "./errors.js";
import { type H2Stream, outgoingFields } from "./h2/connection.js";
import { H2_ERROR } from "./h2/frames.js";
import {
  type ForwardedElement,
  HBONE_HEADER_NAMES,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
  type TraceParent,
} from "./headers.js";
import { type TunnelHeaders, TunnelStream } from "./tunnel-stream.js";

/** Status codes an HBONE server answers a CONNECT with, as ztunnel does. */
export const HBONE_STATUS = Object.freeze({
  /** Tunnel established. */
  ok: 200,
  /** Not a CONNECT, unparsable authority, or a target this server does not serve. */
  badRequest: 400,
  /** Authorization policy denied the connection. */
  denied: 401,
  /** No upstream: unknown destination or the upstream dial failed. */
  noUpstream: 503,
});

/**
 * Lifecycle of an {@link InboundTunnel}: `pending` until answered, then `accepted` or `refused`;
 * `closed` when the client went away before any answer.
 */
export type InboundTunnelState = "pending" | "accepted" | "refused" | "closed";

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(", ") : value;
}

function tryParse<T>(value: string | undefined, parse: (v: string) => T): T | undefined {
  if (value === undefined) return undefined;
  try {
    return parse(value);
  } catch {
    return undefined;
  }
}

/**
 * A CONNECT request received by an HBONE server, waiting for the application to
 * {@link InboundTunnel.accept} or {@link InboundTunnel.refuse} it.
 */
export class InboundTunnel {
  /** The validated CONNECT target. */
  readonly authority: TunnelAuthority;
  /** The `:authority` exactly as received. */
  readonly rawAuthority: string;
  /** Verified SPIFFE identity of the client certificate. */
  readonly peerIdentity: SpiffeId;
  /** Remote address of the TCP connection (the peer ztunnel or gateway). */
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** All request headers: lower-case names, repeated fields joined with ", ". */
  readonly headers: Readonly<TunnelHeaders>;
  /** Parsed `forwarded` header; `undefined` when absent or malformed. */
  readonly forwarded: readonly ForwardedElement[] | undefined;
  /** Parsed `baggage` header; `undefined` when absent or malformed. */
  readonly baggage: ReadonlyMap<string, string> | undefined;
  /** Parsed `traceparent` header; `undefined` when absent or malformed. */
  readonly traceparent: TraceParent | undefined;
  /** `x-forwarded-network` (set on the inner CONNECT of double HBONE). */
  readonly forwardedNetwork: string | undefined;
  #stream: H2Stream;
  /** Made on the first read of {@link InboundTunnel.signal}: most tunnels are answered without it. */
  #controller: AbortController | undefined;
  #state: InboundTunnelState = "pending";
  #onAnswer: ((status: number) => void) | undefined;

  constructor(
    stream: H2Stream,
    headers: TunnelHeaders,
    authority: TunnelAuthority,
    peerIdentity: SpiffeId,
    remote: { address: string; port: number },
    onAnswer?: (status: number) => void,
  ) {
    this.#onAnswer = onAnswer;
    this.#stream = stream;
    this.headers = headers;
    this.authority = authority;
    this.rawAuthority = String(headers[":authority"]);
    this.peerIdentity = peerIdentity;
    this.remoteAddress = remote.address;
    this.remotePort = remote.port;
    this.forwarded = tryParse(single(headers[HBONE_HEADER_NAMES.forwarded]), parseForwarded);
    this.baggage = tryParse(single(headers[HBONE_HEADER_NAMES.baggage]), parseBaggage);
    this.traceparent = tryParse(single(headers[HBONE_HEADER_NAMES.traceparent]), parseTraceparent);
    this.forwardedNetwork = single(headers[HBONE_HEADER_NAMES.forwardedNetwork]);
    stream.onClose(() => {
      if (this.#state === "pending") {
        this.#state = "closed";
        this.#controller?.abort(this.#closedReason());
      }
    });
  }

  /** Why the stream closed before an answer: the server's own close(), or the client left. */
  #closedReason(): HboneError {
    const failure = this.#stream.connection.failure;
    if (failure?.code === "ERR_HBONE_CLOSED") return failure;
    return new HboneError("ERR_HBONE_RESET", "client went away before the tunnel was answered");
  }

  /**
   * Aborts when the client goes away before the tunnel was accepted or refused (reason
   * `ERR_HBONE_RESET`), or the server's `close()` destroyed its connection (`ERR_HBONE_CLOSED`).
   */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#state === "closed") this.#controller.abort(this.#closedReason());
    }
    return this.#controller.signal;
  }

  get state(): InboundTunnelState {
    return this.#state;
  }

  /**
   * Answers 200 and returns the tunnel's bytes. `headers` may add response headers
   * (for example `baggage` describing the destination workload).
   */
  accept(headers: Readonly<Record<string, string>> = {}): TunnelStream {
    if (this.#state === "closed") {
      // The client left while the application was dialing: hand back a stream that reports it,
      // so a relay set up with pipeTunnel tears its upstream down instead of crashing.
      const gone = this.#tunnelStream();
      gone.destroy(new HboneError("ERR_HBONE_RESET", "the client went away before the tunnel was accepted"));
      return gone;
    }
    const fields = outgoingFields(headers, [[":status", String(HBONE_STATUS.ok)]]);
    this.#answer("accepted", HBONE_STATUS.ok);
    this.#stream.respond(fields, false);
    return this.#tunnelStream();
  }

  #tunnelStream(): TunnelStream {
    return new TunnelStream(this.#stream, {
      authority: this.rawAuthority,
      peerIdentity: this.peerIdentity,
      headers: this.headers,
    });
  }

  /**
   * Refuses the tunnel with `status` (400, 401 or 503 in ztunnel's use) and END_STREAM.
   * A refusal after the client left is a no-op.
   */
  refuse(status: number, reason?: string): void {
    if (!Number.isInteger(status) || status < 300 || status > 599) {
      throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `refuse: status ${status} is not an error status`);
    }
    if (this.#state === "closed") return;
    this.#answer("refused", status);
    const stream = this.#stream;
    if (stream.closed) return;
    const fields: [string, string][] = [[":status", String(status)]];
    if (reason !== undefined)
      fields.push([
        "x-hbone-reason",
        reason
          .replace(/[^\x20-\x7e]/g, "?")
          .slice(0, 256)
          .trim(),
      ]);
    stream.respond(fields, true);
    // The request side will not be read: tell the client to stop sending (RFC 9113, 8.1).
    if (!stream.closed) stream.reset(H2_ERROR.NO_ERROR);
  }

  #answer(next: "accepted" | "refused", status: number): void {
    if (this.#state === "closed") {
      throw new HboneError("ERR_HBONE_RESET", "the client went away before the tunnel was answered");
    }
    if (this.#state !== "pending") {
      throw new HboneError("ERR_HBONE_INVALID_ARGUMENT", `tunnel was already ${this.#state}`);
    }
    this.#state = next;
    this.#onAnswer?.(status);
  }
}
