/**
 * The waypoint's requests of the last minute, for the admin endpoint `/recent_requests`: each access
 * log entry (with `authorization`, the policy that decided it) numbered and kept in memory, bounded in
 * count and age, as the ztunnel keeps its connections for `/recent_connections`. Operators' tools read
 * who asked what of whom and which policy refused it without scraping logs.
 */
import type { AuthorizationDecision, PolicyExplanation } from "@ambient/policy";
import type { AccessLogEntry, FinishedRequest } from "@ambient/router";

/** One finished request kept for `/recent_requests`. */
export interface RecentRequest {
  /** Increases by one per request since the waypoint started. */
  seq: number;
  /** ISO 8601 time the request finished (was recorded). */
  time: string;
  /** The access log entry, `authorization` included. */
  fields: AccessLogEntry;
}

/** The body of `/recent_requests`. */
export interface RecentRequests {
  /** When this waypoint started: a new value means `seq` started again. */
  startedAt: string;
  /** Oldest first; at most `maxEntries`, none older than `windowMs`. */
  requests: RecentRequest[];
}

/** Options of {@link createRequestHistory}. */
export interface RequestHistoryOptions {
  /** Requests kept at most. Default 500. */
  maxEntries?: number;
  /** How long a request is kept. Default 60 000 ms: what a dashboard shows as "the last minute". */
  windowMs?: number;
  now?: () => number;
}

/** The requests of the last minute, in memory. */
export interface RequestHistory {
  /** Keeps one finished request; the router's `onRequestFinished`. Its entry is built when read. */
  record(request: FinishedRequest): void;
  recent(): RecentRequests;
}

/**
 * Creates a {@link RequestHistory}; `startedAt` is the time of this call. Recording is a few stores into
 * a ring: the access log entries (and their time strings) are built only when `/recent_requests` is read,
 * as that page is read far less often than requests arrive.
 */
export function createRequestHistory(options: RequestHistoryOptions = {}): RequestHistory {
  const maxEntries = Math.max(1, options.maxEntries ?? 500);
  const windowMs = options.windowMs ?? 60_000;
  const now = options.now ?? Date.now;
  const startedAt = new Date(now()).toISOString();
  const requests: (FinishedRequest | undefined)[] = new Array(maxEntries).fill(undefined);
  const times = new Array<number>(maxEntries).fill(0);
  let oldest = 0; // slot of the oldest kept request
  let size = 0;
  let seq = 0; // of the newest request
  const prune = (at: number) => {
    while (size > 0 && at - (times[oldest] as number) > windowMs) {
      requests[oldest] = undefined;
      oldest = (oldest + 1) % maxEntries;
      size--;
    }
  };
  return {
    record(request) {
      const at = now();
      seq++;
      if (size === maxEntries) {
        requests[oldest] = undefined;
        oldest = (oldest + 1) % maxEntries;
        size--;
      }
      const slot = (oldest + size) % maxEntries;
      requests[slot] = request;
      times[slot] = at;
      size++;
      prune(at);
    },
    recent() {
      prune(now());
      const out: RecentRequest[] = [];
      for (let i = 0; i < size; i++) {
        const slot = (oldest + i) % maxEntries;
        out.push({
          seq: seq - size + 1 + i,
          time: new Date(times[slot] as number).toISOString(),
          fields: (requests[slot] as FinishedRequest).accessLogEntry(),
        });
      }
      return { startedAt, requests: out };
    },
  };
}

/**
 * The decision with the policy that decided it named, also when the engine names none: a request that
 * no ALLOW policy allowed is refused by the ALLOW policies that apply to it (`explain` lists them; more
 * than one are joined with `, `), as Istio reports such a denial against its ALLOW policies. Other
 * decisions are returned unchanged; so is this one when `explain` fails or lists no ALLOW policy.
 */
export function withDecidingPolicy(
  decision: AuthorizationDecision,
  explain: () => readonly PolicyExplanation[],
): AuthorizationDecision {
  if (decision.allowed || decision.badRequest === true || decision.policy !== undefined) return decision;
  let names: string[];
  try {
    names = explain()
      .filter((p) => p.action === "ALLOW" && !p.dryRun)
      .map((p) => p.policy);
  } catch {
    return decision;
  }
  return names.length === 0 ? decision : { ...decision, policy: names.join(", "), action: "ALLOW" };
}
