import * as grpc from "@grpc/grpc-js";
import { adsServiceDefinition } from "./ads-service.js";
import { checkBoolean, checkBytes, checkCount, checkFunction, checkMs } from "./checks.js";
import { XdsError } from "./errors.js";
import type { envoy } from "./gen/types.js";
import { GrpcStatus, grpcStatusOf, toXdsError } from "./node-error.js";
import { PushDebouncer } from "./push-debounce.js";
import {
  type InFlightResponse,
  type PushThrottle,
  type ThrottledStream,
  XdsPushThrottle,
} from "./push-throttle.js";
import { type CacheChange, type CachedResource, ResourceCache, shortTypeName } from "./resource-cache.js";
import {
  DeltaSession,
  type NackRecord,
  type NodeInfo,
  nodeInfo,
  type SessionHost,
  SotwSession,
  type XdsStreamContext,
} from "./server-session.js";
import { SharedResourceSections } from "./shared-sections.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { typeRegistry } from "./type-registry.js";

/** What the auth hook sees when a stream sends its first request. */
export interface XdsAuthRequest {
  protocol: "delta" | "sotw";
  peer: string;
  headers: Readonly<Record<string, readonly string[]>>;
  node: NodeInfo | undefined;
  /** Verified TLS peer certificate when the server runs with mTLS credentials. */
  peerCertificate: unknown;
}

/** Asks for resources that are not in the cache yet (on-demand), before the server answers. */
export type XdsResolver = (request: {
  context: XdsStreamContext;
  typeUrl: string;
  names: readonly string[];
  cache: ResourceCache;
}) => void | Promise<void>;

/**
 * On-demand (Delta, non-wildcard streams): names a client should also receive besides the ones it
 * asked for, as istiod adds a Service's pods to a subscription to its VIP, and the pods of the
 * client's own node. Called with the names a request subscribes (primary names or aliases such as
 * `network/IP`; empty on a first request that subscribes to nothing) and with the names a cache change
 * touched that the stream does not follow yet. The returned primary names are subscribed on the
 * client's behalf: sent now when they exist, and pushed on every later change.
 */
export type XdsRelatedNames = (request: {
  context: XdsStreamContext;
  typeUrl: string;
  /** Names asked for, or changed names the stream does not follow. */
  names: readonly string[];
  /** What the stream follows now: names it subscribed to and names added for it. */
  subscribed: ReadonlySet<string>;
  cache: ResourceCache;
}) => Iterable<string>;

/** Options of {@link createXdsServer}. */
export interface XdsServerOptions {
  /** Cache to serve; default a new empty {@link ResourceCache}. */
  cache?: ResourceCache;
  /**
   * Delay that coalesces cache changes into one push: default 100 ms; istiod `PILOT_DEBOUNCE_AFTER`.
   * 0 pushes on the next event-loop turn.
   */
  debounceMs?: number;
  /**
   * Leading-edge debounce: a change that comes after a quiet `debounceMs` (nothing pushed in it) goes
   * out on the next event-loop turn instead of waiting `debounceMs`; changes that follow within the
   * window are merged into one push at its end, so a burst still costs one push per window. Default
   * false (every push waits `debounceMs` from its first change, as istiod's `PILOT_DEBOUNCE_AFTER`).
   */
  debounceLeadingEdge?: boolean;
  /**
   * Called with the first request of each stream. Return a value to attach as `context.identity`;
   * throw (an {@link XdsError} with `ERR_XDS_PERMISSION_DENIED` for 7, anything else for 16) to refuse
   * the stream. Default: accept everyone; istiod authenticates by mTLS peer or bearer token.
   */
  authenticate?: (request: XdsAuthRequest) => unknown;
  /**
   * Per-stream view of the cache (the "generator" decision): return false to hide a resource from
   * this client, e.g. by `context.node.metadata.NAMESPACE`. Hidden resources are never sent and are
   * removed from clients that had them. Default: every stream sees everything.
   */
  visible?: (context: XdsStreamContext, resource: CachedResource) => boolean;
  /** On-demand hook for subscribed names missing from the cache; default none. */
  resolver?: XdsResolver;
  /** Longest wait for the resolver before answering anyway: default 5000 ms. */
  resolveTimeoutMs?: number;
  /**
   * On-demand hook: more names to send a non-wildcard Delta stream with what it asked for (a Service's
   * workloads for its VIP); default none. A hook that throws adds nothing (logged).
   */
  related?: XdsRelatedNames;
  /** Cap on subscribed names per type and stream; above it the stream is closed: default 100000. */
  maxNamesPerType?: number;
  /**
   * Requests buffered per stream before reading pauses (HTTP/2 flow control pushes back): default 64.
   * Until a stream is authenticated, one: reading pauses after its first request.
   */
  maxQueuedRequests?: number;
  /**
   * Streams that have not yet been authenticated (no first request yet, or `authenticate` still
   * running), for the whole server: default 1024. A stream opened past it is closed at once with
   * RESOURCE_EXHAUSTED, so clients that open streams and say nothing cannot grow the server's memory.
   */
  maxUnauthenticatedStreams?: number;
  /**
   * Time a stream has to send its first request and be authenticated: default 15000 ms (room for an
   * `authenticate` that asks an API, such as a 10 s TokenReview). Past it the stream is closed with
   * UNAUTHENTICATED.
   */
  authenticationTimeoutMs?: number;
  /**
   * Response bytes a stream may hold that its client has not taken yet (grpc-js buffer plus HTTP/2
   * flow control) before the server stops writing to it: default 4 MiB. Above it, cache changes for
   * that stream are coalesced per type (only the latest version of each resource goes out once it
   * drains) and its requests wait unread. One response may overshoot it. istiod likewise merges the
   * pushes queued for a connection.
   */
  maxBufferedBytes?: number;
  /**
   * Response bytes all streams of this server together may hold that their clients have not taken yet
   * before a stream's next response waits its turn: default 16 MiB. grpc-js copies every response it
   * sends, so a push of the whole state to every client at once would otherwise hold clients times
   * state size (istiod bounds concurrent pushes with `PILOT_PUSH_THROTTLE`). Waiting streams coalesce
   * their changes as a blocked stream does and go through in the order they came as the total falls;
   * each response goes out whole, so the total may pass the bound by one response, and a response
   * larger than the bound goes out alone. A response counts toward the bound until its client takes
   * it or for `stalledResponseMs`, whichever comes first. Pushes of the whole state run about
   * bound / state size at a time: raise it when that is below a few and memory allows.
   */
  maxTotalBufferedBytes?: number;
  /**
   * How long a response counts toward `maxTotalBufferedBytes` while its client does not take it:
   * default 5000 ms. After that a client that stopped reading holds back no one else (its own stream
   * stays bounded by `maxBufferedBytes`).
   */
  stalledResponseMs?: number;
  /**
   * A bound shared with other servers ({@link createXdsPushThrottle}) instead of one of this server's
   * own: their streams together stay under it and take turns in one queue. Not together with
   * `maxTotalBufferedBytes` or `stalledResponseMs`, which the shared throttle was made with.
   */
  pushThrottle?: XdsPushThrottle;
  /** Called for every NACK, with the error detail the client sent. */
  onNack?: (context: XdsStreamContext, nack: NackRecord) => void;
  /** Structured logger; default no-op. */
  logger?: Logger;
  /**
   * Metrics sink; default no-op. Emits `pilot_xds` (streams by protocol and node kind),
   * `pilot_xds_pushes`, `pilot_xds_push_bytes`, `pilot_total_xds_rejects`, `pilot_xds_push_time` and
   * `pilot_proxy_queue_time` (how long a stream waited for its turn under `maxTotalBufferedBytes`).
   */
  metrics?: MetricsSink;
}

/** Outbound state of one stream, from {@link XdsServer.streamStats}. */
export interface XdsStreamStats {
  /** Response bytes handed to gRPC that the client has not taken yet. */
  bufferedBytes: number;
  /** Responses among them. */
  bufferedResponses: number;
  /** Highest `bufferedBytes` seen on this stream. */
  peakBufferedBytes: number;
  /** True while `bufferedBytes` is at or above `maxBufferedBytes`: pushes are held and coalesced. */
  blocked: boolean;
  /**
   * True while the stream waits its turn under `maxTotalBufferedBytes`: pushes are held and
   * coalesced, and the answer to a request waits (computed when the turn comes).
   */
  waiting: boolean;
  /** Requests received and not handled yet. */
  queuedRequests: number;
  /** Responses written to the stream so far. */
  responses: number;
  /** Bytes of those responses. */
  bytes: number;
}

interface LiveStream extends ThrottledStream {
  readonly stats: XdsStreamStats;
  /** Wakes a request waiting for the stream to drain. */
  wake(): void;
  /** Wakes a response waiting for its turn; false when none waits. */
  wakeTurn(): boolean;
  /** Stops counting the stream's unsent responses toward the server's total (the stream ended). */
  release(): void;
  /** Labels under which the stream was counted in `pilot_xds`, once authenticated. */
  counted?: { protocol: string; kind: string };
  /** Runs when the stream is finished (before its call is ended). */
  onFinish?: () => void;
  readonly context: XdsStreamContext;
  readonly session: DeltaSession | SotwSession;
  readonly call: grpc.ServerDuplexStream<Buffer, Uint8Array>;
}

/** One parked caller at a time: `wait()` parks it, `wake()` resumes it (true when one was parked). */
function waitSlot(): { wait(): Promise<void>; wake(): boolean } {
  let parked: (() => void) | undefined;
  return {
    wait: () =>
      new Promise<void>((resolve) => {
        parked = resolve;
      }),
    wake: () => {
      const resume = parked;
      parked = undefined;
      resume?.();
      return resume !== undefined;
    },
  };
}

function headersOf(metadata: grpc.Metadata): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    out[key] = (values as unknown[]).map((v) => (Buffer.isBuffer(v) ? v.toString("base64") : String(v)));
  }
  return out;
}

/** The node types istiod knows (`model.NodeType`): the first field of an Istio node id. */
const NODE_KINDS: ReadonlySet<string> = new Set(["sidecar", "router", "waypoint", "ztunnel"]);

/**
 * The `kind` label of a stream: the node id's type when it is one of {@link NODE_KINDS}, else `other`
 * (`grpc` for a gRPC client without an Istio id). The client writes its own id, so the label takes
 * no value it makes up: each would be a series kept for the life of the process.
 */
function nodeKind(node: NodeInfo | undefined): string {
  if (node === undefined) return "unknown";
  const tilde = node.id.indexOf("~");
  if (tilde > 0) {
    const kind = node.id.slice(0, tilde);
    return NODE_KINDS.has(kind) ? kind : "other";
  }
  return node.userAgentName.startsWith("grpc") ? "grpc" : "other";
}

/**
 * grpc-js server options for an xDS server, as istiod's: a PING after 30 s without one, and the
 * connection closed when it is not answered within 10 s (`GRPC_KEEPALIVE_INTERVAL`,
 * `GRPC_KEEPALIVE_TIMEOUT`). grpc-js' own default sends no PING, so a client that vanished without a
 * word (its node powered off, a partition) kept its stream, its subscriptions and the responses
 * queued for it until the kernel gave up on the connection, or for good while nothing was sent.
 * Spread it into a `grpc.Server` that {@link XdsServer.addTo} serves on.
 */
export const DEFAULT_XDS_SERVER_OPTIONS: Readonly<grpc.ServerOptions> = Object.freeze({
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
});

/**
 * xDS server for Delta and SotW aggregated discovery over grpc-js, serving a {@link ResourceCache}.
 */
export class XdsServer {
  readonly cache: ResourceCache;
  private readonly options: XdsServerOptions;
  private readonly logger: Logger;
  private readonly live = new Set<LiveStream>();
  private readonly dirty = new Map<string, { names: Set<string>; aliases: Set<string>; since: number }>();
  private readonly debouncer: PushDebouncer;
  private readonly throttle: PushThrottle<ThrottledStream>;
  private grpcServer: grpc.Server | undefined;
  private nextId = 0;
  /** Streams not yet authenticated ({@link XdsServerOptions.maxUnauthenticatedStreams}). */
  private unauthenticated = 0;
  /** Nonces are numbered server-wide, so streams in step can be sent one response's bytes. */
  private nonceSeq = 0;
  private closed = false;
  private readonly unsubscribe: () => void;
  private readonly host: SessionHost;
  private readonly metrics: {
    clients: ReturnType<MetricsSink["gauge"]>;
    pushes: ReturnType<MetricsSink["counter"]>;
    pushBytes: ReturnType<MetricsSink["counter"]>;
    rejects: ReturnType<MetricsSink["counter"]>;
    pushTime: ReturnType<MetricsSink["histogram"]>;
    queueTime: ReturnType<MetricsSink["histogram"]>;
  };

  constructor(options: XdsServerOptions = {}) {
    checkServerOptions(options);
    this.options = options;
    this.cache = options.cache ?? new ResourceCache();
    this.logger = options.logger ?? noopLogger;
    this.debouncer = new PushDebouncer({
      windowMs: options.debounceMs ?? 100,
      leadingEdge: options.debounceLeadingEdge ?? false,
      flush: () => this.flushNow(),
    });
    if (
      options.pushThrottle !== undefined &&
      (options.maxTotalBufferedBytes !== undefined || options.stalledResponseMs !== undefined)
    ) {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        "pushThrottle carries its own maxTotalBufferedBytes and stalledResponseMs: give one or the other",
      );
    }
    if (options.pushThrottle !== undefined && !(options.pushThrottle instanceof XdsPushThrottle)) {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "pushThrottle must come from createXdsPushThrottle()");
    }
    this.throttle = (
      options.pushThrottle ??
      new XdsPushThrottle({
        maxTotalBufferedBytes: options.maxTotalBufferedBytes,
        stalledResponseMs: options.stalledResponseMs,
      })
    ).inner;
    const m = options.metrics ?? noopMetrics;
    this.metrics = {
      clients: m.gauge("pilot_xds", "Connected xDS streams", ["protocol", "kind"]),
      pushes: m.counter("pilot_xds_pushes", "xDS responses sent", ["type"]),
      pushBytes: m.counter("pilot_xds_push_bytes", "Bytes of xDS responses sent", ["type"]),
      rejects: m.counter("pilot_total_xds_rejects", "NACKs received", ["type"]),
      pushTime: m.histogram(
        "pilot_xds_push_time",
        "Seconds from a cache change to the push of all affected streams",
        ["type"],
        [0.001, 0.01, 0.1, 0.5, 1, 3, 5, 10],
      ),
      queueTime: m.histogram(
        "pilot_proxy_queue_time",
        "Seconds a stream waited for its turn under maxTotalBufferedBytes",
        [],
        [0.001, 0.01, 0.1, 0.5, 1, 3, 5, 10],
      ),
    };
    const resolveTimeoutMs = options.resolveTimeoutMs ?? 5000;
    const { maxUnauthenticatedStreams, authenticationTimeoutMs } = options;
    if (
      maxUnauthenticatedStreams !== undefined &&
      !(Number.isSafeInteger(maxUnauthenticatedStreams) && maxUnauthenticatedStreams >= 1)
    ) {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        `maxUnauthenticatedStreams must be a whole number >= 1, got ${maxUnauthenticatedStreams}`,
      );
    }
    if (authenticationTimeoutMs !== undefined && !(authenticationTimeoutMs > 0)) {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        `authenticationTimeoutMs must be a number > 0, got ${authenticationTimeoutMs}`,
      );
    }
    this.host = {
      cache: this.cache,
      maxNamesPerType: options.maxNamesPerType ?? 100_000,
      sections: new SharedResourceSections(),
      visibleToAll: options.visible === undefined,
      nextNonceSeq: () => ++this.nonceSeq,
      visible:
        options.visible === undefined
          ? () => true
          : (context, entry) => options.visible?.(context, entry) !== false,
      resolve: async (context, typeUrl, names) => {
        const resolver = options.resolver;
        if (resolver === undefined) return;
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(() => resolver({ context, typeUrl, names, cache: this.cache })),
            new Promise<void>((resolve) => {
              timer = setTimeout(resolve, resolveTimeoutMs);
            }),
          ]);
        } catch (err) {
          this.logger.warn({ stream: context.id, typeUrl, names, err: String(err) }, "xds resolver failed");
        } finally {
          clearTimeout(timer);
        }
        // The resolver's cache writes are answered by this request, not by a second push.
        this.flushNow();
      },
      ...(options.related === undefined
        ? {}
        : {
            related: (
              context: XdsStreamContext,
              typeUrl: string,
              names: readonly string[],
              subscribed: ReadonlySet<string>,
            ) => {
              try {
                return [
                  ...(options.related?.({ context, typeUrl, names, subscribed, cache: this.cache }) ?? []),
                ];
              } catch (err) {
                this.logger.warn(
                  { stream: context.id, typeUrl, err: String(err) },
                  "xds related-names hook failed",
                );
                return [];
              }
            },
          }),
      onNack: (context, nack) => {
        this.metrics.rejects.inc({ type: shortTypeName(nack.typeUrl) });
        this.logger.warn(
          {
            stream: context.id,
            node: context.node?.id,
            typeUrl: nack.typeUrl,
            error: nack.errorDetail.message,
          },
          "xds NACK",
        );
        options.onNack?.(context, nack);
      },
      onPush: (_context, typeUrl, _resources, bytes) => {
        const type = shortTypeName(typeUrl);
        this.metrics.pushes.inc({ type });
        this.metrics.pushBytes.inc({ type }, bytes);
      },
      debug: (obj, msg) => this.logger.debug(obj, msg),
    };
    this.unsubscribe = this.cache.onChange((change) => this.onCacheChange(change));
  }

  /** Adds the ADS service to an existing grpc-js server. */
  addTo(server: grpc.Server): void {
    server.addService(adsServiceDefinition, {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Uint8Array>) =>
        this.serve("sotw", call),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Uint8Array>) =>
        this.serve("delta", call),
    });
  }

  /**
   * Starts a grpc-js server of its own. `address` default `127.0.0.1:0`; returns the bound port.
   * `credentials` default insecure (istiod serves xDS with mTLS on 15012). `serverOptions` default
   * {@link DEFAULT_XDS_SERVER_OPTIONS} (istiod's keepalive).
   */
  async listen(
    address = "127.0.0.1:0",
    credentials = grpc.ServerCredentials.createInsecure(),
    serverOptions: grpc.ServerOptions = DEFAULT_XDS_SERVER_OPTIONS,
  ): Promise<number> {
    if (this.closed) throw new XdsError("ERR_XDS_CLOSED", "xds server is closed");
    if (typeof address !== "string" || address === "") {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        `address must be a non-empty string such as "127.0.0.1:15010", got ${JSON.stringify(address)}`,
      );
    }
    if (this.grpcServer !== undefined)
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "server already listening");
    const server = new grpc.Server(serverOptions);
    this.addTo(server);
    // Set before the bind completes, so that a close() meanwhile shuts this server down.
    this.grpcServer = server;
    return new Promise<number>((resolve, reject) => {
      const failed = (err: XdsError) => {
        if (this.grpcServer === server) this.grpcServer = undefined;
        server.forceShutdown();
        reject(err);
      };
      try {
        server.bindAsync(address, credentials, (err, port) => {
          if (err) failed(toXdsError(err, `cannot listen on ${address}`));
          else if (this.closed) failed(new XdsError("ERR_XDS_CLOSED", "xds server closed while listening"));
          else resolve(port);
        });
      } catch (err) {
        failed(toXdsError(err, `cannot listen on ${address}`));
      }
    });
  }

  /** Contexts of the open streams. */
  streams(): XdsStreamContext[] {
    return [...this.live].map((s) => s.context);
  }

  /** Subscriptions of one stream by type URL. */
  subscriptions(streamId: number): Map<string, { wildcard: boolean; names: string[] }> | undefined {
    for (const s of this.live) if (s.context.id === streamId) return s.session.subscriptions();
    return undefined;
  }

  /** Outbound buffer of one stream (a copy), or undefined when it is not open. */
  streamStats(streamId: number): XdsStreamStats | undefined {
    for (const s of this.live) if (s.context.id === streamId) return { ...s.stats };
    return undefined;
  }

  /**
   * Bytes of responses handed to gRPC and not yet let out to their clients, over every open stream:
   * the response copies a push keeps alive (grpc-js frames each response into a buffer of its own).
   */
  bufferedBytes(): number {
    let total = 0;
    for (const s of this.live) total += s.stats.bufferedBytes;
    return total;
  }

  /**
   * Highest total of response bytes counted toward `maxTotalBufferedBytes` so far (responses not yet
   * taken by their clients, less those stalled past `stalledResponseMs`); with a shared
   * `pushThrottle`, over every server that shares it.
   */
  peakBufferedBytes(): number {
    return this.throttle.peakBytes;
  }

  /** Pushes pending cache changes now instead of waiting for the debounce timer. */
  flushNow(): void {
    // A flush that reached no stream (the cache filled before anyone connected) opens no window.
    this.debouncer.flushed(this.dirty.size > 0 && this.live.size > 0);
    const batches = [...this.dirty];
    this.dirty.clear();
    for (const [typeUrl, d] of batches) {
      for (const s of this.live) s.session.onChange(typeUrl, d.names, d.aliases);
      this.metrics.pushTime.observe({ type: shortTypeName(typeUrl) }, (performance.now() - d.since) / 1000);
    }
  }

  /** Ends every open stream with UNAVAILABLE; clients reconnect (e.g. to rebalance across replicas). */
  closeStreams(): void {
    for (const s of [...this.live]) this.finish(s, GrpcStatus.UNAVAILABLE, "xds stream closed by the server");
  }

  /** Ends every stream and stops the server started by {@link XdsServer.listen}. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.debouncer.stop();
    // A shared throttle goes on for the other servers; this one's streams leave it as they finish.
    if (this.options.pushThrottle === undefined) this.throttle.close();
    this.host.sections.clear();
    for (const s of [...this.live]) this.finish(s, GrpcStatus.UNAVAILABLE, "xds server shutting down");
    const server = this.grpcServer;
    if (server !== undefined) {
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    }
  }

  private onCacheChange(change: CacheChange): void {
    let d = this.dirty.get(change.typeUrl);
    if (d === undefined) {
      d = { names: new Set(), aliases: new Set(), since: performance.now() };
      this.dirty.set(change.typeUrl, d);
    }
    for (const n of change.names) d.names.add(n);
    for (const a of change.aliases) d.aliases.add(a);
    if (!this.closed) this.debouncer.changed();
  }

  private finish(stream: LiveStream, code: number, details: string): void {
    if (!this.live.delete(stream)) return;
    stream.onFinish?.();
    stream.session.closed = true;
    stream.release();
    stream.wake();
    stream.wakeTurn();
    if (stream.counted !== undefined) this.metrics.clients.dec(stream.counted);
    if (code === GrpcStatus.OK) stream.call.end();
    else stream.call.emit("error", { code, details });
  }

  private serve(protocol: "delta" | "sotw", call: grpc.ServerDuplexStream<Buffer, Uint8Array>): void {
    if (this.closed) {
      call.emit("error", { code: GrpcStatus.UNAVAILABLE, details: "xds server shutting down" });
      return;
    }
    const context: XdsStreamContext = {
      id: ++this.nextId,
      protocol,
      peer: call.getPeer(),
      headers: headersOf(call.metadata),
      node: undefined,
      identity: undefined,
      nacks: [],
      acks: new Map(),
    };
    const limit = this.options.maxQueuedRequests ?? 64;
    const maxBuffered = this.options.maxBufferedBytes ?? 4 * 1024 * 1024;
    const stats: XdsStreamStats = {
      bufferedBytes: 0,
      bufferedResponses: 0,
      peakBufferedBytes: 0,
      blocked: false,
      waiting: false,
      queuedRequests: 0,
      responses: 0,
      bytes: 0,
    };
    // A request waiting for the client to take its responses, and an answer waiting for its turn.
    const drain = waitSlot();
    const wake = drain.wake;
    const turnSlot = waitSlot();
    const wakeTurn = turnSlot.wake;
    const writable = () => {
      if (stats.blocked) return false;
      stats.waiting = !this.throttle.mayWrite(stream);
      return !stats.waiting;
    };
    // Responses counted toward the server's total and not yet taken.
    const inFlight = new Set<InFlightResponse>();
    const release = () => {
      for (const response of inFlight) this.throttle.taken(response);
      inFlight.clear();
      this.throttle.forget(stream);
    };
    // The write callback runs once grpc-js has handed the bytes to HTTP/2 and flow control let them out.
    const send = (bytes: Uint8Array) => {
      if (stream.session.closed) return;
      const response = this.throttle.sent(bytes.length);
      inFlight.add(response);
      stats.bufferedBytes += bytes.length;
      stats.bufferedResponses++;
      stats.responses++;
      stats.bytes += bytes.length;
      if (stats.bufferedBytes > stats.peakBufferedBytes) stats.peakBufferedBytes = stats.bufferedBytes;
      if (stats.bufferedBytes >= maxBuffered) stats.blocked = true;
      call.write(bytes, () => {
        stats.bufferedBytes -= bytes.length;
        stats.bufferedResponses--;
        const unblocked = stats.blocked && stats.bufferedBytes < maxBuffered;
        if (unblocked) stats.blocked = false;
        // Streams waiting for the server's total go first, in their order; then this one.
        inFlight.delete(response);
        this.throttle.taken(response);
        if (unblocked && !stream.session.closed) {
          stream.session.resume();
          if (!stats.blocked) {
            wake();
            // A waiting stream's answer is woken by its turn instead.
            if (!stats.waiting) wakeTurn();
          }
        }
      });
    };
    const drained = (): Promise<void> | undefined =>
      !stats.blocked || stream.session.closed ? undefined : drain.wait();
    // A response to a request waits here until the stream may write: unblocked, and its turn under
    // the server's total. Checked again when woken, as another stream may have written first.
    const turn = (): Promise<void> | undefined =>
      stream.session.closed || writable() ? undefined : turnSlot.wait().then(turn);
    const session =
      protocol === "delta"
        ? new DeltaSession(this.host, context, send, writable, turn)
        : new SotwSession(this.host, context, send, writable, turn);
    const stream: LiveStream = {
      context,
      session,
      call,
      stats,
      wake,
      wakeTurn,
      release,
      takeTurn: () => {
        stats.waiting = false;
        if (session.closed) return false;
        session.resume();
        return !stats.blocked && wakeTurn();
      },
      waited: (ms) => this.metrics.queueTime.observe({}, ms / 1000),
    };
    this.live.add(stream);
    let authenticated = false;
    // Until it is authenticated a stream costs the server without proving anything: a count for the
    // whole server, and a deadline.
    this.unauthenticated++;
    let counted = true;
    let authTimer: NodeJS.Timeout | undefined;
    const authenticatedNow = () => {
      clearTimeout(authTimer);
      if (!counted) return;
      counted = false;
      this.unauthenticated--;
    };
    stream.onFinish = authenticatedNow;
    if (this.unauthenticated > (this.options.maxUnauthenticatedStreams ?? 1024)) {
      this.logger.warn(
        { stream: context.id, peer: context.peer },
        "xds stream refused: too many streams not yet authenticated",
      );
      this.finish(stream, GrpcStatus.RESOURCE_EXHAUSTED, "too many xds streams not yet authenticated");
      return;
    }
    const authTimeoutMs = this.options.authenticationTimeoutMs ?? 15_000;
    authTimer = setTimeout(() => {
      this.logger.warn(
        { stream: context.id, peer: context.peer },
        "xds stream closed: not authenticated in time",
      );
      this.finish(
        stream,
        GrpcStatus.UNAUTHENTICATED,
        `no authenticated discovery request within ${authTimeoutMs} ms`,
      );
    }, authTimeoutMs);
    authTimer.unref();
    let chain = Promise.resolve();
    const process = async (buffer: Buffer): Promise<void> => {
      if (session.closed) return;
      let request:
        | envoy.service.discovery.v3.DeltaDiscoveryRequest
        | envoy.service.discovery.v3.DiscoveryRequest;
      try {
        request =
          protocol === "delta"
            ? typeRegistry.decode("envoy.service.discovery.v3.DeltaDiscoveryRequest", buffer)
            : typeRegistry.decode("envoy.service.discovery.v3.DiscoveryRequest", buffer);
      } catch (err) {
        throw new XdsError("ERR_XDS_DECODE", `malformed discovery request: ${String(err)}`, { cause: err });
      }
      if (!authenticated) {
        const node = (request as { node?: envoy.config.core.v3.Node }).node;
        context.node = nodeInfo(node);
        if (this.options.authenticate !== undefined) {
          try {
            const identity = await this.options.authenticate({
              protocol,
              peer: context.peer,
              headers: context.headers,
              node: context.node,
              peerCertificate: call.getAuthContext()?.sslPeerCertificate,
            });
            context.identity = identity;
          } catch (err) {
            const denied = err instanceof XdsError && err.code === "ERR_XDS_PERMISSION_DENIED";
            throw new XdsError(
              denied ? "ERR_XDS_PERMISSION_DENIED" : "ERR_XDS_UNAUTHENTICATED",
              `xds stream refused: ${err instanceof Error ? err.message : String(err)}`,
              { cause: err },
            );
          }
        }
        authenticated = true;
        authenticatedNow();
        if (session.closed) return;
        stream.counted = { protocol, kind: nodeKind(context.node) };
        this.metrics.clients.inc(stream.counted);
      }
      if (protocol === "delta") {
        await (session as DeltaSession).handle(request as envoy.service.discovery.v3.DeltaDiscoveryRequest);
      } else {
        await (session as SotwSession).handle(request as envoy.service.discovery.v3.DiscoveryRequest);
      }
    };
    // Requests wait while the client does not take its responses; past `limit` of them reading pauses
    // and HTTP/2 flow control pushes back on the client.
    call.on("data", (buffer: Buffer) => {
      stats.queuedRequests++;
      if (stats.queuedRequests >= (authenticated ? limit : 1)) call.pause();
      chain = chain
        .then(() => drained())
        .then(() => process(buffer))
        .catch((err: unknown) => {
          const xerr = toXdsError(err, "xds stream failed");
          this.logger.warn(
            { stream: context.id, node: context.node?.id, err: xerr.message },
            "closing xds stream",
          );
          this.finish(stream, grpcStatusOf(xerr), xerr.message);
        })
        .finally(() => {
          stats.queuedRequests--;
          if (stats.queuedRequests < (authenticated ? limit : 1) && call.isPaused()) call.resume();
        });
    });
    call.on("end", () => {
      void chain.then(() => this.finish(stream, GrpcStatus.OK, "OK"));
    });
    call.on("error", () => this.finish(stream, GrpcStatus.CANCELLED, "cancelled"));
    call.on("cancelled", () => this.finish(stream, GrpcStatus.CANCELLED, "cancelled"));
  }
}

/** Checks the types and ranges of {@link XdsServerOptions}; throws `ERR_XDS_INVALID_ARGUMENT`. */
function checkServerOptions(options: XdsServerOptions): void {
  if (options === null || typeof options !== "object") {
    throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "xds server options must be an object");
  }
  if (options.cache !== undefined && !(options.cache instanceof ResourceCache)) {
    throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "cache must be a ResourceCache");
  }
  checkMs("debounceMs", options.debounceMs);
  checkBoolean("debounceLeadingEdge", options.debounceLeadingEdge);
  checkMs("resolveTimeoutMs", options.resolveTimeoutMs);
  checkMs("authenticationTimeoutMs", options.authenticationTimeoutMs);
  checkCount("maxNamesPerType", options.maxNamesPerType);
  checkCount("maxQueuedRequests", options.maxQueuedRequests);
  checkBytes("maxBufferedBytes", options.maxBufferedBytes);
  for (const hook of ["authenticate", "visible", "resolver", "related", "onNack"] as const) {
    checkFunction(hook, options[hook]);
  }
}

/** Creates an {@link XdsServer}; call `listen()` or `addTo(server)` to serve it. */
export function createXdsServer(options: XdsServerOptions = {}): XdsServer {
  return new XdsServer(options);
}
