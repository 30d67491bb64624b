/**
 * Kubernetes `security.istio.io/v1` resources, as validated plain objects.
 */

/** The parts of Kubernetes object metadata the engine reads. */
export interface ObjectMeta {
  name: string;
  namespace: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  /** RFC 3339; the oldest PeerAuthentication wins a tie, as in istiod. */
  creationTimestamp?: string;
}

export interface WorkloadSelector {
  matchLabels?: Record<string, string>;
}

export interface PolicyTargetReference {
  group?: string;
  kind: string;
  name: string;
  namespace?: string;
}

/** Who sends the request. Fields are ANDed; values of one field are ORed. */
export interface Source {
  principals?: string[];
  notPrincipals?: string[];
  requestPrincipals?: string[];
  notRequestPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  serviceAccounts?: string[];
  notServiceAccounts?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
  remoteIpBlocks?: string[];
  notRemoteIpBlocks?: string[];
  trustDomains?: string[];
  notTrustDomains?: string[];
}

/** What the request does. Fields are ANDed; values of one field are ORed. */
export interface Operation {
  hosts?: string[];
  notHosts?: string[];
  ports?: string[];
  notPorts?: string[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
}

export interface Condition {
  key: string;
  values?: string[];
  notValues?: string[];
}

export interface Rule {
  from?: { source: Source }[];
  to?: { operation: Operation }[];
  when?: Condition[];
}

export type AuthorizationAction = "ALLOW" | "DENY" | "AUDIT" | "CUSTOM";

export interface AuthorizationPolicySpec {
  selector?: WorkloadSelector;
  targetRef?: PolicyTargetReference;
  targetRefs?: PolicyTargetReference[];
  /** Default `ALLOW`. */
  action?: AuthorizationAction;
  provider?: { name: string };
  rules?: Rule[];
}

export interface AuthorizationPolicy {
  apiVersion: string;
  kind: "AuthorizationPolicy";
  metadata: ObjectMeta;
  spec: AuthorizationPolicySpec;
}

export type MtlsMode = "UNSET" | "DISABLE" | "PERMISSIVE" | "STRICT";

export interface PeerAuthenticationSpec {
  selector?: WorkloadSelector;
  mtls?: { mode?: MtlsMode };
  /** Keyed by port number (as text, as YAML maps are). */
  portLevelMtls?: Record<string, { mode?: MtlsMode }>;
}

export interface PeerAuthentication {
  apiVersion: string;
  kind: "PeerAuthentication";
  metadata: ObjectMeta;
  spec: PeerAuthenticationSpec;
}

export type PolicyResource = AuthorizationPolicy | PeerAuthentication;
