/**
 * xDS for Istio ambient: a Delta and SotW aggregated discovery server backed by a versioned
 * cache, a client, and the Istio workload/authorization and Envoy LDS/RDS/CDS/EDS message types.
 *
 * @example
 * ```ts
 * import { createXdsClient, createXdsServer, TypeUrl } from "@ambient/xds";
 *
 * const server = createXdsServer({ debounceMs: 10 });
 * server.cache.set(TypeUrl.address, "uid-1", { workload: { uid: "uid-1", name: "web-0", namespace: "demo" } });
 * const port = await server.listen();
 * const client = createXdsClient({ address: `127.0.0.1:${port}`, node: { id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local" } });
 * client.watch(TypeUrl.address);
 * await client.ready();
 * console.log(client.get(TypeUrl.address, "uid-1")?.workload?.name); // "web-0"
 * client.close();
 * await server.close();
 * ```
 *
 * @packageDocumentation
 */
export { ADS_SERVICE, adsServiceDefinition } from "./ads-service.js";
export { XdsError, type XdsErrorCode, type XdsErrorDetails } from "./errors.js";
export type { ambient, envoy, google, istio, MessageTypes } from "./gen/types.js";
export { createXdsPushThrottle, XdsPushThrottle, type XdsPushThrottleOptions } from "./push-throttle.js";
export {
  DEFAULT_RECONNECT_BACKOFF,
  type ReconnectBackoff,
  reconnectChannelOptions,
} from "./reconnect.js";
export type { CacheChange, CachedResource, CacheStats, SetOptions } from "./resource-cache.js";
export { ResourceCache } from "./resource-cache.js";
export type { NackRecord, NodeInfo, XdsStreamContext } from "./server-session.js";
export { MAX_NAME_LENGTH, MAX_TYPES_PER_STREAM } from "./server-session.js";
export { type JsonValue, structFromJson, structToJson } from "./struct.js";
export type {
  Counter,
  Gauge,
  Histogram,
  Logger,
  MetricLabels,
  MetricsSink,
} from "./telemetry.js";
export { noopLogger, noopMetrics } from "./telemetry.js";
export {
  type AnyMessage,
  type MessageInit,
  type MessageKey,
  type MessageName,
  type MessageOf,
  messageNameOf,
  TYPE_URL_PREFIX,
  TypeRegistry,
  TypeUrl,
  typeRegistry,
} from "./type-registry.js";
export {
  createXdsClient,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_LOOKUP_TIMEOUT_MS,
  type LookupOptions,
  type WatchOptions,
  type XdsChangeEvent,
  XdsClient,
  type XdsClientNode,
  type XdsClientOptions,
  type XdsLookupResult,
  type XdsRejectedResource,
  type XdsResource,
  type XdsStreamEndReason,
} from "./xds-client.js";
export {
  createXdsServer,
  DEFAULT_XDS_SERVER_OPTIONS,
  type XdsAuthRequest,
  type XdsRelatedNames,
  type XdsResolver,
  XdsServer,
  type XdsServerOptions,
  type XdsStreamStats,
} from "./xds-server.js";

import type { ambient, istio } from "./gen/types.js";
/** `istio.workload.Address`: a Workload or a Service. */
export type WorkloadAddress = istio.workload.Address;
/** `istio.workload.Workload`. */
export type Workload = istio.workload.Workload;
/** `istio.workload.Service`. */
export type Service = istio.workload.Service;
/** `istio.security.Authorization`. */
export type Authorization = istio.security.Authorization;
/** `ambient.waypoint.v1.WaypointPolicy`. */
export type WaypointPolicy = ambient.waypoint.v1.WaypointPolicy;
