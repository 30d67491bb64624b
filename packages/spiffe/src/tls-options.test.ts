import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { before, describe, it } from "node:test";
import tls from "node:tls";
import { type CertificateAuthority, createCertificateAuthority } from "./certificate-authority.js";
import { peerSpiffeId } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import type { SpiffeId } from "./spiffe-id.js";
import { SpiffeId as SpiffeIdClass } from "./spiffe-id.js";
import { tlsClientOptions, tlsServerOptions } from "./tls-options.js";
import { type TrustBundle, TrustBundle as TrustBundleClass } from "./trust-bundle.js";
import { x509 } from "./x509.js";
import type { X509Svid } from "./x509-svid.js";

const SERVER_ID = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client";

interface Outcome {
  server: { id?: SpiffeId; error?: unknown; servername?: string | false | null };
  client: { id?: SpiffeId; error?: unknown };
}

async function connect(
  serverOpts: ReturnType<typeof tlsServerOptions>,
  clientOpts: ReturnType<typeof tlsClientOptions>,
): Promise<Outcome> {
  const outcome: Outcome = { server: {}, client: {} };
  const server = tls.createServer(serverOpts);
  const serverDone = new Promise<void>((resolve) => {
    server.once("tlsClientError", (err) => {
      outcome.server.error = err;
      resolve();
    });
    server.once("secureConnection", (socket: tls.TLSSocket) => {
      outcome.server.servername = socket.servername;
      try {
        outcome.server.id = serverOpts.authorizePeer(socket);
        socket.end("ok");
      } catch (err) {
        outcome.server.error = err;
        socket.destroy();
      }
      resolve();
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const socket = tls.connect({ ...clientOpts, host: "127.0.0.1", port });
  const clientDone = new Promise<void>((resolve) => {
    socket.once("secureConnect", () => {
      try {
        outcome.client.id = peerSpiffeId(socket);
      } catch (err) {
        outcome.client.error = err;
      }
    });
    socket.on("error", (err) => {
      outcome.client.error ??= err;
      resolve();
    });
    socket.on("close", () => resolve());
    socket.resume();
  });
  await clientDone;
  socket.destroy();
  await Promise.race([serverDone, new Promise((r) => setTimeout(r, 5000).unref())]);
  server.close();
  await once(server, "close");
  return outcome;
}

describe("TLS glue", () => {
  let ca: CertificateAuthority;
  let otherCa: CertificateAuthority;
  let serverSvid: X509Svid;
  let clientSvid: X509Svid;
  let strangerSvid: X509Svid;
  before(async () => {
    ca = await createCertificateAuthority();
    otherCa = await createCertificateAuthority();
    serverSvid = await ca.issue({ spiffeId: SERVER_ID });
    clientSvid = await ca.issue({ spiffeId: CLIENT_ID });
    strangerSvid = await otherCa.issue({ spiffeId: CLIENT_ID });
  });

  it("builds TLS 1.3 mTLS options without SNI", () => {
    const s = tlsServerOptions({ svid: serverSvid, bundle: ca.trustBundle() });
    assert.equal(s.requestCert, true);
    assert.equal(s.rejectUnauthorized, true);
    assert.equal(s.minVersion, "TLSv1.3");
    const c = tlsClientOptions({ svid: clientSvid, bundle: ca.trustBundle(), expectedIds: [SERVER_ID] });
    assert.equal(c.servername, "");
    assert.equal(c.ca.length, 1);
  });

  it("refuses a missing bundle, SVID or expected identities up front", () => {
    const bundle = ca.trustBundle();
    for (const bad of [undefined, null, {}, "bundle"]) {
      const b = bad as unknown as TrustBundle;
      for (const make of [
        () => tlsServerOptions({ svid: serverSvid, bundle: b }),
        () => tlsClientOptions({ svid: clientSvid, bundle: b, expectedIds: [SERVER_ID] }),
      ]) {
        assert.throws(
          make,
          (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
          String(bad),
        );
      }
      const svid = bad as unknown as X509Svid;
      for (const make of [
        () => tlsServerOptions({ svid, bundle }),
        () => tlsClientOptions({ svid, bundle, expectedIds: [SERVER_ID] }),
      ]) {
        assert.throws(
          make,
          (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
          String(bad),
        );
      }
    }
    for (const expectedIds of [undefined, SERVER_ID, null]) {
      assert.throws(
        () =>
          tlsClientOptions({
            svid: clientSvid,
            bundle,
            expectedIds: expectedIds as unknown as string[],
          }),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
        String(expectedIds),
      );
    }
    for (const options of [undefined, null]) {
      const o = options as unknown as Parameters<typeof tlsServerOptions>[0];
      assert.throws(() => tlsServerOptions(o), { code: "ERR_OPTIONS_INVALID" });
      assert.throws(() => tlsClientOptions(o as unknown as Parameters<typeof tlsClientOptions>[0]), {
        code: "ERR_OPTIONS_INVALID",
      });
    }
  });

  it("connects and both sides learn the peer identity", async () => {
    const out = await connect(
      tlsServerOptions({ svid: serverSvid, bundle: ca.trustBundle(), authorize: [CLIENT_ID] }),
      tlsClientOptions({ svid: clientSvid, bundle: ca.trustBundle(), expectedIds: [SERVER_ID] }),
    );
    assert.equal(out.client.error, undefined);
    assert.equal(out.server.error, undefined);
    assert.equal(out.server.id?.toString(), CLIENT_ID);
    assert.equal(out.client.id?.toString(), SERVER_ID);
    assert.equal(out.server.servername, false, "no SNI sent");
  });

  it("client refuses a server with an unexpected identity", async () => {
    const out = await connect(
      tlsServerOptions({ svid: serverSvid, bundle: ca.trustBundle() }),
      tlsClientOptions({
        svid: clientSvid,
        bundle: ca.trustBundle(),
        expectedIds: ["spiffe://cluster.local/ns/default/sa/other"],
      }),
    );
    assert.equal((out.client.error as { code?: string }).code, "ERR_PEER_NOT_AUTHORIZED");
    assert.equal(out.client.id, undefined);
  });

  it("server refuses a verified client that is not allowed", async () => {
    const out = await connect(
      tlsServerOptions({
        svid: serverSvid,
        bundle: ca.trustBundle(),
        authorize: (id) => id.path.endsWith("/sa/admin"),
      }),
      tlsClientOptions({ svid: clientSvid, bundle: ca.trustBundle(), expectedIds: [SERVER_ID] }),
    );
    assert.equal((out.server.error as { code?: string }).code, "ERR_PEER_NOT_AUTHORIZED");
  });

  it("handshake fails for a client from another CA", async () => {
    const out = await connect(
      tlsServerOptions({ svid: serverSvid, bundle: ca.trustBundle() }),
      tlsClientOptions({ svid: strangerSvid, bundle: ca.trustBundle(), expectedIds: [SERVER_ID] }),
    );
    // With TLS 1.3 the client may finish first; the server rejects the certificate.
    assert.ok(out.server.error instanceof Error, "server rejected the handshake");
    assert.equal(out.server.id, undefined);
  });

  it("default server policy accepts only its own trust domain", async () => {
    const foreignCa = await createCertificateAuthority({ trustDomain: "example.org" });
    const foreign = await foreignCa.issue({ spiffeId: "spiffe://example.org/ns/a/sa/b" });
    const bundle = ca.trustBundle();
    bundle.addRoots("example.org", foreignCa.rootCertPem());
    const out = await connect(
      tlsServerOptions({ svid: serverSvid, bundle }),
      tlsClientOptions({ svid: foreign, bundle, expectedIds: [SERVER_ID] }),
    );
    assert.equal((out.server.error as { code?: string }).code, "ERR_PEER_NOT_AUTHORIZED");
  });
});

describe("TLS glue with a bundle of several trust domains", () => {
  let ca: CertificateAuthority;
  // A CA trusted only for example.org that mints identities of cluster.local.
  let rogueCa: CertificateAuthority;
  let serverSvid: X509Svid;
  let clientSvid: X509Svid;
  before(async () => {
    ca = await createCertificateAuthority();
    rogueCa = await createCertificateAuthority();
    serverSvid = await ca.issue({ spiffeId: SERVER_ID });
    clientSvid = await ca.issue({ spiffeId: CLIENT_ID });
  });

  function federated() {
    const bundle = ca.trustBundle();
    bundle.addRoots("example.org", rogueCa.rootCertPem());
    return bundle;
  }

  it("server refuses a client whose chain ends at another trust domain's root", async () => {
    const forged = await rogueCa.issue({ spiffeId: CLIENT_ID });
    const out = await connect(
      tlsServerOptions({ svid: serverSvid, bundle: federated(), authorize: [CLIENT_ID] }),
      tlsClientOptions({ svid: forged, bundle: federated(), expectedIds: [SERVER_ID] }),
    );
    assert.equal(out.server.id, undefined);
    assert.equal((out.server.error as { code?: string }).code, "ERR_PEER_UNVERIFIED");
  });

  it("client refuses a server whose chain ends at another trust domain's root", async () => {
    const forged = await rogueCa.issue({ spiffeId: SERVER_ID });
    const out = await connect(
      tlsServerOptions({ svid: forged, bundle: federated() }),
      tlsClientOptions({ svid: clientSvid, bundle: federated(), expectedIds: [SERVER_ID] }),
    );
    assert.equal(out.client.id, undefined);
    assert.equal((out.client.error as { code?: string }).code, "ERR_PEER_UNVERIFIED");
  });

  it("still connects when each chain ends at its own trust domain's root", async () => {
    const out = await connect(
      tlsServerOptions({ svid: serverSvid, bundle: federated(), authorize: [CLIENT_ID] }),
      tlsClientOptions({ svid: clientSvid, bundle: federated(), expectedIds: [SERVER_ID] }),
    );
    assert.equal(out.client.error, undefined);
    assert.equal(out.server.error, undefined);
    assert.equal(out.server.id?.toString(), CLIENT_ID);
    assert.equal(out.client.id?.toString(), SERVER_ID);
  });
});

describe("TLS glue with weak signing keys", () => {
  /** An SVID for `id` issued by a root whose RSA key has only 1024 bits; returns the SVID and its root. */
  async function weakSvid(id: string): Promise<{ svid: X509Svid; rootPem: string }> {
    const subtle = webcrypto.subtle;
    const rootKeys = (await subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        modulusLength: 1024,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      true,
      ["sign", "verify"],
    )) as webcrypto.CryptoKeyPair;
    const leafKeys = (await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as webcrypto.CryptoKeyPair;
    const notBefore = new Date(Date.now() - 3_600_000);
    const notAfter = new Date(Date.now() + 3_600_000);
    const alg = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: "01",
      name: `O=weak-root,CN=${id}`,
      notBefore,
      notAfter,
      keys: rootKeys,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ],
    });
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: "02",
      subject: "",
      issuer: root.subject,
      notBefore,
      notAfter,
      publicKey: leafKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: id }], true),
      ],
    });
    const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", leafKeys.privateKey)).toString("base64");
    const privateKeyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.replace(/.{64}/g, "$&\n")}\n-----END PRIVATE KEY-----\n`;
    const svid: X509Svid = {
      spiffeId: SpiffeIdClass.parse(id),
      certChainPem: leaf.toString("pem"),
      privateKeyPem: privateKeyPem.replace(/\n\n/g, "\n"),
      notBefore,
      notAfter,
      rootsPem: [root.toString("pem")],
    };
    return { svid, rootPem: root.toString("pem") };
  }

  it("each side refuses a peer whose chain is signed by an RSA key under 2048 bits", async () => {
    const ca = await createCertificateAuthority();
    const serverSvid = await ca.issue({ spiffeId: SERVER_ID });
    const clientSvid = await ca.issue({ spiffeId: CLIENT_ID });
    const weakServer = await weakSvid(SERVER_ID);
    const weakClient = await weakSvid(CLIENT_ID);
    const bundle = ca.trustBundle();
    bundle.addRoots("cluster.local", weakServer.rootPem);
    bundle.addRoots("cluster.local", weakClient.rootPem);
    const causeCode = (err: unknown) => (err as { cause?: { code?: string } }).cause?.code;

    const toWeakServer = await connect(
      tlsServerOptions({ svid: weakServer.svid, bundle }),
      tlsClientOptions({ svid: clientSvid, bundle, expectedIds: [SERVER_ID] }),
    );
    assert.equal(toWeakServer.client.id, undefined);
    assert.equal((toWeakServer.client.error as { code?: string }).code, "ERR_PEER_UNVERIFIED");
    assert.equal(causeCode(toWeakServer.client.error), "ERR_CERT_WEAK_ALGORITHM");

    const fromWeakClient = await connect(
      tlsServerOptions({ svid: serverSvid, bundle }),
      tlsClientOptions({ svid: weakClient.svid, bundle, expectedIds: [SERVER_ID] }),
    );
    assert.equal(fromWeakClient.server.id, undefined);
    assert.equal((fromWeakClient.server.error as { code?: string }).code, "ERR_PEER_UNVERIFIED");
    assert.equal(causeCode(fromWeakClient.server.error), "ERR_CERT_WEAK_ALGORITHM");
  });
});

describe("TLS glue with a bundle root that is not self-signed", () => {
  /**
   * A CA whose `root-cert.pem` is its own issuing certificate, an intermediate under a root that
   * workloads are not given (an external CA that publishes its issuing CA as the mesh root).
   */
  async function intermediateAnchoredCa(): Promise<{ ca: CertificateAuthority; hiddenRootPem: string }> {
    const subtle = webcrypto.subtle;
    const ec = { name: "ECDSA", namedCurve: "P-256" };
    const sig = { name: "ECDSA", hash: "SHA-256" };
    const pair = async () =>
      (await subtle.generateKey(ec, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
    const notBefore = new Date(Date.now() - 3_600_000);
    const notAfter = new Date(Date.now() + 86_400_000);
    const caExtensions = () => [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ];
    const rootKeys = await pair();
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: "01",
      name: "O=hidden-root",
      notBefore,
      notAfter,
      keys: rootKeys,
      signingAlgorithm: sig,
      extensions: caExtensions(),
    });
    const midKeys = await pair();
    const mid = await x509.X509CertificateGenerator.create({
      serialNumber: "02",
      subject: "O=cluster.local,CN=issuing-ca",
      issuer: root.subject,
      notBefore,
      notAfter,
      publicKey: midKeys.publicKey,
      signingKey: rootKeys.privateKey,
      signingAlgorithm: sig,
      extensions: [
        ...caExtensions(),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://cluster.local" }]),
      ],
    });
    const pkcs8 = Buffer.from(await subtle.exportKey("pkcs8", midKeys.privateKey)).toString("base64");
    const caKeyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)?.join("\n")}\n-----END PRIVATE KEY-----\n`;
    const midPem = mid.toString("pem");
    const ca = await createCertificateAuthority({
      cacerts: { caCertPem: midPem, caKeyPem, rootCertPem: midPem },
    });
    return { ca, hiddenRootPem: root.toString("pem") };
  }

  let ca: CertificateAuthority;
  let anchorBundle: TrustBundle;
  let fullBundle: TrustBundle;
  let serverSvid: X509Svid;
  let clientSvid: X509Svid;
  before(async () => {
    const made = await intermediateAnchoredCa();
    ca = made.ca;
    anchorBundle = ca.trustBundle();
    const anchor = new x509.X509Certificate(anchorBundle.rootsPem("cluster.local")[0] as string);
    assert.notEqual(anchor.subject, anchor.issuer);
    fullBundle = TrustBundleClass.fromPem("cluster.local", made.hiddenRootPem);
    serverSvid = await ca.issue({ spiffeId: SERVER_ID });
    clientSvid = await ca.issue({ spiffeId: CLIENT_ID });
  });

  it("a client accepts a server whose chain ends at an intermediate bundle root", async () => {
    const clientOptions = tlsClientOptions({
      svid: clientSvid,
      bundle: anchorBundle,
      expectedIds: [SERVER_ID],
    });
    assert.equal(clientOptions.allowPartialTrustChain, true);
    // The server trusts the full chain: only the client's side of the handshake is under test here.
    const out = await connect(tlsServerOptions({ svid: serverSvid, bundle: fullBundle }), clientOptions);
    assert.equal(out.client.error, undefined);
    assert.equal(out.server.error, undefined);
    assert.equal(out.server.id?.toString(), CLIENT_ID);
    assert.equal(out.client.id?.toString(), SERVER_ID);
  });
});
