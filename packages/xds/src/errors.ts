import { brandErrorClass } from "@ambient/telemetry";

/** Stable error codes of {@link XdsError}. */
export type XdsErrorCode =
  | "ERR_XDS_UNKNOWN_TYPE"
  | "ERR_XDS_DECODE"
  | "ERR_XDS_ENCODE"
  | "ERR_XDS_UNKNOWN_FIELD"
  | "ERR_XDS_INVALID_ARGUMENT"
  | "ERR_XDS_UNAUTHENTICATED"
  | "ERR_XDS_PERMISSION_DENIED"
  | "ERR_XDS_STREAM"
  | "ERR_XDS_UNAVAILABLE"
  | "ERR_XDS_CLOSED";

/** Extra fields carried by an {@link XdsError}. */
export interface XdsErrorDetails {
  cause?: unknown;
  typeUrl?: string;
  resourceName?: string;
  grpcCode?: number;
  /** Path of the offending field from the encoded message, e.g. `groups[0].rules[0].source_ips`. */
  field?: string;
  /** Full name of the message the offending field was checked against, e.g. `istio.security.Match`. */
  messageType?: string;
}

/** The one error class of @ambient/xds; `instanceof` works across the ESM and CJS builds. */
export class XdsError extends Error {
  readonly code: XdsErrorCode;
  readonly typeUrl: string | undefined;
  readonly resourceName: string | undefined;
  readonly grpcCode: number | undefined;
  readonly field: string | undefined;
  readonly messageType: string | undefined;

  constructor(code: XdsErrorCode, message: string, details: XdsErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "XdsError";
    this.code = code;
    this.typeUrl = details.typeUrl;
    this.resourceName = details.resourceName;
    this.grpcCode = details.grpcCode;
    this.field = details.field;
    this.messageType = details.messageType;
  }
}

brandErrorClass(XdsError, "@ambient/xds.error");
