import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import { type CertificateAuthority, createCertificateAuthority, startRootRotator } from "../src/ca.js";
import {
  peerSpiffeId,
  SpiffeError,
  spiffeIdFromCertificate,
  TrustBundle,
  tlsClientOptions,
  tlsServerOptions,
  verifySvid,
  type X509Svid,
} from "../src/index.js";
import { OpensslDir, svidExt } from "./openssl.js";

const TD = "cluster.local";
const SERVER_ID = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client";

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SpiffeError, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  });
}

describe("openssl interop", () => {
  const ossl = new OpensslDir();
  let selfCa: CertificateAuthority;
  let pluggedCa: CertificateAuthority;
  let bundle: TrustBundle;

  before(async () => {
    // An openssl-made root and intermediate in Istio's cacerts layout.
    ossl.makeRoot("root", "/O=openssl-root");
    ossl.makeSigned("ca", "root", "/O=openssl-intermediate", [
      "basicConstraints=critical,CA:TRUE,pathlen:0",
      "keyUsage=critical,keyCertSign,cRLSign",
      "subjectKeyIdentifier=hash",
      "authorityKeyIdentifier=keyid",
    ]);
    ossl.write("cert-chain.pem", ossl.read("ca-cert.pem") + ossl.read("root-cert.pem"));
    ossl.write("root-cert.pem", ossl.read("root-cert.pem"));
    selfCa = await createCertificateAuthority({ trustDomain: TD });
    pluggedCa = await createCertificateAuthority({ trustDomain: TD, cacerts: { dir: ossl.dir } });
    bundle = TrustBundle.fromPem(TD, ossl.read("root-cert.pem"));
  });
  after(() => ossl.cleanup());

  it("openssl verify accepts SVIDs from a self-signed and a plugged-in CA", async () => {
    const a = await selfCa.issue({ spiffeId: SERVER_ID });
    ossl.write("self-root.pem", selfCa.rootCertPem());
    ossl.write("self-leaf.pem", a.certChainPem);
    assert.match(ossl.run(["verify", "-CAfile", "self-root.pem", "self-leaf.pem"]), /self-leaf.pem: OK/);

    const b = await pluggedCa.issue({ spiffeId: SERVER_ID });
    const [leaf, ...rest] = b.certChainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
    assert.equal(rest.length, 1, "chain is leaf + intermediate, root kept apart");
    ossl.write("p-leaf.pem", leaf as string);
    ossl.write("p-chain.pem", rest.join(""));
    const out = ossl.run(["verify", "-CAfile", "root-cert.pem", "-untrusted", "p-chain.pem", "p-leaf.pem"]);
    assert.match(out, /p-leaf.pem: OK/);
    // verifySvid agrees on the 3-certificate path.
    assert.equal(verifySvid(b.certChainPem, bundle).toString(), SERVER_ID);
    assert.deepEqual(
      b.rootsPem,
      [ossl.read("root-cert.pem")].map((p) => p.replace(/\r/g, "")),
    );
  });

  it("openssl x509 -text shows the SVID's SAN, critical flags and key usages", async () => {
    const svid = await selfCa.issue({ spiffeId: CLIENT_ID });
    ossl.write("text-leaf.pem", svid.certChainPem);
    const text = ossl.run(["x509", "-in", "text-leaf.pem", "-noout", "-text"]);
    assert.match(
      text,
      /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/client/,
    );
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment/);
    assert.match(
      text,
      /X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/,
    );
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /Subject: *\n/);
  });

  it("accepts a well-formed openssl-made SVID", () => {
    ossl.makeSigned("good", "ca", "/O=good", svidExt(CLIENT_ID));
    const chain = ossl.read("good-cert.pem") + ossl.read("ca-cert.pem");
    assert.equal(verifySvid(chain, bundle).toString(), CLIENT_ID);
  });

  it("rejects openssl-made certificates that break SVID rules", () => {
    const base = svidExt(CLIENT_ID).filter((l) => !l.startsWith("subjectAltName"));
    ossl.makeSigned("two-uris", "ca", "/O=x", [
      ...base,
      `subjectAltName=critical,URI:${CLIENT_ID},URI:${SERVER_ID}`,
    ]);
    ossl.makeSigned("no-uri", "ca", "/O=x", [...base, "subjectAltName=DNS:example.com"]);
    ossl.makeSigned("ca-flag", "ca", "/O=x", [
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,digitalSignature,keyCertSign",
      `subjectAltName=critical,URI:${CLIENT_ID}`,
    ]);
    ossl.makeSigned("certsign", "ca", "/O=x", [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature,keyCertSign",
      `subjectAltName=critical,URI:${CLIENT_ID}`,
    ]);
    ossl.makeSigned("bad-id", "ca", "/O=x", [
      ...base,
      "subjectAltName=critical,URI:spiffe://Cluster.Local/x",
    ]);
    // The bare trust domain ID belongs to signing certificates; a leaf needs a path (X.509-SVID 3.1).
    ossl.makeSigned("bare-id", "ca", "/O=x", [...base, "subjectAltName=critical,URI:spiffe://cluster.local"]);
    const chain = (name: string) => ossl.read(`${name}-cert.pem`) + ossl.read("ca-cert.pem");
    expectCode(() => verifySvid(chain("two-uris"), bundle), "ERR_SVID_MULTIPLE_URI_SANS");
    expectCode(
      () => spiffeIdFromCertificate(new X509Certificate(ossl.read("two-uris-cert.pem"))),
      "ERR_SVID_MULTIPLE_URI_SANS",
    );
    expectCode(() => spiffeIdFromCertificate(ossl.read("no-uri-cert.pem")), "ERR_SVID_NO_URI_SAN");
    assert.equal(
      spiffeIdFromCertificate(new X509Certificate(ossl.read("good-cert.pem"))).toString(),
      CLIENT_ID,
    );
    expectCode(() => verifySvid(chain("no-uri"), bundle), "ERR_SVID_NO_URI_SAN");
    expectCode(() => verifySvid(chain("ca-flag"), bundle), "ERR_SVID_LEAF_INVALID");
    expectCode(() => verifySvid(chain("certsign"), bundle), "ERR_SVID_LEAF_INVALID");
    expectCode(() => verifySvid(chain("bad-id"), bundle), "ERR_SPIFFE_ID_INVALID");
    expectCode(() => verifySvid(chain("bare-id"), bundle), "ERR_SVID_LEAF_INVALID");
  });

  it("rejects expired and not-yet-valid openssl-made certificates", () => {
    ossl.makeSignedWindow("expired", "ca", svidExt(CLIENT_ID), "20200101000000Z", "20200102000000Z");
    ossl.makeSignedWindow("future", "ca", svidExt(CLIENT_ID), "20990101000000Z", "20990102000000Z");
    expectCode(
      () => verifySvid(ossl.read("expired-cert.pem") + ossl.read("ca-cert.pem"), bundle),
      "ERR_CERT_EXPIRED",
    );
    expectCode(
      () => verifySvid(ossl.read("future-cert.pem") + ossl.read("ca-cert.pem"), bundle),
      "ERR_CERT_NOT_YET_VALID",
    );
  });

  it("enforces issuer CA flags and path length", () => {
    // ca has pathlen:0, so a CA below it may not issue.
    ossl.makeSigned("sub", "ca", "/O=sub", [
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,keyCertSign",
      "subjectKeyIdentifier=hash",
    ]);
    ossl.makeSigned("deep", "sub", "/O=x", svidExt(CLIENT_ID));
    const deep = ossl.read("deep-cert.pem") + ossl.read("sub-cert.pem") + ossl.read("ca-cert.pem");
    expectCode(() => verifySvid(deep, bundle), "ERR_CERT_ISSUER_INVALID");
    // A non-CA certificate used as issuer.
    ossl.makeSigned("notca", "root", "/O=notca", [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
    ]);
    ossl.makeSigned("undernotca", "notca", "/O=y", svidExt(CLIENT_ID));
    const bad = ossl.read("undernotca-cert.pem") + ossl.read("notca-cert.pem");
    expectCode(() => verifySvid(bad, bundle), "ERR_CERT_ISSUER_INVALID");
    // Missing intermediate.
    expectCode(() => verifySvid(ossl.read("good-cert.pem"), bundle), "ERR_CHAIN_UNTRUSTED");
  });

  it("exports a plugged-in CA as the cacerts it was given, and openssl reads the exported key", () => {
    const exported = pluggedCa.exportCacerts();
    assert.equal(exported.caCertPem.trim(), ossl.read("ca-cert.pem").trim());
    assert.equal(exported.rootCertPem.trim(), ossl.read("root-cert.pem").trim());
    assert.equal(
      exported.certChainPem.replace(/\s+/g, ""),
      (ossl.read("ca-cert.pem") + ossl.read("root-cert.pem")).replace(/\s+/g, ""),
    );
    const self = selfCa.exportCacerts();
    ossl.write("self-key.pem", self.caKeyPem);
    ossl.write("self-cert.pem", self.caCertPem);
    // The key's public half is the certificate's public key.
    const fromKey = ossl.run(["pkey", "-in", "self-key.pem", "-pubout"]);
    const fromCert = ossl.run(["x509", "-in", "self-cert.pem", "-noout", "-pubkey"]);
    assert.match(fromKey, /-----BEGIN PUBLIC KEY-----/);
    assert.equal(fromKey, fromCert);
  });

  it("openssl verify accepts certificates across a root re-issued for the same key, both ways", async () => {
    const ca = await createCertificateAuthority({ trustDomain: TD });
    const before = await ca.issue({ spiffeId: SERVER_ID });
    ossl.write("reissue-old-root.pem", ca.rootCertPem());
    await ca.rotateRoot({ reuseKey: true });
    const after = await ca.issue({ spiffeId: CLIENT_ID });
    ossl.write("reissue-new-root.pem", ca.rootCertPem());
    ossl.write("reissue-old-leaf.pem", before.certChainPem);
    ossl.write("reissue-new-leaf.pem", after.certChainPem);
    // A peer that only has the old root accepts the new generation, and the other way round.
    assert.match(
      ossl.run(["verify", "-CAfile", "reissue-old-root.pem", "reissue-new-leaf.pem"]),
      /reissue-new-leaf.pem: OK/,
    );
    assert.match(
      ossl.run(["verify", "-CAfile", "reissue-new-root.pem", "reissue-old-leaf.pem"]),
      /reissue-old-leaf.pem: OK/,
    );
    // With a new key the old root alone does not: that rotation needs the bundle first.
    await ca.rotateRoot();
    ossl.write("rekey-leaf.pem", (await ca.issue({ spiffeId: CLIENT_ID })).certChainPem);
    const refused = await ossl.tryRun(["verify", "-CAfile", "reissue-old-root.pem", "rekey-leaf.pem"]);
    assert.notEqual(refused.code, 0, refused.output);
  });

  it("offers no root rotation for a plugged-in CA", async () => {
    assert.equal(pluggedCa.selfSigned, false);
    await assert.rejects(pluggedCa.rotateRoot(), { code: "ERR_CA_CONFIG_INVALID" });
    expectCode(() => startRootRotator(pluggedCa), "ERR_CA_CONFIG_INVALID");
  });

  it("refuses cacerts whose key does not match the certificate", async () => {
    await assert.rejects(
      createCertificateAuthority({
        cacerts: {
          caCertPem: ossl.read("ca-cert.pem"),
          caKeyPem: ossl.read("root-key.pem"),
          rootCertPem: ossl.read("root-cert.pem"),
        },
      }),
      { code: "ERR_CA_CONFIG_INVALID" },
    );
    await assert.rejects(
      createCertificateAuthority({
        cacerts: {
          caCertPem: ossl.read("ca-cert.pem"),
          caKeyPem: ossl.read("ca-key.pem"),
          rootCertPem: selfCa.rootCertPem(),
        },
      }),
      { code: "ERR_CA_CONFIG_INVALID" },
    );
    await assert.rejects(
      createCertificateAuthority({
        cacerts: { dir: ossl.dir },
        clock: () => new Date("2099-01-01T00:00:00Z"),
      }),
      { code: "ERR_CA_CONFIG_INVALID", message: /not valid now/ },
    );
    await assert.rejects(createCertificateAuthority({ cacerts: { dir: ossl.path("missing") } }), {
      code: "ERR_CA_CONFIG_INVALID",
    });
  });

  describe("mTLS with s_server / s_client", () => {
    let server: X509Svid;
    let client: X509Svid;
    before(async () => {
      server = await pluggedCa.issue({ spiffeId: SERVER_ID });
      client = await pluggedCa.issue({ spiffeId: CLIENT_ID });
      ossl.write("srv-chain.pem", server.certChainPem);
      ossl.write("srv-key.pem", server.privateKeyPem);
      ossl.write("cli-chain.pem", client.certChainPem);
      ossl.write("cli-key.pem", client.privateKeyPem);
      // openssl takes the leaf from -cert and the intermediates from -cert_chain.
      ossl.write("intermediate.pem", ossl.read("ca-cert.pem"));
    });

    it("our client options connect to openssl s_server requiring a client certificate", async () => {
      const child = spawn(
        "openssl",
        [
          "s_server",
          "-accept",
          "127.0.0.1:0",
          "-naccept",
          "1",
          "-tls1_3",
          "-cert",
          "srv-chain.pem",
          "-cert_chain",
          "intermediate.pem",
          "-key",
          "srv-key.pem",
          "-CAfile",
          "root-cert.pem",
          "-Verify",
          "3",
          "-verify_return_error",
        ],
        { cwd: ossl.dir, stdio: ["pipe", "pipe", "pipe"] },
      );
      try {
        let out = "";
        const port = await new Promise<number>((resolve, reject) => {
          child.stdout.on("data", (d: Buffer) => {
            out += d.toString();
            const m = /ACCEPT 127\.0\.0\.1:(\d+)/.exec(out);
            if (m) resolve(Number(m[1]));
          });
          child.once("exit", () => reject(new Error(`s_server exited: ${out}`)));
        });
        const opts = tlsClientOptions({ svid: client, bundle, expectedIds: [SERVER_ID] });
        const socket = tls.connect({ ...opts, host: "127.0.0.1", port });
        await once(socket, "secureConnect");
        assert.equal(peerSpiffeId(socket).toString(), SERVER_ID);
        socket.write("hello from node\n");
        await new Promise<void>((resolve) => {
          const check = () => (/hello from node/.test(out) ? resolve() : undefined);
          child.stdout.on("data", check);
          check();
        });
        socket.destroy();
        // s_server prints the verified client certificate's subject/SAN handling.
        assert.doesNotMatch(out, /verify error/);
      } finally {
        child.kill();
        if (child.exitCode === null) await once(child, "exit");
      }
    });

    it("openssl s_client with a client certificate connects to our server options", async () => {
      const opts = tlsServerOptions({ svid: server, bundle, authorize: [CLIENT_ID] });
      const srv = tls.createServer(opts);
      const seen = new Promise<string>((resolve, reject) => {
        srv.once("secureConnection", (socket: tls.TLSSocket) => {
          try {
            const id = opts.authorizePeer(socket);
            socket.end("bye\n");
            resolve(id.toString());
          } catch (err) {
            socket.destroy();
            reject(err);
          }
        });
        srv.once("tlsClientError", reject);
      });
      srv.listen(0, "127.0.0.1");
      await once(srv, "listening");
      const { port } = srv.address() as AddressInfo;
      try {
        // s_client's exit status depends on how the close races its stdin EOF, so only its output is checked.
        const { output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
          const child = spawn(
            "openssl",
            [
              "s_client",
              "-connect",
              `127.0.0.1:${port}`,
              "-tls1_3",
              "-cert",
              "cli-chain.pem",
              "-cert_chain",
              "intermediate.pem",
              "-key",
              "cli-key.pem",
              "-CAfile",
              "root-cert.pem",
              "-verify_return_error",
              "-noservername",
            ],
            { cwd: ossl.dir, stdio: ["pipe", "pipe", "pipe"] },
          );
          let output = "";
          child.stdout.on("data", (d: Buffer) => {
            output += d.toString();
          });
          child.stderr.on("data", (d: Buffer) => {
            output += d.toString();
          });
          child.once("exit", (c) => resolve({ code: c, output }));
          seen.then(
            () => child.stdin.end(),
            () => child.stdin.end(),
          );
        });
        assert.equal(await seen, CLIENT_ID);
        assert.match(output, /Verify return code: 0 \(ok\)/);
      } finally {
        srv.close();
      }
    });

    it("our server refuses an openssl client without a certificate", async () => {
      const opts = tlsServerOptions({ svid: server, bundle });
      const srv = tls.createServer(opts);
      const rejected = once(srv, "tlsClientError");
      srv.listen(0, "127.0.0.1");
      await once(srv, "listening");
      const { port } = srv.address() as AddressInfo;
      const child = spawn(
        "openssl",
        ["s_client", "-connect", `127.0.0.1:${port}`, "-tls1_3", "-CAfile", "root-cert.pem", "-noservername"],
        { cwd: ossl.dir, stdio: ["pipe", "ignore", "ignore"] },
      );
      try {
        const [err] = (await rejected) as [Error & { code?: string }];
        assert.match(String(err.code ?? err.message), /CERTIFICATE|certificate/);
      } finally {
        child.stdin.end();
        if (child.exitCode === null) {
          child.kill();
          await once(child, "exit");
        }
        srv.close();
      }
    });
  });
});
