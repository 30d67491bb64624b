import { parseGatewayDuration } from "./duration.js";
import { RouterError } from "./errors.js";
import type { GRPCRoute, HTTPRoute, Route } from "./route-types.js";
import { compileSafeRegex } from "./safe-regex.js";

type Json = Record<string, unknown>;

const HOSTNAME = /^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const PRECISE_HOSTNAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
/** What no header value may carry: CR, LF and NUL (Envoy's `HTTP_HEADER_VALUE` rule, not strict). */
const FORBIDDEN_VALUE_CHARS = /[\r\n\0]/;

/** Whether `name` is an HTTP field name (an RFC 9110 token; pseudo-headers such as `:path` are not). */
export function isHeaderName(name: string): boolean {
  return HEADER_NAME.test(name);
}

/** Whether `value` holds a character no header value may carry (CR, LF, NUL). */
export function hasForbiddenValueChars(value: string): boolean {
  return FORBIDDEN_VALUE_CHARS.test(value);
}
const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+$/;
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]);
const REDIRECT_CODES = new Set([301, 302, 303, 307, 308]);
const GRPC_SERVICE = /^\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$/;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;
const IPV4 = /^\d+\.\d+\.\d+\.\d+$/;

class Checker {
  /** A header filter's `set` or `add` names one header twice (case aside): the later ones are dropped. */
  repeatedHeaders = false;

  constructor(private readonly where: string) {}

  fail(
    field: string,
    why: string,
    code: "ERR_ROUTE_INVALID" | "ERR_ROUTE_UNSUPPORTED" = "ERR_ROUTE_INVALID",
  ): never {
    throw new RouterError(code, `${this.where}: ${field}: ${why}`, { field });
  }

  object(value: unknown, field: string): Json {
    if (typeof value !== "object" || value === null || Array.isArray(value))
      this.fail(field, "must be an object");
    return value as Json;
  }

  optObject(value: unknown, field: string): Json | undefined {
    return value === undefined ? undefined : this.object(value, field);
  }

  array(value: unknown, field: string, max: number): unknown[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) this.fail(field, "must be an array");
    if (value.length > max) this.fail(field, `must have at most ${max} items`);
    return value;
  }

  string(value: unknown, field: string, maxLength = 253): string {
    if (typeof value !== "string" || value.length === 0) this.fail(field, "must be a non-empty string");
    if (value.length > maxLength) this.fail(field, `must be at most ${maxLength} characters`);
    return value;
  }

  optString(value: unknown, field: string, maxLength = 253): string | undefined {
    return value === undefined ? undefined : this.string(value, field, maxLength);
  }

  int(value: unknown, field: string, min: number, max: number): number | undefined {
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      this.fail(field, `must be an integer from ${min} to ${max}`);
    }
    return value;
  }

  oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[], fallback: T): T {
    if (value === undefined) return fallback;
    if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
      this.fail(field, `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`);
    }
    return value as T;
  }

  headerName(value: unknown, field: string): string {
    const name = this.string(value, field, 256);
    if (!isHeaderName(name)) this.fail(field, `${JSON.stringify(name)} is not a valid HTTP header name`);
    return name;
  }

  headerValue(value: unknown, field: string): string {
    if (typeof value !== "string") this.fail(field, "must be a string");
    if (value.length > 4096) this.fail(field, "must be at most 4096 characters");
    if (hasForbiddenValueChars(value)) this.fail(field, "must not contain CR, LF or NUL characters");
    return value;
  }

  hostname(value: unknown, field: string, wildcard: boolean): string {
    const host = this.string(value, field);
    const ok = wildcard ? HOSTNAME.test(host) : PRECISE_HOSTNAME.test(host);
    if (!ok || IPV4.test(host)) {
      this.fail(
        field,
        `${JSON.stringify(host)} is not a valid ${wildcard ? "hostname" : "precise hostname"}`,
      );
    }
    return host;
  }

  absolutePath(value: unknown, field: string): string {
    const path = this.string(value, field, 1024);
    if (!path.startsWith("/")) this.fail(field, "must be an absolute path starting with '/'");
    for (const bad of ["//", "/./", "/../", "%2f", "%2F", "#"]) {
      if (path.includes(bad)) this.fail(field, `must not contain ${JSON.stringify(bad)}`);
    }
    if (path.endsWith("/..") || path.endsWith("/.")) this.fail(field, "must not end with '/.' or '/..'");
    if (!PATH_CHARS.test(path)) this.fail(field, "contains characters that are not allowed in a path");
    return path;
  }

  duration(value: unknown, field: string): number | undefined {
    if (value === undefined) return undefined;
    try {
      return parseGatewayDuration(value as string, field);
    } catch {
      this.fail(
        field,
        `${JSON.stringify(value)} is not a Gateway API duration (e.g. "10s", "1m30s", "500ms")`,
      );
    }
  }

  regex(value: unknown, field: string): void {
    try {
      compileSafeRegex(value as string, field);
    } catch (cause) {
      throw new RouterError(
        "ERR_REGEX_INVALID",
        `${this.where}: ${cause instanceof Error ? cause.message : String(cause)}`,
        { field, cause },
      );
    }
  }
}

function checkParentRefs(c: Checker, spec: Json): void {
  c.array(spec.parentRefs, "spec.parentRefs", 32).forEach((raw, i) => {
    const f = `spec.parentRefs[${i}]`;
    const ref = c.object(raw, f);
    c.string(ref.name, `${f}.name`);
    if (ref.group !== undefined && typeof ref.group !== "string") c.fail(`${f}.group`, "must be a string");
    c.optString(ref.kind, `${f}.kind`, 63);
    c.optString(ref.namespace, `${f}.namespace`, 63);
    c.optString(ref.sectionName, `${f}.sectionName`, 253);
    c.int(ref.port, `${f}.port`, 1, 65535);
  });
}

function checkHostnames(c: Checker, spec: Json): void {
  c.array(spec.hostnames, "spec.hostnames", 16).forEach((h, i) => {
    c.hostname(h, `spec.hostnames[${i}]`, true);
  });
}

function checkStringMatches(c: Checker, value: unknown, field: string, header: boolean): void {
  c.array(value, field, 16).forEach((raw, i) => {
    const f = `${field}[${i}]`;
    const m = c.object(raw, f);
    const type = c.oneOf(m.type, `${f}.type`, ["Exact", "RegularExpression"] as const, "Exact");
    if (header) c.headerName(m.name, `${f}.name`);
    else c.string(m.name, `${f}.name`, 256);
    if (type === "RegularExpression") c.regex(m.value, `${f}.value`);
    else c.headerValue(m.value, `${f}.value`);
  });
}

function checkHeaderFilter(c: Checker, value: unknown, field: string): void {
  const filter = c.object(value, field);
  for (const op of ["set", "add"] as const) {
    const seen = new Set<string>();
    c.array(filter[op], `${field}.${op}`, 16).forEach((raw, i) => {
      const f = `${field}.${op}[${i}]`;
      const h = c.object(raw, f);
      const name = c.headerName(h.name, `${f}.name`).toLowerCase();
      // Gateway API: of entries with an equivalent name (case aside; the CRD's list key is the exact
      // name, so `X-A` and `x-a` may both be there) the first counts and the others are ignored.
      if (seen.has(name)) c.repeatedHeaders = true;
      seen.add(name);
      c.headerValue(h.value, `${f}.value`);
    });
  }
  c.array(filter.remove, `${field}.remove`, 16).forEach((n, i) => {
    c.headerName(n, `${field}.remove[${i}]`);
  });
}

function checkPathModifier(
  c: Checker,
  value: unknown,
  field: string,
): "ReplaceFullPath" | "ReplacePrefixMatch" {
  const m = c.object(value, field);
  const type = c.oneOf(
    m.type,
    `${field}.type`,
    ["ReplaceFullPath", "ReplacePrefixMatch"] as const,
    "ReplaceFullPath",
  );
  if (m.type === undefined) c.fail(`${field}.type`, "is required");
  if (type === "ReplaceFullPath") {
    if (m.replaceFullPath === undefined)
      c.fail(`${field}.replaceFullPath`, "is required for ReplaceFullPath");
    if (m.replacePrefixMatch !== undefined)
      c.fail(`${field}.replacePrefixMatch`, "only allowed for ReplacePrefixMatch");
    c.absolutePath(m.replaceFullPath, `${field}.replaceFullPath`);
  } else {
    if (m.replacePrefixMatch === undefined)
      c.fail(`${field}.replacePrefixMatch`, "is required for ReplacePrefixMatch");
    if (m.replaceFullPath !== undefined)
      c.fail(`${field}.replaceFullPath`, "only allowed for ReplaceFullPath");
    // An empty replacement is allowed and means "/".
    if (m.replacePrefixMatch !== "") c.absolutePath(m.replacePrefixMatch, `${field}.replacePrefixMatch`);
  }
  return type;
}

function checkBackendObjectRef(c: Checker, value: unknown, field: string): void {
  const ref = c.object(value, field);
  c.string(ref.name, `${field}.name`);
  if (ref.group !== undefined && typeof ref.group !== "string") c.fail(`${field}.group`, "must be a string");
  c.optString(ref.kind, `${field}.kind`, 63);
  c.optString(ref.namespace, `${field}.namespace`, 63);
  c.int(ref.port, `${field}.port`, 1, 65535);
  const isService = (ref.group ?? "") === "" && (ref.kind ?? "Service") === "Service";
  if (isService && ref.port === undefined) c.fail(`${field}.port`, "is required when referring to a Service");
}

interface FilterContext {
  grpc: boolean;
  backendLevel: boolean;
}

/** Returns the filter types seen, for the cross-field rules. */
function checkFilters(c: Checker, value: unknown, field: string, ctx: FilterContext): Map<string, string> {
  const seen = new Map<string, string>();
  c.array(value, field, 16).forEach((raw, i) => {
    const f = `${field}[${i}]`;
    const filter = c.object(raw, f);
    const type = c.string(filter.type, `${f}.type`, 64);
    const known = ctx.grpc
      ? ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"]
      : [
          "RequestHeaderModifier",
          "ResponseHeaderModifier",
          "RequestRedirect",
          "URLRewrite",
          "RequestMirror",
          "ExtensionRef",
          "CORS",
          "ExternalAuth",
        ];
    if (!known.includes(type)) c.fail(`${f}.type`, `unknown filter type ${JSON.stringify(type)}`);
    if (type === "ExtensionRef" || type === "CORS" || type === "ExternalAuth") {
      c.fail(`${f}.type`, `filter ${type} is not supported by this router`, "ERR_ROUTE_UNSUPPORTED");
    }
    if (ctx.backendLevel && type !== "RequestHeaderModifier" && type !== "ResponseHeaderModifier") {
      c.fail(`${f}.type`, `filter ${type} is not supported on backendRefs`, "ERR_ROUTE_UNSUPPORTED");
    }
    if (type !== "RequestMirror" && seen.has(type)) c.fail(`${f}.type`, `filter ${type} cannot be repeated`);
    const member = type.charAt(0).toLowerCase() + type.slice(1);
    const key = type === "URLRewrite" ? "urlRewrite" : member;
    if (filter[key] === undefined) c.fail(`${f}.${key}`, `is required when type is ${type}`);
    seen.set(type, f);
    switch (type) {
      case "RequestHeaderModifier":
      case "ResponseHeaderModifier":
        checkHeaderFilter(c, filter[key], `${f}.${key}`);
        break;
      case "RequestRedirect": {
        const r = c.object(filter.requestRedirect, `${f}.requestRedirect`);
        c.oneOf(r.scheme, `${f}.requestRedirect.scheme`, ["http", "https"] as const, "http");
        if (r.hostname !== undefined) c.hostname(r.hostname, `${f}.requestRedirect.hostname`, false);
        c.int(r.port, `${f}.requestRedirect.port`, 1, 65535);
        if (r.statusCode !== undefined && !REDIRECT_CODES.has(r.statusCode as number)) {
          c.fail(`${f}.requestRedirect.statusCode`, "must be one of 301, 302, 303, 307, 308");
        }
        if (r.path !== undefined) {
          const t = checkPathModifier(c, r.path, `${f}.requestRedirect.path`);
          if (t === "ReplacePrefixMatch") seen.set("prefix-rewrite", `${f}.requestRedirect.path`);
        }
        break;
      }
      case "URLRewrite": {
        const r = c.object(filter.urlRewrite, `${f}.urlRewrite`);
        if (r.hostname !== undefined) c.hostname(r.hostname, `${f}.urlRewrite.hostname`, false);
        if (r.path !== undefined) {
          const t = checkPathModifier(c, r.path, `${f}.urlRewrite.path`);
          if (t === "ReplacePrefixMatch") seen.set("prefix-rewrite", `${f}.urlRewrite.path`);
        }
        break;
      }
      case "RequestMirror": {
        const m = c.object(filter.requestMirror, `${f}.requestMirror`);
        checkBackendObjectRef(c, m.backendRef, `${f}.requestMirror.backendRef`);
        c.int(m.percent, `${f}.requestMirror.percent`, 0, 100);
        if (m.fraction !== undefined) {
          if (m.percent !== undefined)
            c.fail(`${f}.requestMirror`, "percent and fraction are mutually exclusive");
          const fr = c.object(m.fraction, `${f}.requestMirror.fraction`);
          const num = c.int(fr.numerator, `${f}.requestMirror.fraction.numerator`, 0, 1_000_000);
          if (num === undefined) c.fail(`${f}.requestMirror.fraction.numerator`, "is required");
          const den = c.int(fr.denominator, `${f}.requestMirror.fraction.denominator`, 1, 1_000_000) ?? 100;
          if (num > den) c.fail(`${f}.requestMirror.fraction`, "numerator must not exceed denominator");
        }
        break;
      }
    }
  });
  if (seen.has("RequestRedirect") && seen.has("URLRewrite")) {
    c.fail(field, "RequestRedirect and URLRewrite cannot be used together");
  }
  return seen;
}

function checkBackendRefs(c: Checker, value: unknown, field: string, grpc: boolean): number {
  const refs = c.array(value, field, 16);
  refs.forEach((raw, i) => {
    const f = `${field}[${i}]`;
    checkBackendObjectRef(c, raw, f);
    const ref = raw as Json;
    c.int(ref.weight, `${f}.weight`, 0, 1_000_000);
    checkFilters(c, ref.filters, `${f}.filters`, { grpc, backendLevel: true });
  });
  return refs.length;
}

function checkHttpMatch(c: Checker, raw: unknown, f: string): string {
  const m = c.object(raw, f);
  let pathType = "PathPrefix";
  const path = c.optObject(m.path, `${f}.path`);
  if (path !== undefined) {
    pathType = c.oneOf(
      path.type,
      `${f}.path.type`,
      ["Exact", "PathPrefix", "RegularExpression"] as const,
      "PathPrefix",
    );
    if (pathType === "RegularExpression") c.regex(path.value, `${f}.path.value`);
    else if (path.value !== undefined) c.absolutePath(path.value, `${f}.path.value`);
  }
  checkStringMatches(c, m.headers, `${f}.headers`, true);
  checkStringMatches(c, m.queryParams, `${f}.queryParams`, false);
  if (m.method !== undefined && (typeof m.method !== "string" || !METHODS.has(m.method))) {
    c.fail(`${f}.method`, `must be one of ${[...METHODS].join(", ")}`);
  }
  return pathType;
}

function checkHttpRoute(c: Checker, spec: Json): void {
  c.array(spec.rules, "spec.rules", 16).forEach((raw, r) => {
    const f = `spec.rules[${r}]`;
    const rule = c.object(raw, f);
    c.optString(rule.name, `${f}.name`);
    const matches = c.array(rule.matches, `${f}.matches`, 64);
    // A rule without matches has the API's default one, PathPrefix "/" (as routing reads it), so a
    // ReplacePrefixMatch on it replaces "/". An explicit empty list gets no default.
    const pathTypes =
      rule.matches === undefined
        ? ["PathPrefix"]
        : matches.map((m, i) => checkHttpMatch(c, m, `${f}.matches[${i}]`));
    const filters = checkFilters(c, rule.filters, `${f}.filters`, { grpc: false, backendLevel: false });
    const backends = checkBackendRefs(c, rule.backendRefs, `${f}.backendRefs`, false);
    if (filters.has("RequestRedirect") && backends > 0) {
      c.fail(`${f}.filters`, "RequestRedirect must not be used together with backendRefs");
    }
    const prefixRewrite = filters.get("prefix-rewrite");
    if (prefixRewrite !== undefined && (pathTypes.length !== 1 || pathTypes[0] !== "PathPrefix")) {
      c.fail(prefixRewrite, "ReplacePrefixMatch needs exactly one PathPrefix match in the rule");
    }
    const timeouts = c.optObject(rule.timeouts, `${f}.timeouts`);
    if (timeouts !== undefined) {
      const request = c.duration(timeouts.request, `${f}.timeouts.request`);
      const backend = c.duration(timeouts.backendRequest, `${f}.timeouts.backendRequest`);
      // Only a backendRequest longer than a (non-zero) request is refused; "0s" disables the per-attempt
      // timeout and leaves the request timeout in charge, which the Gateway API accepts.
      if (request !== undefined && request !== 0 && backend !== undefined && backend > request) {
        c.fail(`${f}.timeouts.backendRequest`, "must not be longer than timeouts.request");
      }
    }
    const retry = c.optObject(rule.retry, `${f}.retry`);
    if (retry !== undefined) {
      c.array(retry.codes, `${f}.retry.codes`, 32).forEach((code, i) => {
        c.int(code, `${f}.retry.codes[${i}]`, 400, 599);
      });
      c.int(retry.attempts, `${f}.retry.attempts`, 0, 100);
      c.duration(retry.backoff, `${f}.retry.backoff`);
    }
  });
}

function checkGrpcRoute(c: Checker, spec: Json): void {
  c.array(spec.rules, "spec.rules", 16).forEach((raw, r) => {
    const f = `spec.rules[${r}]`;
    const rule = c.object(raw, f);
    c.optString(rule.name, `${f}.name`);
    c.array(rule.matches, `${f}.matches`, 64).forEach((rawMatch, i) => {
      const mf = `${f}.matches[${i}]`;
      const m = c.object(rawMatch, mf);
      const method = c.optObject(m.method, `${mf}.method`);
      if (method !== undefined) {
        const type = c.oneOf(
          method.type,
          `${mf}.method.type`,
          ["Exact", "RegularExpression"] as const,
          "Exact",
        );
        if (method.service === undefined && method.method === undefined) {
          c.fail(`${mf}.method`, "one or both of service and method must be set");
        }
        for (const key of ["service", "method"] as const) {
          if (method[key] === undefined) continue;
          const field = `${mf}.method.${key}`;
          if (type === "RegularExpression") c.regex(method[key], field);
          else {
            const v = c.string(method[key], field, 1024);
            if (!(key === "service" ? GRPC_SERVICE : GRPC_METHOD).test(v)) {
              c.fail(field, `${JSON.stringify(v)} is not a valid gRPC ${key} name`);
            }
          }
        }
      }
      checkStringMatches(c, m.headers, `${mf}.headers`, true);
    });
    checkFilters(c, rule.filters, `${f}.filters`, { grpc: true, backendLevel: false });
    checkBackendRefs(c, rule.backendRefs, `${f}.backendRefs`, true);
  });
}

/** A header filter without the entries of `set` and `add` that repeat an earlier name (case aside). */
function firstOfEachHeader(filter: Json): Json {
  const out: Json = { ...filter };
  for (const op of ["set", "add"] as const) {
    const list = filter[op];
    if (!Array.isArray(list)) continue;
    const seen = new Set<string>();
    out[op] = list.filter((h: Json) => {
      const name = String(h.name).toLowerCase();
      if (seen.has(name)) return false;
      seen.add(name);
      return true;
    });
  }
  return out;
}

/** The filters of a rule or a backendRef, their header modifiers without repeated names. */
function withoutRepeatedHeaders(filters: unknown): unknown {
  if (!Array.isArray(filters)) return filters;
  return filters.map((raw: Json) => {
    for (const key of ["requestHeaderModifier", "responseHeaderModifier"] as const) {
      if (raw[key] !== undefined) return { ...raw, [key]: firstOfEachHeader(raw[key] as Json) };
    }
    return raw;
  });
}

/**
 * Checks an HTTPRoute or GRPCRoute object (parsed YAML/JSON or an xDS-decoded value) against the
 * Gateway API rules this router relies on. Throws a {@link RouterError} whose message and
 * `details.field` name the offending field path, e.g. `spec.rules[0].matches[1].path.value`.
 * Returns the route itself, or, when a header filter's `set` or `add` names a header again (case
 * aside), a copy without the later entries (Gateway API: the first counts); the input is not changed.
 */
export function validateRoute(input: unknown): Route {
  const top = new Checker("route");
  const obj = top.object(input, "(root)");
  const kind = top.oneOf(obj.kind, "kind", ["HTTPRoute", "GRPCRoute"] as const, "HTTPRoute");
  if (obj.kind === undefined) top.fail("kind", 'is required ("HTTPRoute" or "GRPCRoute")');
  if (
    obj.apiVersion !== undefined &&
    (typeof obj.apiVersion !== "string" || !obj.apiVersion.startsWith("gateway.networking.k8s.io/"))
  ) {
    top.fail("apiVersion", 'must be "gateway.networking.k8s.io/v1"');
  }
  const meta = top.object(obj.metadata, "metadata");
  const name = top.string(meta.name, "metadata.name");
  const namespace = top.optString(meta.namespace, "metadata.namespace", 63) ?? "default";
  const c = new Checker(`${kind} ${namespace}/${name}`);
  if (meta.creationTimestamp !== undefined && Number.isNaN(Date.parse(String(meta.creationTimestamp)))) {
    c.fail("metadata.creationTimestamp", "must be an RFC 3339 time");
  }
  const spec = c.object(obj.spec, "spec");
  checkParentRefs(c, spec);
  checkHostnames(c, spec);
  if (kind === "HTTPRoute") checkHttpRoute(c, spec);
  else checkGrpcRoute(c, spec);
  if (!c.repeatedHeaders) return obj as unknown as Route;
  const rules = (spec.rules as Json[]).map((rule) => ({
    ...rule,
    ...(rule.filters === undefined ? {} : { filters: withoutRepeatedHeaders(rule.filters) }),
    ...(Array.isArray(rule.backendRefs)
      ? {
          backendRefs: rule.backendRefs.map((ref: Json) =>
            ref.filters === undefined ? ref : { ...ref, filters: withoutRepeatedHeaders(ref.filters) },
          ),
        }
      : {}),
  }));
  return { ...obj, spec: { ...spec, rules } } as unknown as Route;
}

/** {@link validateRoute} for an HTTPRoute. */
export function validateHttpRoute(input: unknown): HTTPRoute {
  const route = validateRoute(input);
  if (route.kind !== "HTTPRoute") {
    throw new RouterError("ERR_ROUTE_INVALID", 'route: kind: must be "HTTPRoute"', { field: "kind" });
  }
  return route;
}

/** {@link validateRoute} for a GRPCRoute. */
export function validateGrpcRoute(input: unknown): GRPCRoute {
  const route = validateRoute(input);
  if (route.kind !== "GRPCRoute") {
    throw new RouterError("ERR_ROUTE_INVALID", 'route: kind: must be "GRPCRoute"', { field: "kind" });
  }
  return route;
}
