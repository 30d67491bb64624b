/**
 * RequestAuthentication (security.istio.io/v1) for the waypoint: which JWT rules apply to a request,
 * where its tokens are, and whether they verify. A request without a token goes on anonymous; a token
 * that fails (bad signature, expired, wrong issuer or audience, no rule for its issuer) is rejected,
 * which the router answers 401, as Envoy's `jwt_authn` filter with Istio's `allow_missing` does.
 */
import type { RequestAuthInput, RequestAuthOutcome } from "@ambient/router";
import { createLocalJWKSet, decodeJwt, type JSONWebKeySet, type JWTVerifyGetKey, jwtVerify } from "jose";
import { WaypointError } from "./errors.js";
import {
  DEFAULT_ROOT_NAMESPACE,
  isRecord,
  targetsWaypoint,
  withAttachableTargets,
} from "./policy-targets.js";
import { remoteKeySet } from "./remote-key-set.js";

/** Where a rule looks for a token. */
export type TokenLocation =
  | { kind: "header"; name: string; prefix: string }
  | { kind: "param"; name: string }
  | { kind: "cookie"; name: string };

/** `outputClaimToHeaders`: the request header a verified token's claim is copied to. */
export interface ClaimToHeader {
  /** Lower-case. */
  header: string;
  /** A top-level claim, or a nested one as `a.b` (Envoy reads the path split at `.`). */
  claim: string;
}

/** One `jwtRules` entry, checked and ready to verify with. */
export interface CompiledJwtRule {
  issuer: string;
  /** Empty: the `aud` claim is not checked. */
  audiences: readonly string[];
  locations: readonly TokenLocation[];
  forwardOriginalToken: boolean;
  /** `outputPayloadToHeader` (lower-case): set to the verified token's payload, base64url as in the token. */
  outputPayloadToHeader: string | undefined;
  /** `outputClaimToHeaders`. */
  outputClaimToHeaders: readonly ClaimToHeader[];
  /**
   * The claims whose string value policy sees split on spaces: `scope` and `permission` always, then
   * `spaceDelimitedClaims` (Istio's `buildSpaceDelimitedClaims`).
   */
  spaceDelimitedClaims: readonly string[];
  /** Where the keys come from, for `/config_dump`. */
  keySource: "jwks" | string;
  keys: JWTVerifyGetKey;
}

/** A RequestAuthentication with its rules and what it applies to. */
export interface CompiledRequestAuthentication {
  /** `namespace/name`. */
  key: string;
  /**
   * True when `targetRefs` names the waypoint Gateway (or, from the root namespace, the waypoint
   * GatewayClass): it applies to every request.
   */
  wholeWaypoint: boolean;
  /** `namespace/name` of the Services named in `targetRefs` (always of the policy's namespace). */
  services: readonly string[];
  /** `namespace/name` of the ServiceEntries named in `targetRefs` (always of the policy's namespace). */
  serviceEntries: readonly string[];
  rules: readonly CompiledJwtRule[];
}

const ANONYMOUS: RequestAuthOutcome = Object.freeze({ kind: "anonymous" });

/** Istio's default token locations: `Authorization: Bearer <token>`, then the `access_token` parameter. */
export const DEFAULT_TOKEN_LOCATIONS: readonly TokenLocation[] = Object.freeze([
  { kind: "header", name: "authorization", prefix: "Bearer " },
  { kind: "param", name: "access_token" },
]);

/** Istio `jwtRules[].timeout` default for fetching a JWKS, in ms. */
export const DEFAULT_JWKS_TIMEOUT_MS = 5000;
/** Clock skew allowed on `exp`/`nbf`, in seconds; Envoy `clock_skew_seconds`. */
export const CLOCK_SKEW_SECONDS = 60;

function invalid(key: string, message: string): WaypointError {
  return new WaypointError("ERR_WAYPOINT_INVALID_REQUEST_AUTHENTICATION", `${key}: ${message}`);
}

function strings(value: unknown, key: string, field: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
    throw invalid(key, `${field} must be a list of strings`);
  }
  return value;
}

/** Istio's validation of `outputClaimToHeaders[].header`. */
const HEADER_NAME = /^[-_A-Za-z0-9]+$/;
/**
 * Headers the router owns (framing, hop-by-hop, the authority): a claim or payload written there would
 * change what the request is, not what it says.
 */
const RESERVED_HEADERS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "expect",
]);

function outputHeader(value: unknown, key: string, field: string): string {
  if (typeof value !== "string" || !HEADER_NAME.test(value)) {
    throw invalid(key, `${field} must be a header name (letters, digits, "-" and "_")`);
  }
  const name = value.toLowerCase();
  if (RESERVED_HEADERS.has(name)) throw invalid(key, `${field} may not be ${JSON.stringify(name)}`);
  return name;
}

/** Gateway API durations in `timeout` (`"5s"`, `"500ms"`): only what Istio's `Duration` fields carry. */
function durationMs(value: unknown, key: string, field: string): number {
  if (value === undefined) return DEFAULT_JWKS_TIMEOUT_MS;
  const m = typeof value === "string" ? /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(value) : null;
  if (m === null) throw invalid(key, `${field} must be a duration like "5s"`);
  const n = Number(m[1]);
  return Math.round(m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60_000);
}

/** A cache of remote key sets by URI, kept across reloads so a reload does not refetch every JWKS. */
export type RemoteKeySets = Map<string, JWTVerifyGetKey>;

function compileRule(raw: unknown, index: number, key: string, remote: RemoteKeySets): CompiledJwtRule {
  const field = `spec.jwtRules[${index}]`;
  if (!isRecord(raw)) throw invalid(key, `${field} must be an object`);
  if (typeof raw.issuer !== "string" || raw.issuer === "") throw invalid(key, `${field}.issuer is required`);
  const locations: TokenLocation[] = [];
  const fromHeaders = raw.fromHeaders ?? [];
  if (!Array.isArray(fromHeaders)) throw invalid(key, `${field}.fromHeaders must be a list`);
  for (const [i, h] of fromHeaders.entries()) {
    if (!isRecord(h) || typeof h.name !== "string" || h.name === "") {
      throw invalid(key, `${field}.fromHeaders[${i}].name is required`);
    }
    if (h.prefix !== undefined && typeof h.prefix !== "string") {
      throw invalid(key, `${field}.fromHeaders[${i}].prefix must be a string`);
    }
    locations.push({ kind: "header", name: h.name.toLowerCase(), prefix: h.prefix ?? "" });
  }
  for (const name of strings(raw.fromParams, key, `${field}.fromParams`)) {
    if (name === "") throw invalid(key, `${field}.fromParams has an empty name`);
    locations.push({ kind: "param", name });
  }
  for (const name of strings(raw.fromCookies, key, `${field}.fromCookies`)) {
    if (name === "") throw invalid(key, `${field}.fromCookies has an empty name`);
    locations.push({ kind: "cookie", name });
  }
  const outputPayloadToHeader =
    raw.outputPayloadToHeader === undefined || raw.outputPayloadToHeader === ""
      ? undefined
      : outputHeader(raw.outputPayloadToHeader, key, `${field}.outputPayloadToHeader`);
  const rawClaimHeaders = raw.outputClaimToHeaders ?? [];
  if (!Array.isArray(rawClaimHeaders)) throw invalid(key, `${field}.outputClaimToHeaders must be a list`);
  const outputClaimToHeaders = rawClaimHeaders.map((c, i): ClaimToHeader => {
    const at = `${field}.outputClaimToHeaders[${i}]`;
    if (!isRecord(c)) throw invalid(key, `${at} must be an object`);
    if (typeof c.claim !== "string" || c.claim === "") throw invalid(key, `${at}.claim is required`);
    return { header: outputHeader(c.header, key, `${at}.header`), claim: c.claim };
  });
  const spaceDelimitedClaims = [
    ...new Set([
      "scope",
      "permission",
      ...strings(raw.spaceDelimitedClaims, key, `${field}.spaceDelimitedClaims`),
    ]),
  ];
  const timeoutMs = durationMs(raw.timeout, key, `${field}.timeout`);
  let keys: JWTVerifyGetKey;
  let keySource: string;
  if (typeof raw.jwks === "string" && raw.jwks !== "") {
    let set: unknown;
    try {
      set = JSON.parse(raw.jwks);
    } catch {
      throw invalid(key, `${field}.jwks is not JSON`);
    }
    if (!isRecord(set) || !Array.isArray(set.keys)) throw invalid(key, `${field}.jwks has no "keys" list`);
    try {
      keys = createLocalJWKSet(set as unknown as JSONWebKeySet);
    } catch (cause) {
      throw invalid(key, `${field}.jwks: ${(cause as Error).message}`);
    }
    keySource = "jwks";
  } else if (typeof raw.jwksUri === "string" && raw.jwksUri !== "") {
    let url: URL;
    try {
      url = new URL(raw.jwksUri);
    } catch {
      throw invalid(key, `${field}.jwksUri is not a URL`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw invalid(key, `${field}.jwksUri must be http or https`);
    }
    keySource = url.href;
    const cacheKey = `${url.href} ${timeoutMs}`;
    const cached = remote.get(cacheKey);
    // Refreshed every 20 minutes as Istio's PILOT_JWT_PUB_KEY_REFRESH_INTERVAL, the last good set kept.
    keys = cached ?? remoteKeySet(url, { timeoutMs });
    remote.set(cacheKey, keys);
  } else {
    // Istio would discover the keys through the issuer's OpenID configuration; this waypoint does not.
    throw invalid(key, `${field} needs jwks or jwksUri`);
  }
  if (raw.forwardOriginalToken !== undefined && typeof raw.forwardOriginalToken !== "boolean") {
    throw invalid(key, `${field}.forwardOriginalToken must be a boolean`);
  }
  return {
    issuer: raw.issuer,
    audiences: strings(raw.audiences, key, `${field}.audiences`),
    locations: locations.length === 0 ? DEFAULT_TOKEN_LOCATIONS : locations,
    forwardOriginalToken: raw.forwardOriginalToken === true,
    outputPayloadToHeader,
    outputClaimToHeaders,
    spaceDelimitedClaims,
    keySource,
    keys,
  };
}

/**
 * Checks one RequestAuthentication object and builds its verifiers. Throws a `WaypointError`
 * (`ERR_WAYPOINT_INVALID_REQUEST_AUTHENTICATION`) naming the field at fault.
 */
export function compileRequestAuthentication(
  obj: Record<string, unknown>,
  waypoint: { name: string; namespace: string },
  remote: RemoteKeySets = new Map(),
  rootNamespace = DEFAULT_ROOT_NAMESPACE,
): CompiledRequestAuthentication {
  const meta = isRecord(obj.metadata) ? obj.metadata : {};
  const namespace = typeof meta.namespace === "string" && meta.namespace !== "" ? meta.namespace : "default";
  const key = `${namespace}/${typeof meta.name === "string" ? meta.name : ""}`;
  const spec = isRecord(obj.spec) ? obj.spec : {};
  // Only references into the policy's own namespace attach: a RequestAuthentication names the issuers
  // whose tokens become request principals, so one namespace must not choose them for another's Services.
  const attached = withAttachableTargets(obj, rootNamespace);
  const attachedSpec = isRecord(attached.spec) ? attached.spec : {};
  const refs = [
    ...(Array.isArray(attachedSpec.targetRefs) ? attachedSpec.targetRefs : []),
    attachedSpec.targetRef,
  ];
  const named = (kind: string, group: string) =>
    refs.flatMap((ref) =>
      isRecord(ref) && ref.kind === kind && (ref.group ?? group) === group && typeof ref.name === "string"
        ? [`${namespace}/${ref.name}`]
        : [],
    );
  const rawRules = spec.jwtRules ?? [];
  if (!Array.isArray(rawRules)) throw invalid(key, "spec.jwtRules must be a list");
  return {
    key,
    wholeWaypoint: targetsWaypoint(obj, waypoint, rootNamespace),
    services: named("Service", ""),
    serviceEntries: named("ServiceEntry", "networking.istio.io"),
    rules: rawRules.map((r, i) => compileRule(r, i, key, remote)),
  };
}

/**
 * The rules in force for a request to `service` (`namespace/name`, if known), a Kubernetes Service
 * unless `kind` says it is a ServiceEntry host.
 */
export function rulesFor(
  policies: Iterable<CompiledRequestAuthentication>,
  service: string | undefined,
  kind: "Service" | "ServiceEntry" = "Service",
): CompiledJwtRule[] {
  const out: CompiledJwtRule[] = [];
  for (const p of policies) {
    const named = kind === "ServiceEntry" ? p.serviceEntries : p.services;
    if (p.wholeWaypoint || (service !== undefined && named.includes(service))) out.push(...p.rules);
  }
  return out;
}

/** A token found in a request, and where. */
export interface FoundToken {
  token: string;
  location: TokenLocation;
}

function locationKey(l: TokenLocation): string {
  return l.kind === "header" ? `h:${l.name}:${l.prefix}` : l.kind === "param" ? `p:${l.name}` : `c:${l.name}`;
}

/** RFC 4648 base64url plus `.`: where Envoy's extractor starts a token after the prefix. */
const JWT_CHAR = /[A-Za-z0-9_.-]/;

/**
 * Envoy's `ExtractorImpl::extract` for a header: with a prefix, the prefix anywhere in the value, then
 * the token from the first base64url or `.` character after it to the end (the whole value when there
 * is none); without a prefix, the whole value.
 */
function tokenInHeader(value: string, prefix: string): string | undefined {
  if (prefix === "") return value;
  const at = value.indexOf(prefix);
  if (at < 0) return undefined;
  for (let i = at + prefix.length; i < value.length; i++) {
    if (JWT_CHAR.test(value[i] as string)) return value.slice(i);
  }
  return value;
}

/**
 * Envoy's `Http::Utility::parseCookies` for one name: `;`-separated pairs (every `cookie` line), the
 * first pair of that name, its value unquoted.
 */
function cookieValue(raw: string | readonly string[] | undefined, name: string): string | undefined {
  for (const line of Array.isArray(raw) ? raw : raw === undefined ? [] : [raw as string]) {
    for (const pair of line.split(";")) {
      const eq = pair.indexOf("=");
      if (eq < 0 || pair.slice(0, eq).trim() !== name) continue;
      let v = pair.slice(eq + 1).trim();
      if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
      return v;
    }
  }
  return undefined;
}

function queryParams(query: string): URLSearchParams {
  return new URLSearchParams(query.startsWith("?") ? query.slice(1) : query);
}

/**
 * Every token in the request at the locations of `rules`, once per location, in rule order. A header
 * whose value lacks the location's prefix holds no token (e.g. `Authorization: Basic ...`).
 */
export function findTokens(
  request: Pick<RequestAuthInput, "headers" | "query">,
  rules: readonly CompiledJwtRule[],
): FoundToken[] {
  const seen = new Set<string>();
  const out: FoundToken[] = [];
  let params: URLSearchParams | undefined;
  for (const rule of rules) {
    for (const location of rule.locations) {
      const k = locationKey(location);
      if (seen.has(k)) continue;
      seen.add(k);
      if (location.kind === "header") {
        const raw = request.headers[location.name];
        for (const value of Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]) {
          const token = tokenInHeader(String(value), location.prefix);
          if (token !== undefined && token !== "") out.push({ token, location });
        }
      } else if (location.kind === "cookie") {
        const token = cookieValue(request.headers.cookie, location.name);
        if (token !== undefined && token !== "") out.push({ token, location });
      } else {
        params ??= queryParams(request.query);
        for (const token of params.getAll(location.name)) if (token !== "") out.push({ token, location });
      }
    }
  }
  return out;
}

/**
 * What {@link authenticateRequest} answers: the router's outcome, where an authenticated request
 * carries the headers its tokens' rules set (a token without a non-empty string `sub` has no request
 * principal, as in Istio: the router then logs `-` and hands policy none).
 */
export type WaypointAuthOutcome =
  | Exclude<RequestAuthOutcome, { kind: "authenticated" }>
  | (Extract<RequestAuthOutcome, { kind: "authenticated" }> & {
      /** `outputPayloadToHeader` and `outputClaimToHeaders` of the verified tokens, in order. */
      setHeaders?: readonly (readonly [name: string, value: string])[];
    });

/** The header names `outputPayloadToHeader` and `outputClaimToHeaders` of `rules` write. */
export function outputHeaderNames(rules: readonly CompiledJwtRule[]): string[] {
  const out = new Set<string>();
  for (const r of rules) {
    if (r.outputPayloadToHeader !== undefined) out.add(r.outputPayloadToHeader);
    for (const c of r.outputClaimToHeaders) out.add(c.header);
  }
  return [...out];
}

/**
 * Envoy's `addJWTClaimToHeader`: a string as it is, a number as an integer when it is a non-negative
 * whole one (else `std::to_string`'s six decimals), a boolean as `true`/`false`; anything else, and an
 * empty string, sets nothing. A nested claim is named `a.b`.
 */
function claimHeaderValue(claims: Record<string, unknown>, claim: string): string | undefined {
  let cur: unknown = claims;
  for (const part of claim.split(".")) {
    if (typeof cur !== "object" || cur === null || Array.isArray(cur) || !Object.hasOwn(cur, part)) {
      return undefined;
    }
    cur = (cur as Record<string, unknown>)[part];
  }
  let value: string | undefined;
  if (typeof cur === "string") value = cur;
  else if (typeof cur === "boolean") value = cur ? "true" : "false";
  else if (typeof cur === "number" && Number.isFinite(cur)) {
    value = cur >= 0 && Number.isInteger(cur) && cur < 2 ** 64 ? BigInt(cur).toString() : cur.toFixed(6);
  }
  return value === "" ? undefined : value;
}

/**
 * The claims policy matches `request.auth.claims[...]` against, as Envoy writes the payload to its
 * metadata (`normalize_payload_in_metadata`): each top-level claim of `names` that is a string, split
 * on spaces (empty parts skipped; one with no part is left as it is).
 */
function withSpaceDelimitedClaims(
  claims: Record<string, unknown>,
  names: readonly string[],
): Record<string, unknown> {
  let out = claims;
  for (const name of names) {
    const v = Object.hasOwn(claims, name) ? claims[name] : undefined;
    if (typeof v !== "string") continue;
    const parts = v.split(" ").filter((p) => p !== "");
    if (parts.length === 0) continue;
    if (out === claims) out = { ...claims };
    out[name] = parts;
  }
  return out;
}

/** Verifies the tokens of a request against the rules in force. */
export async function authenticateRequest(
  request: Pick<RequestAuthInput, "headers" | "query">,
  rules: readonly CompiledJwtRule[],
): Promise<WaypointAuthOutcome> {
  if (rules.length === 0) return { kind: "anonymous" };
  const tokens = findTokens(request, rules);
  if (tokens.length === 0) return { kind: "anonymous" };
  let first: Extract<WaypointAuthOutcome, { kind: "authenticated" }> | undefined;
  const removeHeaders = new Set<string>();
  const removeQueryParams = new Set<string>();
  const setHeaders: [string, string][] = [];
  for (const { token, location } of tokens) {
    let issuer: unknown;
    try {
      issuer = decodeJwt(token).iss;
    } catch {
      return { kind: "rejected", reason: "Jwt is not in the form of Header.Payload.Signature" };
    }
    const k = locationKey(location);
    const candidates = rules.filter(
      (r) => r.issuer === issuer && r.locations.some((l) => locationKey(l) === k),
    );
    if (candidates.length === 0) return { kind: "rejected", reason: "Jwt issuer is not configured" };
    let verified: Awaited<ReturnType<typeof jwtVerify>> | undefined;
    let rule: CompiledJwtRule | undefined;
    let reason = "Jwt verification fails";
    for (const candidate of candidates) {
      try {
        verified = await jwtVerify(token, candidate.keys, {
          issuer: candidate.issuer,
          ...(candidate.audiences.length === 0 ? {} : { audience: [...candidate.audiences] }),
          clockTolerance: CLOCK_SKEW_SECONDS,
        });
        rule = candidate;
        break;
      } catch (err) {
        reason = (err as { code?: string }).code ?? reason;
      }
    }
    if (verified === undefined || rule === undefined) return { kind: "rejected", reason };
    // Envoy removes a header token and a query parameter one (JwtParamLocation::removeJwt); a cookie
    // one it leaves (JwtCookieLocation::removeJwt is a no-op).
    if (!rule.forwardOriginalToken) {
      if (location.kind === "header") removeHeaders.add(location.name);
      else if (location.kind === "param") removeQueryParams.add(location.name);
    }
    const payload = verified.payload as Record<string, unknown>;
    // Envoy's handleGoodJwt, for every verified token: the payload as it is in the token, the claims.
    if (rule.outputPayloadToHeader !== undefined) {
      setHeaders.push([rule.outputPayloadToHeader, token.split(".")[1] ?? ""]);
    }
    for (const { header, claim } of rule.outputClaimToHeaders) {
      const value = claimHeaderValue(payload, claim);
      if (value !== undefined) setHeaders.push([header, value]);
    }
    if (first !== undefined) continue;
    const claims = withSpaceDelimitedClaims(payload, rule.spaceDelimitedClaims);
    const aud = claims.aud;
    const sub = claims.sub;
    first = {
      kind: "authenticated",
      // Istio's `*` is `iss ~ .+` and `sub ~ .+`: no principal without a non-empty string `sub`.
      ...(typeof sub === "string" && sub !== "" ? { principal: `${String(claims.iss)}/${sub}` } : {}),
      audiences: typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud.map(String) : [],
      claims,
      ...(typeof claims.azp === "string" ? { presenter: claims.azp } : {}),
    };
  }
  if (first === undefined) return { kind: "anonymous" };
  return {
    ...first,
    removeHeaders: [...removeHeaders],
    ...(removeQueryParams.size === 0 ? {} : { removeQueryParams: [...removeQueryParams] }),
    setHeaders,
  };
}

/**
 * The outcome as the router takes it, with Envoy's `sanitizeHeaders` and `handleGoodJwt`'s header
 * writes as its edits: the output headers of the rules in force (`outputNames`) go from every request
 * they apply to, token or not (a client's own must not stand in for them), and are set from verified
 * tokens only. The router applies both to the one header map that policy's `request.headers[...]` and
 * the backend read. A token without a usable `sub` gives no `principal`.
 */
function toRouterOutcome(outcome: WaypointAuthOutcome, outputNames: readonly string[]): RequestAuthOutcome {
  if (outcome.kind === "rejected") return outcome;
  if (outcome.kind === "anonymous") {
    return outputNames.length === 0 ? outcome : { kind: "anonymous", removeHeaders: outputNames };
  }
  const { setHeaders, removeHeaders, ...rest } = outcome;
  return {
    ...rest,
    removeHeaders: [...(removeHeaders ?? []), ...outputNames],
    ...(setHeaders === undefined || setHeaders.length === 0 ? {} : { addHeaders: setHeaders }),
  };
}

/**
 * The waypoint's RequestAuthentications: applies manifests (an invalid one keeps its last good version)
 * and authenticates requests for the router's `authenticate` hook.
 */
export class RequestAuthenticationStore {
  readonly #waypoint: { name: string; namespace: string };
  readonly #rootNamespace: string;
  readonly #remote: RemoteKeySets = new Map();
  #inForce = new Map<string, CompiledRequestAuthentication>();

  /** `rootNamespace`: default `istio-system`; meshConfig `rootNamespace`. */
  constructor(waypoint: { name: string; namespace: string }, rootNamespace = DEFAULT_ROOT_NAMESPACE) {
    this.#waypoint = waypoint;
    this.#rootNamespace = rootNamespace;
  }

  /**
   * Replaces the set in force with `objects`. Returns the problems found; an object that fails keeps
   * the version of the same name already in force, if any.
   */
  apply(objects: readonly Record<string, unknown>[]): string[] {
    const issues: string[] = [];
    const next = new Map<string, CompiledRequestAuthentication>();
    for (const obj of objects) {
      try {
        const compiled = compileRequestAuthentication(obj, this.#waypoint, this.#remote, this.#rootNamespace);
        next.set(compiled.key, compiled);
      } catch (err) {
        issues.push((err as Error).message);
        const meta = isRecord(obj.metadata) ? obj.metadata : {};
        const ns = typeof meta.namespace === "string" && meta.namespace !== "" ? meta.namespace : "default";
        const key = `${ns}/${typeof meta.name === "string" ? meta.name : ""}`;
        const old = this.#inForce.get(key);
        if (old !== undefined) next.set(key, old);
      }
    }
    this.#inForce = next;
    // A key set no rule in force reads any more is let go, with the keys it fetched: a waypoint whose
    // RequestAuthentications change over months holds only the key sets they name now.
    const read = new Set<JWTVerifyGetKey>();
    for (const compiled of next.values()) for (const rule of compiled.rules) read.add(rule.keys);
    for (const [cacheKey, keys] of this.#remote) if (!read.has(keys)) this.#remote.delete(cacheKey);
    return issues;
  }

  /** The router's `authenticate` hook. */
  readonly authenticate = (request: RequestAuthInput): RequestAuthOutcome | Promise<RequestAuthOutcome> => {
    if (this.#inForce.size === 0) return ANONYMOUS;
    const service =
      request.service === undefined ? undefined : `${request.service.namespace}/${request.service.name}`;
    // The router hands over the tunnel's destination as it has it, with `kind` for a ServiceEntry host.
    const kind = (request.service as { kind?: unknown } | undefined)?.kind;
    const rules = rulesFor(
      this.#inForce.values(),
      service,
      kind === "ServiceEntry" ? "ServiceEntry" : "Service",
    );
    if (rules.length === 0) return ANONYMOUS;
    // The output headers go from every request the rules apply to, whatever its tokens (Envoy
    // sanitizes, then extracts), and are set only from verified tokens.
    const outputNames = outputHeaderNames(rules);
    // Only a request that carries a token waits for verification.
    if (findTokens(request, rules).length === 0) return toRouterOutcome(ANONYMOUS, outputNames);
    return authenticateRequest(request, rules).then((outcome) => toRouterOutcome(outcome, outputNames));
  };

  /** What is in force, for `/config_dump`. */
  summary(): {
    name: string;
    targets: string[];
    rules: {
      issuer: string;
      audiences: readonly string[];
      keys: string;
      locations: string[];
      forwardOriginalToken: boolean;
      outputPayloadToHeader?: string;
      outputClaimToHeaders?: readonly ClaimToHeader[];
    }[];
  }[] {
    return [...this.#inForce.values()].map((p) => ({
      name: p.key,
      targets: [
        ...(p.wholeWaypoint ? [`Gateway ${this.#waypoint.namespace}/${this.#waypoint.name}`] : []),
        ...p.services.map((s) => `Service ${s}`),
        ...p.serviceEntries.map((s) => `ServiceEntry ${s}`),
      ],
      rules: p.rules.map((r) => ({
        issuer: r.issuer,
        audiences: r.audiences,
        keys: r.keySource,
        locations: r.locations.map((l) =>
          l.kind === "header"
            ? `header ${l.name}${l.prefix === "" ? "" : ` prefix ${JSON.stringify(l.prefix)}`}`
            : `${l.kind} ${l.name}`,
        ),
        forwardOriginalToken: r.forwardOriginalToken,
        ...(r.outputPayloadToHeader === undefined ? {} : { outputPayloadToHeader: r.outputPayloadToHeader }),
        ...(r.outputClaimToHeaders.length === 0 ? {} : { outputClaimToHeaders: r.outputClaimToHeaders }),
      })),
    }));
  }
}
