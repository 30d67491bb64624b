/**
 * The `gateway.networking.k8s.io/v1` HTTPRoute and GRPCRoute objects the router accepts, as plain
 * JSON-shaped TypeScript (the Kubernetes API field names, optional where the API defaults them).
 */

/** Object metadata used for attachment and precedence. */
export interface RouteMetadata {
  name: string;
  /** Default `"default"`. */
  namespace?: string;
  /** RFC 3339 time; older routes win ties. Routes without one rank after routes with one. */
  creationTimestamp?: string;
}

/** Where a route attaches: a Service (`group: ""`, `kind: "Service"`) or the waypoint Gateway. */
export interface ParentReference {
  /** Default `"gateway.networking.k8s.io"`. */
  group?: string;
  /** Default `"Gateway"`. */
  kind?: string;
  /** Default: the route's namespace. */
  namespace?: string;
  name: string;
  sectionName?: string;
  port?: number;
}

export type PathMatchType = "Exact" | "PathPrefix" | "RegularExpression";
export type StringMatchType = "Exact" | "RegularExpression";

export interface HTTPPathMatch {
  /** Default `"PathPrefix"`. */
  type?: PathMatchType;
  /** Default `"/"`. */
  value?: string;
}
export interface HTTPHeaderMatch {
  /** Default `"Exact"`. */
  type?: StringMatchType;
  /** Case-insensitive. */
  name: string;
  value: string;
}
export interface HTTPQueryParamMatch {
  /** Default `"Exact"`. */
  type?: StringMatchType;
  /** Case-sensitive. */
  name: string;
  value: string;
}
export interface HTTPRouteMatch {
  path?: HTTPPathMatch;
  headers?: HTTPHeaderMatch[];
  queryParams?: HTTPQueryParamMatch[];
  method?: string;
}

export interface HTTPHeader {
  name: string;
  value: string;
}
export interface HTTPHeaderFilter {
  set?: HTTPHeader[];
  add?: HTTPHeader[];
  remove?: string[];
}
export interface HTTPPathModifier {
  type: "ReplaceFullPath" | "ReplacePrefixMatch";
  replaceFullPath?: string;
  replacePrefixMatch?: string;
}
export interface HTTPRequestRedirectFilter {
  scheme?: "http" | "https";
  hostname?: string;
  path?: HTTPPathModifier;
  port?: number;
  /** Default 302. */
  statusCode?: 301 | 302 | 303 | 307 | 308;
}
export interface HTTPURLRewriteFilter {
  hostname?: string;
  path?: HTTPPathModifier;
}
export interface BackendObjectReference {
  /** Default `""` (core). */
  group?: string;
  /** Default `"Service"`. */
  kind?: string;
  name: string;
  /** Default: the route's namespace. */
  namespace?: string;
  /** Required for Services. */
  port?: number;
}
export interface HTTPRequestMirrorFilter {
  backendRef: BackendObjectReference;
  /** 0-100; default 100 (every request). */
  percent?: number;
  fraction?: { numerator: number; denominator?: number };
}
export type HTTPRouteFilterType =
  | "RequestHeaderModifier"
  | "ResponseHeaderModifier"
  | "RequestRedirect"
  | "URLRewrite"
  | "RequestMirror"
  | "ExtensionRef"
  | "CORS";
export interface HTTPRouteFilter {
  type: HTTPRouteFilterType;
  requestHeaderModifier?: HTTPHeaderFilter;
  responseHeaderModifier?: HTTPHeaderFilter;
  requestRedirect?: HTTPRequestRedirectFilter;
  urlRewrite?: HTTPURLRewriteFilter;
  requestMirror?: HTTPRequestMirrorFilter;
}
export interface HTTPBackendRef extends BackendObjectReference {
  /** Proportional; default 1; 0 sends no traffic. */
  weight?: number;
  /** Only RequestHeaderModifier and ResponseHeaderModifier are supported here. */
  filters?: HTTPRouteFilter[];
}
export interface HTTPRouteTimeouts {
  /** Gateway API duration (`"10s"`, `"1m30s"`, `"500ms"`); `"0s"` disables. */
  request?: string;
  /** Per backend attempt; must not exceed `request`; `"0s"` disables. */
  backendRequest?: string;
}
export interface HTTPRouteRetry {
  /** Status codes (400-599) that are retried. */
  codes?: number[];
  /** Retries after the first attempt; 0 disables retries. */
  attempts?: number;
  /** Base back-off interval (Gateway API duration). */
  backoff?: string;
}
export interface HTTPRouteRule {
  name?: string;
  /** Default: one match of `PathPrefix /`. */
  matches?: HTTPRouteMatch[];
  filters?: HTTPRouteFilter[];
  backendRefs?: HTTPBackendRef[];
  timeouts?: HTTPRouteTimeouts;
  retry?: HTTPRouteRetry;
}
export interface HTTPRoute {
  apiVersion?: "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1";
  kind: "HTTPRoute";
  metadata: RouteMetadata;
  spec: {
    parentRefs?: ParentReference[];
    hostnames?: string[];
    /** Default: one rule with the default match. */
    rules?: HTTPRouteRule[];
  };
}

export interface GRPCMethodMatch {
  /** Default `"Exact"`. */
  type?: StringMatchType;
  /** Fully qualified service, e.g. `"helloworld.Greeter"`. */
  service?: string;
  method?: string;
}
export interface GRPCHeaderMatch {
  type?: StringMatchType;
  name: string;
  value: string;
}
export interface GRPCRouteMatch {
  method?: GRPCMethodMatch;
  headers?: GRPCHeaderMatch[];
}
export interface GRPCRouteFilter {
  type: "RequestHeaderModifier" | "ResponseHeaderModifier" | "RequestMirror" | "ExtensionRef";
  requestHeaderModifier?: HTTPHeaderFilter;
  responseHeaderModifier?: HTTPHeaderFilter;
  requestMirror?: HTTPRequestMirrorFilter;
}
export interface GRPCBackendRef extends BackendObjectReference {
  weight?: number;
  filters?: GRPCRouteFilter[];
}
export interface GRPCRouteRule {
  name?: string;
  matches?: GRPCRouteMatch[];
  filters?: GRPCRouteFilter[];
  backendRefs?: GRPCBackendRef[];
}
export interface GRPCRoute {
  apiVersion?: "gateway.networking.k8s.io/v1";
  kind: "GRPCRoute";
  metadata: RouteMetadata;
  spec: {
    parentRefs?: ParentReference[];
    hostnames?: string[];
    rules?: GRPCRouteRule[];
  };
}

/** Either route kind. */
export type Route = HTTPRoute | GRPCRoute;
