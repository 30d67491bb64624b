import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Workload } from "@ambient/xds";
import { decideCapturedOutbound, decidePlaintextInbound, isProxySelfCall } from "./in-pod-decisions.js";

describe("isProxySelfCall", () => {
  // The SOCKS5 listener's view: the node IP it was reached at, its own port 15080 among the proxy's.
  const proxy = { ownIps: ["10.0.0.1"], ports: [15008, 15006, 15001, 15080] };
  const cases: [string, string, number, boolean][] = [
    ["the SOCKS5 port on loopback", "127.0.0.1", 15080, true],
    ["HBONE on any loopback address", "127.9.9.9", 15008, true],
    ["15001 on IPv6 loopback", "::1", 15001, true],
    ["15006 on the node IP", "10.0.0.1", 15006, true],
    ["an app port on loopback", "127.0.0.1", 8080, false],
    ["an app port on the node IP", "10.0.0.1", 8080, false],
    ["another pod's HBONE port", "10.0.2.12", 15008, false],
  ];
  for (const [name, address, port, want] of cases) {
    it(`${name}: ${want ? "the proxy" : "not the proxy"}`, () =>
      assert.equal(isProxySelfCall({ address, port }, proxy), want));
  }
});

describe("decideCapturedOutbound", () => {
  const pod = { ip: "10.0.1.11", proxyPorts: [15001, 15006, 15008] };
  const cases: [string, string, number, string][] = [
    ["another pod", "10.0.2.12", 8080, "dial"],
    ["a Service VIP", "10.96.0.10", 80, "dial"],
    ["another pod's HBONE port (not this proxy)", "10.0.2.12", 15008, "dial"],
    ["the pod itself on an app port", "10.0.1.11", 8080, "dial"],
    ["the pod itself on 15001", "10.0.1.11", 15001, "refuse"],
    ["loopback on 15006", "127.0.0.1", 15006, "refuse"],
    ["IPv6 loopback on 15008", "::1", 15008, "refuse"],
    ["an unspecified address", "0.0.0.0", 80, "refuse"],
    ["port 0", "10.0.2.12", 0, "refuse"],
  ];
  for (const [name, address, port, want] of cases) {
    it(`${want}s ${name}`, () => assert.equal(decideCapturedOutbound(pod, { address, port }).kind, want));
  }
});

describe("decidePlaintextInbound", () => {
  const echo = { name: "echo", namespace: "demo" } as Workload;
  const store = { findByAddress: (ip: string) => (ip === "10.0.2.12" ? echo : undefined) };
  const pod = { ip: "10.0.2.12", hbonePort: 15008, proxyPorts: [15001, 15006] };
  const cases: [string, string, number, string][] = [
    ["the pod's app port", "10.0.2.12", 8080, "serve"],
    ["another address (a spoofed original destination)", "10.0.2.13", 8080, "not addressed to this pod"],
    ["the HBONE port", "10.0.2.12", 15008, "the HBONE port takes no plaintext"],
    // A dial there reaches the proxy's own listener, which would serve it again: a loop.
    ["the plaintext inbound port", "10.0.2.12", 15006, "destination is the proxy itself"],
    ["the outbound capture port", "10.0.2.12", 15001, "destination is the proxy itself"],
  ];
  for (const [name, address, port, want] of cases) {
    it(`${name}: ${want}`, () => {
      const got = decidePlaintextInbound(pod, { address, port }, store);
      assert.equal(got.kind === "serve" ? "serve" : got.reason, want);
      if (got.kind === "serve") assert.equal(got.workload, echo);
    });
  }
  it("refuses a pod that is not a known workload", () => {
    const got = decidePlaintextInbound(
      { ip: "10.0.2.99", hbonePort: 15008 },
      { address: "10.0.2.99", port: 80 },
      store,
    );
    assert.deepEqual(got, { kind: "refuse", reason: "not a known workload" });
  });
});
