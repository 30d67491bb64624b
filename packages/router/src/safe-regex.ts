import { RouterError } from "./errors.js";

/** Longest regular expression source accepted (the Gateway API caps values at 1024 characters). */
export const MAX_REGEX_LENGTH = 1024;

/**
 * Compiles a route regular expression as a whole-string match (`^(?:re)$`).
 *
 * JavaScript regexes backtrack, so the accepted dialect is the RE2-compatible subset that cannot
 * blow up: no back-references, no look-around, and no quantified group that itself contains an
 * unbounded quantifier (`(a+)+`, `(a*)*`, `(x+y?)*`), which is where exponential backtracking comes from.
 */
export function compileSafeRegex(pattern: string, field: string): RegExp {
  if (typeof pattern !== "string" || pattern.length === 0) {
    throw new RouterError("ERR_REGEX_INVALID", `${field}: regular expression must be a non-empty string`, {
      field,
    });
  }
  if (pattern.length > MAX_REGEX_LENGTH) {
    throw new RouterError(
      "ERR_REGEX_INVALID",
      `${field}: regular expression longer than ${MAX_REGEX_LENGTH} characters`,
      { field },
    );
  }
  checkRegexCost(pattern, field);
  try {
    return new RegExp(`^(?:${pattern})$`);
  } catch (cause) {
    throw new RouterError("ERR_REGEX_INVALID", `${field}: invalid regular expression: ${String(cause)}`, {
      field,
      cause,
    });
  }
}

function reject(field: string, why: string): never {
  throw new RouterError("ERR_REGEX_INVALID", `${field}: ${why}`, { field });
}

function checkRegexCost(pattern: string, field: string): void {
  // For each open group: did it contain an unbounded quantifier?
  const groups: boolean[] = [];
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const n = pattern[i + 1];
      if (n !== undefined && /[1-9k]/.test(n) && !inClass) {
        reject(field, "back-references are not supported");
      }
      i++;
      continue;
    }
    if (inClass) {
      if (c === "]") inClass = false;
      continue;
    }
    if (c === "[") {
      inClass = true;
      continue;
    }
    if (c === "(") {
      if (pattern[i + 1] === "?") {
        const n = pattern[i + 2];
        if (n === "=" || n === "!" || (n === "<" && (pattern[i + 3] === "=" || pattern[i + 3] === "!"))) {
          reject(field, "look-around assertions are not supported");
        }
      }
      groups.push(false);
      continue;
    }
    if (c === ")") {
      const had = groups.pop();
      if (had === undefined) reject(field, "unbalanced parenthesis");
      // A group's quantifiers count for the groups around it too.
      if (had && groups.length > 0) groups[groups.length - 1] = true;
      const q = quantifierAt(pattern, i + 1);
      if (q?.unbounded && had) {
        reject(field, "nested unbounded quantifiers can take exponential time");
      }
      if (q?.unbounded && groups.length > 0) groups[groups.length - 1] = true;
      continue;
    }
    const q = quantifierAt(pattern, i);
    if (q !== undefined) {
      if (q.unbounded && groups.length > 0) groups[groups.length - 1] = true;
      i += q.length - 1;
    }
  }
  if (groups.length > 0) reject(field, "unbalanced parenthesis");
}

function quantifierAt(pattern: string, i: number): { length: number; unbounded: boolean } | undefined {
  const c = pattern[i];
  if (c === "*" || c === "+") return { length: pattern[i + 1] === "?" ? 2 : 1, unbounded: true };
  if (c === "?") return { length: 1, unbounded: false };
  if (c === "{") {
    const m = /^\{(\d+)(,(\d*))?\}\??/.exec(pattern.slice(i));
    if (m === null) return undefined;
    const upper = m[2] === undefined ? Number(m[1]) : m[3] === "" ? Number.POSITIVE_INFINITY : Number(m[3]);
    // Large bounded repeats behave like unbounded ones for backtracking.
    return { length: m[0].length, unbounded: upper > 16 };
  }
  return undefined;
}
