/**
 * Envoy LDS/RDS/CDS/EDS from the same manifests as the ambient resources: what proxyless gRPC
 * clients (and any Envoy-API client) need to call a mesh Service by name. Pure: same input, same
 * output, so an edit changes only the resources it touches and only those are pushed.
 */
import {
  type GRPCRoute,
  type GRPCRouteMatch,
  type HTTPHeaderFilter,
  type HTTPPathModifier,
  type HTTPRequestMirrorFilter,
  type HTTPRoute,
  type HTTPRouteFilter,
  type HTTPRouteMatch,
  // The cluster a route's share for an invalid backendRef goes to: the waypoint's router answers it
  // 500, as Gateway API asks of "requests that would have otherwise been routed to an invalid backend".
  INVALID_BACKEND_CLUSTER,
  parseGatewayDuration,
  validateRoute,
} from "@ambient/router";
import { type envoy, type google, type MessageInit, TypeUrl, typeRegistry } from "@ambient/xds";
import type { KubeObject, MeshIssue } from "./manifests.js";
import { isRecord } from "./manifests.js";
import { addressText } from "./pod-address.js";
import { sameItems, type TranslationMemo } from "./translate-memo.js";
import {
  type MeshConfig,
  type MeshWorkload,
  PodWorkload,
  servicesOf,
  type TranslateOptions,
} from "./translate-mesh.js";

type Listener = MessageInit<envoy.config.listener.v3.Listener>;
type RouteConfiguration = MessageInit<envoy.config.route.v3.RouteConfiguration>;
type EnvoyRoute = MessageInit<envoy.config.route.v3.Route>;
type RouteMatch = MessageInit<envoy.config.route.v3.RouteMatch>;
type RouteAction = MessageInit<envoy.config.route.v3.RouteAction>;
type HeaderMatcher = MessageInit<envoy.config.route.v3.HeaderMatcher>;
type HeaderValueOption = MessageInit<envoy.config.core.v3.HeaderValueOption>;
type Cluster = MessageInit<envoy.config.cluster.v3.Cluster>;
type ClusterLoadAssignment = MessageInit<envoy.config.endpoint.v3.ClusterLoadAssignment>;
type Duration = { seconds: number; nanos: number };

/** The Envoy resources for every Service port, by resource name, each map sorted by name. */
export interface EnvoyConfig {
  /** `<host>:<port>` -> API listener (HTTP connection manager routed by RDS over ADS). */
  listeners: Map<string, Listener>;
  /** `<host>:<port>` -> the Service port's routes. */
  routeConfigurations: Map<string, RouteConfiguration>;
  /** `outbound|<port>||<host>` -> EDS cluster. */
  clusters: Map<string, Cluster>;
  /** `outbound|<port>||<host>` -> endpoints by locality. */
  clusterLoadAssignments: Map<string, ClusterLoadAssignment>;
  /** Routes or parts of routes not translated, and why. */
  issues: MeshIssue[];
}

/** istiod's outbound cluster name of a Service port. */
export function outboundClusterName(host: string, port: number): string {
  return `outbound|${port}||${host}`;
}

/** Istio's `ConnectTimeout` default. */
const CONNECT_TIMEOUT: Duration = { seconds: 10, nanos: 0 };
/** Istio's retry conditions for Gateway API `retry` (plus the listed status codes). */
const RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/** Gateway API leaves the default attempt count to the implementation; Istio's default is 2. */
const DEFAULT_RETRY_ATTEMPTS = 2;
const ADS = { ads: {}, resourceApiVersion: "V3" } as const;
const REDIRECT_CODES: Record<number, envoy.config.route.v3.RedirectAction.RedirectResponseCode> = {
  301: "MOVED_PERMANENTLY",
  302: "FOUND",
  303: "SEE_OTHER",
  307: "TEMPORARY_REDIRECT",
  308: "PERMANENT_REDIRECT",
};

function duration(ms: number): Duration {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

function byName<V>(map: Map<string, V>): Map<string, V> {
  return new Map([...map].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
}

/** @internal One port of a Service, as the Envoy resources are built for it. */
export interface ServicePort {
  host: string;
  name: string;
  namespace: string;
  port: number;
  /** A Kubernetes Service's port, or a ServiceEntry host's (routes attach by a `ServiceEntry` parentRef). */
  kind: "Service" | "ServiceEntry";
  /** The other names a client may use for the Service: short names and the VIP. */
  domains: string[];
  /**
   * Its endpoints are all healthy, ready or not: a Service that publishes not-ready addresses (its
   * load balancing's health policy `ALLOW_ALL`), whose EndpointSlices list every pod as ready.
   */
  allowUnready: boolean;
}

/** One Gateway API match, ready to sort by precedence and turn into Envoy routes. */
interface RankedMatch {
  route: HTTPRoute | GRPCRoute;
  ruleIndex: number;
  matchIndex: number;
  /** 0 exact, 1 prefix, 2 regex. */
  pathRank: number;
  /**
   * A GRPCRoute match's precedence (Gateway API): characters of its service, then of its method (0
   * when it matches none), then its header matches. GRPCRoute matches are ranked by these alone.
   */
  grpc?: { service: number; method: number };
  pathLength: number;
  hasMethod: boolean;
  headers: number;
  queries: number;
  /** The Envoy matches this one becomes (a segment prefix becomes an exact path and a `/`-prefix). */
  envoyMatches: { match: RouteMatch; prefixOf?: string; exactPath?: string }[];
  action: Omit<EnvoyRoute, "match" | "name">;
  /** URLRewrite path, applied per Envoy match. */
  rewrite?: HTTPPathModifier;
  /** RequestRedirect path, applied per Envoy match. */
  redirectPath?: HTTPPathModifier;
}

function headerMatcher(name: string, type: string | undefined, value: string): HeaderMatcher {
  return type === "RegularExpression"
    ? { name: name.toLowerCase(), stringMatch: { safeRegex: { regex: value } } }
    : { name: name.toLowerCase(), stringMatch: { exact: value } };
}

function httpMatches(match: HTTPRouteMatch): {
  matches: { match: RouteMatch; prefixOf?: string; exactPath?: string }[];
  pathRank: number;
  pathLength: number;
} {
  const headers: HeaderMatcher[] = (match.headers ?? []).map((h) => headerMatcher(h.name, h.type, h.value));
  if (match.method !== undefined) headers.push({ name: ":method", stringMatch: { exact: match.method } });
  const queryParameters = (match.queryParams ?? []).map((q) => ({
    name: q.name,
    stringMatch: q.type === "RegularExpression" ? { safeRegex: { regex: q.value } } : { exact: q.value },
  }));
  const extra: Pick<RouteMatch, "headers" | "queryParameters"> = {
    ...(headers.length > 0 ? { headers } : {}),
    ...(queryParameters.length > 0 ? { queryParameters } : {}),
  };
  const type = match.path?.type ?? "PathPrefix";
  const value = match.path?.value ?? "/";
  if (type === "Exact") {
    return {
      matches: [{ match: { path: value, ...extra }, exactPath: value }],
      pathRank: 0,
      pathLength: value.length,
    };
  }
  if (type === "RegularExpression") {
    return {
      matches: [{ match: { safeRegex: { regex: value }, ...extra } }],
      pathRank: 2,
      pathLength: value.length,
    };
  }
  // PathPrefix matches whole segments: "/abc" is "/abc" itself or anything under "/abc/". Envoy's
  // path_separated_prefix says the same but proxyless gRPC refuses it; two matches work for both.
  const trimmed = value.replace(/\/+$/, "");
  if (trimmed === "")
    return { matches: [{ match: { prefix: "/", ...extra }, prefixOf: "/" }], pathRank: 1, pathLength: 1 };
  return {
    matches: [
      { match: { path: trimmed, ...extra }, exactPath: trimmed },
      { match: { prefix: `${trimmed}/`, ...extra }, prefixOf: `${trimmed}/` },
    ],
    pathRank: 1,
    pathLength: trimmed.length,
  };
}

const NAME_SEGMENT = "[^/]+";

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function grpcMatch(match: GRPCRouteMatch): {
  match: RouteMatch;
  pathRank: number;
  pathLength: number;
} {
  const headers = (match.headers ?? []).map((h) => headerMatcher(h.name, h.type, h.value));
  const extra: Pick<RouteMatch, "headers"> = headers.length > 0 ? { headers } : {};
  const { service, method } = grpcNames(match);
  if (match.method?.type === "RegularExpression") {
    const regex = `/${service ?? NAME_SEGMENT}/${method ?? NAME_SEGMENT}`;
    return { match: { safeRegex: { regex }, ...extra }, pathRank: 2, pathLength: regex.length };
  }
  if (service !== undefined && method !== undefined) {
    const path = `/${service}/${method}`;
    return { match: { path, ...extra }, pathRank: 0, pathLength: path.length };
  }
  if (service !== undefined) {
    return { match: { prefix: `/${service}/`, ...extra }, pathRank: 1, pathLength: service.length + 2 };
  }
  if (method !== undefined) {
    const regex = `/${NAME_SEGMENT}/${escapeRegex(method)}`;
    return { match: { safeRegex: { regex }, ...extra }, pathRank: 2, pathLength: regex.length };
  }
  return { match: { prefix: "/", ...extra }, pathRank: 1, pathLength: 1 };
}

/** The service and method a GRPCRoute match names (a leading `.` of the service dropped). */
function grpcNames(match: GRPCRouteMatch): { service: string | undefined; method: string | undefined } {
  return { service: match.method?.service?.replace(/^\./, ""), method: match.method?.method };
}

/** Of headers named alike (case aside), the first: Gateway API ignores the others, as Istio does. */
function firstOfEach<T extends { name: string }>(headers: readonly T[] | undefined): T[] {
  const seen = new Set<string>();
  return (headers ?? []).filter((h) => {
    const name = h.name.toLowerCase();
    if (seen.has(name)) return false;
    seen.add(name);
    return true;
  });
}

/**
 * A header a route cannot edit: a pseudo-header or `host` (a waypoint refuses such edits, as Envoy
 * does). `host` and `:authority` are the request's authority, which the route rewrites instead.
 */
const isInternalHeader = (name: string) => name.startsWith(":") || name === "host";
const isAuthorityHeader = (name: string) => name === ":authority" || name === "host";

function headerEdits(filter: HTTPHeaderFilter | undefined): {
  add: HeaderValueOption[];
  remove: string[];
  /** The authority a request modifier sets (`set` over `add`), as istiod reads Host from them. */
  authority?: string;
} {
  const set = firstOfEach(filter?.set).map((h) => ({ ...h, name: h.name.toLowerCase() }));
  const added = firstOfEach(filter?.add).map((h) => ({ ...h, name: h.name.toLowerCase() }));
  const authority = [...set, ...added].find((h) => isAuthorityHeader(h.name))?.value;
  const add: HeaderValueOption[] = [
    ...set
      .filter((h) => !isInternalHeader(h.name))
      .map((h) => ({
        header: { key: h.name, value: h.value },
        appendAction: "OVERWRITE_IF_EXISTS_OR_ADD" as const,
      })),
    ...added
      .filter((h) => !isInternalHeader(h.name))
      .map((h) => ({
        header: { key: h.name, value: h.value },
        appendAction: "APPEND_IF_EXISTS_OR_ADD" as const,
      })),
  ];
  const remove = (filter?.remove ?? []).map((n) => n.toLowerCase()).filter((n) => !isInternalHeader(n));
  return { add, remove, ...(authority === undefined ? {} : { authority }) };
}

/** Route-level request/response header edits of a rule's (or a backend's) filters. */
function headerFields(filters: readonly HTTPRouteFilter[] | undefined): {
  fields: {
    requestHeadersToAdd?: HeaderValueOption[];
    requestHeadersToRemove?: string[];
    responseHeadersToAdd?: HeaderValueOption[];
    responseHeadersToRemove?: string[];
  };
  /** The authority a RequestHeaderModifier sets: the route's host rewrite. */
  authority?: string;
} {
  const request = { add: [] as HeaderValueOption[], remove: [] as string[] };
  const response = { add: [] as HeaderValueOption[], remove: [] as string[] };
  let authority: string | undefined;
  for (const f of filters ?? []) {
    if (f.type === "RequestHeaderModifier") {
      const e = headerEdits(f.requestHeaderModifier);
      request.add.push(...e.add);
      request.remove.push(...e.remove);
      authority = e.authority ?? authority;
    } else if (f.type === "ResponseHeaderModifier") {
      const e = headerEdits(f.responseHeaderModifier);
      response.add.push(...e.add);
      response.remove.push(...e.remove);
    }
  }
  return {
    fields: {
      ...(request.add.length > 0 ? { requestHeadersToAdd: request.add } : {}),
      ...(request.remove.length > 0 ? { requestHeadersToRemove: request.remove } : {}),
      ...(response.add.length > 0 ? { responseHeadersToAdd: response.add } : {}),
      ...(response.remove.length > 0 ? { responseHeadersToRemove: response.remove } : {}),
    },
    ...(authority === undefined ? {} : { authority }),
  };
}

/**
 * A backend's own header edits. A Host one of them sets would be that backend's host rewrite, which
 * the waypoint's router does not take per backend: reported, and left out.
 */
function backendHeaderFields(
  ctx: TranslateContext,
  route: HTTPRoute | GRPCRoute,
  filters: readonly HTTPRouteFilter[] | undefined,
  where: string,
): ReturnType<typeof headerFields>["fields"] {
  const { fields, authority } = headerFields(filters);
  if (authority !== undefined) {
    ctx.issues.push({
      source: routeId(route),
      message: `${where}.filters: setting Host for one backend is not supported; left out`,
    });
  }
  return fields;
}

function mirrorFraction(
  mirror: HTTPRequestMirrorFilter,
): MessageInit<envoy.config.core.v3.RuntimeFractionalPercent> | undefined {
  if (mirror.fraction !== undefined) {
    const denominator = mirror.fraction.denominator ?? 100;
    if (mirror.fraction.numerator >= denominator) return undefined;
    return {
      defaultValue: {
        numerator: Math.round((mirror.fraction.numerator * 1_000_000) / denominator),
        denominator: "MILLION",
      },
    };
  }
  const percent = mirror.percent ?? 100;
  return percent >= 100 ? undefined : { defaultValue: { numerator: percent, denominator: "HUNDRED" } };
}

interface TranslateContext {
  domainSuffix: string;
  /** Hosts of the Services known, with their ports. */
  services: Map<string, Set<number>>;
  /** The ReferenceGrants read, by the namespace they are in (the one they open to references). */
  grants: Map<string, ReferenceGrant[]>;
  /** The rules of each route the router does not accept (see {@link acceptRules}): each answers 500. */
  rejected: WeakMap<HTTPRoute | GRPCRoute, Map<number, RejectedRule>>;
  issues: MeshIssue[];
}

/** A rule the router does not accept, kept as the matches it can read, answering 500. */
interface RejectedRule {
  reason: string;
  /**
   * Matches whose path the router cannot read (a regex it refuses, mostly), by index: they match any
   * path, ranked as a regex of that path's length, after every exact and prefix match.
   */
  unreadablePaths: Map<number, number>;
}

const GATEWAY_GROUP = "gateway.networking.k8s.io";

/**
 * What a Gateway API ReferenceGrant permits: references from objects of a kind in a namespace
 * (`from`, combined by OR) to objects of its own namespace of a kind, or to one of them by name
 * (`to`, combined by OR). Group `""` is the core API group.
 */
interface ReferenceGrant {
  from: { group: string; kind: string; namespace: string }[];
  to: { group: string; kind: string; name?: string }[];
}

/**
 * Reads a ReferenceGrant's spec, or says what is wrong with it. A grant widens what routes may
 * reach, so one that is not exactly what the API allows grants nothing rather than something guessed.
 */
function readReferenceGrant(obj: KubeObject): ReferenceGrant | string {
  const spec = obj.spec ?? {};
  const { from, to } = spec;
  if (!Array.isArray(from) || from.length === 0) return "spec.from must be a non-empty list";
  if (!Array.isArray(to) || to.length === 0) return "spec.to must be a non-empty list";
  const grant: ReferenceGrant = { from: [], to: [] };
  for (const [i, f] of from.entries()) {
    if (
      !isRecord(f) ||
      typeof f.group !== "string" ||
      typeof f.kind !== "string" ||
      typeof f.namespace !== "string"
    ) {
      return `spec.from[${i}] must have the strings group, kind and namespace`;
    }
    grant.from.push({ group: f.group, kind: f.kind, namespace: f.namespace });
  }
  for (const [i, t] of to.entries()) {
    if (
      !isRecord(t) ||
      typeof t.group !== "string" ||
      typeof t.kind !== "string" ||
      (t.name !== undefined && t.name !== null && typeof t.name !== "string")
    ) {
      return `spec.to[${i}] must have the strings group and kind, and name a string when given`;
    }
    // No name (or an empty one) is every object of the kind in the grant's namespace.
    grant.to.push({
      group: t.group,
      kind: t.kind,
      ...(typeof t.name === "string" && t.name !== "" ? { name: t.name } : {}),
    });
  }
  return grant;
}

/** True when a ReferenceGrant of `namespace` lets `route` reference the Service `name` there. */
function serviceGranted(
  ctx: TranslateContext,
  route: HTTPRoute | GRPCRoute,
  namespace: string,
  name: string,
): boolean {
  const routeNamespace = route.metadata.namespace ?? "default";
  return (ctx.grants.get(namespace) ?? []).some(
    (g) =>
      g.from.some(
        (f) => f.group === GATEWAY_GROUP && f.kind === route.kind && f.namespace === routeNamespace,
      ) &&
      g.to.some((t) => t.group === "" && t.kind === "Service" && (t.name === undefined || t.name === name)),
  );
}

function routeId(route: HTTPRoute | GRPCRoute): string {
  return `${route.kind}/${route.metadata.namespace ?? "default"}/${route.metadata.name}`;
}

const ISTIO_NETWORKING = "networking.istio.io";

function backendCluster(
  ctx: TranslateContext,
  route: HTTPRoute | GRPCRoute,
  ref: { group?: string; kind?: string; name: string; namespace?: string; port?: number },
  where: string,
): string | undefined {
  const namespace = ref.namespace ?? route.metadata.namespace ?? "default";
  if (ref.group === ISTIO_NETWORKING && ref.kind === "Hostname") {
    // A host of the mesh's registry (a ServiceEntry's, or a Service's full name), as Istio resolves it.
    if (ref.port === undefined || !ctx.services.get(ref.name)?.has(ref.port)) {
      ctx.issues.push({
        source: routeId(route),
        message: `${where}: no ServiceEntry or Service host ${ref.name}:${ref.port ?? "?"}`,
      });
      return undefined;
    }
    return outboundClusterName(ref.name, ref.port);
  }
  if ((ref.group ?? "") !== "" || (ref.kind ?? "Service") !== "Service") {
    ctx.issues.push({
      source: routeId(route),
      message: `${where}: only Service and networking.istio.io Hostname backends are supported`,
    });
    return undefined;
  }
  if (
    namespace !== (route.metadata.namespace ?? "default") &&
    !serviceGranted(ctx, route, namespace, ref.name)
  ) {
    // Gateway API: a reference into another namespace needs a ReferenceGrant there that permits it
    // (the route's ResolvedRefs condition is False, reason RefNotPermitted); the backend is left out.
    ctx.issues.push({
      source: routeId(route),
      message: `${where}: a backend in another namespace is not allowed: no ReferenceGrant in ${namespace} permits ${route.kind}s of ${route.metadata.namespace ?? "default"} to reference Service ${ref.name} (RefNotPermitted)`,
    });
    return undefined;
  }
  const host = `${ref.name}.${namespace}.svc.${ctx.domainSuffix}`;
  if (ref.port === undefined || !ctx.services.get(host)?.has(ref.port)) {
    ctx.issues.push({
      source: routeId(route),
      message: `${where}: no Service port ${host}:${ref.port ?? "?"}`,
    });
    return undefined;
  }
  return outboundClusterName(host, ref.port);
}

/** Envoy route action (everything but the match) of one HTTPRoute or GRPCRoute rule. */
function ruleAction(
  ctx: TranslateContext,
  route: HTTPRoute | GRPCRoute,
  ruleIndex: number,
): {
  action: Omit<EnvoyRoute, "match" | "name">;
  rewrite?: HTTPPathModifier;
  redirectPath?: HTTPPathModifier;
} {
  const rule = route.spec.rules?.[ruleIndex] ?? {};
  const where = `spec.rules[${ruleIndex}]`;
  // A rule the router cannot take (its filters, a regex, a value) fails closed on its own: 500.
  if (ctx.rejected.get(route)?.has(ruleIndex)) return { action: { directResponse: { status: 500 } } };
  const filters = (rule.filters ?? []) as HTTPRouteFilter[];
  const { fields: headers, authority } = headerFields(filters);
  const redirect = filters.find((f) => f.type === "RequestRedirect")?.requestRedirect;
  if (redirect !== undefined) {
    return {
      action: {
        redirect: {
          ...(redirect.scheme === undefined ? {} : { schemeRedirect: redirect.scheme }),
          ...(redirect.hostname === undefined ? {} : { hostRedirect: redirect.hostname }),
          // A scheme without a port means that scheme's well-known port (Gateway API); Envoy would
          // keep the request's port instead, so the port is sent explicitly.
          ...(redirect.port !== undefined
            ? { portRedirect: redirect.port }
            : redirect.scheme !== undefined
              ? { portRedirect: redirect.scheme === "https" ? 443 : 80 }
              : {}),
          responseCode: REDIRECT_CODES[redirect.statusCode ?? 302] ?? "FOUND",
        },
        ...headers,
      },
      ...(redirect.path === undefined ? {} : { redirectPath: redirect.path }),
    };
  }
  const clusters: MessageInit<envoy.config.route.v3.WeightedCluster.ClusterWeight>[] = [];
  let usable = 0;
  (rule.backendRefs ?? []).forEach((ref, i) => {
    const weight = ref.weight ?? 1;
    const cluster = backendCluster(ctx, route, ref, `${where}.backendRefs[${i}]`);
    if (weight === 0) return;
    if (cluster === undefined) {
      // Gateway API: the requests an invalid backend would have had get 500 (two equal weights, one
      // invalid: half of them), so its weight stays, on a cluster the waypoint answers 500 for (as
      // Istio keeps the entry and answers a cluster it does not know 500).
      clusters.push({ name: INVALID_BACKEND_CLUSTER, weight: { value: weight } });
      return;
    }
    usable++;
    clusters.push({
      name: cluster,
      weight: { value: weight },
      ...backendHeaderFields(ctx, route, ref.filters as HTTPRouteFilter[], `${where}.backendRefs[${i}]`),
    });
  });
  if (usable === 0) {
    // Gateway API: no usable backend answers 500.
    return { action: { directResponse: { status: 500 }, ...headers } };
  }
  const action: RouteAction = {};
  const backendHasFilters = (rule.backendRefs ?? []).some((ref) => (ref.filters ?? []).length > 0);
  // One backend without its own header edits is a plain cluster; anything else a weighted list.
  if (clusters.length === 1 && !backendHasFilters) action.cluster = clusters[0]?.name as string;
  else action.weightedClusters = { clusters };
  const rewrite = filters.find((f) => f.type === "URLRewrite")?.urlRewrite;
  // A URLRewrite hostname wins over a Host a header modifier sets, as istiod orders them.
  const hostRewrite = rewrite?.hostname ?? authority;
  if (hostRewrite !== undefined) action.hostRewriteLiteral = hostRewrite;
  const mirrors = filters.flatMap((f, i) => {
    if (f.type !== "RequestMirror" || f.requestMirror === undefined) return [];
    const mirror = f.requestMirror;
    const cluster = backendCluster(ctx, route, mirror.backendRef, `${where}.filters[${i}].requestMirror`);
    if (cluster === undefined) return [];
    const fraction = mirrorFraction(mirror);
    return [{ cluster, ...(fraction === undefined ? {} : { runtimeFraction: fraction }) }];
  });
  if (mirrors.length > 0) action.requestMirrorPolicies = mirrors;
  if (route.kind === "HTTPRoute") {
    const httpRule = route.spec.rules?.[ruleIndex];
    const request = httpRule?.timeouts?.request;
    const backend = httpRule?.timeouts?.backendRequest;
    const requestMs =
      request === undefined ? undefined : parseGatewayDuration(request, `${where}.timeouts.request`);
    const backendMs =
      backend === undefined ? undefined : parseGatewayDuration(backend, `${where}.timeouts.backendRequest`);
    const retry = httpRule?.retry;
    let timeoutMs = requestMs ?? backendMs;
    // Without a retry stanza backendRequest bounds the one request to the backend, so the route's
    // timeout is the shorter of the two (Istio: backendRequest becomes the route timeout). A request
    // timeout of 0 is none.
    if (
      retry === undefined &&
      backendMs !== undefined &&
      backendMs > 0 &&
      requestMs !== undefined &&
      (requestMs === 0 || backendMs < requestMs)
    ) {
      timeoutMs = backendMs;
    }
    if (timeoutMs !== undefined) action.timeout = duration(timeoutMs);
    const attempts = retry?.attempts ?? (retry === undefined ? 0 : DEFAULT_RETRY_ATTEMPTS);
    if (retry !== undefined && attempts === 0) {
      // `attempts: 0` turns retries off (Istio: HTTPRetry{attempts: 0}); without a retry policy the
      // waypoint would apply its default one. backendRequest still bounds the one attempt.
      action.retryPolicy = {
        numRetries: { value: 0 },
        ...(backendMs !== undefined && backendMs > 0 ? { perTryTimeout: duration(backendMs) } : {}),
      };
    } else if (attempts > 0) {
      action.retryPolicy = {
        retryOn: RETRY_ON,
        numRetries: { value: attempts },
        ...(retry?.codes === undefined ? {} : { retriableStatusCodes: retry.codes }),
        ...(backendMs !== undefined && backendMs > 0 ? { perTryTimeout: duration(backendMs) } : {}),
        ...(retry?.backoff === undefined
          ? {}
          : {
              retryBackOff: {
                baseInterval: duration(parseGatewayDuration(retry.backoff, `${where}.retry.backoff`)),
              },
            }),
      };
    }
  }
  return {
    action: { route: action, ...headers },
    ...(rewrite?.path === undefined ? {} : { rewrite: rewrite.path }),
  };
}

/** Sets the path rewrite of one Envoy match: `ReplacePrefixMatch` depends on which half of a segment prefix it is. */
function withPath(
  action: Omit<EnvoyRoute, "match" | "name">,
  envoyMatch: { prefixOf?: string; exactPath?: string },
  rewrite: HTTPPathModifier | undefined,
  redirectPath: HTTPPathModifier | undefined,
): Omit<EnvoyRoute, "match" | "name"> {
  const modifier = rewrite ?? redirectPath;
  if (modifier === undefined) return action;
  let prefix: string | undefined;
  let full: string | undefined;
  if (modifier.type === "ReplaceFullPath") {
    full = modifier.replaceFullPath ?? "/";
  } else {
    // An empty replacement is "/"; a replacement's trailing "/" counts for nothing (Gateway API's
    // table), so the prefix itself becomes the replacement without it (Istio: /foo with /xyz/ is /xyz).
    const replacement = modifier.replacePrefixMatch || "/";
    if (envoyMatch.exactPath !== undefined)
      prefix = replacement !== "/" && replacement.endsWith("/") ? replacement.slice(0, -1) : replacement;
    else prefix = replacement.endsWith("/") ? replacement : `${replacement}/`;
  }
  if (redirectPath !== undefined && action.redirect !== undefined) {
    return {
      ...action,
      redirect: {
        ...action.redirect,
        ...(full !== undefined ? { pathRedirect: full } : { prefixRewrite: prefix }),
      } as EnvoyRoute["redirect"],
    } as Omit<EnvoyRoute, "match" | "name">;
  }
  if (action.route === undefined) return action;
  return {
    ...action,
    route: {
      ...action.route,
      ...(full !== undefined
        ? { regexRewrite: { pattern: { regex: "^/.*$" }, substitution: full } }
        : { prefixRewrite: prefix }),
    } as RouteAction,
  } as Omit<EnvoyRoute, "match" | "name">;
}

/**
 * True when the route attaches to the port through a parentRef of its own namespace: a `Service` one
 * for a Kubernetes Service, a `networking.istio.io` `ServiceEntry` one (naming the entry) for a
 * ServiceEntry host, as Istio attaches routes to egress hosts.
 */
function attachesTo(route: HTTPRoute | GRPCRoute, servicePort: ServicePort): boolean {
  const namespace = route.metadata.namespace ?? "default";
  const [group, kind] = servicePort.kind === "Service" ? ["", "Service"] : [ISTIO_NETWORKING, "ServiceEntry"];
  return (route.spec.parentRefs ?? []).some(
    (p) =>
      p.group === group &&
      p.kind === kind &&
      p.name === servicePort.name &&
      (p.namespace ?? namespace) === servicePort.namespace &&
      namespace === servicePort.namespace &&
      (p.port === undefined || p.port === servicePort.port),
  );
}

/** HTTPRoute precedence (Gateway API): path (exact, longest prefix, regex), method, headers, query. */
function compareMatches(a: RankedMatch, b: RankedMatch): number {
  if (a.pathRank !== b.pathRank) return a.pathRank - b.pathRank;
  if (a.pathLength !== b.pathLength) return b.pathLength - a.pathLength;
  if (a.hasMethod !== b.hasMethod) return a.hasMethod ? -1 : 1;
  if (a.headers !== b.headers) return b.headers - a.headers;
  if (a.queries !== b.queries) return b.queries - a.queries;
  return compareRoutes(a, b);
}

/**
 * GRPCRoute precedence (Gateway API): characters of the service matched, then of the method
 * matched, then header matches; a match without service or method comes after every one with.
 */
function compareGrpcMatches(a: RankedMatch, b: RankedMatch): number {
  const ga = a.grpc ?? { service: 0, method: 0 };
  const gb = b.grpc ?? { service: 0, method: 0 };
  if (ga.service !== gb.service) return gb.service - ga.service;
  if (ga.method !== gb.method) return gb.method - ga.method;
  if (a.headers !== b.headers) return b.headers - a.headers;
  return compareRoutes(a, b);
}

/** The ties of either kind: oldest route, then `namespace/name`, then rule and match order. */
function compareRoutes(a: RankedMatch, b: RankedMatch): number {
  const ta = a.route.metadata.creationTimestamp;
  const tb = b.route.metadata.creationTimestamp;
  if (ta !== tb) {
    if (ta === undefined) return 1;
    if (tb === undefined) return -1;
    const d = Date.parse(ta) - Date.parse(tb);
    if (d !== 0) return d;
  }
  const ka = `${a.route.metadata.namespace ?? "default"}/${a.route.metadata.name}`;
  const kb = `${b.route.metadata.namespace ?? "default"}/${b.route.metadata.name}`;
  if (ka !== kb) return ka < kb ? -1 : 1;
  if (a.route.kind !== b.route.kind) return a.route.kind < b.route.kind ? -1 : 1;
  return a.ruleIndex - b.ruleIndex || a.matchIndex - b.matchIndex;
}

function rankedMatches(ctx: TranslateContext, route: HTTPRoute | GRPCRoute): RankedMatch[] {
  const out: RankedMatch[] = [];
  const rules = route.spec.rules ?? [{}];
  rules.forEach((_rule, ruleIndex) => {
    const { action, rewrite, redirectPath } = ruleAction(ctx, route, ruleIndex);
    const rejected = ctx.rejected.get(route)?.get(ruleIndex);
    if (route.kind === "HTTPRoute") {
      const matches = route.spec.rules?.[ruleIndex]?.matches ?? [{}];
      matches.forEach((m, matchIndex) => {
        const { matches: envoyMatches, pathRank, pathLength } = httpMatches(m);
        const regexLength = rejected?.unreadablePaths.get(matchIndex);
        out.push({
          route,
          ruleIndex,
          matchIndex,
          ...(regexLength === undefined
            ? { pathRank, pathLength }
            : { pathRank: 2, pathLength: regexLength }),
          hasMethod: m.method !== undefined,
          headers: m.headers?.length ?? 0,
          queries: m.queryParams?.length ?? 0,
          envoyMatches,
          action,
          ...(rewrite === undefined ? {} : { rewrite }),
          ...(redirectPath === undefined ? {} : { redirectPath }),
        });
      });
    } else {
      const matches = route.spec.rules?.[ruleIndex]?.matches ?? [{}];
      matches.forEach((m, matchIndex) => {
        const { match, pathRank, pathLength } = grpcMatch(m);
        const { service, method } = grpcNames(m);
        out.push({
          route,
          ruleIndex,
          matchIndex,
          pathRank,
          pathLength,
          grpc: { service: service?.length ?? 0, method: method?.length ?? 0 },
          hasMethod: false,
          headers: m.headers?.length ?? 0,
          queries: 0,
          envoyMatches: [{ match }],
          action,
        });
      });
    }
  });
  return out;
}

/** Merges two sorted lists of matches, taking the head {@link compareMatches} puts first. */
function interleave(http: RankedMatch[], grpc: RankedMatch[]): RankedMatch[] {
  const out: RankedMatch[] = [];
  let i = 0;
  let j = 0;
  while (i < http.length && j < grpc.length) {
    const h = http[i] as RankedMatch;
    const g = grpc[j] as RankedMatch;
    if (compareMatches(h, g) <= 0) {
      out.push(h);
      i++;
    } else {
      out.push(g);
      j++;
    }
  }
  return out.concat(http.slice(i), grpc.slice(j));
}

/** The virtual host domains of a Service port, as istiod builds them for sidecars. */
function domainsOf(sp: ServicePort): string[] {
  const names = [sp.host, ...sp.domains];
  return names.flatMap((n) => [n, `${n}:${sp.port}`]);
}

function routeConfiguration(
  ctx: TranslateContext,
  sp: ServicePort,
  routes: readonly (HTTPRoute | GRPCRoute)[],
): RouteConfiguration {
  const name = `${sp.host}:${sp.port}`;
  const attached = routes.filter((r) => attachesTo(r, sp));
  let envoyRoutes: EnvoyRoute[];
  if (attached.length === 0) {
    envoyRoutes = [
      { name: "default", match: { prefix: "/" }, route: { cluster: outboundClusterName(sp.host, sp.port) } },
    ];
  } else {
    const all = attached.flatMap((r) => rankedMatches(ctx, r));
    // Each kind in its own precedence order (Gateway API: HTTPRoutes and GRPCRoutes are not merged),
    // then the two lists interleaved by the path each Envoy match tests, keeping both orders.
    const ranked = interleave(
      all.filter((m) => m.grpc === undefined).sort(compareMatches),
      all.filter((m) => m.grpc !== undefined).sort(compareGrpcMatches),
    );
    envoyRoutes = ranked.flatMap((m) =>
      m.envoyMatches.map(
        (e, i) =>
          ({
            name: `${m.route.metadata.namespace ?? "default"}.${m.route.metadata.name}.${m.ruleIndex}.${m.matchIndex}${m.envoyMatches.length > 1 ? `.${i}` : ""}`,
            match: e.match,
            ...withPath(m.action, e, m.rewrite, m.redirectPath),
          }) as EnvoyRoute,
      ),
    );
  }
  return { name, virtualHosts: [{ name, domains: domainsOf(sp), routes: envoyRoutes }] };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** True when `validateRoute` accepts it. */
function accepted(route: Record<string, unknown>): boolean {
  try {
    validateRoute(route);
    return true;
  } catch {
    return false;
  }
}

/**
 * A route as the router accepts it, rule by rule. A route-level error (metadata, parentRefs,
 * hostnames, the rules list itself) throws: the route is left out. A rule the router does not accept
 * (a filter it does not support, a regex it refuses, a value out of range) does not take its route's
 * other rules with it: it is kept with the matches it can read, and answers 500 (fails closed rather
 * than letting its traffic fall to another rule or to the Service). A match part it cannot read is left
 * out, so the rule answers for more requests, never fewer; a path it cannot read (a regex it refuses)
 * matches any path, ranked as a regex.
 */
function acceptRules(raw: Record<string, unknown>): {
  route: HTTPRoute | GRPCRoute;
  rejected: Map<number, RejectedRule>;
} {
  let whole: unknown;
  try {
    return { route: validateRoute(raw), rejected: new Map() };
  } catch (err) {
    whole = err;
  }
  const spec = raw.spec;
  if (!isRecord(spec) || !Array.isArray(spec.rules)) throw whole;
  const rules: unknown[] = spec.rules;
  // Each rule is checked in its place, the others emptied, so errors name its index.
  const only = (i: number, rule: unknown) => ({
    ...raw,
    spec: { ...spec, rules: rules.map((_r, j) => (j === i ? rule : {})) },
  });
  // Route-level fields, every rule emptied: an error there is the route's.
  validateRoute(only(-1, {}));
  const rejected = new Map<number, RejectedRule>();
  const kept = rules.map((rule, i) => {
    try {
      validateRoute(only(i, rule));
      return rule;
    } catch (err) {
      const unreadablePaths = new Map<number, number>();
      const readable = readableMatches(raw.kind === "GRPCRoute", rule, unreadablePaths, (r) =>
        accepted(only(i, r)),
      );
      rejected.set(i, { reason: errorText(err), unreadablePaths });
      return readable;
    }
  });
  return { route: validateRoute({ ...raw, spec: { ...spec, rules: kept } }), rejected };
}

/**
 * What can be read of a rejected rule's matches: each match as given when the router accepts it,
 * else without the parts it does not (a path it cannot read becomes any path, noted in
 * `unreadablePaths` with its length). `ok` says whether a rule is accepted in the rule's place.
 */
function readableMatches(
  grpc: boolean,
  rule: unknown,
  unreadablePaths: Map<number, number>,
  ok: (rule: unknown) => boolean,
): Record<string, unknown> {
  if (!isRecord(rule) || rule.matches === undefined) return {};
  const matches = rule.matches;
  if (!Array.isArray(matches) || !ok({ matches: matches.map(() => ({})) })) return {};
  const fits = (m: Record<string, unknown>) => ok({ matches: [m] });
  return {
    matches: matches.map((m: unknown, i) => {
      if (!isRecord(m)) return {};
      if (fits(m)) return m;
      const parts: Record<string, unknown> = {};
      for (const key of grpc ? ["method"] : ["path", "method"]) {
        if (m[key] !== undefined && fits({ [key]: m[key] })) parts[key] = m[key];
      }
      const path = m.path;
      if (!grpc && path !== undefined && parts.path === undefined) {
        unreadablePaths.set(i, isRecord(path) && typeof path.value === "string" ? path.value.length : 0);
      }
      for (const key of grpc ? ["headers"] : ["headers", "queryParams"]) {
        const list = m[key];
        if (!Array.isArray(list)) continue;
        const readable = list.filter((entry) => fits({ [key]: [entry] }));
        if (readable.length > 0) parts[key] = readable;
      }
      return fits(parts) ? parts : {};
    }),
  };
}

/**
 * Translates the mesh into Envoy resources: per Service port an API listener and a
 * RouteConfiguration named `<host>:<port>` (its HTTPRoutes and GRPCRoutes attached through a Service
 * `parentRef`, or a default route to the Service), an EDS Cluster and a ClusterLoadAssignment named
 * `outbound|<port>||<host>`, with the Service's pods as endpoints grouped by locality. `mesh` is
 * {@link translateMesh}'s result for the same `objects`. With a `memo` (the same one for every call),
 * a resource whose inputs are the same objects as in the previous call is not built again: a load
 * assignment when its Service port has the same workload objects, a route configuration when no route,
 * no ReferenceGrant and no Service changed, a listener and cluster always (they depend on the name
 * alone). A backendRef to a Service of another namespace is used only when a ReferenceGrant of that
 * namespace permits it (Gateway API); otherwise it is left out and listed in `issues`.
 */
export function translateEnvoy(
  objects: readonly KubeObject[],
  mesh: MeshConfig,
  options: TranslateOptions = {},
  memo?: TranslationMemo,
): EnvoyConfig {
  const domainSuffix = options.domainSuffix ?? "cluster.local";
  const issues: MeshIssue[] = [];
  const ctx: TranslateContext = {
    domainSuffix,
    services: new Map(),
    grants: new Map(),
    rejected: new WeakMap(),
    issues,
  };

  const routes: (HTTPRoute | GRPCRoute)[] = [];
  // Every route configuration reads the routes and the ReferenceGrants: a grant's edit or removal
  // translates them again like a route's.
  const context: unknown[] = [domainSuffix];
  for (const obj of objects) {
    if (obj.kind === "ReferenceGrant") {
      context.push(obj);
      const id = `ReferenceGrant/${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
      const slash = obj.apiVersion?.indexOf("/") ?? -1;
      if (slash < 0 || obj.apiVersion?.slice(0, slash) !== GATEWAY_GROUP) {
        issues.push({
          source: id,
          message: `not read: a ReferenceGrant of ${obj.apiVersion ?? "no apiVersion"} is not ${GATEWAY_GROUP}'s`,
        });
        continue;
      }
      const grant = readReferenceGrant(obj);
      if (typeof grant === "string") {
        issues.push({ source: id, message: `grants nothing: ${grant}` });
        continue;
      }
      const namespace = obj.metadata.namespace ?? "default";
      const list = ctx.grants.get(namespace);
      if (list === undefined) ctx.grants.set(namespace, [grant]);
      else list.push(grant);
      continue;
    }
    if (obj.kind !== "HTTPRoute" && obj.kind !== "GRPCRoute") continue;
    context.push(obj);
    const source = `${obj.kind}/${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
    try {
      const { source: _source, ...raw } = obj;
      const { route, rejected } = acceptRules(raw);
      routes.push(route);
      if (rejected.size > 0) ctx.rejected.set(route, rejected);
      for (const [i, r] of rejected) {
        issues.push({ source, message: `spec.rules[${i}]: answers 500: ${r.reason}` });
      }
    } catch (err) {
      issues.push({ source, message: errorText(err) });
    }
  }
  for (const route of routes) {
    const namespace = route.metadata.namespace ?? "default";
    for (const p of route.spec.parentRefs ?? []) {
      if (p.group === "" && p.kind === "Service" && (p.namespace ?? namespace) !== namespace) {
        issues.push({
          source: routeId(route),
          message: `parentRef ${p.namespace}/${p.name}: a route for a Service in another namespace (consumer route) is not translated`,
        });
      }
    }
  }

  const servicePorts: ServicePort[] = [];
  for (const { service } of mesh.services) {
    const host = service.hostname ?? "";
    const name = service.name ?? "";
    const namespace = service.namespace ?? "default";
    const ports = new Set<number>();
    // An IPv6 VIP in brackets, as in a Host header (and istiod's domains): `[fd00::1]`, `[fd00::1]:80`.
    const vips = (service.addresses ?? []).map((a) => {
      const text = addressText(a.address ?? new Uint8Array());
      return a.address?.length === 16 ? `[${text}]` : text;
    });
    const allowUnready = service.loadBalancing?.healthPolicy === "ALLOW_ALL";
    for (const p of service.ports ?? []) {
      const port = p.servicePort ?? 0;
      if (port === 0 || ports.has(port)) continue;
      ports.add(port);
      const kubernetes = host === `${name}.${namespace}.svc.${domainSuffix}`;
      servicePorts.push({
        host,
        name,
        namespace,
        port,
        kind: kubernetes ? "Service" : "ServiceEntry",
        // Short names only for a Kubernetes Service's host; a ServiceEntry host is only itself.
        domains: [...(kubernetes ? [name, `${name}.${namespace}`, `${name}.${namespace}.svc`] : []), ...vips],
        allowUnready,
      });
    }
    ctx.services.set(host, ports);
  }

  // Route configurations read every Service (backend ports): reused only when no route, no grant and no Service changed.
  for (const s of mesh.services) context.push(s);
  const reuseRoutes = memo !== undefined && sameItems(memo.envoy.context, context);
  const next = {
    context,
    servicePorts: new Map<string, unknown>(),
    routeConfigurations: new Map<string, { value: unknown; issues: readonly MeshIssue[] }>(),
    loadAssignments: new Map<string, { workloads: readonly unknown[]; value: unknown }>(),
    portsByService: new Map<string, ServicePort[]>(),
  };
  for (const sp of servicePorts) {
    const serviceKey = `${sp.namespace}/${sp.host}`;
    const list = next.portsByService.get(serviceKey);
    if (list === undefined) next.portsByService.set(serviceKey, [sp]);
    else list.push(sp);
  }
  // The workloads behind each Service, in workload order: one pass, not one per Service port.
  const workloadsByService = new Map<string, MeshWorkload[]>();
  for (const w of mesh.workloads) {
    for (const serviceKey of Object.keys(servicesOf(w))) {
      const list = workloadsByService.get(serviceKey);
      if (list === undefined) workloadsByService.set(serviceKey, [w]);
      else list.push(w);
    }
  }

  const listeners = new Map<string, Listener>();
  const routeConfigurations = new Map<string, RouteConfiguration>();
  const clusters = new Map<string, Cluster>();
  const clusterLoadAssignments = new Map<string, ClusterLoadAssignment>();
  for (const sp of servicePorts) {
    const name = `${sp.host}:${sp.port}`;
    const clusterName = outboundClusterName(sp.host, sp.port);
    const behind = workloadsByService.get(`${sp.namespace}/${sp.host}`) ?? [];
    const lastAssignment = memo?.envoy.loadAssignments.get(clusterName);
    let assignment: ClusterLoadAssignment;
    if (lastAssignment !== undefined && sameItems(lastAssignment.workloads, behind)) {
      assignment = lastAssignment.value as ClusterLoadAssignment;
    } else {
      assignment = loadAssignment(behind, sp, clusterName);
      if (memo !== undefined) memo.counts.loadAssignments++;
    }
    clusterLoadAssignments.set(clusterName, assignment);
    next.loadAssignments.set(clusterName, { workloads: behind, value: assignment });
    const lastRoutes = reuseRoutes ? memo.envoy.routeConfigurations.get(name) : undefined;
    if (lastRoutes !== undefined) {
      routeConfigurations.set(name, lastRoutes.value as RouteConfiguration);
      issues.push(...lastRoutes.issues);
      next.routeConfigurations.set(name, lastRoutes);
    } else {
      const firstIssue = issues.length;
      const routeConfig = routeConfiguration(ctx, sp, routes);
      routeConfigurations.set(name, routeConfig);
      next.routeConfigurations.set(name, { value: routeConfig, issues: issues.slice(firstIssue) });
      if (memo !== undefined) memo.counts.routeConfigurations++;
    }
    const lastPort = memo?.envoy.servicePorts.get(name) as
      | { listener: Listener; cluster: Cluster }
      | undefined;
    if (lastPort !== undefined) {
      listeners.set(name, lastPort.listener);
      clusters.set(clusterName, lastPort.cluster);
      next.servicePorts.set(name, lastPort);
      continue;
    }
    if (memo !== undefined) memo.counts.servicePorts++;
    listeners.set(name, {
      name,
      apiListener: {
        apiListener: typeRegistry.pack(TypeUrl.httpConnectionManager, {
          statPrefix: name,
          rds: { configSource: ADS, routeConfigName: name },
          httpFilters: [
            { name: "envoy.filters.http.router", typedConfig: typeRegistry.pack(TypeUrl.router, {}) },
          ],
        }),
      },
    });
    clusters.set(clusterName, {
      name: clusterName,
      type: "EDS",
      edsClusterConfig: { edsConfig: ADS, serviceName: clusterName },
      connectTimeout: CONNECT_TIMEOUT,
      lbPolicy: "ROUND_ROBIN",
      commonLbConfig: { localityWeightedLbConfig: {} },
    });
    next.servicePorts.set(name, {
      listener: listeners.get(name),
      cluster: clusters.get(clusterName),
    });
  }
  if (memo !== undefined) memo.envoy = next;

  return {
    listeners: byName(listeners),
    routeConfigurations: byName(routeConfigurations),
    clusters: byName(clusters),
    clusterLoadAssignments: byName(clusterLoadAssignments),
    // A route attached to several ports is translated once per port; report each problem once.
    issues: issues.filter(
      (issue, i) => issues.findIndex((o) => o.source === issue.source && o.message === issue.message) === i,
    ),
  };
}

/** Every endpoint of weight 1 (all pods) shares this one message: load assignments are read, never modified. */
const WEIGHT_ONE: MessageInit<google.protobuf.UInt32Value> = { value: 1 };

const ASSIGNMENT_INPUTS: unique symbol = Symbol("load assignment inputs");

/**
 * @internal The load assignment of a Service port, built when read. It keeps the workloads behind
 * the port (in workload key order; the list the memo keeps anyway) and makes the endpoint messages
 * each time `endpoints` is read, which is mostly to encode it once: held, those messages cost about
 * 200 bytes per pod and port for as long as the assignment is served. Reads and JSON are those of the
 * message.
 */
export class LoadAssignment implements ClusterLoadAssignment {
  readonly clusterName: string;
  /**
   * What the endpoints are made of, under a symbol: encoding and JSON read the message's fields
   * only, and deep equality compares it (equal inputs make equal endpoints).
   */
  readonly [ASSIGNMENT_INPUTS]: {
    readonly workloads: readonly MeshWorkload[];
    readonly servicePort: ServicePort;
  };

  constructor(workloads: readonly MeshWorkload[], servicePort: ServicePort, clusterName: string) {
    this.clusterName = clusterName;
    this[ASSIGNMENT_INPUTS] = { workloads, servicePort };
  }

  /** The pods behind the port, grouped by locality; every pod weighs 1, a locality the sum. */
  get endpoints(): MessageInit<envoy.config.endpoint.v3.LocalityLbEndpoints>[] {
    const { workloads, servicePort } = this[ASSIGNMENT_INPUTS];
    return localityEndpoints(workloads, servicePort);
  }

  toJSON(): ClusterLoadAssignment {
    return { clusterName: this.clusterName, endpoints: this.endpoints };
  }
}

/**
 * @internal The load assignment of the pods behind a Service port (see {@link LoadAssignment}).
 * `workloads` in workload key order.
 */
export function loadAssignment(
  workloads: readonly MeshWorkload[],
  sp: ServicePort,
  clusterName: string,
): LoadAssignment {
  return new LoadAssignment(workloads, sp, clusterName);
}

/**
 * What an endpoint of `serviceKey`'s `port` is made of, from a workload: a pod's is read from its
 * translation without building its Workload message. Undefined when the workload has no such target
 * port or no address.
 */
function endpointOf(
  w: MeshWorkload,
  serviceKey: string,
  port: number,
):
  | {
      address: string;
      target: number;
      weight: number;
      healthy: boolean;
      locality: { region?: string; zone?: string; subzone?: string } | undefined;
    }
  | undefined {
  if (w instanceof PodWorkload) {
    const target = targetPortOf(w.services, serviceKey, port);
    return target === undefined
      ? undefined
      : { address: w.ip, target, weight: 1, healthy: w.healthy, locality: w.profile.locality };
  }
  const { workload } = w;
  const target = targetPortOf(workload.services, serviceKey, port);
  const bytes = workload.addresses?.[0];
  if (target === undefined || bytes === undefined) return undefined;
  return {
    address: [...bytes].join("."),
    target,
    weight: workload.capacity?.value ?? 1,
    healthy: workload.status !== "UNHEALTHY",
    locality: workload.locality ?? undefined,
  };
}

/** The pod port a Service port sends to, from a workload's services map; none for 0 or no such port. */
function targetPortOf(
  services:
    | Readonly<
        Record<string, { ports?: readonly { servicePort?: number; targetPort?: number }[] } | undefined>
      >
    | undefined,
  serviceKey: string,
  port: number,
): number | undefined {
  const target = services?.[serviceKey]?.ports?.find((p) => p.servicePort === port)?.targetPort;
  return target === undefined || target === 0 ? undefined : target;
}

function localityEndpoints(
  workloads: readonly MeshWorkload[],
  sp: ServicePort,
): MessageInit<envoy.config.endpoint.v3.LocalityLbEndpoints>[] {
  const serviceKey = `${sp.namespace}/${sp.host}`;
  const byLocality = new Map<
    string,
    {
      locality: MessageInit<envoy.config.core.v3.Locality>;
      endpoints: MessageInit<envoy.config.endpoint.v3.LbEndpoint>[];
      weight: number;
    }
  >();
  for (const w of workloads) {
    const endpoint = endpointOf(w, serviceKey, sp.port);
    if (endpoint === undefined) continue;
    const { address, target, weight, healthy } = endpoint;
    const locality = {
      region: endpoint.locality?.region ?? "",
      zone: endpoint.locality?.zone ?? "",
      subZone: endpoint.locality?.subzone ?? "",
    };
    const key = `${locality.region}/${locality.zone}/${locality.subZone}`;
    let group = byLocality.get(key);
    if (group === undefined) {
      group = { locality, endpoints: [], weight: 0 };
      byLocality.set(key, group);
    }
    group.weight += weight;
    group.endpoints.push({
      endpoint: { address: { socketAddress: { address, portValue: target } } },
      healthStatus: healthy || sp.allowUnready ? "HEALTHY" : "UNHEALTHY",
      loadBalancingWeight: weight === 1 ? WEIGHT_ONE : { value: weight },
    });
  }
  return [...byLocality.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([, g]) => ({
      locality: g.locality,
      lbEndpoints: g.endpoints,
      loadBalancingWeight: { value: g.weight },
      priority: 0,
    }));
}
