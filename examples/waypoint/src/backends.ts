import { identityOf, ipFromBytes, ipv4Of, networkOf, WorkloadStore } from "@ambient/example-ztunnel";
import type { Endpoint } from "@ambient/router";
import type { Service, Workload, WorkloadAddress } from "@ambient/xds";

/** A backend reference as the router hands it over. */
export interface BackendRef {
  kind: string;
  group: string;
  name: string;
  namespace: string;
  port: number | undefined;
}

/**
 * What a Service port is declared to carry, from its Address resource's `appProtocol`: `"http"` (HTTP/1.1,
 * HTTP/2 or gRPC: the router never carries its tunnels as TCP, `destination.httpOnly`, so no bytes
 * reach it around L7 policy), `"tcp"` (TCP or TLS: carried as TCP from the start,
 * `destination.tcpOnly`, so a server may speak first), or undefined (the router detects HTTP).
 */
export function declaredProtocol(
  service: Pick<Service, "ports">,
  servicePort: number,
): "http" | "tcp" | undefined {
  const declared = service.ports.find((p) => p.servicePort === servicePort)?.appProtocol;
  if (declared === "HTTP11" || declared === "HTTP2" || declared === "GRPC") return "http";
  if (declared === "TCP" || declared === "TLS") return "tcp";
  return undefined;
}

/**
 * What port `port` of a workload is declared to carry, from the Services it backs: a Service port
 * that maps to it (by the workload's own port mapping, else the Service's target port) declares it as
 * {@link declaredProtocol} reads. Undefined when no Service port maps to it, or when they disagree
 * (the router then detects HTTP). For a tunnel addressed to the workload itself.
 */
export function declaredWorkloadProtocol(
  store: Pick<WorkloadStore, "services">,
  workload: Pick<Workload, "services">,
  port: number,
): "http" | "tcp" | undefined {
  const found = new Set<"http" | "tcp" | undefined>();
  for (const [key, list] of Object.entries(workload.services)) {
    const service = store.services().get(key);
    if (service === undefined) continue;
    for (const p of service.ports) {
      const own = list.ports.find((x) => x.servicePort === p.servicePort)?.targetPort ?? 0;
      const target = own !== 0 ? own : p.targetPort !== 0 ? p.targetPort : p.servicePort;
      if (target === port) found.add(declaredProtocol(service, p.servicePort));
    }
  }
  return found.size === 1 ? [...found][0] : undefined;
}

/**
 * The router's `destination.service` for a Service of the Address resources: a Kubernetes Service
 * (hostname `<name>.<namespace>.svc.<domain>`) by name, anything else as a ServiceEntry host.
 */
export function destinationServiceOf(
  service: Pick<Service, "name" | "namespace" | "hostname">,
  clusterDomain = "cluster.local",
): { name: string; namespace: string; kind?: "ServiceEntry"; hostname?: string } {
  const { name, namespace, hostname } = service;
  return hostname === `${name}.${namespace}.svc.${clusterDomain}`
    ? { name, namespace }
    : { name, namespace, kind: "ServiceEntry", hostname };
}

/**
 * The cluster DNS domain a Service is named in when its hostname is that of a Kubernetes Service of a
 * domain other than `clusterDomain` (`<name>.<namespace>.svc.<other>`); undefined otherwise. Such a
 * Service is one of the cluster's, and the waypoint was told the wrong domain.
 */
export function otherClusterDomainOf(
  service: Pick<Service, "name" | "namespace" | "hostname">,
  clusterDomain = "cluster.local",
): string | undefined {
  const prefix = `${service.name}.${service.namespace}.svc.`;
  if (!service.hostname.startsWith(prefix)) return undefined;
  const domain = service.hostname.slice(prefix.length);
  return domain === clusterDomain || domain === "" ? undefined : domain;
}

/** The Service a VIP belongs to, for the router's `destination.service`. */
export function serviceAtVip(
  store: WorkloadStore,
  vip: string,
  port: number,
): { name: string; namespace: string; hostname: string } | undefined {
  const match = store.findService(vip, port);
  return match === undefined
    ? undefined
    : { name: match.service.name, namespace: match.service.namespace, hostname: match.service.hostname };
}

/**
 * The ready endpoints of a Service backendRef from the Address resources: every healthy workload
 * that lists `namespace/<name>.<namespace>.svc.<domain>` with the port, at its target port; for a
 * ServiceEntry host (`networking.istio.io` `Hostname`, name = the host) the workloads that list
 * `namespace/<host>`, an endpoint known only by hostname at that name (resolved when dialled).
 * `undefined` for another kind or an unknown Service (the router answers 500).
 */
export function resolveServiceBackend(
  store: WorkloadStore,
  ref: BackendRef,
  clusterDomain = "cluster.local",
): Endpoint[] | undefined {
  const kubernetes = ref.kind === "Service" && ref.group === "";
  const host = ref.kind === "Hostname" && ref.group === "networking.istio.io";
  if (!kubernetes && !host) return undefined;
  const key = kubernetes
    ? `${ref.namespace}/${ref.name}.${ref.namespace}.svc.${clusterDomain}`
    : `${ref.namespace}/${ref.name}`;
  const service = store.services().get(key);
  if (service === undefined) return undefined;
  const port = service.ports.find((p) => ref.port === undefined || p.servicePort === ref.port);
  if (port === undefined) return [];
  const match = {
    key,
    service,
    servicePort: port.servicePort,
    targetPort: port.targetPort === 0 ? port.servicePort : port.targetPort,
    // A named target port (0 here) is served only by the workloads whose port map resolves it.
    namedTarget: port.targetPort === 0,
  };
  const protocol =
    port.appProtocol === "HTTP2" || port.appProtocol === "GRPC"
      ? "http2"
      : port.appProtocol === "HTTP11"
        ? "http1"
        : undefined;
  const out: Endpoint[] = [];
  for (const { workload, targetPort } of store.endpointsOf(match)) {
    // A workload of another network is reached only through its network gateway, which this proxy
    // does not take: never an endpoint here.
    if (networkOf(workload) !== store.network) continue;
    // This proxy dials IPv4: a pod's first IPv4 address, wherever it is listed.
    const address =
      workload.addresses.length === 0 && workload.hostname !== "" ? workload.hostname : ipv4Of(workload);
    if (address === undefined) continue;
    out.push({
      address,
      port: targetPort,
      ...(protocol === undefined ? {} : { protocol }),
      workload: workloadInfo(workload),
    });
  }
  return out;
}

/**
 * The endpoint of a tunnel addressed to `workload` itself at `address:port` (a workload bound to this
 * waypoint): the one object per workload and port, so the router keeps one route for it.
 */
const workloadEndpoints = new WeakMap<Workload, Map<string, Endpoint>>();
const MAX_ENDPOINTS_PER_WORKLOAD = 1024;
export function workloadEndpoint(workload: Workload, address: string, port: number): Endpoint {
  let byAddress = workloadEndpoints.get(workload);
  if (byAddress === undefined) {
    byAddress = new Map();
    workloadEndpoints.set(workload, byAddress);
  }
  const key = `${address}:${port}`;
  let endpoint = byAddress.get(key);
  if (endpoint === undefined) {
    // The caller picks the port: bounded as the router's default routes are (an endpoint made again
    // is an equal one; only the route cache's sharing is lost).
    if (byAddress.size >= MAX_ENDPOINTS_PER_WORKLOAD) byAddress.clear();
    endpoint = Object.freeze({ address, port, workload: Object.freeze(workloadInfo(workload)) });
    byAddress.set(key, endpoint);
  }
  return endpoint;
}

function workloadInfo(w: Workload): NonNullable<Endpoint["workload"]> {
  return { ...workloadLabels(w), principal: identityOf(w) };
}

/** What metric labels say of a workload, its principal aside (the source's comes from mutual TLS). */
export function workloadLabels(w: Workload): Omit<NonNullable<Endpoint["workload"]>, "principal"> {
  return {
    name: w.workloadName === "" ? w.name : w.workloadName,
    namespace: w.namespace,
    canonicalService: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    cluster: w.clusterId,
  };
}

/**
 * A {@link WorkloadStore} that counts its changes, so answers derived from it can be kept until the
 * next, and knows the addresses of its host-network workloads (never found by address).
 */
export class VersionedWorkloadStore extends WorkloadStore {
  #generation = 0;
  /** Resource name -> the addresses of a host-network workload; address -> such workloads at it. */
  readonly #hostNetworkNamed = new Map<string, string[]>();
  readonly #hostNetworkAt = new Map<string, number>();

  /**
   * Whether a host-network workload has `ip`: a pod on its node's network, or an EndpointSlice
   * endpoint of a Service without pods. Such an endpoint runs no HBONE server of its own and is
   * reached in plaintext.
   */
  hasHostNetworkAddress(ip: string): boolean {
    return this.#hostNetworkAt.has(ip);
  }

  /** Goes up with every change to the workloads or services. */
  get generation(): number {
    return this.#generation;
  }

  override upsert(name: string, address: WorkloadAddress): void {
    super.upsert(name, address);
    const w = address.workload;
    if (w?.networkMode === "HOST_NETWORK") {
      const ips: string[] = [];
      for (const bytes of w.addresses) {
        const ip = ipFromBytes(bytes);
        if (ip === undefined) continue;
        ips.push(ip);
        this.#hostNetworkAt.set(ip, (this.#hostNetworkAt.get(ip) ?? 0) + 1);
      }
      this.#hostNetworkNamed.set(name, ips);
    }
    this.#generation++;
  }

  override remove(name: string): boolean {
    const ips = this.#hostNetworkNamed.get(name);
    if (ips !== undefined) {
      this.#hostNetworkNamed.delete(name);
      for (const ip of ips) {
        const n = (this.#hostNetworkAt.get(ip) ?? 0) - 1;
        if (n > 0) this.#hostNetworkAt.set(ip, n);
        else this.#hostNetworkAt.delete(ip);
      }
    }
    const removed = super.remove(name);
    if (removed) this.#generation++;
    return removed;
  }
}

/**
 * {@link resolveServiceBackend} for the router's `resolveBackend`, run once per backendRef and store
 * generation instead of once per request: the router asks on every request, and the answer (a sort of
 * every workload, a new endpoint object each) only changes when xDS changes the store. The arrays and
 * endpoints it returns are frozen, since every request shares them.
 */
export function createBackendResolver(
  store: VersionedWorkloadStore,
  clusterDomain = "cluster.local",
): (ref: BackendRef) => readonly Endpoint[] | undefined {
  let generation = -1;
  const cache = new Map<string, readonly Endpoint[] | undefined>();
  return (ref) => {
    if (store.generation !== generation) {
      cache.clear();
      generation = store.generation;
    }
    const key = `${ref.kind}/${ref.group}/${ref.namespace}/${ref.name}/${ref.port ?? ""}`;
    if (cache.has(key)) return cache.get(key);
    const endpoints = resolveServiceBackend(store, ref, clusterDomain);
    const frozen =
      endpoints === undefined
        ? undefined
        : Object.freeze(
            endpoints.map((e) =>
              Object.freeze(e.workload === undefined ? e : { ...e, workload: Object.freeze(e.workload) }),
            ),
          );
    cache.set(key, frozen);
    return frozen;
  };
}
