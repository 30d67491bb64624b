// The `resources` part of a Delta response, encoded once and shared by the streams that are sent the
// same resources. Wildcard clients that connect together (a fleet of ztunnels after a control plane
// restart) all get every resource of a type in the cache's order; without this, each response copies
// every resource's bytes again, one small copy per resource.
import protobuf from "protobufjs/light.js";

/** What the section needs of a cache entry: immutable, so the same entry always encodes the same. */
export interface SectionEntry {
  deltaBytes(): Uint8Array;
}

/**
 * One encoded section per type URL: the last large list encoded. A list with the same entries (by
 * identity) in the same order reuses its bytes. Holds at most one list and its bytes per type.
 */
export class SharedResourceSections {
  private readonly byType = new Map<string, { entries: readonly SectionEntry[]; bytes: Uint8Array }>();

  /** Lists shorter than this are encoded each time: sharing them saves little. */
  constructor(private readonly minEntries = 256) {}

  /** The repeated `resources` field (field 2) of a `DeltaDiscoveryResponse` holding `entries`. */
  encode(typeUrl: string, entries: readonly SectionEntry[]): Uint8Array {
    if (entries.length < this.minEntries) return encodeSection(entries);
    const last = this.byType.get(typeUrl);
    if (last !== undefined && sameEntries(last.entries, entries)) return last.bytes;
    const bytes = encodeSection(entries);
    this.byType.set(typeUrl, { entries: [...entries], bytes });
    return bytes;
  }

  /** Forgets every section (the server closed). */
  clear(): void {
    this.byType.clear();
  }
}

function encodeSection(entries: readonly SectionEntry[]): Uint8Array {
  const out = protobuf.Writer.create();
  for (const entry of entries) out.uint32(18).bytes(entry.deltaBytes());
  return out.finish();
}

function sameEntries(a: readonly SectionEntry[], b: readonly SectionEntry[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
