// The page's routes on the control plane's admin port: the page and its own script and style (nothing
// from elsewhere: the Content-Security-Policy allows only this origin), the data as JSON, and the same
// data as Server-Sent Events after every round of reads.
import { readFileSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { MeshCollector } from "./collector.js";

/** Where the page is served on the admin port. */
export const DASHBOARD_PATH = "/dashboard";

const PAGE_DIR = new URL("./page/", import.meta.url);
const ASSETS: Record<string, { file: string; type: string }> = {
  [DASHBOARD_PATH]: { file: "index.html", type: "text/html; charset=utf-8" },
  [`${DASHBOARD_PATH}/`]: { file: "index.html", type: "text/html; charset=utf-8" },
  [`${DASHBOARD_PATH}/app.js`]: { file: "app.js", type: "text/javascript; charset=utf-8" },
  [`${DASHBOARD_PATH}/app.css`]: { file: "app.css", type: "text/css; charset=utf-8" },
  [`${DASHBOARD_PATH}/favicon.svg`]: { file: "favicon.svg", type: "image/svg+xml" },
};
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
};
/** A comment line that keeps idle event streams open through proxies. */
const KEEPALIVE_MS = 15_000;
/** Event streams open at once; more are answered 503 (each costs a JSON copy of the data per second). */
export const MAX_EVENT_STREAMS = 32;

/** Serves the dashboard; `handle` returns false for paths that are not the dashboard's. */
export function createDashboardHandler(collector: MeshCollector): {
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  close(): void;
} {
  const bodies = new Map<string, Buffer>();
  for (const { file } of Object.values(ASSETS)) {
    if (!bodies.has(file)) bodies.set(file, readFileSync(new URL(file, PAGE_DIR)));
  }
  const streams = new Set<ServerResponse>();
  return {
    handle(req, res) {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      if (path !== DASHBOARD_PATH && !path.startsWith(`${DASHBOARD_PATH}/`)) return false;
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
        return true;
      }
      const asset = ASSETS[path];
      if (asset !== undefined) {
        res.writeHead(200, { "content-type": asset.type, ...SECURITY_HEADERS });
        res.end(req.method === "HEAD" ? undefined : bodies.get(asset.file));
      } else if (path === `${DASHBOARD_PATH}/data`) {
        res.writeHead(200, { "content-type": "application/json", ...SECURITY_HEADERS });
        res.end(req.method === "HEAD" ? undefined : `${JSON.stringify(collector.snapshot())}\n`);
      } else if (path === `${DASHBOARD_PATH}/events`) {
        if (streams.size >= MAX_EVENT_STREAMS) {
          res
            .writeHead(503, { "content-type": "text/plain", "retry-after": "5" })
            .end(`at most ${MAX_EVENT_STREAMS} pages may follow the mesh at once\n`);
          return true;
        }
        res.writeHead(200, {
          "content-type": "text/event-stream",
          connection: "keep-alive",
          ...SECURITY_HEADERS,
        });
        // A page that does not read (a stalled tab, a paused port-forward) gets nothing more until it
        // has taken what was written: then the latest snapshot, never a backlog of old ones.
        let behind: unknown;
        const send = (snapshot: unknown) => {
          if (res.writableNeedDrain) {
            behind = snapshot;
            return;
          }
          res.write(`event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
        };
        res.on("drain", () => {
          const latest = behind;
          behind = undefined;
          if (latest !== undefined) send(latest);
        });
        send(collector.snapshot());
        const unsubscribe = collector.subscribe(send);
        const keepalive = setInterval(() => {
          if (!res.writableNeedDrain) res.write(": keepalive\n\n");
        }, KEEPALIVE_MS);
        keepalive.unref();
        streams.add(res);
        res.once("close", () => {
          unsubscribe();
          clearInterval(keepalive);
          streams.delete(res);
        });
      } else {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      }
      return true;
    },
    close() {
      for (const res of streams) res.end();
      streams.clear();
    },
  };
}
