/**
 * The ambient waypoint router: Gateway API HTTPRoute/GRPCRoute routing, filters, retries, timeouts,
 * per-request load balancing, L7 authorization and Istio request metrics for HTTP/1.1, HTTP/2 and
 * gRPC arriving on tunnel streams.
 *
 * @example
 * ```ts
 * import net from "node:net";
 * import { createWaypointHandler } from "@ambient/router";
 *
 * const handler = createWaypointHandler({
 *   routes: [{
 *     kind: "HTTPRoute",
 *     metadata: { name: "reviews", namespace: "default" },
 *     spec: { parentRefs: [{ kind: "Gateway", name: "waypoint" }],
 *             rules: [{ backendRefs: [{ name: "reviews", port: 9080 }] }] },
 *   }],
 *   resolveBackend: () => [{ address: "127.0.0.1", port: 9080 }],
 *   connect: (endpoint) => net.connect(endpoint.port, endpoint.address),
 * });
 * net.createServer((socket) => handler.handle(socket)).listen(15008);
 * ```
 *
 * @packageDocumentation
 */
export type {
  AuthorizationDecision,
  AuthorizationEvaluator,
  AuthorizationRequest,
} from "./authorization.js";
export { parseGatewayDuration } from "./duration.js";
export {
  backendOfCluster,
  type CompiledEnvoyRoute,
  type CompiledEnvoyRoutes,
  compileEnvoyRouteConfiguration,
  createEnvoyRouteTable,
  type EnvoyDuration,
  type EnvoyHeaderEdits,
  type EnvoyHeaderMatcher,
  type EnvoyHeaderValueOption,
  type EnvoyQueryParameterMatcher,
  type EnvoyRegexMatcher,
  type EnvoyRoute,
  type EnvoyRouteAction,
  type EnvoyRouteBinding,
  type EnvoyRouteConfiguration,
  type EnvoyRouteMatch,
  type EnvoyRouteOptions,
  type EnvoyStringMatcher,
  INVALID_BACKEND_CLUSTER,
  parseWaypointRouteHost,
  parseWaypointRouteName,
  type ValueMatcher,
  waypointRouteName,
} from "./envoy-routes.js";
export { RouterError, type RouterErrorCode, type RouterErrorDetails } from "./errors.js";
export type { HeaderMap } from "./header-filters.js";
export type { LoadBalancingPolicy } from "./load-balancer.js";
export type {
  AccessLogAuthorization,
  AccessLogEntry,
  AccessLogSink,
  FinishedRequest,
  FinishedRequestSink,
  RequestAuthenticator,
  RequestAuthInput,
  RequestAuthOutcome,
} from "./request-log.js";
export {
  ISTIO_REQUEST_LABELS,
  ISTIO_TCP_LABELS,
  type IstioRequestLabel,
  type IstioTcpLabel,
} from "./request-metrics.js";
export {
  type CompiledRule,
  createRouteTable,
  type ResolvedBackendRef,
  type RouteMatch,
  type RouteRequest,
  type RouteTable,
  type RouteTableOptions,
  type RouteTarget,
  type RuleRetry,
} from "./route-table.js";
export type {
  BackendObjectReference,
  GRPCBackendRef,
  GRPCHeaderMatch,
  GRPCMethodMatch,
  GRPCRoute,
  GRPCRouteFilter,
  GRPCRouteMatch,
  GRPCRouteRule,
  HTTPBackendRef,
  HTTPHeader,
  HTTPHeaderFilter,
  HTTPHeaderMatch,
  HTTPPathMatch,
  HTTPPathModifier,
  HTTPQueryParamMatch,
  HTTPRequestMirrorFilter,
  HTTPRequestRedirectFilter,
  HTTPRoute,
  HTTPRouteFilter,
  HTTPRouteFilterType,
  HTTPRouteMatch,
  HTTPRouteRetry,
  HTTPRouteRule,
  HTTPRouteTimeouts,
  HTTPURLRewriteFilter,
  ParentReference,
  PathMatchType,
  Route,
  RouteMetadata,
  StringMatchType,
} from "./route-types.js";
export { compileSafeRegex, MAX_PROGRAM_SIZE, MAX_REGEX_LENGTH, type RouteRegex } from "./safe-regex.js";
export {
  type Counter,
  type Gauge,
  type Histogram,
  type Logger,
  type MetricLabels,
  type MetricsSink,
  noopLogger,
  noopMetrics,
} from "./telemetry.js";
export type { TraceContext } from "./trace-context.js";
export type { BackendTarget, ConnectUpstream, Endpoint, ResolveBackend, WorkloadInfo } from "./upstream.js";
export { MAX_RESPONSE_HEADER_FIELDS } from "./upstream.js";
export { validateGrpcRoute, validateHttpRoute, validateRoute } from "./validate-route.js";
export {
  createWaypointHandler,
  DEFAULT_RETRY_POLICY,
  type DestinationService,
  MAX_RETRY_ATTEMPTS,
  type RetryOn,
  type RetryPolicy,
  type TunnelInfo,
  type WaypointHandler,
  type WaypointHandlerOptions,
} from "./waypoint-handler.js";
