/**
 * Istio's AuthorizationPolicy semantics for ambient mode: validation of `security.istio.io/v1`
 * resources, conversion to the `istio.security.Authorization` wire form ztunnel enforces, and an
 * {@link AuthorizationEngine} that decides connections (L4) and HTTP requests (L7) with an
 * explanation.
 *
 * @example
 * ```ts
 * import { createAuthorizationEngine } from "@ambient/policy";
 *
 * const engine = createAuthorizationEngine();
 * engine.applyYaml(`
 * apiVersion: security.istio.io/v1
 * kind: AuthorizationPolicy
 * metadata: { name: allow-frontend, namespace: shop }
 * spec:
 *   rules:
 *   - from: [{ source: { principals: ["cluster.local/ns/shop/sa/frontend"] } }]
 * `);
 * const decision = engine.evaluate({
 *   source: { ip: "10.0.0.1", identity: "spiffe://cluster.local/ns/shop/sa/frontend" },
 *   destination: { ip: "10.0.0.2", port: 8080, workload: { namespace: "shop" } },
 * });
 * console.log(decision.allowed, decision.reason); // true "allowed by: shop/allow-frontend (rule 0)"
 * ```
 *
 * @packageDocumentation
 */
export {
  type ApplyResult,
  type AuthorizationDecision,
  AuthorizationEngine,
  type AuthorizationEngineOptions,
  type AuthorizationRequest,
  type CustomAuthorizer,
  createAuthorizationEngine,
  type DecisionAction,
  type OpenConnection,
  type PolicyExplanation,
  type PolicyTarget,
} from "./authorization-engine.js";
export {
  PolicyError,
  type PolicyErrorCode,
  type PolicyErrorDetails,
  type ValidationIssue,
} from "./errors.js";
export type {
  AuthorizationAction,
  AuthorizationPolicy,
  AuthorizationPolicySpec,
  Condition,
  MtlsMode,
  ObjectMeta,
  Operation,
  PeerAuthentication,
  PeerAuthenticationSpec,
  PolicyResource,
  PolicyTargetReference,
  Rule,
  Source,
  WorkloadSelector,
} from "./kubernetes-types.js";
export { type ParsedPolicies, parsePolicyYaml, type ResourceWarning } from "./parse-policy-yaml.js";
export {
  normalizePath,
  normalizeRequestPath,
  PATH_NORMALIZATIONS,
  type PathNormalization,
  type PathNormalizationResult,
} from "./path-match.js";
export {
  CONVERTED_PEER_AUTHENTICATION_PREFIX,
  convertPeerAuthentication,
  effectivePeerAuthenticationKeys,
  type PeerAuthenticationContext,
  STATIC_STRICT_POLICY_NAME,
  staticStrictAuthorization,
} from "./peer-authentication.js";
export {
  type Counter,
  type Gauge,
  type Histogram,
  type Logger,
  type MetricLabels,
  type MetricsSink,
  noopLogger,
  noopMetrics,
} from "./telemetry.js";
export {
  type ConversionResult,
  type ConversionWarning,
  type ConvertOptions,
  DRY_RUN_ANNOTATION,
  toWireAuthorization,
} from "./to-wire-authorization.js";
export { withTrustDomainAliases } from "./trust-domain-aliases.js";
export {
  type ValidatedResource,
  type ValidateOptions,
  validateAuthorizationPolicy,
  validatePeerAuthentication,
  validateResource,
} from "./validate-resource.js";
export type {
  StringMatch,
  WireAction,
  WireAddress,
  WireAuthorization,
  WireClause,
  WireExtension,
  WireGroup,
  WireMatch,
  WireRule,
  WireScope,
  WireServiceAccountMatch,
} from "./wire.js";
