// The protocol of a Service or ServiceEntry port, as Istio selects it
// (https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/): a
// Kubernetes port's `appProtocol`, else its name's prefix (`http-web`, `grpc`, `mysql-main`), else TCP
// for the well-known ports of protocols whose server speaks first; a ServiceEntry port's `protocol`.
import type { istio } from "@ambient/xds";

type AppProtocol = istio.workload.AppProtocol;

/**
 * Istio's protocol names (compared without case) and what a waypoint needs to know of each: HTTP/1.1,
 * HTTP/2 or gRPC (the upstream speaks it), or TCP / TLS (carried as bytes from the first one, so the
 * server may speak first), as istiod's `toAppProtocolFromProtocol` sends them (HTTPS as TLS); a
 * ztunnel reads TCP and TLS as "not HTTP", and our waypoint as declared TCP.
 * HTTP protocols the waypoint has no upstream of its own for (`grpc-web`, `http_proxy`) are UNKNOWN:
 * the waypoint detects HTTP on them.
 */
const PROTOCOLS: ReadonlyMap<string, AppProtocol> = new Map([
  ["http", "HTTP11"],
  ["http2", "HTTP2"],
  ["grpc", "GRPC"],
  ["tcp", "TCP"],
  ["mongo", "TCP"],
  ["redis", "TCP"],
  ["mysql", "TCP"],
  ["tls", "TLS"],
  ["https", "TLS"],
]);

/**
 * Kubernetes' standard `appProtocol` values (`kubernetes.io/h2c`, WebSocket in clear and over TLS),
 * and `h2c`, which this control plane has always read as HTTP/2 over cleartext.
 */
const KUBERNETES_APP_PROTOCOLS: ReadonlyMap<string, AppProtocol> = new Map([
  ["kubernetes.io/h2c", "HTTP2"],
  ["kubernetes.io/ws", "HTTP11"],
  ["kubernetes.io/wss", "TLS"],
  ["h2c", "HTTP2"],
]);

/** Ports of protocols whose server speaks first (SMTP, DNS over TCP, MySQL, MongoDB): TCP when undeclared. */
const SERVER_FIRST_PORTS: ReadonlySet<number> = new Set([25, 53, 3306, 27017]);

/**
 * The workload API protocol of a Kubernetes Service port, or undefined when it is not declared (the
 * waypoint then detects it). `appProtocol`, when set, is read instead of the name, as Istio does.
 */
export function servicePortProtocol(port: {
  port: number;
  name?: unknown;
  appProtocol?: unknown;
  protocol?: unknown;
}): AppProtocol | undefined {
  if (port.protocol === "UDP" || port.protocol === "SCTP") return undefined;
  const declared =
    typeof port.appProtocol === "string" ? port.appProtocol : typeof port.name === "string" ? port.name : "";
  const lower = declared.toLowerCase();
  const standard = typeof port.appProtocol === "string" ? KUBERNETES_APP_PROTOCOLS.get(lower) : undefined;
  if (standard !== undefined) return standard;
  // `grpc-web` is one protocol, not `grpc` with a suffix.
  if (lower.startsWith("grpc-web")) return undefined;
  const dash = lower.indexOf("-");
  const found = PROTOCOLS.get(dash < 0 ? lower : lower.slice(0, dash));
  if (found !== undefined) return found;
  return SERVER_FIRST_PORTS.has(port.port) ? "TCP" : undefined;
}

/**
 * Every protocol name Istio reads on a ServiceEntry port, as it spells them; a port's `protocol` is
 * compared without case. Istio refuses a port with another name (an empty one asks for detection).
 */
export const ISTIO_PROTOCOL_NAMES: readonly string[] = [
  "HTTP",
  "HTTPS",
  "HTTP2",
  "HTTP_PROXY",
  "GRPC",
  "GRPC-Web",
  "TCP",
  "TLS",
  "UDP",
  "Mongo",
  "Redis",
  "MySQL",
];
const ISTIO_PROTOCOLS: ReadonlySet<string> = new Set(ISTIO_PROTOCOL_NAMES.map((p) => p.toLowerCase()));

/** Whether Istio knows `protocol` as a port protocol, in any case. */
export function isIstioProtocol(protocol: string): boolean {
  return ISTIO_PROTOCOLS.has(protocol.toLowerCase());
}

/** The workload API protocol of a ServiceEntry port's `protocol` (`HTTP`, `GRPC`, `TCP`, ...). */
export function serviceEntryPortProtocol(protocol: string | undefined): AppProtocol | undefined {
  return protocol === undefined ? undefined : PROTOCOLS.get(protocol.toLowerCase());
}
