import type { Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { ADS_SERVICE } from "./ads-service.js";
import { checkNames, MAX_TIMER_MS } from "./checks.js";
import { XdsError } from "./errors.js";
import type { envoy } from "./gen/types.js";
import { GrpcStatus, toXdsError } from "./node-error.js";
import { reconnectChannelOptions, resolveReconnectBackoff } from "./reconnect.js";
import { type JsonValue, structFromJson } from "./struct.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { type MessageInit, type MessageOf, TYPE_URL_PREFIX, TypeUrl, typeRegistry } from "./type-registry.js";

/** The longest NACK message sent to the control plane (Envoy's `truncateGrpcStatusMessage`). */
const NACK_MESSAGE_MAX = 4096;

/** Identity the client announces in `node` (first request of every stream). */
export interface XdsClientNode {
  /** ztunnel uses `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`. */
  id: string;
  cluster?: string;
  /** JSON metadata (ztunnel: NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME). */
  metadata?: { [key: string]: JsonValue };
  locality?: { region?: string; zone?: string; subZone?: string };
  userAgentName?: string;
  userAgentVersion?: string;
}

/** A resource held by the client. */
export interface XdsResource<T = unknown> {
  name: string;
  version: string;
  aliases: readonly string[];
  resource: T;
}

/** A resource of a response that was rejected on its own (`rejectScope: "resource"`). */
export interface XdsRejectedResource {
  /**
   * Its name; undefined for a SotW resource that did not decode far enough to tell (SotW responses
   * carry no names).
   */
  name: string | undefined;
  /** Why, as written in the NACK's error detail. */
  reason: string;
  /** The decoded resource when it decoded but `validate` refused it, for a consumer that must act on it. */
  resource?: unknown;
}

/** Typed change event: what one accepted response changed. */
export interface XdsChangeEvent<T = unknown> {
  typeUrl: string;
  added: XdsResource<T>[];
  updated: XdsResource<T>[];
  /**
   * Names the server removed. With `rejectScope: "resource"` this includes names the client was only
   * told of as rejected, so that a consumer that acted on a rejection can undo it.
   */
  removed: string[];
  /**
   * With `rejectScope: "resource"`: the resources of the response that were rejected. Each keeps the
   * value the client held before (in {@link XdsClient.resources}), or stays absent if it had none.
   */
  rejected?: XdsRejectedResource[];
}

/** Options of {@link createXdsClient}. */
export interface XdsClientOptions {
  /** gRPC target of the server, e.g. `127.0.0.1:15010`; ztunnel `XDS_ADDRESS` (istiod:15012). */
  address: string;
  /**
   * Channel credentials: default insecure. For istiod's TLS port use `grpcChannelCredentials` from
   * `@ambient/spiffe` (or `grpc.credentials.createSsl(...)`).
   */
  credentials?: grpc.ChannelCredentials;
  /**
   * Extra gRPC channel options, e.g. `{ "grpc.ssl_target_name_override": "istiod.istio-system.svc" }`
   * when `address` is an IP. `grpc.max_receive_message_length` comes from `maxReceiveMessageBytes`,
   * and grpc-js' reconnect back-off options from `initialBackoffMs`/`maxBackoffMs`
   * (see `reconnectChannelOptions`); values given here for those keys are replaced. The HTTP/2 receive
   * window (`grpc-node.flow_control_window`, for the stream and the connection) defaults to 4 MiB, so
   * a first push of several megabytes is not paced by 64 KiB window updates; give it here to change it.
   */
  channelOptions?: grpc.ChannelOptions;
  /** `"delta"` (what ztunnel uses, the default) or `"sotw"`. */
  protocol?: "delta" | "sotw";
  node: XdsClientNode;
  /**
   * Headers sent on every stream, e.g. `{ authorization: "Bearer <jwt>" }`; ztunnel `XDS_HEADER_*`.
   * A function is called for each new stream (every reconnect), so a token that the kubelet rotates
   * on disk is read afresh; if it throws, the headers of the previous stream are sent again.
   */
  headers?: Readonly<Record<string, string>> | (() => Readonly<Record<string, string>>);
  /**
   * Checks a decoded resource; throwing (or returning a string) rejects it (see `rejectScope`).
   * Default: accept everything that decodes.
   */
  validate?: (typeUrl: string, name: string, resource: unknown) => unknown;
  /**
   * What a bad resource (one that does not decode, has the wrong type, is duplicated or fails
   * `validate`) rejects.
   * - `"response"` (default): the whole response is NACKed and none of it is applied; the client
   *   keeps its previous resources.
   * - `"resource"`: only that resource, as Istio's ztunnel does. The rest of the response is applied
   *   and the response is NACKed with an error detail naming each rejected resource
   *   (`name: reason`, joined by `; `). A rejected resource keeps the value last accepted for it (or
   *   stays absent), and its version is not advanced: Delta lists it on reconnect with its last good
   *   version (or `""`), so the server sends it again; SotW NACKs with the last accepted
   *   `version_info`. The change event lists the rejected resources in `rejected`, and the type
   *   counts as ready once its first response has been applied.
   */
  rejectScope?: "response" | "resource";
  /** First reconnect delay: default 10 ms; ztunnel's xDS back-off starts at 10 ms. */
  initialBackoffMs?: number;
  /**
   * Longest reconnect delay: default 15000 ms; ztunnel caps at 15 s. Bounds the time from the
   * server's return to a new stream after an outage of any length: the stream waits for the channel,
   * whose own back-off is capped at the same value.
   */
  maxBackoffMs?: number;
  /** Largest response accepted: default 200 MiB; ztunnel's xDS decode limit. */
  maxReceiveMessageBytes?: number;
  /**
   * Longest wait for a connection to the server each time a stream starts: TCP, TLS and HTTP/2's
   * first SETTINGS (default {@link DEFAULT_CONNECT_TIMEOUT_MS}). grpc-js has no such deadline of its
   * own: a server address that drops SYNs holds an attempt for the kernel's SYN retries (about two
   * minutes), and a server that accepts and never answers (a hung process whose kernel still accepts
   * connections) holds it for good. When it passes, the client drops the channel, makes a new one and
   * tries again after its back-off; the stream ends with `ConnectionError`.
   */
  connectTimeoutMs?: number;
  logger?: Logger;
  /** Emits `xds_client_responses_total`, `xds_client_nacks_total` and `xds_client_reconnects_total` (by type). */
  metrics?: MetricsSink;
}

/**
 * Default {@link XdsClientOptions.connectTimeoutMs}: 10 s, ztunnel's 5 s TCP connect timeout to the
 * control plane plus room for the TLS handshake.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Default bound on {@link XdsClient.lookup}: 5 s. */
export const DEFAULT_LOOKUP_TIMEOUT_MS = 5000;

/** What the server answered to {@link XdsClient.lookup}. */
export interface XdsLookupResult<T = unknown> {
  /** Names answered with a resource (sent under the name or with it as an alias), by the name asked. */
  found: Map<string, XdsResource<T>>;
  /** Names the server said do not exist (`removed_resources`). */
  missing: string[];
  /** Names with no answer before the timeout, or when the client closed. */
  unanswered: string[];
}

/** Options of {@link XdsClient.lookup}. */
export interface LookupOptions {
  /** Longest wait for the answer: default {@link DEFAULT_LOOKUP_TIMEOUT_MS}. */
  timeoutMs?: number;
}

type LookupAnswer = { kind: "found"; resource: XdsResource } | { kind: "missing" } | { kind: "unanswered" };

/** How to watch a type: everything, a set of names, or (on-demand) nothing until names are added. */
export interface WatchOptions {
  /** Receive every resource of the type: default true when `names` is empty. */
  wildcard?: boolean;
  names?: readonly string[];
}

interface TypeWatch {
  wildcard: boolean;
  readonly names: Set<string>;
  readonly resources: Map<string, XdsResource>;
  /** SotW: version of the last accepted response. */
  version: string;
  /** Nonce of the last response received on the current stream. */
  nonce: string;
  /**
   * SotW: a request on the current stream named resources. From then on an empty list means "none"
   * to the server, so a wildcard watch must say `*`.
   */
  namedOnStream: boolean;
  ready: boolean;
  readonly readyPromise: Promise<void>;
  resolveReady: () => void;
  rejectReady: (err: XdsError) => void;
  /** SotW: names unsubscribed lately; a full set that crossed the unsubscribe must not revive them. */
  readonly dropped: Set<string>;
  /** Delta: names to add/remove in the next request. */
  pendingSubscribe: Set<string>;
  pendingUnsubscribe: Set<string>;
  /** Delta: lookups waiting for the server's answer, by the name asked. */
  readonly lookups: Map<string, Set<(answer: LookupAnswer) => void>>;
  /**
   * `rejectScope: "resource"`: names the server sent that were rejected and are not held (no good
   * value yet). Their removal is still reported, and Delta lists them on reconnect.
   */
  readonly rejected: Set<string>;
}

type Stream = grpc.ClientDuplexStream<Uint8Array, Buffer>;

const DELTA_REQ = "envoy.service.discovery.v3.DeltaDiscoveryRequest";
const DELTA_RESP = "envoy.service.discovery.v3.DeltaDiscoveryResponse";
/** The client's HTTP/2 receive window, per stream and for the connection (HTTP/2's default is 64 KiB). */
const DEFAULT_RECEIVE_WINDOW_BYTES = 4 * 1024 * 1024;
const SOTW_REQ = "envoy.service.discovery.v3.DiscoveryRequest";
const SOTW_RESP = "envoy.service.discovery.v3.DiscoveryResponse";
const passThrough = (value: Uint8Array): Buffer =>
  Buffer.from(value.buffer, value.byteOffset, value.byteLength);
const keep = (buffer: Buffer): Buffer => buffer;

/**
 * xDS client over one aggregated stream (Delta or SotW) with reconnects, validation-driven
 * ACK/NACK and change events.
 */
export class XdsClient {
  private readonly options: XdsClientOptions;
  private readonly protocol: "delta" | "sotw";
  private readonly perResource: boolean;
  private grpcClient: grpc.Client;
  /** The sockets of the current channel's connections, made or being made. */
  private channelSockets = new Set<Socket>();
  private readonly connectTimeoutMs: number;
  private connectTimer: NodeJS.Timeout | undefined;
  private readonly watches = new Map<string, TypeWatch>();
  private readonly changeListeners = new Set<(event: XdsChangeEvent) => void>();
  private readonly nackListeners = new Set<(typeUrl: string, message: string) => void>();
  private readonly stateListeners = new Set<(connected: boolean, error?: XdsError) => void>();
  private readonly endListeners = new Set<(reason: XdsStreamEndReason, error: XdsError) => void>();
  private readonly messageListeners = new Set<(typeUrl: string, resourceBytes: number) => void>();
  private readonly logger: Logger;
  private readonly backoff: { initialBackoffMs: number; maxBackoffMs: number };
  private readonly node: MessageInit<envoy.config.core.v3.Node>;
  private stream: Stream | undefined;
  private sentNode = false;
  private firstResponseSeen = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly counters: {
    responses: ReturnType<MetricsSink["counter"]>;
    nacks: ReturnType<MetricsSink["counter"]>;
    reconnects: ReturnType<MetricsSink["counter"]>;
  };

  constructor(options: XdsClientOptions) {
    if (typeof options?.address !== "string" || options.address === "") {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "xds client needs an address");
    }
    if (typeof options.node?.id !== "string") {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "xds client needs node.id");
    }
    this.options = options;
    this.protocol = options.protocol ?? "delta";
    if (this.protocol !== "delta" && this.protocol !== "sotw") {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", `unknown protocol ${String(this.protocol)}`);
    }
    const rejectScope = options.rejectScope ?? "response";
    if (rejectScope !== "response" && rejectScope !== "resource") {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", `unknown rejectScope ${String(rejectScope)}`);
    }
    this.perResource = rejectScope === "resource";
    this.logger = options.logger ?? noopLogger;
    this.backoff = resolveReconnectBackoff(options);
    const m = options.metrics ?? noopMetrics;
    this.counters = {
      responses: m.counter("xds_client_responses_total", "xDS responses received", ["type"]),
      nacks: m.counter("xds_client_nacks_total", "xDS responses rejected", ["type"]),
      reconnects: m.counter("xds_client_reconnects_total", "xDS stream reconnects", []),
    };
    const n = options.node;
    this.node = {
      id: n.id,
      cluster: n.cluster ?? "",
      userAgentName: n.userAgentName ?? "ambient-xds",
      userAgentVersion: n.userAgentVersion ?? "",
      ...(n.metadata
        ? { metadata: structFromJson(n.metadata) as MessageInit<envoy.config.core.v3.Node>["metadata"] }
        : {}),
      ...(n.locality ? { locality: n.locality } : {}),
    };
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    if (
      typeof this.connectTimeoutMs !== "number" ||
      !(this.connectTimeoutMs >= 1 && this.connectTimeoutMs <= MAX_TIMER_MS)
    ) {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        `connectTimeoutMs must be a number of ms from 1 to ${MAX_TIMER_MS}, got ${options.connectTimeoutMs}`,
      );
    }
    this.grpcClient = this.makeGrpcClient();
  }

  /**
   * A channel of its own: grpc-js otherwise shares connections between channels with the same target
   * and options, and a new channel would wait on the attempt the last one gave up on.
   */
  private makeGrpcClient(): grpc.Client {
    const { options } = this;
    const sockets = new Set<Socket>();
    this.channelSockets = sockets;
    const credentials = recordingSockets(options.credentials ?? grpc.credentials.createInsecure(), sockets);
    return new grpc.Client(options.address, credentials, {
      "grpc-node.flow_control_window": DEFAULT_RECEIVE_WINDOW_BYTES,
      ...options.channelOptions,
      ...reconnectChannelOptions(this.backoff),
      "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? 200 * 1024 * 1024,
      "grpc.use_local_subchannel_pool": 1,
    });
  }

  /** Starts (or changes) watching a type. Default: wildcard. */
  watch(typeUrl: string, options: WatchOptions = {}): void {
    this.checkOpen();
    if (typeof typeUrl !== "string" || !typeUrl.startsWith(TYPE_URL_PREFIX) || !typeRegistry.has(typeUrl)) {
      throw new XdsError("ERR_XDS_UNKNOWN_TYPE", `unknown resource type URL "${String(typeUrl)}"`, {
        typeUrl,
      });
    }
    if (options.names !== undefined) checkNames("names", options.names, typeUrl);
    if (options.wildcard !== undefined && typeof options.wildcard !== "boolean") {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "wildcard must be a boolean", { typeUrl });
    }
    const names = options.names ?? [];
    const wildcard = options.wildcard ?? names.length === 0;
    let w = this.watches.get(typeUrl);
    if (w === undefined) {
      let resolveReady: () => void = () => {};
      let rejectReady: (err: XdsError) => void = () => {};
      const readyPromise = new Promise<void>((resolve, reject) => {
        resolveReady = resolve;
        rejectReady = reject;
      });
      // Rejected at close(); only a caller of ready() is to see that.
      readyPromise.catch(() => {});
      w = {
        wildcard,
        names: new Set(names),
        resources: new Map(),
        version: "",
        nonce: "",
        namedOnStream: false,
        ready: false,
        readyPromise,
        resolveReady,
        rejectReady,
        pendingSubscribe: new Set(),
        pendingUnsubscribe: new Set(),
        dropped: new Set(),
        lookups: new Map(),
        rejected: new Set(),
      };
      this.watches.set(typeUrl, w);
      if (this.stream === undefined) this.connect();
      else this.sendInitial(typeUrl, w);
      return;
    }
    if (wildcard !== w.wildcard) {
      w.wildcard = wildcard;
      (wildcard ? w.pendingSubscribe : w.pendingUnsubscribe).add("*");
    }
    this.subscribe(typeUrl, names);
  }

  /** Adds names to a watched type (on-demand lookups). */
  subscribe(typeUrl: string, names: readonly string[]): void {
    const w = this.requireWatch(typeUrl);
    checkNames("names", names, typeUrl);
    for (const name of names) {
      w.names.add(name);
      w.pendingSubscribe.add(name);
      w.pendingUnsubscribe.delete(name);
      w.dropped.delete(name);
    }
    this.sendUpdate(typeUrl, w);
  }

  /**
   * On-demand lookup (Delta): subscribes to `names` (primary names or aliases such as `network/IP`)
   * and resolves once the server has answered each of them, with a resource or as missing, or when
   * `timeoutMs` has passed. Rejects (`ERR_XDS_INVALID_ARGUMENT`, `ERR_XDS_CLOSED`) when it cannot
   * start: a type not watched, names not an array of strings, a timeout out of range, a closed client.
   * Never rejects once started; the names stay subscribed, so their later
   * changes arrive as usual. What the server sends along (a Service's workloads) is in
   * {@link XdsClient.resources} and the change events by the time it resolves.
   */
  lookup<K extends string>(
    typeUrl: K,
    names: readonly string[],
    options: LookupOptions = {},
  ): Promise<XdsLookupResult<MessageOf<K>>> {
    let w: TypeWatch;
    let timeoutMs: number;
    try {
      w = this.requireWatch(typeUrl);
      if (this.protocol !== "delta") {
        throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "lookup needs the delta protocol", { typeUrl });
      }
      checkNames("names", names, typeUrl);
      timeoutMs = options?.timeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
      if (typeof timeoutMs !== "number" || !(timeoutMs >= 0 && timeoutMs <= MAX_TIMER_MS)) {
        throw new XdsError(
          "ERR_XDS_INVALID_ARGUMENT",
          `lookup timeoutMs must be a number of ms from 0 to ${MAX_TIMER_MS}, got ${timeoutMs}`,
          { typeUrl },
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const unique = [...new Set(names)];
    const result: XdsLookupResult<MessageOf<K>> = { found: new Map(), missing: [], unanswered: [] };
    if (unique.length === 0) return Promise.resolve(result);
    return new Promise((resolve) => {
      let open = unique.length;
      const settlers = new Map<string, (answer: LookupAnswer) => void>();
      const done = () => {
        clearTimeout(timer);
        for (const [name, settle] of settlers) this.dropLookup(w, name, settle);
        resolve(result);
      };
      const timer = setTimeout(() => {
        for (const settle of [...settlers.values()]) settle({ kind: "unanswered" });
      }, timeoutMs);
      for (const n of unique) {
        const settle = (answer: LookupAnswer) => {
          if (!settlers.delete(n)) return;
          this.dropLookup(w, n, settle);
          if (answer.kind === "found") result.found.set(n, answer.resource as XdsResource<MessageOf<K>>);
          else if (answer.kind === "missing") result.missing.push(n);
          else result.unanswered.push(n);
          if (--open === 0) done();
        };
        settlers.set(n, settle);
        let set = w.lookups.get(n);
        if (set === undefined) {
          set = new Set();
          w.lookups.set(n, set);
        }
        set.add(settle);
      }
      this.subscribe(typeUrl, unique);
    });
  }

  private dropLookup(w: TypeWatch, name: string, settle: (answer: LookupAnswer) => void): void {
    const set = w.lookups.get(name);
    if (set === undefined) return;
    set.delete(settle);
    if (set.size === 0) w.lookups.delete(name);
  }

  /** Settles the lookups a Delta response answered, and those for names the client now holds. */
  private settleLookups(w: TypeWatch, answered: readonly XdsResource[], removed: readonly string[]): void {
    if (w.lookups.size === 0) return;
    const settle = (name: string, answer: LookupAnswer) => {
      const set = w.lookups.get(name);
      if (set === undefined) return;
      for (const s of [...set]) s(answer);
    };
    for (const r of answered) {
      settle(r.name, { kind: "found", resource: r });
      for (const a of r.aliases) settle(a, { kind: "found", resource: r });
    }
    for (const name of removed) settle(name, { kind: "missing" });
    // After a reconnect the server does not resend what the client already has at the same version.
    if (w.lookups.size === 0) return;
    for (const r of w.resources.values()) {
      settle(r.name, { kind: "found", resource: r });
      for (const a of r.aliases) settle(a, { kind: "found", resource: r });
      if (w.lookups.size === 0) return;
    }
  }

  /** Removes names from a watched type; their resources are dropped (and reported removed). */
  unsubscribe(typeUrl: string, names: readonly string[]): void {
    const w = this.requireWatch(typeUrl);
    checkNames("names", names, typeUrl);
    const removed: string[] = [];
    for (const name of names) {
      w.names.delete(name);
      w.pendingUnsubscribe.add(name);
      w.pendingSubscribe.delete(name);
      if (w.dropped.size >= 1024) w.dropped.clear();
      w.dropped.add(name);
      if (!w.wildcard && (w.resources.delete(name) || w.rejected.delete(name))) removed.push(name);
    }
    this.sendUpdate(typeUrl, w);
    if (removed.length > 0) this.emitChange({ typeUrl, added: [], updated: [], removed });
  }

  /**
   * Resolves once the first response for the type (or for every watched type) was accepted. Rejects
   * with `ERR_XDS_CLOSED` when the client is closed first (or already), and with
   * `ERR_XDS_INVALID_ARGUMENT` for a type that is not watched.
   */
  ready(typeUrl?: string): Promise<void> {
    if (typeUrl !== undefined) {
      try {
        return this.requireWatch(typeUrl).readyPromise;
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (this.closed) return Promise.reject(new XdsError("ERR_XDS_CLOSED", "xds client is closed"));
    return Promise.all([...this.watches.values()].map((w) => w.readyPromise)).then(() => undefined);
  }

  /** A held resource by name. */
  get<K extends string>(typeUrl: K, name: string): MessageOf<K> | undefined {
    return this.watches.get(typeUrl)?.resources.get(name)?.resource as MessageOf<K> | undefined;
  }

  /** Every held resource of a type, by name. */
  resources<K extends string>(typeUrl: K): Map<string, XdsResource<MessageOf<K>>> {
    return new Map(
      this.watches.get(typeUrl)?.resources as Map<string, XdsResource<MessageOf<K>>> | undefined,
    );
  }

  /** Listens for accepted changes; returns the function that stops listening. */
  onChange(listener: (event: XdsChangeEvent) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Listens for responses this client rejected. */
  onNack(listener: (typeUrl: string, message: string) => void): () => void {
    this.nackListeners.add(listener);
    return () => this.nackListeners.delete(listener);
  }

  /** Listens for stream state: `true` on the first response of a stream, `false` when it breaks. */
  onConnection(listener: (connected: boolean, error?: XdsError) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /**
   * Listens for the end of each stream the server or the network ended (not {@link XdsClient.close}),
   * with why, in the classes Istio's ztunnel counts in `istio_xds_connection_terminations_total`:
   * `ConnectionError` (no response came on it: the server was not reached), `Reconnect` (the server
   * went away after answering, as at its connection's maximum age or a restart, or the stream was
   * cancelled or timed out), `Complete` (the server ended it with OK), `Error` (any other status, e.g.
   * PERMISSION_DENIED, or no status). The client reconnects after each.
   */
  onStreamEnd(listener: (reason: XdsStreamEndReason, error: XdsError) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /**
   * Listens for each response received: its type URL and the bytes of the resources it carries (the
   * encoded payloads, as Istio's ztunnel counts `istio_xds_message_bytes_total`).
   */
  onMessage(listener: (typeUrl: string, resourceBytes: number) => void): () => void {
    this.messageListeners.add(listener);
    return () => this.messageListeners.delete(listener);
  }

  /**
   * Closes the stream and the channel. Pending `ready()` promises reject with `ERR_XDS_CLOSED`;
   * pending lookups resolve with their names unanswered.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    for (const [typeUrl, w] of this.watches) {
      for (const set of [...w.lookups.values()])
        for (const settle of [...set]) settle({ kind: "unanswered" });
      if (!w.ready) w.rejectReady(new XdsError("ERR_XDS_CLOSED", "xds client closed", { typeUrl }));
    }
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    this.grpcClient.close();
    // grpc-js closes connections gracefully but cannot stop one it is still making.
    const sockets = this.channelSockets;
    if (sockets.size > 0) setTimeout(() => destroyAll(sockets), CLOSE_GRACE_MS).unref();
  }

  private checkOpen(): void {
    if (this.closed) throw new XdsError("ERR_XDS_CLOSED", "xds client is closed");
  }

  private requireWatch(typeUrl: string): TypeWatch {
    this.checkOpen();
    const w = this.watches.get(typeUrl);
    if (w === undefined) {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", `type ${typeUrl} is not watched; call watch() first`, {
        typeUrl,
      });
    }
    return w;
  }

  private lastHeaders: Readonly<Record<string, string>> = {};

  /** The headers for a new stream; a failing header function keeps the last good ones. */
  private streamHeaders(): Readonly<Record<string, string>> {
    const { headers } = this.options;
    if (typeof headers !== "function") return headers ?? {};
    try {
      this.lastHeaders = headers();
    } catch (err) {
      this.logger.warn({ err: String(err) }, "xds headers function threw; sending the previous headers");
    }
    return this.lastHeaders;
  }

  private connect(): void {
    if (this.closed) return;
    const metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(this.streamHeaders())) metadata.set(k, v);
    const method = this.protocol === "delta" ? "DeltaAggregatedResources" : "StreamAggregatedResources";
    const stream: Stream = this.grpcClient.makeBidiStreamRequest(
      `/${ADS_SERVICE}/${method}`,
      passThrough,
      keep,
      metadata,
    );
    this.stream = stream;
    this.sentNode = false;
    this.firstResponseSeen = false;
    stream.on("data", (buffer: Buffer) => {
      if (this.stream !== stream) return;
      try {
        this.onResponse(buffer);
      } catch (err) {
        this.logger.warn({ err: String(err) }, "xds response handling failed");
      }
    });
    stream.on("error", (err: unknown) => this.onBroken(stream, err));
    // No error first: the server ended the stream with OK.
    stream.on("end", () =>
      this.onBroken(stream, { code: GrpcStatus.UNAVAILABLE, message: "stream ended" }, "Complete"),
    );
    for (const [typeUrl, w] of this.watches) this.sendInitial(typeUrl, w);
    this.connectTimer = setTimeout(() => this.checkConnected(stream), this.connectTimeoutMs);
  }

  /**
   * The connect deadline of `stream`: unless it has had an answer or its channel is connected, the
   * channel is dropped (with whatever attempt it was making) and the stream retried on a new one.
   */
  private checkConnected(stream: Stream): void {
    this.connectTimer = undefined;
    if (this.stream !== stream || this.firstResponseSeen) return;
    const state = this.grpcClient.getChannel().getConnectivityState(false);
    if (state === grpc.connectivityState.READY) return;
    const message = `no connection to ${this.options.address} within ${this.connectTimeoutMs} ms`;
    this.logger.warn({ state: grpc.connectivityState[state] }, `xds ${message}; making a new channel`);
    this.grpcClient.close();
    destroyAll(this.channelSockets);
    this.grpcClient = this.makeGrpcClient();
    const error = new XdsError("ERR_XDS_UNAVAILABLE", `xds stream broken: ${message}`, {
      grpcCode: GrpcStatus.DEADLINE_EXCEEDED,
    });
    this.onBroken(stream, error, "ConnectionError");
  }

  private onBroken(stream: Stream, err: unknown, ended?: XdsStreamEndReason): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    stream.cancel();
    if (this.closed) return;
    const error = toXdsError(err, "xds stream broken");
    for (const l of this.stateListeners) l(false, error);
    const reason = ended ?? streamEndReason(error.grpcCode, this.firstResponseSeen);
    for (const l of this.endListeners) this.notify(() => l(reason, error));
    const base = this.backoff.initialBackoffMs;
    const max = this.backoff.maxBackoffMs;
    const delay = Math.min(max, base * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    this.counters.reconnects.inc();
    this.logger.info({ delayMs: delay, err: error.message }, "xds stream broken; reconnecting");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.whenChannelUsable(() => this.connect());
    }, delay);
  }

  /**
   * Runs `then` once the channel is not in TRANSIENT_FAILURE. A stream started there fails at once;
   * grpc-js reconnects on its own meanwhile (its back-off capped at `maxBackoffMs` too), so waiting for
   * its state change makes the two back-offs run side by side instead of one after the other.
   */
  private whenChannelUsable(then: () => void): void {
    if (this.closed) return;
    const channel = this.grpcClient.getChannel();
    const failing = grpc.connectivityState.TRANSIENT_FAILURE;
    try {
      if (channel.getConnectivityState(false) !== failing) {
        then();
        return;
      }
      channel.watchConnectivityState(failing, Number.POSITIVE_INFINITY, () => this.whenChannelUsable(then));
    } catch {
      // The channel was shut down: close() ran.
    }
  }

  private write(name: string, request: Record<string, unknown>): void {
    const stream = this.stream;
    if (stream === undefined) return;
    if (!this.sentNode) {
      request.node = this.node;
      this.sentNode = true;
    }
    stream.write(typeRegistry.encode(name, request));
  }

  private sendInitial(typeUrl: string, w: TypeWatch): void {
    w.nonce = "";
    w.namedOnStream = false;
    w.pendingSubscribe.clear();
    w.pendingUnsubscribe.clear();
    if (this.protocol === "delta") {
      const initialResourceVersions: Record<string, string> = {};
      for (const r of w.resources.values()) initialResourceVersions[r.name] = r.version;
      // Rejected names with no good value: the server sends them again, or says they are gone.
      for (const name of w.rejected) initialResourceVersions[name] = "";
      const subscribe = [...w.names];
      const unsubscribe: string[] = [];
      if (w.wildcard) subscribe.unshift("*");
      else if (subscribe.length === 0) {
        // "Subscribe to nothing": neither wildcard nor names, only on-demand additions later.
        subscribe.push("*");
        unsubscribe.push("*");
      }
      this.write(DELTA_REQ, {
        typeUrl,
        resourceNamesSubscribe: subscribe,
        resourceNamesUnsubscribe: unsubscribe,
        initialResourceVersions,
      });
    } else {
      this.writeSotw(typeUrl, w, undefined);
    }
  }

  private writeSotw(
    typeUrl: string,
    w: TypeWatch,
    errorDetail: { code: number; message: string } | undefined,
  ): void {
    if (!w.wildcard && w.names.size === 0 && w.nonce === "") return;
    // The empty list asks for everything only until a request of the stream named something.
    const names =
      w.wildcard && w.names.size === 0 && !w.namedOnStream
        ? []
        : w.wildcard
          ? ["*", ...w.names]
          : [...w.names];
    if (names.length > 0) w.namedOnStream = true;
    this.write(SOTW_REQ, {
      typeUrl,
      versionInfo: w.version,
      resourceNames: names,
      responseNonce: w.nonce,
      ...(errorDetail ? { errorDetail } : {}),
    });
  }

  private sendUpdate(typeUrl: string, w: TypeWatch): void {
    if (this.stream === undefined) return;
    if (this.protocol === "delta") {
      if (w.pendingSubscribe.size === 0 && w.pendingUnsubscribe.size === 0) return;
      this.write(DELTA_REQ, {
        typeUrl,
        resourceNamesSubscribe: [...w.pendingSubscribe],
        resourceNamesUnsubscribe: [...w.pendingUnsubscribe],
      });
      w.pendingSubscribe.clear();
      w.pendingUnsubscribe.clear();
    } else {
      this.writeSotw(typeUrl, w, undefined);
    }
  }

  private decodeResource(typeUrl: string, any: { typeUrl: string; value: Uint8Array } | undefined): unknown {
    if (any === undefined) throw new Error("resource without payload");
    if (any.typeUrl !== typeUrl) throw new Error(`payload type ${any.typeUrl} does not match ${typeUrl}`);
    return typeRegistry.decode(typeUrl, any.value);
  }

  private validate(typeUrl: string, name: string, resource: unknown): void {
    const verdict = this.options.validate?.(typeUrl, name, resource);
    if (typeof verdict === "string") throw new Error(verdict);
  }

  private onResponse(buffer: Buffer): void {
    this.attempt = 0;
    if (!this.firstResponseSeen) {
      this.firstResponseSeen = true;
      for (const l of this.stateListeners) l(true);
    }
    if (this.protocol === "delta") this.onDeltaResponse(buffer);
    else this.onSotwResponse(buffer);
  }

  /** Runs a listener; one that throws is logged and does not disturb the stream. */
  private notify(call: () => void): void {
    try {
      call();
    } catch (err) {
      this.logger.warn({ err: String(err) }, "xds client listener threw");
    }
  }

  /** Tells the message listeners, if any, of a response and the bytes of its resources' payloads. */
  private reportMessage<R>(
    typeUrl: string,
    resources: readonly R[],
    payload: (r: R) => Uint8Array | undefined,
  ): void {
    if (this.messageListeners.size === 0) return;
    let bytes = 0;
    for (const r of resources) bytes += payload(r)?.length ?? 0;
    for (const l of this.messageListeners) this.notify(() => l(typeUrl, bytes));
  }

  private reject(typeUrl: string, w: TypeWatch | undefined, nonce: string, message: string): void {
    this.sendNack(typeUrl, w, nonce, message);
    this.tellNack(typeUrl, message);
  }

  private sendNack(typeUrl: string, w: TypeWatch | undefined, nonce: string, message: string): void {
    this.counters.nacks.inc({ type: typeUrl.slice(typeUrl.lastIndexOf(".") + 1) });
    this.logger.warn({ typeUrl, nonce, error: message }, "xds NACK");
    // INTERNAL is the code Envoy puts in every NACK; control planes log it beside the message, so
    // a NACK from this client reads the same as one from a proxy.
    // The control plane gets at most 4096 characters of it, as Envoy sends (a response with many
    // rejected resources names each of them); the log above and the NACK listeners have it whole.
    const sent =
      message.length > NACK_MESSAGE_MAX ? `${message.slice(0, NACK_MESSAGE_MAX)}...(truncated)` : message;
    const errorDetail = { code: GrpcStatus.INTERNAL, message: sent };
    if (this.protocol === "delta") this.write(DELTA_REQ, { typeUrl, responseNonce: nonce, errorDetail });
    else if (w !== undefined) this.writeSotw(typeUrl, w, errorDetail);
  }

  private tellNack(typeUrl: string, message: string): void {
    for (const l of this.nackListeners) l(typeUrl, message);
  }

  private onDeltaResponse(buffer: Buffer): void {
    const response = typeRegistry.decode(DELTA_RESP, buffer);
    const typeUrl = response.typeUrl;
    const w = this.watches.get(typeUrl);
    this.counters.responses.inc({ type: typeUrl.slice(typeUrl.lastIndexOf(".") + 1) });
    this.reportMessage(typeUrl, response.resources, (r) => r.resource?.value);
    if (w === undefined) {
      this.reject(typeUrl, undefined, response.nonce, `type ${typeUrl} was not requested`);
      return;
    }
    w.nonce = response.nonce;
    if (this.perResource) {
      this.onDeltaResponsePerResource(typeUrl, w, response);
      return;
    }
    const decoded: XdsResource[] = [];
    const seen = new Set<string>();
    try {
      for (const r of response.resources) {
        if (seen.has(r.name)) throw new Error(`duplicate resource ${r.name}`);
        seen.add(r.name);
        const resource = this.decodeResource(typeUrl, r.resource);
        this.validate(typeUrl, r.name, resource);
        decoded.push({ name: r.name, version: r.version, aliases: r.aliases, resource });
      }
    } catch (err) {
      this.reject(typeUrl, w, response.nonce, err instanceof Error ? err.message : String(err));
      // The server did answer: lookups of names it carried end, with what the client holds.
      const named = response.resources.flatMap((r) => [r.name, ...r.aliases]);
      this.settleLookups(
        w,
        [],
        [...named, ...response.removedResources].filter((n) => !this.holds(w, n)),
      );
      this.settleLookups(w, [], []);
      return;
    }
    const event: XdsChangeEvent = { typeUrl, added: [], updated: [], removed: [] };
    for (const r of decoded) {
      // A push that crossed our unsubscribe on the wire is not wanted any more. Other names we did not
      // ask for are the server's additions (a Service's workloads for its VIP) and are kept.
      if (!w.wildcard && !this.wanted(w, r)) continue;
      (w.resources.has(r.name) ? event.updated : event.added).push(r);
      w.resources.set(r.name, r);
    }
    for (const name of response.removedResources) if (w.resources.delete(name)) event.removed.push(name);
    this.write(DELTA_REQ, { typeUrl, responseNonce: response.nonce });
    this.accept(w, event);
    this.settleLookups(w, decoded, response.removedResources);
  }

  /**
   * `rejectScope: "resource"`: each resource stands alone. The good ones and the removals are applied;
   * a bad one keeps what the client held for it, and the NACK names it.
   */
  private onDeltaResponsePerResource(
    typeUrl: string,
    w: TypeWatch,
    response: MessageOf<typeof DELTA_RESP>,
  ): void {
    const copies = new Map<string, number>();
    for (const r of response.resources) copies.set(r.name, (copies.get(r.name) ?? 0) + 1);
    const decoded: XdsResource[] = [];
    const rejected: XdsRejectedResource[] = [];
    for (const r of response.resources) {
      const count = copies.get(r.name) ?? 0;
      if (count > 1) {
        // Which copy is meant cannot be told: neither is taken, and the name is reported once.
        if (count !== Number.POSITIVE_INFINITY) {
          copies.set(r.name, Number.POSITIVE_INFINITY);
          rejected.push({ name: r.name, reason: `duplicate resource ${r.name}` });
        }
        continue;
      }
      let resource: unknown;
      try {
        resource = this.decodeResource(typeUrl, r.resource);
      } catch (err) {
        rejected.push({ name: r.name, reason: errorText(err) });
        continue;
      }
      try {
        this.validate(typeUrl, r.name, resource);
      } catch (err) {
        rejected.push({ name: r.name, reason: errorText(err), resource });
        continue;
      }
      decoded.push({ name: r.name, version: r.version, aliases: r.aliases, resource });
    }
    const event: XdsChangeEvent = { typeUrl, added: [], updated: [], removed: [] };
    for (const r of decoded) {
      // As in the whole-response path: a push that crossed our unsubscribe is not wanted any more.
      if (!w.wildcard && !this.wanted(w, r)) continue;
      (w.resources.has(r.name) ? event.updated : event.added).push(r);
      w.resources.set(r.name, r);
      w.rejected.delete(r.name);
    }
    for (const name of response.removedResources) {
      const held = w.resources.delete(name);
      if (w.rejected.delete(name) || held) event.removed.push(name);
    }
    for (const r of rejected) {
      if (r.name !== undefined && !w.resources.has(r.name) && (w.wildcard || !w.dropped.has(r.name))) {
        w.rejected.add(r.name);
      }
    }
    const message = rejected.map((r) => `${r.name}: ${r.reason}`).join("; ");
    if (rejected.length === 0) this.write(DELTA_REQ, { typeUrl, responseNonce: response.nonce });
    else {
      event.rejected = rejected;
      this.sendNack(typeUrl, w, response.nonce, message);
    }
    this.accept(w, event);
    if (rejected.length > 0) this.tellNack(typeUrl, message);
    // A rejected name is answered with what the client holds for it, or as missing.
    const unheld: string[] = [];
    if (rejected.length > 0 && w.lookups.size > 0) {
      const rejectedNames = new Set(rejected.map((r) => r.name));
      for (const r of response.resources) {
        if (!rejectedNames.has(r.name)) continue;
        for (const n of [r.name, ...r.aliases]) if (!this.holds(w, n)) unheld.push(n);
      }
    }
    this.settleLookups(w, decoded, [...response.removedResources, ...unheld]);
  }

  private holds(w: TypeWatch, name: string): boolean {
    if (w.resources.has(name)) return true;
    for (const r of w.resources.values()) if (r.aliases.includes(name)) return true;
    return false;
  }

  private wanted(w: TypeWatch, r: XdsResource): boolean {
    if (w.names.has(r.name) || r.aliases.some((a) => w.names.has(a))) return true;
    // Only a dropped primary name marks a crossing push: an alias given up (an address that had no
    // resource then) may be reused by a resource the server sends for its own reasons later.
    return !w.dropped.has(r.name);
  }

  private onSotwResponse(buffer: Buffer): void {
    const response = typeRegistry.decode(SOTW_RESP, buffer);
    const typeUrl = response.typeUrl;
    const w = this.watches.get(typeUrl);
    this.counters.responses.inc({ type: typeUrl.slice(typeUrl.lastIndexOf(".") + 1) });
    this.reportMessage(typeUrl, response.resources, (any) => any.value);
    if (w === undefined) return;
    w.nonce = response.nonce;
    if (this.perResource) {
      this.onSotwResponsePerResource(typeUrl, w, response);
      return;
    }
    const next = new Map<string, XdsResource>();
    try {
      for (const any of response.resources) {
        const resource = this.decodeResource(typeUrl, any);
        const name = resourceNameOf(typeUrl, resource);
        if (name === undefined) throw new Error(`cannot tell the name of a ${typeUrl} resource`);
        if (next.has(name)) throw new Error(`duplicate resource ${name}`);
        if (!w.wildcard && w.dropped.has(name)) continue;
        this.validate(typeUrl, name, resource);
        next.set(name, { name, version: response.versionInfo, aliases: [], resource });
      }
    } catch (err) {
      this.reject(typeUrl, w, response.nonce, err instanceof Error ? err.message : String(err));
      return;
    }
    const event: XdsChangeEvent = { typeUrl, added: [], updated: [], removed: [] };
    for (const [name, r] of next) {
      const old = w.resources.get(name);
      if (old === undefined) event.added.push(r);
      else if (!sameBytes(typeUrl, old.resource, r.resource)) event.updated.push(r);
      else r.version = old.version;
    }
    for (const name of w.resources.keys()) if (!next.has(name)) event.removed.push(name);
    w.resources.clear();
    for (const [name, r] of next) w.resources.set(name, r);
    w.version = response.versionInfo;
    this.writeSotw(typeUrl, w, undefined);
    this.accept(w, event);
  }

  /**
   * `rejectScope: "resource"` over SotW: the response is the full set, less the rejected resources,
   * which keep what the client held for them. A resource too broken to tell its name could be any
   * held one, so while one is in the response nothing held is taken as removed.
   */
  private onSotwResponsePerResource(
    typeUrl: string,
    w: TypeWatch,
    response: MessageOf<typeof SOTW_RESP>,
  ): void {
    type Item = { name: string; resource: unknown };
    const items: Item[] = [];
    const rejected: XdsRejectedResource[] = [];
    let unnamed = false;
    response.resources.forEach((any, index) => {
      let resource: unknown;
      try {
        resource = this.decodeResource(typeUrl, any);
      } catch (err) {
        unnamed = true;
        rejected.push({ name: undefined, reason: `resource ${index}: ${errorText(err)}` });
        return;
      }
      const name = resourceNameOf(typeUrl, resource);
      if (name === undefined) {
        unnamed = true;
        rejected.push({ name, reason: `cannot tell the name of ${typeUrl} resource ${index}`, resource });
        return;
      }
      if (!w.wildcard && w.dropped.has(name)) return;
      items.push({ name, resource });
    });
    const copies = new Map<string, number>();
    for (const { name } of items) copies.set(name, (copies.get(name) ?? 0) + 1);
    const next = new Map<string, XdsResource>();
    const rejectedNames = new Set<string>();
    for (const { name, resource } of items) {
      if ((copies.get(name) ?? 0) > 1) {
        if (!rejectedNames.has(name)) rejected.push({ name, reason: `duplicate resource ${name}` });
        rejectedNames.add(name);
        continue;
      }
      try {
        this.validate(typeUrl, name, resource);
      } catch (err) {
        rejected.push({ name, reason: errorText(err), resource });
        rejectedNames.add(name);
        continue;
      }
      next.set(name, { name, version: response.versionInfo, aliases: [], resource });
    }
    // Last good state wins for the rejected ones (for every held one when a rejected name is unknown).
    for (const [name, old] of w.resources) {
      if (!next.has(name) && (unnamed || rejectedNames.has(name))) next.set(name, old);
    }
    const event: XdsChangeEvent = { typeUrl, added: [], updated: [], removed: [] };
    for (const [name, r] of next) {
      const old = w.resources.get(name);
      if (old === undefined) event.added.push(r);
      else if (old === r) continue;
      else if (!sameBytes(typeUrl, old.resource, r.resource)) event.updated.push(r);
      else r.version = old.version;
    }
    for (const name of w.resources.keys()) if (!next.has(name)) event.removed.push(name);
    if (!unnamed) {
      for (const name of w.rejected)
        if (!rejectedNames.has(name) && !next.has(name)) event.removed.push(name);
    }
    w.resources.clear();
    for (const [name, r] of next) w.resources.set(name, r);
    for (const name of next.keys()) w.rejected.delete(name);
    for (const name of event.removed) w.rejected.delete(name);
    for (const name of rejectedNames) if (!next.has(name)) w.rejected.add(name);
    if (rejected.length === 0) {
      w.version = response.versionInfo;
      this.writeSotw(typeUrl, w, undefined);
      this.accept(w, event);
      return;
    }
    // A NACK: `version_info` stays the last accepted one, so the server knows what the client runs.
    const message = rejected
      .map((r) => (r.name === undefined ? r.reason : `${r.name}: ${r.reason}`))
      .join("; ");
    event.rejected = rejected;
    this.sendNack(typeUrl, w, response.nonce, message);
    this.accept(w, event);
    this.tellNack(typeUrl, message);
  }

  private accept(w: TypeWatch, event: XdsChangeEvent): void {
    if (!w.ready) {
      w.ready = true;
      w.resolveReady();
    }
    const rejected = event.rejected?.length ?? 0;
    if (event.added.length + event.updated.length + event.removed.length + rejected > 0)
      this.emitChange(event);
  }

  private emitChange(event: XdsChangeEvent): void {
    for (const l of this.changeListeners) {
      try {
        l(event);
      } catch (err) {
        this.logger.error({ err: String(err) }, "xds change listener threw");
      }
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** SotW responses carry no names: derive the key each resource type is known by. */
function resourceNameOf(typeUrl: string, resource: unknown): string | undefined {
  if (typeof resource !== "object" || resource === null) return undefined;
  const r = resource as Record<string, unknown>;
  if (typeUrl === TypeUrl.authorization) return `${String(r.namespace)}/${String(r.name)}`;
  if (typeof r.name === "string" && r.name !== "") return r.name;
  if (typeof r.clusterName === "string" && r.clusterName !== "") return r.clusterName;
  const inner = (r.workload ?? r.service) as Record<string, unknown> | undefined;
  if (inner !== undefined) {
    if (typeof inner.uid === "string" && inner.uid !== "") return inner.uid;
    if (typeof inner.hostname === "string") return `${String(inner.namespace)}/${inner.hostname}`;
  }
  if (typeof r.uid === "string") return r.uid;
  return undefined;
}

function sameBytes(typeUrl: string, a: unknown, b: unknown): boolean {
  const x = typeRegistry.encode(typeUrl, a as never);
  const y = typeRegistry.encode(typeUrl, b as never);
  return Buffer.compare(x, y) === 0;
}

/** Creates an {@link XdsClient}; it connects when the first type is watched. */
/** Why an xDS stream ended; see {@link XdsClient.onStreamEnd}. */
export type XdsStreamEndReason = "ConnectionError" | "Error" | "Reconnect" | "Complete";

/** The class of a stream that broke with gRPC status `code`, as Istio's ztunnel sorts them. */
/** How long {@link XdsClient.close} leaves its connections to close themselves before ending them. */
const CLOSE_GRACE_MS = 1000;

function destroyAll(sockets: Set<Socket>): void {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
}

/**
 * `credentials` with every connection's socket kept in `sockets` until it closes: grpc-js can drop a
 * channel but not a connection attempt in progress, so the client ends those itself. Everything else
 * is the credentials' own (called on them, not on a copy that would keep state apart).
 */
function recordingSockets(
  credentials: grpc.ChannelCredentials,
  sockets: Set<Socket>,
): grpc.ChannelCredentials {
  const createSecureConnector: grpc.ChannelCredentials["_createSecureConnector"] = (...args) => {
    const connector = credentials._createSecureConnector(...args);
    return {
      connect(socket) {
        sockets.add(socket);
        socket.once("close", () => sockets.delete(socket));
        return connector.connect(socket);
      },
      waitForReady: () => connector.waitForReady(),
      getCallCredentials: () => connector.getCallCredentials(),
      destroy: () => connector.destroy(),
    };
  };
  return new Proxy(credentials, {
    get(target, property) {
      if (property === "_createSecureConnector") return createSecureConnector;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

function streamEndReason(code: number | undefined, answered: boolean): XdsStreamEndReason {
  if (code === GrpcStatus.UNAVAILABLE) return answered ? "Reconnect" : "ConnectionError";
  if (code === GrpcStatus.CANCELLED || code === GrpcStatus.DEADLINE_EXCEEDED || code === GrpcStatus.UNKNOWN) {
    return "Reconnect";
  }
  return "Error";
}

export function createXdsClient(options: XdsClientOptions): XdsClient {
  return new XdsClient(options);
}
