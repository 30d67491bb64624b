/**
 * Envoy RouteConfigurations (RDS) as the waypoint's route table: what the control plane sends a
 * waypoint instead of HTTPRoute objects, as istiod does. Envoy's semantics, not Gateway API's: the
 * virtual host is chosen by `Host`, then the first route whose match holds wins (the control plane
 * already sorted the routes by Gateway API precedence). Each route becomes the same `CompiledRule`
 * an HTTPRoute rule becomes, so filters, retries, timeouts and balancing behave identically.
 */

import { RouterError } from "./errors.js";
import { firstQueryValues } from "./query-params.js";
import { parseRetryOn, type RetryOn } from "./retry-conditions.js";
import type {
  CompiledRule,
  ResolvedBackendRef,
  RouteMatch,
  RouteRequest,
  RouteTable,
  RouteTarget,
} from "./route-table.js";
import type {
  HTTPHeaderFilter,
  HTTPPathModifier,
  HTTPRequestMirrorFilter,
  HTTPRequestRedirectFilter,
} from "./route-types.js";
import { compileSafeRegex } from "./safe-regex.js";
import { hasForbiddenValueChars, isHeaderName } from "./validate-route.js";
import { MAX_RETRY_ATTEMPTS } from "./waypoint-handler.js";

// Structural subsets of the decoded `envoy.config.route.v3` messages (`@ambient/xds` decodes them into
// exactly this shape: lowerCamelCase, oneofs as the one member set). Only what the waypoint acts on.

/** `envoy.type.matcher.v3.RegexMatcher`. */
export interface EnvoyRegexMatcher {
  regex?: string;
}
/** `envoy.type.matcher.v3.StringMatcher`. */
export interface EnvoyStringMatcher {
  exact?: string;
  prefix?: string;
  suffix?: string;
  safeRegex?: EnvoyRegexMatcher;
  contains?: string;
  ignoreCase?: boolean;
}
/** `envoy.config.route.v3.HeaderMatcher`. */
export interface EnvoyHeaderMatcher {
  name?: string;
  exactMatch?: string;
  presentMatch?: boolean;
  prefixMatch?: string;
  suffixMatch?: string;
  safeRegexMatch?: EnvoyRegexMatcher;
  stringMatch?: EnvoyStringMatcher;
  invertMatch?: boolean;
}
/** `envoy.config.route.v3.QueryParameterMatcher`. */
export interface EnvoyQueryParameterMatcher {
  name?: string;
  stringMatch?: EnvoyStringMatcher;
  presentMatch?: boolean;
}
/** `envoy.config.route.v3.RouteMatch`. */
export interface EnvoyRouteMatch {
  prefix?: string;
  path?: string;
  safeRegex?: EnvoyRegexMatcher;
  pathSeparatedPrefix?: string;
  caseSensitive?: { value?: boolean };
  headers?: readonly EnvoyHeaderMatcher[];
  queryParameters?: readonly EnvoyQueryParameterMatcher[];
  grpc?: object;
}
/** `envoy.config.core.v3.HeaderValueOption`. */
export interface EnvoyHeaderValueOption {
  header?: { key?: string; value?: string };
  appendAction?: string;
}
/** Header additions and removals of a route or a weighted cluster (Envoy's field names). */
export interface EnvoyHeaderEdits {
  requestHeadersToAdd?: readonly EnvoyHeaderValueOption[];
  requestHeadersToRemove?: readonly string[];
  responseHeadersToAdd?: readonly EnvoyHeaderValueOption[];
  responseHeadersToRemove?: readonly string[];
}
/** `google.protobuf.Duration` as decoded. */
export type EnvoyDuration = { seconds?: number; nanos?: number };
/** `envoy.config.route.v3.RouteAction`. */
export interface EnvoyRouteAction {
  cluster?: string;
  clusterHeader?: string;
  weightedClusters?: {
    clusters?: readonly (EnvoyHeaderEdits & { name?: string; weight?: { value?: number } })[];
  };
  prefixRewrite?: string;
  hostRewriteLiteral?: string;
  timeout?: EnvoyDuration;
  retryPolicy?: {
    retryOn?: string;
    numRetries?: { value?: number };
    perTryTimeout?: EnvoyDuration;
    retriableStatusCodes?: readonly number[];
    retryBackOff?: { baseInterval?: EnvoyDuration };
  };
  requestMirrorPolicies?: readonly {
    cluster?: string;
    runtimeFraction?: { defaultValue?: { numerator?: number; denominator?: string } };
  }[];
  regexRewrite?: { pattern?: EnvoyRegexMatcher; substitution?: string };
}
/** `envoy.config.route.v3.Route`. */
export interface EnvoyRoute extends EnvoyHeaderEdits {
  name?: string;
  match?: EnvoyRouteMatch;
  route?: EnvoyRouteAction;
  redirect?: {
    httpsRedirect?: boolean;
    schemeRedirect?: string;
    hostRedirect?: string;
    portRedirect?: number;
    pathRedirect?: string;
    prefixRewrite?: string;
    responseCode?: string;
    stripQuery?: boolean;
  };
  directResponse?: { status?: number };
  nonForwardingAction?: object;
}
/** `envoy.config.route.v3.RouteConfiguration`. */
export interface EnvoyRouteConfiguration {
  name?: string;
  virtualHosts?: readonly { name?: string; domains?: readonly string[]; routes?: readonly EnvoyRoute[] }[];
}

/** One matcher on a header, a pseudo-header (`:method`, `:authority`, `:path`) or a query parameter. */
export interface ValueMatcher {
  name: string;
  test: (value: string | undefined) => boolean;
}

/** One Envoy route, compiled. */
export interface CompiledEnvoyRoute {
  path: (path: string) => string | false | undefined;
  headers: readonly ValueMatcher[];
  query: readonly ValueMatcher[];
  grpcOnly: boolean;
  rule: CompiledRule;
}

/** A RouteConfiguration checked and compiled; build tables from it with {@link createEnvoyRouteTable}. */
export interface CompiledEnvoyRoutes {
  readonly name: string;
  /** Virtual hosts in Envoy's lookup order is decided per request; kept as given. */
  readonly virtualHosts: readonly { domains: readonly string[]; routes: readonly CompiledEnvoyRoute[] }[];
}

/** Options of {@link compileEnvoyRouteConfiguration}. */
export interface EnvoyRouteOptions {
  /** DNS suffix of Service hosts in cluster names (`outbound|80||web.demo.svc.<suffix>`). Default `cluster.local`. */
  clusterDomain?: string;
}

const REDIRECT_CODES: Record<string, 301 | 302 | 303 | 307 | 308> = {
  MOVED_PERMANENTLY: 301,
  FOUND: 302,
  SEE_OTHER: 303,
  TEMPORARY_REDIRECT: 307,
  PERMANENT_REDIRECT: 308,
};
const DENOMINATORS: Record<string, number> = { HUNDRED: 100, TEN_THOUSAND: 10_000, MILLION: 1_000_000 };
/** The one `regex_rewrite` a full-path replacement becomes (Istio and our control plane write it so). */
const FULL_PATH_PATTERN = "^/.*$";

function invalid(field: string, message: string): RouterError {
  return new RouterError("ERR_ROUTE_INVALID", `${field}: ${message}`, { field });
}
function isObject(value: unknown): value is object {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
/** A list field that may be absent (protobuf's empty repeated field). */
function listOf<T>(value: readonly T[] | undefined, field: string): readonly T[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw invalid(field, "must be a list");
  return value;
}
function unsupported(field: string, message: string): RouterError {
  return new RouterError("ERR_ROUTE_UNSUPPORTED", `${field}: ${message}`, { field });
}

function ms(d: EnvoyDuration | undefined): number | undefined {
  if (d === undefined) return undefined;
  return (d.seconds ?? 0) * 1000 + Math.floor((d.nanos ?? 0) / 1_000_000);
}

const HOSTNAME_GROUP = "networking.istio.io";

/**
 * The cluster name the control plane gives a route's share for an invalid backendRef (an unknown
 * Service or port, a reference into another namespace no ReferenceGrant permits, an unsupported kind).
 * Gateway API: requests that would have gone to an invalid backend get 500; the rest of the weights
 * still apply. It becomes a backend no `resolveBackend` is asked about, which the handler answers 500
 * (`cluster_not_found`), as Envoy answers a cluster it does not know under Istio's
 * `cluster_not_found_response_code: INTERNAL_SERVER_ERROR`. Only a route's target, never a mirror.
 */
export const INVALID_BACKEND_CLUSTER = "invalid-backend";

/** The backend kind of {@link INVALID_BACKEND_CLUSTER}: not a Service, so it never resolves. */
const INVALID_BACKEND_KIND = "InvalidBackend";

/** A DNS name as a ServiceEntry host is written: lower-case labels of letters, digits and `-`. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * The backend behind a cluster name `outbound|<port>||<host>` (istiod's naming): a Service port when
 * the host is `<name>.<namespace>.svc.<suffix>`, else a ServiceEntry host, as the `networking.istio.io`
 * `Hostname` backendRef Istio's routes use for it (its `namespace` is `namespace`, the routes' own).
 * Anything else throws.
 */
export function backendOfCluster(
  cluster: string,
  field: string,
  clusterDomain = "cluster.local",
  namespace = "",
): ResolvedBackendRef {
  const parts = cluster.split("|");
  const port = Number(parts[1]);
  const host = parts[3] ?? "";
  const suffix = `.svc.${clusterDomain}`;
  const labels = host.endsWith(suffix) ? host.slice(0, -suffix.length).split(".") : [];
  const service = labels.length === 2 && labels.every((l) => l !== "");
  if (
    parts.length !== 4 ||
    parts[0] !== "outbound" ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535 ||
    parts[2] !== "" ||
    !(service || (!host.endsWith(suffix) && HOST_NAME.test(host)))
  ) {
    throw unsupported(field, `cluster ${JSON.stringify(cluster)} is not outbound|<port>||<service host>`);
  }
  return {
    group: service ? "" : HOSTNAME_GROUP,
    kind: service ? "Service" : "Hostname",
    name: service ? (labels[0] as string) : host,
    namespace: service ? (labels[1] as string) : namespace,
    port,
    weight: 1,
    requestHeaders: undefined,
    responseHeaders: undefined,
  };
}

/** {@link backendOfCluster} for a route's target, where {@link INVALID_BACKEND_CLUSTER} is allowed too. */
function targetOfCluster(
  cluster: string,
  field: string,
  clusterDomain: string,
  namespace: string,
): ResolvedBackendRef {
  if (cluster !== INVALID_BACKEND_CLUSTER) return backendOfCluster(cluster, field, clusterDomain, namespace);
  return {
    group: "",
    kind: INVALID_BACKEND_KIND,
    name: INVALID_BACKEND_CLUSTER,
    namespace,
    port: undefined,
    weight: 1,
    requestHeaders: undefined,
    responseHeaders: undefined,
  };
}

/**
 * A header name a route may add or remove, as Envoy's header parser allows: an HTTP field name, not a
 * pseudo-header (`:path`) and not `host` (its rewrite is `host_rewrite_literal`).
 */
function checkEditableHeaderName(name: unknown, field: string, verb: "modified" | "removed"): string {
  if (typeof name !== "string" || name === "") throw invalid(field, "is empty");
  if (name.startsWith(":") || name.toLowerCase() === "host") {
    throw invalid(field, `${JSON.stringify(name)}: :-prefixed or host headers may not be ${verb}`);
  }
  if (!isHeaderName(name)) throw invalid(field, `${JSON.stringify(name)} is not a valid HTTP header name`);
  return name;
}

/** A header value or host a route sets: one with CR, LF or NUL is refused, as Envoy refuses it. */
function checkHeaderValue(value: unknown, field: string): string {
  if (typeof value !== "string") throw invalid(field, "must be a string");
  if (hasForbiddenValueChars(value)) throw invalid(field, "must not contain CR, LF or NUL characters");
  return value;
}

/**
 * The header edits of a route or weighted cluster: additions (`addField`) and removals
 * (`removeField`), refused whole (so the configuration in force stays) when one names a header or
 * value Envoy refuses.
 */
function headerFilter(
  add: readonly EnvoyHeaderValueOption[] | undefined,
  remove: readonly string[] | undefined,
  addField: string,
  removeField: string,
): HTTPHeaderFilter | undefined {
  const filter: Required<HTTPHeaderFilter> = {
    set: [],
    add: [],
    remove: listOf(remove, removeField).map((name, i) =>
      checkEditableHeaderName(name, `${removeField}[${i}]`, "removed"),
    ),
  };
  listOf(add, addField).forEach((option, i) => {
    const name = checkEditableHeaderName(option.header?.key, `${addField}[${i}].header.key`, "modified");
    const header = {
      name,
      value: checkHeaderValue(option.header?.value ?? "", `${addField}[${i}].header.value`),
    };
    const action = option.appendAction ?? "APPEND_IF_EXISTS_OR_ADD";
    if (action === "OVERWRITE_IF_EXISTS_OR_ADD") filter.set.push(header);
    else if (action === "APPEND_IF_EXISTS_OR_ADD") filter.add.push(header);
    else throw unsupported(`${addField}[${i}].appendAction`, `${action} is not supported`);
  });
  if (filter.set.length === 0 && filter.add.length === 0 && filter.remove.length === 0) return undefined;
  return filter;
}

/** A route's `retry_on`, read as Envoy reads it (unknown names left out); absent retries on nothing. */
function retryConditions(
  value: string | undefined,
  field: string,
): { retryOn: readonly RetryOn[]; ignoredRetryOn?: readonly string[] } {
  if (value === undefined || value === null) return { retryOn: [] };
  if (typeof value !== "string") throw invalid(field, "must be a string");
  const { retryOn, ignored } = parseRetryOn(value);
  return ignored.length === 0 ? { retryOn } : { retryOn, ignoredRetryOn: ignored };
}

function stringTest(m: EnvoyStringMatcher, field: string): (value: string) => boolean {
  const fold = m.ignoreCase === true;
  const norm = (v: string) => (fold ? v.toLowerCase() : v);
  if (m.exact !== undefined) {
    const want = norm(m.exact);
    return (v) => norm(v) === want;
  }
  if (m.prefix !== undefined) {
    const want = norm(m.prefix);
    return (v) => norm(v).startsWith(want);
  }
  if (m.suffix !== undefined) {
    const want = norm(m.suffix);
    return (v) => norm(v).endsWith(want);
  }
  if (m.contains !== undefined) {
    const want = norm(m.contains);
    return (v) => norm(v).includes(want);
  }
  if (m.safeRegex !== undefined) {
    const re = compileSafeRegex(m.safeRegex.regex ?? "", `${field}.safeRegex.regex`);
    return (v) => re.test(v);
  }
  throw invalid(field, "sets no match pattern");
}

function headerMatcher(h: EnvoyHeaderMatcher, field: string): ValueMatcher {
  const name = (h.name ?? "").toLowerCase();
  if (name === "") throw invalid(`${field}.name`, "is empty");
  let test: (value: string) => boolean;
  if (h.exactMatch !== undefined) test = stringTest({ exact: h.exactMatch }, field);
  else if (h.prefixMatch !== undefined) test = stringTest({ prefix: h.prefixMatch }, field);
  else if (h.suffixMatch !== undefined) test = stringTest({ suffix: h.suffixMatch }, field);
  else if (h.safeRegexMatch !== undefined) test = stringTest({ safeRegex: h.safeRegexMatch }, field);
  else if (h.stringMatch !== undefined) test = stringTest(h.stringMatch, `${field}.stringMatch`);
  else if (h.presentMatch === false) {
    return { name, test: (v) => (v === undefined) !== (h.invertMatch === true) };
  } else test = () => true; // presentMatch true, or no specifier: the header must be there
  const invert = h.invertMatch === true;
  // Envoy: an inverted matcher also matches when the header is absent.
  return { name, test: (v) => (v === undefined ? invert : test(v) !== invert) };
}

function queryMatcher(q: EnvoyQueryParameterMatcher, field: string): ValueMatcher {
  const name = q.name ?? "";
  if (name === "") throw invalid(`${field}.name`, "is empty");
  if (q.stringMatch !== undefined) {
    const test = stringTest(q.stringMatch, `${field}.stringMatch`);
    return { name, test: (v) => v !== undefined && test(v) };
  }
  return { name, test: (v) => v !== undefined };
}

/**
 * The path test of a RouteMatch: returns false when the path does not match, else the prefix a
 * `prefix_rewrite` replaces (undefined for a regex).
 */
function pathTest(m: EnvoyRouteMatch, field: string): (path: string) => string | false | undefined {
  const sensitive = m.caseSensitive?.value !== false;
  const fold = (v: string) => (sensitive ? v : v.toLowerCase());
  if (m.path !== undefined) {
    const want = fold(m.path);
    return (p) => (fold(p) === want ? m.path : false);
  }
  if (m.prefix !== undefined) {
    const want = fold(m.prefix);
    return (p) => (fold(p).startsWith(want) ? m.prefix : false);
  }
  if (m.pathSeparatedPrefix !== undefined) {
    const prefix = m.pathSeparatedPrefix;
    if (!prefix.startsWith("/") || (prefix.length > 1 && prefix.endsWith("/"))) {
      throw invalid(`${field}.pathSeparatedPrefix`, "must start with / and not end with /");
    }
    const want = fold(prefix);
    return (p) => {
      const v = fold(p);
      return v === want || (v.startsWith(want) && (want === "/" || v[want.length] === "/")) ? prefix : false;
    };
  }
  if (m.safeRegex !== undefined) {
    const re = compileSafeRegex(m.safeRegex.regex ?? "", `${field}.safeRegex.regex`);
    return (p) => (re.test(p) ? undefined : false);
  }
  throw invalid(field, "sets no path match");
}

function mirrorOf(
  policy: NonNullable<EnvoyRouteAction["requestMirrorPolicies"]>[number],
  field: string,
  clusterDomain: string,
  namespace: string,
): HTTPRequestMirrorFilter & { backend: ResolvedBackendRef } {
  const backend = backendOfCluster(policy.cluster ?? "", `${field}.cluster`, clusterDomain, namespace);
  const fraction = policy.runtimeFraction?.defaultValue;
  const backendRef = {
    group: backend.group,
    kind: backend.kind,
    name: backend.name,
    namespace: backend.namespace,
    port: backend.port,
  };
  if (fraction === undefined) return { backendRef, backend };
  const denominator = DENOMINATORS[fraction.denominator ?? "HUNDRED"];
  if (denominator === undefined) throw invalid(`${field}.runtimeFraction`, "unknown denominator");
  return { backendRef, backend, fraction: { numerator: fraction.numerator ?? 0, denominator } };
}

function ruleOf(
  route: EnvoyRoute,
  index: number,
  namespace: string,
  field: string,
  clusterDomain: string,
): CompiledRule {
  const base: CompiledRule = {
    kind: route.match?.grpc === undefined ? "HTTPRoute" : "GRPCRoute",
    route: route.name === undefined || route.name === "" ? `route-${index}` : route.name,
    namespace,
    ruleIndex: index,
    ruleName: route.name,
    requestHeaders: headerFilter(
      route.requestHeadersToAdd,
      route.requestHeadersToRemove,
      `${field}.requestHeadersToAdd`,
      `${field}.requestHeadersToRemove`,
    ),
    responseHeaders: headerFilter(
      route.responseHeadersToAdd,
      route.responseHeadersToRemove,
      `${field}.responseHeadersToAdd`,
      `${field}.responseHeadersToRemove`,
    ),
    redirect: undefined,
    rewrite: undefined,
    mirrors: [],
    backends: [],
    requestTimeoutMs: undefined,
    backendTimeoutMs: undefined,
    retry: undefined,
  };
  if (route.redirect !== undefined) {
    const r = route.redirect;
    const scheme = r.httpsRedirect === true ? "https" : r.schemeRedirect;
    if (scheme !== undefined && scheme !== "" && scheme !== "http" && scheme !== "https") {
      throw unsupported(`${field}.redirect.schemeRedirect`, `scheme ${JSON.stringify(scheme)}`);
    }
    if (r.stripQuery === true) throw unsupported(`${field}.redirect.stripQuery`, "is not supported");
    const statusCode = REDIRECT_CODES[r.responseCode ?? "MOVED_PERMANENTLY"];
    if (statusCode === undefined) throw invalid(`${field}.redirect.responseCode`, "unknown code");
    const path: HTTPPathModifier | undefined =
      r.pathRedirect !== undefined && r.pathRedirect !== ""
        ? { type: "ReplaceFullPath", replaceFullPath: r.pathRedirect }
        : r.prefixRewrite !== undefined && r.prefixRewrite !== ""
          ? { type: "ReplacePrefixMatch", replacePrefixMatch: r.prefixRewrite }
          : undefined;
    const redirect: HTTPRequestRedirectFilter = {
      statusCode,
      ...(scheme === undefined || scheme === "" ? {} : { scheme: scheme as "http" | "https" }),
      ...(r.hostRedirect === undefined || r.hostRedirect === "" ? {} : { hostname: r.hostRedirect }),
      ...(r.portRedirect === undefined || r.portRedirect === 0 ? {} : { port: r.portRedirect }),
      ...(path === undefined ? {} : { path }),
    };
    return { ...base, redirect };
  }
  if (route.directResponse !== undefined) {
    // The only direct response Gateway API routes become: a rule without a usable backend, 500.
    if (route.directResponse.status !== 500) {
      throw unsupported(`${field}.directResponse.status`, "only 500 (no usable backend) is supported");
    }
    return base;
  }
  const action = route.route;
  if (action === undefined) throw unsupported(field, "needs a route, redirect or directResponse action");
  const where = `${field}.route`;
  let backends: ResolvedBackendRef[];
  if (action.cluster !== undefined)
    backends = [targetOfCluster(action.cluster, `${where}.cluster`, clusterDomain, namespace)];
  else if (action.weightedClusters !== undefined) {
    backends = (action.weightedClusters.clusters ?? []).map((c, i) => {
      const f = `${where}.weightedClusters.clusters[${i}]`;
      return {
        ...targetOfCluster(c.name ?? "", `${f}.name`, clusterDomain, namespace),
        weight: c.weight?.value ?? 0,
        requestHeaders: headerFilter(
          c.requestHeadersToAdd,
          c.requestHeadersToRemove,
          `${f}.requestHeadersToAdd`,
          `${f}.requestHeadersToRemove`,
        ),
        responseHeaders: headerFilter(
          c.responseHeadersToAdd,
          c.responseHeadersToRemove,
          `${f}.responseHeadersToAdd`,
          `${f}.responseHeadersToRemove`,
        ),
      };
    });
    if (backends.length === 0) throw invalid(`${where}.weightedClusters.clusters`, "is empty");
  } else throw unsupported(where, "only cluster and weightedClusters targets are supported");
  let path: HTTPPathModifier | undefined;
  if (action.regexRewrite !== undefined) {
    if (action.regexRewrite.pattern?.regex !== FULL_PATH_PATTERN) {
      throw unsupported(
        `${where}.regexRewrite`,
        `only the full-path pattern ${FULL_PATH_PATTERN} is supported`,
      );
    }
    path = { type: "ReplaceFullPath", replaceFullPath: action.regexRewrite.substitution ?? "/" };
  } else if (action.prefixRewrite !== undefined && action.prefixRewrite !== "") {
    path = { type: "ReplacePrefixMatch", replacePrefixMatch: action.prefixRewrite };
  }
  const host =
    action.hostRewriteLiteral === undefined
      ? undefined
      : checkHeaderValue(action.hostRewriteLiteral, `${where}.hostRewriteLiteral`);
  const rewrite =
    path === undefined && (host === undefined || host === "")
      ? undefined
      : {
          ...(path === undefined ? {} : { path }),
          ...(host === undefined || host === "" ? {} : { hostname: host }),
        };
  const retry = action.retryPolicy;
  const backoffMs = ms(retry?.retryBackOff?.baseInterval);
  // Envoy refuses a back-off base under 1 ms: with none, retries would follow each other at once.
  if (retry?.retryBackOff !== undefined && !(backoffMs !== undefined && backoffMs >= 1)) {
    throw invalid(`${where}.retryPolicy.retryBackOff.baseInterval`, "must be at least 1 ms");
  }
  return {
    ...base,
    backends,
    rewrite,
    mirrors: (action.requestMirrorPolicies ?? []).map((m, i) =>
      mirrorOf(m, `${where}.requestMirrorPolicies[${i}]`, clusterDomain, namespace),
    ),
    requestTimeoutMs: ms(action.timeout),
    backendTimeoutMs: ms(retry?.perTryTimeout),
    retry:
      retry === undefined
        ? undefined
        : {
            // As many as the route asks for, up to the handler's bound on any retry policy.
            // Envoy: num_retries absent is 1 retry; present, its value (0 when unset) is the count.
            attempts: Math.min(
              retry.numRetries === undefined || retry.numRetries === null ? 1 : (retry.numRetries.value ?? 0),
              MAX_RETRY_ATTEMPTS,
            ),
            ...retryConditions(retry.retryOn, `${where}.retryPolicy.retryOn`),
            codes: [...(retry.retriableStatusCodes ?? [])],
            backoffMs,
          },
  };
}

/**
 * Checks one RouteConfiguration and compiles it for {@link createEnvoyRouteTable}. Throws a
 * `RouterError` naming the field (`virtualHosts[0].routes[2].route.cluster`) for anything the router
 * cannot do as Envoy would: a cluster that is not a Service port (or, as a route's target,
 * {@link INVALID_BACKEND_CLUSTER}, answered 500), a `cluster_header` target, a
 * regex rewrite other than a full-path replacement, a regex RE2 refuses or too large to match, a direct
 * response other than 500.
 * `namespace` is the namespace of the Service the configuration serves.
 */
export function compileEnvoyRouteConfiguration(
  config: EnvoyRouteConfiguration,
  namespace: string,
  options: EnvoyRouteOptions = {},
): CompiledEnvoyRoutes {
  if (!isObject(config)) throw invalid("config", "must be a RouteConfiguration object");
  if (typeof namespace !== "string" || namespace === "")
    throw invalid("namespace", "must be a namespace name");
  const clusterDomain = options.clusterDomain ?? "cluster.local";
  const virtualHosts = listOf(config.virtualHosts, "virtualHosts").map((vh, v) => {
    if (!isObject(vh)) throw invalid(`virtualHosts[${v}]`, "must be an object");
    const domains = listOf(vh.domains, `virtualHosts[${v}].domains`).map((d, i) => {
      if (typeof d !== "string") throw invalid(`virtualHosts[${v}].domains[${i}]`, "must be a string");
      return d.toLowerCase();
    });
    if (domains.length === 0) throw invalid(`virtualHosts[${v}].domains`, "is empty");
    const routes = listOf(vh.routes, `virtualHosts[${v}].routes`).map((route, r): CompiledEnvoyRoute => {
      const field = `virtualHosts[${v}].routes[${r}]`;
      if (!isObject(route)) throw invalid(field, "must be an object");
      const match = route.match;
      if (match === undefined) throw invalid(`${field}.match`, "is required");
      return {
        path: pathTest(match, `${field}.match`),
        headers: (match.headers ?? []).map((h, i) => headerMatcher(h, `${field}.match.headers[${i}]`)),
        query: (match.queryParameters ?? []).map((q, i) =>
          queryMatcher(q, `${field}.match.queryParameters[${i}]`),
        ),
        grpcOnly: match.grpc !== undefined,
        rule: ruleOf(route, r, namespace, field, clusterDomain),
      };
    });
    return { domains, routes };
  });
  return { name: config.name ?? "", virtualHosts };
}

function domainRank(domain: string, host: string): number {
  // Envoy's order: exact, then suffix wildcards ("*.a.b", longest first), then prefix wildcards, then "*".
  if (domain === host) return 3_000_000;
  if (domain === "*") return 0;
  if (domain.startsWith("*") && host.endsWith(domain.slice(1)) && host.length > domain.length - 1)
    return 2_000_000 + domain.length;
  if (domain.endsWith("*") && host.startsWith(domain.slice(0, -1)) && host.length > domain.length - 1)
    return 1_000_000 + domain.length;
  return -1;
}

/** The virtual host for `host` by Envoy's domain order, on `host:port` as sent; the bare host only when nothing matched that. */
function virtualHostFor(
  routes: CompiledEnvoyRoutes,
  host: string,
): CompiledEnvoyRoutes["virtualHosts"][number] | undefined {
  const full = host.toLowerCase().replace(/\.$/, "");
  const colon = full.startsWith("[") ? full.indexOf(":", full.indexOf("]")) : full.lastIndexOf(":");
  const candidates = colon === -1 ? [full] : [full, full.slice(0, colon)];
  for (const h of candidates) {
    let best: CompiledEnvoyRoutes["virtualHosts"][number] | undefined;
    let bestRank = -1;
    for (const vh of routes.virtualHosts) {
      for (const d of vh.domains) {
        const rank = domainRank(d, h);
        if (rank > bestRank) {
          bestRank = rank;
          best = vh;
        }
      }
    }
    if (best !== undefined) return best;
  }
  return undefined;
}

function requestValue(request: RouteRequest, name: string): string | undefined {
  if (name === ":method") return request.method;
  if (name === ":authority") return request.host;
  if (name === ":path")
    return request.query === undefined || request.query === ""
      ? request.path
      : `${request.path}?${request.query}`;
  const v = request.headers[name];
  if (v === undefined) return undefined;
  return typeof v === "string" ? v : v.join(",");
}

/** The RouteConfiguration that serves one Service port, for {@link createEnvoyRouteTable}. */
export interface EnvoyRouteBinding {
  /**
   * The Service, or with `kind: "ServiceEntry"` the ServiceEntry host (`hostname`), whose port the
   * configuration serves; a request's {@link RouteTarget} names it the same way.
   */
  service: { name: string; namespace: string; kind?: "Service" | "ServiceEntry"; hostname?: string };
  port: number;
  routes: CompiledEnvoyRoutes;
}

/** One key per Service port, or per ServiceEntry host and port. */
function bindingKey(
  service: { name: string; namespace: string; kind?: "Service" | "ServiceEntry"; hostname?: string },
  port: number,
): string {
  return service.kind === "ServiceEntry"
    ? `se:${service.namespace}/${service.hostname ?? service.name}:${port}`
    : `${service.namespace}/${service.name}:${port}`;
}

/**
 * A route table over compiled RouteConfigurations, one per Service port: a request to that Service
 * and port is routed by its configuration (virtual host by `Host`, then the first matching route);
 * no matching virtual host or route is `undefined` (404). A Service port without a configuration has
 * no routes (`hasRoutesFor` false: the handler routes it to itself).
 */
export function createEnvoyRouteTable(bindings: readonly EnvoyRouteBinding[]): RouteTable {
  if (!Array.isArray(bindings)) throw invalid("bindings", "must be a list of { service, port, routes }");
  const byTarget = new Map<string, CompiledEnvoyRoutes>();
  bindings.forEach((b: EnvoyRouteBinding, i: number) => {
    const field = `bindings[${i}]`;
    if (!isObject(b)) throw invalid(field, "must be { service, port, routes }");
    const service = b.service as { name?: unknown; namespace?: unknown; hostname?: unknown } | undefined;
    if (!isObject(service) || typeof service.name !== "string" || typeof service.namespace !== "string")
      throw invalid(`${field}.service`, "must be { name, namespace }");
    if (!Number.isInteger(b.port) || b.port < 1 || b.port > 65535)
      throw invalid(`${field}.port`, "must be a port number (1 to 65535)");
    if (!isObject(b.routes) || !Array.isArray(b.routes.virtualHosts))
      throw invalid(`${field}.routes`, "must come from compileEnvoyRouteConfiguration");
    byTarget.set(bindingKey(b.service, b.port), b.routes);
  });
  const find = (target: RouteTarget | undefined) =>
    target?.service === undefined || target.port === undefined
      ? undefined
      : byTarget.get(bindingKey(target.service, target.port));
  return {
    size: byTarget.size,
    hasRoutesFor: (target) => find(target) !== undefined,
    match(request): RouteMatch | undefined {
      const routes = find(request.target);
      if (routes === undefined) return undefined;
      const vh = virtualHostFor(routes, request.host);
      if (vh === undefined) return undefined;
      let params: Map<string, string> | undefined;
      for (const route of vh.routes) {
        if (route.grpcOnly && request.grpc !== true) continue;
        const prefix = route.path(request.path);
        if (prefix === false) continue;
        if (!route.headers.every((h) => h.test(requestValue(request, h.name)))) continue;
        if (route.query.length > 0) {
          params ??= firstQueryValues(request.query);
          const p = params;
          if (!route.query.every((q) => q.test(p.get(q.name)))) continue;
        }
        return { rule: route.rule, matchIndex: 0, matchedPrefix: prefix };
      }
      return undefined;
    },
  };
}

/** Name of the RouteConfiguration a waypoint serves a Service port with (istiod's inbound VIP name). */
export function waypointRouteName(host: string, port: number): string {
  return `inbound-vip|${port}|http|${host}`;
}

/**
 * The host and port of any {@link waypointRouteName} (a Service's or a ServiceEntry host's), or
 * undefined for another name.
 */
export function parseWaypointRouteHost(name: string): { host: string; port: number } | undefined {
  const parts = name.split("|");
  if (parts.length !== 4 || parts[0] !== "inbound-vip" || parts[2] !== "http") return undefined;
  const port = Number(parts[1]);
  const host = parts[3] as string;
  if (!Number.isInteger(port) || port < 1 || port > 65535 || !HOST_NAME.test(host)) return undefined;
  return { host, port };
}

/** The Service port behind a {@link waypointRouteName}, or undefined for another name. */
export function parseWaypointRouteName(
  name: string,
  clusterDomain = "cluster.local",
): { host: string; port: number; service: { name: string; namespace: string } } | undefined {
  const parts = name.split("|");
  if (parts.length !== 4 || parts[0] !== "inbound-vip" || parts[2] !== "http") return undefined;
  const port = Number(parts[1]);
  const host = parts[3] as string;
  const suffix = `.svc.${clusterDomain}`;
  if (!Number.isInteger(port) || port < 1 || port > 65535 || !host.endsWith(suffix)) return undefined;
  const labels = host.slice(0, -suffix.length).split(".");
  if (labels.length !== 2 || labels.some((l) => l === "")) return undefined;
  return { host, port, service: { name: labels[0] as string, namespace: labels[1] as string } };
}
