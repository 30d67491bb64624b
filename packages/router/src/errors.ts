import { brandErrorClass } from "@ambient/telemetry";

/**
 * Stable error codes of `@ambient/router`. Each names the rule that was broken.
 */
export type RouterErrorCode =
  /** A route object breaks a Gateway API rule; `details.field` holds the field path. */
  | "ERR_ROUTE_INVALID"
  /** A route uses a Gateway API feature this router does not implement (`details.field`). */
  | "ERR_ROUTE_UNSUPPORTED"
  /** A regular expression is malformed or could be too costly to evaluate (`details.field`). */
  | "ERR_REGEX_INVALID"
  /** A handler or table option is invalid. */
  | "ERR_OPTIONS_INVALID"
  /** The backend could not be connected to (refused, unreachable, `connect` threw). */
  | "ERR_UPSTREAM_CONNECT"
  /** The backend reset or closed the connection before or during the response. */
  | "ERR_UPSTREAM_RESET"
  /** The backend spoke broken HTTP. */
  | "ERR_UPSTREAM_PROTOCOL"
  /** The backend did not answer within the `backendRequest` timeout. */
  | "ERR_UPSTREAM_TIMEOUT"
  /**
   * A request body was to go upstream again (a retry) after more of it had been sent than the retry
   * buffer (`retryBufferBytes`) keeps: the attempt is not made rather than sent with a body cut short.
   */
  | "ERR_BODY_NOT_REPLAYABLE"
  /**
   * The client's request body did not finish (it reset its request, went away mid-body, or sent fewer
   * bytes than its `content-length`): the upstream request is reset, never ended as if it were whole.
   */
  | "ERR_BODY_INCOMPLETE"
  /** The handler was closed. */
  | "ERR_CLOSED";

/** Extra fields carried by a {@link RouterError}. */
export interface RouterErrorDetails {
  cause?: unknown;
  [key: string]: unknown;
}

/**
 * The one error class of `@ambient/router`. `instanceof` works across the ESM and CJS copies
 * of the package thanks to a `Symbol.for` brand.
 */
export class RouterError extends Error {
  override readonly name = "RouterError";
  readonly code: RouterErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: RouterErrorCode, message: string, details: RouterErrorDetails = {}) {
    const { cause, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.details = rest;
  }
}

brandErrorClass(RouterError, "@ambient/router.error");
