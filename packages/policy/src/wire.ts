/**
 * The wire form of `istio.security.Authorization` as plain objects: proto field names in
 * lowerCamelCase, enums as their string names, bytes as `Uint8Array`, repeated fields as arrays.
 * This is the shape @ambient/xds decodes to and encodes from.
 */

/** One string pattern. `presence` matches any non-empty value. */
export type StringMatch =
  | { exact: string }
  | { prefix: string }
  | { suffix: string }
  | { presence: Record<string, never> };

/** An IP address or CIDR: 4 or 16 address bytes and a prefix length in bits. */
export interface WireAddress {
  address: Uint8Array;
  length: number;
}

/** A Kubernetes service account, compared exactly with the caller's identity. */
export interface WireServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

/**
 * One match: every field that is set must pass (positive list: any value matches; `not` list:
 * no value matches). A match with nothing set never matches.
 */
export interface WireMatch {
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  sourceIps: WireAddress[];
  notSourceIps: WireAddress[];
  destinationIps: WireAddress[];
  notDestinationIps: WireAddress[];
  destinationPorts: number[];
  notDestinationPorts: number[];
  /** Newer istiod versions only; absent means empty. */
  serviceAccounts?: WireServiceAccountMatch[];
  /** Newer istiod versions only; absent means empty. */
  notServiceAccounts?: WireServiceAccountMatch[];
  /** Carried through untouched; not evaluated. */
  extensions?: WireExtension[];
}

/**
 * istiod's `Rules` message: its matches are ORed, and a rule with no matches matches everything.
 * This is the shape on the wire and the one this package emits.
 */
export interface WireRule {
  matches: WireMatch[];
  /**
   * Accepted on input only: the four-level form `rules[].clauses[].matches[]`. Each clause is
   * read as one more ANDed rule. Never emitted (protobuf encoders drop it).
   */
  clauses?: WireClause[];
}

/** A set of ORed matches, as in the four-level input form. */
export interface WireClause {
  matches: WireMatch[];
}

/** A group (one AuthorizationPolicy rule): its rules are ANDed; a group with no rules matches everything. */
export interface WireGroup {
  rules: WireRule[];
}

export type WireScope = "GLOBAL" | "NAMESPACE" | "WORKLOAD_SELECTOR";
export type WireAction = "ALLOW" | "DENY";

/** `istio.security.Authorization`: groups are ORed; a policy with no groups never matches. */
export interface WireAuthorization {
  name: string;
  namespace: string;
  scope: WireScope;
  action: WireAction;
  groups: WireGroup[];
  dryRun?: boolean;
  /** Carried through untouched; not evaluated. */
  extensions?: WireExtension[];
}

/** istio.security `Extension`: a named, typed configuration blob (an `Any`). */
export interface WireExtension {
  name?: string;
  config?: { typeUrl?: string; value?: Uint8Array };
}

/** An empty match, to spread into literals. */
export function emptyWireMatch(): WireMatch {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
  };
}
