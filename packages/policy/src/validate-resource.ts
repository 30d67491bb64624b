import { PolicyError, type ValidationIssue } from "./errors.js";
import { parseCidr } from "./ip-address.js";
import type {
  AuthorizationAction,
  AuthorizationPolicy,
  AuthorizationPolicySpec,
  Condition,
  MtlsMode,
  ObjectMeta,
  Operation,
  PeerAuthentication,
  PeerAuthenticationSpec,
  PolicyResource,
  PolicyTargetReference,
  Rule,
  Source,
  WorkloadSelector,
} from "./kubernetes-types.js";

/** Options of {@link validateResource}. */
export interface ValidateOptions {
  /** Namespace of resources whose metadata has none. Default `"default"` (kubectl's default). */
  defaultNamespace?: string;
}

/** A validated resource plus the warnings a control plane would show next to it. */
export interface ValidatedResource<T extends PolicyResource = PolicyResource> {
  resource: T;
  warnings: ValidationIssue[];
}

const API_VERSIONS = new Set(["security.istio.io/v1", "security.istio.io/v1beta1"]);
const ACTIONS: readonly AuthorizationAction[] = ["ALLOW", "DENY", "AUDIT", "CUSTOM"];
const MTLS_MODES: readonly MtlsMode[] = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
const SOURCE_FIELDS = [
  "principals",
  "notPrincipals",
  "requestPrincipals",
  "notRequestPrincipals",
  "namespaces",
  "notNamespaces",
  "serviceAccounts",
  "notServiceAccounts",
  "ipBlocks",
  "notIpBlocks",
  "remoteIpBlocks",
  "notRemoteIpBlocks",
  "trustDomains",
  "notTrustDomains",
] as const satisfies readonly (keyof Source)[];
const OPERATION_FIELDS = [
  "hosts",
  "notHosts",
  "ports",
  "notPorts",
  "methods",
  "notMethods",
  "paths",
  "notPaths",
] as const satisfies readonly (keyof Operation)[];
const TCP_SOURCE_FIELDS = new Set<string>([
  "principals",
  "notPrincipals",
  "namespaces",
  "notNamespaces",
  "serviceAccounts",
  "notServiceAccounts",
  "ipBlocks",
  "notIpBlocks",
  "remoteIpBlocks",
  "notRemoteIpBlocks",
]);

/** Pattern of a path segment next to `{*}`/`{**}`: RFC 3986 pchar. */
const PATH_LITERAL = /^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$/;

class Checker {
  readonly errors: ValidationIssue[] = [];
  readonly warnings: ValidationIssue[] = [];

  error(path: string, message: string): void {
    this.errors.push({ path, message });
  }

  warn(path: string, message: string): void {
    this.warnings.push({ path, message });
  }

  isObject(value: unknown, path: string): value is Record<string, unknown> {
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return true;
    this.error(path, `must be an object, found ${describe(value)}`);
    return false;
  }

  /** Reports keys that are not in `known`. */
  knownKeys(obj: Record<string, unknown>, known: readonly string[], path: string): void {
    for (const key of Object.keys(obj)) {
      if (!known.includes(key)) this.error(join(path, key), "unknown field");
    }
  }

  string(value: unknown, path: string): string | undefined {
    if (typeof value === "string") return value;
    this.error(path, `must be a string, found ${describe(value)}`);
    return undefined;
  }

  stringList(value: unknown, path: string): string[] | undefined {
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value)) {
      this.error(path, `must be a list of strings, found ${describe(value)}`);
      return undefined;
    }
    const out: string[] = [];
    value.forEach((item, i) => {
      // YAML turns `ports: [80]` into numbers; Kubernetes would refuse them, so we do too.
      if (typeof item === "string") out.push(item);
      else this.error(`${path}[${i}]`, `must be a string, found ${describe(item)}`);
    });
    return out;
  }

  stringMap(value: unknown, path: string): Record<string, string> | undefined {
    if (value === undefined || value === null) return undefined;
    if (!this.isObject(value, path)) return undefined;
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(value)) {
      if (typeof v === "string") out[k] = v;
      else this.error(join(path, k), `must be a string, found ${describe(v)}`);
    }
    return out;
  }
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return typeof value === "object" ? "an object" : `${typeof value} ${JSON.stringify(value)}`;
}

function join(path: string, key: string): string {
  return path === ""
    ? key
    : /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)
      ? `${path}.${key}`
      : `${path}[${JSON.stringify(key)}]`;
}

function checkMetadata(c: Checker, value: unknown, options: ValidateOptions): ObjectMeta | undefined {
  if (!c.isObject(value, "metadata")) return undefined;
  const name = c.string(value.name, "metadata.name");
  if (name !== undefined && name.length === 0) c.error("metadata.name", "must not be empty");
  let namespace = options.defaultNamespace ?? "default";
  if (value.namespace !== undefined && value.namespace !== null) {
    const ns = c.string(value.namespace, "metadata.namespace");
    if (ns !== undefined && ns.length > 0) namespace = ns;
  }
  const meta: ObjectMeta = { name: name ?? "", namespace };
  const annotations = c.stringMap(value.annotations, "metadata.annotations");
  if (annotations) meta.annotations = annotations;
  const labels = c.stringMap(value.labels, "metadata.labels");
  if (labels) meta.labels = labels;
  if (typeof value.creationTimestamp === "string") meta.creationTimestamp = value.creationTimestamp;
  else if (value.creationTimestamp instanceof Date)
    meta.creationTimestamp = value.creationTimestamp.toISOString();
  return meta;
}

function checkSelector(c: Checker, value: unknown, path: string): WorkloadSelector | undefined {
  if (value === undefined || value === null) return undefined;
  if (!c.isObject(value, path)) return undefined;
  c.knownKeys(value, ["matchLabels"], path);
  const labels = c.stringMap(value.matchLabels, `${path}.matchLabels`);
  if (labels === undefined || Object.keys(labels).length === 0) {
    c.warn(path, "workload selector specified without labels: it selects every workload in the namespace");
    return labels === undefined ? {} : { matchLabels: labels };
  }
  for (const [k, v] of Object.entries(labels)) {
    if (k === "") c.error(`${path}.matchLabels`, "empty label key is not supported");
    if (k.includes("*") || v.includes("*"))
      c.error(join(`${path}.matchLabels`, k), "wildcards are not supported in selectors");
  }
  return { matchLabels: labels };
}

/** The group of each kind a policy may target, `core` for the core group ("" or "core" in a reference). */
const TARGET_GROUPS: Readonly<Record<string, string>> = {
  Gateway: "gateway.networking.k8s.io",
  GatewayClass: "gateway.networking.k8s.io",
  Service: "core",
  ServiceEntry: "networking.istio.io",
};

function checkTargetRef(c: Checker, value: unknown, path: string): PolicyTargetReference | undefined {
  if (!c.isObject(value, path)) return undefined;
  c.knownKeys(value, ["group", "kind", "name", "namespace"], path);
  const kind = c.string(value.kind, `${path}.kind`);
  const name = c.string(value.name, `${path}.name`);
  if (kind === undefined || name === undefined) return undefined;
  if (name === "") c.error(`${path}.name`, "must not be empty");
  const ref: PolicyTargetReference = { kind, name };
  if (value.group !== undefined) {
    const group = c.string(value.group, `${path}.group`);
    if (group !== undefined) ref.group = group;
  }
  if (value.namespace !== undefined) {
    const ns = c.string(value.namespace, `${path}.namespace`);
    if (ns !== undefined) ref.namespace = ns;
  }
  const allowed = ["Gateway", "GatewayClass", "Service", "ServiceEntry"];
  if (!allowed.includes(kind))
    c.error(`${path}.kind`, `must be one of ${allowed.join(", ")}, found ${JSON.stringify(kind)}`);
  else if (ref.group !== undefined) {
    // As istiod: the core group is "" or "core"; each kind has its own group, and a reference with
    // another would attach to nothing, so its policy would silently apply nowhere.
    const group = ref.group === "" ? "core" : ref.group;
    const expected = TARGET_GROUPS[kind] as string;
    if (group !== expected)
      c.error(
        `${path}.group`,
        `${kind} is in the group ${expected === "core" ? '"" (core)' : JSON.stringify(expected)}, found ${JSON.stringify(ref.group)}`,
      );
  }
  return ref;
}

function checkNoEmpty(c: Checker, values: string[] | undefined, path: string): void {
  values?.forEach((v, i) => {
    if (v === "") c.error(`${path}[${i}]`, "empty value not allowed");
  });
}

function checkIps(c: Checker, values: string[] | undefined, path: string): void {
  values?.forEach((v, i) => {
    if (v !== "" && parseCidr(v) === undefined) {
      c.error(
        `${path}[${i}]`,
        v.includes("/") ? `not a CIDR: ${JSON.stringify(v)}` : `not an IP address: ${JSON.stringify(v)}`,
      );
    }
  });
}

function checkPorts(c: Checker, values: string[] | undefined, path: string): void {
  values?.forEach((v, i) => {
    if (!/^[0-9]+$/.test(v) || Number(v) > 65535)
      c.error(`${path}[${i}]`, `not a port (0-65535): ${JSON.stringify(v)}`);
  });
}

function checkPrincipals(c: Checker, values: string[] | undefined, path: string): void {
  values?.forEach((v, i) => {
    if (v.startsWith("spiffe://")) {
      c.warn(`${path}[${i}]`, 'principals are written without "spiffe://"; this value can never match');
    }
    if (v.length > 2 && v.slice(1, -1).includes("*")) {
      c.warn(
        `${path}[${i}]`,
        'only a leading or trailing "*" is a wildcard; a "*" inside the value is matched literally',
      );
    }
  });
}

function checkServiceAccounts(c: Checker, values: string[] | undefined, path: string): void {
  if (values === undefined) return;
  if (values.length > 16) c.error(path, "may not have more than 16 values");
  values.forEach((v, i) => {
    const p = `${path}[${i}]`;
    if (v === "") return;
    if (v.includes("*")) c.error(p, "wildcards are not allowed in serviceAccounts");
    const slashes = v.split("/").length - 1;
    if (slashes > 1)
      c.error(p, `expected 'serviceAccount' or 'namespace/serviceAccount', found ${JSON.stringify(v)}`);
    if (v.length > 320) c.error(p, "value cannot exceed 320 characters");
    if (slashes === 1) {
      const [ns, sa] = v.split("/") as [string, string];
      if (ns === "") c.error(p, `empty namespace in ${JSON.stringify(v)}`);
      if (sa === "") c.error(p, `empty service account in ${JSON.stringify(v)}`);
    }
  });
}

/** Checks `{*}`/`{**}` path templates the way istiod does. */
function checkPathTemplates(c: Checker, values: string[] | undefined, path: string): void {
  values?.forEach((value, i) => {
    const p = `${path}[${i}]`;
    const isTemplate = value.includes("{*}") || value.includes("{**}");
    let sawAny = false;
    for (const glob of value.replace(/^\/+|\/+$/g, "").split("/")) {
      if ((glob === "{*}" || glob === "{**}") && sawAny) {
        c.error(p, `invalid path template ${JSON.stringify(value)}: {**} must be the last operator`);
        return;
      }
      if (glob === "{*}") continue;
      if (glob === "{**}") {
        sawAny = true;
        continue;
      }
      if (/[{}]/.test(glob)) {
        c.error(
          p,
          `invalid path ${JSON.stringify(value)}: '{' or '}' outside a supported template ({*} or {**})`,
        );
        return;
      }
      if (isTemplate && !PATH_LITERAL.test(glob)) {
        c.error(
          p,
          `invalid path template ${JSON.stringify(value)}: segment ${JSON.stringify(glob)} is not a valid literal`,
        );
        return;
      }
    }
  });
}

/**
 * Trust domains of a rule, as istiod checks them: `*` alone, or at most one `*` at the start or the end;
 * in `trustDomains` (not the `source.trustDomain` condition) no `/`.
 */
function checkTrustDomains(c: Checker, values: string[] | undefined, path: string, noSlash: boolean): void {
  values?.forEach((v, i) => {
    const stars = v.split("*").length - 1;
    if (stars > 1) c.error(`${path}[${i}]`, `at most one wildcard is allowed, found ${JSON.stringify(v)}`);
    else if (stars === 1 && v !== "*" && !v.startsWith("*") && !v.endsWith("*"))
      c.error(`${path}[${i}]`, `wildcard is only allowed at the start or end, found ${JSON.stringify(v)}`);
    else if (noSlash && v.includes("/"))
      c.error(`${path}[${i}]`, `trust domain must not contain '/', found ${JSON.stringify(v)}`);
  });
}

function checkSource(
  c: Checker,
  value: unknown,
  path: string,
  action: AuthorizationAction,
): Source | undefined {
  if (value === undefined || value === null) {
    c.error(path, "must not be nil");
    return undefined;
  }
  if (!c.isObject(value, path)) return undefined;
  c.knownKeys(value, SOURCE_FIELDS, path);
  const src: Source = {};
  for (const field of SOURCE_FIELDS) {
    const list = c.stringList(value[field], join(path, field));
    if (list !== undefined) src[field] = list;
  }
  if (SOURCE_FIELDS.every((f) => (src[f]?.length ?? 0) === 0)) c.error(path, "must not be empty");
  if (
    (src.principals?.length ?? 0) +
      (src.notPrincipals?.length ?? 0) +
      (src.namespaces?.length ?? 0) +
      (src.notNamespaces?.length ?? 0) >
      0 &&
    (src.serviceAccounts?.length ?? 0) + (src.notServiceAccounts?.length ?? 0) > 0
  ) {
    c.error(path, "cannot set serviceAccounts together with namespaces or principals");
  }
  for (const field of SOURCE_FIELDS) checkNoEmpty(c, src[field], join(path, field));
  for (const field of ["ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"] as const) {
    checkIps(c, src[field], join(path, field));
  }
  checkServiceAccounts(c, src.serviceAccounts, join(path, "serviceAccounts"));
  checkServiceAccounts(c, src.notServiceAccounts, join(path, "notServiceAccounts"));
  checkPrincipals(c, src.principals, join(path, "principals"));
  checkPrincipals(c, src.notPrincipals, join(path, "notPrincipals"));
  checkTrustDomains(c, src.trustDomains, join(path, "trustDomains"), true);
  checkTrustDomains(c, src.notTrustDomains, join(path, "notTrustDomains"), true);
  if (action === "CUSTOM") {
    for (const field of [
      "namespaces",
      "notNamespaces",
      "serviceAccounts",
      "notServiceAccounts",
      "trustDomains",
      "notTrustDomains",
      "principals",
      "notPrincipals",
      "requestPrincipals",
      "notRequestPrincipals",
    ] as const) {
      if ((src[field]?.length ?? 0) > 0) c.error(join(path, field), "not supported with the CUSTOM action");
    }
  }
  return src;
}

function checkOperation(c: Checker, value: unknown, path: string): Operation | undefined {
  if (value === undefined || value === null) {
    c.error(path, "must not be nil");
    return undefined;
  }
  if (!c.isObject(value, path)) return undefined;
  c.knownKeys(value, OPERATION_FIELDS, path);
  const op: Operation = {};
  for (const field of OPERATION_FIELDS) {
    const list = c.stringList(value[field], join(path, field));
    if (list !== undefined) op[field] = list;
  }
  if (OPERATION_FIELDS.every((f) => (op[f]?.length ?? 0) === 0)) c.error(path, "must not be empty");
  for (const field of OPERATION_FIELDS) checkNoEmpty(c, op[field], join(path, field));
  checkPorts(c, op.ports, join(path, "ports"));
  checkPorts(c, op.notPorts, join(path, "notPorts"));
  checkPathTemplates(c, op.paths, join(path, "paths"));
  checkPathTemplates(c, op.notPaths, join(path, "notPaths"));
  return op;
}

const MAP_KEY = /^[^[\]]+\[[^\]]+\](\[[^\]]+\])*$/;

/** Validates the values of one `when` key; the same rules istiod applies. */
function checkConditionValues(c: Checker, key: string, values: string[] | undefined, path: string): void {
  if (values === undefined) return;
  checkNoEmpty(c, values, path);
  const mapKey = (prefix: string): boolean => key.startsWith(prefix);
  if (mapKey("request.headers") || mapKey("request.auth.claims") || mapKey("experimental.envoy.filters.")) {
    if (!MAP_KEY.test(key)) c.error(path, `bad key ${JSON.stringify(key)}: should have the form a[b]`);
    return;
  }
  switch (key) {
    case "source.ip":
    case "remote.ip":
    case "destination.ip":
      checkIps(c, values, path);
      return;
    case "destination.port":
      checkPorts(c, values, path);
      return;
    case "source.serviceAccount":
      checkServiceAccounts(c, values, path);
      return;
    case "source.principal":
      checkPrincipals(c, values, path);
      return;
    case "source.trustDomain":
      checkTrustDomains(c, values, path, false);
      return;
    case "source.namespace":
    case "request.auth.principal":
    case "request.auth.audiences":
    case "request.auth.presenter":
    case "connection.sni":
      return;
    case "destination.namespace":
      c.error(path, `attribute ${key} is replaced by metadata.namespace`);
      return;
    case "destination.name":
    case "destination.user":
      c.error(path, `deprecated attribute ${key}: only supported in v1alpha1`);
      return;
    default:
      if (key.startsWith("destination.labels"))
        c.error(path, `attribute ${key} is replaced by the workload selector`);
      else c.error(path, `unknown attribute: ${key}`);
  }
}

function checkCondition(
  c: Checker,
  value: unknown,
  path: string,
  action: AuthorizationAction,
): Condition | undefined {
  if (!c.isObject(value, path)) return undefined;
  c.knownKeys(value, ["key", "values", "notValues"], path);
  const key = c.string(value.key, `${path}.key`);
  if (key === undefined) return undefined;
  const values = c.stringList(value.values, `${path}.values`);
  const notValues = c.stringList(value.notValues, `${path}.notValues`);
  const cond: Condition = { key };
  if (values !== undefined) cond.values = values;
  if (notValues !== undefined) cond.notValues = notValues;
  if (key === "") {
    c.error(`${path}.key`, "must not be empty");
    return cond;
  }
  if ((values?.length ?? 0) === 0 && (notValues?.length ?? 0) === 0) {
    c.error(path, `at least one of values or notValues must be set for key ${key}`);
    return cond;
  }
  checkConditionValues(c, key, values, `${path}.values`);
  checkConditionValues(c, key, notValues, `${path}.notValues`);
  if (
    action === "CUSTOM" &&
    (key === "source.namespace" ||
      key === "source.serviceAccount" ||
      key === "source.trustDomain" ||
      key === "source.principal" ||
      key.startsWith("request.auth."))
  ) {
    c.error(`${path}.key`, `${key} is not supported with the CUSTOM action`);
  }
  return cond;
}

function checkRule(c: Checker, value: unknown, path: string, action: AuthorizationAction): Rule | undefined {
  if (value === null || value === undefined) {
    c.error(path, "must not be nil");
    return undefined;
  }
  if (!c.isObject(value, path)) return undefined;
  c.knownKeys(value, ["from", "to", "when"], path);
  const rule: Rule = {};
  let tcpInFrom = false;
  let tcpInTo = false;
  if (value.from !== undefined && value.from !== null) {
    if (!Array.isArray(value.from)) c.error(`${path}.from`, `must be a list, found ${describe(value.from)}`);
    else {
      if (value.from.length === 0) c.error(`${path}.from`, "must not be empty");
      rule.from = [];
      value.from.forEach((entry: unknown, i: number) => {
        const p = `${path}.from[${i}]`;
        if (!c.isObject(entry, p)) return;
        c.knownKeys(entry, ["source"], p);
        const source = checkSource(c, entry.source, `${p}.source`, action);
        if (source) {
          rule.from?.push({ source });
          if (Object.keys(source).some((k) => TCP_SOURCE_FIELDS.has(k))) tcpInFrom = true;
        }
      });
    }
  }
  if (value.to !== undefined && value.to !== null) {
    if (!Array.isArray(value.to)) c.error(`${path}.to`, `must be a list, found ${describe(value.to)}`);
    else {
      if (value.to.length === 0) c.error(`${path}.to`, "must not be empty");
      rule.to = [];
      value.to.forEach((entry: unknown, i: number) => {
        const p = `${path}.to[${i}]`;
        if (!c.isObject(entry, p)) return;
        c.knownKeys(entry, ["operation"], p);
        const operation = checkOperation(c, entry.operation, `${p}.operation`);
        if (operation) {
          rule.to?.push({ operation });
          if (operation.ports !== undefined || operation.notPorts !== undefined) tcpInTo = true;
        }
      });
    }
  }
  if (value.when !== undefined && value.when !== null) {
    if (!Array.isArray(value.when)) c.error(`${path}.when`, `must be a list, found ${describe(value.when)}`);
    else {
      rule.when = [];
      value.when.forEach((entry: unknown, i: number) => {
        const cond = checkCondition(c, entry, `${path}.when[${i}]`, action);
        if (cond) rule.when?.push(cond);
      });
    }
  }
  const fromExists = (rule.from?.length ?? 0) > 0;
  const toExists = (rule.to?.length ?? 0) > 0;
  if (action === "DENY" && ((fromExists && !toExists && !tcpInFrom) || (toExists && !tcpInTo))) {
    c.warn(
      path,
      "this DENY rule uses only HTTP attributes: it denies all traffic to TCP ports under its scope; specify the port explicitly",
    );
  }
  return rule;
}

function checkAuthorizationSpec(c: Checker, value: unknown): AuthorizationPolicySpec {
  const spec: AuthorizationPolicySpec = {};
  if (value === undefined || value === null) return spec;
  if (!c.isObject(value, "spec")) return spec;
  c.knownKeys(value, ["selector", "targetRef", "targetRefs", "action", "provider", "rules"], "spec");
  let action: AuthorizationAction = "ALLOW";
  if (value.action !== undefined && value.action !== null) {
    const a = c.string(value.action, "spec.action");
    if (a !== undefined) {
      if ((ACTIONS as readonly string[]).includes(a)) action = a as AuthorizationAction;
      else c.error("spec.action", `must be one of ${ACTIONS.join(", ")}, found ${JSON.stringify(a)}`);
    }
    spec.action = action;
  }
  const selector = checkSelector(c, value.selector, "spec.selector");
  if (selector) spec.selector = selector;
  if (value.targetRef !== undefined && value.targetRef !== null) {
    const ref = checkTargetRef(c, value.targetRef, "spec.targetRef");
    if (ref) spec.targetRef = ref;
  }
  if (value.targetRefs !== undefined && value.targetRefs !== null) {
    if (!Array.isArray(value.targetRefs)) c.error("spec.targetRefs", "must be a list");
    else {
      spec.targetRefs = [];
      value.targetRefs.forEach((r: unknown, i: number) => {
        const ref = checkTargetRef(c, r, `spec.targetRefs[${i}]`);
        if (ref) spec.targetRefs?.push(ref);
      });
    }
  }
  const kinds = [
    spec.selector !== undefined,
    spec.targetRef !== undefined,
    (spec.targetRefs?.length ?? 0) > 0,
  ].filter(Boolean);
  if (kinds.length > 1) c.error("spec", "only one of selector, targetRef or targetRefs can be set");
  if (value.provider !== undefined && value.provider !== null) {
    if (c.isObject(value.provider, "spec.provider")) {
      c.knownKeys(value.provider, ["name"], "spec.provider");
      const name = c.string(value.provider.name ?? "", "spec.provider.name");
      spec.provider = { name: name ?? "" };
    }
    if (action !== "CUSTOM") c.error("spec.provider", `must not be set with the ${action} action`);
  }
  const rulesGiven = value.rules !== undefined && value.rules !== null;
  if (action === "CUSTOM") {
    if (!rulesGiven)
      c.error(
        "spec.rules",
        "CUSTOM action without rules is never triggered; add an empty rule {} to apply it to every request",
      );
    else if (!spec.provider?.name) c.error("spec.provider.name", "must not be empty with the CUSTOM action");
  }
  if (action === "DENY" && !rulesGiven) {
    c.error(
      "spec.rules",
      "DENY action without rules is never triggered; add an empty rule {} to apply it to every request",
    );
  }
  if (rulesGiven) {
    if (!Array.isArray(value.rules)) c.error("spec.rules", `must be a list, found ${describe(value.rules)}`);
    else {
      spec.rules = [];
      value.rules.forEach((r: unknown, i: number) => {
        const rule = checkRule(c, r, `spec.rules[${i}]`, action);
        if (rule) spec.rules?.push(rule);
      });
    }
  }
  return spec;
}

function checkPeerAuthenticationSpec(c: Checker, value: unknown): PeerAuthenticationSpec {
  const spec: PeerAuthenticationSpec = {};
  if (value === undefined || value === null) return spec;
  if (!c.isObject(value, "spec")) return spec;
  c.knownKeys(value, ["selector", "mtls", "portLevelMtls"], "spec");
  const selector = checkSelector(c, value.selector, "spec.selector");
  if (selector) spec.selector = selector;
  const mode = (v: unknown, path: string): { mode?: MtlsMode } => {
    if (v === undefined || v === null) return {};
    if (!c.isObject(v, path)) return {};
    c.knownKeys(v, ["mode"], path);
    if (v.mode === undefined || v.mode === null) return {};
    const m = c.string(v.mode, `${path}.mode`);
    if (m === undefined) return {};
    if (!(MTLS_MODES as readonly string[]).includes(m)) {
      c.error(`${path}.mode`, `must be one of ${MTLS_MODES.join(", ")}, found ${JSON.stringify(m)}`);
      return {};
    }
    return { mode: m as MtlsMode };
  };
  if (value.mtls !== undefined && value.mtls !== null) spec.mtls = mode(value.mtls, "spec.mtls");
  if (value.portLevelMtls !== undefined && value.portLevelMtls !== null) {
    if (c.isObject(value.portLevelMtls, "spec.portLevelMtls")) {
      const entries = Object.entries(value.portLevelMtls);
      if (entries.length === 0) c.error("spec.portLevelMtls", "if defined, must have at least one element");
      if (Object.keys(selector?.matchLabels ?? {}).length === 0) {
        c.error(
          "spec.portLevelMtls",
          "mesh-wide and namespace-wide PeerAuthentication cannot have port-level mTLS",
        );
      }
      spec.portLevelMtls = {};
      for (const [port, v] of entries) {
        const path = `spec.portLevelMtls[${JSON.stringify(port)}]`;
        if (!/^[0-9]+$/.test(port) || Number(port) < 1 || Number(port) > 65535)
          c.error(path, "port must be in range 1..65535");
        spec.portLevelMtls[port] = mode(v, path);
      }
    }
  }
  return spec;
}

function finish<T extends PolicyResource>(c: Checker, resource: T): ValidatedResource<T> {
  if (c.errors.length > 0) {
    const where = `${resource.kind} ${resource.metadata.namespace}/${resource.metadata.name || "<unnamed>"}`;
    const list = c.errors.map((i) => `${i.path}: ${i.message}`).join("; ");
    throw new PolicyError("ERR_POLICY_INVALID", `invalid ${where}: ${list}`, {
      issues: c.errors,
      warnings: c.warnings,
    });
  }
  return { resource, warnings: c.warnings };
}

/**
 * Validates a parsed YAML/JSON object as an AuthorizationPolicy or PeerAuthentication, with the
 * rules istiod's admission webhook applies plus strict field names. Throws {@link PolicyError}
 * (`ERR_POLICY_INVALID` listing every field path, or `ERR_POLICY_UNSUPPORTED_KIND`).
 */
export function validateResource(input: unknown, options: ValidateOptions = {}): ValidatedResource {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new PolicyError("ERR_POLICY_INVALID", `a resource must be an object, found ${describe(input)}`, {
      issues: [{ path: "", message: `must be an object, found ${describe(input)}` }],
    });
  }
  const obj = input as Record<string, unknown>;
  const kind = obj.kind;
  if (kind !== "AuthorizationPolicy" && kind !== "PeerAuthentication") {
    throw new PolicyError(
      "ERR_POLICY_UNSUPPORTED_KIND",
      `kind ${JSON.stringify(kind)} is not supported (expected AuthorizationPolicy or PeerAuthentication)`,
      { kind },
    );
  }
  const c = new Checker();
  c.knownKeys(obj, ["apiVersion", "kind", "metadata", "spec", "status"], "");
  const apiVersion = typeof obj.apiVersion === "string" ? obj.apiVersion : "";
  if (!API_VERSIONS.has(apiVersion)) {
    c.error(
      "apiVersion",
      `must be security.istio.io/v1 or security.istio.io/v1beta1, found ${JSON.stringify(obj.apiVersion)}`,
    );
  }
  const metadata = checkMetadata(c, obj.metadata, options) ?? {
    name: "",
    namespace: options.defaultNamespace ?? "default",
  };
  if (kind === "AuthorizationPolicy") {
    const spec = checkAuthorizationSpec(c, obj.spec);
    return finish<AuthorizationPolicy>(c, { apiVersion, kind, metadata, spec });
  }
  const spec = checkPeerAuthenticationSpec(c, obj.spec);
  return finish<PeerAuthentication>(c, { apiVersion, kind, metadata, spec });
}

/** Validates an AuthorizationPolicy; throws {@link PolicyError} for any other kind. */
export function validateAuthorizationPolicy(
  input: unknown,
  options: ValidateOptions = {},
): ValidatedResource<AuthorizationPolicy> {
  const out = validateResource(input, options);
  if (out.resource.kind !== "AuthorizationPolicy") {
    throw new PolicyError(
      "ERR_POLICY_UNSUPPORTED_KIND",
      `expected an AuthorizationPolicy, found ${out.resource.kind}`,
    );
  }
  return out as ValidatedResource<AuthorizationPolicy>;
}

/** Validates a PeerAuthentication; throws {@link PolicyError} for any other kind. */
export function validatePeerAuthentication(
  input: unknown,
  options: ValidateOptions = {},
): ValidatedResource<PeerAuthentication> {
  const out = validateResource(input, options);
  if (out.resource.kind !== "PeerAuthentication") {
    throw new PolicyError(
      "ERR_POLICY_UNSUPPORTED_KIND",
      `expected a PeerAuthentication, found ${out.resource.kind}`,
    );
  }
  return out as ValidatedResource<PeerAuthentication>;
}
