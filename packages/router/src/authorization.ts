/**
 * The L7 authorization contract. `@ambient/policy`'s `AuthorizationEngine` fits it structurally, so
 * the router does not depend on that package to compile.
 */
export interface AuthorizationRequest {
  source: {
    ip: string;
    port?: number;
    /** `spiffe://td/ns/<ns>/sa/<sa>` from the tunnel's verified peer certificate; undefined for plaintext. */
    identity?: string;
  };
  destination: {
    ip: string;
    port: number;
    workload?: { namespace: string; name?: string; labels?: Record<string, string> };
  };
  http?: {
    host: string;
    method: string;
    path: string;
    headers: Record<string, string | readonly string[] | undefined>;
    /** `iss/sub` of a verified JWT. */
    requestPrincipal?: string;
  };
}

/** What the authorizer decided and why. */
export interface AuthorizationDecision {
  allowed: boolean;
  /** Human explanation. */
  reason: string;
  /** `namespace/name` of the policy that decided. */
  policy?: string;
  action?: "ALLOW" | "DENY" | "CUSTOM" | "AUDIT";
  rule?: number;
  dryRun?: string[];
}

/** Anything that can decide on a request, e.g. an `AuthorizationEngine` from `@ambient/policy`. */
export interface AuthorizationEvaluator {
  evaluate(request: AuthorizationRequest): AuthorizationDecision;
}
