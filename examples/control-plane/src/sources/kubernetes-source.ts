// The Kubernetes source: one @kubernetes/client-node informer (list, then watch) per resource the mesh
// reads, each cache turned into the same objects the folder source produces. A resource whose CRD is not
// installed is reported and skipped, and looked for again later; an object that fails validation keeps
// its last good version, as in the folder source.
import { isDeepStrictEqual } from "node:util";
import { type KubeConfig, type KubernetesObject, ListWatch, type Watch } from "@kubernetes/client-node";
import { ControlPlaneError } from "../errors.js";
import type { ManifestError } from "../last-good.js";
import { isStandIn, objectId, standInMessage } from "../last-good.js";
import { isRecord, type KubeObject, keepSliceFields } from "../manifests.js";
import { type Logger, noopLogger } from "../telemetry.js";
import { failClosedStandIn, validateManifestObject } from "../translate-mesh.js";
import type { ConfigSnapshot, ConfigSource, ObjectChange } from "./config-source.js";
import {
  InternTable,
  SLICE_CONTROLLER,
  SLICE_MANAGED_BY_LABEL,
  transformForCache,
  trimMetadata,
} from "./informer-transform.js";
import {
  apiVersionOf,
  KubeRequestError,
  type KubeResource,
  listAll,
  type RawKubeObject,
  resourcePath,
  watchRequest,
} from "./kube-client.js";
import { SnapshotOrder } from "./snapshot-order.js";

/** What the mesh reads from a cluster, in translation order. */
export const MESH_RESOURCES: readonly KubeResource[] = [
  { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false },
  { group: "", version: "v1", kind: "Node", plural: "nodes", namespaced: false },
  { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true },
  { group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true },
  {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    namespaced: true,
    // Not the slices Kubernetes makes for a Service with a selector, which change with every pod and
    // name only pods the selector finds anyway.
    labelSelector: `${SLICE_MANAGED_BY_LABEL}!=${SLICE_CONTROLLER}`,
  },
  {
    group: "security.istio.io",
    version: "v1",
    kind: "AuthorizationPolicy",
    plural: "authorizationpolicies",
    namespaced: true,
  },
  {
    group: "security.istio.io",
    version: "v1",
    kind: "PeerAuthentication",
    plural: "peerauthentications",
    namespaced: true,
  },
  {
    group: "security.istio.io",
    version: "v1",
    kind: "RequestAuthentication",
    plural: "requestauthentications",
    namespaced: true,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "GatewayClass",
    plural: "gatewayclasses",
    namespaced: false,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "Gateway",
    plural: "gateways",
    namespaced: true,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "HTTPRoute",
    plural: "httproutes",
    namespaced: true,
  },
  {
    group: "gateway.networking.k8s.io",
    version: "v1",
    kind: "GRPCRoute",
    plural: "grpcroutes",
    namespaced: true,
  },
  {
    // What lets a route's backendRef reach a Service of another namespace. Served as v1beta1 since
    // Gateway API v0.6 (the version istiod reads too).
    group: "gateway.networking.k8s.io",
    version: "v1beta1",
    kind: "ReferenceGrant",
    plural: "referencegrants",
    namespaced: true,
  },
  {
    group: "networking.istio.io",
    version: "v1",
    kind: "ServiceEntry",
    plural: "serviceentries",
    namespaced: true,
  },
  {
    group: "networking.istio.io",
    version: "v1",
    kind: "WorkloadEntry",
    plural: "workloadentries",
    namespaced: true,
  },
];

/** Options of {@link createKubernetesSource}. */
export interface KubernetesSourceOptions {
  /** Where the API server is and how to authenticate (kubeconfig or in-cluster service account). */
  kubeConfig: KubeConfig;
  /** Resources to watch. Default {@link MESH_RESOURCES}. */
  resources?: readonly KubeResource[];
  /** Items per list page (`limit`). Default 500, client-go's pager default. */
  pageSize?: number;
  /**
   * `timeoutSeconds` of each watch, after which the server ends it and the informer resumes from its
   * resourceVersion. Default 300 (client-go picks 5-10 min).
   */
  watchTimeoutSeconds?: number;
  /**
   * A watch that delivered nothing (no event, no bookmark) for this long is dropped and resumed: a
   * half-open connection or a stuck server. Default 150 s (the apiserver sends a bookmark about every
   * minute).
   */
  watchIdleTimeoutMs?: number;
  /**
   * How long a watch request may wait for the response to begin, connection and TLS included; then it
   * is retried. Default 30 s. (A proxy in front of the apiserver that accepts and hangs would otherwise
   * hold the watch, and the start, for good.)
   */
  watchResponseTimeoutMs?: number;
  /** First retry delay after a failed list or watch; doubles up to 30 s. Default 1000 ms. */
  retryDelayMs?: number;
  /** How often a resource that is not installed is looked for again. Default 60 s. */
  missingRetryMs?: number;
  /** Longest wait for the first list of every installed resource. Default 60 s. */
  syncTimeoutMs?: number;
  logger?: Logger;
}

/** A Kubernetes config source, with the informer cache lookups the CA's node checks need. */
export interface KubernetesSource extends ConfigSource {
  /** `group/version/plural` of the resources found not installed at the last attempt. */
  missing(): string[];
  /** A pod from the informer cache. */
  pod(namespace: string, name: string): RawKubeObject | undefined;
  /** Every cached object of a kind (`Gateway`, `Service`...), as the API server sent it. */
  objects(kind: string): RawKubeObject[];
  /** One cached object of a kind. */
  object(kind: string, namespace: string | undefined, name: string): RawKubeObject | undefined;
  /** Pods whose `spec.nodeName` is `node`, from the informer cache. */
  podsOnNode(node: string): RawKubeObject[];
}

interface Cached {
  object: KubeObject;
  problem: string | undefined;
}

/** An object an informer reported, to read again from its cache at the next snapshot. */
interface DirtyObject {
  watch: ResourceWatch;
  name: string;
  namespace: string | undefined;
}

interface ResourceWatch {
  resource: KubeResource;
  informer: ListWatch<KubernetesObject>;
  /** Listed at least once since the last start. */
  listed: boolean;
  missing: boolean;
  lastActivity: number;
  retryMs: number;
  retryTimer: NodeJS.Timeout | undefined;
  /** A stop() done to restart: its abort error is not a failure. */
  restarting: boolean;
}

/**
 * The string entries of a label or annotation map: the map itself when they all are (no copy per
 * object; the translation only reads it), else a copy without the others.
 */
function stringMap(value: unknown): Record<string, string> | undefined {
  if (!isRecord(value)) return undefined;
  let all = true;
  for (const k in value) {
    if (typeof value[k] !== "string") {
      all = false;
      break;
    }
  }
  if (all) return value as Record<string, string>;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

/**
 * The object the translation reads, from what the API server sent: the same fields the folder source
 * keeps from a manifest. `kind` and `apiVersion` come from the resource (list items may lack them).
 */
export function kubeObjectFromApi(resource: KubeResource, raw: RawKubeObject): KubeObject | undefined {
  const meta = raw.metadata;
  if (meta === undefined || typeof meta.name !== "string" || meta.name === "") return undefined;
  const name = meta.name;
  const namespace =
    resource.namespaced && typeof meta.namespace === "string" && meta.namespace !== ""
      ? meta.namespace
      : undefined;
  const uid = typeof meta.uid === "string" && meta.uid !== "" ? meta.uid : undefined;
  const labels = stringMap(meta.labels);
  const annotations = stringMap(meta.annotations);
  const created = typeof meta.creationTimestamp === "string" ? meta.creationTimestamp : undefined;
  const deleting = typeof meta.deletionTimestamp === "string" ? meta.deletionTimestamp : undefined;
  // A pod's usual metadata and object are each built by one literal: properties added one by one
  // past the first few go to a separate backing store (about 50 bytes more per object in Node 20).
  let metadata: KubeObject["metadata"];
  if (
    namespace !== undefined &&
    uid !== undefined &&
    labels !== undefined &&
    created !== undefined &&
    deleting === undefined
  ) {
    metadata =
      annotations === undefined
        ? { name, namespace, uid, labels, creationTimestamp: created }
        : { name, namespace, uid, labels, annotations, creationTimestamp: created };
  } else {
    metadata = { name };
    if (namespace !== undefined) metadata.namespace = namespace;
    if (uid !== undefined) metadata.uid = uid;
    if (labels) metadata.labels = labels;
    if (annotations) metadata.annotations = annotations;
    if (created !== undefined) metadata.creationTimestamp = created;
    if (deleting !== undefined) metadata.deletionTimestamp = deleting;
  }
  // What a pod's workload name is read from (its controller), as the folder keeps them.
  if (resource.kind === "Pod") {
    if (typeof meta.generateName === "string") metadata.generateName = meta.generateName;
    if (Array.isArray(meta.ownerReferences)) {
      metadata.ownerReferences = meta.ownerReferences as NonNullable<
        KubeObject["metadata"]["ownerReferences"]
      >;
    }
  }
  const apiVersion = apiVersionOf(resource);
  const kind = resource.kind;
  // One flat string (`join`), not a chain of pieces: it lives as long as the object.
  const source = [kind, namespace ?? "", name].join("/").replace("//", "/");
  if (isRecord(raw.spec) && isRecord(raw.status)) {
    return { apiVersion, kind, metadata, source, spec: raw.spec, status: raw.status };
  }
  const object: KubeObject = { apiVersion, kind, metadata, source };
  if (isRecord(raw.spec)) object.spec = raw.spec;
  if (isRecord(raw.status)) object.status = raw.status;
  if (kind === "EndpointSlice") keepSliceFields(raw as Record<string, unknown>, object);
  return object;
}

const POD_RESOURCE = MESH_RESOURCES.find((r) => r.kind === "Pod") as KubeResource;

/** True when {@link kubeObjectFromApi} would keep this Pod metadata's fields as they are. */
function readsAsIs(meta: NonNullable<RawKubeObject["metadata"]>): boolean {
  const m = meta as Record<string, unknown>;
  return (
    typeof m.name === "string" &&
    m.name !== "" &&
    typeof m.namespace === "string" &&
    m.namespace !== "" &&
    (m.uid === undefined || (typeof m.uid === "string" && m.uid !== "")) &&
    (m.labels === undefined || (isRecord(m.labels) && stringMap(m.labels) === m.labels)) &&
    (m.annotations === undefined ||
      (isRecord(m.annotations) && stringMap(m.annotations) === m.annotations)) &&
    (m.creationTimestamp === undefined || typeof m.creationTimestamp === "string") &&
    (m.deletionTimestamp === undefined || typeof m.deletionTimestamp === "string")
  );
}

/**
 * A Pod as the informer cache keeps it: one object that is both what the translation reads (the
 * {@link kubeObjectFromApi} object: `apiVersion`, `kind`, `source`) and what the informer and the CA's
 * node checks read (the metadata as the API server sent it, with its resourceVersion; `spec` and
 * `status`). Pods are most of a cluster's objects: one object per pod, not a cached one and a
 * converted one. A Pod without a name is returned as it came (nothing translates it).
 */
export function podForCache(raw: RawKubeObject): RawKubeObject {
  const meta = raw.metadata;
  if (meta !== undefined && readsAsIs(meta) && isRecord(raw.spec) && isRecord(raw.status)) {
    // `join` makes one flat string: a template literal leaves a chain of pieces, and this string
    // lives as long as the pod (it is the pod's id in every index).
    const source = ["Pod", meta.namespace, meta.name].join("/").replace("//", "/");
    const pod: KubeObject = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: meta as KubeObject["metadata"],
      source,
      spec: raw.spec,
      status: raw.status,
    };
    return pod as unknown as RawKubeObject;
  }
  const object = kubeObjectFromApi(POD_RESOURCE, raw);
  if (object === undefined) return raw;
  // Malformed metadata: the checked fields as the translation reads them, the others as they came.
  const metadata: Record<string, unknown> = { ...meta };
  for (const key of [
    "namespace",
    "uid",
    "labels",
    "annotations",
    "creationTimestamp",
    "deletionTimestamp",
  ] as const) {
    const value = object.metadata[key];
    if (value === undefined) delete metadata[key];
    else metadata[key] = value;
  }
  object.metadata = metadata as KubeObject["metadata"];
  return object as unknown as RawKubeObject;
}

/** True for an object {@link podForCache} made (every named Pod in the cache is one). */
function isCachedPod(raw: unknown): raw is KubeObject {
  return (
    typeof (raw as Partial<KubeObject>).source === "string" && (raw as Partial<KubeObject>).kind === "Pod"
  );
}

/**
 * Drops what the informer cache would hold for nothing: `metadata.managedFields` and kubectl's
 * last-applied copy of the object. In place. Pods are cut further as they arrive (`transformForCache`).
 */
export const trimForCache: <T>(object: T) => T = trimMetadata;

/**
 * An object the translation would read nothing from, so not converted or served: an EndpointSlice
 * left without endpoints by the cache's cut (the slices of Services with a selector).
 */
function omitted(resource: KubeResource, raw: RawKubeObject): boolean {
  if (resource.kind !== "EndpointSlice") return false;
  const endpoints = (raw as { endpoints?: unknown }).endpoints;
  return Array.isArray(endpoints) && endpoints.length === 0;
}

function resourceName(r: KubeResource): string {
  return `${apiVersionOf(r)}/${r.plural}`;
}

/**
 * Starts one informer per resource and resolves once each installed resource is listed (resources
 * that answer 404 are reported as not installed and skipped). Rejects with `ERR_CONTROL_PLANE_CONFIG`
 * when an installed resource cannot be listed within `syncTimeoutMs` (no access, no server).
 */
export async function createKubernetesSource(options: KubernetesSourceOptions): Promise<KubernetesSource> {
  const kc = options.kubeConfig;
  const logger = options.logger ?? noopLogger;
  const resources = options.resources ?? MESH_RESOURCES;
  const pageSize = options.pageSize ?? 500;
  const watchTimeoutSeconds = options.watchTimeoutSeconds ?? 300;
  const idleTimeoutMs = options.watchIdleTimeoutMs ?? 150_000;
  const watchResponseTimeoutMs = options.watchResponseTimeoutMs ?? 30_000;
  const baseRetryMs = options.retryDelayMs ?? 1000;
  const missingRetryMs = options.missingRetryMs ?? 60_000;
  const syncTimeoutMs = options.syncTimeoutMs ?? 60_000;
  const rank = new Map(resources.map((r, i) => [r, i] as const));

  let closed = false;
  let onChange: (() => void) | undefined;
  // Set when a change was reported and no snapshot has been taken since: one reload covers a burst.
  let notified = false;
  let changedSinceSnapshot = false;
  // The object each cached one converts to (but Pods: the cache keeps them converted, `podForCache`),
  // and the validation problem of those that have one: an object that passes costs no entry here.
  const converted = new WeakMap<object, KubeObject>();
  const invalid = new WeakMap<object, string>();
  // What the control plane accepted last (the objects served), and whether it accepted anything yet:
  // until then every snapshot is a full one.
  let lastGood = new Map<string, KubeObject>();
  /** The last good version of `id`: what was served, unless that was a stand-in. */
  const goodVersion = (id: string): KubeObject | undefined => {
    const last = lastGood.get(id);
    return last !== undefined && !isStandIn(last) ? last : undefined;
  };
  // One stand-in per invalid object read, so an unchanged object is no change.
  const standIns = new WeakMap<KubeObject, KubeObject | null>();
  const standInOf = (object: KubeObject): KubeObject | undefined => {
    let standIn = standIns.get(object);
    if (standIn === undefined) {
      standIn = failClosedStandIn(object) ?? null;
      standIns.set(object, standIn);
    }
    return standIn ?? undefined;
  };
  let baseline = false;
  // Objects an informer reported since the last snapshot, and those of the last snapshot not yet
  // accepted: the next snapshot's change set is read from the informer caches for these ids.
  let dirty = new Map<string, DirtyObject>();
  let pending = new Map<string, DirtyObject>();
  // Objects that fail validation, with the error reported for each.
  const problems = new Map<string, ManifestError>();
  let snapshots = 0;
  const snapshotOrder = new SnapshotOrder();
  // What the cached objects have in common (labels, containers, creation times...), held once.
  const shared = new InternTable();
  // Pods by `spec.nodeName`, for the CA's node checks: the cached objects themselves, one set entry
  // per pod. An update or a watch's delete names the new object; the cached one it replaces is read
  // from the informer just before the informer applies the event or the list (`replaced`), so no map
  // by name is kept beside the informer's own.
  const podsByNode = new Map<string, Set<RawKubeObject>>();
  const replaced = new WeakMap<object, RawKubeObject>();

  const changed = (): void => {
    changedSinceSnapshot = true;
    if (onChange === undefined || notified || closed) return;
    notified = true;
    // Once per turn of the event loop: a relist's thousands of callbacks make one reload.
    setImmediate(() => {
      if (!closed) onChange?.();
    });
  };

  const nodeOf = (pod: RawKubeObject): string | undefined => {
    const node = pod.spec?.nodeName;
    return typeof node === "string" && node !== "" ? node : undefined;
  };
  const indexPod = (pod: RawKubeObject): void => {
    const node = nodeOf(pod);
    if (node === undefined) return;
    let pods = podsByNode.get(node);
    if (pods === undefined) {
      pods = new Set();
      podsByNode.set(node, pods);
    }
    pods.add(pod);
  };
  const unindexPod = (pod: RawKubeObject): void => {
    const node = nodeOf(pod);
    const pods = node === undefined ? undefined : podsByNode.get(node);
    if (pods?.delete(pod) && pods.size === 0) podsByNode.delete(node as string);
  };
  // What the informer cache keeps of an object as it arrives, called before the informer applies the
  // event or the list: a Pod is validated once, here, and the cached Pod it replaces remembered.
  const forCache = (w: ResourceWatch, raw: RawKubeObject): RawKubeObject => {
    transformForCache(w.resource.kind, raw, shared);
    if (w.resource.kind !== "Pod") {
      keepIfUnchanged(w, raw);
      return raw;
    }
    const pod = podForCache(raw);
    if (!isCachedPod(pod)) return pod;
    const problem = validateManifestObject(pod);
    if (problem !== undefined) invalid.set(pod, problem);
    const old = w.informer.get(pod.metadata.name, pod.metadata.namespace);
    if (old !== undefined && old !== pod) replaced.set(pod, old as RawKubeObject);
    return pod;
  };

  // Updates that change nothing the translation reads: a Node's heartbeat (its status is not kept), an
  // EndpointSlice's zones, hints or serving conditions (not kept), a slice that stays without
  // endpoints, a new resourceVersion alone. Such an object converts to the object already served,
  // which it keeps, and reports no change: no reload, and the translation's memo still sees the same
  // objects.
  const unchanged = new WeakSet<object>();
  const keepIfUnchanged = (w: ResourceWatch, raw: RawKubeObject): void => {
    const name = raw.metadata?.name;
    if (typeof name !== "string") return;
    const old = w.informer.get(name, w.resource.namespaced ? raw.metadata?.namespace : undefined);
    if (old !== undefined && omitted(w.resource, raw) && omitted(w.resource, old as RawKubeObject)) {
      unchanged.add(raw);
      return;
    }
    const before = old === undefined ? undefined : converted.get(old);
    if (before === undefined) return;
    const after = kubeObjectFromApi(w.resource, raw);
    if (after === undefined || !isDeepStrictEqual(after, before)) return;
    converted.set(raw, before);
    const problem = invalid.get(old as object);
    if (problem !== undefined) invalid.set(raw, problem);
    unchanged.add(raw);
  };

  const watches: ResourceWatch[] = resources.map((resource) => {
    const path = resourcePath(resource);
    let w: ResourceWatch;
    // Every line of the watch (events and bookmarks) proves the connection alive.
    const tracked = {
      watch: (
        watchPath: string,
        query: Record<string, string | number | boolean | undefined>,
        callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
        done: (err: unknown) => void,
      ) => {
        w.lastActivity = Date.now();
        return watchRequest(
          kc,
          watchPath,
          query,
          (phase, obj, raw) => {
            w.lastActivity = Date.now();
            w.retryMs = baseRetryMs;
            callback(phase, forCache(w, obj as RawKubeObject), raw);
          },
          done,
          watchResponseTimeoutMs,
        );
      },
    } as unknown as Watch;
    const selector =
      resource.labelSelector === undefined
        ? ""
        : `&${new URLSearchParams({ labelSelector: resource.labelSelector })}`;
    const informer = new ListWatch<KubernetesObject>(
      `${path}?allowWatchBookmarks=true&timeoutSeconds=${watchTimeoutSeconds}${selector}`,
      tracked,
      async () => {
        const list = await listAll(kc, path, pageSize, resource.labelSelector);
        list.items = list.items.map((item) => forCache(w, item));
        w.listed = true;
        if (w.missing) logger.info({ resource: resourceName(resource) }, "kubernetes resource now installed");
        w.missing = false;
        return list as unknown as never;
      },
      false,
    );
    w = {
      resource,
      informer,
      listed: false,
      missing: false,
      lastActivity: Date.now(),
      retryMs: baseRetryMs,
      retryTimer: undefined,
      restarting: false,
    };
    const onObject = (removed: boolean) => (obj: KubernetesObject) => {
      if (!removed && unchanged.has(obj)) return;
      if (resource.kind === "Pod") {
        // A relist's delete names the cached object itself; an update or a watch's delete the new one.
        const old = replaced.get(obj) ?? (removed ? (obj as RawKubeObject) : undefined);
        if (old !== undefined) unindexPod(old);
        if (!removed) indexPod(obj as RawKubeObject);
      }
      const name = obj.metadata?.name;
      if (typeof name === "string" && name !== "") {
        const namespace = resource.namespaced ? obj.metadata?.namespace : undefined;
        const id = `${resource.kind}/${namespace === undefined || namespace === "" ? "default" : namespace}/${name}`;
        dirty.set(id, { watch: w, name, namespace });
      }
      changed();
    };
    informer.on("add", onObject(false));
    informer.on("update", onObject(false));
    informer.on("delete", onObject(true));
    informer.on("error", (err: unknown) => {
      if (closed) return;
      if (w.restarting && (err as { name?: string })?.name === "AbortError") return;
      const status =
        err instanceof KubeRequestError ? err.statusCode : (err as { statusCode?: number }).statusCode;
      if (status === 404 && !w.listed) {
        if (!w.missing) {
          logger.warn(
            { resource: resourceName(resource) },
            "kubernetes resource not installed: skipped, looked for again later",
          );
        }
        w.missing = true;
        retry(w, missingRetryMs);
        return;
      }
      logger.warn(
        {
          resource: resourceName(resource),
          err: err instanceof Error ? err.message : String(err),
          retryMs: w.retryMs,
        },
        "kubernetes list/watch failed: retrying",
      );
      retry(w, w.retryMs);
      w.retryMs = Math.min(w.retryMs * 2, 30_000);
    });
    return w;
  });

  /** Starts `w` again. The informer reports its failures as "error" events; one it throws instead is retried the same way. */
  function restart(w: ResourceWatch): Promise<void> {
    return w.informer.start().catch((err: unknown) => {
      if (closed) return;
      logger.warn(
        { resource: resourceName(w.resource), err: err instanceof Error ? err.message : String(err) },
        "kubernetes list/watch failed: retrying",
      );
      retry(w, w.retryMs);
      w.retryMs = Math.min(w.retryMs * 2, 30_000);
    });
  }

  function retry(w: ResourceWatch, delayMs: number): void {
    clearTimeout(w.retryTimer);
    w.retryTimer = setTimeout(() => {
      w.retryTimer = undefined;
      if (!closed) void restart(w);
    }, delayMs);
    w.retryTimer.unref?.();
  }

  // Drops watches that went silent; the informer resumes from its resourceVersion.
  const idleCheck = setInterval(
    () => {
      const now = Date.now();
      for (const w of watches) {
        if (w.missing || w.retryTimer !== undefined || now - w.lastActivity < idleTimeoutMs) continue;
        logger.warn({ resource: resourceName(w.resource) }, "kubernetes watch idle: reconnecting");
        w.lastActivity = now;
        w.restarting = true;
        void w.informer
          .stop()
          .then(() => (closed ? undefined : restart(w)))
          .finally(() => {
            w.restarting = false;
          });
      }
    },
    Math.max(10, Math.min(idleTimeoutMs / 4, 5000)),
  );
  idleCheck.unref();

  await Promise.all(watches.map((w) => w.informer.start()));
  const deadline = Date.now() + syncTimeoutMs;
  while (watches.some((w) => !w.listed && !w.missing)) {
    if (Date.now() > deadline) {
      closed = true;
      clearInterval(idleCheck);
      for (const w of watches) clearTimeout(w.retryTimer);
      await Promise.all(watches.map((w) => w.informer.stop()));
      const pending = watches.filter((w) => !w.listed && !w.missing).map((w) => resourceName(w.resource));
      throw new ControlPlaneError(
        "ERR_CONTROL_PLANE_CONFIG",
        `cannot list ${pending.join(", ")} from ${kc.getCurrentCluster()?.server ?? "the cluster"} within ${syncTimeoutMs} ms`,
        { pending },
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }

  const convert = (resource: KubeResource, raw: KubernetesObject): Cached | undefined => {
    if (resource.kind === "Pod") {
      return isCachedPod(raw) ? { object: raw, problem: invalid.get(raw) } : undefined;
    }
    if (omitted(resource, raw as RawKubeObject)) return undefined;
    let object = converted.get(raw);
    if (object === undefined) {
      object = kubeObjectFromApi(resource, raw as RawKubeObject);
      if (object === undefined) return undefined;
      const problem = validateManifestObject(object);
      converted.set(raw, object);
      if (problem !== undefined) invalid.set(raw, problem);
      return { object, problem };
    }
    return { object, problem: invalid.get(raw) };
  };

  const server = kc.getCurrentCluster()?.server ?? "";
  return {
    description: `kubernetes ${server}`,
    async snapshot(): Promise<ConfigSnapshot> {
      notified = false;
      changedSinceSnapshot = false;
      const token = ++snapshots;
      const ids = pending;
      for (const [id, d] of dirty) ids.set(id, d);
      dirty = new Map();
      pending = ids;
      const problemOf = (id: string, cached: Cached, served: KubeObject | undefined): ManifestError => {
        const last = goodVersion(id);
        return {
          file: "kubernetes",
          object: id,
          message: `${cached.problem}: ${last !== undefined ? "serving its last good version" : served !== undefined ? standInMessage(cached.object) : "not served"}`,
          keeping: last === undefined ? [] : [id],
        };
      };
      // What an object that fails validation is served as: its last good version, else its stand-in.
      const servedFor = (id: string, cached: Cached): KubeObject | undefined =>
        goodVersion(id) ?? standInOf(cached.object);
      // Every object, in translation order, with the objects that fail validation at their last good
      // version (or left out).
      const walk = (): { objects: KubeObject[]; served: Map<string, KubeObject> } => {
        const entries: { rank: number; created: string; id: string; object: KubeObject }[] = [];
        const served = new Map<string, KubeObject>();
        problems.clear();
        for (const w of watches) {
          for (const raw of w.informer.list()) {
            const cached = convert(w.resource, raw);
            if (cached === undefined) continue;
            const id = objectId(cached.object);
            let object: KubeObject | undefined = cached.object;
            if (cached.problem !== undefined) {
              object = servedFor(id, cached);
              problems.set(id, problemOf(id, cached, object));
            }
            if (object === undefined) continue;
            served.set(id, object);
            entries.push({
              rank: rank.get(w.resource) ?? 0,
              created: object.metadata.creationTimestamp ?? "",
              id: objectId(object),
              object,
            });
          }
        }
        // Older objects first, as istiod settles conflicts (two pods on one IP): by creation time, then
        // name. The last order is reused when no key changed (most reloads).
        const order = snapshotOrder.sort(entries);
        return { objects: order.map((i) => (entries[i] as (typeof entries)[number]).object), served };
      };
      const settled = (): void => {
        if (token === snapshots) pending = new Map();
      };

      if (!baseline) {
        const { objects, served } = walk();
        return {
          objects,
          errors: [...problems.values()],
          accept: () => {
            lastGood = served;
            baseline = true;
            settled();
          },
        };
      }
      // What changed since the accepted snapshot, from the informer caches: O(change).
      const changes: ObjectChange[] = [];
      for (const [id, { watch: w, name, namespace }] of ids) {
        const raw = w.informer.get(name, namespace);
        const cached = raw === undefined ? undefined : convert(w.resource, raw);
        let after = cached?.object;
        if (cached?.problem !== undefined) {
          after = servedFor(id, cached);
          problems.set(id, problemOf(id, cached, after));
        } else {
          problems.delete(id);
        }
        const before = lastGood.get(id);
        if (after !== before) changes.push({ id, kind: w.resource.kind, before, after });
      }
      let objects: KubeObject[] | undefined;
      return {
        get objects() {
          objects ??= walk().objects;
          return objects;
        },
        changes,
        errors: [...problems.values()],
        accept: () => {
          for (const { id, after } of changes) {
            if (after === undefined) lastGood.delete(id);
            else lastGood.set(id, after);
          }
          settled();
        },
      };
    },
    start(callback) {
      if (onChange !== undefined || closed) return;
      onChange = callback;
      // Changes between the first snapshot and now.
      if (changedSinceSnapshot) {
        changedSinceSnapshot = false;
        changed();
      }
    },
    missing: () => watches.filter((w) => w.missing).map((w) => resourceName(w.resource)),
    pod(namespace, name) {
      const pods = watches.find((w) => w.resource.kind === "Pod");
      return pods?.informer.get(name, namespace) as RawKubeObject | undefined;
    },
    objects(kind) {
      const w = watches.find((x) => x.resource.kind === kind);
      return (w?.informer.list() ?? []) as RawKubeObject[];
    },
    object(kind, namespace, name) {
      const w = watches.find((x) => x.resource.kind === kind);
      return w?.informer.get(name, namespace) as RawKubeObject | undefined;
    },
    podsOnNode(node) {
      return [...(podsByNode.get(node) ?? [])];
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(idleCheck);
      for (const w of watches) clearTimeout(w.retryTimer);
      await Promise.all(watches.map((w) => w.informer.stop()));
    },
  };
}
