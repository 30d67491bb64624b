import { PolicyError } from "./errors.js";
import type { CompiledStringMatch } from "./string-match.js";
import { compilePattern, matchString } from "./string-match.js";

/** How request paths are normalised before matching; meshConfig `pathNormalization.normalization`. */
export type PathNormalization = "NONE" | "BASE" | "MERGE_SLASHES" | "DECODE_AND_MERGE_SLASHES";

/** A compiled `paths` entry: a string pattern or an Envoy URI template. */
export type PathMatcher =
  | { kind: "string"; match: CompiledStringMatch }
  | { kind: "template"; regex: RegExp };

const LITERAL = "a-zA-Z0-9\\-._~%!$&'()+,;:@=";

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Compiles a `paths` value. `{*}` matches exactly one non-empty path segment and `{**}` any
 * number of characters including `/` (zero or more segments), as Envoy's URI templates do; other
 * values use Istio's `*` prefix/suffix/presence rule.
 */
export function compilePathPattern(pattern: string): PathMatcher {
  if (!pattern.includes("{*}") && !pattern.includes("{**}"))
    return { kind: "string", match: compilePattern(pattern) };
  let source = "";
  let rest = pattern;
  while (rest.length > 0) {
    if (rest.startsWith("{**}")) {
      source += `[${LITERAL}/]*`;
      rest = rest.slice(4);
    } else if (rest.startsWith("{*}")) {
      source += `[${LITERAL}]+`;
      rest = rest.slice(3);
    } else {
      source += escapeRegex(rest[0] as string);
      rest = rest.slice(1);
    }
  }
  return { kind: "template", regex: new RegExp(`^${source}$`) };
}

export function matchPath(m: PathMatcher, path: string): boolean {
  return m.kind === "string" ? matchString(m.match, path) : m.regex.test(path);
}

/** The modes, in the order of how much they change a path. */
export const PATH_NORMALIZATIONS: readonly PathNormalization[] = Object.freeze([
  "NONE",
  "BASE",
  "MERGE_SLASHES",
  "DECODE_AND_MERGE_SLASHES",
]);

/**
 * The outcome of {@link normalizePath}. `path` is the normalized path; `query` is `""` or the raw
 * `?...` suffix as received (never normalized); a `#fragment` is dropped. `ok: false` means the
 * request must be answered 400 Bad Request; `reason` says why.
 */
export type PathNormalizationResult =
  | { ok: true; path: string; query: string }
  | { ok: false; reason: string };

const HEX = /^[0-9a-fA-F]{2}$/;
/** Anything but `!`..`~`: space, control characters, DEL and non-ASCII never appear in a request target. */
const NOT_PRINTABLE_ASCII = /[^\x21-\x7e]/;

/** RFC 3986 unreserved characters: the only ones whose percent-encoding BASE decodes. */
function isUnreserved(code: number): boolean {
  return (
    (code >= 0x41 && code <= 0x5a) || // A-Z
    (code >= 0x61 && code <= 0x7a) || // a-z
    (code >= 0x30 && code <= 0x39) || // 0-9
    code === 0x2d || // -
    code === 0x2e || // .
    code === 0x5f || // _
    code === 0x7e // ~
  );
}

function fail(reason: string): PathNormalizationResult {
  return { ok: false, reason };
}

/**
 * RFC 3986 section 5.2.4 on an absolute path whose escapes are already decoded: `.` and `..`
 * segments go, a final one leaves a trailing `/`, and `..` never climbs above the root.
 */
function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split("/");
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i] as string;
    const last = i === segments.length - 1;
    if (seg === "." || seg === "..") {
      if (seg === "..") out.pop();
      if (last) out.push("");
      continue;
    }
    out.push(seg);
  }
  return `/${out.join("/")}`;
}

/**
 * One pass over the path (so nothing is decoded twice): `\` becomes `/`, an escape of an
 * unreserved character becomes that character, and any other escape is kept with upper-case hex
 * digits (RFC 3986 section 6.2.2.1), so `/a%2fb` and `/a%2Fb` are one path.
 */
function decodeUnreserved(path: string): string {
  let out = "";
  for (let i = 0; i < path.length; i++) {
    const c = path[i] as string;
    if (c === "\\") out += "/";
    else if (c === "%") {
      const hex = path.slice(i + 1, i + 3);
      const code = Number.parseInt(hex, 16);
      out += isUnreserved(code) ? String.fromCharCode(code) : `%${hex.toUpperCase()}`;
      i += 2;
    } else out += c;
  }
  return out;
}

/**
 * Normalizes the path of a request target the way Istio configures Envoy for each
 * meshConfig `pathNormalization` mode, or says why the request must be refused with 400.
 *
 * Every mode first checks the target: only printable ASCII (no space, control character or
 * non-ASCII), every `%` followed by two hex digits, no `%00`, and a path that starts with `/`
 * (in BASE and above a leading `\`, and in DECODE_AND_MERGE_SLASHES a leading `%2F`/`%5C`, count
 * as one). The query (`?...`) is returned as received and a fragment is dropped. Then:
 *
 * - `NONE`: nothing more.
 * - `BASE` (default; Envoy `normalize_path`): `\` to `/`, escapes of unreserved characters
 *   (`A-Z a-z 0-9 - . _ ~`) decoded once, other escapes kept (hex upper-cased), `.`/`..` removed.
 * - `MERGE_SLASHES`: BASE, then runs of `/` merged (Envoy `merge_slashes`).
 * - `DECODE_AND_MERGE_SLASHES`: `%2F` and `%5C` (any case) decoded first (Envoy
 *   `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`), then MERGE_SLASHES.
 *
 * The result is a fixed point: normalizing it again with the same mode returns it unchanged.
 * Never throws.
 */
export function normalizePath(rawPath: string, mode: PathNormalization = "BASE"): PathNormalizationResult {
  if (typeof rawPath !== "string") return fail("the path is not a string");
  if (!PATH_NORMALIZATIONS.includes(mode))
    return fail(
      `unknown path normalization mode ${typeof mode === "string" ? JSON.stringify(mode) : typeof mode}`,
    );
  const bad = NOT_PRINTABLE_ASCII.exec(rawPath);
  if (bad !== null) {
    const code = rawPath.charCodeAt(bad.index);
    return fail(
      code > 0x7e
        ? `the request target holds a non-ASCII character at offset ${bad.index}`
        : `the request target holds a space or control character at offset ${bad.index}`,
    );
  }
  const cut = rawPath.search(/[?#]/);
  let path = cut < 0 ? rawPath : rawPath.slice(0, cut);
  let query = "";
  if (cut >= 0 && rawPath[cut] === "?") {
    const hash = rawPath.indexOf("#", cut);
    query = hash < 0 ? rawPath.slice(cut) : rawPath.slice(cut, hash);
  }
  for (let i = path.indexOf("%"); i >= 0; i = path.indexOf("%", i + 1)) {
    const hex = path.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return fail(`malformed percent-encoding at offset ${i}`);
    if (hex === "00") return fail("the path holds %00");
  }
  const escaped = path.includes("%");
  if (escaped && mode === "DECODE_AND_MERGE_SLASHES")
    path = path.replace(/%2f/gi, "/").replace(/%5c/gi, "\\");
  const first = path[0];
  if (first !== "/" && !(first === "\\" && mode !== "NONE")) return fail("the path does not start with /");
  if (mode === "NONE") return { ok: true, path, query };
  // The checks below only skip work that would change nothing (the common, clean path).
  if (escaped || path.includes("\\")) path = decodeUnreserved(path);
  if (path.includes("/.")) path = removeDotSegments(path);
  if (mode !== "BASE" && path.includes("//")) path = path.replace(/\/{2,}/g, "/");
  return { ok: true, path, query };
}

/**
 * The path a policy sees, as a string: {@link normalizePath} without the query. Throws
 * {@link PolicyError} `ERR_POLICY_BAD_PATH` (with `details.reason`) when the request must be
 * refused with 400.
 */
export function normalizeRequestPath(rawPath: string, mode: PathNormalization = "BASE"): string {
  const result = normalizePath(rawPath, mode);
  if (!result.ok)
    throw new PolicyError("ERR_POLICY_BAD_PATH", `bad request path: ${result.reason}`, {
      reason: result.reason,
    });
  return result.path;
}
