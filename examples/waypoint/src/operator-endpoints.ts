/**
 * The waypoint's operator endpoints, as istio-proxy serves them: readiness (`/healthz/ready`, 503 until
 * the certificate and the configuration are in), Prometheus (`/metrics`, `/stats/prometheus`) and the
 * admin listener (`/config_dump`, `/recent_requests`), which only ever binds a loopback address.
 */
import { once } from "node:events";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { adminJson, isLocalAuthority } from "@ambient/example-ztunnel";
import type { Registry } from "prom-client";
import { WaypointError } from "./errors.js";

/** Ports of the operator endpoints; 0 picks an ephemeral port. */
export interface OperatorPorts {
  /** Admin (`/config_dump`, `/recent_requests`). Default 15000; Envoy admin `proxyAdminPort`. */
  admin: number;
  /** Prometheus (`/metrics`, `/stats/prometheus`). Default 15020; istio-agent `STATS_PORT`. */
  metrics: number;
  /** Readiness (`/healthz/ready`). Default 15021; istio-agent `statusPort`. */
  readiness: number;
}

/** Istio's ports. */
export const DEFAULT_OPERATOR_PORTS: Readonly<OperatorPorts> = Object.freeze({
  admin: 15000,
  metrics: 15020,
  readiness: 15021,
});

/** Where the operator endpoints ended up (`ip:port`). */
export interface OperatorAddresses {
  admin: string;
  metrics: string;
  readiness: string;
}

export interface OperatorEndpointsOptions {
  /** Address of the readiness and metrics listeners (the waypoint's own). */
  ip: string;
  /** Address of the admin listener; must be a loopback address. */
  adminIp: string;
  ports: OperatorPorts;
  isReady(): boolean;
  registry: Registry;
  configDump(): unknown;
  /** `/recent_requests` on the admin listener (the requests of the last minute); answers 404 when absent. */
  recentRequests?: () => unknown;
}

/** Whether `ip` is IPv4 127.0.0.0/8 or IPv6 `::1`: an address no other host can reach. */
export function isLoopback(ip: string): boolean {
  return /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(ip) || ip === "::1";
}

async function listen(server: Server, host: string, port: number): Promise<string> {
  server.listen(port, host);
  try {
    await once(server, "listening");
  } catch (cause) {
    throw new WaypointError("ERR_WAYPOINT_LISTEN", `cannot listen on ${host}:${port}`, { cause });
  }
  const a = server.address() as AddressInfo;
  return a.family === "IPv6" ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function stop(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    if (server.listening) server.close(() => resolve());
    else resolve();
  });
}

/** Binds the three listeners; rejects (and closes what it bound) when one cannot listen. */
export async function startOperatorEndpoints(
  options: OperatorEndpointsOptions,
): Promise<{ addresses: OperatorAddresses; close(): Promise<void> }> {
  if (!isLoopback(options.adminIp)) {
    throw new WaypointError(
      "ERR_WAYPOINT_INVALID_OPTION",
      `adminIp ${JSON.stringify(options.adminIp)} is not a loopback address`,
    );
  }
  const notFound = (res: ServerResponse) =>
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  const path = (url: string | undefined) => (url ?? "").split("?")[0];
  const adminRoutes = new Map<string, () => unknown>([["/config_dump", options.configDump]]);
  if (options.recentRequests !== undefined) adminRoutes.set("/recent_requests", options.recentRequests);
  const admin = createServer((req, res) => {
    // A page whose name was rebound to 127.0.0.1 sends its own name as Host: not answered.
    if (!isLocalAuthority(req.headers.host)) {
      res
        .writeHead(403, { "content-type": "text/plain" })
        .end("the admin endpoints answer requests addressed to an IP address or localhost only\n");
      return;
    }
    const route = req.method === "GET" ? adminRoutes.get(path(req.url) ?? "") : undefined;
    if (route === undefined) return notFound(res);
    let text: string;
    try {
      text = adminJson(route());
    } catch (err) {
      res.writeHead(500, { "content-type": "text/plain" }).end(`${(err as Error).message}\n`);
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(text);
  });
  const metrics = createServer((req, res) => {
    const p = path(req.url);
    if (p !== "/metrics" && p !== "/stats/prometheus") return notFound(res);
    options.registry.metrics().then(
      (text) => res.writeHead(200, { "content-type": options.registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${err.message}\n`),
    );
  });
  const readiness = createServer((req, res) => {
    if (path(req.url) !== "/healthz/ready") return notFound(res);
    const ready = options.isReady();
    res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "not ready\n");
  });
  const servers = [admin, metrics, readiness];
  const close = async () => {
    await Promise.all(servers.map(stop));
  };
  try {
    const [a, m, r] = await Promise.all([
      listen(admin, options.adminIp, options.ports.admin),
      listen(metrics, options.ip, options.ports.metrics),
      listen(readiness, options.ip, options.ports.readiness),
    ]);
    return { addresses: { admin: a, metrics: m, readiness: r }, close };
  } catch (err) {
    await close();
    throw err;
  }
}
