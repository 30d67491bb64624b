import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { canonicalIp } from "./ip-address.js";
import { SOCKS5_REPLY } from "./socks5.js";
import {
  decideGreeting,
  decideRequest,
  SOCKS5_MAX_GREETING_BYTES,
  SOCKS5_MAX_REQUEST_BYTES,
  type Socks5RequestDecision,
} from "./socks5-request.js";

// A Map, as the workload store keeps Services: a plain object would answer `__proto__` or `constructor`.
const services = new Map([["echo.demo.svc.cluster.local", "127.30.0.1"]]);
const resolve = (name: string): string | undefined => services.get(name);

function domain(name: string, port = 80, command = 1): number[] {
  const bytes = [...Buffer.from(name, "latin1")];
  return [5, command, 0, 3, bytes.length, ...bytes, port >> 8, port & 0xff];
}

describe("decideGreeting", () => {
  const cases: [string, number[], ReturnType<typeof decideGreeting>["kind"]][] = [
    ["empty", [], "incomplete"],
    ["version only", [5], "incomplete"],
    ["methods missing", [5, 2, 0], "incomplete"],
    ["no auth offered", [5, 1, 0], "accept"],
    ["no auth among others", [5, 3, 2, 1, 0], "accept"],
    ["only user/password", [5, 1, 2], "refuse"],
    ["zero methods", [5, 0], "refuse"],
    ["SOCKS4", [4, 1, 0], "refuse"],
    ["HTTP", [...Buffer.from("GET / HTTP/1.1\r\n")], "refuse"],
  ];
  for (const [name, bytes, want] of cases) {
    it(name, () => assert.equal(decideGreeting(Uint8Array.from(bytes)).kind, want));
  }
  it("answers a refused method list with 0xff", () => {
    const d = decideGreeting(Uint8Array.from([5, 1, 2]));
    assert.equal(d.kind, "refuse");
    assert.deepEqual(d.kind === "refuse" ? [...(d.response ?? [])] : [], [5, 0xff]);
  });
});

describe("decideRequest", () => {
  const connect = (ip: string, port: number, length: number, hostname?: string): Socks5RequestDecision => ({
    kind: "connect",
    ip,
    family: ip.includes(":") ? 6 : 4,
    port,
    length,
    ...(hostname === undefined ? {} : { hostname }),
  });
  const refuse = (reply: number) => ({ kind: "refuse" as const, reply });
  const cases: [string, number[], Socks5RequestDecision | { kind: "refuse"; reply: number }][] = [
    ["partial header", [5, 1, 0], { kind: "incomplete" }],
    ["partial IPv4", [5, 1, 0, 1, 127, 0], { kind: "incomplete" }],
    ["IPv4 without port", [5, 1, 0, 1, 127, 0, 0, 1], { kind: "incomplete" }],
    ["IPv4", [5, 1, 0, 1, 127, 10, 0, 3, 0, 80], connect("127.10.0.3", 80, 10)],
    ["IPv6", [5, 1, 0, 4, ...new Array(15).fill(0), 1, 0, 22], connect("::1", 22, 22)],
    [
      "IPv4-mapped IPv6 becomes IPv4",
      [5, 1, 0, 4, ...new Array(10).fill(0), 255, 255, 127, 10, 0, 3, 0, 80],
      connect("127.10.0.3", 80, 22),
    ],
    [
      "Service hostname",
      domain("echo.demo.svc.cluster.local"),
      connect("127.30.0.1", 80, 34, "echo.demo.svc.cluster.local"),
    ],
    [
      "Service hostname, upper case, trailing dot",
      domain("ECHO.demo.svc.cluster.local."),
      connect("127.30.0.1", 80, 35, "echo.demo.svc.cluster.local"),
    ],
    ["canonical IPv4 in the name field", domain("127.10.0.3", 8080), connect("127.10.0.3", 8080, 17)],
    ["IPv6 in the name field", domain("0:0::1", 8080), connect("::1", 8080, 13)],
    ["hex integer", domain("0x7f0a0003"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["decimal integer", domain("2131361795"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["octal dotted", domain("0177.0.0.1"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["three parts", domain("127.10.3"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["two parts", domain("127.1"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["IPv6 with a zone", domain("::1%lo"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["a name outside the mesh", domain("localhost"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["a short form the store does not know", domain("echo"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["a name with a NUL", domain("echo.demo.svc.cluster.local\0"), refuse(SOCKS5_REPLY.hostUnreachable)],
    ["empty name", [5, 1, 0, 3, 0, 0, 80], refuse(SOCKS5_REPLY.generalFailure)],
    ["bad version", [4, 1, 0, 1, 1, 2, 3, 4, 0, 1], refuse(SOCKS5_REPLY.generalFailure)],
    ["bad reserved byte", [5, 1, 7, 1, 1, 2, 3, 4, 0, 1], refuse(SOCKS5_REPLY.generalFailure)],
    ["unknown address type", [5, 1, 0, 9, 1, 2], refuse(SOCKS5_REPLY.addressTypeNotSupported)],
    ["BIND", [5, 2, 0, 1, 1, 2, 3, 4, 0, 1], refuse(SOCKS5_REPLY.commandNotSupported)],
    ["UDP ASSOCIATE", [5, 3, 0, 1, 1, 2, 3, 4, 0, 1], refuse(SOCKS5_REPLY.commandNotSupported)],
    ["port 0", [5, 1, 0, 1, 1, 2, 3, 4, 0, 0], refuse(SOCKS5_REPLY.connectionRefused)],
  ];
  for (const [name, bytes, want] of cases) {
    it(name, () => {
      const got = decideRequest(Uint8Array.from(bytes), resolve);
      if (want.kind === "refuse") {
        assert.equal(got.kind, "refuse");
        assert.equal(got.kind === "refuse" ? got.reply : -1, want.reply);
      } else assert.deepEqual(got, want);
    });
  }
});

describe("decideRequest over random bytes", () => {
  // Random requests: mostly well-formed headers with random addresses and names (IP-like text
  // included), plus arbitrary byte strings.
  const ipLike = fc.oneof(
    fc.tuple(fc.nat(999), fc.nat(999), fc.nat(999), fc.nat(999)).map((p) => p.join(".")),
    fc.array(fc.nat(0xffffffff), { minLength: 1, maxLength: 3 }).map((p) => p.join(".")),
    fc.nat(0xffffffff).map((n) => `0x${n.toString(16)}`),
    fc.nat(0xffffffff).map((n) => `0${n.toString(8)}`),
    fc.constantFrom(
      "127.1",
      "127.10.3",
      "0177.0.0.1",
      "::ffff:127.1",
      "::1",
      "0::0:1",
      "echo.demo.svc.cluster.local",
    ),
    fc.string({ minLength: 1, maxLength: 40 }),
  );
  const request = fc.oneof(
    fc
      .tuple(fc.nat(255), fc.nat(255), fc.constantFrom(1, 3, 4, 0, 2, 255), fc.uint8Array({ maxLength: 40 }))
      .map(([cmd, rsv, atyp, rest]) => Uint8Array.from([5, cmd % 4, rsv % 3 === 0 ? 0 : rsv, atyp, ...rest])),
    fc.tuple(ipLike, fc.nat(65535), fc.constantFrom(1, 1, 2)).map(([name, port, cmd]) => {
      const bytes = Buffer.from(name, "latin1").subarray(0, 255);
      return Uint8Array.from([5, cmd, 0, 3, bytes.length, ...bytes, port >> 8, port & 0xff]);
    }),
    fc.uint8Array({ maxLength: SOCKS5_MAX_REQUEST_BYTES + 10 }),
  );

  it("never throws, connects only to canonical addresses or known Services, and answers complete requests", () => {
    fc.assert(
      fc.property(request, (bytes) => {
        const d = decideRequest(bytes, resolve);
        if (d.kind === "connect") {
          // The address dialled is canonical text that parses back to itself.
          assert.equal(canonicalIp(d.ip)?.text, d.ip);
          assert.ok(d.port > 0 && d.port < 65536);
          assert.ok(d.length <= bytes.length);
          if (bytes[3] === 3) {
            const name = Buffer.from(bytes.subarray(5, 5 + (bytes[4] ?? 0))).toString("latin1");
            // A name is dialled only when it is canonical IP text or a known Service.
            if (d.hostname === undefined) assert.equal(canonicalIp(name)?.text !== undefined, true);
            else assert.equal(services.get(d.hostname), d.ip);
          }
        } else if (d.kind === "refuse") {
          assert.ok(Number.isInteger(d.reply) && d.reply > 0 && d.reply <= 8);
        } else {
          // Only a strict prefix of a possible request is incomplete.
          assert.ok(bytes.length < SOCKS5_MAX_REQUEST_BYTES);
        }
      }),
      { numRuns: 5000 },
    );
  });

  it("decides every greeting by its maximal length", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: SOCKS5_MAX_GREETING_BYTES, maxLength: SOCKS5_MAX_GREETING_BYTES + 4 }),
        (bytes) => {
          assert.notEqual(decideGreeting(bytes).kind, "incomplete");
        },
      ),
    );
  });
});
