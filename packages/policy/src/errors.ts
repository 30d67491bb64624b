import { brandErrorClass } from "@ambient/telemetry";

/**
 * Stable error codes of `@ambient/policy`. Each names the rule that was broken.
 */
export type PolicyErrorCode =
  /** The text is not valid YAML or JSON. */
  | "ERR_POLICY_YAML"
  /** A resource is not a supported kind or apiVersion. */
  | "ERR_POLICY_UNSUPPORTED_KIND"
  /** A resource breaks a validation rule; `details.issues` lists every field path and reason. */
  | "ERR_POLICY_INVALID"
  /** A wire-form `istio.security.Authorization` is malformed (bad address length, unknown enum, ...). */
  | "ERR_WIRE_INVALID"
  /** An authorization request is malformed (bad IP address, port out of range, ...). */
  | "ERR_REQUEST_INVALID"
  /**
   * A request path is refused by path normalization (`%00`, a malformed escape, a control or
   * non-ASCII character, no leading `/`): answer 400 Bad Request. `details.reason` says why.
   */
  | "ERR_POLICY_BAD_PATH"
  /** A request method is not an upper-case token (Istio refuses `get`): answer 400 Bad Request. */
  | "ERR_POLICY_BAD_METHOD";

/** One validation problem, with the field path it was found at. */
export interface ValidationIssue {
  /** Dotted field path, e.g. `spec.rules[1].from[0].source.ipBlocks[2]`. */
  readonly path: string;
  /** What is wrong, e.g. `not a CIDR`. */
  readonly message: string;
}

/** Extra fields carried by a {@link PolicyError}. */
export interface PolicyErrorDetails {
  cause?: unknown;
  /** Validation issues, for `ERR_POLICY_INVALID`. */
  issues?: readonly ValidationIssue[];
  [key: string]: unknown;
}

/**
 * The one error class of `@ambient/policy`. `instanceof` works across the ESM and CJS copies
 * of the package thanks to a `Symbol.for` brand.
 */
export class PolicyError extends Error {
  override readonly name = "PolicyError";
  readonly code: PolicyErrorCode;
  /** Validation issues (empty unless `code` is `ERR_POLICY_INVALID`). */
  readonly issues: readonly ValidationIssue[];
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: PolicyErrorCode, message: string, details: PolicyErrorDetails = {}) {
    const { cause, issues, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.issues = issues ?? [];
    this.details = rest;
  }
}

brandErrorClass(PolicyError, "@ambient/policy.error");
