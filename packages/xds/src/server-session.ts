import protobuf from "protobufjs/light.js";
import { XdsError } from "./errors.js";
import type { envoy, google } from "./gen/types.js";
import type { ResourceCache } from "./resource-cache.js";
import { SentVersions, versionsOf } from "./sent-versions.js";
import type { SharedResourceSections } from "./shared-sections.js";
import { type JsonValue, structToJson } from "./struct.js";
import { TYPE_URL_PREFIX, TypeUrl, typeRegistry } from "./type-registry.js";

type Entry = NonNullable<ReturnType<ResourceCache["internalEntry"]>>;

/** Who is on the other end of a stream, from the `node` of its first request. */
export interface NodeInfo {
  id: string;
  cluster: string;
  /** `Node.metadata` as JSON (ztunnel: NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME, ...). */
  metadata: { [key: string]: JsonValue };
  locality?: { region: string; zone: string; subZone: string };
  userAgentName: string;
  userAgentVersion: string;
  clientFeatures: string[];
}

/** A NACK received from a client. */
export interface NackRecord {
  typeUrl: string;
  nonce: string;
  /** SotW: the version the client keeps using. Empty for Delta. */
  versionInfo: string;
  errorDetail: { code: number; message: string };
  at: Date;
}

/** Per-stream view handed to hooks and listed by `XdsServer.streams()`. */
export interface XdsStreamContext {
  readonly id: number;
  readonly protocol: "delta" | "sotw";
  /** Remote address as reported by gRPC. */
  readonly peer: string;
  /** Request headers of the stream (lower-case keys). */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  /** Set once the first request carrying `node` arrived. */
  node: NodeInfo | undefined;
  /** Whatever the auth hook returned. */
  identity: unknown;
  /** Last NACKs of this stream, newest last (at most 16). */
  readonly nacks: NackRecord[];
  /** Last ACK per type URL: the nonce, and for SotW the version the client applied. */
  readonly acks: Map<string, { nonce: string; versionInfo: string }>;
}

/** What a session needs from its server. */
export interface SessionHost {
  readonly cache: ResourceCache;
  readonly maxNamesPerType: number;
  /** Encoded `resources` parts of Delta responses, shared between streams sent the same list. */
  readonly sections: SharedResourceSections;
  visible(ctx: XdsStreamContext, entry: Entry): boolean;
  /** True when the server has no visibility hook: every stream sees every resource. */
  readonly visibleToAll: boolean;
  /**
   * The next server-wide nonce sequence number (increasing). A stream's nonces only increase, so a
   * response built for one stream can go to another stream whose last nonce is lower.
   */
  nextNonceSeq(): number;
  resolve(ctx: XdsStreamContext, typeUrl: string, names: string[]): Promise<void>;
  /**
   * Names a non-wildcard Delta stream should also receive, given names it asked for (or that changed)
   * and what it is subscribed to; undefined when the server has no such hook.
   */
  related?(
    ctx: XdsStreamContext,
    typeUrl: string,
    names: readonly string[],
    subscribed: ReadonlySet<string>,
  ): Iterable<string>;
  onNack(ctx: XdsStreamContext, nack: NackRecord): void;
  onPush(ctx: XdsStreamContext, typeUrl: string, resources: number, bytes: number): void;
  debug(obj: object, msg: string): void;
}

const MAX_NACKS = 16;
/** Types that are never wildcard in SotW (they are always asked for by name). */
const NAMED_ONLY = new Set<string>([TypeUrl.clusterLoadAssignment, TypeUrl.routeConfiguration]);

export function nodeInfo(node: envoy.config.core.v3.Node | undefined): NodeInfo | undefined {
  if (node === undefined) return undefined;
  const info: NodeInfo = {
    id: node.id,
    cluster: node.cluster,
    metadata: structToJson(node.metadata),
    userAgentName: node.userAgentName,
    userAgentVersion: node.userAgentVersion ?? "",
    clientFeatures: node.clientFeatures,
  };
  if (node.locality !== undefined) info.locality = { ...node.locality };
  return info;
}

/** Distinct types one stream may watch: every xDS resource type, several times over. */
export const MAX_TYPES_PER_STREAM = 32;
/** Longest resource name a stream may send (a DNS name has at most 253 characters). */
export const MAX_NAME_LENGTH = 4096;

function knownType(typeUrl: string): boolean {
  return typeUrl.startsWith(TYPE_URL_PREFIX) && typeRegistry.has(typeUrl);
}

function statusOf(detail: google.rpc.Status): { code: number; message: string } {
  return { code: detail.code, message: detail.message };
}

abstract class Session {
  /** Sequence number of this stream's last nonce: its nonces only increase, so none repeats. */
  protected lastNonceSeq = 0;
  closed = false;

  constructor(
    protected readonly host: SessionHost,
    readonly ctx: XdsStreamContext,
    protected readonly send: (bytes: Uint8Array) => void,
    /** False while the stream holds too many unsent bytes: pushes then wait and coalesce. */
    protected readonly writable: () => boolean = () => true,
    /** Resolves once the stream may write (undefined when it may now): a response then goes out. */
    protected readonly turn: () => Promise<void> | undefined = () => undefined,
  ) {}

  protected nextNonce(): string {
    this.lastNonceSeq = this.host.nextNonceSeq();
    return this.lastNonceSeq.toString(36);
  }

  protected recordNack(typeUrl: string, nonce: string, versionInfo: string, detail: google.rpc.Status): void {
    const nack: NackRecord = { typeUrl, nonce, versionInfo, errorDetail: statusOf(detail), at: new Date() };
    this.ctx.nacks.push(nack);
    if (this.ctx.nacks.length > MAX_NACKS) this.ctx.nacks.shift();
    this.host.onNack(this.ctx, nack);
  }

  protected recordAck(typeUrl: string, nonce: string, versionInfo: string): void {
    this.ctx.acks.set(typeUrl, { nonce, versionInfo });
  }

  protected adoptNode(node: envoy.config.core.v3.Node | undefined): void {
    if (this.ctx.node === undefined && node !== undefined) this.ctx.node = nodeInfo(node);
  }

  /**
   * Refuses a stream's first request of one more type past {@link MAX_TYPES_PER_STREAM}, and names
   * longer than {@link MAX_NAME_LENGTH}: what one stream may make the server hold is bounded by
   * types x names x name length.
   */
  protected checkRequest(typeUrl: string, newType: boolean, watched: number, names: Iterable<string>): void {
    if (newType && watched >= MAX_TYPES_PER_STREAM) {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        `more than ${MAX_TYPES_PER_STREAM} resource types on one stream`,
        { typeUrl },
      );
    }
    for (const name of names) {
      if (name.length > MAX_NAME_LENGTH) {
        throw new XdsError(
          "ERR_XDS_INVALID_ARGUMENT",
          `a resource name longer than ${MAX_NAME_LENGTH} characters for ${typeUrl}`,
          { typeUrl },
        );
      }
    }
  }

  protected checkLimit(size: number, typeUrl: string): void {
    if (size > this.host.maxNamesPerType) {
      throw new XdsError(
        "ERR_XDS_INVALID_ARGUMENT",
        `more than ${this.host.maxNamesPerType} subscribed names for ${typeUrl}`,
        { typeUrl },
      );
    }
  }

  abstract onChange(typeUrl: string, names: ReadonlySet<string>, aliases: ReadonlySet<string>): void;

  /** Sends what was held while the stream was not writable: one response per type, latest versions. */
  abstract resume(): void;
}

interface DeltaWatch {
  wildcard: boolean;
  /** Names the client subscribed to (primary names or aliases). */
  readonly names: Set<string>;
  /**
   * Primary names the server subscribed the client to on its behalf (on-demand): the resources that
   * answered an alias, and what the `related` hook added (a Service's workloads, node-local pods).
   */
  readonly implied: Set<string>;
  /** Versions the client holds, by primary name (shared with the streams in step with this one). */
  readonly sent: SentVersions;
  nonce: string;
  awaitingAck: boolean;
  readonly dirty: Set<string>;
}

/** Server side of one `DeltaAggregatedResources` stream. */
export class DeltaSession extends Session {
  private readonly watches = new Map<string, DeltaWatch>();

  /** Subscriptions by type, for debugging. */
  subscriptions(): Map<string, { wildcard: boolean; names: string[] }> {
    const out = new Map<string, { wildcard: boolean; names: string[] }>();
    for (const [t, w] of this.watches) {
      out.set(t, { wildcard: w.wildcard, names: [...new Set([...w.names, ...w.implied])] });
    }
    return out;
  }

  async handle(req: envoy.service.discovery.v3.DeltaDiscoveryRequest): Promise<void> {
    this.adoptNode(req.node);
    const typeUrl = req.typeUrl;
    if (!knownType(typeUrl)) {
      this.host.debug({ stream: this.ctx.id, typeUrl }, "ignoring delta request for unknown type");
      return;
    }
    let w = this.watches.get(typeUrl);
    const first = w === undefined;
    if (first && req.errorDetail !== undefined) {
      // A NACK of a type this stream never asked for (a response of another stream or server): it is
      // no subscription, and its empty name list must not read as a wildcard one.
      this.host.debug(
        { stream: this.ctx.id, typeUrl, nonce: req.responseNonce },
        "NACK of an unwatched type",
      );
      return;
    }
    this.checkRequest(typeUrl, w === undefined, this.watches.size, [
      ...req.resourceNamesSubscribe,
      ...Object.keys(req.initialResourceVersions),
    ]);
    if (w === undefined) {
      w = {
        wildcard: false,
        names: new Set(),
        implied: new Set(),
        sent: this.sentVersions(typeUrl),
        nonce: "",
        awaitingAck: false,
        dirty: new Set(),
      };
      this.watches.set(typeUrl, w);
    }
    if (req.responseNonce !== "") {
      if (req.responseNonce === w.nonce) {
        w.awaitingAck = false;
        if (req.errorDetail !== undefined) this.recordNack(typeUrl, req.responseNonce, "", req.errorDetail);
        else this.recordAck(typeUrl, req.responseNonce, "");
      } else {
        this.host.debug({ stream: this.ctx.id, typeUrl, nonce: req.responseNonce }, "stale nonce");
      }
    }
    const subscribe = req.resourceNamesSubscribe;
    const wasWildcard = w.wildcard;
    if (first) {
      // An empty first request is the legacy form of a wildcard subscription.
      if (subscribe.length === 0) w.wildcard = true;
      // What the client holds from an earlier stream. A wildcard stream may hold more than
      // `maxNamesPerType` (it is sent every resource), so these count only as subscriptions, below.
      for (const [name, version] of Object.entries(req.initialResourceVersions)) w.sent.set(name, version);
    }
    const added: string[] = [];
    for (const name of subscribe) {
      if (name === "*") w.wildcard = true;
      else {
        w.names.add(name);
        added.push(name);
      }
    }
    /** Primary names followed for an alias given up now; kept if still related otherwise. */
    const released: string[] = [];
    for (const name of req.resourceNamesUnsubscribe) {
      if (name === "*") {
        w.wildcard = false;
        continue;
      }
      w.names.delete(name);
      const primary = this.host.cache.resolveName(typeUrl, name) ?? name;
      if (primary !== name && w.implied.delete(primary)) released.push(primary);
      else if (!this.askedFor(typeUrl, w, primary)) {
        // A resource the client still asks for by another of its names (its uid and `network/ip`, say)
        // stays followed: the client keeps it, so it must hear of its changes and its removal.
        w.implied.delete(primary);
        if (!w.wildcard) w.sent.delete(primary);
      }
      // `sent` is keyed by primary name; an alias is in it only when it once named a resource itself.
      if (name !== primary) w.sent.delete(name);
    }
    if (released.length > 0) {
      // A pod behind another followed Service, or on the client's node, stays followed; so does a
      // resource the client still asks for by name or by another alias (it keeps it, and must hear
      // of its removal).
      const kept = new Set(w.wildcard ? [] : this.addRelated(typeUrl, w, released));
      for (const primary of released) {
        if (w.wildcard || kept.has(primary) || this.askedFor(typeUrl, w, primary)) continue;
        w.sent.delete(primary);
      }
    }
    if (first && !w.wildcard) {
      // A non-wildcard stream stays subscribed to what it holds: an on-demand client back from a
      // reconnect (ztunnel's XDS_ON_DEMAND) subscribes to nothing and lists only what it has in
      // `initial_resource_versions`. Each is answered as a subscribed name: not sent when the version
      // is current, reported removed when gone, and followed from now on.
      const dropped = new Set(req.resourceNamesUnsubscribe);
      for (const name of Object.keys(req.initialResourceVersions)) {
        if (name === "*" || dropped.has(name) || w.names.has(name)) continue;
        w.names.add(name);
        added.push(name);
      }
    }
    this.checkLimit(w.names.size + w.implied.size, typeUrl);
    const wildcardOn = w.wildcard && (first || !wasWildcard);
    if (!first && added.length === 0 && !wildcardOn) {
      if (!w.awaitingAck && w.dirty.size > 0 && this.writable()) this.push(typeUrl, w);
      return;
    }
    const missing = added.filter((n) => this.host.cache.internalEntry(typeUrl, n) === undefined);
    if (missing.length > 0) await this.host.resolve(this.ctx, typeUrl, missing);
    // The response is computed once the stream may write, so it carries the state of that moment.
    const turn = this.turn();
    if (turn !== undefined) await turn;
    if (this.closed) return;
    // On-demand: what the server adds to what was asked for (istiod's "additional" subscriptions).
    const extra = w.wildcard ? [] : this.addRelated(typeUrl, w, added);
    if (wildcardOn && added.length === 0 && w.sent.size === 0 && this.host.visibleToAll) {
      // Every stream in this state is sent the whole type: the cache's own shared list, unfiltered.
      const all = this.host.cache.internalList(typeUrl);
      for (const name of w.dirty) {
        if (this.host.cache.internalEntry(typeUrl, name)?.name === name) w.dirty.delete(name);
      }
      this.respond(typeUrl, w, all, []);
      return;
    }

    const resources = new Map<string, Entry>();
    const removed = new Set<string>();
    if (wildcardOn) {
      for (const entry of this.host.cache.internalEntries(typeUrl)) {
        if (w.sent.get(entry.name) !== entry.version && this.host.visible(this.ctx, entry)) {
          resources.set(entry.name, entry);
        }
      }
    }
    for (const name of added) {
      const entry = this.host.cache.internalEntry(typeUrl, name);
      if (entry === undefined || !this.host.visible(this.ctx, entry)) {
        removed.add(name);
        w.sent.delete(name);
      } else if (!(first && w.sent.get(entry.name) === entry.version)) {
        // A name in resource_names_subscribe is always sent, even when the client has it.
        resources.set(entry.name, entry);
      }
      // The primary name answers for the alias from now on: its changes reach the client.
      if (entry !== undefined && !w.wildcard && entry.name !== name) w.implied.add(entry.name);
    }
    for (const name of extra) {
      const entry = this.host.cache.internalEntry(typeUrl, name);
      if (entry === undefined || !this.host.visible(this.ctx, entry)) continue;
      if (w.sent.get(entry.name) !== entry.version) resources.set(entry.name, entry);
    }
    if (first) {
      // Resources the client remembers from an earlier stream that are gone or no longer wanted.
      for (const name of [...w.sent.keys()]) {
        const entry = this.host.cache.internalEntry(typeUrl, name);
        if (entry === undefined || entry.name !== name || !this.matches(w, entry)) {
          removed.add(name);
          w.sent.delete(name);
        }
      }
    }
    // Changes that arrived while this request was waiting are covered by this response.
    for (const name of w.dirty) if (resources.has(name)) w.dirty.delete(name);
    this.respond(typeUrl, w, [...resources.values()], [...removed]);
  }

  private sentVersions(typeUrl: string): SentVersions {
    // A record that outgrows its shared base moves onto the cache's current versions, which the
    // streams in step with it share too.
    return new SentVersions(() => {
      const list = this.host.cache.internalList(typeUrl);
      return list.length === 0 ? undefined : versionsOf(list);
    });
  }

  /** True when the stream subscribes to `primary` by that name or by one of its aliases. */
  private askedFor(typeUrl: string, w: DeltaWatch, primary: string): boolean {
    if (w.names.has(primary)) return true;
    const entry = this.host.cache.internalEntry(typeUrl, primary);
    return entry?.aliases.some((a) => w.names.has(a)) === true;
  }

  private matches(w: DeltaWatch, entry: Entry): boolean {
    if (!this.host.visible(this.ctx, entry)) return false;
    if (w.wildcard || w.names.has(entry.name) || w.implied.has(entry.name)) return true;
    for (const a of entry.aliases) if (w.names.has(a)) return true;
    return false;
  }

  /**
   * Asks the server's `related` hook which names to add for `names` and subscribes the stream to the
   * new ones; returns them. Names already subscribed are left out.
   */
  private addRelated(typeUrl: string, w: DeltaWatch, names: readonly string[]): string[] {
    const related = this.host.related;
    if (related === undefined) return [];
    const subscribed = new Set([...w.names, ...w.implied]);
    const out: string[] = [];
    for (const name of related.call(this.host, this.ctx, typeUrl, names, subscribed)) {
      if (typeof name !== "string" || name === "" || name === "*" || subscribed.has(name)) continue;
      subscribed.add(name);
      w.implied.add(name);
      out.push(name);
    }
    this.checkLimit(w.names.size + w.implied.size, typeUrl);
    return out;
  }

  onChange(typeUrl: string, names: ReadonlySet<string>, aliases: ReadonlySet<string>): void {
    const w = this.watches.get(typeUrl);
    if (w === undefined || this.closed) return;
    const unmatched: string[] = [];
    for (const n of names) {
      if (w.wildcard || w.names.has(n) || w.implied.has(n) || w.sent.has(n)) w.dirty.add(n);
      else unmatched.push(n);
    }
    for (const a of aliases) if (w.names.has(a)) w.dirty.add(a);
    // A new pod behind a subscribed Service, or on the client's node, joins its subscriptions.
    if (!w.wildcard && unmatched.length > 0 && this.host.related !== undefined) {
      try {
        for (const name of this.addRelated(typeUrl, w, unmatched)) w.dirty.add(name);
      } catch (err) {
        this.host.debug({ stream: this.ctx.id, typeUrl, err: String(err) }, "related names failed");
      }
    }
    if (!w.awaitingAck && w.dirty.size > 0 && this.writable()) this.push(typeUrl, w);
  }

  resume(): void {
    for (const [typeUrl, w] of this.watches) {
      if (this.closed || !this.writable()) return;
      if (!w.awaitingAck && w.dirty.size > 0) this.push(typeUrl, w);
    }
  }

  private push(typeUrl: string, w: DeltaWatch): void {
    const resources = new Map<string, Entry>();
    const removed: string[] = [];
    for (const name of w.dirty) {
      const entry = this.host.cache.internalEntry(typeUrl, name);
      if (entry !== undefined && this.matches(w, entry)) {
        if (w.sent.get(entry.name) !== entry.version) resources.set(entry.name, entry);
      } else if (entry !== undefined) {
        if (w.sent.delete(entry.name)) removed.push(entry.name);
      } else if (w.sent.delete(name)) {
        removed.push(name);
      }
    }
    w.dirty.clear();
    if (resources.size > 0 || removed.length > 0) this.respond(typeUrl, w, [...resources.values()], removed);
  }

  private respond(typeUrl: string, w: DeltaWatch, resources: readonly Entry[], removed: string[]): void {
    const version = this.host.cache.version(typeUrl);
    const section = this.host.sections.encode(typeUrl, resources);
    // Taking the section's shared versions walks what the stream holds: worth it when that is no more
    // than the section (a first push); a few hundred changes to a full stream go in one by one.
    if (section.shared && w.sent.size <= resources.length) w.sent.setAll(section.versions());
    else for (const entry of resources) w.sent.set(entry.name, entry.version);
    let bytes: Uint8Array;
    const built = section.response;
    if (
      removed.length === 0 &&
      built !== undefined &&
      built.version === version &&
      built.nonceSeq > this.lastNonceSeq
    ) {
      // Another stream was sent these exact bytes (same resources, version, type and no removals);
      // its nonce is newer than any this stream has had, so it is unique on this stream as well.
      this.lastNonceSeq = built.nonceSeq;
      bytes = built.bytes;
    } else {
      const nonce = this.nextNonce();
      const head = protobuf.Writer.create().uint32(10).string(version).finish();
      const tail = protobuf.Writer.create();
      tail.uint32(34).string(typeUrl);
      tail.uint32(42).string(nonce);
      for (const name of removed) tail.uint32(50).string(name);
      // Fields in number order, as one encoder would write them: 1, the repeated 2, then 4, 5, 6.
      bytes = Buffer.concat([head, section.bytes, tail.finish()]);
      if (removed.length === 0)
        section.keepResponse({ version, nonceSeq: this.lastNonceSeq, bytes }, head.length);
    }
    w.nonce = this.lastNonceSeq.toString(36);
    w.awaitingAck = true;
    this.send(bytes);
    this.host.onPush(this.ctx, typeUrl, resources.length, bytes.length);
  }
}

interface SotwWatch {
  wildcard: boolean;
  names: string[];
  everNamed: boolean;
  nonce: string;
  awaitingAck: boolean;
  dirty: boolean;
}

/** Server side of one `StreamAggregatedResources` (state of the world) stream. */
export class SotwSession extends Session {
  private readonly watches = new Map<string, SotwWatch>();

  subscriptions(): Map<string, { wildcard: boolean; names: string[] }> {
    const out = new Map<string, { wildcard: boolean; names: string[] }>();
    for (const [t, w] of this.watches) out.set(t, { wildcard: w.wildcard, names: [...w.names] });
    return out;
  }

  async handle(req: envoy.service.discovery.v3.DiscoveryRequest): Promise<void> {
    this.adoptNode(req.node);
    const typeUrl = req.typeUrl;
    if (!knownType(typeUrl)) {
      this.host.debug({ stream: this.ctx.id, typeUrl }, "ignoring request for unknown type");
      return;
    }
    let w = this.watches.get(typeUrl);
    const first = w === undefined;
    if (first && req.errorDetail !== undefined) {
      // A NACK of a type this stream never asked for is no subscription.
      this.host.debug(
        { stream: this.ctx.id, typeUrl, nonce: req.responseNonce },
        "NACK of an unwatched type",
      );
      return;
    }
    // A first request of a type is answered whatever nonce it carries: this stream sent it none, and a
    // client back from a reconnect may echo the last nonce of its old stream.
    if (req.responseNonce !== "" && w !== undefined) {
      if (req.responseNonce !== w.nonce) {
        // A stale nonce answers a response the client has already superseded: nothing to do.
        this.host.debug({ stream: this.ctx.id, typeUrl, nonce: req.responseNonce }, "stale nonce");
        return;
      }
      w.awaitingAck = false;
      if (req.errorDetail !== undefined) {
        this.recordNack(typeUrl, req.responseNonce, req.versionInfo, req.errorDetail);
      } else {
        this.recordAck(typeUrl, req.responseNonce, req.versionInfo);
      }
    }
    this.checkRequest(typeUrl, w === undefined, this.watches.size, req.resourceNames);
    if (w === undefined) {
      w = { wildcard: false, names: [], everNamed: false, nonce: "", awaitingAck: false, dirty: false };
      this.watches.set(typeUrl, w);
    }
    const names = [...new Set(req.resourceNames.filter((n) => n !== "*"))].sort();
    this.checkLimit(names.length, typeUrl);
    const wildcard =
      req.resourceNames.includes("*") || (names.length === 0 && !w.everNamed && !NAMED_ONLY.has(typeUrl));
    const changed =
      first ||
      wildcard !== w.wildcard ||
      names.length !== w.names.length ||
      names.some((n, i) => n !== w.names[i]);
    w.wildcard = wildcard;
    w.names = names;
    if (names.length > 0) w.everNamed = true;
    if (changed) {
      const missing = names.filter((n) => this.host.cache.internalEntry(typeUrl, n) === undefined);
      if (missing.length > 0) await this.host.resolve(this.ctx, typeUrl, missing);
      const turn = this.turn();
      if (turn !== undefined) await turn;
      if (this.closed) return;
      this.respond(typeUrl, w);
    } else if (w.dirty && !w.awaitingAck && this.writable()) {
      this.respond(typeUrl, w);
    }
  }

  onChange(typeUrl: string, names: ReadonlySet<string>, aliases: ReadonlySet<string>): void {
    const w = this.watches.get(typeUrl);
    if (w === undefined || this.closed) return;
    let hit = w.wildcard;
    if (!hit) {
      for (const n of w.names) {
        if (names.has(n) || aliases.has(n)) {
          hit = true;
          break;
        }
      }
    }
    if (!hit) return;
    w.dirty = true;
    if (!w.awaitingAck && this.writable()) this.respond(typeUrl, w);
  }

  resume(): void {
    for (const [typeUrl, w] of this.watches) {
      if (this.closed || !this.writable()) return;
      if (w.dirty && !w.awaitingAck) this.respond(typeUrl, w);
    }
  }

  private respond(typeUrl: string, w: SotwWatch): void {
    const cache = this.host.cache;
    const out = protobuf.Writer.create();
    out.uint32(10).string(cache.version(typeUrl));
    let count = 0;
    if (w.wildcard) {
      for (const entry of cache.internalEntries(typeUrl)) {
        if (!this.host.visible(this.ctx, entry)) continue;
        out.uint32(18).bytes(entry.anyBytes());
        count++;
      }
    } else {
      const seen = new Set<string>();
      for (const name of w.names) {
        const entry = cache.internalEntry(typeUrl, name);
        if (entry === undefined || seen.has(entry.name) || !this.host.visible(this.ctx, entry)) continue;
        seen.add(entry.name);
        out.uint32(18).bytes(entry.anyBytes());
        count++;
      }
    }
    const nonce = this.nextNonce();
    out.uint32(34).string(typeUrl);
    out.uint32(42).string(nonce);
    const bytes = out.finish();
    w.nonce = nonce;
    w.awaitingAck = true;
    w.dirty = false;
    this.send(bytes);
    this.host.onPush(this.ctx, typeUrl, count, bytes.length);
  }
}
