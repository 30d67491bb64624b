// Why a dial failed, read in one place: the errno of the failed connect (ours, or the one the peer
// ztunnel reported in its HBONE refusal), the SOCKS5 reply code (RFC 1928) a client gets for it, and
// the reason an inbound refusal carries back to the peer. Logs and metrics take the errno from here.
import { HBONE_STATUS, HboneError } from "@ambient/hbone";
import { ZtunnelError } from "./errors.js";
import { SOCKS5_REPLY } from "./socks5.js";
import type { MetricsSink } from "./telemetry.js";

/** What an errno looks like: `ECONNREFUSED`, `EADDRNOTAVAIL`. Anything else is not passed on. */
const ERRNO = /^E[A-Z0-9]{1,23}$/;

/**
 * The reason an inbound ztunnel refuses a tunnel with when the connect to the local app failed; the
 * errno follows in parentheses, so the peer can answer its client with the right reply code.
 */
export const UPSTREAM_CONNECT_FAILED = "upstream connect failed";

const REPORTED_ERRNO = new RegExp(`\\b${UPSTREAM_CONNECT_FAILED} \\((E[A-Z0-9]{1,23})\\)`);

/** Errnos of a connect that failed for lack of something on this node, not at the destination. */
const LOCAL_RESOURCE = new Set(["EADDRNOTAVAIL", "EADDRINUSE", "EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"]);

function validErrno(value: unknown): string | undefined {
  return typeof value === "string" && ERRNO.test(value) ? value : undefined;
}

/** The errno of a failed Node.js socket call (`err.code`), if it is one. */
export function errnoOf(err: unknown): string | undefined {
  if (err instanceof HboneError) return validErrno(err.nodeCode) ?? reportedErrnoOf(err);
  if (typeof err === "object" && err !== null && "code" in err) {
    return validErrno((err as { code: unknown }).code);
  }
  return undefined;
}

/** The errno a peer ztunnel named when it refused a tunnel because its upstream connect failed. */
function reportedErrnoOf(err: HboneError): string | undefined {
  if (err.code !== "ERR_HBONE_REFUSED" || err.status !== HBONE_STATUS.noUpstream) return undefined;
  return REPORTED_ERRNO.exec(err.message)?.[1];
}

/** The HBONE refusal reason for a failed connect to the local app: the errno and nothing else of ours. */
export function upstreamRefusalReason(err: unknown): string {
  const errno = errnoOf(err);
  return errno === undefined ? UPSTREAM_CONNECT_FAILED : `${UPSTREAM_CONNECT_FAILED} (${errno})`;
}

/**
 * The SOCKS5 reply for a connect that failed with `errno`. Only a refusal by the destination is
 * "connection refused"; a connect that failed for lack of a local address or port, descriptors or
 * memory (EADDRNOTAVAIL, EMFILE, ENOBUFS...) is a failure of the proxy: "general failure".
 */
export function socksReplyForErrno(errno: string | undefined): number {
  switch (errno) {
    case "ECONNREFUSED":
      return SOCKS5_REPLY.connectionRefused;
    case "EHOSTUNREACH":
    case "EHOSTDOWN":
    case "ENOTFOUND":
      return SOCKS5_REPLY.hostUnreachable;
    case "ENETUNREACH":
    case "ENETDOWN":
      return SOCKS5_REPLY.networkUnreachable;
    case "ETIMEDOUT":
      return SOCKS5_REPLY.ttlExpired;
    default:
      return SOCKS5_REPLY.generalFailure;
  }
}

/** SOCKS5 reply code for a failed dial: plain TCP, the HBONE connection, or the peer's refusal. */
export function socksReplyFor(err: unknown): number {
  if (err instanceof ZtunnelError && typeof err.details.reply === "number") return err.details.reply;
  if (err instanceof HboneError) {
    if (err.code === "ERR_HBONE_REFUSED") {
      if (err.status === HBONE_STATUS.denied) return SOCKS5_REPLY.notAllowed;
      // The peer's app connect failed and the peer said why; without a reason (another ztunnel, an
      // unknown destination) a refusal stays "connection refused".
      const reported = reportedErrnoOf(err);
      return reported === undefined ? SOCKS5_REPLY.connectionRefused : socksReplyForErrno(reported);
    }
    if (err.code === "ERR_HBONE_TIMEOUT") return SOCKS5_REPLY.ttlExpired;
    // The connection to the peer's HBONE port failed: the destination host is unreachable, unless
    // this node lacked what a connect needs or has no route.
    const errno = validErrno(err.nodeCode);
    if (errno !== undefined && LOCAL_RESOURCE.has(errno)) return SOCKS5_REPLY.generalFailure;
    if (errno === "ENETUNREACH" || errno === "ENETDOWN") return SOCKS5_REPLY.networkUnreachable;
    return SOCKS5_REPLY.hostUnreachable;
  }
  const errno = errnoOf(err);
  return errno === undefined ? SOCKS5_REPLY.generalFailure : socksReplyForErrno(errno);
}

/** Which connect failed: the inbound side's to the local app, or the outbound side's dial. */
export type DialDirection = "inbound" | "outbound";

/** `ztunnel_connect_failures_total{direction, errno}`: failed connects by errno. */
export interface DialFailureMetrics {
  /** Counts `err` and returns its errno (`unknown` when it carries none), for the log line. */
  record(direction: DialDirection, err: unknown): string;
}

/**
 * Errnos the metric names; any other is counted as `other`, so a peer cannot grow the label set with
 * made-up names in its refusals.
 */
const METRIC_ERRNOS = new Set([
  ...LOCAL_RESOURCE,
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EACCES",
  "EPERM",
  "EINVAL",
]);

export function createDialFailureMetrics(sink: MetricsSink): DialFailureMetrics {
  const failures = sink.counter(
    "ztunnel_connect_failures_total",
    "Connects that failed, by side and errno (the peer's, for an HBONE refusal that names one)",
    ["direction", "errno"],
  );
  return {
    record(direction, err) {
      const errno = errnoOf(err);
      const label = errno === undefined ? "unknown" : METRIC_ERRNOS.has(errno) ? errno : "other";
      failures.inc({ direction, errno: label });
      return errno ?? "unknown";
    },
  };
}
