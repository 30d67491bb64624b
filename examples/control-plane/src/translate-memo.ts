// Results of earlier translations, kept so that a reload re-translates only the objects that changed.
// The translate functions stay pure: with or without a memo they return equal results; the memo only
// lets them hand back the previous result object for an input object that is the same object as last
// time (sources keep unchanged objects as the same objects: the informer cache, the folder's last good
// state), in the same context (every object that is neither a Pod nor a Service, and the options).
import type { KubeObject, MeshIssue } from "./manifests.js";

/** How much work the translations that used a memo did: each counts a translation not reused. */
export interface TranslationCounts {
  /** Pods translated to a workload. */
  workloads: number;
  /** Services translated to an Address service. */
  services: number;
  /** Envoy load assignments (EDS) built. */
  loadAssignments: number;
  /** Envoy listener + cluster pairs built (one per Service port). */
  servicePorts: number;
  /** Envoy route configurations built. */
  routeConfigurations: number;
}

/** @internal One memoized result and the issues its translation reported. */
export interface Memoized<T> {
  readonly value: T;
  readonly issues: readonly MeshIssue[];
}

/**
 * What {@link translateMesh} and `translateEnvoy` keep between calls when given the same memo. Create
 * one per stream of translations (one per control plane) with {@link createTranslationMemo}.
 */
export interface TranslationMemo {
  /** Work done by the translations that used this memo, since it was created. */
  readonly counts: TranslationCounts;
  /** @internal */
  mesh: {
    /** Options and the objects that are neither Pods nor Services, of the last translation. */
    context: readonly unknown[];
    services: readonly KubeObject[];
    byService: Map<KubeObject, Memoized<unknown>>;
    /** Pod id (`Pod/namespace/name`) -> its translation, which names the Pod object it was made from. */
    byPod: Map<string, unknown>;
    /** What the last translation translated each pod against (`WorkloadContext`). */
    workloadContext: unknown;
    /** Addresses of the WorkloadEntries and ServiceEntry endpoints refused as taken, by the last translation. */
    refusedEntryIps: readonly string[];
    /** Pod ref (`namespace/name/uid`) -> the Services its EndpointSlices name, at the last translation. */
    sliceServices: ReadonlyMap<string, readonly unknown[]>;
  };
  /** @internal */
  envoy: {
    /** The route objects, ReferenceGrants and Address services of the last translation. */
    context: readonly unknown[];
    servicePorts: Map<string, unknown>;
    routeConfigurations: Map<string, Memoized<unknown>>;
    loadAssignments: Map<string, { workloads: readonly unknown[]; value: unknown }>;
    /** Service key (`namespace/hostname`) -> its ports as the last translation built them. */
    portsByService: Map<string, readonly unknown[]>;
  };
}

/** An empty memo. */
export function createTranslationMemo(): TranslationMemo {
  return {
    counts: { workloads: 0, services: 0, loadAssignments: 0, servicePorts: 0, routeConfigurations: 0 },
    mesh: {
      context: [],
      services: [],
      byService: new Map(),
      byPod: new Map(),
      workloadContext: undefined,
      refusedEntryIps: [],
      sliceServices: new Map(),
    },
    envoy: {
      context: [],
      servicePorts: new Map(),
      routeConfigurations: new Map(),
      loadAssignments: new Map(),
      portsByService: new Map(),
    },
  };
}

/** @internal True when both lists hold the same values (by identity) in the same order. */
export function sameItems(a: readonly unknown[], b: readonly unknown[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
