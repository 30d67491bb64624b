import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SpiffeError } from "./errors.js";
import { type IstioIdentity, parseTrustDomain, SpiffeId } from "./spiffe-id.js";

const VALID: Array<[string, string, string]> = [
  // [id, trust domain, path]
  ["spiffe://cluster.local/ns/default/sa/bookinfo", "cluster.local", "/ns/default/sa/bookinfo"],
  ["spiffe://example.org", "example.org", ""],
  ["spiffe://example.org/workload", "example.org", "/workload"],
  ["spiffe://a", "a", ""],
  ["spiffe://1.2.3.4/x", "1.2.3.4", "/x"],
  ["spiffe://trust_domain-with.all_chars/p", "trust_domain-with.all_chars", "/p"],
  ["spiffe://td/UPPER/Case/Path", "td", "/UPPER/Case/Path"],
  ["spiffe://td/a.b/c-d/e_f", "td", "/a.b/c-d/e_f"],
  ["spiffe://td/...", "td", "/..."],
  ["spiffe://td/.hidden", "td", "/.hidden"],
  ["spiffe://td/a..b", "td", "/a..b"],
  ["spiffe://td/0/1/2/3/4/5/6/7/8/9", "td", "/0/1/2/3/4/5/6/7/8/9"],
  ["spiffe://td/-", "td", "/-"],
  ["spiffe://td/_", "td", "/_"],
  [`spiffe://${"a".repeat(255)}/x`, "a".repeat(255), "/x"],
  [
    `spiffe://td/${"p".repeat(2048 - "spiffe://td/".length)}`,
    "td",
    `/${"p".repeat(2048 - "spiffe://td/".length)}`,
  ],
  ["spiffe://xn--bcher-kva.example/ns/x/sa/y", "xn--bcher-kva.example", "/ns/x/sa/y"],
  ["spiffe://-leading-dash/x", "-leading-dash", "/x"],
  ["spiffe://.dot.first/x", ".dot.first", "/x"],
  ["spiffe://trailing.dot./x", "trailing.dot.", "/x"],
];

const INVALID: Array<[string, RegExp]> = [
  ["", /empty/],
  ["cluster.local/ns/default", /scheme/],
  ["http://cluster.local/ns/x", /scheme/],
  ["SPIFFE://cluster.local/ns/x", /lower-case 'spiffe'/],
  ["Spiffe://cluster.local", /lower-case 'spiffe'/],
  ["spiffe:/cluster.local/x", /scheme/],
  ["spiffe:cluster.local", /scheme/],
  ["spiffe://", /trust domain is empty/],
  ["spiffe:///path", /trust domain is empty/],
  ["spiffe://Cluster.local/x", /lower-case/],
  ["spiffe://CLUSTER/x", /lower-case/],
  ["spiffe://cluster.local:8080/x", /port/],
  ["spiffe://user@cluster.local/x", /userinfo/],
  ["spiffe://user:pass@cluster.local/x", /port|userinfo/],
  ["spiffe://cluster.local?x=1", /query/],
  ["spiffe://cluster.local/ns?x=1", /query/],
  ["spiffe://cluster.local#frag", /fragment/],
  ["spiffe://cluster.local/ns#frag", /fragment/],
  ["spiffe://cluster.local/", /must not end with '\/'/],
  ["spiffe://cluster.local/ns/", /must not end with '\/'/],
  ["spiffe://cluster.local//ns", /empty segment/],
  ["spiffe://cluster.local/ns//sa", /empty segment/],
  ["spiffe://cluster.local/./ns", /'\.' segment/],
  ["spiffe://cluster.local/ns/..", /'\.\.' segment/],
  ["spiffe://cluster.local/ns/../sa", /'\.\.' segment/],
  ["spiffe://cluster.local/ns/%41", /percent-encoding/],
  ["spiffe://clu%73ter.local/x", /percent-encoding/],
  ["spiffe://cluster.local/ns/a b", /" " is not allowed in the path/],
  ["spiffe://cluster local/x", /" " is not allowed in the trust domain/],
  ["spiffe://cluster.local/ns/ä", /"ä" is not allowed/],
  ["spiffe://clüster.local/x", /"ü" is not allowed/],
  ["spiffe://cluster.local/ns/a+b", /"\+" is not allowed/],
  ["spiffe://cluster.local/ns/a~b", /"~" is not allowed/],
  ["spiffe://cluster.local/ns/a:b", /':' is not allowed in the path/],
  ["spiffe://cluster.local/ns/a@b", /userinfo/],
  ["spiffe://[::1]/x", /"\[" is not allowed/],
  ["spiffe://cluster.local\\ns", /"\\\\" is not allowed/],
  [`spiffe://${"a".repeat(256)}/x`, /longer than 255 bytes/],
  [`spiffe://td/${"p".repeat(2048 - "spiffe://td/".length + 1)}`, /longer than 2048 bytes/],
  [" spiffe://cluster.local/x", /scheme/],
  ["spiffe://cluster.local/x ", /" " is not allowed/],
  ["spiffe://cluster.local/x\n", /"\\n" is not allowed/],
];

describe("SpiffeId.parse", () => {
  it("has a table of at least 40 cases", () => {
    assert.ok(VALID.length + INVALID.length >= 40);
  });
  for (const [text, td, path] of VALID) {
    it(`accepts ${text.slice(0, 60)}`, () => {
      const id = SpiffeId.parse(text);
      assert.equal(id.trustDomain, td);
      assert.equal(id.path, path);
      assert.equal(id.toString(), text);
      assert.ok(SpiffeId.tryParse(text)?.equals(id));
    });
  }
  for (const [text, reason] of INVALID) {
    it(`rejects ${JSON.stringify(text.slice(0, 60))}`, () => {
      assert.throws(
        () => SpiffeId.parse(text),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError);
          assert.equal(err.code, "ERR_SPIFFE_ID_INVALID");
          assert.match(err.message, reason);
          return true;
        },
      );
      assert.equal(SpiffeId.tryParse(text), undefined);
    });
  }
  it("rejects non-strings with a typed error", () => {
    assert.throws(() => SpiffeId.parse(42 as unknown as string), { code: "ERR_SPIFFE_ID_INVALID" });
  });
});

describe("Istio helpers", () => {
  it("round-trips the Istio form", () => {
    const id = SpiffeId.fromIstio({
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount: "sleep",
    });
    assert.equal(id.toString(), "spiffe://cluster.local/ns/default/sa/sleep");
    assert.deepEqual(id.toIstio(), {
      trustDomain: "cluster.local",
      namespace: "default",
      serviceAccount: "sleep",
    });
  });
  it("returns undefined for other paths", () => {
    for (const text of [
      "spiffe://td",
      "spiffe://td/ns/a",
      "spiffe://td/ns/a/sa",
      "spiffe://td/ns/a/sa/b/c",
      "spiffe://td/sa/a/ns/b",
    ]) {
      assert.equal(SpiffeId.parse(text).toIstio(), undefined, text);
    }
  });
  it("validates the parts", () => {
    assert.throws(
      () => SpiffeId.fromIstio({ trustDomain: "cluster.local", namespace: "a/b", serviceAccount: "x" }),
      { code: "ERR_SPIFFE_ID_INVALID" },
    );
    assert.throws(() => SpiffeId.fromIstio({ trustDomain: "Bad", namespace: "a", serviceAccount: "x" }), {
      code: "ERR_SPIFFE_ID_INVALID",
    });
  });
  it("refuses missing or mistyped parts instead of building spiffe://undefined/...", () => {
    const bad: unknown[] = [
      { namespace: "default", serviceAccount: "sleep" },
      { trustDomain: "", namespace: "default", serviceAccount: "sleep" },
      { trustDomain: 5, namespace: "default", serviceAccount: "sleep" },
      { trustDomain: "cluster.local", serviceAccount: "sleep" },
      { trustDomain: "cluster.local", namespace: "", serviceAccount: "sleep" },
      { trustDomain: "cluster.local", namespace: "default" },
      { trustDomain: "cluster.local", namespace: "default", serviceAccount: null },
      { trustDomain: "cluster.local", namespace: "..", serviceAccount: "sleep" },
      undefined,
      null,
      "spiffe://cluster.local/ns/default/sa/sleep",
    ];
    for (const identity of bad) {
      assert.throws(
        () => SpiffeId.fromIstio(identity as IstioIdentity),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_SPIFFE_ID_INVALID",
        JSON.stringify(identity),
      );
    }
    for (const td of [undefined, null, 5, ""]) {
      assert.throws(
        () => SpiffeId.fromSegments(td as unknown as string, "x"),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_SPIFFE_ID_INVALID",
        String(td),
      );
    }
  });
  it("compares and serialises", () => {
    const a = SpiffeId.parse("spiffe://td/x");
    assert.ok(a.equals("spiffe://td/x"));
    assert.ok(!a.equals(SpiffeId.parse("spiffe://td/y")));
    assert.ok(a.memberOf("td"));
    assert.equal(JSON.stringify({ a }), '{"a":"spiffe://td/x"}');
  });
  it("validates trust domain names", () => {
    assert.equal(parseTrustDomain("cluster.local"), "cluster.local");
    assert.throws(() => parseTrustDomain("Cluster"), { code: "ERR_TRUST_DOMAIN_INVALID" });
    assert.throws(() => parseTrustDomain(""), { code: "ERR_TRUST_DOMAIN_INVALID" });
  });
});

describe("SpiffeError", () => {
  it("is branded across copies", () => {
    const err = new SpiffeError("ERR_SPIFFE_ID_INVALID", "x", { cause: new Error("c"), reason: "r" });
    assert.equal(err.name, "SpiffeError");
    assert.equal(err.details.reason, "r");
    assert.ok(err.cause instanceof Error);
    const lookalike = Object.assign(new Error("y"), { [Symbol.for("@ambient/spiffe.error")]: true });
    assert.ok(lookalike instanceof SpiffeError);
    assert.ok(!(new Error("z") instanceof SpiffeError));
  });
});
