import http from "node:http";
import http2 from "node:http2";
import type { Duplex, Readable } from "node:stream";
import { ensureBufferWrites } from "./buffer-writes.js";
import { RouterError } from "./errors.js";
import { createHeaderMap } from "./header-filters.js";
import { fromNodeError, H2_REFUSED_STREAM } from "./node-error.js";
import type { RequestBody } from "./request-body.js";
import {
  DEFAULT_SESSION_LIVENESS,
  receivedBytes,
  SessionLiveness,
  type SessionLivenessOptions,
} from "./upstream-liveness.js";

/** Workload facts about an endpoint, used for telemetry labels. */
export interface WorkloadInfo {
  name?: string;
  namespace?: string;
  /** `spiffe://...` of the destination workload. */
  principal?: string;
  canonicalService?: string;
  canonicalRevision?: string;
  app?: string;
  version?: string;
  cluster?: string;
}

/** One ready backend endpoint (a pod IP and target port, in Istio terms). */
export interface Endpoint {
  address: string;
  port: number;
  /**
   * Protocol spoken to the endpoint. Default: the client's protocol (HTTP/2 stays HTTP/2, so gRPC
   * works end to end). Istio: the Service port's `appProtocol`.
   */
  protocol?: "http1" | "http2";
  workload?: WorkloadInfo;
}

/** A backend reference as handed to {@link ResolveBackend}. */
export interface BackendTarget {
  group: string;
  kind: string;
  name: string;
  namespace: string;
  port: number | undefined;
}

/**
 * Resolves a backendRef to its ready endpoints: `undefined` for an unknown or unsupported backend
 * (answered with 500), `[]` for a known backend without ready endpoints (503).
 */
export type ResolveBackend = (backend: BackendTarget) => readonly Endpoint[] | undefined;

/** Opens a byte stream to an endpoint (the waypoint plugs HBONE in; tests plug plain TCP). */
export type ConnectUpstream = (endpoint: Endpoint) => Duplex | Promise<Duplex>;

/** The head of an upstream response plus its streaming body. */
export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: Readable;
  /** Trailers, once the body has ended. */
  trailers(): Record<string, string | string[]> | undefined;
  /**
   * Why the body failed, when the connection knows more than the body's own error: broken HTTP in an
   * HTTP/1.1 body (a chunk that does not parse), which the body itself reports as merely aborted.
   */
  bodyError?(): RouterError | undefined;
  abort(): void;
}

/** A request sent upstream: its response, a way to give it up, and where it went out from. */
export interface SentRequest<R extends UpstreamResponse = UpstreamResponse> {
  response: Promise<R>;
  /**
   * Gives the request up. `"timeout"`: at a timeout (per-try, request, stream idle), which says the
   * connection may be dead: an HTTP/2 session that has received nothing since the request went out on
   * it then takes no new requests.
   */
  abort: (reason?: "timeout") => void;
  /**
   * The local address of the connection the request went out on ({@link connectionLocalAddress}), as
   * soon as it had one: Envoy's `%UPSTREAM_LOCAL_ADDRESS%`. Undefined while it had none (a connect
   * that failed or is still under way).
   */
  localAddress: () => string | undefined;
}

/** Failure classes used by retry policies. */
export type UpstreamFailure = "connect-failure" | "refused-stream" | "reset" | "protocol";

export class UpstreamAttemptError extends Error {
  constructor(
    readonly failure: UpstreamFailure,
    readonly error: RouterError,
  ) {
    super(error.message, { cause: error });
  }
}

export interface UpstreamRequest {
  method: string;
  path: string;
  authority: string;
  headers: Record<string, string | string[]>;
  body: RequestBody | undefined;
}

const ENDPOINT_KEY = (e: Endpoint): string => `${e.address}:${e.port}`;
export const endpointKey = ENDPOINT_KEY;

/**
 * What Envoy logs as `%UPSTREAM_LOCAL_ADDRESS%` for a connection to one of its internal listeners
 * (`EnvoyInternalInstance("internal_client_address")`): Istio's waypoints reach HBONE endpoints through
 * the `connect_originate` internal listener, so this is what their access log says for those.
 */
export const INTERNAL_CLIENT_ADDRESS = "envoy://internal_client_address/";

/** The local address of each upstream connection, worked out once (pooled connections carry many requests). */
const localAddresses = new WeakMap<Duplex, string>();

/**
 * The local address of a connected upstream connection, as the access log's `upstream_local_address`:
 * `ip:port` of a TCP or TLS socket; {@link INTERNAL_CLIENT_ADDRESS} for a stream without an address of
 * its own (an HBONE tunnel stream, whose HTTP/2 connection's socket is not exposed). Undefined for a
 * stream that is still connecting or already destroyed: no connection to name.
 */
export function connectionLocalAddress(stream: Duplex): string | undefined {
  const known = localAddresses.get(stream);
  if (known !== undefined) return known;
  const s = stream as { localAddress?: unknown; localPort?: unknown; connecting?: unknown };
  if (stream.destroyed || s.connecting === true) return undefined;
  const address =
    typeof s.localAddress === "string" && s.localAddress !== "" && typeof s.localPort === "number"
      ? `${s.localAddress}:${s.localPort}`
      : INTERNAL_CLIENT_ADDRESS;
  localAddresses.set(stream, address);
  return address;
}

/** Calls `then` once `stream` is connected (at once when it already is), with its local address. */
export function whenConnected(stream: Duplex, then: (localAddress: string | undefined) => void): void {
  if ((stream as { connecting?: boolean }).connecting === true)
    stream.once("connect", () => then(connectionLocalAddress(stream)));
  else then(connectionLocalAddress(stream));
}

const socketNoop = function (this: Duplex): Duplex {
  return this;
};

/**
 * Gives a stream without one a socket-like `setTimeout(ms, callback?)`: emits `timeout` after `ms` of
 * being set (0 clears it). The keep-alive agent uses it to expire idle connections.
 */
function addSocketTimeout(stream: Duplex): void {
  let timer: NodeJS.Timeout | undefined;
  const clear = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
  };
  stream.once("close", clear);
  (stream as unknown as Record<string, unknown>).setTimeout = (ms: number, callback?: () => void): Duplex => {
    clear();
    if (callback !== undefined) stream.once("timeout", callback);
    if (ms > 0 && !stream.destroyed) {
      timer = setTimeout(() => stream.emit("timeout"), ms);
      timer.unref();
    }
    return stream;
  };
}

/**
 * The keep-alive agent calls TCP socket methods (setKeepAlive, ref, unref, setNoDelay, setTimeout) on its
 * sockets; a tunnel stream may lack them. Most mean nothing for a tunnel; setTimeout keeps its meaning.
 */
export function withSocketMethods(stream: Duplex): Duplex {
  const s = stream as unknown as Record<string, unknown>;
  for (const name of ["setKeepAlive", "ref", "unref", "setNoDelay"]) {
    if (typeof s[name] !== "function") s[name] = socketNoop;
  }
  if (typeof s.setTimeout !== "function") addSocketTimeout(stream);
  // Small request/response writes must not wait for Nagle's algorithm.
  (stream as unknown as { setNoDelay(v: boolean): void }).setNoDelay(true);
  return ensureBufferWrites(stream);
}

/**
 * Methods a proxy may send twice (RFC 9110 section 9.2.2): a connection that dies before any
 * response byte may be retried once with these, never with POST, PATCH or CONNECT.
 */
const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/** Whether `request` may go out again on a new connection after its first one died unanswered. */
function replayable(request: UpstreamRequest): boolean {
  return (
    IDEMPOTENT_METHODS.has(request.method.toUpperCase()) &&
    (request.body === undefined || request.body.replayable)
  );
}

/**
 * Sets how a request body is delimited for an HTTP/1.1 backend; the proxy decides it, never a header
 * copied from the client. Node's client sends a GET, HEAD, DELETE or OPTIONS body with neither a length
 * nor chunks when the request has no `content-length` and no `transfer-encoding` (its default for those
 * methods), and the backend reads such bytes as its next request on the connection: one no policy saw,
 * with whatever identity headers it carries. A body keeps the length the client declared (the
 * downstream parser held the body to it); any other goes chunked, as Envoy sends one.
 */
export function frameH1Body(headers: Record<string, string | string[]>, body: RequestBody | undefined): void {
  delete headers["transfer-encoding"];
  if (body === undefined) return;
  const length = headers["content-length"];
  if (typeof length === "string" && /^\d+$/.test(length)) return;
  delete headers["content-length"];
  headers["transfer-encoding"] = "chunked";
}

/**
 * Streams `body` into an attempt's request. A body that can no longer be sent whole fails the attempt
 * with `ERR_BODY_NOT_REPLAYABLE` (the request is destroyed with it) instead of going out cut short.
 */
function sendBody(body: RequestBody, request: http.ClientRequest | http2.ClientHttp2Stream): void {
  try {
    body.pipeTo(request);
  } catch (err) {
    request.destroy(err as Error);
  }
}

/**
 * Whether a connection can carry another request. A stream whose readable side ended (a TCP FIN, an
 * HBONE tunnel the peer half-closed) can never deliver a response again, even if it still takes writes.
 */
function reusable(stream: Duplex): boolean {
  return (
    !stream.destroyed && stream.readable && !stream.readableEnded && stream.writable && !stream.writableEnded
  );
}

/** Listeners that retire an idle pooled HTTP/1.1 connection, keyed by the connection. */
const idleWatchers = new WeakMap<Duplex, () => void>();

/**
 * Takes an idle connection out of its agent and closes it as soon as the backend ends it (its
 * keep-alive timeout) or sends bytes nobody asked for: either way it must not carry the next request.
 */
function watchIdle(stream: Duplex): void {
  const retire = () => {
    unwatchIdle(stream);
    // 'agentRemove' takes it out of the free list now; 'close' would only do so on a later tick.
    stream.emit("agentRemove");
    stream.destroy();
  };
  idleWatchers.set(stream, retire);
  stream.on("end", retire);
  stream.on("data", retire);
  // Keep reading while idle, so a FIN is seen even if the last response left the stream paused.
  stream.resume();
}

function unwatchIdle(stream: Duplex): void {
  const retire = idleWatchers.get(stream);
  if (retire === undefined) return;
  idleWatchers.delete(stream);
  stream.off("end", retire);
  stream.off("data", retire);
}

/** An http.Agent whose sockets come from `connect`, so any Duplex (an HBONE stream) can carry HTTP/1.1. */
class EndpointAgent extends http.Agent {
  constructor(
    private readonly endpoint: Endpoint,
    private readonly connectFn: ConnectUpstream,
    maxFreeSockets: number,
  ) {
    super({ keepAlive: true, maxFreeSockets, scheduling: "lifo" });
  }

  /** One agent per endpoint: every request shares the same pool name (saves building one per request). */
  override getName(): string {
    return "endpoint";
  }

  /** Pools a connection after a response only if it is still open both ways, and watches it while idle. */
  override keepSocketAlive(socket: Duplex): boolean {
    if (!reusable(socket)) return false;
    // Node's own check: false when the response's `Keep-Alive: timeout` hint leaves no time to reuse it.
    if (!(super.keepSocketAlive as (s: Duplex) => boolean)(socket)) return false;
    watchIdle(socket);
    return true;
  }

  override reuseSocket(socket: Duplex, request: http.ClientRequest): void {
    unwatchIdle(socket);
    super.reuseSocket(socket, request);
  }

  override createConnection(
    _options: http.ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    // Node ignores the stream argument when err is set.
    const fail = (cause: unknown) =>
      (callback as ((err: Error | null) => void) | undefined)?.(
        new RouterError("ERR_UPSTREAM_CONNECT", `connect to ${ENDPOINT_KEY(this.endpoint)} failed`, {
          cause,
        }),
      );
    let result: Duplex | Promise<Duplex>;
    try {
      result = this.connectFn(this.endpoint);
    } catch (cause) {
      fail(cause);
      return undefined;
    }
    if (result instanceof Promise) {
      result.then((s) => callback?.(null, withSocketMethods(s)), fail);
      return undefined;
    }
    return withSocketMethods(result);
  }
}

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "te",
  "host",
]);

/** Whether a proxy passes a header on: not an HTTP/2 pseudo-header, not hop-by-hop (nor `host`). */
export function isForwardedHeader(name: string): boolean {
  return name.charCodeAt(0) !== 58 /* ":" */ && !HOP_BY_HOP.has(name);
}

/**
 * Field names a response's `Connection` lists: meant for the proxy alone (RFC 9110 §7.6.1), not passed
 * on, as the request's are not. `content-length`, which frames the body, stays whatever it lists.
 */
function nominatedFields(value: string | string[] | number | undefined): Set<string> | undefined {
  if (value === undefined || typeof value === "number") return undefined;
  // Almost every response says one of these two, which names no field that is passed on anyway.
  if (value === "keep-alive" || value === "close") return undefined;
  let out: Set<string> | undefined;
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const part of line.split(",")) {
      const name = part.trim().toLowerCase();
      // Hop-by-hop fields are dropped whatever Connection says; a set is made only for the others.
      if (name === "" || name === "content-length" || !isForwardedHeader(name)) continue;
      out ??= new Set();
      out.add(name);
    }
  }
  return out;
}

/** Copies response headers minus pseudo-headers, hop-by-hop ones and those its `Connection` names. */
function responseHeaders(raw: NodeJS.Dict<string | string[] | number>): Record<string, string | string[]> {
  const out = createHeaderMap();
  const nominated = nominatedFields(raw.connection);
  for (const k in raw) {
    const v = raw[k];
    if (v === undefined || !isForwardedHeader(k) || nominated?.has(k) === true) continue;
    out[k] = typeof v === "number" ? String(v) : v;
  }
  return out;
}

/**
 * Most header fields a backend's response head may carry (pseudo-header fields not counted); Envoy's
 * `max_headers_count` default, which applies to upstream responses too. A longer head is broken HTTP
 * (502 `UPE`), not a head to pass on that the client's own limit (Node's HTTP/2 `maxHeaderListPairs`,
 * 128) would turn into a reset.
 */
export const MAX_RESPONSE_HEADER_FIELDS = 100;

/**
 * HTTP/2 header pairs the upstream client decodes before it resets a stream itself
 * (`maxHeaderListPairs`): above {@link MAX_RESPONSE_HEADER_FIELDS}, so a head with too many fields
 * reaches {@link brokenResponseHead} and is answered as broken HTTP rather than as a reset. Node's
 * HTTP/1.1 client's `maxHeadersCount`.
 */
const UPSTREAM_MAX_HEADER_PAIRS = 2000;

/**
 * Largest HTTP/1.1 response head the upstream client reads (Node's `maxHeaderSize`; its default is
 * 16 KiB): 80 KiB, Envoy's `MAX_RESPONSE_HEADERS_KB` for upstream HTTP/1 responses, which Istio keeps.
 * Larger heads are broken HTTP (502 `UPE`). HTTP/2 responses keep Node's limit of about 64 KiB on the
 * decoded list, near Envoy's 60 KiB there.
 */
export const UPSTREAM_MAX_RESPONSE_HEAD_BYTES = 80 * 1024;

/**
 * Why a backend's response head is broken HTTP, as Envoy's upstream codecs refuse it, or undefined:
 * more than {@link MAX_RESPONSE_HEADER_FIELDS} fields, or a 204 that frames a body (a
 * `transfer-encoding`, or a `content-length` other than 0; RFC 9110 §8.6, RFC 9112 §6.1). A
 * `content-length: 0` on a 204 is dropped from `headers` instead: an HTTP/2 client would take any
 * length on a response without DATA for a malformed one. A 304's `content-length` stays: it gives the
 * size of the representation (RFC 9110 §8.6).
 */
export function brokenResponseHead(
  status: number,
  headers: Record<string, string | string[]>,
  raw: NodeJS.Dict<string | string[] | number>,
  fields: number,
): string | undefined {
  if (fields > MAX_RESPONSE_HEADER_FIELDS) {
    return `response head has ${fields} header fields, more than ${MAX_RESPONSE_HEADER_FIELDS}`;
  }
  if (status !== 204) return undefined;
  if (raw["transfer-encoding"] !== undefined) return "204 response with transfer-encoding";
  const length = raw["content-length"];
  if (length === undefined) return undefined;
  if (length !== "0" && length !== 0) return "204 response with a content-length other than 0";
  delete headers["content-length"];
  return undefined;
}

/** Header fields of an HTTP/2 head in Node's raw list (names and values alternating), pseudo-headers not counted. */
function regularFieldCount(raw: readonly string[]): number {
  let count = 0;
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).charCodeAt(0) !== 58 /* ":" */) count++;
  return count;
}

/**
 * Copies trailer fields minus those a trailer may not carry: hop-by-hop ones (which an HTTP/2 client
 * may not be sent at all) and `content-length`. Undefined when none is left.
 */
function trailerFields(raw: NodeJS.Dict<string | string[]>): Record<string, string | string[]> | undefined {
  let out: Record<string, string | string[]> | undefined;
  for (const k in raw) {
    const v = raw[k];
    if (v === undefined || !isForwardedHeader(k) || k === "content-length") continue;
    out ??= createHeaderMap();
    out[k] = v;
  }
  return out;
}

/** HTTP/2 sessions told GOAWAY or whose connection's readable side ended: they take no more streams. */
const deadSessions = new WeakSet<http2.ClientHttp2Session>();
/** The local address of each HTTP/2 session's connection, known once the session is connected. */
const sessionLocalAddresses = new WeakMap<http2.ClientHttp2Session, string>();
/** Streams of a session that have not had their response headers yet. */
const awaitingHeaders = new WeakMap<http2.ClientHttp2Session, Set<http2.ClientHttp2Stream>>();

/** Liveness watch of each pooled HTTP/2 session (when PINGs are on). */
const sessionLiveness = new WeakMap<http2.ClientHttp2Session, SessionLiveness>();

/** Whether a session can take a new stream: not closing, not told GOAWAY, its connection open both ways. */
function sessionUsable(session: http2.ClientHttp2Session): boolean {
  return !session.closed && !session.destroyed && !deadSessions.has(session);
}

/** Endpoint agents kept before the first sweep of unused ones ({@link UpstreamPool}). */
const MIN_AGENTS_BEFORE_SWEEP = 256;

/** Pooled upstream connections: one keep-alive agent (HTTP/1.1) or one session (HTTP/2) per endpoint. */
export class UpstreamPool {
  private readonly agents = new Map<string, EndpointAgent>();
  private readonly sessions = new Map<string, Promise<http2.ClientHttp2Session>>();
  private closed = false;
  /** Agents held when the next new endpoint sweeps the unused ones. */
  private nextSweepAt = MIN_AGENTS_BEFORE_SWEEP;

  constructor(
    private readonly connectFn: ConnectUpstream,
    private readonly maxIdlePerEndpoint: number,
    private readonly liveness: SessionLivenessOptions = DEFAULT_SESSION_LIVENESS,
  ) {}

  send(endpoint: Endpoint, protocol: "http1" | "http2", request: UpstreamRequest): SentRequest {
    if (this.closed) {
      const error = new RouterError("ERR_CLOSED", "upstream pool is closed");
      return {
        response: Promise.reject(new UpstreamAttemptError("connect-failure", error)),
        abort: () => {},
        localAddress: () => undefined,
      };
    }
    return protocol === "http2" ? this.sendH2(endpoint, request) : this.sendH1(endpoint, request);
  }

  private agentFor(endpoint: Endpoint): EndpointAgent {
    const key = ENDPOINT_KEY(endpoint);
    let agent = this.agents.get(key);
    if (agent === undefined) {
      if (this.agents.size >= this.nextSweepAt) this.sweepAgents();
      agent = new EndpointAgent(endpoint, this.connectFn, this.maxIdlePerEndpoint);
      this.agents.set(key, agent);
    }
    return agent;
  }

  /**
   * Drops the agents of endpoints with no connection, idle or busy, and no request waiting: endpoints
   * come and go with pods, and a caller picks the port of a workload addressed directly, so agents kept
   * for good would grow without bound. Run when the map has doubled since the last sweep: amortized
   * O(1) per new endpoint.
   */
  private sweepAgents(): void {
    for (const [key, agent] of this.agents) {
      const unused =
        Object.keys(agent.sockets).length === 0 &&
        Object.keys(agent.freeSockets).length === 0 &&
        Object.keys(agent.requests).length === 0;
      if (unused) {
        this.agents.delete(key);
        agent.destroy();
      }
    }
    this.nextSweepAt = Math.max(MIN_AGENTS_BEFORE_SWEEP, 2 * this.agents.size);
  }

  /** @internal Endpoints with an HTTP/1.1 agent or an HTTP/2 session kept, for tests. */
  endpointCount(): number {
    return this.agents.size + this.sessions.size;
  }

  /**
   * HTTP/1.1 over the endpoint's keep-alive agent. A request whose pooled connection dies before any
   * response byte (the backend closed it while idle, just as it was picked) goes out once more on a
   * new connection when {@link replayable}; otherwise it fails as a reset.
   */
  private sendH1(endpoint: Endpoint, r: UpstreamRequest): SentRequest {
    let current: { request: http.ClientRequest; localAddress: () => string | undefined } | undefined;
    let aborted = false;
    const response = new Promise<UpstreamResponse>((resolve, reject) => {
      const attempt = (fresh: boolean) => {
        const sent = this.attemptH1(endpoint, r, fresh);
        current = sent;
        sent.response.then(resolve, (failed: { error: UpstreamAttemptError; retry: boolean }) => {
          if (failed.retry && !fresh && !aborted && !this.closed) attempt(true);
          else reject(failed.error);
        });
      };
      attempt(false);
    });
    return {
      response,
      abort: () => {
        aborted = true;
        current?.request.destroy();
      },
      localAddress: () => current?.localAddress(),
    };
  }

  /** One HTTP/1.1 exchange: on a pooled connection, or on a new one that is not pooled (`fresh`). */
  private attemptH1(
    endpoint: Endpoint,
    r: UpstreamRequest,
    fresh: boolean,
  ): {
    request: http.ClientRequest;
    response: Promise<UpstreamResponse>;
    localAddress: () => string | undefined;
  } {
    // The request's header map belongs to this request (retries reuse it), so host is set in place.
    const headers = r.headers;
    headers.host = r.authority;
    frameH1Body(headers, r.body);
    const agent = this.agentFor(endpoint);
    const options: http.RequestOptions & { servername: string } = {
      method: r.method,
      path: r.path,
      headers,
      setHost: false,
      // Plain TCP or a tunnel stream: no TLS server name for the agent to work out from the host header.
      servername: "",
      maxHeaderSize: UPSTREAM_MAX_RESPONSE_HEAD_BYTES,
    };
    if (fresh) options.createConnection = (opts, callback) => agent.createConnection(opts, callback);
    else options.agent = agent;
    const req = http.request(options);
    let connected = false;
    let localAddress: string | undefined;
    let answered = false;
    const onBytes = () => {
      answered = true;
    };
    req.on("socket", (socket) => {
      // First in line, so a parse error of the first bytes already counts as answered.
      socket.prependListener("data", onBytes);
      req.once("close", () => socket.off("data", onBytes));
      whenConnected(socket, (address) => {
        connected = true;
        localAddress = address;
      });
    });
    let responded = false;
    let bodyError: RouterError | undefined;
    const response = new Promise<UpstreamResponse>((resolve, reject) => {
      req.on("error", (err) => {
        const mapped = fromNodeError(err, connected ? "request" : "connect");
        if (responded) {
          // After the head: the body ends as aborted when the socket closes; broken HTTP in it (a
          // chunk that does not parse) is the reason.
          if (mapped.code === "ERR_UPSTREAM_PROTOCOL") bodyError = mapped;
          return;
        }
        const failure: UpstreamFailure =
          mapped.code === "ERR_UPSTREAM_CONNECT"
            ? "connect-failure"
            : mapped.code === "ERR_UPSTREAM_PROTOCOL"
              ? "protocol"
              : "reset";
        reject({
          error: new UpstreamAttemptError(failure, mapped),
          // A pooled connection that died unanswered: the backend had closed it, or was closing it.
          retry: req.reusedSocket && !answered && replayable(r),
        });
      });
      // A 101 to a request that asked for no upgrade: Node hands the socket over and raises nothing
      // else, so without this the attempt would never settle. The connection is the backend's
      // protocol now, never the pool's.
      req.on("upgrade", (_res, socket: Duplex) => {
        socket.destroy();
        reject({
          error: new UpstreamAttemptError(
            "protocol",
            new RouterError("ERR_UPSTREAM_PROTOCOL", "the backend switched protocols unasked (101)"),
          ),
          retry: false,
        });
      });
      req.on("response", (res) => {
        const status = res.statusCode ?? 502;
        const headers = responseHeaders(res.headers);
        const broken = brokenResponseHead(status, headers, res.headers, res.rawHeaders.length / 2);
        if (broken !== undefined) {
          // The connection is closed with it, never pooled: what follows the head cannot be trusted.
          reject({
            error: new UpstreamAttemptError("protocol", new RouterError("ERR_UPSTREAM_PROTOCOL", broken)),
            retry: false,
          });
          req.destroy();
          return;
        }
        responded = true;
        resolve({
          status,
          headers,
          body: res,
          trailers: () => trailerFields(res.trailers),
          bodyError: () => bodyError,
          abort: () => req.destroy(),
        });
      });
    });
    if (r.body === undefined) req.end();
    else sendBody(r.body, req);
    return { request: req, response, localAddress: () => localAddress };
  }

  /** Forgets the endpoint's session if it is still `session` (later requests open a new one). */
  private forgetSession(key: string, session: Promise<http2.ClientHttp2Session>): void {
    if (this.sessions.get(key) === session) this.sessions.delete(key);
  }

  /**
   * Takes a session that looks dead out of the pool: no new streams; it closes once the streams it has
   * end (each at its own timeout, at the latest).
   */
  private retireSession(
    key: string,
    pending: Promise<http2.ClientHttp2Session>,
    session: http2.ClientHttp2Session,
  ): void {
    deadSessions.add(session);
    this.forgetSession(key, pending);
    if (!session.closed && !session.destroyed) session.close();
  }

  private sessionFor(endpoint: Endpoint): {
    session: Promise<http2.ClientHttp2Session>;
    reused: boolean;
  } {
    const key = ENDPOINT_KEY(endpoint);
    const existing = this.sessions.get(key);
    if (existing !== undefined) return { session: existing, reused: true };
    const created: Promise<http2.ClientHttp2Session> = (async () => {
      let socket: Duplex;
      try {
        socket = await this.connectFn(endpoint);
      } catch (cause) {
        throw new RouterError("ERR_UPSTREAM_CONNECT", `connect to ${key} failed`, { cause });
      }
      const session = http2.connect(
        `http://${endpoint.address.includes(":") ? `[${endpoint.address}]` : endpoint.address}:${endpoint.port}`,
        {
          createConnection: () => socket,
          maxHeaderListPairs: UPSTREAM_MAX_HEADER_PAIRS,
        },
      );
      const forget = () => {
        deadSessions.add(session);
        this.forgetSession(key, created);
      };
      session.on("close", forget);
      session.on("goaway", forget);
      session.on("error", forget);
      // A connection whose readable side ended (FIN, a half-closed tunnel) delivers no more frames:
      // no new streams on it, and streams still waiting for their response headers are given up.
      socket.once("end", () => {
        forget();
        // Destroyed, not closed: closing waits for a frame exchange the dead connection cannot carry.
        for (const stream of awaitingHeaders.get(session) ?? []) stream.destroy();
        if (!session.closed) session.close();
      });
      await new Promise<void>((resolve, reject) => {
        const onError = (err: unknown) => reject(fromNodeError(err, "connect"));
        session.once("error", onError);
        socket.once("close", () =>
          reject(new RouterError("ERR_UPSTREAM_CONNECT", `connection to ${key} closed during setup`)),
        );
        session.once("connect", () => {
          session.off("error", onError);
          resolve();
        });
      });
      const localAddress = connectionLocalAddress(socket);
      if (localAddress !== undefined) sessionLocalAddresses.set(session, localAddress);
      if (this.liveness.pingIntervalMs > 0) {
        sessionLiveness.set(
          session,
          // An unanswered PING: the connection is dead; its streams fail as the connection ending.
          new SessionLiveness(session, this.liveness, (error) => {
            forget();
            session.destroy(error);
          }),
        );
      }
      session.unref();
      return session;
    })();
    created.catch(() => this.forgetSession(key, created));
    this.sessions.set(key, created);
    return { session: created, reused: false };
  }

  /**
   * HTTP/2 over the endpoint's shared session. A stream that ends before its response headers because
   * a reused session died (GOAWAY, close, the connection ended) goes out once more on a new session
   * when {@link replayable}.
   */
  private sendH2(endpoint: Endpoint, r: UpstreamRequest): SentRequest {
    let stream: http2.ClientHttp2Stream | undefined;
    let localAddress: string | undefined;
    let aborted = false;
    /** The current stream's session, and what it had received when the stream went out. */
    let current:
      | {
          key: string;
          pending: Promise<http2.ClientHttp2Session>;
          session: http2.ClientHttp2Session;
          bytes: number;
        }
      | undefined;
    const abort = (reason?: "timeout") => {
      aborted = true;
      stream?.close(http2.constants.NGHTTP2_CANCEL);
      // Timed out with not a byte received on the session since the stream went out (not even its
      // response head): its connection is likely dead (a hung backend, a host gone without a word).
      if (reason === "timeout" && current !== undefined && receivedBytes(current.session) === current.bytes)
        this.retireSession(current.key, current.pending, current.session);
    };
    const attempt = async (fresh: boolean): Promise<UpstreamResponse> => {
      localAddress = undefined;
      current = undefined;
      const key = ENDPOINT_KEY(endpoint);
      let { session: pending, reused } = this.sessionFor(endpoint);
      let session: http2.ClientHttp2Session;
      try {
        session = await pending;
        if (!sessionUsable(session)) {
          // Died between being pooled and being picked: never put a stream on it.
          this.forgetSession(key, pending);
          ({ session: pending, reused } = this.sessionFor(endpoint));
          session = await pending;
        }
      } catch (err) {
        throw new UpstreamAttemptError("connect-failure", fromNodeError(err, "connect"));
      }
      if (aborted)
        throw new UpstreamAttemptError("reset", new RouterError("ERR_UPSTREAM_RESET", "attempt aborted"));
      // A session quiet for the PING interval is checked now: if its PING goes unanswered, the session
      // is closed and this stream fails as a reset (sent once more on a new session when replayable).
      if (reused) sessionLiveness.get(session)?.beforeStream();
      const bytesBefore = receivedBytes(session);
      // Without a prototype, as the request's own map: a `__proto__` field stays a field.
      const headers: http2.OutgoingHttpHeaders = Object.assign(createHeaderMap(), r.headers, {
        ":method": r.method,
        ":path": r.path,
        ":authority": r.authority,
        ":scheme": "http",
      });
      // An HTTP/1.1 attempt before this one may have set host; HTTP/2 carries it as :authority.
      if (headers.host !== undefined) delete headers.host;
      // A field the client sent on several lines goes as one line of comma-joined values (RFC 9110
      // §5.3): Node's HTTP/2 refuses to send `user-agent`, `authorization` and the like more than once.
      // `set-cookie` values cannot be joined; Node sends each.
      for (const name in r.headers) {
        const v = r.headers[name];
        if (Array.isArray(v) && v.length > 1 && name !== "set-cookie") headers[name] = v.join(",");
      }
      const grpc = String(r.headers["content-type"] ?? "").startsWith("application/grpc");
      if (grpc) headers.te = "trailers";
      let s: http2.ClientHttp2Stream;
      try {
        s = session.request(headers, { endStream: r.body === undefined });
      } catch (err) {
        // The session closed under us (ERR_HTTP2_INVALID_SESSION, GOAWAY): nothing was sent.
        this.forgetSession(key, pending);
        if (!fresh && replayable(r)) return attempt(true);
        throw new UpstreamAttemptError("connect-failure", fromNodeError(err, "connect"));
      }
      stream = s;
      current = { key, pending, session, bytes: bytesBefore };
      localAddress = sessionLocalAddresses.get(session);
      let waiting = awaitingHeaders.get(session);
      if (waiting === undefined) {
        waiting = new Set();
        awaitingHeaders.set(session, waiting);
      }
      waiting.add(s);
      let trailers: Record<string, string | string[]> | undefined;
      s.on("trailers", (t) => {
        trailers = responseHeaders(t);
      });
      const result = new Promise<UpstreamResponse>((resolve, reject) => {
        let settled = false;
        const fail = (error: UpstreamAttemptError) => {
          if (settled) return;
          settled = true;
          waiting.delete(s);
          if (!fresh && reused && !aborted && !this.closed && !sessionUsable(session) && replayable(r)) {
            this.forgetSession(key, pending);
            resolve(attempt(true));
          } else reject(error);
        };
        s.on("error", (err) => {
          const mapped = fromNodeError(err, "request");
          fail(
            new UpstreamAttemptError(
              s.rstCode === H2_REFUSED_STREAM
                ? "refused-stream"
                : mapped.code === "ERR_UPSTREAM_PROTOCOL"
                  ? "protocol"
                  : "reset",
              mapped,
            ),
          );
        });
        s.on("close", () => {
          const refused = s.rstCode === H2_REFUSED_STREAM;
          // The peer reset this stream (NO_ERROR or CANCEL: no stream error) while the connection
          // lives on, as opposed to the connection ending under it: `details.rstCode` says which.
          const streamReset = !session.destroyed && !session.closed;
          fail(
            new UpstreamAttemptError(
              refused ? "refused-stream" : "reset",
              new RouterError(
                "ERR_UPSTREAM_RESET",
                `upstream stream closed before response headers (code ${s.rstCode})`,
                streamReset ? { rstCode: s.rstCode } : {},
              ),
            ),
          );
        });
        s.on("response", (h, _flags, raw?: string[]) => {
          if (settled) return;
          settled = true;
          waiting.delete(s);
          const status = Number(h[":status"] ?? 502);
          const headers = responseHeaders(h);
          const fields = raw === undefined ? Object.keys(headers).length : regularFieldCount(raw);
          const broken = brokenResponseHead(status, headers, h, fields);
          if (broken !== undefined) {
            s.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
            reject(new UpstreamAttemptError("protocol", new RouterError("ERR_UPSTREAM_PROTOCOL", broken)));
            return;
          }
          resolve({
            status,
            headers,
            body: s,
            trailers: () => trailers,
            abort: () => s.close(http2.constants.NGHTTP2_CANCEL),
          });
        });
      });
      if (r.body !== undefined) sendBody(r.body, s);
      return result;
    };
    return { response: attempt(false), abort, localAddress: () => localAddress };
  }

  /** Closes every pooled connection. */
  close(): void {
    this.closed = true;
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    for (const s of this.sessions.values())
      s.then(
        (session) => session.destroy(),
        () => {},
      );
    this.sessions.clear();
  }
}
