import type { MtlsMode, PeerAuthentication } from "./kubernetes-types.js";
import { requireResourceShape } from "./to-wire-authorization.js";
import { emptyWireMatch, type WireAuthorization, type WireGroup, type WireRule } from "./wire.js";

/** Name of the static STRICT policy in the root namespace (an `_` keeps it apart from Kubernetes names). */
export const STATIC_STRICT_POLICY_NAME = "istio_converted_static_strict";
/** Prefix of the wire policies converted from workload PeerAuthentications with port-level mTLS. */
export const CONVERTED_PEER_AUTHENTICATION_PREFIX = "converted_peer_authentication_";

function mode(m: { mode?: MtlsMode } | undefined): MtlsMode {
  return m?.mode ?? "UNSET";
}

function hasSelector(pa: PeerAuthentication): boolean {
  return Object.keys(pa.spec.selector?.matchLabels ?? {}).length > 0;
}

function strictRule(): WireRule {
  return { matches: [{ ...emptyWireMatch(), notPrincipals: [{ presence: {} }] }] };
}

/**
 * The static DENY policy every STRICT workload references: deny callers without an identity
 * (`notPrincipals: [presence]`).
 */
export function staticStrictAuthorization(rootNamespace = "istio-system"): WireAuthorization {
  return {
    name: STATIC_STRICT_POLICY_NAME,
    namespace: rootNamespace,
    scope: "WORKLOAD_SELECTOR",
    action: "DENY",
    groups: [{ rules: [strictRule()] }],
  };
}

/** The oldest of a set of PeerAuthentications (by creationTimestamp, then name), as istiod picks. */
export function oldestPeerAuthentication(
  list: readonly PeerAuthentication[],
): PeerAuthentication | undefined {
  let oldest: PeerAuthentication | undefined;
  for (const pa of list) {
    if (oldest === undefined || isOlder(pa, oldest)) oldest = pa;
  }
  return oldest;
}

function isOlder(a: PeerAuthentication, b: PeerAuthentication): boolean {
  const ta = a.metadata.creationTimestamp ? Date.parse(a.metadata.creationTimestamp) : Number.NaN;
  const tb = b.metadata.creationTimestamp ? Date.parse(b.metadata.creationTimestamp) : Number.NaN;
  if (!Number.isNaN(ta) && !Number.isNaN(tb) && ta !== tb) return ta < tb;
  if (Number.isNaN(ta) !== Number.isNaN(tb)) return !Number.isNaN(ta);
  return a.metadata.name < b.metadata.name;
}

function portsSorted(pa: PeerAuthentication): [number, MtlsMode][] {
  return Object.entries(pa.spec.portLevelMtls ?? {})
    .map(([port, m]): [number, MtlsMode] => [Number(port), mode(m)])
    .sort((a, b) => a[0] - b[0]);
}

/** Options of {@link convertPeerAuthentication}. */
export interface PeerAuthenticationContext {
  /** Default `istio-system`. */
  rootNamespace?: string;
  /** The namespace-wide PeerAuthentication in force in the policy's namespace (the oldest), if any. */
  namespacePolicy?: PeerAuthentication;
  /** The mesh-wide PeerAuthentication in force (root namespace, no selector, the oldest), if any. */
  meshPolicy?: PeerAuthentication;
}

/**
 * Converts a workload PeerAuthentication with port-level mTLS to a WORKLOAD_SELECTOR DENY policy
 * named `converted_peer_authentication_<name>`, merging in a STRICT parent where needed. Returns
 * undefined when istiod sends nothing for it (root namespace, no selector, no port-level mTLS, or
 * plain STRICT, which the static policy covers).
 */
export function convertPeerAuthentication(
  pa: PeerAuthentication,
  context: PeerAuthenticationContext = {},
): WireAuthorization | undefined {
  requireResourceShape(pa, "PeerAuthentication");
  if (context.namespacePolicy !== undefined)
    requireResourceShape(context.namespacePolicy, "PeerAuthentication");
  if (context.meshPolicy !== undefined) requireResourceShape(context.meshPolicy, "PeerAuthentication");
  const rootNamespace = context.rootNamespace ?? "istio-system";
  const ns = context.namespacePolicy;
  const root = context.meshPolicy;
  const portLevel = portsSorted(pa);
  if (pa.metadata.namespace === rootNamespace || !hasSelector(pa) || portLevel.length === 0) return undefined;
  const m = mode(pa.spec.mtls);
  const rules: WireRule[] = [];
  const groups: WireGroup[] = [];
  if (m === "STRICT") rules.push(strictRule());
  // The mode the workload inherits: the namespace policy's unless it is absent or UNSET, then the
  // mesh policy's. Both the port checks and the merge below go by it, as the effective keys do, so
  // a workload never lists a converted policy that lost a STRICT port or its STRICT default.
  const nsMode = mode(ns?.spec.mtls);
  const parentMode = ns !== undefined && nsMode !== "UNSET" ? nsMode : mode(root?.spec.mtls);
  const parentStrict = parentMode === "STRICT";
  let foundNonStrictPort = false;
  for (const [port, portMode] of portLevel) {
    if (portMode === "STRICT") {
      // Enforced already by the workload's own STRICT mode or, when it inherits, by a STRICT parent.
      // A PERMISSIVE or DISABLE workload does not get the static policy, so its STRICT ports need a rule.
      if (m === "STRICT" || (m === "UNSET" && parentStrict)) continue;
      groups.push({
        rules: [
          { matches: [{ ...emptyWireMatch(), notPrincipals: [{ presence: {} }], destinationPorts: [port] }] },
        ],
      });
    } else if (portMode === "PERMISSIVE" || portMode === "DISABLE") {
      // An exception matters only where the workload's mode is STRICT, its own or inherited.
      if (m === "PERMISSIVE" || m === "DISABLE") continue;
      if (m === "UNSET" && !parentStrict) continue;
      foundNonStrictPort = true;
      rules.push({ matches: [{ ...emptyWireMatch(), notDestinationPorts: [port] }] });
    }
  }
  if (m === "STRICT" && !foundNonStrictPort) return undefined;
  if (rules.length === 0 && groups.length === 0) return undefined;
  // The workload lists this policy instead of the static one, so it carries the inherited STRICT.
  if (parentStrict && foundNonStrictPort) rules.push(strictRule());
  if (rules.length > 0) groups.push({ rules });
  return {
    name: CONVERTED_PEER_AUTHENTICATION_PREFIX + pa.metadata.name,
    namespace: pa.metadata.namespace,
    scope: "WORKLOAD_SELECTOR",
    action: "DENY",
    groups,
  };
}

/**
 * Which PeerAuthentication-derived policies (`ns/name` keys) a workload references, given the
 * PeerAuthentications that apply to it (mesh-wide, its namespace's, and those selecting it):
 * the static STRICT policy when the effective mode is STRICT, and/or the converted port-level policy.
 */
export function effectivePeerAuthenticationKeys(
  rootNamespace: string,
  applicable: readonly PeerAuthentication[],
): string[] {
  const mesh = oldestPeerAuthentication(
    applicable.filter((p) => !hasSelector(p) && p.metadata.namespace === rootNamespace),
  );
  const namespaceWide = oldestPeerAuthentication(
    applicable.filter((p) => !hasSelector(p) && p.metadata.namespace !== rootNamespace),
  );
  const workload = oldestPeerAuthentication(
    applicable.filter((p) => hasSelector(p) && p.metadata.namespace !== rootNamespace),
  );
  let strict = false;
  let portKey = "";
  if (mesh) strict = mode(mesh.spec.mtls) === "STRICT";
  if (namespaceWide && mode(namespaceWide.spec.mtls) !== "UNSET")
    strict = mode(namespaceWide.spec.mtls) === "STRICT";
  if (workload) {
    const wm = mode(workload.spec.mtls);
    const key = `${workload.metadata.namespace}/${CONVERTED_PEER_AUTHENTICATION_PREFIX}${workload.metadata.name}`;
    if (wm === "STRICT") strict = true;
    if (wm === "PERMISSIVE" || wm === "DISABLE") strict = false;
    const ports = portsSorted(workload);
    if (ports.length > 0) {
      if (wm === "STRICT") {
        if (ports.some(([, pm]) => pm === "PERMISSIVE" || pm === "DISABLE")) {
          portKey = key;
          strict = false;
        }
      } else if (wm === "PERMISSIVE" || wm === "DISABLE") {
        if (ports.some(([, pm]) => pm === "STRICT")) portKey = key;
      } else if (strict) {
        if (ports.some(([, pm]) => pm === "PERMISSIVE")) {
          portKey = key;
          strict = false;
        }
      } else {
        if (ports.some(([, pm]) => pm === "STRICT")) portKey = key;
      }
    }
  }
  const keys = new Set<string>();
  if (strict) keys.add(`${rootNamespace}/${STATIC_STRICT_POLICY_NAME}`);
  if (portKey) keys.add(portKey);
  return [...keys].sort();
}
