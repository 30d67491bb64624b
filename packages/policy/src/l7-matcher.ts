import { cidrContains, type IpAddress, type IpCidr, parseCidr } from "./ip-address.js";
import type { AuthorizationPolicy, Condition, Operation, Rule, Source } from "./kubernetes-types.js";
import { compilePathPattern, matchPath } from "./path-match.js";
import {
  type CompiledStringMatch,
  compilePattern,
  matchString,
  matchStringIgnoreCase,
} from "./string-match.js";
import { ruleWithTrustDomainAliases } from "./trust-domain-aliases.js";
import type { ConnectionAttributes } from "./wire-matcher.js";

/** HTTP facts of a request, already normalised. */
export interface HttpAttributes {
  readonly host: string;
  readonly method: string;
  /** Normalised path without query. */
  readonly path: string;
  /** Lower-case header name to its values joined with ",". */
  readonly headers: ReadonlyMap<string, string>;
  /** `iss/sub`, for explanations; matching reads `requestIssuer` and `requestSubject`. */
  readonly requestPrincipal: string | undefined;
  /** The verified JWT's `iss` claim (a string), if any. */
  readonly requestIssuer: string | undefined;
  /** The verified JWT's `sub` claim (a string), if any. */
  readonly requestSubject: string | undefined;
  readonly audiences: readonly string[];
  readonly presenter: string | undefined;
  readonly claims: Readonly<Record<string, unknown>>;
  /** Original client address (XFF / PROXY protocol); the peer address when unknown. */
  readonly remoteIp: IpAddress;
}

/** Everything an AuthorizationPolicy can look at. `http` is absent for plain TCP. */
export interface RequestAttributes extends ConnectionAttributes {
  readonly http: HttpAttributes | undefined;
  readonly sni: string | undefined;
}

type Pred = (a: RequestAttributes) => boolean;

/** One compiled AuthorizationPolicy rule. */
export interface CompiledL7Rule {
  /**
   * Set when the rule is left out of the policy's TCP form (an ALLOW rule with an HTTP-only field):
   * it never matches, and this says why.
   */
  readonly dropped?: string;
  /** ORed; undefined when the rule has no `from`. */
  readonly from: readonly Pred[] | undefined;
  /** ORed; undefined when the rule has no `to`. */
  readonly to: readonly Pred[] | undefined;
  /** ANDed. */
  readonly when: readonly { key: string; test: Pred }[];
  /** Necessary condition: the destination port is one of these (every `to` lists ports). */
  readonly ports: ReadonlySet<number> | undefined;
  /** Necessary condition: the principal is one of these (every `from` lists only exact principals). */
  readonly principals: ReadonlySet<string> | undefined;
}

/** A compiled AuthorizationPolicy; a policy with no rules never matches. */
export interface CompiledL7Policy {
  readonly rules: readonly CompiledL7Rule[];
  /** Union of the rule port filters when every rule has one. */
  readonly ports: ReadonlySet<number> | undefined;
  /** Union of the rule principal filters when every rule has one. */
  readonly principals: ReadonlySet<string> | undefined;
}

/** Builds "any positive matches (if any) and no negative matches" over an optional attribute. */
function listPred<T, A>(
  positive: readonly T[] | undefined,
  negative: readonly T[] | undefined,
  get: (a: RequestAttributes) => A | undefined,
  test: (m: T, v: A) => boolean,
): Pred | undefined {
  const pos = positive ?? [];
  const neg = negative ?? [];
  if (pos.length === 0 && neg.length === 0) return undefined;
  // Plain loops: this runs per rule per request, and must not allocate.
  return (a) => {
    const v = get(a);
    if (pos.length > 0) {
      if (v === undefined) return false;
      let any = false;
      for (let i = 0; i < pos.length; i++) {
        if (test(pos[i] as T, v)) {
          any = true;
          break;
        }
      }
      if (!any) return false;
    }
    if (v !== undefined) for (let i = 0; i < neg.length; i++) if (test(neg[i] as T, v)) return false;
    return true;
  };
}

const str = (values: readonly string[] | undefined): CompiledStringMatch[] | undefined =>
  values?.map(compilePattern);
const cidr = (values: readonly string[] | undefined): IpCidr[] | undefined =>
  values?.map((v) => parseCidr(v)).filter((c): c is IpCidr => c !== undefined);
const ports = (values: readonly string[] | undefined): number[] | undefined => values?.map(Number);
const sm = (m: CompiledStringMatch, v: string): boolean => matchString(m, v);
/**
 * A trust domain of a rule against the caller's, as istiod writes them for Envoy: `*` is any trust
 * domain (a caller with an identity), one `*` at the start or the end matches any run of characters
 * there (a trust domain has no `/`), anything else is exact.
 */
const inTrustDomain = (pattern: string, trustDomain: string): boolean => {
  if (pattern === "*") return true;
  const star = pattern.indexOf("*");
  if (star < 0) return pattern === trustDomain;
  const prefix = pattern.slice(0, star);
  const suffix = pattern.slice(star + 1);
  return (
    trustDomain.length >= prefix.length + suffix.length &&
    trustDomain.startsWith(prefix) &&
    trustDomain.endsWith(suffix)
  );
};
const trustDomainOf = (a: RequestAttributes): string | undefined => a.trustDomain;
const inCidr = (c: IpCidr, v: IpAddress): boolean => cidrContains(c, v);

function serviceAccounts(values: readonly string[] | undefined, namespace: string): string[] | undefined {
  return values?.map((v) => (v.includes("/") ? v : `${namespace}/${v}`));
}

const principalOf = (a: RequestAttributes): string | undefined => a.principal;
const namespaceOf = (a: RequestAttributes): string | undefined =>
  a.principal === undefined || a.namespace === "" ? undefined : a.namespace;
const serviceAccountOf = (a: RequestAttributes): string | undefined =>
  a.serviceAccount === undefined ? undefined : `${a.namespace}/${a.serviceAccount}`;

function and(preds: (Pred | undefined)[]): Pred {
  const list = preds.filter((p): p is Pred => p !== undefined);
  return (a) => {
    for (let i = 0; i < list.length; i++) if (!(list[i] as Pred)(a)) return false;
    return true;
  };
}

/** One side of a request principal pattern, as istiod writes Envoy's string matcher for it. */
type ClaimMatch =
  | { readonly kind: "any" }
  | { readonly kind: "exact" | "prefix" | "suffix"; readonly value: string };

/** A `requestPrincipals` (or `request.auth.principal`) value: an issuer and a subject pattern. */
export interface RequestPrincipalMatch {
  readonly iss: ClaimMatch;
  readonly sub: ClaimMatch;
}

const ANY_CLAIM: ClaimMatch = { kind: "any" };

/**
 * istiod's `requestPrincipalGenerator` (pilot/pkg/security/authz/model/generator.go): the value is split
 * at its last `/` (an issuer may be a URL); `*` is any issuer and any subject; a leading `*` makes the
 * issuer a suffix and the subject exact (`*` before the `/`: any issuer), or with no `/` any issuer and
 * a subject suffix; a trailing `*` keeps the issuer exact and makes the subject a prefix (`/*`: any
 * subject), or with no `/` an issuer prefix and any subject; anything else is exact on both sides.
 */
export function compileRequestPrincipal(value: string): RequestPrincipalMatch {
  const idx = value.lastIndexOf("/");
  const found = idx >= 0;
  const iss = found ? value.slice(0, idx) : value;
  const sub = found ? value.slice(idx + 1) : "";
  const exact = (v: string): ClaimMatch => ({ kind: "exact", value: v });
  if (value === "*") return { iss: ANY_CLAIM, sub: ANY_CLAIM };
  if (value.startsWith("*")) {
    if (found)
      return { iss: iss === "*" ? ANY_CLAIM : { kind: "suffix", value: iss.slice(1) }, sub: exact(sub) };
    return { iss: ANY_CLAIM, sub: { kind: "suffix", value: value.slice(1) } };
  }
  if (value.endsWith("*")) {
    if (found)
      return { iss: exact(iss), sub: sub === "*" ? ANY_CLAIM : { kind: "prefix", value: sub.slice(0, -1) } };
    return { iss: { kind: "prefix", value: value.slice(0, -1) }, sub: ANY_CLAIM };
  }
  return { iss: exact(iss), sub: exact(sub) };
}

/** Envoy's string matcher on a claim; a claim that is absent (or not a string) never matches. */
function matchClaim(m: ClaimMatch, v: string | undefined): boolean {
  if (v === undefined) return false;
  switch (m.kind) {
    // Envoy's `.+` (RE2, full match): at least one character, `.` not matching a newline.
    case "any":
      return v.length > 0 && !v.includes("\n");
    case "exact":
      return v === m.value;
    case "prefix":
      return v.startsWith(m.value);
    case "suffix":
      return v.endsWith(m.value);
  }
}

const matchRequestPrincipal = (m: RequestPrincipalMatch, http: HttpAttributes): boolean =>
  matchClaim(m.iss, http.requestIssuer) && matchClaim(m.sub, http.requestSubject);

function compileSource(s: Source, namespace: string): Pred {
  return and([
    listPred(str(s.principals), str(s.notPrincipals), principalOf, sm),
    listPred(
      s.requestPrincipals?.map(compileRequestPrincipal),
      s.notRequestPrincipals?.map(compileRequestPrincipal),
      (a) => a.http,
      matchRequestPrincipal,
    ),
    listPred(str(s.namespaces), str(s.notNamespaces), namespaceOf, sm),
    listPred(
      serviceAccounts(s.serviceAccounts, namespace),
      serviceAccounts(s.notServiceAccounts, namespace),
      serviceAccountOf,
      (m, v) => m === v,
    ),
    listPred(cidr(s.ipBlocks), cidr(s.notIpBlocks), (a) => a.sourceIp, inCidr),
    listPred(
      cidr(s.remoteIpBlocks),
      cidr(s.notRemoteIpBlocks),
      (a) => a.http?.remoteIp ?? a.sourceIp,
      inCidr,
    ),
    listPred(s.trustDomains, s.notTrustDomains, trustDomainOf, inTrustDomain),
  ]);
}

function compileOperation(o: Operation): Pred {
  return and([
    listPred(str(o.hosts), str(o.notHosts), (a) => a.http?.host, matchStringIgnoreCase),
    listPred(
      ports(o.ports),
      ports(o.notPorts),
      (a) => a.destinationPort,
      (m, v) => m === v,
    ),
    listPred(str(o.methods), str(o.notMethods), (a) => a.http?.method, sm),
    listPred(
      o.paths?.map(compilePathPattern),
      o.notPaths?.map(compilePathPattern),
      (a) => a.http?.path,
      matchPath,
    ),
  ]);
}

/** Istio's header rule: the pattern must match the whole value or one comma-separated element. */
function headerRegex(pattern: string): RegExp | "presence" {
  if (pattern === "*") return "presence";
  const quote = (t: string): string => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let r: string;
  if (pattern.startsWith("*")) r = `.*${quote(pattern.slice(1))}`;
  else if (pattern.endsWith("*")) r = `${quote(pattern.slice(0, -1))}.*`;
  else r = quote(pattern);
  return new RegExp(`^${r}$|^${r},.*|.*,${r},.*|.*,${r}$`);
}

function bracketKeys(key: string, prefix: string): string[] {
  return [...key.slice(prefix.length).matchAll(/\[([^\]]+)\]/g)].map((m) => m[1] as string);
}

function claimValues(
  claims: Readonly<Record<string, unknown>>,
  path: readonly string[],
): string[] | undefined {
  let cur: unknown = claims;
  for (const p of path) {
    // Own properties only: `claims[constructor]` is not a claim.
    if (typeof cur !== "object" || cur === null || Array.isArray(cur) || !Object.hasOwn(cur, p))
      return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  if (cur === undefined || cur === null) return undefined;
  // Envoy's metadata matcher compares strings, and lists of strings, only: `true` is not "true".
  if (typeof cur === "string") return [cur];
  if (!Array.isArray(cur)) return [];
  return cur.filter((v): v is string => typeof v === "string");
}

function compileCondition(cond: Condition, namespace: string): Pred {
  const { key } = cond;
  const values = cond.values;
  const notValues = cond.notValues;
  const anyOf = <A>(
    get: (a: RequestAttributes) => readonly A[] | undefined,
    test: (m: CompiledStringMatch, v: A) => boolean,
  ): Pred =>
    listPred(
      str(values),
      str(notValues),
      (a) => get(a),
      (m, list: readonly A[]) => list.some((v) => test(m, v)),
    ) ?? (() => true);
  if (key.startsWith("request.headers[")) {
    const name = (bracketKeys(key, "request.headers")[0] ?? "").toLowerCase();
    const matchers = (list: readonly string[] | undefined): (RegExp | "presence")[] | undefined =>
      list?.map(headerRegex);
    return (
      listPred(
        matchers(values),
        matchers(notValues),
        (a) => a.http?.headers.get(name),
        (m, v) => (m === "presence" ? true : m.test(v)),
      ) ?? (() => true)
    );
  }
  if (key.startsWith("request.auth.claims[")) {
    const path = bracketKeys(key, "request.auth.claims");
    return anyOf((a) => (a.http ? claimValues(a.http.claims, path) : undefined), sm);
  }
  switch (key) {
    case "source.ip":
      return listPred(cidr(values), cidr(notValues), (a) => a.sourceIp, inCidr) ?? (() => true);
    case "remote.ip":
      return (
        listPred(cidr(values), cidr(notValues), (a) => a.http?.remoteIp ?? a.sourceIp, inCidr) ?? (() => true)
      );
    case "destination.ip":
      return listPred(cidr(values), cidr(notValues), (a) => a.destinationIp, inCidr) ?? (() => true);
    case "destination.port":
      return (
        listPred(
          ports(values),
          ports(notValues),
          (a) => a.destinationPort,
          (m, v) => m === v,
        ) ?? (() => true)
      );
    case "source.namespace":
      return listPred(str(values), str(notValues), namespaceOf, sm) ?? (() => true);
    case "source.principal":
      return listPred(str(values), str(notValues), principalOf, sm) ?? (() => true);
    case "source.trustDomain":
      return listPred(values, notValues, trustDomainOf, inTrustDomain) ?? (() => true);
    case "source.serviceAccount":
      return (
        listPred(
          serviceAccounts(values, namespace),
          serviceAccounts(notValues, namespace),
          serviceAccountOf,
          (m, v) => m === v,
        ) ?? (() => true)
      );
    case "request.auth.principal":
      return (
        listPred(
          values?.map(compileRequestPrincipal),
          notValues?.map(compileRequestPrincipal),
          (a) => a.http,
          matchRequestPrincipal,
        ) ?? (() => true)
      );
    case "request.auth.presenter":
      return listPred(str(values), str(notValues), (a) => a.http?.presenter, sm) ?? (() => true);
    case "request.auth.audiences":
      return anyOf((a) => (a.http && a.http.audiences.length > 0 ? a.http.audiences : undefined), sm);
    case "connection.sni":
      return listPred(str(values), str(notValues), (a) => a.sni, sm) ?? (() => true);
    default: {
      // Attributes this engine cannot observe (experimental.envoy.filters.*) are never present.
      const hasPositive = (values?.length ?? 0) > 0;
      return () => !hasPositive;
    }
  }
}

/** The `when` keys a connection has no value for: everything about the HTTP request (`request.*`). */
function isHttpOnlyConditionKey(key: string): boolean {
  return key.startsWith("request.");
}

const HTTP_ONLY_SOURCE_FIELDS = ["requestPrincipals", "notRequestPrincipals"] as const;
const HTTP_ONLY_OPERATION_FIELDS = [
  "hosts",
  "notHosts",
  "methods",
  "notMethods",
  "paths",
  "notPaths",
] as const;

/** The HTTP-only fields and `when` keys a rule uses (empty when it has none). */
function httpOnlyFieldsOf(rule: Rule): string[] {
  const found = new Set<string>();
  for (const { source } of rule.from ?? [])
    for (const f of HTTP_ONLY_SOURCE_FIELDS) if ((source[f]?.length ?? 0) > 0) found.add(f);
  for (const { operation } of rule.to ?? [])
    for (const f of HTTP_ONLY_OPERATION_FIELDS) if ((operation[f]?.length ?? 0) > 0) found.add(f);
  for (const cond of rule.when ?? []) if (isHttpOnlyConditionKey(cond.key)) found.add(cond.key);
  return [...found];
}

/**
 * A rule as it applies to a connection carried as TCP, where nothing of an HTTP request can be seen:
 * its HTTP-only fields and `when` keys removed. A `from` source or `to` operation left with no field
 * matches every connection, so the rule is wider than as written.
 */
function withoutHttpOnlyFields(rule: Rule): Rule {
  const out: Rule = {};
  if (rule.from !== undefined)
    out.from = rule.from.map(({ source }) => {
      const s = { ...source };
      for (const f of HTTP_ONLY_SOURCE_FIELDS) delete s[f];
      return { source: s };
    });
  if (rule.to !== undefined)
    out.to = rule.to.map(({ operation }) => {
      const o = { ...operation };
      for (const f of HTTP_ONLY_OPERATION_FIELDS) delete o[f];
      return { operation: o };
    });
  if (rule.when !== undefined) out.when = rule.when.filter((c) => !isHttpOnlyConditionKey(c.key));
  return out;
}

const NEVER: Pred = () => false;

function compileRule(rule: Rule, namespace: string): CompiledL7Rule {
  const to = rule.to ?? [];
  const from = rule.from ?? [];
  const ports =
    to.length > 0 && to.every((t) => (t.operation.ports?.length ?? 0) > 0)
      ? new Set(to.flatMap((t) => (t.operation.ports ?? []).map(Number)))
      : undefined;
  const principals =
    from.length > 0 &&
    from.every(
      (f) =>
        (f.source.principals?.length ?? 0) > 0 && (f.source.principals ?? []).every((p) => !p.includes("*")),
    )
      ? new Set(from.flatMap((f) => f.source.principals ?? []))
      : undefined;
  return {
    ports,
    principals,
    from: rule.from?.map((f) => compileSource(f.source, namespace)),
    to: rule.to?.map((t) => compileOperation(t.operation)),
    when: (rule.when ?? []).map((c) => ({ key: c.key, test: compileCondition(c, namespace) })),
  };
}

/** Options of {@link compileAuthorizationPolicy}. */
export interface CompileOptions {
  /**
   * Compile the policy as it applies to a connection carried as TCP (no `http`), with the rules of
   * Envoy's network RBAC filter: an ALLOW rule with an HTTP-only field (hosts, methods, paths,
   * requestPrincipals, a `request.*` condition, their `not` forms) never matches (the allow is
   * narrower); a DENY, AUDIT or CUSTOM rule is kept without those fields (the deny is wider).
   */
  forTcp?: boolean;
  /**
   * The mesh's trust domain, then its aliases (meshConfig `trustDomain`, `trustDomainAliases`): read
   * principals as Istio's proxies do, `cluster.local/...` and any of these standing for the same
   * account in all of them (`withTrustDomainAliases`). Default none: principals as written.
   */
  trustDomains?: readonly string[];
}

/** Compiles a validated AuthorizationPolicy for evaluation with every attribute (waypoint semantics). */
export function compileAuthorizationPolicy(
  policy: AuthorizationPolicy,
  options: CompileOptions = {},
): CompiledL7Policy {
  const namespace = policy.metadata.namespace;
  const allow = (policy.spec.action ?? "ALLOW") === "ALLOW";
  const trustDomains = options.trustDomains ?? [];
  const rules = (policy.spec.rules ?? []).map((written): CompiledL7Rule => {
    const r = ruleWithTrustDomainAliases(written, trustDomains);
    if (options.forTcp !== true) return compileRule(r, namespace);
    const http = httpOnlyFieldsOf(r);
    if (http.length === 0) return compileRule(r, namespace);
    if (!allow) return compileRule(withoutHttpOnlyFields(r), namespace);
    return {
      dropped: `left out for TCP: an ALLOW rule with HTTP attributes (${http.sort().join(", ")}) matches no connection`,
      from: [NEVER],
      to: undefined,
      when: [],
      ports: undefined,
      principals: undefined,
    };
  });
  const union = <T>(pick: (r: CompiledL7Rule) => ReadonlySet<T> | undefined): Set<T> | undefined =>
    rules.length > 0 && rules.every((r) => pick(r) !== undefined)
      ? new Set(rules.flatMap((r) => [...(pick(r) ?? [])]))
      : undefined;
  return { rules, ports: union((r) => r.ports), principals: union((r) => r.principals) };
}

/** Index of the first matching rule, or -1. */
export function matchL7Policy(policy: CompiledL7Policy, a: RequestAttributes): number {
  if (policy.ports !== undefined && !policy.ports.has(a.destinationPort)) return -1;
  if (policy.principals !== undefined && (a.principal === undefined || !policy.principals.has(a.principal)))
    return -1;
  const rules = policy.rules;
  for (let i = 0; i < rules.length; i++) {
    if (matchRule(rules[i] as CompiledL7Rule, a)) return i;
  }
  return -1;
}

function matchRule(rule: CompiledL7Rule, a: RequestAttributes): boolean {
  if (rule.ports !== undefined && !rule.ports.has(a.destinationPort)) return false;
  if (rule.principals !== undefined && (a.principal === undefined || !rule.principals.has(a.principal)))
    return false;
  if (rule.from !== undefined && rule.from.length > 0 && !anyPred(rule.from, a)) return false;
  if (rule.to !== undefined && rule.to.length > 0 && !anyPred(rule.to, a)) return false;
  for (let i = 0; i < rule.when.length; i++) if (!(rule.when[i] as { test: Pred }).test(a)) return false;
  return true;
}

function anyPred(list: readonly Pred[], a: RequestAttributes): boolean {
  for (let i = 0; i < list.length; i++) if ((list[i] as Pred)(a)) return true;
  return false;
}

/** Explains, per rule, which part did not match (or `matched`). */
export function explainL7Policy(policy: CompiledL7Policy, a: RequestAttributes): string[] {
  if (policy.rules.length === 0) return ["policy has no rules: it never matches"];
  return policy.rules.map((rule) => {
    if (rule.dropped !== undefined) return rule.dropped;
    if (rule.from !== undefined && rule.from.length > 0 && !rule.from.some((p) => p(a)))
      return "no `from` source matched";
    if (rule.to !== undefined && rule.to.length > 0 && !rule.to.some((p) => p(a)))
      return "no `to` operation matched";
    const failed = rule.when.find((w) => !w.test(a));
    return failed ? `condition ${failed.key} did not hold` : "matched";
  });
}
