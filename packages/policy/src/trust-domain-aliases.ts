// Trust domains in the principals of L7 policy, as Istio's proxies apply them (istiod's trust domain
// bundle, applied to every rule an Envoy enforces: waypoints, sidecars, gateways). A mesh has one trust
// domain and may have aliases (meshConfig `trustDomain`, `trustDomainAliases`), all treated as the same
// mesh. A principal written `cluster.local/ns/<ns>/sa/<sa>` stands for the mesh's own trust domain,
// whatever it is, so policies copied from documentation keep working; a principal in the trust domain
// or an alias matches the same account in any of them. Principals of other trust domains, and those
// that name none (`*/ns/...`, or not `<td>/ns/<ns>/sa/<sa>`), stay as written. A rule's `trustDomains` and
// `source.trustDomain` conditions naming one of the mesh's trust domains name them all.
//
// ztunnel does none of this: the wire Authorization istiod sends it keeps principals as written, and
// the ztunnel's engine here matches them so too. Only the L7 engine (compileAuthorizationPolicy) reads
// the bundle.
import type { Condition, Rule, Source } from "./kubernetes-types.js";

/** The trust domain that means "this mesh's own" in a principal (Istio's `DefaultClusterLocalDomain`). */
const CLUSTER_LOCAL = "cluster.local";

/** `pattern` with a leading `*` matches `value` ending in the rest. */
function suffixMatch(value: string, pattern: string): boolean {
  return pattern.startsWith("*") && value.endsWith(pattern.slice(1));
}

/** `pattern` with a trailing `*` matches `value` starting with the rest. */
function prefixMatch(value: string, pattern: string): boolean {
  return pattern.endsWith("*") && value.startsWith(pattern.slice(0, -1));
}

/** Whether `trustDomain` (as written in a principal, possibly with a `*`) is one of `trustDomains`. */
function inBundle(trustDomain: string, trustDomains: readonly string[]): boolean {
  return trustDomains.some(
    (td) =>
      trustDomain === td ||
      td === "*" ||
      prefixMatch(trustDomain, td) ||
      prefixMatch(td, trustDomain) ||
      suffixMatch(trustDomain, td) ||
      suffixMatch(td, trustDomain),
  );
}

/**
 * The principals a rule's `principals` (or `notPrincipals`, or a `source.principal` condition) stand
 * for in a mesh of `trustDomains` (its trust domain first, then its aliases): each principal of the form
 * `<td>/ns/<ns>/sa/<sa>` whose `<td>` is `cluster.local` or in the bundle becomes one principal per
 * trust domain of the bundle (a `*`-prefixed `<td>` is kept as written where it matches); any other
 * stays as written. Order is kept and nothing is repeated.
 */
export function withTrustDomainAliases(
  principals: readonly string[],
  trustDomains: readonly string[],
): string[] {
  const out: string[] = [];
  const add = (p: string): void => {
    if (!out.includes(p)) out.push(p);
  };
  for (const principal of principals) {
    const parts = principal.split("/");
    const td = parts[0] as string;
    // Not `<td>/ns/<ns>/sa/<sa>`, or a policy that does not care about the trust domain.
    if (parts.length !== 5 || td === "*") {
      add(principal);
      continue;
    }
    if (td !== CLUSTER_LOCAL && !inBundle(td, trustDomains)) {
      add(principal);
      continue;
    }
    const rest = parts.slice(1).join("/");
    for (const bundleTd of trustDomains) add(suffixMatch(bundleTd, td) ? principal : `${bundleTd}/${rest}`);
  }
  return out;
}

/** `trustDomains` values of a rule, each of the bundle standing for all of it. */
function expandTrustDomains(values: readonly string[], trustDomains: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values)
    for (const td of trustDomains.includes(v) ? trustDomains : [v]) if (!out.includes(td)) out.push(td);
  return out;
}

function sourceWithAliases(source: Source, trustDomains: readonly string[]): Source {
  const out: Source = { ...source };
  if (source.principals !== undefined)
    out.principals = withTrustDomainAliases(source.principals, trustDomains);
  if (source.notPrincipals !== undefined)
    out.notPrincipals = withTrustDomainAliases(source.notPrincipals, trustDomains);
  if (source.trustDomains !== undefined)
    out.trustDomains = expandTrustDomains(source.trustDomains, trustDomains);
  if (source.notTrustDomains !== undefined)
    out.notTrustDomains = expandTrustDomains(source.notTrustDomains, trustDomains);
  return out;
}

function conditionWithAliases(condition: Condition, trustDomains: readonly string[]): Condition {
  const read =
    condition.key === "source.principal"
      ? withTrustDomainAliases
      : condition.key === "source.trustDomain"
        ? expandTrustDomains
        : undefined;
  if (read === undefined) return condition;
  const out: Condition = { ...condition };
  if (condition.values !== undefined) out.values = read(condition.values, trustDomains);
  if (condition.notValues !== undefined) out.notValues = read(condition.notValues, trustDomains);
  return out;
}

/** `rule` with its principals and trust domains read in the bundle `trustDomains`; `rule` is not changed. */
export function ruleWithTrustDomainAliases(rule: Rule, trustDomains: readonly string[]): Rule {
  if (trustDomains.length === 0) return rule;
  const out: Rule = { ...rule };
  if (rule.from !== undefined)
    out.from = rule.from.map((f) => ({ ...f, source: sourceWithAliases(f.source, trustDomains) }));
  if (rule.when !== undefined) out.when = rule.when.map((c) => conditionWithAliases(c, trustDomains));
  return out;
}
