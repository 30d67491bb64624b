// The decisions of the in-pod listeners, as pure functions over the original destination the
// kernel reports (SO_ORIGINAL_DST) and the workload store, so they are tested by tables. The rule
// for a call to the proxy itself is the SOCKS5 listener's too.
import type { Workload } from "@ambient/xds";
import { isLoopbackIp } from "./ip-address.js";
import type { WorkloadStore } from "./workload-store.js";

/**
 * Whether a destination is the proxy itself: loopback or one of the proxy's own addresses
 * (`ownIps`: a pod's IP in-pod, the node IP for SOCKS5), on one of its own ports (`ports`: HBONE
 * 15008, 15006, 15001, the SOCKS5 port). A dial there would come back to the proxy: a loop, or one
 * proxy chained through another (ztunnel refuses these as `illegal_ports` on loopback).
 */
export function isProxySelfCall(
  destination: { address: string; port: number },
  proxy: { ownIps: readonly string[]; ports: readonly number[] },
): boolean {
  const { address, port } = destination;
  return (isLoopbackIp(address) || proxy.ownIps.includes(address)) && proxy.ports.includes(port);
}

/** What the outbound capture listener (15001) does with a redirected connection. */
export type CapturedOutboundDecision =
  | { kind: "dial"; ip: string; port: number }
  | { kind: "refuse"; reason: string };

/**
 * A connection redirected to 15001: dial its original destination, unless that is the proxy itself
 * (loopback or the pod's own IP on one of the proxy's ports, which would loop) or no address at all.
 */
export function decideCapturedOutbound(
  pod: { ip: string; proxyPorts: readonly number[] },
  original: { address: string; port: number },
): CapturedOutboundDecision {
  const { address, port } = original;
  if (address === "0.0.0.0" || address === "::" || port === 0) {
    return { kind: "refuse", reason: "no original destination" };
  }
  if (isProxySelfCall(original, { ownIps: [pod.ip], ports: pod.proxyPorts })) {
    return { kind: "refuse", reason: "destination is the proxy itself" };
  }
  return { kind: "dial", ip: address, port };
}

/** What the plaintext inbound listener (15006) does with a captured connection. */
export type PlaintextInboundDecision =
  | { kind: "serve"; workload: Workload; ip: string; port: number }
  | { kind: "refuse"; reason: string };

/**
 * A plaintext connection captured into 15006 may only reach the pod it was captured in, on any port
 * but the proxy's own (HBONE's, and `proxyPorts`: 15001 and 15006, where a dial would come back to
 * the proxy and loop), and the pod must be a known workload, the one served (`workloadUid`), not
 * another that claims its address (its policies decide next, with no identity).
 */
export function decidePlaintextInbound(
  pod: { ip: string; workloadUid?: string; hbonePort: number; proxyPorts?: readonly number[] },
  original: { address: string; port: number },
  store: Pick<WorkloadStore, "findByAddress">,
): PlaintextInboundDecision {
  if (original.address !== pod.ip) return { kind: "refuse", reason: "not addressed to this pod" };
  if (original.port === pod.hbonePort) return { kind: "refuse", reason: "the HBONE port takes no plaintext" };
  if (pod.proxyPorts?.includes(original.port) === true) {
    return { kind: "refuse", reason: "destination is the proxy itself" };
  }
  const workload = store.findByAddress(original.address);
  if (workload === undefined) return { kind: "refuse", reason: "not a known workload" };
  // Another workload claiming the pod's address in the store is not the pod captured here.
  if (pod.workloadUid !== undefined && workload.uid !== pod.workloadUid) {
    return { kind: "refuse", reason: "the pod's address is held by another workload" };
  }
  return { kind: "serve", workload, ip: original.address, port: original.port };
}
