import { brandErrorClass } from "@ambient/telemetry";

/**
 * Stable error codes of `@ambient/cli`. Each names what went wrong; the message says what to do.
 */
export type CliErrorCode =
  /** A flag or argument is malformed (an address that is not `ip:port`, an unknown output format, ...). */
  | "ERR_CLI_USAGE"
  /** A ztunnel admin endpoint could not be reached or did not answer in time. */
  | "ERR_ADMIN_UNREACHABLE"
  /** A ztunnel admin endpoint answered something that is not a `/config_dump` document. */
  | "ERR_ADMIN_RESPONSE"
  /** The `/config_dump` has no section for what was asked (e.g. an older ztunnel without `connections`). */
  | "ERR_NOT_IN_CONFIG_DUMP"
  /** No ztunnel among the admin addresses serves the node given with `--node`. */
  | "ERR_NODE_NOT_FOUND"
  /** The manifests folder cannot be read. */
  | "ERR_MANIFESTS_UNREADABLE"
  /** A pod or service named on the command line is not in the manifests, or is ambiguous. */
  | "ERR_OBJECT_NOT_FOUND"
  /** An object named on the command line lacks a field the check needs (a pod IP, a service port). */
  | "ERR_OBJECT_INCOMPLETE";

/** Extra fields carried by a {@link CliError}. */
export interface CliErrorDetails {
  cause?: unknown;
  [key: string]: unknown;
}

/**
 * The one error class of `@ambient/cli`. Its message is one line that says what to do; `instanceof`
 * works across the ESM and CJS copies of the package thanks to a `Symbol.for` brand.
 */
export class CliError extends Error {
  override readonly name = "CliError";
  readonly code: CliErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: CliErrorCode, message: string, details: CliErrorDetails = {}) {
    const { cause, ...rest } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.code = code;
    this.details = rest;
  }
}

brandErrorClass(CliError, "@ambient/cli.error");

/** The longest timer Node keeps: a longer one fires at once. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * `timeoutMs` when it is a whole number of ms a timer can hold (1 to 2^31-1).
 * @throws CliError `ERR_CLI_USAGE` otherwise (0, NaN or a negative value would mean no deadline).
 */
export function checkedTimeoutMs(timeoutMs: unknown, where: string): number {
  if (
    typeof timeoutMs === "number" &&
    Number.isInteger(timeoutMs) &&
    timeoutMs > 0 &&
    timeoutMs <= MAX_TIMER_MS
  ) {
    return timeoutMs;
  }
  throw new CliError(
    "ERR_CLI_USAGE",
    `${where}: timeoutMs must be a whole number of ms from 1 to ${MAX_TIMER_MS}, not ${String(timeoutMs)}`,
  );
}

/**
 * Checks the options object of a library call: `required` keys must be strings, `optional` keys
 * strings when given. Library callers in plain JavaScript get a usage error, not a TypeError.
 * @throws CliError `ERR_CLI_USAGE` naming the call and the option.
 */
export function checkStringOptions(
  options: unknown,
  where: string,
  required: readonly string[],
  optional: readonly string[] = [],
): void {
  const needs = required.length === 0 ? "an options object" : `{ ${required.join(", ")} }`;
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new CliError("ERR_CLI_USAGE", `${where}: pass ${needs} as options`);
  }
  const record = options as Record<string, unknown>;
  const missing = required.filter((key) => record[key] === undefined);
  if (missing.length > 0) {
    throw new CliError("ERR_CLI_USAGE", `${where}: options need ${needs}; missing ${missing.join(", ")}`);
  }
  for (const key of [...required, ...optional]) {
    const value = record[key];
    if (value !== undefined && typeof value !== "string") {
      throw new CliError("ERR_CLI_USAGE", `${where}: options.${key} must be a string, not ${typeof value}`);
    }
  }
}

/**
 * Checks that `set` is what `loadManifests` returns.
 * @throws CliError `ERR_CLI_USAGE` otherwise.
 */
export function checkManifestSet(set: unknown, where: string): void {
  const record = set as { objects?: unknown; problems?: unknown } | null | undefined;
  if (
    record === null ||
    typeof record !== "object" ||
    !Array.isArray(record.objects) ||
    !Array.isArray(record.problems)
  ) {
    throw new CliError("ERR_CLI_USAGE", `${where}: the manifests must be what loadManifests(dir) returns`);
  }
}
