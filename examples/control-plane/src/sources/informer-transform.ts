// What the informer cache keeps of an object, decided as it arrives (client-go's informer transform,
// `SetTransform`, which istiod uses to drop managedFields). Pods are most of a cluster's objects and
// most of a Pod's bytes are fields the mesh never reads (container images, env, probes, volumes,
// container statuses), so a Pod is cut to what the translation and the CA's node checks read.
// Metadata is kept whole but for managedFields and kubectl's last-applied copy: the informer needs
// resourceVersion, and labels, annotations and uid are read.
//
// What pods have in common is held once: JSON.parse makes a fresh copy of every string longer than a
// few characters and of every object, for every pod, so equal label maps, annotation maps, owner
// references, slimmed containers and Ready conditions (pods of one ReplicaSet), and repeated strings
// (creation times, host IPs, generated names), are replaced with the first copy seen, kept in a
// bounded table. Shared values are frozen: the cache's objects are read, never written.

import { isRecord } from "../manifests.js";
import type { RawKubeObject } from "./kube-client.js";

const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

/** Bounds of an {@link InternTable}. */
export interface InternLimits {
  /** Most values held (strings and structures together). Default 16,384. */
  entries?: number;
  /** Most characters of keys held: strings, and structures' JSON text. Default 1 Mi. */
  keyChars?: number;
  /** A value whose key is longer is never held (it is returned as it came). Default 1024. */
  maxKeyChars?: number;
}

/**
 * Values that repeat across cached objects, held once. {@link InternTable.string} returns the table's
 * copy of an equal string; {@link InternTable.value} the table's copy of an equal JSON value (same
 * keys in the same order, same strings, numbers, booleans and nulls), frozen. A value is only ever
 * replaced by an equal one, so what readers see does not change; a value that is not plain JSON (an
 * `undefined` member, a function, a non-finite number, a class instance) is returned as it came.
 * When holding one more value would pass a bound, the table is emptied and starts again: the values
 * already handed out stay shared, later ones are collected afresh.
 */
export class InternTable {
  readonly #entries: number;
  readonly #keyChars: number;
  readonly #maxKeyChars: number;
  #strings = new Map<string, string>();
  #values = new Map<string, unknown>();
  #chars = 0;

  constructor(limits: InternLimits = {}) {
    this.#entries = limits.entries ?? 16_384;
    this.#keyChars = limits.keyChars ?? 1 << 20;
    this.#maxKeyChars = limits.maxKeyChars ?? 1024;
  }

  /** Values held now. */
  get size(): number {
    return this.#strings.size + this.#values.size;
  }

  /** Characters of the keys held now. */
  get keyChars(): number {
    return this.#chars;
  }

  /** The table's copy of `s` (`s` itself the first time). */
  string(s: string): string {
    const hit = this.#strings.get(s);
    if (hit !== undefined) return hit;
    if (s.length > this.#maxKeyChars || !this.#room(s.length)) return s;
    this.#strings.set(s, s);
    return s;
  }

  /** The table's copy of a JSON value equal to `value` (`value` itself, frozen, the first time). */
  value<T>(value: T): T {
    const key = jsonKey(value, this.#maxKeyChars);
    if (key === undefined) return value;
    const hit = this.#values.get(key);
    if (hit !== undefined) return hit as T;
    if (!this.#room(key.length)) return value;
    deepFreeze(value);
    this.#values.set(key, value);
    return value;
  }

  /** Makes room for one more key of `chars` characters, emptying the table if needed. */
  #room(chars: number): boolean {
    if (chars > this.#keyChars || this.#entries < 1) return false;
    if (this.size + 1 > this.#entries || this.#chars + chars > this.#keyChars) {
      this.#strings = new Map();
      this.#values = new Map();
      this.#chars = 0;
    }
    this.#chars += chars;
    return true;
  }
}

/**
 * The JSON text of a plain JSON value, or undefined when it is not one or its text would be longer
 * than `max` characters. Two values with the same text are interchangeable for every reader.
 */
function jsonKey(value: unknown, max: number): string | undefined {
  let out = "";
  const walk = (v: unknown): boolean => {
    if (out.length > max) return false;
    if (v === null) out += "null";
    else if (typeof v === "string") out += JSON.stringify(v);
    else if (typeof v === "boolean") out += v ? "true" : "false";
    else if (typeof v === "number") {
      if (!Number.isFinite(v) || Object.is(v, -0)) return false;
      out += String(v);
    } else if (Array.isArray(v)) {
      if (Object.getPrototypeOf(v) !== Array.prototype || Object.keys(v).length !== v.length) return false;
      out += "[";
      for (let i = 0; i < v.length; i++) {
        if (i > 0) out += ",";
        if (!(i in v) || !walk(v[i])) return false;
      }
      out += "]";
    } else if (typeof v === "object") {
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return false;
      if (Object.getOwnPropertySymbols(v).length > 0) return false;
      // A null-prototype object and a plain one read the same but differ in `in` and `toString`.
      out += proto === null ? "N{" : "{";
      let first = true;
      for (const k of Object.keys(v)) {
        if (!first) out += ",";
        first = false;
        out += `${JSON.stringify(k)}:`;
        if (!walk((v as Record<string, unknown>)[k])) return false;
      }
      out += "}";
    } else return false;
    return out.length <= max;
  };
  return walk(value) ? out : undefined;
}

function deepFreeze(value: unknown): void {
  if (typeof value !== "object" || value === null || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const v of Object.values(value)) deepFreeze(v);
}

/** The table {@link transformForCache} uses when given none. */
const defaultTable = new InternTable();

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
/**
 * `status` fields of a Pod that are read, or that a later reader of readiness needs. Not `podIPs`:
 * workloads are single-stack and read `podIP`, which the API server sets to `podIPs[0]`; the list
 * would cost each pod an array, an object and a second copy of its IP.
 */
const POD_STATUS_FIELDS = ["phase", "podIP", "hostIP"] as const;

/**
 * A Pod cut to what the mesh reads, in place: `spec.nodeName`, `spec.serviceAccountName`,
 * `spec.hostNetwork`, each container's `name` and `ports`, the native sidecars' (init containers with
 * `restartPolicy: Always`) `name`, `restartPolicy` and `ports`; `status.phase`, `podIP`, `hostIP` and
 * the `Ready` condition. A field of the wrong type is kept as it came, so validation
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
    // Native sidecars (init containers that keep running) serve ports a Service may name; init
    // containers that run to completion serve none and are not kept.
    const init = spec.initContainers;
    if (Array.isArray(init)) {
      const sidecars = init.flatMap((c: unknown) =>
        isRecord(c) && c.restartPolicy === "Always"
          ? [{ name: c.name, restartPolicy: c.restartPolicy, ...("ports" in c ? { ports: c.ports } : {}) }]
          : [],
      );
      if (sidecars.length > 0) kept.initContainers = sidecars;
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

/** The label that names what manages an EndpointSlice. */
export const SLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by";
/** Its value on the slices Kubernetes' EndpointSlice controller makes for a Service with a selector. */
export const SLICE_CONTROLLER = "endpointslice-controller.k8s.io";

/**
 * An EndpointSlice cut to what the mesh reads, in place. Each endpoint that is not a pod keeps its
 * `addresses`, its `ready` condition and its `targetRef`; a pod's keeps its `targetRef` alone (kind,
 * namespace, name, uid: the pod is served from the Pod, which this names as a Service's endpoint),
 * except in the slices Kubernetes' EndpointSlice controller makes for a Service with a selector,
 * whose pods the selector finds: those are dropped, so such a slice stays equal as its pods come and
 * go. A slice without the `kubernetes.io/service-name` label belongs to no Service and keeps no
 * endpoint. A field of the wrong type is kept as it came, for validation to report.
 */
export function slimEndpointSlice<T>(object: T): T {
  const slice = object as RawKubeObject & { endpoints?: unknown };
  if (!Array.isArray(slice.endpoints)) return object;
  const labels = slice.metadata?.labels;
  if (labels?.["kubernetes.io/service-name"] === undefined) {
    slice.endpoints = [];
    return object;
  }
  const fromSelector = labels[SLICE_MANAGED_BY_LABEL] === SLICE_CONTROLLER;
  const kept: unknown[] = [];
  for (const ep of slice.endpoints as unknown[]) {
    if (!isRecord(ep)) {
      kept.push(ep);
      continue;
    }
    const ref = ep.targetRef;
    if (isRecord(ref) && ref.kind === "Pod") {
      if (fromSelector) continue;
      const podRef: Record<string, unknown> = { kind: "Pod" };
      for (const f of ["namespace", "name", "uid"]) if (f in ref) podRef[f] = ref[f];
      kept.push({ targetRef: podRef });
      continue;
    }
    const slim: Record<string, unknown> = {};
    if ("addresses" in ep) slim.addresses = ep.addresses;
    if (isRecord(ep.conditions)) {
      if ("ready" in ep.conditions) slim.conditions = { ready: ep.conditions.ready };
    } else if ("conditions" in ep) {
      slim.conditions = ep.conditions;
    }
    if ("targetRef" in ep) slim.targetRef = ep.targetRef;
    kept.push(slim);
  }
  slice.endpoints = kept;
  return object;
}

/**
 * A Node cut to its metadata without annotations, in place: the mesh reads a node's locality labels
 * only, and its status (heartbeats, images, conditions) changes every few minutes on every node.
 */
export function slimNode<T>(object: T): T {
  const node = object as RawKubeObject;
  delete node.spec;
  delete node.status;
  if (node.metadata !== undefined) delete node.metadata.annotations;
  return object;
}

/** `record[field]` replaced with the table's copy when it is a string. */
function internString(record: Record<string, unknown>, field: string, table: InternTable): void {
  const v = record[field];
  if (typeof v === "string") record[field] = table.string(v);
}

/** `record[field]` replaced with the table's copy when it is present. */
function internValue(record: Record<string, unknown>, field: string, table: InternTable): void {
  if (record[field] !== undefined) record[field] = table.value(record[field]);
}

/**
 * Replaces the parts of an object that repeat across objects with the table's copies, in place: in
 * metadata the namespace, generated name, creation time, labels, annotations and owner references;
 * in a (slimmed) Pod the node, service account, containers, phase, host IP and conditions; an
 * EndpointSlice's ports.
 */
export function internShared<T>(kind: string, object: T, table: InternTable = defaultTable): T {
  const raw = object as RawKubeObject;
  if (isRecord(raw.metadata)) {
    const meta = raw.metadata as Record<string, unknown>;
    for (const f of ["namespace", "generateName", "creationTimestamp"]) internString(meta, f, table);
    for (const f of ["labels", "annotations", "ownerReferences"]) internValue(meta, f, table);
  }
  // Every slice of a Service has the same few ports.
  if (kind === "EndpointSlice") internValue(raw as Record<string, unknown>, "ports", table);
  if (kind !== "Pod") return object;
  if (isRecord(raw.spec)) {
    for (const f of ["nodeName", "serviceAccountName"]) internString(raw.spec, f, table);
    internValue(raw.spec, "containers", table);
    internValue(raw.spec, "initContainers", table);
  }
  if (isRecord(raw.status)) {
    for (const f of ["phase", "hostIP"]) internString(raw.status, f, table);
    internValue(raw.status, "conditions", table);
  }
  return object;
}

/**
 * What the informer cache keeps of an object of `kind`, from the object as the API server sent it. In
 * place: trimmed, cut if a Pod, an EndpointSlice or a Node, and its repeated parts shared through `table`.
 */
export function transformForCache<T>(kind: string, object: T, table: InternTable = defaultTable): T {
  trimMetadata(object);
  if (kind === "Pod") slimPod(object);
  else if (kind === "EndpointSlice") slimEndpointSlice(object);
  else if (kind === "Node") slimNode(object);
  internShared(kind, object, table);
  return object;
}
