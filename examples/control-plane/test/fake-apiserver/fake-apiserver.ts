// An in-process stand-in for kube-apiserver, for tests that run the real @kubernetes/client-node
// informers: no apiserver can be installed here. It keeps the documented list/watch contract
// (global resourceVersion, history window and 410 Gone, bookmarks, chunked lists, watch timeouts) and
// lets a test break it on purpose (restart mid-watch, expire watches, slow watches).
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { parseLabelSelector } from "./label-selector.js";

/** One REST resource the server serves. */
export interface FakeResource {
  /** `""` for the core group. */
  group: string;
  version: string;
  kind: string;
  /** Lowercase plural, the URL segment: `pods`, `authorizationpolicies`. */
  plural: string;
  namespaced: boolean;
}

export const CORE_RESOURCES: readonly FakeResource[] = [
  { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false },
  { group: "", version: "v1", kind: "Node", plural: "nodes", namespaced: false },
  { group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true },
  { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true },
  { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true },
  { group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true },
  { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true },
  { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true },
  {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    namespaced: true,
  },
];

/** The Istio and Gateway API custom resources a mesh control plane reads. */
export const MESH_CRDS: readonly FakeResource[] = [
  {
    group: "security.istio.io",
    version: "v1",
    kind: "AuthorizationPolicy",
    plural: "authorizationpolicies",
    namespaced: true,
  },
  {
    group: "security.istio.io",
    version: "v1",
    kind: "PeerAuthentication",
    plural: "peerauthentications",
    namespaced: true,
  },
  {
    group: "security.istio.io",
    version: "v1",
    kind: "RequestAuthentication",
    plural: "requestauthentications",
    namespaced: true,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "GatewayClass",
    plural: "gatewayclasses",
    namespaced: false,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "Gateway",
    plural: "gateways",
    namespaced: true,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "HTTPRoute",
    plural: "httproutes",
    namespaced: true,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "GRPCRoute",
    plural: "grpcroutes",
    namespaced: true,
  },
  {
    group: "networking.istio.io",
    version: "v1",
    kind: "ServiceEntry",
    plural: "serviceentries",
    namespaced: true,
  },
  {
    group: "networking.istio.io",
    version: "v1",
    kind: "WorkloadEntry",
    plural: "workloadentries",
    namespaced: true,
  },
];

/** What TokenReview answers for one token. */
export interface FakeTokenIdentity {
  /** `system:serviceaccount:<ns>:<sa>`. */
  username: string;
  uid?: string;
  groups?: string[];
  /** Audiences the token was minted for; a review must name one of them. */
  audiences: string[];
  /** `authentication.kubernetes.io/pod-name` and friends, as a bound token carries them. */
  extra?: Record<string, string[]>;
}

/** Options of {@link createFakeApiServer}. */
export interface FakeApiServerOptions {
  /** Custom resources installed besides {@link CORE_RESOURCES}. Default {@link MESH_CRDS}. */
  crds?: readonly FakeResource[];
  /**
   * Watch events kept per server for watches that resume from an older resourceVersion; a resume from
   * before the window gets 410 Gone. Default 1000 (kube-apiserver's watch cache keeps a few thousand,
   * etcd compacts every 5 minutes).
   */
  historyLimit?: number;
  /** Interval of BOOKMARK events to watches that ask for them. Default 1000 ms (the apiserver: about 1 min). */
  bookmarkIntervalMs?: number;
  /** Server-side end of a watch without `timeoutSeconds`. Default 5 min (the apiserver: 30-60 min). */
  watchTimeoutMs?: number;
  /** When set, every request must carry `authorization: Bearer <token>`; else 401. */
  bearerToken?: string;
  /** Tokens TokenReview knows; any other token is not authenticated. */
  tokens?: Record<string, FakeTokenIdentity>;
  /** Audiences of a review that names none. Default `["https://kubernetes.default.svc.cluster.local"]`. */
  defaultAudiences?: string[];
}

/** A request the server saw, for assertions on the protocol a client used. */
export interface FakeRequest {
  method: string;
  path: string;
  query: Record<string, string>;
}

interface StoredEvent {
  rv: number;
  resource: FakeResource;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: KubeJson;
  /** The object before a MODIFIED event: a label selector's watch sees it enter or leave. */
  before?: KubeJson;
}

interface Watcher {
  resource: FakeResource;
  namespace: string | undefined;
  /** The watch's `labelSelector`. */
  selects: (labels: Readonly<Record<string, string>> | undefined) => boolean;
  res: ServerResponse;
  bookmarks: boolean;
  timers: NodeJS.Timeout[];
  /** Lines held back by a slow watch, each with the time it is due, written in order. */
  queue: { due: number; line: string }[];
  flushTimer: NodeJS.Timeout | undefined;
  /** End the response once the queue is written. */
  endWhenFlushed: boolean;
}

/** A Kubernetes object as JSON. */
export type KubeJson = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    uid?: string;
    [k: string]: unknown;
  };
  [field: string]: unknown;
};

/** A running fake apiserver. */
export interface FakeApiServer {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** A kubeconfig (YAML) that points at the server, with the bearer token when one is required. */
  kubeconfig(): string;
  /** Creates or replaces an object as a controller would (new resourceVersion, ADDED or MODIFIED event). */
  apply(object: KubeJson): KubeJson;
  /** Deletes an object; returns whether it existed. */
  remove(apiVersion: string, kind: string, name: string, namespace?: string): boolean;
  /** The stored object, or undefined. */
  get(apiVersion: string, kind: string, name: string, namespace?: string): KubeJson | undefined;
  /** The current resourceVersion (of the last write). */
  resourceVersion(): number;
  /** Requests seen so far, oldest first. */
  readonly requests: readonly FakeRequest[];
  /** Installs a custom resource (as when a CRD is applied). */
  installCrd(resource: FakeResource): void;
  // Faults.
  /**
   * Drops every connection and listens again on the same port after `downMs`. The store survives (it
   * is etcd's); with `dropHistory` the watch history does not (a fresh watch cache), so a resume from
   * an older resourceVersion gets 410. `whileDown` runs while nothing is served: writes made there reach
   * clients only through the resumed watch (history kept) or a relist (history dropped).
   */
  restart(options?: { downMs?: number; dropHistory?: boolean; whileDown?: () => void }): Promise<void>;
  /** Runs `hook` on every request before it is answered (e.g. to compact between two pages). */
  setRequestHook(hook: ((request: FakeRequest) => void) | undefined): void;
  /** Sends every open watch an ERROR event with a 410 Status and ends it, and forgets the history. */
  expireWatches(): void;
  /** Forgets the watch history and pagination snapshots (etcd compaction): resumes get 410. */
  compact(): void;
  /** Delays every event and bookmark written to watches by `ms` (0 restores prompt delivery). */
  setWatchDelay(ms: number): void;
  /**
   * Holds the next `count` watch requests of `kind` open without any answer, not even the response's
   * head (a proxy in front of the apiserver that accepted and hangs).
   */
  holdWatches(kind: string, count: number): void;
  /**
   * Holds every request `match` accepts open without any answer from now on (until called again with
   * undefined), e.g. the Lease requests of a leader whose apiserver hangs.
   */
  holdRequests(match: ((request: FakeRequest) => boolean) | undefined): void;
  /** Requests held by {@link FakeApiServer.holdWatches} or `holdRequests` whose connection is still open. */
  heldRequestCount(): number;
  /** Open watch connections. */
  watchCount(): number;
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string): unknown {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

function apiVersionOf(r: FakeResource): string {
  return r.group === "" ? r.version : `${r.group}/${r.version}`;
}

function keyOf(namespace: string | undefined, name: string): string {
  return `${namespace ?? ""}/${name}`;
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== "object" || patch === null || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    typeof target === "object" && target !== null && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

interface ParsedPath {
  resource: FakeResource;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

/**
 * Starts the fake apiserver on an ephemeral port of 127.0.0.1. Paths follow the REST layout:
 * `/api/v1/[namespaces/<ns>/]<plural>[/<name>[/status]]` and `/apis/<group>/<version>/...`.
 */
export async function createFakeApiServer(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
  const historyLimit = options.historyLimit ?? 1000;
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
  const watchTimeoutMs = options.watchTimeoutMs ?? 5 * 60_000;
  const defaultAudiences = options.defaultAudiences ?? ["https://kubernetes.default.svc.cluster.local"];
  const resources = new Map<string, FakeResource>();
  const install = (r: FakeResource): void => {
    resources.set(`${apiVersionOf(r)}/${r.plural}`, r);
  };
  for (const r of [...CORE_RESOURCES, ...(options.crds ?? MESH_CRDS)]) install(r);

  const store = new Map<FakeResource, Map<string, KubeJson>>();
  let rv = 1;
  let history: StoredEvent[] = [];
  // Events at or below this resourceVersion may be missing from `history`.
  let compactedRv = 1;
  // Pagination snapshots: `<rv>|<path>` -> the sorted items of that list.
  const snapshots = new Map<string, KubeJson[]>();
  const watchers = new Set<Watcher>();
  const sockets = new Set<Socket>();
  const requests: FakeRequest[] = [];
  let watchDelayMs = 0;
  // Watch requests to hold without an answer, by kind, and those held now.
  const toHold = new Map<string, number>();
  const held = new Set<ServerResponse>();
  let holdMatching: ((request: FakeRequest) => boolean) | undefined;
  let requestHook: ((request: FakeRequest) => void) | undefined;

  const byKind = (apiVersion: string, kind: string): FakeResource => {
    for (const r of resources.values()) if (apiVersionOf(r) === apiVersion && r.kind === kind) return r;
    throw new Error(`fake apiserver: ${apiVersion} ${kind} is not installed`);
  };
  const bucket = (r: FakeResource): Map<string, KubeJson> => {
    let b = store.get(r);
    if (b === undefined) {
      b = new Map();
      store.set(r, b);
    }
    return b;
  };

  const endWatch = (w: Watcher): void => {
    for (const t of w.timers) clearTimeout(t);
    clearTimeout(w.flushTimer);
    watchers.delete(w);
    if (!w.res.writableEnded) w.res.end();
  };
  const flush = (w: Watcher): void => {
    const head = w.queue[0];
    if (head === undefined || w.flushTimer !== undefined) return;
    w.flushTimer = setTimeout(
      () => {
        w.flushTimer = undefined;
        const now = Date.now();
        while (w.queue[0] !== undefined && w.queue[0].due <= now) {
          const { line } = w.queue.shift() as { line: string };
          if (!w.res.writableEnded) w.res.write(`${line}\n`);
        }
        if (w.queue.length > 0) flush(w);
        else if (w.endWhenFlushed) endWatch(w);
      },
      Math.max(0, head.due - Date.now()),
    );
  };
  const writeLine = (w: Watcher, line: string): void => {
    if (watchDelayMs <= 0 && w.queue.length === 0) {
      if (!w.res.writableEnded) w.res.write(`${line}\n`);
      return;
    }
    const last = w.queue.at(-1)?.due ?? 0;
    w.queue.push({ due: Math.max(Date.now() + watchDelayMs, last), line });
    flush(w);
  };
  /** Ends a watch after what is already queued for it. */
  const finishWatch = (w: Watcher): void => {
    if (w.queue.length === 0) endWatch(w);
    else w.endWhenFlushed = true;
  };
  const record = (
    resource: FakeResource,
    type: StoredEvent["type"],
    object: KubeJson,
    before?: KubeJson,
  ): void => {
    const event: StoredEvent = { rv, resource, type, object };
    if (before !== undefined) event.before = before;
    history.push(event);
    if (history.length > historyLimit) {
      const dropped = history.splice(0, history.length - historyLimit);
      compactedRv = Math.max(compactedRv, (dropped.at(-1) as StoredEvent).rv);
    }
    for (const [key] of snapshots) if (Number(key.split("|")[0]) < compactedRv) snapshots.delete(key);
    for (const w of watchers) {
      if (w.resource !== resource) continue;
      if (w.namespace !== undefined && object.metadata.namespace !== w.namespace) continue;
      const seen = seenBy(w, event);
      if (seen !== undefined) writeLine(w, JSON.stringify({ type: seen, object }));
    }
  };
  /**
   * The event type a watch with a label selector sees, as the API server's watch cache sends it: an
   * object that enters the selection is ADDED, one that leaves it DELETED; none when it is outside.
   */
  const seenBy = (w: Pick<Watcher, "selects">, e: StoredEvent): StoredEvent["type"] | undefined => {
    const now = w.selects(e.object.metadata.labels as Record<string, string> | undefined);
    if (e.type !== "MODIFIED") return now ? e.type : undefined;
    const was = w.selects(e.before?.metadata.labels as Record<string, string> | undefined);
    if (was && now) return "MODIFIED";
    if (now) return "ADDED";
    return was ? "DELETED" : undefined;
  };

  const write = (r: FakeResource, object: KubeJson): KubeJson => {
    const b = bucket(r);
    const key = keyOf(r.namespaced ? object.metadata.namespace : undefined, object.metadata.name);
    const existing = b.get(key);
    rv++;
    const stored: KubeJson = structuredClone(object);
    stored.apiVersion = apiVersionOf(r);
    stored.kind = r.kind;
    if (!r.namespaced) delete stored.metadata.namespace;
    stored.metadata.resourceVersion = String(rv);
    stored.metadata.uid = existing?.metadata.uid ?? stored.metadata.uid ?? randomUUID();
    stored.metadata.creationTimestamp =
      existing?.metadata.creationTimestamp ??
      stored.metadata.creationTimestamp ??
      new Date().toISOString().replace(/\.\d+Z$/, "Z");
    b.set(key, stored);
    record(r, existing === undefined ? "ADDED" : "MODIFIED", stored, existing);
    return stored;
  };
  const erase = (r: FakeResource, namespace: string | undefined, name: string): KubeJson | undefined => {
    const b = bucket(r);
    const key = keyOf(r.namespaced ? namespace : undefined, name);
    const existing = b.get(key);
    if (existing === undefined) return undefined;
    b.delete(key);
    rv++;
    const gone = { ...existing, metadata: { ...existing.metadata, resourceVersion: String(rv) } };
    record(r, "DELETED", gone);
    return gone;
  };

  const parsePath = (path: string): ParsedPath | undefined => {
    const parts = path.split("/").filter((p) => p !== "");
    let prefix: string;
    let rest: string[];
    if (parts[0] === "api" && parts.length >= 3) {
      prefix = parts[1] as string;
      rest = parts.slice(2);
    } else if (parts[0] === "apis" && parts.length >= 4) {
      prefix = `${parts[1]}/${parts[2]}`;
      rest = parts.slice(3);
    } else return undefined;
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const resource = resources.get(`${prefix}/${rest[0]}`);
    if (resource === undefined || rest.length > 3) return undefined;
    if (namespace !== undefined && !resource.namespaced) return undefined;
    return { resource, namespace, name: rest[1], subresource: rest[2] };
  };

  const send = (res: ServerResponse, code: number, body: unknown): void => {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };

  const readBody = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString("utf8") || "null");
  };

  const list = (p: ParsedPath, query: Record<string, string>, res: ServerResponse, path: string): void => {
    const limit = Number(query.limit ?? "0");
    const selects = parseLabelSelector(query.labelSelector);
    if (typeof selects === "string") {
      send(res, 400, status(400, "BadRequest", `unable to parse requirement: ${selects}`));
      return;
    }
    let items: KubeJson[];
    let snapshotRv = rv;
    let start = 0;
    if (query.continue !== undefined && query.continue !== "") {
      let token: { rv: number; offset: number };
      try {
        token = JSON.parse(Buffer.from(query.continue, "base64url").toString("utf8"));
      } catch {
        send(res, 400, status(400, "BadRequest", "invalid continue token"));
        return;
      }
      const snap = snapshots.get(`${token.rv}|${path}|${query.labelSelector ?? ""}`);
      if (snap === undefined || token.rv < compactedRv) {
        send(
          res,
          410,
          status(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result.",
          ),
        );
        return;
      }
      items = snap;
      snapshotRv = token.rv;
      start = token.offset;
    } else {
      items = [...bucket(p.resource).entries()]
        .filter(([, o]) => p.namespace === undefined || o.metadata.namespace === p.namespace)
        .filter(([, o]) => selects(o.metadata.labels as Record<string, string> | undefined))
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([, o]) => o);
      if (limit > 0 && items.length > limit)
        snapshots.set(`${rv}|${path}|${query.labelSelector ?? ""}`, items);
    }
    const end = limit > 0 ? Math.min(items.length, start + limit) : items.length;
    const metadata: Record<string, unknown> = { resourceVersion: String(snapshotRv) };
    if (end < items.length) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: snapshotRv, offset: end })).toString("base64url");
      metadata.remainingItemCount = items.length - end;
    }
    send(res, 200, {
      kind: `${p.resource.kind}List`,
      apiVersion: apiVersionOf(p.resource),
      metadata,
      items: items.slice(start, end),
    });
  };

  const watch = (p: ParsedPath, query: Record<string, string>, res: ServerResponse): void => {
    const selects = parseLabelSelector(query.labelSelector);
    if (typeof selects === "string") {
      send(res, 400, status(400, "BadRequest", `unable to parse requirement: ${selects}`));
      return;
    }
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    res.flushHeaders();
    const w: Watcher = {
      resource: p.resource,
      namespace: p.namespace,
      selects,
      res,
      bookmarks: query.allowWatchBookmarks === "true",
      timers: [],
      queue: [],
      flushTimer: undefined,
      endWhenFlushed: false,
    };
    const from = query.resourceVersion ?? "";
    if (from === "" || from === "0") {
      // "Start at most recent": the current state as ADDED events, then changes.
      for (const o of bucket(p.resource).values()) {
        if (!selects(o.metadata.labels as Record<string, string> | undefined)) continue;
        if (p.namespace === undefined || o.metadata.namespace === p.namespace) {
          writeLine(w, JSON.stringify({ type: "ADDED", object: o }));
        }
      }
    } else {
      const since = Number(from);
      if (!Number.isInteger(since) || since < compactedRv) {
        writeLine(
          w,
          JSON.stringify({
            type: "ERROR",
            object: status(410, "Expired", `too old resource version: ${from} (${compactedRv})`),
          }),
        );
        finishWatch(w);
        return;
      }
      for (const e of history) {
        if (e.rv <= since || e.resource !== p.resource) continue;
        if (p.namespace !== undefined && e.object.metadata.namespace !== p.namespace) continue;
        const seen = seenBy(w, e);
        if (seen !== undefined) writeLine(w, JSON.stringify({ type: seen, object: e.object }));
      }
    }
    watchers.add(w);
    const timeoutSeconds = Number(query.timeoutSeconds ?? "0");
    w.timers.push(
      setTimeout(() => finishWatch(w), timeoutSeconds > 0 ? timeoutSeconds * 1000 : watchTimeoutMs),
    );
    if (w.bookmarks) {
      const tick = setInterval(() => {
        writeLine(
          w,
          JSON.stringify({
            type: "BOOKMARK",
            object: {
              kind: p.resource.kind,
              apiVersion: apiVersionOf(p.resource),
              metadata: { resourceVersion: String(rv) },
            },
          }),
        );
      }, bookmarkIntervalMs);
      w.timers.push(tick);
    }
    res.on("close", () => endWatch(w));
  };

  const tokenReview = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = (await readBody(req)) as { spec?: { token?: string; audiences?: string[] } } | null;
    const token = body?.spec?.token ?? "";
    const asked = body?.spec?.audiences?.length ? body.spec.audiences : defaultAudiences;
    const known = options.tokens?.[token];
    const audiences = known?.audiences.filter((a) => asked.includes(a)) ?? [];
    const statusBody =
      known !== undefined && audiences.length > 0
        ? {
            authenticated: true,
            user: {
              username: known.username,
              ...(known.uid === undefined ? {} : { uid: known.uid }),
              groups: known.groups ?? ["system:serviceaccounts", "system:authenticated"],
              ...(known.extra === undefined ? {} : { extra: known.extra }),
            },
            audiences,
          }
        : {
            authenticated: false,
            error: known === undefined ? "invalid bearer token" : "token audiences are invalid",
          };
    send(res, 201, {
      kind: "TokenReview",
      apiVersion: "authentication.k8s.io/v1",
      metadata: { creationTimestamp: null },
      spec: body?.spec ?? {},
      status: statusBody,
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://fake");
    const query = Object.fromEntries(url.searchParams);
    const method = req.method ?? "GET";
    const seen = { method, path: url.pathname, query };
    requests.push(seen);
    requestHook?.(seen);
    if (holdMatching?.(seen) === true) {
      held.add(res);
      res.on("close", () => held.delete(res));
      return;
    }
    if (options.bearerToken !== undefined && req.headers.authorization !== `Bearer ${options.bearerToken}`) {
      send(res, 401, status(401, "Unauthorized", "Unauthorized"));
      return;
    }
    if (method === "POST" && url.pathname === "/apis/authentication.k8s.io/v1/tokenreviews") {
      await tokenReview(req, res);
      return;
    }
    const p = parsePath(url.pathname);
    if (p === undefined) {
      send(res, 404, status(404, "NotFound", "the server could not find the requested resource"));
      return;
    }
    const { resource } = p;
    if (p.name === undefined) {
      if (method === "GET" && query.watch === "true") {
        const hold = toHold.get(resource.kind) ?? 0;
        if (hold > 0) {
          toHold.set(resource.kind, hold - 1);
          held.add(res);
          res.on("close", () => held.delete(res));
          return;
        }
        watch(p, query, res);
      } else if (method === "GET") list(p, query, res, url.pathname);
      else if (method === "POST") {
        const body = (await readBody(req)) as KubeJson;
        if (resource.namespaced) body.metadata.namespace = p.namespace ?? body.metadata.namespace;
        if (
          bucket(resource).has(
            keyOf(resource.namespaced ? body.metadata.namespace : undefined, body.metadata.name),
          )
        ) {
          send(
            res,
            409,
            status(409, "AlreadyExists", `${resource.plural} "${body.metadata.name}" already exists`),
          );
          return;
        }
        delete body.metadata.resourceVersion;
        send(res, 201, write(resource, body));
      } else send(res, 405, status(405, "MethodNotAllowed", `${method} is not allowed`));
      return;
    }
    const key = keyOf(resource.namespaced ? p.namespace : undefined, p.name);
    const existing = bucket(resource).get(key);
    const notFound = (): void =>
      send(
        res,
        404,
        status(
          404,
          "NotFound",
          `${resource.plural}${resource.group ? `.${resource.group}` : ""} "${p.name}" not found`,
        ),
      );
    if (p.subresource !== undefined && p.subresource !== "status") {
      send(res, 404, status(404, "NotFound", "the server could not find the requested resource"));
      return;
    }
    if (method === "GET") {
      if (existing === undefined) notFound();
      else send(res, 200, existing);
    } else if (method === "DELETE") {
      const gone = erase(resource, p.namespace, p.name);
      if (gone === undefined) notFound();
      else send(res, 200, gone);
    } else if (method === "PUT") {
      const body = (await readBody(req)) as KubeJson;
      if (existing === undefined) return notFound();
      const expected = body.metadata?.resourceVersion;
      if (expected !== undefined && expected !== existing.metadata.resourceVersion) {
        send(
          res,
          409,
          status(
            409,
            "Conflict",
            `Operation cannot be fulfilled on ${resource.plural} "${p.name}": the object has been modified; please apply your changes to the latest version and try again`,
          ),
        );
        return;
      }
      // The status subresource changes only status; the main resource keeps status as it was.
      const next =
        p.subresource === "status"
          ? { ...existing, status: body.status }
          : { ...body, ...(existing.status === undefined ? {} : { status: existing.status }) };
      next.metadata = { ...existing.metadata, ...(p.subresource === "status" ? {} : body.metadata) };
      send(res, 200, write(resource, next as KubeJson));
    } else if (method === "PATCH") {
      if (req.headers["content-type"] !== "application/merge-patch+json") {
        send(res, 415, status(415, "UnsupportedMediaType", "only application/merge-patch+json is supported"));
        return;
      }
      const patch = (await readBody(req)) as Record<string, unknown>;
      if (existing === undefined) return notFound();
      const scoped = p.subresource === "status" ? { status: patch.status } : { ...patch, status: undefined };
      const next = mergePatch(existing, scoped) as KubeJson;
      if (p.subresource !== "status" && existing.status !== undefined) next.status = existing.status;
      next.metadata = { ...next.metadata, name: existing.metadata.name };
      send(res, 200, write(resource, next));
    } else send(res, 405, status(405, "MethodNotAllowed", `${method} is not allowed`));
  };

  let server: Server;
  const startServer = (port: number): Promise<number> => {
    server = createServer((req, res) => {
      handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) send(res, 500, status(500, "InternalError", String(err)));
        else res.destroy();
      });
    });
    server.on("connection", (socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
    });
  };
  const stopServer = async (): Promise<void> => {
    for (const w of [...watchers]) {
      for (const t of w.timers) clearTimeout(t);
      clearTimeout(w.flushTimer);
      watchers.delete(w);
    }
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  const port = await startServer(0);
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    requests,
    kubeconfig() {
      const user = { token: options.bearerToken ?? "no-token-required" };
      return JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        // client-node refuses plain http unless TLS verification is off; there is no TLS to verify.
        clusters: [{ name: "fake", cluster: { server: url, "insecure-skip-tls-verify": true } }],
        users: [{ name: "fake", user }],
        contexts: [{ name: "fake", context: { cluster: "fake", user: "fake" } }],
        "current-context": "fake",
      });
    },
    apply(object) {
      const r = byKind(object.apiVersion ?? "", object.kind ?? "");
      return write(r, object);
    },
    remove(apiVersion, kind, name, namespace) {
      return erase(byKind(apiVersion, kind), namespace, name) !== undefined;
    },
    get(apiVersion, kind, name, namespace) {
      const r = byKind(apiVersion, kind);
      return bucket(r).get(keyOf(r.namespaced ? namespace : undefined, name));
    },
    resourceVersion: () => rv,
    installCrd: install,
    async restart(restartOptions = {}) {
      await stopServer();
      // Writes while down went through another replica: the restarted one's new watch cache starts after them.
      restartOptions.whileDown?.();
      if (restartOptions.dropHistory) {
        history = [];
        compactedRv = rv;
        snapshots.clear();
      }
      if (restartOptions.downMs) await new Promise((r) => setTimeout(r, restartOptions.downMs));
      await startServer(port);
    },
    expireWatches() {
      history = [];
      compactedRv = rv;
      snapshots.clear();
      for (const w of [...watchers]) {
        writeLine(
          w,
          JSON.stringify({ type: "ERROR", object: status(410, "Expired", "too old resource version") }),
        );
        finishWatch(w);
      }
    },
    compact() {
      history = [];
      compactedRv = rv;
      snapshots.clear();
    },
    setRequestHook(hook) {
      requestHook = hook;
    },
    setWatchDelay(ms) {
      watchDelayMs = ms;
    },
    holdWatches(kind, count) {
      toHold.set(kind, count);
    },
    holdRequests(match) {
      holdMatching = match;
    },
    heldRequestCount: () => held.size,
    watchCount: () => watchers.size,
    close: stopServer,
  };
}
