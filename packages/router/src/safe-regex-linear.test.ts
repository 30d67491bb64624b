import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RouterError } from "./errors.js";
import { compileRe2, compileSafeRegex, MAX_PROGRAM_SIZE } from "./safe-regex.js";

/** Steps the linear matcher takes on `input`, and its answer. */
function run(pattern: string, input: string): { matched: boolean; steps: number; size: number } {
  const { linear } = compileRe2(pattern, "f");
  const matched = linear.test(input);
  return { matched, steps: linear.steps, size: linear.programSize };
}

function refused(pattern: string, why: RegExp): void {
  assert.throws(
    () => compileSafeRegex(pattern, "spec.x"),
    (e: unknown) => {
      assert.ok(e instanceof RouterError, `${pattern}: ${String(e)}`);
      assert.equal(e.code, "ERR_REGEX_INVALID");
      assert.match(e.message, why);
      return true;
    },
    `${pattern} should be refused`,
  );
}

/** Deterministic pseudo-random numbers (fixed seed). */
function random(seed: number): (n: number) => number {
  let state = seed;
  return (n) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return Math.floor((state / 2147483648) * n);
  };
}

describe("route regexes match in time linear in the input", () => {
  it("(a|a)* and a*a*a*a* take steps proportional to the input, with RE2's answer", () => {
    for (const [pattern, unit] of [
      ["(a|a)*", "a"],
      ["a*a*a*a*", "a"],
      ["(a+)+", "a"],
      ["(a*)*b", "a"],
      ["(x+x+)+y", "x"],
      ["(.*a){12}", "a"],
      ["(?:a|b|ab)*c", "ab"],
    ] as const) {
      const short = run(pattern, `${unit.repeat(1000)}!`);
      const long = run(pattern, `${unit.repeat(4000)}!`);
      assert.equal(short.matched, false, pattern);
      assert.equal(long.matched, false, pattern);
      // At most a few steps per instruction per input character, and four times the input costs
      // (about) four times the steps.
      assert.ok(short.steps <= 2 * short.size * (1000 * unit.length + 2), `${pattern}: ${short.steps}`);
      assert.ok(long.steps <= 4.1 * short.steps, `${pattern}: ${short.steps} -> ${long.steps}`);
    }
    assert.equal(run("(a|a)*", "a".repeat(5000)).matched, true);
    assert.equal(run("a*a*a*a*", "a".repeat(5000)).matched, true);
  });

  it("compileSafeRegex answers adversarial inputs that used to stall a backtracking regex", () => {
    // 40 characters: hours for a backtracking regex on the first pattern, minutes on the second.
    assert.equal(compileSafeRegex("(a|a)*", "f").test(`${"a".repeat(40)}b`), false);
    assert.equal(compileSafeRegex("a*a*a*a*", "f").test(`${"a".repeat(3000)}b`), false);
    assert.equal(compileSafeRegex("(a+)+$", "f").test(`${"a".repeat(3000)}b`), false);
    assert.equal(compileSafeRegex("(?:(?:a?){16}){16}a{256}", "f").test("a".repeat(256)), true);
    assert.equal(compileSafeRegex("(?:(?:a|a){16}){16}c", "f").test(`${"a".repeat(256)}b`), false);
  });

  it("uses the JavaScript regex only when backtracking is linear", () => {
    const fast = (p: string): boolean => compileRe2(p, "f").backtrackingIsLinear;
    for (const p of ["/foo", "/api/.*", "[a-z]{1,16}", "(?:ab){3}c+d", "(?i)/admin/[0-9]+", "a{1000}b*"]) {
      assert.equal(fast(p), true, p);
    }
    for (const p of [
      "(a|a)*",
      "a|b",
      "a*a*",
      "/api/v[0-9]+/users/.*",
      "(a+)+",
      "(?:a*){2}",
      "(?:a?){16}",
      "(?:a|a){16}",
    ]) {
      assert.equal(fast(p), false, p);
    }
  });

  it("accepts nested repetition (RE2 does) but refuses what RE2 or the program size limit refuses", () => {
    const ok = compileSafeRegex("(ab+)+", "f");
    assert.equal(ok.test("abbab"), true);
    assert.equal(ok.test("abba"), false);
    assert.equal(compileSafeRegex("(?:a{20}){20}", "f").test("a".repeat(400)), true);
    assert.equal(compileSafeRegex("(?:a{20}){20}", "f").test("a".repeat(399)), false);
    assert.equal(compileSafeRegex("(a|b+){2,}", "f").test("abbb"), true);
    // RE2: at most 1000 copies of the innermost part through nested counted repetition.
    refused("(?:a{2}){600}", /bad repetition operator/);
    refused("(?:(?:a{16}){16}){16}", /bad repetition operator/);
    refused("((a{10}){10}){11}", /bad repetition operator/);
    // Expanded program size.
    refused("[a-z]{1,1000}[0-9]{1,300}", /too large/);
    refused(".{0,1000}.{0,1000}", /too large/);
    const big = compileSafeRegex(".{0,1000}[0-9]{1,200}", "f");
    assert.equal(big.test(`${"x".repeat(1000)}${"1".repeat(200)}`), true);
    assert.equal(big.test(`${"x".repeat(1001)}1`), false);
    assert.ok(compileRe2(".{0,1000}[0-9]{1,200}", "f").linear.programSize <= MAX_PROGRAM_SIZE);
  });

  it("RouteRegex: source is the pattern as written", () => {
    assert.equal(compileSafeRegex("/a|/b", "f").source, "/a|/b");
    assert.equal(compileSafeRegex("/a", "f").source, "/a");
  });

  it("agrees with the JavaScript translation past the cached-state limit and on non-ASCII input", () => {
    const rand = random(7);
    // The tenth character from the end is an a: 2^10 sets of threads, more than are cached.
    for (const pattern of ["(?:a|b)*a(?:a|b){9}", "(?:a|b)*a[ab]{9}\\b", "(?:é|b)*é(?:é|b){9}"]) {
      const { js, linear } = compileRe2(pattern, "f");
      const letters = pattern.includes("é") ? "éb" : "ab";
      for (let n = 0; n < 3000; n++) {
        let s = "";
        const len = rand(30);
        for (let k = 0; k < len; k++) s += letters[rand(2)];
        assert.equal(linear.test(s), js.test(s), `${pattern} on ${JSON.stringify(s)}`);
      }
    }
  });

  it("agrees with the JavaScript translation on every accepted pattern (differential)", () => {
    const corpus = [
      // From the dialect tests.
      "[[:digit:]]+",
      "[[:alpha:][:digit:]_-]+",
      "[[:^alpha:]]+",
      "[^[:space:]]+",
      "[[:xdigit:]]{2}",
      "[[:punct:]]",
      "[:alpha:]",
      "/\\p{L}+",
      "\\pL\\pN",
      "\\PL+",
      "\\p{Greek}+",
      "\\p{^Greek}+",
      "\\P{^Greek}",
      "[\\p{Lu}0-9]+",
      "\\p{Any}",
      "\\p{C}",
      "\\Qa.b\\E",
      "\\Qa.b",
      "x\\Q*(\\E+",
      "a\\Q\\Eb",
      "\\Q[[:digit:]]\\E",
      "\\Aabc\\z",
      "(?:\\Aa|b)c",
      "a\\zb?",
      "(?i)/admin.*",
      "/(?i)admin",
      "/1/(?i:users)",
      "(?i)[a-c]+",
      "(?i)\\b1\\b",
      "(?i)k",
      "(?i)[^k]",
      "(?i)[[:^alpha:]]",
      "(?i)\\P{Lu}",
      "(?i)é+ß",
      ".",
      "(?s).",
      "a(?s:.)b.",
      "(?m)a$\\n^b",
      "a$\\n^b",
      "(?m)a",
      "(?m)^a$",
      "(?m)(?:^|a)+\\n*$",
      "(?U)a+b*",
      "(?sm-i:.)",
      "(?P<id>[0-9]+)/(?<rest>.*)",
      "\\x41\\x{1F600}",
      "\\101\\0\\12",
      "\\a\\f\\t\\n\\r\\v",
      '\\_\\-\\,\\:\\ \\"\\<',
      "[\\-\\]\\[]+",
      "\\s",
      "\\S",
      "[\\s]",
      "[^\\S]",
      "\\w\\d",
      "[]a]+",
      "[^]a]",
      "[a-]",
      "[\\d-z]",
      "[[a]",
      "a{,3}",
      "a{x}}",
      "a{01}",
      "a{2}",
      "a{2,}b",
      "]}",
      "a|",
      "()",
      "(a+)?b",
      "(ab){3}c+",
      "(a{2}){3}",
      "/api/v[0-9]+/(users|groups)/[^/]+",
      "(a|b)c?d*",
      "[a-z0-9]{1,16}",
      "[^/]*",
      "(?:ab)+",
      // Word boundaries, empty loops, nesting (now accepted).
      "\\ba\\b.*\\B",
      "(?:\\b|a)+",
      "(a|)*b",
      "(()|a)*",
      "(ab+)+",
      "(a+)+$",
      "(a*)*b",
      "((ab)+)+",
      "(a|b+){2,}",
      "(a+){2,4}",
      "(?:a{2}){1,3}",
      "(a|ab)(c|bcd)(d*)",
      "x*y*x*",
      "😀+.",
    ];
    const rand = random(42);
    let checked = 0;
    for (const pattern of corpus) {
      const { js, linear } = compileRe2(pattern, "f");
      // Characters of the pattern, plus some that classes and folding care about.
      const alphabet = [
        ...new Set([...pattern, "a", "\n", "\r", "é", "K", "\u212a", "ſ", "α", "1", " ", "😀"]),
      ];
      const inputs = ["", ...alphabet];
      for (let n = 0; n < 300; n++) {
        let s = "";
        const len = rand(9);
        for (let k = 0; k < len; k++) s += alphabet[rand(alphabet.length)];
        inputs.push(s);
      }
      for (const s of inputs) {
        assert.equal(linear.test(s), js.test(s), `${pattern} on ${JSON.stringify(s)}`);
        checked++;
      }
    }
    // Random patterns from a small grammar, nesting included.
    const atoms = ["a", "b", "/", ".", "[ab]", "[^a]", "\\b", "^", "$", "(?:a|b)", "(a|ab)", "(?:b*)", "()"];
    const quants = ["", "", "?", "*", "+", "{2}", "{0,2}", "{1,}"];
    for (let n = 0; n < 500; n++) {
      let p = "";
      const len = 1 + rand(5);
      for (let k = 0; k < len; k++) {
        const atom = atoms[rand(atoms.length)] as string;
        const quantifiable = atom !== "\\b" && atom !== "^" && atom !== "$";
        p += atom + (quantifiable ? (quants[rand(quants.length)] as string) : "");
      }
      if (rand(3) === 0) p = `(?:${p})${quants[1 + rand(quants.length - 1)]}`;
      if (rand(4) === 0) p += `|${atoms[rand(atoms.length)]}`;
      if (rand(5) === 0) p = `(?m)${p}`;
      const { js, linear } = compileRe2(p, "f");
      for (let m = 0; m < 30; m++) {
        let s = "";
        const len = rand(7);
        for (let k = 0; k < len; k++) s += "ab/\nc"[rand(5)];
        assert.equal(linear.test(s), js.test(s), `${p} on ${JSON.stringify(s)}`);
        checked++;
      }
    }
    assert.ok(checked > 40000);
  });
});
