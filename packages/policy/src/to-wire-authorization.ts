import { PolicyError } from "./errors.js";
import { cidrTextToWire } from "./ip-address.js";
import type { AuthorizationPolicy, Condition, Rule } from "./kubernetes-types.js";
import { patternToStringMatch } from "./string-match.js";
import {
  emptyWireMatch,
  type StringMatch,
  type WireAction,
  type WireAddress,
  type WireAuthorization,
  type WireClause,
  type WireGroup,
  type WireMatch,
  type WireRule,
  type WireScope,
  type WireServiceAccountMatch,
} from "./wire.js";

/** Status condition a control plane shows for a lossy or refused conversion. */
export interface ConversionWarning {
  /** Always `UnsupportedValue`, istiod's reason for these conditions. */
  readonly reason: "UnsupportedValue";
  readonly message: string;
  /** The HTTP-only fields that were found, sorted (empty for other warnings, and for trust domains alone). */
  readonly fields: readonly string[];
}

/** Result of {@link toWireAuthorization}. */
export interface ConversionResult {
  /** The policy to send to ztunnel; absent when it is not for ztunnel or was refused. */
  readonly authorization?: WireAuthorization;
  readonly warning?: ConversionWarning;
  /** Why no authorization was produced. */
  readonly skipped?: "targetRefs" | "unsupported-action" | "dry-run-disabled";
  /** For each group of `authorization`, the index of the `spec.rules` entry it came from. */
  readonly ruleIndexes?: readonly number[];
}

/** Options of {@link toWireAuthorization}. */
export interface ConvertOptions {
  /** Mesh root namespace: policies there without a selector become GLOBAL. Default `istio-system` (meshConfig `rootNamespace`). */
  rootNamespace?: string;
  /**
   * Send `istio.io/dry-run` policies to ztunnel with `dryRun: true`. Default false, as istiod's
   * `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY`: such a policy is refused with a status message.
   * Turn it on only when every ztunnel is 1.29 or newer; an older one enforces a dry-run policy.
   */
  enableDryRun?: boolean;
}

/** The annotation that marks a policy as dry-run. */
export const DRY_RUN_ANNOTATION = "istio.io/dry-run";

const L4_WHEN_KEYS = new Set([
  "source.ip",
  "source.namespace",
  "source.principal",
  "destination.ip",
  "destination.port",
]);

const HTTP_RULE_FORMAT = (found: string, boilerplate: string): string =>
  `ztunnel does not support HTTP attributes (found: ${found}). In ambient mode you must use a waypoint proxy to enforce HTTP rules. ${boilerplate}`;
const DENY_NO_EFFECT =
  "After omitting unsupported HTTP attributes, this DENY policy has no enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy and use a targetRef to enforce this policy.";
const DENY_MIXED =
  "DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested.";
const TRUST_DOMAINS_IGNORED = (found: string): string =>
  `ztunnel does not match trust domains (found: ${found}): they are ignored, and each source is matched on its other fields (a source with nothing else matches no caller).`;
const DENY_NO_RULES = "This DENY policy has no enforceable rules at ztunnel and will have no effect.";
const ALLOW_DROPPED =
  "Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.";

/** Go's strconv.ParseBool. */
export function parseGoBool(text: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(text)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(text)) return false;
  return undefined;
}

/** Reads the dry-run annotation; an unparsable value counts as false. */
export function isDryRun(policy: AuthorizationPolicy): boolean {
  const value = policy.metadata.annotations?.[DRY_RUN_ANNOTATION];
  return value === undefined || value === "" ? false : (parseGoBool(value) ?? false);
}

function toPorts(values: readonly string[] | undefined): number[] {
  const out: number[] = [];
  for (const v of values ?? []) {
    if (/^[0-9]+$/.test(v) && Number(v) <= 65535) out.push(Number(v));
  }
  return out;
}

function toAddresses(values: readonly string[] | undefined): WireAddress[] {
  const out: WireAddress[] = [];
  for (const v of values ?? []) {
    if (v === "") continue;
    const wire = cidrTextToWire(v);
    if (wire) out.push(wire);
  }
  return out;
}

function toStringMatches(values: readonly string[] | undefined): StringMatch[] {
  return (values ?? []).map(patternToStringMatch);
}

function toServiceAccounts(
  values: readonly string[] | undefined,
  namespace: string,
): WireServiceAccountMatch[] {
  return (values ?? []).map((v) => {
    const slash = v.indexOf("/");
    return slash >= 0
      ? { namespace: v.slice(0, slash), serviceAccount: v.slice(slash + 1) }
      : { namespace, serviceAccount: v };
  });
}

function sourceHttpFields(src: NonNullable<Rule["from"]>[number]["source"]): string[] {
  const found: string[] = [];
  for (const f of [
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "requestPrincipals",
    "notRequestPrincipals",
  ] as const) {
    if ((src[f]?.length ?? 0) > 0) found.push(f);
  }
  return found;
}

/**
 * A wire match has no trust domain field. The source is matched on its other fields, so an ALLOW
 * source admits callers of any trust domain and a DENY source denies them all (wider either way);
 * a source with nothing else is an empty match, which matches no caller.
 */
function sourceTrustDomainFields(src: NonNullable<Rule["from"]>[number]["source"]): string[] {
  return (["trustDomains", "notTrustDomains"] as const).filter((f) => (src[f]?.length ?? 0) > 0);
}

function operationHttpFields(op: NonNullable<Rule["to"]>[number]["operation"]): string[] {
  const found: string[] = [];
  for (const f of ["hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"] as const) {
    if ((op[f]?.length ?? 0) > 0) found.push(f);
  }
  return found;
}

function whenMatch(cond: Condition): WireMatch {
  const m = emptyWireMatch();
  const pos = cond.values;
  const neg = cond.notValues;
  switch (cond.key) {
    case "source.namespace":
      m.namespaces = toStringMatches(pos);
      m.notNamespaces = toStringMatches(neg);
      break;
    case "source.principal":
      m.principals = toStringMatches(pos);
      m.notPrincipals = toStringMatches(neg);
      break;
    case "source.ip":
      m.sourceIps = toAddresses(pos);
      m.notSourceIps = toAddresses(neg);
      break;
    case "destination.port":
      m.destinationPorts = toPorts(pos);
      m.notDestinationPorts = toPorts(neg);
      break;
    case "destination.ip":
      m.destinationIps = toAddresses(pos);
      m.notDestinationIps = toAddresses(neg);
      break;
  }
  return m;
}

/** Converts one rule to wire rules (ANDed); undefined when an ALLOW rule is dropped for HTTP attributes. */
function convertRule(
  action: WireAction,
  rule: Rule,
  namespace: string,
  httpFound: Set<string>,
  trustDomainsFound: Set<string>,
): WireRule[] | undefined {
  let l7 = false;
  const clauses: WireRule[] = [];
  const toMatches: WireMatch[] = [];
  for (const { operation } of rule.to ?? []) {
    const problems = operationHttpFields(operation);
    if (problems.length > 0) {
      l7 = true;
      for (const p of problems) httpFound.add(p);
    }
    toMatches.push({
      ...emptyWireMatch(),
      destinationPorts: toPorts(operation.ports),
      notDestinationPorts: toPorts(operation.notPorts),
    });
  }
  const fromMatches: WireMatch[] = [];
  for (const { source } of rule.from ?? []) {
    const problems = sourceHttpFields(source);
    if (problems.length > 0) {
      l7 = true;
      for (const p of problems) httpFound.add(p);
    }
    for (const f of sourceTrustDomainFields(source)) trustDomainsFound.add(f);
    const m: WireMatch = {
      ...emptyWireMatch(),
      sourceIps: toAddresses(source.ipBlocks),
      notSourceIps: toAddresses(source.notIpBlocks),
      namespaces: toStringMatches(source.namespaces),
      notNamespaces: toStringMatches(source.notNamespaces),
      principals: toStringMatches(source.principals),
      notPrincipals: toStringMatches(source.notPrincipals),
    };
    const sa = toServiceAccounts(source.serviceAccounts, namespace);
    const notSa = toServiceAccounts(source.notServiceAccounts, namespace);
    if (sa.length > 0) m.serviceAccounts = sa;
    if (notSa.length > 0) m.notServiceAccounts = notSa;
    fromMatches.push(m);
  }
  if (toMatches.length > 0) clauses.push({ matches: toMatches });
  if (fromMatches.length > 0) clauses.push({ matches: fromMatches });
  for (const cond of rule.when ?? []) {
    if (!L4_WHEN_KEYS.has(cond.key)) {
      l7 = true;
      httpFound.add(cond.key);
    }
    clauses.push({ matches: [whenMatch(cond)] });
  }
  if (action === "ALLOW" && l7) return undefined;
  return clauses;
}

/** True when a match sets nothing (ztunnel skips it: it never matches). */
export function isWireMatchEmpty(m: WireMatch): boolean {
  return (
    m.namespaces.length === 0 &&
    m.notNamespaces.length === 0 &&
    m.principals.length === 0 &&
    m.notPrincipals.length === 0 &&
    m.sourceIps.length === 0 &&
    m.notSourceIps.length === 0 &&
    m.destinationIps.length === 0 &&
    m.notDestinationIps.length === 0 &&
    m.destinationPorts.length === 0 &&
    m.notDestinationPorts.length === 0 &&
    (m.serviceAccounts?.length ?? 0) === 0 &&
    (m.notServiceAccounts?.length ?? 0) === 0
  );
}

function groupClauses(g: WireGroup): WireClause[] {
  const out: WireClause[] = [];
  for (const r of g.rules) {
    if (r.matches !== undefined) out.push({ matches: r.matches });
    if (r.clauses !== undefined) out.push(...r.clauses);
  }
  return out;
}

/** True when at least one group can ever match at ztunnel. */
function hasEffectiveGroups(groups: readonly WireGroup[]): boolean {
  return groups.some((g) => groupClauses(g).every((c) => c.matches.some((m) => !isWireMatchEmpty(m))));
}

/**
 * Refuses, with `ERR_POLICY_INVALID`, a value that is not shaped like a resource: an object with
 * `metadata.name`, `metadata.namespace` (strings) and a `spec` object. The converters trust the
 * fields inside; `validateResource` checks those.
 */
export function requireResourceShape(resource: unknown, kind: string): void {
  const r = resource as { metadata?: { name?: unknown; namespace?: unknown }; spec?: unknown } | null;
  const problem =
    typeof r !== "object" || r === null || Array.isArray(r)
      ? `must be an object, not ${r === null ? "null" : Array.isArray(r) ? "an array" : typeof r}`
      : typeof r.metadata !== "object" || r.metadata === null
        ? "metadata must be an object"
        : typeof r.metadata.name !== "string" || typeof r.metadata.namespace !== "string"
          ? "metadata.name and metadata.namespace must be strings"
          : typeof r.spec !== "object" || r.spec === null || Array.isArray(r.spec)
            ? "spec must be an object"
            : undefined;
  if (problem === undefined) return;
  const path = problem.startsWith("must") ? "" : (problem.split(" ")[0] ?? "");
  throw new PolicyError("ERR_POLICY_INVALID", `a ${kind}: ${problem}`, {
    issues: [{ path, message: problem }],
  });
}

/**
 * Converts an AuthorizationPolicy to the `istio.security.Authorization` ztunnel enforces, with the
 * same rules as istiod: `targetRefs` policies are not for ztunnel; AUDIT and CUSTOM are refused;
 * no selector means NAMESPACE scope (GLOBAL in the root namespace); HTTP-only fields drop the whole
 * rule of an ALLOW policy and are ignored in a DENY policy, each with a warning; `trustDomains` and
 * `notTrustDomains` are ignored in both (a warning of ours: istiod writes none); `istio.io/dry-run`
 * policies are refused unless `enableDryRun` is true.
 */
export function toWireAuthorization(
  policy: AuthorizationPolicy,
  options: ConvertOptions = {},
): ConversionResult {
  requireResourceShape(policy, "AuthorizationPolicy");
  const rootNamespace = options.rootNamespace ?? "istio-system";
  const { name, namespace } = policy.metadata;
  const spec = policy.spec;
  const dryRun = isDryRun(policy);
  if (dryRun && options.enableDryRun !== true) {
    return {
      skipped: "dry-run-disabled",
      warning: {
        reason: "UnsupportedValue",
        message: `found policy "${namespace}/${name}" using dry-run annotation, but support for ambient dry-run authorizationPolicies isn't enabled`,
        fields: [],
      },
    };
  }
  if (spec.targetRef !== undefined || (spec.targetRefs?.length ?? 0) > 0) return { skipped: "targetRefs" };
  let scope: WireScope = "WORKLOAD_SELECTOR";
  if (spec.selector === undefined) scope = namespace === rootNamespace ? "GLOBAL" : "NAMESPACE";
  const specAction = spec.action ?? "ALLOW";
  if (specAction !== "ALLOW" && specAction !== "DENY") {
    return {
      skipped: "unsupported-action",
      warning: {
        reason: "UnsupportedValue",
        message: `ztunnel does not support the ${specAction} action`,
        fields: [],
      },
    };
  }
  const action: WireAction = specAction;
  const groups: WireGroup[] = [];
  const httpFound = new Set<string>();
  const trustDomainsFound = new Set<string>();
  const ruleIndexes: number[] = [];
  (spec.rules ?? []).forEach((rule, index) => {
    const clauses = convertRule(action, rule, namespace, httpFound, trustDomainsFound);
    if (clauses === undefined) return;
    groups.push({ rules: clauses });
    ruleIndexes.push(index);
  });
  const authorization: WireAuthorization = { name, namespace, scope, action, groups };
  if (dryRun) authorization.dryRun = true;
  if (httpFound.size === 0 && trustDomainsFound.size === 0) return { authorization, ruleIndexes };
  const fields = [...httpFound].sort();
  const effective = action === "ALLOW" || hasEffectiveGroups(groups);
  const messages: string[] = [];
  if (fields.length > 0) {
    const boilerplate = action === "DENY" ? (effective ? DENY_MIXED : DENY_NO_EFFECT) : ALLOW_DROPPED;
    messages.push(HTTP_RULE_FORMAT(fields.join(", "), boilerplate));
  }
  if (trustDomainsFound.size > 0) {
    messages.push(TRUST_DOMAINS_IGNORED([...trustDomainsFound].sort().join(", ")));
    if (fields.length === 0 && !effective) messages.push(DENY_NO_RULES);
  }
  return {
    authorization,
    ruleIndexes,
    warning: { reason: "UnsupportedValue", message: messages.join(" "), fields },
  };
}
