import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RouterError } from "./errors.js";
import { createRouteTable } from "./route-table.js";

/** Deterministic PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const VALID = {
  kind: "HTTPRoute",
  metadata: { name: "r", namespace: "ns", creationTimestamp: "2025-01-01T00:00:00Z" },
  spec: {
    parentRefs: [{ name: "waypoint" }, { group: "", kind: "Service", name: "svc", port: 80 }],
    hostnames: ["a.example.com", "*.example.com"],
    rules: [
      {
        matches: [
          {
            path: { type: "PathPrefix", value: "/api" },
            headers: [{ name: "x", value: "1" }],
            queryParams: [{ name: "q", value: "v" }],
            method: "GET",
          },
        ],
        filters: [
          {
            type: "RequestHeaderModifier",
            requestHeaderModifier: {
              set: [{ name: "a", value: "b" }],
              add: [{ name: "c", value: "d" }],
              remove: ["e"],
            },
          },
          {
            type: "URLRewrite",
            urlRewrite: {
              hostname: "b.example.com",
              path: { type: "ReplacePrefixMatch", replacePrefixMatch: "/v2" },
            },
          },
          {
            type: "RequestMirror",
            requestMirror: {
              backendRef: { name: "m", port: 80 },
              fraction: { numerator: 1, denominator: 10 },
            },
          },
        ],
        backendRefs: [{ name: "svc", port: 80, weight: 3 }],
        timeouts: { request: "10s", backendRequest: "1s" },
        retry: { attempts: 2, codes: [503], backoff: "100ms" },
      },
    ],
  },
};

const WEIRD: unknown[] = [
  null,
  undefined,
  0,
  -1,
  1e9,
  1.5,
  "",
  "x",
  "/",
  "*",
  "(a+)+",
  "\r\n",
  [],
  {},
  true,
  "a".repeat(2000),
];

function mutate(value: unknown, r: () => number): unknown {
  if (r() < 0.08) return WEIRD[Math.floor(r() * WEIRD.length)];
  if (Array.isArray(value)) return value.map((v) => mutate(v, r));
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (r() < 0.05) continue;
      out[k] = mutate(v, r);
    }
    return out;
  }
  return value;
}

describe("route validation fuzz", () => {
  it("accepts the seed route", () => {
    assert.equal(createRouteTable([VALID]).size, 1);
  });
  it("never throws anything but RouterError on 2,000 mutated routes", () => {
    const r = rng(42);
    let accepted = 0;
    for (let i = 0; i < 2000; i++) {
      const input = mutate(VALID, r);
      try {
        createRouteTable([input]);
        accepted++;
      } catch (e) {
        if (!(e instanceof RouterError)) assert.fail(`case ${i}: ${String(e)}\n${JSON.stringify(input)}`);
        assert.equal(typeof e.details.field === "string" || e.code === "ERR_ROUTE_INVALID", true);
      }
    }
    assert.ok(accepted > 0 && accepted < 2000, `accepted ${accepted}`);
  });
  it("matches arbitrary request shapes without throwing", () => {
    const table = createRouteTable([
      VALID,
      {
        kind: "HTTPRoute",
        metadata: { name: "re" },
        spec: {
          parentRefs: [{ name: "waypoint" }],
          rules: [
            {
              matches: [
                {
                  path: { type: "RegularExpression", value: "/x/[a-z]+/.*" },
                  headers: [{ type: "RegularExpression", name: "h", value: "v.*" }],
                },
              ],
            },
          ],
        },
      },
    ]);
    const r = rng(7);
    const alphabet = [
      "/",
      "a",
      "x",
      "api",
      "%2F",
      "..",
      ".",
      "?",
      "#",
      "\u00e9",
      " ",
      "*",
      ":",
      "[",
      "]",
      "//",
    ];
    for (let i = 0; i < 2000; i++) {
      let path = "";
      const n = Math.floor(r() * 12);
      for (let k = 0; k < n; k++) path += alphabet[Math.floor(r() * alphabet.length)];
      const host = r() < 0.5 ? "a.example.com" : `${path}.example.com:${Math.floor(r() * 70000)}`;
      const m = table.match({
        host,
        path,
        method: r() < 0.5 ? "GET" : "BREW",
        headers: { h: r() < 0.5 ? "v1" : ["v", "w"], x: "1" },
        query: path,
      });
      if (m !== undefined) assert.ok(["ns/r", "default/re"].includes(m.rule.route));
    }
  });
});
