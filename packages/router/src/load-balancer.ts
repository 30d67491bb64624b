/** How an endpoint is picked among a backend's endpoints for each request. */
export type LoadBalancingPolicy = "round-robin" | "least-request";

/** Per-backend endpoint picker with in-flight request accounting. */
export interface EndpointPicker<E> {
  /** Picks an endpoint, avoiding `exclude` (already tried) when another one is available. */
  pick(endpoints: readonly E[], exclude?: ReadonlySet<string>): E | undefined;
  /** Marks a request started on an endpoint; the returned function marks it finished. */
  begin(endpoint: E): () => void;
}

/**
 * Creates a picker. `round-robin` rotates through the endpoints; `least-request` picks the endpoint
 * with the fewest requests in flight, rotating among ties (so an idle backend still spreads evenly).
 */
export function createEndpointPicker<E>(
  policy: LoadBalancingPolicy,
  keyOf: (e: E) => string,
): EndpointPicker<E> {
  let next = 0;
  const active = new Map<string, number>();
  return {
    pick(endpoints, exclude) {
      const n = endpoints.length;
      if (n === 0) return undefined;
      let candidates = endpoints;
      if (exclude !== undefined && exclude.size > 0) {
        const fresh = endpoints.filter((e) => !exclude.has(keyOf(e)));
        if (fresh.length > 0) candidates = fresh;
      }
      const start = next++ % candidates.length;
      if (policy === "round-robin") return candidates[start];
      let best: E | undefined;
      let bestActive = Number.POSITIVE_INFINITY;
      for (let i = 0; i < candidates.length; i++) {
        const e = candidates[(start + i) % candidates.length] as E;
        const a = active.get(keyOf(e)) ?? 0;
        if (a < bestActive) {
          best = e;
          bestActive = a;
        }
      }
      return best;
    },
    begin(endpoint) {
      const key = keyOf(endpoint);
      active.set(key, (active.get(key) ?? 0) + 1);
      let done = false;
      return () => {
        if (done) return;
        done = true;
        const left = (active.get(key) ?? 1) - 1;
        if (left <= 0) active.delete(key);
        else active.set(key, left);
      };
    },
  };
}

/**
 * Smooth weighted round robin over items with integer weights: exact proportions over each cycle,
 * interleaved rather than bursty. Items with weight 0 are never picked.
 */
export function createWeightedPicker<T>(
  items: readonly T[],
  weightOf: (item: T) => number,
): () => T | undefined {
  const weights = items.map(weightOf);
  const total = weights.reduce((a, b) => a + b, 0);
  const current = weights.map(() => 0);
  return () => {
    if (total <= 0) return undefined;
    let best = -1;
    for (let i = 0; i < items.length; i++) {
      const w = weights[i] as number;
      if (w === 0) continue;
      current[i] = (current[i] as number) + w;
      if (best === -1 || (current[i] as number) > (current[best] as number)) best = i;
    }
    current[best] = (current[best] as number) - total;
    return items[best];
  };
}
