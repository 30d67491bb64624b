import { brandErrorClass } from "@ambient/telemetry";

/**
 * Stable error codes of `@ambient/netns`. Each names what went wrong, not where.
 */
export type NetnsErrorCode =
  /** This platform cannot do it: not Linux, not a 64-bit little-endian CPU, or koffi did not load. */
  | "ERR_NETNS_UNSUPPORTED"
  /** A system call failed; `errno` holds its name (`EPERM`, `ENOENT`, ...) and `syscall` the call. */
  | "ERR_NETNS_SYSCALL"
  /**
   * The thread could not return to its own network namespace after working in another one. Sockets
   * the process opens from now on may land in the wrong namespace: the process should exit.
   */
  | "ERR_NETNS_RESTORE"
  /** An argument is malformed: not a canonical IP address, a port out of range, a path too long. */
  | "ERR_NETNS_INVALID_ARGUMENT"
  /** The namespace handle or socket was already closed. */
  | "ERR_NETNS_CLOSED"
  /** A seqpacket message or its file descriptors did not fit the receive buffers (MSG_TRUNC/MSG_CTRUNC). */
  | "ERR_NETNS_MESSAGE_TRUNCATED"
  /** A ZDS peer sent something the protocol does not allow (undecodable, wrong type, missing fd). */
  | "ERR_ZDS_PROTOCOL"
  /** The ZDS peer answered a request with an Ack that carries an error (a NACK); `details.reason` holds it. */
  | "ERR_ZDS_NACK"
  /** A ZDS request got no answer in time. */
  | "ERR_ZDS_TIMEOUT"
  /** The ZDS connection closed before the request was answered. */
  | "ERR_ZDS_DISCONNECTED";

/** Extra fields carried by a {@link NetnsError}. */
export interface NetnsErrorDetails {
  cause?: unknown;
  /** For `ERR_NETNS_SYSCALL`: the errno name, e.g. `"EPERM"`. */
  errno?: string;
  /** For `ERR_NETNS_SYSCALL`: the failing call, e.g. `"setns"`. */
  syscall?: string;
  [key: string]: unknown;
}

/**
 * The one error class of `@ambient/netns`. `instanceof` works across the ESM and CJS copies of the
 * package thanks to a `Symbol.for` brand.
 */
export class NetnsError extends Error {
  override readonly name = "NetnsError";
  readonly code: NetnsErrorCode;
  /** The errno name for `ERR_NETNS_SYSCALL` (`"EPERM"`), else undefined. */
  readonly errno: string | undefined;
  /** The system call for `ERR_NETNS_SYSCALL` (`"setns"`), else undefined. */
  readonly syscall: string | undefined;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: NetnsErrorCode, message: string, details: NetnsErrorDetails = {}) {
    const { cause, errno, syscall, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    this.details = rest;
  }
}

brandErrorClass(NetnsError, "@ambient/netns.error");
