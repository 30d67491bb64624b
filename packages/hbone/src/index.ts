/**
 * HBONE for Node.js: HTTP/2 CONNECT over mutual TLS, wire-compatible with Istio ztunnel and
 * waypoints. A server that hands each tunnel to the application, a pooled client, double HBONE,
 * tunnel header helpers and a PROXY protocol v2 codec.
 *
 * @example
 * ```ts
 * import { createHboneClient, createHboneServer, pipeTunnel } from "@ambient/hbone";
 * import { connect } from "node:net";
 *
 * const server = createHboneServer({ key, certChain, trustBundle, onTunnel: (tunnel) => {
 *   const upstream = connect({ host: tunnel.authority.host, port: tunnel.authority.port, allowHalfOpen: true });
 *   upstream.once("connect", () => pipeTunnel(tunnel.accept(), upstream).catch(() => {}));
 *   upstream.once("error", () => tunnel.state === "pending" && tunnel.refuse(503));
 * } });
 * await server.listen({ port: 15008 });
 *
 * const client = createHboneClient({ key, certChain, trustBundle });
 * const tunnel = await client.connect({ address: "10.0.0.7:15008", authority: "10.0.0.7:8080",
 *   expectedIdentities: ["spiffe://cluster.local/ns/default/sa/backend"] });
 * ```
 *
 * @packageDocumentation
 */

export { formatAuthority, parseAuthority, type TunnelAuthority } from "./authority.js";
export { credentialsFromSvid, type HboneCredentials, type HboneTlsOptions, type Pem } from "./credentials.js";
export { HBONE_DEFAULTS, TLS12_CIPHERS, TLS13_CIPHERSUITES } from "./defaults.js";
export { HboneError, type HboneErrorCode, type HboneErrorDetails } from "./errors.js";
export {
  createHboneClient,
  type HboneClient,
  type HboneClientOptions,
  type HboneClientStats,
  type HboneConnectOptions,
  type HboneDoubleConnectOptions,
  type HboneRequestHeaders,
} from "./hbone-client.js";
export {
  createHboneServer,
  type HboneListenOptions,
  type HboneServer,
  type HboneServerOptions,
  type HboneServerStats,
} from "./hbone-server.js";
export {
  createTraceparent,
  type ForwardedElement,
  formatBaggage,
  formatForwarded,
  formatTraceparent,
  formatWorkloadBaggage,
  HBONE_HEADER_NAMES,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
  parseWorkloadBaggage,
  type TraceParent,
  type WorkloadBaggage,
} from "./headers.js";
export { HBONE_STATUS, type InboundTunnel, type InboundTunnelState } from "./inbound-tunnel.js";
export { http2ErrorName, toHboneError } from "./node-error.js";
export { type PipeTunnelOptions, type PipeTunnelResult, pipeTunnel } from "./pipe-tunnel.js";
export {
  type DecodedProxyHeader,
  decodeProxyHeader,
  encodeProxyHeader,
  PROXY_TLV,
  type ProxyEndpoint,
  type ProxyHeader,
  type ProxyTlv,
  readProxyHeader,
} from "./proxy-protocol.js";
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
export type { TunnelHeaders, TunnelInfo, TunnelStream } from "./tunnel-stream.js";
