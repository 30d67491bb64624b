// A reload that changes only Pods, applied to the last translation instead of translating every object.
// The changed pods are translated against the context the last full translation built (Services,
// policies, namespaces, nodes); the workload list, the node identities and the load assignments of
// the Services those pods are behind are updated; nothing else is read, so one pod change costs one
// pod's work whatever the size of the mesh. When the result could depend on more than the changed
// pods (an object that is not a Pod; an IP or uid that two pods, or a pod and a WorkloadEntry or
// ServiceEntry endpoint, claim before or after; the demo's Deployments), it declines and the control
// plane translates every object. Both give the same resources (test/incremental-translation.test.ts
// compares them after random changes).
import type { envoy, MessageInit } from "@ambient/xds";
import { objectId } from "./last-good.js";
import type { KubeObject, MeshIssue } from "./manifests.js";
import type { ObjectChange } from "./sources/config-source.js";
import {
  type EnvoyConfig,
  loadAssignment,
  outboundClusterName,
  type ServicePort,
} from "./translate-envoy.js";
import type { TranslationMemo } from "./translate-memo.js";
import {
  type MeshConfig,
  type MeshWorkload,
  PodWorkload,
  podAddress,
  podModel,
  translatePod,
  type WorkloadContext,
} from "./translate-mesh.js";

type ClusterLoadAssignment = MessageInit<envoy.config.endpoint.v3.ClusterLoadAssignment>;

/** What a change set of Pods did to the last translation. */
export interface PodChanges {
  mesh: MeshConfig;
  envoy: EnvoyConfig;
  /** Workloads added or translated again. */
  written: MeshWorkload[];
  /** Keys of workloads no longer served. */
  removed: string[];
  /** The workloads of the last translation that the changes removed or replaced. */
  replaced: MeshWorkload[];
  /** Load assignments built again (their Services' pods changed), by cluster name. */
  loadAssignments: Map<string, ClusterLoadAssignment>;
}

/** The demo's Deployments make pods of their own, which the change sets do not follow. */
const WORKLOAD_KINDS = new Set(["Deployment"]);

interface NodeEntry {
  /** Served pods on the node. */
  pods: number;
  /** Identity -> captured pods with it. */
  ids: Map<string, number>;
}

interface State {
  memo: TranslationMemo;
  ctx: WorkloadContext;
  mesh: MeshConfig;
  envoy: EnvoyConfig;
  /**
   * Pod id -> the translation of each served pod: the memo's `byPod` of the translation this state
   * started from (one map per pod, not two). A later full translation gives the memo another map,
   * and a change set is then declined until `reset`.
   */
  served: Map<string, unknown>;
  /** Pod id -> the Pod object, for the pods that are not served. */
  unserved: Map<string, KubeObject>;
  /** Pod IP -> pods with a valid address that claim it (served or not). */
  ipClaims: Map<string, number>;
  /**
   * Workload uid -> the pods that claim it with a valid address and are not served (refused for an
   * address or uid another has). The other claims are the served workloads, which the sorted
   * workload list finds by key: no map entry per pod.
   */
  unservedUids: Map<string, number>;
  nodes: Map<string, NodeEntry>;
}

function isResult(entry: PodWorkload | KubeObject | undefined): entry is PodWorkload {
  return entry instanceof PodWorkload;
}

function bump(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n === 0) map.delete(key);
  else map.set(key, n);
}

/** Adds to a count and keeps the entry at zero: a delta of zero still names a touched key. */
function add(map: Map<string, number>, key: string, by: number): void {
  map.set(key, (map.get(key) ?? 0) + by);
}

function byKey(a: { key: string }, b: { key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/** Index of the first workload whose key is not below `key` (the list is sorted by key). */
function lowerBound(list: readonly MeshWorkload[], key: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as MeshWorkload).key < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A pod's claim on an IP and a uid, when its address is valid; the check against other pods comes
 * after. A host-network pod claims no IP (its node's pods share the node's).
 */
function claimOf(
  entry: PodWorkload | KubeObject | undefined,
  ctx: WorkloadContext,
): { ip: string | undefined; uid: string } | undefined {
  if (entry === undefined) return undefined;
  if (isResult(entry)) return { ip: entry.hostNetwork ? undefined : entry.ip, uid: entry.key };
  const model = podModel(entry);
  const address = podAddress(model, ctx);
  return address === undefined || typeof address === "string"
    ? undefined
    : { ip: model.hostNetwork ? undefined : model.ip, uid: address.uid };
}

/**
 * Keeps what applying a change set of Pods needs between reloads. `reset` after every full
 * translation; `applyPodChanges` for a reload whose source knows what changed.
 */
export class IncrementalTranslation {
  private state: State | undefined;

  /**
   * Adopts a full translation of `objects` (made with `memo`) as the base of the next change sets. A
   * mesh with Deployments, two Pods with one id, or an entry refused for an address or uid another
   * workload has, is not one change sets are applied to.
   */
  reset(
    objects: readonly KubeObject[],
    mesh: MeshConfig,
    envoyConfig: EnvoyConfig,
    memo: TranslationMemo,
  ): void {
    this.state = undefined;
    const ctx = memo.mesh.workloadContext as WorkloadContext | undefined;
    if (ctx === undefined) return;
    const state: State = {
      memo,
      ctx,
      mesh,
      envoy: envoyConfig,
      served: memo.mesh.byPod,
      unserved: new Map(),
      ipClaims: new Map(),
      unservedUids: new Map(),
      nodes: new Map(),
    };
    const ids = new Set<string>();
    for (const obj of objects) {
      if (WORKLOAD_KINDS.has(obj.kind)) return;
      if (obj.kind !== "Pod") continue;
      const id = objectId(obj);
      if (ids.has(id)) return;
      ids.add(id);
      const result = memo.mesh.byPod.get(id) as PodWorkload | undefined;
      if (result !== undefined && result.object !== obj) return;
      const entry = result ?? obj;
      if (result === undefined) state.unserved.set(id, obj);
      const claim = claimOf(entry, ctx);
      if (claim !== undefined) {
        if (claim.ip !== undefined) bump(state.ipClaims, claim.ip, 1);
        if (result === undefined) bump(state.unservedUids, claim.uid, 1);
      }
      if (result !== undefined) this.addToNode(state, result, 1);
    }
    // WorkloadEntries and ServiceEntry endpoints claim addresses after the pods: a pod change that
    // touches one of theirs is declined like one that touches another pod's. EndpointSlice endpoints
    // (HOST_NETWORK) claim none.
    const podKeys = new Set<string>();
    for (const entry of memo.mesh.byPod.values()) podKeys.add((entry as PodWorkload).key);
    for (const w of mesh.workloads) {
      if (podKeys.has(w.key) || w.workload.networkMode === "HOST_NETWORK") continue;
      for (const address of w.workload.addresses ?? []) bump(state.ipClaims, [...address].join("."), 1);
    }
    // An entry refused for an address someone else has claims it still: a pod change that touches
    // the address is declined, and the entry is served once a full translation finds it free. One
    // refused for a uid another has is not one change sets are applied to.
    for (const ip of memo.mesh.refusedEntryIps) bump(state.ipClaims, ip, 1);
    for (const issue of mesh.issues) {
      if (/^(WorkloadEntry|ServiceEntry)\//.test(issue.source) && /duplicate uid/.test(issue.message)) return;
    }
    this.state = state;
  }

  /**
   * The last translation with `changes` applied, or undefined when they are not Pod changes that can
   * be applied alone (see the file comment) or do not start from the base this instance holds. On
   * success the result is the new base.
   */
  applyPodChanges(changes: readonly ObjectChange[]): PodChanges | undefined {
    const s = this.state;
    if (s === undefined || s.memo.mesh.byPod !== s.served) return undefined;
    // Check and translate first; nothing is modified until every change is known to apply.
    const seen = new Set<string>();
    const ipDelta = new Map<string, number>();
    const uidDelta = new Map<string, number>();
    const planned: {
      change: ObjectChange;
      old: PodWorkload | KubeObject | undefined;
      result: PodWorkload | undefined;
      issue: MeshIssue | undefined;
    }[] = [];
    for (const change of changes) {
      if (change.kind !== "Pod" || seen.has(change.id)) return undefined;
      seen.add(change.id);
      const old = (s.served.get(change.id) as PodWorkload | undefined) ?? s.unserved.get(change.id);
      const oldObject = isResult(old) ? old.object : old;
      if (oldObject !== change.before) return undefined;
      const oldClaim = claimOf(old, s.ctx);
      if (oldClaim !== undefined) {
        if (oldClaim.ip !== undefined) add(ipDelta, oldClaim.ip, -1);
        add(uidDelta, oldClaim.uid, -1);
      }
      let result: PodWorkload | undefined;
      let issue: MeshIssue | undefined;
      if (change.after !== undefined) {
        const model = podModel(change.after);
        const address = podAddress(model, s.ctx);
        // A finished pod is kept as an unserved one without an issue: no claim, no workload.
        if (typeof address === "string") {
          issue = { source: model.source, message: address };
        } else if (address !== undefined) {
          if (!model.hostNetwork) add(ipDelta, model.ip, 1);
          add(uidDelta, address.uid, 1);
          result = translatePod(model, address, s.ctx);
          s.memo.counts.workloads++;
        }
      }
      planned.push({ change, old, result, issue });
    }
    // An address two pods claim is settled by the objects' order, which only a full translation reads.
    for (const [key, d] of ipDelta) {
      const n = s.ipClaims.get(key) ?? 0;
      if (n > 1 || n + d > 1) return undefined;
    }
    for (const [key, d] of uidDelta) {
      const served = s.mesh.workloads[lowerBound(s.mesh.workloads, key)]?.key === key ? 1 : 0;
      const n = served + (s.unservedUids.get(key) ?? 0);
      if (n > 1 || n + d > 1) return undefined;
    }

    try {
      return this.commit(s, planned);
    } catch (err) {
      this.state = undefined;
      throw err;
    }
  }

  private addToNode(s: State, result: PodWorkload, by: number): void {
    if (result.node === "") return;
    let entry = s.nodes.get(result.node);
    if (entry === undefined) {
      entry = { pods: 0, ids: new Map() };
      s.nodes.set(result.node, entry);
    }
    entry.pods += by;
    if (result.captured) bump(entry.ids, result.spiffeId, by);
    if (entry.pods === 0) s.nodes.delete(result.node);
  }

  private commit(
    s: State,
    planned: readonly {
      change: ObjectChange;
      old: PodWorkload | KubeObject | undefined;
      result: PodWorkload | undefined;
      issue: MeshIssue | undefined;
    }[],
  ): PodChanges {
    const workloads = s.mesh.workloads.slice();
    const replaced: MeshWorkload[] = [];
    const written = new Map<string, MeshWorkload>();
    const removed = new Set<string>();
    // Per Service: keys of the workloads that left it (or changed), and the workloads now in it.
    const services = new Map<string, { removed: Set<string>; added: Map<string, MeshWorkload> }>();
    const serviceEdits = (service: string) => {
      let edits = services.get(service);
      if (edits === undefined) {
        edits = { removed: new Set(), added: new Map() };
        services.set(service, edits);
      }
      return edits;
    };
    const nodes = new Set<string>();
    const sources = new Set<string>();
    const newIssues: MeshIssue[] = [];
    for (const { change, old, result, issue } of planned) {
      sources.add(change.id);
      const oldClaim = claimOf(old, s.ctx);
      if (oldClaim !== undefined) {
        if (oldClaim.ip !== undefined) bump(s.ipClaims, oldClaim.ip, -1);
        // A served pod's claim leaves with its workload (below).
        if (!isResult(old)) bump(s.unservedUids, oldClaim.uid, -1);
      }
      if (isResult(old)) {
        const key = old.key;
        const at = lowerBound(workloads, key);
        if (workloads[at]?.key === key) workloads.splice(at, 1);
        for (const service of Object.keys(old.services)) serviceEdits(service).removed.add(key);
        this.addToNode(s, old, -1);
        nodes.add(old.node);
        removed.add(key);
        replaced.push(old);
        written.delete(key);
        s.served.delete(change.id);
      }
      s.unserved.delete(change.id);
      const after = change.after;
      if (after === undefined) continue;
      if (result === undefined) {
        // The object's own id string (the source's), not the change's copy.
        s.unserved.set(objectId(after), after);
        if (issue !== undefined) newIssues.push(issue);
        continue;
      }
      const key = result.key;
      if (!result.hostNetwork) bump(s.ipClaims, result.ip, 1);
      workloads.splice(lowerBound(workloads, key), 0, result);
      for (const service of Object.keys(result.services)) serviceEdits(service).added.set(key, result);
      this.addToNode(s, result, 1);
      nodes.add(result.node);
      removed.delete(key);
      written.set(key, result);
      s.served.set(result.source, result);
    }

    // The identities per node, for the touched nodes; the list stays sorted by node name.
    let nodeMap = s.mesh.nodes;
    const touched = [...nodes].filter((n) => n !== "");
    if (touched.length > 0) {
      nodeMap = new Map(nodeMap);
      let added = false;
      for (const node of touched) {
        const entry = s.nodes.get(node);
        if (entry === undefined) {
          nodeMap.delete(node);
          continue;
        }
        if (!nodeMap.has(node)) added = true;
        nodeMap.set(node, [...entry.ids.keys()].sort());
      }
      if (added) nodeMap = new Map([...nodeMap].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
    }
    const issues = [...s.mesh.issues.filter((i) => !sources.has(i.source)), ...newIssues];
    const mesh: MeshConfig = {
      workloads,
      services: s.mesh.services,
      authorizations: s.mesh.authorizations,
      nodes: nodeMap,
      issues,
    };

    // The endpoints of every port of the Services whose pods changed.
    const loadAssignments = new Map<string, ClusterLoadAssignment>();
    for (const [service, edits] of services) {
      const ports = s.memo.envoy.portsByService.get(service) as readonly ServicePort[] | undefined;
      const first = ports?.[0];
      if (ports === undefined || first === undefined) continue;
      // The workloads behind the Service, as its load assignments were last built (every port of a
      // Service has the same list), without those that left, with those that came, in key order.
      const last = s.memo.envoy.loadAssignments.get(outboundClusterName(first.host, first.port));
      const behind = ((last?.workloads ?? []) as readonly MeshWorkload[]).filter(
        (w) => !edits.removed.has(w.key) && !edits.added.has(w.key),
      );
      behind.push(...edits.added.values());
      behind.sort(byKey);
      for (const sp of ports) {
        const clusterName = outboundClusterName(sp.host, sp.port);
        const assignment = loadAssignment(behind, sp, clusterName);
        s.memo.counts.loadAssignments++;
        s.memo.envoy.loadAssignments.set(clusterName, { workloads: behind, value: assignment });
        loadAssignments.set(clusterName, assignment);
      }
    }
    let envoyConfig = s.envoy;
    if (loadAssignments.size > 0) {
      const clusterLoadAssignments = new Map(s.envoy.clusterLoadAssignments);
      for (const [name, assignment] of loadAssignments) clusterLoadAssignments.set(name, assignment);
      envoyConfig = { ...s.envoy, clusterLoadAssignments };
    }
    s.mesh = mesh;
    s.envoy = envoyConfig;
    return {
      mesh,
      envoy: envoyConfig,
      written: [...written.values()],
      removed: [...removed],
      replaced,
      loadAssignments,
    };
  }
}
