/**
 * The L7 authorization contract. `@ambient/policy`'s `AuthorizationEngine` fits it structurally; any
 * other evaluator with this shape plugs in the same way.
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
    /**
     * What the request was sent through and to, for policies attached with `targetRefs`: the waypoint
     * Gateway (group `gateway.networking.k8s.io`) and, when known, the destination Service (group `""`).
     */
    targets?: readonly { kind: string; name: string; namespace: string; group?: string }[];
  };
  http?: {
    host: string;
    method: string;
    /** Path without the query; the waypoint handler sends it already normalized. */
    path: string;
    /**
     * True when `path` is already in the normal form the evaluator is configured for, so it matches the
     * path as given instead of normalizing a second time. The waypoint handler always sets it.
     */
    pathNormalized?: boolean;
    headers: Record<string, string | readonly string[] | undefined>;
    /** `iss/sub` of a verified JWT. */
    requestPrincipal?: string;
    /** Verified JWT audiences (`request.auth.audiences`). */
    audiences?: readonly string[];
    /** Verified JWT `azp` (`request.auth.presenter`). */
    presenter?: string;
    /** Verified JWT claims (`request.auth.claims[...]`). */
    claims?: Record<string, unknown>;
  };
}

/** What the authorizer decided and why. */
export interface AuthorizationDecision {
  allowed: boolean;
  /** The request itself is malformed (e.g. a path that cannot be normalized): answered with 400. */
  badRequest?: boolean;
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
