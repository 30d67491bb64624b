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

/** HTTP/2 RST_STREAM code meaning "not processed, safe to retry" (RFC 9113 REFUSED_STREAM). */
export const H2_REFUSED_STREAM = 7;
