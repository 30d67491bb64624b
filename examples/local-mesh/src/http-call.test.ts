import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeHttpRequest, httpResponseComplete, parseHttpResponse } from "./local-mesh.js";

describe("encodeHttpRequest", () => {
  it("writes host, caller headers, content-length and connection: close", () => {
    assert.equal(
      encodeHttpRequest("127.30.0.2", 80, {
        method: "POST",
        path: "/a",
        headers: { "x-version": "v2" },
        body: "hé",
      }),
      "POST /a HTTP/1.1\r\nhost: 127.30.0.2:80\r\nx-version: v2\r\ncontent-length: 3\r\nconnection: close\r\n\r\nhé",
    );
  });
});

describe("HTTP/1.1 responses", () => {
  const cases: { name: string; text: string; complete: boolean; status: number; body: string }[] = [
    { name: "empty", text: "", complete: false, status: 0, body: "" },
    {
      name: "head only",
      text: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n",
      complete: false,
      status: 200,
      body: "",
    },
    {
      name: "fixed length, partial",
      text: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",
      complete: false,
      status: 200,
      body: "ab",
    },
    {
      name: "fixed length, whole",
      text: "HTTP/1.1 403 Forbidden\r\ncontent-length: 19\r\n\r\nRBAC: access denied",
      complete: true,
      status: 403,
      body: "RBAC: access denied",
    },
    {
      name: "chunked, whole",
      text: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
      complete: true,
      status: 200,
      body: "abcde",
    },
    {
      name: "chunked, partial",
      text: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
      complete: false,
      status: 200,
      body: "abc",
    },
    { name: "not HTTP", text: "echo-0 heard", complete: false, status: 0, body: "" },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(httpResponseComplete(c.text), c.complete);
      assert.deepEqual(parseHttpResponse(c.text), { status: c.status, body: c.body });
    });
  }
});
