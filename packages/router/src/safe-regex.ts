import { RouterError } from "./errors.js";
import {
  type AssertionKind,
  LinearRegex,
  MAX_PROGRAM_SIZE,
  ProgramTooLargeError,
  type RegexNode,
  type RouteRegex,
} from "./linear-regex.js";

export { MAX_PROGRAM_SIZE, type RouteRegex } from "./linear-regex.js";

/** Longest regular expression source accepted (the Gateway API caps values at 1024 characters). */
export const MAX_REGEX_LENGTH = 1024;

/**
 * Compiles a route regular expression, written in RE2 syntax (what Envoy's `safe_regex` and the Gateway
 * API implementations use), as a whole-string match.
 *
 * The pattern is parsed as RE2 parses it. RE2 constructs are read with their RE2 meaning: POSIX classes
 * (`[[:digit:]]`, ASCII only), Unicode classes (`\pL`, `\p{Greek}`, `\PN`, `\p{^Greek}`), `\Q...\E`,
 * `\A`, `\z`, octal and `\x{...}` escapes, flag groups (`(?s)`, `(?m)`, `(?U)`, and `(?i)` when it covers
 * every case-sensitive part of the pattern), named groups (`(?P<name>...)`), `.` (which in RE2 matches
 * `\r` too), `\s` (`[\t\n\f\r ]` in RE2) and literal braces and brackets. Anything RE2 refuses (including
 * nested counted repetitions making more than 1000 copies, `(?:a{2}){600}`), and anything whose meaning
 * cannot be reproduced exactly, is refused with `ERR_REGEX_INVALID` rather than matched differently.
 *
 * Matching takes time linear in the input, as in RE2, whatever the pattern: a pattern that a
 * backtracking JavaScript regex could run in exponential or polynomial time (`(a|a)*`, `a*a*a*`,
 * `(a+)+`) runs on a Thompson NFA simulation (`LinearRegex`), whose work per input character is bounded
 * by the size of its program (counted repetition expanded, at most `MAX_PROGRAM_SIZE` instructions, else
 * refused). Patterns with no alternation and at most one variable repetition, which a JavaScript regex
 * runs in linear time, use the JavaScript regex, which is faster.
 */
export function compileSafeRegex(pattern: string, field: string): RouteRegex {
  const compiled = compileRe2(pattern, field);
  if (compiled.backtrackingIsLinear) {
    const js = compiled.js;
    return { source: pattern, test: (input: string) => js.test(input) };
  }
  return compiled.linear;
}

/** A pattern compiled both ways (exported for tests). */
export interface CompiledRe2 {
  /** The JavaScript translation, `^(?:...)$`. */
  js: RegExp;
  /** The linear-time matcher. */
  linear: LinearRegex;
  /** A backtracking run of `js` takes time linear in the input (the fast path is safe). */
  backtrackingIsLinear: boolean;
}

/** Parses, checks and compiles an RE2 pattern both ways; throws `ERR_REGEX_INVALID`. Exported for tests. */
export function compileRe2(pattern: string, field: string): CompiledRe2 {
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
  const { source, flags, node, fold } = new Translator(pattern, field).translate();
  let js: RegExp;
  try {
    js = new RegExp(`^(?:${source})$`, flags);
  } catch (cause) {
    throw new RouterError("ERR_REGEX_INVALID", `${field}: invalid regular expression: ${String(cause)}`, {
      field,
      cause,
    });
  }
  let linear: LinearRegex;
  try {
    linear = new LinearRegex(pattern, node, fold);
  } catch (cause) {
    if (!(cause instanceof ProgramTooLargeError)) throw cause;
    reject(
      field,
      `regular expression too large (more than ${MAX_PROGRAM_SIZE} instructions once repetitions are expanded)`,
    );
  }
  return { js, linear, backtrackingIsLinear: backtrackingIsLinear(node) };
}

/**
 * Whether a backtracking whole-string match of `node` takes linear time: with no alternation and at
 * most one repetition of variable count (not itself repeated), every other part matches one way only,
 * so backtracking retries the rest once per count of that one repetition.
 */
function backtrackingIsLinear(node: RegexNode): boolean {
  let variable = 0;
  const walk = (n: RegexNode, repeated: boolean): boolean => {
    switch (n.type) {
      case "alternate":
        return false;
      case "concat":
        return n.items.every((item) => walk(item, repeated));
      case "repeat":
        if (n.min === n.max) return walk(n.body, repeated || n.max > 1);
        if (repeated || ++variable > 1) return false;
        return walk(n.body, true);
      default:
        return true;
    }
  };
  return walk(node, false);
}

function reject(field: string, why: string): never {
  throw new RouterError("ERR_REGEX_INVALID", `${field}: ${why}`, { field });
}

/** A parsed pattern: JavaScript source and flags, and the tree for the linear-time matcher. */
interface Translation {
  source: string;
  flags: string;
  node: RegexNode;
  fold: boolean;
}

/** RE2's flags that change meaning inside a group (`(?imsU)`). */
interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  U: boolean;
}

/** RE2's POSIX classes, all ASCII (`[[:name:]]`). */
const POSIX_CLASSES = new Map<string, string>(
  Object.entries({
    alnum: "0-9A-Za-z",
    alpha: "A-Za-z",
    ascii: "\\u{0}-\\u{7f}",
    blank: "\\t ",
    cntrl: "\\u{0}-\\u{1f}\\u{7f}",
    digit: "0-9",
    graph: "!-~",
    lower: "a-z",
    print: " -~",
    punct: "!-\\/:-@\\[-`\\{-~",
    space: "\\t\\n\\v\\f\\r ",
    upper: "A-Z",
    word: "0-9A-Za-z_",
    xdigit: "0-9A-Fa-f",
  }),
);
/** POSIX classes with no letters in them: the same with and without case folding. */
const CASELESS_POSIX = new Set(["blank", "cntrl", "digit", "punct", "space"]);

/** RE2's general categories (short names only; RE2 has no long ones). */
const CATEGORIES = new Set(
  "C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs".split(
    " ",
  ),
);
/** Script long names of four letters (RE2 knows scripts by long name only; other 4-letter names are codes). */
const FOUR_LETTER_SCRIPTS = new Set(["Cham", "Kawi", "Lisu", "Miao", "Modi", "Newa", "Thai", "Toto"]);

/** The JavaScript class-set operand for an RE2 Unicode class name, or undefined if RE2 has no such class. */
function unicodeClass(name: string, negated: boolean): string | undefined {
  const p = negated ? "\\P" : "\\p";
  if (name === "Any") return `${p}{Any}`;
  // RE2 builds C from the assigned categories only; JavaScript's C also holds unassigned code points.
  if (name === "C") return negated ? "[^\\p{Cc}\\p{Cf}\\p{Co}\\p{Cs}]" : "[\\p{Cc}\\p{Cf}\\p{Co}\\p{Cs}]";
  if (CATEGORIES.has(name)) return `${p}{${name}}`;
  if (
    !/^[A-Z][A-Za-z]*(?:_[A-Z][a-z]*)*$/.test(name) ||
    name === "Unknown" ||
    name === "Katakana_Or_Hiragana"
  ) {
    return undefined;
  }
  if (/^[A-Z][a-z]{3}$/.test(name) && !FOUR_LETTER_SCRIPTS.has(name)) return undefined;
  try {
    new RegExp(`\\p{Script=${name}}`, "v");
  } catch {
    return undefined;
  }
  return `${p}{Script=${name}}`;
}

/** RE2's capture group names (its categories Lu Ll Lt Lm Lo Nl Mn Mc Nd Pc, any order). */
const CAPTURE_NAME = /^[\p{Lu}\p{Ll}\p{Lt}\p{Lm}\p{Lo}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]+$/u;

/** Characters written with a backslash outside a class. */
const SYNTAX = new Set("^$\\.*+?()[]{}|");
/** Characters written with a backslash inside a `v`-mode class (syntax and reserved punctuators). */
const CLASS_SYNTAX = new Set("()[]{}/-\\|&!#%,:;<=>@`~^$*+.?");

function hex(cp: number): string {
  return `\\u{${cp.toString(16)}}`;
}

/** A code point as a JavaScript regex atom (`inClass`: inside a `v`-mode class). */
function literal(cp: number, inClass: boolean): string {
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return hex(cp);
  const c = String.fromCodePoint(cp);
  return (inClass ? CLASS_SYNTAX : SYNTAX).has(c) ? `\\${c}` : c;
}

/** A code point whose case folding in RE2 and in JavaScript leaves it alone (an ASCII non-letter). */
function caseless(cp: number): boolean {
  return cp < 0x80 && !((cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a));
}

function isOctal(c: string | undefined): boolean {
  return c !== undefined && c >= "0" && c <= "7";
}

function isHex(c: string | undefined): boolean {
  return c !== undefined && /^[0-9A-Fa-f]$/.test(c);
}

/** What one parsed piece of pattern became. */
interface Piece {
  /** JavaScript (`v` flag) source. */
  out: string;
  /** The same piece for the linear-time matcher. */
  node: RegexNode;
  /** Can take a quantifier (false for assertions). */
  quantifiable: boolean;
  /** A `\Q...\E` run: its literals, each its own item (a quantifier after it applies to the last). */
  chars?: readonly number[];
}

function classPiece(out: string): Piece {
  return { out, node: { type: "class", source: out }, quantifiable: true };
}

function charPiece(cp: number): Piece {
  return { out: literal(cp, false), node: { type: "char", cp }, quantifiable: true };
}

function assertPiece(out: string, kind: AssertionKind): Piece {
  return { out, node: { type: "assert", kind }, quantifiable: false };
}

/** RE2's largest repeat count, and largest product of nested counted repeats. */
const MAX_REPEAT = 1000;

/**
 * What is left of `budget` after dividing it by the count of every counted repetition on the way down
 * to the innermost part (the smallest over all paths); 0 means RE2 refuses the nesting as too large.
 */
function repeatBudget(node: RegexNode, budget: number): number {
  switch (node.type) {
    case "repeat": {
      const m = node.max === Number.POSITIVE_INFINITY ? node.min : node.max;
      return repeatBudget(node.body, m > 0 ? Math.floor(budget / m) : budget);
    }
    case "concat":
    case "alternate":
      return node.items.reduce((least, item) => Math.min(least, repeatBudget(item, budget)), budget);
    default:
      return budget;
  }
}

const EMPTY: RegexNode = { type: "empty" };

function concat(items: RegexNode[]): RegexNode {
  return items.length === 1
    ? (items[0] as RegexNode)
    : items.length === 0
      ? EMPTY
      : { type: "concat", items };
}

/** Parses RE2 syntax and writes the equivalent JavaScript (`v` flag) source. */
class Translator {
  private pos = 0;
  /** Case-folding state of every case-sensitive atom seen. */
  private readonly foldStates = new Set<boolean>();
  private wordBoundary = false;
  private depth = 0;

  constructor(
    private readonly src: string,
    private readonly field: string,
  ) {}

  translate(): Translation {
    for (let i = 0; i < this.src.length; i++) {
      const u = this.src.charCodeAt(i);
      if (u >= 0xd800 && u <= 0xdbff && i + 1 < this.src.length) {
        const l = this.src.charCodeAt(i + 1);
        if (l >= 0xdc00 && l <= 0xdfff) {
          i++;
          continue;
        }
      }
      if (u >= 0xd800 && u <= 0xdfff) this.fail("a lone surrogate is not a character");
    }
    const body = this.alternation({ i: false, m: false, s: false, U: false });
    if (this.pos < this.src.length) this.fail("unbalanced parenthesis");
    if (this.foldStates.size > 1) {
      this.fail(
        "(?i) must apply to the whole pattern (case-insensitive matching of a part is not supported)",
      );
    }
    const fold = this.foldStates.has(true);
    if (fold && this.wordBoundary) {
      this.fail("\\b and \\B are not supported with (?i)");
    }
    return { source: body.out, flags: fold ? "iv" : "v", node: body.node, fold };
  }

  private fail(why: string): never {
    reject(this.field, why);
  }

  private peek(offset = 0): string | undefined {
    return this.src[this.pos + offset];
  }

  /** The next code point, consumed. */
  private next(): number {
    const cp = this.src.codePointAt(this.pos);
    if (cp === undefined) this.fail("unexpected end of regular expression");
    this.pos += cp > 0xffff ? 2 : 1;
    return cp;
  }

  /** A case-sensitive atom was written under `flags`. */
  private cased(flags: Flags): void {
    this.foldStates.add(flags.i);
  }

  /** `a|b|...` up to an unmatched `)` or the end. Flag settings last to the end of the group. */
  private alternation(flags: Flags): Piece {
    const parts: string[] = [];
    const nodes: RegexNode[] = [];
    // The current branch, one entry per item: what a repetition operator applies to is the last item.
    let outs: string[] = [];
    let items: RegexNode[] = [];
    // Whether each item may be repeated (RE2 repeats a bare assertion, `^*`; that is refused here).
    let repeatable: boolean[] = [];
    // A repetition operator may come next: false right after one (RE2 refuses `a**`). A flag setting
    // or an empty `\Q\E` in between does not count: RE2 repeats the item before it (`a(?i)*` is `a*`).
    let canRepeat = false;
    while (this.pos < this.src.length) {
      const c = this.peek();
      if (c === ")") break;
      if (c === "|") {
        this.pos++;
        parts.push(outs.join(""));
        nodes.push(concat(items));
        outs = [];
        items = [];
        repeatable = [];
        canRepeat = false;
        continue;
      }
      if (c === "*" || c === "+" || c === "?" || (c === "{" && this.repetitionAt() !== undefined)) {
        if (items.length === 0) this.fail("missing argument to repetition operator");
        if (!canRepeat) this.fail("stacked repetition operators");
        const body = items.pop() as RegexNode;
        const bodyOut = outs.pop() as string;
        if (repeatable.pop() !== true) this.fail("repetition of an empty-width assertion is not supported");
        const q = this.quantifier(flags) as { out: string; min: number; max: number; counted: boolean };
        const node: RegexNode = { type: "repeat", body, min: q.min, max: q.max };
        // RE2 refuses counted repetitions whose nesting makes more than 1000 copies of the innermost part.
        if (q.counted && (q.min >= 2 || q.max >= 2) && repeatBudget(node, MAX_REPEAT) === 0) {
          this.fail("bad repetition operator (nested counted repetition is too large)");
        }
        // Only a repetition repeated again (across a flag setting) needs a group in JavaScript.
        outs.push(`${body.type === "repeat" ? `(?:${bodyOut})` : bodyOut}${q.out}`);
        items.push(node);
        repeatable.push(true);
        canRepeat = false;
        continue;
      }
      const atom = this.atom(flags);
      if (atom === undefined) {
        canRepeat = items.length > 0;
        continue;
      }
      if (atom.chars !== undefined) {
        // A `\Q...\E` run: separate literals, so that a repetition applies to the last one only.
        for (const cp of atom.chars) {
          outs.push(literal(cp, false));
          items.push({ type: "char", cp });
          repeatable.push(true);
        }
      } else {
        outs.push(atom.out);
        items.push(atom.node);
        repeatable.push(atom.quantifiable);
      }
      canRepeat = true;
    }
    parts.push(outs.join(""));
    nodes.push(concat(items));
    const node: RegexNode =
      nodes.length === 1 ? (nodes[0] as RegexNode) : { type: "alternate", items: nodes };
    return { out: parts.join("|"), node, quantifiable: true };
  }

  /** RE2's counted repetition at pos (`{n}`, `{n,}`, `{n,m}`; no leading zeros), or undefined (a literal `{`). */
  private repetitionAt(): { lo: number; hi: number; length: number } | undefined {
    const m = /^\{(0|[1-9][0-9]{0,8})(?:(,)(0|[1-9][0-9]{0,8})?)?\}/.exec(
      this.src.slice(this.pos, this.pos + 24),
    );
    if (m === null) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : m[3] === undefined ? Number.POSITIVE_INFINITY : Number(m[3]);
    return { lo, hi, length: m[0].length };
  }

  private quantifier(flags: Flags): { out: string; min: number; max: number; counted: boolean } | undefined {
    const c = this.peek();
    let out: string;
    let min: number;
    let max: number;
    let counted = false;
    if (c === "*" || c === "+" || c === "?") {
      this.pos++;
      out = c;
      min = c === "+" ? 1 : 0;
      max = c === "?" ? 1 : Number.POSITIVE_INFINITY;
    } else if (c === "{") {
      const r = this.repetitionAt();
      if (r === undefined) return undefined;
      if (r.lo > 1000 || (r.hi !== Number.POSITIVE_INFINITY && r.hi > 1000))
        this.fail("bad repetition operator");
      if (r.hi < r.lo) this.fail("bad repetition operator");
      this.pos += r.length;
      out =
        r.hi === r.lo ? `{${r.lo}}` : r.hi === Number.POSITIVE_INFINITY ? `{${r.lo},}` : `{${r.lo},${r.hi}}`;
      min = r.lo;
      max = r.hi;
      counted = true;
    } else {
      return undefined;
    }
    let lazy = false;
    if (this.peek() === "?") {
      this.pos++;
      lazy = true;
    }
    // (?U) swaps greedy and lazy. (For a whole-string match the answer is the same either way.)
    if (lazy !== flags.U) out += "?";
    return { out, min, max, counted };
  }

  /** One atom, or undefined for a flag setting `(?i)` that matches nothing. Mutates `flags` for those. */
  private atom(flags: Flags): Piece | undefined {
    const c = this.peek();
    if (c === "(") return this.group(flags);
    if (c === "[") {
      const { out, caseSensitive } = this.charClass();
      if (caseSensitive) this.cased(flags);
      return classPiece(out);
    }
    if (c === ".") {
      this.pos++;
      // RE2's . is any character but \n (JavaScript's also leaves out \r, \u2028 and \u2029).
      return classPiece(flags.s ? "\\p{Any}" : "[^\\n]");
    }
    if (c === "^") {
      this.pos++;
      return assertPiece(flags.m ? "(?<![^\\n])" : "^", flags.m ? "line-start" : "text-start");
    }
    if (c === "$") {
      this.pos++;
      return assertPiece(flags.m ? "(?![^\\n])" : "$", flags.m ? "line-end" : "text-end");
    }
    if (c === "\\") return this.escape(flags);
    const cp = this.next();
    if (!caseless(cp)) this.cased(flags);
    return charPiece(cp);
  }

  private group(flags: Flags): Piece | undefined {
    this.pos++; // (
    let open = "(";
    let inner: Flags = { ...flags };
    if (this.peek() === "?") {
      this.pos++;
      let name: string | undefined;
      if (this.peek() === "P" && this.peek(1) === "<") {
        this.pos += 2;
        name = this.captureName();
      } else if (this.peek() === "<" && this.peek(1) !== "=" && this.peek(1) !== "!") {
        this.pos++;
        name = this.captureName();
      }
      if (name === undefined) {
        // Flags: (?flags) or (?flags:re).
        const set: Flags = { ...flags };
        let negated = false;
        let saw = false;
        for (;;) {
          const f = this.peek();
          if (f === "i" || f === "m" || f === "s" || f === "U") {
            set[f] = !negated;
            saw = true;
          } else if (f === "-" && !negated) {
            negated = true;
            saw = false;
          } else if ((f === ":" || f === ")") && (saw || !negated)) {
            break;
          } else if (f === "=" || f === "!" || f === "<") {
            this.fail("look-around assertions are not supported");
          } else {
            this.fail(
              "unsupported group or flag syntax (RE2 knows (?:re), (?P<name>re) and the flags i, m, s, U)",
            );
          }
          this.pos++;
        }
        if (this.peek() === ")") {
          this.pos++;
          // The flags hold until the end of the enclosing group.
          Object.assign(flags, set);
          return undefined;
        }
        this.pos++; // :
        open = "(?:";
        inner = set;
      }
    }
    if (++this.depth > 100) this.fail("groups nested too deeply");
    const body = this.alternation(inner);
    this.depth--;
    if (this.peek() !== ")") this.fail("missing closing )");
    this.pos++;
    return { out: `${open}${body.out})`, node: body.node, quantifiable: true };
  }

  /**
   * A group name up to `>`: letters, marks, decimal and letter numbers and connector punctuation, as
   * in RE2. RE2 accepts the same name twice; names do not change what matches.
   */
  private captureName(): string {
    const end = this.src.indexOf(">", this.pos);
    if (end < 0) this.fail("invalid named capture group");
    const name = this.src.slice(this.pos, end);
    if (!CAPTURE_NAME.test(name)) this.fail(`invalid named capture group name ${JSON.stringify(name)}`);
    this.pos = end + 1;
    return name;
  }

  /** A backslash sequence outside a class (undefined for an empty `\Q\E`). */
  private escape(flags: Flags): Piece | undefined {
    const n = this.peek(1);
    const empty = (out: string, kind: AssertionKind): Piece => {
      this.pos += 2;
      return assertPiece(out, kind);
    };
    switch (n) {
      case "b":
      case "B":
        this.wordBoundary = true;
        return empty(`\\${n}`, n === "b" ? "word-boundary" : "not-word-boundary");
      case "A":
        return empty("^", "text-start");
      case "C":
        // RE2's \C matches one byte of the UTF-8 text, a part of a character: no code point matcher can.
        return this.fail("\\C (any byte) is not supported");
      case "z":
        return empty("$", "text-end");
      case "Q": {
        this.pos += 2;
        const end = this.src.indexOf("\\E", this.pos);
        const text = this.src.slice(this.pos, end < 0 ? this.src.length : end);
        this.pos = end < 0 ? this.src.length : end + 2;
        const chars = [...text].map((ch) => ch.codePointAt(0) as number);
        for (const cp of chars) if (!caseless(cp)) this.cased(flags);
        // An empty \Q\E is nothing at all, like a flag setting.
        if (chars.length === 0) return undefined;
        const out = chars.map((cp) => literal(cp, false)).join("");
        const node = concat(chars.map((cp): RegexNode => ({ type: "char", cp })));
        return { out, node, quantifiable: true, chars };
      }
      case "p":
      case "P": {
        const out = this.unicodeEscape();
        this.cased(flags);
        return classPiece(out);
      }
      case "d":
      case "D":
        this.pos += 2;
        return classPiece(`\\${n}`);
      case "s":
      case "S":
        this.pos += 2;
        // RE2's \s is [\t\n\f\r ] (JavaScript's has \v and Unicode spaces too).
        return classPiece(n === "s" ? "[\\t\\n\\f\\r ]" : "[^\\t\\n\\f\\r ]");
      case "w":
      case "W":
        this.pos += 2;
        this.cased(flags);
        return classPiece(`\\${n}`);
      default: {
        const cp = this.escapedChar();
        if (!caseless(cp)) this.cased(flags);
        return charPiece(cp);
      }
    }
  }

  /** `\pL`, `\p{Name}`, `\PL`, `\p{^Name}` at pos. */
  private unicodeEscape(): string {
    const start = this.pos;
    let negated = this.peek(1) === "P";
    this.pos += 2;
    let name: string;
    if (this.peek() === "{") {
      const end = this.src.indexOf("}", this.pos);
      if (end < 0) this.fail("unterminated Unicode class");
      name = this.src.slice(this.pos + 1, end);
      this.pos = end + 1;
    } else {
      if (this.pos >= this.src.length) this.fail("unterminated Unicode class");
      name = String.fromCodePoint(this.next());
    }
    if (name.startsWith("^")) {
      negated = !negated;
      name = name.slice(1);
    }
    const out = unicodeClass(name, negated);
    if (out === undefined) {
      this.fail(`unknown Unicode class ${JSON.stringify(this.src.slice(start, this.pos))}`);
    }
    return out;
  }

  /** RE2's ParseEscape: one escaped character at pos (a backslash). */
  private escapedChar(): number {
    this.pos++; // backslash
    if (this.pos >= this.src.length) this.fail("trailing backslash");
    const start = this.pos - 1;
    const c = String.fromCodePoint(this.next());
    const bad = (): never => this.fail(`invalid escape sequence ${this.src.slice(start, this.pos)}`);
    if (c >= "1" && c <= "7" && !isOctal(this.peek())) {
      this.fail(
        `invalid escape sequence ${this.src.slice(start, this.pos)} (back-references are not supported)`,
      );
    }
    if (c >= "0" && c <= "7") {
      let code = Number(c);
      for (let k = 0; k < 2 && isOctal(this.peek()); k++) code = code * 8 + Number(this.src[this.pos++]);
      return code;
    }
    switch (c) {
      case "x": {
        if (this.peek() === "{") {
          const m = /^\{([0-9A-Fa-f]+)\}/.exec(this.src.slice(this.pos, this.pos + 16));
          if (m === null) return bad();
          const code = Number.parseInt(m[1] as string, 16);
          this.pos += m[0].length;
          if (code > 0x10ffff) return bad();
          return code;
        }
        if (!isHex(this.peek()) || !isHex(this.peek(1))) return bad();
        this.pos += 2;
        return Number.parseInt(this.src.slice(this.pos - 2, this.pos), 16);
      }
      case "n":
        return 0x0a;
      case "r":
        return 0x0d;
      case "t":
        return 0x09;
      case "a":
        return 0x07;
      case "f":
        return 0x0c;
      case "v":
        return 0x0b;
    }
    const cp = c.codePointAt(0) as number;
    // Escaped ASCII punctuation is itself; letters, digits and non-ASCII characters are not escapes.
    if (cp < 0x80 && !/[0-9A-Za-z]/.test(c)) return cp;
    return bad();
  }

  /** A bracket expression at pos, written as a `v`-mode class. */
  private charClass(): { out: string; caseSensitive: boolean } {
    const start = this.pos;
    this.pos++; // [
    let negated = false;
    if (this.peek() === "^") {
      this.pos++;
      negated = true;
    }
    let out = "";
    let caseSensitive = false;
    let first = true;
    while (this.pos < this.src.length && (this.peek() !== "]" || first)) {
      first = false;
      // [:name:] and [:^name:]
      if (this.peek() === "[" && this.peek(1) === ":" && this.pos + 2 < this.src.length) {
        const end = this.src.indexOf(":]", this.pos + 2);
        if (end >= 0) {
          let name = this.src.slice(this.pos + 2, end);
          const neg = name.startsWith("^");
          if (neg) name = name.slice(1);
          const ranges = POSIX_CLASSES.get(name);
          if (ranges === undefined) {
            this.fail(`unknown POSIX class ${JSON.stringify(this.src.slice(this.pos, end + 2))}`);
          }
          this.pos = end + 2;
          out += neg ? `[^${ranges}]` : `[${ranges}]`;
          if (!CASELESS_POSIX.has(name)) caseSensitive = true;
          continue;
        }
      }
      if (this.peek() === "\\") {
        const n = this.peek(1);
        if (n === "p" || n === "P") {
          out += this.unicodeEscape();
          caseSensitive = true;
          continue;
        }
        if (n === "d" || n === "D" || n === "w" || n === "W") {
          this.pos += 2;
          out += `\\${n}`;
          if (n === "w" || n === "W") caseSensitive = true;
          continue;
        }
        if (n === "s" || n === "S") {
          this.pos += 2;
          out += n === "s" ? "[\\t\\n\\f\\r ]" : "[^\\t\\n\\f\\r ]";
          continue;
        }
      }
      const lo = this.classChar();
      let hi = lo;
      if (this.peek() === "-" && this.peek(1) !== undefined && this.peek(1) !== "]") {
        this.pos++;
        hi = this.classChar();
        if (hi < lo) this.fail(`invalid character class range ${this.src.slice(start, this.pos)}`);
      }
      out += hi === lo ? literal(lo, true) : `${literal(lo, true)}-${literal(hi, true)}`;
      if (!(caseless(lo) && caseless(hi) && !(lo <= 0x7a && hi >= 0x41))) caseSensitive = true;
    }
    if (this.pos >= this.src.length) this.fail(`missing closing ] in ${this.src.slice(start)}`);
    this.pos++; // ]
    // A class folds case as a whole: under (?i) a negated class leaves out every case variant of its
    // members, in RE2 and in JavaScript's v mode alike.
    return { out: `[${negated ? "^" : ""}${out}]`, caseSensitive };
  }

  private classChar(): number {
    if (this.peek() === "\\") return this.escapedChar();
    return this.next();
  }
}

/**
 * Translates an RE2 pattern into JavaScript regex source and flags with the same meaning (throws
 * `ERR_REGEX_INVALID` for anything refused). Exported for tests.
 */
export function translateRe2(pattern: string, field: string): { source: string; flags: string } {
  const { source, flags } = new Translator(pattern, field).translate();
  return { source, flags };
}
