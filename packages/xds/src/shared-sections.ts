// The `resources` part of a Delta response, encoded once and shared by the streams that are sent the
// same resources. Wildcard clients that connect together (a fleet of ztunnels after a control plane
// restart) all get every resource of a type in the cache's order; without this, each response copies
// every resource's bytes again, one small copy per resource. A shared section also carries the
// versions it holds (the streams' shared record of what they were sent) and the last whole response
// built around it, which the next stream in the same state sends as it is.
import protobuf from "protobufjs/light.js";
import { type VersionedEntry, versionsOf } from "./sent-versions.js";

/** What the section needs of a cache entry: immutable, so the same entry always encodes the same. */
export interface SectionEntry extends VersionedEntry {
  deltaBytes(): Uint8Array;
}

/** A whole response built around a shared section, with no removed names. */
export interface AssembledResponse {
  /** The type version in the response. */
  readonly version: string;
  /** The server-wide nonce sequence number the response carries. */
  readonly nonceSeq: number;
  readonly bytes: Uint8Array;
}

/** An encoded `resources` field, shared or built for one response. */
export interface EncodedSection {
  readonly bytes: Uint8Array;
  /** Kept for later lists with the same entries, which get this same object. */
  readonly shared: boolean;
  /** name -> version of the section's entries (built once for a shared section). */
  versions(): ReadonlyMap<string, string>;
  /** Shared sections only: the last response built around it with no removed names. */
  readonly response: AssembledResponse | undefined;
  /**
   * Keeps `response` for the next stream in the same state. `offset` is where the section's bytes
   * start in it: the section then refers to them there and drops its own copy.
   */
  keepResponse(response: AssembledResponse, offset: number): void;
}

class Section implements EncodedSection {
  response: AssembledResponse | undefined;
  /** When a stream last asked for this list (ms, `Date.now()`); shared sections only. */
  usedAt = 0;
  constructor(
    readonly entries: readonly SectionEntry[],
    public bytes: Uint8Array,
    readonly shared: boolean,
  ) {}

  keepResponse(response: AssembledResponse, offset: number): void {
    if (!this.shared) return;
    this.response = response;
    this.bytes = response.bytes.subarray(offset, offset + this.bytes.length);
  }

  versions(): ReadonlyMap<string, string> {
    if (this.shared) return versionsOf(this.entries);
    return new Map(this.entries.map((e) => [e.name, e.version]));
  }
}

/**
 * One encoded section per type URL: the last large list encoded. A list with the same entries (by
 * identity) in the same order reuses it. Holds at most one list, its bytes and one response per type,
 * and lets go of them once no stream has asked for that list for `idleMs`: they serve the streams that
 * connect together (a burst of reconnecting clients), and in a steady state they are the size of a
 * whole type's push (megabytes at 10,000 workloads) kept for a client that may never come.
 */
export class SharedResourceSections {
  private readonly byType = new Map<string, Section>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    /** Lists shorter than this are encoded each time: sharing them saves little. */
    private readonly minEntries = 256,
    /** A section no stream asked for in this long is dropped. */
    private readonly idleMs = 30_000,
  ) {}

  /** The repeated `resources` field (field 2) of a `DeltaDiscoveryResponse` holding `entries`. */
  encode(typeUrl: string, entries: readonly SectionEntry[]): EncodedSection {
    if (entries.length < this.minEntries) return new Section(entries, encodeSection(entries), false);
    this.armExpiry(this.idleMs);
    let section = this.byType.get(typeUrl);
    if (section === undefined || !sameEntries(section.entries, entries)) {
      // A frozen list (the cache's own) cannot change under the section; any other is copied.
      const kept = Object.isFrozen(entries) ? entries : Object.freeze([...entries]);
      section = new Section(kept, encodeSection(kept), true);
      this.byType.set(typeUrl, section);
    }
    section.usedAt = Date.now();
    return section;
  }

  /** Forgets every section (the server closed). */
  clear(): void {
    this.byType.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** One timer for all types, not keeping the process alive, due when the oldest section expires. */
  private armExpiry(inMs: number): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = Date.now();
      let next = Number.POSITIVE_INFINITY;
      for (const [typeUrl, section] of this.byType) {
        const left = section.usedAt + this.idleMs - now;
        if (left > 0) next = Math.min(next, left);
        else this.byType.delete(typeUrl);
      }
      if (next !== Number.POSITIVE_INFINITY) this.armExpiry(next);
    }, inMs);
    this.timer.unref();
  }
}

function encodeSection(entries: readonly SectionEntry[]): Uint8Array {
  const out = protobuf.Writer.create();
  for (const entry of entries) out.uint32(18).bytes(entry.deltaBytes());
  return out.finish();
}

function sameEntries(a: readonly SectionEntry[], b: readonly SectionEntry[]): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
