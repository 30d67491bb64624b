import { PolicyError } from "./errors.js";
import { cidrContains, cidrFromWire, formatCidr, type IpAddress, type IpCidr } from "./ip-address.js";
import {
  type CompiledStringMatch,
  compileStringMatch,
  formatStringMatch,
  matchString,
} from "./string-match.js";
import type {
  StringMatch,
  WireAddress,
  WireAuthorization,
  WireClause,
  WireMatch,
  WireServiceAccountMatch,
} from "./wire.js";

/** The L4 facts of a connection, parsed once per decision. */
export interface ConnectionAttributes {
  readonly sourceIp: IpAddress;
  readonly destinationIp: IpAddress;
  readonly destinationPort: number;
  /**
   * Caller identity without `spiffe://`; undefined on plaintext or for a non-SPIFFE identity. The
   * wire matcher ignores one that is not an Istio identity (see `asZtunnelSees`).
   */
  readonly principal: string | undefined;
  /** Caller namespace from an Istio SPIFFE ID (`/ns/<ns>/sa/<sa>`), else "". */
  readonly namespace: string;
  /** Caller service account from an Istio SPIFFE ID, else undefined. */
  readonly serviceAccount: string | undefined;
  /** Caller trust domain, else undefined. */
  readonly trustDomain: string | undefined;
}

const ISTIO_SPIFFE = /^([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/;

/** Splits an identity (`spiffe://td/ns/n/sa/s`) into the parts policies match on. */
export function identityAttributes(
  identity: string | undefined,
): Pick<ConnectionAttributes, "principal" | "namespace" | "serviceAccount" | "trustDomain"> {
  if (identity === undefined || !identity.startsWith("spiffe://")) {
    return { principal: undefined, namespace: "", serviceAccount: undefined, trustDomain: undefined };
  }
  const principal = identity.slice("spiffe://".length);
  const m = ISTIO_SPIFFE.exec(principal);
  if (m === null)
    return { principal, namespace: "", serviceAccount: undefined, trustDomain: principal.split("/")[0] };
  return {
    principal,
    namespace: m[2] as string,
    serviceAccount: m[3] as string,
    trustDomain: m[1] as string,
  };
}

interface CompiledMatch {
  readonly namespaces: readonly CompiledStringMatch[];
  readonly notNamespaces: readonly CompiledStringMatch[];
  readonly principals: readonly CompiledStringMatch[];
  readonly notPrincipals: readonly CompiledStringMatch[];
  readonly sourceIps: readonly IpCidr[];
  readonly notSourceIps: readonly IpCidr[];
  readonly destinationIps: readonly IpCidr[];
  readonly notDestinationIps: readonly IpCidr[];
  readonly destinationPorts: readonly number[];
  readonly notDestinationPorts: readonly number[];
  readonly serviceAccounts: readonly WireServiceAccountMatch[];
  readonly notServiceAccounts: readonly WireServiceAccountMatch[];
  readonly empty: boolean;
}

/** A clause: ORed matches (empty clause matches everything). */
type CompiledClause = readonly CompiledMatch[];
/** A group: ANDed clauses (empty group matches everything). */
type CompiledGroup = readonly CompiledClause[];

/**
 * Cheap necessary conditions of a group, checked before its clauses: when some clause only has
 * matches with positive ports (or exact principals), the connection's port (or principal) must be
 * among them. This keeps large policies fast without changing any answer.
 */
interface GroupFilter {
  readonly ports: ReadonlySet<number> | undefined;
  readonly principals: ReadonlySet<string> | undefined;
}

/** A wire policy ready to evaluate with ztunnel's semantics. */
export interface CompiledWireAuthorization {
  readonly key: string;
  readonly source: WireAuthorization;
  readonly groups: readonly CompiledGroup[];
  readonly filters: readonly GroupFilter[];
  /** Union of the group filters when every group has one: rejects a whole policy in one lookup. */
  readonly filter: GroupFilter;
  /** Parts ztunnel would drop or read otherwise than written (unreadable addresses, long lengths). */
  readonly problems: readonly string[];
}

const NONE: readonly never[] = Object.freeze([]);

function strings(list: readonly StringMatch[] | undefined): readonly CompiledStringMatch[] {
  if (list === undefined || list.length === 0) return NONE;
  const out: CompiledStringMatch[] = [];
  for (const m of list ?? []) {
    const c = compileStringMatch(m);
    if (c) out.push(c);
  }
  return out;
}

function cidrs(
  list: readonly WireAddress[] | undefined,
  problems: string[],
  field: string,
): readonly IpCidr[] {
  if (list === undefined || list.length === 0) return NONE;
  const out: IpCidr[] = [];
  for (const a of list ?? []) {
    const c = a.address === undefined ? undefined : cidrFromWire(a);
    // ztunnel drops unreadable addresses from the list rather than refusing the policy.
    if (c === undefined)
      problems.push(
        `${field}: dropped an address of ${a.address?.length ?? 0} bytes with length ${a.length}`,
      );
    else {
      if (c.prefix !== a.length)
        problems.push(`${field}: ${formatCidr(c)} has length ${a.length} read as ${c.prefix}, its low byte`);
      out.push(c);
    }
  }
  return out;
}

function ports(list: readonly number[] | undefined): readonly number[] {
  if (list === undefined || list.length === 0) return NONE;
  // uint32 on the wire, truncated to u16 as ztunnel does.
  return (list ?? []).map((p) => p & 0xffff);
}

function compileMatch(m: WireMatch, problems: string[]): CompiledMatch {
  const c = {
    namespaces: strings(m.namespaces),
    notNamespaces: strings(m.notNamespaces),
    principals: strings(m.principals),
    notPrincipals: strings(m.notPrincipals),
    sourceIps: cidrs(m.sourceIps, problems, "sourceIps"),
    notSourceIps: cidrs(m.notSourceIps, problems, "notSourceIps"),
    destinationIps: cidrs(m.destinationIps, problems, "destinationIps"),
    notDestinationIps: cidrs(m.notDestinationIps, problems, "notDestinationIps"),
    destinationPorts: ports(m.destinationPorts),
    notDestinationPorts: ports(m.notDestinationPorts),
    serviceAccounts: m.serviceAccounts?.length ? [...m.serviceAccounts] : NONE,
    notServiceAccounts: m.notServiceAccounts?.length ? [...m.notServiceAccounts] : NONE,
  };
  const empty = Object.values(c).every((v) => v.length === 0);
  return { ...c, empty };
}

/**
 * Flattens a wire group to its ANDed clauses: each rule's `matches` (the wire shape) and, when
 * given, each of its `clauses` (the four-level input form).
 */
export function wireGroupClauses(group: {
  rules: readonly { clauses?: readonly WireClause[]; matches?: readonly WireMatch[] }[];
}): WireClause[] {
  const out: WireClause[] = [];
  for (const rule of group.rules ?? []) {
    if (rule.matches !== undefined) out.push({ matches: [...rule.matches] });
    if (rule.clauses !== undefined) out.push(...rule.clauses);
  }
  return out;
}

function wireInvalid(message: string): PolicyError {
  return new PolicyError("ERR_WIRE_INVALID", message);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkList(value: unknown, field: string, item: (v: unknown, field: string) => void): void {
  if (value === undefined) return;
  if (!Array.isArray(value)) throw wireInvalid(`${field} must be a list`);
  for (let i = 0; i < value.length; i++) item(value[i], `${field}[${i}]`);
}

function checkStringMatch(value: unknown, field: string): void {
  if (!isObject(value)) throw wireInvalid(`${field} must be a StringMatch object`);
}

function checkAddress(value: unknown, field: string): void {
  if (!isObject(value)) throw wireInvalid(`${field} must be an address object`);
  if (value.address !== undefined && !(value.address instanceof Uint8Array))
    throw wireInvalid(`${field}.address must be bytes`);
  const length = value.length;
  if (length !== undefined && (typeof length !== "number" || !Number.isInteger(length)))
    throw wireInvalid(`${field}.length must be an integer`);
}

function checkPort(value: unknown, field: string): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffffffff)
    throw wireInvalid(`${field} must be a uint32 port`);
}

function checkServiceAccount(value: unknown, field: string): void {
  if (!isObject(value) || typeof value.namespace !== "string" || typeof value.serviceAccount !== "string")
    throw wireInvalid(`${field} needs string namespace and serviceAccount`);
}

function checkMatch(value: unknown, field: string): void {
  if (!isObject(value)) throw wireInvalid(`${field} must be a match object`);
  for (const k of ["namespaces", "notNamespaces", "principals", "notPrincipals"])
    checkList(value[k], `${field}.${k}`, checkStringMatch);
  for (const k of ["sourceIps", "notSourceIps", "destinationIps", "notDestinationIps"])
    checkList(value[k], `${field}.${k}`, checkAddress);
  for (const k of ["destinationPorts", "notDestinationPorts"])
    checkList(value[k], `${field}.${k}`, checkPort);
  for (const k of ["serviceAccounts", "notServiceAccounts"])
    checkList(value[k], `${field}.${k}`, checkServiceAccount);
}

function checkMatches(value: unknown, field: string): void {
  if (!isObject(value)) throw wireInvalid(`${field} must be an object`);
  checkList(value.matches, `${field}.matches`, checkMatch);
}

/**
 * Checks the shape of a wire policy that may come from untrusted JSON, so compiling it never
 * misreads a field (a port given as text, bytes given as a string) or throws a TypeError.
 */
function checkWireAuthorization(auth: unknown): asserts auth is WireAuthorization {
  if (!isObject(auth)) throw wireInvalid("an authorization must be an object");
  if (typeof auth.name !== "string" || typeof auth.namespace !== "string")
    throw wireInvalid("authorization name and namespace must be strings");
  const key = `${auth.namespace}/${auth.name}`;
  if (typeof auth.scope !== "string" || !["GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR"].includes(auth.scope))
    throw wireInvalid(
      `${key}: unknown scope ${typeof auth.scope === "string" ? JSON.stringify(auth.scope) : typeof auth.scope}`,
    );
  // ztunnel files a NAMESPACE policy under its namespace, and under the empty one it joins the
  // GLOBAL policies: it would apply mesh-wide. No control plane sends one; it is refused as
  // malformed rather than widened to the whole mesh or narrowed to nothing.
  if (auth.scope === "NAMESPACE" && auth.namespace === "")
    throw wireInvalid(`${key}: a NAMESPACE-scoped policy needs a namespace`);
  if (auth.action !== "ALLOW" && auth.action !== "DENY")
    throw wireInvalid(
      `${key}: unknown action ${typeof auth.action === "string" ? JSON.stringify(auth.action) : typeof auth.action}`,
    );
  if (auth.dryRun !== undefined && typeof auth.dryRun !== "boolean")
    throw wireInvalid(`${key}: dryRun must be a boolean`);
  checkList(auth.groups, `${key}: groups`, (group, field) => {
    if (!isObject(group)) throw wireInvalid(`${field} must be an object`);
    checkList(group.rules, `${field}.rules`, (rule, ruleField) => {
      checkMatches(rule, ruleField);
      checkList((rule as Record<string, unknown>).clauses, `${ruleField}.clauses`, checkMatches);
    });
  });
}

/** Checks and compiles a wire policy; throws `ERR_WIRE_INVALID` for malformed input. */
export function compileWireAuthorization(auth: WireAuthorization): CompiledWireAuthorization {
  checkWireAuthorization(auth);
  const key = `${auth.namespace}/${auth.name}`;
  const problems: string[] = [];
  const groups = (auth.groups ?? []).map((g) =>
    wireGroupClauses(g).map((clause) => (clause.matches ?? []).map((m) => compileMatch(m, problems))),
  );
  const filters = groups.map(groupFilter);
  return { key, source: auth, groups, filters, filter: unionFilter(filters), problems };
}

function groupFilter(group: CompiledGroup): GroupFilter {
  let ports: Set<number> | undefined;
  let principals: Set<string> | undefined;
  for (const clause of group) {
    if (clause.length === 0) continue;
    if (ports === undefined && clause.every((m) => !m.empty && m.destinationPorts.length > 0)) {
      ports = new Set(clause.flatMap((m) => m.destinationPorts));
    }
    if (
      principals === undefined &&
      clause.every(
        (m) => !m.empty && m.principals.length > 0 && m.principals.every((p) => p.kind === "exact"),
      )
    ) {
      principals = new Set(clause.flatMap((m) => m.principals.map((p) => p.value)));
    }
  }
  return { ports, principals };
}

function unionFilter(filters: readonly GroupFilter[]): GroupFilter {
  if (filters.length === 0) return { ports: undefined, principals: undefined };
  const ports = filters.every((f) => f.ports !== undefined)
    ? new Set(filters.flatMap((f) => [...(f.ports ?? [])]))
    : undefined;
  const principals = filters.every((f) => f.principals !== undefined)
    ? new Set(filters.flatMap((f) => [...(f.principals ?? [])]))
    : undefined;
  return { ports, principals };
}

function anyCidr(list: readonly IpCidr[], address: IpAddress): boolean {
  for (let i = 0; i < list.length; i++) if (cidrContains(list[i] as IpCidr, address)) return true;
  return false;
}

function anyString(list: readonly CompiledStringMatch[], value: string): boolean {
  for (let i = 0; i < list.length; i++) if (matchString(list[i] as CompiledStringMatch, value)) return true;
  return false;
}

function anyServiceAccount(list: readonly WireServiceAccountMatch[], c: ConnectionAttributes): boolean {
  if (c.serviceAccount === undefined) return false;
  for (let i = 0; i < list.length; i++) {
    const sa = list[i] as WireServiceAccountMatch;
    if (sa.namespace === c.namespace && sa.serviceAccount === c.serviceAccount) return true;
  }
  return false;
}

// Written as plain loops: this runs for every rule of every applicable policy on every decision.
function matchOne(m: CompiledMatch, c: ConnectionAttributes): boolean {
  if (m.empty) return false;
  if (m.destinationIps.length > 0 && !anyCidr(m.destinationIps, c.destinationIp)) return false;
  if (m.notDestinationIps.length > 0 && anyCidr(m.notDestinationIps, c.destinationIp)) return false;
  if (m.sourceIps.length > 0 && !anyCidr(m.sourceIps, c.sourceIp)) return false;
  if (m.notSourceIps.length > 0 && anyCidr(m.notSourceIps, c.sourceIp)) return false;
  if (m.destinationPorts.length > 0 && !m.destinationPorts.includes(c.destinationPort)) return false;
  if (m.notDestinationPorts.length > 0 && m.notDestinationPorts.includes(c.destinationPort)) return false;
  if (m.serviceAccounts.length > 0 && !anyServiceAccount(m.serviceAccounts, c)) return false;
  if (m.notServiceAccounts.length > 0 && anyServiceAccount(m.notServiceAccounts, c)) return false;
  const principal = c.principal;
  if (m.principals.length > 0 && (principal === undefined || !anyString(m.principals, principal)))
    return false;
  if (m.notPrincipals.length > 0 && principal !== undefined && anyString(m.notPrincipals, principal))
    return false;
  if (m.namespaces.length > 0 && !anyString(m.namespaces, c.namespace)) return false;
  if (m.notNamespaces.length > 0 && anyString(m.notNamespaces, c.namespace)) return false;
  return true;
}

/**
 * The connection as ztunnel sees it: only an Istio identity (`spiffe://<td>/ns/<ns>/sa/<sa>`) is an
 * identity there, so any other SPIFFE ID (which has a principal but no service account here) counts
 * as none, as plaintext: no principal matches it and every `notPrincipals` passes. ztunnel's
 * handshake refuses such a peer anyway; this keeps a caller that lets one through from granting it
 * what `principals: ["*"]` grants. Envoy (L7) reads the whole URI SAN, so only the wire matcher does this.
 */
function asZtunnelSees(c: ConnectionAttributes): ConnectionAttributes {
  return c.principal !== undefined && c.serviceAccount === undefined ? { ...c, principal: undefined } : c;
}

/** Index of the first matching group, or -1. A policy with no groups never matches. */
export function matchWireAuthorization(
  policy: CompiledWireAuthorization,
  conn: ConnectionAttributes,
): number {
  const c = asZtunnelSees(conn);
  const groups = policy.groups;
  const filters = policy.filters;
  const all = policy.filter;
  if (all.ports !== undefined && !all.ports.has(c.destinationPort)) return -1;
  if (all.principals !== undefined && (c.principal === undefined || !all.principals.has(c.principal)))
    return -1;
  for (let g = 0; g < groups.length; g++) {
    const filter = filters[g] as GroupFilter;
    if (filter.ports !== undefined && !filter.ports.has(c.destinationPort)) continue;
    if (filter.principals !== undefined && (c.principal === undefined || !filter.principals.has(c.principal)))
      continue;
    const group = groups[g] as CompiledGroup;
    let all = true;
    for (let k = 0; k < group.length; k++) {
      const clause = group[k] as CompiledClause;
      if (clause.length === 0) continue;
      let any = false;
      for (let j = 0; j < clause.length; j++) {
        if (matchOne(clause[j] as CompiledMatch, c)) {
          any = true;
          break;
        }
      }
      if (!any) {
        all = false;
        break;
      }
    }
    if (all) return g;
  }
  return -1;
}

function describeField<T>(
  name: string,
  positive: readonly T[],
  negative: readonly T[],
  pred: (v: T) => boolean,
  fmt: (v: T) => string,
  actual: string,
): string | undefined {
  if (positive.length > 0 && !positive.some(pred))
    return `${name}: ${actual} is not in [${positive.map(fmt).join(", ")}]`;
  const hit = negative.find(pred);
  if (hit !== undefined) return `not${name[0]?.toUpperCase()}${name.slice(1)}: ${actual} matches ${fmt(hit)}`;
  return undefined;
}

function whyMatchFails(m: CompiledMatch, c: ConnectionAttributes, srcIp: string, dstIp: string): string {
  if (m.empty) return "empty match (nothing enforceable at L4)";
  const sa = (v: WireServiceAccountMatch): string => `${v.namespace}/${v.serviceAccount}`;
  return (
    describeField(
      "destinationIps",
      m.destinationIps,
      m.notDestinationIps,
      (x) => cidrContains(x, c.destinationIp),
      formatCidr,
      dstIp,
    ) ??
    describeField(
      "sourceIps",
      m.sourceIps,
      m.notSourceIps,
      (x) => cidrContains(x, c.sourceIp),
      formatCidr,
      srcIp,
    ) ??
    describeField(
      "destinationPorts",
      m.destinationPorts,
      m.notDestinationPorts,
      (p) => p === c.destinationPort,
      String,
      String(c.destinationPort),
    ) ??
    describeField(
      "serviceAccounts",
      m.serviceAccounts,
      m.notServiceAccounts,
      (v) =>
        c.serviceAccount !== undefined &&
        v.namespace === c.namespace &&
        v.serviceAccount === c.serviceAccount,
      sa,
      c.serviceAccount === undefined ? "no identity" : `${c.namespace}/${c.serviceAccount}`,
    ) ??
    describeField(
      "principals",
      m.principals,
      m.notPrincipals,
      (p) => c.principal !== undefined && matchString(p, c.principal),
      formatStringMatch,
      c.principal ?? "no identity",
    ) ??
    describeField(
      "namespaces",
      m.namespaces,
      m.notNamespaces,
      (p) => matchString(p, c.namespace),
      formatStringMatch,
      c.namespace || "no namespace",
    ) ??
    "matched"
  );
}

/** Explains, per group, why a wire policy does not match (or `matched`). */
export function explainWireAuthorization(
  policy: CompiledWireAuthorization,
  conn: ConnectionAttributes,
  srcIp: string,
  dstIp: string,
): string[] {
  const c = asZtunnelSees(conn);
  if (policy.groups.length === 0) return ["policy has no rules: it never matches"];
  return policy.groups.map((group) => {
    for (const clause of group) {
      if (clause.length === 0) continue;
      if (clause.some((m) => matchOne(m, c))) continue;
      return clause.map((m) => whyMatchFails(m, c, srcIp, dstIp)).join(" | ");
    }
    return "matched";
  });
}
