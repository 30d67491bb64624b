// What a client is served: every resource of every xDS type the control plane serves, name -> decoded
// resource, read through a real xDS client. Tests compare two control planes (a folder and a cluster,
// or a control plane that followed changes and one started on the final objects) with it.
import { createXdsClient, TypeUrl } from "@ambient/xds";
import type { ControlPlane } from "../src/index.js";

/** The types compared: the ztunnel's two and the waypoint's four. */
export const XDS_TYPES = [
  TypeUrl.address,
  TypeUrl.authorization,
  TypeUrl.listener,
  TypeUrl.cluster,
  TypeUrl.routeConfiguration,
  TypeUrl.clusterLoadAssignment,
  TypeUrl.waypointPolicy,
] as const;

export type ServedXds = Record<string, Record<string, unknown>>;

/**
 * Every resource served at `address`; route configurations and load assignments are asked for by
 * name (`names`), as a waypoint does.
 */
export async function servedXds(
  address: string,
  names: { routes: string[]; endpoints: string[] },
): Promise<ServedXds> {
  const client = createXdsClient({
    address,
    node: { id: "snapshot~127.0.0.1~x.default~default.svc.cluster.local" },
  });
  try {
    client.watch(TypeUrl.address);
    client.watch(TypeUrl.authorization);
    client.watch(TypeUrl.listener);
    client.watch(TypeUrl.cluster);
    client.watch(TypeUrl.routeConfiguration, { names: names.routes });
    client.watch(TypeUrl.clusterLoadAssignment, { names: names.endpoints });
    client.watch(TypeUrl.waypointPolicy);
    await client.ready();
    const out: ServedXds = {};
    for (const t of XDS_TYPES) {
      out[t] = Object.fromEntries([...client.resources(t)].map(([n, r]) => [n, r.resource]));
    }
    return out;
  } finally {
    client.close();
  }
}

/** Every resource `cp` serves, with the route and load assignment names of its own Envoy config. */
export function servedBy(cp: ControlPlane): Promise<ServedXds> {
  return servedXds(cp.plaintextAddress as string, {
    routes: [...cp.envoyConfig().routeConfigurations.keys()],
    endpoints: [...cp.envoyConfig().clusterLoadAssignments.keys()],
  });
}
