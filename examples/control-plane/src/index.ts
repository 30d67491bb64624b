/**
 * A reference control plane for the local ambient mesh: reads Kubernetes-style manifests from a
 * directory, serves workloads, services and authorization policies over Delta xDS (and Envoy
 * LDS/RDS/CDS/EDS for proxyless gRPC over SotW or Delta), and signs
 * workload certificates for node agents (ztunnels) that hold a node token.
 *
 * @example
 * ```ts
 * import { startControlPlane } from "@ambient/example-control-plane";
 *
 * const cp = await startControlPlane({ meshDir: "mesh", listen: "127.0.0.1:0" });
 * const token = await cp.tokenFor("node-a"); // send as `authorization: Bearer <token>`
 * console.log(cp.address, cp.config().workloads.length);
 * await cp.close();
 * ```
 *
 * @packageDocumentation
 */
export {
  CONTROL_PLANE_IDENTITY,
  type ControlPlane,
  type ControlPlaneOptions,
  configToJson,
  DEFAULT_GRPC_SERVER_OPTIONS,
  DEFAULT_TRUSTED_NODE_ACCOUNTS,
  type ReloadResult,
  startControlPlane,
} from "./control-plane.js";
export { CONTROL_PLANE_SERVER_NAME, controlPlaneChannel } from "./control-plane-credentials.js";
export type {
  DashboardEdge,
  DashboardOptions,
  DashboardProxy,
  DashboardSnapshot,
  DashboardWorkload,
  MeshCollector,
} from "./dashboard/index.js";
export { ControlPlaneError, type ControlPlaneErrorCode, type ControlPlaneErrorDetails } from "./errors.js";
export {
  applyLastGood,
  type LastGoodResult,
  type ManifestError,
  type ObjectValidator,
  objectId,
} from "./last-good.js";
export {
  DEFAULT_MANIFEST_LIMITS,
  type KubeObject,
  type ManifestFile,
  type ManifestLimits,
  type MeshIssue,
  type ParsedManifestFile,
  parseManifestFile,
  parseManifests,
} from "./manifests.js";
export { TOKEN_AUDIENCE, TOKEN_ISSUER } from "./mesh-state.js";
export {
  CLUSTER_POD_CIDRS,
  DEFAULT_POD_CIDRS,
  type Ipv4Cidr,
  parseIpv4Cidr,
  podIpProblem,
} from "./pod-address.js";
export {
  AUTO_ALLOCATE_LABEL,
  type HostAddress,
  ServiceEntryAddressAllocator,
  type ServiceEntryLike,
  statusAddresses,
  wantsAllocatedAddresses,
} from "./service-entry-addresses.js";
export type { Counter, Gauge, Histogram, Logger, MetricLabels, MetricsSink } from "./telemetry.js";
export { noopLogger, noopMetrics } from "./telemetry.js";
export { type EnvoyConfig, outboundClusterName, translateEnvoy } from "./translate-envoy.js";
export {
  ipv4Bytes,
  type MeshConfig,
  type MeshService,
  type MeshWorkload,
  parsePodCidrs,
  type TranslateOptions,
  translateMesh,
  validateManifestObject,
  WAYPOINT_ADDRESS_ANNOTATION,
  WAYPOINT_HBONE_PORT,
  waypointGateways,
} from "./translate-mesh.js";
export {
  NETWORKING_API_VERSIONS,
  parseServiceEntry,
  parseWorkloadEntry,
  type ServiceEntryPort,
  type ServiceEntrySpec,
  type WorkloadEntrySpec,
} from "./translate-service-entry.js";
