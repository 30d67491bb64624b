// The live mesh page: a collector that reads the proxies' admin endpoints and the routes that serve
// the page and its data on the control plane's admin port.
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Logger } from "../telemetry.js";
import type { MeshConfig } from "../translate-mesh.js";
import { createMeshCollector, type MeshCollector, type MeshCollectorOptions } from "./collector.js";
import { createDashboardHandler } from "./http.js";

export {
  createMeshCollector,
  type DashboardProxy,
  type MeshCollector,
  type MeshCollectorOptions,
} from "./collector.js";
export {
  type FlowEvent,
  type FlowParty,
  flowFromAccessLog,
  flowsFromRequestCounters,
  parsePrometheusText,
  requestCounters,
} from "./flow-events.js";
export { createDashboardHandler, DASHBOARD_PATH } from "./http.js";
export {
  buildSnapshot,
  type DashboardDecision,
  type DashboardEdge,
  type DashboardSnapshot,
  type DashboardWorkload,
  type ProxyStatus,
  type ProxyView,
} from "./mesh-graph.js";

/** Options of the live mesh page (`ControlPlaneOptions.dashboard`). */
export type DashboardOptions = MeshCollectorOptions;

/** The collector and the routes, as the control plane's admin server holds them. */
export interface RunningDashboard {
  collector: MeshCollector;
  /** Answers the dashboard's paths; false for any other path. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  close(): void;
}

/** Starts reading the proxies and serving the page's routes. */
export function startDashboard(
  config: () => MeshConfig,
  options: DashboardOptions & { rootNamespace?: string | undefined; logger: Logger },
): RunningDashboard {
  const { rootNamespace, ...rest } = options;
  const collector = createMeshCollector(config, {
    ...rest,
    ...(rootNamespace === undefined ? {} : { rootNamespace }),
  });
  const handler = createDashboardHandler(collector);
  return {
    collector,
    handle: handler.handle,
    close() {
      handler.close();
      collector.close();
    },
  };
}
