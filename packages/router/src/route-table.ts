import { parseGatewayDuration } from "./duration.js";
import { RouterError } from "./errors.js";
import { firstQueryValues } from "./query-params.js";
import { gatewayApiRetryOn, type RetryOn } from "./retry-conditions.js";
import type {
  BackendObjectReference,
  GRPCRouteMatch,
  HTTPHeaderFilter,
  HTTPRequestMirrorFilter,
  HTTPRequestRedirectFilter,
  HTTPRouteMatch,
  HTTPURLRewriteFilter,
  Route,
} from "./route-types.js";
import { compileSafeRegex, type RouteRegex } from "./safe-regex.js";
import { validateRoute } from "./validate-route.js";

/** The destination a request was sent to, used to find the routes attached to it. */
export interface RouteTarget {
  /**
   * The Service the request is addressed to (a route attaches with a `kind: Service` parentRef), or
   * with `kind: "ServiceEntry"` a ServiceEntry host (a route attaches with a `networking.istio.io`
   * `ServiceEntry` parentRef naming the ServiceEntry).
   */
  service?: { name: string; namespace: string; kind?: "Service" | "ServiceEntry"; hostname?: string };
  /** Destination port; routes whose parentRef sets a port only apply to that port. */
  port?: number;
}

/** The parts of a request that routing looks at. */
export interface RouteRequest {
  /** `Host` / `:authority`; a port and a trailing dot are ignored, case-insensitive. */
  host: string;
  /** Path without the query string. */
  path: string;
  /** Raw query string without the leading `?`. */
  query?: string;
  method: string;
  /** Lower-case header names, as Node delivers them. */
  headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** A gRPC request (`content-type: application/grpc*`): GRPCRoutes are tried first. */
  grpc?: boolean;
  target?: RouteTarget;
}

/** A backend reference with the defaults applied. */
export interface ResolvedBackendRef {
  group: string;
  kind: string;
  name: string;
  namespace: string;
  port: number | undefined;
  weight: number;
  requestHeaders: HTTPHeaderFilter | undefined;
  responseHeaders: HTTPHeaderFilter | undefined;
}

/** Per-rule retry settings (Gateway API `retry` stanza, RDS `retry_policy`), unset when the rule has none. */
export interface RuleRetry {
  attempts: number | undefined;
  /** What is retried: an HTTPRoute stanza's are istiod's (`gatewayApiRetryOn`), an RDS route's its `retry_on`. */
  retryOn: readonly RetryOn[];
  /** Status codes for `retriable-status-codes`, as given: none retries no status. */
  codes: readonly number[];
  backoffMs: number | undefined;
  /** Names in an RDS `retry_on` the router does not know, left out as Envoy leaves them out. */
  ignoredRetryOn?: readonly string[];
}

/** Everything the proxy needs from one route rule, resolved once at table build time. */
export interface CompiledRule {
  kind: "HTTPRoute" | "GRPCRoute";
  /** `namespace/name` of the route. */
  route: string;
  namespace: string;
  ruleIndex: number;
  ruleName: string | undefined;
  requestHeaders: HTTPHeaderFilter | undefined;
  responseHeaders: HTTPHeaderFilter | undefined;
  redirect: HTTPRequestRedirectFilter | undefined;
  rewrite: HTTPURLRewriteFilter | undefined;
  mirrors: readonly (HTTPRequestMirrorFilter & { backend: ResolvedBackendRef })[];
  backends: readonly ResolvedBackendRef[];
  /** ms; undefined when unset, 0 when disabled. */
  requestTimeoutMs: number | undefined;
  backendTimeoutMs: number | undefined;
  retry: RuleRetry | undefined;
}

/** The result of a successful route lookup. */
export interface RouteMatch {
  rule: CompiledRule;
  matchIndex: number;
  /** The PathPrefix value that matched (trailing `/` removed), for `ReplacePrefixMatch`. */
  matchedPrefix: string | undefined;
}

/** Options of {@link createRouteTable}. */
export interface RouteTableOptions {
  /**
   * The waypoint Gateway routes may attach to with a `kind: Gateway` parentRef. Default: any Gateway
   * parentRef attaches (a router embedded in one waypoint serves one Gateway). Istio: the waypoint's
   * `gateway.networking.k8s.io/v1` Gateway.
   */
  waypoint?: { name: string; namespace: string };
}

/** A compiled, immutable route table. */
export interface RouteTable {
  /** Finds the highest-precedence rule for a request, or undefined (the caller answers 404). */
  match(request: RouteRequest): RouteMatch | undefined;
  /** Whether any route attaches to this target (a Service without routes routes to itself). */
  hasRoutesFor(target: RouteTarget | undefined): boolean;
  /** Number of routes in the table. */
  readonly size: number;
}

type StringMatcher = { name: string; exact?: string; regex?: RouteRegex };

interface Entry {
  kind: 0 | 1; // 0 HTTP, 1 gRPC
  pathType: 0 | 1 | 2; // Exact, PathPrefix, RegularExpression
  path: string;
  pathRegex: RouteRegex | undefined;
  method: string | undefined;
  headers: StringMatcher[];
  query: StringMatcher[];
  grpcServiceLen: number;
  grpcMethodLen: number;
  created: number;
  routeKey: string;
  matchIndex: number;
  rule: CompiledRule;
  ports: ReadonlySet<number> | undefined;
  rank: number;
}

interface Bucket {
  exact: Map<string, Entry[]>;
  prefix: Map<string, Entry[]>;
  /** Lengths of the prefixes present: ancestors of other lengths need no lookup. */
  prefixLengths: Set<number>;
  regex: Entry[];
}

interface HostIndex {
  exact: Map<string, Bucket>;
  wildcard: { suffix: string; bucket: Bucket }[];
  any: Bucket | undefined;
}

interface Scope {
  http: HostIndex;
  grpc: HostIndex;
  allPorts: boolean;
  ports: Set<number>;
}

const GATEWAY_SCOPE = "gateway";

function newBucket(): Bucket {
  return { exact: new Map(), prefix: new Map(), prefixLengths: new Set(), regex: [] };
}

function newHostIndex(): HostIndex {
  return { exact: new Map(), wildcard: [], any: undefined };
}

function bucketFor(index: HostIndex, hostname: string | undefined): Bucket {
  if (hostname === undefined) {
    index.any ??= newBucket();
    return index.any;
  }
  if (hostname.startsWith("*.")) {
    const suffix = hostname.slice(1);
    let w = index.wildcard.find((x) => x.suffix === suffix);
    if (w === undefined) {
      w = { suffix, bucket: newBucket() };
      index.wildcard.push(w);
    }
    return w.bucket;
  }
  let b = index.exact.get(hostname);
  if (b === undefined) {
    b = newBucket();
    index.exact.set(hostname, b);
  }
  return b;
}

function addTo(map: Map<string, Entry[]>, key: string, entry: Entry): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [entry]);
  else list.push(entry);
}

function insert(bucket: Bucket, entry: Entry): void {
  if (entry.pathType === 0) addTo(bucket.exact, entry.path, entry);
  else if (entry.pathType === 1) {
    addTo(bucket.prefix, entry.path, entry);
    bucket.prefixLengths.add(entry.path.length);
  } else bucket.regex.push(entry);
}

/** Trailing `/` of a PathPrefix is ignored; `/` itself stays. */
function normalizePrefix(value: string): string {
  let v = value;
  while (v.length > 1 && v.endsWith("/")) v = v.slice(0, -1);
  return v;
}

function compileStringMatches(
  list: readonly { type?: string; name: string; value: string }[] | undefined,
  lowerNames: boolean,
): StringMatcher[] {
  const out: StringMatcher[] = [];
  const seen = new Set<string>();
  for (const m of list ?? []) {
    const name = lowerNames ? m.name.toLowerCase() : m.name;
    // Only the first entry for a name counts; later duplicates are ignored.
    if (seen.has(name)) continue;
    seen.add(name);
    if (m.type === "RegularExpression") out.push({ name, regex: compileSafeRegex(m.value, name) });
    else out.push({ name, exact: m.value });
  }
  return out;
}

function resolveBackendRef(
  ref: BackendObjectReference & {
    weight?: number;
    filters?: readonly {
      type: string;
      requestHeaderModifier?: HTTPHeaderFilter;
      responseHeaderModifier?: HTTPHeaderFilter;
    }[];
  },
  namespace: string,
): ResolvedBackendRef {
  return {
    group: ref.group ?? "",
    kind: ref.kind ?? "Service",
    name: ref.name,
    namespace: ref.namespace ?? namespace,
    port: ref.port,
    weight: ref.weight ?? 1,
    requestHeaders: ref.filters?.find((f) => f.type === "RequestHeaderModifier")?.requestHeaderModifier,
    responseHeaders: ref.filters?.find((f) => f.type === "ResponseHeaderModifier")?.responseHeaderModifier,
  };
}

function compareEntries(a: Entry, b: Entry): number {
  if (a.kind !== b.kind) return a.kind - b.kind;
  if (a.kind === 0) {
    if (a.pathType !== b.pathType) return a.pathType - b.pathType;
    if (a.path.length !== b.path.length) return b.path.length - a.path.length;
    const am = a.method === undefined ? 1 : 0;
    const bm = b.method === undefined ? 1 : 0;
    if (am !== bm) return am - bm;
    if (a.headers.length !== b.headers.length) return b.headers.length - a.headers.length;
    if (a.query.length !== b.query.length) return b.query.length - a.query.length;
  } else {
    if (a.grpcServiceLen !== b.grpcServiceLen) return b.grpcServiceLen - a.grpcServiceLen;
    if (a.grpcMethodLen !== b.grpcMethodLen) return b.grpcMethodLen - a.grpcMethodLen;
    if (a.headers.length !== b.headers.length) return b.headers.length - a.headers.length;
  }
  if (a.created !== b.created) return a.created - b.created;
  if (a.routeKey !== b.routeKey) return a.routeKey < b.routeKey ? -1 : 1;
  if (a.rule.ruleIndex !== b.rule.ruleIndex) return a.rule.ruleIndex - b.rule.ruleIndex;
  return a.matchIndex - b.matchIndex;
}

function scopeKeys(route: Route, waypoint: RouteTableOptions["waypoint"]): { key: string; port?: number }[] {
  const namespace = route.metadata.namespace ?? "default";
  // A route governs a Service's traffic only when it lives with the Service or with the waypoint:
  // otherwise anyone able to write a route in any namespace could take over another team's
  // Service at the waypoint. A route elsewhere is ignored, as it would be in an Istio waypoint.
  const trusted = (ns: string) =>
    ns === namespace || (waypoint !== undefined && waypoint.namespace === namespace);
  const keys: { key: string; port?: number }[] = [];
  for (const p of route.spec.parentRefs ?? []) {
    const group = p.group ?? "gateway.networking.k8s.io";
    const kind = p.kind ?? "Gateway";
    const ns = p.namespace ?? namespace;
    if (group === "" && kind === "Service") {
      if (trusted(ns)) keys.push({ key: `svc:${ns}/${p.name}`, port: p.port });
    } else if (group === "networking.istio.io" && kind === "ServiceEntry") {
      if (trusted(ns)) keys.push({ key: `se:${ns}/${p.name}`, port: p.port });
    } else if (group === "gateway.networking.k8s.io" && kind === "Gateway") {
      // The waypoint's listener admits routes of its own namespace only (the Gateway API's default
      // `allowedRoutes`).
      if (ns !== namespace) continue;
      if (waypoint === undefined || (waypoint.name === p.name && waypoint.namespace === ns)) {
        keys.push({ key: GATEWAY_SCOPE, port: p.port });
      }
    }
  }
  return keys;
}

function compileRule(route: Route, ruleIndex: number): CompiledRule {
  const namespace = route.metadata.namespace ?? "default";
  const rule = route.spec.rules?.[ruleIndex];
  const filters = (rule?.filters ?? []) as readonly {
    type: string;
    requestHeaderModifier?: HTTPHeaderFilter;
    responseHeaderModifier?: HTTPHeaderFilter;
    requestRedirect?: HTTPRequestRedirectFilter;
    urlRewrite?: HTTPURLRewriteFilter;
    requestMirror?: HTTPRequestMirrorFilter;
  }[];
  const timeouts = route.kind === "HTTPRoute" ? route.spec.rules?.[ruleIndex]?.timeouts : undefined;
  const retry = route.kind === "HTTPRoute" ? route.spec.rules?.[ruleIndex]?.retry : undefined;
  const field = `spec.rules[${ruleIndex}]`;
  return {
    kind: route.kind,
    route: `${namespace}/${route.metadata.name}`,
    namespace,
    ruleIndex,
    ruleName: rule?.name,
    requestHeaders: filters.find((f) => f.type === "RequestHeaderModifier")?.requestHeaderModifier,
    responseHeaders: filters.find((f) => f.type === "ResponseHeaderModifier")?.responseHeaderModifier,
    redirect: filters.find((f) => f.type === "RequestRedirect")?.requestRedirect,
    rewrite: filters.find((f) => f.type === "URLRewrite")?.urlRewrite,
    mirrors: filters
      .filter((f) => f.type === "RequestMirror" && f.requestMirror !== undefined)
      .map((f) => {
        const m = f.requestMirror as HTTPRequestMirrorFilter;
        return { ...m, backend: resolveBackendRef(m.backendRef, namespace) };
      }),
    backends: (rule?.backendRefs ?? []).map((b) => resolveBackendRef(b, namespace)),
    requestTimeoutMs:
      timeouts?.request === undefined
        ? undefined
        : parseGatewayDuration(timeouts.request, `${field}.timeouts.request`),
    backendTimeoutMs:
      timeouts?.backendRequest === undefined
        ? undefined
        : parseGatewayDuration(timeouts.backendRequest, `${field}.timeouts.backendRequest`),
    retry:
      retry === undefined
        ? undefined
        : {
            attempts: retry.attempts,
            retryOn: gatewayApiRetryOn(retry.codes ?? []),
            codes: retry.codes ?? [],
            backoffMs:
              retry.backoff === undefined
                ? undefined
                : parseGatewayDuration(retry.backoff, `${field}.retry.backoff`),
          },
  };
}

/** Every Entry gets the same hidden class (fixed field order), so matching stays monomorphic. */
function makeEntry(e: Entry): Entry {
  return {
    kind: e.kind,
    pathType: e.pathType,
    path: e.path,
    pathRegex: e.pathRegex,
    method: e.method,
    headers: e.headers,
    query: e.query,
    grpcServiceLen: e.grpcServiceLen,
    grpcMethodLen: e.grpcMethodLen,
    created: e.created,
    routeKey: e.routeKey,
    matchIndex: e.matchIndex,
    rule: e.rule,
    ports: e.ports,
    rank: e.rank,
  };
}

function httpEntry(
  m: HTTPRouteMatch,
  base: Omit<
    Entry,
    | "pathType"
    | "path"
    | "pathRegex"
    | "method"
    | "headers"
    | "query"
    | "grpcServiceLen"
    | "grpcMethodLen"
    | "kind"
  >,
): Entry {
  const type = m.path?.type ?? "PathPrefix";
  const value = m.path?.value ?? "/";
  return {
    ...base,
    kind: 0,
    pathType: type === "Exact" ? 0 : type === "PathPrefix" ? 1 : 2,
    path: type === "PathPrefix" ? normalizePrefix(value) : value,
    pathRegex: type === "RegularExpression" ? compileSafeRegex(value, "path") : undefined,
    method: m.method,
    headers: compileStringMatches(m.headers, true),
    query: compileStringMatches(m.queryParams, false),
    grpcServiceLen: 0,
    grpcMethodLen: 0,
  };
}

/** A gRPC request path: `/<service>/<method>`. */
const GRPC_PATH = /^\/([^/]+)\/([^/]+)$/;

function grpcEntry(
  m: GRPCRouteMatch,
  base: Omit<
    Entry,
    | "pathType"
    | "path"
    | "pathRegex"
    | "method"
    | "headers"
    | "query"
    | "grpcServiceLen"
    | "grpcMethodLen"
    | "kind"
  >,
): Entry {
  const service = m.method?.service;
  const method = m.method?.method;
  const common = {
    ...base,
    kind: 1 as const,
    method: undefined,
    headers: compileStringMatches(m.headers, true),
    query: [],
    grpcServiceLen: service?.length ?? 0,
    grpcMethodLen: method?.length ?? 0,
  };
  if (m.method?.type === "RegularExpression") {
    // Each is compiled on its own (RE2 read as RE2, its flags its own) and matched against its own
    // part of the path: spliced into one pattern, `a|b` would take `/b` with any method.
    const serviceRe = service === undefined ? undefined : compileSafeRegex(service, "service");
    const methodRe = method === undefined ? undefined : compileSafeRegex(method, "method");
    const re: RouteRegex = {
      source: `/${service ?? ""}/${method ?? ""}`,
      test(path: string): boolean {
        const parts = GRPC_PATH.exec(path);
        if (parts === null) return false;
        return (
          (serviceRe === undefined || serviceRe.test(parts[1] as string)) &&
          (methodRe === undefined || methodRe.test(parts[2] as string))
        );
      },
    };
    return { ...common, pathType: 2, path: `/${service ?? ""}/${method ?? ""}`, pathRegex: re };
  }
  if (service !== undefined && method !== undefined) {
    return { ...common, pathType: 0, path: `/${service}/${method}`, pathRegex: undefined };
  }
  if (service !== undefined) return { ...common, pathType: 1, path: `/${service}`, pathRegex: undefined };
  if (method !== undefined) {
    const escaped = method.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return { ...common, pathType: 2, path: `//${method}`, pathRegex: new RegExp(`^/[^/]+/${escaped}$`) };
  }
  return { ...common, pathType: 1, path: "/", pathRegex: undefined };
}

function headerValue(headers: RouteRequest["headers"], name: string): string | undefined {
  const v = headers[name];
  if (v === undefined) return undefined;
  return typeof v === "string" ? v : v.join(",");
}

function stringMatches(m: StringMatcher, value: string | undefined): boolean {
  if (value === undefined) return false;
  return m.exact !== undefined ? value === m.exact : (m.regex as RouteRegex).test(value);
}

class RequestView {
  private params: Map<string, string> | undefined;
  constructor(readonly request: RouteRequest) {}
  queryValue(name: string): string | undefined {
    this.params ??= firstQueryValues(this.request.query);
    return this.params.get(name);
  }
}

function entryMatches(e: Entry, view: RequestView, port: number | undefined): boolean {
  const r = view.request;
  if (e.ports !== undefined && (port === undefined || !e.ports.has(port))) return false;
  if (e.pathRegex !== undefined && !e.pathRegex.test(r.path)) return false;
  if (e.method !== undefined && e.method !== r.method) return false;
  for (const h of e.headers) if (!stringMatches(h, headerValue(r.headers, h.name))) return false;
  for (const q of e.query) if (!stringMatches(q, view.queryValue(q.name))) return false;
  return true;
}

function bestIn(
  list: readonly Entry[] | undefined,
  view: RequestView,
  port: number | undefined,
  best: Entry | undefined,
): Entry | undefined {
  if (list === undefined) return best;
  for (const e of list) {
    if (best !== undefined && e.rank >= best.rank) return best;
    if (entryMatches(e, view, port)) return e;
  }
  return best;
}

/** Longest input a path regex is run on; longer paths never match a RegularExpression rule. */
const MAX_REGEX_INPUT = 8192;

function matchBucket(bucket: Bucket, view: RequestView, port: number | undefined): Entry | undefined {
  const path = view.request.path;
  let best = bestIn(bucket.exact.get(path), view, port, undefined);
  if (bucket.prefix.size > 0) {
    best = bestIn(bucket.prefix.get("/"), view, port, best);
    // Every whole-segment ancestor of the path: /a, /a/b, /a/b/c ...
    const lengths = bucket.prefixLengths;
    let i = path.indexOf("/", 1);
    while (i !== -1) {
      if (lengths.has(i)) best = bestIn(bucket.prefix.get(path.slice(0, i)), view, port, best);
      i = path.indexOf("/", i + 1);
    }
    if (path.length > 1) {
      const whole = normalizePrefix(path);
      if (lengths.has(whole.length)) best = bestIn(bucket.prefix.get(whole), view, port, best);
    }
  }
  if (bucket.regex.length > 0 && path.length <= MAX_REGEX_INPUT)
    best = bestIn(bucket.regex, view, port, best);
  return best;
}

function normalizeHost(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end === -1 ? h : h.slice(0, end + 1);
  }
  const colon = h.indexOf(":");
  if (colon !== -1) h = h.slice(0, colon);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return h;
}

function matchHosts(
  index: HostIndex,
  host: string,
  view: RequestView,
  port: number | undefined,
): Entry | undefined {
  const exact = index.exact.get(host);
  if (exact !== undefined) {
    const e = matchBucket(exact, view, port);
    if (e !== undefined) return e;
  }
  for (const w of index.wildcard) {
    if (host.length > w.suffix.length && host.endsWith(w.suffix)) {
      const e = matchBucket(w.bucket, view, port);
      if (e !== undefined) return e;
    }
  }
  return index.any === undefined ? undefined : matchBucket(index.any, view, port);
}

/**
 * Compiles HTTPRoutes and GRPCRoutes into a lookup table with Gateway API precedence:
 * most specific hostname, then Exact path, longest PathPrefix, RegularExpression (longest first),
 * method, most header matches, most query matches, oldest route, `namespace/name`, rule order.
 * GRPCRoutes rank by service length, method length, then header matches. Every route is validated
 * first (see {@link validateRoute}); an invalid one throws with its field path.
 */
export function createRouteTable(routes: readonly unknown[], options: RouteTableOptions = {}): RouteTable {
  if (!Array.isArray(routes)) {
    throw new RouterError("ERR_ROUTE_INVALID", "routes must be a list of HTTPRoute and GRPCRoute objects", {
      field: "routes",
    });
  }
  const scopes = new Map<string, Scope>();
  const entries: { entry: Entry; buckets: Bucket[] }[] = [];
  for (const input of routes) {
    const route = validateRoute(input);
    const namespace = route.metadata.namespace ?? "default";
    const created =
      route.metadata.creationTimestamp === undefined
        ? Number.POSITIVE_INFINITY
        : Date.parse(route.metadata.creationTimestamp);
    const keys = scopeKeys(route, options.waypoint);
    if (keys.length === 0) continue;
    // Ports belong to the parentRef that names them: a route on one Service's port 80 and another
    // Service's port 8080 governs neither Service's other port. `null`: every port of that parent.
    const parents = new Map<string, Set<number> | null>();
    for (const k of keys) {
      const seen = parents.get(k.key);
      if (seen === null) continue;
      if (k.port === undefined) parents.set(k.key, null);
      else if (seen === undefined) parents.set(k.key, new Set([k.port]));
      else seen.add(k.port);
    }
    const rules = route.spec.rules === undefined || route.spec.rules.length === 0 ? [{}] : route.spec.rules;
    const hostnames =
      route.spec.hostnames === undefined || route.spec.hostnames.length === 0
        ? [undefined]
        : route.spec.hostnames.map((h) => h.toLowerCase());
    rules.forEach((_, ruleIndex) => {
      const rule = compileRule(route, ruleIndex);
      const rawMatches = (route.spec.rules?.[ruleIndex]?.matches ?? []) as readonly (HTTPRouteMatch &
        GRPCRouteMatch)[];
      const matches = rawMatches.length === 0 ? [{}] : rawMatches;
      matches.forEach((m, matchIndex) => {
        for (const [key, ports] of parents) {
          const base = {
            created,
            routeKey: `${namespace}/${route.metadata.name}`,
            matchIndex,
            rule,
            ports: ports ?? undefined,
            rank: 0,
          };
          const entry = makeEntry(route.kind === "HTTPRoute" ? httpEntry(m, base) : grpcEntry(m, base));
          let scope = scopes.get(key);
          if (scope === undefined) {
            scope = { http: newHostIndex(), grpc: newHostIndex(), allPorts: false, ports: new Set() };
            scopes.set(key, scope);
          }
          if (ports === null) scope.allPorts = true;
          else for (const port of ports) scope.ports.add(port);
          const buckets: Bucket[] = [];
          for (const h of hostnames)
            buckets.push(bucketFor(route.kind === "HTTPRoute" ? scope.http : scope.grpc, h));
          entries.push({ entry, buckets: [...new Set(buckets)] });
        }
      });
    });
  }
  entries.sort((a, b) => compareEntries(a.entry, b.entry));
  entries.forEach((x, i) => {
    x.entry.rank = i;
    for (const b of x.buckets) insert(b, x.entry);
  });
  for (const scope of scopes.values()) {
    for (const index of [scope.http, scope.grpc])
      index.wildcard.sort((a, b) => b.suffix.length - a.suffix.length);
  }

  const scopeFor = (target: RouteTarget | undefined): Scope | undefined => {
    const svc = target?.service;
    if (svc !== undefined) {
      const s = scopes.get(`${svc.kind === "ServiceEntry" ? "se" : "svc"}:${svc.namespace}/${svc.name}`);
      if (s !== undefined && (s.allPorts || (target?.port !== undefined && s.ports.has(target.port))))
        return s;
    }
    const g = scopes.get(GATEWAY_SCOPE);
    if (g !== undefined && (g.allPorts || (target?.port !== undefined && g.ports.has(target.port)))) return g;
    return undefined;
  };

  return {
    size: routes.length,
    hasRoutesFor: (target) => scopeFor(target) !== undefined,
    match(request) {
      const scope = scopeFor(request.target);
      if (scope === undefined) return undefined;
      const host = normalizeHost(request.host);
      const view = new RequestView(request);
      const port = request.target?.port;
      let entry: Entry | undefined;
      if (request.grpc === true) entry = matchHosts(scope.grpc, host, view, port);
      entry ??= matchHosts(scope.http, host, view, port);
      if (entry === undefined) return undefined;
      return {
        rule: entry.rule,
        matchIndex: entry.matchIndex,
        matchedPrefix: entry.kind === 0 && entry.pathType === 1 ? entry.path : undefined,
      };
    },
  };
}
