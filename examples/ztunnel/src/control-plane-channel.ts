import { SpiffeId, TrustBundle } from "@ambient/spiffe";
import { grpcChannelCredentials } from "@ambient/spiffe/grpc";
import { DEFAULT_RECONNECT_BACKOFF, type ReconnectBackoff, reconnectChannelOptions } from "@ambient/xds";
import type { ChannelCredentials, ChannelOptions } from "@grpc/grpc-js";
import { controlPlaneIdentityOf, DEFAULT_TRUST_DOMAIN } from "./mesh-domains.js";

/** The control plane's SPIFFE identity, as istiod's: `spiffe://cluster.local/ns/istio-system/sa/istiod`. */
export const DEFAULT_CONTROL_PLANE_IDENTITY = controlPlaneIdentityOf(DEFAULT_TRUST_DOMAIN);

/** TLS server name sent to the control plane (istiod's in-cluster name): the address is usually an IP. */
export const CONTROL_PLANE_SERVER_NAME = "istiod.istio-system.svc";

/**
 * HTTP/2 PINGs on the connection to the control plane while a call is open (the xDS stream always
 * is): one every `intervalMs`, and a connection whose answer takes longer than `timeoutMs` is dropped
 * and made again, so a control plane that went silent does not hold the xDS stream forever.
 */
export interface ControlPlaneKeepalive {
  intervalMs: number;
  timeoutMs: number;
}

/** ztunnel's xDS and CA channel: a PING every 30 s, 10 s for its answer (`http2_keep_alive_*`). */
export const DEFAULT_CONTROL_PLANE_KEEPALIVE: Readonly<ControlPlaneKeepalive> = Object.freeze({
  intervalMs: 30_000,
  timeoutMs: 10_000,
});

/** What every client of the control plane (xDS and CA) is built with; see {@link controlPlaneChannel}. */
export interface ControlPlaneChannel {
  credentials: ChannelCredentials;
  /** TLS server name, grpc-js' reconnect back-off capped at `maxBackoffMs`, and the keepalive. */
  channelOptions: ChannelOptions;
  /** The xDS client's own reconnect delays, the same as the channel's. */
  initialBackoffMs: number;
  maxBackoffMs: number;
  /**
   * Verifies the control plane against these roots (PEM, one or more) from the next handshake on:
   * the configured roots and those learned from CA answers, so a reconnect after the configured root
   * expired still trusts the rotated one. Connections already up are not checked again.
   * @throws SpiffeError `ERR_PEM_INVALID` when `rootsPem` holds no certificate (the last roots stay).
   */
  trustRoots(rootsPem: string): void;
}

/**
 * gRPC credentials, channel options and reconnect delays for the control plane's xDS and CA port: its
 * certificate must chain to the mesh root and carry `identity` as URI SAN or
 * {@link CONTROL_PLANE_SERVER_NAME} as DNS SAN (istiod's has DNS names only), and after an outage of any
 * length every channel is back within `reconnect.maxBackoffMs` (default 15 s, ztunnel's cap) of the
 * server's return; a connection that stops answering is dropped after `keepalive` (default
 * {@link DEFAULT_CONTROL_PLANE_KEEPALIVE}). Spread into the xDS and CA client options so both follow
 * the same policy.
 */
export function controlPlaneChannel(
  rootCertPem: string,
  identity = DEFAULT_CONTROL_PLANE_IDENTITY,
  reconnect: ReconnectBackoff = DEFAULT_RECONNECT_BACKOFF,
  keepalive: Partial<ControlPlaneKeepalive> = DEFAULT_CONTROL_PLANE_KEEPALIVE,
): ControlPlaneChannel {
  const trustDomain = SpiffeId.parse(identity).trustDomain;
  const tls = grpcChannelCredentials({
    bundle: TrustBundle.fromPem(trustDomain, rootCertPem),
    // istiod's certificate carries DNS names only, and Istio's ztunnel checks it by host name; this
    // control plane's carries both, so either check lets it through.
    expectedIds: [identity],
    expectedHostnames: [CONTROL_PLANE_SERVER_NAME],
    serverName: CONTROL_PLANE_SERVER_NAME,
  });
  const backoff = { ...DEFAULT_RECONNECT_BACKOFF, ...reconnect };
  const ping = { ...DEFAULT_CONTROL_PLANE_KEEPALIVE, ...keepalive };
  return {
    credentials: tls.credentials,
    channelOptions: {
      ...tls.channelOptions,
      ...reconnectChannelOptions(backoff),
      "grpc.keepalive_time_ms": ping.intervalMs,
      "grpc.keepalive_timeout_ms": ping.timeoutMs,
    },
    initialBackoffMs: backoff.initialBackoffMs,
    maxBackoffMs: backoff.maxBackoffMs,
    trustRoots: (rootsPem) => tls.trust(TrustBundle.fromPem(trustDomain, rootsPem)),
  };
}

/**
 * Has the channel trust `rootsPem` (configured plus those of a CA answer: the control plane's
 * certificate chains to the same roots); roots that cannot be used are logged and the last ones kept,
 * so a bad answer never takes the channel's trust away.
 */
export function followRoots(
  channel: Pick<ControlPlaneChannel, "trustRoots">,
  rootsPem: string,
  logger: { warn(obj: object, msg?: string): void },
): void {
  try {
    channel.trustRoots(rootsPem);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, "control plane channel keeps its roots");
  }
}
