/**
 * The waypoint's configuration, all of it from the control plane over one Delta xDS stream: Address
 * resources (which Services are bound to this waypoint, and their endpoints), an Envoy
 * RouteConfiguration per bound Service or ServiceEntry host port (`inbound-vip|<port>|http|<host>`), and the L7 policies
 * (`ambient.waypoint.v1.WaypointPolicy`). A resource the waypoint cannot use is NACKed on its own, by
 * name: the rest of the response is put in force at once, and the bad one keeps its last good version.
 * One the waypoint never read stands for the strictest thing it could mean (see {@link WaypointXdsConfig}).
 */
import { addressProblem, ipFromBytes, type Logger, type WorkloadStore } from "@ambient/example-ztunnel";
import { type AuthorizationEngine, validateResource } from "@ambient/policy";
import {
  type CompiledEnvoyRoutes,
  compileEnvoyRouteConfiguration,
  createEnvoyRouteTable,
  type EnvoyRouteConfiguration,
  parseWaypointRouteHost,
  parseWaypointRouteName,
  type RouteTable,
  waypointRouteName,
} from "@ambient/router";
import {
  type Service,
  structToJson,
  TypeUrl,
  type WaypointPolicy,
  type WorkloadAddress,
  type XdsChangeEvent,
  type XdsClient,
  type XdsClientOptions,
  type XdsRejectedResource,
} from "@ambient/xds";
import { destinationServiceOf, otherClusterDomainOf } from "./backends.js";
import {
  DEFAULT_ROOT_NAMESPACE,
  isRecord,
  targetsWaypointOrService,
  WAYPOINT_GATEWAY_CLASS,
  withAttachableTargets,
} from "./policy-targets.js";
import { compileRequestAuthentication, type RequestAuthenticationStore } from "./request-authentication.js";

/** The waypoint as the control plane's resources name it. */
export interface WaypointSelf {
  gateway: { name: string; namespace: string };
  /** Its pod IP: a Service bound by address names it. */
  ip: string;
  /** DNS suffix of Service hosts. Default `cluster.local`. */
  clusterDomain?: string;
  /** Mesh root namespace. Default `istio-system`; meshConfig `rootNamespace`. */
  rootNamespace?: string;
}

/**
 * Whether the Service's Address resource names this waypoint (`istio.io/use-waypoint` on the Service
 * or its namespace), by the waypoint's IP or by its Gateway's host name.
 */
export function isBoundTo(service: Pick<Service, "waypoint">, self: WaypointSelf): boolean {
  const w = service.waypoint;
  if (w === undefined) return false;
  // 4 bytes, or IPv4-mapped in 16 (`::ffff:a.b.c.d`), as the ztunnel reads it.
  if (w.address !== undefined) return ipFromBytes(w.address.address ?? new Uint8Array()) === self.ip;
  if (w.hostname !== undefined) {
    const { name, namespace } = self.gateway;
    return (
      w.hostname.namespace === namespace &&
      w.hostname.hostname === `${name}.${namespace}.svc.${self.clusterDomain ?? "cluster.local"}`
    );
  }
  return false;
}

/**
 * The RouteConfiguration names of every port of the Services and ServiceEntry hosts bound to this
 * waypoint, sorted. A host without routes of its own is served its default route, to its endpoints.
 */
export function boundRouteNames(services: Iterable<Service>, self: WaypointSelf): string[] {
  const names = new Set<string>();
  for (const service of services) {
    if (!isBoundTo(service, self)) continue;
    for (const p of service.ports)
      if (p.servicePort > 0) names.add(waypointRouteName(service.hostname, p.servicePort));
  }
  return [...names].sort();
}

/** What a RouteConfiguration serves: a Service port, or a ServiceEntry host's port. */
interface RouteTarget {
  service: { name: string; namespace: string; kind?: "ServiceEntry"; hostname?: string };
  port: number;
}

/**
 * The target of a waypoint route name: a Service port from the name itself, a ServiceEntry host's
 * port from the bound entry of that host in `services` (undefined when none is bound here).
 */
function routeTargetOf(name: string, services: WorkloadStore, self: WaypointSelf): RouteTarget | undefined {
  const service = parseWaypointRouteName(name, self.clusterDomain);
  if (service !== undefined) return { service: service.service, port: service.port };
  const host = parseWaypointRouteHost(name);
  if (host === undefined) return undefined;
  const entry = services.servicesByHostname(host.host).find((s) => isBoundTo(s, self));
  return entry === undefined
    ? undefined
    : { service: destinationServiceOf(entry, self.clusterDomain), port: host.port };
}

/** A WaypointPolicy as the Kubernetes-shaped object the policy engine and RequestAuthentication read. */
export function policyObject(resource: WaypointPolicy): Record<string, unknown> {
  return {
    apiVersion: resource.apiVersion,
    kind: resource.kind,
    metadata: { name: resource.name, namespace: resource.namespace },
    spec: structToJson(resource.spec),
  };
}

/**
 * Whether an accepted WaypointPolicy applies at this waypoint: one whose `targetRefs` name its Gateway
 * or, from the root namespace, the waypoint GatewayClass (every request), or a Service or ServiceEntry
 * of the policy's own namespace (requests to it, as Istio enforces Service-attached policies at the
 * Service's waypoint; the policy engine matches the Service per request).
 */
export function appliesTo(resource: WaypointPolicy, self: WaypointSelf): boolean {
  if (resource.kind !== "AuthorizationPolicy" && resource.kind !== "RequestAuthentication") return false;
  return targetsWaypointOrService(
    policyObject(resource),
    self.gateway,
    self.rootNamespace ?? DEFAULT_ROOT_NAMESPACE,
  );
}

/**
 * Whether the policy targets the waypoint GatewayClass from the root namespace: the router names only
 * the Gateway and the Service among a request's targets, so the waypoint adds the class for it.
 */
function targetsWaypointClass(obj: Record<string, unknown>): boolean {
  const spec = obj.spec as { targetRefs?: unknown[]; targetRef?: unknown } | undefined;
  return [...(spec?.targetRefs ?? []), spec?.targetRef].some(
    (ref) => (ref as { kind?: unknown } | undefined)?.kind === "GatewayClass",
  );
}

/**
 * Why the waypoint cannot use a resource (the xDS client NACKs the response then), or undefined. An
 * Address must be one the WorkloadStore can hold under its name (`addressProblem`, as the ztunnel
 * checks it); a RouteConfiguration must be named for a Service port and compile (`@ambient/router`);
 * a WaypointPolicy must be sent under its own `kind/namespace/name` (it is put in force under that
 * key and removed by its xDS name) and be an AuthorizationPolicy that passes `@ambient/policy`
 * validation or a RequestAuthentication whose rules compile.
 */
export function resourceProblem(
  typeUrl: string,
  name: string,
  resource: unknown,
  self: WaypointSelf,
): string | undefined {
  try {
    if (typeUrl === TypeUrl.address) {
      const problem = addressProblem(name, resource);
      return problem === undefined ? undefined : `${name}: ${problem}`;
    }
    if (typeUrl === TypeUrl.routeConfiguration) {
      // A ServiceEntry host's entry (and so its namespace) is looked up when the routes are applied;
      // until then any namespace checks them the same (it only fills in backendRefs that name none).
      const target = parseWaypointRouteName(name, self.clusterDomain);
      if (target === undefined && parseWaypointRouteHost(name) === undefined)
        return `${name} is not a waypoint route name`;
      compileEnvoyRouteConfiguration(
        resource as EnvoyRouteConfiguration,
        target?.service.namespace ?? "default",
        {
          ...(self.clusterDomain === undefined ? {} : { clusterDomain: self.clusterDomain }),
        },
      );
    } else if (typeUrl === TypeUrl.waypointPolicy) {
      const policy = resource as WaypointPolicy;
      const key = `${policy.kind}/${policy.namespace}/${policy.name}`;
      if (key !== name) return `${name}: policy ${key} sent under the name ${name}`;
      const obj = policyObject(policy);
      if (policy.kind === "AuthorizationPolicy") validateResource(obj);
      else if (policy.kind === "RequestAuthentication") compileRequestAuthentication(obj, self.gateway);
      else return `${name}: kind ${JSON.stringify(policy.kind)} is not a waypoint policy`;
    }
    return undefined;
  } catch (err) {
    return `${name}: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/**
 * How the waypoint's xDS client judges what it receives: give these to `createXdsClient`. Each resource
 * stands alone, as in Envoy's LDS/RDS/CDS and the ztunnel: one policy or route the waypoint cannot use
 * (from any namespace: every waypoint is sent every targetRefs policy) must not hold back the others'
 * updates, nor the first state that readiness waits for.
 */
export function waypointXdsChecks(self: WaypointSelf): Pick<XdsClientOptions, "validate" | "rejectScope"> {
  return {
    validate: (typeUrl, name, resource) => resourceProblem(typeUrl, name, resource, self),
    rejectScope: "resource",
  };
}

/**
 * How long a newly bound Service port's RouteConfiguration is waited for as an answer that it does not
 * exist (the default route); past it the port keeps answering 404 until the routes come, as Envoy's
 * listener does once its 15 s initial fetch timeout passes without them.
 */
const ROUTE_ANSWER_TIMEOUT_MS = 15_000;

/** What stands in for an AuthorizationPolicy the waypoint never read. */
interface Refusal {
  namespace: string;
  name: string;
  /** `ALLOW`: it allows nothing; `DENY`: it denies all it covers. */
  action: "ALLOW" | "DENY";
  /** The references it was sent with, when they could be read; else undefined: all its namespace may be covered. */
  targetRefs: Record<string, string>[] | undefined;
}

/**
 * The target references of a policy spec, copied field by field: `[]` when it has none (it attaches to
 * no waypoint), undefined when any of them cannot be read (it could name anything of its namespace).
 */
function readableTargetRefs(spec: Record<string, unknown>): Record<string, string>[] | undefined {
  const given = spec.targetRefs ?? [];
  if (!Array.isArray(given)) return undefined;
  const refs = spec.targetRef === undefined || spec.targetRef === null ? given : [...given, spec.targetRef];
  const out: Record<string, string>[] = [];
  for (const ref of refs) {
    if (!isRecord(ref) || typeof ref.kind !== "string" || typeof ref.name !== "string" || ref.name === "")
      return undefined;
    const copy: Record<string, string> = { kind: ref.kind, name: ref.name };
    if (typeof ref.group === "string") copy.group = ref.group;
    if (typeof ref.namespace === "string") copy.namespace = ref.namespace;
    out.push(copy);
  }
  return out;
}

/**
 * The strictest reading of a WaypointPolicy that was rejected before the waypoint ever held a version
 * of it: dropping it could allow what it denies. An ALLOW policy (the default action) allows nothing,
 * so only the other ALLOW policies still allow; any other action, or a policy whose action cannot be
 * read, denies all it targets. An AUDIT policy never decides a request, one without target references
 * attaches to no waypoint, and a RequestAuthentication only adds credentials the waypoint accepts: none
 * of them has a stand-in. Undefined when none is needed.
 */
function refusalOf(rejected: XdsRejectedResource): Refusal | undefined {
  // Which policy it is comes from the xDS name alone: a body that names another policy must not
  // take that policy's place.
  const [kind = "", namespace = "", ...rest] = (rejected.name ?? "").split("/");
  const name = rest.join("/");
  if (kind !== "AuthorizationPolicy" || namespace === "" || name === "") return undefined;
  const resource = isRecord(rejected.resource) ? rejected.resource : undefined;
  let spec: Record<string, unknown> | undefined;
  try {
    spec = resource === undefined ? undefined : structToJson(resource.spec as WaypointPolicy["spec"]);
  } catch {
    spec = undefined;
  }
  const action = spec?.action;
  if (action === "AUDIT") return undefined;
  const refs = spec === undefined ? undefined : readableTargetRefs(spec);
  if (refs?.length === 0) return undefined;
  return {
    namespace,
    name,
    action:
      spec !== undefined && (action === undefined || action === null || action === "ALLOW")
        ? "ALLOW"
        : "DENY",
    targetRefs: refs,
  };
}

/** What {@link WaypointXdsConfig} puts in force. */
export interface WaypointXdsTargets {
  store: WorkloadStore;
  handler: { setRouteTable(table: RouteTable): void };
  policy: Pick<AuthorizationEngine, "apply" | "delete">;
  requestAuthentications: RequestAuthenticationStore;
  logger: Logger;
}

/**
 * Follows the waypoint's xDS resources and keeps the router, the policy engine and the
 * RequestAuthentications in step with them. Construct it with a client created with
 * `validate: (t, n, r) => resourceProblem(t, n, r, self)`.
 */
export class WaypointXdsConfig {
  readonly #xds: XdsClient;
  readonly #self: WaypointSelf;
  readonly #targets: WaypointXdsTargets;
  /** Accepted RouteConfigurations by name, compiled for the target they had when they came. */
  /**
   * Route name -> the routes in force for it. `pending` marks a stand-in with no route (404) for a
   * Service port bound here whose RouteConfiguration was asked for and not yet answered.
   */
  readonly #routes = new Map<
    string,
    { raw: unknown; target: RouteTarget; compiled: CompiledEnvoyRoutes; pending?: true }
  >();
  readonly #policies = new Map<string, WaypointPolicy>();
  /** Stand-ins for the AuthorizationPolicies rejected before any version was read, by xDS name. */
  readonly #refusals = new Map<string, Refusal>();
  readonly #applied = new Set<string>();
  #routeNames: string[] = [];
  /** Cluster DNS domains of bound Services already warned about ({@link #checkDomain}). */
  readonly #otherDomains = new Set<string>();
  #watchingRoutes = false;
  /** The first state is in ({@link ready}): later bindings wait for their routes. */
  #started = false;
  #generation = 0;
  #classTargeted = false;

  constructor(xds: XdsClient, self: WaypointSelf, targets: WaypointXdsTargets) {
    this.#xds = xds;
    this.#self = self;
    this.#targets = targets;
    xds.onChange((event) => this.#onChange(event));
    xds.watch(TypeUrl.address);
    xds.watch(TypeUrl.waypointPolicy);
  }

  /**
   * Resolves once the first Address, policy and (for bound Services) route responses are in. From
   * then on a Service port newly bound here is held to no route until its routes are answered.
   */
  async ready(): Promise<void> {
    await Promise.all([this.#xds.ready(TypeUrl.address), this.#xds.ready(TypeUrl.waypointPolicy)]);
    if (this.#watchingRoutes) await this.#xds.ready(TypeUrl.routeConfiguration);
    this.#started = true;
  }

  /** Counts every change put in force; a test or a demo waits for it to move. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Whether an AuthorizationPolicy in force targets the waypoint GatewayClass: requests then carry the
   * class among their targets (`withWaypointClassTarget`).
   */
  get classTargeted(): boolean {
    return this.#classTargeted;
  }

  /** Whether `service` is bound to this waypoint. */
  serves(service: Pick<Service, "waypoint">): boolean {
    return isBoundTo(service, this.#self);
  }

  /** The routes and policies in force, for `/config_dump`. */
  inForce(): { routes: unknown[]; policies: Record<string, unknown>[] } {
    return {
      routes: [...this.#routes.values()].map((r) => r.raw),
      policies: this.#authorizationObjects(),
    };
  }

  #onChange(event: XdsChangeEvent): void {
    if (event.typeUrl === TypeUrl.address) {
      const { store } = this.#targets;
      for (const r of [...event.added, ...event.updated]) {
        const address = r.resource as WorkloadAddress;
        store.upsert(r.name, address);
        if (address.service !== undefined) this.#checkDomain(address.service);
      }
      for (const name of event.removed) store.remove(name);
      this.#followBoundServices();
      // A stand-in that covers all of its namespace names that namespace's Services bound here.
      if ([...this.#refusals.values()].some((r) => r.targetRefs === undefined)) this.#applyPolicies();
    } else if (event.typeUrl === TypeUrl.routeConfiguration) {
      let changed = event.added.length + event.updated.length + event.removed.length > 0;
      for (const r of [...event.added, ...event.updated]) {
        const target = routeTargetOf(r.name, this.#targets.store, this.#self);
        if (target === undefined) {
          this.#routes.delete(r.name);
          continue;
        }
        // Already accepted by validate: this compile does not throw.
        const compiled = compileEnvoyRouteConfiguration(
          r.resource as EnvoyRouteConfiguration,
          target.service.namespace,
          this.#self.clusterDomain === undefined ? {} : { clusterDomain: this.#self.clusterDomain },
        );
        this.#routes.set(r.name, { raw: r.resource, target, compiled });
      }
      for (const name of event.removed) this.#routes.delete(name);
      for (const r of event.rejected ?? []) {
        if (r.name === undefined || this.#xds.get(TypeUrl.routeConfiguration, r.name) !== undefined) continue;
        // Never read: the port is served with no route (404, no route), as Envoy serves a route
        // configuration it has not loaded, not with the default route to the Service, which would
        // carry what the routes sent meant to answer or send elsewhere.
        const existing = this.#routes.get(r.name);
        if (existing !== undefined && existing.pending !== true) continue;
        if (this.#standIn(r.name)) changed = true;
        const held = this.#routes.get(r.name);
        if (held !== undefined) delete held.pending;
      }
      if (changed) this.#applyRoutes();
    } else if (event.typeUrl === TypeUrl.waypointPolicy) {
      let changed = event.added.length + event.updated.length + event.removed.length > 0;
      for (const r of [...event.added, ...event.updated]) {
        this.#policies.set(r.name, r.resource as WaypointPolicy);
        this.#refusals.delete(r.name);
      }
      for (const name of event.removed) {
        this.#policies.delete(name);
        this.#refusals.delete(name);
      }
      for (const r of event.rejected ?? []) {
        if (r.name === undefined) continue;
        if (this.#xds.get(TypeUrl.waypointPolicy, r.name) !== undefined) {
          this.#targets.logger.warn(
            { policy: r.name, err: r.reason },
            "waypoint policy rejected; its last good version stays",
          );
          continue;
        }
        const refusal = refusalOf(r);
        if (refusal === undefined) continue;
        this.#refusals.set(r.name, refusal);
        changed = true;
        this.#targets.logger.warn(
          {
            policy: r.name,
            err: r.reason,
            action: refusal.action,
            targetRefs: refusal.targetRefs ?? "namespace",
          },
          "waypoint policy rejected; refusing what it could cover",
        );
      }
      if (changed) this.#applyPolicies();
    }
  }

  /**
   * Reports, once per domain, a Service bound here that is named as a Kubernetes Service of another
   * cluster DNS domain (`<name>.<namespace>.svc.<other>`): the waypoint was told the wrong domain, so it
   * cannot tell which policies target the Service, and refuses its traffic (see `onTunnel`). The
   * cluster domain is set, not guessed.
   */
  #checkDomain(service: Service): void {
    if (!isBoundTo(service, this.#self)) return;
    const clusterDomain = this.#self.clusterDomain ?? "cluster.local";
    const domain = otherClusterDomainOf(service, clusterDomain);
    if (domain === undefined || this.#otherDomains.has(domain)) return;
    this.#otherDomains.add(domain);
    this.#targets.logger.error(
      { service: `${service.namespace}/${service.name}`, hostname: service.hostname, clusterDomain },
      `a bound Service is named in the DNS domain ${domain}, not ${clusterDomain}: its connections are refused until --cluster-domain (CLUSTER_DOMAIN) is set to the cluster's`,
    );
  }

  /**
   * Puts a stand-in with no route (404) in force for the bound Service port `name` names; false when
   * the name names none. The routes are applied by the caller.
   */
  #standIn(name: string): boolean {
    const target = routeTargetOf(name, this.#targets.store, this.#self);
    if (target === undefined) return false;
    const raw = { name, virtualHosts: [] };
    const compiled = compileEnvoyRouteConfiguration(raw, target.service.namespace);
    this.#routes.set(name, { raw, target, compiled, pending: true });
    return true;
  }

  /**
   * Subscribes to the RouteConfigurations of the bound Service ports, and drops the rest. A port bound
   * once the waypoint runs answers 404 (no route) until its RouteConfiguration is in, as Envoy does not
   * serve a listener whose routes it has not loaded: the default route to the Service would carry what
   * the routes meant to refuse or send elsewhere. The server's answer that there is none puts the
   * default route in force; no answer keeps the 404.
   */
  #followBoundServices(): void {
    const names = boundRouteNames(this.#targets.store.services().values(), this.#self);
    const before = new Set(this.#routeNames);
    const after = new Set(names);
    this.#routeNames = names;
    const added = names.filter((n) => !before.has(n));
    const removed = [...before].filter((n) => !after.has(n));
    let changed = false;
    for (const name of removed) {
      if (this.#routes.get(name)?.pending === true && this.#routes.delete(name)) changed = true;
    }
    if (!this.#watchingRoutes) {
      if (names.length === 0) return;
      this.#watchingRoutes = true;
      this.#xds.watch(TypeUrl.routeConfiguration, { wildcard: false, names });
      // The first answer is waited for before the waypoint serves (`ready`).
      if (!this.#started) return;
    } else {
      if (removed.length > 0) this.#xds.unsubscribe(TypeUrl.routeConfiguration, removed);
      if (added.length > 0 && !this.#started) this.#xds.subscribe(TypeUrl.routeConfiguration, added);
    }
    if (added.length > 0 && this.#started) {
      for (const name of added) if (!this.#routes.has(name) && this.#standIn(name)) changed = true;
      let answer: ReturnType<XdsClient["lookup"]>;
      try {
        answer = this.#xds.lookup(TypeUrl.routeConfiguration, added, { timeoutMs: ROUTE_ANSWER_TIMEOUT_MS });
      } catch {
        // A state-of-the-world stream has no answer for a missing name: the routes arrive, or the 404 stays.
        this.#xds.subscribe(TypeUrl.routeConfiguration, added);
        answer = Promise.resolve({ found: new Map(), missing: [], unanswered: added });
      }
      void answer.then(({ missing }) => {
        let answered = false;
        for (const name of missing) {
          if (this.#routes.get(name)?.pending === true && this.#routes.delete(name)) answered = true;
        }
        if (answered) this.#applyRoutes();
      });
    }
    if (changed) this.#applyRoutes();
  }

  #applyRoutes(): void {
    const bindings = [...this.#routes.values()].map(({ target, compiled }) => ({
      service: target.service,
      port: target.port,
      routes: compiled,
    }));
    this.#targets.handler.setRouteTable(createEnvoyRouteTable(bindings));
    this.#generation++;
    this.#targets.logger.info({ routes: bindings.length }, "waypoint routes in force");
  }

  /**
   * A stand-in as the policy engine reads it. One whose references could not be read covers all that
   * a policy of its namespace can attach to here: the waypoint itself from the Gateway's namespace (or
   * every waypoint from the root namespace), else the Services and ServiceEntries of its namespace
   * bound to this waypoint.
   */
  #refusalObject(refusal: Refusal): Record<string, unknown> {
    const rootNamespace = this.#self.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    let targetRefs: Record<string, string>[] | undefined = refusal.targetRefs;
    if (targetRefs === undefined) {
      targetRefs = [];
      const { gateway } = this.#self;
      if (refusal.namespace === gateway.namespace)
        targetRefs.push({ group: "gateway.networking.k8s.io", kind: "Gateway", name: gateway.name });
      if (refusal.namespace === rootNamespace)
        targetRefs.push({
          group: "gateway.networking.k8s.io",
          kind: "GatewayClass",
          name: WAYPOINT_GATEWAY_CLASS,
        });
      for (const service of this.#targets.store.services().values()) {
        if (service.namespace !== refusal.namespace || !isBoundTo(service, this.#self)) continue;
        const destination = destinationServiceOf(service, this.#self.clusterDomain);
        targetRefs.push(
          destination.kind === "ServiceEntry"
            ? { group: "networking.istio.io", kind: "ServiceEntry", name: service.name }
            : { group: "", kind: "Service", name: service.name },
        );
      }
    }
    return {
      apiVersion: "security.istio.io/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: refusal.name, namespace: refusal.namespace },
      spec:
        refusal.action === "ALLOW"
          ? { targetRefs, action: "ALLOW" }
          : { targetRefs, action: "DENY", rules: [{}] },
    };
  }

  /** The AuthorizationPolicies, read or standing in for unread ones, that attach to this waypoint. */
  #authorizationObjects(): Record<string, unknown>[] {
    const rootNamespace = this.#self.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    const out: Record<string, unknown>[] = [];
    for (const resource of this.#policies.values())
      if (resource.kind === "AuthorizationPolicy" && appliesTo(resource, this.#self))
        out.push(policyObject(resource));
    for (const refusal of this.#refusals.values()) {
      const obj = this.#refusalObject(refusal);
      if (targetsWaypointOrService(obj, this.#self.gateway, rootNamespace)) out.push(obj);
    }
    return out;
  }

  #applyPolicies(): void {
    const { policy, requestAuthentications, logger } = this.#targets;
    const next = new Set<string>();
    const jwt: Record<string, unknown>[] = [];
    let classTargeted = false;
    for (const resource of this.#policies.values()) {
      if (resource.kind === "RequestAuthentication" && appliesTo(resource, this.#self))
        jwt.push(policyObject(resource));
    }
    for (const obj of this.#authorizationObjects()) {
      const meta = obj.metadata as { name: string; namespace: string };
      const key = `${meta.namespace}/${meta.name}`;
      // The engine matches a reference by the namespace it names: one into another namespace (which
      // never attaches) must not reach it, nor a GatewayClass reference outside the root namespace.
      const attached = withAttachableTargets(obj, this.#self.rootNamespace ?? DEFAULT_ROOT_NAMESPACE);
      if (targetsWaypointClass(attached)) classTargeted = true;
      try {
        policy.apply(attached);
        next.add(key);
      } catch (err) {
        // validate accepted it; an engine refusal keeps the version already in force.
        logger.warn({ err: (err as Error).message }, "waypoint policy ignored");
        if (this.#applied.has(key)) next.add(key);
      }
    }
    for (const key of this.#applied) {
      if (next.has(key)) continue;
      const [ns = "", name = ""] = key.split("/");
      policy.delete("AuthorizationPolicy", ns, name);
    }
    this.#applied.clear();
    for (const key of next) this.#applied.add(key);
    this.#classTargeted = classTargeted;
    for (const issue of requestAuthentications.apply(jwt)) {
      logger.warn({ issue }, "RequestAuthentication ignored; its last good version stays");
    }
    this.#generation++;
    logger.info({ policies: next.size, requestAuthentications: jwt.length }, "waypoint policies in force");
  }
}
