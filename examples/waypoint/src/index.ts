/**
 * A waypoint for the local ambient mesh: terminates HBONE from ztunnels on its pod IP for the Services
 * bound to it, applies the AuthorizationPolicies attached to its Gateway and the routes of its Services,
 * all received from the control plane over xDS, and sends each request over HBONE to the chosen
 * endpoint's ztunnel.
 *
 * @example
 * ```ts
 * import { startWaypoint } from "@ambient/example-waypoint";
 *
 * const waypoint = await startWaypoint({
 *   gateway: { name: "waypoint", namespace: "demo" },
 *   ip: "127.10.0.6",
 *   nodeName: "node-a",
 *   token, // node-a's token from the control plane
 *   rootCertPem,
 *   controlPlaneAddress: "127.0.0.1:15012", // routes, backends and L7 policies come from here
 * });
 * await waypoint.ready;
 * ```
 *
 * @packageDocumentation
 */
export { type BackendRef, resolveServiceBackend, serviceAtVip } from "./backends.js";
export { WaypointError, type WaypointErrorCode, type WaypointErrorDetails } from "./errors.js";
export {
  DEFAULT_OPERATOR_PORTS,
  isLoopback,
  type OperatorAddresses,
  type OperatorPorts,
} from "./operator-endpoints.js";
export { targetsWaypoint, targetsWaypointOrService } from "./policy-targets.js";
export {
  createRequestHistory,
  type RecentRequest,
  type RecentRequests,
  type RequestHistory,
  type RequestHistoryOptions,
  withDecidingPolicy,
} from "./recent-requests.js";
export {
  authenticateRequest,
  type CompiledJwtRule,
  type CompiledRequestAuthentication,
  compileRequestAuthentication,
  DEFAULT_TOKEN_LOCATIONS,
  findTokens,
  RequestAuthenticationStore,
  rulesFor,
  type TokenLocation,
} from "./request-authentication.js";
export { type RunningWaypoint, startWaypoint, type WaypointOptions } from "./waypoint.js";
export {
  appliesTo,
  boundRouteNames,
  isBoundTo,
  policyObject,
  resourceProblem,
  type WaypointSelf,
  WaypointXdsConfig,
  type WaypointXdsTargets,
  waypointXdsChecks,
} from "./xds-config.js";
