import { RouterError, type RouterErrorCode } from "./errors.js";

const CONNECT_CODES = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EADDRNOTAVAIL",
  "ETIMEDOUT",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
]);
const RESET_CODES = new Set([
  "ECONNRESET",
  "EPIPE",
  "ECONNABORTED",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_STREAM_DESTROYED",
]);
const PROTOCOL_CODES = new Set([
  "HPE_INVALID_CONSTANT",
  "HPE_INVALID_VERSION",
  "HPE_INVALID_STATUS",
  "HPE_INVALID_HEADER_TOKEN",
  "HPE_HEADER_OVERFLOW",
  "HPE_INVALID_CHUNK_SIZE",
  "HPE_UNEXPECTED_CONTENT_LENGTH",
  "HPE_INVALID_CONTENT_LENGTH",
  "ERR_HTTP2_ERROR",
  "ERR_HTTP2_INVALID_HEADER_VALUE",
  "ERR_HTTP2_HEADERS_AFTER_RESPOND",
  "ERR_HTTP2_PROTOCOL_ERROR",
]);

function codeOf(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "string")
    return err.code;
  return undefined;
}

/**
 * Maps a Node network/HTTP error to a {@link RouterError}. `phase` tells whether the upstream
 * connection was already up: a reset during connect is a connect failure.
 */
export function fromNodeError(err: unknown, phase: "connect" | "request"): RouterError {
  if (err instanceof RouterError) return err;
  const code = codeOf(err);
  const message = err instanceof Error ? err.message : String(err);
  let mapped: RouterErrorCode;
  if (code !== undefined && CONNECT_CODES.has(code)) mapped = "ERR_UPSTREAM_CONNECT";
  else if (code !== undefined && PROTOCOL_CODES.has(code)) mapped = "ERR_UPSTREAM_PROTOCOL";
  else if (phase === "connect") mapped = "ERR_UPSTREAM_CONNECT";
  else if (code !== undefined && RESET_CODES.has(code)) mapped = "ERR_UPSTREAM_RESET";
  else if (code?.startsWith("HPE_")) mapped = "ERR_UPSTREAM_PROTOCOL";
  else mapped = "ERR_UPSTREAM_RESET";
  return new RouterError(
    mapped,
    `upstream ${phase === "connect" ? "connect" : "request"} failed: ${message}`,
    {
      cause: err,
      nodeCode: code,
    },
  );
}

/**
 * The text Linux's strerror(3) gives the errors a TCP connect can end with, as Envoy prints them in a
 * transport failure reason.
 */
const STRERROR: Readonly<Record<string, string>> = {
  ECONNREFUSED: "Connection refused",
  ETIMEDOUT: "Connection timed out",
  EHOSTUNREACH: "No route to host",
  EHOSTDOWN: "Host is down",
  ECONNRESET: "Connection reset by peer",
  ECONNABORTED: "Software caused connection abort",
  ENETUNREACH: "Network is unreachable",
  ENETDOWN: "Network is down",
  EADDRNOTAVAIL: "Cannot assign requested address",
  EADDRINUSE: "Address already in use",
  EACCES: "Permission denied",
  EPERM: "Operation not permitted",
  EAFNOSUPPORT: "Address family not supported by protocol",
  EINVAL: "Invalid argument",
};

/**
 * Errors the connect call itself returns on Linux, before any packet went out (no route, no free local
 * port, refused by the local firewall); the others arrive later, once the handshake failed.
 */
const IMMEDIATE_CONNECT_ERRORS = new Set([
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "EACCES",
  "EPERM",
  "EAFNOSUPPORT",
  "EINVAL",
]);

/**
 * Why an upstream connection could not be made, in the words of Envoy's
 * `%UPSTREAM_TRANSPORT_FAILURE_REASON%`: `delayed connect error: Connection refused` for a handshake that
 * failed, `immediate connect error: Network is unreachable|remote address:10.0.0.1:80` for a connect call
 * that failed at once. `undefined` when `err` (or an error in its `cause` chain) is not a failed TCP
 * connect with a known errno.
 */
export function connectFailureReason(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && typeof e === "object" && e !== null; depth++) {
    const { syscall, code, address, port } = e as {
      syscall?: unknown;
      code?: unknown;
      address?: unknown;
      port?: unknown;
    };
    if (syscall === "connect" && typeof code === "string") {
      const text = STRERROR[code];
      if (text === undefined) return undefined;
      if (!IMMEDIATE_CONNECT_ERRORS.has(code)) return `delayed connect error: ${text}`;
      const host = typeof address === "string" && address.includes(":") ? `[${address}]` : String(address);
      return `immediate connect error: ${text}|remote address:${host}:${String(port)}`;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** HTTP/2 RST_STREAM code meaning "not processed, safe to retry" (RFC 9113 REFUSED_STREAM). */
export const H2_REFUSED_STREAM = 7;
