// What one Delta stream holds of one type: the version of every resource it was sent, by name. A fleet
// of wildcard ztunnels holds the same thousands of entries, so instead of a map per stream the record
// is a read-only base shared by the streams in step plus this stream's own differences from it.

/** What a versions list needs of an entry. */
export interface VersionedEntry {
  readonly name: string;
  readonly version: string;
}

const versionsByList = new WeakMap<readonly VersionedEntry[], ReadonlyMap<string, string>>();

/**
 * name -> version of a list of entries, built once per list object (which must not change afterwards:
 * a frozen cache list or a shared section's own copy) and shared by everyone who asks for that list.
 */
export function versionsOf(list: readonly VersionedEntry[]): ReadonlyMap<string, string> {
  let versions = versionsByList.get(list);
  if (versions === undefined) {
    const built = new Map<string, string>();
    for (const entry of list) built.set(entry.name, entry.version);
    versions = built;
    versionsByList.set(list, versions);
  }
  return versions;
}

/** Overlay value of a name the base has and this stream no longer holds. */
const GONE = null;

/**
 * A name -> version record with a Map's behaviour (`get`, `set`, `delete`, `has`, `keys`, `size`) that
 * shares a read-only base with other streams. `setAll` records a whole shared list at once: a fresh
 * stream then points at the list's versions and owns nothing. Later changes go into a per-stream
 * overlay; when the overlay grows past an eighth of the base, the record moves onto the newest shared
 * base (`latest`, the cache's current versions) if that leaves a small overlay, else it copies itself
 * into a map of its own, as every stream did before.
 */
export class SentVersions {
  /** Shared and read-only when `shared`; this record's own map otherwise (and the overlay is empty). */
  private base: ReadonlyMap<string, string>;
  private shared = false;
  /** name -> version this stream holds instead of the base's, or GONE for a base name it does not hold. */
  private overlay = new Map<string, string | typeof GONE>();
  private count = 0;

  constructor(
    /** The newest shared versions this record may move onto when its overlay grows; none by default. */
    private readonly latest: () => ReadonlyMap<string, string> | undefined = () => undefined,
    /** Overlay size below which the record never compacts. */
    private readonly minOverlay = 256,
  ) {
    this.base = new Map();
  }

  get size(): number {
    return this.count;
  }

  /** Entries only this record holds (its overlay, or all of them once it has a map of its own). */
  get ownEntries(): number {
    return this.shared ? this.overlay.size : this.count;
  }

  has(name: string): boolean {
    const own = this.overlay.get(name);
    if (own !== undefined) return own !== GONE;
    return this.base.has(name);
  }

  get(name: string): string | undefined {
    const own = this.overlay.get(name);
    if (own !== undefined) return own === GONE ? undefined : own;
    return this.base.get(name);
  }

  set(name: string, version: string): this {
    if (!this.shared) {
      const own = this.base as Map<string, string>;
      own.set(name, version);
      this.count = own.size;
      return this;
    }
    const own = this.overlay.get(name);
    const inBase = this.base.get(name);
    if (own === undefined ? inBase === undefined : own === GONE) this.count++;
    if (inBase === version) {
      if (own !== undefined) this.overlay.delete(name);
    } else {
      this.overlay.set(name, version);
      this.compactIfLarge();
    }
    return this;
  }

  delete(name: string): boolean {
    if (!this.shared) {
      const own = this.base as Map<string, string>;
      const deleted = own.delete(name);
      this.count = own.size;
      return deleted;
    }
    if (!this.has(name)) return false;
    if (this.base.has(name)) this.overlay.set(name, GONE);
    else this.overlay.delete(name);
    this.count--;
    this.compactIfLarge();
    return true;
  }

  /** Names held: the base's first, then the overlay's in insertion order (a Map's order when unshared). */
  *keys(): IterableIterator<string> {
    for (const [name] of this.entries()) yield name;
  }

  *entries(): IterableIterator<[string, string]> {
    const overlay = this.overlay;
    for (const [name, version] of this.base) {
      const own = overlay.get(name);
      if (own === undefined) yield [name, version];
      else if (own !== GONE) yield [name, own];
    }
    if (!this.shared) return;
    for (const [name, own] of overlay) if (own !== GONE && !this.base.has(name)) yield [name, own];
  }

  /**
   * Records that every entry of `versions` was sent, as `set` for each would, and makes `versions` (which
   * must not change afterwards) the shared base. Names held before and not in `versions` stay held.
   */
  setAll(versions: ReadonlyMap<string, string>): void {
    const kept = new Map<string, string | typeof GONE>();
    if (this.count > 0)
      for (const [name, version] of this.entries()) if (!versions.has(name)) kept.set(name, version);
    this.base = versions;
    this.shared = true;
    this.overlay = kept;
    this.count = versions.size + kept.size;
    this.compactIfLarge();
  }

  private limit(baseSize: number): number {
    return Math.max(this.minOverlay, baseSize >> 3);
  }

  private compactIfLarge(): void {
    if (this.overlay.size <= this.limit(this.base.size)) return;
    const latest = this.latest();
    if (latest !== undefined && latest !== this.base) {
      const overlay = this.differencesFrom(latest, this.limit(latest.size) >> 1);
      if (overlay !== undefined) {
        this.base = latest;
        this.overlay = overlay;
        return;
      }
    }
    this.base = new Map(this.entries());
    this.shared = false;
    this.overlay = new Map();
  }

  /** The overlay this record would need on top of `base`, or undefined when it is longer than `max`. */
  private differencesFrom(
    base: ReadonlyMap<string, string>,
    max: number,
  ): Map<string, string | typeof GONE> | undefined {
    const out = new Map<string, string | typeof GONE>();
    for (const [name, version] of this.entries()) {
      if (base.get(name) === version) continue;
      out.set(name, version);
      if (out.size > max) return undefined;
    }
    for (const name of base.keys()) {
      if (this.has(name)) continue;
      out.set(name, GONE);
      if (out.size > max) return undefined;
    }
    return out;
  }
}
