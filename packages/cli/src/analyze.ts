// `ambient analyze`: every problem in a folder of manifests, each with its file, object and field
// path, like `istioctl analyze`. Policies are validated by `@ambient/policy`; the cross-object checks
// (selectors that select nothing, references to missing objects) are the ones the local mesh relies on.
import { createAuthorizationEngine, PolicyError } from "@ambient/policy";
import { checkManifestSet, checkStringOptions } from "./errors.js";
import {
  GATEWAY_NAME_LABEL,
  isRecord,
  type ManifestObject,
  type ManifestSet,
  objectName,
  podIp,
  podsSelectedBy,
  stringMap,
  USE_WAYPOINT_LABEL,
} from "./manifests.js";
import { waypointBinding } from "./waypoint-binding.js";

/** How bad a finding is: an `error` makes `analyze` exit 1. */
export type FindingSeverity = "error" | "warning";

/** One problem found in the manifests. */
export interface Finding {
  severity: FindingSeverity;
  /** Stable name of the check, e.g. `InvalidPolicy`, `SelectorMatchesNothing`. */
  check: string;
  /** File name inside the folder. */
  file: string;
  /**
   * 1-based line of the field (of the object's document when the field is absent; 0 when the file as
   * a whole is concerned).
   */
  line: number;
  /** `Kind namespace/name`, or `document N` when no object could be read. */
  object: string;
  /** Field path inside the object, e.g. `spec.rules[0].from[0].source.ipBlocks[0]`; empty for the whole object. */
  field: string;
  message: string;
}

/** The findings, errors first, then by file and line. */
export interface AnalyzeResult {
  dir: string;
  findings: Finding[];
  errors: number;
  warnings: number;
}

const SPIFFE_PRINCIPAL = /^(?:spiffe:\/\/)?[^/]+\/ns\/([^/]+)\/sa\/([^/]+)$/;

function finding(
  object: ManifestObject,
  severity: FindingSeverity,
  check: string,
  field: string,
  message: string,
): Finding {
  return {
    severity,
    check,
    file: object.file,
    line: field === "" ? object.line : object.locate(field),
    object: objectName(object),
    field,
    message,
  };
}

function checkPolicy(set: ManifestSet, o: ManifestObject, rootNamespace: string, out: Finding[]): void {
  const engine = createAuthorizationEngine({ rootNamespace });
  try {
    const applied = engine.apply({
      ...o.raw,
      metadata: { ...(isRecord(o.raw.metadata) ? o.raw.metadata : {}), namespace: o.metadata.namespace },
    });
    for (const w of applied.warnings) {
      const field = "path" in w ? w.path : "fields" in w && w.fields.length > 0 ? w.fields.join(", ") : "";
      out.push(finding(o, "warning", "PolicyWarning", field, w.message));
    }
  } catch (err) {
    if (!(err instanceof PolicyError)) throw err;
    if (err.issues.length === 0) out.push(finding(o, "error", "InvalidPolicy", "", err.message));
    for (const issue of err.issues) out.push(finding(o, "error", "InvalidPolicy", issue.path, issue.message));
    return;
  }
  if (o.kind !== "AuthorizationPolicy") return;
  const spec = o.spec ?? {};
  const ns = o.metadata.namespace;
  if (isRecord(spec.selector)) {
    const labels = stringMap(spec.selector.matchLabels);
    const scope = ns === rootNamespace ? undefined : ns;
    if (Object.keys(labels).length > 0 && podsSelectedBy(set, scope, labels).length === 0) {
      out.push(
        finding(
          o,
          "warning",
          "SelectorMatchesNothing",
          "spec.selector.matchLabels",
          `selects no pod${scope === undefined ? "" : ` in namespace ${ns}`}`,
        ),
      );
    }
  }
  const refs = Array.isArray(spec.targetRefs)
    ? spec.targetRefs
    : isRecord(spec.targetRef)
      ? [spec.targetRef]
      : [];
  const refField = Array.isArray(spec.targetRefs) ? "spec.targetRefs" : "spec.targetRef";
  refs.forEach((ref, i) => {
    if (!isRecord(ref) || typeof ref.kind !== "string" || typeof ref.name !== "string") return;
    if (ref.kind !== "Gateway" && ref.kind !== "Service" && ref.kind !== "ServiceEntry") return;
    const refNs = typeof ref.namespace === "string" ? ref.namespace : ns;
    const exists = set.objects.some(
      (x) => x.kind === ref.kind && x.metadata.namespace === refNs && x.metadata.name === ref.name,
    );
    if (!exists) {
      const field = Array.isArray(spec.targetRefs) ? `${refField}[${i}]` : refField;
      out.push(
        finding(
          o,
          "error",
          "ReferencedResourceNotFound",
          field,
          `${ref.kind} ${refNs}/${ref.name} is not in the manifests`,
        ),
      );
    }
  });
  const rules = Array.isArray(spec.rules) ? spec.rules : [];
  rules.forEach((rule, r) => {
    if (!isRecord(rule) || !Array.isArray(rule.from)) return;
    rule.from.forEach((from, f) => {
      if (!isRecord(from) || !isRecord(from.source)) return;
      for (const key of ["principals", "notPrincipals"] as const) {
        const list = from.source[key];
        if (!Array.isArray(list)) continue;
        list.forEach((p, i) => {
          const m = typeof p === "string" ? SPIFFE_PRINCIPAL.exec(p) : null;
          if (m === null) return;
          const [, pns, sa] = m;
          // Only when the folder declares service accounts for that namespace can a missing one be told.
          const declared = set.objects.filter(
            (x) => x.kind === "ServiceAccount" && x.metadata.namespace === pns,
          );
          if (declared.length > 0 && !declared.some((x) => x.metadata.name === sa)) {
            out.push(
              finding(
                o,
                "warning",
                "UnknownServiceAccount",
                `spec.rules[${r}].from[${f}].source.${key}[${i}]`,
                `service account ${pns}/${sa} is not in the manifests`,
              ),
            );
          }
        });
      }
    });
  });
}

function checkPod(
  set: ManifestSet,
  o: ManifestObject,
  byIp: Map<string, ManifestObject>,
  out: Finding[],
): void {
  const ip = podIp(o);
  if (ip === undefined) {
    out.push(
      finding(
        o,
        "warning",
        "PodWithoutAddress",
        "status.podIP",
        "missing: the local mesh cannot address this pod",
      ),
    );
  } else {
    const other = byIp.get(ip);
    if (other !== undefined) {
      out.push(
        finding(
          o,
          "error",
          "DuplicateAddress",
          "status.podIP",
          `${ip} is also the address of ${objectName(other)} (${other.file})`,
        ),
      );
    } else byIp.set(ip, o);
  }
  const sa = o.spec?.serviceAccountName;
  if (typeof sa === "string") {
    const declared = set.objects.filter(
      (x) => x.kind === "ServiceAccount" && x.metadata.namespace === o.metadata.namespace,
    );
    if (declared.length > 0 && !declared.some((x) => x.metadata.name === sa)) {
      out.push(
        finding(
          o,
          "warning",
          "UnknownServiceAccount",
          "spec.serviceAccountName",
          `service account ${o.metadata.namespace}/${sa} is not in the manifests`,
        ),
      );
    }
  }
}

function checkService(set: ManifestSet, o: ManifestObject, out: Finding[]): void {
  const selector = stringMap(o.spec?.selector);
  const pods = podsSelectedBy(set, o.metadata.namespace, selector);
  if (Object.keys(selector).length > 0 && pods.length === 0) {
    out.push(
      finding(
        o,
        "warning",
        "SelectorMatchesNothing",
        "spec.selector",
        `selects no pod in namespace ${o.metadata.namespace}`,
      ),
    );
  }
  const ports = Array.isArray(o.spec?.ports) ? o.spec.ports : [];
  ports.forEach((p, i) => {
    if (!isRecord(p)) return;
    if (typeof p.port !== "number" || p.port < 1 || p.port > 65535) {
      out.push(
        finding(
          o,
          "error",
          "InvalidPort",
          `spec.ports[${i}].port`,
          `must be a number from 1 to 65535, found ${JSON.stringify(p.port)}`,
        ),
      );
    }
    if (typeof p.targetPort === "string" && !/^\d+$/.test(p.targetPort)) {
      const named = (pod: ManifestObject): boolean =>
        (Array.isArray(pod.spec?.containers) ? pod.spec.containers : []).some(
          (c) =>
            isRecord(c) &&
            Array.isArray(c.ports) &&
            c.ports.some((cp) => isRecord(cp) && cp.name === p.targetPort),
        );
      const missing = pods.filter((pod) => !named(pod));
      if (missing.length > 0) {
        out.push(
          finding(
            o,
            "warning",
            "TargetPortNotFound",
            `spec.ports[${i}].targetPort`,
            `no container port named ${p.targetPort} on ${missing.map((m) => m.metadata.name).join(", ")}`,
          ),
        );
      }
    }
  });
  checkWaypoint(set, o, "service", out);
}

/**
 * A waypoint a Service (or its Namespace) names, or a pod names itself, that does not take its
 * traffic: a missing Gateway is an error; a waypoint that does not take that kind of traffic or does
 * not let the namespace attach is a warning (the object is reached without it); a bound waypoint
 * without a pod is a warning. A pod bound through its Namespace's label only is not reported: a
 * namespace labelled for its Services' waypoint leaves its pods unbound by design.
 */
function checkWaypoint(
  set: ManifestSet,
  o: ManifestObject,
  traffic: "service" | "workload",
  out: Finding[],
): void {
  if (traffic === "workload" && o.metadata.labels[USE_WAYPOINT_LABEL] === undefined) return;
  const binding = waypointBinding(set, o, traffic);
  if (binding.kind === "none") return;
  const own = o.metadata.labels[USE_WAYPOINT_LABEL] !== undefined;
  const field = own ? `metadata.labels["${USE_WAYPOINT_LABEL}"]` : "";
  const where = own ? "" : ` (named by namespace ${o.metadata.namespace})`;
  if (binding.kind === "unbound") {
    const missing = !set.objects.some(
      (x) =>
        x.kind === "Gateway" &&
        x.metadata.namespace === binding.namespace &&
        x.metadata.name === binding.name,
    );
    out.push(
      missing
        ? finding(o, "error", "ReferencedResourceNotFound", field, `${binding.reason}${where}`)
        : finding(
            o,
            "warning",
            "WaypointNotBound",
            field,
            `${binding.reason}${where}: traffic does not go through it`,
          ),
    );
    return;
  }
  if (
    !set.objects.some(
      (x) =>
        x.kind === "Pod" &&
        x.metadata.namespace === binding.namespace &&
        x.metadata.labels[GATEWAY_NAME_LABEL] === binding.name,
    )
  ) {
    out.push(
      finding(
        o,
        "warning",
        "WaypointWithoutPod",
        field,
        `waypoint ${binding.namespace}/${binding.name} has no pod labelled ${GATEWAY_NAME_LABEL}=${binding.name}`,
      ),
    );
  }
}

/**
 * Every problem in `set`: unreadable documents, invalid AuthorizationPolicy and PeerAuthentication
 * resources (one finding per field path `@ambient/policy` reports), duplicate objects and pod
 * addresses, selectors that select nothing, and references to missing Gateways, Services and service
 * accounts.
 */
export function analyzeManifests(set: ManifestSet, options: { rootNamespace?: string } = {}): AnalyzeResult {
  checkManifestSet(set, "analyzeManifests");
  checkStringOptions(options, "analyzeManifests", [], ["rootNamespace"]);
  const rootNamespace = options.rootNamespace ?? "istio-system";
  const findings: Finding[] = set.problems.map((p) => ({
    severity: "error",
    check: "UnreadableManifest",
    file: p.file,
    line: p.line,
    object: p.object,
    field: "",
    message: p.message,
  }));
  const seen = new Map<string, ManifestObject>();
  const byIp = new Map<string, ManifestObject>();
  for (const o of set.objects) {
    const key = objectName(o);
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      findings.push(
        finding(
          o,
          "error",
          "DuplicateObject",
          "metadata.name",
          `also defined in ${earlier.file} (line ${earlier.line})`,
        ),
      );
      continue;
    }
    seen.set(key, o);
    if (o.kind === "AuthorizationPolicy" || o.kind === "PeerAuthentication")
      checkPolicy(set, o, rootNamespace, findings);
    else if (o.kind === "Pod") {
      checkPod(set, o, byIp, findings);
      checkWaypoint(set, o, "workload", findings);
    } else if (o.kind === "Service") checkService(set, o, findings);
  }
  findings.sort(
    (a, b) =>
      (a.severity === b.severity ? 0 : a.severity === "error" ? -1 : 1) ||
      a.file.localeCompare(b.file) ||
      a.line - b.line,
  );
  const errors = findings.filter((f) => f.severity === "error").length;
  return { dir: set.dir, findings, errors, warnings: findings.length - errors };
}
