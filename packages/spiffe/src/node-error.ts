import { status } from "@grpc/grpc-js";
import { SpiffeError, type SpiffeErrorCode } from "./errors.js";

/** Maps a gRPC/Node error from a certificate service call to a SpiffeError. */
export function fromGrpcError(err: unknown, what: string): SpiffeError {
  if (err instanceof SpiffeError) return err;
  const e = err as { code?: unknown; details?: unknown; message?: unknown };
  const detail = typeof e.details === "string" && e.details ? e.details : String(e.message ?? err);
  let code: SpiffeErrorCode = "ERR_CA_UNAVAILABLE";
  if (e.code === status.UNAUTHENTICATED) code = "ERR_UNAUTHENTICATED";
  else if (e.code === status.PERMISSION_DENIED) code = "ERR_PERMISSION_DENIED";
  else if (e.code === status.INVALID_ARGUMENT) code = "ERR_CA_SIGN_REFUSED";
  else if (typeof e.code === "string" && e.code.startsWith("ERR_SSL_")) code = "ERR_PEER_UNVERIFIED";
  return new SpiffeError(code, `${what}: ${detail}`, { cause: err, grpcCode: e.code });
}

/** The gRPC status a server answers with for a SpiffeError. */
export function toGrpcStatus(err: unknown): { code: status; details: string } {
  if (!(err instanceof SpiffeError)) return { code: status.INTERNAL, details: "internal error" };
  switch (err.code) {
    case "ERR_UNAUTHENTICATED":
      return { code: status.UNAUTHENTICATED, details: err.message };
    case "ERR_PERMISSION_DENIED":
      return { code: status.PERMISSION_DENIED, details: err.message };
    case "ERR_CSR_INVALID":
    case "ERR_CSR_IDENTITY_MISMATCH":
    case "ERR_CA_SIGN_REFUSED":
    case "ERR_SPIFFE_ID_INVALID":
      return { code: status.INVALID_ARGUMENT, details: err.message };
    default:
      return { code: status.INTERNAL, details: err.message };
  }
}
