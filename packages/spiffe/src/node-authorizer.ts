import type { Caller } from "./authenticator.js";
import { SpiffeId } from "./spiffe-id.js";

/** An impersonation request: `caller` asks for a certificate of `requested`. */
export interface ImpersonationRequest {
  caller: Caller;
  requested: SpiffeId;
}

/** Decides whether a caller may obtain a certificate for another identity. */
export interface NodeAuthorizer {
  authorize(request: ImpersonationRequest): boolean | Promise<boolean>;
}

/** Options of {@link createNodeAuthorizer}. */
export interface NodeAuthorizerOptions {
  /**
   * Node agents allowed to impersonate, as `<namespace>/<serviceAccount>`, e.g.
   * `istio-system/ztunnel`. Istio `CA_TRUSTED_NODE_ACCOUNTS`. Default: none.
   */
  trustedNodeAccounts: readonly string[];
  /**
   * Identities of the workloads running on a node. Istio looks these up from the pods scheduled on
   * the caller's node.
   */
  identitiesOnNode(node: string): Iterable<SpiffeId | string> | Promise<Iterable<SpiffeId | string>>;
}

/**
 * The standard node authorizer: the caller must be a trusted node agent whose credential names its
 * node, and a workload with the requested identity must run on that node.
 */
export function createNodeAuthorizer(options: NodeAuthorizerOptions): NodeAuthorizer {
  const trusted = new Set(options.trustedNodeAccounts);
  return {
    async authorize({ caller, requested }) {
      const istio = caller.identity.toIstio();
      if (!istio || !trusted.has(`${istio.namespace}/${istio.serviceAccount}`)) return false;
      if (caller.node === undefined || caller.node === "") return false;
      if (!requested.memberOf(caller.identity.trustDomain)) return false;
      for (const id of await options.identitiesOnNode(caller.node)) {
        const parsed = typeof id === "string" ? SpiffeId.tryParse(id) : id;
        if (parsed?.equals(requested)) return true;
      }
      return false;
    },
  };
}
