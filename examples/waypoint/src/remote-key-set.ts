// The keys of a RequestAuthentication rule's `jwksUri`, fetched by the waypoint itself.
//
// Istio's control plane fetches each JWKS, refreshes it every 20 minutes, keeps the last good set when a
// refresh fails and hands proxies the keys inline; this waypoint fetches them where they are used, so
// it keeps those rules here: the last good set wins over a failed refresh, a failed fetch is retried
// after a backoff (1 s doubling to 10 s, as Envoy's fetcher) instead of on every request that carries a
// token, and a token naming a key the set lacks refetches at most once per cooldown. Work happens only
// when a token needs the keys: no timers, nothing to close.
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey, errors as joseErrors } from "jose";

/** Options of {@link remoteKeySet}. */
export interface RemoteKeySetOptions {
  /** Deadline of one fetch, in ms (the rule's `timeout`). */
  timeoutMs: number;
  /** Age after which a fetched set is fetched again, in ms. Default 20 minutes (Istio's refresh interval). */
  refreshMs?: number;
  /** Least time between two fetches for a key the set lacks, in ms. Default 30 s. */
  cooldownMs?: number;
  /** First wait after a failed fetch, in ms; it doubles with each failure up to `maxBackoffMs`. Default 1 s. */
  backoffMs?: number;
  /** Longest wait after failed fetches, in ms. Default 10 s. */
  maxBackoffMs?: number;
  /** Largest JWKS document accepted, in bytes. Default 1 MiB. */
  maxBytes?: number;
  /** Clock, in ms (tests). Default `Date.now`. */
  now?: () => number;
}

/** What {@link remoteKeySet} returns: a key lookup for `jwtVerify` plus its state, for `/config_dump`. */
export interface RemoteKeySet extends JWTVerifyGetKey {
  /** Fetches made so far, successful or not. */
  readonly fetches: number;
  /** Whether a set is held (fetched once at least). */
  readonly hasKeys: boolean;
  /** The last fetch's failure, while no later fetch succeeded. */
  readonly lastError: Error | undefined;
}

/** Error `code` when no keys can be had: the fetch failed and no earlier set is held. */
export const JWKS_UNAVAILABLE = "ERR_JWKS_UNAVAILABLE";

class KeySetUnavailable extends Error {
  readonly code = JWKS_UNAVAILABLE;
}

type LocalKeys = ReturnType<typeof createLocalJWKSet>;

/** The key lookup of a remote JWKS at `url`, with Istio's refresh and last-good rules (see the file head). */
export function remoteKeySet(url: URL, options: RemoteKeySetOptions): RemoteKeySet {
  const {
    timeoutMs,
    refreshMs = 1_200_000,
    cooldownMs = 30_000,
    backoffMs = 1000,
    maxBackoffMs = 10_000,
    maxBytes = 1 << 20,
    now = Date.now,
  } = options;
  let keys: LocalKeys | undefined;
  let fetchedAt = 0;
  let failures = 0;
  let retryAt = 0;
  let lastError: Error | undefined;
  let fetches = 0;
  let inFlight: Promise<void> | undefined;

  const fetchOnce = async (): Promise<void> => {
    fetches++;
    try {
      const set = await fetchKeySet(url, timeoutMs, maxBytes);
      keys = createLocalJWKSet(set);
      fetchedAt = now();
      failures = 0;
      retryAt = 0;
      lastError = undefined;
    } catch (err) {
      failures++;
      retryAt = now() + Math.min(maxBackoffMs, backoffMs * 2 ** (failures - 1));
      lastError = err instanceof Error ? err : new Error(String(err));
    }
  };
  /** Fetches unless a fetch is waiting out its backoff; concurrent callers share one fetch. */
  const refresh = async (): Promise<void> => {
    if (inFlight === undefined) {
      if (now() < retryAt) return;
      inFlight = fetchOnce().finally(() => {
        inFlight = undefined;
      });
    }
    await inFlight;
  };

  const getKey = (async (header, token) => {
    if (keys === undefined || now() - fetchedAt >= refreshMs) await refresh();
    const held = keys;
    if (held === undefined) {
      throw new KeySetUnavailable(`JWKS ${url.href} unavailable: ${lastError?.message ?? "not fetched"}`, {
        cause: lastError,
      });
    }
    try {
      return await held(header, token);
    } catch (err) {
      // A key the set lacks may be a new one the issuer rotated in: fetch again, once per cooldown.
      if (!(err instanceof joseErrors.JWKSNoMatchingKey) || now() - fetchedAt < cooldownMs) throw err;
      await refresh();
      if (keys === held) throw err;
      return (keys as LocalKeys)(header, token);
    }
  }) as RemoteKeySet;
  Object.defineProperties(getKey, {
    fetches: { get: () => fetches },
    hasKeys: { get: () => keys !== undefined },
    lastError: { get: () => lastError },
  });
  return getKey;
}

/** GETs the JWKS document: a 200 with a JSON object that has a `keys` list, at most `maxBytes`. */
async function fetchKeySet(url: URL, timeoutMs: number, maxBytes: number): Promise<JSONWebKeySet> {
  const response = await fetch(url, {
    headers: { accept: "application/json" },
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (response.status !== 200) {
    await response.body?.cancel().catch(() => {});
    throw new Error(`JWKS ${url.href} answered HTTP ${response.status}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new Error(`JWKS ${url.href} is larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  let set: unknown;
  try {
    set = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new Error(`JWKS ${url.href} is not JSON`);
  }
  if (typeof set !== "object" || set === null || !Array.isArray((set as { keys?: unknown }).keys)) {
    throw new Error(`JWKS ${url.href} has no "keys" list`);
  }
  return set as JSONWebKeySet;
}
