import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { applyHeaderFilter, type HeaderMap, redirectLocation, rewritePath } from "./header-filters.js";

describe("rewritePath ReplacePrefixMatch (Gateway API table)", () => {
  const cases: [matched: string, path: string, replacement: string, want: string][] = [
    ["/foo", "/foo/bar", "/xyz", "/xyz/bar"],
    ["/foo", "/foo/bar", "/xyz/", "/xyz/bar"],
    ["/foo", "/foo", "/xyz", "/xyz"],
    ["/foo", "/foo/", "/xyz", "/xyz/"],
    ["/foo", "/foo", "/", "/"],
    ["/foo", "/foo/", "/", "/"],
    ["/foo", "/foo/bar", "/", "/bar"],
    ["/", "/foo/bar", "/xyz", "/xyz/foo/bar"],
    ["/", "/", "/xyz", "/xyz"],
    ["/foo", "/foo/bar", "", "/bar"],
    ["/foo", "/foo", "", "/"],
    // A replacement's trailing slash is not significant (Istio trims it): the exact prefix gets none.
    ["/foo", "/foo", "/xyz/", "/xyz"],
    ["/foo", "/foo/", "/xyz/", "/xyz/"],
    ["/", "/", "/xyz/", "/xyz"],
  ];
  for (const [matched, path, replacement, want] of cases) {
    it(`${matched} + ${path} -> ${replacement} = ${want}`, () => {
      assert.equal(
        rewritePath(path, { type: "ReplacePrefixMatch", replacePrefixMatch: replacement }, matched),
        want,
      );
    });
  }
  it("ReplaceFullPath replaces the whole path", () => {
    assert.equal(rewritePath("/a/b", { type: "ReplaceFullPath", replaceFullPath: "/c" }, "/a"), "/c");
  });
});

describe("header modifiers and redirects", () => {
  it("applies set, add and remove case-insensitively", () => {
    const h: HeaderMap = { "x-a": "1", "x-b": "2", "set-cookie": ["a=1"] };
    applyHeaderFilter(h, {
      set: [{ name: "X-A", value: "one" }],
      add: [
        { name: "x-b", value: "3" },
        { name: "Set-Cookie", value: "b=2" },
        { name: "x-new", value: "n" },
      ],
      remove: ["X-B"],
    });
    // x-b: the request's value is removed first, then the added one goes on.
    assert.deepEqual(h, { "x-a": "one", "x-b": "3", "set-cookie": ["a=1", "b=2"], "x-new": "n" });
  });
  it("removes before it sets and adds, so a configured value replaces the client's", () => {
    // A filter that removes a header and also sets or adds it: the request's own value goes and the
    // configured one stays, whichever list names the header.
    const h: HeaderMap = { "x-user": "spoofed", "x-tag": ["a", "b"], "x-other": "kept" };
    applyHeaderFilter(h, {
      set: [{ name: "X-User", value: "verified" }],
      add: [{ name: "x-tag", value: "c" }],
      remove: ["x-user", "X-Tag"],
    });
    assert.deepEqual(h, { "x-user": "verified", "x-tag": "c", "x-other": "kept" });
  });
  it("redirects without a scheme or port to the port the request was sent to", () => {
    // The Service port stands for the listener port: a Host without a port, or with another one,
    // does not change it.
    const req = { scheme: "http" as const, host: "echo", path: "/p", query: undefined, port: 8080 };
    assert.equal(redirectLocation({}, req, undefined), "http://echo:8080/p");
    assert.equal(redirectLocation({ hostname: "example.org" }, req, undefined), "http://example.org:8080/p");
    assert.equal(
      redirectLocation({ hostname: "example.org" }, { ...req, host: "echo:9999" }, undefined),
      "http://example.org:8080/p",
    );
    assert.equal(redirectLocation({}, { ...req, host: "echo:8080", port: 80 }, undefined), "http://echo/p");
    // A scheme still means its well-known port; an explicit port still wins.
    assert.equal(redirectLocation({ scheme: "https" }, req, undefined), "https://echo/p");
    assert.equal(redirectLocation({ port: 8083 }, req, undefined), "http://echo:8083/p");
  });
  it("builds redirect locations", () => {
    const req = { scheme: "http" as const, host: "a.example.com:8080", path: "/p", query: "x=1" };
    assert.equal(redirectLocation({}, req, undefined), "http://a.example.com:8080/p?x=1");
    assert.equal(redirectLocation({ scheme: "https" }, req, undefined), "https://a.example.com/p?x=1");
    assert.equal(
      redirectLocation({ scheme: "https", port: 443 }, req, undefined),
      "https://a.example.com/p?x=1",
    );
    // A scheme without a port means that scheme's well-known port, even when the scheme is unchanged.
    assert.equal(redirectLocation({ scheme: "http" }, req, undefined), "http://a.example.com/p?x=1");
    assert.equal(
      redirectLocation({ scheme: "http", hostname: "b.example.com" }, req, undefined),
      "http://b.example.com/p?x=1",
    );
    assert.equal(
      redirectLocation({ scheme: "http", port: 8443 }, req, undefined),
      "http://a.example.com:8443/p?x=1",
    );
    assert.equal(
      redirectLocation({ hostname: "b.example.com" }, req, undefined),
      "http://b.example.com:8080/p?x=1",
    );
    assert.equal(
      redirectLocation({ hostname: "b.example.com", port: 80 }, req, undefined),
      "http://b.example.com/p?x=1",
    );
    assert.equal(
      redirectLocation(
        { path: { type: "ReplaceFullPath", replaceFullPath: "/q" } },
        { ...req, query: undefined },
        undefined,
      ),
      "http://a.example.com:8080/q",
    );
  });
});
