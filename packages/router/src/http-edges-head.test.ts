import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ParsedRequestHead, parseRequestHead, type RequestHeadOptions } from "./request-head.js";
import { brokenResponseHead, MAX_RESPONSE_HEADER_FIELDS } from "./upstream.js";

const OPTIONS: RequestHeadOptions = {
  maxHeaderBytes: 4096,
  pathNormalization: "BASE",
  proxyIdentity: undefined,
  peerIdentity: undefined,
};

function parse(fields: [string, string][], extra: { h2?: boolean; httpVersion?: string; accept?: boolean }) {
  const headers: Record<string, string> = {};
  for (const [k, v] of fields) headers[k] = v;
  return parseRequestHead(
    {
      method: "GET",
      target: "/",
      headers,
      rawHeaders: fields.flat(),
      h2: extra.h2 ?? false,
      httpVersion: extra.httpVersion,
    },
    { ...OPTIONS, acceptHttp10: extra.accept },
  );
}

function outcome(r: ParsedRequestHead): string {
  return r.ok ? `ok ${r.head.host}` : `${r.status} ${r.details}`;
}

describe("request heads: HTTP version and host", () => {
  const cases: [
    name: string,
    fields: [string, string][],
    extra: Parameters<typeof parse>[1],
    want: string,
  ][] = [
    ["HTTP/1.1 with a Host", [["host", "svc"]], { httpVersion: "1.1" }, "ok svc"],
    ["HTTP/1.1 without a Host", [], { httpVersion: "1.1" }, "400 missing_host_header"],
    ["HTTP/1.1 with an empty Host", [["host", ""]], { httpVersion: "1.1" }, "400 missing_host_header"],
    ["HTTP/1.0", [["host", "svc"]], { httpVersion: "1.0" }, "426 low_version"],
    ["HTTP/0.9", [], { httpVersion: "0.9" }, "426 low_version"],
    ["HTTP/1.0 accepted, with a Host", [["host", "svc"]], { httpVersion: "1.0", accept: true }, "ok svc"],
    [
      "HTTP/1.0 accepted, without a Host",
      [],
      { httpVersion: "1.0", accept: true },
      "400 missing_host_header",
    ],
    ["HTTP/2 with :authority", [[":authority", "svc"]], { h2: true }, "ok svc"],
    ["HTTP/2 without an authority", [], { h2: true }, "400 missing_host_header"],
    ["HTTP/2 with an empty :authority", [[":authority", ""]], { h2: true }, "400 missing_host_header"],
  ];
  for (const [name, fields, extra, want] of cases) {
    it(name, () => assert.equal(outcome(parse(fields, extra)), want));
  }
});

describe("brokenResponseHead", () => {
  const cases: [
    name: string,
    status: number,
    raw: Record<string, string>,
    fields: number,
    want: string,
    kept: string | undefined,
  ][] = [
    ["a 200 with a length", 200, { "content-length": "5" }, 1, "ok", "5"],
    ["a 204 with length 0: dropped", 204, { "content-length": "0" }, 1, "ok", undefined],
    ["a 204 with length 5", 204, { "content-length": "5" }, 1, "broken", "5"],
    ["a 204 with transfer-encoding", 204, { "transfer-encoding": "chunked" }, 1, "broken", undefined],
    ["a 304 with a length: kept", 304, { "content-length": "5" }, 1, "ok", "5"],
    ["the most fields", 200, {}, MAX_RESPONSE_HEADER_FIELDS, "ok", undefined],
    ["one field more", 200, {}, MAX_RESPONSE_HEADER_FIELDS + 1, "broken", undefined],
  ];
  for (const [name, status, raw, fields, want, kept] of cases) {
    it(name, () => {
      const headers: Record<string, string> = { ...raw };
      delete headers["transfer-encoding"];
      const broken = brokenResponseHead(status, headers, raw, fields);
      assert.equal(broken === undefined ? "ok" : "broken", want, broken);
      if (want === "ok") assert.equal(headers["content-length"], kept);
    });
  }
});
