// istiod's port-15012 certificate carries DNS names only (istiod.istio-system.svc and the like), no
// SPIFFE URI SAN, and Istio's ztunnel and pilot-agent check it by host name. The certificates here are
// made by openssl, not by this package, so the check meets a certificate shaped as istiod's is.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { createCertificateServiceClient } from "../src/ca.js";
import { certificateServiceDefinition } from "../src/certificate-service-proto.js";
import { grpcChannelCredentials } from "../src/grpc.js";
import { SpiffeError, TrustBundle } from "../src/index.js";
import { OpensslDir } from "./openssl.js";

const ISTIOD_NAME = "istiod.istio-system.svc";
const ISTIOD_ID = "spiffe://cluster.local/ns/istio-system/sa/istiod";

describe("a server certificate shaped as istiod's (DNS SANs only)", () => {
  const dir = new OpensslDir();
  const servers: grpc.Server[] = [];
  let root: string;

  /** A key and a certificate for `san`, signed by root `issuer`; returns [cert, key] PEM. */
  const serverCertificate = (name: string, san: string, issuer = "root"): [string, string] => {
    dir.makeSigned(name, issuer, "/O=cluster.local", [
      `subjectAltName=${san}`,
      "extendedKeyUsage=serverAuth,clientAuth",
    ]);
    return [dir.read(`${name}-cert.pem`), dir.read(`${name}-key.pem`)];
  };

  /** A CA server on 127.0.0.1 presenting `cert`; every call is answered UNIMPLEMENTED once TLS is up. */
  const serve = async ([cert, key]: [string, string]): Promise<number> => {
    const server = new grpc.Server();
    servers.push(server);
    server.addService(certificateServiceDefinition, {
      CreateCertificate: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
        callback({ code: grpc.status.UNIMPLEMENTED, details: "handshake passed" }),
    });
    return new Promise((resolve, reject) =>
      server.bindAsync(
        "127.0.0.1:0",
        grpc.ServerCredentials.createSsl(null, [
          { cert_chain: Buffer.from(cert), private_key: Buffer.from(key) },
        ]),
        (err, port) => (err ? reject(err) : resolve(port)),
      ),
    );
  };

  /** What a CreateCertificate call through credentials for `expected` ends with. */
  const outcome = async (
    port: number,
    expected: { expectedIds?: string[]; expectedHostnames?: string[] },
  ): Promise<string> => {
    const tls = grpcChannelCredentials({
      bundle: TrustBundle.fromPem("cluster.local", root),
      serverName: ISTIOD_NAME,
      ...expected,
    });
    const client = createCertificateServiceClient({
      address: `127.0.0.1:${port}`,
      credentials: tls.credentials,
      channelOptions: tls.channelOptions,
      timeoutMs: 5000,
    });
    try {
      await client.createCertificate(
        "-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n",
      );
      return "answered";
    } catch (err) {
      assert.ok(err instanceof SpiffeError, String(err));
      return /handshake passed/.test(err.message) ? "handshake passed" : `refused: ${err.message}`;
    } finally {
      client.close();
    }
  };

  before(() => {
    dir.makeRoot("root", "/O=cluster.local");
    root = dir.read("root-cert.pem");
  });
  after(() => {
    for (const server of servers) server.forceShutdown();
    dir.cleanup();
  });

  it("passes with expectedHostnames naming one of its DNS SANs", async () => {
    const port = await serve(serverCertificate("istiod", `DNS:istiod.istio-system,DNS:${ISTIOD_NAME}`));
    assert.equal(await outcome(port, { expectedHostnames: [ISTIOD_NAME] }), "handshake passed");
    assert.equal(
      await outcome(port, { expectedIds: [ISTIOD_ID], expectedHostnames: [ISTIOD_NAME] }),
      "handshake passed",
    );
  });

  it("is refused by the SPIFFE ID check alone, and for other host names", async () => {
    const port = await serve(serverCertificate("istiod2", `DNS:${ISTIOD_NAME}`));
    assert.match(await outcome(port, { expectedIds: [ISTIOD_ID] }), /^refused: .*no URI SAN/);
    assert.match(await outcome(port, { expectedHostnames: ["other.istio-system.svc"] }), /^refused: /);
  });

  it("is refused when it chains to another root, whatever its names", async () => {
    // A second root of the same name: the DNS SAN matches, the chain does not lead to the bundle.
    dir.makeRoot("other-root", "/O=cluster.local");
    const port = await serve(serverCertificate("stranger", `DNS:${ISTIOD_NAME}`, "other-root"));
    assert.match(await outcome(port, { expectedHostnames: [ISTIOD_NAME] }), /^refused: /);
  });

  it("needs an identity or a host name to check", () => {
    assert.throws(
      () => grpcChannelCredentials({ bundle: TrustBundle.fromPem("cluster.local", root), expectedIds: [] }),
      { code: "ERR_OPTIONS_INVALID" },
    );
    assert.throws(
      () =>
        grpcChannelCredentials({
          bundle: TrustBundle.fromPem("cluster.local", root),
          expectedHostnames: [""],
        }),
      { code: "ERR_OPTIONS_INVALID" },
    );
  });
});
