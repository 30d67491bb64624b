import { createHash } from "node:crypto";
import protobuf from "protobufjs/light.js";
import { XdsError } from "./errors.js";
import {
  type MessageInit,
  type MessageOf,
  messageNameOf,
  TYPE_URL_PREFIX,
  typeRegistry,
} from "./type-registry.js";

/** One cached resource: its payload is encoded once per version and shared by every stream. */
export interface CachedResource {
  readonly typeUrl: string;
  readonly name: string;
  /** Content hash of the payload; equal payloads have equal versions. */
  readonly version: string;
  readonly aliases: readonly string[];
  /** Encoded payload (the `Any.value`). */
  readonly payload: Uint8Array;
}

/** A batch of changes to one type, delivered to {@link ResourceCache.onChange} listeners. */
export interface CacheChange {
  readonly typeUrl: string;
  /** Names that were set (with a new version) or deleted. */
  readonly names: ReadonlySet<string>;
  /** Aliases that were added or dropped by these changes. */
  readonly aliases: ReadonlySet<string>;
  /** The type version after the change. */
  readonly version: string;
}

/** Options for {@link ResourceCache.set}. */
export interface SetOptions {
  /**
   * Other names the resource answers to, e.g. `network/IP` for an Address. Default none. A frozen
   * array of distinct aliases without the name is kept as it is, not copied: one array per resource,
   * not two, when the caller keeps its own.
   */
  aliases?: readonly string[];
}

/** Counters kept by the cache, for benchmarks and debugging. */
export interface CacheStats {
  /** Payload encodings done (one per new version). */
  encodes: number;
  /** Bytes produced by those encodings. */
  encodedBytes: number;
  /** Bytes of the resources held in shared slabs (the encoded Delta `Resource` of each). */
  slabBytesInUse: number;
  /** Bytes of the slabs written since the cache last repacked them: at most about twice those in use. */
  slabBytesWritten: number;
}

/**
 * One resource, held as its encoded Delta `envoy.service.discovery.v3.Resource` (version, the `Any`,
 * name, aliases) in a span of a shared slab. The SotW `Any` and the payload are spans inside it, so
 * the payload bytes are held once, and no `Uint8Array` object is kept per entry: views are made when
 * asked for. Immutable: the same entry always yields the same bytes (the cache may move them to
 * another slab, never change them).
 */
class Entry implements CachedResource {
  constructor(
    readonly typeUrl: string,
    readonly name: string,
    readonly version: string,
    readonly aliases: readonly string[],
    private slab: Uint8Array,
    private start: number,
    readonly length: number,
  ) {}

  /** Copies the entry's bytes into `slabs` and reads them from there from now on. */
  moveTo(slabs: Slabs): void {
    slabs.copy(this.deltaBytes());
    this.slab = slabs.lastSlab;
    this.start = slabs.lastStart;
  }

  /** Encoded payload (the `Any.value`): a view into the entry's bytes. */
  get payload(): Uint8Array {
    const slab = this.slab;
    const anyStart = fieldStart(slab, this.start, this.start + this.length, 2);
    const start = fieldStart(slab, anyStart, anyStart + fieldLength, 2);
    return slab.subarray(start, start + fieldLength);
  }

  /** Encoded `envoy.service.discovery.v3.Resource`: a view of the entry's bytes. */
  deltaBytes(): Uint8Array {
    return this.slab.subarray(this.start, this.start + this.length);
  }

  /** Encoded `google.protobuf.Any`: a view into the entry's bytes. */
  anyBytes(): Uint8Array {
    const start = fieldStart(this.slab, this.start, this.start + this.length, 2);
    return this.slab.subarray(start, start + fieldLength);
  }
}

/** Length of the field {@link fieldStart} found last (module state: no object per lookup). */
let fieldLength = 0;

/**
 * Where the value of the length-delimited field `field` starts in the message `bytes[start, end)`; its
 * length is left in {@link fieldLength}. The cache wrote the message, so the field is there.
 */
function fieldStart(bytes: Uint8Array, start: number, end: number, field: number): number {
  let i = start;
  while (i < end) {
    let key = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[i++] as number;
      key += (b & 127) * 2 ** shift;
      if (b < 128) break;
    }
    // Every field the cache writes in a Resource or an Any is length-delimited (wire type 2).
    let length = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[i++] as number;
      length += (b & 127) * 2 ** shift;
      if (b < 128) break;
    }
    if (Math.floor(key / 8) === field) {
      fieldLength = length;
      return i;
    }
    i += length;
  }
  throw new XdsError("ERR_XDS_ENCODE", `cached resource without field ${field}`);
}

/** Encodes a Delta `Resource` as protobufjs encodes the message, fields in number order. */
function encodeResource(
  typeUrl: string,
  name: string,
  version: string,
  aliases: readonly string[],
  payload: Uint8Array,
): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32(10).string(version);
  w.uint32(18).fork().uint32(10).string(typeUrl).uint32(18).bytes(payload).ldelim();
  w.uint32(26).string(name);
  for (const alias of aliases) w.uint32(34).string(alias);
  return w.finish();
}

/**
 * Packs entries' bytes into shared slabs: one `Uint8Array` object per slab instead of one per entry
 * (each costs about 100 bytes beyond its bytes in Node 20, 200 with a buffer of its own). A slab is
 * freed when no entry in it is left; large entries get a buffer of their own. The cache repacks its
 * entries into fresh slabs when the slabs written hold more than twice the bytes still in use, so
 * entries that outlive their neighbours cannot keep mostly dead slabs alive.
 */
class Slabs {
  private slab = new Uint8Array(0);
  private used = 0;
  /** Slab the last {@link Slabs.copy} wrote to, and where. */
  lastSlab: Uint8Array = this.slab;
  lastStart = 0;
  /** Bytes of every slab this instance created. */
  allocated = 0;

  constructor(
    readonly slabBytes = 16 * 1024,
    readonly ownBufferFrom = 2 * 1024,
  ) {}

  /** True when bytes of this length go to a slab rather than a buffer of their own. */
  inSlab(length: number): boolean {
    return length < this.ownBufferFrom;
  }

  copy(bytes: Uint8Array): void {
    if (bytes.length >= this.ownBufferFrom) {
      // Kept as it is when it is a whole buffer (no pool's slab shared with short-lived bytes).
      const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
      this.lastSlab = whole ? bytes : new Uint8Array(bytes);
      this.lastStart = 0;
      return;
    }
    if (this.used + bytes.length > this.slab.length) {
      this.slab = new Uint8Array(this.slabBytes);
      this.allocated += this.slabBytes;
      this.used = 0;
    }
    this.slab.set(bytes, this.used);
    this.lastSlab = this.slab;
    this.lastStart = this.used;
    this.used += bytes.length;
  }
}

const NO_ALIASES: readonly string[] = Object.freeze([]);

/** True when `list` has no repeated value and not `name`. */
function distinctWithout(name: string, list: readonly string[]): boolean {
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    if (a === name) return false;
    for (let j = 0; j < i; j++) if (list[j] === a) return false;
  }
  return true;
}

/**
 * The distinct aliases other than the name, in order, in an array of exactly that length (one grown by
 * `push` keeps room for 17); one shared empty list when there are none. A frozen list that already is
 * that is kept: it cannot change under the cache.
 */
function aliasList(name: string, given: readonly string[] | undefined, typeUrl: string): readonly string[] {
  if (given === undefined) return NO_ALIASES;
  if (!Array.isArray(given) || !given.every((a) => typeof a === "string")) {
    throw new XdsError("ERR_XDS_INVALID_ARGUMENT", "aliases must be an array of strings", {
      typeUrl,
      resourceName: name,
    });
  }
  if (given.length === 0) return NO_ALIASES;
  if (Object.isFrozen(given) && distinctWithout(name, given)) return given;
  if (given.length === 1) return given[0] === name ? NO_ALIASES : [given[0] as string];
  const out: string[] = [];
  for (const alias of given) if (alias !== name && !out.includes(alias)) out.push(alias);
  return out.length === 0 ? NO_ALIASES : out.slice();
}

const EMPTY_LIST: readonly Entry[] = Object.freeze([]);

interface TypeState {
  counter: number;
  readonly entries: Map<string, Entry>;
  readonly aliasIndex: Map<string, string>;
  /** Every entry in the map's order, built on demand and dropped at the next change. */
  list: readonly Entry[] | undefined;
}

/** 16 base64url characters of the payload's SHA-256, as a string of its own (not a slice of a longer one). */
function hashVersion(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest().toString("base64url", 0, 12);
}

type Listener = (change: CacheChange) => void;

/**
 * Versioned store of xDS resources by type URL and name. Each resource is encoded once when it is
 * set; streams share those bytes. Changes are reported to listeners per type, coalesced inside
 * {@link ResourceCache.batch}.
 */
export class ResourceCache {
  private readonly types = new Map<string, TypeState>();
  private readonly listeners = new Set<Listener>();
  private batchDepth = 0;
  private readonly pending = new Map<string, { names: Set<string>; aliases: Set<string> }>();
  private readonly counters = { encodes: 0, encodedBytes: 0 };
  private slabs = new Slabs();
  /** Bytes of the entries held in slabs (not those with a buffer of their own). */
  private slabBytesInUse = 0;

  private state(typeUrl: string): TypeState {
    let s = this.types.get(typeUrl);
    if (s === undefined) {
      s = { counter: 0, entries: new Map(), aliasIndex: new Map(), list: undefined };
      this.types.set(typeUrl, s);
    }
    return s;
  }

  private checkType(typeUrl: string): void {
    if (typeof typeUrl !== "string" || !typeUrl.startsWith(TYPE_URL_PREFIX) || !typeRegistry.has(typeUrl)) {
      throw new XdsError("ERR_XDS_UNKNOWN_TYPE", `unknown resource type URL "${String(typeUrl)}"`, {
        typeUrl,
      });
    }
  }

  /** Encodes and stores a resource. Setting identical content again is a no-op. */
  set<K extends string>(
    typeUrl: K,
    name: string,
    resource: MessageInit<MessageOf<K>>,
    options: SetOptions = {},
  ): void {
    this.checkType(typeUrl);
    const payload = typeRegistry.encode(typeUrl as string, resource as never);
    this.counters.encodes++;
    this.counters.encodedBytes += payload.length;
    this.setEncoded(typeUrl, name, payload, options);
  }

  /** Stores an already encoded payload (the `Any.value` bytes) without re-encoding it. */
  setEncoded(typeUrl: string, name: string, payload: Uint8Array, options: SetOptions = {}): void {
    this.checkType(typeUrl);
    if (typeof name !== "string" || name === "" || name === "*") {
      throw new XdsError("ERR_XDS_INVALID_ARGUMENT", `invalid resource name ${JSON.stringify(name)}`, {
        typeUrl,
      });
    }
    const aliases = aliasList(name, options?.aliases, typeUrl);
    const version = hashVersion(payload);
    const s = this.state(typeUrl);
    const old = s.entries.get(name);
    if (old !== undefined && old.version === version && sameList(old.aliases, aliases)) return;
    const changedAliases = new Set<string>();
    if (old !== undefined) {
      for (const a of old.aliases) {
        if (s.aliasIndex.get(a) === name) s.aliasIndex.delete(a);
        changedAliases.add(a);
      }
    }
    for (const a of aliases) {
      s.aliasIndex.set(a, name);
      changedAliases.add(a);
    }
    const bytes = encodeResource(typeUrl, name, version, aliases, payload);
    const slabs = this.slabs;
    slabs.copy(bytes);
    s.entries.set(
      name,
      new Entry(typeUrl, name, version, aliases, slabs.lastSlab, slabs.lastStart, bytes.length),
    );
    if (old !== undefined) this.released(old);
    if (slabs.inSlab(bytes.length)) this.slabBytesInUse += bytes.length;
    this.repackIfSparse();
    s.list = undefined;
    this.record(typeUrl, name, changedAliases);
  }

  /** Removes a resource; returns false when it was not there. */
  delete(typeUrl: string, name: string): boolean {
    const s = this.types.get(typeUrl);
    const old = s?.entries.get(name);
    if (s === undefined || old === undefined) return false;
    s.entries.delete(name);
    this.released(old);
    s.list = undefined;
    for (const a of old.aliases) if (s.aliasIndex.get(a) === name) s.aliasIndex.delete(a);
    this.record(typeUrl, name, new Set(old.aliases));
    return true;
  }

  private released(entry: Entry): void {
    if (this.slabs.inSlab(entry.length)) this.slabBytesInUse -= entry.length;
  }

  /**
   * Moves every slab entry into fresh slabs when the slabs written since the last repack hold more than
   * twice the bytes in use (and a few slabs more): replaced entries leave dead bytes behind, and one
   * live entry keeps its whole slab. Amortized, each byte written is copied at most once more.
   */
  private repackIfSparse(): void {
    const slabs = this.slabs;
    if (slabs.allocated <= 2 * this.slabBytesInUse + 4 * slabs.slabBytes) return;
    const fresh = new Slabs(slabs.slabBytes, slabs.ownBufferFrom);
    for (const s of this.types.values()) {
      for (const entry of s.entries.values()) if (fresh.inSlab(entry.length)) entry.moveTo(fresh);
    }
    this.slabs = fresh;
  }

  /** Runs `fn` and reports all its changes as one change per type when it returns. */
  batch<T>(fn: () => T): T {
    this.batchDepth++;
    try {
      return fn();
    } finally {
      this.batchDepth--;
      if (this.batchDepth === 0) this.emit();
    }
  }

  /** Decoded resource, or undefined. Looks up aliases too. */
  get<K extends string>(typeUrl: K, name: string): MessageOf<K> | undefined {
    const entry = this.entry(typeUrl, name);
    return entry === undefined
      ? undefined
      : (typeRegistry.decode(typeUrl as string, entry.payload) as unknown as MessageOf<K>);
  }

  /** The cached entry for a name or alias. */
  entry(typeUrl: string, nameOrAlias: string): CachedResource | undefined {
    return this.internalEntry(typeUrl, nameOrAlias);
  }

  /** @internal */
  internalEntry(typeUrl: string, nameOrAlias: string): Entry | undefined {
    const s = this.types.get(typeUrl);
    if (s === undefined) return undefined;
    const direct = s.entries.get(nameOrAlias);
    if (direct !== undefined) return direct;
    const primary = s.aliasIndex.get(nameOrAlias);
    return primary === undefined ? undefined : s.entries.get(primary);
  }

  /** @internal Iterates every entry of a type. */
  internalEntries(typeUrl: string): IterableIterator<Entry> {
    return (this.types.get(typeUrl)?.entries ?? new Map<string, Entry>()).values();
  }

  /**
   * @internal Every entry of a type in iteration order, as one frozen array shared by every caller
   * until the type changes (so streams sent the whole type share one list, its encoding and versions).
   */
  internalList(typeUrl: string): readonly Entry[] {
    const s = this.types.get(typeUrl);
    if (s === undefined) return EMPTY_LIST;
    if (s.list === undefined) s.list = Object.freeze([...s.entries.values()]);
    return s.list;
  }

  /** Primary name for a name or alias, or undefined. */
  resolveName(typeUrl: string, nameOrAlias: string): string | undefined {
    return this.internalEntry(typeUrl, nameOrAlias)?.name;
  }

  /** Names of every resource of a type. */
  names(typeUrl: string): string[] {
    return [...(this.types.get(typeUrl)?.entries.keys() ?? [])];
  }

  /** Number of resources of one type, or of all types. */
  size(typeUrl?: string): number {
    if (typeUrl !== undefined) return this.types.get(typeUrl)?.entries.size ?? 0;
    let n = 0;
    for (const s of this.types.values()) n += s.entries.size;
    return n;
  }

  /** Version of a type: changes whenever any of its resources changes. "0" before the first change. */
  version(typeUrl: string): string {
    return String(this.types.get(typeUrl)?.counter ?? 0);
  }

  /** Type URLs that have (or had) resources. */
  typeUrls(): string[] {
    return [...this.types.keys()];
  }

  /** Encoding counters, and the bytes its slabs hold. */
  stats(): CacheStats {
    return {
      ...this.counters,
      slabBytesInUse: this.slabBytesInUse,
      slabBytesWritten: this.slabs.allocated,
    };
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  onChange(listener: (change: CacheChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private record(typeUrl: string, name: string, aliases: Set<string>): void {
    let p = this.pending.get(typeUrl);
    if (p === undefined) {
      p = { names: new Set(), aliases: new Set() };
      this.pending.set(typeUrl, p);
    }
    p.names.add(name);
    for (const a of aliases) p.aliases.add(a);
    if (this.batchDepth === 0) this.emit();
  }

  private emit(): void {
    if (this.pending.size === 0) return;
    const changes: CacheChange[] = [];
    for (const [typeUrl, p] of this.pending) {
      const s = this.state(typeUrl);
      s.counter++;
      changes.push({ typeUrl, names: p.names, aliases: p.aliases, version: String(s.counter) });
    }
    this.pending.clear();
    for (const change of changes) {
      for (const listener of this.listeners) listener(change);
    }
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Short type name for labels and logs, e.g. `Address` for `type.googleapis.com/istio.workload.Address`. */
export function shortTypeName(typeUrl: string): string {
  const name = messageNameOf(typeUrl);
  return name.slice(name.lastIndexOf(".") + 1);
}
