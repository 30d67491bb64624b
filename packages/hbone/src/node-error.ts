import { HboneError, type HboneErrorCode } from "./errors.js";

// The one place where Node.js error codes become HboneError codes.

const TLS_VERIFY_CODES = new Set([
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "INVALID_CA",
  "INVALID_PURPOSE",
  "ECONNRESET_DURING_HANDSHAKE",
]);

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EADDRNOTAVAIL",
  "EADDRINUSE",
  "ENOTFOUND",
  "ERR_STREAM_PREMATURE_CLOSE",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_WRITE_AFTER_END",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_SOCKET_UNBOUND",
  "ERR_HTTP2_STREAM_CANCEL",
  "ERR_SOCKET_CLOSED",
]);

const TIMEOUT_CODES = new Set(["ETIMEDOUT", "ERR_HTTP2_PING_CANCEL", "ERR_SOCKET_CONNECTION_TIMEOUT"]);

const HTTP2_ERROR_NAMES = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
] as const;

/**
 * Name of an HTTP/2 error code (`CANCEL` for 8), for messages; `code <n>` for one RFC 9113 does not
 * name. Throws `ERR_HBONE_INVALID_ARGUMENT` for anything but an integer from 0 to 2^32 - 1.
 */
export function http2ErrorName(code: number): string {
  if (typeof code !== "number" || !Number.isInteger(code) || code < 0 || code > 0xffffffff) {
    throw new HboneError(
      "ERR_HBONE_INVALID_ARGUMENT",
      `http2ErrorName: an HTTP/2 error code is an integer from 0 to 4294967295, got ${typeof code === "number" ? code : typeof code}`,
    );
  }
  return HTTP2_ERROR_NAMES[code] ?? `code ${code}`;
}

function nodeCodeOf(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === "string" ? code : undefined;
  }
  return undefined;
}

function classify(nodeCode: string | undefined, err: unknown): HboneErrorCode {
  if (nodeCode === undefined) {
    if (err instanceof Error && err.name === "AbortError") return "ERR_HBONE_ABORTED";
    return "ERR_HBONE_CONNECTION";
  }
  if (nodeCode === "ABORT_ERR") return "ERR_HBONE_ABORTED";
  if (TIMEOUT_CODES.has(nodeCode)) return "ERR_HBONE_TIMEOUT";
  if (nodeCode === "ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL") return "ERR_HBONE_PROTOCOL";
  if (TLS_VERIFY_CODES.has(nodeCode) || nodeCode.startsWith("ERR_SSL_") || nodeCode.startsWith("ERR_TLS_")) {
    return nodeCode === "ERR_TLS_CERT_ALTNAME_INVALID" ? "ERR_HBONE_IDENTITY" : "ERR_HBONE_TLS";
  }
  if (nodeCode.startsWith("ERR_OSSL_")) return "ERR_HBONE_TLS";
  if (nodeCode === "ERR_HTTP2_STREAM_ERROR") return "ERR_HBONE_RESET";
  if (CONNECTION_CODES.has(nodeCode)) return "ERR_HBONE_CONNECTION";
  if (nodeCode.startsWith("ERR_HTTP2_")) return "ERR_HBONE_PROTOCOL";
  return "ERR_HBONE_CONNECTION";
}

/**
 * Turns any error thrown by Node's net, tls or http2 modules into an {@link HboneError}; an
 * HboneError passes through unchanged. `context` prefixes the message (for example "dial 10.0.0.1:15008").
 */
export function toHboneError(err: unknown, context?: string): HboneError {
  if (err instanceof HboneError) return err;
  const nodeCode = nodeCodeOf(err);
  const code = classify(nodeCode, err);
  const text = err instanceof Error ? err.message : String(err);
  const message = context === undefined ? text : `${context}: ${text}`;
  return new HboneError(code, message, { cause: err, ...(nodeCode === undefined ? {} : { nodeCode }) });
}

/** The error a tunnel reports when its stream was reset with `rstCode`. */
export function resetError(rstCode: number, who: "peer" | "connection"): HboneError {
  return new HboneError("ERR_HBONE_RESET", `tunnel stream reset by ${who} (${http2ErrorName(rstCode)})`, {
    rstCode,
  });
}

/**
 * The error for a caller's AbortSignal that fired: `ERR_HBONE_ABORTED` with the signal's reason as
 * `cause`, whatever the reason is.
 */
export function abortError(reason: unknown, context: string): HboneError {
  if (reason instanceof HboneError && reason.code === "ERR_HBONE_ABORTED") return reason;
  return new HboneError("ERR_HBONE_ABORTED", `${context}: aborted`, { cause: reason });
}

/**
 * The error for credentials OpenSSL refuses (an unreadable key, a key that does not match the
 * certificate, a malformed chain or bundle): `ERR_HBONE_INVALID_ARGUMENT` with OpenSSL's error as
 * `cause` and its code as `nodeCode`.
 */
export function credentialsError(err: unknown, where: string): HboneError {
  const mapped = toHboneError(err, `${where}: the key, certChain or trustBundle was refused by OpenSSL`);
  return new HboneError("ERR_HBONE_INVALID_ARGUMENT", mapped.message, {
    cause: err,
    ...(mapped.nodeCode === undefined ? {} : { nodeCode: mapped.nodeCode }),
  });
}
