import { brandErrorClass } from "@ambient/telemetry";

/** Stable error codes of the control plane. */
export type ControlPlaneErrorCode =
  | "ERR_CONTROL_PLANE_CONFIG"
  | "ERR_CONTROL_PLANE_STATE"
  | "ERR_CONTROL_PLANE_LISTEN"
  /** A ServiceEntry or WorkloadEntry that does not validate; its last good version is kept. */
  | "ERR_CONTROL_PLANE_INVALID_OBJECT";

export interface ControlPlaneErrorDetails {
  cause?: unknown;
  [key: string]: unknown;
}

/** The one error class of the control plane. */
export class ControlPlaneError extends Error {
  readonly code: ControlPlaneErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ControlPlaneErrorCode, message: string, details: ControlPlaneErrorDetails = {}) {
    const { cause, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ControlPlaneError";
    this.code = code;
    this.details = rest;
  }
}

brandErrorClass(ControlPlaneError, "@ambient/example-control-plane.error");
