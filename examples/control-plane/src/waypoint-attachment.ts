// Which namespaces may bind their Services and workloads to a waypoint, as istiod decides it
// (pilot/pkg/serviceregistry/ambient/waypoints.go): the waypoint Gateway's HBONE
// listener (protocol HBONE, port 15008) says it in `allowedRoutes.namespaces` (`Same`, the default,
// `All`, or `Selector` over the namespace's labels); a Gateway without that listener takes its own
// namespace only. So a waypoint's owner decides who may send traffic through it.
import type { KubeObject } from "./manifests.js";
import { isRecord } from "./manifests.js";

/** A Kubernetes label selector (`matchLabels`, `matchExpressions`). */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** Who may attach to a waypoint. */
export type WaypointAttachment =
  | { from: "Same" | "All" }
  /** `selector` undefined: a `Selector` without one, which selects no namespace. */
  | { from: "Selector"; selector: LabelSelector | undefined };

const HBONE_PORT = 15008;

/**
 * The attachment rule of a waypoint Gateway: its HBONE listener's `allowedRoutes.namespaces`
 * (`from` defaults to `Same`); `Same` when it has no such listener. A `from` that is none of the
 * three reads as `Same`, as istiod falls back to it.
 */
export function waypointAttachment(gateway: KubeObject): WaypointAttachment {
  const listeners = Array.isArray(gateway.spec?.listeners) ? gateway.spec.listeners : [];
  const hbone = listeners.find((l) => isRecord(l) && l.protocol === "HBONE" && l.port === HBONE_PORT);
  const allowed = isRecord(hbone) && isRecord(hbone.allowedRoutes) ? hbone.allowedRoutes : undefined;
  const namespaces = allowed !== undefined && isRecord(allowed.namespaces) ? allowed.namespaces : undefined;
  const from = namespaces?.from;
  if (from === "All") return { from: "All" };
  if (from === "Selector") {
    const selector = namespaces?.selector;
    return { from: "Selector", selector: isRecord(selector) ? (selector as LabelSelector) : undefined };
  }
  return { from: "Same" };
}

/**
 * Whether `labels` satisfy `selector` as Kubernetes reads one: every `matchLabels` entry, and every
 * expression (`In`, `NotIn`, `Exists`, `DoesNotExist`). An empty selector selects everything; an
 * expression with another operator, or `In`/`NotIn` without values, makes the selector invalid, and
 * an invalid selector selects nothing.
 */
export function labelSelectorMatches(
  selector: LabelSelector,
  labels: Readonly<Record<string, string>>,
): boolean {
  const matchLabels = isRecord(selector.matchLabels) ? selector.matchLabels : {};
  for (const [k, v] of Object.entries(matchLabels)) if (labels[k] !== v) return false;
  const expressions = Array.isArray(selector.matchExpressions) ? selector.matchExpressions : [];
  for (const e of expressions) {
    if (!isRecord(e) || typeof e.key !== "string") return false;
    const values = Array.isArray(e.values) ? e.values : [];
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case "In":
        if (values.length === 0 || !has || !values.includes(labels[e.key] as string)) return false;
        break;
      case "NotIn":
        if (values.length === 0 || (has && values.includes(labels[e.key] as string))) return false;
        break;
      case "Exists":
        if (!has) return false;
        break;
      case "DoesNotExist":
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/** Whether an object of `namespace` (with `namespaceLabels`) may attach to a waypoint of `waypointNamespace`. */
export function allowsAttachment(
  attachment: WaypointAttachment,
  waypointNamespace: string,
  namespace: string,
  namespaceLabels: Readonly<Record<string, string>>,
): boolean {
  switch (attachment.from) {
    case "All":
      return true;
    case "Selector":
      return attachment.selector !== undefined && labelSelectorMatches(attachment.selector, namespaceLabels);
    default:
      return waypointNamespace === namespace;
  }
}
