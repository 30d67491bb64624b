import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AccessLogEntry } from "../src/request-log.js";
import type { Endpoint, ResolveBackend } from "../src/upstream.js";
import {
  createWaypointHandler,
  type TunnelInfo,
  type WaypointHandler,
  type WaypointHandlerOptions,
} from "../src/waypoint-handler.js";

/** An HTTP/1.1 backend on 127.0.0.1 that answers JSON describing what it received. */
export interface Backend {
  id: string;
  server: http.Server;
  port: number;
  requests: { method: string; url: string; headers: http.IncomingHttpHeaders; body: string }[];
  endpoint: Endpoint;
}

export type BackendHandler = (
  req: http.IncomingMessage,
  res: http.ServerResponse,
  body: string,
  backend: Backend,
) => void;

const echo: BackendHandler = (req, res, body, backend) => {
  const out = JSON.stringify({
    id: backend.id,
    method: req.method,
    url: req.url,
    headers: req.headers,
    body,
  });
  res.writeHead(200, { "content-type": "application/json", "x-backend": backend.id });
  res.end(out);
};

export async function startBackend(id: string, handler: BackendHandler = echo): Promise<Backend> {
  const backend = { id, requests: [] } as unknown as Backend;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      backend.requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      handler(req, res, body, backend);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  backend.server = server;
  backend.port = (server.address() as AddressInfo).port;
  backend.endpoint = { address: "127.0.0.1", port: backend.port, protocol: "http1" };
  return backend;
}

export async function stopServer(server: net.Server | http.Server): Promise<void> {
  (server as http.Server).closeAllConnections?.();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A waypoint listening on 127.0.0.1 that hands every accepted socket to `handle`. */
export interface Waypoint {
  handler: WaypointHandler;
  server: net.Server;
  port: number;
  info: TunnelInfo;
  close(): Promise<void>;
}

export async function startWaypoint(
  services: Record<string, readonly Endpoint[] | undefined>,
  options: Partial<WaypointHandlerOptions> & { routes: readonly unknown[] },
  info: TunnelInfo = {},
  /** `allowHalfOpen` for tunnels that carry a half-close through, as HBONE streams do. */
  serverOptions: net.ServerOpts = {},
): Promise<Waypoint> {
  const resolveBackend: ResolveBackend = (b) => services[`${b.namespace}/${b.name}`];
  const handler = createWaypointHandler({
    connect: (ep) => net.connect(ep.port, ep.address),
    resolveBackend,
    ...options,
  });
  const wp = { handler, info } as Waypoint;
  const server = net.createServer(serverOptions, (socket) => handler.handle(socket, wp.info));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  wp.server = server;
  wp.port = (server.address() as AddressInfo).port;
  wp.close = async () => {
    await handler.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return wp;
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request through an agent (keep-alive when given one). */
export function request(
  port: number,
  opts: {
    method?: string;
    path?: string;
    headers?: http.OutgoingHttpHeaders;
    body?: string | Buffer;
    agent?: http.Agent;
  },
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        method: opts.method ?? "GET",
        path: opts.path ?? "/",
        headers: { host: "svc.example.com", ...opts.headers },
        agent: opts.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** Writes raw bytes and collects everything until the server closes or `until` matches. */
export function rawExchange(port: number, data: string | Buffer, until?: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let out = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(out);
    }, 5000);
    socket.on("data", (c: Buffer) => {
      out += c.toString("latin1");
      if (until?.test(out)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(out);
      }
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    socket.on("error", (e) => {
      clearTimeout(timer);
      if (out === "") reject(e);
      else resolve(out);
    });
    socket.write(data);
  });
}

export const gatewayParent = [{ kind: "Gateway", name: "waypoint" }];

export function httpRoute(name: string, rules: unknown[], spec: Record<string, unknown> = {}): unknown {
  return {
    kind: "HTTPRoute",
    metadata: { name, namespace: "default" },
    spec: { parentRefs: gatewayParent, rules, ...spec },
  };
}

/** A port on 127.0.0.1 nothing listens on: connecting to it is refused. */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Waits (bounded: 5 s) for the access log entry of the request to `path`. */
export async function entryFor(logs: readonly AccessLogEntry[], path: string): Promise<AccessLogEntry> {
  for (let i = 0; i < 500; i++) {
    const found = logs.find((e) => e.path === path);
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no access log entry for ${path}: ${logs.map((e) => e.path).join(", ")}`);
}

/** A rule sending paths under `prefix` to `service` (none: no backendRefs), with `extra` rule fields. */
export function prefixRule(
  prefix: string,
  service: string | undefined,
  extra: Record<string, unknown> = {},
): unknown {
  return {
    matches: [{ path: { type: "PathPrefix", value: prefix } }],
    ...(service === undefined ? {} : { backendRefs: [{ name: service, port: 80 }] }),
    ...extra,
  };
}

/** A key and a self-signed certificate (EC P-256, made by the openssl CLI) for TLS servers in tests. */
export function selfSignedCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), "router-tls-"));
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  try {
    const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key];
    const selfSigned = ["-x509", "-days", "2", "-subj", "/CN=waypoint.test", "-out", cert];
    execFileSync("openssl", ["req", ...newKey, ...selfSigned], { stdio: "pipe", timeout: 20_000 });
    return { key: readFileSync(key, "utf8"), cert: readFileSync(cert, "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
