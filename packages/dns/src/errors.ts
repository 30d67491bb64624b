import { brandErrorClass } from "@ambient/telemetry";

/**
 * Stable error codes of `@ambient/dns`. Each names what went wrong, not where.
 */
export type DnsErrorCode =
  /** Bytes are not a well-formed DNS message (truncated, a pointer loop, a count the bytes cannot hold). */
  | "ERR_DNS_MALFORMED"
  /** An argument is invalid: a name with a label over 63 bytes, a value out of range, a non-IP address. */
  | "ERR_DNS_INVALID_ARGUMENT"
  /** Every try of a forward timed out: no nameserver answered. */
  | "ERR_DNS_UPSTREAM_TIMEOUT"
  /** A forward got no answer and at least one try failed otherwise (refused, reset); `cause` holds the last failure. */
  | "ERR_DNS_UPSTREAM"
  /** The forward was cancelled through its `signal`; `cause` holds the signal's reason. */
  | "ERR_DNS_ABORTED"
  /** The forwarder or server was closed before or while the call ran. */
  | "ERR_DNS_CLOSED"
  /** `DnsServer.listen` could not bind; `details.errno` holds the errno name (`EADDRINUSE`, `EACCES`, ...). */
  | "ERR_DNS_BIND"
  /** `readResolvConf` could not read the file; `details.errno` holds the errno name (`ENOENT`, ...). */
  | "ERR_DNS_RESOLV_CONF";

/** Extra fields carried by a {@link DnsError}. */
export interface DnsErrorDetails {
  cause?: unknown;
  /** For `ERR_DNS_BIND` and `ERR_DNS_RESOLV_CONF`: the errno name, e.g. `"EADDRINUSE"`. */
  errno?: string;
  [key: string]: unknown;
}

/**
 * The one error class of `@ambient/dns`. `instanceof` works across the ESM and CJS copies of the
 * package thanks to a `Symbol.for` brand.
 */
export class DnsError extends Error {
  override readonly name = "DnsError";
  readonly code: DnsErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: DnsErrorCode, message: string, details: DnsErrorDetails = {}) {
    const { cause, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.details = rest;
  }
}

brandErrorClass(DnsError, "@ambient/dns.error");
