// The node listeners that are not data path: admin (`/config_dump`), Prometheus metrics and readiness.
import { createServer, type Server, type ServerResponse } from "node:http";
import type * as prom from "prom-client";
import { adminJson } from "./admin-json.js";

export interface AdminServers {
  /** `/config_dump`; ztunnel `ADMIN_PORT` 15000. */
  admin: Server;
  /** `/metrics` and `/stats/prometheus`; ztunnel `STATS_PORT` 15020. */
  metrics: Server;
  /** `/healthz/ready`; ztunnel `READINESS_PORT` 15021. */
  readiness: Server;
}

export function createAdminServers(options: {
  configDump(): unknown;
  registry: prom.Registry;
  isReady(): boolean;
}): AdminServers {
  const sendJson = (res: ServerResponse, status: number, body: unknown): void => {
    const text = adminJson(body);
    res.writeHead(status, { "content-type": "application/json" }).end(text);
  };
  const admin = createServer((req, res) => {
    if (req.url === "/config_dump") sendJson(res, 200, options.configDump());
    else res.writeHead(404).end("not found\n");
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
