// Addresses for ServiceEntry hosts that have none, as istiod's IP auto-allocation gives them: one IPv4
// address per host from 240.240.0.0/16, recorded in the ServiceEntry's `status.addresses`
// (`{ host, value }`), which the translation reads. With them a pod's DNS (the ztunnel's DNS proxy)
// answers an external host with an address the mesh captures, so its traffic meets the mesh's
// policies and waypoints. The folder source records them in its objects; on Kubernetes the leader
// writes them to the cluster (service-entry-status.ts).

/** First and last address of 240.240.0.0/16 handed out (the network and broadcast addresses are not). */
const BASE = 240 * 2 ** 24 + 240 * 2 ** 16;
const FIRST = BASE + 1;
const LAST = BASE + 0xfffe;

/** The label that turns auto-allocation off for one ServiceEntry when it is `"false"` (istio's). */
export const AUTO_ALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip";

/** The fields of a ServiceEntry the allocation reads (a manifest object or an informer's). */
export interface ServiceEntryLike {
  metadata?: {
    name?: string;
    namespace?: string;
    labels?: Record<string, string>;
    creationTimestamp?: string;
  };
  // biome-ignore lint/suspicious/noExplicitAny: the spec and status as the API server sent them, checked field by field
  spec?: any;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  status?: any;
}

/** One allocated address, as `status.addresses` lists it. */
export interface HostAddress {
  host: string;
  value: string;
}

function text(n: number): string {
  return `${Math.floor(n / 2 ** 24)}.${Math.floor(n / 2 ** 16) % 256}.${Math.floor(n / 256) % 256}.${n % 256}`;
}

function numberOf(ip: string): number | undefined {
  const parts = ip.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part) || Number(part) > 255) return undefined;
    n = n * 256 + Number(part);
  }
  return n;
}

/**
 * Whether the ServiceEntry gets allocated addresses, as istiod decides: it lists no `spec.addresses`,
 * its resolution is not NONE, the value when none is given (the data plane could not honour an
 * address), and it is not labelled
 * `networking.istio.io/enable-autoallocate-ip: "false"`.
 */
export function wantsAllocatedAddresses(entry: ServiceEntryLike): boolean {
  const spec = entry.spec;
  if (typeof spec !== "object" || spec === null) return false;
  if (Array.isArray(spec.addresses) && spec.addresses.length > 0) return false;
  if (spec.resolution === undefined || spec.resolution === "NONE") return false;
  return entry.metadata?.labels?.[AUTO_ALLOCATE_LABEL]?.toLowerCase() !== "false";
}

/**
 * The hosts that get an address, each once (a host listed twice is one host, with one address):
 * every listed host but wildcards, unless the resolution is DYNAMIC_DNS, where the proxy resolves
 * each name the wildcard covers as it is asked for and one address stands for them all.
 */
function allocatableHosts(entry: ServiceEntryLike): string[] {
  const hosts = entry.spec?.hosts;
  if (!Array.isArray(hosts)) return [];
  const wildcards = entry.spec?.resolution === "DYNAMIC_DNS";
  return [
    ...new Set(
      hosts.filter(
        (h): h is string => typeof h === "string" && h !== "" && (wildcards || !h.startsWith("*")),
      ),
    ),
  ];
}

/** `status.addresses` as `{ host, value }` pairs with an IPv4 value; anything else is left out. */
export function statusAddresses(entry: ServiceEntryLike): HostAddress[] {
  const list = entry.status?.addresses;
  if (!Array.isArray(list)) return [];
  return list.flatMap((a: unknown) => {
    const { host, value } = (a ?? {}) as { host?: unknown; value?: unknown };
    return typeof host === "string" && typeof value === "string" && numberOf(value) !== undefined
      ? [{ host, value }]
      : [];
  });
}

function entryKey(entry: ServiceEntryLike): string {
  return `${entry.metadata?.namespace ?? "default"}/${entry.metadata?.name ?? ""}`;
}

/** Older entries first, then by namespace/name: who keeps an address two entries claim. */
function olderFirst(a: ServiceEntryLike, b: ServiceEntryLike): number {
  const ca = a.metadata?.creationTimestamp ?? "";
  const cb = b.metadata?.creationTimestamp ?? "";
  if (ca !== cb) return ca < cb ? -1 : 1;
  const ka = entryKey(a);
  const kb = entryKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/**
 * Hands out 240.240.0.0/16 addresses to ServiceEntry hosts. It remembers what it gave (by namespace,
 * name and host), so an entry keeps its addresses across reloads, and goes on from where it stopped
 * rather than reusing an address just freed, which a client may still have in its DNS cache.
 */
export class ServiceEntryAddressAllocator {
  #next = FIRST;
  /** `namespace/name` -> host -> address given. */
  #given = new Map<string, Map<string, string>>();

  /**
   * The `status.addresses` each ServiceEntry in `entries` should show, for those where that differs
   * from what it shows: every allocatable host with an address, kept from its status or from this
   * allocator, else the next free one (in no one's status, `spec.addresses` or earlier gift). An
   * address two hosts claim stays with the older entry's host, one an entry lists in `spec.addresses`
   * with none; the others get new ones. What is no longer among `entries` is forgotten. Hosts go
   * without an address when the range is full.
   */
  assign(entries: readonly ServiceEntryLike[]): Map<ServiceEntryLike, HostAddress[]> {
    const used = new Set<number>();
    /** Addresses an entry lists in `spec.addresses`: never also one allocated to another host. */
    const listed = new Set<number>();
    for (const entry of entries) {
      for (const a of statusAddresses(entry)) used.add(numberOf(a.value) as number);
      const spec = Array.isArray(entry.spec?.addresses) ? entry.spec.addresses : [];
      for (const a of spec) {
        const n = typeof a === "string" ? numberOf(a.split("/")[0] ?? "") : undefined;
        if (n !== undefined) {
          used.add(n);
          listed.add(n);
        }
      }
    }
    const wanting = entries.filter(wantsAllocatedAddresses);
    // Which address each host keeps. An address can be claimed twice: a new leader whose cache had
    // not yet seen the last write allocates it again, a backup brings an old status back, an entry
    // lists in `spec.addresses` one allocated to another. Only one host may keep it, or a client
    // that resolved one host reaches the other: the oldest entry (then namespace/name, so every
    // replica and restart decides alike), and none when an entry lists it. The others get new ones.
    const keptBy = new Map<ServiceEntryLike, Map<string, string>>();
    const claimed = new Set<number>();
    for (const entry of [...wanting].sort(olderFirst)) {
      const shown = statusAddresses(entry);
      const before = this.#given.get(entryKey(entry));
      const keep = new Map<string, string>();
      for (const host of allocatableHosts(entry)) {
        const value = shown.find((a) => a.host === host)?.value ?? before?.get(host);
        const n = value === undefined ? undefined : numberOf(value);
        if (value === undefined || n === undefined || claimed.has(n) || listed.has(n)) continue;
        claimed.add(n);
        used.add(n);
        keep.set(host, value);
      }
      keptBy.set(entry, keep);
    }
    const given = new Map<string, Map<string, string>>();
    const out = new Map<ServiceEntryLike, HostAddress[]>();
    const pending: { entry: ServiceEntryLike; list: HostAddress[]; host: string }[] = [];
    for (const entry of wanting) {
      const keep = keptBy.get(entry);
      const mine = new Map<string, string>();
      const list: HostAddress[] = [];
      for (const host of allocatableHosts(entry)) {
        const kept = keep?.get(host);
        if (kept !== undefined) {
          mine.set(host, kept);
          list.push({ host, value: kept });
        } else {
          pending.push({ entry, list, host });
        }
      }
      given.set(entryKey(entry), mine);
      out.set(entry, list);
    }
    // New hosts only once every kept address is known to be taken.
    for (const { entry, list, host } of pending) {
      const n = this.#take(used);
      if (n === undefined) continue;
      list.push({ host, value: text(n) });
      given.get(entryKey(entry))?.set(host, text(n));
    }
    this.#given = given;
    for (const [entry, list] of out) {
      const order = allocatableHosts(entry);
      list.sort((a, b) => order.indexOf(a.host) - order.indexOf(b.host));
      if (sameAddresses(statusAddresses(entry), list)) out.delete(entry);
    }
    return out;
  }

  /** The next address not in `used`, marked used; undefined when the range is exhausted. */
  #take(used: Set<number>): number | undefined {
    const size = LAST - FIRST + 1;
    for (let i = 0; i < size; i++) {
      const n = this.#next;
      this.#next = n === LAST ? FIRST : n + 1;
      if (!used.has(n)) {
        used.add(n);
        return n;
      }
    }
    return undefined;
  }
}

function sameAddresses(a: readonly HostAddress[], b: readonly HostAddress[]): boolean {
  return a.length === b.length && a.every((x, i) => x.host === b[i]?.host && x.value === b[i]?.value);
}
