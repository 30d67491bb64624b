// What the informer cache keeps of an object, decided as it arrives (client-go's informer transform,
// `SetTransform`, which istiod uses to drop managedFields). Pods are most of a cluster's objects and
// most of a Pod's bytes are fields the mesh never reads (container images, env, probes, volumes,
// container statuses), so a Pod is cut to what the translation and the CA's node checks read.
// Metadata is kept whole but for managedFields and kubectl's last-applied copy: the informer needs
// resourceVersion, and labels, annotations and uid are read.
import type { RawKubeObject } from "./kube-client.js";

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Drops what the informer cache would hold for nothing: `metadata.managedFields` and kubectl's
 * last-applied copy of the object, often most of an object's bytes on a real cluster. In place.
 */
export function trimMetadata<T>(object: T): T {
  const meta = (object as RawKubeObject | undefined)?.metadata;
  if (meta === undefined) return object;
  delete meta.managedFields;
  if (meta.annotations !== undefined && LAST_APPLIED in meta.annotations) {
    delete meta.annotations[LAST_APPLIED];
    if (Object.keys(meta.annotations).length === 0) delete meta.annotations;
  }
  return object;
}

/** `spec` fields of a Pod that are read: the workload's node and identity, and the declared ports. */
const POD_SPEC_FIELDS = ["nodeName", "serviceAccountName", "hostNetwork"] as const;
/** `status` fields of a Pod that are read, or that a later reader of readiness needs. */
const POD_STATUS_FIELDS = ["phase", "podIP", "podIPs", "hostIP"] as const;

/**
 * A Pod cut to what the mesh reads, in place: `spec.nodeName`, `spec.serviceAccountName`,
 * `spec.hostNetwork`, each container's `name` and `ports`; `status.phase`, `podIP`, `podIPs`,
 * `hostIP` and the `Ready` condition. A field of the wrong type is kept as it came, so validation
 * reports it exactly as it would without the cut.
 */
export function slimPod<T>(object: T): T {
  const pod = object as RawKubeObject;
  if (isRecord(pod.spec)) {
    const spec = pod.spec;
    const kept: Record<string, unknown> = {};
    for (const f of POD_SPEC_FIELDS) if (f in spec) kept[f] = spec[f];
    const containers = spec.containers;
    if (Array.isArray(containers)) {
      kept.containers = containers.map((c: unknown) => {
        if (!isRecord(c)) return c;
        const slim: Record<string, unknown> = {};
        if ("name" in c) slim.name = c.name;
        if ("ports" in c) slim.ports = c.ports;
        return slim;
      });
    } else if ("containers" in spec) {
      kept.containers = containers;
    }
    pod.spec = kept;
  }
  if (isRecord(pod.status)) {
    const status = pod.status;
    const kept: Record<string, unknown> = {};
    for (const f of POD_STATUS_FIELDS) if (f in status) kept[f] = status[f];
    if (Array.isArray(status.conditions)) {
      const ready = status.conditions.filter((c: unknown) => isRecord(c) && c.type === "Ready");
      if (ready.length > 0) kept.conditions = ready;
    }
    pod.status = kept;
  }
  return object;
}

/** What the informer cache keeps of an object of `kind`, from the object as the API server sent it. In place. */
export function transformForCache<T>(kind: string, object: T): T {
  trimMetadata(object);
  if (kind === "Pod") slimPod(object);
  return object;
}
