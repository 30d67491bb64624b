import { brandErrorClass } from "@ambient/telemetry";

/** Stable codes of {@link ZtunnelError}. */
export type ZtunnelErrorCode =
  | "ERR_ZTUNNEL_INVALID_OPTION"
  | "ERR_SOCKS5_PROTOCOL"
  | "ERR_SOCKS5_UNSUPPORTED"
  | "ERR_ZTUNNEL_LISTEN"
  | "ERR_ZTUNNEL_CLOSED"
  /** In-pod mode: a pod handed over is not a workload of this node in xDS. */
  | "ERR_ZTUNNEL_UNKNOWN_WORKLOAD"
  /** An endpoint known by hostname could not be resolved to an address (no answer, no A record). */
  | "ERR_ZTUNNEL_RESOLVE"
  /** The SOCKS5 address of a proxy in in-pod or dedicated mode, which opens no SOCKS5 listener. */
  | "ERR_ZTUNNEL_NO_SOCKS5";

/** Extra fields carried by a {@link ZtunnelError}. */
export interface ZtunnelErrorDetails {
  cause?: unknown;
  [key: string]: unknown;
}

/** The one error class of the node proxy. */
export class ZtunnelError extends Error {
  readonly code: ZtunnelErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ZtunnelErrorCode, message: string, { cause, ...details }: ZtunnelErrorDetails = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ZtunnelError";
    this.code = code;
    this.details = details;
  }
}

brandErrorClass(ZtunnelError, "@ambient/example-ztunnel.error");
