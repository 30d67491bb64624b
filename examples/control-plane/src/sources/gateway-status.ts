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
 * Writes each update as a JSON merge patch of the status subresource at `pathOf(update)` (the object's
 * path); returns those the API server took. A failure is logged with `what` and the object's
 * namespace/name, not thrown: the next pass tries again.
 */
export async function writeStatusPatches<U extends { namespace: string; name: string }>(
  kc: KubeConfig,
  updates: readonly U[],
  pathOf: (update: U) => string,
  statusOf: (update: U) => Record<string, unknown>,
  what: string,
  logger: Logger,
): Promise<U[]> {
  const written: U[] = [];
  for (const u of updates) {
    try {
      await kubeRequest(kc, "PATCH", `${pathOf(u)}/status`, {
        contentType: "application/merge-patch+json",
        value: { status: statusOf(u) },
      });
      written.push(u);
    } catch (err) {
      logger.warn(
        { [what]: `${u.namespace}/${u.name}`, err: err instanceof Error ? err.message : String(err) },
        `${what} status write failed`,
      );
    }
  }
  return written;
}

/** Writes the Gateways' status addresses; returns those written. Failures are logged, not thrown. */
export function writeGatewayStatus(
  kc: KubeConfig,
  updates: readonly GatewayStatusUpdate[],
  logger: Logger = noopLogger,
): Promise<GatewayStatusUpdate[]> {
  return writeStatusPatches(
    kc,
    updates,
    (u) => `/apis/gateway.networking.k8s.io/v1/namespaces/${u.namespace}/gateways/${u.name}`,
    (u) => ({ addresses: u.addresses }),
    "gateway",
    logger,
  );
}
