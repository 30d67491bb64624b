// Workloads of the EndpointSlice endpoints that are not pods, as istiod's ambient index builds them
// (pilot/pkg/serviceregistry/ambient/workloads.go, endpointSlicesBuilder). A Service
// without a selector (the API server's own `kubernetes` Service, a Service whose Endpoints a user or
// an operator writes) has no pods: its endpoints are only in its EndpointSlices, and without them
// ztunnel knows the Service's VIP but nowhere to send its traffic. Each such endpoint is served as a
// workload of that Service alone, in plaintext (nothing is known of what runs there) and as
// `HOST_NETWORK` (its address may be shared, so ztunnel never looks it up by address). An endpoint
// whose `targetRef` is a Pod is skipped: the pod's own workload already lists the Service.
import type { MessageInit, Workload } from "@ambient/xds";
import type { KubeObject, MeshIssue } from "./manifests.js";
import { isRecord } from "./manifests.js";
import { ipv4Bytes } from "./pod-address.js";
import type { MeshWorkload, ServiceModel } from "./translate-mesh.js";

/** The label that names the Service an EndpointSlice belongs to. */
export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

/** What {@link endpointSliceWorkloads} reads besides the slices. */
export interface EndpointSliceContext {
  clusterId: string;
  network: string;
  trustDomain: string;
  domainSuffix: string;
  /** The Kubernetes Services served (not ServiceEntries), by key (`namespace/hostname`). */
  services: ReadonlyMap<string, ServiceModel>;
  /** Workload uids taken so far; the slices' are added. */
  seenUids: Set<string>;
  issues: MeshIssue[];
}

const NO_ALIASES: readonly string[] = Object.freeze([]);

/**
 * A slice's ports as Service ports: each TCP port of the slice (`protocol` defaults to TCP, `name` to
 * the empty string, as the API defines them) joined by name with the Service port it belongs to; the
 * slice's `port` is the target.
 */
function slicePorts(obj: KubeObject, service: ServiceModel): { servicePort: number; targetPort: number }[] {
  const out: { servicePort: number; targetPort: number }[] = [];
  if (!Array.isArray(obj.ports)) return out;
  for (const p of obj.ports) {
    if (!isRecord(p)) continue;
    const { port } = p;
    if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) continue;
    if ((p.protocol ?? "TCP") !== "TCP") continue;
    const name = typeof p.name === "string" ? p.name : "";
    const servicePort = service.ports.find((sp) => (sp.name ?? "") === name);
    if (servicePort !== undefined) out.push({ servicePort: servicePort.port, targetPort: port });
  }
  return out;
}

/**
 * The workloads of every EndpointSlice's non-pod endpoints, in object order. A slice counts when its
 * `kubernetes.io/service-name` label names a served Service of its namespace and its `addressType` is
 * `IPv4` (the control plane serves IPv4 addresses; FQDN slices istiod skips too). One workload per
 * endpoint (uid `<cluster>/discovery.k8s.io/EndpointSlice/<ns>/<slice>/<first address>`), `UNHEALTHY`
 * when `conditions.ready` is false; an endpoint whose first address repeats one of its slice, or with
 * an address that is not IPv4, is skipped (the latter with an issue).
 */
export function endpointSliceWorkloads(
  objects: readonly KubeObject[],
  ctx: EndpointSliceContext,
): MeshWorkload[] {
  const out: MeshWorkload[] = [];
  for (const obj of objects) {
    if (obj.kind !== "EndpointSlice") continue;
    const serviceName = obj.metadata.labels?.[SERVICE_NAME_LABEL];
    if (serviceName === undefined || obj.addressType !== "IPv4" || !Array.isArray(obj.endpoints)) continue;
    const namespace = obj.metadata.namespace ?? "default";
    const serviceKey = `${namespace}/${serviceName}.${namespace}.svc.${ctx.domainSuffix}`;
    const service = ctx.services.get(serviceKey);
    if (service === undefined) continue;
    const where = `EndpointSlice/${namespace}/${obj.metadata.name}`;
    // One port list for every endpoint of the slice: the workloads' messages only read it.
    const services = { [serviceKey]: { ports: slicePorts(obj, service) } };
    const seen = new Set<string>();
    for (const ep of obj.endpoints) {
      if (!isRecord(ep)) continue;
      if (isRecord(ep.targetRef) && ep.targetRef.kind === "Pod") continue;
      const addresses = Array.isArray(ep.addresses) ? ep.addresses : [];
      const first = addresses[0];
      if (typeof first !== "string") continue;
      if (seen.has(first)) continue;
      seen.add(first);
      const bytes: Uint8Array[] = [];
      for (const a of addresses) {
        const b = typeof a === "string" ? ipv4Bytes(a) : undefined;
        if (b === undefined) break;
        bytes.push(b);
      }
      if (bytes.length !== addresses.length) {
        ctx.issues.push({
          source: where,
          message: `endpoint ${JSON.stringify(addresses)} has an address that is not IPv4: not served`,
        });
        continue;
      }
      const uid = `${ctx.clusterId}/discovery.k8s.io/EndpointSlice/${namespace}/${obj.metadata.name}/${first}`;
      if (ctx.seenUids.has(uid)) {
        ctx.issues.push({ source: where, message: `duplicate uid ${uid}: not served` });
        continue;
      }
      ctx.seenUids.add(uid);
      const ready = isRecord(ep.conditions) ? ep.conditions.ready : undefined;
      const workload: MessageInit<Workload> = {
        uid,
        name: obj.metadata.name,
        namespace,
        addresses: bytes,
        network: ctx.network,
        tunnelProtocol: "NONE",
        networkMode: "HOST_NETWORK",
        services,
        status: ready === false ? "UNHEALTHY" : "HEALTHY",
        clusterId: ctx.clusterId,
      };
      if (ctx.trustDomain !== "cluster.local") workload.trustDomain = ctx.trustDomain;
      out.push({ key: uid, aliases: NO_ALIASES, workload });
    }
  }
  return out;
}

/** How a slice's `targetRef` names a pod: `namespace/name/uid`. */
export function podRefKey(namespace: string, name: string, uid: string): string {
  return `${namespace}/${name}/${uid}`;
}

/**
 * The Services a pod is an endpoint of by its EndpointSlices rather than by their selector, by the
 * pod's {@link podRefKey}: a slice labelled `kubernetes.io/service-name` with a served Service, not
 * FQDN, whose endpoint's `targetRef` names the pod (kind, name and uid; the namespace defaults to the
 * slice's). A Service without a selector whose endpoints are pods (a controller or a user writes its
 * slices) then lists those pods, as istiod's ambient index finds them; a Service with a selector
 * lists its pods by the selector in any case.
 */
export function sliceServicesByPod(
  objects: readonly KubeObject[],
  services: ReadonlyMap<string, ServiceModel>,
  domainSuffix: string,
): Map<string, ServiceModel[]> {
  const out = new Map<string, ServiceModel[]>();
  for (const obj of objects) {
    if (obj.kind !== "EndpointSlice" || obj.addressType === "FQDN" || !Array.isArray(obj.endpoints)) continue;
    const serviceName = obj.metadata.labels?.[SERVICE_NAME_LABEL];
    if (serviceName === undefined) continue;
    const namespace = obj.metadata.namespace ?? "default";
    const service = services.get(`${namespace}/${serviceName}.${namespace}.svc.${domainSuffix}`);
    if (service === undefined) continue;
    for (const ep of obj.endpoints) {
      const ref = isRecord(ep) && isRecord(ep.targetRef) ? ep.targetRef : undefined;
      if (ref?.kind !== "Pod" || typeof ref.name !== "string") continue;
      const key = podRefKey(
        typeof ref.namespace === "string" && ref.namespace !== "" ? ref.namespace : namespace,
        ref.name,
        typeof ref.uid === "string" ? ref.uid : "",
      );
      const list = out.get(key);
      if (list === undefined) out.set(key, [service]);
      else if (!list.includes(service)) list.push(service);
    }
  }
  return out;
}
