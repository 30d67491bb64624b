import { brandErrorClass } from "@ambient/telemetry";

/** Stable error codes raised by this package. */
export type HboneErrorCode =
  /** The peer answered the CONNECT with a status other than 200 (`status` holds it). */
  | "ERR_HBONE_REFUSED"
  /** The peer's certificate carries no acceptable SPIFFE identity. */
  | "ERR_HBONE_IDENTITY"
  /** TLS handshake or certificate chain verification failed. */
  | "ERR_HBONE_TLS"
  /** Dialing or waiting for the CONNECT response took too long, or a keepalive PING went unanswered. */
  | "ERR_HBONE_TIMEOUT"
  /** The caller's AbortSignal fired. */
  | "ERR_HBONE_ABORTED"
  /** The tunnel's HTTP/2 stream was reset (`rstCode` holds the HTTP/2 error code). */
  | "ERR_HBONE_RESET"
  /**
   * The TCP or HTTP/2 connection failed or was closed under the tunnel (`goawayCode` holds the HTTP/2
   * error code when the peer ended it with a GOAWAY carrying an error).
   */
  | "ERR_HBONE_CONNECTION"
  /** The peer broke the HTTP/2 or ALPN rules (`goawayCode` holds the code of the GOAWAY sent for it). */
  | "ERR_HBONE_PROTOCOL"
  /** The client or server was already closed. */
  | "ERR_HBONE_CLOSED"
  /** A CONNECT authority is not `ip:port`, `[ipv6]:port` or `host:port`. */
  | "ERR_HBONE_INVALID_AUTHORITY"
  /** A tunnel header (forwarded, baggage, traceparent) is malformed. */
  | "ERR_HBONE_INVALID_HEADER"
  /** A PROXY protocol v2 header is malformed or too large. */
  | "ERR_HBONE_PROXY_PROTOCOL"
  /** An option or argument is invalid. */
  | "ERR_HBONE_INVALID_ARGUMENT";

/** Extra fields attached to an {@link HboneError}. */
export interface HboneErrorDetails {
  cause?: unknown;
  /** HTTP status of a refused CONNECT. */
  status?: number;
  /** HTTP/2 RST_STREAM error code. */
  rstCode?: number;
  /**
   * HTTP/2 error code of the GOAWAY, received or sent, that ended the connection with an error (never
   * NO_ERROR: a GOAWAY with NO_ERROR is a graceful close, not a failure).
   */
  goawayCode?: number;
  /** The code of the Node.js error this one was mapped from. */
  nodeCode?: string;
}

/** The one error class of `@ambient/hbone`; `instanceof` works across ESM and CJS copies. */
export class HboneError extends Error {
  readonly code: HboneErrorCode;
  readonly status: number | undefined;
  readonly rstCode: number | undefined;
  readonly goawayCode: number | undefined;
  readonly nodeCode: string | undefined;

  constructor(code: HboneErrorCode, message: string, details: HboneErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "HboneError";
    this.code = code;
    this.status = details.status;
    this.rstCode = details.rstCode;
    this.goawayCode = details.goawayCode;
    this.nodeCode = details.nodeCode;
  }
}

brandErrorClass(HboneError, "@ambient/hbone.error");
