// ServiceEntry and WorkloadEntry (networking.istio.io) to Address resources, as istiod's ambient index
// builds them (pilot/pkg/serviceregistry/ambient: services.go, workloads.go): one
// Service per host of a ServiceEntry, one Workload per WorkloadEntry and per inline endpoint, and the
// pods and WorkloadEntries a `workloadSelector` picks listing the ServiceEntry's hosts among their
// services. Validation throws a typed `ControlPlaneError`, so an invalid edit keeps its last good version.
import type { istio, MessageInit, Service, Workload } from "@ambient/xds";
import { ControlPlaneError } from "./errors.js";
import type { KubeObject, MeshIssue } from "./manifests.js";
import { isRecord } from "./manifests.js";
import { type Ipv4Cidr, ipv4Bytes, parseIpv4Cidr, podIpProblem } from "./pod-address.js";
import { ISTIO_PROTOCOL_NAMES, isIstioProtocol, serviceEntryPortProtocol } from "./port-protocol.js";
import { wantsAllocatedAddresses } from "./service-entry-addresses.js";
import { serviceLoadBalancing } from "./service-load-balancing.js";
import type { MeshService, MeshWorkload } from "./translate-mesh.js";
import { canonicalService, WORKLOAD_NAME_LABEL } from "./workload-names.js";

/** The API versions a ServiceEntry or WorkloadEntry is read in (the folder also takes the older two). */
export const NETWORKING_API_VERSIONS: readonly string[] = [
  "networking.istio.io/v1",
  "networking.istio.io/v1beta1",
  "networking.istio.io/v1alpha3",
];

/** `spec.resolution` values (istio.networking.v1alpha3.ServiceEntry.Resolution). */
const RESOLUTIONS = new Set(["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]);
/** `spec.location` values; istiod's ambient index does not read the field, and neither does this. */
const LOCATIONS = new Set(["MESH_EXTERNAL", "MESH_INTERNAL"]);
/** Workload name of a WorkloadEntry (annotation, then label), as istiod's WorkloadNameFromWorkloadEntry. */
const AUTO_REGISTRATION_GROUP_ANNOTATION = "istio.io/autoRegistrationGroup";
/** What istio-cni sets on a workload it has redirected to a ztunnel: istiod sends it HBONE. */
export const REDIRECTION_ANNOTATION = "ambient.istio.io/redirection";
/** `http` on a workload that terminates HBONE itself (istiod's `model.SupportsTunnel`). */
export const TUNNEL_LABEL = "networking.istio.io/tunnel";

const DNS_LABEL = "[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?";
const HOST = new RegExp(`^(\\*\\.)?${DNS_LABEL}(\\.${DNS_LABEL})*$`);
/**
 * A port name: a DNS-1123 label, letters in either case (istiod's port name check). A ServiceEntry
 * port's may have 63 characters; the CRD schema allows an endpoint's or WorkloadEntry's `ports` keys
 * 62 at most.
 */
const PORT_NAME = /^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/;
const PORT_NAME_MAX = 63;
const ENDPOINT_PORT_NAME_MAX = 62;
const PORT_NAME_RULE = "letters, digits and '-', starting and ending with a letter or digit";
/** Every IPv4 address is a candidate; `podIpProblem` still refuses unspecified, multicast and broadcast. */
const ANY_IPV4 = parseIpv4Cidr("0.0.0.0/0") as Ipv4Cidr;

/** One `spec.ports[]` entry of a ServiceEntry. */
export interface ServiceEntryPort {
  number: number;
  /** A DNS-1123 label, unique in the entry: endpoints and pods name the port by it. */
  name: string;
  /** One of Istio's protocol names, in any case; unset means the protocol is detected. */
  protocol?: string;
  /** Port on the endpoints; unset means `number`. */
  targetPort?: number;
}

/** A WorkloadEntry's spec, or one inline `endpoints[]` entry of a ServiceEntry. */
export interface WorkloadEntrySpec {
  /** Canonical IPv4 address or DNS name. */
  address: string;
  /** Port name -> port on this endpoint. */
  ports: Record<string, number>;
  labels: Record<string, string>;
  network?: string;
  /** `region/zone/subzone`. */
  locality?: string;
  weight?: number;
  serviceAccount?: string;
}

/** A ServiceEntry's spec, checked. */
export interface ServiceEntrySpec {
  hosts: string[];
  /** As written: canonical IPv4, IPv4 CIDRs, or other families (which the translation reports). */
  addresses: string[];
  ports: ServiceEntryPort[];
  location: "MESH_EXTERNAL" | "MESH_INTERNAL";
  resolution: string;
  /** `workloadSelector.labels`, when there is a selector. */
  selector?: Record<string, string>;
  /** Inline endpoints, when given (never together with a selector). */
  endpoints?: WorkloadEntrySpec[];
  subjectAltNames: string[];
}

function invalid(obj: KubeObject, field: string, message: string): ControlPlaneError {
  const id = `${obj.kind}/${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
  return new ControlPlaneError("ERR_CONTROL_PLANE_INVALID_OBJECT", `invalid ${id}: ${field} ${message}`, {
    object: id,
    field,
  });
}

function stringMapAt(obj: KubeObject, value: unknown, field: string): Record<string, string> {
  if (value === undefined) return {};
  if (!isRecord(value)) throw invalid(obj, field, "must be a string map");
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") throw invalid(obj, `${field}.${k}`, "must be a string");
    out[k] = v;
  }
  return out;
}

function portNumberAt(obj: KubeObject, value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 65535) {
    throw invalid(obj, field, "must be a port number (1-65535)");
  }
  return value;
}

function optionalString(obj: KubeObject, value: unknown, field: string): string | undefined {
  if (value === undefined || value === "") return undefined;
  if (typeof value !== "string") throw invalid(obj, field, "must be a string");
  return value;
}

function stringList(obj: KubeObject, value: unknown, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw invalid(obj, field, "must be a list of strings");
  }
  return value as string[];
}

function checkApiVersion(obj: KubeObject): void {
  if (obj.apiVersion !== undefined && !NETWORKING_API_VERSIONS.includes(obj.apiVersion)) {
    throw invalid(obj, "apiVersion", `must be one of ${NETWORKING_API_VERSIONS.join(", ")}`);
  }
}

/** An endpoint address: canonical IPv4 (checked by the translation) or a DNS name; nothing else. */
function addressAt(obj: KubeObject, value: unknown, field: string, ipOnly: boolean): string {
  if (typeof value !== "string" || value === "") throw invalid(obj, field, "is required");
  if (ipv4Bytes(value) !== undefined) return value;
  if (ipOnly) throw invalid(obj, field, `${JSON.stringify(value)} must be an IPv4 address`);
  if (!HOST.test(value) || value.startsWith("*.")) {
    throw invalid(obj, field, `${JSON.stringify(value)} is neither an IPv4 address nor a DNS name`);
  }
  return value;
}

function workloadEntrySpecAt(
  obj: KubeObject,
  spec: Record<string, unknown>,
  field: string,
  ipOnly: boolean,
): WorkloadEntrySpec {
  const out: WorkloadEntrySpec = {
    address: addressAt(obj, spec.address, `${field}.address`, ipOnly),
    ports: {},
    labels: stringMapAt(obj, spec.labels, `${field}.labels`),
  };
  if (spec.ports !== undefined) {
    if (!isRecord(spec.ports)) throw invalid(obj, `${field}.ports`, "must map port names to numbers");
    for (const [name, port] of Object.entries(spec.ports)) {
      if (name.length > ENDPOINT_PORT_NAME_MAX || !PORT_NAME.test(name)) {
        throw invalid(
          obj,
          `${field}.ports.${name}`,
          `is not a port name: a DNS-1123 label of at most ${ENDPOINT_PORT_NAME_MAX} characters (${PORT_NAME_RULE})`,
        );
      }
      out.ports[name] = portNumberAt(obj, port, `${field}.ports.${name}`);
    }
  }
  const network = optionalString(obj, spec.network, `${field}.network`);
  if (network !== undefined) out.network = network;
  const locality = optionalString(obj, spec.locality, `${field}.locality`);
  if (locality !== undefined) out.locality = locality;
  const serviceAccount = optionalString(obj, spec.serviceAccount, `${field}.serviceAccount`);
  if (serviceAccount !== undefined) out.serviceAccount = serviceAccount;
  if (spec.weight !== undefined) {
    const w = spec.weight;
    if (typeof w !== "number" || !Number.isInteger(w) || w < 0 || w > 0xffffffff) {
      throw invalid(obj, `${field}.weight`, "must be a non-negative integer");
    }
    if (w > 0) out.weight = w;
  }
  return out;
}

/** Reads a WorkloadEntry's spec; throws `ERR_CONTROL_PLANE_INVALID_OBJECT` naming the field at fault. */
export function parseWorkloadEntry(obj: KubeObject): WorkloadEntrySpec {
  checkApiVersion(obj);
  if (!isRecord(obj.spec)) throw invalid(obj, "spec", "is required");
  return workloadEntrySpecAt(obj, obj.spec, "spec", false);
}

/** Reads a ServiceEntry's spec; throws `ERR_CONTROL_PLANE_INVALID_OBJECT` naming the field at fault. */
export function parseServiceEntry(obj: KubeObject): ServiceEntrySpec {
  checkApiVersion(obj);
  const spec = obj.spec;
  if (!isRecord(spec)) throw invalid(obj, "spec", "is required");
  const hosts = stringList(obj, spec.hosts, "spec.hosts");
  if (hosts.length === 0) throw invalid(obj, "spec.hosts", "must name at least one host");
  hosts.forEach((h, i) => {
    if (!HOST.test(h)) throw invalid(obj, `spec.hosts[${i}]`, `${JSON.stringify(h)} is not a DNS name`);
  });
  if (new Set(hosts).size !== hosts.length) throw invalid(obj, "spec.hosts", "lists a host twice");
  const addresses = stringList(obj, spec.addresses, "spec.addresses");
  addresses.forEach((a, i) => {
    // IPv4, an IPv4 CIDR or an IPv6 form: the translation decides what it can serve.
    if (!/^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(a)) {
      throw invalid(obj, `spec.addresses[${i}]`, `${JSON.stringify(a)} is not an IP address or CIDR`);
    }
  });
  if (spec.ports !== undefined && !Array.isArray(spec.ports))
    throw invalid(obj, "spec.ports", "must be a list");
  const ports: ServiceEntryPort[] = [];
  const numbers = new Set<number>();
  const names = new Set<string>();
  ((spec.ports ?? []) as unknown[]).forEach((p, i) => {
    const field = `spec.ports[${i}]`;
    if (!isRecord(p)) throw invalid(obj, field, "must be an object");
    const number = portNumberAt(obj, p.number, `${field}.number`);
    if (numbers.has(number)) throw invalid(obj, `${field}.number`, `${number} is listed twice`);
    numbers.add(number);
    // The name is the port's key: the schema requires it, endpoints and pods name the port by it.
    const name = optionalString(obj, p.name, `${field}.name`);
    if (name === undefined) throw invalid(obj, `${field}.name`, "is required");
    if (name.length > PORT_NAME_MAX || !PORT_NAME.test(name)) {
      throw invalid(
        obj,
        `${field}.name`,
        `${JSON.stringify(name)} is not a DNS-1123 label of at most ${PORT_NAME_MAX} characters (${PORT_NAME_RULE})`,
      );
    }
    if (names.has(name)) throw invalid(obj, `${field}.name`, `${JSON.stringify(name)} is listed twice`);
    names.add(name);
    const port: ServiceEntryPort = { number, name };
    const protocol = optionalString(obj, p.protocol, `${field}.protocol`);
    if (protocol !== undefined && !isIstioProtocol(protocol)) {
      throw invalid(
        obj,
        `${field}.protocol`,
        `${JSON.stringify(protocol)} is not a protocol Istio knows (${ISTIO_PROTOCOL_NAMES.join(", ")}, in any case; unset to detect it)`,
      );
    }
    if (protocol !== undefined) port.protocol = protocol;
    if (p.targetPort !== undefined && p.targetPort !== 0) {
      port.targetPort = portNumberAt(obj, p.targetPort, `${field}.targetPort`);
    }
    ports.push(port);
  });
  const location = optionalString(obj, spec.location, "spec.location") ?? "MESH_EXTERNAL";
  if (!LOCATIONS.has(location))
    throw invalid(obj, "spec.location", `must be one of ${[...LOCATIONS].join(", ")}`);
  const resolution = optionalString(obj, spec.resolution, "spec.resolution") ?? "NONE";
  if (!RESOLUTIONS.has(resolution)) {
    throw invalid(obj, "spec.resolution", `must be one of ${[...RESOLUTIONS].join(", ")}`);
  }
  const out: ServiceEntrySpec = {
    hosts,
    addresses,
    ports,
    location: location as ServiceEntrySpec["location"],
    resolution,
    subjectAltNames: stringList(obj, spec.subjectAltNames, "spec.subjectAltNames"),
  };
  if (spec.workloadSelector !== undefined) {
    if (!isRecord(spec.workloadSelector)) throw invalid(obj, "spec.workloadSelector", "must be an object");
    out.selector = stringMapAt(obj, spec.workloadSelector.labels, "spec.workloadSelector.labels");
  }
  if (spec.endpoints !== undefined) {
    if (!Array.isArray(spec.endpoints)) throw invalid(obj, "spec.endpoints", "must be a list");
    if (out.selector !== undefined) {
      throw invalid(obj, "spec.endpoints", "cannot be given together with spec.workloadSelector");
    }
    // STATIC and NONE send traffic to the addresses themselves: they must be IPs (Istio's validation).
    const ipOnly = resolution === "STATIC" || resolution === "NONE";
    out.endpoints = spec.endpoints.map((e, i) => {
      if (!isRecord(e)) throw invalid(obj, `spec.endpoints[${i}]`, "must be an object");
      return workloadEntrySpecAt(obj, e, `spec.endpoints[${i}]`, ipOnly);
    });
    // istiod's admission: NONE sends traffic to the address dialled, so endpoints mean nothing;
    // DNS_ROUND_ROBIN resolves one name; an endpoint's ports name ports of the entry.
    if (resolution === "NONE" && out.endpoints.length > 0) {
      throw invalid(
        obj,
        "spec.endpoints",
        "cannot be set with resolution NONE (the address dialled is the destination)",
      );
    }
    if (resolution === "DNS_ROUND_ROBIN" && out.endpoints.length > 1) {
      throw invalid(
        obj,
        "spec.endpoints",
        `has ${out.endpoints.length} endpoints: DNS_ROUND_ROBIN takes at most one`,
      );
    }
    out.endpoints.forEach((e, i) => {
      for (const name of Object.keys(e.ports)) {
        if (!names.has(name)) {
          throw invalid(obj, `spec.endpoints[${i}].ports.${name}`, "names no port of spec.ports");
        }
      }
    });
  }
  if (resolution === "DYNAMIC_DNS") checkDynamicDns(obj, out);
  if ((resolution === "DNS" || resolution === "DNS_ROUND_ROBIN") && (out.endpoints ?? []).length === 0) {
    // The hosts themselves are resolved: each must be a name DNS can answer (istiod's ValidateFQDN).
    hosts.forEach((h, i) => {
      const labels = h.split(".");
      if (labels.includes("*") || /^\d+$/.test(labels[labels.length - 1] ?? "")) {
        throw invalid(
          obj,
          `spec.hosts[${i}]`,
          `${JSON.stringify(h)} must be a fully qualified name (no wildcard, a top-level label not all digits) with resolution ${resolution} and no endpoints`,
        );
      }
    });
  }
  if (resolution !== "NONE" && hosts.length > 1) {
    // Nothing tells the hosts apart on a port that is neither HTTP (the authority) nor TLS (the SNI).
    ports.forEach((p, i) => {
      const protocol = (p.protocol ?? "").toUpperCase();
      if (!HTTP_PROTOCOLS.has(protocol) && !TLS_PROTOCOLS.has(protocol)) {
        throw invalid(
          obj,
          `spec.ports[${i}]`,
          `is neither HTTP nor TLS: with several hosts and resolution ${resolution} nothing tells them apart on it (only NONE allows that)`,
        );
      }
    });
  }
  return out;
}

/** Istio's protocols that are HTTP, and TLS, by name (case-insensitive, as istiod parses them). */
const HTTP_PROTOCOLS = new Set(["HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"]);
const TLS_PROTOCOLS = new Set(["HTTPS", "TLS"]);
/** What a DYNAMIC_DNS port may carry: the waypoint resolves the name each request or handshake names. */
const DYNAMIC_DNS_PROTOCOLS = new Set(["HTTP", "TLS", "GRPC", "HTTP2"]);

/**
 * istiod's admission rules for resolution DYNAMIC_DNS: wildcard hosts only (the name to resolve comes
 * from each request), no addresses or endpoints, HTTP, TLS, GRPC or HTTP2 ports, and MESH_INTERNAL
 * only without a waypoint.
 */
function checkDynamicDns(obj: KubeObject, spec: ServiceEntrySpec): void {
  const why = "resolution DYNAMIC_DNS";
  spec.hosts.forEach((h, i) => {
    if (!h.startsWith("*")) {
      throw invalid(
        obj,
        `spec.hosts[${i}]`,
        `${JSON.stringify(h)} must be a wildcard (*.domain) with ${why}`,
      );
    }
  });
  if (spec.addresses.length > 0) {
    throw invalid(obj, "spec.addresses", `cannot be set with ${why}: the hosts name the destinations`);
  }
  if (spec.endpoints !== undefined && spec.endpoints.length > 0) {
    throw invalid(obj, "spec.endpoints", `cannot be set with ${why}: each request's host is resolved`);
  }
  spec.ports.forEach((p, i) => {
    if (!DYNAMIC_DNS_PROTOCOLS.has((p.protocol ?? "").toUpperCase())) {
      const named = p.protocol === undefined ? "(none)" : JSON.stringify(p.protocol);
      throw invalid(
        obj,
        `spec.ports[${i}].protocol`,
        `${named} is not HTTP, TLS, GRPC or HTTP2, which ${why} needs`,
      );
    }
  });
  const waypoint = obj.metadata.labels?.["istio.io/use-waypoint"] ?? "";
  if (spec.location === "MESH_INTERNAL" && waypoint !== "" && waypoint.toLowerCase() !== "none") {
    throw invalid(
      obj,
      "spec.location",
      `MESH_INTERNAL with ${why} cannot go through a waypoint (MESH_EXTERNAL can)`,
    );
  }
}

/**
 * Why a ServiceEntry or WorkloadEntry cannot be served as written, or undefined when it can (the
 * message of the `ControlPlaneError` the parser throws). Other kinds: undefined.
 */
export function networkingEntryProblem(obj: KubeObject): string | undefined {
  if (obj.kind !== "ServiceEntry" && obj.kind !== "WorkloadEntry") return undefined;
  try {
    if (obj.kind === "ServiceEntry") parseServiceEntry(obj);
    else parseWorkloadEntry(obj);
    return undefined;
  } catch (err) {
    if (err instanceof ControlPlaneError) return err.message;
    throw err;
  }
}

/** A Service a ServiceEntry host became, as the pod and WorkloadEntry translations select by it. */
export interface EntryServiceModel {
  /** `namespace/host`. */
  key: string;
  namespace: string;
  /** `workloadSelector.labels`; undefined selects nothing. */
  selector: Record<string, string> | undefined;
  /** `targetPort` is the number, or `targetPort` when set. */
  ports: { name?: string; port: number; targetPort: number }[];
  /**
   * Always true: on a pod the entry selects, a port goes to the container port of its name (the pod's
   * own name for it) when there is one, else to `targetPort`.
   */
  portsByName: true;
}

/** A Kubernetes Service as the WorkloadEntry translation selects by it (named target ports included). */
export interface KubeServiceModel {
  key: string;
  namespace: string;
  selector: Record<string, string> | undefined;
  ports: { name?: string; port: number; targetPort: number | string }[];
}

/** What the ServiceEntry and WorkloadEntry translations read from the rest of the mesh. */
export interface EntryContext {
  clusterId: string;
  network: string;
  /** Sent in `trustDomain` only when it is not `cluster.local` (istiod's `pickTrustDomain`). */
  trustDomain: string;
  issues: MeshIssue[];
  /** The waypoint a Service bound by `istio.io/use-waypoint` (on it or its Namespace) goes through. */
  waypointFor(obj: KubeObject, namespace: string): MessageInit<Service>["waypoint"] | undefined;
  /** The waypoint a workload's own traffic goes through, from its labels (or its Namespace's). */
  workloadWaypoint?(
    namespace: string,
    labels: Record<string, string>,
  ): MessageInit<Workload>["waypoint"] | undefined;
  /** VIP (a range: `a.b.c.d/len`) -> the Service key using it; ServiceEntry addresses are added. */
  seenVips: Map<string, string>;
  /** Keys of the Services already built (Kubernetes Services win a clash with a ServiceEntry host). */
  serviceKeys: Set<string>;
  /**
   * Namespace name -> its annotations: a ServiceEntry without a traffic-distribution annotation of its
   * own takes its Namespace's, as a Service does.
   */
  namespaceAnnotations?: ReadonlyMap<string, Record<string, string>>;
}

/** The ServiceEntries' Services, and per ServiceEntry the models of the hosts it got. */
export interface EntryServices {
  services: MeshService[];
  /** Every host served, in object order, for selecting pods and WorkloadEntries. */
  models: EntryServiceModel[];
  byEntry: Map<KubeObject, EntryServiceModel[]>;
}

function where(obj: KubeObject): string {
  return `${obj.kind}/${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
}

/**
 * One of `spec.addresses` as served: a VIP (an address, or a CIDR of one address), or a range (a wider
 * CIDR, whose host bits are cleared) sent as its network address with the prefix length, which a
 * ztunnel matches every destination in the range against. `key` is how it is claimed among the
 * addresses served (`a.b.c.d`, or `a.b.c.d/len` for a range).
 */
interface EntryAddress {
  ip: string;
  length?: number;
  key: string;
}

/** An entry of `spec.addresses` as served, or why this control plane cannot serve it. */
function entryAddressOf(text: string): EntryAddress | { problem: string } {
  const slash = text.indexOf("/");
  const ip = slash < 0 ? text : text.slice(0, slash);
  const bytes = ipv4Bytes(ip);
  if (bytes === undefined) {
    return { problem: `spec.addresses ${text} is not IPv4, which this control plane does not serve` };
  }
  if (slash < 0) return { ip, key: ip };
  const lengthText = text.slice(slash + 1);
  if (!/^(0|[1-9][0-9]?)$/.test(lengthText) || Number(lengthText) > 32) {
    return { problem: `spec.addresses ${text} is not an IPv4 address or range` };
  }
  const length = Number(lengthText);
  if (length === 32) return { ip, key: ip };
  // The network address: the bytes of the address under the prefix, the rest zero.
  const network = [...bytes]
    .map((b, i) => {
      const kept = Math.min(8, Math.max(0, length - 8 * i));
      return kept === 0 ? 0 : b & ((0xff << (8 - kept)) & 0xff);
    })
    .join(".");
  return { ip: network, length, key: `${network}/${length}` };
}

/**
 * One Service per host of every valid ServiceEntry, in object order (istiod `constructServiceEntries`):
 * hostname = the host, name and namespace of the ServiceEntry, `spec.addresses` as VIPs and ranges (a
 * CIDR wider than one address is sent with its prefix length; an address that is not IPv4 leaves the
 * ServiceEntry without Services, as one istiod cannot parse does), else the
 * addresses in `status.addresses` for that host unless `resolution: NONE` or the entry opts out of
 * allocation (a wildcard host: with `DYNAMIC_DNS` only), ports with `targetPort`
 * defaulting to the port, `subjectAltNames`, the use-waypoint binding and the traffic-distribution
 * annotation, its own else its Namespace's (`resolution: NONE`: load balancing PASSTHROUGH instead).
 * A host whose key a Service already has, or a VIP already taken, is reported and skipped. Of the
 * hosts no Kubernetes Service has as its hostname, the oldest ServiceEntry's Service for each is
 * `canonical` (see {@link markCanonical}).
 */
export function serviceEntryServices(objects: readonly KubeObject[], ctx: EntryContext): EntryServices {
  const out: EntryServices = { services: [], models: [], byEntry: new Map() };
  // The hostnames of the Kubernetes Services, whose keys are all there is in serviceKeys yet.
  const kubeHostnames = new Set([...ctx.serviceKeys].map((key) => key.slice(key.indexOf("/") + 1)));
  const created: number[] = [];
  for (const obj of objects) {
    if (obj.kind !== "ServiceEntry") continue;
    let spec: ServiceEntrySpec;
    try {
      spec = parseServiceEntry(obj);
    } catch (err) {
      ctx.issues.push({ source: where(obj), message: (err as Error).message });
      continue;
    }
    const namespace = obj.metadata.namespace ?? "default";
    const vips: EntryAddress[] = [];
    let unusable: string | undefined;
    for (const a of spec.addresses) {
      const address = entryAddressOf(a);
      if ("problem" in address) unusable ??= address.problem;
      else vips.push(address);
    }
    if (unusable !== undefined) {
      ctx.issues.push({ source: where(obj), message: `${unusable}: no Service is served for it` });
      out.byEntry.set(obj, []);
      continue;
    }
    const ports = spec.ports.map((p) => {
      const appProtocol = serviceEntryPortProtocol(p.protocol);
      return {
        name: p.name,
        port: p.number,
        targetPort: p.targetPort ?? p.number,
        ...(appProtocol === undefined ? {} : { appProtocol }),
      };
    });
    const waypoint = ctx.waypointFor(obj, namespace);
    // `resolution: NONE` names addresses, not endpoints to choose from: the traffic goes on to the
    // address the client dialled (PASSTHROUGH), whatever its health or locality. Load balancing over
    // its endpoints, of which such an entry usually has none, would refuse every connection.
    const loadBalancing: MessageInit<istio.workload.LoadBalancing> | undefined =
      spec.resolution === "NONE"
        ? { mode: "PASSTHROUGH", healthPolicy: "ALLOW_ALL" }
        : serviceLoadBalancing({
            ...(obj.metadata.annotations === undefined
              ? {}
              : { serviceAnnotations: obj.metadata.annotations }),
            ...namespaceAnnotationsOf(ctx, namespace),
          });
    // No spec.addresses, resolution not NONE (the default when unset), and no opt-out label.
    const useAllocated = spec.resolution !== "NONE" && wantsAllocatedAddresses(obj);
    const allocated = Array.isArray(obj.status?.addresses) ? obj.status.addresses : [];
    const models: EntryServiceModel[] = [];
    let vipsServedBy: string | undefined;
    for (const host of spec.hosts) {
      const key = `${namespace}/${host}`;
      if (ctx.serviceKeys.has(key)) {
        ctx.issues.push({
          source: where(obj),
          message: `host ${host}: ${key} is already a Service: not served`,
        });
        continue;
      }
      let hostVips = vips;
      if (vipsServedBy !== undefined) {
        // istiod gives every host all of spec.addresses; a VIP here names one Service, the first host's.
        ctx.issues.push({
          source: where(obj),
          message: `host ${host}: spec.addresses are served for host ${vipsServedBy} only`,
        });
        hostVips = [];
      } else if (useAllocated && (!host.startsWith("*.") || spec.resolution === "DYNAMIC_DNS")) {
        // Addresses an allocator recorded for this host (istiod's auto-allocation, v2). A wildcard
        // host has one only with DYNAMIC_DNS, where the waypoint resolves the name each request asks for.
        hostVips = allocated.flatMap((a: unknown) =>
          isRecord(a) && a.host === host && typeof a.value === "string" && ipv4Bytes(a.value) !== undefined
            ? [{ ip: a.value, key: a.value }]
            : [],
        );
      }
      const taken = hostVips.find((vip) => ctx.seenVips.has(vip.key));
      if (taken !== undefined) {
        ctx.issues.push({
          source: where(obj),
          message: `host ${host}: address ${taken.key} is already used by ${ctx.seenVips.get(taken.key)}: not served`,
        });
        continue;
      }
      for (const vip of hostVips) ctx.seenVips.set(vip.key, key);
      if (vips.length > 0) vipsServedBy = host;
      ctx.serviceKeys.add(key);
      const service: MessageInit<Service> = {
        name: obj.metadata.name,
        namespace,
        hostname: host,
        addresses: hostVips.map((vip) => ({
          network: ctx.network,
          address: ipv4Bytes(vip.ip) as Uint8Array,
          ...(vip.length === undefined ? {} : { length: vip.length }),
        })),
        ports: ports.map((p) => ({
          servicePort: p.port,
          targetPort: p.targetPort,
          ...(p.appProtocol === undefined ? {} : { appProtocol: p.appProtocol }),
        })),
        ...(spec.subjectAltNames.length === 0 ? {} : { subjectAltNames: spec.subjectAltNames }),
        ...(waypoint === undefined ? {} : { waypoint }),
        ...(loadBalancing === undefined ? {} : { loadBalancing }),
      };
      out.services.push({ key, aliases: hostVips.map((vip) => `${ctx.network}/${vip.key}`), service });
      created.push(creationTime(obj));
      const model: EntryServiceModel = { key, namespace, selector: spec.selector, ports, portsByName: true };
      models.push(model);
      out.models.push(model);
    }
    out.byEntry.set(obj, models);
  }
  markCanonical(out.services, created, kubeHostnames);
  return out;
}

function namespaceAnnotationsOf(
  ctx: EntryContext,
  namespace: string,
): { namespaceAnnotations?: Record<string, string> } {
  const annotations = ctx.namespaceAnnotations?.get(namespace);
  return annotations === undefined ? {} : { namespaceAnnotations: annotations };
}

/** `metadata.creationTimestamp` in ms; none (a hand-written manifest) is the oldest, as Go's zero time. */
function creationTime(obj: KubeObject): number {
  const ms = Date.parse(obj.metadata.creationTimestamp ?? "");
  return Number.isNaN(ms) ? Number.NEGATIVE_INFINITY : ms;
}

/**
 * Marks one Service per hostname `canonical`, as istiod does: a ztunnel resolving a hostname that
 * Services of several namespaces have picks the client's namespace's, else the canonical one, else
 * any. A Kubernetes Service is canonical for its hostname (it is its own name); otherwise the
 * Service of the oldest ServiceEntry is (`created[i]` is when `services[i]`'s was made; the first in
 * object order on a tie), so a ServiceEntry written later in another namespace does not take over
 * the name for everyone else.
 */
function markCanonical(
  services: MeshService[],
  created: readonly number[],
  kubeHostnames: ReadonlySet<string>,
): void {
  const oldest = new Map<string, number>();
  services.forEach((s, i) => {
    const hostname = s.service.hostname ?? "";
    if (kubeHostnames.has(hostname)) return;
    const best = oldest.get(hostname);
    if (best === undefined || (created[i] as number) < (created[best] as number)) oldest.set(hostname, i);
  });
  for (const i of oldest.values()) (services[i] as MeshService).service.canonical = true;
}

function labelsMatch(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  if (selector === undefined) return false;
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

/**
 * The endpoint's own port for `name`, if its `ports` list one. Only its own keys: a port may be named
 * `constructor`, which every object answers with a function.
 */
function portNamed(ports: Record<string, number>, name: string | undefined): number | undefined {
  return name !== undefined && name !== "" && Object.hasOwn(ports, name) ? ports[name] : undefined;
}

/**
 * Ports of an endpoint for a ServiceEntry host (istiod `constructServicesFromWorkloadEntry`): a port
 * whose name the endpoint's `ports` lists goes there, else to the ServiceEntry's target port.
 */
function entryPorts(model: EntryServiceModel, ports: Record<string, number>) {
  return model.ports.map((p) => ({
    servicePort: p.port,
    targetPort: portNamed(ports, p.name) ?? p.targetPort,
  }));
}

/**
 * Ports of a WorkloadEntry for a Kubernetes Service selecting it: a named target port must be in the
 * WorkloadEntry's `ports`, else that port is left out (as for a pod without the container port). A
 * number target port is the default only: a WorkloadEntry's `ports` map service port names to its
 * own ports, so a VM listening elsewhere than the pods is reached on its port for that name.
 */
function kubePorts(model: KubeServiceModel, ports: Record<string, number>) {
  const out: { servicePort: number; targetPort: number }[] = [];
  for (const p of model.ports) {
    const target =
      typeof p.targetPort === "number"
        ? (portNamed(ports, p.name) ?? p.targetPort)
        : portNamed(ports, p.targetPort);
    if (target !== undefined) out.push({ servicePort: p.port, targetPort: target });
  }
  return out;
}

/** What {@link entryWorkloads} reads besides {@link EntryContext}. */
export interface EntryWorkloadContext extends EntryContext {
  /** The Services' models, which select WorkloadEntries of their namespace too. */
  kubeServices: readonly KubeServiceModel[];
  /** The ServiceEntries' Services ({@link serviceEntryServices}). */
  entries: EntryServices;
  /** Selector AuthorizationPolicies and PeerAuthentications that apply to labels in a namespace. */
  policyKeys(namespace: string, labels: Record<string, string>): string[];
  /** IP -> what uses it; pods are in it already and keep their address. */
  seenIps: Map<string, string>;
  seenUids: Set<string>;
  /** Where the addresses of the entries refused because another workload has them are added. */
  refusedIps?: string[];
}

interface EndpointSource {
  uid: string;
  name: string;
  namespace: string;
  spec: WorkloadEntrySpec;
  /** Labels policies and selectors match. */
  labels: Record<string, string>;
  annotations: Record<string, string>;
  workloadName: string;
  services: Record<string, { ports: { servicePort: number; targetPort: number }[] }>;
  where: string;
  /** The labels its own waypoint is found by (none for a DNS ServiceEntry's implicit endpoints). */
  waypointLabels: Record<string, string> | undefined;
}

function endpointWorkload(e: EndpointSource, ctx: EntryWorkloadContext): MeshWorkload | undefined {
  const { spec } = e;
  const ip = ipv4Bytes(spec.address) === undefined ? undefined : spec.address;
  if (ip !== undefined) {
    const problem = podIpProblem(ip, [ANY_IPV4]);
    if (problem !== undefined) {
      ctx.issues.push({ source: e.where, message: `${problem.replace(/^pod IP/, "address")}: not served` });
      return undefined;
    }
    const owner = ctx.seenIps.get(ip);
    if (owner !== undefined) {
      ctx.issues.push({ source: e.where, message: `address ${ip} is already used by ${owner}: not served` });
      ctx.refusedIps?.push(ip);
      return undefined;
    }
  }
  if (ctx.seenUids.has(e.uid)) {
    ctx.issues.push({ source: e.where, message: `duplicate uid ${e.uid}: not served` });
    return undefined;
  }
  if (ip !== undefined) ctx.seenIps.set(ip, e.where);
  ctx.seenUids.add(e.uid);
  const network = spec.network ?? ctx.network;
  const hbone = e.annotations[REDIRECTION_ANNOTATION] === "enabled" || e.labels[TUNNEL_LABEL] === "http";
  const [canonicalName, canonicalRevision] = canonicalService(e.labels, e.workloadName);
  const workload: MessageInit<Workload> = {
    uid: e.uid,
    name: e.name,
    namespace: e.namespace,
    addresses: ip === undefined ? [] : [ipv4Bytes(ip) as Uint8Array],
    ...(ip === undefined ? { hostname: spec.address } : {}),
    network,
    tunnelProtocol: hbone ? "HBONE" : "NONE",
    ...(e.labels[TUNNEL_LABEL] === "http" ? { nativeTunnel: true } : {}),
    serviceAccount: spec.serviceAccount ?? "",
    node: "",
    canonicalName,
    canonicalRevision,
    // istiod sends WorkloadEntries as pods too.
    workloadType: "POD" as istio.workload.WorkloadType,
    workloadName: e.workloadName,
    services: e.services,
    authorizationPolicies: ctx.policyKeys(e.namespace, e.labels),
    status: "HEALTHY",
    clusterId: ctx.clusterId,
  };
  if (ctx.trustDomain !== "cluster.local") workload.trustDomain = ctx.trustDomain;
  if (spec.locality !== undefined) {
    const [region = "", zone = "", subzone = ""] = spec.locality.split("/");
    if (region !== "" || zone !== "" || subzone !== "") workload.locality = { region, zone, subzone };
  }
  if (spec.weight !== undefined) workload.capacity = { value: spec.weight };
  const waypoint =
    e.waypointLabels === undefined ? undefined : ctx.workloadWaypoint?.(e.namespace, e.waypointLabels);
  if (waypoint !== undefined) workload.waypoint = waypoint;
  return { key: e.uid, aliases: Object.freeze(ip === undefined ? [] : [`${network}/${ip}`]), workload };
}

/**
 * The Workloads of WorkloadEntries, then of ServiceEntries' inline endpoints, in object order (pods
 * were translated before, so a pod keeps an address an entry also claims). A WorkloadEntry (uid
 * `<cluster>/networking.istio.io/WorkloadEntry/<ns>/<name>`) lists the ServiceEntries and Services of
 * its namespace whose selector matches its labels. An inline endpoint (uid
 * `<cluster>/networking.istio.io/ServiceEntry/<ns>/<name>/<address>`) lists every host of its
 * ServiceEntry; a DNS or DYNAMIC_DNS ServiceEntry with neither endpoints nor selector gets one
 * endpoint per host, by hostname (a wildcard host: with DYNAMIC_DNS only). Addresses that are not IPv4 are sent as `hostname`, as istiod does.
 */
export function entryWorkloads(objects: readonly KubeObject[], ctx: EntryWorkloadContext): MeshWorkload[] {
  const out: MeshWorkload[] = [];
  const namespaceOf = (obj: KubeObject) => obj.metadata.namespace ?? "default";
  for (const obj of objects) {
    if (obj.kind !== "WorkloadEntry") continue;
    let spec: WorkloadEntrySpec;
    try {
      spec = parseWorkloadEntry(obj);
    } catch (err) {
      ctx.issues.push({ source: where(obj), message: (err as Error).message });
      continue;
    }
    const namespace = namespaceOf(obj);
    // Labels may be in the spec or the metadata (istiod merges them; the metadata wins).
    const labels = { ...spec.labels, ...obj.metadata.labels };
    const annotations = obj.metadata.annotations ?? {};
    const services: EndpointSource["services"] = {};
    for (const model of ctx.entries.models) {
      if (model.namespace !== namespace || !labelsMatch(model.selector, labels)) continue;
      services[model.key] = { ports: entryPorts(model, spec.ports) };
    }
    for (const model of ctx.kubeServices) {
      if (model.namespace !== namespace || !labelsMatch(model.selector, labels)) continue;
      services[model.key] = { ports: kubePorts(model, spec.ports) };
    }
    const workload = endpointWorkload(
      {
        uid: `${ctx.clusterId}/networking.istio.io/WorkloadEntry/${namespace}/${obj.metadata.name}`,
        name: obj.metadata.name,
        namespace,
        spec,
        labels,
        annotations,
        workloadName:
          annotations[AUTO_REGISTRATION_GROUP_ANNOTATION] ?? labels[WORKLOAD_NAME_LABEL] ?? obj.metadata.name,
        services,
        where: where(obj),
        waypointLabels: labels,
      },
      ctx,
    );
    if (workload !== undefined) out.push(workload);
  }
  for (const obj of objects) {
    if (obj.kind !== "ServiceEntry") continue;
    let spec: ServiceEntrySpec;
    try {
      spec = parseServiceEntry(obj);
    } catch {
      continue; // Reported with its Services.
    }
    const namespace = namespaceOf(obj);
    const models = ctx.entries.byEntry.get(obj) ?? [];
    const implicit =
      spec.endpoints === undefined &&
      spec.selector === undefined &&
      (spec.resolution === "DNS" ||
        spec.resolution === "DNS_ROUND_ROBIN" ||
        spec.resolution === "DYNAMIC_DNS");
    const endpoints: { spec: WorkloadEntrySpec; hosts: EntryServiceModel[] }[] = implicit
      ? spec.hosts.flatMap((host) => {
          const model = models.find((m) => m.key === `${namespace}/${host}`);
          // With DNS a wildcard host names no single endpoint to resolve. With DYNAMIC_DNS the
          // endpoint is the wildcard name itself: the waypoint resolves the host each request names.
          if (host.startsWith("*.") && spec.resolution !== "DYNAMIC_DNS") return [];
          return [
            { spec: { address: host, ports: {}, labels: {} }, hosts: model === undefined ? [] : [model] },
          ];
        })
      : (spec.endpoints ?? []).map((e) => ({ spec: e, hosts: models }));
    const labels = obj.metadata.labels ?? {};
    const annotations = obj.metadata.annotations ?? {};
    for (const endpoint of endpoints) {
      const services: EndpointSource["services"] = {};
      for (const model of endpoint.hosts)
        services[model.key] = { ports: entryPorts(model, endpoint.spec.ports) };
      const workload = endpointWorkload(
        {
          uid: `${ctx.clusterId}/networking.istio.io/ServiceEntry/${namespace}/${obj.metadata.name}/${endpoint.spec.address}`,
          name: obj.metadata.name,
          namespace,
          spec: endpoint.spec,
          // Policies match the ServiceEntry's labels, as in istiod.
          labels,
          annotations,
          workloadName: obj.metadata.name,
          services,
          where: `${where(obj)} endpoint ${endpoint.spec.address}`,
          // An inline endpoint is bound by its own labels, as istiod builds its metadata.
          waypointLabels: implicit ? undefined : endpoint.spec.labels,
        },
        ctx,
      );
      if (workload !== undefined) out.push(workload);
    }
  }
  return out;
}
