/**
 * The floor of the waypoint bench: the smallest honest Node reverse proxy doing haproxy's job there,
 * to show what `node:https` alone costs per request on the machine. Mutual TLS 1.3 in, haproxy's
 * routing ACLs as plain JS, a kept-alive mutual TLS 1.3 `node:https` request out, bodies piped both
 * ways. No metrics, no policy, no HBONE, no xDS: not a waypoint, a lower bound for one.
 * Usage: node --import tsx node-https-proxy.ts <config.json>, where the file holds a
 * {@link NodeHttpsProxyConfig}; prints "ready" once it listens.
 */
import { readFileSync } from "node:fs";
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import { Agent, createServer, request } from "node:https";
import { fileURLToPath } from "node:url";

/** What the proxy process does. */
export interface NodeHttpsProxyConfig {
  listenHost: string;
  listenPort: number;
  /** The server end every routed request goes to (one backend, as haproxy's `backend api`). */
  upstreamHost: string;
  upstreamPort: number;
  /** The Host the routes answer for (haproxy's `api_host` ACL): with or without `:80`. */
  routeHost: string;
  /** The proxy's certificate chain, key, and the mesh root both sides are verified against. */
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** The request fields haproxy's ACLs look at. */
export interface RouteRequest {
  method: string;
  host: string | undefined;
  /** The request target as received (origin-form or absolute-form). */
  url: string;
  /** The `x-admin` header, duplicates joined with ", " as Node joins them. */
  xAdmin: string | undefined;
}

/** The path of a request target without its query, as haproxy's `path` fetch gives it. */
function pathOf(url: string): string {
  let start = 0;
  if (!url.startsWith("/")) {
    // absolute-form: skip "scheme://authority"
    const scheme = url.indexOf("://");
    if (scheme < 0) return url;
    const slash = url.indexOf("/", scheme + 3);
    if (slash < 0) return "/";
    start = slash;
  }
  const query = url.indexOf("?", start);
  return query < 0 ? url.slice(start) : url.slice(start, query);
}

/**
 * Whether haproxy's rules (see haproxyConfig() in waypoint-topology.ts) send the request to the
 * backend; false means 404. Host first, then /healthz exactly, GET /static*, /admin* with an
 * `x-admin: yes` value, /api*.
 */
export function routesToBackend(req: RouteRequest, routeHost: string): boolean {
  const host = req.host?.toLowerCase();
  if (host !== routeHost && host !== `${routeHost}:80`) return false;
  const path = pathOf(req.url);
  if (path === "/healthz") return true;
  if (path.startsWith("/static") && req.method === "GET") return true;
  if (path.startsWith("/admin") && req.xAdmin?.split(",").some((v) => v.trim() === "yes")) return true;
  return path.startsWith("/api");
}

/** Connection-specific fields of RFC 9110 section 7.6.1; a proxy never forwards them. */
const HOP_BY_HOP = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "te",
  "transfer-encoding",
  "upgrade",
]);

/** `headers` without the hop-by-hop fields and those the Connection header names. */
export function withoutHopByHop(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = headers.connection?.toLowerCase().split(",");
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (HOP_BY_HOP.has(name)) continue;
    if (named?.some((n) => n.trim() === name)) continue;
    out[name] = headers[name];
  }
  return out;
}

/** haproxy's `timeout client`, `timeout server` and `timeout http-keep-alive` in the bench config. */
const IDLE_TIMEOUT_MS = 120_000;

function startProxy(config: NodeHttpsProxyConfig): void {
  const tls = {
    cert: readFileSync(config.certFile),
    key: readFileSync(config.keyFile),
    ca: readFileSync(config.caFile),
    minVersion: "TLSv1.3" as const,
  };
  const agent = new Agent({
    ...tls,
    keepAlive: true,
    timeout: IDLE_TIMEOUT_MS,
    // SPIFFE certificates name a URI, not a host: the chain is verified, the name is not (as haproxy's
    // `verify required` without `verifyhost`).
    checkServerIdentity: () => undefined,
  });
  const notFound = (res: ServerResponse) => {
    res.writeHead(404, { "content-length": 0 });
    res.end();
  };
  const proxy = (req: IncomingMessage, res: ServerResponse) => {
    // Node gives an array for set-cookie alone; other repeated fields come joined with ", ".
    const xAdmin = req.headers["x-admin"] as string | undefined;
    const routed = routesToBackend(
      { method: req.method ?? "", host: req.headers.host, url: req.url ?? "", xAdmin },
      config.routeHost,
    );
    if (!routed) {
      req.resume();
      notFound(res);
      return;
    }
    const upstream = request(
      {
        agent,
        host: config.upstreamHost,
        port: config.upstreamPort,
        method: req.method,
        path: req.url,
        headers: withoutHopByHop(req.headers),
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, withoutHopByHop(answer.headers));
        answer.pipe(res);
        answer.on("error", () => res.destroy());
      },
    );
    upstream.on("socket", (socket) => socket.setNoDelay(true));
    // The agent's socket timeout: an answer that stalls that long fails the request.
    upstream.on("timeout", () => upstream.destroy(new Error("upstream timeout")));
    upstream.on("error", () => {
      if (res.headersSent) {
        res.destroy();
      } else {
        res.writeHead(502, { "content-length": 0 });
        res.end();
      }
    });
    req.on("error", () => upstream.destroy());
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  };
  const server = createServer({ ...tls, requestCert: true, rejectUnauthorized: true }, proxy);
  server.keepAliveTimeout = IDLE_TIMEOUT_MS;
  server.headersTimeout = 60_000;
  server.listen(config.listenPort, config.listenHost, () => console.log("ready"));
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  startProxy(JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as NodeHttpsProxyConfig);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(0));
}
