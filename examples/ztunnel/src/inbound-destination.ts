/**
 * Which upstream an inbound HBONE tunnel may reach, decided without side effects. A tunnel accepted
 * by a pod's listener (with that pod's certificate) only ever reaches that pod: the CONNECT
 * authority picks the port, never another pod. This follows Istio ztunnel's inbound
 * `validate_destination` and `resolve_inbound_target`:
 *
 * - `podIP:port` of the accepting pod: that port on the pod.
 * - another address: allowed only when the accepting pod is the waypoint of the Service (by VIP) or
 *   workload (by pod IP) at that address ("sandwich"); the upstream is still the accepting pod.
 * - `hostname:port` of a mesh Service (as a gateway sends it): the pod's target port for that
 *   Service port; the upstream is still the accepting pod.
 * - anything else is 400; an unknown accepting pod or a port with no mapping is 503; the HBONE port
 *   itself is refused (503) so a tunnel cannot loop into the proxy.
 *
 * A pod with an application tunnel (`Workload.applicationTunnel`, a waypoint bound to PROXY) takes
 * any address as authority: it reads the address from the PROXY header and decides for itself. Its
 * tunnels go to the tunnel's port (when set), and the decision names the address that header
 * carries (ztunnel's `validate_destination` and `find_inbound_upstream`).
 */
import type { TunnelAuthority } from "@ambient/hbone";
import type { Service, Workload } from "@ambient/xds";
import { canonicalFromBytes, canonicalIp } from "./ip-address.js";
import { usesHbone, type WorkloadStore } from "./workload-store.js";

/** The store lookups the decision needs. */
export interface InboundLookups {
  findByAddress(ip: string): Workload | undefined;
  findServiceByVip(vip: string): Service | undefined;
  findServiceByHostname(hostname: string, preferNamespace?: string): Service | undefined;
  isWaypointOf: WorkloadStore["isWaypointOf"];
}

/**
 * The application tunnel of a forwarded connection: its protocol, and the address the PROXY header
 * carries as destination (the authority's address, or its Service's VIP when it named a hostname).
 */
export interface ApplicationTunnelTarget {
  protocol: "NONE" | "PROXY";
  target: { ip: string; port: number };
}

/** Where an inbound tunnel goes, or the status it is refused with. */
export type InboundDecision =
  | {
      kind: "forward";
      /** Always the accepting pod's IP. */
      ip: string;
      /** The pod's port the connection goes to (the application tunnel's, when it sets one). */
      port: number;
      workload: Workload;
      /**
       * How the authority named the pod; `application-tunnel` for another address, taken because the
       * pod has an application tunnel.
       */
      via: "pod-address" | "waypoint" | "service-hostname" | "application-tunnel";
      /** The Service the authority named, if it named one. */
      service?: Service;
      /** Set when the pod has an application tunnel. */
      applicationTunnel?: ApplicationTunnelTarget;
    }
  | { kind: "refuse"; status: 400 | 503; reason: string };

/** Context of the listener that accepted the tunnel. */
export interface InboundListener {
  /** IP of the pod whose listener (and certificate) accepted the tunnel. */
  podIp: string;
  /**
   * The uid of that pod's workload: the workload found at `podIp` must be this one (another that
   * claims the address in the store is not the pod served here). Unchecked when absent.
   */
  workloadUid?: string;
  /** This proxy's node name: the pod must be one of its HBONE pods. */
  nodeName: string;
  /** Ports the upstream may never be (the HBONE port). */
  illegalPorts: readonly number[];
}

function targetPortFor(pod: Workload, service: Service, servicePort: number): number | undefined {
  const key = `${service.namespace}/${service.hostname}`;
  const own = pod.services[key]?.ports.find((p) => p.servicePort === servicePort);
  if (own !== undefined && own.targetPort !== 0) return own.targetPort;
  const port = service.ports.find((p) => p.servicePort === servicePort);
  if (port === undefined) return undefined;
  return port.targetPort === 0 ? undefined : port.targetPort;
}

/** Decides where the tunnel with `authority`, accepted by `listener`, goes. */
export function decideInboundDestination(
  listener: InboundListener,
  authority: TunnelAuthority,
  store: InboundLookups,
): InboundDecision {
  const pod = store.findByAddress(listener.podIp);
  if (pod === undefined || pod.node !== listener.nodeName || !usesHbone(pod)) {
    return { kind: "refuse", status: 503, reason: `${listener.podIp} is not a local mesh pod` };
  }
  if (listener.workloadUid !== undefined && pod.uid !== listener.workloadUid) {
    return { kind: "refuse", status: 503, reason: `${listener.podIp} is held by another workload` };
  }
  let port = authority.port;
  let via: "pod-address" | "waypoint" | "service-hostname" | "application-tunnel";
  let service: Service | undefined;
  // The address a PROXY header carries: the authority's, or its Service's VIP for a hostname.
  let tunnelTarget: { ip: string; port: number } | undefined;
  if (authority.kind === "hostname") {
    const svc = store.findServiceByHostname(authority.host, pod.namespace);
    if (svc === undefined) {
      return { kind: "refuse", status: 503, reason: `no Service ${authority.host}` };
    }
    const target = targetPortFor(pod, svc, authority.port);
    if (target === undefined) {
      return {
        kind: "refuse",
        status: 503,
        reason: `${authority.host} has no target port for ${authority.port}`,
      };
    }
    port = target;
    via = "service-hostname";
    service = svc;
  } else {
    const ip = canonicalIp(authority.host)?.text;
    if (ip === undefined) return { kind: "refuse", status: 400, reason: "authority is not a canonical IP" };
    tunnelTarget = { ip, port: authority.port };
    if (ip === listener.podIp) via = "pod-address";
    else if (pod.applicationTunnel !== undefined) {
      // The pod reads the address from the PROXY header and decides itself (a waypoint bound to
      // PROXY): no check that it serves that address.
      via = "application-tunnel";
    } else {
      // Sandwich: the address's Service or workload names this pod as its waypoint (by the pod's
      // address, or by a Service or hostname of which the pod is an instance).
      const svc = store.findServiceByVip(ip);
      const target = svc ?? store.findByAddress(ip);
      if (target === undefined || !store.isWaypointOf(target, pod, listener.podIp)) {
        return {
          kind: "refuse",
          status: 400,
          reason: `authority ${ip} is not ${listener.podIp}, nor served by it as a waypoint`,
        };
      }
      via = "waypoint";
      if (svc !== undefined) service = svc;
    }
  }
  // Checked on the port the authority resolved to, before an application tunnel's port replaces it.
  if (listener.illegalPorts.includes(port)) {
    return { kind: "refuse", status: 503, reason: `port ${port} is the proxy's own` };
  }
  const tunnel = pod.applicationTunnel;
  if (tunnel !== undefined && authority.kind === "hostname" && service !== undefined) {
    // The header carries addresses only: the Service's VIP stands for its name.
    const vip = tunnelVip(service, pod.network);
    if (vip === undefined) {
      return { kind: "refuse", status: 503, reason: `${authority.host} has no address for the PROXY header` };
    }
    tunnelTarget = { ip: vip, port: authority.port };
  }
  return {
    kind: "forward",
    ip: listener.podIp,
    port: tunnel !== undefined && tunnel.port !== 0 ? tunnel.port : port,
    workload: pod,
    via,
    ...(service === undefined ? {} : { service }),
    ...(tunnel === undefined || tunnelTarget === undefined
      ? {}
      : { applicationTunnel: { protocol: tunnel.protocol, target: tunnelTarget } }),
  };
}

/**
 * The VIP of `service` a PROXY header names for its hostname: one on `network` (the pod's), IPv4
 * before IPv6, else one on another network; of equals, the last listed (as ztunnel picks it).
 */
function tunnelVip(service: Service, network: string): string | undefined {
  let best: { ip: string; rank: number } | undefined;
  for (const a of service.addresses) {
    const ip = canonicalFromBytes(a.address);
    if (ip === undefined) continue;
    const rank = a.network !== network ? 0 : ip.family === 4 ? 2 : 1;
    if (best === undefined || rank >= best.rank) best = { ip: ip.text, rank };
  }
  return best?.ip;
}
