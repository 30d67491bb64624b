import { XdsError, type XdsErrorCode } from "./errors.js";

/** gRPC status codes this package reads or sends. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

function codeOf(err: unknown): unknown {
  return typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
}

/** Maps a grpc-js or Node error (ECONNREFUSED, ERR_HTTP2_*, ...) to an {@link XdsError}. */
export function toXdsError(err: unknown, context: string): XdsError {
  if (err instanceof XdsError) return err;
  const code = codeOf(err);
  const detail = err instanceof Error ? err.message : String(err);
  let xcode: XdsErrorCode = "ERR_XDS_STREAM";
  let grpcCode: number | undefined;
  if (typeof code === "number") {
    grpcCode = code;
    if (code === GrpcStatus.UNAUTHENTICATED) xcode = "ERR_XDS_UNAUTHENTICATED";
    else if (code === GrpcStatus.PERMISSION_DENIED) xcode = "ERR_XDS_PERMISSION_DENIED";
    else if (code === GrpcStatus.UNAVAILABLE) xcode = "ERR_XDS_UNAVAILABLE";
    else if (code === GrpcStatus.INVALID_ARGUMENT) xcode = "ERR_XDS_INVALID_ARGUMENT";
  } else if (typeof code === "string") {
    if (code === "ECONNREFUSED" || code === "ECONNRESET" || code === "EPIPE" || code === "ETIMEDOUT") {
      xcode = "ERR_XDS_UNAVAILABLE";
    } else if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_")) {
      xcode = "ERR_XDS_UNAUTHENTICATED";
    }
  }
  return new XdsError(xcode, `${context}: ${detail}`, { cause: err, grpcCode });
}

/** gRPC status for an error raised while serving a stream. */
export function grpcStatusOf(err: unknown): number {
  if (err instanceof XdsError) {
    switch (err.code) {
      case "ERR_XDS_UNAUTHENTICATED":
        return GrpcStatus.UNAUTHENTICATED;
      case "ERR_XDS_PERMISSION_DENIED":
        return GrpcStatus.PERMISSION_DENIED;
      case "ERR_XDS_INVALID_ARGUMENT":
      case "ERR_XDS_DECODE":
      case "ERR_XDS_UNKNOWN_TYPE":
        return GrpcStatus.INVALID_ARGUMENT;
      case "ERR_XDS_UNAVAILABLE":
        return GrpcStatus.UNAVAILABLE;
      default:
        return GrpcStatus.INTERNAL;
    }
  }
  return GrpcStatus.INTERNAL;
}
