import http from "node:http";
import http2 from "node:http2";
import type { Socket } from "node:net";
import { type Duplex, finished, PassThrough, type Readable, type Writable } from "node:stream";
import { TLSSocket } from "node:tls";
import { PATH_NORMALIZATIONS, type PathNormalization } from "@ambient/policy";
import type { AuthorizationDecision, AuthorizationEvaluator, AuthorizationRequest } from "./authorization.js";
import { ensureBufferWrites } from "./buffer-writes.js";
import { ConnectionDeadline } from "./connection-deadline.js";
import { RouterError } from "./errors.js";
import {
  applyHeaderFilter,
  createHeaderMap,
  type HeaderMap,
  redirectLocation,
  rewritePath,
} from "./header-filters.js";
import {
  createEndpointPicker,
  createWeightedPicker,
  type EndpointPicker,
  type LoadBalancingPolicy,
} from "./load-balancer.js";
import { connectFailureReason, fromNodeError } from "./node-error.js";
import { RequestBody } from "./request-body.js";
import { parseRequestHead, type RequestHead } from "./request-head.js";
import type {
  AccessLogAuthorization,
  AccessLogEntry,
  AccessLogSink,
  FinishedRequest,
  FinishedRequestSink,
  RequestAuthenticator,
  RequestAuthOutcome,
} from "./request-log.js";
import {
  type IstioRequestLabel,
  type IstioTcpLabel,
  RequestMetrics,
  TcpConnectionMetrics,
} from "./request-metrics.js";
import { RETRY_ONS, type RetryOn } from "./retry-conditions.js";
import {
  type CompiledRule,
  createRouteTable,
  type ResolvedBackendRef,
  type RouteTable,
  type RouteTarget,
} from "./route-table.js";
import { type RelayEnd, relayStreams } from "./stream-relay.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { continueTrace, requestId, type TraceContext } from "./trace-context.js";
import { sendUpgrade, type UpgradeResponse } from "./upgrade.js";
import {
  type BackendTarget,
  type ConnectUpstream,
  type Endpoint,
  endpointKey,
  type ResolveBackend,
  type SentRequest,
  UpstreamAttemptError,
  type UpstreamFailure,
  UpstreamPool,
  type UpstreamResponse,
  type WorkloadInfo,
  whenConnected,
} from "./upstream.js";
import { DEFAULT_SESSION_LIVENESS } from "./upstream-liveness.js";

/**
 * The rate of stream resets a downstream HTTP/2 client may send before Node's HTTP/2 server ends the
 * connection (nghttp2's rapid-reset limit; Node's defaults: a burst of 1,000, then 33 a second). A
 * gRPC client cancels calls at deadlines and on every abandoned stream, often hundreds a second on one
 * connection, and each reset counts there, answered or not: past the limit the client's connection,
 * with every call on it, would end. Node 20 has no such setting (its HTTP/2 server keeps the defaults);
 * later Node versions read these.
 */
const DOWNSTREAM_RESET_LIMIT = { streamResetBurst: 10_000, streamResetRate: 1_000 } as const;

export type { RetryOn } from "./retry-conditions.js";

/** Most retries a policy may ask for, as for an HTTPRoute rule's `retry.attempts`. */
export const MAX_RETRY_ATTEMPTS = 100;

/** Longest delay Node's timers honour; a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Retry policy applied to every route rule that has no `retry` stanza of its own. */
export interface RetryPolicy {
  /** Retries after the first attempt: an integer from 0 to {@link MAX_RETRY_ATTEMPTS}. */
  attempts: number;
  retryOn: readonly RetryOn[];
  /** Status codes for `retriable-status-codes`. */
  codes: readonly number[];
  /** Exponential back-off base with full jitter, in ms: above 0 (as Envoy's `base_interval`). */
  backoffBaseMs: number;
  /** Longest back-off, in ms: at least `backoffBaseMs`, at most 2^31-1. */
  backoffMaxMs: number;
}

/**
 * Istio's default HTTP retry policy: 2 retries on connect-failure, refused-stream, gRPC unavailable
 * and gRPC cancelled, with Envoy's 25 ms base / 250 ms max back-off, preferring another endpoint on
 * each retry. `retriable-status-codes` is listed with no codes, so no status is retried: since 1.24
 * Istio no longer retries a 503 by default (`EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY`), as the backend
 * may have acted on the request already.
 */
export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  attempts: 2,
  retryOn: Object.freeze([
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
  ] as RetryOn[]),
  codes: Object.freeze([]),
  backoffBaseMs: 25,
  backoffMaxMs: 250,
});

/** The Service (or ServiceEntry host) a tunnel is addressed to. */
export interface DestinationService {
  name: string;
  namespace: string;
  /** Default `"Service"`. */
  kind?: "Service" | "ServiceEntry";
  /** The ServiceEntry host, for `kind: "ServiceEntry"`. */
  hostname?: string;
}

/** The group and kind of a backendRef to a ServiceEntry host (Istio's). */
const HOSTNAME_GROUP = "networking.istio.io";
const HOSTNAME_KIND = "Hostname";

/** Facts about the tunnel a stream arrived on. */
export interface TunnelInfo {
  /** Verified SPIFFE ID of the HBONE peer (the source workload), e.g. `spiffe://cluster.local/ns/a/sa/b`. */
  peerIdentity?: string;
  /** Source address and port. Default: the stream's own `remoteAddress`, if any. */
  remoteAddress?: string;
  remotePort?: number;
  /** Original destination of the tunnel (the HBONE `:authority`) and the Service it belongs to. */
  destination?: {
    address?: string;
    port?: number;
    /**
     * The Service addressed. `kind: "ServiceEntry"` for a ServiceEntry host (`name` the ServiceEntry's,
     * `hostname` the host): its default backend is the host (backendRef `networking.istio.io`
     * `Hostname`), its policy target the ServiceEntry, HTTPRoutes attach to it by a `ServiceEntry`
     * parentRef, and its metrics name the host. Default `"Service"`.
     */
    service?: DestinationService;
    /**
     * The destination port is declared HTTP (an HTTP, HTTP/2 or gRPC `appProtocol`): its tunnels are
     * HTTP only and never carried as TCP by `opaqueTcp`, as Istio's waypoints detect the protocol of
     * undeclared ports only. Bytes that are not HTTP are then answered as bad HTTP.
     */
    httpOnly?: boolean;
    /**
     * The destination port is declared TCP (Istio's `tcp`, `tls`, `https`, `mongo`, `redis`, `mysql`
     * protocols, or a well-known port of a protocol whose server speaks first): with `opaqueTcp`, its
     * tunnels are carried as TCP from the start, without waiting for the client's first bytes, so a
     * server that speaks first (MySQL, SMTP) works; as Istio's waypoints give such a port no HTTP chain.
     */
    tcpOnly?: boolean;
    /**
     * The workload a tunnel addressed to a workload rather than a Service goes on to (Istio: a
     * workload bound to its own waypoint). Requests with no route of their own are sent to it, as a
     * waypoint sends workload-addressed traffic on to its original destination; without it (and
     * without a Service) they are answered 404.
     */
    endpoint?: Endpoint;
  };
  /** Source workload facts for telemetry labels. */
  source?: WorkloadInfo;
}

/** Options of {@link createWaypointHandler}. */
export interface WaypointHandlerOptions {
  /** HTTPRoute and GRPCRoute objects; validated, invalid ones throw. Replace them later with `setRoutes`. */
  routes: readonly unknown[];
  /** Opens a stream to an endpoint. Istio waypoint: an HBONE tunnel to the endpoint's ztunnel. */
  connect: ConnectUpstream;
  /** Resolves backendRefs to endpoints (from the workload store / WDS). */
  resolveBackend: ResolveBackend;
  /** L7 authorizer; an `AuthorizationEngine` of `@ambient/policy` plugs in. Default: allow all. */
  policy?: AuthorizationEvaluator;
  /** The waypoint Gateway that `kind: Gateway` parentRefs must name. Default: any. */
  waypoint?: { name: string; namespace: string };
  /** Default `"least-request"`; Istio's default `LEAST_REQUEST`. */
  loadBalancing?: LoadBalancingPolicy;
  /**
   * Default {@link DEFAULT_RETRY_POLICY} (Istio's default), for rules without a retry policy of their
   * own. A rule's HTTPRoute `retry` stanza or RDS `retry_policy` brings its own conditions and codes;
   * only its unset attempts and back-off come from here.
   */
  retry?: Partial<RetryPolicy>;
  /** Request body bytes kept for replay on retry; larger bodies are not retried. Default 1 MiB; Envoy `per_connection_buffer_limit_bytes`. */
  retryBufferBytes?: number;
  /**
   * Largest request header list, else 431: the HTTP/1.1 header block as received, and the decoded
   * HTTP/2 list counted as name + value + 32 per field. Default 60 KiB; Envoy `max_request_headers_kb: 60`.
   */
  maxHeaderBytes?: number;
  /**
   * Serve HTTP/1.0 (and 0.9) requests; without it they are answered 426 Upgrade Required (details
   * `low_version`), as Istio's waypoints do unless istiod runs with `PILOT_HTTP10=1`. Either way a request
   * without a host (an HTTP/1.0 one without `Host`) is answered 400 (`missing_host_header`): Istio sets
   * no default host. Default false; Envoy `accept_http_10`.
   */
  acceptHttp10?: boolean;
  /**
   * Time a connection may go without a request in flight before it is closed: until its first complete
   * request head, and between requests on a keep-alive connection; 0 disables. Default 60000; Node
   * `server.headersTimeout`, Envoy `request_headers_timeout`.
   */
  headersTimeoutMs?: number;
  /**
   * How request paths are normalized, once, before policy, routing and the upstream request all use the
   * result: `"NONE"`, `"BASE"`, `"MERGE_SLASHES"` or `"DECODE_AND_MERGE_SLASHES"`; a path that cannot be
   * normalized is answered 400. Give a policy evaluator the same mode. Default `"BASE"`; meshConfig
   * `pathNormalization`.
   */
  pathNormalization?: PathNormalization;
  /**
   * SPIFFE ID of this proxy (its certificate's URI SAN): the `By` field of the
   * `x-forwarded-client-cert` header set on every request from a verified peer. Default: no `By` field.
   */
  identity?: string;
  /** Request timeout for rules without `timeouts.request`, in ms; 0 disables. Default 0; Istio's default route timeout (disabled). */
  requestTimeoutMs?: number;
  /**
   * Time without a byte moving in either direction after which a request is given up: 504 `stream
   * timeout` before the response head, a reset after it; 0 disables. Default 0, as istiod sets Envoy's
   * `stream_idle_timeout` on a waypoint (Envoy's own default is 5 min): a long poll or a slow response
   * is not cut off; `headersTimeoutMs` and `tcpIdleTimeoutMs` still bound dead connections.
   */
  streamIdleTimeoutMs?: number;
  /**
   * Time without a byte moving in either direction after which a tunnel carried as TCP (`opaqueTcp`)
   * or an upgraded connection (WebSocket) is closed, both sides; 0 disables. Default 3600000 (1 h),
   * Envoy TcpProxy's default `idle_timeout`. Without one, a connection whose peer vanished without a
   * word is held for as long as the other side keeps it.
   */
  tcpIdleTimeoutMs?: number;
  /**
   * Liveness check of pooled upstream HTTP/2 sessions: a session that has received nothing for this
   * long is sent a PING, by a timer and before a new request is put on it; 0 sends none. Default 10000
   * (10 s); ztunnel's HTTP/2 keepalive interval, Envoy `connection_keepalive.interval` and
   * `connection_idle_interval` (Envoy sets none by default).
   */
  upstreamPingIntervalMs?: number;
  /**
   * A PING unanswered this long (extended while other frames arrive) closes the session: its requests
   * fail as a reset (503 `UC`, idempotent ones are sent once more on a new session) and the next ones
   * dial afresh. 0 keeps sending PINGs but never closes a session for an unanswered one. Default 20000
   * (20 s); ztunnel's HTTP/2 keepalive timeout, Envoy `connection_keepalive.timeout`.
   */
  upstreamPingTimeoutMs?: number;
  /** Idle keep-alive connections kept per endpoint. Default 100. */
  maxIdleConnectionsPerEndpoint?: number;
  /** Cluster DNS suffix for `destination_service`. Default `"cluster.local"`. */
  clusterDomain?: string;
  /** Mark traces this proxy starts as sampled. Default false. */
  sampleNewTraces?: boolean;
  /**
   * Verifies request credentials after the head is parsed and before L7 policy; a rejection is answered
   * 401 and an authenticated request reaches policy with its `request.auth.*` facts. Default: none
   * (every request anonymous). Istio `RequestAuthentication`, Envoy `jwt_authn`.
   */
  authenticate?: RequestAuthenticator;
  /**
   * Carry a tunnel whose first bytes are not HTTP as TCP, as Istio's waypoints detect the protocol:
   * after L4 policy (the request without `http`), to an endpoint of the destination Service (or the
   * tunnel's `destination.endpoint`), both ways with half-close. Routes do not apply. Each such tunnel
   * counts in Istio's `istio_tcp_*` metrics (`request_protocol="tcp"`; bytes added every 5 s and at
   * close) and makes one access log entry (and `onRequestFinished` record) when it ends, with `-` for
   * the HTTP fields and response code 0, as Envoy's TCP proxy logs. Default false: such a tunnel is
   * answered as bad HTTP.
   * The bytes are not HTTP when they do not start with an HTTP/2 preface or (after empty lines) a
   * method of letters and a space; a destination declared HTTP (`destination.httpOnly`) is never
   * carried as TCP; one declared TCP (`destination.tcpOnly`) is carried as TCP from the start, without
   * waiting for the client's bytes, so a protocol whose server speaks first (MySQL, SMTP) works there
   * and only there: on an undeclared port its server and the handler would wait for each other.
   */
  opaqueTcp?: boolean;
  /**
   * The `server` header of every response, proxied or answered by the handler itself, in place of any
   * the backend sent; `""` passes the backend's through and adds none. Default `"istio-envoy"`, as
   * istiod configures a waypoint (Envoy `server_name` with `server_header_transformation: OVERWRITE`);
   * meshConfig `defaultConfig.proxyHeaders.server` (`disabled` is `""`).
   */
  serverName?: string;
  /** Called once per finished request with Istio's access log fields. Default: none; meshConfig `accessLogFile`. */
  accessLog?: AccessLogSink;
  /**
   * Called once per finished request with a record that builds the same access log entry on demand:
   * for an in-memory history (an admin page of recent requests) that reads few of the entries it keeps.
   * Default: none.
   */
  onRequestFinished?: FinishedRequestSink;
  logger?: Logger;
  metrics?: MetricsSink;
}

/** Serves HTTP/1.1 and HTTP/2 arriving on tunnel streams. See also `createEnvoyRouteTable`. */
export interface WaypointHandler {
  /**
   * Serves one tunnel stream (any Duplex); HTTP/2 is detected by its connection preface. A
   * `tls.TLSSocket` whose handshake is done (as `tls.Server` hands it over) gives the access log the SNI
   * its client sent (`requested_server_name`). After `close()` the stream is destroyed and
   * `ERR_CLOSED` thrown.
   */
  handle(stream: Duplex, info?: TunnelInfo): void;
  /** Replaces the route table; invalid routes (or anything but a list) throw and leave the current table in place. */
  setRoutes(routes: readonly unknown[]): void;
  /**
   * Replaces the route table with one built elsewhere (e.g. `createEnvoyRouteTable` from RDS).
   * Requests already routed keep their rule; the next request, on any connection, uses the new table.
   */
  setRouteTable(table: RouteTable): void;
  /**
   * Starts a graceful drain, as Envoy drains a listener before it stops: an HTTP/1.1 connection
   * closes once its response in flight is sent (idle ones at once; responses from now on say
   * `connection: close`), an HTTP/2 connection gets GOAWAY and closes when its streams end, and TCP
   * tunnels and upgraded (WebSocket) connections carry on to their end. Streams handed to `handle` meanwhile are served, draining from the
   * start. Resolves once no downstream stream is open; every call returns the first call's promise.
   * `close()` ends whatever is left (the caller's deadline).
   */
  drain(): Promise<void>;
  /** Closes every downstream stream and pooled upstream connection. */
  close(): Promise<void>;
}

/** Envoy's response header: milliseconds from the end of the request to the upstream response's head. */
const UPSTREAM_SERVICE_TIME = "x-envoy-upstream-service-time";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const EMPTY = Buffer.alloc(0);
/** The backend kind of a workload-addressed tunnel's route: its original destination. */
const ORIGINAL_DESTINATION = "OriginalDestination";
/** Longest method an HTTP/1.1 request line is looked for in before the bytes are taken as not HTTP. */
const MAX_METHOD_BYTES = 20;

/**
 * Whether `bytes` start like an HTTP/1.1 request, generously: empty lines (CR, LF), then a method of
 * letters of either case, `-` or `_`, then a space. Anything an HTTP server might read as a request
 * stays HTTP (and meets L7 policy, which refuses what is malformed); `"more"` while every byte so far
 * could still be one.
 */
function http1Start(bytes: Buffer): "http" | "other" | "more" {
  let start = 0;
  while (start < bytes.length && (bytes[start] === 0x0d || bytes[start] === 0x0a)) start++;
  if (start > MAX_METHOD_BYTES) return "other";
  const n = Math.min(bytes.length, start + MAX_METHOD_BYTES + 1);
  for (let i = start; i < n; i++) {
    const c = bytes[i] as number;
    if (c === 0x20) return i > start ? "http" : "other";
    const token = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x5f;
    if (!token) return "other";
  }
  return bytes.length - start > MAX_METHOD_BYTES ? "other" : "more";
}
const GRPC_STATUS_FOR: Record<number, number> = {
  400: 13,
  401: 16,
  403: 7,
  404: 12,
  429: 14,
  500: 13,
  502: 14,
  503: 14,
  504: 14,
};
/**
 * The gRPC status a response without one stands for, by HTTP status (gRPC's HTTP-to-gRPC status
 * mapping); any other status is UNKNOWN (2).
 */
const GRPC_STATUS_FROM_HTTP: Record<number, number> = {
  400: 13,
  401: 16,
  403: 7,
  404: 12,
  429: 14,
  502: 14,
  503: 14,
  504: 14,
};
const GRPC_CODES: Partial<Record<RetryOn, string>> = {
  unavailable: "14",
  cancelled: "1",
  "deadline-exceeded": "4",
  internal: "13",
  "resource-exhausted": "8",
};

type DownRequest = http.IncomingMessage | http2.Http2ServerRequest;
interface DownResponse extends Writable {
  headersSent: boolean;
  writeHead(status: number, headers?: Record<string, string | string[] | number>): unknown;
  addTrailers(headers: Record<string, string | string[]>): void;
}

/** An HTTP/1.1 request that arrived with `Connection: Upgrade`; the HTTP parser has let go of its socket. */
interface UpgradeRequest {
  socket: Duplex;
  /** Bytes the client sent after the request head. */
  head: Buffer;
  /** The protocol to switch to (`websocket`); undefined when the upgrade is ignored and served as HTTP. */
  protocol: string | undefined;
  /**
   * A switch to a protocol the handler does not carry (anything but `websocket` and `h2c`): answered
   * 403 `upgrade_failed` once the request is routed, as Envoy answers an upgrade type its connection
   * manager was not configured for (Istio configures `websocket` only).
   */
  refused: boolean;
}

interface Exchange {
  req: DownRequest;
  res: DownResponse;
  info: TunnelInfo;
  h2: boolean;
  /** The parsed head every step works from; undefined until parsed (and when it was refused). */
  head: RequestHead | undefined;
  upgrade: UpgradeRequest | undefined;
  start: number;
  /** Wall-clock arrival time, for the access log's `start_time`. */
  startedAt: number;
  grpc: boolean;
  flags: string;
  /** Envoy's response code details: why the request was answered as it was (`-` until it is). */
  details: string;
  /** Why the last connection to the backend could not be made (Envoy's transport failure reason). */
  transportFailure: string | undefined;
  /** When a request without a body was complete (`performance.now()`); see `body.completedAt`. */
  requestDone: number | undefined;
  /** `x-envoy-upstream-service-time` as the response carried it. */
  serviceTime: string | undefined;
  status: number;
  grpcStatus: string;
  responseBytes: number;
  /** Part of `responseBytes` that is the upstream response head (counted for metrics only). */
  responseHeadBytes: number;
  body: RequestBody | undefined;
  backend: ResolvedBackendRef | undefined;
  /**
   * The backend the matched route chose for a request refused before it was sent (by policy or for its
   * credential): what its metrics name, as Envoy's stats name the cluster the route chose before any
   * filter answered.
   */
  routedBackend: ResolvedBackendRef | undefined;
  /** The name of the route matched for a request refused before it was sent, for its access log. */
  routedRoute: string | undefined;
  endpoint: Endpoint | undefined;
  /** The local address of the connection the last attempt went out on (`upstream_local_address`). */
  upstreamLocalAddress: string | undefined;
  /** The SNI of the client's TLS connection (`requested_server_name`). */
  requestedServerName: string | undefined;
  trace: TraceContext;
  recorded: boolean;
  /** Runs when the client side closes, before the metrics are recorded. */
  onClose: (() => void) | undefined;
  /** Stream idle timer, refreshed whenever body bytes move. */
  idle: NodeJS.Timeout | undefined;
  /** `namespace/name` of the matched route. */
  route: string | undefined;
  /** Verified request principal, if any. */
  requestPrincipal: string | undefined;
  /** What L7 policy decided; undefined until (and unless) it was asked. */
  decision: AuthorizationDecision | undefined;
}

/**
 * What the access log entry of a finished exchange is made of, copied when it finished (no strings built,
 * nothing of the connection kept): the entry itself is built only when asked for.
 */
class FinishedExchange implements FinishedRequest {
  readonly startedAt: number;
  readonly #duration: number;
  readonly #clusterDomain: string;
  readonly #method: string | undefined;
  /** Normalized path and query (from the parsed head), or the raw target when the head was refused. */
  readonly #path: string | undefined;
  readonly #query: string;
  readonly #httpVersion: string | undefined;
  readonly #status: number;
  readonly #flags: string;
  readonly #details: string;
  readonly #transportFailure: string | undefined;
  readonly #serviceTime: string | undefined;
  readonly #bytesReceived: number;
  readonly #bytesSent: number;
  readonly #forwardedFor: unknown;
  readonly #userAgent: unknown;
  readonly #requestId: unknown;
  readonly #authority: unknown;
  readonly #endpoint: Endpoint | undefined;
  readonly #upstreamLocalAddress: string | undefined;
  readonly #requestedServerName: string | undefined;
  readonly #backend: ResolvedBackendRef | undefined;
  readonly #remoteIp: string | undefined;
  readonly #remotePort: number | undefined;
  readonly #localAddress: string | undefined;
  readonly #localPort: number | undefined;
  readonly #route: string | undefined;
  readonly #peerIdentity: string | undefined;
  readonly #requestPrincipal: string | undefined;
  readonly #grpcStatus: string;
  readonly #decision: AuthorizationDecision | undefined;

  constructor(x: Exchange, duration: number, clusterDomain: string) {
    const head = x.head;
    const req = x.req;
    const headers: Record<string, unknown> = head?.headers ?? req.headers;
    const socket = (x.h2 ? undefined : (req as http.IncomingMessage).socket) as
      | { remoteAddress?: string; remotePort?: number }
      | undefined;
    const info = x.info;
    this.startedAt = x.startedAt;
    this.#duration = duration;
    this.#clusterDomain = clusterDomain;
    this.#method = head?.method ?? req.method;
    this.#path = head === undefined ? req.url : head.path;
    this.#query = head === undefined ? "" : head.query;
    this.#httpVersion = x.h2 ? undefined : (req as http.IncomingMessage).httpVersion;
    this.#status = x.status;
    this.#flags = x.flags;
    this.#details = x.details;
    this.#transportFailure = x.transportFailure;
    this.#serviceTime = x.serviceTime;
    this.#bytesReceived = x.body?.bytes ?? 0;
    // Body bytes only: the metrics counter also holds the response head.
    this.#bytesSent = Math.max(0, x.responseBytes - x.responseHeadBytes);
    this.#forwardedFor = headers["x-forwarded-for"];
    this.#userAgent = headers["user-agent"];
    this.#requestId = headers["x-request-id"];
    this.#authority = head?.host ?? req.headers.host ?? req.headers[":authority"];
    this.#endpoint = x.endpoint;
    this.#upstreamLocalAddress = x.upstreamLocalAddress;
    this.#requestedServerName = x.requestedServerName;
    // A request refused before it was sent names the route and cluster it matched, as Envoy's log does.
    this.#backend = x.backend ?? x.routedBackend;
    this.#remoteIp = info.remoteAddress ?? socket?.remoteAddress;
    this.#remotePort = info.remotePort ?? socket?.remotePort;
    this.#localAddress = info.destination?.address;
    this.#localPort = info.destination?.port;
    this.#route = x.route ?? x.routedRoute;
    this.#peerIdentity = info.peerIdentity;
    this.#requestPrincipal = x.requestPrincipal;
    this.#grpcStatus = x.grpcStatus;
    this.#decision = x.decision;
  }

  accessLogEntry(): AccessLogEntry {
    const b = this.#backend;
    const remoteIp = this.#remoteIp;
    return {
      start_time: new Date(this.startedAt).toISOString(),
      method: this.#method ?? "-",
      path: this.#path === undefined ? "-" : this.#path + this.#query,
      protocol: this.#httpVersion === undefined ? "HTTP/2" : `HTTP/${this.#httpVersion}`,
      response_code: this.#status,
      response_flags: this.#flags,
      bytes_received: this.#bytesReceived,
      bytes_sent: this.#bytesSent,
      duration: Math.round(this.#duration),
      upstream_service_time: this.#serviceTime ?? "-",
      x_forwarded_for: dash(this.#forwardedFor),
      user_agent: dash(this.#userAgent),
      request_id: dash(this.#requestId),
      authority: dash(this.#authority),
      upstream_host: this.#endpoint === undefined ? "-" : endpointKey(this.#endpoint),
      upstream_cluster: upstreamCluster(b, this.#clusterDomain),
      upstream_local_address: this.#upstreamLocalAddress ?? "-",
      downstream_remote_address: remoteIp === undefined ? "-" : `${remoteIp}:${this.#remotePort ?? 0}`,
      downstream_local_address:
        this.#localAddress === undefined ? "-" : `${this.#localAddress}:${this.#localPort ?? 0}`,
      requested_server_name: this.#requestedServerName ?? "-",
      route_name: this.#route ?? "-",
      source_principal: this.#peerIdentity ?? "-",
      destination_principal: this.#endpoint?.workload?.principal ?? "-",
      request_principal: this.#requestPrincipal ?? "-",
      grpc_status: this.#grpcStatus === "" ? "-" : this.#grpcStatus,
      response_code_details: this.#details,
      connection_termination_details: "-",
      upstream_transport_failure_reason: transportFailureField(this.#transportFailure),
      authorization: this.#decision === undefined ? "-" : authorizationRecord(this.#decision),
    };
  }
}

/**
 * `text` with `_` for each space, tab, form feed, vertical tab and line break, as Envoy writes a reason
 * into response code details and the access log (`StringUtil::replaceAllEmptySpace`).
 */
function underscored(text: string): string {
  return text.replace(/[ \t\f\v\n\r]/g, "_");
}

/**
 * A `grpc-status` value as metrics and logs carry it: one of the codes gRPC defines (0 to 16, written
 * without leading zeros or spaces), else `-1`, Envoy's `InvalidCode`. A backend's header is never a
 * label value as it came, so it cannot add series (or log bytes) without bound.
 */
export function grpcStatusCode(value: string): string {
  const text = value.trim();
  if (!/^\d{1,2}$/.test(text)) return "-1";
  const code = Number(text);
  return code <= 16 ? String(code) : "-1";
}

/** Pipelined HTTP/1.1 requests a connection may have waiting; past it the connection is closed. */
const MAX_PIPELINED_REQUESTS = 256;

/** The access log's `upstream_transport_failure_reason`. */
function transportFailureField(reason: string | undefined): string {
  return reason === undefined ? "-" : underscored(reason);
}

/**
 * Envoy's `%REQUESTED_SERVER_NAME%` of a downstream stream: the SNI its client sent, as a server-side
 * `tls.TLSSocket` keeps it once the handshake is done; undefined for a client that sent none and for a
 * stream that is not TLS (an HBONE tunnel stream, whose TLS is the outer connection's: Istio's
 * waypoints log none for those either).
 */
function requestedServerName(stream: Duplex): string | undefined {
  if (!(stream instanceof TLSSocket)) return undefined;
  const name: unknown = (stream as { servername?: unknown }).servername;
  return typeof name === "string" && name !== "" ? name : undefined;
}

/** Istio's cluster name of a backend: `outbound|<port>||<host>`, or `inbound-pod|<port>||<ip>`. */
function upstreamCluster(b: ResolvedBackendRef | undefined, clusterDomain: string): string {
  if (b === undefined) return "-";
  return b.kind === ORIGINAL_DESTINATION
    ? `inbound-pod|${b.port ?? ""}||${b.name}`
    : `outbound|${b.port ?? ""}||${b.name}.${b.namespace}.svc.${clusterDomain}`;
}

/** The labels {@link IstioRequestLabel} and {@link IstioTcpLabel} share: who talked to whom. */
type PartyLabel = Exclude<
  IstioTcpLabel,
  "request_protocol" | "response_flags" | "connection_security_policy"
>;

/** How often an open TCP tunnel's bytes are added to the counters (Envoy's `tcp_reporting_duration`). */
const TCP_REPORT_MS = 5000;

/** One tunnel carried as TCP: what its metrics and access log entry are made of. */
class TcpTunnel {
  readonly startedAt = Date.now();
  readonly start = performance.now();
  /** Envoy's response flags: `-`, or why it was not carried (`NR`, `UH`, `UF`, `DC`). */
  flags = "-";
  /** Envoy's connection termination details: `-`, or the L4 policy denial that closed it. */
  terminationDetails = "-";
  /** Why the connection to the backend could not be made, when it could not. */
  transportFailure: string | undefined = undefined;
  decision: AuthorizationDecision | undefined;
  backend: ResolvedBackendRef | undefined;
  /** The backend the tunnel is addressed to, named by its metrics even when policy refuses it. */
  addressed: ResolvedBackendRef | undefined;
  endpoint: Endpoint | undefined;
  /** The local address of the upstream connection, once it is connected. */
  upstreamLocalAddress: string | undefined;
  labels: Readonly<Record<IstioTcpLabel, string>> | undefined;
  /** Bytes from the client toward the upstream. */
  received = 0;
  /** Bytes from the upstream toward the client. */
  sent = 0;
  reportedReceived = 0;
  reportedSent = 0;

  /** The client's address: the tunnel's, else the stream's own (copied: the stream is not kept). */
  readonly remoteIp: string | undefined;
  readonly remotePort: number | undefined;
  /** The SNI of the client's TLS connection. */
  readonly requestedServerName: string | undefined;

  constructor(
    readonly info: TunnelInfo,
    stream: Duplex,
  ) {
    const socket = stream as { remoteAddress?: string; remotePort?: number };
    this.remoteIp = info.remoteAddress ?? socket.remoteAddress;
    this.remotePort = info.remotePort ?? socket.remotePort;
    this.requestedServerName = requestedServerName(stream);
  }
}

/**
 * A finished TCP tunnel's access log entry, with `-` (and 0) where Envoy's TCP proxy logs them. The
 * tunnel's record holds values only (no stream), so a history may keep many.
 */
class FinishedTcpTunnel implements FinishedRequest {
  readonly startedAt: number;
  readonly #t: TcpTunnel;
  readonly #duration: number;
  readonly #clusterDomain: string;

  constructor(t: TcpTunnel, duration: number, clusterDomain: string) {
    this.startedAt = t.startedAt;
    this.#t = t;
    this.#duration = duration;
    this.#clusterDomain = clusterDomain;
  }

  accessLogEntry(): AccessLogEntry {
    const t = this.#t;
    const info = t.info;
    const remoteIp = t.remoteIp;
    const local = info.destination;
    return {
      start_time: new Date(this.startedAt).toISOString(),
      method: "-",
      path: "-",
      protocol: "-",
      response_code: 0,
      response_flags: t.flags,
      bytes_received: t.received,
      bytes_sent: t.sent,
      duration: Math.round(this.#duration),
      upstream_service_time: "-",
      x_forwarded_for: "-",
      user_agent: "-",
      request_id: "-",
      authority: "-",
      upstream_host: t.endpoint === undefined ? "-" : endpointKey(t.endpoint),
      upstream_cluster: upstreamCluster(t.backend, this.#clusterDomain),
      upstream_local_address: t.upstreamLocalAddress ?? "-",
      downstream_remote_address: remoteIp === undefined ? "-" : `${remoteIp}:${t.remotePort ?? 0}`,
      downstream_local_address: local?.address === undefined ? "-" : `${local.address}:${local.port ?? 0}`,
      requested_server_name: t.requestedServerName ?? "-",
      route_name: "-",
      source_principal: info.peerIdentity ?? "-",
      destination_principal: t.endpoint?.workload?.principal ?? "-",
      request_principal: "-",
      grpc_status: "-",
      response_code_details: "-",
      connection_termination_details: t.terminationDetails,
      upstream_transport_failure_reason: transportFailureField(t.transportFailure),
      authorization: t.decision === undefined ? "-" : authorizationRecord(t.decision),
    };
  }
}

/** An access log field: the string, a list joined with commas, or `-` for anything else or empty. */
function dash(v: unknown): string {
  return typeof v === "string" && v !== "" ? v : Array.isArray(v) ? v.join(",") : "-";
}

/** The access log's view of a decision: result, deciding policy, its action and rule. */
function authorizationRecord(decision: AuthorizationDecision): AccessLogAuthorization {
  const policy = decision.policy ?? "";
  return {
    result: decision.allowed ? "allowed" : "denied",
    policy: policy === "" ? "-" : policy,
    action: policy === "" ? "-" : (decision.action ?? "-"),
    ...(decision.rule === undefined ? {} : { rule: decision.rule }),
  };
}

/**
 * Envoy's response code details (for a TCP tunnel, its connection termination details) of a policy
 * denial. Istio compiles ALLOW and DENY policies into Envoy's RBAC filter, which sets no response flag
 * and names the rule that matched. A CUSTOM denial is named as the DENY rule Istio builds from a rule of
 * a CUSTOM policy whose authorizer it cannot use (Istio 1.20 on: only what the rule matches is denied):
 * the waypoint has no external authorizer, so its policy evaluator refuses what such a rule matches (an
 * authorizer's own "no", behind Envoy's ext_authz filter, would be flagged `UAEX` instead).
 */
function denialDetails(decision: AuthorizationDecision): string {
  return `rbac_access_denied_matched_policy[${rbacPolicyId(decision)}]`;
}

/**
 * The RBAC filter's name for what denied: the matched rule of a DENY policy, named as Istio names the
 * rules it hands Envoy (`ns[<ns>]-policy[<name>]-rule[<index>]`), that of a CUSTOM policy as Istio names
 * the deny rule standing in for it (`istio-ext-authz-ns[...]-policy[...]-rule[...]-deny-due-to-bad-CUSTOM-action`),
 * or `none` when no rule matched (a request no ALLOW policy allowed, or a policy that failed).
 */
function rbacPolicyId(decision: AuthorizationDecision): string {
  const policy = decision.policy;
  const custom = decision.action === "CUSTOM";
  if ((decision.action !== "DENY" && !custom) || policy === undefined || policy === "") return "none";
  const slash = policy.indexOf("/");
  const name = slash < 0 ? policy : `ns[${policy.slice(0, slash)}]-policy[${policy.slice(slash + 1)}]`;
  const rule = decision.rule === undefined ? name : `${name}-rule[${decision.rule}]`;
  const id = custom ? `istio-ext-authz-${rule}-deny-due-to-bad-CUSTOM-action` : rule;
  // Whitespace would split a text access log line into more fields: Envoy writes `_` for it.
  return id.replace(/\s/g, "_");
}

/**
 * Envoy's response code details (`%RESPONSE_CODE_DETAILS%`) of the answers the handler gives, with
 * Envoy's names, so that access log queries written for Istio's proxies find the same requests here.
 */
const DETAILS = {
  /** The status came from the backend (a retried response too). */
  viaUpstream: "via_upstream",
  /** No route matched (`NR`). */
  routeNotFound: "route_not_found",
  /** Answered by the route itself: a redirect, or a rule with no backend of weight above 0. */
  directResponse: "direct_response",
  /** The chosen backend is not one the handler can send to (Istio answers such a backendRef 500). */
  clusterNotFound: "cluster_not_found",
  /** The backend has no endpoints (`UH`). */
  noHealthyUpstream: "no_healthy_upstream",
  /** The rule's request timeout (`timeouts.request`, Envoy's route timeout) expired (`UT`). */
  responseTimeout: "response_timeout",
  /** The last try's timeout (`timeouts.backendRequest` beside a `retry` stanza) expired (`UT`). */
  perTryTimeout: "upstream_per_try_timeout",
  /** Nothing moved for the stream idle timeout (`SI`). */
  streamIdleTimeout: "stream_idle_timeout",
  /** The client's connection went away before the response was over (`DC`). */
  downstreamDisconnect: "downstream_remote_disconnect",
  /** An HTTP/2 client reset its stream before the response was over (`DR`), as the codec names it. */
  downstreamRemoteReset: "http2.remote_reset",
  /** An HTTP/2 client refused its stream (RST_STREAM REFUSED_STREAM) before the response was over (`DR`). */
  downstreamRemoteRefuse: "http2.remote_refuse",
  /** A credential failed verification; `jwt_authn` puts the message it answered with in braces. */
  jwtRejected: "jwt_authn_access_denied{Jwt_verification_fails}",
  /** A path the evaluator could not normalize, as the connection manager names it. */
  pathNormalizationFailed: "path_normalization_failed",
  /** An upgrade request the handler cannot carry. */
  upgradeFailed: "upgrade_failed",
} as const;

/**
 * Why the client side of an unfinished exchange closed, as Envoy's connection manager logs it: an
 * HTTP/2 stream the client reset while its connection stays up is `DR` with the codec's details
 * (`http2.remote_reset`, `http2.remote_refuse` for REFUSED_STREAM); the connection itself going away is
 * `DC`.
 */
function clientLeft(
  x: Exchange,
  session: http2.Http2Session | undefined,
): { flag: "DR" | "DC"; details: string } {
  if (session === undefined || session.destroyed) {
    return { flag: "DC", details: DETAILS.downstreamDisconnect };
  }
  const refused =
    (x.res as unknown as http2.Http2ServerResponse).stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM;
  return {
    flag: "DR",
    details: refused ? DETAILS.downstreamRemoteRefuse : DETAILS.downstreamRemoteReset,
  };
}

/** Envoy's reset reasons for the ways an upstream attempt fails. */
type ResetReason =
  | "remote connection failure"
  | "connection termination"
  | "remote reset"
  | "remote refused stream reset"
  | "protocol error";

/**
 * Whether the backend reset the HTTP/2 stream (RST_STREAM) rather than the connection ending: Node
 * reports a reset with an error code as a stream error; the upstream and the body's end note the code
 * of one Node reports as a plain close (NO_ERROR, CANCEL) in `details.rstCode`.
 */
function backendResetStream(err: unknown): boolean {
  if ((err as { code?: unknown } | null)?.code === "ERR_HTTP2_STREAM_ERROR") return true;
  return (
    err instanceof RouterError &&
    (err.details.nodeCode === "ERR_HTTP2_STREAM_ERROR" || err.details.rstCode !== undefined)
  );
}

/** How an upstream attempt that failed before its response head is answered and flagged. */
interface UpstreamReset {
  reason: ResetReason;
  /** Why the connection could not be made, when the OS said (`delayed connect error: Connection refused`). */
  transportFailure?: string;
  /** `UF`, `UC`, `UR` or `UPE`. */
  flag: string;
  /** 502 for broken HTTP, 503 for everything else, as Envoy's router answers. */
  status: 502 | 503;
}

/**
 * Envoy's reset reason, response flag and status for a failed attempt: a connection that could not be
 * made is `UF`; a stream the backend reset (HTTP/2 RST_STREAM, refused or not) `UR`; a connection that
 * ended under the request `UC`; broken HTTP from the backend (an invalid header line) `UPE` and 502.
 */
function upstreamReset(failure: UpstreamFailure, error: RouterError): UpstreamReset {
  switch (failure) {
    case "connect-failure":
      return {
        reason: "remote connection failure",
        transportFailure: connectFailureReason(error),
        flag: "UF",
        status: 503,
      };
    case "refused-stream":
      return { reason: "remote refused stream reset", flag: "UR", status: 503 };
    case "protocol":
      return { reason: "protocol error", flag: "UPE", status: 502 };
    case "reset":
      // An RST_STREAM from the backend, else the connection ended.
      return backendResetStream(error)
        ? { reason: "remote reset", flag: "UR", status: 503 }
        : { reason: "connection termination", flag: "UC", status: 503 };
  }
}

/**
 * The local reply of an upstream that failed before its response started, and its details: the reset
 * reason in Envoy's words (after "retried and the latest" when an earlier attempt was retried), then the
 * transport failure reason if any (`, transport failure reason: ...` in the text, `|...` in the details),
 * with `_` for whitespace in the details
 * (`upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}`).
 */
function earlyReset(
  reason: ResetReason,
  retried = false,
  transportFailure?: string,
): [text: string, details: string] {
  const transport = transportFailure === undefined ? "" : `, transport failure reason: ${transportFailure}`;
  const inDetails = transportFailure === undefined ? reason : `${reason}|${transportFailure}`;
  return [
    `upstream connect error or disconnect/reset before headers. ${retried ? "retried and the latest " : ""}reset reason: ${reason}${transport}`,
    `upstream_reset_before_response_started{${underscored(inDetails)}}`,
  ];
}

/**
 * Response flags in the order Envoy prints them (`%RESPONSE_FLAGS%` and Istio's `response_flags`
 * label): the order they were set in. A try that would have been retried but for the retry limit sets
 * `URX` before the reply sets the failure's own flag, hence `URX,UF`.
 */
function withRetryLimit(retryLimitExceeded: boolean, flag: string): string {
  return retryLimitExceeded ? `URX,${flag}` : flag;
}

/**
 * How a response body that failed after its head was sent on is flagged, as Envoy's router does: a
 * stream the backend reset (HTTP/2 RST_STREAM) `UR`, broken HTTP in the body (an HTTP/1.1 chunk
 * that does not parse) `UPE`, anything else (the connection ended) `UC`.
 */
function lateFailure(err: unknown): { flag: string; reason: ResetReason } {
  if (backendResetStream(err)) return { flag: "UR", reason: "remote reset" };
  if ((err as { code?: unknown } | null)?.code === "ERR_UPSTREAM_PROTOCOL")
    return { flag: "UPE", reason: "protocol error" };
  return { flag: "UC", reason: "connection termination" };
}

/**
 * How many body bytes a response head promises (its `content-length`), or `undefined` when it
 * promises none: no valid length, a response to HEAD, or a status that never has a body (1xx, 204,
 * 304). Only HTTP/2 bodies need it: Node's HTTP/1.1 client already fails a short one.
 */
function declaredBodyLength(
  method: string | undefined,
  status: number,
  contentLength: unknown,
): number | undefined {
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) return undefined;
  if (typeof contentLength !== "string" || !/^[0-9]{1,15}$/.test(contentLength)) return undefined;
  return Number(contentLength);
}

/** The details of an upstream that failed after its response head was sent on. */
function lateReset(reason: ResetReason): string {
  return `upstream_reset_after_response_started{${underscored(reason)}}`;
}

/**
 * The response flag of a relayed connection (TCP, WebSocket) one side of which failed: `DC` for the
 * client's (a reset, or a close before both directions were done), `UC` for the upstream's.
 */
function relayFailureFlag(end: RelayEnd & { kind: "failed" }): "DC" | "UC" {
  return end.side === "client" ? "DC" : "UC";
}

function headerBytes(headers: Record<string, unknown>): number {
  let n = 0;
  for (const k in headers) {
    const v = headers[k];
    if (v !== undefined) n += k.length + String(v).length + 4;
  }
  return n;
}

/** Stands for "none" among the objects request label sets are kept by. */
const NO_OBJECT = Object.freeze({});

/** The connection a request came on: its stream (HTTP/1.1) or its session (HTTP/2). */
function downstreamConnection(req: DownRequest, h2: boolean): object {
  if (h2) return (req as http2.Http2ServerRequest).stream.session ?? NO_OBJECT;
  return (req as http.IncomingMessage).socket;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Creates the waypoint's L7 request path: Gateway API routing, filters, retries, timeouts,
 * per-request load balancing over pooled upstream connections, L7 authorization and Istio metrics.
 */
function optionsError(field: string, message: string): RouterError {
  return new RouterError("ERR_OPTIONS_INVALID", `${field} ${message}`, { field });
}

function describeValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (value === null || (typeof value !== "object" && typeof value !== "function")) return String(value);
  return Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

/** A number of milliseconds Node's timers honour (0 to 2^31-1), else `ERR_OPTIONS_INVALID`. */
function checkMs(value: number, field: string, min = 0): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > MAX_TIMER_MS) {
    throw optionsError(
      field,
      `must be a number of ms from ${min} to ${MAX_TIMER_MS}, got ${describeValue(value)}`,
    );
  }
  return value;
}

function checkInt(value: number, field: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw optionsError(field, `must be an integer from ${min} to ${max}, got ${describeValue(value)}`);
  }
  return value;
}

function checkOptionalFunction(value: unknown, field: string): void {
  if (value !== undefined && typeof value !== "function") {
    throw optionsError(field, `must be a function, got ${describeValue(value)}`);
  }
}

function checkRetryPolicy(retry: RetryPolicy): RetryPolicy {
  checkInt(retry.attempts, "retry.attempts", 0, MAX_RETRY_ATTEMPTS);
  if (!Array.isArray(retry.retryOn) || retry.retryOn.some((on) => !RETRY_ONS.includes(on))) {
    throw optionsError("retry.retryOn", `must list conditions of ${RETRY_ONS.join(", ")}`);
  }
  if (!Array.isArray(retry.codes) || retry.codes.some((c) => !Number.isInteger(c) || c < 100 || c > 599)) {
    throw optionsError("retry.codes", "must list HTTP status codes (100 to 599)");
  }
  checkMs(retry.backoffBaseMs, "retry.backoffBaseMs", 1);
  checkMs(retry.backoffMaxMs, "retry.backoffMaxMs", retry.backoffBaseMs);
  return retry;
}

/** Refuses what cannot serve as a route table: an object with `match`, `hasRoutesFor` and `size`. */
function checkRouteTable(table: RouteTable, field: string): RouteTable {
  const t = table as Partial<RouteTable> | null;
  if (
    typeof t !== "object" ||
    t === null ||
    typeof t.match !== "function" ||
    typeof t.hasRoutesFor !== "function" ||
    typeof t.size !== "number"
  ) {
    throw optionsError(
      field,
      `must be a RouteTable (createRouteTable, createEnvoyRouteTable), got ${describeValue(table)}`,
    );
  }
  return table;
}

/** Refuses, up front, options of the wrong type or out of range. */
function checkOptions(options: WaypointHandlerOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new RouterError("ERR_OPTIONS_INVALID", `options must be an object, got ${describeValue(options)}`);
  }
  const w = options.waypoint as { name?: unknown; namespace?: unknown } | undefined;
  if (
    w !== undefined &&
    (typeof w !== "object" ||
      w === null ||
      typeof w.name !== "string" ||
      w.name === "" ||
      typeof w.namespace !== "string" ||
      w.namespace === "")
  ) {
    throw optionsError(
      "waypoint",
      `must be { name, namespace } of the waypoint Gateway, got ${describeValue(w)}`,
    );
  }
  if (!Array.isArray(options.routes)) {
    throw optionsError("routes", `must be a list of routes, got ${describeValue(options.routes)}`);
  }
  const policy = options.policy as { evaluate?: unknown } | undefined;
  if (
    policy !== undefined &&
    (typeof policy !== "object" || policy === null || typeof policy.evaluate !== "function")
  ) {
    throw optionsError("policy", `must have an evaluate(request) method, got ${describeValue(policy)}`);
  }
  checkOptionalFunction(options.authenticate, "authenticate");
  checkOptionalFunction(options.accessLog, "accessLog");
  checkOptionalFunction(options.onRequestFinished, "onRequestFinished");
  const logger = options.logger as Record<string, unknown> | undefined;
  if (
    logger !== undefined &&
    (typeof logger !== "object" ||
      logger === null ||
      !["debug", "info", "warn", "error"].every((level) => typeof logger[level] === "function"))
  ) {
    throw optionsError("logger", "must have debug, info, warn and error methods");
  }
  if (
    options.metrics !== undefined &&
    typeof (options.metrics as { counter?: unknown })?.counter !== "function"
  ) {
    throw optionsError("metrics", "must be a MetricsSink");
  }
  if (options.retry !== undefined && (typeof options.retry !== "object" || options.retry === null)) {
    throw optionsError("retry", `must be an object, got ${describeValue(options.retry)}`);
  }
  for (const field of ["clusterDomain", "identity"] as const) {
    const value = options[field];
    if (value !== undefined && (typeof value !== "string" || value === "")) {
      throw optionsError(field, `must be a non-empty string, got ${describeValue(value)}`);
    }
  }
  if (
    options.serverName !== undefined &&
    (typeof options.serverName !== "string" || /[\r\n\0]/.test(options.serverName))
  ) {
    throw optionsError(
      "serverName",
      `must be a header value (no CR, LF or NUL), got ${describeValue(options.serverName)}`,
    );
  }
  for (const field of ["opaqueTcp", "sampleNewTraces", "acceptHttp10"] as const) {
    const value = options[field];
    if (value !== undefined && typeof value !== "boolean") {
      throw optionsError(field, `must be true or false, got ${describeValue(value)}`);
    }
  }
}

export function createWaypointHandler(options: WaypointHandlerOptions): WaypointHandler {
  checkOptions(options);
  const logger = options.logger ?? noopLogger;
  // pino and similar loggers say whether a level is on; the per-request debug line is only built then.
  const levels = logger as { isLevelEnabled?: (level: string) => boolean };
  const debugEnabled = (): boolean =>
    logger !== noopLogger && (levels.isLevelEnabled === undefined || levels.isLevelEnabled("debug"));
  const metricsSink = options.metrics ?? noopMetrics;
  const metrics = new RequestMetrics(metricsSink);
  // Without a metrics sink the 25 labels of every request are not worth building.
  const metricsEnabled = options.metrics !== undefined && options.metrics !== noopMetrics;
  const lbPolicy = options.loadBalancing ?? "least-request";
  if (lbPolicy !== "least-request" && lbPolicy !== "round-robin") {
    throw new RouterError("ERR_OPTIONS_INVALID", `loadBalancing must be "least-request" or "round-robin"`);
  }
  if (typeof options.connect !== "function" || typeof options.resolveBackend !== "function") {
    throw new RouterError("ERR_OPTIONS_INVALID", "connect and resolveBackend must be functions");
  }
  const retryDefaults = checkRetryPolicy({ ...DEFAULT_RETRY_POLICY, ...options.retry });
  const retryBufferBytes = checkInt(
    options.retryBufferBytes ?? 1024 * 1024,
    "retryBufferBytes",
    0,
    2 ** 31 - 1,
  );
  const serverName = options.serverName ?? "istio-envoy";
  /** Sets the `server` header the handler answers with, over any other (Envoy's OVERWRITE). */
  const withServer =
    serverName === ""
      ? <T extends Record<string, unknown>>(headers: T): T => headers
      : <T extends Record<string, unknown>>(headers: T): T => {
          for (const name of Object.keys(headers)) if (name.toLowerCase() === "server") delete headers[name];
          (headers as Record<string, unknown>).server = serverName;
          return headers;
        };
  const maxHeaderBytes = checkInt(options.maxHeaderBytes ?? 60 * 1024, "maxHeaderBytes", 1, 2 ** 31 - 1);
  const clusterDomain = options.clusterDomain ?? "cluster.local";
  const defaultRequestTimeout = checkMs(options.requestTimeoutMs ?? 0, "requestTimeoutMs");
  const streamIdleTimeout = checkMs(options.streamIdleTimeoutMs ?? 0, "streamIdleTimeoutMs");
  const tcpIdleTimeout = checkMs(options.tcpIdleTimeoutMs ?? 3_600_000, "tcpIdleTimeoutMs");
  const headersTimeout = checkMs(options.headersTimeoutMs ?? 60_000, "headersTimeoutMs");
  const liveness = {
    pingIntervalMs: checkMs(
      options.upstreamPingIntervalMs ?? DEFAULT_SESSION_LIVENESS.pingIntervalMs,
      "upstreamPingIntervalMs",
    ),
    pingTimeoutMs: checkMs(
      options.upstreamPingTimeoutMs ?? DEFAULT_SESSION_LIVENESS.pingTimeoutMs,
      "upstreamPingTimeoutMs",
    ),
  };
  const maxIdlePerEndpoint = checkInt(
    options.maxIdleConnectionsPerEndpoint ?? 100,
    "maxIdleConnectionsPerEndpoint",
    0,
    2 ** 31 - 1,
  );
  const pathNormalization = options.pathNormalization ?? "BASE";
  const acceptHttp10 = options.acceptHttp10 === true;
  if (!PATH_NORMALIZATIONS.includes(pathNormalization)) {
    throw new RouterError(
      "ERR_OPTIONS_INVALID",
      `pathNormalization must be one of ${PATH_NORMALIZATIONS.join(", ")}`,
    );
  }
  const pool = new UpstreamPool(options.connect, maxIdlePerEndpoint, liveness);
  let table: RouteTable = createRouteTable(options.routes, { waypoint: options.waypoint });
  const pickers = new Map<string, EndpointPicker<Endpoint>>();
  const pickerByBackend = new WeakMap<ResolvedBackendRef, EndpointPicker<Endpoint>>();
  const targets = new WeakMap<ResolvedBackendRef, BackendTarget>();
  const defaultRoutes = new Map<string, { rule: CompiledRule; matchedPrefix: undefined }>();
  // Workload-addressed tunnels: one rule per original destination, and the endpoint of its backend.
  const originalRoutes = new Map<string, { rule: CompiledRule; matchedPrefix: undefined }>();
  const originalEndpoints = new WeakMap<ResolvedBackendRef, Endpoint>();
  const weighted = new WeakMap<CompiledRule, () => ResolvedBackendRef | undefined>();
  const streams = new Set<Duplex>();
  const infoByStream = new WeakMap<object, TunnelInfo>();
  // The SNI of downstream TLS connections (the stream for HTTP/1.1, the session for HTTP/2).
  const serverNames = new WeakMap<object, string>();
  // Per downstream connection (the stream for HTTP/1.1, the session for HTTP/2).
  const deadlines = new WeakMap<object, ConnectionDeadline>();
  let pendingInfo: TunnelInfo | undefined;
  let pendingServerName: string | undefined;
  let pendingDeadline: ConnectionDeadline | undefined;
  let closed = false;
  /** Set once drain() was called; resolves when no downstream stream is open. */
  let draining: Promise<void> | undefined;
  let markDrained = () => {};
  /** Pipelined HTTP/1.1 requests waiting for the one before them to be answered, by connection. */
  const h1Waiting = new WeakMap<Duplex, (() => void)[]>();
  /** HTTP/1.1 connections and how many of their responses are under way. */
  const h1Busy = new Map<Duplex, number>();
  /** HTTP/1.1 responses under way, so a drain can still make them the connection's last. */
  const h1Responses = new Set<http.ServerResponse>();
  /** Downstream HTTP/2 sessions, for GOAWAY on drain. */
  const h2Sessions = new Set<http2.ServerHttp2Session>();

  /** A stream closed: the drain may be over. */
  function streamGone(stream: Duplex): void {
    streams.delete(stream);
    h1Busy.delete(stream);
    if (draining !== undefined && streams.size === 0) markDrained();
  }

  /** Ends an HTTP/1.1 connection whose last response was written, once that is flushed. */
  function closeWhenFlushed(stream: Duplex): void {
    if (stream.destroyed) return;
    if (stream.writableFinished) {
      stream.destroy();
      return;
    }
    stream.once("finish", () => stream.destroy());
    stream.end();
  }

  /**
   * Holds the connection's header deadline off until the response is over, and runs `onEnd` then
   * (once, whether the response finished or was closed).
   */
  function inFlight(connection: object, res: Writable, onEnd?: () => void): void {
    const deadline = deadlines.get(connection);
    if (deadline === undefined && onEnd === undefined) return;
    deadline?.begin();
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      deadline?.end();
      onEnd?.();
    };
    res.once("finish", end);
    res.once("close", end);
  }

  /**
   * An HTTP/1.1 response is over: the next pipelined request of its connection is served (the
   * connection is read again once none waits), and during a drain the connection closes once nothing
   * else is under way.
   */
  function h1Responded(socket: Duplex, res: http.ServerResponse): void {
    h1Responses.delete(res);
    const waiting = h1Waiting.get(socket);
    if (waiting !== undefined) {
      const next = socket.destroyed ? undefined : waiting.shift();
      if (next !== undefined) next();
      else {
        h1Waiting.delete(socket);
        if (!socket.destroyed) socket.resume();
      }
    }
    const busy = h1Busy.get(socket);
    if (busy === undefined) return;
    h1Busy.set(socket, busy - 1);
    // Its head went out before the drain began (else Node closes the connection itself).
    if (draining !== undefined && busy === 1 && res.shouldKeepAlive) closeWhenFlushed(socket);
  }

  // Node's own 400 for a request without Host is off: parseRequestHead refuses it, and the refusal is
  // logged (`missing_host_header`) as every other.
  const h1 = http.createServer(
    { maxHeaderSize: maxHeaderBytes, requestTimeout: 0, keepAliveTimeout: 60_000, requireHostHeader: false },
    (req, res) => {
      const socket = req.socket as Duplex;
      // A drain answers this request and closes the connection (Node writes `connection: close`).
      if (draining !== undefined) res.shouldKeepAlive = false;
      const before = h1Busy.get(socket) ?? 0;
      h1Busy.set(socket, before + 1);
      h1Responses.add(res);
      inFlight(socket, res, () => h1Responded(socket, res));
      const start = () =>
        void serve(req, res as unknown as DownResponse, infoByStream.get(req.socket) ?? {}, false, undefined);
      if (before === 0) {
        start();
        return;
      }
      // Pipelined behind a request still under way: served once that one is answered, and the
      // connection is not read meanwhile, as Envoy's HTTP/1.1 codec takes one request at a time.
      // Node parses every request of a chunk it has read at once: those wait here, up to a bound.
      let waiting = h1Waiting.get(socket);
      if (waiting === undefined) {
        waiting = [];
        h1Waiting.set(socket, waiting);
      }
      if (waiting.length >= MAX_PIPELINED_REQUESTS) {
        logger.debug({}, "more pipelined HTTP/1.1 requests than a connection may hold: closing it");
        socket.destroy();
        return;
      }
      waiting.push(start);
      socket.pause();
    },
  );
  h1.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    serveUpgrade(req, socket, head, infoByStream.get(socket) ?? {});
  });
  h1.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    const status = err.code === "HPE_HEADER_OVERFLOW" ? 431 : 400;
    const text = status === 431 ? "Request Header Fields Too Large" : "Bad Request";
    const server = serverName === "" ? "" : `server: ${serverName}\r\n`;
    socket.end(`HTTP/1.1 ${status} ${text}\r\n${server}connection: close\r\ncontent-length: 0\r\n\r\n`);
  });
  // maxHeaderListSize is only advertised (and enforced by Node once the peer has acknowledged it);
  // serve() checks the decoded list itself. maxHeaderListPairs is Node's default, stated.
  const h2 = http2.createServer({
    maxSessionMemory: 64,
    maxHeaderListPairs: 128,
    settings: { maxHeaderListSize: maxHeaderBytes, enablePush: false },
    ...DOWNSTREAM_RESET_LIMIT,
  });
  h2.on("sessionError", (err) => logger.debug({ err }, "downstream HTTP/2 session error"));
  h2.on("session", (session) => {
    h2Sessions.add(session);
    session.once("close", () => h2Sessions.delete(session));
    // Draining: GOAWAY at once; what the client sent before it sees the GOAWAY is still served.
    if (draining !== undefined) setImmediate(() => session.close());
    infoByStream.set(session, pendingInfo ?? {});
    if (pendingServerName !== undefined) serverNames.set(session, pendingServerName);
    const deadline = pendingDeadline;
    if (deadline === undefined) return;
    deadlines.set(session, deadline);
    // Headers that never complete produce no stream: the connection deadline keeps running.
    session.on("stream", (stream) => {
      deadline.begin();
      stream.once("close", () => deadline.end());
    });
  });
  h2.on("request", (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    void serve(
      req,
      res as unknown as DownResponse,
      infoByStream.get(req.stream.session as object) ?? {},
      true,
      undefined,
    );
  });

  /** The frozen {@link BackendTarget} handed to `resolveBackend`, made once per backendRef. */
  function backendTarget(backend: ResolvedBackendRef): BackendTarget {
    let target = targets.get(backend);
    if (target === undefined) {
      target = Object.freeze({
        group: backend.group,
        kind: backend.kind,
        name: backend.name,
        namespace: backend.namespace,
        port: backend.port,
      });
      targets.set(backend, target);
    }
    return target;
  }

  function pickerFor(backend: ResolvedBackendRef): EndpointPicker<Endpoint> {
    const cached = pickerByBackend.get(backend);
    if (cached !== undefined) return cached;
    // Every rule that names the same Service and port shares one picker (and its in-flight counts).
    const key = `${backend.namespace}/${backend.name}:${backend.port ?? ""}`;
    let p = pickers.get(key);
    if (p === undefined) {
      // Keyed by the caller's port for a workload addressed directly: bounded as the default routes
      // are (a backend already handed its picker keeps it).
      if (pickers.size >= 4096) pickers.clear();
      p = createEndpointPicker(lbPolicy, endpointKey);
      pickers.set(key, p);
    }
    pickerByBackend.set(backend, p);
    return p;
  }

  function chooseBackend(rule: CompiledRule): ResolvedBackendRef | undefined {
    let pick = weighted.get(rule);
    if (pick === undefined) {
      pick = createWeightedPicker(rule.backends, (b) => b.weight);
      weighted.set(rule, pick);
    }
    return pick();
  }

  /**
   * The label set of a request, built once per distinct set and frozen: requests repeat the same
   * source, endpoint workload, backend and outcome, and a frozen set is handed to the sink as it is.
   * Sets are kept per source, workload and backend object, and only while those are frozen (a
   * resolver's cached endpoints) or the router's own (the backend), so no one can change them later.
   */
  function labels(x: Exchange): Readonly<Record<IstioRequestLabel, string>> {
    const source = x.info.source;
    const workload = x.endpoint?.workload;
    if (
      (source !== undefined && !Object.isFrozen(source)) ||
      (workload !== undefined && !Object.isFrozen(workload))
    )
      return buildLabels(x);
    let byWorkload = labelSets.get(source ?? NO_OBJECT);
    if (byWorkload === undefined) {
      byWorkload = new WeakMap();
      labelSets.set(source ?? NO_OBJECT, byWorkload);
    }
    let byBackend = byWorkload.get(workload ?? NO_OBJECT);
    if (byBackend === undefined) {
      byBackend = new WeakMap();
      byWorkload.set(workload ?? NO_OBJECT, byBackend);
    }
    const backend = labelBackend(x);
    let sets = byBackend.get(backend ?? NO_OBJECT);
    if (sets === undefined) {
      sets = new Map();
      byBackend.set(backend ?? NO_OBJECT, sets);
    }
    const key = `${x.status} ${x.grpcStatus} ${x.flags} ${x.grpc ? 1 : 0} ${x.info.peerIdentity ?? ""}`;
    let set = sets.get(key);
    if (set === undefined) {
      // Bounded: outcomes times peer identities; a flood of distinct peers starts the map over.
      if (sets.size >= 1024) sets.clear();
      set = Object.freeze(buildLabels(x));
      sets.set(key, set);
    }
    return set;
  }

  /**
   * The backend a request's labels name: the one it went to or, for one answered before routing
   * (refused by policy or for its credential), the one its route chose (Envoy resolves the route, and
   * with it the cluster the stats name, before RBAC or JWT run), else the addressed Service's own: the
   * waypoint serves each Service on a chain of its own, so its destination service is known before any
   * filter answers. An unrouted request (`NR`), a redirect and an unparsed head name none, as there is
   * no cluster.
   */
  function labelBackend(x: Exchange): ResolvedBackendRef | undefined {
    if (x.backend !== undefined) return x.backend;
    if (x.routedBackend !== undefined) return x.routedBackend;
    const service = x.info.destination?.service;
    if (service === undefined || x.head === undefined || x.route !== undefined || x.flags === "NR")
      return undefined;
    return serviceDefaultRoute(service, x.info.destination?.port).rule.backends[0];
  }

  function buildLabels(x: Exchange): Record<IstioRequestLabel, string> {
    return {
      ...partyLabels(x.info, x.endpoint, labelBackend(x)),
      request_protocol: x.grpc ? "grpc" : "http",
      response_code: String(x.status),
      grpc_response_status: grpcStatusLabel(x),
      response_flags: x.flags,
      connection_security_policy: x.info.peerIdentity === undefined ? "unknown" : "mutual_tls",
    };
  }

  /**
   * `grpc_response_status`: empty for a request that is not gRPC, whatever its response carried; for a
   * gRPC request its trailers' or head's status, else one inferred from the HTTP status (a gRPC client
   * met by a plain HTTP error), else empty when nothing was answered, as Envoy's stats filter reports.
   */
  function grpcStatusLabel(x: Exchange): string {
    if (!x.grpc) return "";
    if (x.grpcStatus !== "" || x.status === 0) return x.grpcStatus;
    return String(GRPC_STATUS_FROM_HTTP[x.status] ?? 2);
  }

  /** The labels naming the source, the destination workload and the destination Service. */
  function partyLabels(
    info: TunnelInfo,
    endpoint: Endpoint | undefined,
    backend: ResolvedBackendRef | undefined,
  ): Record<PartyLabel, string> {
    const src = info.source ?? {};
    const dst = endpoint?.workload ?? {};
    const b = backend?.kind === "Service" ? backend : undefined;
    const host = backend?.kind === HOSTNAME_KIND && backend.group === HOSTNAME_GROUP ? backend : undefined;
    const u = (v: string | undefined) => (v === undefined || v === "" ? "unknown" : v);
    return {
      reporter: "waypoint",
      source_workload: u(src.name),
      source_canonical_service: u(src.canonicalService ?? src.app ?? src.name),
      source_canonical_revision: u(
        src.canonicalRevision ?? src.version ?? (src.name === undefined ? undefined : "latest"),
      ),
      source_workload_namespace: u(src.namespace),
      source_principal: u(info.peerIdentity),
      source_app: u(src.app),
      source_version: u(src.version),
      source_cluster: u(src.cluster),
      destination_workload: u(dst.name),
      destination_workload_namespace: u(dst.namespace),
      destination_principal: u(dst.principal),
      destination_app: u(dst.app),
      destination_version: u(dst.version),
      destination_service:
        b !== undefined ? `${b.name}.${b.namespace}.svc.${clusterDomain}` : (host?.name ?? "unknown"),
      destination_service_name: u(b?.name ?? host?.name),
      destination_service_namespace: u(b?.namespace ?? host?.namespace),
      destination_canonical_service: u(dst.canonicalService ?? dst.app ?? dst.name),
      destination_canonical_revision: u(
        dst.canonicalRevision ?? dst.version ?? (dst.name === undefined ? undefined : "latest"),
      ),
      destination_cluster: u(dst.cluster),
    };
  }

  const labelSets = new WeakMap<
    object,
    WeakMap<object, WeakMap<object, Map<string, Readonly<Record<IstioRequestLabel, string>>>>>
  >();

  function record(x: Exchange): void {
    if (x.recorded) return;
    x.recorded = true;
    const duration = performance.now() - x.start;
    if (metricsEnabled) {
      const reqBytes = headerBytes(x.req.headers) + (x.body?.bytes ?? 0);
      metrics.record(labels(x), duration, reqBytes, x.responseBytes);
    }
    if (options.accessLog !== undefined || options.onRequestFinished !== undefined) {
      logFinished(new FinishedExchange(x, duration, clusterDomain));
    }
    if (!debugEnabled()) return;
    logger.debug(
      {
        route: x.backend?.name,
        method: x.head?.method ?? x.req.method,
        path: x.head === undefined ? x.req.url : x.head.path + x.head.query,
        status: x.status,
        flags: x.flags,
        durationMs: Math.round(duration),
        traceId: x.trace.traceId,
        spanId: x.trace.spanId,
        upstream: x.endpoint === undefined ? undefined : endpointKey(x.endpoint),
      },
      "request complete",
    );
  }

  function resetDownstream(x: Exchange): void {
    if (x.h2)
      (x.res as unknown as http2.Http2ServerResponse).stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    else (x.req as http.IncomingMessage).socket.destroy();
  }

  /**
   * Answers the request from the proxy itself with `status` and `text` (in a gRPC status for a gRPC
   * request), or resets it when its response has started; logged with `flag` and `details`.
   */
  function localReply(
    x: Exchange,
    status: number,
    text: string,
    flag: string,
    details: string,
    extra: Record<string, string> = {},
  ): void {
    x.flags = flag;
    x.details = details;
    if (x.res.headersSent || x.res.writableEnded) {
      resetDownstream(x);
      return;
    }
    if (x.grpc) {
      x.status = 200;
      x.grpcStatus = String(GRPC_STATUS_FOR[status] ?? 2);
      x.res.writeHead(
        200,
        withServer({
          "content-type": "application/grpc",
          "grpc-status": x.grpcStatus,
          "grpc-message": encodeURIComponent(text),
          ...extra,
        }),
      );
      x.res.end();
      return;
    }
    x.status = status;
    const body = Buffer.from(text);
    x.responseBytes = body.length;
    x.res.writeHead(
      status,
      withServer({ "content-type": "text/plain", "content-length": body.length, ...extra }),
    );
    x.res.end(body);
  }

  /** Completes the parsed headers the way Envoy's connection manager does before any filter runs. */
  function requestHeaders(head: RequestHead, trace: TraceContext): HeaderMap {
    const out = head.headers;
    // The client already got its 100 Continue from this proxy; the backend gets the body right away.
    if (typeof out.expect === "string" && out.expect.toLowerCase() === "100-continue") delete out.expect;
    out.traceparent = trace.traceparent;
    // As Envoy does: every request gets an x-request-id (kept when present) and x-forwarded-proto.
    if (out["x-request-id"] === undefined) out["x-request-id"] = requestId();
    if (out["x-forwarded-proto"] === undefined) out["x-forwarded-proto"] = "http";
    return out;
  }

  const ANONYMOUS: RequestAuthOutcome = Object.freeze({ kind: "anonymous" });
  /** An HTTP field name (RFC 9110 token) and a value without CR, LF or NUL: what an authenticator may add. */
  const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
  const HEADER_VALUE = /^[^\r\n\0]*$/;
  const AUTH_FAILED: RequestAuthOutcome = Object.freeze({
    kind: "rejected",
    reason: "authentication failed",
  });

  /** Synchronous when the authenticator answers synchronously, so requests without credentials wait on nothing. */
  function authenticate(x: Exchange, head: RequestHead): RequestAuthOutcome | Promise<RequestAuthOutcome> {
    const authenticator = options.authenticate;
    if (authenticator === undefined) return ANONYMOUS;
    const failed = (err: unknown) => {
      logger.warn({ err }, "request authenticator threw; rejecting");
      return AUTH_FAILED;
    };
    try {
      const out = authenticator({
        method: head.method,
        path: head.path,
        query: head.query,
        host: head.host,
        headers: head.headers,
        service: x.info.destination?.service,
      });
      return out instanceof Promise ? out.catch(failed) : out;
    } catch (err) {
      return failed(err);
    }
  }

  function authorize(
    x: Exchange,
    head: RequestHead,
    auth: RequestAuthOutcome,
  ): AuthorizationDecision | undefined {
    const policy = options.policy;
    if (policy === undefined) return undefined;
    const info = x.info;
    const socket = (x.h2 ? undefined : (x.req as http.IncomingMessage).socket) as
      | { remoteAddress?: string; remotePort?: number }
      | undefined;
    // The header map is made when the policy reads it: most requests meet no policy that could apply
    // (the policy engine answers those from the addresses alone), and copying every field costs.
    let headers: Record<string, string | string[]> | undefined;
    return decide(policy, {
      ...connectionFacts(info, socket),
      http: {
        host: head.host,
        method: head.method,
        path: head.path,
        pathNormalized: true,
        get headers() {
          headers ??= policyHeaders(x, head);
          return headers;
        },
        ...(auth.kind === "authenticated"
          ? {
              ...(auth.principal === undefined ? {} : { requestPrincipal: auth.principal }),
              audiences: auth.audiences,
              claims: auth.claims,
              ...(auth.presenter === undefined ? {} : { presenter: auth.presenter }),
            }
          : {}),
      },
    });
  }

  /**
   * The headers policy matches `request.headers[...]` against: those forwarded, and what Envoy's header
   * map holds beside them and policy can name: the pseudo-headers (`:authority`, `:method`, `:path`
   * with its query, `:scheme`), `host`, and an HTTP/1.1 request's `upgrade` and `connection` (which
   * are not forwarded as they came but decide what the request becomes). Decided on what is acted on:
   * a DENY on `upgrade: websocket` or on the authority cannot miss.
   */
  function policyHeaders(x: Exchange, head: RequestHead): HeaderMap {
    const headers: HeaderMap = Object.assign(createHeaderMap(), head.headers, {
      ":method": head.method,
      ":path": `${head.path}${head.query}`,
      ":scheme": "http",
    });
    if (head.host !== "") {
      headers[":authority"] = head.host;
      headers.host = head.host;
    }
    if (!x.h2) {
      const sent = (x.req as http.IncomingMessage).headers;
      for (const name of ["upgrade", "connection"] as const) {
        const value = sent[name];
        if (typeof value === "string") headers[name] = value;
      }
    }
    return headers;
  }

  /** The connection's part of an authorization request: who calls, and what it was sent to. */
  function connectionFacts(
    info: TunnelInfo,
    socket?: { remoteAddress?: string; remotePort?: number },
  ): Omit<AuthorizationRequest, "http"> {
    return {
      source: {
        ip: info.remoteAddress ?? socket?.remoteAddress ?? "0.0.0.0",
        port: info.remotePort ?? socket?.remotePort,
        identity: info.peerIdentity,
      },
      destination: {
        ip: info.destination?.address ?? "0.0.0.0",
        port: info.destination?.port ?? 0,
        targets: policyTargets(info),
      },
    };
  }

  /** The policy's decision; a policy that throws denies. */
  function decide(policy: AuthorizationEvaluator, request: AuthorizationRequest): AuthorizationDecision {
    try {
      return policy.evaluate(request);
    } catch (err) {
      logger.error({ err }, "authorization policy threw; denying");
      return { allowed: false, reason: "authorization policy failed" };
    }
  }

  function policyTargets(info: TunnelInfo): NonNullable<AuthorizationRequest["destination"]["targets"]> {
    const targets: { kind: string; name: string; namespace: string; group?: string }[] = [];
    const waypoint = options.waypoint;
    if (waypoint !== undefined) {
      targets.push({ kind: "Gateway", group: "gateway.networking.k8s.io", ...waypoint });
    }
    const service = info.destination?.service;
    if (service?.kind === "ServiceEntry") {
      targets.push({
        kind: "ServiceEntry",
        group: HOSTNAME_GROUP,
        name: service.name,
        namespace: service.namespace,
      });
    } else if (service !== undefined) {
      targets.push({ kind: "Service", group: "", name: service.name, namespace: service.namespace });
    }
    return targets;
  }

  function routeFor(
    target: RouteTarget,
    request: Parameters<RouteTable["match"]>[0],
  ): { rule: CompiledRule; matchedPrefix: string | undefined } | undefined {
    if (table.hasRoutesFor(target)) return table.match(request);
    const svc = target.service;
    if (svc === undefined) return undefined;
    return serviceDefaultRoute(svc, target.port);
  }

  /**
   * A Service without routes of its own routes to itself (Istio waypoint default). The rule is kept,
   * so its backend keeps one weighted picker and one endpoint picker across requests.
   */
  function serviceDefaultRoute(
    svc: DestinationService,
    port: number | undefined,
  ): { rule: CompiledRule; matchedPrefix: undefined } {
    const host = svc.kind === "ServiceEntry" ? (svc.hostname ?? svc.name) : undefined;
    const key =
      host === undefined
        ? `${svc.namespace}/${svc.name}:${port ?? ""}`
        : `se:${svc.namespace}/${host}:${port ?? ""}`;
    let found = defaultRoutes.get(key);
    if (found === undefined) {
      if (defaultRoutes.size >= 4096) defaultRoutes.clear();
      // A ServiceEntry host goes to the host's endpoints (a backendRef of kind Hostname).
      found =
        host === undefined
          ? defaultRoute(svc, port)
          : defaultRoute({ name: host, namespace: svc.namespace }, port, HOSTNAME_KIND, HOSTNAME_GROUP);
      defaultRoutes.set(key, found);
    }
    return found;
  }

  /**
   * The endpoints of a backend: a Service's from `resolveBackend`, an original destination's its one
   * endpoint; undefined for another kind or when `resolveBackend` throws.
   */
  function backendEndpoints(backend: ResolvedBackendRef): readonly Endpoint[] | undefined {
    if (backend.kind === ORIGINAL_DESTINATION) {
      const endpoint = originalEndpoints.get(backend);
      return endpoint === undefined ? undefined : [endpoint];
    }
    const service = backend.group === "" && backend.kind === "Service";
    const host = backend.group === HOSTNAME_GROUP && backend.kind === HOSTNAME_KIND;
    if ((!service && !host) || backend.port === undefined) return undefined;
    try {
      return options.resolveBackend(backendTarget(backend));
    } catch (err) {
      logger.warn({ err, backend: backend.name }, "resolveBackend threw");
      return undefined;
    }
  }

  /**
   * The route of a tunnel addressed to a workload: its one backend is the original destination. Kept
   * per endpoint (bounded), so its backend keeps one endpoint picker across requests.
   */
  function originalDestinationRoute(endpoint: Endpoint): { rule: CompiledRule; matchedPrefix: undefined } {
    const key = endpointKey(endpoint);
    let found = originalRoutes.get(key);
    if (
      found === undefined ||
      originalEndpoints.get(found.rule.backends[0] as ResolvedBackendRef) !== endpoint
    ) {
      if (originalRoutes.size >= 4096) originalRoutes.clear();
      const namespace = endpoint.workload?.namespace ?? "";
      found = defaultRoute({ name: endpoint.address, namespace }, endpoint.port, ORIGINAL_DESTINATION);
      originalEndpoints.set(found.rule.backends[0] as ResolvedBackendRef, endpoint);
      originalRoutes.set(key, found);
    }
    return found;
  }

  function defaultRoute(
    svc: { name: string; namespace: string },
    port: number | undefined,
    kind = "Service",
    group = "",
  ): { rule: CompiledRule; matchedPrefix: undefined } {
    const backend: ResolvedBackendRef = {
      group,
      kind,
      name: svc.name,
      namespace: svc.namespace,
      port,
      weight: 1,
      requestHeaders: undefined,
      responseHeaders: undefined,
    };
    return {
      matchedPrefix: undefined,
      rule: {
        kind: "HTTPRoute",
        route: "default",
        namespace: svc.namespace,
        ruleIndex: 0,
        ruleName: undefined,
        requestHeaders: undefined,
        responseHeaders: undefined,
        redirect: undefined,
        rewrite: undefined,
        mirrors: [],
        backends: [backend],
        requestTimeoutMs: undefined,
        backendTimeoutMs: undefined,
        retry: undefined,
      },
    };
  }

  /** Rules whose ignored `retry_on` names were logged, so each is logged once. */
  const ignoredRetryOnLogged = new WeakSet<CompiledRule>();

  /**
   * The retry policy of a rule: the handler's for a rule without one; else the rule's conditions and
   * codes as given (an empty code list retries no status), with the handler's attempts and back-off
   * where the rule sets none.
   */
  function retryPolicyFor(rule: CompiledRule): RetryPolicy {
    const r = rule.retry;
    if (r === undefined) return retryDefaults;
    if (r.ignoredRetryOn !== undefined && !ignoredRetryOnLogged.has(rule)) {
      ignoredRetryOnLogged.add(rule);
      logger.warn(
        { route: rule.route, ignored: r.ignoredRetryOn },
        "retry_on names the router does not know are ignored, as Envoy ignores them",
      );
    }
    const base = r.backoffMs ?? retryDefaults.backoffBaseMs;
    return {
      attempts: r.attempts ?? retryDefaults.attempts,
      retryOn: r.retryOn,
      codes: r.codes,
      backoffBaseMs: base,
      backoffMaxMs: Math.max(base * 10, base),
    };
  }

  /** Envoy's decision on a try that ended without a response (`wouldRetryFromReset`). */
  function retriableFailure(policy: RetryPolicy, failure: UpstreamFailure | "timeout"): boolean {
    const on = policy.retryOn;
    // Any failure without a response, a per-try timeout included.
    if (on.includes("reset") || on.includes("5xx") || on.includes("gateway-error")) return true;
    switch (failure) {
      case "connect-failure":
        return on.includes("connect-failure") || on.includes("reset-before-request");
      case "refused-stream":
        return on.includes("refused-stream") || on.includes("reset-before-request");
      case "reset":
      case "protocol":
      case "timeout":
        return false;
    }
  }

  /** Envoy's decision on a response head (`wouldRetryFromHeaders`). */
  function retriableResponse(policy: RetryPolicy, up: UpstreamResponse): boolean {
    const on = policy.retryOn;
    // A response an upstream Envoy rate-limited is retried under envoy-ratelimited only.
    if (up.headers["x-envoy-ratelimited"] !== undefined) return on.includes("envoy-ratelimited");
    const s = up.status;
    if (on.includes("5xx") && s >= 500) return true;
    if (on.includes("gateway-error") && (s === 502 || s === 503 || s === 504)) return true;
    if (on.includes("retriable-4xx") && s === 409) return true;
    if (on.includes("retriable-status-codes") && policy.codes.includes(s)) return true;
    const grpcStatus = up.headers["grpc-status"];
    if (typeof grpcStatus === "string") {
      for (const [cond, code] of Object.entries(GRPC_CODES))
        if (on.includes(cond as RetryOn) && code === grpcStatus) return true;
    }
    return false;
  }

  function startMirrors(
    x: Exchange,
    rule: CompiledRule,
    method: string,
    path: string,
    authority: string,
    headers: HeaderMap,
  ): void {
    for (const m of rule.mirrors) {
      const fraction =
        m.fraction === undefined
          ? (m.percent ?? 100) / 100
          : m.fraction.numerator / (m.fraction.denominator ?? 100);
      if (fraction <= 0 || (fraction < 1 && Math.random() >= fraction)) continue;
      let endpoints: readonly Endpoint[] | undefined;
      try {
        endpoints =
          m.backend.kind === "Service" && m.backend.group === ""
            ? options.resolveBackend(backendTarget(m.backend))
            : undefined;
      } catch {
        endpoints = undefined;
      }
      const ep = endpoints === undefined ? undefined : pickerFor(m.backend).pick(endpoints);
      if (ep === undefined) continue;
      // Fire and forget: its own body copy, its result ignored, never delays the main request.
      const mirrorBody = new MirrorSink();
      x.body?.tap(mirrorBody.writable);
      const { response, abort } = pool.send(ep, ep.protocol ?? (x.h2 ? "http2" : "http1"), {
        method,
        path,
        authority: `${authority.split(":")[0]}-shadow`,
        headers: Object.assign(createHeaderMap(), headers),
        body: x.body === undefined ? undefined : mirrorBody.asBody(),
      });
      const timer = setTimeout(abort, 30_000);
      timer.unref();
      response.then(
        (up) => {
          up.body.resume();
          finished(up.body, () => clearTimeout(timer));
        },
        () => clearTimeout(timer),
      );
    }
  }

  function serve(
    req: DownRequest,
    res: DownResponse,
    info: TunnelInfo,
    h2: boolean,
    upgrade: UpgradeRequest | undefined,
  ): Promise<void> {
    const contentType = req.headers["content-type"];
    const x: Exchange = {
      req,
      res,
      info,
      h2,
      head: undefined,
      upgrade,
      start: performance.now(),
      startedAt: Date.now(),
      grpc: typeof contentType === "string" && contentType.startsWith("application/grpc"),
      flags: "-",
      details: "-",
      status: 0,
      grpcStatus: "",
      responseBytes: 0,
      responseHeadBytes: 0,
      body: undefined,
      backend: undefined,
      routedBackend: undefined,
      routedRoute: undefined,
      transportFailure: undefined,
      requestDone: undefined,
      serviceTime: undefined,
      endpoint: undefined,
      upstreamLocalAddress: undefined,
      requestedServerName: serverNames.get(downstreamConnection(req, h2)),
      trace: continueTrace(req.headers.traceparent, options.sampleNewTraces === true),
      recorded: false,
      onClose: undefined,
      idle: undefined,
      route: undefined,
      requestPrincipal: undefined,
      decision: undefined,
    };
    res.on("close", () => {
      x.onClose?.();
      record(x);
    });
    return proxy(x).catch((err: unknown) => {
      logger.error({ err }, "waypoint request failed");
      // Nothing Envoy answers stands for it: no details.
      localReply(x, 500, "internal error", "-", "-");
    });
  }

  /**
   * The rule a request takes: one of its Service's routes (the Service itself when it has none), else a
   * workload-addressed tunnel's original destination; undefined when none matches.
   */
  function matchRoute(
    x: Exchange,
    head: RequestHead,
    headers: HeaderMap,
  ): { rule: CompiledRule; matchedPrefix: string | undefined } | undefined {
    const target: RouteTarget = { service: x.info.destination?.service, port: x.info.destination?.port };
    const original = target.service === undefined ? x.info.destination?.endpoint : undefined;
    const { method, path, host } = head;
    const query = head.query === "" ? undefined : head.query.slice(1);
    return (
      routeFor(target, { host, path, query, method, headers, grpc: x.grpc, target }) ??
      (original === undefined ? undefined : originalDestinationRoute(original))
    );
  }

  /**
   * The backend the route would have sent a refused request to, chosen as for one that is sent (a
   * weighted rule takes its turn): Envoy picks the route, and with it the cluster its stats name, before
   * the JWT and RBAC filters run, so a refused request counts against the Service its route names, not
   * the one it was addressed to. Undefined when no rule matches, or the rule redirects or has no backend.
   * The matched route's name is kept in `x.routedRoute` for the access log's `route_name`.
   */
  function routedBackend(x: Exchange, head: RequestHead, headers: HeaderMap): ResolvedBackendRef | undefined {
    const found = matchRoute(x, head, headers);
    x.routedRoute = found?.rule.route;
    if (found === undefined || found.rule.redirect !== undefined || found.rule.backends.length === 0)
      return undefined;
    return chooseBackend(found.rule);
  }

  async function proxy(x: Exchange): Promise<void> {
    const { req, res } = x;
    // Parsed once: policy, routing and the upstream request below all read this head.
    const parsed = parseRequestHead(
      {
        method: req.method,
        target: req.url,
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        h2: x.h2,
        httpVersion: x.h2 ? undefined : req.httpVersion,
      },
      {
        maxHeaderBytes,
        pathNormalization,
        proxyIdentity: options.identity,
        peerIdentity: x.info.peerIdentity,
        acceptHttp10,
      },
    );
    if (!parsed.ok) {
      logger.debug({ reason: parsed.reason }, "request refused");
      // A protocol version not served: the connection ends with the answer, as Envoy's codec ends it.
      if (parsed.status === 426 && !x.h2) (res as unknown as http.ServerResponse).shouldKeepAlive = false;
      return localReply(x, parsed.status, parsed.reason, "-", parsed.details);
    }
    const head = parsed.head;
    x.head = head;
    const { method, path, host } = head;
    const query = head.query === "" ? undefined : head.query.slice(1);
    const declaresBody =
      req.headers["content-length"] !== undefined && req.headers["content-length"] !== "0"
        ? true
        : req.headers["transfer-encoding"] !== undefined;
    // The HTTP/1.1 parser stops at an upgrade request's head, so a body it declares could only travel as
    // raw bytes, unparsed.
    if (x.upgrade !== undefined && declaresBody)
      return localReply(x, 400, "upgrade request with a body", "-", DETAILS.upgradeFailed);
    const headers = requestHeaders(head, x.trace);

    const pending = authenticate(x, head);
    const auth = pending instanceof Promise ? await pending : pending;
    if (auth.kind === "rejected") {
      logger.debug({ reason: auth.reason }, "request credential rejected");
      x.routedBackend = routedBackend(x, head, headers);
      return localReply(x, 401, "Jwt verification fails", "-", DETAILS.jwtRejected, {
        "www-authenticate": 'Bearer realm="ambient", error="invalid_token"',
      });
    }
    // The same map is policy's `request.headers` and what goes upstream: both read the edits.
    for (const name of auth.removeHeaders ?? []) delete headers[name.toLowerCase()];
    if (auth.kind === "authenticated") {
      if (auth.principal !== undefined) x.requestPrincipal = auth.principal;
      if (auth.removeQueryParams !== undefined && auth.removeQueryParams.length > 0) {
        head.query = withoutQueryParams(head.query, auth.removeQueryParams);
      }
      for (const [name, value] of auth.addHeaders ?? []) {
        const key = name.toLowerCase();
        if (!HEADER_NAME.test(key) || !HEADER_VALUE.test(value)) {
          logger.debug({ header: key }, "authenticator header not set: not a valid field");
          continue;
        }
        const old = headers[key];
        headers[key] = old === undefined ? value : [...(Array.isArray(old) ? old : [old]), value];
      }
    }
    const decision = authorize(x, head, auth);
    if (decision?.badRequest !== true) x.decision = decision;
    if (decision?.badRequest === true)
      return localReply(x, 400, "bad request", "-", DETAILS.pathNormalizationFailed);
    if (decision !== undefined && !decision.allowed) {
      logger.debug({ reason: decision.reason, policy: decision.policy }, "request denied");
      x.routedBackend = routedBackend(x, head, headers);
      // Envoy has no response flag for it: the reason is in the response code details only.
      return localReply(x, 403, "RBAC: access denied", "-", denialDetails(decision));
    }

    const found = matchRoute(x, head, headers);
    if (found === undefined) return localReply(x, 404, "", "NR", DETAILS.routeNotFound);
    const { rule, matchedPrefix } = found;
    x.route = rule.route;
    // The connection closes after this answer (an upgrade request's always does), so no bytes the
    // client sent after the head are ever read as a request.
    if (x.upgrade?.refused === true) return localReply(x, 403, "", "-", DETAILS.upgradeFailed);

    if (rule.redirect !== undefined) {
      const location = redirectLocation(
        rule.redirect,
        { scheme: "http", host, path, query, port: x.info.destination?.port },
        matchedPrefix,
      );
      x.flags = "-";
      // Envoy answers a redirect as a route's direct response.
      x.details = DETAILS.directResponse;
      x.status = rule.redirect.statusCode ?? 302;
      // The rule's ResponseHeaderModifier shapes the redirect as it would a backend's response, as
      // Envoy applies a route's response headers to the redirects it answers itself.
      const redirectHeaders: HeaderMap = { location };
      applyHeaderFilter(redirectHeaders, rule.responseHeaders);
      redirectHeaders["content-length"] = "0";
      res.writeHead(x.status, withServer(redirectHeaders));
      res.end();
      return;
    }

    let upstreamPath = path;
    let authority = host;
    if (rule.rewrite !== undefined) {
      if (rule.rewrite.path !== undefined) upstreamPath = rewritePath(path, rule.rewrite.path, matchedPrefix);
      if (rule.rewrite.hostname !== undefined) authority = rule.rewrite.hostname;
    }
    upstreamPath += head.query;
    applyHeaderFilter(headers, rule.requestHeaders);

    const policy = retryPolicyFor(rule);
    const hasBody =
      x.upgrade === undefined &&
      (method !== "GET" && method !== "HEAD"
        ? true
        : req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined);
    x.body =
      hasBody || x.h2
        ? // Without retries there is nothing to replay, so nothing is kept.
          new RequestBody(req as unknown as Readable, policy.attempts > 0 ? retryBufferBytes : 0, 1024 * 1024)
        : undefined;
    if (x.h2 && (req as http2.Http2ServerRequest).stream.endAfterHeaders) x.body = undefined;
    if (x.body === undefined) x.requestDone = performance.now();

    if (rule.mirrors.length > 0 && x.upgrade === undefined) {
      startMirrors(x, rule, method, upstreamPath, authority, headers);
    }

    // Istio gives a rule without a backend of weight above 0 a direct response of 500.
    if (rule.backends.length === 0)
      return localReply(x, 500, "no backend for route", "-", DETAILS.directResponse);
    const backend = chooseBackend(rule);
    if (backend === undefined)
      return localReply(x, 500, "all backends have weight 0", "-", DETAILS.directResponse);
    x.backend = backend;
    applyHeaderFilter(headers, backend.requestHeaders);
    const endpoints = backendEndpoints(backend);
    if (endpoints === undefined) return localReply(x, 500, "invalid backend", "-", DETAILS.clusterNotFound);
    if (endpoints.length === 0)
      return localReply(x, 503, "no healthy upstream", "UH", DETAILS.noHealthyUpstream);

    const requestTimeout = rule.requestTimeoutMs ?? defaultRequestTimeout;
    const perTryTimeout = rule.backendTimeoutMs ?? 0;
    // Istio makes an HTTPRoute rule's `timeouts.backendRequest` a per-try timeout only beside a `retry`
    // stanza (RDS gives one with its per-try timeout); without one it is the route's timeout.
    const perTryDetails = rule.retry === undefined ? DETAILS.responseTimeout : DETAILS.perTryTimeout;
    const picker = pickerFor(backend);
    // Endpoints already tried, avoided by retries; only built when a retry happens.
    let tried: Set<string> | undefined;
    let abortCurrent: ((reason?: "timeout") => void) | undefined;
    let expired = false;
    let clientGone = false;
    type TimeoutReply = [status: number, text: string, flag: string, details: string];
    const requestTimedOut: TimeoutReply = [504, "upstream request timeout", "UT", DETAILS.responseTimeout];
    let timeoutReply = requestTimedOut;
    const expire = (reply: TimeoutReply) => {
      if (expired) return;
      expired = true;
      timeoutReply = reply;
      abortCurrent?.("timeout");
      if (res.headersSent) {
        x.flags = reply[2];
        x.details = reply[3];
        resetDownstream(x);
      }
    };
    const deadline =
      requestTimeout > 0 ? setTimeout(() => expire(requestTimedOut), requestTimeout) : undefined;
    const idle =
      streamIdleTimeout > 0
        ? setTimeout(
            () => expire([504, "stream timeout", "SI", DETAILS.streamIdleTimeout]),
            streamIdleTimeout,
          )
        : undefined;
    if (idle !== undefined) {
      x.idle = idle;
      if (x.body !== undefined) x.body.idle = idle;
    }
    const stopTimers = () => {
      if (deadline !== undefined) clearTimeout(deadline);
      if (idle !== undefined) clearTimeout(idle);
    };
    // Kept now: a closed HTTP/2 stream no longer names its session.
    const session = x.h2 ? (req as http2.Http2ServerRequest).stream.session : undefined;
    x.onClose = () => {
      stopTimers();
      if (!res.writableEnded) {
        clientGone = true;
        if (x.flags === "-") {
          const left = clientLeft(x, session);
          x.flags = left.flag;
          x.details = left.details;
        }
        abortCurrent?.();
      }
    };

    // A retry sends the body again from its first byte: only while the retry buffer still holds it all.
    const bodyReplayable = () => x.body === undefined || x.body.replayable;

    for (let attempt = 0; ; attempt++) {
      if (attempt > 0 && x.endpoint !== undefined) {
        tried ??= new Set();
        tried.add(endpointKey(x.endpoint));
      }
      const endpoint = picker.pick(endpoints, tried) as Endpoint;
      x.endpoint = endpoint;
      const done = picker.begin(endpoint);
      const upstreamRequest = { method, path: upstreamPath, authority, headers, body: x.body };
      const upgrade = x.upgrade?.protocol;
      const sent: SentRequest<UpgradeResponse> =
        upgrade === undefined
          ? pool.send(endpoint, endpoint.protocol ?? (x.h2 ? "http2" : "http1"), upstreamRequest)
          : sendUpgrade(options.connect, endpoint, upstreamRequest, upgrade);
      abortCurrent = sent.abort;
      let tryTimer: NodeJS.Timeout | undefined;
      let tryTimedOut = false;
      let responded = false;
      const timeout =
        perTryTimeout > 0
          ? new Promise<never>((_, reject) => {
              tryTimer = setTimeout(() => {
                tryTimedOut = true;
                // Mid-body expiry resets the client stream; it must be reported as a timeout.
                if (responded && x.flags === "-") {
                  x.flags = "UT";
                  x.details = perTryDetails;
                }
                sent.abort("timeout");
                reject(
                  new RouterError(
                    "ERR_UPSTREAM_TIMEOUT",
                    `no response within the ${perTryTimeout} ms backendRequest timeout`,
                  ),
                );
              }, perTryTimeout);
            })
          : undefined;
      // Once the race is decided this rejection has no reader.
      timeout?.catch(() => {});
      let up: UpgradeResponse;
      try {
        up = await (timeout === undefined ? sent.response : Promise.race([sent.response, timeout]));
        responded = true;
        x.upstreamLocalAddress = sent.localAddress();
      } catch (err) {
        // As Envoy keeps it once the connection was made, a reset or timeout after it included.
        x.upstreamLocalAddress = sent.localAddress();
        if (tryTimer !== undefined) clearTimeout(tryTimer);
        done();
        x.body?.detach();
        if (clientGone) return;
        if (expired) {
          x.body?.release();
          return localReply(x, ...timeoutReply);
        }
        const failure: UpstreamFailure | "timeout" = tryTimedOut
          ? "timeout"
          : err instanceof UpstreamAttemptError
            ? err.failure
            : "reset";
        const retriable = retriableFailure(policy, failure);
        const canRetry = attempt < policy.attempts && retriable && bodyReplayable();
        logger.debug({ err, attempt, failure, retry: canRetry }, "upstream attempt failed");
        if (canRetry) {
          await backoff(policy, attempt);
          if (clientGone) return;
          if (expired) {
            x.body?.release();
            return localReply(x, ...timeoutReply);
          }
          // Decided again on the body as the retry would send it; one that can no longer be sent whole
          // ends the request with this attempt's failure, as Envoy gives up a retry it cannot make.
          if (bodyReplayable()) continue;
          logger.debug({ attempt }, "retry given up: the request body can no longer be replayed");
        }
        // Retries were on and this failure would have been retried, but none are left.
        const retryLimitExceeded =
          policy.attempts > 0 && attempt >= policy.attempts && retriable && bodyReplayable();
        x.body?.release();
        if (failure === "timeout")
          return localReply(
            x,
            504,
            "upstream request timeout",
            withRetryLimit(retryLimitExceeded, "UT"),
            perTryDetails,
          );
        const reset = upstreamReset(
          failure,
          err instanceof UpstreamAttemptError ? err.error : fromNodeError(err, "request"),
        );
        x.transportFailure = reset.transportFailure;
        const [text, details] = earlyReset(reset.reason, attempt > 0, reset.transportFailure);
        return localReply(x, reset.status, text, withRetryLimit(retryLimitExceeded, reset.flag), details);
      }
      const retriable = retriableResponse(policy, up);
      // Set when this response was kept through a back-off and its retry given up: its request never
      // got the rest of the body, so the attempt is ended once the response has been sent on.
      let heldThroughBackoff = false;
      if (attempt < policy.attempts && retriable && bodyReplayable()) {
        if (tryTimer !== undefined) clearTimeout(tryTimer);
        x.body?.detach();
        // Kept, unread, through the back-off: it is still the answer if the body cannot be sent again
        // after it. An error meanwhile is seen by whoever reads it next (its `destroyed` below).
        up.body.on("error", () => {});
        await backoff(policy, attempt);
        if (clientGone || expired) {
          up.abort();
          done();
          if (clientGone) return;
          x.body?.release();
          return localReply(x, ...timeoutReply);
        }
        if (bodyReplayable()) {
          up.body.resume();
          up.abort();
          done();
          continue;
        }
        logger.debug({ attempt }, "retry given up: the request body can no longer be replayed");
        heldThroughBackoff = true;
        x.body?.release();
        if (up.body.destroyed) {
          // The held response died during the back-off: nothing of it was sent on.
          done();
          const [text, details] = earlyReset("connection termination", attempt > 0);
          return localReply(x, 503, text, "UC", details);
        }
      } else if (attempt >= policy.attempts && policy.attempts > 0 && retriable && bodyReplayable()) {
        // Would have been retried but for the retry limit.
        x.flags = "URX";
      }
      const finish = () => {
        if (tryTimer !== undefined) clearTimeout(tryTimer);
        stopTimers();
        done();
        if (heldThroughBackoff) up.abort();
      };
      if (up.switched !== undefined && x.upgrade !== undefined) {
        switchProtocols(x, up, up.switched, x.upgrade, rule, backend, finish);
      } else {
        if (up.switched !== undefined) up.switched.socket.destroy();
        streamResponse(x, up, rule, backend, finish);
      }
      return;
    }
  }

  function streamResponse(
    x: Exchange,
    up: UpstreamResponse,
    rule: CompiledRule,
    backend: ResolvedBackendRef,
    done: () => void,
  ): void {
    // The upstream response's header object is this request's own copy: filters edit it in place.
    const headers: HeaderMap = up.headers;
    // Taken before filters may change it: what the backend promised to send.
    const contentLength = headers["content-length"];
    // Envoy's router sets this before the route's header filters (which may remove it), from the end
    // of the downstream request; a request still streaming its body has none.
    const requestDone = x.body === undefined ? x.requestDone : x.body.completedAt;
    if (requestDone !== undefined) {
      headers[UPSTREAM_SERVICE_TIME] = String(Math.max(0, Math.floor(performance.now() - requestDone)));
    }
    applyHeaderFilter(headers, rule.responseHeaders);
    applyHeaderFilter(headers, backend.responseHeaders);
    withServer(headers);
    const serviceTime = headers[UPSTREAM_SERVICE_TIME];
    if (typeof serviceTime === "string") x.serviceTime = serviceTime;
    x.status = up.status;
    x.details = DETAILS.viaUpstream;
    const gs = headers["grpc-status"];
    if (typeof gs === "string") x.grpcStatus = grpcStatusCode(gs);
    if (metricsEnabled) x.responseBytes = x.responseHeadBytes = headerBytes(headers);
    const res = x.res;
    // A `Trailer` announcement on a response that cannot carry trailers (one with a length, or a
    // 204/304): Node refuses to write such a head. The announcement goes; the response stays.
    if (
      headers.trailer !== undefined &&
      (contentLength !== undefined || up.status === 204 || up.status === 304)
    ) {
      delete headers.trailer;
    }
    // A status HTTP has no class for (600 and up), or a head the downstream's protocol cannot carry:
    // broken HTTP from the backend, as Envoy's codec refuses it, and the exchange is let go at once.
    let headError: unknown;
    if (up.status < 100 || up.status > 599) headError = new Error(`status ${up.status}`);
    else {
      try {
        res.writeHead(up.status, headers);
      } catch (err) {
        headError = err;
      }
    }
    if (headError !== undefined) {
      logger.debug({ err: headError }, "upstream response head cannot be sent on");
      up.abort();
      done();
      const [text, details] = earlyReset("protocol error");
      localReply(x, 502, text, "UPE", details);
      return;
    }
    const body = up.body;
    let settled = false;
    let waiting = false;
    const resume = () => {
      waiting = false;
      body.resume();
    };
    // One data listener forwards, counts bytes and marks activity; a full downstream buffer pauses
    // the upstream body until it drains. (Cheaper per request than pipe() plus a counting listener.)
    let received = 0;
    body.on("data", (chunk: Buffer) => {
      received += chunk.length;
      x.responseBytes += chunk.length;
      x.idle?.refresh();
      if (settled || res.destroyed || res.writableEnded) return;
      if (!res.write(chunk) && !waiting) {
        waiting = true;
        body.pause();
        res.once("drain", resume);
      }
    });
    // Plain listeners rather than stream.finished(): this runs once per proxied request.
    const settle = (err: unknown) => {
      if (settled) return;
      settled = true;
      done();
      if (waiting) res.off("drain", resume);
      if (err !== undefined) {
        if (x.flags === "-") {
          const late = lateFailure(up.bodyError?.() ?? err);
          x.flags = late.flag;
          x.details = lateReset(late.reason);
        }
        if (!x.res.writableEnded) resetDownstream(x);
        return;
      }
      // The backend answered before the client's body was all sent (a 401 or 413 to an upload, say).
      // Its connection still owes the backend the rest of that body: it is closed, never pooled (as
      // Envoy does), and what the client still sends is read and dropped. Pooled, the backend would
      // read the next request's bytes as this body, or a client's late bytes as requests of their own.
      if (x.body !== undefined && !x.body.complete) {
        x.body.release();
        up.abort();
      }
      const trailers = up.trailers();
      if (trailers !== undefined) {
        const t = typeof trailers["grpc-status"] === "string" ? trailers["grpc-status"] : undefined;
        if (t !== undefined) x.grpcStatus = grpcStatusCode(t);
        try {
          x.res.addTrailers(trailers);
        } catch (cause) {
          // A field the downstream's protocol cannot carry: the response cannot end as sent.
          x.flags = "UPE";
          x.details = `invalid trailers: ${(cause as Error).message}`;
          resetDownstream(x);
          return;
        }
      }
      x.res.end();
    };
    body.once("end", () => {
      // Node ends an HTTP/2 body the backend cut short with RST_STREAM CANCEL as if it were complete,
      // with the code on the stream: it is a reset. One cut short with NO_ERROR looks complete but for
      // its length: fewer bytes than the head's content-length is a reset too.
      const rstCode = (body as { rstCode?: number }).rstCode;
      // An HTTP/1.1 body has no rstCode: Node's own checks end a short one with an error instead.
      if (rstCode === undefined) return settle(undefined);
      if (rstCode !== 0) {
        return settle(
          new RouterError("ERR_UPSTREAM_RESET", `upstream stream reset (code ${rstCode})`, { rstCode }),
        );
      }
      const declared = declaredBodyLength(x.head?.method ?? x.req.method, up.status, contentLength);
      if (declared === undefined || received >= declared) return settle(undefined);
      settle(
        new RouterError("ERR_UPSTREAM_RESET", `upstream body ended after ${received} of ${declared} bytes`, {
          rstCode,
        }),
      );
    });
    body.on("error", (err: unknown) => settle(err));
    body.once("close", () => {
      if (!body.readableEnded)
        settle(new RouterError("ERR_UPSTREAM_RESET", "upstream closed before the end of the body"));
    });
  }

  async function backoff(policy: RetryPolicy, attempt: number): Promise<void> {
    const cap = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** attempt);
    await sleep(Math.random() * cap);
  }

  /**
   * Serves an HTTP/1.1 request that asked for a protocol switch. It takes the same path as every other
   * request (parse, policy, routing, filters); a WebSocket upgrade then goes upstream on a connection of
   * its own and bytes flow raw only after the backend's 101. `h2c` is served as plain HTTP/1.1 (as
   * Envoy's HTTP/1.1 codec drops that upgrade); any other protocol is refused with 403. Either way the
   * connection closes after a response that did not switch.
   */
  function serveUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, info: TunnelInfo): void {
    const wanted = String(req.headers.upgrade ?? "").toLowerCase();
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    // The connection leaves HTTP/1.1: a drain lets it run to its end, as a TCP tunnel.
    h1Busy.delete(socket);
    res.assignSocket(socket as Socket);
    res.on("finish", () => socket.end());
    inFlight(socket, res);
    const upgrade: UpgradeRequest = {
      socket,
      head,
      protocol: wanted === "websocket" ? "websocket" : undefined,
      refused: wanted !== "websocket" && wanted !== "h2c",
    };
    void serve(req, res as unknown as DownResponse, info, false, upgrade);
  }

  /** After a 101 from the backend: sends the 101 on, then relays raw bytes both ways. */
  function switchProtocols(
    x: Exchange,
    up: UpgradeResponse,
    switched: NonNullable<UpgradeResponse["switched"]>,
    down: UpgradeRequest,
    rule: CompiledRule,
    backend: ResolvedBackendRef,
    done: () => void,
  ): void {
    const headers: HeaderMap = up.headers;
    applyHeaderFilter(headers, rule.responseHeaders);
    applyHeaderFilter(headers, backend.responseHeaders);
    withServer(headers);
    headers.connection = "Upgrade";
    headers.upgrade = switched.upgrade;
    const lines = ["HTTP/1.1 101 Switching Protocols"];
    try {
      for (const [name, value] of Object.entries(headers)) {
        http.validateHeaderName(name);
        for (const one of Array.isArray(value) ? value : [value]) {
          http.validateHeaderValue(name, one);
          lines.push(`${name}: ${one}`);
        }
      }
    } catch (err) {
      logger.debug({ err }, "upgrade response header refused");
      switched.socket.destroy();
      done();
      // As Envoy's codec refuses a broken response head: a protocol error.
      const [text, details] = earlyReset("protocol error");
      localReply(x, 502, text, "UPE", details);
      return;
    }
    const client = down.socket;
    const upstream = switched.socket;
    // The response object gave the socket its `close` bookkeeping; from here the bytes are not HTTP.
    x.onClose = undefined;
    x.status = 101;
    x.details = DETAILS.viaUpstream;
    x.responseBytes = x.responseHeadBytes = 0;
    client.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (switched.head.length > 0) client.write(switched.head);
    if (down.head.length > 0) upstream.write(down.head);
    upstream.on("data", (c: Buffer) => {
      x.responseBytes += c.length;
    });
    relayStreams(client, upstream, tcpIdleTimeout, (end) => {
      done();
      // A side that failed is reset, and logged as Envoy logs a connection that ended under a stream.
      if (end.kind === "failed" && x.flags === "-") {
        x.flags = relayFailureFlag(end);
        x.details =
          end.side === "client" ? DETAILS.downstreamDisconnect : lateReset("connection termination");
      }
      record(x);
    });
  }

  /** A tunnel carried as TCP ({@link WaypointHandlerOptions.opaqueTcp}); `first` are its bytes so far. */
  function serveTcp(stream: Duplex, info: TunnelInfo, first: Buffer): void {
    // The HTTP servers' error handling is not on it: a reset before the upstream answers is a close.
    stream.on("error", () => {});
    const t = new TcpTunnel(info, stream);
    const destination = info.destination;
    const refuse = (flags: string, reason: string) => {
      logger.debug(
        { reason, destination: `${destination?.address}:${destination?.port}` },
        "tcp tunnel closed",
      );
      stream.destroy();
      t.flags = flags;
      tcpOpened(t);
      tcpClosed(t);
    };
    const service = destination?.service;
    const route =
      service !== undefined && destination?.port !== undefined
        ? serviceDefaultRoute(service, destination.port)
        : destination?.endpoint === undefined
          ? undefined
          : originalDestinationRoute(destination.endpoint);
    const backend = route?.rule.backends[0];
    // Known before policy is asked, so a refused connection's metrics name its Service too: Envoy's
    // TCP proxy picks the cluster the stats name as the connection opens, before L4 RBAC reads a byte.
    t.addressed = backend;
    const policy = options.policy;
    if (policy !== undefined) {
      const decision = decide(policy, connectionFacts(info));
      t.decision = decision;
      if (!decision.allowed) {
        // The network RBAC filter sets no flag either: it closes the connection and says why in its
        // termination details.
        t.terminationDetails = denialDetails(decision);
        refuse("-", `denied: ${decision.reason}`);
        return;
      }
    }
    if (backend === undefined) {
      refuse("NR", "no Service or workload to send it to");
      return;
    }
    t.backend = backend;
    const endpoints = backendEndpoints(backend);
    if (endpoints === undefined || endpoints.length === 0) {
      refuse("UH", "no healthy upstream");
      return;
    }
    const picker = pickerFor(backend);
    const endpoint = picker.pick(endpoints) as Endpoint;
    t.endpoint = endpoint;
    const done = picker.begin(endpoint);
    Promise.resolve()
      .then(() => options.connect(endpoint))
      .then(
        (upstream) => {
          if (stream.destroyed || closed) {
            upstream.destroy();
            done();
            // The client left while the upstream connected: as Envoy's downstream connection termination.
            t.flags = "DC";
            tcpOpened(t);
            tcpClosed(t);
            return;
          }
          upstream.on("error", () => {});
          whenConnected(upstream, (address) => {
            t.upstreamLocalAddress = address;
          });
          tcpOpened(t);
          t.received = first.length;
          if (first.length > 0) upstream.write(first);
          stream.on("data", (chunk: Buffer) => {
            t.received += chunk.length;
          });
          upstream.on("data", (chunk: Buffer) => {
            t.sent += chunk.length;
          });
          relayStreams(stream, upstream, tcpIdleTimeout, (end) => {
            done();
            if (end.kind === "failed" && t.flags === "-") t.flags = relayFailureFlag(end);
            tcpClosed(t);
          });
        },
        (err: unknown) => {
          done();
          t.transportFailure = connectFailureReason(err);
          refuse("UF", `upstream connect failed: ${err instanceof Error ? err.message : String(err)}`);
        },
      );
  }

  /** TCP tunnels carried now whose bytes are reported every {@link TCP_REPORT_MS}, as Envoy's `tcp_reporting_duration`. */
  const openTcp = new Set<TcpTunnel>();
  let tcpReportTimer: NodeJS.Timeout | undefined;
  const tcpMetrics =
    metricsEnabled && options.opaqueTcp === true ? new TcpConnectionMetrics(metricsSink) : undefined;

  function reportTcpBytes(t: TcpTunnel): void {
    if (tcpMetrics === undefined || t.labels === undefined) return;
    tcpMetrics.bytes(t.labels, t.sent - t.reportedSent, t.received - t.reportedReceived);
    t.reportedSent = t.sent;
    t.reportedReceived = t.received;
  }

  function tcpOpened(t: TcpTunnel): void {
    if (tcpMetrics === undefined) return;
    t.labels = tcpLabels(t);
    tcpMetrics.open(t.labels);
    openTcp.add(t);
    tcpReportTimer ??= setInterval(() => {
      for (const open of openTcp) reportTcpBytes(open);
    }, TCP_REPORT_MS).unref();
  }

  function tcpClosed(t: TcpTunnel): void {
    if (tcpMetrics !== undefined && t.labels !== undefined) {
      // A flag set as it ended (a reset) labels its last bytes and its close, as Istio reports them.
      if (t.labels.response_flags !== t.flags) t.labels = tcpLabels(t);
      reportTcpBytes(t);
      tcpMetrics.close(t.labels);
      openTcp.delete(t);
      if (openTcp.size === 0 && tcpReportTimer !== undefined) {
        clearInterval(tcpReportTimer);
        tcpReportTimer = undefined;
      }
    }
    if (options.accessLog !== undefined || options.onRequestFinished !== undefined) {
      logFinished(new FinishedTcpTunnel(t, performance.now() - t.start, clusterDomain));
    }
  }

  /** Hands a finished request or TCP tunnel to the access log and `onRequestFinished`. */
  function logFinished(finished: FinishedRequest): void {
    const accessLog = options.accessLog;
    if (accessLog !== undefined) {
      try {
        accessLog(finished.accessLogEntry());
      } catch (err) {
        logger.warn({ err }, "access log sink threw");
      }
    }
    const onFinished = options.onRequestFinished;
    if (onFinished !== undefined) {
      try {
        onFinished(finished);
      } catch (err) {
        logger.warn({ err }, "onRequestFinished threw");
      }
    }
  }

  function tcpLabels(t: TcpTunnel): Readonly<Record<IstioTcpLabel, string>> {
    return Object.freeze({
      ...partyLabels(t.info, t.endpoint, t.backend ?? t.addressed),
      request_protocol: "tcp",
      response_flags: t.flags,
      connection_security_policy: t.info.peerIdentity === undefined ? "unknown" : "mutual_tls",
    });
  }

  function handle(stream: Duplex, info: TunnelInfo = {}): void {
    if (closed) {
      // Not served: the stream is destroyed, so nothing is left half-open, and the caller hears why.
      stream.destroy();
      throw new RouterError("ERR_CLOSED", "the waypoint handler is closed");
    }
    ensureBufferWrites(stream);
    streams.add(stream);
    if (
      options.opaqueTcp === true &&
      info.destination?.tcpOnly === true &&
      info.destination.httpOnly !== true
    ) {
      // Declared TCP: carried from the first byte, so a server may speak first.
      stream.once("close", () => streamGone(stream));
      serveTcp(stream, info, EMPTY);
      return;
    }
    // Until the first request head is complete, and whenever no request is in flight.
    const deadline = new ConnectionDeadline(headersTimeout, () => {
      logger.debug({ timeoutMs: headersTimeout }, "no request head within the headers timeout; closing");
      stream.destroy();
    });
    stream.once("close", () => {
      deadline.stop();
      streamGone(stream);
    });
    const tcp = stream as Duplex & { setNoDelay?: (noDelay?: boolean) => void };
    if (typeof tcp.setNoDelay === "function") tcp.setNoDelay(true);
    let buffered: Buffer = Buffer.alloc(0);
    const cleanup = () => {
      stream.off("data", onData);
      stream.off("end", onEarlyEnd);
      stream.off("error", onEarlyEnd);
    };
    const onEarlyEnd = () => {
      cleanup();
      stream.destroy();
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const n = Math.min(buffered.length, H2_PREFACE.length);
      const looksH2 = buffered.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (looksH2 && buffered.length < H2_PREFACE.length) return;
      const start =
        looksH2 || options.opaqueTcp !== true || info.destination?.httpOnly === true
          ? "http"
          : http1Start(buffered);
      if (start === "more") return;
      cleanup();
      stream.pause();
      if (start === "other") {
        deadline.stop();
        serveTcp(stream, info, buffered);
        return;
      }
      stream.unshift(buffered);
      // Bytes arrived, so a TLS handshake is over and the SNI known.
      const serverName = requestedServerName(stream);
      if (looksH2) {
        pendingInfo = info;
        pendingServerName = serverName;
        pendingDeadline = deadline;
        h2.emit("connection", stream);
        pendingInfo = undefined;
        pendingServerName = undefined;
        pendingDeadline = undefined;
      } else {
        infoByStream.set(stream, info);
        if (serverName !== undefined) serverNames.set(stream, serverName);
        deadlines.set(stream, deadline);
        h1Busy.set(stream, 0);
        h1.emit("connection", stream);
        // The HTTP/1 server does not resume a paused socket; the unshifted bytes flow first.
        stream.resume();
      }
    };
    stream.on("data", onData);
    stream.on("end", onEarlyEnd);
    stream.on("error", onEarlyEnd);
  }

  return {
    handle,
    setRoutes(routes) {
      if (!Array.isArray(routes)) {
        throw optionsError("routes", `must be a list of routes, got ${describeValue(routes)}`);
      }
      table = createRouteTable(routes, { waypoint: options.waypoint });
      defaultRoutes.clear();
    },
    setRouteTable(next) {
      table = checkRouteTable(next, "table");
      defaultRoutes.clear();
    },
    drain() {
      draining ??= new Promise<void>((resolve) => {
        markDrained = resolve;
        // Idle HTTP/1.1 connections close now, busy ones after their response (which says so when
        // its head is still to be written).
        for (const [stream, busy] of h1Busy) if (busy === 0) stream.destroy();
        for (const res of h1Responses) if (!res.headersSent) res.shouldKeepAlive = false;
        for (const session of h2Sessions) session.close();
        if (streams.size === 0) resolve();
      });
      return draining;
    },
    async close() {
      closed = true;
      if (tcpReportTimer !== undefined) clearInterval(tcpReportTimer);
      tcpReportTimer = undefined;
      for (const s of streams) s.destroy();
      streams.clear();
      markDrained();
      pool.close();
      h1.close();
      h2.close();
    },
  };
}

/** A write-only sink for a mirror's copy of the request body. */
class MirrorSink {
  private readonly stream = new PassThrough();
  get writable(): Writable {
    return this.stream;
  }
  asBody(): RequestBody {
    return new RequestBody(this.stream, 0, 0);
  }
}

/**
 * `query` (`""` or `?...`) without the parameters named in `names`, compared by their decoded name;
 * the others as they were, in order. `""` once none is left.
 */
export function withoutQueryParams(query: string, names: readonly string[]): string {
  if (query.length <= 1) return query;
  const drop = new Set(names);
  const kept = query
    .slice(1)
    .split("&")
    .filter((part) => {
      const raw = part.slice(0, part.includes("=") ? part.indexOf("=") : part.length);
      let name = raw;
      try {
        name = decodeURIComponent(raw.replace(/\+/g, " "));
      } catch {
        // Not valid percent-encoding: compared as it is.
      }
      return !drop.has(name) && !drop.has(raw);
    });
  return kept.length === 0 ? "" : `?${kept.join("&")}`;
}
