import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ZtunnelError } from "./errors.js";
import {
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  parseGreeting,
  parseReply,
  parseRequest,
  SOCKS5_REPLY,
} from "./socks5.js";

describe("parseGreeting", () => {
  const cases: { name: string; bytes: number[]; want: ReturnType<typeof parseGreeting> | "error" }[] = [
    { name: "empty", bytes: [], want: undefined },
    { name: "version only", bytes: [5], want: undefined },
    { name: "methods missing", bytes: [5, 2, 0], want: undefined },
    { name: "no auth", bytes: [5, 1, 0], want: { methods: [0], length: 3 } },
    { name: "two methods, trailing bytes", bytes: [5, 2, 0, 2, 9], want: { methods: [0, 2], length: 4 } },
    { name: "SOCKS4", bytes: [4, 1, 0], want: "error" },
    { name: "zero methods", bytes: [5, 0], want: "error" },
  ];
  for (const c of cases) {
    it(c.name, () => {
      if (c.want === "error") {
        assert.throws(() => parseGreeting(Uint8Array.from(c.bytes)), ZtunnelError);
      } else {
        assert.deepEqual(parseGreeting(Uint8Array.from(c.bytes)), c.want);
      }
    });
  }
});

describe("parseRequest", () => {
  const cases: { name: string; bytes: number[]; want: ReturnType<typeof parseRequest> | string }[] = [
    { name: "partial header", bytes: [5, 1, 0], want: undefined },
    { name: "partial ipv4", bytes: [5, 1, 0, 1, 127, 0], want: undefined },
    { name: "ipv4 without port", bytes: [5, 1, 0, 1, 127, 0, 0, 1], want: undefined },
    {
      name: "ipv4 connect",
      bytes: [5, 1, 0, 1, 127, 30, 0, 1, 0, 80],
      want: { command: 1, addressType: "ipv4", host: "127.30.0.1", port: 80, length: 10 },
    },
    {
      name: "domain connect",
      bytes: [5, 1, 0, 3, 4, ...Buffer.from("echo"), 0x1f, 0x90],
      want: { command: 1, addressType: "domain", host: "echo", port: 8080, length: 11 },
    },
    { name: "partial domain", bytes: [5, 1, 0, 3, 4, 101], want: undefined },
    {
      name: "ipv6",
      bytes: [5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22],
      want: { command: 1, addressType: "ipv6", host: "0:0:0:0:0:0:0:1", port: 22, length: 22 },
    },
    {
      name: "bind command is parsed (refused later)",
      bytes: [5, 2, 0, 1, 1, 2, 3, 4, 0, 1],
      want: { command: 2, addressType: "ipv4", host: "1.2.3.4", port: 1, length: 10 },
    },
    { name: "bad version", bytes: [4, 1, 0, 1, 1, 2, 3, 4, 0, 1], want: "ERR_SOCKS5_PROTOCOL" },
    { name: "bad reserved", bytes: [5, 1, 7, 1, 1, 2, 3, 4, 0, 1], want: "ERR_SOCKS5_PROTOCOL" },
    { name: "unknown address type", bytes: [5, 1, 0, 9, 1, 2], want: "ERR_SOCKS5_UNSUPPORTED" },
    { name: "empty domain", bytes: [5, 1, 0, 3, 0, 0, 80], want: "ERR_SOCKS5_PROTOCOL" },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const { want } = c;
      if (typeof want === "string") {
        assert.throws(
          () => parseRequest(Uint8Array.from(c.bytes)),
          (err: unknown) => err instanceof ZtunnelError && err.code === want,
        );
      } else {
        assert.deepEqual(parseRequest(Uint8Array.from(c.bytes)), want);
      }
    });
  }
});

describe("encoders round-trip", () => {
  const requests: [string, number][] = [
    ["127.30.0.1", 80],
    ["echo.default.svc.cluster.local", 65535],
    ["0.0.0.0", 0],
  ];
  for (const [host, port] of requests) {
    it(`request ${host}:${port}`, () => {
      const bytes = encodeRequest(host, port);
      const parsed = parseRequest(bytes);
      assert.equal(parsed?.host, host);
      assert.equal(parsed?.port, port);
      assert.equal(parsed?.length, bytes.length);
    });
  }
  it("reply with the default bind address", () => {
    const bytes = encodeReply(SOCKS5_REPLY.connectionRefused);
    assert.deepEqual([...bytes], [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(parseReply(bytes), { reply: 5, host: "0.0.0.0", port: 0, length: 10 });
  });
  it("greeting and method selection", () => {
    assert.deepEqual([...encodeGreeting()], [5, 1, 0]);
    assert.deepEqual([...encodeMethodSelection(0xff)], [5, 0xff]);
  });
  it("refuses out-of-range ports and long names", () => {
    assert.throws(() => encodeRequest("1.2.3.4", 70000), ZtunnelError);
    assert.throws(() => encodeRequest("a".repeat(256), 1), ZtunnelError);
  });
});
