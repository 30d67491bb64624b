// On-demand Address answers (ztunnel `XDS_ON_DEMAND`): a ztunnel that does not take every address
// subscribes to a destination by `network/IP` or `namespace/hostname` when it meets it. As istiod
// (`AdditionalPodSubscriptions`), the answer for a Service also carries the workloads behind it, and
// the ztunnel gets the pods of its own node without asking. Pure over the translated mesh.
import { TypeUrl, type XdsRelatedNames } from "@ambient/xds";
import type { MeshConfig, MeshWorkload } from "./translate-mesh.js";

/** The lookups an on-demand answer needs, built once per translated mesh. */
export interface OnDemandIndex {
  /** Service key (`namespace/hostname`) -> keys (uids) of the workloads that list it. */
  readonly workloadsOfService: ReadonlyMap<string, readonly string[]>;
  /** Workload key -> the Service keys it lists. */
  readonly servicesOfWorkload: ReadonlyMap<string, readonly string[]>;
  /** Node name -> keys of the workloads scheduled on it. */
  readonly workloadsOnNode: ReadonlyMap<string, readonly string[]>;
}

const indexes = new WeakMap<MeshConfig, OnDemandIndex>();

function push(map: Map<string, string[]>, key: string, value: string): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

/** The index of `config`, computed on first use and kept while the config object lives. */
export function onDemandIndex(config: Pick<MeshConfig, "workloads">): OnDemandIndex {
  const cached = indexes.get(config as MeshConfig);
  if (cached !== undefined) return cached;
  const workloadsOfService = new Map<string, string[]>();
  const servicesOfWorkload = new Map<string, string[]>();
  const workloadsOnNode = new Map<string, string[]>();
  for (const w of config.workloads) {
    const { services: behind, node } = w.workload;
    const services = Object.keys(behind ?? {}).sort();
    servicesOfWorkload.set(w.key, services);
    for (const s of services) push(workloadsOfService, s, w.key);
    if (typeof node === "string" && node !== "") push(workloadsOnNode, node, w.key);
  }
  const index: OnDemandIndex = { workloadsOfService, servicesOfWorkload, workloadsOnNode };
  indexes.set(config as MeshConfig, index);
  return index;
}

function insertSorted(list: string[], key: string): string[] {
  let at = list.length;
  while (at > 0 && (list[at - 1] as string) > key) at--;
  list.splice(at, 0, key);
  return list;
}

/**
 * Gives `next` the index of `last` updated for the workloads that changed between them (`before`:
 * their versions in `last`, gone or replaced; `after`: their versions in `next`), so a reload from a
 * change set does not make the next on-demand lookup walk every workload. Nothing when `last` has no
 * index yet (no lookup since it was served).
 */
export function carryOnDemandIndex(
  last: Pick<MeshConfig, "workloads">,
  next: Pick<MeshConfig, "workloads">,
  before: readonly MeshWorkload[],
  after: readonly MeshWorkload[],
): void {
  const index = indexes.get(last as MeshConfig);
  if (index === undefined) return;
  const workloadsOfService = new Map(index.workloadsOfService) as Map<string, readonly string[]>;
  const servicesOfWorkload = new Map(index.servicesOfWorkload);
  const workloadsOnNode = new Map(index.workloadsOnNode) as Map<string, readonly string[]>;
  const edit = (map: Map<string, readonly string[]>, key: string, change: (list: string[]) => string[]) => {
    const list = change([...(map.get(key) ?? [])]);
    if (list.length === 0) map.delete(key);
    else map.set(key, list);
  };
  for (const w of before) {
    servicesOfWorkload.delete(w.key);
    const { services, node } = w.workload;
    for (const s of Object.keys(services ?? {})) {
      edit(workloadsOfService, s, (list) => list.filter((k) => k !== w.key));
    }
    if (typeof node === "string" && node !== "") {
      edit(workloadsOnNode, node, (list) => list.filter((k) => k !== w.key));
    }
  }
  for (const w of after) {
    const { services: behind, node } = w.workload;
    const services = Object.keys(behind ?? {}).sort();
    servicesOfWorkload.set(w.key, services);
    for (const s of services) edit(workloadsOfService, s, (list) => insertSorted(list, w.key));
    if (typeof node === "string" && node !== "") {
      edit(workloadsOnNode, node, (list) => insertSorted(list, w.key));
    }
  }
  indexes.set(next as MeshConfig, { workloadsOfService, servicesOfWorkload, workloadsOnNode });
}

/** What {@link relatedAddresses} decides on. */
export interface RelatedAddressesRequest {
  /** Names asked for (keys or `network/IP` aliases), or changed names the stream does not follow. */
  names: readonly string[];
  /** What the stream follows now. */
  subscribed: ReadonlySet<string>;
  /** The node of the client, when known: its pods come along. */
  nodeName?: string | undefined;
  /** The primary name for a name or alias, when the cache has it. */
  resolveName(name: string): string | undefined;
}

/**
 * Workload keys an on-demand client also receives: the workloads behind every Service asked for
 * (by VIP alias or key), a changed workload that backs a Service the client follows, and every
 * workload on the client's node.
 */
export function relatedAddresses(index: OnDemandIndex, request: RelatedAddressesRequest): string[] {
  const out = new Set<string>();
  if (request.nodeName !== undefined) {
    for (const key of index.workloadsOnNode.get(request.nodeName) ?? []) out.add(key);
  }
  for (const name of request.names) {
    const primary = request.resolveName(name) ?? name;
    for (const key of index.workloadsOfService.get(primary) ?? []) out.add(key);
    const services = index.servicesOfWorkload.get(primary);
    if (services?.some((s) => request.subscribed.has(s))) out.add(primary);
  }
  for (const name of request.subscribed) out.delete(name);
  return [...out];
}

/**
 * The xDS server's `related` hook for Addresses, over the mesh in force. The client's node is the
 * one its token names when the authenticator returned one (`identity.node`), else its `NODE_NAME`.
 */
export function relatedAddressesHook(config: () => Pick<MeshConfig, "workloads">): XdsRelatedNames {
  return ({ context, typeUrl, names, subscribed, cache }) => {
    if (typeUrl !== TypeUrl.address) return [];
    const tokenNode = (context.identity as { node?: unknown } | undefined)?.node;
    const metadataNode = context.node?.metadata.NODE_NAME;
    const nodeName =
      typeof tokenNode === "string" ? tokenNode : typeof metadataNode === "string" ? metadataNode : undefined;
    return relatedAddresses(onDemandIndex(config()), {
      names,
      subscribed,
      nodeName,
      resolveName: (name) => cache.resolveName(TypeUrl.address, name),
    });
  };
}
