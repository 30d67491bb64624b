import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RouterError } from "./errors.js";
import { compileSafeRegex, translateRe2 } from "./safe-regex.js";

/** Asserts that `pattern` compiles and fully matches every `yes` and none of the `no` inputs. */
function matches(pattern: string, yes: readonly string[], no: readonly string[] = []): void {
  const re = compileSafeRegex(pattern, "f");
  for (const s of yes) assert.equal(re.test(s), true, `${pattern} should match ${JSON.stringify(s)}`);
  for (const s of no) assert.equal(re.test(s), false, `${pattern} should not match ${JSON.stringify(s)}`);
}

function refused(pattern: string): void {
  assert.throws(
    () => compileSafeRegex(pattern, "spec.x"),
    (e: unknown) => {
      assert.ok(e instanceof RouterError, `${pattern}: ${String(e)}`);
      assert.equal(e.code, "ERR_REGEX_INVALID", `${pattern}: ${e.message}`);
      assert.equal(e.details.field, "spec.x", pattern);
      assert.ok(e.message.startsWith("spec.x: "), e.message);
      return true;
    },
    `${pattern} should be refused`,
  );
}

describe("compileSafeRegex: RE2 syntax means what RE2 (Envoy's safe_regex) means", () => {
  it("translates POSIX classes inside brackets to their ASCII ranges", () => {
    matches("[[:digit:]]+", ["123"], ["[:dig]", "abc", "", "١٢"]);
    matches("[[:alpha:][:digit:]_-]+", ["ab_1-Z"], ["a b", "é"]);
    matches("[[:^alpha:]]+", ["12-/"], ["a1", "Z"]);
    matches("[^[:space:]]+", ["a-b"], ["a b", "a\tb"]);
    matches("[[:xdigit:]]{2}", ["fA", "09"], ["fg"]);
    matches("[[:punct:]]", ["!", "/", "[", "`", "~"], ["a", "1", " "]);
    // Outside brackets `[:alpha:]` is an ordinary class of the characters `:alph`.
    matches("[:alpha:]", [":", "a", "p"], ["b"]);
    refused("[[:digits:]]");
    refused("[[:Alpha:]]");
  });

  it("translates Unicode classes \\pL, \\p{Name}, \\PN and \\p{^Name}", () => {
    matches("/\\p{L}+", ["/abc", "/été", "/αβγ"], ["/p{L}", "/123", "/"]);
    matches("\\pL\\pN", ["x1", "é٣"], ["pLpN", "11"]);
    matches("\\PL+", ["12-"], ["a", "1a"]);
    matches("\\p{Greek}+", ["αβγ"], ["abc", "p{Greek}"]);
    matches("\\p{^Greek}+", ["abc"], ["α"]);
    matches("\\P{^Greek}", ["α"], ["a"]);
    matches("[\\p{Lu}0-9]+", ["AB12"], ["ab"]);
    matches("\\p{Any}", ["a", "\n", "😀"], ["", "ab"]);
    // RE2's \p{C} is Cc|Cf|Co|Cs: unassigned code points are not in it (JavaScript's \p{C} has them).
    matches("\\p{C}", ["\u0001", "\u200b"], ["\u0378", "a"]);
    for (const bad of [
      "\\p{Grek}",
      "\\p{Letter}",
      "\\p{Foo}",
      "\\p{Script=Greek}",
      "\\p{ASCII}",
      "\\p{Unknown}",
    ]) {
      refused(bad);
    }
    refused("\\p");
    refused("\\p{L");
  });

  it("translates \\Q...\\E to an escaped literal", () => {
    matches("\\Qa.b\\E", ["a.b"], ["QaxbE", "axb", "a.bE"]);
    matches("\\Qa.b", ["a.b"], ["axb"]);
    matches("x\\Q*(\\E+", ["x*(", "x*(("], ["x*", "x*(*("]);
    matches("a\\Q\\Eb", ["ab"]);
    matches("\\Q[[:digit:]]\\E", ["[[:digit:]]"], ["1"]);
    refused("a\\E");
  });

  it("translates \\A and \\z, refuses \\Z", () => {
    matches("\\Aabc\\z", ["abc"], ["abcc"]);
    matches("(?:\\Aa|b)c", ["ac", "bc"]);
    matches("a\\zb?", ["a"], ["ab"]);
    refused("a\\Z");
  });

  it("applies (?i) when it covers every case-sensitive part of the pattern", () => {
    matches("(?i)/admin.*", ["/ADMIN", "/Admin/x", "/admin"], ["/adm"]);
    matches("/(?i)admin", ["/ADMIN"]);
    matches("/1/(?i:users)", ["/1/USERS", "/1/users"]);
    matches("(?i)[a-c]+", ["AbC"], ["d"]);
    matches("(?i)\\b1\\b", ["1"]);
    // RE2 folds K and ſ to k and s, as JavaScript's unicode case folding does.
    matches("(?i)k", ["k", "K", "\u212a"], ["x"]);
    matches("(?i)[^k]", ["x"], ["k", "K", "\u212a"]);
    matches("(?i)[[:^alpha:]]", ["1"], ["s", "\u017f", "k", "\u212a"]);
    matches("(?i)\\P{Lu}", ["1"], ["A", "a"]);
    // Case-insensitive for only part of the pattern, or turned off again: not expressible, refused.
    refused("a(?i)b");
    refused("(?i)a(?-i)b");
    refused("A(?i:b)");
    refused("/api/(?i:users)");
    // JavaScript's \b counts K and ſ as word characters under i, RE2's \b never does.
    refused("(?i)\\bx");
  });

  it("translates (?s), (?m) and (?U)", () => {
    matches(".", ["a", "\r", "\u2028", "😀"], ["\n", "", "ab"]);
    matches("(?s).", ["\n", "\r"]);
    matches("a(?s:.)b.", ["a\nbx"], ["a\nb\n"]);
    matches("(?m)a$\\n^b", ["a\nb"]);
    matches("a$\\n^b", [], ["a\nb"]);
    // The match is always of the whole value, whatever (?m) does to ^ and $.
    matches("(?m)a", ["a"], ["a\nb", "b\na"]);
    matches("(?m)^a$", ["a"], ["a\n", "\na"]);
    matches("(?U)a+b*", ["aaab", "a"]);
    matches("(?sm-i:.)", ["\n"]);
    refused("(?x)a");
    refused("(?-)a");
    refused("(?i-)a");
    refused("(?i--s)a");
  });

  it("accepts named groups (?P<name>re) and (?<name>re)", () => {
    matches("(?P<id>[0-9]+)/(?<rest>.*)", ["42/x", "1/"], ["x/1"]);
    refused("(?P<a-b>x)");
    refused("(?P<>x)");
    refused("(?P<id>x)(?P=id)");
    refused("(?P<id");
  });

  it("reads escapes as RE2 does", () => {
    matches("\\x41\\x{1F600}", ["A😀"]);
    matches("\\101\\0\\12", ["A\u0000\n"]);
    matches("\\a\\f\\t\\n\\r\\v", ["\u0007\f\t\n\r\v"]);
    matches('\\_\\-\\,\\:\\ \\"\\<', ['_-,: "<']);
    matches("[\\-\\]\\[]+", ["-][-"], ["a"]);
    // RE2's \s is [\t\n\f\r ]: no \v, no Unicode spaces.
    matches("\\s", [" ", "\t", "\n", "\f", "\r"], ["\v", "\u00a0", "\u2003"]);
    matches("\\S", ["\v", "\u00a0", "a"], [" "]);
    matches("[\\s]", [" "], ["\v"]);
    matches("[^\\S]", [" "], ["\v"]);
    matches("\\w\\d", ["_1"], ["é1", "a٣"]);
    for (const bad of [
      "\\1",
      "(a)\\1",
      "\\8",
      "\\k<a>",
      "\\q",
      "\\é",
      "a\\",
      "\\x4",
      "\\x{}",
      "\\x{110000}",
      "\\C",
      "\\cA",
      "\\u0041",
      "[\\b]",
      "[a-\\d]",
      "\\N",
    ]) {
      refused(bad);
    }
  });

  it("reads brackets and braces as RE2 does", () => {
    matches("[]a]+", ["]a"], ["b"]);
    matches("[^]a]", ["b"], ["]", "a"]);
    matches("[a-]", ["a", "-"], ["b"]);
    matches("[\\d-z]", ["5", "-", "z"], ["y"]);
    matches("[[a]", ["[", "a"]);
    matches("a{,3}", ["a{,3}"], ["aa"]);
    matches("a{x}}", ["a{x}}"]);
    matches("a{01}", ["a{01}"], ["a"]);
    matches("a{2}", ["aa"], ["a"]);
    matches("a{2,}b", ["aab", "aaaab"], ["ab"]);
    matches("]}", ["]}"]);
    matches("a|", ["a", ""]);
    matches("()", [""]);
    for (const bad of [
      "[]",
      "[a",
      "[z-a]",
      "a{2,1}",
      "a{1001}",
      "a**",
      "a*+",
      "a{2}{3}",
      "a*??",
      "*a",
      "a|*",
      "(*)",
      "(?i)*",
      "^*",
      "\\b+",
      "(?m)$?",
      "(",
      ")",
      "a)",
    ]) {
      refused(bad);
    }
  });

  // The next four were found by comparing with RE2 itself (test/re2-interop.test.ts).
  it("accepts (?), which sets no flag, as RE2 does", () => {
    matches("(?)a", ["a"], ["", "A"]);
    matches("a(?)b(?)", ["ab"]);
    refused("(?-)a");
    refused("(?i-)a");
  });

  it("accepts group names as RE2 does: repeated, and in any script", () => {
    // Letters, marks, decimal and letter numbers, connector punctuation.
    matches("(?P<id>x)(?P<id>y)", ["xy"], ["x"]);
    matches("(?P<é>x)(?P<a‿b>y)(?P<ǅ٣>z)", ["xyz"]);
    refused("(?P<a·b>x)");
    refused("(?P<a b>x)");
  });

  it("applies a repetition after a flag setting or an empty \\Q\\E to the item before, as RE2 does", () => {
    matches("a(?i)*", ["", "aaa"], ["A", "b"]);
    matches("a\\Q\\E*", ["", "aa"], ["a*"]);
    matches("a\\Q\\E{2}b", ["aab"], ["ab"]);
    matches("a*(?s)*", ["", "aa"], ["b"]);
    matches("ab(?U)+", ["abb"], ["abab"]);
    matches("\\Qab\\E(?m)?", ["a", "ab"], ["b"]);
    matches("(?:ab)(?i){2}", ["abab"], ["ab", "ABAB"]);
    // A group around an assertion can be repeated; a bare assertion cannot (documented refusal).
    matches("(\\b)+a(?:$)*", ["a"]);
    refused("a\\b(?i)*");
    refused("(?i)*");
    refused("\\Q\\E*");
    refused("a(?i)**");
    refused("a*(?i)*+");
    refused("(?:a{2}){500}(?i){2}");
  });

  it("refuses \\C, one byte of UTF-8 in RE2, and says why", () => {
    assert.throws(() => compileSafeRegex("a\\C", "f"), /\\C \(any byte\) is not supported/);
  });

  it("refuses look-around and back-references", () => {
    for (const bad of [
      "(?=a)b",
      "(?!a)b",
      "(?<=a)b",
      "(?<!a)b",
      "(a)\\1",
      "(?<n>a)\\k<n>",
      "(?>a)",
      "(?#c)a",
      "(?|a)",
    ]) {
      refused(bad);
    }
  });

  it("accepts nested quantifiers, as RE2 does (they are matched in linear time)", () => {
    matches("(ab+)+", ["ab", "abbab"], ["", "a", "abba"]);
    matches("/(ab+)+", ["/abab"], ["/"]);
    matches("(a+)+$", ["a", "aaaa"], ["", "aab"]);
    matches("(a*)*b", ["b", "aab"], ["aa"]);
    matches("((ab)+)+", ["abab"], ["aba"]);
    matches("(a|b+){2,}", ["ab", "bbb", "abba"], ["a", "c"]);
    matches("(a+){10}", ["a".repeat(10), "a".repeat(30)], ["a".repeat(9)]);
    matches("(a+){2}", ["aa", "aaa"], ["a"]);
    matches("(?:a{20}){20}", ["a".repeat(400)], ["a".repeat(401)]);
    // RE2 refuses nested counted repetitions that make more than 1000 copies.
    refused("(?:a{20}){51}");
    refused("(?:a{2}){501}");
    matches("(?:a{2}){500}", ["a".repeat(1000)]);
    matches("(a+)?b", ["aab", "b"]);
    matches("(ab){3}c+", ["abababcc"]);
    matches("(a{2}){3}", ["aaaaaa"]);
  });

  it("refuses a pattern that is not valid UTF-16 (RE2 refuses invalid UTF-8)", () => {
    refused("a\ud800b");
  });

  it("does not change plain patterns (property)", () => {
    const plain = [
      "/api/v[0-9]+/(users|groups)/[^/]+",
      "/foo",
      "/foo/bar-baz_1",
      "v1|v2",
      "(a|b)c?d*",
      "[a-z0-9]{1,16}",
      "/x/[a-z]+/z+",
      "[^/]*",
      "abc\\.def",
      "(?:ab)+",
    ];
    for (const p of plain) {
      assert.deepEqual(translateRe2(p, "f"), { source: p.replace("[^/]", "[^\\/]"), flags: "v" }, p);
    }
    // Random patterns from a plain grammar: identity, and the same answers as a plain JavaScript regex.
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const pick = (list: readonly string[] | string): string => list[rand(list.length)] as string;
    const atoms = ["a", "b", "1", "/", "-", "_", "[a-c]", "[0-9]", "[ab/]", "\\.", "(a|bc)", "(?:b1|/)", "x"];
    const quants = ["", "", "", "?", "*", "+", "{2}", "{1,3}"];
    const letters = "ab1/-_cx.";
    for (let n = 0; n < 400; n++) {
      let p = "";
      const len = 1 + rand(5);
      for (let k = 0; k < len; k++) p += pick(atoms) + pick(quants);
      if (rand(4) === 0) p += `|${pick(atoms)}`;
      const re = compileSafeRegex(p, "f");
      assert.equal(translateRe2(p, "f").source, p.replace(/\[ab\/\]/g, "[ab\\/]"), p);
      const js = new RegExp(`^(?:${p})$`);
      for (let m = 0; m < 20; m++) {
        let s = "";
        const sl = rand(7);
        for (let k = 0; k < sl; k++) s += pick(letters);
        assert.equal(re.test(s), js.test(s), `${p} on ${JSON.stringify(s)}`);
      }
    }
  });
});
