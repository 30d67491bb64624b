/**
 * A waypoint for the local ambient mesh: terminates HBONE from ztunnels on its pod IP, applies the
 * AuthorizationPolicies attached to its Gateway and the HTTPRoutes of its Services, and sends each
 * request over HBONE to the chosen endpoint's ztunnel.
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
 *   meshDir: "mesh",
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
  type ManifestText,
  selectWaypointManifests,
  targetsWaypoint,
  type WaypointManifests,
} from "./waypoint-manifests.js";
