// The node listeners that are not data path: admin (`/config_dump`, `/recent_connections`), Prometheus
// metrics and readiness.
import { createServer, type Server, type ServerResponse } from "node:http";
import type * as prom from "prom-client";
import { adminJson } from "./admin-json.js";
import { isLocalAuthority } from "./local-authority.js";
import type { Logger } from "./telemetry.js";

export interface AdminServers {
  /** `/config_dump` and `/recent_connections`; ztunnel `ADMIN_PORT` 15000. */
  admin: Server;
  /** `/metrics` and `/stats/prometheus`; ztunnel `STATS_PORT` 15020. */
  metrics: Server;
  /** `/healthz/ready`; ztunnel `READINESS_PORT` 15021. */
  readiness: Server;
}

/** One access log line kept for `/recent_connections`: its fields, when it was written and its order. */
export interface RecentConnection {
  /** Increases by one per line since the proxy started. */
  seq: number;
  /** ISO 8601 time the line was written (the connection's end). */
  time: string;
  /** `connection complete` (with `error` when refused or failed) or `connection failed`. */
  message: string;
  /** The access log fields: `src.addr`, `src.workload`, `dst.identity`, `bytes_sent`, `error`, ... */
  fields: Record<string, unknown>;
}

/** The body of `/recent_connections`. */
export interface RecentConnections {
  /** When this proxy started: a new value means `seq` started again. */
  startedAt: string;
  /** Oldest first; at most `maxEntries`, none older than `windowMs`. */
  connections: RecentConnection[];
}

/** Options of {@link createConnectionHistory}. */
export interface ConnectionHistoryOptions {
  /** Lines kept at most. Default 500. */
  maxEntries?: number;
  /** How long a line is kept. Default 60 000 ms: what a dashboard shows as "the last minute". */
  windowMs?: number;
  now?: () => number;
}

/** The access log lines of the last minute, kept in memory for the admin endpoint. */
export interface ConnectionHistory {
  /** `inner`, plus a copy of every `connection complete` and `connection failed` line. */
  logger: Logger;
  recent(): RecentConnections;
}

const ACCESS_LOG_MESSAGES = new Set(["connection complete", "connection failed"]);

/**
 * Keeps the access log (the `connection complete` and `connection failed` lines the data path writes)
 * for `/recent_connections`, by sitting in front of the proxy's logger: the data path logs as before,
 * and operators' tools can read who connected to whom, with how many bytes, and which policy refused
 * what, without scraping logs. Bounded in count and age.
 */
export function createConnectionHistory(
  inner: Logger,
  options: ConnectionHistoryOptions = {},
): ConnectionHistory {
  const maxEntries = options.maxEntries ?? 500;
  const windowMs = options.windowMs ?? 60_000;
  const now = options.now ?? Date.now;
  const startedAt = new Date(now()).toISOString();
  const entries: { at: number; entry: RecentConnection }[] = [];
  let seq = 0;
  const prune = (at: number) => {
    while (entries.length > maxEntries || (entries[0] !== undefined && at - entries[0].at > windowMs)) {
      entries.shift();
    }
  };
  const keep = (obj: object, msg: string | undefined) => {
    if (msg === undefined || !ACCESS_LOG_MESSAGES.has(msg)) return;
    const at = now();
    seq++;
    entries.push({
      at,
      entry: { seq, time: new Date(at).toISOString(), message: msg, fields: { ...obj } },
    });
    prune(at);
  };
  const logger: Logger = {
    debug: (obj, msg) => inner.debug(obj, msg),
    info: (obj, msg) => {
      keep(obj, msg);
      inner.info(obj, msg);
    },
    warn: (obj, msg) => {
      keep(obj, msg);
      inner.warn(obj, msg);
    },
    error: (obj, msg) => {
      keep(obj, msg);
      inner.error(obj, msg);
    },
  };
  return {
    logger,
    recent() {
      prune(now());
      return { startedAt, connections: entries.map((e) => e.entry) };
    },
  };
}

/** The answer to a request whose Host is not an IP literal or localhost (see {@link isLocalAuthority}). */
const REFUSED_HOST = "the admin endpoints answer requests addressed to an IP address or localhost only\n";

export function createAdminServers(options: {
  configDump(): unknown;
  /** `/recent_connections`; answers 404 when absent. */
  recentConnections?: () => RecentConnections;
  registry: prom.Registry;
  isReady(): boolean;
  /** `POST /quitquitquit` was answered: the proxy should shut down (ztunnel's admin endpoint). */
  onQuit?: () => void;
}): AdminServers {
  const sendJson = (res: ServerResponse, status: number, body: unknown): void => {
    const text = adminJson(body);
    res.writeHead(status, { "content-type": "application/json" }).end(text);
  };
  const admin = createServer((req, res) => {
    if (!isLocalAuthority(req.headers.host)) {
      res.writeHead(403, { "content-type": "text/plain" }).end(REFUSED_HOST);
      return;
    }
    if (req.url === "/config_dump") sendJson(res, 200, options.configDump());
    else if (req.url === "/recent_connections" && options.recentConnections !== undefined) {
      sendJson(res, 200, options.recentConnections());
    } else if (req.url === "/quitquitquit" && options.onQuit !== undefined) {
      const onQuit = options.onQuit;
      if (req.method !== "POST") res.writeHead(405, { allow: "POST" }).end();
      // The answer is sent before the shutdown begins, which closes this server in the end.
      else res.writeHead(200, { "content-type": "text/plain" }).end("shutdown now\n", () => onQuit());
    } else res.writeHead(404).end("not found\n");
  });
  const metrics = createServer((req, res) => {
    if (req.url === "/metrics" || req.url === "/stats/prometheus") {
      options.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": options.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else res.writeHead(404).end("not found\n");
  });
  const readiness = createServer((req, res) => {
    if (req.url === "/healthz/ready") {
      const ready = options.isReady();
      res.writeHead(ready ? 200 : 503).end(ready ? "ready\n" : "not ready\n");
    } else res.writeHead(404).end("not found\n");
  });
  return { admin, metrics, readiness };
}
