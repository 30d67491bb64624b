import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { adminJson, adminJsonView } from "./admin-json.js";

const v6 = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1]);

describe("adminJsonView", () => {
  it("writes every address as text, from Uint8Array and Buffer, however deeply nested", () => {
    const dump = {
      workloads: [
        {
          name: "echo-0",
          addresses: [Buffer.from([127, 10, 0, 3]), v6],
          waypoint: { address: { network: "", address: Buffer.from([127, 10, 0, 7]) }, hboneMtlsPort: 15008 },
          networkGateway: { address: { network: "n", address: Uint8Array.from([10, 0, 0, 1]) } },
          extensions: [{ name: "x", config: { typeUrl: "t", value: Buffer.from("hi") } }],
        },
      ],
      services: [{ hostname: "echo", addresses: [{ network: "", address: Buffer.from([127, 30, 0, 1]) }] }],
      policies: [{ rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: v6, length: 64 }] }] }] }] }],
      byUid: new Map([["a", { addresses: [Buffer.from([1, 2, 3, 4])] }]]),
    };
    assert.deepEqual(adminJsonView(dump), {
      workloads: [
        {
          name: "echo-0",
          addresses: ["127.10.0.3", "2001:db8::1"],
          waypoint: { address: { network: "", address: "127.10.0.7" }, hboneMtlsPort: 15008 },
          networkGateway: { address: { network: "n", address: "10.0.0.1" } },
          extensions: [{ name: "x", config: { typeUrl: "t", value: "aGk=" } }],
        },
      ],
      services: [{ hostname: "echo", addresses: [{ network: "", address: "127.30.0.1" }] }],
      policies: [
        { rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: "2001:db8::1", length: 64 }] }] }] }] },
      ],
      byUid: { a: { addresses: ["1.2.3.4"] } },
    });
  });

  it("never prints a byte array", () => {
    const text = adminJson({
      a: Buffer.from([1, 2, 3]),
      address: Uint8Array.from([1, 2, 3]),
      addresses: [Buffer.alloc(4)],
    });
    assert.doesNotMatch(text, /"type": "Buffer"|"data"|"0": /);
    assert.deepEqual(JSON.parse(text), { a: "AQID", address: "AQID", addresses: ["0.0.0.0"] });
  });
});
