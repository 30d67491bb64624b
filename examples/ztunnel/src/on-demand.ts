// On-demand Address lookup, ztunnel's `XDS_ON_DEMAND`: the proxy does not take every address of the
// mesh, only its node's pods (sent by the control plane), and asks for a destination by `network/IP`
// (a waypoint named by hostname by `namespace/hostname`) when it meets one it does not know, waiting a
// bounded time before the outbound decision is made. Which names are missing is a pure function over
// the store; the waiting lives in this I/O shell.
import type { Workload } from "@ambient/xds";
import { ZtunnelError } from "./errors.js";
import type { Outbound } from "./outbound.js";
import { SOCKS5_REPLY } from "./socks5.js";
import type { Logger } from "./telemetry.js";
import { ipFromBytes, type WorkloadStore } from "./workload-store.js";

/** Longest wait for the control plane's answer to a lookup: 5 s. ztunnel itself waits without a bound. */
export const DEFAULT_ON_DEMAND_TIMEOUT_MS = 5000;

/** The name an Address answers to for an IP: `network/IP` (the network is `""` in this mesh). */
export function addressKey(ip: string, network = ""): string {
  return `${network}/${ip}`;
}

/**
 * The name a waypoint named by hostname answers to: `namespace/hostname`, the resource name of the
 * waypoint's Service.
 */
export function hostnameKey(namespace: string, hostname: string): string {
  return `${namespace}/${hostname}`;
}

/** What {@link missingAddresses} reads from the store. */
export type OnDemandLookups = Pick<
  WorkloadStore,
  "findService" | "findServiceByVip" | "findByAddress" | "findByNamespacedHostname"
>;

/** A name to ask for, with what it stands for, so the store can tell once it has arrived. */
type MissingName =
  | { key: string; ip: string }
  | { key: string; hostname: { namespace: string; hostname: string } };

function isKnown(store: OnDemandLookups, name: MissingName): boolean {
  if ("ip" in name) {
    return store.findServiceByVip(name.ip) !== undefined || store.findByAddress(name.ip) !== undefined;
  }
  return store.findByNamespacedHostname(name.hostname.namespace, name.hostname.hostname) !== undefined;
}

/** The name of what a waypoint reference points at: its address, or its hostname; none if malformed. */
function waypointName(gateway: NonNullable<Workload["waypoint"]>, network: string): MissingName | undefined {
  if (gateway.address !== undefined) {
    const ip = ipFromBytes(gateway.address.address);
    return ip === undefined ? undefined : { key: addressKey(ip, network), ip };
  }
  if (gateway.hostname !== undefined && gateway.hostname.hostname !== "") {
    const { namespace, hostname } = gateway.hostname;
    return { key: hostnameKey(namespace, hostname), hostname: { namespace, hostname } };
  }
  return undefined;
}

function missingNames(
  store: OnDemandLookups,
  ip: string,
  port: number,
  network: string,
  namespace: string | undefined,
): MissingName[] {
  const vip = store.findServiceByVip(ip);
  const workload = vip === undefined ? store.findByAddress(ip) : undefined;
  if (vip === undefined && workload === undefined) return [{ key: addressKey(ip, network), ip }];
  // Of several Services at the address, the one the client's namespace gets: its waypoint is the one
  // the connection goes through.
  const service = store.findService(ip, port, namespace);
  const gateway = service !== undefined ? service.service.waypoint : workload?.waypoint;
  const waypoint = gateway === undefined ? undefined : waypointName(gateway, network);
  // A waypoint named by address is its Service's VIP, or the waypoint workload's own address; one
  // named by hostname is its Service `namespace/hostname` (istiod names waypoints this way), or the
  // workload with that hostname.
  return waypoint === undefined || isKnown(store, waypoint) ? [] : [waypoint];
}

/**
 * The names the store lacks to decide a connection to `ip:port`, as asked for: the destination
 * itself (`network/IP`) when it is neither a known Service VIP nor a known workload; else the
 * waypoint of its Service (or, for a pod addressed directly, the pod's own waypoint) when that is
 * not known: `network/IP` for a waypoint named by address, `namespace/hostname` for one named by
 * hostname; else none. `namespace` is the client's, which picks among Services sharing the address.
 * The decision itself is the store's `resolve`.
 */
export function missingAddresses(
  store: OnDemandLookups,
  ip: string,
  port: number,
  network = "",
  namespace?: string,
): string[] {
  return missingNames(store, ip, port, network, namespace).map((name) => name.key);
}

/**
 * Addresses the control plane had nothing for that stay subscribed (so it pushes them if they appear):
 * 1024. Past it the oldest are unsubscribed, so pods that name many non-mesh addresses cannot grow the
 * proxy's xDS subscription without bound (the server closes a stream above its own name limit).
 */
export const DEFAULT_MAX_UNRESOLVED_ADDRESSES = 1024;

/** Options of {@link createOnDemand}. */
export interface OnDemandOptions {
  store: OnDemandLookups;
  /**
   * Asks the control plane for Address names; resolves when it answered (`missing`: it has nothing)
   * or `timeoutMs` passed (`unanswered`).
   */
  lookup(
    names: string[],
    timeoutMs: number,
  ): Promise<{ missing: readonly string[]; unanswered: readonly string[] }>;
  /** Unsubscribes names (the oldest unresolved ones, past `maxUnresolved`). */
  forget(names: string[]): void;
  /** Default {@link DEFAULT_ON_DEMAND_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** Default {@link DEFAULT_MAX_UNRESOLVED_ADDRESSES}. */
  maxUnresolved?: number;
  /** Network part of the keys asked for. Default `""`; ztunnel `NETWORK`. */
  network?: string;
  logger: Logger;
}

/** Fetches unknown destinations before they are decided. */
export interface OnDemand {
  /**
   * Resolves once the store holds what deciding `ip:port` needs, or the control plane answered that
   * it has nothing, or the wait timed out; never rejects. True when nothing needed is left
   * unanswered; false when a lookup went unanswered (timed out or failed) and what it asked is still
   * unknown: the destination may be in the mesh, so passing it through would go around it.
   * Concurrent calls for one key share a lookup; a key the control plane already said it has nothing
   * for is not asked again while it stays subscribed (the control plane pushes it if it appears).
   * `namespace` is the client's, when there is one: of Services sharing the address, it names the one
   * whose waypoint is needed.
   */
  ensure(ip: string, port: number, namespace?: string): Promise<boolean>;
  /** Lookups sent so far, how many went unanswered, and the unresolved keys still subscribed. */
  stats(): { lookups: number; unanswered: number; unresolved: number };
}

/** Rounds of lookups for one connection: the destination, then its (Service's) waypoint. */
const MAX_ROUNDS = 2;

export function createOnDemand(options: OnDemandOptions): OnDemand {
  const { store, logger } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_ON_DEMAND_TIMEOUT_MS;
  const maxUnresolved = options.maxUnresolved ?? DEFAULT_MAX_UNRESOLVED_ADDRESSES;
  const network = options.network ?? "";
  const inFlight = new Map<string, Promise<void>>();
  /** Keys without a resource, oldest first: what they name, and whether the control plane said "nothing". */
  const unresolved = new Map<string, { name: MissingName; answeredMissing: boolean }>();
  const counts = { lookups: 0, unanswered: 0 };

  const remember = (name: MissingName, answeredMissing: boolean): void => {
    unresolved.delete(name.key);
    unresolved.set(name.key, { name, answeredMissing });
    const forget: string[] = [];
    for (const [oldest, entry] of unresolved) {
      if (unresolved.size <= maxUnresolved) break;
      unresolved.delete(oldest);
      // An address that has since arrived stays subscribed: it is followed like any other.
      if (!isKnown(store, entry.name)) forget.push(oldest);
    }
    if (forget.length > 0) options.forget(forget);
  };

  const fetchName = (name: MissingName): Promise<void> => {
    const { key } = name;
    let pending = inFlight.get(key);
    if (pending === undefined) {
      counts.lookups++;
      logger.debug({ key }, "on-demand address lookup");
      pending = options
        .lookup([key], timeoutMs)
        .then(
          (result) => {
            if (result.unanswered.length > 0) {
              counts.unanswered++;
              logger.warn({ key, timeoutMs }, "on-demand address lookup unanswered");
              remember(name, false);
            } else if (result.missing.length > 0) remember(name, true);
            else unresolved.delete(key);
          },
          (err: unknown) => {
            counts.unanswered++;
            logger.warn({ key, err: (err as Error).message }, "on-demand address lookup failed");
          },
        )
        .finally(() => inFlight.delete(key));
      inFlight.set(key, pending);
    }
    return pending;
  };

  return {
    async ensure(ip, port, namespace) {
      const previous = new Set<string>();
      const unanswered = () =>
        missingNames(store, ip, port, network, namespace).filter(
          (m) => unresolved.get(m.key)?.answeredMissing !== true,
        );
      for (let round = 0; round < MAX_ROUNDS; round++) {
        const missing = unanswered().filter((m) => !previous.has(m.key));
        // Nothing left to ask: the control plane has said what it knows.
        if (missing.length === 0) break;
        await Promise.all(missing.map(fetchName));
        for (const m of missing) previous.add(m.key);
      }
      return unanswered().length === 0;
    },
    stats: () => ({ ...counts, unresolved: unresolved.size }),
  };
}

/** The outbound dialer with a lookup of unknown destinations before each dial (same decision after). */
export function withOnDemand(outbound: Outbound, onDemand: OnDemand | undefined): Outbound {
  if (onDemand === undefined) return outbound;
  return {
    dial: async (network, srcIp, src, request, srcPort) => {
      // A destination the control plane did not answer for may be in the mesh: refused, not passed
      // through around it in plaintext.
      if (!(await onDemand.ensure(request.ip, request.port, src.namespace))) {
        throw new ZtunnelError(
          "ERR_SOCKS5_UNSUPPORTED",
          `no answer from the control plane for ${request.ip}: not passed through`,
          { reply: SOCKS5_REPLY.hostUnreachable },
        );
      }
      return outbound.dial(network, srcIp, src, request, srcPort);
    },
    carry: (args) => outbound.carry(args),
    abandon: (dialed, error) => outbound.abandon(dialed, error),
  };
}

/** The proxy's {@link OnDemand} from its `onDemand` option; undefined when it is off. */
export function onDemandOf(
  option: boolean | { timeoutMs?: number; maxUnresolved?: number; network?: string } | undefined,
  store: OnDemandLookups & { readonly network: string },
  state: {
    lookupAddresses: OnDemandOptions["lookup"];
    forgetAddresses: OnDemandOptions["forget"];
  },
  logger: Logger,
): OnDemand | undefined {
  if (option === undefined || option === false) return undefined;
  const settings = option === true ? {} : option;
  return createOnDemand({
    store,
    lookup: state.lookupAddresses,
    forget: state.forgetAddresses,
    logger,
    network: store.network,
    ...settings,
  });
}
