// The one write the control plane makes to the cluster: a waypoint Gateway's `status.addresses`, the
// cluster IP of the Service in front of its pods, which is where ztunnels send the waypoint's traffic.
// Only the leader writes (see leader-election.ts); the translation reads the address back from status.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../telemetry.js";
import { noopLogger } from "../telemetry.js";
import { kubeRequest, type RawKubeObject } from "./kube-client.js";

const WAYPOINT_CLASS = "istio-waypoint";

/** A status change to make: the Gateway and the addresses it should show. */
export interface GatewayStatusUpdate {
  namespace: string;
  name: string;
  addresses: { type: "IPAddress"; value: string }[];
}

/**
 * The status updates that bring every waypoint Gateway in line with its Service (same name and
 * namespace, as the waypoint Deployment template makes it); empty when all are current. A pure
 * function of the two caches.
 */
export function gatewayStatusUpdates(
  gateways: readonly RawKubeObject[],
  service: (namespace: string, name: string) => RawKubeObject | undefined,
): GatewayStatusUpdate[] {
  const updates: GatewayStatusUpdate[] = [];
  for (const gw of gateways) {
    if (gw.spec?.gatewayClassName !== WAYPOINT_CLASS) continue;
    const namespace = gw.metadata?.namespace;
    const name = gw.metadata?.name;
    if (typeof namespace !== "string" || typeof name !== "string") continue;
    const ip = service(namespace, name)?.spec?.clusterIP;
    if (typeof ip !== "string" || ip === "" || ip === "None") continue;
    const current = Array.isArray(gw.status?.addresses) ? (gw.status.addresses as { value?: unknown }[]) : [];
    if (current.length === 1 && current[0]?.value === ip) continue;
    updates.push({ namespace, name, addresses: [{ type: "IPAddress", value: ip }] });
  }
  return updates;
}

/**
 * Writes the updates with a JSON merge patch of the status subresource; returns those written.
 * Failures are logged, not thrown.
 */
export async function writeGatewayStatus(
  kc: KubeConfig,
  updates: readonly GatewayStatusUpdate[],
  logger: Logger = noopLogger,
): Promise<GatewayStatusUpdate[]> {
  const written: GatewayStatusUpdate[] = [];
  for (const u of updates) {
    try {
      await kubeRequest(
        kc,
        "PATCH",
        `/apis/gateway.networking.k8s.io/v1/namespaces/${u.namespace}/gateways/${u.name}/status`,
        { contentType: "application/merge-patch+json", value: { status: { addresses: u.addresses } } },
      );
      written.push(u);
    } catch (err) {
      logger.warn(
        { gateway: `${u.namespace}/${u.name}`, err: err instanceof Error ? err.message : String(err) },
        "gateway status write failed",
      );
    }
  }
  return written;
}
