import type { Service, Workload, WorkloadAddress } from "@ambient/xds";
import { ZtunnelError } from "./errors.js";
import { canonicalFromBytes, parseIpv4, parseIpv6 } from "./ip-address.js";
import { selectByLocality } from "./load-balancing.js";
// Istio leaves a workload's trust domain empty when it is cluster.local (istiod `pickTrustDomain`).
import { DEFAULT_TRUST_DOMAIN } from "./mesh-domains.js";

/** A healthy workload that serves a service port, with the port to dial on it. */
export interface Endpoint {
  workload: Workload;
  targetPort: number;
}

/** A Service VIP:port the store knows, with the matching port mapping. */
export interface ServiceMatch {
  /** `namespace/hostname`, the key workloads use in their `services` map. */
  key: string;
  service: Service;
  servicePort: number;
  /** The Service's own target port, used when an endpoint lists none. */
  targetPort: number;
  /**
   * The Service gives no target port for this port (0: a named `targetPort`, resolved per workload):
   * only workloads whose port map lists the port serve it.
   */
  namedTarget: boolean;
}

/** Where an outbound connection goes. */
export type Destination =
  | { kind: "service"; service: ServiceMatch; endpoint: Endpoint }
  | { kind: "workload"; endpoint: Endpoint }
  /** A Service with no healthy endpoint: nothing to dial. */
  | { kind: "no-endpoint"; service: ServiceMatch }
  /** A Service addressed on a port it does not declare: nothing to dial (ztunnel's no healthy upstream). */
  | { kind: "unknown-port"; service: { key: string; service: Service }; port: number }
  /** Not a mesh address: plain TCP to it. */
  | { kind: "passthrough"; ip: string; port: number };

/**
 * Canonical text of 4- or 16-byte address bytes (dotted quad, RFC 5952 IPv6, IPv4-mapped as IPv4);
 * undefined for other lengths.
 */
export function ipFromBytes(bytes: Uint8Array): string | undefined {
  return canonicalFromBytes(bytes)?.text;
}

/** The SPIFFE ID a workload's certificate carries: `spiffe://<trustDomain>/ns/<ns>/sa/<sa>`. */
export function identityOf(workload: Pick<Workload, "trustDomain" | "namespace" | "serviceAccount">): string {
  const trustDomain = workload.trustDomain === "" ? DEFAULT_TRUST_DOMAIN : workload.trustDomain;
  const serviceAccount = workload.serviceAccount === "" ? "default" : workload.serviceAccount;
  return `spiffe://${trustDomain}/ns/${workload.namespace}/sa/${serviceAccount}`;
}

/**
 * Hostname of the first service (by key) through which `workload` serves `targetPort`, for labelling
 * inbound connections, whose tunnels name only the pod.
 */
export function serviceForTargetPort(
  workload: Pick<Workload, "services">,
  targetPort: number,
): string | undefined {
  const key = serviceKeyForTargetPort(workload, targetPort);
  return key === undefined ? undefined : key.slice(key.indexOf("/") + 1);
}

/** Key (`namespace/hostname`) of the first service (by key) through which `workload` serves `targetPort`. */
export function serviceKeyForTargetPort(
  workload: Pick<Workload, "services">,
  targetPort: number,
): string | undefined {
  for (const key of Object.keys(workload.services).sort()) {
    if (workload.services[key]?.ports.some((p) => p.targetPort === targetPort)) return key;
  }
  return undefined;
}

/** Whether traffic to the workload goes through an HBONE tunnel. */
export function usesHbone(workload: Workload): boolean {
  return workload.tunnelProtocol === "HBONE";
}

/** Where a Service's traffic goes first: its waypoint's HBONE address. */
export interface WaypointTarget {
  ip: string;
  /** HBONE port of the waypoint (`hbone_mtls_port`, 15008 when unset). */
  port: number;
}

/**
 * The address a Service's or Workload's `waypoint` names, when it names one (a waypoint workload's
 * address, or its Service's VIP), with the HBONE port; undefined for a waypoint named by hostname.
 * Where such traffic goes is {@link WorkloadStore.resolveWaypoint}.
 */
export function waypointOf(service: Pick<Service | Workload, "waypoint">): WaypointTarget | undefined {
  const bytes = service.waypoint?.address?.address;
  const ip = bytes === undefined ? undefined : ipFromBytes(bytes);
  if (ip === undefined) return undefined;
  const port = service.waypoint?.hboneMtlsPort ?? 0;
  return { ip, port: port === 0 ? 15008 : port };
}

/** A waypoint as the workload that takes the tunnel: one of its instances, at its HBONE port. */
export interface WaypointUpstream {
  workload: Workload;
  ip: string;
  port: number;
}

/**
 * What a Service's or Workload's `waypoint` comes to: none; the instance to tunnel to; or a waypoint
 * this proxy cannot reach (unknown, no healthy instance, malformed), whose traffic must be refused
 * rather than sent around it.
 */
export type WaypointResolution =
  | { kind: "none" }
  | { kind: "waypoint"; upstream: WaypointUpstream }
  | { kind: "unreachable"; reason: string };

/** A range of addresses a Service captures: the addresses whose first `prefix` bits are those of `bytes`. */
interface AddressRange {
  /** 4 or 16 bytes, as the addresses compared with it. */
  bytes: Uint8Array;
  prefix: number;
}

/**
 * What one of a Service's addresses stands for: a VIP (no prefix length, or the full one), or a range
 * (a ServiceEntry's `10.0.0.0/16`, sent as the address and its prefix length), whose first address is
 * no more the Service's than any other in it. Undefined for bytes that are no address, and for a
 * prefix longer than the address, which names nothing.
 */
function serviceAddressOf(
  a: Service["addresses"][number],
): { kind: "vip"; ip: string } | { kind: "range"; range: AddressRange } | undefined {
  const ip = canonicalFromBytes(a.address);
  if (ip === undefined) return undefined;
  const bits = a.address.length * 8;
  if (a.length === undefined || a.length === bits) return { kind: "vip", ip: ip.text };
  if (a.length > bits) return undefined;
  // An IPv4-mapped range within ::ffff:0:0/96 is the IPv4 range it maps, as its addresses are.
  if (ip.family === 4 && bits === 128 && a.length >= 96) {
    return { kind: "range", range: { bytes: a.address.slice(12), prefix: a.length - 96 } };
  }
  return { kind: "range", range: { bytes: a.address.slice(), prefix: a.length } };
}

/** Whether the address `bytes` (of the same length as the range's) is in `range`. */
function inRange(range: AddressRange, bytes: Uint8Array): boolean {
  if (bytes.length !== range.bytes.length) return false;
  const whole = range.prefix >> 3;
  for (let i = 0; i < whole; i++) if (bytes[i] !== range.bytes[i]) return false;
  const rest = range.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((bytes[whole] ?? 0) & mask) === ((range.bytes[whole] ?? 0) & mask);
}

/** Why one of a Service's addresses is no address, or undefined (see {@link serviceAddressOf}). */
function serviceAddressProblem(a: Service["addresses"][number]): string | undefined {
  if (serviceAddressOf(a) !== undefined) return undefined;
  const bytes = a.address.length;
  return bytes === 4 || bytes === 16
    ? `service address prefix length ${a.length} is longer than its ${bytes * 8} bits`
    : `service address of ${bytes} bytes`;
}

/**
 * Why a waypoint reference cannot be followed, or undefined: it must name a hostname or an address of
 * 4 or 16 bytes. One with neither (or a kind of destination this proxy does not know) names nothing.
 */
function waypointProblem(gateway: Workload["waypoint"]): string | undefined {
  if (gateway === undefined || gateway.hostname !== undefined) return undefined;
  if (gateway.address === undefined) return "waypoint names no destination";
  const bytes = gateway.address.address.length;
  return canonicalFromBytes(gateway.address.address) === undefined
    ? `waypoint address of ${bytes} bytes`
    : undefined;
}

/**
 * Why `address` cannot be stored under any name, or undefined. It must be a workload or a Service (an
 * Address of a kind this proxy does not know decodes as neither), and every address the store
 * indexes or dials must be one: a workload's, a Service's VIP or range, a waypoint's.
 */
function contentProblem(address: WorkloadAddress): string | undefined {
  const { workload, service } = address;
  if (workload !== undefined && service !== undefined) return "both a workload and a service";
  if (workload !== undefined) {
    for (const bytes of workload.addresses) {
      if (canonicalFromBytes(bytes) === undefined) return `workload address of ${bytes.length} bytes`;
    }
    return waypointProblem(workload.waypoint);
  }
  if (service !== undefined) {
    for (const a of service.addresses) {
      const problem = serviceAddressProblem(a);
      if (problem !== undefined) return problem;
    }
    return waypointProblem(service.waypoint);
  }
  return "neither a workload nor a service";
}

/**
 * Why an `istio.workload.Address` resource named `name` cannot go into a {@link WorkloadStore}, or
 * undefined: give it to the xDS client's `validate`, which NACKs the resource and keeps its last good
 * version. The store keys a workload by uid and a Service by `namespace/hostname` but removes by xDS
 * name, so the name must be that key; the rest is {@link WorkloadStore.upsert}'s check.
 */
export function addressProblem(name: string, resource: unknown): string | undefined {
  if (typeof resource !== "object" || resource === null) return "not an Address";
  const address = resource as WorkloadAddress;
  const problem = contentProblem(address);
  if (problem !== undefined) return problem;
  if (address.service !== undefined) {
    const { namespace, hostname } = address.service;
    if (namespace === "" || hostname === "") return "service without a namespace or hostname";
    const key = `${namespace}/${hostname}`;
    return key === name ? undefined : `service ${key} sent under the name ${name}`;
  }
  const uid = address.workload?.uid ?? "";
  if (uid === "") return "workload without a uid";
  return uid === name ? undefined : `workload ${uid} sent under the name ${name}`;
}

/** Whether rank `a` (of the Service `aKey`) beats rank `b`: the first differing part, else the lower key. */
function outranks(a: readonly number[], aKey: string, b: readonly number[], bKey: string): boolean {
  for (let i = 0; i < a.length; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return aKey < bKey;
}

/**
 * The VIP a Service is dialled at by name: its first IPv4 address, else its first address; never an
 * address that stands for a range.
 */
export function serviceVip(service: Pick<Service, "addresses">): string | undefined {
  const ips = service.addresses.flatMap((a) => {
    const ip = serviceAddressOf(a)?.kind === "vip" ? canonicalFromBytes(a.address) : undefined;
    return ip === undefined ? [] : [ip];
  });
  return (ips.find((ip) => ip.family === 4) ?? ips[0])?.text;
}

/** `service` (known by `key`) on its port `port`, or undefined when it has no such port. */
function serviceMatch(key: string, service: Service, port: number): ServiceMatch | undefined {
  const p = service.ports.find((x) => x.servicePort === port);
  if (p === undefined) return undefined;
  return {
    key,
    service,
    servicePort: port,
    targetPort: p.targetPort === 0 ? port : p.targetPort,
    namedTarget: p.targetPort === 0,
  };
}

/**
 * The address to dial `workload` at for a connection addressed to `target` (canonical text: the pod
 * IP, a Service VIP, a waypoint's address): `target` itself when the workload has it, else its first
 * address of `target`'s family that `ipFamilies` (its Service's, if any) allows. Undefined when it has
 * none: the connection is refused (ztunnel's `NoValidDestination`), never sent to `target` as is. An
 * address of the other family is not taken either (ztunnel would take one): this proxy's own pods
 * serve IPv4 only.
 */
export function pickDestinationIp(
  workload: Pick<Workload, "addresses">,
  target: string,
  ipFamilies?: Service["ipFamilies"],
): string | undefined {
  const ips = workload.addresses.flatMap((bytes) => {
    const ip = canonicalFromBytes(bytes);
    return ip === undefined ? [] : [ip];
  });
  if (ips.some((ip) => ip.text === target)) return target;
  const family = target.includes(":") ? 6 : 4;
  const allowed = ipFamilies === "IPV4_ONLY" ? 4 : ipFamilies === "IPV6_ONLY" ? 6 : family;
  if (allowed !== family) return undefined;
  return ips.find((ip) => ip.family === family)?.text;
}

/**
 * The address a local pod is served at: its first IPv4 address, wherever it is listed (this proxy
 * carries IPv4; a dual-stack pod may list its IPv6 address first). Undefined for an IPv6-only pod.
 */
export function ipv4Of(workload: Pick<Workload, "addresses">): string | undefined {
  for (const bytes of workload.addresses) {
    if (bytes.length === 4) return Array.from(bytes).join(".");
  }
  return undefined;
}

/** Stands for "an IPv4 address" where a family is chosen and no address was given. */
const ANY_IPV4 = "0.0.0.0";

/**
 * The network a workload or address is on: its `network`, the default network `""` when unset (as
 * proto3 decodes a string that was not sent).
 */
export function networkOf(entry: { network?: string | undefined }): string {
  return entry.network ?? "";
}

/** The key of an address on a network: `network/ip`, as the control plane names Addresses. */
function networkKey(network: string, ip: string): string {
  return `${network}/${ip}`;
}

/** A waypoint reference as text, for logs: `namespace/hostname` or its address. */
function gatewayText(gateway: NonNullable<Workload["waypoint"]>): string {
  if (gateway.hostname !== undefined) return `${gateway.hostname.namespace}/${gateway.hostname.hostname}`;
  if (gateway.address !== undefined) return ipFromBytes(gateway.address.address) ?? "(bad address)";
  return "(no destination)";
}

/** Round robin: the endpoint at `counter` modulo the list; undefined when the list is empty. */
export function pickEndpoint(endpoints: readonly Endpoint[], counter: number): Endpoint | undefined {
  if (endpoints.length === 0) return undefined;
  return endpoints[((counter % endpoints.length) + endpoints.length) % endpoints.length];
}

/** Options of a {@link WorkloadStore}. */
export interface WorkloadStoreOptions {
  /**
   * The network this proxy is on: addresses are looked up on it unless a lookup names another.
   * Default `""`, the network of a mesh that names none; ztunnel `NETWORK`.
   */
  network?: string;
}

/**
 * The workloads and services of the mesh as the control plane sent them (`istio.workload.Address`),
 * indexed for the lookups a node proxy makes on every connection. Addresses are kept per network (as
 * `network/ip`): a pod of another network that reuses a local pod's IP is another pod.
 */
export class WorkloadStore {
  /** The network addresses are looked up on by default (see {@link WorkloadStoreOptions.network}). */
  readonly network: string;
  readonly #workloads = new Map<string, Workload>();
  readonly #services = new Map<string, Service>();
  /**
   * Resource name -> what it was, so a removal by name finds its entry. A name here holds its entry:
   * when another name stores the same key, the first name is removed (see {@link #holders}).
   */
  readonly #byName = new Map<string, { kind: "workload" | "service"; key: string }>();
  /** Workload uid or Service key -> the resource name that stored it last. */
  readonly #holders = { workload: new Map<string, string>(), service: new Map<string, string>() };
  /** `network/ip` -> key of the workload with that address. */
  readonly #workloadByAddress = new Map<string, string>();
  /**
   * `network/VIP` -> keys of the Services with it. Several may share one (a ServiceEntry reusing a Kubernetes
   * Service's ClusterIP, in its own namespace or another): each stays, and a lookup picks among them
   * for its client, so a later one never takes the address from the clients of another.
   */
  readonly #servicesByVip = new Map<string, Set<string>>();
  /** The ranges Services capture, with the key and network of each; looked up when no VIP matches. */
  readonly #serviceRanges: { key: string; network: string; range: AddressRange }[] = [];
  /** Hostname -> keys (`namespace/hostname`) of the Services with it: one per namespace at most. */
  readonly #servicesByHost = new Map<string, Set<string>>();
  readonly #roundRobin = new Map<string, number>();
  /** Service key -> keys of the workloads that list it: a lookup reads its endpoints, not every workload. */
  readonly #workloadsByService = new Map<string, Set<string>>();
  /** The same keys sorted (a stable endpoint order), built on first use after a change. */
  readonly #sortedByService = new Map<string, string[]>();

  constructor(options: WorkloadStoreOptions = {}) {
    this.network = options.network ?? "";
  }

  /**
   * Adds or replaces the resource named `name` (a Workload uid or a Service `ns/hostname`). An Address
   * the store cannot use (neither a workload nor a Service, or an address that is none: see
   * {@link addressProblem}) throws a `ZtunnelError` (`ERR_ZTUNNEL_INVALID_OPTION`) and leaves what
   * `name` held in place. An entry of the same key stored under another name is replaced, and that
   * name no longer holds anything.
   */
  upsert(name: string, address: WorkloadAddress): void {
    const problem = contentProblem(address);
    if (problem !== undefined) {
      throw new ZtunnelError("ERR_ZTUNNEL_INVALID_OPTION", `Address ${name}: ${problem}`, { name });
    }
    this.remove(name);
    if (address.workload !== undefined) {
      const w = address.workload;
      const key = w.uid === "" ? name : w.uid;
      this.#take("workload", key, name);
      this.#workloads.set(key, w);
      this.#byName.set(name, { kind: "workload", key });
      for (const serviceKey of Object.keys(w.services)) {
        let keys = this.#workloadsByService.get(serviceKey);
        if (keys === undefined) {
          keys = new Set();
          this.#workloadsByService.set(serviceKey, keys);
        }
        keys.add(key);
        this.#sortedByService.delete(serviceKey);
      }
      // A host-network workload has its node's address, which the node and its other such pods
      // share: it is never found by address (so never taken as the source or destination of a
      // connection to that address), only as a Service's endpoint.
      if (w.networkMode === "HOST_NETWORK") return;
      for (const bytes of w.addresses) {
        const ip = ipFromBytes(bytes);
        if (ip !== undefined) this.#workloadByAddress.set(networkKey(networkOf(w), ip), key);
      }
    } else if (address.service !== undefined) {
      const s = address.service;
      const key = `${s.namespace}/${s.hostname}`;
      this.#take("service", key, name);
      this.#services.set(key, s);
      this.#byName.set(name, { kind: "service", key });
      let keys = this.#servicesByHost.get(s.hostname);
      if (keys === undefined) {
        keys = new Set();
        this.#servicesByHost.set(s.hostname, keys);
      }
      keys.add(key);
      for (const a of s.addresses) {
        const found = serviceAddressOf(a);
        if (found?.kind === "vip") {
          const vip = networkKey(networkOf(a), found.ip);
          let atVip = this.#servicesByVip.get(vip);
          if (atVip === undefined) {
            atVip = new Set();
            this.#servicesByVip.set(vip, atVip);
          }
          atVip.add(key);
        } else if (found?.kind === "range") {
          this.#serviceRanges.push({ key, network: networkOf(a), range: found.range });
        }
      }
    }
  }

  /** Makes `name` the holder of the entry `key`, removing the name that held it before, if another. */
  #take(kind: "workload" | "service", key: string, name: string): void {
    const holder = this.#holders[kind].get(key);
    if (holder !== undefined && holder !== name) this.remove(holder);
    this.#holders[kind].set(key, name);
  }

  /** Removes the resource named `name`; returns whether it existed. */
  remove(name: string): boolean {
    const entry = this.#byName.get(name);
    if (entry === undefined) return false;
    this.#byName.delete(name);
    this.#holders[entry.kind].delete(entry.key);
    if (entry.kind === "workload") {
      const w = this.#workloads.get(entry.key);
      this.#workloads.delete(entry.key);
      for (const serviceKey of Object.keys(w?.services ?? {})) {
        const keys = this.#workloadsByService.get(serviceKey);
        keys?.delete(entry.key);
        if (keys?.size === 0) this.#workloadsByService.delete(serviceKey);
        this.#sortedByService.delete(serviceKey);
      }
      for (const bytes of w?.addresses ?? []) {
        const ip = ipFromBytes(bytes);
        const at = ip === undefined || w === undefined ? undefined : networkKey(networkOf(w), ip);
        if (at !== undefined && this.#workloadByAddress.get(at) === entry.key)
          this.#workloadByAddress.delete(at);
      }
    } else {
      const s = this.#services.get(entry.key);
      this.#services.delete(entry.key);
      this.#roundRobin.delete(entry.key);
      if (s !== undefined) {
        const keys = this.#servicesByHost.get(s.hostname);
        keys?.delete(entry.key);
        if (keys?.size === 0) this.#servicesByHost.delete(s.hostname);
      }
      for (const a of s?.addresses ?? []) {
        const found = serviceAddressOf(a);
        if (found?.kind !== "vip") continue;
        const vip = networkKey(networkOf(a), found.ip);
        const atVip = this.#servicesByVip.get(vip);
        atVip?.delete(entry.key);
        if (atVip?.size === 0) this.#servicesByVip.delete(vip);
      }
      for (let i = this.#serviceRanges.length - 1; i >= 0; i--) {
        if (this.#serviceRanges[i]?.key === entry.key) this.#serviceRanges.splice(i, 1);
      }
    }
    return true;
  }

  /** The workload that owns `ip` on `network` (default: the store's own), if any. */
  findByAddress(ip: string, network: string = this.network): Workload | undefined {
    const key = this.#workloadByAddress.get(networkKey(network, ip));
    return key === undefined ? undefined : this.#workloads.get(key);
  }

  /**
   * Key of the Service an address (canonical text) belongs to for a client in `namespace`. Of the
   * Services with it as a VIP: the one in the client's namespace, then a canonical one (a Kubernetes
   * Service, which a ServiceEntry elsewhere reusing its ClusterIP must not take from other clients),
   * then the first by key. Else, of the Services whose ranges hold it: the one in the client's
   * namespace, then the one with the longest prefix, then a canonical one, then the first by key. A
   * Service of NAMESPACE visibility (`exportTo: ["."]`) is none of another namespace's clients'
   * business: it is passed over for them (not for a lookup that names no client). Only addresses on
   * `network` (default: the store's own) count.
   */
  #serviceKeyAt(ip: string, namespace?: string, network: string = this.network): string | undefined {
    const visible = (s: Service) =>
      namespace === undefined || s.visibility !== "NAMESPACE" || s.namespace === namespace;
    const atVip = this.#servicesByVip.get(networkKey(network, ip));
    if (atVip !== undefined) {
      let best: { key: string; rank: [number, number] } | undefined;
      for (const key of atVip) {
        const service = this.#services.get(key);
        if (service === undefined || !visible(service)) continue;
        const rank: [number, number] = [
          namespace !== undefined && service.namespace === namespace ? 1 : 0,
          service.canonical ? 1 : 0,
        ];
        if (best === undefined || outranks(rank, key, best.rank, best.key)) best = { key, rank };
      }
      if (best !== undefined) return best.key;
    }
    if (this.#serviceRanges.length === 0) return undefined;
    const bytes = parseIpv4(ip) ?? parseIpv6(ip);
    if (bytes === undefined) return undefined;
    let best: { key: string; rank: [number, number, number] } | undefined;
    for (const { key, network: rangeNetwork, range } of this.#serviceRanges) {
      if (rangeNetwork !== network || !inRange(range, bytes)) continue;
      const service = this.#services.get(key);
      if (service === undefined || !visible(service)) continue;
      const rank: [number, number, number] = [
        namespace !== undefined && service.namespace === namespace ? 1 : 0,
        range.prefix,
        service.canonical ? 1 : 0,
      ];
      if (best === undefined || outranks(rank, key, best.rank, best.key)) best = { key, rank };
    }
    return best?.key;
  }

  /**
   * The Service at `vip` (a VIP of its own or an address in one of its ranges) that exposes `port`,
   * if any; `namespace` (the client's) chooses among the Services at the address and passes over those
   * it may not see.
   */
  findService(vip: string, port: number, namespace?: string): ServiceMatch | undefined {
    const at = this.serviceAt(vip, namespace);
    return at === undefined ? undefined : serviceMatch(at.key, at.service, port);
  }

  /**
   * The Service with the address `vip`, whatever the port: as ztunnel finds the Service a connection
   * is addressed to (its waypoint applies to every port of it). `namespace` as {@link findService}.
   */
  serviceAt(vip: string, namespace?: string): { key: string; service: Service } | undefined {
    const key = this.#serviceKeyAt(vip, namespace);
    const service = key === undefined ? undefined : this.#services.get(key);
    return key === undefined || service === undefined ? undefined : { key, service };
  }

  /**
   * The Service named `hostname`, for SOCKS5 requests and HBONE authorities by name: the one in
   * `preferNamespace` (the client's) when there is one, else the one marked canonical (a Kubernetes
   * Service, which a ServiceEntry of another namespace reusing its hostname must not shadow), else the
   * first by `namespace/hostname` key. With a client namespace, a Service of NAMESPACE visibility
   * (`exportTo: ["."]`) of another namespace is passed over: its name is not that client's to resolve,
   * as its address is not (a lookup that names no client still finds it).
   */
  findServiceByHostname(hostname: string, preferNamespace?: string): Service | undefined {
    let services = this.servicesByHostname(hostname);
    if (preferNamespace !== undefined) {
      services = services.filter((s) => s.visibility !== "NAMESPACE" || s.namespace === preferNamespace);
    }
    return (
      services.find((s) => s.namespace === preferNamespace) ??
      services.find((s) => s.canonical) ??
      services[0]
    );
  }

  /** Every Service named `hostname` (one per namespace), by `namespace/hostname` key. */
  servicesByHostname(hostname: string): Service[] {
    const keys = this.#servicesByHost.get(hostname);
    if (keys === undefined) return [];
    const out: Service[] = [];
    for (const key of [...keys].sort()) {
      const s = this.#services.get(key);
      if (s !== undefined) out.push(s);
    }
    return out;
  }

  /**
   * Healthy workloads that back the Service `key` (`namespace/hostname`) on any port, by uid: the
   * answers for a Service without a VIP (a headless one).
   */
  workloadsOfService(key: string): Workload[] {
    const out: Workload[] = [];
    for (const uid of this.#backing(key)) {
      const w = this.#workloads.get(uid);
      if (w !== undefined && uid !== "" && w.status === "HEALTHY") out.push(w);
    }
    return out;
  }

  /** Keys of the workloads that list the Service `key`, sorted. */
  #backing(key: string): readonly string[] {
    let sorted = this.#sortedByService.get(key);
    if (sorted === undefined) {
      sorted = [...(this.#workloadsByService.get(key) ?? [])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      this.#sortedByService.set(key, sorted);
    }
    return sorted;
  }

  /**
   * The Service at `vip` (a VIP of its own or an address in one of its ranges; any port), if any, for a
   * client in `namespace` (chosen as by {@link findService}); with none, the canonical one.
   */
  findServiceByVip(vip: string, namespace?: string): Service | undefined {
    const key = this.#serviceKeyAt(vip, namespace);
    return key === undefined ? undefined : this.#services.get(key);
  }

  /**
   * Healthy workloads that list the service port, in a stable order (by uid); unhealthy ones too when
   * the Service's `loadBalancing.healthPolicy` is ALLOW_ALL.
   */
  endpointsOf(match: ServiceMatch): Endpoint[] {
    const out: Endpoint[] = [];
    const allowAll = match.service.loadBalancing?.healthPolicy === "ALLOW_ALL";
    for (const uid of this.#backing(match.key)) {
      const w = this.#workloads.get(uid);
      if (w === undefined) continue;
      // An endpoint without an address is reached by its hostname (a DNS ServiceEntry's).
      if ((w.status !== "HEALTHY" && !allowAll) || (w.addresses.length === 0 && w.hostname === "")) continue;
      const ports = w.services[match.key];
      if (ports === undefined || uid === "") continue;
      const p = ports.ports.find((x) => x.servicePort === match.servicePort);
      const own = p === undefined || p.targetPort === 0 ? undefined : p.targetPort;
      // A Service port without a number of its own (a named `targetPort`) is served only by the
      // workloads whose port map resolves it: one without that named port does not list the port,
      // and dialling it at the Service port would reach whatever listens there, if anything.
      if (own === undefined && match.namedTarget) continue;
      out.push({ workload: w, targetPort: own ?? match.targetPort });
    }
    return out;
  }

  /**
   * The next endpoint of the service for a connection from `source`: round robin over the endpoints
   * {@link selectByLocality} keeps under the Service's `loadBalancing` (all of them by default), of
   * those on the source's network (the store's without a source). An endpoint of another network is
   * reached only through its network gateway (ztunnel's double HBONE), which this proxy does not
   * take, and never directly: it is not chosen, with a gateway or without.
   */
  selectEndpoint(match: ServiceMatch, source?: Workload): Endpoint | undefined {
    const network = source === undefined ? this.network : networkOf(source);
    const reachable = this.endpointsOf(match).filter((e) => networkOf(e.workload) === network);
    const endpoints = selectByLocality(reachable, source, match.service.loadBalancing);
    const counter = this.#roundRobin.get(match.key) ?? 0;
    const chosen = pickEndpoint(endpoints, counter);
    if (chosen !== undefined) this.#roundRobin.set(match.key, counter + 1);
    return chosen;
  }

  /**
   * Service VIP:port (an endpoint chosen for `source`), then pod IP:port, else a passthrough
   * destination. A Service in `loadBalancing` mode PASSTHROUGH is passed through to the VIP as is; any
   * other Service addressed on a port it does not declare is `unknown-port`.
   */
  resolve(ip: string, port: number, source?: Workload): Destination {
    const at = this.serviceAt(ip, source?.namespace);
    if (at?.service.loadBalancing?.mode === "PASSTHROUGH") return { kind: "passthrough", ip, port };
    const service = at === undefined ? undefined : serviceMatch(at.key, at.service, port);
    // A Service's address on a port it does not declare is not passed through: that would go around
    // the mesh (and a waypoint) in plaintext. ztunnel answers it with no healthy upstream.
    if (at !== undefined && service === undefined) return { kind: "unknown-port", service: at, port };
    if (service !== undefined) {
      const endpoint = this.selectEndpoint(service, source);
      return endpoint === undefined
        ? { kind: "no-endpoint", service }
        : { kind: "service", service, endpoint };
    }
    const workload = this.findByAddress(ip);
    if (workload !== undefined) return { kind: "workload", endpoint: { workload, targetPort: port } };
    return { kind: "passthrough", ip, port };
  }

  /**
   * The Service or Workload a waypoint reference names: by address, the Service with that VIP, else
   * the workload with it; by hostname, the Service `namespace/hostname`, else the workload of that
   * namespace with that hostname.
   */
  #waypointTarget(
    gateway: NonNullable<Workload["waypoint"]>,
  ): { service: Service; key: string } | { workload: Workload } | undefined {
    if (gateway.address !== undefined) {
      const ip = ipFromBytes(gateway.address.address);
      if (ip === undefined) return undefined;
      const network = networkOf(gateway.address);
      const key = this.#serviceKeyAt(ip, undefined, network);
      const service = key === undefined ? undefined : this.#services.get(key);
      if (key !== undefined && service !== undefined) return { service, key };
      const workload = this.findByAddress(ip, network);
      return workload === undefined ? undefined : { workload };
    }
    if (gateway.hostname !== undefined) {
      return this.findByNamespacedHostname(gateway.hostname.namespace, gateway.hostname.hostname);
    }
    return undefined;
  }

  /**
   * What `namespace/hostname` names, as a waypoint reference by hostname does: the Service with that
   * key, else the workload of that namespace with that hostname.
   */
  findByNamespacedHostname(
    namespace: string,
    hostname: string,
  ): { service: Service; key: string } | { workload: Workload } | undefined {
    // No name names nothing (not every workload without a hostname).
    if (hostname === "") return undefined;
    const key = `${namespace}/${hostname}`;
    const service = this.#services.get(key);
    if (service !== undefined) return { service, key };
    for (const w of this.#workloads.values()) {
      if (w.namespace === namespace && w.hostname === hostname) return { workload: w };
    }
    return undefined;
  }

  /**
   * Where traffic bound to `target`'s waypoint goes for a connection from `source`. A waypoint named
   * by a Service (its VIP, or its hostname as the control plane usually sends it) is one of that
   * Service's endpoints for the HBONE port, chosen as for any Service; one named by a workload is
   * that workload at the HBONE port (`hboneMtlsPort`, 15008 when unset). The instance is dialled at
   * the address the waypoint is named by, or one of its family; for a waypoint named by hostname, at
   * one of the family of `destinationIp`, the address the connection was made to (IPv4 without one),
   * as {@link pickDestinationIp} chooses. An instance with no such address is unreachable.
   */
  resolveWaypoint(
    target: Pick<Service | Workload, "waypoint">,
    source?: Workload,
    destinationIp?: string,
  ): WaypointResolution {
    const gateway = target.waypoint;
    if (gateway === undefined) return { kind: "none" };
    const port = gateway.hboneMtlsPort === 0 ? 15008 : gateway.hboneMtlsPort;
    const named = gatewayText(gateway);
    const found = this.#waypointTarget(gateway);
    if (found === undefined) return { kind: "unreachable", reason: `waypoint ${named} is not known` };
    const byAddress = gateway.address === undefined ? undefined : ipFromBytes(gateway.address.address);
    const dialTarget = byAddress ?? destinationIp ?? ANY_IPV4;
    if ("workload" in found) {
      const ip = pickDestinationIp(found.workload, dialTarget);
      if (ip === undefined) {
        return {
          kind: "unreachable",
          reason: `waypoint ${named} has no address of the family of ${dialTarget}`,
        };
      }
      return { kind: "waypoint", upstream: { workload: found.workload, ip, port } };
    }
    const match = serviceMatch(found.key, found.service, port);
    const endpoint = match === undefined ? undefined : this.selectEndpoint(match, source);
    if (endpoint === undefined) {
      return { kind: "unreachable", reason: `waypoint ${named} has no healthy endpoint on port ${port}` };
    }
    const ip = pickDestinationIp(endpoint.workload, dialTarget, found.service.ipFamilies);
    if (ip === undefined) {
      return {
        kind: "unreachable",
        reason: `waypoint ${named}: endpoint ${endpoint.workload.name} has no address of the family of ${dialTarget}`,
      };
    }
    return { kind: "waypoint", upstream: { workload: endpoint.workload, ip, port: endpoint.targetPort } };
  }

  /**
   * Whether the workload `workload` at `ip` is an instance of `target`'s waypoint (the waypoint
   * workload itself, or any workload of the waypoint's Service, healthy or not), by identity and
   * address: a caller that is the waypoint is not sent back to it, and a tunnel for an address whose
   * waypoint is the accepting pod is that pod's own.
   */
  isWaypointOf(target: Pick<Service | Workload, "waypoint">, workload: Workload, ip: string): boolean {
    if (target.waypoint === undefined) return false;
    const found = this.#waypointTarget(target.waypoint);
    if (found === undefined) return false;
    const identity = identityOf(workload);
    const matches = (w: Workload) =>
      identityOf(w) === identity && w.addresses.some((bytes) => ipFromBytes(bytes) === ip);
    if ("workload" in found) return matches(found.workload);
    for (const uid of this.#backing(found.key)) {
      const w = this.#workloads.get(uid);
      if (w !== undefined && matches(w)) return true;
    }
    return false;
  }

  /**
   * Workloads scheduled on `node` with an address (the pods a node proxy serves); not host-network
   * ones, whose network is the node's own.
   */
  workloadsOnNode(node: string): Workload[] {
    return [...this.#workloads.values()].filter(
      (w) => w.node === node && w.addresses.length > 0 && w.networkMode !== "HOST_NETWORK",
    );
  }

  /** Every workload, by uid. */
  workloads(): ReadonlyMap<string, Workload> {
    return this.#workloads;
  }

  /** Every service, by `namespace/hostname`. */
  services(): ReadonlyMap<string, Service> {
    return this.#services;
  }
}
