import type { StringMatch } from "./wire.js";

/** A compiled string pattern. */
export interface CompiledStringMatch {
  readonly kind: "exact" | "prefix" | "suffix" | "presence";
  readonly value: string;
}

/** Istio's wildcard rule: `*` is presence, `*x` a suffix, `x*` a prefix, anything else exact. */
export function patternToStringMatch(pattern: string): StringMatch {
  if (pattern === "*") return { presence: {} };
  if (pattern.startsWith("*")) return { suffix: pattern.slice(1) };
  if (pattern.endsWith("*")) return { prefix: pattern.slice(0, -1) };
  return { exact: pattern };
}

/** Reads a wire StringMatch; undefined when no member is set (ztunnel skips those). */
export function compileStringMatch(m: StringMatch): CompiledStringMatch | undefined {
  if ("exact" in m && typeof m.exact === "string") return { kind: "exact", value: m.exact };
  if ("prefix" in m && typeof m.prefix === "string") return { kind: "prefix", value: m.prefix };
  if ("suffix" in m && typeof m.suffix === "string") return { kind: "suffix", value: m.suffix };
  if ("presence" in m && m.presence !== undefined && m.presence !== null)
    return { kind: "presence", value: "" };
  return undefined;
}

export function compilePattern(pattern: string): CompiledStringMatch {
  return compileStringMatch(patternToStringMatch(pattern)) as CompiledStringMatch;
}

/** Matches a value; `presence` means non-empty. */
export function matchString(m: CompiledStringMatch, value: string): boolean {
  switch (m.kind) {
    case "exact":
      return value === m.value;
    case "prefix":
      return value.startsWith(m.value);
    case "suffix":
      return value.endsWith(m.value);
    default:
      return value.length > 0;
  }
}

/** Same as {@link matchString} but ignoring ASCII case (used for hosts). */
export function matchStringIgnoreCase(m: CompiledStringMatch, value: string): boolean {
  const v = value.toLowerCase();
  const p = m.value.toLowerCase();
  switch (m.kind) {
    case "exact":
      return v === p;
    case "prefix":
      return v.startsWith(p);
    case "suffix":
      return v.endsWith(p);
    default:
      return v.length > 0;
  }
}

/** Formats a pattern back to Istio's text form, for explanations. */
export function formatStringMatch(m: CompiledStringMatch): string {
  switch (m.kind) {
    case "exact":
      return m.value;
    case "prefix":
      return `${m.value}*`;
    case "suffix":
      return `*${m.value}`;
    default:
      return "*";
  }
}
