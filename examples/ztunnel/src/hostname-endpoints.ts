// Endpoints known by name, not address: a ServiceEntry with `resolution: DNS` (or a WorkloadEntry
// whose address is a hostname) reaches the ztunnel as a workload with `hostname` and no addresses.
// Its traffic leaves as plain TCP to an address the upstream resolvers give for that name, looked up
// when a connection needs it and kept for the answer's TTL, as Istio's ztunnel does.
import { Resolver } from "node:dns/promises";
import type { Nameserver } from "@ambient/dns";
import { ZtunnelError } from "./errors.js";

/** Resolves an endpoint's hostname to one IPv4 address. */
export type HostnameResolver = (hostname: string) => Promise<string>;

export interface HostnameResolverOptions {
  /** Upstream resolvers (port default 53). Default: this process's /etc/resolv.conf. */
  nameservers?: readonly Nameserver[];
  /** Per try. Default 2000 ms. */
  timeoutMs?: number;
  /** Names kept at once; the oldest goes first. Default 1024. */
  maxEntries?: number;
  /** The longest an answer is kept, whatever its TTL. Default 30 s. */
  maxTtlSeconds?: number;
}

/** `localhost` and the names under it, which are the loopback address without a query (RFC 6761). */
function isLocalhost(hostname: string): boolean {
  const name = (hostname.endsWith(".") ? hostname.slice(0, -1) : hostname).toLowerCase();
  return name === "localhost" || name.endsWith(".localhost");
}

/**
 * A resolver of endpoint hostnames: A records from the upstream resolvers, one address of the answer
 * per call (round robin over it), kept for the answer's TTL (at most `maxTtlSeconds`, at least 1 s).
 * Concurrent lookups of one name share one query. `localhost` (and names under it) is 127.0.0.1,
 * asked of no one. A name with no A record, or no answer in time, rejects with `ERR_ZTUNNEL_RESOLVE`.
 * The queries go out from this thread (c-ares), never through the thread pool's `getaddrinfo`, which a
 * resolver that does not answer would hold for the system's timeouts.
 */
export function createHostnameResolver(options: HostnameResolverOptions = {}): HostnameResolver {
  const resolver = new Resolver({ timeout: options.timeoutMs ?? 2000, tries: 2 });
  if (options.nameservers !== undefined) {
    resolver.setServers(
      options.nameservers.map(({ address, port = 53 }) =>
        address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`,
      ),
    );
  }
  const maxEntries = options.maxEntries ?? 1024;
  const maxTtl = options.maxTtlSeconds ?? 30;
  const cache = new Map<string, { addresses: string[]; expires: number; next: number }>();
  const inFlight = new Map<string, Promise<string[]>>();

  const lookup = (hostname: string): Promise<string[]> => {
    let pending = inFlight.get(hostname);
    if (pending === undefined) {
      pending = resolver
        .resolve4(hostname, { ttl: true })
        .then((records) => {
          if (records.length === 0) throw new Error("no A record");
          const ttl = Math.min(maxTtl, Math.max(1, Math.min(...records.map((r) => r.ttl))));
          cache.delete(hostname);
          if (cache.size >= maxEntries) cache.delete(cache.keys().next().value as string);
          const addresses = records.map((r) => r.address);
          cache.set(hostname, { addresses, expires: Date.now() + ttl * 1000, next: 0 });
          return addresses;
        })
        .catch((cause: unknown) => {
          throw new ZtunnelError("ERR_ZTUNNEL_RESOLVE", `cannot resolve endpoint ${hostname}`, { cause });
        })
        .finally(() => inFlight.delete(hostname));
      inFlight.set(hostname, pending);
    }
    return pending;
  };

  return async (hostname) => {
    if (isLocalhost(hostname)) return "127.0.0.1";
    let entry = cache.get(hostname);
    if (entry === undefined || entry.expires <= Date.now()) {
      const addresses = await lookup(hostname);
      entry = cache.get(hostname) ?? { addresses, expires: 0, next: 0 };
    }
    const address = entry.addresses[entry.next % entry.addresses.length] as string;
    entry.next++;
    return address;
  };
}
