import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type AuthorizationRequest, createAuthorizationEngine } from "./authorization-engine.js";
import { PolicyError } from "./errors.js";
import {
  normalizePath,
  normalizeRequestPath,
  PATH_NORMALIZATIONS,
  type PathNormalization,
} from "./path-match.js";

const [NONE, BASE, MERGE, DECODE] = ["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] as const;
const ENCODING_MODES = [BASE, MERGE, DECODE] as const;

function ok(raw: string, mode: PathNormalization): string {
  const r = normalizePath(raw, mode);
  assert.ok(r.ok, `${mode} ${JSON.stringify(raw)} refused: ${r.ok ? "" : r.reason}`);
  return r.path;
}

function refused(raw: string, mode: PathNormalization): string {
  const r = normalizePath(raw, mode);
  assert.equal(r.ok, false, `${mode} ${JSON.stringify(raw)} should be refused, got ${JSON.stringify(r)}`);
  return r.ok ? "" : r.reason;
}

const hex = (code: number): string => code.toString(16).padStart(2, "0");

describe("path normalization: istio.io 'Authorization Policy Normalization', path section", () => {
  // Section 1, one row per percent-encoded character: [escape, decoded, first mode that decodes it].
  const rows: [string, string, PathNormalization][] = [
    ["%2d", "-", BASE],
    ["%2e", ".", BASE],
    ["%2f", "/", DECODE],
    ["%5c", "\\", DECODE],
    ["%5f", "_", BASE],
    ["%7e", "~", BASE],
  ];
  for (let c = 0x30; c <= 0x39; c++) rows.push([`%${hex(c)}`, String.fromCharCode(c), BASE]);
  for (let c = 0x41; c <= 0x5a; c++) rows.push([`%${hex(c)}`, String.fromCharCode(c), BASE]);
  for (let c = 0x61; c <= 0x7a; c++) rows.push([`%${hex(c)}`, String.fromCharCode(c), BASE]);

  it("decodes each listed %HH (either hex case) from the mode the page names, and only there", () => {
    assert.equal(rows.length, 6 + 10 + 26 + 26);
    for (const [encoded, decoded, from] of rows) {
      for (const spelling of [encoded.toLowerCase(), encoded.toUpperCase()]) {
        const raw = `/x${spelling}y`;
        for (const mode of PATH_NORMALIZATIONS) {
          const got = ok(raw, mode);
          const decodes = PATH_NORMALIZATIONS.indexOf(mode) >= PATH_NORMALIZATIONS.indexOf(from);
          // A decoded `.` forms no dot segment here, and a decoded `\` becomes `/`.
          const expected = decodes
            ? `/x${decoded === "\\" ? "/" : decoded}y`
            : mode === NONE
              ? raw
              : `/x${spelling.toUpperCase()}y`;
          assert.equal(got, expected, `${mode} ${raw}`);
        }
      }
    }
  });

  it("refuses %00 in every mode (400)", () => {
    for (const mode of PATH_NORMALIZATIONS) {
      assert.match(refused("/a%00b", mode), /%00/);
      assert.match(refused("/%00", mode), /%00/);
    }
  });

  it("decodes only once: %25 stays encoded, so %2561 is not a", () => {
    for (const mode of ENCODING_MODES) {
      assert.equal(ok("/%2561", mode), "/%2561");
      assert.equal(ok("/%252e%252e/admin", mode), "/%252e%252e/admin");
      assert.equal(ok("/a%252fb", mode), "/a%252fb");
    }
  });

  it("page example: /some%2fdata/%61%62%63", () => {
    assert.equal(ok("/some%2fdata/%61%62%63", DECODE), "/some/data/abc");
    assert.equal(ok("/some%2fdata/%61%62%63", MERGE), "/some%2Fdata/abc");
    assert.equal(ok("/some%2fdata/%61%62%63", BASE), "/some%2Fdata/abc");
    assert.equal(ok("/some%2fdata/%61%62%63", NONE), "/some%2fdata/%61%62%63");
  });

  it("section 2, backslash: /some\\data", () => {
    for (const mode of ENCODING_MODES) assert.equal(ok("/some\\data", mode), "/some/data");
    assert.equal(ok("/some\\data", NONE), "/some\\data");
  });

  it("section 3, multiple slashes: /some//data///abc", () => {
    assert.equal(ok("/some//data///abc", BASE), "/some//data///abc");
    assert.equal(ok("/some//data///abc", MERGE), "/some/data/abc");
    assert.equal(ok("/some//data///abc", DECODE), "/some/data/abc");
    assert.equal(ok("/some%2f%2Fdata", DECODE), "/some/data");
  });

  it("section 4, single and double dots: /public/./data/abc/../xyz", () => {
    for (const mode of ENCODING_MODES)
      assert.equal(ok("/public/./data/abc/../xyz", mode), "/public/data/xyz");
    assert.equal(ok("/public/./data/abc/../xyz", NONE), "/public/./data/abc/../xyz");
    // Encoded dots are dots; `..` stops at the root; a final dot segment leaves a slash.
    for (const mode of ENCODING_MODES) {
      assert.equal(ok("/a/%2e%2E/b", mode), "/b");
      assert.equal(ok("/../../b", mode), "/b");
      assert.equal(ok("/a/b/..", mode), "/a/");
      assert.equal(ok("/a/.", mode), "/a/");
      assert.equal(ok("/..", mode), "/");
      assert.equal(ok("/a/..%2e/b", mode), "/a/.../b");
    }
  });

  it("section 5, path with query: /foo?v=1 (the query is kept aside, a fragment dropped)", () => {
    for (const mode of PATH_NORMALIZATIONS) {
      assert.deepEqual(normalizePath("/foo?v=1", mode), { ok: true, path: "/foo", query: "?v=1" });
      assert.deepEqual(normalizePath("/foo?v=%zz#frag", mode), { ok: true, path: "/foo", query: "?v=%zz" });
      assert.deepEqual(normalizePath("/foo#x?y", mode), { ok: true, path: "/foo", query: "" });
    }
  });

  it("the mesh configuration examples: /a/../b, \\da, /a//b, /a%2fb", () => {
    assert.equal(ok("/a/../b", BASE), "/b");
    assert.equal(ok("\\da", BASE), "/da");
    assert.equal(ok("/a//b", MERGE), "/a/b");
    assert.equal(ok("/a%2fb", DECODE), "/a/b");
    // Order: decode %2F/%5C, then RFC 3986 and `\`, then merge.
    assert.equal(ok("/a%5c..%5Cb", DECODE), "/b");
    assert.equal(ok("/a/b%2f..%2f..%2fc", DECODE), "/c");
    assert.equal(ok("/a/b%2f..%2f..%2fc", MERGE), "/a/b%2F..%2F..%2Fc");
  });

  it("keeps other escapes with upper-case hex (RFC 3986 6.2.2.1)", () => {
    assert.equal(ok("/caf%c3%a9/%3a%40", BASE), "/caf%C3%A9/%3A%40");
    assert.equal(ok("/a%20b", MERGE), "/a%20b");
  });

  it("refuses what Envoy refuses: malformed escapes, control or non-ASCII characters, no leading /", () => {
    const bad = [
      "/a%zz",
      "/a%4",
      "/a%",
      "/%%41",
      "/a%g1",
      "/a b",
      "/a\tb",
      "/a\u0000b",
      "/a\u007fb",
      "/caf\u00e9",
      "/\u{1f600}",
      "admin",
      "",
      "*",
      "?x",
    ];
    for (const mode of PATH_NORMALIZATIONS)
      for (const raw of bad) assert.ok(refused(raw, mode).length > 0, `${mode} ${JSON.stringify(raw)}`);
    // A leading `\` is a slash in BASE and above; a leading %2F only in DECODE_AND_MERGE_SLASHES.
    refused("\\admin", NONE);
    refused("%2Fadmin", MERGE);
    assert.equal(ok("%2Fadmin", DECODE), "/admin");
  });

  it("never throws, even for values that are not strings or modes", () => {
    for (const v of [undefined, null, 1, {}, [], Symbol("x"), { toString: 1 }])
      assert.equal(normalizePath(v as unknown as string).ok, false);
    assert.equal(normalizePath("/a", "bogus" as PathNormalization).ok, false);
    assert.equal(normalizePath("/a", { toString: 1 } as unknown as PathNormalization).ok, false);
  });

  it("normalizeRequestPath returns the path, and throws ERR_POLICY_BAD_PATH where normalizePath refuses", () => {
    assert.equal(normalizeRequestPath("/%61dmin?x=1"), "/admin");
    assert.equal(normalizeRequestPath("/a//b/%2e%2E/c", MERGE), "/a/c");
    assert.throws(
      () => normalizeRequestPath("/a%00"),
      (err: unknown) => err instanceof PolicyError && err.code === "ERR_POLICY_BAD_PATH",
    );
    assert.throws(
      () => normalizeRequestPath("/a%zz", NONE),
      (err: unknown) =>
        err instanceof PolicyError &&
        err.code === "ERR_POLICY_BAD_PATH" &&
        typeof err.details.reason === "string",
    );
  });
});

describe("path normalization in the engine", () => {
  const engine = (mode: PathNormalization, action: "ALLOW" | "DENY", path: string) => {
    const e = createAuthorizationEngine({ pathNormalization: mode });
    const r = e.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: foo }
spec:
  action: ${action}
  rules:
  - to: [{ operation: { paths: ["${path}"] } }]
`);
    assert.deepEqual(r.errors, []);
    return e;
  };
  const request = (path: string, pathNormalized?: boolean): AuthorizationRequest => ({
    source: { ip: "10.0.0.1" },
    destination: { ip: "10.0.0.2", port: 80, workload: { namespace: "foo" } },
    http: {
      host: "h",
      method: "GET",
      path,
      headers: {},
      ...(pathNormalized === undefined ? {} : { pathNormalized }),
    },
  });

  it("an ALLOW on /data/abc allows GET /data/%61%62%63 (BASE)", () => {
    const e = engine(BASE, "ALLOW", "/data/abc");
    assert.equal(e.evaluate(request("/data/%61%62%63")).allowed, true);
    assert.equal(e.evaluate(request("/data/%61%62%63?q")).allowed, true);
    assert.equal(e.evaluate(request("/data/abd")).allowed, false);
  });

  it("a DENY on /admin is not bypassed by /%61dmin, /%2e/admin or /ADMIN%2f encodings per mode", () => {
    const base = engine(BASE, "DENY", "/admin");
    for (const p of [
      "/%61dmin",
      "/%61%64%6D%69%6e",
      "/%2e/admin",
      "/x/%2E%2e/admin",
      "\\admin",
      "/a\\..\\admin",
    ])
      assert.equal(base.evaluate(request(p)).allowed, false, p);
    assert.equal(base.evaluate(request("/admin2")).allowed, true);
    const merge = engine(MERGE, "DENY", "/admin");
    assert.equal(merge.evaluate(request("//%61dmin")).allowed, false);
    const decode = engine(DECODE, "DENY", "/admin");
    assert.equal(decode.evaluate(request("/x%2f..%2f%61dmin")).allowed, false);
  });

  it("a refused path is a bad request: denied, with badRequest and ERR_POLICY_BAD_PATH", () => {
    const e = engine(BASE, "ALLOW", "/*");
    for (const p of ["/a%00", "/a%zz", "/a%4", "/a b", "nope"]) {
      const d = e.evaluate(request(p));
      assert.equal(d.allowed, false, p);
      assert.equal(d.badRequest, true, p);
      assert.equal(d.error?.code, "ERR_POLICY_BAD_PATH", p);
      assert.match(d.reason, /^bad request: /);
    }
    // Not for other malformed requests: those are a plain deny.
    const bad = e.evaluate({ ...request("/a"), destination: { ip: "nope", port: 80 } });
    assert.equal(bad.allowed, false);
    assert.equal(bad.badRequest, undefined);
    assert.equal(bad.error?.code, "ERR_REQUEST_INVALID");
  });

  it("a method that is not upper case is a bad request (methods section of the page)", () => {
    const e = engine(BASE, "ALLOW", "/*");
    for (const method of ["get", "Get", "", "GET /x", "G\u00c9T"]) {
      const d = e.evaluate({ ...request("/a"), http: { ...request("/a").http!, method } });
      assert.equal(d.allowed, false, method);
      assert.equal(d.badRequest, true, method);
      assert.equal(d.error?.code, "ERR_POLICY_BAD_METHOD", method);
    }
    assert.equal(e.evaluate(request("/a")).allowed, true);
  });

  it("header names match case-insensitively and repeated headers are joined with commas (headers section)", () => {
    const e = createAuthorizationEngine();
    e.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: p, namespace: foo }
spec:
  rules:
  - when: [{ key: "request.headers[X-Token]", values: ["a,b"] }]
`);
    const r = request("/");
    assert.equal(
      e.evaluate({ ...r, http: { ...r.http!, headers: { "x-TOKEN": ["a", "b"] } } }).allowed,
      true,
    );
    assert.equal(
      e.evaluate({ ...r, http: { ...r.http!, headers: { "x-token": "a", "X-Token": "b" } } }).allowed,
      true,
    );
    assert.equal(e.evaluate({ ...r, http: { ...r.http!, headers: { "x-token": "a" } } }).allowed, false);
  });

  it("pathNormalized: true matches the path as given, so an already-decoded %2561 is not decoded again", () => {
    const e = engine(BASE, "DENY", "/a");
    // Normalized once by the proxy, `/%2561` stays `/%2561`: it is not `/a`.
    const once = normalizePath("/%2561");
    assert.deepEqual(once, { ok: true, path: "/%2561", query: "" });
    assert.equal(e.evaluate(request(once.ok ? once.path : "", true)).allowed, true);
    assert.equal(e.evaluate(request("/%61", false)).allowed, false);
    // A path marked normalized that is not in normal form is refused, never matched raw.
    for (const p of ["/%61", "/x/../a", "/a?x", "/a%00", "\\a"]) {
      const d = e.evaluate(request(p, true));
      assert.equal(d.allowed, false, p);
      assert.equal(d.error?.code, "ERR_REQUEST_INVALID", p);
    }
    assert.equal(e.evaluate(request("/b", true)).allowed, true);
  });

  it("refuses an unknown pathNormalization option at construction", () => {
    assert.throws(
      () => createAuthorizationEngine({ pathNormalization: "SOMETIMES" as PathNormalization }),
      (err: unknown) => err instanceof PolicyError && err.code === "ERR_POLICY_INVALID",
    );
  });
});

describe("path normalization properties", () => {
  const runs = { numRuns: 2000 };
  // Mostly well-formed pieces (escapes of any byte in either case, dots, slashes), some bad ones.
  const piece = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(..."/\\.aAZz09~-_:@!$&'()*+,;=\"<>[]^`{|}".split("")) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(fc.integer({ min: 1, max: 255 }), fc.boolean())
        .map(([b, upper]) => `%${upper ? hex(b).toUpperCase() : hex(b)}`),
    },
    { weight: 2, arbitrary: fc.constantFrom("%2e", "%2E", "%2f", "%5C", "%25", "..", "//", "?", "#") },
    {
      weight: 1,
      arbitrary: fc.constantFrom("%", "%0", "%zz", "%00", " ", "\t", "\u0000", "\u00e9", "\u{1f600}"),
    },
  );
  const rawPath = fc.array(piece, { maxLength: 24 }).map((cs) => cs.join(""));
  const slashLike = fc.oneof(
    { weight: 4, arbitrary: rawPath.map((p) => `/${p}`) },
    { weight: 1, arbitrary: rawPath },
  );

  it("never throws, and its output is a fixed point of every mode", () => {
    const outcomes: [number, number] = [0, 0];
    fc.assert(
      fc.property(slashLike, fc.constantFrom(...PATH_NORMALIZATIONS), (raw, mode) => {
        const first = normalizePath(raw, mode);
        outcomes[first.ok ? 0 : 1]++;
        if (!first.ok) {
          assert.ok(first.reason.length > 0);
          return;
        }
        assert.ok(first.path.startsWith("/"));
        assert.ok(first.query === "" || first.query.startsWith("?"));
        assert.ok(!first.query.includes("#"));
        const again = normalizePath(first.path, mode);
        assert.deepEqual(again, { ok: true, path: first.path, query: "" });
        if (mode === NONE) return;
        const p = first.path;
        // Nothing left to decode, no dot segment, no backslash.
        for (const m of p.matchAll(/%([0-9a-fA-F]{2})/g)) {
          const c = String.fromCharCode(Number.parseInt(m[1] as string, 16));
          assert.doesNotMatch(c, /[A-Za-z0-9\-._~]/, p);
          assert.equal(m[1], (m[1] as string).toUpperCase(), p);
        }
        assert.ok(!p.split("/").some((s) => s === "." || s === ".."), p);
        assert.ok(!p.includes("\\"), p);
        if (mode !== BASE) assert.ok(!p.includes("//"), p);
        if (mode === DECODE) assert.doesNotMatch(p, /%2f|%5c/i, p);
      }),
      runs,
    );
    // Both outcomes were exercised, the accepted one most.
    assert.ok(outcomes[0] > outcomes[1] && outcomes[1] > 0, `accepted/refused: ${outcomes.join("/")}`);
  });

  it("never throws whatever the arguments are", () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), (raw, mode) => {
        const r = normalizePath(raw as string, mode as PathNormalization);
        assert.equal(typeof r.ok, "boolean");
      }),
      runs,
    );
  });

  // Random spellings of `/admin` that every mode from BASE up must read as `/admin`.
  const encodeOrNot = (ch: string): fc.Arbitrary<string> =>
    fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()).map(([raw, upper1, upper2]) => {
      if (raw) return ch;
      const [a, b] = hex(ch.charCodeAt(0)).split("") as [string, string];
      return `%${upper1 ? a.toUpperCase() : a}${upper2 ? b.toUpperCase() : b}`;
    });
  const spell = (word: string): fc.Arbitrary<string> =>
    fc.tuple(...word.split("").map(encodeOrNot)).map((parts) => parts.join(""));
  const separator = (mode: PathNormalization, many: boolean): fc.Arbitrary<string> => {
    const one =
      mode === DECODE ? fc.constantFrom("/", "\\", "%2f", "%2F", "%5c", "%5C") : fc.constantFrom("/", "\\");
    if (!many || mode === BASE) return one;
    return fc.array(one, { minLength: 1, maxLength: 3 }).map((s) => s.join(""));
  };
  const dot = encodeOrNot(".");
  const junk = (mode: PathNormalization): fc.Arbitrary<string> =>
    fc.oneof(
      dot,
      // `name/..`: one separator inside, so the `..` undoes exactly `name`.
      fc
        .tuple(fc.constantFrom("x", "admin", "a.b", "...").chain(spell), separator(mode, false), dot, dot)
        .map(([name, sep, d1, d2]) => `${name}${sep}${d1}${d2}`),
    );
  const spelling = (mode: PathNormalization): fc.Arbitrary<string> =>
    fc
      .tuple(
        fc.array(fc.tuple(separator(mode, true), junk(mode)), { maxLength: 3 }),
        separator(mode, true),
        spell("admin"),
        fc.constantFrom("", "?", "?x=1", "#f", "?a=%2e#b"),
      )
      .map(([prefix, sep, word, tail]) => `${prefix.map(([s, j]) => s + j).join("")}${sep}${word}${tail}`);

  for (const mode of ENCODING_MODES) {
    it(`${mode}: a DENY on /admin holds for any spelling of /admin`, () => {
      const e = createAuthorizationEngine({ pathNormalization: mode });
      e.applyYaml(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-admin, namespace: foo }
spec:
  action: DENY
  rules:
  - to: [{ operation: { paths: ["/admin"] } }]
`);
      fc.assert(
        fc.property(spelling(mode), (path) => {
          assert.equal(normalizeRequestPath(path, mode), "/admin", path);
          const d = e.evaluate({
            source: { ip: "10.0.0.1" },
            destination: { ip: "10.0.0.2", port: 80, workload: { namespace: "foo" } },
            http: { host: "h", method: "GET", path, headers: {} },
          });
          assert.equal(d.allowed, false, path);
          assert.equal(d.policy, "foo/deny-admin", path);
        }),
        runs,
      );
    });
  }
});
