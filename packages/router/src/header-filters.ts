import type { HTTPHeaderFilter, HTTPPathModifier, HTTPRequestRedirectFilter } from "./route-types.js";

/** A mutable header map with lower-case names. */
export type HeaderMap = Record<string, string | string[]>;

/**
 * An empty {@link HeaderMap} without a prototype, for fields named by the wire: `constructor` reads as
 * absent until a request sends it, and `__proto__` is stored as a field like any other.
 */
export function createHeaderMap(): HeaderMap {
  return Object.create(null) as HeaderMap;
}

/**
 * Applies a Gateway API header modifier: remove deletes, then set replaces and add appends
 * (comma-joined). Removing first, as Envoy applies `request_headers_to_remove` before the headers it
 * adds, means a filter that removes and also sets or adds one header name drops the value the request
 * came with and sends the configured one, rather than dropping both.
 */
export function applyHeaderFilter(headers: HeaderMap, filter: HTTPHeaderFilter | undefined): void {
  if (filter === undefined) return;
  for (const name of filter.remove ?? []) delete headers[name.toLowerCase()];
  for (const h of filter.set ?? []) headers[h.name.toLowerCase()] = h.value;
  for (const h of filter.add ?? []) {
    const name = h.name.toLowerCase();
    const old = headers[name];
    if (old === undefined) headers[name] = h.value;
    else if (Array.isArray(old)) old.push(h.value);
    else headers[name] = name === "set-cookie" ? [old, h.value] : `${old},${h.value}`;
  }
}

/**
 * Rewrites a path: `ReplaceFullPath` replaces it; `ReplacePrefixMatch` swaps the matched prefix,
 * keeping whole segments (`/foo` -> `/bar` turns `/foo/x` into `/bar/x`, `/` -> `/x` turns `/a` into `/x/a`).
 */
export function rewritePath(
  path: string,
  modifier: HTTPPathModifier,
  matchedPrefix: string | undefined,
): string {
  if (modifier.type === "ReplaceFullPath") return modifier.replaceFullPath ?? path;
  const prefix = matchedPrefix ?? "/";
  const replacement = modifier.replacePrefixMatch || "/";
  const rest = path.slice(prefix === "/" ? 1 : prefix.length);
  // A replacement's trailing slash is not significant (Gateway API's table; Istio trims it): the
  // exact prefix becomes the replacement without it, the prefix and a slash the replacement and one.
  if (rest === "") return replacement === "/" ? "/" : stripSlash(replacement);
  if (rest === "/") return replacement === "/" ? "/" : `${stripSlash(replacement)}/`;
  return `${stripSlash(replacement)}${rest.startsWith("/") ? rest : `/${rest}`}`;
}

function stripSlash(p: string): string {
  return p.endsWith("/") ? p.slice(0, -1) : p;
}

/**
 * Builds the `Location` of a RequestRedirect from the request's scheme, host, port and path.
 * `request.port` is the port the request was sent to (the Service port, which stands for the
 * listener's); without it the port in `host` is used.
 */
export function redirectLocation(
  redirect: HTTPRequestRedirectFilter,
  request: {
    scheme: "http" | "https";
    host: string;
    path: string;
    query: string | undefined;
    port?: number | undefined;
  },
  matchedPrefix: string | undefined,
): string {
  const scheme = redirect.scheme ?? request.scheme;
  const [hostOnly, portText] = splitHostPort(request.host);
  const hostname = redirect.hostname ?? hostOnly;
  let port: number | undefined = redirect.port;
  // Without a port, a redirect that names a scheme goes to that scheme's well-known port (left out of
  // the Location), whether or not the scheme changes. One without a scheme goes to the port the
  // request was sent to, whatever its Host says: `Host: echo` sent to port 8080 is redirected to
  // 8080, not to the scheme's default.
  if (port === undefined && redirect.scheme === undefined) {
    port = request.port ?? (portText === undefined ? undefined : Number(portText));
  }
  const defaultPort = scheme === "https" ? 443 : 80;
  const authority = port === undefined || port === defaultPort ? hostname : `${hostname}:${port}`;
  const path =
    redirect.path === undefined ? request.path : rewritePath(request.path, redirect.path, matchedPrefix);
  const query = request.query === undefined || request.query === "" ? "" : `?${request.query}`;
  return `${scheme}://${authority}${path}${query}`;
}

/** Splits `host:port` (and `[v6]:port`). */
export function splitHostPort(host: string): [string, string | undefined] {
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    const rest = host.slice(end + 1);
    return [host.slice(0, end + 1), rest.startsWith(":") ? rest.slice(1) : undefined];
  }
  const colon = host.lastIndexOf(":");
  return colon === -1 ? [host, undefined] : [host.slice(0, colon), host.slice(colon + 1)];
}
