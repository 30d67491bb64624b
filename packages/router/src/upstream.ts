import http from "node:http";
import http2 from "node:http2";
import type { Duplex, Readable } from "node:stream";
import { ensureBufferWrites } from "./buffer-writes.js";
import { RouterError } from "./errors.js";
import { fromNodeError, H2_REFUSED_STREAM } from "./node-error.js";
import type { RequestBody } from "./request-body.js";

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
  abort(): void;
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

/** Copies response headers minus pseudo-headers and hop-by-hop ones. */
function responseHeaders(raw: NodeJS.Dict<string | string[] | number>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in raw) {
    const v = raw[k];
    if (v === undefined || !isForwardedHeader(k)) continue;
    out[k] = typeof v === "number" ? String(v) : v;
  }
  return out;
}

/** Pooled upstream connections: one keep-alive agent (HTTP/1.1) or one session (HTTP/2) per endpoint. */
export class UpstreamPool {
  private readonly agents = new Map<string, EndpointAgent>();
  private readonly sessions = new Map<string, Promise<http2.ClientHttp2Session>>();
  private closed = false;

  constructor(
    private readonly connectFn: ConnectUpstream,
    private readonly maxIdlePerEndpoint: number,
  ) {}

  send(
    endpoint: Endpoint,
    protocol: "http1" | "http2",
    request: UpstreamRequest,
  ): {
    response: Promise<UpstreamResponse>;
    abort: () => void;
  } {
    if (this.closed) {
      const error = new RouterError("ERR_CLOSED", "upstream pool is closed");
      return {
        response: Promise.reject(new UpstreamAttemptError("connect-failure", error)),
        abort: () => {},
      };
    }
    return protocol === "http2" ? this.sendH2(endpoint, request) : this.sendH1(endpoint, request);
  }

  private agentFor(endpoint: Endpoint): EndpointAgent {
    const key = ENDPOINT_KEY(endpoint);
    let agent = this.agents.get(key);
    if (agent === undefined) {
      agent = new EndpointAgent(endpoint, this.connectFn, this.maxIdlePerEndpoint);
      this.agents.set(key, agent);
    }
    return agent;
  }

  private sendH1(
    endpoint: Endpoint,
    r: UpstreamRequest,
  ): { response: Promise<UpstreamResponse>; abort: () => void } {
    // The request's header map belongs to this request (retries reuse it), so host is set in place.
    const headers = r.headers;
    headers.host = r.authority;
    const options: http.RequestOptions & { servername: string } = {
      agent: this.agentFor(endpoint),
      method: r.method,
      path: r.path,
      headers,
      setHost: false,
      // Plain TCP or a tunnel stream: no TLS server name for the agent to work out from the host header.
      servername: "",
    };
    const req = http.request(options);
    let connected = false;
    req.on("socket", (socket) => {
      if (req.reusedSocket) connected = true;
      else if ((socket as { connecting?: boolean }).connecting === true)
        socket.once("connect", () => {
          connected = true;
        });
      else connected = true;
    });
    const response = new Promise<UpstreamResponse>((resolve, reject) => {
      req.on("error", (err) => {
        const mapped = fromNodeError(err, connected ? "request" : "connect");
        // A pooled socket that the server had just closed fails on first use: safe to retry.
        const failure: UpstreamFailure =
          mapped.code === "ERR_UPSTREAM_CONNECT" || (req.reusedSocket && !req.writableFinished)
            ? "connect-failure"
            : mapped.code === "ERR_UPSTREAM_PROTOCOL"
              ? "protocol"
              : "reset";
        reject(new UpstreamAttemptError(failure, mapped));
      });
      req.on("response", (res) => {
        resolve({
          status: res.statusCode ?? 502,
          headers: responseHeaders(res.headers),
          body: res,
          trailers: () =>
            Object.keys(res.trailers).length > 0 ? (res.trailers as Record<string, string>) : undefined,
          abort: () => req.destroy(),
        });
      });
    });
    if (r.body === undefined) req.end();
    else r.body.pipeTo(req);
    return { response, abort: () => req.destroy() };
  }

  private sessionFor(endpoint: Endpoint): Promise<http2.ClientHttp2Session> {
    const key = ENDPOINT_KEY(endpoint);
    const existing = this.sessions.get(key);
    if (existing !== undefined) return existing;
    const created = (async () => {
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
        },
      );
      const forget = () => {
        if (this.sessions.get(key) === created) this.sessions.delete(key);
      };
      session.on("close", forget);
      session.on("goaway", forget);
      session.on("error", forget);
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
      session.unref();
      return session;
    })();
    created.catch(() => {
      if (this.sessions.get(key) === created) this.sessions.delete(key);
    });
    this.sessions.set(key, created);
    return created;
  }

  private sendH2(
    endpoint: Endpoint,
    r: UpstreamRequest,
  ): { response: Promise<UpstreamResponse>; abort: () => void } {
    let stream: http2.ClientHttp2Stream | undefined;
    let aborted = false;
    const abort = () => {
      aborted = true;
      stream?.close(http2.constants.NGHTTP2_CANCEL);
    };
    const response = (async () => {
      let session: http2.ClientHttp2Session;
      try {
        session = await this.sessionFor(endpoint);
      } catch (err) {
        throw new UpstreamAttemptError("connect-failure", fromNodeError(err, "connect"));
      }
      if (aborted)
        throw new UpstreamAttemptError("reset", new RouterError("ERR_UPSTREAM_RESET", "attempt aborted"));
      const headers: http2.OutgoingHttpHeaders = {
        ...r.headers,
        ":method": r.method,
        ":path": r.path,
        ":authority": r.authority,
        ":scheme": "http",
      };
      // An HTTP/1.1 attempt before this one may have set host; HTTP/2 carries it as :authority.
      if (headers.host !== undefined) delete headers.host;
      const grpc = String(r.headers["content-type"] ?? "").startsWith("application/grpc");
      if (grpc) headers.te = "trailers";
      const s = session.request(headers, { endStream: r.body === undefined });
      stream = s;
      let trailers: Record<string, string | string[]> | undefined;
      s.on("trailers", (t) => {
        trailers = responseHeaders(t);
      });
      const result = new Promise<UpstreamResponse>((resolve, reject) => {
        let responded = false;
        s.on("error", (err) => {
          if (responded) return;
          const mapped = fromNodeError(err, "request");
          reject(
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
          if (responded) return;
          const refused = s.rstCode === H2_REFUSED_STREAM;
          reject(
            new UpstreamAttemptError(
              refused ? "refused-stream" : "reset",
              new RouterError(
                "ERR_UPSTREAM_RESET",
                `upstream stream closed before response headers (code ${s.rstCode})`,
              ),
            ),
          );
        });
        s.on("response", (h) => {
          responded = true;
          resolve({
            status: Number(h[":status"] ?? 502),
            headers: responseHeaders(h),
            body: s,
            trailers: () => trailers,
            abort: () => s.close(http2.constants.NGHTTP2_CANCEL),
          });
        });
      });
      if (r.body !== undefined) r.body.pipeTo(s);
      return result;
    })();
    return { response, abort };
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
