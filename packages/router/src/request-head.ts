/**
 * The one parse of a downstream request head. Policy, routing and the upstream request all read the
 * {@link RequestHead} this returns, so none of them can see a different method, path or header set.
 */
import { normalizePath, type PathNormalization } from "@ambient/policy";
import { createHeaderMap, type HeaderMap } from "./header-filters.js";

/** A request head as every later step sees it. */
export interface RequestHead {
  /** A token without lower-case letters, exactly as it is forwarded. */
  method: string;
  /** The path in origin form, normalized, without the query. */
  path: string;
  /** `""` or the raw `?...` suffix, forwarded as received. */
  query: string;
  /** `:authority` (HTTP/2) or `Host` (HTTP/1.x): never empty, a request without one is refused. */
  host: string;
  /**
   * Lower-case names; pseudo, hop-by-hop and proxy-owned headers removed, `x-forwarded-client-cert` set.
   * Without a prototype ({@link createHeaderMap}): every name a client can send is a field.
   */
  headers: HeaderMap;
  /** Decoded header list size: name + value + 32 per field (RFC 9113 §6.5.2). */
  headerBytes: number;
}

/**
 * A parsed head, or the status to answer with and Envoy's response code details for the refusal: what
 * Envoy's HTTP/1.1 or HTTP/2 codec names a head it refuses, or its connection manager a path it cannot
 * normalize.
 */
export type ParsedRequestHead =
  | { ok: true; head: RequestHead }
  | { ok: false; status: 400 | 426 | 431; reason: string; details: string };

/** What the HTTP/1.1 or HTTP/2 server decoded. */
export interface RequestHeadInput {
  method: string | undefined;
  /** HTTP/1.1 request target or HTTP/2 `:path`. */
  target: string | undefined;
  /** Node's merged header object (`req.headers`). */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Node's `req.rawHeaders`: every decoded field, names and values alternating. */
  rawHeaders: readonly string[];
  h2: boolean;
  /** Node's `req.httpVersion` of an HTTP/1.x request (`"1.0"`, `"1.1"`). Default: HTTP/1.1. */
  httpVersion?: string;
}

/** Limits and identities that shape the parse. */
export interface RequestHeadOptions {
  /** Largest decoded header list; above it the answer is 431. */
  maxHeaderBytes: number;
  /** How the path is normalized (`@ambient/policy`'s `normalizePath`). */
  pathNormalization: PathNormalization;
  /** SPIFFE ID of this proxy: the `By` field of `x-forwarded-client-cert`. */
  proxyIdentity: string | undefined;
  /** Verified SPIFFE ID of the tunnel's peer: the `URI` field. Without it the header is only removed. */
  peerIdentity: string | undefined;
  /** Serve HTTP/1.0 requests; without it they are answered 426. Default false; Envoy `accept_http_10`. */
  acceptHttp10?: boolean;
}

/** RFC 9110 §5.6.2 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const LOWER = /[a-z]/;

/** Connection-specific fields (RFC 9110 §7.6.1) and `host`, which travels as the authority. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "http2-settings",
  "te",
  "host",
]);

/**
 * Headers only a proxy may write. A client cannot claim a certificate (`x-forwarded-client-cert`) nor
 * speak for Envoy or Istio (`x-envoy-*`: retry, timeout and peer-metadata controls; `x-istio-*`).
 */
export function isProxyOwnedHeader(name: string): boolean {
  return name === "x-forwarded-client-cert" || name.startsWith("x-envoy-") || name.startsWith("x-istio-");
}

/**
 * `x-forwarded-client-cert` as Envoy's `SANITIZE_SET` writes it for a verified mTLS peer: `By` is this
 * proxy's URI SAN, `URI` the peer's. Values holding a separator are quoted.
 */
export function forwardedClientCert(proxyIdentity: string | undefined, peerIdentity: string): string {
  const field = (key: string, value: string) =>
    /[",;=\s\\]/.test(value) ? `${key}="${value.replace(/["\\]/g, "\\$&")}"` : `${key}=${value}`;
  const uri = field("URI", peerIdentity);
  return proxyIdentity === undefined || proxyIdentity === "" ? uri : `${field("By", proxyIdentity)};${uri}`;
}

/** Parses and checks a request head once; see {@link RequestHead}. */
export function parseRequestHead(input: RequestHeadInput, options: RequestHeadOptions): ParsedRequestHead {
  const raw = input.rawHeaders;
  let headerBytes = 0;
  let hosts = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    headerBytes += name.length + (raw[i + 1] as string).length + 32;
    if (name.length === 4 && name.toLowerCase() === "host") hosts++;
  }
  if (headerBytes > options.maxHeaderBytes) {
    const details = input.h2 ? "http2.too_many_headers" : "http1.headers_too_large";
    return { ok: false, status: 431, reason: "request header fields too large", details };
  }
  // Envoy's codecs name any other head they refuse with one general detail each.
  const malformed = input.h2 ? "http2.violation.of.messaging.rule" : "http1.codec_error";

  const method = input.method ?? "";
  // Methods are case-sensitive (RFC 9110 §9.1) and every registered one is upper-case. Node's HTTP/1.1
  // client upper-cases what it sends, so `get` could reach a backend as `GET` after policy saw `get`.
  if (!TOKEN.test(method) || LOWER.test(method)) {
    return { ok: false, status: 400, reason: "bad method", details: malformed };
  }

  // Anything but HTTP/1.1 over HTTP/1.x (1.0, 0.9) is Upgrade Required unless HTTP/1.0 is accepted, as
  // Envoy's codec answers it.
  const version = input.httpVersion;
  if (!input.h2 && version !== undefined && version !== "1.1" && options.acceptHttp10 !== true) {
    return { ok: false, status: 426, reason: "HTTP/1.0 is not accepted", details: "low_version" };
  }

  // Only origin form: an absolute-form or `*` target is refused, never matched as a path.
  const normalized = normalizePath(input.target ?? "", options.pathNormalization);
  if (!normalized.ok) {
    const reason = `bad request path: ${normalized.reason}`;
    return { ok: false, status: 400, reason, details: "path_normalization_failed" };
  }
  const { path, query } = normalized;

  const incoming = input.headers;
  if (hosts > 1) return { ok: false, status: 400, reason: "more than one host header", details: malformed };
  let host = typeof incoming.host === "string" ? incoming.host : "";
  if (input.h2) {
    const authority = incoming[":authority"];
    if (typeof authority === "string") {
      // RFC 9113 §8.3.1: a Host naming another authority makes the request malformed.
      if (host !== "" && host !== authority) {
        return { ok: false, status: 400, reason: "host and :authority differ", details: malformed };
      }
      host = authority;
    }
  }

  // A request names its host: HTTP/1.1 must send Host (RFC 9112 §3.2), and an http URI has no empty
  // host (RFC 9110 §4.2.1). Without one, policy and routing would match "" and the backend would get a
  // host of the proxy's choosing; HTTP/1.0 without Host is refused too (Istio sets no default host).
  if (host === "") {
    return { ok: false, status: 400, reason: "missing host header", details: "missing_host_header" };
  }
  const named = withoutTrailingDots(host);
  if (named === undefined)
    return { ok: false, status: 400, reason: "host names nothing", details: malformed };
  host = named;

  const nominated = connectionOptions(incoming.connection);
  // Built from the raw fields, not Node's merged object: that one keeps only the first line of
  // `authorization`, `user-agent`, `referer` and other fields it deems single, and joins the rest with
  // ", ". A field sent on several lines keeps every line here (an array), so the backend gets each of
  // them, and route and policy matching see all of them joined with "," as Envoy's do.
  const headers = createHeaderMap();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (name.charCodeAt(0) === 58 /* ":" */ || HOP_BY_HOP.has(name)) continue;
    if (isProxyOwnedHeader(name) || nominated?.has(name) === true) continue;
    const value = raw[i + 1] as string;
    const old = headers[name];
    if (old === undefined) headers[name] = value;
    else if (Array.isArray(old)) old.push(value);
    // Cookie crumbs make one `cookie` field (RFC 9113 §8.2.3), as an HTTP/1.1 backend expects.
    else if (name === "cookie") headers[name] = `${old}; ${value}`;
    else headers[name] = [old, value];
  }
  if (options.peerIdentity !== undefined && options.peerIdentity !== "") {
    headers["x-forwarded-client-cert"] = forwardedClientCert(options.proxyIdentity, options.peerIdentity);
  }
  return { ok: true, head: { method, path, query, host, headers, headerBytes } };
}

/**
 * The host with the trailing dots of its name dropped (`a.example.com.:80` is `a.example.com:80`): the
 * one value policy, routing and the backend's Host read. A fully qualified name names the same host, so
 * a policy on `a.example.com` must not let `a.example.com.` by. Undefined for a name of dots only.
 */
function withoutTrailingDots(host: string): string | undefined {
  if (host.startsWith("[")) return host;
  const colon = host.lastIndexOf(":");
  const name = colon === -1 ? host : host.slice(0, colon);
  let end = name.length;
  while (end > 0 && name.charCodeAt(end - 1) === 46 /* "." */) end--;
  if (end === name.length) return host;
  if (end === 0) return undefined;
  return colon === -1 ? name.slice(0, end) : `${name.slice(0, end)}${host.slice(colon)}`;
}

/** Field names listed in `Connection`: a proxy removes them (RFC 9110 §7.6.1). */
function connectionOptions(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const out = new Set<string>();
  for (const line of Array.isArray(value) ? value : [value]) {
    for (const part of line.split(",")) {
      const name = part.trim().toLowerCase();
      if (name !== "") out.add(name);
    }
  }
  return out;
}
