import { PolicyError, type ValidationIssue } from "./errors.js";
import { type IpAddress, parseConnectionAddress } from "./ip-address.js";
import type {
  AuthorizationAction,
  AuthorizationPolicy,
  PeerAuthentication,
  PolicyResource,
  PolicyTargetReference,
} from "./kubernetes-types.js";
import {
  type CompiledL7Policy,
  compileAuthorizationPolicy,
  explainL7Policy,
  type HttpAttributes,
  matchL7Policy,
  type RequestAttributes,
} from "./l7-matcher.js";
import { parsePolicyYaml } from "./parse-policy-yaml.js";
import { normalizePath, PATH_NORMALIZATIONS, type PathNormalization } from "./path-match.js";
import {
  convertPeerAuthentication,
  effectivePeerAuthenticationKeys,
  oldestPeerAuthentication,
  staticStrictAuthorization,
} from "./peer-authentication.js";
import { type Logger, type MetricsSink, noopLogger, noopMetrics } from "./telemetry.js";
import { type ConversionWarning, isDryRun, toWireAuthorization } from "./to-wire-authorization.js";
import { validateResource } from "./validate-resource.js";
import type { WireAuthorization, WireScope } from "./wire.js";
import {
  type CompiledWireAuthorization,
  compileWireAuthorization,
  explainWireAuthorization,
  identityAttributes,
  matchWireAuthorization,
} from "./wire-matcher.js";

/** A Gateway, GatewayClass, Service or ServiceEntry a request is addressed through. */
export interface PolicyTarget {
  kind: string;
  name: string;
  namespace: string;
  group?: string;
}

/** One connection or request to authorize. */
export interface AuthorizationRequest {
  source: {
    ip: string;
    port?: number;
    /** `spiffe://td/ns/n/sa/s` of a verified mTLS peer; undefined on plaintext. */
    identity?: string;
  };
  destination: {
    ip: string;
    /** The real target port (not 15008). */
    port: number;
    workload?: {
      namespace: string;
      name?: string;
      labels?: Record<string, string>;
      /**
       * Names (`ns/name`) of the selector policies that apply, as WDS `Workload.authorization_policies`
       * lists them. When given, they replace label selection (ztunnel behaviour).
       */
      authorizationPolicies?: readonly string[];
    };
    /** Objects the request is addressed through; `targetRefs` policies apply when one matches. */
    targets?: readonly PolicyTarget[];
    /** TLS server name, for `when: connection.sni`. */
    sni?: string;
  };
  http?: {
    host: string;
    method: string;
    path: string;
    headers: Record<string, string | readonly string[] | undefined>;
    /**
     * `iss/sub` of a verified JWT, as shown in explanations. Matching reads the issuer and subject on
     * their own (`requestIssuer`, `requestSubject`); this string is split at its last `/` only when
     * neither they nor `claims.iss`/`claims.sub` are given.
     */
    requestPrincipal?: string;
    /**
     * The verified JWT's `iss`, for `requestPrincipals` and `request.auth.principal`. Default: `claims.iss`
     * when it is a string.
     */
    requestIssuer?: string;
    /**
     * The verified JWT's `sub`, for `requestPrincipals` and `request.auth.principal`. Default: `claims.sub`
     * when it is a string. A token without one has no request principal (`*` needs a non-empty `sub`).
     */
    requestSubject?: string;
    /** Verified JWT audiences, for `when: request.auth.audiences`. */
    audiences?: readonly string[];
    /** Verified JWT `azp`, for `when: request.auth.presenter`. */
    presenter?: string;
    /** Verified JWT claims, for `when: request.auth.claims[...]`. */
    claims?: Record<string, unknown>;
    /** Original client IP (XFF or PROXY protocol), for `remoteIpBlocks`; defaults to `source.ip`. */
    remoteIp?: string;
    /**
     * True when `path` is already the output of {@link normalizePath} with the engine's
     * `pathNormalization` mode (query removed), e.g. because the proxy normalized it once and
     * forwards that same path. The engine then matches `path` as given instead of normalizing
     * it again (twice would decode `%2561` to `a`). A path that is not in that normal form is
     * refused (`ERR_REQUEST_INVALID`), so a raw path cannot slip through unnormalized.
     */
    pathNormalized?: boolean;
  };
}

export type DecisionAction = "ALLOW" | "DENY" | "CUSTOM" | "AUDIT";

/** The answer, with an explanation a log line or a CLI can show. */
export interface AuthorizationDecision {
  allowed: boolean;
  /** Human explanation, e.g. `explicitly denied by: prod/deny-ext (rule 0)`. */
  reason: string;
  /** `ns/name` of the policy that decided, if one did. */
  policy?: string;
  action?: DecisionAction;
  /** Index of the rule (in `spec.rules`, or wire group) that matched. */
  rule?: number;
  /** What each applicable dry-run policy would have done. */
  dryRun?: string[];
  /** The decision if dry-run policies were enforced (only when some apply). */
  dryRunAllowed?: boolean;
  /** AUDIT policies that matched (`ns/name`). */
  audit?: string[];
  /**
   * `L4` (a connection, no `http`: ztunnel's rules, or at a waypoint its policies' TCP form) or `L7`
   * (every attribute).
   */
  layer: "L4" | "L7";
  /** Set when the request itself was malformed (the decision is then a deny). */
  error?: PolicyError;
  /**
   * True when the request must be answered 400 Bad Request rather than 403: its path is refused by
   * path normalization (`ERR_POLICY_BAD_PATH`) or its method is not upper case
   * (`ERR_POLICY_BAD_METHOD`). `allowed` is false and `error` says why.
   */
  badRequest?: boolean;
}

/** Per-policy detail for "why was this denied?". */
export interface PolicyExplanation {
  policy: string;
  action: AuthorizationAction;
  dryRun: boolean;
  /** Per rule: `matched` or why it did not match. */
  rules: string[];
}

/** A connection that stays open and may need closing after a policy change. */
export interface OpenConnection {
  readonly request: AuthorizationRequest;
}

/**
 * The CUSTOM action's external authorizer. It receives the checked copy of the request, whose
 * `http.path` is the normalized path followed by the query as received. At a waypoint it is also
 * asked about connections carried as TCP, which have no `http` (as Envoy's network ext_authz filter
 * asks a gRPC provider). Returning anything but `true`, or throwing, denies.
 */
export type CustomAuthorizer = (
  request: AuthorizationRequest,
  policy: { namespace: string; name: string; provider: string },
) => boolean;

/** Options of {@link AuthorizationEngine}. */
export interface AuthorizationEngineOptions {
  /** Mesh root namespace. Default `istio-system`; meshConfig `rootNamespace`. */
  rootNamespace?: string;
  /**
   * Enforce nothing for `istio.io/dry-run` policies but report them. Default true, what ztunnel 1.29
   * and newer does with them; false leaves them out. `toWireAuthorization` defaults to false (istiod).
   */
  enableDryRun?: boolean;
  /** Path normalisation before `paths` matching. Default `BASE`; meshConfig `pathNormalization`. */
  pathNormalization?: PathNormalization;
  /**
   * Which policies apply to L7 requests. `workload` (default): selector, namespace and root
   * policies, plus `targetRefs` policies matching `destination.targets` (sidecar semantics).
   * `waypoint`: only `targetRefs` policies matching `destination.targets` (waypoint semantics), for
   * requests and for connections without `http` alike; a connection meets them as Envoy's network
   * RBAC filter applies them (HTTP-only fields dropped from DENY, AUDIT and CUSTOM rules, ALLOW rules
   * using them left out).
   */
  l7Attachment?: "workload" | "waypoint";
  /**
   * The mesh's trust domain, then its aliases (meshConfig `trustDomain`, `trustDomainAliases`), for the
   * L7 rules (requests, and connections under `l7Attachment: "waypoint"`): a principal written
   * `cluster.local/ns/<ns>/sa/<sa>` or in one of these trust domains matches that account in any of
   * them, as Istio's proxies read principals. Wire Authorizations (ztunnel's) keep principals as
   * written, as istiod sends them. Default none: principals as written everywhere.
   */
  trustDomains?: readonly string[];
  /** Decides requests that match a CUSTOM policy. Default: none, so a matching CUSTOM policy denies (fail closed, as Envoy ext_authz does). */
  customAuthorizer?: CustomAuthorizer;
  /** Log every decision at info level. Default false; ztunnel `AUTHZ_POLICY_INFO_LOGGING`. */
  logDecisions?: boolean;
  /** Default: no-op. */
  logger?: Logger;
  /** Default: no-op. */
  metrics?: MetricsSink;
}

/** What happened to a resource given to {@link AuthorizationEngine.apply}. */
export interface ApplyResult {
  /** `Kind ns/name`. */
  resource: string;
  /** Validation warnings and the conversion status message, if any. */
  warnings: (ValidationIssue | ConversionWarning)[];
  /** The wire policy ztunnel enforces for it (AuthorizationPolicy only; absent when not for ztunnel). */
  authorization?: WireAuthorization;
}

type EntryKind = "AuthorizationPolicy" | "Authorization";

interface Entry {
  readonly key: string;
  readonly kind: EntryKind;
  readonly namespace: string;
  readonly name: string;
  readonly action: AuthorizationAction;
  readonly dryRun: boolean;
  readonly scope: WireScope | "TARGET_REF";
  readonly selector: Readonly<Record<string, string>> | undefined;
  readonly targetRefs: readonly PolicyTargetReference[];
  readonly provider: string | undefined;
  readonly wire: CompiledWireAuthorization | undefined;
  readonly ruleIndexes: readonly number[] | undefined;
  /** The Kubernetes form, compiled for L7 on first use (most entries are only ever used at L4). */
  readonly policy: AuthorizationPolicy | undefined;
  l7: CompiledL7Policy | undefined;
  /**
   * A `targetRefs` policy as a waypoint applies it to a connection it carries as TCP (no `http`):
   * an entry whose `policy` is matched in its TCP form (see {@link forTcp}). Undefined for other
   * policies.
   */
  readonly tcp?: Entry;
  /**
   * True for the entry a waypoint matches connections against: its `policy` is compiled with the
   * rules of Envoy's network RBAC filter (HTTP-only fields dropped from DENY, AUDIT and CUSTOM rules,
   * ALLOW rules using them left out), and matched without `http`.
   */
  readonly forTcp?: boolean;
}

interface NamespaceBucket {
  namespaced: Entry[];
  selected: Entry[];
  targeted: Entry[];
}

type IdentityParts = ReturnType<typeof identityAttributes>;
const NO_IDENTITY: IdentityParts = identityAttributes(undefined);
/** Bound of the parsed-address and identity caches (cleared when full). */
const CACHE_LIMIT = 8192;

const ALLOW_LABELS = { decision: "allow" } as const;
const NO_ALLOW_POLICY = "no ALLOW policy applies: allowed by default";
const DENY_LABELS = { decision: "deny" } as const;

/** A request whose every field was checked, and the attributes policies match on. */
interface CheckedRequest {
  readonly layer: "L4" | "L7";
  readonly request: AuthorizationRequest;
  readonly attrs: RequestAttributes;
}

/** An RFC 9110 token with no lower-case letter: Istio refuses other methods with 400. */
const METHOD = /^[!#$%&'*+\-.^_`|~0-9A-Z]+$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A short description of any value for a reason text; never throws (unlike `String(value)`). */
function describe(value: unknown): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
    case "number":
    case "boolean":
    case "undefined":
      return String(value);
    case "bigint":
      return `${value.toString()}n`;
    default:
      if (value === null) return "null";
      return Array.isArray(value) ? "an array" : `a ${typeof value}`;
  }
}

function describeError(err: unknown): string {
  try {
    return err instanceof Error ? String(err.message) : describe(err);
  } catch {
    return "an unreadable error";
  }
}

/** A bad engine option. */
function optionError(message: string): PolicyError {
  return new PolicyError("ERR_POLICY_INVALID", message);
}

function invalid(message: string): PolicyError {
  return new PolicyError("ERR_REQUEST_INVALID", message);
}

function asRequestError(err: unknown): PolicyError {
  return err instanceof PolicyError
    ? err
    : new PolicyError("ERR_REQUEST_INVALID", describeError(err), { cause: err });
}

function layerOf(request: unknown): "L4" | "L7" {
  try {
    return isRecord(request) && request.http !== undefined ? "L7" : "L4";
  } catch {
    return "L4";
  }
}

function requestOf(connection: unknown): AuthorizationRequest | undefined {
  try {
    return isRecord(connection) && isRecord(connection.request)
      ? (connection.request as unknown as AuthorizationRequest)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The namespaces whose policies a request's destination workload meets: its own and those of the
 * policies it lists by `namespace/name` (none without a workload), or `malformed` when they cannot
 * be read.
 */
function workloadNamespacesOf(request: AuthorizationRequest): string[] | "malformed" {
  try {
    const destination: unknown = request.destination;
    if (!isRecord(destination)) return "malformed";
    const workload = destination.workload;
    if (workload === undefined) return [];
    if (!isRecord(workload) || typeof workload.namespace !== "string") return "malformed";
    const listed = workload.authorizationPolicies;
    if (listed === undefined) return [workload.namespace];
    if (!Array.isArray(listed)) return "malformed";
    const out = [workload.namespace];
    for (const key of listed) {
      if (typeof key !== "string") return "malformed";
      const slash = key.indexOf("/");
      if (slash >= 0) out.push(key.slice(0, slash));
    }
    return out;
  } catch {
    return "malformed";
  }
}

/** The namespaces of a request's `destination.targets`, or `malformed` when they cannot be read. */
function targetNamespacesOf(request: AuthorizationRequest): string[] | "malformed" {
  try {
    const destination: unknown = request.destination;
    if (!isRecord(destination)) return "malformed";
    const targets = destination.targets;
    if (targets === undefined) return [];
    if (!Array.isArray(targets)) return "malformed";
    const out: string[] = [];
    for (const t of targets as unknown[]) {
      if (!isRecord(t) || typeof t.namespace !== "string") return "malformed";
      out.push(t.namespace);
    }
    return out;
  } catch {
    return "malformed";
  }
}

function isPort(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 65535;
}

function optionalPort(value: unknown, field: string): number | undefined {
  if (value === undefined) return undefined;
  if (!isPort(value)) throw invalid(`${field} is not a port: ${describe(value)}`);
  return value;
}

/**
 * The issuer and subject `requestPrincipals` match, as Envoy reads them from the verified payload
 * (`iss`, `sub`): given on their own, else the claims' (strings only), else a lone `iss/sub` split at
 * its last `/` as istiod splits a pattern.
 */
function tokenIdentity(
  issuer: string | undefined,
  subject: string | undefined,
  claims: Record<string, unknown> | undefined,
  principal: string | undefined,
): { issuer: string | undefined; subject: string | undefined } {
  if (issuer !== undefined || subject !== undefined) return { issuer, subject };
  if (claims !== undefined && (Object.hasOwn(claims, "iss") || Object.hasOwn(claims, "sub"))) {
    const str = (v: unknown) => (typeof v === "string" ? v : undefined);
    return { issuer: str(claims.iss), subject: str(claims.sub) };
  }
  if (principal === undefined) return { issuer: undefined, subject: undefined };
  const slash = principal.lastIndexOf("/");
  return slash < 0
    ? { issuer: principal, subject: undefined }
    : { issuer: principal.slice(0, slash), subject: principal.slice(slash + 1) };
}

function optionalString(value: unknown, field: string): string | undefined {
  if (value === undefined || typeof value === "string") return value;
  throw invalid(`${field} must be a string, not ${describe(value)}`);
}

function optionalStrings(value: unknown, field: string): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw invalid(`${field} must be an array of strings, not ${describe(value)}`);
  const out: string[] = [];
  for (let i = 0; i < value.length; i++) {
    const v: unknown = value[i];
    if (typeof v !== "string") throw invalid(`${field}[${i}] must be a string, not ${describe(v)}`);
    out.push(v);
  }
  return out;
}

/** A label map copied into an object without a prototype, so `labels.constructor` is not a label. */
function checkLabels(value: unknown, field: string): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) throw invalid(`${field} must be an object, not ${describe(value)}`);
  const out: Record<string, string> = Object.create(null);
  for (const key of Object.keys(value)) {
    const v = value[key];
    if (typeof v !== "string")
      throw invalid(`${field}[${JSON.stringify(key)}] must be a string, not ${describe(v)}`);
    out[key] = v;
  }
  return out;
}

function checkWorkload(
  value: unknown,
): NonNullable<AuthorizationRequest["destination"]["workload"]> | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) throw invalid(`destination.workload must be an object, not ${describe(value)}`);
  const namespace = value.namespace;
  if (typeof namespace !== "string")
    throw invalid(`destination.workload.namespace must be a string, not ${describe(namespace)}`);
  const name = optionalString(value.name, "destination.workload.name");
  const labels = checkLabels(value.labels, "destination.workload.labels");
  const policies = optionalStrings(value.authorizationPolicies, "destination.workload.authorizationPolicies");
  const out: NonNullable<AuthorizationRequest["destination"]["workload"]> = { namespace };
  if (name !== undefined) out.name = name;
  if (labels !== undefined) out.labels = labels;
  if (policies !== undefined) out.authorizationPolicies = policies;
  return out;
}

function checkTargets(value: unknown): PolicyTarget[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw invalid(`destination.targets must be an array, not ${describe(value)}`);
  return value.map((t: unknown, i) => {
    const field = `destination.targets[${i}]`;
    if (!isRecord(t)) throw invalid(`${field} must be an object, not ${describe(t)}`);
    const { kind, name, namespace } = t;
    if (typeof kind !== "string" || typeof name !== "string" || typeof namespace !== "string")
      throw invalid(`${field} needs string kind, name and namespace`);
    const group = optionalString(t.group, `${field}.group`);
    return group === undefined ? { kind, name, namespace } : { kind, name, namespace, group };
  });
}

/** Lower-case names to values joined with ",", as Istio merges repeated headers. */
function checkHeaders(value: unknown): Map<string, string> {
  const headers = new Map<string, string>();
  if (value === undefined) return headers;
  if (!isRecord(value)) throw invalid(`http.headers must be an object, not ${describe(value)}`);
  for (const name of Object.keys(value)) {
    const v: unknown = value[name];
    if (v === undefined) continue;
    let joined: string;
    if (typeof v === "string") joined = v;
    else if (Array.isArray(v))
      joined = (optionalStrings(v, `http.headers[${JSON.stringify(name)}]`) ?? []).join(",");
    else
      throw invalid(`http.headers[${JSON.stringify(name)}] must be a string or strings, not ${describe(v)}`);
    const key = name.toLowerCase();
    const prev = headers.get(key);
    headers.set(key, prev === undefined ? joined : `${prev},${joined}`);
  }
  return headers;
}

function labelsSelect(
  selector: Readonly<Record<string, string>>,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  for (const k in selector) {
    if (labels === undefined || labels[k] !== selector[k]) return false;
  }
  return true;
}

function canonicalGroup(kind: string, group: string | undefined): string {
  if (group !== undefined && group !== "" && group !== "core") return group;
  if (kind === "Gateway" || kind === "GatewayClass") return "gateway.networking.k8s.io";
  if (kind === "ServiceEntry") return "networking.istio.io";
  return "core";
}

/**
 * Holds AuthorizationPolicies, PeerAuthentications and wire `Authorization`s, indexed by scope,
 * namespace and selected workloads, and decides connections (ztunnel's L4 rules, or a waypoint's
 * TCP rules) and HTTP requests (every attribute) with Istio's order: CUSTOM, DENY, no ALLOW policy means allow,
 * a matching ALLOW allows, otherwise deny.
 */
export class AuthorizationEngine {
  readonly #rootNamespace: string;
  readonly #enableDryRun: boolean;
  readonly #pathNormalization: PathNormalization;
  readonly #l7Attachment: "workload" | "waypoint";
  readonly #trustDomains: readonly string[];
  readonly #customAuthorizer: CustomAuthorizer | undefined;
  readonly #logDecisions: boolean;
  readonly #logger: Logger;
  readonly #decisions: ReturnType<MetricsSink["counter"]>;

  readonly #entries = new Map<string, Entry>();
  readonly #global: Entry[] = [];
  readonly #globalSelected: Entry[] = [];
  readonly #byNamespace = new Map<string, NamespaceBucket>();

  readonly #peerAuthentications = new Map<string, PeerAuthentication>();
  readonly #addressCache = new Map<string, IpAddress>();
  readonly #identityCache = new Map<string, IdentityParts>();
  readonly #namespaceCache = new Map<string, { version: number; entries: readonly Entry[] }>();
  readonly #peerEntries = new Map<string, Entry>();

  #version = 0;
  readonly #changes: { version: number; namespace: string }[] = [];

  constructor(options: AuthorizationEngineOptions = {}) {
    if (typeof options !== "object" || options === null)
      throw optionError(`options must be an object, not ${describe(options)}`);
    const rootNamespace = options.rootNamespace ?? "istio-system";
    if (typeof rootNamespace !== "string" || rootNamespace === "")
      throw optionError(`rootNamespace must be a namespace name, not ${describe(rootNamespace)}`);
    this.#rootNamespace = rootNamespace;
    const enableDryRun = options.enableDryRun ?? true;
    if (typeof enableDryRun !== "boolean")
      throw optionError(`enableDryRun must be true or false, not ${describe(enableDryRun)}`);
    this.#enableDryRun = enableDryRun;
    const mode = options.pathNormalization ?? "BASE";
    if (!PATH_NORMALIZATIONS.includes(mode))
      throw new PolicyError(
        "ERR_POLICY_INVALID",
        `pathNormalization must be one of ${PATH_NORMALIZATIONS.join(", ")}, not ${describe(mode)}`,
      );
    this.#pathNormalization = mode;
    const attachment = options.l7Attachment ?? "workload";
    if (attachment !== "workload" && attachment !== "waypoint")
      throw optionError(`l7Attachment must be "workload" or "waypoint", not ${describe(attachment)}`);
    this.#l7Attachment = attachment;
    const trustDomains = options.trustDomains ?? [];
    if (
      !Array.isArray(trustDomains) ||
      trustDomains.some((td) => typeof td !== "string" || td === "" || td.includes("/"))
    )
      throw new PolicyError(
        "ERR_POLICY_INVALID",
        `trustDomains must be a list of trust domains, not ${describe(trustDomains)}`,
      );
    this.#trustDomains = Object.freeze([...trustDomains]);
    if (options.customAuthorizer !== undefined && typeof options.customAuthorizer !== "function")
      throw optionError(`customAuthorizer must be a function, not ${describe(options.customAuthorizer)}`);
    this.#customAuthorizer = options.customAuthorizer;
    const logDecisions = options.logDecisions ?? false;
    if (typeof logDecisions !== "boolean")
      throw optionError(`logDecisions must be true or false, not ${describe(logDecisions)}`);
    this.#logDecisions = logDecisions;
    const logger = options.logger ?? noopLogger;
    if (
      typeof logger !== "object" ||
      logger === null ||
      !(["debug", "info", "warn", "error"] as const).every((level) => typeof logger[level] === "function")
    )
      throw optionError(`logger must have debug, info, warn and error methods, not ${describe(logger)}`);
    this.#logger = logger;
    if (options.metrics !== undefined && typeof options.metrics?.counter !== "function")
      throw optionError(`metrics must be a MetricsSink, not ${describe(options.metrics)}`);
    this.#decisions = (options.metrics ?? noopMetrics).counter(
      "ambient_policy_decisions_total",
      "Authorization decisions by outcome.",
      ["decision"],
    );
  }

  /** Increases on every change; pass it to {@link reevaluate} to check only affected connections. */
  get version(): number {
    return this.#version;
  }

  /** Number of stored policies (AuthorizationPolicies and wire Authorizations). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Validates and stores (or replaces) an AuthorizationPolicy or PeerAuthentication. Throws
   * {@link PolicyError} when it is invalid; the other policies keep working.
   */
  apply(input: PolicyResource | unknown): ApplyResult {
    const { resource, warnings } = validateResource(input);
    const result: ApplyResult = {
      resource: `${resource.kind} ${resource.metadata.namespace}/${resource.metadata.name}`,
      warnings: [...warnings],
    };
    if (resource.kind === "PeerAuthentication") {
      this.#peerAuthentications.set(`${resource.metadata.namespace}/${resource.metadata.name}`, resource);
      this.#rebuildPeerEntries();
      this.#changed(resource.metadata.namespace);
    } else {
      const conversion = this.#storeAuthorizationPolicy(resource);
      if (conversion.warning) result.warnings.push(conversion.warning);
      if (conversion.authorization) result.authorization = conversion.authorization;
    }
    for (const w of result.warnings) this.#logger.warn({ resource: result.resource, ...w }, "policy warning");
    return result;
  }

  /**
   * Applies every resource of a YAML stream. Bad documents are returned in `errors` and skipped;
   * the valid ones are applied.
   */
  applyYaml(text: string): { applied: ApplyResult[]; errors: PolicyError[] } {
    const parsed = parsePolicyYaml(text);
    const applied: ApplyResult[] = [];
    const errors = [...parsed.errors];
    for (const r of [...parsed.peerAuthentications, ...parsed.authorizationPolicies]) {
      try {
        applied.push(this.apply(r));
      } catch (err) {
        if (err instanceof PolicyError) errors.push(err);
        else throw err;
      }
    }
    for (const e of parsed.errors) this.#logger.warn({ code: e.code, err: e.message }, "policy rejected");
    return { applied, errors };
  }

  /**
   * Stores (or replaces) a wire `istio.security.Authorization`, e.g. as received over xDS.
   * WORKLOAD_SELECTOR policies stored this way apply only through
   * `destination.workload.authorizationPolicies`. Throws `ERR_WIRE_INVALID` for bad input.
   */
  setAuthorization(authorization: WireAuthorization): void {
    const wire = compileWireAuthorization(authorization);
    for (const p of wire.problems) this.#logger.warn({ policy: wire.key, problem: p }, "wire policy problem");
    this.#put({
      key: wire.key,
      kind: "Authorization",
      namespace: authorization.namespace,
      name: authorization.name,
      action: authorization.action,
      dryRun: authorization.dryRun === true,
      scope: authorization.scope,
      selector: undefined,
      targetRefs: [],
      provider: undefined,
      wire,
      ruleIndexes: undefined,
      policy: undefined,
      l7: undefined,
    });
  }

  /** Removes a stored resource; returns whether it existed. */
  delete(
    kind: "AuthorizationPolicy" | "PeerAuthentication" | "Authorization",
    namespace: string,
    name: string,
  ): boolean {
    const key = `${namespace}/${name}`;
    if (kind === "PeerAuthentication") {
      const existed = this.#peerAuthentications.delete(key);
      if (existed) {
        this.#rebuildPeerEntries();
        this.#changed(namespace);
      }
      return existed;
    }
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.kind !== kind) return false;
    this.#remove(entry);
    this.#changed(namespace, entry.scope === "GLOBAL");
    return true;
  }

  /** Every wire policy ztunnel would receive, including the PeerAuthentication-derived ones. */
  wireAuthorizations(): WireAuthorization[] {
    const out: WireAuthorization[] = [];
    for (const e of this.#entries.values()) if (e.wire) out.push(e.wire.source);
    for (const e of this.#peerEntries.values()) if (e.wire) out.push(e.wire.source);
    return out;
  }

  /**
   * Decides a connection (no `http`: ztunnel's L4 rules, or at a waypoint its policies' TCP form) or
   * an HTTP request (every attribute).
   * Never throws: a malformed request (missing or wrong-typed field, bad address or port, a path
   * refused by normalization) is denied with `error` set, and with `badRequest` when the answer
   * must be 400.
   *
   * When no policy can apply (the engine holds none, or, with `l7Attachment: "waypoint"`, none
   * targets the request's namespaces or the root namespace), an object request is allowed by default
   * without its fields being checked or copied: no policy would read them. `logDecisions` turns this
   * off, so that every decision is logged from checked values.
   */
  evaluate(request: AuthorizationRequest): AuthorizationDecision {
    if (!this.#logDecisions && this.#noPolicyCanApply(request)) {
      this.#decisions.inc(ALLOW_LABELS);
      return { allowed: true, reason: NO_ALLOW_POLICY, layer: request.http === undefined ? "L4" : "L7" };
    }
    return this.#evaluateChecked(request);
  }

  /** {@link evaluate} with every field checked, whatever policies are held. */
  #evaluateChecked(request: AuthorizationRequest): AuthorizationDecision {
    let checked: CheckedRequest;
    try {
      checked = this.#check(request);
    } catch (err) {
      return this.#refuse(err, layerOf(request));
    }
    const layer = checked.layer;
    let decision: AuthorizationDecision;
    try {
      decision = this.#decide(
        checked.request,
        checked.attrs,
        this.#applicable(checked.request, layer),
        layer,
      );
    } catch (err) {
      // Not expected with a checked request; if it happens anyway, fail closed.
      this.#logger.error({ err: describeError(err) }, "authorization failed; denying");
      this.#decisions.inc(DENY_LABELS);
      const error = new PolicyError("ERR_REQUEST_INVALID", `evaluation failed: ${describeError(err)}`, {
        cause: err,
      });
      return { allowed: false, reason: error.message, layer, error };
    }
    this.#decisions.inc(decision.allowed ? ALLOW_LABELS : DENY_LABELS);
    if (this.#logDecisions) {
      const { source, destination } = checked.request;
      this.#logger.info(
        {
          src: `${source.ip}${source.port === undefined ? "" : `:${source.port}`}`,
          srcIdentity: source.identity,
          dst: `${destination.ip}:${destination.port}`,
          allowed: decision.allowed,
          policy: decision.policy,
        },
        decision.reason,
      );
    }
    return decision;
  }

  /**
   * Per applicable policy, which rules matched and why the others did not. Throws
   * {@link PolicyError} (`ERR_REQUEST_INVALID`, `ERR_POLICY_BAD_PATH` or `ERR_POLICY_BAD_METHOD`)
   * for a request {@link evaluate} would refuse, and nothing else.
   */
  explain(request: AuthorizationRequest): PolicyExplanation[] {
    let checked: CheckedRequest;
    try {
      checked = this.#check(request);
    } catch (err) {
      throw asRequestError(err);
    }
    const { layer, attrs } = checked;
    const { source, destination } = checked.request;
    return this.#applicable(checked.request, layer).map((e) => {
      let rules: string[];
      if ((layer === "L7" || e.forTcp === true) && e.policy) rules = explainL7Policy(this.#l7(e), attrs);
      else if (e.wire) {
        const groups = explainWireAuthorization(e.wire, attrs, source.ip, destination.ip);
        const specRules = e.policy?.spec.rules;
        if (specRules !== undefined && e.ruleIndexes !== undefined && specRules.length > 0) {
          // Report per spec rule, so rules ztunnel dropped are visible too.
          rules = specRules.map(
            () => "dropped at L4: the rule uses HTTP attributes (it never matches at ztunnel)",
          );
          e.ruleIndexes.forEach((ruleIndex, group) => {
            rules[ruleIndex] = groups[group] ?? "matched";
          });
        } else rules = groups;
      } else rules = [];
      return { policy: e.key, action: e.action, dryRun: e.dryRun, rules };
    });
  }

  /**
   * Re-decides open connections after a policy change and returns those now denied, so they can
   * be closed (ztunnel drains them with "connection closed due to policy change"). With `since`
   * (an earlier {@link version}), connections whose destination namespace saw no change are skipped
   * (with `l7Attachment: "waypoint"`: the namespaces of `destination.targets`). A malformed connection (or request) is never skipped and comes back denied.
   */
  reevaluate<T extends OpenConnection>(
    connections: Iterable<T>,
    options: { since?: number } = {},
  ): { connection: T; decision: AuthorizationDecision }[] {
    const since = options?.since;
    if (since !== undefined && (typeof since !== "number" || Number.isNaN(since)))
      throw new PolicyError("ERR_REQUEST_INVALID", "reevaluate: options.since must be a number");
    if (
      typeof connections !== "object" ||
      connections === null ||
      typeof (connections as Partial<Iterable<T>>)[Symbol.iterator] !== "function"
    )
      throw new PolicyError("ERR_REQUEST_INVALID", "reevaluate: connections must be iterable");
    const affected = since === undefined ? undefined : this.#changedSince(since);
    const denied: { connection: T; decision: AuthorizationDecision }[] = [];
    for (const connection of connections) {
      const request = requestOf(connection);
      if (affected !== undefined && affected !== "all" && request !== undefined) {
        if (this.#l7Attachment === "waypoint") {
          // A waypoint's policies are those of the targets' namespaces (and the root's, which
          // makes every connection affected), not of the destination workload's.
          const namespaces = targetNamespacesOf(request);
          if (namespaces !== "malformed" && !namespaces.some((ns) => affected.has(ns))) continue;
        } else {
          // The workload's namespace, and those of the policies it lists (which apply from any).
          const namespaces = workloadNamespacesOf(request);
          if (namespaces !== "malformed" && !namespaces.some((ns) => affected.has(ns))) continue;
        }
      }
      const decision =
        request === undefined
          ? this.#refuse(
              new PolicyError("ERR_REQUEST_INVALID", "an open connection needs a request object"),
              "L4",
            )
          : this.#evaluateChecked(request);
      if (!decision.allowed) denied.push({ connection, decision });
    }
    return denied;
  }

  /** The deny for a request that could not be checked. */
  #refuse(err: unknown, layer: "L4" | "L7"): AuthorizationDecision {
    const error = asRequestError(err);
    this.#decisions.inc(DENY_LABELS);
    const badRequest = error.code === "ERR_POLICY_BAD_PATH" || error.code === "ERR_POLICY_BAD_METHOD";
    if (this.#logDecisions) this.#logger.info({ code: error.code, allowed: false }, error.message);
    return badRequest
      ? { allowed: false, reason: `bad request: ${error.message}`, layer, error, badRequest: true }
      : { allowed: false, reason: `invalid request: ${error.message}`, layer, error };
  }

  /** Records a change to a policy of `namespace`; `everywhere` for one that applies mesh-wide. */
  #changed(namespace: string, everywhere = false): void {
    this.#version++;
    this.#changes.push({
      version: this.#version,
      namespace: everywhere || namespace === this.#rootNamespace ? "*" : namespace,
    });
    if (this.#changes.length > 4096) this.#changes.splice(0, 2048);
  }

  #changedSince(since: number): Set<string> | "all" {
    const first = this.#changes[0];
    if (since < this.#version && (first === undefined || first.version > since + 1)) return "all";
    const out = new Set<string>();
    for (const c of this.#changes) {
      if (c.version <= since) continue;
      if (c.namespace === "*") return "all";
      out.add(c.namespace);
    }
    return out;
  }

  #storeAuthorizationPolicy(policy: AuthorizationPolicy): ReturnType<typeof toWireAuthorization> {
    const conversion = toWireAuthorization(policy, {
      rootNamespace: this.#rootNamespace,
      enableDryRun: this.#enableDryRun,
    });
    const { namespace, name } = policy.metadata;
    const spec = policy.spec;
    const targetRefs = [...(spec.targetRefs ?? []), ...(spec.targetRef ? [spec.targetRef] : [])];
    let scope: Entry["scope"];
    if (targetRefs.length > 0) scope = "TARGET_REF";
    else if (spec.selector !== undefined) scope = "WORKLOAD_SELECTOR";
    else scope = namespace === this.#rootNamespace ? "GLOBAL" : "NAMESPACE";
    const entry: Entry = {
      key: `${namespace}/${name}`,
      kind: "AuthorizationPolicy",
      namespace,
      name,
      action: spec.action ?? "ALLOW",
      dryRun: this.#enableDryRun && isDryRun(policy),
      scope,
      selector: spec.selector === undefined ? undefined : (spec.selector.matchLabels ?? {}),
      targetRefs,
      provider: spec.provider?.name,
      wire: conversion.authorization ? compileWireAuthorization(conversion.authorization) : undefined,
      ruleIndexes: conversion.ruleIndexes,
      // A dry-run policy refused for ztunnel is not enforced anywhere.
      policy: conversion.skipped === "dry-run-disabled" ? undefined : policy,
      l7: undefined,
    };
    // At a waypoint, a connection that is not HTTP meets the targetRefs policies as Envoy's network
    // RBAC filter applies them: not the ztunnel form, whose DENY rules with an HTTP part never match,
    // but every rule with its HTTP-only parts dropped (DENY, AUDIT, CUSTOM: wider) or, for ALLOW,
    // every rule without one. CUSTOM and AUDIT apply to connections too.
    let tcp: Entry | undefined;
    if (scope === "TARGET_REF" && this.#l7Attachment === "waypoint" && entry.policy !== undefined) {
      tcp = { ...entry, wire: undefined, ruleIndexes: undefined, l7: undefined, forTcp: true };
    }
    this.#put(tcp === undefined ? entry : { ...entry, tcp });
    return conversion;
  }

  #put(entry: Entry): void {
    const old = this.#entries.get(entry.key);
    if (old) this.#remove(old);
    this.#entries.set(entry.key, entry);
    if (entry.scope === "GLOBAL") this.#global.push(entry);
    else if (
      entry.scope === "WORKLOAD_SELECTOR" &&
      entry.namespace === this.#rootNamespace &&
      entry.selector !== undefined
    ) {
      this.#globalSelected.push(entry);
    } else {
      const bucket = this.#bucket(entry.namespace);
      if (entry.scope === "NAMESPACE") bucket.namespaced.push(entry);
      else if (entry.scope === "WORKLOAD_SELECTOR") bucket.selected.push(entry);
      else bucket.targeted.push(entry);
    }
    this.#changed(entry.namespace, entry.scope === "GLOBAL" || old?.scope === "GLOBAL");
  }

  #remove(entry: Entry): void {
    this.#entries.delete(entry.key);
    const drop = (list: Entry[]): void => {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
    };
    drop(this.#global);
    drop(this.#globalSelected);
    const bucket = this.#byNamespace.get(entry.namespace);
    if (bucket) {
      drop(bucket.namespaced);
      drop(bucket.selected);
      drop(bucket.targeted);
      if (bucket.namespaced.length + bucket.selected.length + bucket.targeted.length === 0)
        this.#byNamespace.delete(entry.namespace);
    }
  }

  #bucket(namespace: string): NamespaceBucket {
    let bucket = this.#byNamespace.get(namespace);
    if (bucket === undefined) {
      bucket = { namespaced: [], selected: [], targeted: [] };
      this.#byNamespace.set(namespace, bucket);
    }
    return bucket;
  }

  #rebuildPeerEntries(): void {
    this.#peerEntries.clear();
    if (this.#peerAuthentications.size === 0) return;
    const all = [...this.#peerAuthentications.values()];
    const namespaceWide = (ns: string): PeerAuthentication | undefined =>
      oldestPeerAuthentication(
        all.filter(
          (p) => p.metadata.namespace === ns && Object.keys(p.spec.selector?.matchLabels ?? {}).length === 0,
        ),
      );
    const mesh = namespaceWide(this.#rootNamespace);
    const wires = [staticStrictAuthorization(this.#rootNamespace)];
    for (const pa of all) {
      const nsPolicy = namespaceWide(pa.metadata.namespace);
      const converted = convertPeerAuthentication(pa, {
        rootNamespace: this.#rootNamespace,
        ...(nsPolicy ? { namespacePolicy: nsPolicy } : {}),
        ...(mesh ? { meshPolicy: mesh } : {}),
      });
      if (converted) wires.push(converted);
    }
    for (const w of wires) {
      const wire = compileWireAuthorization(w);
      this.#peerEntries.set(wire.key, {
        key: wire.key,
        kind: "Authorization",
        namespace: w.namespace,
        name: w.name,
        action: w.action,
        dryRun: false,
        scope: w.scope,
        selector: undefined,
        targetRefs: [],
        provider: undefined,
        wire,
        ruleIndexes: undefined,
        policy: undefined,
        l7: undefined,
      });
    }
  }

  #peerKeysFor(namespace: string, labels: Readonly<Record<string, string>> | undefined): string[] {
    const applicable: PeerAuthentication[] = [];
    for (const pa of this.#peerAuthentications.values()) {
      const ns = pa.metadata.namespace;
      const sel = pa.spec.selector?.matchLabels ?? {};
      const hasSelector = Object.keys(sel).length > 0;
      if (!hasSelector && (ns === this.#rootNamespace || ns === namespace)) applicable.push(pa);
      else if (hasSelector && ns === namespace && labelsSelect(sel, labels)) applicable.push(pa);
    }
    return effectivePeerAuthenticationKeys(this.#rootNamespace, applicable);
  }

  #targetMatches(entry: Entry, targets: readonly PolicyTarget[] | undefined): boolean {
    if (targets === undefined || targets.length === 0) return false;
    return entry.targetRefs.some((ref) => {
      // A reference reaches into the policy's own namespace only (the API refuses any other), and
      // the waypoint GatewayClass is a mesh-wide target, taken from the root namespace only: a
      // policy elsewhere must not place rules on another namespace's Services or on every waypoint.
      if (ref.namespace !== undefined && ref.namespace !== "" && ref.namespace !== entry.namespace)
        return false;
      if (ref.kind === "GatewayClass" && entry.namespace !== this.#rootNamespace) return false;
      return targets.some(
        (t) =>
          t.kind === ref.kind &&
          t.name === ref.name &&
          (ref.kind === "GatewayClass" || t.namespace === entry.namespace) &&
          canonicalGroup(t.kind, t.group) === canonicalGroup(ref.kind, ref.group),
      );
    });
  }

  /**
   * True when {@link #collect} would find no policy for this request whatever its other fields hold:
   * the engine holds no policy at all, or it attaches L7 policy to waypoints and no policy in the
   * namespaces of the request's targets or the root namespace is a targeted one. The connection's
   * addresses, ports and identity are checked (allocation-free, the addresses through the cache), so a
   * malformed connection is still denied; nothing is copied, and the HTTP attributes, the workload and
   * the targets beyond their namespaces are not read. Anything unexpected answers false: the checked
   * path then decides, and denies it.
   */
  #noPolicyCanApply(request: unknown): boolean {
    try {
      if (!isRecord(request)) return false;
      const source = request.source;
      const destination = request.destination;
      if (!isRecord(source) || !isRecord(destination)) return false;
      this.#address(source.ip, "source.ip");
      this.#address(destination.ip, "destination.ip");
      if (!isPort(destination.port)) return false;
      if (source.port !== undefined && !isPort(source.port)) return false;
      if (source.identity !== undefined && typeof source.identity !== "string") return false;
      if (destination.sni !== undefined && typeof destination.sni !== "string") return false;
      if (this.#entries.size === 0 && this.#peerAuthentications.size === 0) return true;
      if (this.#l7Attachment !== "waypoint" || request.http === undefined) return false;
      const targets = destination.targets;
      if (targets === undefined) return true;
      if (!Array.isArray(targets)) return false;
      if ((this.#byNamespace.get(this.#rootNamespace)?.targeted.length ?? 0) > 0) return false;
      for (let i = 0; i < targets.length; i++) {
        const target: unknown = targets[i];
        if (!isRecord(target) || typeof target.namespace !== "string") return false;
        if ((this.#byNamespace.get(target.namespace)?.targeted.length ?? 0) > 0) return false;
      }
      return true;
    } catch {
      return false;
    }
  }

  #applicable(request: AuthorizationRequest, layer: "L4" | "L7"): readonly Entry[] {
    const workload = request.destination.workload;
    // The common L4 case depends on the namespace only: reuse its list until the next change. Not at
    // a waypoint, where a connection's policies are those of its targets, whatever its workload.
    const cacheable =
      layer === "L4" &&
      this.#l7Attachment !== "waypoint" &&
      workload !== undefined &&
      workload.authorizationPolicies === undefined &&
      this.#globalSelected.length === 0 &&
      this.#peerAuthentications.size === 0 &&
      (this.#byNamespace.get(workload.namespace)?.selected.length ?? 0) === 0;
    if (cacheable) {
      const cached = this.#namespaceCache.get(workload.namespace);
      if (cached !== undefined && cached.version === this.#version) return cached.entries;
      const entries = this.#collect(request, layer);
      if (this.#namespaceCache.size >= CACHE_LIMIT) this.#namespaceCache.clear();
      this.#namespaceCache.set(workload.namespace, { version: this.#version, entries });
      return entries;
    }
    return this.#collect(request, layer);
  }

  #collect(request: AuthorizationRequest, layer: "L4" | "L7"): Entry[] {
    const out: Entry[] = [];
    const l4 = layer === "L4";
    const workload = request.destination.workload;
    // A waypoint applies its targetRefs policies only, to HTTP requests and TCP connections alike.
    const waypoint = this.#l7Attachment === "waypoint";
    if (!waypoint) {
      for (let i = 0; i < this.#global.length; i++) this.#add(out, this.#global[i] as Entry, l4);
      if (workload !== undefined) {
        const bucket = this.#byNamespace.get(workload.namespace);
        if (bucket)
          for (let i = 0; i < bucket.namespaced.length; i++)
            this.#add(out, bucket.namespaced[i] as Entry, l4);
        if (workload.authorizationPolicies !== undefined) {
          // Every listed policy applies, whatever its scope, as in ztunnel; one the passes above took
          // already (GLOBAL, NAMESPACE of this namespace) or listed twice is evaluated once.
          const listedFrom = out.length;
          for (const key of workload.authorizationPolicies) {
            const e = this.#entries.get(key) ?? this.#peerEntries.get(key);
            if (e === undefined || e.scope === "GLOBAL" || e.scope === "TARGET_REF") continue;
            if (e.scope === "NAMESPACE" && e.namespace === workload.namespace) continue;
            if (out.indexOf(e, listedFrom) >= 0) continue;
            this.#add(out, e, l4);
          }
        } else {
          for (const e of this.#globalSelected)
            if (e.selector && labelsSelect(e.selector, workload.labels)) this.#add(out, e, l4);
          if (bucket)
            for (const e of bucket.selected)
              if (e.selector && labelsSelect(e.selector, workload.labels)) this.#add(out, e, l4);
          if (this.#peerAuthentications.size > 0) {
            for (const key of this.#peerKeysFor(workload.namespace, workload.labels)) {
              const e = this.#peerEntries.get(key);
              if (e) this.#add(out, e, l4);
            }
          }
        }
      }
    }
    if ((!l4 || waypoint) && request.destination.targets !== undefined) {
      const namespaces = new Set(request.destination.targets.map((t) => t.namespace));
      namespaces.add(this.#rootNamespace);
      for (const ns of namespaces) {
        const bucket = this.#byNamespace.get(ns);
        if (!bucket) continue;
        for (const e of bucket.targeted) {
          if (!this.#targetMatches(e, request.destination.targets)) continue;
          if (!l4) this.#add(out, e, false);
          else if (e.tcp !== undefined) out.push(e.tcp);
        }
      }
    }
    return out;
  }

  /** Entries with nothing to evaluate at this layer (e.g. CUSTOM at ztunnel's L4) are left out. */
  #add(out: Entry[], e: Entry, l4: boolean): void {
    if (e.wire !== undefined || (!l4 && e.policy !== undefined)) out.push(e);
  }

  #address(text: unknown, field: string): IpAddress {
    if (typeof text === "string") {
      const cached = this.#addressCache.get(text);
      if (cached !== undefined) return cached;
      const parsed = parseConnectionAddress(text);
      if (parsed !== undefined) {
        if (this.#addressCache.size >= CACHE_LIMIT) this.#addressCache.clear();
        this.#addressCache.set(text, parsed);
        return parsed;
      }
    }
    throw invalid(`${field} is not an IP address: ${describe(text)}`);
  }

  #identity(identity: string | undefined): IdentityParts {
    if (identity === undefined) return NO_IDENTITY;
    let parts = this.#identityCache.get(identity);
    if (parts === undefined) {
      parts = identityAttributes(identity);
      if (this.#identityCache.size >= CACHE_LIMIT) this.#identityCache.clear();
      this.#identityCache.set(identity, parts);
    }
    return parts;
  }

  /**
   * Checks every field of a request the caller may have built from untrusted data, and returns a
   * copy holding only checked values (so nothing later reads the caller's object again) with the
   * attributes policies match on. Throws {@link PolicyError} naming the first bad field.
   */
  #check(request: unknown): CheckedRequest {
    if (!isRecord(request)) throw invalid(`a request must be an object, not ${describe(request)}`);
    const source = request.source;
    const destination = request.destination;
    if (!isRecord(source)) throw invalid(`source must be an object, not ${describe(source)}`);
    if (!isRecord(destination)) throw invalid(`destination must be an object, not ${describe(destination)}`);
    const sourceIp = this.#address(source.ip, "source.ip");
    const destinationIp = this.#address(destination.ip, "destination.ip");
    const sourcePort = optionalPort(source.port, "source.port");
    const port = destination.port;
    if (!isPort(port)) throw invalid(`destination.port is not a port: ${describe(port)}`);
    const identity = optionalString(source.identity, "source.identity");
    const sni = optionalString(destination.sni, "destination.sni");
    const workload = checkWorkload(destination.workload);
    const targets = checkTargets(destination.targets);
    const rawHttp = request.http;
    const layer: "L4" | "L7" = rawHttp === undefined ? "L4" : "L7";
    const checkedSource: AuthorizationRequest["source"] = { ip: source.ip as string };
    if (sourcePort !== undefined) checkedSource.port = sourcePort;
    if (identity !== undefined) checkedSource.identity = identity;
    const checkedDestination: AuthorizationRequest["destination"] = { ip: destination.ip as string, port };
    if (workload !== undefined) checkedDestination.workload = workload;
    if (targets !== undefined) checkedDestination.targets = targets;
    if (sni !== undefined) checkedDestination.sni = sni;
    const checked: AuthorizationRequest = { source: checkedSource, destination: checkedDestination };
    let http: HttpAttributes | undefined;
    if (rawHttp !== undefined) {
      const h = this.#checkHttp(rawHttp, sourceIp);
      checked.http = h.request;
      http = h.attrs;
    }
    const id = this.#identity(identity);
    return {
      layer,
      request: checked,
      attrs: {
        sourceIp,
        destinationIp,
        destinationPort: port,
        principal: id.principal,
        namespace: id.namespace,
        serviceAccount: id.serviceAccount,
        trustDomain: id.trustDomain,
        http,
        sni,
      },
    };
  }

  #checkHttp(
    raw: unknown,
    sourceIp: IpAddress,
  ): { request: NonNullable<AuthorizationRequest["http"]>; attrs: HttpAttributes } {
    if (!isRecord(raw)) throw invalid(`http must be an object, not ${describe(raw)}`);
    const host = raw.host;
    const method = raw.method;
    const path = raw.path;
    if (typeof host !== "string") throw invalid(`http.host must be a string, not ${describe(host)}`);
    if (typeof method !== "string") throw invalid(`http.method must be a string, not ${describe(method)}`);
    if (typeof path !== "string") throw invalid(`http.path must be a string, not ${describe(path)}`);
    const pathNormalized = raw.pathNormalized;
    if (pathNormalized !== undefined && typeof pathNormalized !== "boolean")
      throw invalid(`http.pathNormalized must be a boolean, not ${describe(pathNormalized)}`);
    const headers = checkHeaders(raw.headers);
    const requestPrincipal = optionalString(raw.requestPrincipal, "http.requestPrincipal");
    const requestIssuer = optionalString(raw.requestIssuer, "http.requestIssuer");
    const requestSubject = optionalString(raw.requestSubject, "http.requestSubject");
    const presenter = optionalString(raw.presenter, "http.presenter");
    const audiences = optionalStrings(raw.audiences, "http.audiences");
    const claims = raw.claims;
    if (claims !== undefined && !isRecord(claims))
      throw invalid(`http.claims must be an object, not ${describe(claims)}`);
    const remoteIpText = optionalString(raw.remoteIp, "http.remoteIp");
    let remoteIp = sourceIp;
    if (remoteIpText !== undefined) {
      const parsed = parseConnectionAddress(remoteIpText);
      if (parsed === undefined)
        throw invalid(`http.remoteIp is not an IP address: ${describe(remoteIpText)}`);
      remoteIp = parsed;
    }
    // Checked after the types, so a 400 is only ever about the request line itself.
    if (!METHOD.test(method))
      throw new PolicyError(
        "ERR_POLICY_BAD_METHOD",
        `the method ${describe(method)} is not an upper-case token`,
      );
    const mode = this.#pathNormalization;
    const normalized = normalizePath(path, mode);
    let policyPath: string;
    if (pathNormalized === true) {
      if (!normalized.ok || normalized.path !== path || normalized.query !== "")
        throw invalid(`http.path is marked normalized but is not in ${mode} normal form: ${describe(path)}`);
      policyPath = path;
    } else if (!normalized.ok) {
      throw new PolicyError("ERR_POLICY_BAD_PATH", normalized.reason, { reason: normalized.reason });
    } else policyPath = normalized.path;
    const request: NonNullable<AuthorizationRequest["http"]> = {
      host,
      method,
      path: pathNormalized === true || !normalized.ok ? path : normalized.path + normalized.query,
      pathNormalized: pathNormalized === true,
      headers: Object.fromEntries(headers),
      audiences: audiences ?? [],
      claims: claims ?? {},
    };
    if (requestPrincipal !== undefined) request.requestPrincipal = requestPrincipal;
    if (requestIssuer !== undefined) request.requestIssuer = requestIssuer;
    if (requestSubject !== undefined) request.requestSubject = requestSubject;
    const token = tokenIdentity(requestIssuer, requestSubject, claims, requestPrincipal);
    if (presenter !== undefined) request.presenter = presenter;
    if (remoteIpText !== undefined) request.remoteIp = remoteIpText;
    return {
      request,
      attrs: {
        host,
        method,
        path: policyPath,
        headers,
        requestPrincipal,
        requestIssuer: token.issuer,
        requestSubject: token.subject,
        audiences: audiences ?? [],
        presenter,
        claims: claims ?? {},
        remoteIp,
      },
    };
  }

  #l7(e: Entry): CompiledL7Policy {
    if (e.l7 === undefined && e.policy !== undefined)
      e.l7 = compileAuthorizationPolicy(e.policy, {
        forTcp: e.forTcp === true,
        trustDomains: this.#trustDomains,
      });
    return e.l7 as CompiledL7Policy;
  }

  /** Index of the matching rule for an entry, or -1; the rule index is in `spec.rules` terms where known. */
  #match(e: Entry, attrs: RequestAttributes, layer: "L4" | "L7"): number {
    if ((layer === "L7" || e.forTcp === true) && e.policy !== undefined)
      return matchL7Policy(this.#l7(e), attrs);
    if (e.wire === undefined) return -1;
    const group = matchWireAuthorization(e.wire, attrs);
    if (group < 0) return -1;
    return e.ruleIndexes?.[group] ?? group;
  }

  #decide(
    request: AuthorizationRequest,
    attrs: RequestAttributes,
    applicable: readonly Entry[],
    layer: "L4" | "L7",
  ): AuthorizationDecision {
    const decision = this.#enforce(request, attrs, applicable, layer);
    let anyDryRun = false;
    for (let i = 0; i < applicable.length; i++) if ((applicable[i] as Entry).dryRun) anyDryRun = true;
    if (anyDryRun) this.#addDryRun(decision, attrs, applicable, layer);
    return decision;
  }

  /** Reports what dry-run policies would do, and the decision if they were enforced. */
  #addDryRun(
    decision: AuthorizationDecision,
    attrs: RequestAttributes,
    applicable: readonly Entry[],
    layer: "L4" | "L7",
  ): void {
    const notes: string[] = [];
    let shadowDeny = false;
    let shadowAllowPolicies = 0;
    let shadowAllowMatched = false;
    for (const e of applicable) {
      if (e.action !== "ALLOW" && e.action !== "DENY") continue;
      const idx = this.#match(e, attrs, layer);
      if (e.action === "DENY" && idx >= 0) shadowDeny = true;
      if (e.action === "ALLOW") {
        shadowAllowPolicies++;
        if (idx >= 0) shadowAllowMatched = true;
      }
      if (!e.dryRun) continue;
      if (idx >= 0)
        notes.push(
          `${e.key}: ${e.action} rule ${idx} matched; would ${e.action === "DENY" ? "deny" : "allow"}`,
        );
      else notes.push(`${e.key}: ${e.action} policy matched no rule`);
    }
    decision.dryRun = notes;
    decision.dryRunAllowed =
      !decision.error &&
      !shadowDeny &&
      (shadowAllowPolicies === 0 || shadowAllowMatched) &&
      decision.action !== "CUSTOM";
  }

  #enforce(
    request: AuthorizationRequest,
    attrs: RequestAttributes,
    applicable: readonly Entry[],
    layer: "L4" | "L7",
  ): AuthorizationDecision {
    // Only L7 requests and a waypoint's connections meet CUSTOM and AUDIT policies: ztunnel's
    // rules leave them out (see #add).
    for (const e of applicable) {
      if (e.action !== "CUSTOM" || e.dryRun) continue;
      const idx = this.#match(e, attrs, layer);
      if (idx < 0) continue;
      const provider = e.provider ?? "";
      let verdict: boolean;
      try {
        verdict =
          this.#customAuthorizer?.(request, { namespace: e.namespace, name: e.name, provider }) === true;
      } catch (err) {
        // ext_authz with failure_mode_allow: false: an authorizer failure denies.
        this.#logger.warn({ policy: e.key, err: describeError(err) }, "custom authorizer failed");
        return {
          allowed: false,
          reason: `denied by CUSTOM policy ${e.key}: the authorizer for provider ${provider} failed: ${describeError(err)}`,
          policy: e.key,
          action: "CUSTOM",
          rule: idx,
          layer,
        };
      }
      if (verdict) continue;
      return {
        allowed: false,
        reason: this.#customAuthorizer
          ? `denied by CUSTOM policy ${e.key} (provider ${provider})`
          : `denied by CUSTOM policy ${e.key}: no authorizer for provider ${provider} (fail closed)`,
        policy: e.key,
        action: "CUSTOM",
        rule: idx,
        layer,
      };
    }
    for (let i = 0; i < applicable.length; i++) {
      const e = applicable[i] as Entry;
      if (e.action !== "DENY" || e.dryRun) continue;
      const idx = this.#match(e, attrs, layer);
      if (idx >= 0) {
        return {
          allowed: false,
          reason: `explicitly denied by: ${e.key} (rule ${idx})`,
          policy: e.key,
          action: "DENY",
          rule: idx,
          layer,
        };
      }
    }
    let audit: string[] | undefined;
    for (const e of applicable) {
      if (e.action !== "AUDIT" || e.dryRun || this.#match(e, attrs, layer) < 0) continue;
      if (audit === undefined) audit = [];
      audit.push(e.key);
    }
    let decision: AuthorizationDecision | undefined;
    let allowPolicies = 0;
    for (let i = 0; i < applicable.length; i++) {
      const e = applicable[i] as Entry;
      if (e.action !== "ALLOW" || e.dryRun) continue;
      allowPolicies++;
      const idx = this.#match(e, attrs, layer);
      if (idx >= 0) {
        decision = {
          allowed: true,
          reason: `allowed by: ${e.key} (rule ${idx})`,
          policy: e.key,
          action: "ALLOW",
          rule: idx,
          layer,
        };
        break;
      }
    }
    if (decision === undefined) {
      if (allowPolicies === 0) decision = { allowed: true, reason: NO_ALLOW_POLICY, layer };
      else {
        // Names are only gathered on this (rare) path to keep the allow path allocation-free.
        const names: string[] = [];
        for (let i = 0; i < applicable.length && names.length < 5; i++) {
          const e = applicable[i] as Entry;
          if (e.action === "ALLOW" && !e.dryRun) names.push(e.key);
        }
        const more = allowPolicies > names.length ? ` and ${allowPolicies - names.length} more` : "";
        const checked = names.join(", ") + more;
        decision = {
          allowed: false,
          reason: `allow policies exist, but none allowed (checked: ${checked})`,
          layer,
        };
      }
    }
    if (audit !== undefined) decision.audit = audit;
    return decision;
  }
}

/** Creates an {@link AuthorizationEngine}. */
export function createAuthorizationEngine(options: AuthorizationEngineOptions = {}): AuthorizationEngine {
  return new AuthorizationEngine(options);
}
