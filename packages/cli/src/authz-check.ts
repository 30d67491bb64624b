// `ambient authz check`: the decision `@ambient/policy` takes for a call between two objects of a
// manifests folder, hop by hop along the path the mesh would use (waypoint, then the destination's
// ztunnel), with the explanation of the policy that decided.
import {
  type AuthorizationDecision,
  type AuthorizationEngine,
  type AuthorizationRequest,
  createAuthorizationEngine,
  type PolicyExplanation,
} from "@ambient/policy";
import { CliError, checkManifestSet, checkStringOptions } from "./errors.js";
import {
  DATAPLANE_MODE_LABEL,
  GATEWAY_NAME_LABEL,
  isRecord,
  type ManifestObject,
  type ManifestSet,
  podIp,
  podServiceAccount,
  podsSelectedBy,
  stringMap,
} from "./manifests.js";
import { type WaypointBinding, waypointBinding } from "./waypoint-binding.js";

/** Options of {@link authzCheck}. */
export interface AuthzCheckOptions {
  /** The calling pod: `name`, `namespace/name` or `name.namespace`. */
  from: string;
  /** `<pod|service>:<port>`; prefix `pod/` or `svc/` when a pod and a service share the name. */
  to: string;
  /** HTTP method, for L7 checks at a waypoint. Default `GET` when the service speaks HTTP. */
  method?: string;
  /** HTTP path, for L7 checks at a waypoint. Default `/`. */
  path?: string;
  /** SPIFFE trust domain of the identities. Default `cluster.local`. */
  trustDomain?: string;
  /** The cluster's DNS domain: a Service's host at a waypoint is `<name>.<namespace>.svc.<it>`. Default `cluster.local`. */
  clusterDomain?: string;
  /** Mesh root namespace. Default `istio-system`. */
  rootNamespace?: string;
}

/** One enforcement point on the way. */
export interface AuthzHop {
  /** Who enforces: `waypoint demo/waypoint` or `ztunnel (node node-b)`. */
  enforcedBy: string;
  /** What is called at this hop, e.g. `pod demo/echo-0 127.10.0.3:8080`. */
  destination: string;
  /** The caller at this hop, e.g. `demo/sleep-0 (spiffe://cluster.local/ns/demo/sa/sleep)`. */
  source: string;
  layer: "L4" | "L7";
  allowed: boolean;
  /** One line: `denied by demo/web-get-from-sleep, rule 0: ...`. */
  explanation: string;
  decision: AuthorizationDecision;
  policies: PolicyExplanation[];
}

/** The answer of {@link authzCheck}. */
export interface AuthzCheckResult {
  /** True when every hop allows. */
  allowed: boolean;
  from: string;
  to: string;
  /** Enforcement points in order; checking stops at the first that denies. */
  hops: AuthzHop[];
  /** Remarks on what the check could not model (e.g. HTTP attributes at a ztunnel). */
  notes: string[];
}

interface Caller {
  pod: ManifestObject;
  ip: string;
  identity: string | undefined;
  label: string;
}

function splitRef(ref: string): { namespace?: string; name: string } {
  if (ref.includes("/")) {
    const [namespace = "", name = ""] = ref.split("/", 2);
    return { namespace, name };
  }
  const dot = ref.indexOf(".");
  if (dot > 0) return { name: ref.slice(0, dot), namespace: ref.slice(dot + 1) };
  return { name: ref };
}

function find(
  set: ManifestSet,
  kind: string,
  ref: { namespace?: string; name: string },
  preferNamespace?: string,
): ManifestObject[] {
  const all = set.objects.filter(
    (o) =>
      o.kind === kind &&
      o.metadata.name === ref.name &&
      (ref.namespace === undefined || o.metadata.namespace === ref.namespace),
  );
  if (all.length > 1 && preferNamespace !== undefined) {
    const preferred = all.filter((o) => o.metadata.namespace === preferNamespace);
    if (preferred.length > 0) return preferred;
  }
  return all;
}

function one(found: ManifestObject[], what: string, dir: string): ManifestObject {
  const [first] = found;
  if (first === undefined) {
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `${what} is not in ${dir}: check the name or pass --manifests <dir>`,
    );
  }
  if (found.length > 1) {
    const where = found.map((o) => o.metadata.namespace).join(", ");
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `${what} is in several namespaces (${where}): qualify it as namespace/name`,
    );
  }
  return first;
}

/** Whether a pod's traffic is captured by its ztunnel (and so carries its SPIFFE identity). */
function inMesh(set: ManifestSet, pod: ManifestObject): boolean {
  // A waypoint is itself a proxy with its own identity, though its ztunnel does not capture it.
  if (pod.metadata.labels[GATEWAY_NAME_LABEL] !== undefined) return true;
  const podMode = pod.metadata.labels[DATAPLANE_MODE_LABEL];
  if (podMode === "none") return false;
  if (podMode === "ambient") return true;
  const ns = set.objects.find((o) => o.kind === "Namespace" && o.metadata.name === pod.metadata.namespace);
  // Without the Namespace object in the folder, the pod is taken to be in the mesh.
  return ns === undefined || ns.metadata.labels[DATAPLANE_MODE_LABEL] === "ambient";
}

function caller(set: ManifestSet, pod: ManifestObject, trustDomain: string): Caller {
  const ip = podIp(pod);
  const name = `${pod.metadata.namespace}/${pod.metadata.name}`;
  if (ip === undefined) {
    throw new CliError(
      "ERR_OBJECT_INCOMPLETE",
      `pod ${name} has no status.podIP in ${pod.file}: add one so the check knows its address`,
    );
  }
  const identity = inMesh(set, pod)
    ? `spiffe://${trustDomain}/ns/${pod.metadata.namespace}/sa/${podServiceAccount(pod)}`
    : undefined;
  return { pod, ip, identity, label: `${name} (${identity ?? "no mesh identity: plaintext"})` };
}

/** The container port a Service's `targetPort` names on `pod`. */
function targetPortOn(pod: ManifestObject, targetPort: unknown, servicePort: number): number | undefined {
  if (typeof targetPort === "number") return targetPort;
  if (targetPort === undefined || targetPort === null) return servicePort;
  if (typeof targetPort === "string" && /^\d+$/.test(targetPort)) return Number(targetPort);
  const containers = Array.isArray(pod.spec?.containers) ? pod.spec.containers : [];
  for (const c of containers) {
    if (!isRecord(c) || !Array.isArray(c.ports)) continue;
    for (const p of c.ports) {
      if (isRecord(p) && p.name === targetPort && typeof p.containerPort === "number") return p.containerPort;
    }
  }
  return undefined;
}

function isHttpPort(port: Record<string, unknown>): boolean {
  const proto = typeof port.appProtocol === "string" ? port.appProtocol.toLowerCase() : "";
  const name = typeof port.name === "string" ? port.name.toLowerCase() : "";
  return /^(http|http2|grpc|h2c|kubernetes\.io\/h2c)$/.test(proto) || /^(http|http2|grpc)(-|$)/.test(name);
}

/** One line from a decision and its per-policy explanation. */
export function explainDecision(
  decision: AuthorizationDecision,
  policies: readonly PolicyExplanation[],
): string {
  if (decision.error !== undefined) return `denied: ${decision.error.message}`;
  const rule = decision.rule === undefined ? "" : `, rule ${decision.rule}`;
  if (decision.allowed) {
    return decision.policy === undefined
      ? `allowed: ${decision.reason}`
      : `allowed by ${decision.policy}${rule}`;
  }
  if (decision.policy !== undefined) {
    const why = policies
      .find((p) => p.policy === decision.policy)
      ?.rules[decision.rule ?? -1]?.replace(/^matched$/, "");
    const action =
      decision.action === "DENY" ? "a DENY rule matched" : `${decision.action ?? "policy"} decided`;
    return `denied by ${decision.policy}${rule}: ${why === undefined || why === "" ? action : why}`;
  }
  // No ALLOW policy matched: say why each one's rules did not.
  const allows = policies.filter((p) => p.action === "ALLOW" && !p.dryRun);
  if (allows.length === 0) return `denied: ${decision.reason}`;
  return allows
    .map((p) => {
      if (p.rules.length === 0) return `denied by ${p.policy}: it has no rules, so it allows nothing`;
      return `denied by ${p.policy}, ${p.rules.map((r, i) => `rule ${i}: ${r}`).join("; ")}`;
    })
    .join("; ");
}

export function hop(
  engine: AuthorizationEngine,
  request: AuthorizationRequest,
  fields: Pick<AuthzHop, "enforcedBy" | "destination" | "source">,
): AuthzHop {
  const decision = engine.evaluate(request);
  let policies: PolicyExplanation[] = [];
  try {
    policies = engine.explain(request);
  } catch {
    // evaluate already denied this request with `error` set; there is nothing more to explain.
  }
  return {
    ...fields,
    layer: decision.layer,
    allowed: decision.allowed,
    explanation: explainDecision(decision, policies),
    decision,
    policies,
  };
}

function podTarget(pod: ManifestObject): NonNullable<AuthorizationRequest["destination"]["workload"]> {
  return { namespace: pod.metadata.namespace, name: pod.metadata.name, labels: pod.metadata.labels };
}

function nodeOf(pod: ManifestObject): string {
  const node = pod.spec?.nodeName;
  return typeof node === "string" && node !== "" ? node : "unknown";
}

/** The policy target that names a waypoint's Gateway. */
function gatewayTarget(binding: Extract<WaypointBinding, { kind: "bound" }>) {
  return {
    kind: "Gateway",
    group: "gateway.networking.k8s.io",
    name: binding.name,
    namespace: binding.namespace,
  };
}

/** Whether `pod` is a pod of the bound waypoint. */
function isPodOf(binding: Extract<WaypointBinding, { kind: "bound" }>, pod: ManifestObject): boolean {
  return (
    pod.metadata.namespace === binding.namespace && pod.metadata.labels[GATEWAY_NAME_LABEL] === binding.name
  );
}

/**
 * Decides a call from one pod to a pod or service of `set`, with the policies of `set`
 * (AuthorizationPolicy and PeerAuthentication; invalid ones are skipped: run `analyze` for them).
 * A service bound to a waypoint (`istio.io/use-waypoint`) is checked at the waypoint (L7, `targetRefs`
 * policies), then every endpoint pod is checked at its ztunnel (L4) with the waypoint as the caller;
 * otherwise each endpoint (or the pod) is checked at its ztunnel with the caller's identity.
 */
export function authzCheck(set: ManifestSet, options: AuthzCheckOptions): AuthzCheckResult {
  checkStringOptions(
    options,
    "authzCheck",
    ["from", "to"],
    ["method", "path", "trustDomain", "clusterDomain", "rootNamespace"],
  );
  checkManifestSet(set, "authzCheck");
  const trustDomain = options.trustDomain ?? "cluster.local";
  const engineOptions = { rootNamespace: options.rootNamespace ?? "istio-system" };
  const ztunnelEngine = createAuthorizationEngine(engineOptions);
  // A waypoint reads principals with the mesh's trust domain bundle, as istiod writes Envoy's rules:
  // cluster.local/... stands for the trust domain; a ztunnel matches them as written.
  const waypointEngine = createAuthorizationEngine({
    ...engineOptions,
    l7Attachment: "waypoint",
    trustDomains: [trustDomain],
  });
  for (const o of set.objects) {
    if (o.kind !== "AuthorizationPolicy" && o.kind !== "PeerAuthentication") continue;
    for (const engine of [ztunnelEngine, waypointEngine]) {
      try {
        engine.apply({
          ...o.raw,
          metadata: { ...(o.raw.metadata as object), namespace: o.metadata.namespace },
        });
      } catch {
        // Invalid policies are not enforced (the control plane refuses them too); analyze reports them.
      }
    }
  }

  const fromRef = splitRef(options.from);
  const source = caller(set, one(find(set, "Pod", fromRef), `pod "${options.from}"`, set.dir), trustDomain);
  const colon = options.to.lastIndexOf(":");
  const port = Number(options.to.slice(colon + 1));
  if (colon <= 0 || !/^\d{1,5}$/.test(options.to.slice(colon + 1)) || port < 1 || port > 65535) {
    throw new CliError(
      "ERR_CLI_USAGE",
      `--to "${options.to}" needs a port: write it as <pod|service>:<port>, e.g. echo:80`,
    );
  }
  let targetText = options.to.slice(0, colon);
  let only: "Pod" | "Service" | undefined;
  if (targetText.startsWith("pod/")) {
    only = "Pod";
    targetText = targetText.slice(4);
  } else if (/^(svc|service)\//.test(targetText)) {
    only = "Service";
    targetText = targetText.slice(targetText.indexOf("/") + 1);
  }
  const ref = splitRef(targetText);
  const sourceNs = source.pod.metadata.namespace;
  const pods = only === "Service" ? [] : find(set, "Pod", ref, sourceNs);
  const services = only === "Pod" ? [] : find(set, "Service", ref, sourceNs);
  if (pods.length > 0 && services.length > 0) {
    throw new CliError(
      "ERR_OBJECT_NOT_FOUND",
      `"${targetText}" names both a pod and a service: write pod/${targetText}:${port} or svc/${targetText}:${port}`,
    );
  }
  const http =
    options.method !== undefined || options.path !== undefined
      ? { method: options.method ?? "GET", path: options.path ?? "/" }
      : undefined;
  const notes: string[] = [];
  const hops: AuthzHop[] = [];
  const result = (toText: string): AuthzCheckResult => ({
    allowed: hops.every((h) => h.allowed),
    from: `${sourceNs}/${source.pod.metadata.name}`,
    to: toText,
    hops,
    notes,
  });
  const l4Note = () => {
    if (http !== undefined)
      notes.push("ztunnel enforces L4 only: --method and --path do not apply at a ztunnel");
  };
  /** Checks `request` at the bound waypoint; returns the waypoint as the caller of the next hop. */
  const atWaypoint = (
    binding: Extract<WaypointBinding, { kind: "bound" }>,
    request: AuthorizationRequest,
    destination: string,
  ): Caller => {
    const waypointPod = one(
      set.objects.filter(
        (o) =>
          o.kind === "Pod" &&
          o.metadata.namespace === binding.namespace &&
          o.metadata.labels[GATEWAY_NAME_LABEL] === binding.name,
      ),
      `a pod of waypoint ${binding.namespace}/${binding.name}`,
      set.dir,
    );
    hops.push(
      hop(waypointEngine, request, {
        enforcedBy: `waypoint ${binding.namespace}/${binding.name}`,
        destination,
        source: source.label,
      }),
    );
    return caller(set, waypointPod, trustDomain);
  };

  if (services.length === 0) {
    const pod = one(pods, `pod or service "${targetText}"`, set.dir);
    const ip = podIp(pod);
    if (ip === undefined) {
      throw new CliError(
        "ERR_OBJECT_INCOMPLETE",
        `pod ${pod.metadata.namespace}/${pod.metadata.name} has no status.podIP in ${pod.file}: add one`,
      );
    }
    const podName = `${pod.metadata.namespace}/${pod.metadata.name}`;
    // A pod with its own waypoint is reached through it, unless the caller is that waypoint.
    const binding = waypointBinding(set, pod, "workload");
    let podCaller = source;
    if (binding.kind === "unbound")
      notes.push(`pod ${podName}: ${binding.reason}: not bound, checked without it`);
    if (binding.kind === "bound" && !isPodOf(binding, source.pod)) {
      const request: AuthorizationRequest = {
        source:
          source.identity === undefined ? { ip: source.ip } : { ip: source.ip, identity: source.identity },
        // Addressed to the workload: only policies attached to the waypoint itself apply there.
        destination: { ip, port, targets: [gatewayTarget(binding)] },
      };
      if (http !== undefined) {
        request.http = { host: `${ip}:${port}`, method: http.method, path: http.path, headers: {} };
      }
      podCaller = atWaypoint(
        binding,
        request,
        `pod ${podName} ${ip}:${port}${http === undefined ? "" : ` (${http.method} ${http.path})`}`,
      );
    } else l4Note();
    if (hops.every((h) => h.allowed)) {
      const request: AuthorizationRequest = {
        source:
          podCaller.identity === undefined
            ? { ip: podCaller.ip }
            : { ip: podCaller.ip, identity: podCaller.identity },
        destination: { ip, port, workload: podTarget(pod) },
      };
      hops.push(
        hop(ztunnelEngine, request, {
          enforcedBy: `ztunnel (node ${nodeOf(pod)})`,
          destination: `pod ${podName} ${ip}:${port}`,
          source: podCaller.label,
        }),
      );
    }
    return result(`pod ${podName}:${port}`);
  }

  const service = one(services, `service "${targetText}"`, set.dir);
  const svcName = `${service.metadata.namespace}/${service.metadata.name}`;
  const ports = Array.isArray(service.spec?.ports) ? service.spec.ports.filter(isRecord) : [];
  const servicePort = ports.find((p) => p.port === port);
  if (servicePort === undefined) {
    const known = ports.map((p) => String(p.port)).join(", ") || "none";
    throw new CliError(
      "ERR_OBJECT_INCOMPLETE",
      `service ${svcName} has no port ${port} (its ports: ${known}): pick one of them`,
    );
  }
  const endpoints = podsSelectedBy(set, service.metadata.namespace, stringMap(service.spec?.selector));
  const clusterIp = typeof service.spec?.clusterIP === "string" ? service.spec.clusterIP : "None";
  const binding = waypointBinding(set, service, "service");
  let caller2 = source;
  if (binding.kind === "unbound")
    notes.push(`service ${svcName}: ${binding.reason}: not bound, checked without it`);
  if (binding.kind === "bound") {
    const firstEndpoint = endpoints[0];
    const vip =
      clusterIp !== "None" && clusterIp !== ""
        ? clusterIp
        : ((firstEndpoint === undefined ? undefined : podIp(firstEndpoint)) ?? "0.0.0.0");
    const l7 = http ?? (isHttpPort(servicePort) ? { method: "GET", path: "/" } : undefined);
    const request: AuthorizationRequest = {
      source:
        source.identity === undefined ? { ip: source.ip } : { ip: source.ip, identity: source.identity },
      destination: {
        ip: vip,
        port,
        targets: [
          gatewayTarget(binding),
          { kind: "Service", group: "", name: service.metadata.name, namespace: service.metadata.namespace },
        ],
      },
    };
    if (l7 !== undefined) {
      request.http = {
        host: `${service.metadata.name}.${service.metadata.namespace}.svc.${options.clusterDomain ?? "cluster.local"}`,
        method: l7.method,
        path: l7.path,
        headers: {},
      };
    }
    caller2 = atWaypoint(
      binding,
      request,
      `service ${svcName} ${vip}:${port}${l7 === undefined ? "" : ` (${l7.method} ${l7.path})`}`,
    );
  } else l4Note();

  if (endpoints.length === 0)
    notes.push(`service ${svcName} selects no pod in ${set.dir}: no endpoint to check`);
  // Endpoints are alternatives: each is checked, unless the waypoint already refused the call.
  const refusedEarlier = hops.some((h) => !h.allowed);
  for (const pod of refusedEarlier ? [] : endpoints) {
    const ip = podIp(pod);
    const target = targetPortOn(pod, servicePort.targetPort, port);
    const podName = `${pod.metadata.namespace}/${pod.metadata.name}`;
    if (ip === undefined || target === undefined) {
      notes.push(
        `endpoint ${podName} skipped: ${ip === undefined ? "no status.podIP" : `no container port named ${String(servicePort.targetPort)}`}`,
      );
      continue;
    }
    const request: AuthorizationRequest = {
      source:
        caller2.identity === undefined ? { ip: caller2.ip } : { ip: caller2.ip, identity: caller2.identity },
      destination: { ip, port: target, workload: podTarget(pod) },
    };
    hops.push(
      hop(ztunnelEngine, request, {
        enforcedBy: `ztunnel (node ${nodeOf(pod)})`,
        destination: `pod ${podName} ${ip}:${target}`,
        source: caller2.label,
      }),
    );
  }
  return result(`service ${svcName}:${port}`);
}
