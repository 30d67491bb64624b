import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import net from "node:net";
import type { BackendTarget, Endpoint } from "../src/upstream.js";
import { createWaypointHandler, type TunnelInfo } from "../src/waypoint-handler.js";
import { type Backend, type BackendHandler, startBackend, stopServer } from "./harness.js";

/**
 * What gateway-api-conformance.test.ts runs the Gateway API conformance tables on: echo backends that
 * answer as the suite's echo server does, waypoints whose listeners stand for tunnels addressed to a
 * Service (or a workload), routes in the upstream YAML's shape, and table rows checked as upstream
 * checks them.
 */

/** The namespace of every route, Service and backend. */
export const NS = "mesh";
const REQUEST_TIMEOUT_MS = 5000;

export type Json = Record<string, unknown>;

/** `"A: 1 | B: 2"` to `{ A: "1", B: "2" }` (`""`: none): the notation keeps a table row on one line. */
export function fields(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text ? text.split(" | ") : []) {
    const colon = part.indexOf(": ");
    out[part.slice(0, colon)] = part.slice(colon + 2);
  }
  return out;
}
const names = (text: string | undefined) => (text ? text.split(" | ") : []);

// ---- Echo backends: they report which backend answered and the request they saw.

export interface Seen {
  backend: string;
  method: string;
  /** With the query. */
  path: string;
  host: string;
  /** `"1.1"` or `"2.0"`. */
  protocol: string;
  /** Lower-case names; a field sent on several lines has its values joined with `,`. */
  headers: Record<string, string>;
}

/** `"1s"`, `"300ms"` to milliseconds; absent is 0. */
function millis(text: string | null): number {
  const m = /^(\d+)(ms|s)$/.exec(text ?? "0ms");
  if (m === null) throw new Error(`bad duration ${text}`);
  return Number(m[1]) * (m[2] === "s" ? 1000 : 1);
}

type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;

function seenBy(backend: string, req: AnyRequest): Seen {
  const headers: Record<string, string> = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase();
    const value = req.rawHeaders[i + 1] as string;
    if (!name.startsWith(":")) headers[name] = name in headers ? `${headers[name]},${value}` : value;
  }
  const host = (req.headers.host ?? req.headers[":authority"] ?? "") as string;
  return { backend, method: req.method ?? "", path: req.url ?? "", host, protocol: req.httpVersion, headers };
}

/** Answers `Seen` as JSON after `?delay=`, with the response headers `x-echo-set-header` names. */
function answer(
  backend: string,
  req: AnyRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
): void {
  const reply = () => {
    const asked = req.headers["x-echo-set-header"];
    for (const pair of (typeof asked === "string" ? asked : "").split(",")) {
      const colon = pair.indexOf(":");
      if (colon > 0) res.setHeader(pair.slice(0, colon).trim(), pair.slice(colon + 1).trim());
    }
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(seenBy(backend, req)));
  };
  setTimeout(reply, millis(new URL(req.url ?? "/", "http://echo").searchParams.get("delay")));
}

/**
 * `/retry/...?uuid=&succeedAfter=N` fails its first N requests of that `uuid`: with `responseCode` as
 * that status, otherwise by resetting the connection; `delayRetry` delays each failure.
 */
function echoHandler(): BackendHandler {
  const failuresSoFar = new Map<string, number>();
  return (req, res, _body, backend) => {
    const q = new URL(req.url ?? "/", "http://echo").searchParams;
    const key = q.get("uuid") ?? "";
    const failed = failuresSoFar.get(key) ?? 0;
    if (req.url?.startsWith("/retry/") && failed < Number(q.get("succeedAfter"))) {
      failuresSoFar.set(key, failed + 1);
      const fail = () => {
        const code = q.get("responseCode");
        if (code === null) req.socket.resetAndDestroy();
        else res.writeHead(Number(code)).end();
      };
      setTimeout(fail, millis(q.get("delayRetry")));
      return;
    }
    answer(backend.id, req, res);
  };
}

// ---- Waypoints, with a listener per tunnel destination.

/** One waypoint with its routes. */
export interface Mesh {
  /** A local port whose connections are tunnels addressed to the Service `name` on `port`. */
  to(name: string, port?: number): Promise<number>;
  /** A local port whose connections are tunnels addressed to a workload (no Service). */
  toWorkload(endpoint: Endpoint): Promise<number>;
}

/** The backends of mesh/manifests.yaml (plus echo-v3) and the waypoints started on them. */
export interface Lab {
  /** `echo-v1`, `echo-v2`, `echo-v3`. */
  backend(id: string): Backend;
  /** How many requests with exactly this URL the backend received. */
  received(id: string, url: string): number;
  startMesh(routes: readonly unknown[]): Mesh;
  /** Closes every waypoint, listener and backend. */
  close(): Promise<void>;
}

export async function startLab(): Promise<Lab> {
  const backends = new Map<string, Backend>();
  for (const id of ["echo-v1", "echo-v2", "echo-v3"]) backends.set(id, await startBackend(id, echoHandler()));
  // httproute-backend-protocol-h2c: echo-v1's port 8081 has `appProtocol: kubernetes.io/h2c`.
  const h2c = http2.createServer((req, res) => answer("echo-v1", req, res));
  await new Promise<void>((resolve) => h2c.listen(0, "127.0.0.1", resolve));
  const h2cPort = (h2c.address() as AddressInfo).port;
  const servers: net.Server[] = [];
  const handlers: { close(): Promise<void> }[] = [];
  const backend = (id: string) => backends.get(id) as Backend;

  const resolveBackend = (b: BackendTarget): readonly Endpoint[] | undefined => {
    if (b.namespace !== NS) return undefined;
    if (b.name === "echo-v1" && b.port === 8081)
      return [{ address: "127.0.0.1", port: h2cPort, protocol: "http2" }];
    // mesh/manifests.yaml: the Service `echo` selects the pods of echo-v1 and echo-v2.
    if (b.name === "echo") return [backend("echo-v1").endpoint, backend("echo-v2").endpoint];
    const found = backends.get(b.name);
    return found === undefined ? undefined : [found.endpoint];
  };
  const listen = async (handle: (socket: net.Socket) => void) => {
    const server = net.createServer(handle);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  };

  return {
    backend,
    received: (id, url) => backend(id).requests.filter((r) => r.url === url).length,
    startMesh(routes) {
      const connect = (ep: Endpoint) => net.connect(ep.port, ep.address);
      const handler = createWaypointHandler({ routes, resolveBackend, connect });
      handlers.push(handler);
      const tunnel = (info: TunnelInfo) => listen((socket) => handler.handle(socket, info));
      const address = "10.96.0.10";
      return {
        to: (name, port = 80) => tunnel({ destination: { address, port, service: { name, namespace: NS } } }),
        toWorkload: (ep) => tunnel({ destination: { address: ep.address, port: ep.port, endpoint: ep } }),
      };
    },
    async close() {
      for (const h of handlers) await h.close();
      for (const s of servers) await new Promise<void>((resolve) => s.close(() => resolve()));
      for (const b of backends.values()) await stopServer(b.server);
      await new Promise<void>((resolve) => h2c.close(() => resolve()));
    },
  };
}

// ---- Routes, in the upstream YAML's shape.

export const prefix = (value: string, more: Json = {}): Json => ({
  path: { type: "PathPrefix", value },
  ...more,
});
export const exact = (value: string): Json => ({ path: { type: "Exact", value } });
export const hdr = (name: string, value: string) => ({ name, value });
/** A rule sending its matches (none: everything) to one backend's port 8080. */
export const to = (backend: string, matches: Json[] = [], more: Json = {}): Json => ({
  ...(matches.length > 0 ? { matches } : {}),
  backendRefs: [{ name: backend, port: 8080 }],
  ...more,
});
/** A header modifier: `set` and `add` as `"Name: value | ..."`, `remove` as `"Name | ..."`. */
export function modifier(spec: { set?: string; add?: string; remove?: string }): Json {
  const list = (text: string | undefined) => Object.entries(fields(text)).map(([n, v]) => hdr(n, v));
  return { set: list(spec.set), add: list(spec.add), remove: names(spec.remove) };
}
export const requestHeaders = (spec: Json): Json => ({
  type: "RequestHeaderModifier",
  requestHeaderModifier: spec,
});
export const responseHeaders = (spec: Json): Json => ({
  type: "ResponseHeaderModifier",
  responseHeaderModifier: spec,
});
export const redirectAt = (path: string, requestRedirect: Json): Json => ({
  matches: [prefix(path)],
  filters: [{ type: "RequestRedirect", requestRedirect }],
});
export const mirrorOf = (backend: string, more: Json = {}): Json => ({
  type: "RequestMirror",
  requestMirror: { backendRef: { name: backend, port: 8080 }, ...more },
});
export const rewrite = (urlRewrite: Json): Json => ({ type: "URLRewrite", urlRewrite });

export interface RouteOptions {
  /** Default `echo`. */
  service?: string;
  /** The parentRef's port; default 80, `null` for none. */
  port?: number | null;
  name?: string;
  hostnames?: string[];
}

/** An HTTPRoute of the mesh namespace attached to a Service (GAMMA). */
export function route(rules: Json[], more: RouteOptions = {}): Json {
  const service = more.service ?? "echo";
  const port = more.port === undefined ? 80 : more.port;
  const parentRef = { group: "", kind: "Service", name: service, ...(port === null ? {} : { port }) };
  const hostnames = more.hostnames === undefined ? {} : { hostnames: more.hostnames };
  const metadata = { name: more.name ?? `route-${service}`, namespace: NS };
  return { kind: "HTTPRoute", metadata, spec: { parentRefs: [parentRef], ...hostnames, rules } };
}

// ---- Table rows and how they are checked.

/** One upstream table row. Header lists use the `"Name: value | ..."` notation, names `"Name | ..."`. */
export interface Case {
  path: string;
  method?: string;
  /** Default `echo`, as the upstream mesh client sends. */
  host?: string;
  headers?: string | undefined;
  /** The backend that must answer; with it the status defaults to 200. */
  backend?: string;
  status?: number;
  /** What the backend must see: path (with query), host, header values, headers it must not get. */
  sees?: { path?: string; host?: string; headers?: string; absent?: string };
  /** Headers the backend puts on its response (asked for with `x-echo-set-header`). */
  backendSets?: string;
  /** Headers the client must get, and headers it must not. */
  gets?: { headers?: string; absent?: string };
  /** A redirect: unset fields mean the request's scheme and path, and the scheme's default port. */
  redirect?: { scheme?: string; host?: string; port?: string; path?: string };
}

/** A row per space-separated path: GETs that `outcome` answers (a backend's name, or a status). */
export function each(outcome: string | number, paths: string, more: Partial<Case> = {}): Case[] {
  const expected = typeof outcome === "number" ? { status: outcome } : { backend: outcome };
  return paths.split(" ").map((path) => ({ path, ...expected, ...more }));
}

/** A row per header list (separated by ` ; `): GETs of `/` that `outcome` answers. */
export function eachHeaders(outcome: string | number, lists: string): Case[] {
  return lists.split(" ; ").flatMap((headers) => each(outcome, "/", { headers }));
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  distinct: NodeJS.Dict<string[]>;
  seen: Seen | undefined;
}

/** One HTTP/1.1 request on a connection of its own, given up after 5 s. */
export function send(
  port: number,
  c: Pick<Case, "path" | "method" | "host" | "headers" | "backendSets">,
): Promise<Reply> {
  const headers: http.OutgoingHttpHeaders = { host: c.host ?? "echo", ...fields(c.headers) };
  if (c.backendSets !== undefined) headers["x-echo-set-header"] = c.backendSets.replaceAll(" | ", ",");
  return new Promise((resolve, reject) => {
    const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    const options = { host: "127.0.0.1", port, path: c.path, method: c.method ?? "GET", headers, signal };
    const req = http.request({ ...options, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString();
        const json = res.headers["content-type"] === "application/json" && body.startsWith("{");
        const seen = json ? (JSON.parse(body) as Seen) : undefined;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, distinct: res.headersDistinct, seen });
      });
    });
    req.on("error", reject);
    req.end();
  });
}

/** One HTTP/2 (prior knowledge) GET of `/`, given up after 5 s: the status and what the backend saw. */
export async function sendHttp2(port: number): Promise<{ status: number; seen: Seen }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no HTTP/2 response in time")), REQUEST_TIMEOUT_MS);
      session.on("error", reject);
      const req = session.request({ ":path": "/", ":authority": "echo" });
      let status = 0;
      let body = "";
      req.on("response", (head) => {
        status = Number(head[":status"]);
      });
      req.on("data", (chunk: Buffer) => {
        body += chunk.toString();
      });
      req.on("end", () => {
        clearTimeout(timer);
        try {
          resolve({ status, seen: JSON.parse(body) as Seen });
        } catch (err) {
          reject(err);
        }
      });
      req.on("error", reject);
    });
  } finally {
    session.destroy();
  }
}

/** What differs between a reply and the row's expectations, one line each. */
function differences(c: Case, r: Reply): string[] {
  const out: string[] = [];
  const differ = (what: string, got: unknown, want: unknown) => {
    if (got !== want) out.push(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  };
  differ("status", r.status, c.status ?? (c.redirect !== undefined ? 302 : 200));
  if (c.backend !== undefined) differ("backend", r.seen?.backend, c.backend);
  if (c.sees?.path !== undefined) differ("upstream path", r.seen?.path, c.sees.path);
  if (c.sees?.host !== undefined) differ("upstream host", r.seen?.host, c.sees.host);
  for (const [name, value] of Object.entries(fields(c.sees?.headers)))
    differ(`upstream ${name}`, r.seen?.headers[name.toLowerCase()], value);
  for (const name of names(c.sees?.absent))
    differ(`upstream ${name}`, r.seen?.headers[name.toLowerCase()], undefined);
  for (const [name, value] of Object.entries(fields(c.gets?.headers)))
    differ(`response ${name}`, r.distinct[name.toLowerCase()]?.join(","), value);
  for (const name of names(c.gets?.absent))
    differ(`response ${name}`, r.headers[name.toLowerCase()], undefined);
  if (c.redirect !== undefined) {
    if (r.headers.location === undefined) return [...out, "no location"];
    const url = new URL(r.headers.location);
    differ("redirect scheme", url.protocol.slice(0, -1), c.redirect.scheme ?? "http");
    if (c.redirect.host !== undefined) differ("redirect host", url.hostname, c.redirect.host);
    // URL drops a port that is the scheme's default, which upstream accepts either way.
    differ("redirect port", url.port, c.redirect.port ?? "");
    differ("redirect path", url.pathname, c.redirect.path ?? c.path.split("?")[0]);
  }
  return out;
}

/** Sends every row to one listener at once; returns what went wrong, named by request. */
export async function failures(port: number, cases: readonly Case[]): Promise<string[]> {
  const out: string[] = [];
  const check = async (c: Case) => {
    const headers = c.headers === undefined ? "" : ` {${c.headers}}`;
    const name = `${c.method ?? "GET"} ${c.host ?? "echo"}${c.path}${headers}`;
    try {
      for (const d of differences(c, await send(port, c))) out.push(`${name}: ${d}`);
    } catch (err) {
      out.push(`${name}: ${(err as Error).message}`);
    }
  };
  await Promise.all(cases.map(check));
  return out.sort();
}

/** Every row holds for tunnels to the Service `service` on `port`. */
export async function conforms(
  mesh: Mesh,
  cases: readonly Case[],
  service = "echo",
  port = 80,
): Promise<void> {
  assert.deepEqual(await failures(await mesh.to(service, port), cases), []);
}

/** Waits (bounded: 5 s) until `count()` has not changed for 200 ms, and returns it. */
export async function settled(count: () => number): Promise<number> {
  let last = -1;
  let stableSince = Date.now();
  for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
    const now = count();
    if (now !== last) [last, stableSince] = [now, Date.now()];
    else if (Date.now() - stableSince >= 200) return now;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return count();
}

/** Sends `total` GETs of `path`, twenty at a time, and counts the backends that answered. */
export async function spread(port: number, path: string, total: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let sent = 0; sent < total; sent += 20) {
    const batch = Array.from({ length: Math.min(20, total - sent) }, () => send(port, { path }));
    for (const r of await Promise.all(batch)) {
      assert.equal(r.status, 200);
      const who = r.seen?.backend ?? "?";
      counts.set(who, (counts.get(who) ?? 0) + 1);
    }
  }
  return counts;
}

/** `got` is within five standard deviations of `total` draws with probability `p`. */
export function assertNear(got: number, total: number, p: number, what: string): void {
  const margin = 5 * Math.sqrt(total * p * (1 - p));
  assert.ok(Math.abs(got - total * p) <= margin, `${what}: ${got} of ${total}, want about ${total * p}`);
}
