import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { serviceEntryPortProtocol, servicePortProtocol } from "./port-protocol.js";

describe("the protocol of a port, as Istio selects it", () => {
  const cases: [string, Parameters<typeof servicePortProtocol>[0], string | undefined][] = [
    ["appProtocol", { port: 80, appProtocol: "http" }, "HTTP11"],
    ["appProtocol, any case", { port: 80, appProtocol: "GRPC" }, "GRPC"],
    ["appProtocol is read instead of the name", { port: 80, name: "http", appProtocol: "mysql" }, "TCP"],
    ["an unknown appProtocol hides the name", { port: 80, name: "http", appProtocol: "custom" }, undefined],
    ["Kubernetes' h2c", { port: 80, appProtocol: "kubernetes.io/h2c" }, "HTTP2"],
    ["Kubernetes' WebSocket", { port: 80, appProtocol: "kubernetes.io/ws" }, "HTTP11"],
    ["Kubernetes' WebSocket over TLS", { port: 443, appProtocol: "kubernetes.io/wss" }, "TLS"],
    ["name", { port: 80, name: "http" }, "HTTP11"],
    ["name prefix", { port: 80, name: "http2-api" }, "HTTP2"],
    ["name prefix, any case", { port: 80, name: "GRPC-internal" }, "GRPC"],
    ["grpc-web is its own protocol", { port: 80, name: "grpc-web" }, undefined],
    ["a name that only starts like one", { port: 80, name: "httpbin" }, undefined],
    ["a database", { port: 6379, name: "redis" }, "TCP"],
    ["TLS", { port: 443, name: "https" }, "TLS"],
    ["no name, no appProtocol", { port: 8080 }, undefined],
    ["a server-first well-known port without a declared protocol", { port: 3306 }, "TCP"],
    ["SMTP under a name Istio does not know", { port: 25, name: "smtp" }, "TCP"],
    ["a well-known port declared HTTP", { port: 25, name: "http" }, "HTTP11"],
    ["UDP", { port: 53, name: "dns", protocol: "UDP" }, undefined],
    ["a name that is an Object property", { port: 80, name: "constructor" }, undefined],
  ];
  for (const [name, port, expected] of cases) {
    it(name, () => assert.equal(servicePortProtocol(port), expected));
  }

  it("of a ServiceEntry port, from its protocol", () => {
    assert.equal(serviceEntryPortProtocol("HTTP"), "HTTP11");
    assert.equal(serviceEntryPortProtocol("GRPC"), "GRPC");
    assert.equal(serviceEntryPortProtocol("MONGO"), "TCP");
    assert.equal(serviceEntryPortProtocol("HTTPS"), "TLS");
    assert.equal(serviceEntryPortProtocol("HTTP_PROXY"), undefined);
    assert.equal(serviceEntryPortProtocol(undefined), undefined);
  });
});
