// The few raw Kubernetes REST calls the Kubernetes source makes beside @kubernetes/client-node's
// typed APIs: chunked lists that keep objects exactly as the server sent them (the informers' watch
// events are raw JSON too, so list and watch agree field for field), and a merge patch of a status.
import { request as httpRequest, STATUS_CODES } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from "node:https";
import { createInterface } from "node:readline";
import type { KubeConfig } from "@kubernetes/client-node";

/** One REST resource: group (`""` for core), version, kind, lowercase plural, scope. */
export interface KubeResource {
  group: string;
  version: string;
  kind: string;
  plural: string;
  namespaced: boolean;
  /** Only the objects with these labels (the `labelSelector` the server filters lists and watches by). */
  labelSelector?: string;
}

/** A Kubernetes object as the API server sends it. */
export interface RawKubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    creationTimestamp?: string;
    [field: string]: unknown;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [field: string]: unknown;
}

/** A list response: items and the resourceVersion to watch from. */
export interface RawKubeList {
  metadata: { resourceVersion?: string; continue?: string };
  items: RawKubeObject[];
}

/** An API answer that was not 2xx; `statusCode` as @kubernetes/client-node's watch errors carry it. */
export class KubeRequestError extends Error {
  readonly statusCode: number;
  /** `reason` of the Kubernetes Status body (`NotFound`, `Expired`, `Conflict`...). */
  readonly reason: string | undefined;
  constructor(statusCode: number, message: string, reason: string | undefined) {
    super(message);
    this.name = "KubeRequestError";
    this.statusCode = statusCode;
    this.reason = reason;
  }
}

export function apiVersionOf(resource: KubeResource): string {
  return resource.group === "" ? resource.version : `${resource.group}/${resource.version}`;
}

/** `/api/v1/pods`, `/apis/gateway.networking.k8s.io/v1/namespaces/ns/gateways/name/status`... */
export function resourcePath(
  resource: KubeResource,
  where: { namespace?: string; name?: string; subresource?: string } = {},
): string {
  const root =
    resource.group === "" ? `/api/${resource.version}` : `/apis/${resource.group}/${resource.version}`;
  const ns =
    where.namespace !== undefined && resource.namespaced
      ? `/namespaces/${encodeURIComponent(where.namespace)}`
      : "";
  const name = where.name === undefined ? "" : `/${encodeURIComponent(where.name)}`;
  const sub = where.subresource === undefined ? "" : `/${where.subresource}`;
  return `${root}${ns}/${resource.plural}${name}${sub}`;
}

/** Sends one request to the current cluster of `kc` with its credentials; resolves with the parsed JSON body. */
export async function kubeRequest(
  kc: KubeConfig,
  method: string,
  path: string,
  body?: { contentType: string; value: unknown },
  timeoutMs = 30_000,
): Promise<unknown> {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new Error("kubeconfig has no current cluster");
  const url = new URL(cluster.server.replace(/\/$/, "") + path);
  const opts = await requestOptions(kc, url, method);
  const plain = url.protocol === "http:";
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body.value));
  if (body !== undefined) (opts.headers as Record<string, string>)["content-type"] = body.contentType;
  return new Promise((resolve, reject) => {
    // The whole request, waiting for a pooled connection included; the socket's own timeout below ends
    // one that goes quiet.
    const deadline = setTimeout(
      () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const fail = (err: unknown) => {
      clearTimeout(deadline);
      reject(err);
    };
    const req = (plain ? httpRequest : httpsRequest)(url, { ...opts, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", fail);
      res.on("end", () => {
        clearTimeout(deadline);
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed: unknown;
        try {
          parsed = text === "" ? undefined : JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        const code = res.statusCode ?? 0;
        if (code >= 200 && code < 300) {
          resolve(parsed);
          return;
        }
        const statusBody = (parsed ?? {}) as { message?: string; reason?: string };
        reject(
          new KubeRequestError(
            code,
            `${method} ${path}: ${code} ${statusBody.message ?? text.slice(0, 200)}`,
            statusBody.reason,
          ),
        );
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
    req.on("error", fail);
    req.end(payload);
  });
}

/** Connections to one API server at once, shared by every request of a kubeconfig (watches included). */
export const MAX_API_SERVER_SOCKETS = 64;

/** The keep-alive agent of a kubeconfig, and the TLS settings it was made for. */
const sharedAgents = new WeakMap<KubeConfig, { settings: string; agent: HttpsAgent }>();

/**
 * A request's options as `@kubernetes/client-node` sets them (credentials, TLS), with one keep-alive
 * agent per kubeconfig in place of the agent it makes for every request: each request would otherwise
 * open a TCP and TLS connection of its own (a token review per xDS stream and CSR: one connection per
 * caller, for as many callers as come), and connections to the API server are capped. An agent the
 * client made for a proxy is kept as it is; a plain-HTTP server (tests, `kubectl proxy`) takes none.
 */
async function requestOptions(kc: KubeConfig, url: URL, method: string): Promise<RequestOptions> {
  const opts: RequestOptions = { method, headers: { accept: "application/json" } };
  await kc.applyToHTTPSOptions(opts);
  if (url.protocol === "http:") {
    if (opts.agent instanceof HttpsAgent) delete opts.agent;
    return opts;
  }
  if (opts.agent?.constructor !== HttpsAgent) return opts;
  const tls = {
    ca: opts.ca,
    cert: opts.cert,
    key: opts.key,
    pfx: opts.pfx,
    passphrase: opts.passphrase,
    servername: opts.servername,
    ...(opts.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: opts.rejectUnauthorized }),
  };
  // A client certificate read from a file may be renewed: new settings, a new agent (the old one's
  // connections close as their requests end, its idle ones at its timeout).
  const settings = JSON.stringify(tls);
  let held = sharedAgents.get(kc);
  if (held === undefined || held.settings !== settings) {
    held = {
      settings,
      agent: new HttpsAgent({
        ...tls,
        keepAlive: true,
        maxSockets: MAX_API_SERVER_SOCKETS,
        // Idle pooled connections close after this long.
        timeout: 60_000,
      }),
    };
    sharedAgents.set(kc, held);
  }
  opts.agent = held.agent;
  return opts;
}

/** An HTTP status a watch request was answered with (`statusCode`, as the informers read it: 410 relists). */
export interface WatchStatusError extends Error {
  statusCode: number;
}

/**
 * A watch request, as `@kubernetes/client-node`'s `Watch.watch` makes it (the informers call it through
 * that interface), with the deadline that one lacks: the response must begin within `headersTimeoutMs`,
 * connection and TLS included, and the returned controller ends the request at any time, also while it
 * waits for the response (the library returns its controller only once the response began, so an
 * informer could not stop a watch that was never answered, and waited on it for good). Each line of the
 * response is one JSON event: `callback(type, object, event)`. `done` is called once: with null when the
 * server ends the watch or the controller aborted it, else with the error (`statusCode` set for an HTTP
 * status).
 */
export async function watchRequest(
  kc: KubeConfig,
  path: string,
  query: Readonly<Record<string, string | number | boolean | undefined>>,
  callback: (type: string, object: unknown, event: unknown) => void,
  done: (err: unknown) => void,
  headersTimeoutMs = 30_000,
): Promise<AbortController> {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new Error("kubeconfig has no current cluster");
  const url = new URL(cluster.server.replace(/\/$/, "") + path);
  url.searchParams.set("watch", "true");
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined) url.searchParams.set(key, String(value));
  }
  const opts = await requestOptions(kc, url, "GET");
  const plain = url.protocol === "http:";
  const controller = new AbortController();
  let finished = false;
  const finish = (err: unknown): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    req.destroy();
    controller.abort();
    done(err);
  };
  const req = (plain ? httpRequest : httpsRequest)(url, opts, (res) => {
    clearTimeout(timer);
    const code = res.statusCode ?? 0;
    if (code !== 200) {
      res.resume();
      const err = new Error(`watch ${path}: ${code} ${STATUS_CODES[code] ?? ""}`.trim()) as WatchStatusError;
      err.statusCode = code;
      finish(err);
      return;
    }
    // As the library: a dead connection under a quiet watch is found by keepalive probes.
    res.socket.setKeepAlive(true, 30_000);
    const lines = createInterface({ input: res, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => {
      if (finished) return;
      let event: unknown;
      try {
        event = JSON.parse(line);
      } catch {
        return;
      }
      // An event the informer cannot take ends the watch: the informer relists, and its cache stays
      // the last good state meanwhile.
      if (!isWatchEvent(event)) {
        finish(new Error(`watch ${path}: an event without a type and an object with metadata`));
        return;
      }
      try {
        // The informer's handler is async: its failures come back as a rejected promise, which the
        // end of the watch waits for.
        const handled = callback(event.type, event.object, event) as unknown;
        if (handled instanceof Promise) {
          const settled = handled.catch((err: unknown) => finish(err));
          handling = handling === undefined ? settled : handling.then(() => settled);
        }
      } catch (err) {
        finish(err);
      }
    });
    let handling: Promise<unknown> | undefined;
    const ended = () => {
      if (handling === undefined) finish(null);
      else void handling.then(() => finish(null));
    };
    res.on("error", (err) => finish(err));
    // readline passes its input's errors on.
    lines.on("error", (err) => finish(err));
    lines.on("close", ended);
    res.on("close", ended);
  });
  const timer = setTimeout(
    () => finish(new Error(`watch ${path}: no response in ${headersTimeoutMs} ms`)),
    headersTimeoutMs,
  );
  req.on("error", (err) => finish(controller.signal.aborted ? null : err));
  controller.signal.addEventListener("abort", () => finish(null), { once: true });
  req.end();
  return controller;
}

/** An object as the API server sends it: at least its metadata, as an object. */
function hasMetadata(value: unknown): value is RawKubeObject {
  if (typeof value !== "object" || value === null) return false;
  const metadata = (value as { metadata?: unknown }).metadata;
  return typeof metadata === "object" && metadata !== null && !Array.isArray(metadata);
}

/**
 * A watch event with a type and an object: an ERROR's object is a Status, any other's an object with
 * metadata (a BOOKMARK's holds just the resourceVersion).
 */
function isWatchEvent(value: unknown): value is { type: string; object: unknown } {
  if (typeof value !== "object" || value === null) return false;
  const { type, object } = value as { type?: unknown; object?: unknown };
  if (typeof type !== "string") return false;
  return type === "ERROR" ? typeof object === "object" && object !== null : hasMetadata(object);
}

/**
 * Lists a collection in pages of `pageSize` (`limit`/`continue`), as client-go's pager does. When the
 * continue token expires (410, the snapshot was compacted) the list starts over without paging, so the
 * result is always one consistent snapshot.
 */
export async function listAll(
  kc: KubeConfig,
  path: string,
  pageSize = 500,
  labelSelector?: string,
): Promise<RawKubeList> {
  const items: RawKubeObject[] = [];
  let token: string | undefined;
  let resourceVersion: string | undefined;
  const selected = labelSelector === undefined ? "" : `?${new URLSearchParams({ labelSelector })}`;
  for (;;) {
    const query = new URLSearchParams({ limit: String(pageSize) });
    if (labelSelector !== undefined) query.set("labelSelector", labelSelector);
    if (token !== undefined) query.set("continue", token);
    let page: RawKubeList;
    try {
      page = (await kubeRequest(kc, "GET", `${path}?${query}`)) as RawKubeList;
    } catch (err) {
      if (err instanceof KubeRequestError && err.statusCode === 410 && token !== undefined) {
        return (await kubeRequest(kc, "GET", `${path}${selected}`)) as RawKubeList;
      }
      throw err;
    }
    const pageItems = page.items ?? [];
    if (!Array.isArray(pageItems) || !pageItems.every(hasMetadata)) {
      throw new Error(`list ${path}: items that are not objects with metadata`);
    }
    items.push(...pageItems);
    resourceVersion ??= page.metadata?.resourceVersion;
    token = page.metadata?.continue;
    if (token === undefined || token === "") {
      return { metadata: resourceVersion === undefined ? {} : { resourceVersion }, items };
    }
  }
}
