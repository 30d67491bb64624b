/**
 * The conditions a retry policy retries on, by Envoy's `retry_on` names: the list the handler's own
 * policy takes, the list an HTTPRoute `retry` stanza stands for, and an RDS route's `retry_on` string
 * read as Envoy reads it.
 */

/**
 * Conditions that trigger a retry (Envoy `retry_on` names, HTTP and gRPC ones alike):
 * - `5xx`: any 5xx response, a reset, a failed connect or a per-try timeout.
 * - `gateway-error`: a 502, 503 or 504 response, a reset, a failed connect or a per-try timeout.
 * - `reset`: a reset, a failed connect or a per-try timeout (no response).
 * - `reset-before-request`: a failure before any of the request reached the backend: a failed
 *   connect or a refused stream.
 * - `connect-failure`: a failed connect.
 * - `refused-stream`: an HTTP/2 stream the backend refused (`REFUSED_STREAM`).
 * - `retriable-4xx`: a 409 response.
 * - `retriable-status-codes`: a response whose status the policy lists.
 * - `envoy-ratelimited`: a response carrying `x-envoy-ratelimited` (never retried otherwise).
 * - `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`: a gRPC
 *   response with that `grpc-status` in its head (1, 4, 13, 8, 14).
 */
export type RetryOn =
  | "5xx"
  | "gateway-error"
  | "reset"
  | "reset-before-request"
  | "connect-failure"
  | "refused-stream"
  | "retriable-4xx"
  | "retriable-status-codes"
  | "envoy-ratelimited"
  | "unavailable"
  | "cancelled"
  | "deadline-exceeded"
  | "internal"
  | "resource-exhausted";

export const RETRY_ONS: readonly RetryOn[] = [
  "5xx",
  "gateway-error",
  "reset",
  "reset-before-request",
  "connect-failure",
  "refused-stream",
  "retriable-4xx",
  "retriable-status-codes",
  "envoy-ratelimited",
  "unavailable",
  "cancelled",
  "deadline-exceeded",
  "internal",
  "resource-exhausted",
];

/**
 * Envoy names that are valid but can never hold for this router, so they retry nothing, as in an
 * Envoy without what they need: `retriable-headers` (the route's `retriable_headers` matchers, which
 * istiod never writes and the router does not read) and `http3-post-connect-failure` (no HTTP/3 upstreams).
 */
const INERT_RETRY_ONS: ReadonlySet<string> = new Set(["retriable-headers", "http3-post-connect-failure"]);

/**
 * What an HTTPRoute rule's `retry` stanza retries on, as istiod converts it: connection errors and
 * gRPC UNAVAILABLE and CANCELLED always, a status only when `codes` lists it.
 */
export function gatewayApiRetryOn(codes: readonly number[]): readonly RetryOn[] {
  const on: RetryOn[] = ["connect-failure", "refused-stream", "unavailable", "cancelled"];
  if (codes.length > 0) on.push("retriable-status-codes");
  return on;
}

/**
 * An RDS `retry_on` string, comma-separated and read as Envoy reads it: names are trimmed, empty ones
 * skipped, and a name Envoy does not know is left out (`ignored`) rather than refused, as Envoy leaves
 * it out. The inert names ({@link INERT_RETRY_ONS}) are left out without being reported.
 */
export function parseRetryOn(value: string): { retryOn: readonly RetryOn[]; ignored: readonly string[] } {
  const retryOn: RetryOn[] = [];
  const ignored: string[] = [];
  for (const part of value.split(",")) {
    const name = part.trim();
    if (name === "" || INERT_RETRY_ONS.has(name)) continue;
    if ((RETRY_ONS as readonly string[]).includes(name)) {
      if (!retryOn.includes(name as RetryOn)) retryOn.push(name as RetryOn);
    } else if (!ignored.includes(name)) ignored.push(name);
  }
  return { retryOn, ignored };
}
