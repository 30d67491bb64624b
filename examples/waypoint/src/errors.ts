import { brandErrorClass } from "@ambient/telemetry";

/** Stable codes of {@link WaypointError}. */
export type WaypointErrorCode =
  | "ERR_WAYPOINT_INVALID_OPTION"
  | "ERR_WAYPOINT_LISTEN"
  | "ERR_WAYPOINT_UNKNOWN_ENDPOINT"
  | "ERR_WAYPOINT_RESOLVE"
  | "ERR_WAYPOINT_CLOSED"
  | "ERR_WAYPOINT_INVALID_REQUEST_AUTHENTICATION";

/** Extra fields carried by a {@link WaypointError}. */
export interface WaypointErrorDetails {
  cause?: unknown;
  [key: string]: unknown;
}

/** The one error class of the waypoint. */
export class WaypointError extends Error {
  readonly code: WaypointErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: WaypointErrorCode, message: string, { cause, ...details }: WaypointErrorDetails = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "WaypointError";
    this.code = code;
    this.details = details;
  }
}

brandErrorClass(WaypointError, "@ambient/example-waypoint.error");
