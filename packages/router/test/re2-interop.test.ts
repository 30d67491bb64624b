/**
 * Route regexes against real RE2 (interop, not self-consistency): every pattern of the router's regex
 * tests, hand-written tricky ones and random ones are compiled by `compileSafeRegex` and by RE2 itself
 * (the system libre2 through Perl's re::engine::RE2, see re2-oracle.pl), and must be refused by us
 * whenever RE2 refuses them and match exactly what RE2::FullMatch matches whenever both accept.
 * We refuse some patterns RE2 accepts, each for a reason the README documents; those are listed here.
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { RouterError } from "../src/errors.js";
import { compileRe2, compileSafeRegex, MAX_REGEX_LENGTH } from "../src/safe-regex.js";

const ORACLE = fileURLToPath(new URL("./re2-oracle.pl", import.meta.url));

interface Re2Answer {
  ok: boolean;
  matches?: boolean[];
  error?: string;
}

/** One persistent perl process running re2-oracle.pl; requests are answered in order. */
class Re2Oracle {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly pending: { resolve: (a: Re2Answer) => void; reject: (e: Error) => void }[] = [];
  private stderr = "";
  private failure: Error | undefined;

  constructor() {
    this.child = spawn("perl", [ORACLE], { stdio: ["pipe", "pipe", "pipe"] });
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (d: string) => {
      this.stderr += d;
    });
    createInterface({ input: this.child.stdout }).on("line", (line) => {
      this.pending.shift()?.resolve(JSON.parse(line) as Re2Answer);
    });
    const fail = (why: string): void => {
      this.failure ??= new Error(
        `the RE2 oracle (perl ${ORACLE}) ${why}: ${this.stderr.trim()}\n` +
          "It needs Debian's libre-engine-re2-perl: run `node scripts/test-prerequisites.mjs` at the repository root.",
      );
      for (const p of this.pending.splice(0)) p.reject(this.failure);
    };
    this.child.on("error", (e) => fail(`did not start (${e.message})`));
    this.child.on("exit", (code, signal) => fail(`exited (${code ?? signal})`));
    this.child.stdin.on("error", () => {});
  }

  ask(pattern: string, inputs: readonly string[]): Promise<Re2Answer> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.child.stdin.write(`${JSON.stringify({ pattern, inputs })}\n`);
    });
  }

  close(): void {
    this.child.stdin.end();
  }
}

/** A string that is valid UTF-16 (RE2 reads UTF-8; a lone surrogate cannot be sent to it). */
function wellFormed(s: string): boolean {
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

/** Every string literal in the router's tests that use regexes: their patterns, inputs and the rest. */
function literalsOfRegexTests(): string[] {
  const files = [
    "../src/safe-regex.test.ts",
    "../src/safe-regex-linear.test.ts",
    "../src/validate-route.test.ts",
    "../src/route-table.test.ts",
    "../src/envoy-routes.test.ts",
    "./bad-input.test.ts",
  ];
  const found = new Set<string>();
  for (const file of files) {
    const path = fileURLToPath(new URL(file, import.meta.url));
    const source = ts.createSourceFile(path, readFileSync(path, "utf8"), ts.ScriptTarget.Latest, false);
    const visit = (node: ts.Node): void => {
      if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) {
        if (node.text.length > 0 && node.text.length <= MAX_REGEX_LENGTH && wellFormed(node.text)) {
          found.add(node.text);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return [...found];
}

/** Hand-written patterns where RE2 and a JavaScript regex differ, or where a translation could slip. */
const TRICKY = [
  // Case folding: RE2 folds simple case pairs and orbits (k K K, s S ſ, σ Σ ς), never ß to SS.
  "(?i)straße",
  "(?i)STRASSE",
  "(?i)ß",
  "(?i)ẞ",
  "(?i)k",
  "(?i)\\x{212A}",
  "(?i)[k]",
  "(?i)[^k]",
  "(?i)[a-z]+",
  "(?i)[^a-z]",
  "(?i)σ",
  "(?i)[σ]",
  "(?i)ǅ",
  "(?i)İ",
  "(?i)ı",
  "(?i)é",
  "(?i)\\pL",
  "(?i)\\p{Lu}",
  "(?i)\\p{Ll}",
  "(?i)\\P{Lu}",
  "(?i)\\p{^Lu}",
  "(?i)[\\p{Lu}]",
  "(?i)[^\\p{Lu}]",
  "(?i)[[:upper:]]",
  "(?i)[[:lower:]]",
  "(?i)[[:^upper:]]",
  "(?i)\\w",
  "(?i)\\W",
  "(?i)[\\W]",
  "(?i)[^\\w]",
  "(?i)\\p{Greek}",
  "(?i)[^\\x00-\\x{10FFFF}]",
  "(?i)a(?-i)b",
  "(?i:a)(?i:b)",
  "(?i)(?-i:1)a",
  // Word boundaries: ASCII word characters only, at the ends and next to non-ASCII.
  "\\b",
  "\\B",
  "\\ba",
  "a\\b",
  "\\Ba",
  "a\\B",
  "é\\b",
  "\\bé",
  "a\\bé",
  "a\\Bé",
  ".\\b.",
  ".\\B.",
  "\\b.*\\b",
  "(?:\\b|a)*",
  // Lines, dot, newlines.
  "(?m)^",
  "(?m)$",
  "(?m)^a$",
  "(?m)a$",
  "(?m)^b",
  "(?m)a$\\n^b",
  "(?m)(?:$\\n)*",
  "(?m)\\n^",
  "(?m)$\\n",
  "(?m:^a)\\nb$",
  "a$\\n",
  "^\\na",
  "\\A(?m)^a",
  "(?s).",
  "(?s).*",
  "(?s:.)a",
  ".",
  ".*",
  "[^a]",
  "[^\\n]",
  // Unicode classes and POSIX classes.
  "\\pL",
  "\\pN",
  "\\PN",
  "\\p{Greek}",
  "\\P{Greek}",
  "\\p{^Greek}",
  "\\p{Latin}",
  "\\p{Common}",
  "\\p{Han}",
  "\\p{L}",
  "\\p{Lt}",
  "\\p{Nd}",
  "\\p{Zs}",
  "\\p{Cs}",
  "\\p{Co}",
  "\\p{Cn}",
  "\\p{LC}",
  "\\p{Any}",
  "\\p{^Any}",
  "\\pZ",
  "\\p{Braille}",
  "[\\pL\\pN]+",
  "[^\\pL]",
  "[\\PL]",
  "[^\\PL]",
  "[[:^alpha:]]",
  "[[:alpha:]]",
  "[[:word:]]",
  "[[:^space:]]",
  "[[:ascii:]]",
  "[[:^ascii:]]",
  "[[:cntrl:]]",
  "[[:graph:]]",
  "[[:print:]]",
  "[[:blank:]]",
  "[[:foo:]]",
  "[^\\x00-\\x{10FFFF}]",
  "[\\x00-\\x{10FFFF}]",
  "[^\\x00-\\x{FFFF}]",
  "[\\x{10000}-\\x{10FFFF}]",
  "\\d",
  "\\D",
  "\\w",
  "\\W",
  "\\s",
  "\\S",
  "[\\d\\s]",
  "[^\\d\\s]",
  "[\\D]",
  "[^\\D]",
  "[a-\\x{10FFFF}]",
  "[\\-]",
  "[a\\-z]",
  "[-a]",
  "[a-]",
  "[]]",
  "[^]]",
  "[]-a]",
  "[\\]]",
  "[\\[]",
  "[[]",
  "[a[:digit:]b]",
  "[[:digit:]-z]",
  "[\\n]",
  "[\\Q]\\E]",
  "[\\p{Greek}]",
  "[\\p{^Greek}]",
  // Quoting and escapes.
  "\\Qa.b\\E",
  "\\Qa.b",
  "\\Qa\\",
  "\\Q\\E",
  "\\Q\\Ea",
  "a\\Q\\E*",
  "\\Qab\\E+",
  "\\Q(?i)\\E",
  "\\C",
  "a\\C",
  "\\Z",
  "\\z",
  "\\A",
  "\\0",
  "\\00",
  "\\000",
  "\\0000",
  "\\1",
  "\\8",
  "\\101",
  "\\1010",
  "\\377",
  "\\400",
  "\\x",
  "\\x4",
  "\\x41",
  "\\x{41}",
  "\\x{0041}",
  "\\x{10FFFF}",
  "\\x{110000}",
  "\\x{}",
  "\\x{D800}",
  "\\x{FFFFFFFFF}",
  "\\x{1F600}+",
  "\\e",
  "\\cA",
  "\\N{DIGIT ONE}",
  "\\u0041",
  "\\a\\f\\t\\n\\r\\v",
  "\\-\\_\\~\\ \\'",
  "\\@\\#\\%\\&\\=\\<\\>\\`\\/",
  "\\é",
  "\\K",
  "\\G",
  "\\R",
  "\\h",
  "\\X",
  // Groups, names, flags.
  "(?P<name>a)",
  "(?P<name>a)(?P<name>b)",
  "(?P<n1>a)(?P<n2>b)",
  "(?P<1a>x)",
  "(?P<a.b>x)",
  "(?P<é>x)",
  "(?P=name)",
  "(?P>name)",
  "(?:)",
  "()",
  "(?i)",
  "(?)",
  "(?i-)",
  "(?-i)",
  "(?-)",
  "(?:a|)",
  "(?U)a+",
  "(?U)a+?",
  "(?U)(a|b)*b",
  "(?x)a b",
  "(?s-s)a",
  "(?imsU)a",
  "(?i-i)a",
  "(?ii)a",
  "(?i:)",
  "(?#comment)a",
  "(?'n'a)",
  "(?|a|b)",
  "(?>a)",
  "(?=a)",
  "(*ACCEPT)",
  // Empty alternatives and empty loops.
  "a|",
  "|a",
  "|",
  "||",
  "(|a)*",
  "(a|)*",
  "(a*)*",
  "(a*)+",
  "(a?)*",
  "(a*|b)*",
  "(()|a)+",
  "(?:(?:)*)*",
  "(?:a*)*b",
  "(?:$|a)*",
  "(?:^|a)+",
  "(?:\\b)*a",
  // Counted repetition and literal braces.
  "x{0}",
  "x{0}y",
  "(x|y){0}",
  "x{0,0}",
  "x{1}",
  "x{2,}",
  "x{2,3}",
  "x{,3}",
  "x{2,1}",
  "x{1000}",
  "x{1001}",
  "x{0,1000}",
  "x{1000,}",
  "x{01}",
  "x{1",
  "x{1,",
  "x{a}",
  "{",
  "}",
  "{1}",
  "a{",
  "a{}",
  "a{1}{2}",
  "a{1}?",
  "a{1}??",
  "a{2}*",
  "(?:a{2}){500}",
  "(?:a{2}){501}",
  "(?:a{10}){100}",
  "((a{10}){10}){10}",
  "(?:a{1000}){1}",
  "(?:a{0}){1000}",
  "(?:a{1}){1000}",
  "(?:a{2}|b){500}",
  "(?:a+){1000}",
  "[a-z]{1,1000}",
  ".{0,1000}",
  // Repetition operators in odd places.
  "a**",
  "a*?",
  "a+?",
  "a??",
  "a*??",
  "a*+",
  "a++",
  "*",
  "+a",
  "?",
  "(*)",
  "a|*",
  "(?i)*",
  "^*",
  "$+",
  "\\b+",
  "\\A*",
  "(?m)^*a",
  "(^)*",
  "(?:$)+",
  "x(?:\\b)?",
  // Unbalanced.
  "(",
  ")",
  "a)",
  "(a",
  "a)(b",
  "a)|(b",
  "[",
  "]",
  "[a",
  "[z-a]",
  "[a-a]",
  "[\\x{10FFFF}-\\x00]",
  "[]",
  "[^]",
  // Mixtures.
  "/api/v[0-9]+/(users|groups)/[^/]+",
  "(?i)/admin(/.*)?",
  "/(?i:admin)",
  "(?s)/a/.*",
  "(?m)/a$",
  "(?i)(?:get|post)",
  "\\p{Greek}+\\s\\pN*",
  "(?i)[αβγ]+",
  "😀+",
  "[😀-😂]",
  "(?i)😀",
  "a\\x{FEFF}b",
  "\\x{FFFD}",
  // Refused by RE2 2022-06-01 (the oracle here), accepted by RE2 from 2023-07 on (Envoy uses 2024-07-02).
  "(?<name>a)",
  "(?<n>a)b(?<m>c)",
  "\\p{Kawi}",
  "\\p{Nag_Mundari}",
];

/** Why we refuse a pattern RE2 accepts: each is a documented limit (README, Limits). */
const DOCUMENTED_REFUSALS: readonly { reason: string; message: RegExp }[] = [
  { reason: "(?i) over part of the pattern", message: /\(\?i\) must apply to the whole pattern/ },
  { reason: "\\b or \\B with (?i)", message: /\\b and \\B are not supported with \(\?i\)/ },
  { reason: "\\C (one byte of UTF-8)", message: /\\C .*is not supported/ },
  { reason: "repeated empty-width assertion", message: /repetition of an empty-width assertion/ },
  { reason: "program size", message: /too large \(more than \d+ instructions/ },
  { reason: "length", message: /longer than 1024 characters/ },
];

/** The hand-written patterns we refuse although RE2 accepts them, and why. */
const EXPECTED_TRICKY_REFUSALS: Record<string, string> = {
  "(?i)a(?-i)b": "(?i) over part of the pattern",
  "\\C": "\\C (one byte of UTF-8)",
  "a\\C": "\\C (one byte of UTF-8)",
  "^*": "repeated empty-width assertion",
  "$+": "repeated empty-width assertion",
  "\\b+": "repeated empty-width assertion",
  "\\A*": "repeated empty-width assertion",
  "(?m)^*a": "repeated empty-width assertion",
  "(?:a{2}|b){500}": "program size",
  "(?:a+){1000}": "program size",
};

/**
 * What the oracle's RE2 (Debian's 2022-06-01) lacks and the RE2 Envoy builds with (2024-07-02) has:
 * `(?<name>re)` (RE2 2023-08-11; asked as `(?P<name>re)` when the oracle refuses it) and the scripts of
 * Unicode 15 (RE2 2022-09-14; asked as a class that matches nothing, as no input here is in them).
 */
const NEWER_SCRIPTS: Record<string, string> = {
  "\\p{Kawi}": "[^\\x00-\\x{10FFFF}]",
  "\\p{Nag_Mundari}": "[^\\x00-\\x{10FFFF}]",
};

async function askRe2(oracle: Re2Oracle, pattern: string, inputs: readonly string[]): Promise<Re2Answer> {
  const answer = await oracle.ask(NEWER_SCRIPTS[pattern] ?? pattern, inputs);
  if (answer.ok || !answer.error?.includes("(?<")) return answer;
  return oracle.ask(pattern.replace(/(?<!\\)\(\?<(?![=!])/g, "(?P<"), inputs);
}

/** Characters inputs are made of: case variants and folding orbits, word and line characters. */
const INPUT_CHARS = [
  ..."abkKsSxyzAB019_-./ ",
  "\n",
  "\r",
  "\t",
  "\u212a", // K Kelvin sign
  "\u017f", // ſ long s
  "ß",
  "ẞ",
  "é",
  "É",
  "σ",
  "Σ",
  "ς",
  "α",
  "ǅ",
  "ǆ",
  "İ",
  "ı",
  "٣", // Arabic-Indic digit three
  "\u00a0",
  "\u2028",
  "\u0378", // unassigned
  "\ue000", // private use
  "😀",
  "😁",
];

/** Deterministic pseudo-random numbers (fixed seed; mulberry32, exact in 32-bit integer arithmetic). */
function random(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return Math.floor((((z ^ (z >>> 14)) >>> 0) / 4294967296) * n);
  };
}

/** Inputs for one pattern: the empty string, each character, and random strings of them. */
function inputsFor(pattern: string, rand: (n: number) => number, count: number): string[] {
  const chars = [...new Set([...[...pattern].filter((c) => wellFormed(c)), ...INPUT_CHARS])];
  const inputs = new Set<string>(["", ...chars]);
  // Literal parts of the pattern, repeated, so that long literals and counted repeats can match.
  for (const word of pattern.split(/[^A-Za-z0-9/\u00c0-\uffff]+/)) {
    if (word.length > 1 && wellFormed(word)) {
      inputs.add(word);
      inputs.add(word.repeat(2));
    }
  }
  for (let n = 0; n < count; n++) {
    let s = "";
    const len = 1 + rand(8);
    for (let k = 0; k < len; k++) s += chars[rand(chars.length)];
    inputs.add(s);
  }
  return [...inputs];
}

const ATOMS = [
  "a",
  "b",
  "A",
  "k",
  "K",
  "\\x{212A}",
  "s",
  "ſ",
  "ß",
  "é",
  "É",
  "σ",
  "Σ",
  "1",
  "_",
  "-",
  "\\n",
  ".",
  "\\.",
  "[a-c]",
  "[^a]",
  "[ak]",
  "[A-Z]",
  "[k-s]",
  "[^k]",
  "[[:alpha:]]",
  "[[:^alpha:]]",
  "[[:upper:]]",
  "[[:word:]]",
  "\\w",
  "\\W",
  "\\d",
  "\\s",
  "\\S",
  "\\pL",
  "\\p{Lu}",
  "\\p{Ll}",
  "\\PL",
  "\\p{Greek}",
  "[^\\pL]",
  "[^\\x00-\\x{10FFFF}]",
  "[^K]",
  "[^\\x{212A}]",
  "[K-k]",
  "[^[:lower:]]",
  "[^\\w]",
  "[\\W\\d]",
  "[^\\p{Greek}a]",
  "\\P{Lu}",
  "[ſ]",
  "[^ß]",
  "[ς]",
  "\\Qa.\\E",
  "\\x41",
  "\\101",
  "😀",
];
const ASSERTIONS = ["\\b", "\\B", "^", "$", "\\A", "\\z"];
const QUANTIFIERS = [
  "",
  "",
  "",
  "",
  "?",
  "*",
  "+",
  "??",
  "*?",
  "+?",
  "{0}",
  "{1}",
  "{2}",
  "{2,}",
  "{0,2}",
  "{1,3}",
];
const FLAGS = ["", "", "", "", "(?i)", "(?m)", "(?s)", "(?U)", "(?ms)", "(?is)", "(?im)"];

/** A random pattern from a small grammar: sequences of atoms, groups and alternations, flags. */
function randomPattern(rand: (n: number) => number, depth = 0): string {
  const items: string[] = [];
  const length = 1 + rand(4);
  for (let k = 0; k < length; k++) {
    const pick = rand(20);
    if (pick < 3) {
      items.push(ASSERTIONS[rand(ASSERTIONS.length)] as string);
      continue;
    }
    let atom: string;
    if (pick < 6 && depth < 2) {
      const open = ["(", "(?:", "(?:", "(?i:", "(?s:", "(?m:", "(?P<g>"][rand(7)] as string;
      let body = randomPattern(rand, depth + 1);
      if (rand(2) === 0) body += `|${rand(3) === 0 ? "" : randomPattern(rand, depth + 1)}`;
      atom = `${open === "(?P<g>" ? `(?P<g${depth}${k}>` : open}${body})`;
    } else {
      atom = ATOMS[rand(ATOMS.length)] as string;
    }
    items.push(atom + (QUANTIFIERS[rand(QUANTIFIERS.length)] as string));
  }
  let p = items.join("");
  if (depth === 0) {
    if (rand(4) === 0) p += `|${randomPattern(rand, 1)}`;
    p = (FLAGS[rand(FLAGS.length)] as string) + p;
  }
  return p;
}

type Ours =
  | { ok: true; test: (s: string) => boolean; linear: (s: string) => boolean }
  | { ok: false; message: string };

function compileOurs(pattern: string): Ours {
  try {
    const re = compileSafeRegex(pattern, "f");
    const { linear } = compileRe2(pattern, "f");
    return { ok: true, test: (s) => re.test(s), linear: (s) => linear.test(s) };
  } catch (e) {
    if (e instanceof RouterError && e.code === "ERR_REGEX_INVALID") return { ok: false, message: e.message };
    throw e;
  }
}

function documentedReason(message: string): string | undefined {
  return DOCUMENTED_REFUSALS.find((d) => d.message.test(message))?.reason;
}

interface Comparison {
  /** Discrepancies: "pattern on input: RE2 x, ours y", or "pattern: RE2 refuses (...), we accept". */
  discrepancies: string[];
  /** Patterns we refuse and RE2 accepts, with our reason (undefined: not a documented one). */
  refusals: Map<string, string | undefined>;
  checkedInputs: number;
  /** Inputs RE2 matched (a comparison where nothing matches proves little). */
  matchedInputs: number;
  bothAccept: number;
  bothRefuse: number;
}

async function compare(
  oracle: Re2Oracle,
  patterns: readonly string[],
  rand: (n: number) => number,
  inputsPerPattern: number,
): Promise<Comparison> {
  const result: Comparison = {
    discrepancies: [],
    refusals: new Map(),
    checkedInputs: 0,
    matchedInputs: 0,
    bothAccept: 0,
    bothRefuse: 0,
  };
  const jobs = patterns.map((pattern) => {
    const inputs = inputsFor(pattern, rand, inputsPerPattern);
    const answer = askRe2(oracle, pattern, inputs);
    // Awaited in order below; an oracle that fails rejects them all, and the first one reports it.
    answer.catch(() => {});
    return { pattern, inputs, answer };
  });
  for (const { pattern, inputs, answer } of jobs) {
    const re2 = await answer;
    const ours = compileOurs(pattern);
    if (!re2.ok) {
      if (ours.ok)
        result.discrepancies.push(`${JSON.stringify(pattern)}: RE2 refuses (${re2.error}), we accept`);
      else result.bothRefuse++;
      continue;
    }
    if (!ours.ok) {
      result.refusals.set(pattern, documentedReason(ours.message));
      continue;
    }
    result.bothAccept++;
    const matches = re2.matches as boolean[];
    inputs.forEach((input, k) => {
      const expected = matches[k];
      const got = ours.test(input);
      const linear = ours.linear(input);
      result.checkedInputs++;
      if (expected === true) result.matchedInputs++;
      if (got !== expected || linear !== expected) {
        result.discrepancies.push(
          `${JSON.stringify(pattern)} on ${JSON.stringify(input)}: RE2 ${expected}, ours ${got} (linear matcher ${linear})`,
        );
      }
    });
  }
  return result;
}

function report(c: Comparison): string {
  const shown = c.discrepancies.slice(0, 40).join("\n  ");
  const more = c.discrepancies.length > 40 ? `\n  ... and ${c.discrepancies.length - 40} more` : "";
  return `${c.discrepancies.length} discrepancies with RE2:\n  ${shown}${more}`;
}

describe("route regexes against real RE2 (re::engine::RE2, the system libre2)", () => {
  let oracle: Re2Oracle;
  before(() => {
    oracle = new Re2Oracle();
  });
  after(() => oracle.close());

  it("the oracle is RE2::FullMatch on code points", async () => {
    const cases: [string, string, boolean][] = [
      ["(?m)a$", "a\n", false],
      ["(?m)a$", "a", true],
      ["(?m)^b", "a\nb", false],
      ["(?m)a\\n^b", "a\nb", true],
      ["a|ab", "ab", true],
      ["(?U)a+", "aaa", true],
      ["a*?", "aaa", true],
      [".", "é", true],
      [".", "😀", true],
      ["..", "é", false],
      ["\\x{1F600}", "😀", true],
      ["(?i)k", "\u212a", true],
      ["\\Qa.", "a.", true],
      ["\\Qa\\", "a\\", true],
      ["a", "ba", false],
      ["a", "ab", false],
    ];
    for (const [pattern, input, expected] of cases) {
      const answer = await oracle.ask(pattern, [input]);
      assert.equal(answer.ok, true, `${pattern}: ${answer.error}`);
      assert.equal(answer.matches?.[0], expected, `${pattern} on ${JSON.stringify(input)}`);
    }
    for (const refused of ["a)|(b", "a)(b", "(", "a**", "\\Z", "(?=a)", "\\1", "a\\"]) {
      assert.equal((await oracle.ask(refused, [])).ok, false, refused);
    }
  });

  it("every pattern of the regex tests and the hand-written corpus: refused or matched as RE2 does", async (t) => {
    const corpus = [...new Set([...literalsOfRegexTests(), ...TRICKY])];
    const c = await compare(oracle, corpus, random(11), 40);
    t.diagnostic(
      `${corpus.length} patterns: ${c.bothAccept} accepted by both (${c.checkedInputs} inputs, ` +
        `${c.matchedInputs} matched), ${c.bothRefuse} refused by both, ${c.refusals.size} refused by us only`,
    );
    assert.deepEqual(c.discrepancies, [], report(c));
    const undocumented = [...c.refusals].filter(([, why]) => why === undefined).map(([p]) => p);
    assert.deepEqual(undocumented, [], "refused by us, accepted by RE2, for no documented reason");
    const tricky = new Set(TRICKY);
    const trickyRefusals = Object.fromEntries([...c.refusals].filter(([p]) => tricky.has(p)));
    assert.deepEqual(trickyRefusals, EXPECTED_TRICKY_REFUSALS);
    assert.ok(c.checkedInputs > 50_000 && c.matchedInputs > 2_000, `${c.checkedInputs} ${c.matchedInputs}`);
  });

  it("random patterns over case variants, Unicode classes, assertions and nesting", async (t) => {
    const rand = random(2026);
    const patterns = new Set<string>();
    while (patterns.size < 1500) patterns.add(randomPattern(rand));
    const c = await compare(oracle, [...patterns], rand, 30);
    const byReason = new Map<string, number>();
    for (const why of c.refusals.values()) {
      const key = why ?? "(undocumented)";
      byReason.set(key, (byReason.get(key) ?? 0) + 1);
    }
    t.diagnostic(
      `${patterns.size} patterns: ${c.bothAccept} accepted by both (${c.checkedInputs} inputs, ` +
        `${c.matchedInputs} matched), ` +
        `${c.bothRefuse} refused by both, refused by us only: ${JSON.stringify(Object.fromEntries(byReason))}`,
    );
    assert.deepEqual(c.discrepancies, [], report(c));
    const undocumented = [...c.refusals].filter(([, why]) => why === undefined).map(([p]) => p);
    assert.deepEqual(undocumented, [], "refused by us, accepted by RE2, for no documented reason");
    // Most patterns must be compared, not refused.
    assert.ok(c.bothAccept > 1000 && c.matchedInputs > 5_000, `${c.bothAccept} ${c.matchedInputs}`);
  });
});
