/**
 * A node proxy for the local demo mesh: inbound HBONE on every local pod IP with authorization
 * policy, SOCKS5 outbound on the node IP, certificates from the mesh CA and state over Delta xDS.
 *
 * @example
 * ```ts
 * import { readFileSync } from "node:fs";
 * import { startZtunnel } from "@ambient/example-ztunnel";
 *
 * const ztunnel = await startZtunnel({
 *   nodeName: "node-a",
 *   nodeIp: "127.20.0.1",
 *   rootCertPem: readFileSync(".mesh-state/root-cert.pem", "utf8"),
 *   token: readFileSync(".mesh-state/tokens/node-a.jwt", "utf8").trim(),
 * });
 * await ztunnel.ready;
 * ```
 *
 * @packageDocumentation
 */

export {
  type AccessLogOutcome,
  type AccessLogParties,
  accessLogRecord,
} from "./access-log.js";
export { adminJson, adminJsonView } from "./admin-json.js";
export {
  parseZtunnelCli,
  withoutSeparators,
  ZTUNNEL_FLAGS,
  type ZtunnelArgs,
  type ZtunnelCli,
  type ZtunnelFlag,
  ztunnelUsage,
} from "./cli.js";
export { type CloseOnce, closeOnce } from "./close-once.js";
export {
  type ClusterIdChoice,
  clusterIdFrom,
  clusterIdProblem,
  DEFAULT_CLUSTER_ID,
  ZTUNNEL_CLUSTER_ID_VARIABLES,
} from "./cluster-id.js";
export { DEFAULT_CONNECT_TIMEOUT_MS, withConnectDeadline } from "./connect-deadline.js";
export {
  CONTROL_PLANE_SERVER_NAME,
  type ControlPlaneKeepalive,
  controlPlaneChannel,
  DEFAULT_CONTROL_PLANE_IDENTITY,
  DEFAULT_CONTROL_PLANE_KEEPALIVE,
  followRoots,
} from "./control-plane-channel.js";
export {
  type AddressFamily,
  type DnsClient,
  kubernetesExpansions,
  kubernetesSearchDomains,
  MESH_RECORD_TTL,
  type MeshAnswer,
  type MeshNameSource,
  resolveMeshName,
} from "./dns-names.js";
export { createDnsProxy, DNS_PROXY_PORT, type DnsProxy, type DnsProxyOptions } from "./dns-proxy.js";
export { ZtunnelError, type ZtunnelErrorCode, type ZtunnelErrorDetails } from "./errors.js";
export {
  createHostnameResolver,
  type HostnameResolver,
  type HostnameResolverOptions,
} from "./hostname-endpoints.js";
export {
  INPOD_TPROXY_MARK,
  type InPodTcpCaptureOptions,
  inPodDnsCapture,
  inPodReplyRouting,
  inPodTcpCapture,
  KUBELET_PROBE_SOURCE,
} from "./in-pod.js";
export {
  decideInboundDestination,
  type InboundDecision,
  type InboundListener,
  type InboundLookups,
} from "./inbound-destination.js";
export {
  type CanonicalIp,
  canonicalFromBytes,
  canonicalIp,
  formatIpv6,
  parseIpv4,
  parseIpv6,
} from "./ip-address.js";
export {
  type LocalityOf,
  type LocalityScope,
  localityRank,
  sameScope,
  selectByLocality,
} from "./load-balancing.js";
export { isLocalAuthority } from "./local-authority.js";
export {
  CLUSTER_DOMAIN_VARIABLES,
  clusterDomainFrom,
  clusterDomainProblem,
  controlPlaneIdentityOf,
  DEFAULT_CLUSTER_DOMAIN,
  DEFAULT_TRUST_DOMAIN,
  type SettingChoice,
  settingFrom,
  TRUST_DOMAIN_VARIABLES,
  trustDomainFrom,
  trustDomainProblem,
} from "./mesh-domains.js";
export {
  addressKey,
  DEFAULT_MAX_UNRESOLVED_ADDRESSES,
  DEFAULT_ON_DEMAND_TIMEOUT_MS,
  hostnameKey,
  missingAddresses,
  type OnDemandLookups,
} from "./on-demand.js";
export { missingProxyNodeFlags, PROXY_NODE_FLAGS, warnMissingProxyNodeFlags } from "./runtime-flags.js";
export { TCP_KEEPALIVE_IDLE_MS, withKeepAlive } from "./socket-keepalive.js";
export {
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  parseGreeting,
  parseReply,
  parseRequest,
  SOCKS5_COMMAND,
  SOCKS5_METHOD,
  SOCKS5_REPLY,
  type Socks5AddressType,
  type Socks5Greeting,
  type Socks5Reply,
  type Socks5Request,
} from "./socks5.js";
export {
  decideGreeting,
  decideRequest,
  type ServiceHostnameResolver,
  SOCKS5_MAX_GREETING_BYTES,
  SOCKS5_MAX_REQUEST_BYTES,
  type Socks5GreetingDecision,
  type Socks5RequestDecision,
} from "./socks5-request.js";
export {
  createSocks5Handler,
  DEFAULT_SOCKS5_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_SOCKS5_MAX_HANDSHAKES,
  type Socks5Connect,
  type Socks5Handler,
  type Socks5HandlerOptions,
  type Socks5HandshakeOutcome,
} from "./socks5-server.js";
export {
  type ConnectionParties,
  connectionLabels,
  countRefused,
  createTcpMetrics,
  MeteredConnection,
  relayCloseFlag,
  type ServiceDescription,
  TCP_BYTES_REPORT_MS,
  TCP_METRIC_LABELS,
  type TcpMetricLabels,
  type TcpMetrics,
  type TcpResponseFlag,
} from "./tcp-metrics.js";
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
export { type TokenFileReader, tokenFileReader } from "./token-file.js";
export {
  addressProblem,
  type Destination,
  type Endpoint,
  identityOf,
  ipFromBytes,
  ipv4Of,
  networkOf,
  pickEndpoint,
  type ServiceMatch,
  serviceForTargetPort,
  serviceVip,
  usesHbone,
  type WaypointTarget,
  WorkloadStore,
  waypointOf,
} from "./workload-store.js";
export {
  type ConfigDump,
  type ConnectionSummary,
  deniedBy,
  INPOD_MARK,
  type InPodPorts,
  type InPodSummary,
  type InPodWorkload,
  parseNameserver,
  type RunningZtunnel,
  socks5AddressOf,
  startZtunnel,
  type ZtunnelAddresses,
  type ZtunnelNode,
  type ZtunnelOptions,
  type ZtunnelPorts,
} from "./ztunnel.js";
