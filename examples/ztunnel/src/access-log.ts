// Access log: one line per finished connection, with the keys Istio's ztunnel writes for its
// `connection complete` event, so log queries written for ztunnel work here too. Info level when the
// connection ended cleanly, error level (with `error`) when it was refused or failed, as ztunnel does.
import type { Workload } from "@ambient/xds";
import type { Logger } from "./telemetry.js";

/** Who a connection was between, as far as the proxy knows when it starts. */
export interface AccessLogParties {
  direction: "inbound" | "outbound";
  /** Source `ip:port`. */
  srcAddr: string;
  /** The source's mesh workload, when it is one. */
  source?: Workload | undefined;
  /** Source identity, only when mutual TLS proved it (ztunnel logs none otherwise). */
  srcIdentity?: string;
  /** L4 address: dialled (outbound) or accepted on (inbound), `ip:port`. */
  dstAddr: string;
  /** The HBONE `:authority` (`ip:port` inside the tunnel), when tunnelled. */
  hboneAddr?: string;
  destination?: Workload | undefined;
  /** `hostname` of the Service addressed, if any. */
  destinationService?: string;
  /** Destination identity, only when mutual TLS is (or was to be) used. */
  dstIdentity?: string;
}

/** How a connection ended. */
export interface AccessLogOutcome {
  /** Bytes the local pod sent: outbound, toward the destination; inbound, back to the source. */
  sent: number;
  /** Bytes the local pod received. */
  received: number;
  durationMs: number;
  /** Why it ended badly, if it did. */
  error?: string;
}

/** The key/value record of a `connection complete` line; absent values are left out, as in ztunnel. */
export function accessLogRecord(
  parties: AccessLogParties,
  outcome: AccessLogOutcome,
): Record<string, string | number> {
  const record: Record<string, string | number> = { "src.addr": parties.srcAddr };
  const put = (key: string, value: string | undefined) => {
    if (value !== undefined && value !== "") record[key] = value;
  };
  put("src.workload", parties.source?.name || parties.source?.canonicalName);
  put("src.namespace", parties.source?.namespace);
  put("src.identity", parties.srcIdentity);
  put("src.cluster", parties.source?.clusterId);
  record["dst.addr"] = parties.dstAddr;
  put("dst.hbone_addr", parties.hboneAddr);
  put("dst.service", parties.destinationService);
  put("dst.workload", parties.destination?.name || parties.destination?.canonicalName);
  put("dst.namespace", parties.destination?.namespace);
  put("dst.identity", parties.dstIdentity);
  put("dst.cluster", parties.destination?.clusterId);
  record.direction = parties.direction;
  record.bytes_sent = Math.max(0, outcome.sent);
  record.bytes_recv = Math.max(0, outcome.received);
  record.duration = `${Math.max(0, Math.round(outcome.durationMs))}ms`;
  put("error", outcome.error);
  return record;
}

/** A connection being logged: `complete` writes its one line (later calls do nothing). */
export interface AccessLogEntry {
  complete(outcome: { sent: number; received: number; error?: string }): void;
}

const defaultNow = (): number => performance.now();

/** Starts the clock on a connection whose parties are known. */
export function startAccessLog(
  logger: Logger,
  parties: AccessLogParties,
  now: () => number = defaultNow,
): AccessLogEntry {
  return new PendingAccessLog(logger, parties, now);
}

/** One object per open connection (no closure over the caller's scope): what its line needs, no more. */
class PendingAccessLog implements AccessLogEntry {
  readonly #logger: Logger;
  readonly #parties: AccessLogParties;
  readonly #now: () => number;
  readonly #started: number;
  #done = false;

  constructor(logger: Logger, parties: AccessLogParties, now: () => number) {
    this.#logger = logger;
    this.#parties = parties;
    this.#now = now;
    this.#started = now();
  }

  complete(outcome: { sent: number; received: number; error?: string }): void {
    if (this.#done) return;
    this.#done = true;
    const logger = this.#logger;
    const level = outcome.error === undefined ? "info" : "error";
    // pino can say whether the line would be written at all; then the record is not built for nothing.
    if ((logger as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled?.(level) === false) return;
    const record = accessLogRecord(this.#parties, { ...outcome, durationMs: this.#now() - this.#started });
    logger[level](record, "connection complete");
  }
}

/**
 * A connection refused before its destination was known (no endpoint, no waypoint workload, a bad
 * authority): ztunnel's warn-level `connection failed`, with only the addresses and the error.
 */
export function logConnectionFailed(
  logger: Logger,
  failure: { direction: "inbound" | "outbound"; srcAddr: string; dstAddr: string; error: string },
): void {
  logger.warn(
    {
      "src.addr": failure.srcAddr,
      "dst.addr": failure.dstAddr,
      direction: failure.direction,
      error: failure.error,
    },
    "connection failed",
  );
}

/** The message of a thrown value. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
