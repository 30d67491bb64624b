import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  forwardedClientCert,
  isProxyOwnedHeader,
  type ParsedRequestHead,
  parseRequestHead,
  type RequestHeadInput,
  type RequestHeadOptions,
} from "./request-head.js";

const OPTIONS: RequestHeadOptions = {
  maxHeaderBytes: 1024,
  pathNormalization: "BASE",
  proxyIdentity: "spiffe://td/ns/w/sa/waypoint",
  peerIdentity: "spiffe://td/ns/a/sa/client",
};

/** An input whose raw and merged headers agree, as Node would deliver them. */
function input(
  method: string | undefined,
  target: string | undefined,
  fields: [string, string][] = [["host", "svc"]],
  h2 = false,
): RequestHeadInput {
  const headers: Record<string, string> = {};
  for (const [k, v] of fields) headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  return { method, target, headers, rawHeaders: fields.flat(), h2 };
}

function refused(result: ParsedRequestHead): string {
  assert.equal(result.ok, false, JSON.stringify(result));
  return result.ok ? "" : `${result.status} ${result.reason}`;
}

describe("parseRequestHead", () => {
  const rejections: {
    name: string;
    in: RequestHeadInput;
    options?: Partial<RequestHeadOptions>;
    out: RegExp;
  }[] = [
    { name: "lower-case method", in: input("get", "/"), out: /^400 bad method/ },
    { name: "mixed-case method", in: input("Get", "/"), out: /^400 bad method/ },
    { name: "method with a space", in: input("G T", "/"), out: /^400 bad method/ },
    { name: "empty method", in: input("", "/"), out: /^400 bad method/ },
    { name: "method with a slash", in: input("GET/", "/"), out: /^400 bad method/ },
    { name: "absolute-form target", in: input("GET", "http://svc/admin"), out: /^400 bad request path/ },
    { name: "asterisk target", in: input("OPTIONS", "*"), out: /^400 bad request path/ },
    { name: "no target (HTTP/2 CONNECT)", in: input("CONNECT", undefined), out: /^400 bad request path/ },
    { name: "bad escape", in: input("GET", "/a%zz"), out: /^400 bad request path/ },
    { name: "escaped NUL", in: input("GET", "/a%00"), out: /^400 bad request path/ },
    {
      name: "two Host fields",
      in: input("GET", "/", [
        ["Host", "a"],
        ["host", "b"],
      ]),
      out: /^400 more than one host/,
    },
    {
      name: "HTTP/2 host differing from :authority",
      in: input(
        "GET",
        "/",
        [
          [":authority", "a"],
          ["host", "b"],
        ],
        true,
      ),
      out: /^400 host and :authority differ/,
    },
    {
      name: "decoded list over the limit",
      in: input("GET", "/", [["x-big", "a".repeat(1024 - 32 - 5 + 1)]]),
      out: /^431 /,
    },
  ];
  for (const c of rejections) {
    it(`refuses: ${c.name}`, () => {
      assert.match(refused(parseRequestHead(c.in, { ...OPTIONS, ...c.options })), c.out);
    });
  }

  it("counts name + value + 32 per field, pseudo-headers included, and accepts the exact limit", () => {
    const fields: [string, string][] = [
      [":path", "/"],
      [":authority", "svc"],
      ["x-big", "a".repeat(1024 - 32 - 5 - 32 - 6 - 45)],
    ];
    const r = parseRequestHead(input("GET", "/", fields, true), OPTIONS);
    assert.ok(r.ok);
    assert.equal(r.head.headerBytes, 1024);
  });

  const paths: {
    target: string;
    mode?: RequestHeadOptions["pathNormalization"];
    path: string;
    query: string;
  }[] = [
    { target: "/admin/../hello", path: "/hello", query: "" },
    { target: "/a/./b/%7Euser?x=%2e%2e&y", path: "/a/b/~user", query: "?x=%2e%2e&y" },
    { target: "/a//b", path: "/a//b", query: "" },
    { target: "/a//b", mode: "MERGE_SLASHES", path: "/a/b", query: "" },
    { target: "/a/%2F/b", mode: "DECODE_AND_MERGE_SLASHES", path: "/a/b", query: "" },
    { target: "/admin/../hello", mode: "NONE", path: "/admin/../hello", query: "" },
    { target: "/x?", path: "/x", query: "?" },
  ];
  for (const c of paths) {
    it(`normalizes ${c.target} (${c.mode ?? "BASE"}) to ${c.path}`, () => {
      const r = parseRequestHead(input("GET", c.target), { ...OPTIONS, pathNormalization: c.mode ?? "BASE" });
      assert.ok(r.ok);
      assert.equal(r.head.path, c.path);
      assert.equal(r.head.query, c.query);
    });
  }

  it("keeps ordinary headers, drops hop-by-hop, proxy-owned and Connection-named ones, sets XFCC", () => {
    const r = parseRequestHead(
      input("POST", "/", [
        ["host", "svc"],
        ["connection", "keep-alive, X-Private"],
        ["keep-alive", "timeout=5"],
        ["te", "trailers"],
        ["upgrade", "h2c"],
        ["x-private", "1"],
        ["x-forwarded-client-cert", "URI=spiffe://evil"],
        ["x-envoy-peer-metadata", "Cg=="],
        ["x-envoy-retry-on", "5xx"],
        ["x-istio-attributes", "x"],
        ["x-envoy", "not a prefix match"],
        ["authorization", "Bearer t"],
        ["x-forwarded-for", "10.0.0.1"],
      ]),
      OPTIONS,
    );
    assert.ok(r.ok);
    assert.equal(r.head.host, "svc");
    assert.deepEqual(r.head.headers, {
      __proto__: null,
      "x-envoy": "not a prefix match",
      authorization: "Bearer t",
      "x-forwarded-for": "10.0.0.1",
      "x-forwarded-client-cert": "By=spiffe://td/ns/w/sa/waypoint;URI=spiffe://td/ns/a/sa/client",
    });
  });

  it("takes :authority as the host over HTTP/2 and drops pseudo-headers", () => {
    const r = parseRequestHead(
      input(
        "GET",
        "/",
        [
          [":authority", "svc:80"],
          [":path", "/"],
          ["x-a", "1"],
        ],
        true,
      ),
      { ...OPTIONS, peerIdentity: undefined },
    );
    assert.ok(r.ok);
    assert.equal(r.head.host, "svc:80");
    assert.deepEqual(r.head.headers, { __proto__: null, "x-a": "1" });
  });

  it("drops trailing dots of the host name, so policy, routing and the backend read one host", () => {
    const cases: [string, string][] = [
      ["admin.example.com.", "admin.example.com"],
      ["admin.example.com.:80", "admin.example.com:80"],
      ["Admin.Example.Com..", "Admin.Example.Com"],
      ["admin.example.com", "admin.example.com"],
      ["10.0.0.1:8080", "10.0.0.1:8080"],
      ["[fd00::1]:80", "[fd00::1]:80"],
    ];
    for (const [given, host] of cases) {
      const h1 = parseRequestHead(input("GET", "/", [["host", given]]), OPTIONS);
      assert.ok(h1.ok);
      assert.equal(h1.head.host, host, given);
      const h2 = parseRequestHead(
        input(
          "GET",
          "/",
          [
            [":authority", given],
            [":path", "/"],
          ],
          true,
        ),
        OPTIONS,
      );
      assert.ok(h2.ok);
      assert.equal(h2.head.host, host, given);
    }
    assert.match(refused(parseRequestHead(input("GET", "/", [["host", "."]]), OPTIONS)), /^400 /);
  });

  it("keeps every line of a repeated field, joins cookie crumbs, and drops repeated proxy-owned lines", () => {
    const r = parseRequestHead(
      {
        method: "GET",
        target: "/",
        // Node's merged object, which keeps one authorization and one user-agent.
        headers: { host: "svc", authorization: "Bearer a", "user-agent": "one", "x-tag": "a, b" },
        rawHeaders: [
          "Host",
          "svc",
          "Authorization",
          "Bearer a",
          "User-Agent",
          "one",
          "authorization",
          "Bearer b",
          "X-Tag",
          "a",
          "user-agent",
          "two",
          "x-tag",
          "b",
          "x-tag",
          "c",
          "Cookie",
          "a=1",
          "cookie",
          "b=2",
          "x-forwarded-client-cert",
          "URI=spiffe://evil",
          "X-Forwarded-Client-Cert",
          "URI=spiffe://evil-too",
        ],
        h2: false,
      },
      { ...OPTIONS, peerIdentity: undefined },
    );
    assert.ok(r.ok);
    assert.deepEqual(r.head.headers, {
      __proto__: null,
      authorization: ["Bearer a", "Bearer b"],
      "user-agent": ["one", "two"],
      "x-tag": ["a", "b", "c"],
      cookie: "a=1; b=2",
    });
  });

  it("keeps fields named like members of Object.prototype as ordinary fields", () => {
    const r = parseRequestHead(
      input("GET", "/", [
        ["host", "svc"],
        ["Constructor", "a"],
        ["__proto__", "b"],
        ["constructor", "c"],
      ]),
      { ...OPTIONS, peerIdentity: undefined },
    );
    assert.ok(r.ok);
    assert.deepEqual(Object.keys(r.head.headers), ["constructor", "__proto__"]);
    assert.deepEqual(r.head.headers.constructor, ["a", "c"]);
    assert.equal(Object.getOwnPropertyDescriptor(r.head.headers, "__proto__")?.value, "b");
    const without = parseRequestHead(input("GET", "/"), OPTIONS);
    assert.ok(without.ok);
    assert.equal(without.head.headers.constructor, undefined, "a field the request did not send is absent");
  });
});

describe("x-forwarded-client-cert", () => {
  it("writes By then URI, quoting values that hold a separator", () => {
    assert.equal(
      forwardedClientCert("spiffe://td/ns/w/sa/w", "spiffe://td/ns/a/sa/b"),
      "By=spiffe://td/ns/w/sa/w;URI=spiffe://td/ns/a/sa/b",
    );
    assert.equal(forwardedClientCert(undefined, "spiffe://td/ns/a/sa/b"), "URI=spiffe://td/ns/a/sa/b");
    assert.equal(forwardedClientCert(undefined, 'spiffe://td/x;By="y"'), 'URI="spiffe://td/x;By=\\"y\\""');
  });

  it("treats exactly XFCC, x-envoy-* and x-istio-* as proxy-owned", () => {
    assert.deepEqual(
      [
        "x-forwarded-client-cert",
        "x-envoy-internal",
        "x-istio-foo",
        "x-envoy",
        "x-forwarded-for",
        "envoy-x",
      ].map(isProxyOwnedHeader),
      [true, true, true, false, false, false],
    );
  });
});
