// The leader's second write: ServiceEntry hosts without addresses get one each from 240.240.0.0/16 in
// the entry's `status.addresses`, as istiod's IP auto-allocation writes them; every replica's
// translation reads them back from status, so all replicas serve the same addresses and a restart
// keeps them. Only the leader allocates (see leader-election.ts).
import type { KubeConfig } from "@kubernetes/client-node";
import { type HostAddress, ServiceEntryAddressAllocator } from "../service-entry-addresses.js";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { writeStatusPatches } from "./gateway-status.js";
import type { RawKubeObject } from "./kube-client.js";

/** A status change to make: the ServiceEntry and the addresses it should show. */
export interface ServiceEntryStatusUpdate {
  namespace: string;
  name: string;
  addresses: HostAddress[];
}

/**
 * Plans the leader's ServiceEntry status writes. Addresses written but not yet seen in the informer
 * cache count as taken and are not written twice; an entry the cache shows current is forgotten, so a
 * later change by anyone is corrected again.
 */
export class ServiceEntryStatusPlanner {
  readonly #allocator = new ServiceEntryAddressAllocator();
  /** `namespace/name` -> the addresses last written, until the cache shows them. */
  readonly #written = new Map<string, HostAddress[]>();

  /** The writes due for `entries` (the cache's ServiceEntries). */
  due(entries: readonly RawKubeObject[]): ServiceEntryStatusUpdate[] {
    // An entry whose write is not in the cache yet is planned with what was written.
    const seen = entries.map((e) => {
      const key = `${e.metadata?.namespace ?? "default"}/${e.metadata?.name ?? ""}`;
      const written = this.#written.get(key);
      return written === undefined ? e : { ...e, status: { ...(e.status ?? {}), addresses: written } };
    });
    const updates: ServiceEntryStatusUpdate[] = [];
    const planned = this.#allocator.assign(seen);
    const present = new Set<string>();
    for (const e of seen) {
      const namespace = e.metadata?.namespace ?? "default";
      const name = e.metadata?.name ?? "";
      present.add(`${namespace}/${name}`);
      const addresses = planned.get(e);
      if (addresses !== undefined) updates.push({ namespace, name, addresses });
    }
    for (const [key, addresses] of this.#written) {
      const cached = entries.find(
        (e) => `${e.metadata?.namespace ?? "default"}/${e.metadata?.name ?? ""}` === key,
      );
      const shown = JSON.stringify(cached?.status?.addresses ?? null);
      if (!present.has(key) || shown === JSON.stringify(addresses)) this.#written.delete(key);
    }
    return updates;
  }

  /** Records a write the API server took. */
  written(update: ServiceEntryStatusUpdate): void {
    this.#written.set(`${update.namespace}/${update.name}`, update.addresses);
  }

  /** Forgets what was written: a new leader starts from what the cache shows. */
  reset(): void {
    this.#written.clear();
  }
}

/**
 * Writes the ServiceEntries' status addresses while `leading()`; returns those written. Failures are
 * logged, not thrown.
 */
export function writeServiceEntryStatus(
  kc: KubeConfig,
  updates: readonly ServiceEntryStatusUpdate[],
  logger: Logger = noopLogger,
  leading?: () => boolean,
): Promise<ServiceEntryStatusUpdate[]> {
  return writeStatusPatches(
    kc,
    updates,
    (u) => `/apis/networking.istio.io/v1/namespaces/${u.namespace}/serviceentries/${u.name}`,
    (u) => ({ addresses: u.addresses }),
    "serviceEntry",
    logger,
    leading,
  );
}
