import {
  type AuthorizationPolicy,
  convertPeerAuthentication,
  effectivePeerAuthenticationKeys,
  type PeerAuthentication,
  STATIC_STRICT_POLICY_NAME,
  staticStrictAuthorization,
  toWireAuthorization,
  validateResource,
  type WireAuthorization,
} from "@ambient/policy";
import { validateRoute } from "@ambient/router";
import type { istio, MessageInit, Service, Workload } from "@ambient/xds";
import { ControlPlaneError } from "./errors.js";
import { STAND_IN_ANNOTATION } from "./last-good.js";
import type { KubeObject, MeshIssue } from "./manifests.js";
import { isRecord } from "./manifests.js";
import {
  addressText,
  DEFAULT_POD_CIDRS,
  hostIpProblem,
  type Ipv4Cidr,
  ipv4Bytes,
  ipv6Bytes,
  parseIpv4Cidr,
  podIpProblem,
} from "./pod-address.js";
import { servicePortProtocol } from "./port-protocol.js";
import { serviceLoadBalancing } from "./service-load-balancing.js";
import { endpointSliceWorkloads, podRefKey, sliceServicesByPod } from "./translate-endpoint-slice.js";
import { sameItems, type TranslationMemo } from "./translate-memo.js";
import {
  entryWorkloads,
  networkingEntryProblem,
  REDIRECTION_ANNOTATION,
  serviceEntryServices,
  TUNNEL_LABEL,
} from "./translate-service-entry.js";
import { allowsAttachment, type WaypointAttachment, waypointAttachment } from "./waypoint-attachment.js";
import { canonicalService, podWorkloadName } from "./workload-names.js";

export { ipv4Bytes };

/** Options of {@link translateMesh}. */
export interface TranslateOptions {
  /** Cluster id in workload uids and `clusterId`. Default `Kubernetes`; istiod `CLUSTER_ID`. */
  clusterId?: string;
  /** Mesh trust domain. Default `cluster.local`; meshConfig `trustDomain`. */
  trustDomain?: string;
  /** Root namespace. Default `istio-system`; meshConfig `rootNamespace`. */
  rootNamespace?: string;
  /** DNS suffix of service hostnames. Default `cluster.local`; istiod `--domain`. */
  domainSuffix?: string;
  /** Network of every address. Default `""`; istio `topology.istio.io/network`. */
  network?: string;
  /**
   * IPv4 ranges pod IPs must fall in; a pod outside them (or at an unspecified, multicast or broadcast
   * address) is reported and not served. Default `127.10.0.0/16`, the demo's pods; a control plane
   * fed by a cluster (`startKubernetesControlPlane`) takes every IPv4 address by default, as istiod
   * does (`CLUSTER_POD_CIDRS`), and this narrows it (Kubernetes `--cluster-cidr`).
   */
  podCidrs?: readonly string[];
  /**
   * What makes a pod an HBONE workload, captured by its node's ztunnel: `"dataplane-mode"`, its
   * `istio.io/dataplane-mode: ambient` label or its Namespace's (the default, and what the ztunnels
   * this project starts capture by); or `"redirection"`, the `ambient.istio.io/redirection: enabled`
   * annotation istio-cni sets on a pod once it has redirected its traffic, as istiod reads it (the
   * Kubernetes mode's default): a labelled pod istio-cni has not captured yet, or never will (one
   * with a sidecar, one it failed on), is then reached in plaintext rather than on an HBONE port
   * nothing listens on.
   */
  captureSignal?: "dataplane-mode" | "redirection";
}

/** Parses `podCidrs`, throwing `ERR_CONTROL_PLANE_CONFIG` for one that is not an IPv4 range. */
export function parsePodCidrs(podCidrs: readonly string[] = DEFAULT_POD_CIDRS): Ipv4Cidr[] {
  return podCidrs.map((text) => {
    const cidr = parseIpv4Cidr(text);
    if (typeof cidr === "string") throw new ControlPlaneError("ERR_CONTROL_PLANE_CONFIG", cidr);
    return cidr;
  });
}

/** A workload with the key and aliases it is served under. */
export interface MeshWorkload {
  /** Resource name: the workload uid. */
  key: string;
  /** `network/IP` aliases. Frozen: the xDS cache keeps the same array instead of a copy. */
  aliases: readonly string[];
  workload: MessageInit<Workload>;
}

/** A service with the key and aliases it is served under. */
export interface MeshService {
  /** Resource name: `namespace/hostname`. */
  key: string;
  /** `network/VIP` aliases. */
  aliases: string[];
  service: MessageInit<Service>;
}

/** Everything the control plane serves, computed from the manifests alone. */
export interface MeshConfig {
  /** By uid, sorted. */
  workloads: MeshWorkload[];
  /** By `namespace/hostname`, sorted. */
  services: MeshService[];
  /** `namespace/name` -> wire Authorization, sorted by key. */
  authorizations: Map<string, WireAuthorization>;
  /** Node name -> SPIFFE IDs of the mesh pods scheduled on it (sorted, unique). */
  nodes: Map<string, string[]>;
  /** Objects that were skipped or only partly used, and why. */
  issues: MeshIssue[];
}

interface PodPort {
  name?: string;
  containerPort: number;
}

/** @internal A pod as the translation reads it (a Pod object, or one of a Deployment's pods). */
export interface PodModel {
  name: string;
  namespace: string;
  uid?: string;
  labels: Record<string, string>;
  node: string;
  serviceAccount: string;
  ip: string;
  ports: PodPort[];
  workloadName: string;
  workloadType: istio.workload.WorkloadType;
  source: string;
  /** `spec.hostNetwork`: the pod has its node's network, and the node's address. */
  hostNetwork: boolean;
  /** The Pod object it comes from (none for a Deployment's pods). */
  object?: KubeObject;
}

/** @internal */
export interface ServiceModel {
  key: string;
  namespace: string;
  selector: Record<string, string> | undefined;
  ports: ServicePortModel[];
  /**
   * A ServiceEntry host's: it has no named target ports, a port goes to the pod's container port of
   * the port's own name instead, else to its target port.
   */
  portsByName?: boolean;
}

const AMBIENT_LABEL = "istio.io/dataplane-mode";
const USE_WAYPOINT_LABEL = "istio.io/use-waypoint";
const USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace";
const INGRESS_USE_WAYPOINT_LABEL = "istio.io/ingress-use-waypoint";
/** What traffic a waypoint Gateway takes: `service` (the default), `workload`, `all` or `none`. */
const WAYPOINT_FOR_LABEL = "istio.io/waypoint-for";
const GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name";
/**
 * The controller that manages a gateway's objects, and of its values the two whose Service istiod binds
 * to no waypoint (`fetchWaypointForService`): a waypoint's own Service and an east-west gateway's.
 */
const GATEWAY_MANAGED_LABEL = "gateway.istio.io/managed";
const NEVER_BOUND_MANAGERS = new Set(["istio.io-mesh-controller", "istio.io-eastwest-controller"]);
const WAYPOINT_CLASS = "istio-waypoint";
/** Gateway annotation giving the waypoint's address when `status.addresses` is empty. */
export const WAYPOINT_ADDRESS_ANNOTATION = "ambient.dev/address";
/** The port every waypoint accepts HBONE on. */
export const WAYPOINT_HBONE_PORT = 15008;
const POD_IPS_ANNOTATION = "ambient.dev/pod-ips";
const NODES_ANNOTATION = "ambient.dev/nodes";

/**
 * Whether a Service's `selector` selects a pod with `labels`: it must hold at least one label, as an
 * empty or absent one selects no pod (Kubernetes makes no endpoints for it, nor istiod a workload).
 */
function labelsMatch(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  if (selector === undefined) return false;
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

/**
 * Whether a policy's `selector.matchLabels` selects a workload with `labels`: every label of it must
 * be there, so an empty one selects every workload its policy reaches, as istiod reads it.
 */
function policySelects(matchLabels: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(matchLabels).every(([k, v]) => labels[k] === v);
}

/**
 * The ports a Service's named `targetPort` can name on a pod: the TCP ports (`protocol` defaults to
 * TCP) of its containers, then of its native sidecars (init containers with `restartPolicy: Always`,
 * which keep running beside them). A UDP or SCTP port is no destination for ztunnel's TCP, and an
 * init container that ran to completion serves nothing.
 */
function containerPorts(podSpec: Record<string, unknown> | undefined): PodPort[] {
  const out: PodPort[] = [];
  const containers = Array.isArray(podSpec?.containers) ? podSpec.containers : [];
  const sidecars = Array.isArray(podSpec?.initContainers)
    ? podSpec.initContainers.filter((c: unknown) => isRecord(c) && c.restartPolicy === "Always")
    : [];
  for (const c of [...containers, ...sidecars]) {
    if (!isRecord(c) || !Array.isArray(c.ports)) continue;
    for (const p of c.ports) {
      if (!isRecord(p) || typeof p.containerPort !== "number") continue;
      if (p.protocol !== undefined && p.protocol !== "TCP") continue;
      out.push(
        typeof p.name === "string"
          ? { name: p.name, containerPort: p.containerPort }
          : { containerPort: p.containerPort },
      );
    }
  }
  return out;
}

function str(value: unknown, fallback: string): string {
  return typeof value === "string" && value !== "" ? value : fallback;
}

function objectKey(obj: KubeObject): string {
  return `${obj.kind}/${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
}

/** What every workload of one translation with the same mode and locality has in common. */
interface WorkloadProfile {
  readonly tunnelProtocol: "HBONE" | "NONE";
  /** `HOST_NETWORK` for a pod on its node's network: ztunnel never looks it up by its address. */
  readonly networkMode: "STANDARD" | "HOST_NETWORK";
  readonly network: string;
  readonly clusterId: string;
  readonly trustDomain: string;
  readonly locality: { region: string; zone: string; subzone: string } | undefined;
  /** The waypoint its own traffic goes through (`istio.io/use-waypoint` for workloads). */
  readonly waypoint: MessageInit<Workload>["waypoint"] | undefined;
  /** It terminates HBONE itself (`networking.istio.io/tunnel: http`), no ztunnel in front of it. */
  readonly nativeTunnel: boolean;
}

/**
 * The accessor that makes {@link PodWorkload.workload} an own, enumerable property: deep equality and
 * JSON read the message, as they would on a plain {@link MeshWorkload}. One descriptor for all
 * instances, so they share one hidden class and the accessor costs no slot.
 */
const WORKLOAD_PROPERTY: PropertyDescriptor = {
  enumerable: true,
  get(this: PodWorkload): MessageInit<Workload> {
    return this.message();
  },
};

/**
 * @internal A pod's translation, as the memo keeps it: the workload's key and aliases, what the checks
 * across pods read, and the few values the translation chose (shared between pods where they can be).
 * The Workload message is built each time `workload` is read, which is mostly to encode it once: held,
 * it and its address bytes cost about 300 bytes per pod for as long as the pod is served.
 */
export class PodWorkload implements MeshWorkload {
  /** The Pod object (a Deployment's pods: what the translation read), out of deep equality's sight. */
  readonly #pod: KubeObject | PodModel;
  declare readonly workload: MessageInit<Workload>;

  constructor(
    readonly key: string,
    /** `network/IP`. Frozen: the xDS cache keeps the same array instead of a copy. */
    readonly aliases: readonly string[],
    pod: KubeObject | PodModel,
    readonly ip: string,
    readonly node: string,
    readonly spiffeId: string,
    /** Its identity is listed on its node (an ambient or waypoint pod). */
    readonly captured: boolean,
    /** The Services that select it, with their ports (one map shared by pods behind the same ones). */
    readonly services: Record<string, { ports: { servicePort: number; targetPort: number }[] }>,
    readonly authorizationPolicies: readonly string[],
    readonly profile: WorkloadProfile,
  ) {
    this.#pod = pod;
    Object.defineProperty(this, "workload", WORKLOAD_PROPERTY);
  }

  /**
   * Whether it takes traffic (the Workload's status, its endpoints' health): see {@link podHealthy}.
   * A Deployment's pods are healthy. Read from the Pod object, so it costs the workload no field.
   */
  get healthy(): boolean {
    const pod = this.#pod;
    return !("metadata" in pod) || podHealthy(pod);
  }

  /**
   * It has its node's network and address (`spec.hostNetwork`): it claims no IP (the node's pods
   * share it) and has no `network/IP` alias, and no identity on its node (nothing captures it).
   */
  get hostNetwork(): boolean {
    return this.profile.networkMode === "HOST_NETWORK";
  }

  /** The Pod object it was translated from (none for a Deployment's pods). */
  get object(): KubeObject | undefined {
    const pod = this.#pod;
    return "metadata" in pod ? pod : undefined;
  }

  /** Where it comes from, as issues name it: `Pod/namespace/name`. */
  get where(): string {
    const pod = this.#pod;
    return "metadata" in pod ? podSource(pod) : `Pod/${pod.namespace}/${pod.name}`;
  }

  /** The id of its source object, for change sets. */
  get source(): string {
    const pod = this.#pod;
    return "metadata" in pod ? podSource(pod) : pod.source;
  }

  /** The JSON of a plain {@link MeshWorkload}. */
  toJSON(): MeshWorkload {
    return { key: this.key, aliases: this.aliases, workload: this.message() };
  }

  /** @internal Builds the Workload message (see the class comment). */
  message(): MessageInit<Workload> {
    const pod = this.#pod;
    const model = "metadata" in pod ? podNames(pod) : pod;
    const profile = this.profile;
    const [canonicalName, canonicalRevision] = canonicalService(model.labels, model.workloadName);
    const workload: MessageInit<Workload> = {
      uid: this.key,
      name: model.name,
      namespace: model.namespace,
      addresses: [ipv4Bytes(this.ip) as Uint8Array],
      network: profile.network,
      tunnelProtocol: profile.tunnelProtocol,
      serviceAccount: model.serviceAccount,
      node: this.node,
      canonicalName,
      canonicalRevision,
      workloadType: model.workloadType,
      workloadName: model.workloadName,
      services: this.services,
      authorizationPolicies: this.authorizationPolicies as string[],
      status: this.healthy ? "HEALTHY" : "UNHEALTHY",
      clusterId: profile.clusterId,
    };
    if (profile.trustDomain !== "cluster.local") workload.trustDomain = profile.trustDomain;
    if (profile.locality !== undefined) workload.locality = profile.locality;
    if (profile.networkMode === "HOST_NETWORK") workload.networkMode = "HOST_NETWORK";
    if (profile.waypoint !== undefined) workload.waypoint = profile.waypoint;
    if (profile.nativeTunnel) workload.nativeTunnel = true;
    return workload;
  }
}

/** @internal The policy keys a workload lists, without building a pod's message. */
export function authorizationPoliciesOf(w: MeshWorkload): readonly string[] {
  return w instanceof PodWorkload ? w.authorizationPolicies : (w.workload.authorizationPolicies ?? []);
}

/** @internal The keys of the Services a workload is behind, without building a pod's message. */
export function servicesOf(w: MeshWorkload): Readonly<Record<string, unknown>> {
  return w instanceof PodWorkload ? w.services : (w.workload.services ?? {});
}

/**
 * A Pod object's `Pod/namespace/name`. The Kubernetes source names a Pod object by this same text:
 * its string is returned, not a copy per pod.
 */
function podSource(obj: KubeObject): string {
  const key = objectKey(obj);
  return obj.source === key ? obj.source : key;
}

/** What a Workload message reads of a Pod object besides the translation's own choices. */
function podNames(
  obj: KubeObject,
): Pick<PodModel, "name" | "namespace" | "labels" | "serviceAccount" | "workloadName" | "workloadType"> {
  return {
    name: obj.metadata.name,
    namespace: obj.metadata.namespace ?? "default",
    labels: obj.metadata.labels ?? {},
    serviceAccount: str(obj.spec?.serviceAccountName, "default"),
    workloadName: podWorkloadName(obj),
    workloadType: "POD",
  };
}

/**
 * True for a pod whose containers will not run again (phase `Succeeded` or `Failed`, as a Job's pods
 * end): istiod serves no workload for it, and the kubelet gives its IP to other pods.
 */
export function podFinished(obj: KubeObject): boolean {
  const phase = obj.status?.phase;
  return phase === "Succeeded" || phase === "Failed";
}

/**
 * `istio.io/ingress-use-waypoint` of a Service, else of its Namespace, read as Go's `ParseBool` reads
 * it (`1`, `t`, `T`, `TRUE`, `true`, `True`; anything else is false), as istiod does: ingress gateways
 * then send the Service's traffic through its waypoint.
 */
function ingressUsesWaypoint(
  own: Record<string, string> | undefined,
  namespace: Record<string, string> | undefined,
): boolean {
  const value = own?.[INGRESS_USE_WAYPOINT_LABEL] ?? namespace?.[INGRESS_USE_WAYPOINT_LABEL];
  return value !== undefined && ["1", "t", "T", "TRUE", "true", "True"].includes(value);
}

/**
 * A Service's `spec.ipFamilies` as istiod sends them (`ip_families`, which ztunnel's DNS proxy
 * answers by): one family is that family only, two are DUAL; none (or anything else) is AUTOMATIC,
 * the field's default, left out.
 */
function ipFamiliesOf(families: unknown): Pick<MessageInit<Service>, "ipFamilies"> {
  if (!Array.isArray(families)) return {};
  if (families.length === 2) return { ipFamilies: "DUAL" };
  if (families.length !== 1) return {};
  if (families[0] === "IPv4") return { ipFamilies: "IPV4_ONLY" };
  if (families[0] === "IPv6") return { ipFamilies: "IPV6_ONLY" };
  return {};
}

/**
 * A Service's VIPs as istiod reads them (`getVIPs`): every address of `spec.clusterIPs` (a dual-stack
 * Service has one per family, its first family first), else `spec.clusterIP`; none for a headless
 * Service (`None`). Each as its bytes and the text of its `network/IP` alias (IPv6 as RFC 5952 prints
 * it); or the first that is no IP address (an IPv4 one must be canonical, as a pod's), as an issue.
 */
function serviceVips(
  obj: KubeObject,
): { field: string; vips: { text: string; bytes: Uint8Array }[] } | { problem: string } {
  const list = obj.spec?.clusterIPs;
  const many = Array.isArray(list) && list.length > 0;
  const field = many ? "spec.clusterIPs" : "spec.clusterIP";
  const vips: { text: string; bytes: Uint8Array }[] = [];
  for (const ip of many ? list : [obj.spec?.clusterIP]) {
    if (ip === undefined || ip === "" || ip === "None") continue;
    const bytes = typeof ip === "string" ? (ipv4Bytes(ip) ?? ipv6Bytes(ip)) : undefined;
    if (bytes === undefined) return { problem: `${field} ${JSON.stringify(ip)} is not an IP address` };
    const text = addressText(bytes);
    if (!vips.some((vip) => vip.text === text)) vips.push({ text, bytes });
  }
  return { field, vips };
}

/**
 * Whether a pod takes traffic, as istiod decides a Workload's status: not while it is being deleted
 * (`metadata.deletionTimestamp`), and not while its `Ready` condition is other than `"True"`. A pod
 * with no `Ready` condition at all is taken as ready: the API server's pods carry one from the status
 * update that gives them an IP, so only a hand-written manifest (the folder source) lacks it.
 */
export function podHealthy(obj: KubeObject): boolean {
  if (obj.metadata.deletionTimestamp !== undefined) return false;
  const conditions = obj.status?.conditions;
  if (!Array.isArray(conditions)) return true;
  for (const c of conditions) {
    if (isRecord(c) && c.type === "Ready") return c.status === "True";
  }
  return true;
}

/** @internal What the translation reads of one Pod object. */
export function podModel(obj: KubeObject): PodModel {
  const spec = obj.spec ?? {};
  // Field by field, not a spread of podNames(): this runs for every pod of a full translation.
  return {
    name: obj.metadata.name,
    namespace: obj.metadata.namespace ?? "default",
    ...(obj.metadata.uid === undefined ? {} : { uid: obj.metadata.uid }),
    labels: obj.metadata.labels ?? {},
    node: str(spec.nodeName, ""),
    serviceAccount: str(spec.serviceAccountName, "default"),
    ip: str(obj.status?.podIP, ""),
    ports: containerPorts(spec),
    workloadName: podWorkloadName(obj),
    workloadType: "POD",
    source: podSource(obj),
    hostNetwork: spec.hostNetwork === true,
    object: obj,
  };
}

/** The pods of the objects in order; a Pod that `reused` knows is its earlier result instead. */
function podsOf(
  objects: readonly KubeObject[],
  issues: MeshIssue[],
  reused?: (obj: KubeObject) => PodWorkload | undefined,
): (PodModel | PodWorkload)[] {
  const pods: (PodModel | PodWorkload)[] = [];
  for (const obj of objects) {
    const namespace = obj.metadata.namespace ?? "default";
    if (obj.kind === "Pod") {
      pods.push(reused?.(obj) ?? podModel(obj));
    } else if (obj.kind === "Deployment") {
      const annotations = obj.metadata.annotations ?? {};
      const ips = (annotations[POD_IPS_ANNOTATION] ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
      const nodes = (annotations[NODES_ANNOTATION] ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
      if (ips.length === 0) {
        issues.push({
          source: objectKey(obj),
          message: `annotation ${POD_IPS_ANNOTATION} is missing: no pods`,
        });
        continue;
      }
      const template = isRecord(obj.spec?.template) ? obj.spec.template : {};
      const tmeta = isRecord(template.metadata) ? template.metadata : {};
      const tspec = isRecord(template.spec) ? template.spec : {};
      const labels: Record<string, string> = {};
      if (isRecord(tmeta.labels)) {
        for (const [k, v] of Object.entries(tmeta.labels)) if (typeof v === "string") labels[k] = v;
      }
      ips.forEach((ip, i) => {
        pods.push({
          name: `${obj.metadata.name}-${i}`,
          namespace,
          labels,
          node: nodes.length === 0 ? "" : (nodes[i % nodes.length] as string),
          serviceAccount: str(tspec.serviceAccountName, "default"),
          ip,
          ports: containerPorts(tspec),
          workloadName: obj.metadata.name,
          workloadType: "DEPLOYMENT",
          source: objectKey(obj),
          hostNetwork: false,
        });
      });
    }
  }
  return pods;
}

interface ServicePortModel {
  name?: string;
  port: number;
  targetPort: number | string;
  appProtocol?: istio.workload.AppProtocol;
}

function servicePorts(obj: KubeObject, issues: MeshIssue[]): ServicePortModel[] {
  const out: ServicePortModel[] = [];
  const ports = obj.spec?.ports;
  if (!Array.isArray(ports)) return out;
  for (const p of ports) {
    if (
      !isRecord(p) ||
      typeof p.port !== "number" ||
      !Number.isInteger(p.port) ||
      p.port < 1 ||
      p.port > 65535
    ) {
      issues.push({ source: objectKey(obj), message: "a port without a valid spec.ports[].port is ignored" });
      continue;
    }
    const target =
      typeof p.targetPort === "number" || (typeof p.targetPort === "string" && p.targetPort !== "")
        ? p.targetPort
        : p.port;
    const model: ServicePortModel = { port: p.port, targetPort: target };
    if (typeof p.name === "string") model.name = p.name;
    const proto = servicePortProtocol(p as { port: number });
    if (proto !== undefined) model.appProtocol = proto;
    out.push(model);
  }
  return out;
}

/**
 * Waypoint Gateways (`gatewayClassName: istio-waypoint`) by `namespace/name`, each with the IPv4
 * address ztunnels reach it at. `status.addresses` is read by type, never by position, as istiod
 * picks a waypoint's address: a `Hostname` entry first (Istio's controller lists the waypoint
 * Service's hostname before its IP), taken as the cluster IP of the Service of the Gateway's namespace
 * with that hostname; else an `IPAddress` entry (an entry without a type is one, as Gateway API
 * defaults it), the first that is an IPv4 address; entries of other types are passed over. Only when
 * the status gives none, the {@link WAYPOINT_ADDRESS_ANNOTATION} annotation. The first of these that
 * passes the checks below is taken, so one unusable entry never unbinds a waypoint that has a usable one.
 * The address must be a valid pod IP in `podCidrs` (default the default pod ranges), or the IPv4
 * cluster IP of a Service (not ExternalName): what the leader writes on Kubernetes, where the Service
 * range is never a pod range. A ztunnel reaches such an address through that Service's endpoints,
 * pods that passed these checks, and istiod binds to it as to any address.
 */
export function waypointGateways(
  objects: readonly KubeObject[],
  issues: MeshIssue[],
  podCidrs: readonly Ipv4Cidr[] = parsePodCidrs(),
  domainSuffix = "cluster.local",
): Map<string, string> {
  const out = new Map<string, string>();
  let serviceIps: Set<string> | undefined;
  // The IPv4 cluster IP of each Service (not ExternalName) by `namespace/hostname`.
  let serviceIpByHost: Map<string, string> | undefined;
  const readServices = (): void => {
    serviceIps = new Set();
    serviceIpByHost = new Map();
    for (const obj of objects) {
      if (obj.kind !== "Service" || obj.spec?.type === "ExternalName") continue;
      const read = serviceVips(obj);
      if (!("vips" in read)) continue;
      for (const vip of read.vips) serviceIps.add(vip.text);
      const ipv4 = read.vips.find((vip) => vip.bytes.length === 4);
      const namespace = obj.metadata.namespace ?? "default";
      const host = `${namespace}/${obj.metadata.name}.${namespace}.svc.${domainSuffix}`.toLowerCase();
      if (ipv4 !== undefined && !serviceIpByHost.has(host)) serviceIpByHost.set(host, ipv4.text);
    }
  };
  const isServiceIp = (ip: string): boolean => {
    if (serviceIps === undefined) readServices();
    return serviceIps?.has(ip) ?? false;
  };
  const serviceIpOf = (namespace: string, hostname: string): string | undefined => {
    if (serviceIpByHost === undefined) readServices();
    return serviceIpByHost?.get(`${namespace}/${hostname.replace(/\.$/, "")}`.toLowerCase());
  };
  for (const obj of objects) {
    if (obj.kind !== "Gateway" || obj.spec?.gatewayClassName !== WAYPOINT_CLASS) continue;
    const namespace = obj.metadata.namespace ?? "default";
    const key = `${namespace}/${obj.metadata.name}`;
    const entries = (Array.isArray(obj.status?.addresses) ? obj.status.addresses : []).filter(
      (e: unknown): e is { type?: unknown; value: string } => isRecord(e) && typeof e.value === "string",
    );
    const candidates: string[] = [];
    for (const e of entries) {
      const ip = e.type === "Hostname" ? serviceIpOf(namespace, e.value) : undefined;
      if (ip !== undefined && !candidates.includes(ip)) candidates.push(ip);
    }
    for (const e of entries) {
      const isIpEntry = e.type === undefined || e.type === "IPAddress";
      if (isIpEntry && ipv4Bytes(e.value) !== undefined && !candidates.includes(e.value))
        candidates.push(e.value);
    }
    const annotated = obj.metadata.annotations?.[WAYPOINT_ADDRESS_ANNOTATION];
    if (candidates.length === 0 && annotated !== undefined && ipv4Bytes(annotated) !== undefined) {
      candidates.push(annotated);
    }
    if (candidates.length === 0) {
      issues.push({
        source: objectKey(obj),
        message: `waypoint has no IPv4 address in status.addresses (an IPAddress, or a Hostname of a Service of its namespace) or ${WAYPOINT_ADDRESS_ANNOTATION}`,
      });
      continue;
    }
    // Never unspecified, multicast or reserved; in the pod ranges unless a Service has it.
    const problemOf = (ip: string): string | undefined =>
      hostIpProblem(ip) ??
      (isServiceIp(ip) ? undefined : podIpProblem(ip, podCidrs)?.concat(", and no Service's cluster IP"));
    const usable = candidates.find((ip) => problemOf(ip) === undefined);
    if (usable === undefined) {
      const problem = problemOf(candidates[0] ?? "") ?? "";
      issues.push({
        source: objectKey(obj),
        message: `waypoint address: ${problem.replace(/^pod IP /, "")}`,
      });
      continue;
    }
    out.set(key, usable);
  }
  return out;
}

const POLICY_KINDS = new Set(["AuthorizationPolicy", "PeerAuthentication"]);

function typeProblem(
  value: unknown,
  path: string,
  want: "string" | "list" | "string map",
): string | undefined {
  if (value === undefined) return undefined;
  const ok =
    want === "string"
      ? typeof value === "string"
      : want === "list"
        ? Array.isArray(value)
        : isRecord(value) && Object.values(value).every((v) => typeof v === "string");
  return ok ? undefined : `${path} must be a ${want}`;
}

/**
 * What is served in place of a policy that fails validation and has no last good version, so that a
 * policy nobody could read fails closed instead of being dropped (a dropped ALLOW opens its workloads
 * to every caller, a dropped DENY or STRICT stops being enforced): an AuthorizationPolicy becomes a
 * DENY of every request, a PeerAuthentication becomes STRICT. Either covers the same workloads when
 * the policy's `selector` (or `targetRefs`) validates, else its whole namespace (the mesh, in the root
 * namespace). Same kind, name and namespace, so a valid edit replaces it. Undefined for other kinds,
 * which are not served.
 */
export function failClosedStandIn(obj: KubeObject): KubeObject | undefined {
  if (!POLICY_KINDS.has(obj.kind)) return undefined;
  const spec = isRecord(obj.spec) ? obj.spec : {};
  const base =
    obj.kind === "AuthorizationPolicy" ? { action: "DENY", rules: [{}] } : { mtls: { mode: "STRICT" } };
  const metadata: KubeObject["metadata"] = {
    name: obj.metadata.name,
    ...(obj.metadata.namespace === undefined ? {} : { namespace: obj.metadata.namespace }),
    ...(obj.metadata.creationTimestamp === undefined
      ? {}
      : { creationTimestamp: obj.metadata.creationTimestamp }),
    annotations: { [STAND_IN_ANNOTATION]: "the policy fails validation and has no last good version" },
  };
  const scopes: Record<string, unknown>[] = [];
  if (spec.selector !== undefined) scopes.push({ selector: spec.selector });
  if (obj.kind === "AuthorizationPolicy" && spec.targetRefs !== undefined)
    scopes.push({ targetRefs: spec.targetRefs });
  if (obj.kind === "AuthorizationPolicy" && spec.targetRef !== undefined)
    scopes.push({ targetRef: spec.targetRef });
  scopes.push({});
  for (const scope of scopes) {
    const standIn: KubeObject = { ...obj, metadata, spec: { ...scope, ...base } };
    if (validateManifestObject(standIn) === undefined) return standIn;
  }
  return undefined;
}

/**
 * Why an object read from a manifest cannot be served as written, or undefined when it can: policies
 * must pass `@ambient/policy` validation, HTTPRoutes and GRPCRoutes `@ambient/router`'s, and the Pod and Service fields the translation reads must
 * have their Kubernetes types. Used to keep an object's last good version instead of a broken edit.
 */
export function validateManifestObject(obj: KubeObject): string | undefined {
  if (obj.kind === "ServiceEntry" || obj.kind === "WorkloadEntry") return networkingEntryProblem(obj);
  if (POLICY_KINDS.has(obj.kind)) {
    try {
      validateResource({
        apiVersion: obj.apiVersion,
        kind: obj.kind,
        metadata: obj.metadata,
        ...(obj.spec === undefined ? {} : { spec: obj.spec }),
      });
      return undefined;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  }
  if (obj.kind === "HTTPRoute" || obj.kind === "GRPCRoute") {
    try {
      const { source: _source, ...raw } = obj;
      validateRoute(raw);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  }
  const problems: (string | undefined)[] = [];
  if (obj.kind === "Pod") {
    problems.push(
      typeProblem(obj.spec?.nodeName, "spec.nodeName", "string"),
      typeProblem(obj.spec?.serviceAccountName, "spec.serviceAccountName", "string"),
      typeProblem(obj.spec?.containers, "spec.containers", "list"),
      typeProblem(obj.status?.podIP, "status.podIP", "string"),
    );
  } else if (obj.kind === "Service") {
    problems.push(
      typeProblem(obj.spec?.clusterIP, "spec.clusterIP", "string"),
      typeProblem(obj.spec?.clusterIPs, "spec.clusterIPs", "list"),
      typeProblem(obj.spec?.selector, "spec.selector", "string map"),
      typeProblem(obj.spec?.ports, "spec.ports", "list"),
    );
  } else if (obj.kind === "EndpointSlice") {
    problems.push(
      typeProblem(obj.addressType, "addressType", "string"),
      typeProblem(obj.endpoints, "endpoints", "list"),
      typeProblem(obj.ports, "ports", "list"),
    );
  }
  const found = problems.filter((p) => p !== undefined);
  return found.length === 0 ? undefined : `invalid ${objectKey(obj)}: ${found.join("; ")}`;
}

/** `loadBalancing` from trafficDistribution, internalTrafficPolicy and the traffic-distribution annotation. */
function loadBalancingOf(
  obj: KubeObject,
  namespaceAnnotations: Record<string, string> | undefined,
): { loadBalancing?: MessageInit<istio.workload.LoadBalancing> } {
  const loadBalancing = serviceLoadBalancing({
    trafficDistribution: obj.spec?.trafficDistribution,
    internalTrafficPolicy: obj.spec?.internalTrafficPolicy,
    publishNotReadyAddresses: obj.spec?.publishNotReadyAddresses,
    ...(obj.metadata.annotations === undefined ? {} : { serviceAnnotations: obj.metadata.annotations }),
    ...(namespaceAnnotations === undefined ? {} : { namespaceAnnotations }),
  });
  return loadBalancing === undefined ? {} : { loadBalancing };
}

/**
 * @internal What translating one pod reads besides the pod itself, built once per translation from
 * the options and every object that is not a Pod: a pod changed alone is translated against it.
 */
export interface WorkloadContext {
  clusterId: string;
  trustDomain: string;
  network: string;
  podCidrs: readonly Ipv4Cidr[];
  namespaceLabels: ReadonlyMap<string, Record<string, string>>;
  nodeLocality: ReadonlyMap<string, { region: string; zone: string; subzone: string }>;
  /** What makes a pod an HBONE workload ({@link TranslateOptions.captureSignal}). */
  captureSignal: "dataplane-mode" | "redirection";
  /** The Services (and ServiceEntries) whose selector picks the pod, in translation order. */
  servicesSelecting(pod: PodModel): ServiceModel[];
  /** Keys of the selector policies and PeerAuthentications that apply to a workload's labels. */
  policyKeysFor(namespace: string, labels: Record<string, string>): string[];
  /**
   * The waypoint a workload of `namespace` with `labels` sends its own traffic through: its
   * `istio.io/use-waypoint` label, else its Namespace's, naming a waypoint that takes workload traffic
   * (`istio.io/waypoint-for` `workload` or `all`) and lets the namespace attach; none for a waypoint's
   * own pods.
   */
  workloadWaypoint(
    namespace: string,
    labels: Record<string, string>,
  ): MessageInit<Workload>["waypoint"] | undefined;
  /**
   * One value per key among the workloads translated in this context (a SPIFFE ID, a services map, a
   * policy list): `make` runs for the first workload with that key, the others get the same value.
   */
  shared<T>(key: string, make: (key: string) => T): T;
}

/** @internal A {@link WorkloadContext.shared} over a map that lives as long as the context. */
export function sharedValues(): WorkloadContext["shared"] {
  const values = new Map<string, unknown>();
  return <T>(key: string, make: (key: string) => T): T => {
    if (values.has(key)) return values.get(key) as T;
    const value = make(key);
    values.set(key, value);
    return value;
  };
}

/** @internal A pod's address, uid and name in messages, or why it is not served. */
export function podAddress(
  pod: PodModel,
  ctx: Pick<WorkloadContext, "clusterId" | "podCidrs">,
): { uid: string; where: string } | string | undefined {
  // A finished pod is no workload, and its IP is free for the next pod (a Job's pods keep theirs). A
  // pending pod without an IP yet is none yet: every new pod passes through that, so it is no issue.
  if (pod.object !== undefined) {
    if (podFinished(pod.object)) return undefined;
    if (pod.ip === "" && pod.object.status?.phase === "Pending") return undefined;
  }
  // A Pod object's source is this same text: share the string (one less per pod held by the memo).
  const where = pod.object === undefined ? `Pod/${pod.namespace}/${pod.name}` : pod.source;
  // A host-network pod has its node's address, outside the pod ranges, and never an identity.
  const problem = pod.hostNetwork ? hostIpProblem(pod.ip) : podIpProblem(pod.ip, ctx.podCidrs);
  if (problem !== undefined || ipv4Bytes(pod.ip) === undefined) {
    return `${where}: ${problem ?? "no pod IP"}: not served`;
  }
  return { uid: pod.uid ?? `${ctx.clusterId}//Pod/${pod.namespace}/${pod.name}`, where };
}

/**
 * @internal One pod's workload, once its address passed the checks against the other pods (IP and uid
 * not taken). `object` is the Pod object (none for a Deployment's pods).
 */
export function translatePod(
  pod: PodModel,
  address: { uid: string; where: string },
  ctx: WorkloadContext,
): PodWorkload {
  const { clusterId, trustDomain, network } = ctx;
  const captured =
    ctx.captureSignal === "redirection"
      ? pod.object?.metadata.annotations?.[REDIRECTION_ANNOTATION] === "enabled"
      : (pod.labels[AMBIENT_LABEL] ?? ctx.namespaceLabels.get(pod.namespace)?.[AMBIENT_LABEL]) === "ambient";
  // Nothing captures a host-network pod (its network is its node's): no HBONE, whatever the labels.
  const ambient = captured && !pod.hostNetwork;
  // A pod that speaks HBONE itself is reached over HBONE whether or not a ztunnel captures it.
  const nativeTunnel = pod.labels[TUNNEL_LABEL] === "http";
  const spiffeId = ctx.shared(
    `spiffe://${trustDomain}/ns/${pod.namespace}/sa/${pod.serviceAccount}`,
    (id) => id,
  );
  // A waypoint pod is not captured by its node's ztunnel, but gets its certificate through it.
  const waypointPod = pod.labels[GATEWAY_NAME_LABEL] !== undefined;

  // Pods behind the same Services with the same target ports share one services map, and pods with the
  // same policies one list: the workloads are read, never modified, once translated.
  const selected: { key: string; ports: { servicePort: number; targetPort: number }[] }[] = [];
  let portsKey = "";
  for (const svc of ctx.servicesSelecting(pod)) {
    const ports: { servicePort: number; targetPort: number }[] = [];
    portsKey += `${svc.key}\u0000`;
    for (const p of svc.ports) {
      const target =
        typeof p.targetPort !== "number"
          ? pod.ports.find((cp) => cp.name === p.targetPort)?.containerPort
          : svc.portsByName === true && p.name !== undefined
            ? (pod.ports.find((cp) => cp.name === p.name)?.containerPort ?? p.targetPort)
            : p.targetPort;
      if (target === undefined) continue;
      ports.push({ servicePort: p.port, targetPort: target });
      portsKey += `${p.port}:${target},`;
    }
    portsKey += "\u0000";
    selected.push({ key: svc.key, ports });
  }
  const portLists = ctx.shared(`services\u0000${portsKey}`, () => {
    const lists: Record<string, { ports: { servicePort: number; targetPort: number }[] }> = {};
    for (const { key, ports } of selected) lists[key] = { ports };
    return lists;
  });
  const policyKeys = ctx.policyKeysFor(pod.namespace, pod.labels);
  const policies = ctx.shared(`policies\u0000${policyKeys.join("\u0000")}`, () => policyKeys);

  const locality = ctx.nodeLocality.get(pod.node);
  const networkMode = pod.hostNetwork ? ("HOST_NETWORK" as const) : ("STANDARD" as const);
  const waypoint = ctx.workloadWaypoint(pod.namespace, pod.labels);
  const waypointKey = waypoint === undefined ? "" : [...(waypoint.address?.address ?? [])].join(".");
  const profile = ctx.shared(
    `profile\u0000${ambient}\u0000${nativeTunnel}\u0000${pod.node}\u0000${networkMode}\u0000${waypointKey}`,
    () => ({
      tunnelProtocol: ambient || nativeTunnel ? ("HBONE" as const) : ("NONE" as const),
      nativeTunnel,
      networkMode,
      network,
      clusterId,
      trustDomain,
      locality,
      waypoint,
    }),
  );
  return new PodWorkload(
    address.uid,
    // `join` makes one flat string; a template literal leaves a chain of pieces (24-32 bytes more per
    // pod). The frozen list is the one the xDS cache keeps.
    pod.hostNetwork ? NO_ALIASES : Object.freeze([[network, pod.ip].join("/")]),
    pod.object ?? pod,
    pod.ip,
    pod.node,
    spiffeId,
    ambient || (waypointPod && !pod.hostNetwork),
    portLists,
    policies,
    profile,
  );
}

/** The aliases of a host-network pod: its address is its node's, shared by the node's other such pods. */
const NO_ALIASES: readonly string[] = Object.freeze([]);

/**
 * Whether PeerAuthentication `a` was created before `b`: the oldest of several at one level is the
 * one in force. Without timestamps (manifests from files), or on a tie, the name decides, as in
 * the effective keys the policy library computes.
 */
function createdBefore(a: PeerAuthentication, b: PeerAuthentication): boolean {
  const ta = a.metadata.creationTimestamp ? Date.parse(a.metadata.creationTimestamp) : Number.NaN;
  const tb = b.metadata.creationTimestamp ? Date.parse(b.metadata.creationTimestamp) : Number.NaN;
  if (!Number.isNaN(ta) && !Number.isNaN(tb) && ta !== tb) return ta < tb;
  if (Number.isNaN(ta) !== Number.isNaN(tb)) return !Number.isNaN(ta);
  return a.metadata.name < b.metadata.name;
}

function sortByKey<T extends { key: string }>(list: T[]): T[] {
  return list.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/**
 * Turns manifests into what the control plane serves: one Workload per pod (key = uid, locality from
 * its Node's topology labels), one
 * Service per Kubernetes Service (key `namespace/hostname`), the Authorizations istiod would send
 * ztunnel, and the identities scheduled on every node. Pure: same input, same output. With a `memo`
 * (the same one for every call), a Pod or Service object that is the same object as in the previous
 * call, in the same context (options and every object that is neither a Pod nor a Service), is not
 * translated again: its previous result is reused, so one pod change costs one pod's translation. A
 * pod is translated again also when a Service that selects it, before or now, changed.
 */
export function translateMesh(
  objects: readonly KubeObject[],
  options: TranslateOptions = {},
  memo?: TranslationMemo,
): MeshConfig {
  const clusterId = options.clusterId ?? "Kubernetes";
  const trustDomain = options.trustDomain ?? "cluster.local";
  const rootNamespace = options.rootNamespace ?? "istio-system";
  const domainSuffix = options.domainSuffix ?? "cluster.local";
  const network = options.network ?? "";
  const podCidrs = parsePodCidrs(options.podCidrs);
  const issues: MeshIssue[] = [];

  const namespaceLabels = new Map<string, Record<string, string>>();
  const namespaceAnnotations = new Map<string, Record<string, string>>();
  const nodeLocality = new Map<string, { region: string; zone: string; subzone: string }>();
  for (const obj of objects) {
    if (obj.kind === "Namespace") namespaceLabels.set(obj.metadata.name, obj.metadata.labels ?? {});
    if (obj.kind === "Namespace") namespaceAnnotations.set(obj.metadata.name, obj.metadata.annotations ?? {});
    if (obj.kind === "Node") {
      // Kubernetes' topology labels, and Istio's for the sub-zone (istiod reads the same three).
      const labels = obj.metadata.labels ?? {};
      const locality = {
        region: labels["topology.kubernetes.io/region"] ?? "",
        zone: labels["topology.kubernetes.io/zone"] ?? "",
        subzone: labels["topology.istio.io/subzone"] ?? "",
      };
      if (locality.region !== "" || locality.zone !== "" || locality.subzone !== "") {
        nodeLocality.set(obj.metadata.name, locality);
      }
    }
  }

  // Policies first: workloads list the selector policies that select them.
  const authorizations = new Map<string, WireAuthorization>();
  const authorizationPolicies: AuthorizationPolicy[] = [];
  const peerAuthentications: PeerAuthentication[] = [];
  let anyPeerAuthentication = false;
  for (const obj of objects) {
    if (obj.kind !== "AuthorizationPolicy" && obj.kind !== "PeerAuthentication") continue;
    if (obj.kind === "PeerAuthentication") anyPeerAuthentication = true;
    const raw = {
      apiVersion: obj.apiVersion,
      kind: obj.kind,
      metadata: obj.metadata,
      ...(obj.spec === undefined ? {} : { spec: obj.spec }),
    };
    try {
      const { resource } = validateResource(raw);
      if (resource.kind === "AuthorizationPolicy") authorizationPolicies.push(resource);
      else peerAuthentications.push(resource);
    } catch (err) {
      issues.push({ source: objectKey(obj), message: err instanceof Error ? err.message : String(err) });
    }
  }
  const selectorPolicies: { key: string; namespace: string; labels: Record<string, string> }[] = [];
  for (const policy of authorizationPolicies) {
    const key = `${policy.metadata.namespace}/${policy.metadata.name}`;
    const result = toWireAuthorization(policy, { rootNamespace });
    if (result.warning)
      issues.push({ source: `AuthorizationPolicy/${key}`, message: result.warning.message });
    if (result.authorization === undefined) {
      // targetRefs policies belong to waypoints, which read them themselves: not a problem.
      if (result.skipped && result.skipped !== "targetRefs")
        issues.push({
          source: `AuthorizationPolicy/${key}`,
          message: `not sent to ztunnel (${result.skipped})`,
        });
      continue;
    }
    authorizations.set(key, result.authorization);
    // An empty matchLabels selects every workload the policy reaches; a selector without one, none.
    const matchLabels = policy.spec.selector?.matchLabels;
    if (result.authorization.scope === "WORKLOAD_SELECTOR" && matchLabels !== undefined) {
      selectorPolicies.push({ key, namespace: policy.metadata.namespace, labels: { ...matchLabels } });
    }
  }
  const paSelector = (pa: PeerAuthentication): Record<string, string> | undefined => {
    const m = pa.spec.selector?.matchLabels;
    return m !== undefined && Object.keys(m).length > 0 ? { ...m } : undefined;
  };
  // A root-namespace policy whose selector has no labels is mesh-wide for the root namespace's own
  // workloads; for the others, as istiod has it, only one without a selector is, and here a STRICT
  // one too: stricter than istiod, where the other way it would loosen the mesh-wide mode.
  const meshWideElsewhere = (pa: PeerAuthentication): boolean =>
    pa.spec.selector === undefined || pa.spec.mtls?.mode === "STRICT";
  // A port-level policy is converted against the same namespace-wide and mesh-wide policies that
  // decide which keys a workload lists: the oldest of each, whatever order the objects came in.
  const namespaceWide = (namespace: string): PeerAuthentication | undefined =>
    peerAuthentications
      .filter((p) => p.metadata.namespace === namespace && !paSelector(p))
      .filter((p) => namespace !== rootNamespace || meshWideElsewhere(p))
      .reduce<PeerAuthentication | undefined>(
        (a, b) => (a === undefined || createdBefore(b, a) ? b : a),
        undefined,
      );
  // Used only for the policies of other namespaces: the root namespace's are not converted.
  const meshPolicy = namespaceWide(rootNamespace);
  for (const pa of peerAuthentications) {
    if (!paSelector(pa)) continue;
    const namespacePolicy = namespaceWide(pa.metadata.namespace);
    const converted = convertPeerAuthentication(pa, {
      rootNamespace,
      ...(namespacePolicy ? { namespacePolicy } : {}),
      ...(meshPolicy ? { meshPolicy } : {}),
    });
    if (converted) authorizations.set(`${converted.namespace}/${converted.name}`, converted);
  }

  // Services; a use-waypoint label on the Service, else on its Namespace, binds it to a waypoint.
  const waypoints = waypointGateways(objects, issues, podCidrs, domainSuffix);
  // What each waypoint takes (its Gateway's `istio.io/waypoint-for`, else its class's; `service` by
  // default) and who may bind to it (its HBONE listener's allowedRoutes; its own namespace by default).
  const waypointFor = new Map<string, string>();
  const attachments = new Map<string, WaypointAttachment>();
  const classFor = objects.find((o) => o.kind === "GatewayClass" && o.metadata.name === WAYPOINT_CLASS)
    ?.metadata.labels?.[WAYPOINT_FOR_LABEL];
  for (const obj of objects) {
    if (obj.kind !== "Gateway" || obj.spec?.gatewayClassName !== WAYPOINT_CLASS) continue;
    const key = `${obj.metadata.namespace ?? "default"}/${obj.metadata.name}`;
    const forLabel = obj.metadata.labels?.[WAYPOINT_FOR_LABEL] ?? classFor;
    if (forLabel !== undefined) waypointFor.set(key, forLabel);
    attachments.set(key, waypointAttachment(obj));
  }
  // One address object per waypoint, shared by everything bound to it.
  const waypointAddresses = new Map<string, MessageInit<Workload>["waypoint"]>();
  /**
   * The waypoint an object of `namespace` with `labels` names (its `istio.io/use-waypoint`, else its
   * Namespace's; `none` opts out), as istiod's fetchWaypointForTarget finds it: the address of one
   * that exists, lets the namespace attach and takes `traffic`; else why not, or nothing when none
   * is named.
   */
  const boundWaypoint = (
    namespace: string,
    labels: Record<string, string>,
    traffic: "service" | "workload",
  ): { key: string; waypoint: MessageInit<Workload>["waypoint"] } | { problem: string } | undefined => {
    const nsLabels = namespaceLabels.get(namespace) ?? {};
    const bound = labels[USE_WAYPOINT_LABEL] !== undefined ? labels : nsLabels;
    const name = bound[USE_WAYPOINT_LABEL];
    if (name === undefined || name === "none") return undefined;
    const wpNamespace = bound[USE_WAYPOINT_NAMESPACE_LABEL] ?? namespace;
    const key = `${wpNamespace}/${name}`;
    const ip = waypoints.get(key);
    const bytes = ip === undefined ? undefined : ipv4Bytes(ip);
    if (bytes === undefined) return { problem: `waypoint ${key} is not a known istio-waypoint Gateway` };
    if (!allowsAttachment(attachments.get(key) ?? { from: "Same" }, wpNamespace, namespace, nsLabels)) {
      return {
        problem: `waypoint ${key} does not allow namespace ${namespace} to attach (its HBONE listener's allowedRoutes.namespaces): not bound`,
      };
    }
    const takes = waypointFor.get(key) ?? "service";
    if (takes !== traffic && takes !== "all") {
      return {
        problem: `waypoint ${key} does not take ${traffic === "service" ? "Service" : "workload"} traffic (${WAYPOINT_FOR_LABEL}: ${takes}): not bound`,
      };
    }
    let waypoint = waypointAddresses.get(key);
    if (waypoint === undefined) {
      waypoint = { address: { network, address: bytes }, hboneMtlsPort: WAYPOINT_HBONE_PORT };
      waypointAddresses.set(key, waypoint);
    }
    return { key, waypoint };
  };
  // A Service's waypoint; a binding that does not hold is an issue. A Service (or ServiceEntry) in front
  // of a waypoint or an east-west gateway has none, whatever it or its namespace names, and no issue:
  // bound, a ztunnel would send traffic for the waypoint back through that waypoint.
  const serviceWaypoint = (obj: KubeObject, namespace: string): MessageInit<Service>["waypoint"] => {
    const labels = obj.metadata.labels ?? {};
    const manager = labels[GATEWAY_MANAGED_LABEL];
    if (manager !== undefined && NEVER_BOUND_MANAGERS.has(manager)) return undefined;
    const found = boundWaypoint(namespace, labels, "service");
    if (found !== undefined && "problem" in found)
      issues.push({ source: objectKey(obj), message: found.problem });
    return found === undefined || "problem" in found ? undefined : found.waypoint;
  };
  // A workload's own waypoint (none for a waypoint's own pods, whose gateway-name label names a waypoint
  // of their namespace, as istiod's computeWaypoint finds them); unlike a Service's, a binding that does
  // not hold is no issue (istiod reports none for workloads): the workload just has no waypoint.
  const workloadWaypoint = (
    namespace: string,
    labels: Record<string, string>,
  ): MessageInit<Workload>["waypoint"] | undefined => {
    const instanceOf = labels[GATEWAY_NAME_LABEL];
    if (instanceOf !== undefined && waypoints.has(`${namespace}/${instanceOf}`)) return undefined;
    const found = boundWaypoint(namespace, labels, "workload");
    return found === undefined || "problem" in found ? undefined : found.waypoint;
  };
  // An ExternalName Service is a DNS alias (a CNAME the cluster's DNS answers), with no address and no
  // endpoints: served, it would be a Service ztunnel's DNS proxy answers for itself, with no records,
  // and its name would stop resolving for mesh pods. As istiod does, it is not served.
  const serviceObjects = objects.filter((o) => o.kind === "Service" && o.spec?.type !== "ExternalName");
  // Which waypoints can be bound to is context too: a waypoint at a Service's cluster IP depends on a
  // Service, which the memo would otherwise not see.
  const context: unknown[] = [JSON.stringify(options), JSON.stringify([...waypoints])];
  // EndpointSlices are not context: their workloads are made again by every translation (few, cheap),
  // and a pod's slice changes with every pod change.
  for (const obj of objects) {
    if (obj.kind !== "Pod" && obj.kind !== "Service" && obj.kind !== "EndpointSlice") context.push(obj);
  }
  const reuse = memo !== undefined && sameItems(memo.mesh.context, context);
  // Keys of the Services translated anew (added, changed, or back from a conflict) or gone since the
  // last translation: a pod keeps its last workload unless one of these selects it, now or before.
  const changedServices = new Set<string>();
  const nextByService = new Map<KubeObject, { value: unknown; issues: readonly MeshIssue[] }>();
  const services: MeshService[] = [];
  const serviceModels: ServiceModel[] = [];
  const seenVips = new Map<string, string>();
  for (const obj of serviceObjects) {
    const namespace = obj.metadata.namespace ?? "default";
    const hostname = `${obj.metadata.name}.${namespace}.svc.${domainSuffix}`;
    const key = `${namespace}/${hostname}`;
    const read = serviceVips(obj);
    if ("problem" in read) {
      issues.push({ source: objectKey(obj), message: read.problem });
      continue;
    }
    const taken = read.vips.find((vip) => seenVips.has(vip.text));
    if (taken !== undefined) {
      issues.push({
        source: objectKey(obj),
        message: `${read.field} ${taken.text} is already used by ${seenVips.get(taken.text)}`,
      });
      continue;
    }
    const addresses: { network: string; address: Uint8Array }[] = [];
    const aliases: string[] = [];
    for (const vip of read.vips) {
      seenVips.set(vip.text, key);
      addresses.push({ network, address: vip.bytes });
      aliases.push(`${network}/${vip.text}`);
    }
    const hit = reuse ? memo.mesh.byService.get(obj) : undefined;
    if (hit !== undefined) {
      const value = hit.value as { service: MeshService; model: ServiceModel };
      issues.push(...hit.issues);
      services.push(value.service);
      serviceModels.push(value.model);
      nextByService.set(obj, hit);
      continue;
    }
    if (memo !== undefined) memo.counts.services++;
    changedServices.add(key);
    const firstIssue = issues.length;
    const ports = servicePorts(obj, issues);
    const selector = isRecord(obj.spec?.selector) ? (obj.spec.selector as Record<string, string>) : undefined;
    const model: ServiceModel = { key, namespace, selector, ports };
    serviceModels.push(model);
    const waypoint = serviceWaypoint(obj, namespace);
    const meshService: MeshService = {
      key,
      aliases,
      service: {
        name: obj.metadata.name,
        namespace,
        hostname,
        addresses,
        ports: ports.map((p) => ({
          servicePort: p.port,
          targetPort: typeof p.targetPort === "number" ? p.targetPort : 0,
          ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
        })),
        ...(waypoint === undefined ? {} : { waypoint }),
        ...(ingressUsesWaypoint(obj.metadata.labels, namespaceLabels.get(namespace))
          ? { ingressUseWaypoint: true }
          : {}),
        ...ipFamiliesOf(obj.spec?.ipFamilies),
        ...loadBalancingOf(obj, namespaceAnnotations.get(namespace)),
        // A Service's hostname is its own: of the Services with one hostname, a ztunnel resolves the
        // one of the client's namespace, else the canonical one, so a ServiceEntry another namespace
        // writes for this hostname is not what clients of a third namespace reach by it.
        canonical: true,
      },
    };
    services.push(meshService);
    nextByService.set(obj, { value: { service: meshService, model }, issues: issues.slice(firstIssue) });
  }
  if (reuse) {
    const now = new Set(services.map((s) => s.key));
    for (const { value } of memo.mesh.byService.values()) {
      const { key } = (value as { service: MeshService }).service;
      if (!now.has(key)) changedServices.add(key);
    }
  }
  // ServiceEntry hosts come after the Services, which keep a key or VIP both claim; a ServiceEntry's
  // workloadSelector picks pods as a Service selector does (translate-service-entry.ts).
  const kubeServiceModels = [...serviceModels];
  const kubeServiceByKey = new Map(kubeServiceModels.map((m) => [m.key, m]));
  const entryContext = {
    clusterId,
    network,
    trustDomain,
    issues,
    waypointFor: serviceWaypoint,
    workloadWaypoint,
    seenVips,
    serviceKeys: new Set(services.map((s) => s.key)),
    namespaceAnnotations,
  };
  const entryServices = serviceEntryServices(objects, entryContext);
  services.push(...entryServices.services);
  serviceModels.push(...entryServices.models);
  // Services by namespace and the first label of their selector: a pod looks up only the Services
  // that may select it (a selector without labels selects nothing).
  const serviceOrder = new Map<ServiceModel, number>();
  const servicesByLabel = new Map<string, ServiceModel[]>();
  serviceModels.forEach((model, i) => {
    serviceOrder.set(model, i);
    const first = model.selector === undefined ? undefined : Object.entries(model.selector)[0];
    if (first === undefined) return;
    const indexKey = `${model.namespace}\u0000${first[0]}\u0000${first[1]}`;
    const list = servicesByLabel.get(indexKey);
    if (list === undefined) servicesByLabel.set(indexKey, [model]);
    else list.push(model);
  });
  // Services whose EndpointSlices name a pod by targetRef (Services without a selector, mostly).
  const sliceServices = sliceServicesByPod(objects, kubeServiceByKey, domainSuffix);
  const slicesNaming = (pod: Pick<PodModel, "namespace" | "name" | "uid">): ServiceModel[] | undefined =>
    sliceServices.size === 0
      ? undefined
      : sliceServices.get(podRefKey(pod.namespace, pod.name, pod.uid ?? ""));
  const servicesSelecting = (pod: PodModel): ServiceModel[] => {
    const out: ServiceModel[] = [];
    for (const [k, v] of Object.entries(pod.labels)) {
      for (const model of servicesByLabel.get(`${pod.namespace}\u0000${k}\u0000${v}`) ?? []) {
        if (labelsMatch(model.selector, pod.labels)) out.push(model);
      }
    }
    for (const model of slicesNaming(pod) ?? []) if (!out.includes(model)) out.push(model);
    return out.length > 1 ? out.sort((a, b) => (serviceOrder.get(a) ?? 0) - (serviceOrder.get(b) ?? 0)) : out;
  };

  // Selector AuthorizationPolicies and PeerAuthentications of a workload's labels in its namespace.
  const policyKeysFor = (namespace: string, labels: Record<string, string>): string[] => {
    const policyKeys = new Set<string>();
    for (const sp of selectorPolicies) {
      if (
        (sp.namespace === namespace || sp.namespace === rootNamespace) &&
        policySelects(sp.labels, labels)
      ) {
        policyKeys.add(sp.key);
      }
    }
    const applicable = peerAuthentications.filter((pa) => {
      const sel = paSelector(pa);
      if (pa.metadata.namespace === rootNamespace)
        return sel === undefined && (namespace === rootNamespace || meshWideElsewhere(pa));
      return pa.metadata.namespace === namespace && (sel === undefined || labelsMatch(sel, labels));
    });
    for (const k of effectivePeerAuthenticationKeys(rootNamespace, applicable)) policyKeys.add(k);
    return [...policyKeys].sort();
  };

  const workloadContext: WorkloadContext = {
    clusterId,
    trustDomain,
    network,
    podCidrs,
    namespaceLabels,
    nodeLocality,
    captureSignal: options.captureSignal ?? "dataplane-mode",
    servicesSelecting,
    policyKeysFor,
    workloadWaypoint,
    shared: sharedValues(),
  };

  // Workloads.
  const workloads: MeshWorkload[] = [];
  const nodes = new Map<string, Set<string>>();
  const seenIps = new Map<string, string>();
  const seenUids = new Set<string>();
  const nextByPod = new Map<string, unknown>();
  const addToNode = (node: string, spiffeId: string, captured: boolean): void => {
    if (captured && node !== "") {
      const set = nodes.get(node) ?? new Set<string>();
      set.add(spiffeId);
      nodes.set(node, set);
    } else if (node !== "" && !nodes.has(node)) {
      nodes.set(node, new Set());
    }
  };
  const reused = reuse
    ? (obj: KubeObject): PodWorkload | undefined => {
        const hit = memo.mesh.byPod.get(podSource(obj)) as PodWorkload | undefined;
        if (hit === undefined || hit.object !== obj) return undefined;
        const ref = {
          namespace: obj.metadata.namespace ?? "default",
          name: obj.metadata.name,
          uid: obj.metadata.uid,
          labels: obj.metadata.labels ?? {},
        };
        // The Services its slices name, now and at the last translation.
        if (sliceServices.size > 0 || memo.mesh.sliceServices.size > 0) {
          const key = podRefKey(ref.namespace, ref.name, ref.uid ?? "");
          const before = memo.mesh.sliceServices.get(key) as readonly ServiceModel[] | undefined;
          const now = sliceServices.get(key);
          if (
            (before ?? []).map((m) => m.key).join("\u0000") !== (now ?? []).map((m) => m.key).join("\u0000")
          )
            return undefined;
        }
        if (changedServices.size === 0) return hit;
        for (const key of Object.keys(hit.services)) {
          if (changedServices.has(key)) return undefined;
        }
        const selecting = servicesSelecting(ref as PodModel);
        return selecting.some((model) => changedServices.has(model.key)) ? undefined : hit;
      }
    : undefined;
  for (const item of podsOf(objects, issues, reused)) {
    if (item instanceof PodWorkload) {
      // The same Pod object in the same context: only the checks against the other pods run again.
      const owner = item.hostNetwork ? undefined : seenIps.get(item.ip);
      if (owner !== undefined) {
        issues.push({
          source: item.source,
          message: `${item.where}: pod IP ${item.ip} is already used by ${owner}`,
        });
        continue;
      }
      if (seenUids.has(item.key)) {
        issues.push({ source: item.source, message: `${item.where}: duplicate uid ${item.key}` });
        continue;
      }
      if (!item.hostNetwork) seenIps.set(item.ip, item.where);
      seenUids.add(item.key);
      addToNode(item.node, item.spiffeId, item.captured);
      workloads.push(item);
      nextByPod.set(item.source, item);
      continue;
    }
    const pod = item;
    const address = podAddress(pod, workloadContext);
    if (address === undefined) continue;
    if (typeof address === "string") {
      issues.push({ source: pod.source, message: address });
      continue;
    }
    const owner = pod.hostNetwork ? undefined : seenIps.get(pod.ip);
    if (owner !== undefined) {
      issues.push({
        source: pod.source,
        message: `${address.where}: pod IP ${pod.ip} is already used by ${owner}`,
      });
      continue;
    }
    if (seenUids.has(address.uid)) {
      issues.push({ source: pod.source, message: `${address.where}: duplicate uid ${address.uid}` });
      continue;
    }
    if (!pod.hostNetwork) seenIps.set(pod.ip, address.where);
    seenUids.add(address.uid);
    const result = translatePod(pod, address, workloadContext);
    addToNode(result.node, result.spiffeId, result.captured);
    if (memo !== undefined) memo.counts.workloads++;
    workloads.push(result);
    if (pod.object !== undefined) nextByPod.set(pod.source, result);
  }
  // WorkloadEntries and ServiceEntry endpoints after the pods, which keep an address both claim.
  const refusedEntryIps: string[] = [];
  workloads.push(
    ...entryWorkloads(objects, {
      ...entryContext,
      kubeServices: kubeServiceModels,
      entries: entryServices,
      policyKeys: policyKeysFor,
      seenIps,
      seenUids,
      refusedIps: refusedEntryIps,
    }),
  );
  // The endpoints of Services without pods, from their EndpointSlices.
  workloads.push(
    ...endpointSliceWorkloads(objects, {
      clusterId,
      network,
      trustDomain,
      domainSuffix,
      services: kubeServiceByKey,
      seenUids,
      issues,
    }),
  );
  if (memo !== undefined) {
    memo.mesh = {
      context,
      services: serviceObjects,
      byService: nextByService,
      byPod: nextByPod,
      workloadContext,
      refusedEntryIps,
      sliceServices,
    };
  }

  // The static STRICT policy is sent while any PeerAuthentication exists, whether or not a workload
  // lists it yet. Workloads and policies reach a ztunnel in separate pushes, and a ztunnel skips a
  // listed policy it does not hold: were the policy sent only with the first workload that lists
  // it, that workload would accept plaintext until the policy arrived. Sent ahead, it is in place
  // before any workload can list it, and it stays while one still may.
  if (anyPeerAuthentication) {
    authorizations.set(
      `${rootNamespace}/${STATIC_STRICT_POLICY_NAME}`,
      staticStrictAuthorization(rootNamespace),
    );
  }

  const sortedAuthorizations = new Map(
    [...authorizations].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
  );
  const sortedNodes = new Map(
    [...nodes].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([node, ids]) => [node, [...ids].sort()] as const),
  );
  return {
    workloads: sortByKey(workloads),
    services: sortByKey(services),
    authorizations: sortedAuthorizations,
    nodes: sortedNodes,
    issues,
  };
}
