// `ambient authz check --live`: the same decision, made on what the ztunnels hold (their workloads and
// the wire policies of their `/config_dump`) instead of a manifests folder. Only ztunnel (L4) hops can
// be checked this way: a waypoint's L7 policies are not in a ztunnel's dump.
import { isIP } from "node:net";
import {
  type AuthorizationRequest,
  createAuthorizationEngine,
  type WireAuthorization,
} from "@ambient/policy";
import { type AuthzCheckResult, type AuthzHop, hop } from "./authz-check.js";
import { CliError, checkStringOptions } from "./errors.js";
import type { FetchedConfigDump } from "./ztunnel-config.js";

/** Options of {@link authzCheckLive}. */
export interface AuthzCheckLiveOptions {
  /** The calling workload: `name` or `namespace/name`. */
  from: string;
  /** `<workload|service>:<port>`; prefix `pod/` or `svc/` when both share the name. */
  to: string;
  /** Mesh root namespace. Default `istio-system`. */
  rootNamespace?: string;
}

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

/** IP text as bytes (the admin JSON writes the wire policies' byte addresses as text). */
export function ipBytes(text: string): Uint8Array {
  if (isIP(text) === 4) return Uint8Array.from(text.split(".").map(Number));
  if (isIP(text) !== 6)
    throw new CliError("ERR_ADMIN_RESPONSE", `"${text}" in a /config_dump policy is not an IP`);
  const [head = "", tail] = text.split("::") as [string, string | undefined];
  const hexGroups = (part: string): number[] => {
    if (part === "") return [];
    const groups = part.split(":");
    const out: number[] = [];
    for (const g of groups) {
      if (g.includes(".")) {
        const [a = 0, b = 0, c = 0, d = 0] = g.split(".").map(Number);
        out.push((a << 8) | b, (c << 8) | d);
      } else out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const left = hexGroups(head);
  const right = tail === undefined ? [] : hexGroups(tail);
  const groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

/** A `/config_dump` policy back in the wire form the engine takes (addresses as bytes). */
export function wireFromDump(policy: Record<string, unknown>): WireAuthorization {
  const addresses = (value: unknown) =>
    (Array.isArray(value) ? value : []).filter(isRecord).map((a) => ({
      address: ipBytes(str(a.address)),
      length: typeof a.length === "number" ? a.length : 0,
    }));
  const groups = (Array.isArray(policy.groups) ? policy.groups : []).filter(isRecord).map((g) => ({
    rules: (Array.isArray(g.rules) ? g.rules : []).filter(isRecord).map((r) => ({
      matches: (Array.isArray(r.matches) ? r.matches : []).filter(isRecord).map((m) => ({
        ...m,
        sourceIps: addresses(m.sourceIps),
        notSourceIps: addresses(m.notSourceIps),
        destinationIps: addresses(m.destinationIps),
        notDestinationIps: addresses(m.notDestinationIps),
        // Extensions carry base64 in the dump; they are not evaluated, so they are left out.
        extensions: [],
      })),
    })),
  }));
  return { ...policy, groups, extensions: [] } as unknown as WireAuthorization;
}

interface LiveWorkload {
  json: Json;
  name: string;
  namespace: string;
  ip: string;
  node: string;
}

function workloadsOf(dumps: readonly FetchedConfigDump[]): LiveWorkload[] {
  const byUid = new Map<string, LiveWorkload>();
  for (const d of dumps) {
    for (const w of Array.isArray(d.dump.workloads) ? d.dump.workloads : []) {
      if (!isRecord(w)) continue;
      const key = str(w.uid) || `${str(w.namespace)}/${str(w.name)}`;
      if (byUid.has(key)) continue;
      const ip = Array.isArray(w.addresses) ? str(w.addresses[0]) : "";
      byUid.set(key, { json: w, name: str(w.name), namespace: str(w.namespace), ip, node: str(w.node) });
    }
  }
  return [...byUid.values()];
}

function pick<T extends { name: string; namespace: string }>(items: T[], ref: string, what: string): T[] {
  const [ns, name] = ref.includes("/") ? (ref.split("/", 2) as [string, string]) : [undefined, ref];
  const found = items.filter((i) => i.name === name && (ns === undefined || i.namespace === ns));
  if (found.length > 1) {
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `${what} "${ref}" is in several namespaces: qualify it as namespace/name`,
    );
  }
  return found;
}

/** Addresses that services and workloads name as their waypoint. */
function waypointAddresses(dumps: readonly FetchedConfigDump[]): Set<string> {
  const out = new Set<string>();
  for (const d of dumps) {
    for (const list of [d.dump.services, d.dump.workloads]) {
      for (const x of Array.isArray(list) ? list : []) {
        if (isRecord(x) && isRecord(x.waypoint) && isRecord(x.waypoint.address))
          out.add(str(x.waypoint.address.address));
      }
    }
  }
  return out;
}

function identityOf(w: LiveWorkload, waypoints: ReadonlySet<string>): string | undefined {
  // A workload whose ztunnel does not tunnel its traffic calls in plaintext, without an identity;
  // a waypoint (its own proxy, with its own certificate) is the exception.
  if (str(w.json.tunnelProtocol) !== "HBONE" && !waypoints.has(w.ip)) return undefined;
  const td = str(w.json.trustDomain) || "cluster.local";
  return `spiffe://${td}/ns/${w.namespace}/sa/${str(w.json.serviceAccount) || "default"}`;
}

function label(w: LiveWorkload, waypoints: ReadonlySet<string>): string {
  return `${w.namespace}/${w.name} (${identityOf(w, waypoints) ?? "no mesh identity: plaintext"})`;
}

/**
 * Decides a call with the policies and workloads the ztunnels hold, as the destination's ztunnel would
 * (`destination.workload.authorizationPolicies` from the dump, so selection is ztunnel's own). A service
 * with a waypoint is checked at its endpoints with the waypoint as the caller; the waypoint's own L7
 * policies are not in the dump, and a note says so.
 */
export function authzCheckLive(
  dumps: readonly FetchedConfigDump[],
  options: AuthzCheckLiveOptions,
): AuthzCheckResult {
  checkStringOptions(options, "authzCheckLive", ["from", "to"], ["rootNamespace"]);
  if (!Array.isArray(dumps)) {
    throw new CliError(
      "ERR_CLI_USAGE",
      "authzCheckLive: the dumps must be an array of fetched /config_dump documents",
    );
  }
  const engine = createAuthorizationEngine({ rootNamespace: options.rootNamespace ?? "istio-system" });
  const notes: string[] = [];
  const seenPolicies = new Set<string>();
  for (const d of dumps) {
    for (const p of Array.isArray(d.dump.policies) ? d.dump.policies : []) {
      if (!isRecord(p)) continue;
      const key = `${str(p.namespace)}/${str(p.name)}`;
      if (seenPolicies.has(key)) continue;
      seenPolicies.add(key);
      try {
        engine.setAuthorization(wireFromDump(p));
      } catch (err) {
        notes.push(
          `policy ${key} from the dump was not understood: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
  }
  const workloads = workloadsOf(dumps);
  const waypoints = waypointAddresses(dumps);
  const where = dumps.map((d) => d.admin).join(", ");
  const [source] = pick(workloads, options.from, "workload");
  if (source === undefined) {
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `workload "${options.from}" is not known to the ztunnels at ${where}: check the name`,
    );
  }
  const colon = options.to.lastIndexOf(":");
  const port = Number(options.to.slice(colon + 1));
  if (colon <= 0 || !/^\d{1,5}$/.test(options.to.slice(colon + 1)) || port < 1 || port > 65535) {
    throw new CliError(
      "ERR_CLI_USAGE",
      `--to "${options.to}" needs a port: write it as <pod|service>:<port>, e.g. echo:80`,
    );
  }
  let target = options.to.slice(0, colon);
  let only: "pod" | "svc" | undefined;
  if (/^(pod|svc|service)\//.test(target)) {
    only = target.startsWith("pod/") ? "pod" : "svc";
    target = target.slice(target.indexOf("/") + 1);
  }
  const services: (Json & { name: string; namespace: string })[] = [];
  for (const d of dumps) {
    for (const s of Array.isArray(d.dump.services) ? d.dump.services : []) {
      if (!isRecord(s)) continue;
      const key = `${str(s.namespace)}/${str(s.hostname)}`;
      if (services.some((x) => `${x.namespace}/${str(x.hostname)}` === key)) continue;
      services.push({ ...s, name: str(s.name), namespace: str(s.namespace) });
    }
  }
  const pods = only === "svc" ? [] : pick(workloads, target, "workload");
  const svcs = only === "pod" ? [] : pick(services, target, "service");
  if (pods.length > 0 && svcs.length > 0) {
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `"${target}" names both a workload and a service: write pod/${target}:${port} or svc/${target}:${port}`,
    );
  }
  const hops: AuthzHop[] = [];
  const check = (from: LiveWorkload, to: LiveWorkload, targetPort: number) => {
    const identity = identityOf(from, waypoints);
    const request: AuthorizationRequest = {
      source: identity === undefined ? { ip: from.ip } : { ip: from.ip, identity },
      destination: {
        ip: to.ip,
        port: targetPort,
        workload: {
          namespace: to.namespace,
          name: to.name,
          authorizationPolicies: (Array.isArray(to.json.authorizationPolicies)
            ? to.json.authorizationPolicies
            : []
          ).map(str),
        },
      },
    };
    hops.push(
      hop(engine, request, {
        enforcedBy: `ztunnel (node ${to.node || "unknown"})`,
        destination: `pod ${to.namespace}/${to.name} ${to.ip}:${targetPort}`,
        source: label(from, waypoints),
      }),
    );
  };
  const result = (to: string): AuthzCheckResult => ({
    allowed: hops.every((h) => h.allowed),
    from: `${source.namespace}/${source.name}`,
    to,
    hops,
    notes,
  });
  const [pod] = pods;
  if (pod !== undefined) {
    check(source, pod, port);
    return result(`pod ${pod.namespace}/${pod.name}:${port}`);
  }
  const [service] = svcs;
  if (service === undefined) {
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `workload or service "${target}" is not known to the ztunnels at ${where}: check the name`,
    );
  }
  const key = `${service.namespace}/${str(service.hostname)}`;
  const ports = (Array.isArray(service.ports) ? service.ports : []).filter(isRecord);
  if (!ports.some((p) => p.servicePort === port)) {
    const known = ports.map((p) => String(p.servicePort)).join(", ") || "none";
    throw new CliError(
      "ERR_OBJECT_INCOMPLETE",
      `service ${service.namespace}/${service.name} has no port ${port} (its ports: ${known}): pick one of them`,
    );
  }
  let caller = source;
  const waypointIp =
    isRecord(service.waypoint) && isRecord(service.waypoint.address)
      ? str(service.waypoint.address.address)
      : "";
  if (waypointIp !== "") {
    const waypoint = workloads.find((w) => w.ip === waypointIp);
    notes.push(
      `service ${service.namespace}/${service.name} goes through the waypoint at ${waypointIp}; its L7 policies are not in the ztunnels' /config_dump: check them with --manifests`,
    );
    if (waypoint !== undefined) caller = waypoint;
  }
  const endpoints = workloads.filter((w) => isRecord(w.json.services) && key in w.json.services);
  if (endpoints.length === 0) notes.push(`service ${service.namespace}/${service.name} has no endpoint`);
  for (const e of endpoints) {
    const entry = (e.json.services as Json)[key];
    const mapping = (isRecord(entry) && Array.isArray(entry.ports) ? entry.ports : [])
      .filter(isRecord)
      .find((p) => p.servicePort === port);
    const targetPort =
      typeof mapping?.targetPort === "number" && mapping.targetPort > 0 ? mapping.targetPort : port;
    check(caller, e, targetPort);
  }
  return result(`service ${service.namespace}/${service.name}:${port}`);
}
