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

function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split("/");
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i] as string;
    const last = i === segments.length - 1;
    if (seg === "." || seg.toLowerCase() === "%2e") {
      if (last) out.push("");
      continue;
    }
    if (seg === ".." || /^(\.|%2e){2}$/i.test(seg)) {
      out.pop();
      if (last) out.push("");
      continue;
    }
    out.push(seg);
  }
  return `/${out.join("/")}`;
}

/**
 * The path a policy sees: query and fragment removed, then normalised. `BASE` (the mesh default)
 * turns `\` into `/` and removes `.`/`..` segments (also percent-encoded ones);
 * `MERGE_SLASHES` also merges repeated slashes; `DECODE_AND_MERGE_SLASHES` first decodes
 * `%2F`/`%5C` into `/` and `\`.
 */
export function normalizeRequestPath(rawPath: string, mode: PathNormalization = "BASE"): string {
  let path = rawPath;
  const cut = path.search(/[?#]/);
  if (cut >= 0) path = path.slice(0, cut);
  if (mode === "NONE") return path;
  if (mode === "DECODE_AND_MERGE_SLASHES") path = path.replace(/%2f/gi, "/").replace(/%5c/gi, "\\");
  path = path.replace(/\\/g, "/");
  if (!path.startsWith("/")) path = `/${path}`;
  if (mode === "MERGE_SLASHES" || mode === "DECODE_AND_MERGE_SLASHES") path = path.replace(/\/{2,}/g, "/");
  return removeDotSegments(path);
}
