// The one place where Node's errors (errno codes from sockets and files) become DnsErrors or log levels.
import { DnsError, type DnsErrorCode } from "./errors.js";

/** The errno name of a Node system error (`"ECONNREFUSED"`), else undefined. */
export function errnoOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? code : undefined;
}

/** Wraps a Node error in a DnsError of `code`, keeping its errno name in `details.errno`. */
export function toDnsError(err: unknown, code: DnsErrorCode, context: string): DnsError {
  if (err instanceof DnsError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  const errno = errnoOf(err);
  return new DnsError(
    code,
    `${context}: ${detail}`,
    errno === undefined ? { cause: err } : { cause: err, errno },
  );
}

// A peer that resets or vanishes is ordinary on a busy DNS port: such errors are logged at debug.
const ORDINARY_PEER_ERRORS = new Set([
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNABORTED",
  "ERR_STREAM_DESTROYED",
]);

/** Whether a socket error is a peer going away (log at debug) rather than something to look into. */
export function isOrdinaryPeerError(err: unknown): boolean {
  const errno = errnoOf(err);
  return errno !== undefined && ORDINARY_PEER_ERRORS.has(errno);
}
