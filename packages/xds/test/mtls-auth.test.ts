// The auth hook sees the verified mTLS peer certificate and the request headers. Certificates are
// made with the openssl CLI at test time.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { TypeUrl } from "../src/type-registry.js";
import { createXdsClient } from "../src/xds-client.js";
import { createXdsServer, type XdsServer } from "../src/xds-server.js";

describe("mTLS and bearer-token authentication", () => {
  let dir: string;
  const pem: Record<string, Buffer> = {};
  let server: XdsServer;
  let port: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "xds-mtls-"));
    const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    const key = (name: string) =>
      run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`);
    key("ca");
    run(
      "req",
      "-x509",
      "-new",
      "-key",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "1",
      "-subj",
      "/O=cluster.local",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign",
    );
    const leaf = (name: string, san: string) => {
      key(name);
      run("req", "-new", "-key", `${name}.key`, "-out", `${name}.csr`, "-subj", `/O=${name}`);
      writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
      run(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        `${name}.crt`,
        "-days",
        "1",
        "-extfile",
        `${name}.ext`,
      );
    };
    leaf("istiod", "DNS:localhost,IP:127.0.0.1");
    leaf("ztunnel", "URI:spiffe://cluster.local/ns/istio-system/sa/ztunnel");
    for (const f of ["ca.crt", "istiod.crt", "istiod.key", "ztunnel.crt", "ztunnel.key"])
      pem[f] = readFileSync(join(dir, f));
    server = createXdsServer({
      debounceMs: 0,
      authenticate: ({ peerCertificate, headers }) => {
        const san = (peerCertificate as { subjectaltname?: string } | undefined)?.subjectaltname ?? "";
        if (!san.startsWith("URI:spiffe://cluster.local/ns/istio-system/sa/ztunnel"))
          throw new Error("not ztunnel");
        return { spiffeId: san.slice(4), clusterId: headers.clusterid?.[0] };
      },
    });
    server.cache.set(TypeUrl.address, "u1", { workload: { uid: "u1", name: "w1" } });
    port = await server.listen(
      "127.0.0.1:0",
      grpc.ServerCredentials.createSsl(
        pem["ca.crt"]!,
        [{ cert_chain: pem["istiod.crt"]!, private_key: pem["istiod.key"]! }],
        true,
      ),
    );
  });

  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("passes the verified client certificate and headers to the auth hook", { timeout: 20_000 }, async () => {
    const client = createXdsClient({
      address: `127.0.0.1:${port}`,
      credentials: grpc.credentials.createSsl(pem["ca.crt"], pem["ztunnel.key"], pem["ztunnel.crt"]),
      // A DNS name of the server certificate as TLS server name: TLS does not allow an IP there.
      channelOptions: { "grpc.ssl_target_name_override": "localhost" },
      headers: { clusterid: "Kubernetes" },
      node: { id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local" },
    });
    client.watch(TypeUrl.address);
    await client.ready();
    assert.equal(client.get(TypeUrl.address, "u1")?.workload?.name, "w1");
    assert.deepEqual(server.streams()[0]?.identity, {
      spiffeId: "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
      clusterId: "Kubernetes",
    });
    client.close();
  });

  it("refuses a peer whose certificate is not the expected identity", { timeout: 20_000 }, async () => {
    const client = createXdsClient({
      address: `127.0.0.1:${port}`,
      credentials: grpc.credentials.createSsl(pem["ca.crt"], pem["istiod.key"], pem["istiod.crt"]),
      channelOptions: { "grpc.ssl_target_name_override": "localhost" },
      node: { id: "impostor" },
    });
    const refused = new Promise<string | undefined>((resolve) =>
      client.onConnection((up, error) => {
        if (!up) resolve(error?.code);
      }),
    );
    client.watch(TypeUrl.address);
    assert.equal(await refused, "ERR_XDS_UNAUTHENTICATED");
    client.close();
  });

  it(
    "hands channelOptions to the gRPC channel (a TLS name the certificate lacks fails)",
    { timeout: 20_000 },
    async () => {
      const client = createXdsClient({
        address: `127.0.0.1:${port}`,
        credentials: grpc.credentials.createSsl(pem["ca.crt"], pem["ztunnel.key"], pem["ztunnel.crt"]),
        channelOptions: { "grpc.ssl_target_name_override": "not-in-the-certificate.example" },
        node: { id: "ztunnel~10.0.0.1~zt.istio-system~istio-system.svc.cluster.local" },
        initialBackoffMs: 50,
      });
      const failed = new Promise<string | undefined>((resolve) =>
        client.onConnection((up, error) => {
          if (!up) resolve(error?.code);
        }),
      );
      client.watch(TypeUrl.address);
      assert.equal(await failed, "ERR_XDS_UNAVAILABLE");
      assert.equal(server.streams().length, 0);
      client.close();
    },
  );
});
