import assert from "node:assert/strict";
import { type webcrypto, X509Certificate } from "node:crypto";
import { type AddressInfo, connect as connectTcp, createServer, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { credentials, ServerCredentials } from "@grpc/grpc-js";
import { exportJWK, generateKeyPair as joseKeyPair, SignJWT } from "jose";
import { createClientCertificateAuthenticator, createJwtAuthenticator } from "./authenticator.js";
import { type CertificateAuthority, createCertificateAuthority } from "./certificate-authority.js";
import { spiffeIdFromCertificate } from "./certificate-identity.js";
import {
  AUTHENTICATION_FAILURE,
  createCertificateService,
  IMPERSONATION_FAILURE,
  type RunningCertificateServer,
  startCertificateServer,
} from "./certificate-service.js";
import {
  type CertificateServiceClient,
  createCertificateServiceClient,
} from "./certificate-service-client.js";
import { decodeRequest, encodeRequest } from "./certificate-service-proto.js";
import { createCsr } from "./csr.js";
import { SpiffeError } from "./errors.js";
import { grpcChannelCredentials } from "./grpc-channel-credentials.js";
import { generateKeyPair, type KeyPair } from "./key-pair.js";
import { createNodeAuthorizer } from "./node-authorizer.js";
import { TrustBundle } from "./trust-bundle.js";
import { verifySvid } from "./verify-svid.js";
import type { X509Svid } from "./x509-svid.js";

const ISTIOD = "spiffe://cluster.local/ns/istio-system/sa/istiod";
const WEB = "spiffe://cluster.local/ns/default/sa/web";
const ZTUNNEL = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
const ISSUER = "https://kubernetes.default.svc.cluster.local";

describe("IstioCertificateService wire format", () => {
  it("uses field numbers 1, 3 and 4 and round-trips", () => {
    const bytes = encodeRequest({
      csr: "C",
      validityDuration: 3600,
      metadata: { ImpersonatedIdentity: WEB },
    });
    assert.equal(bytes[0], 0x0a, "csr is field 1, length-delimited");
    assert.equal(bytes[1], 1);
    assert.equal(bytes[3], 0x18, "validity_duration is field 3, varint");
    assert.equal(bytes[6], 0x22, "metadata is field 4, length-delimited");
    const back = decodeRequest(bytes);
    assert.deepEqual(back, { csr: "C", validityDuration: 3600, metadata: { ImpersonatedIdentity: WEB } });
    // A hand-made message: csr="x", validity_duration=60.
    assert.deepEqual(decodeRequest(Buffer.from([0x0a, 0x01, 0x78, 0x18, 0x3c])), {
      csr: "x",
      validityDuration: 60,
      metadata: {},
    });
    assert.throws(() => decodeRequest(Buffer.from([0x22, 0x05, 0x0a])), { code: "ERR_CSR_INVALID" });
  });
});

describe("certificate service over gRPC", () => {
  let ca: CertificateAuthority;
  let istiod: X509Svid;
  let jwtServer: RunningCertificateServer;
  let mtlsServer: RunningCertificateServer;
  let signKey: webcrypto.CryptoKey;
  let otherKey: webcrypto.CryptoKey;
  let keys: KeyPair;
  const clients: CertificateServiceClient[] = [];
  const onNode: Record<string, string[]> = { "node-1": [WEB] };

  async function token(
    sub: string,
    extra: Record<string, unknown> = {},
    opts: { aud?: string; exp?: number | null; key?: webcrypto.CryptoKey } = {},
  ) {
    const jwt = new SignJWT({ "kubernetes.io": { namespace: "x", ...extra } })
      .setProtectedHeader({ alg: "ES256", kid: "k1" })
      .setSubject(sub)
      .setIssuer(ISSUER)
      .setAudience(opts.aud ?? "istio-ca")
      .setIssuedAt();
    // `exp: null`: a token without an expiry.
    if (opts.exp !== null) jwt.setExpirationTime(opts.exp ?? Math.floor(Date.now() / 1000) + 600);
    return jwt.sign(opts.key ?? signKey);
  }

  function client(
    port: number,
    opts: { token?: string; svid?: X509Svid; expectedId?: string } = {},
  ): CertificateServiceClient {
    const channel = grpcChannelCredentials({
      bundle: TrustBundle.fromPem("cluster.local", ca.rootCertPem()),
      expectedIds: [opts.expectedId ?? ISTIOD],
      ...(opts.svid ? { svid: opts.svid } : {}),
      serverName: "istiod.istio-system.svc",
    });
    const c = createCertificateServiceClient({
      address: `127.0.0.1:${port}`,
      credentials: channel.credentials,
      channelOptions: channel.channelOptions,
      ...(opts.token ? { token: opts.token } : {}),
      clusterId: "Kubernetes",
    });
    clients.push(c);
    return c;
  }

  /** What the JWT server logged, as `level message {fields}` lines. */
  const logged: string[] = [];
  const record =
    (level: string) =>
    (fields: Record<string, unknown>, message?: string): void => {
      logged.push(`${level} ${message} ${JSON.stringify(fields)}`);
    };
  const recordingLogger = {
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
  };

  before(async () => {
    ca = await createCertificateAuthority();
    istiod = await ca.issue({ spiffeId: ISTIOD });
    const pair = await joseKeyPair("ES256");
    signKey = pair.privateKey;
    otherKey = (await joseKeyPair("ES256")).privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256" };
    const serverKeyCert = [
      { private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) },
    ];
    const nodeAuthorizer = createNodeAuthorizer({
      trustedNodeAccounts: ["istio-system/ztunnel"],
      identitiesOnNode: (node) => onNode[node] ?? [],
    });
    jwtServer = await startCertificateServer({
      ca,
      credentials: ServerCredentials.createSsl(null, serverKeyCert, false),
      authenticators: [createJwtAuthenticator({ keys: { keys: [jwk] }, issuer: ISSUER })],
      nodeAuthorizer,
      logger: recordingLogger,
    });
    mtlsServer = await startCertificateServer({
      ca,
      credentials: ServerCredentials.createSsl(Buffer.from(ca.rootCertPem()), serverKeyCert, true),
      authenticators: [createClientCertificateAuthenticator()],
    });
    keys = await generateKeyPair();
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all([jwtServer.close(), mtlsServer.close()]);
  });

  async function expectRefusal(p: Promise<unknown>, code: string, message?: RegExp) {
    await assert.rejects(p, (err: unknown) => {
      assert.ok(err instanceof SpiffeError, String(err));
      assert.equal(err.code, code, err.message);
      if (message) assert.match(err.message, message);
      return true;
    });
  }

  it("issues a certificate for the JWT caller's identity", async () => {
    const c = client(jwtServer.port, { token: await token("system:serviceaccount:default:web") });
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    const chain = await c.createCertificate(csr, { validitySeconds: 7200 });
    assert.equal(chain.length, 2);
    for (const pem of chain)
      assert.match(pem, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    assert.equal(chain[1], ca.rootCertPem());
    assert.equal(verifySvid(chain, ca.trustBundle()).toString(), WEB);
    const leaf = new (await import("node:crypto")).X509Certificate(chain[0] as string);
    const life = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom);
    assert.equal(life, (7200 + 120) * 1000);
  });

  it("certifies the authenticated caller whatever SAN the CSR carries, never the CSR's", async () => {
    const c = client(jwtServer.port, { token: await token("system:serviceaccount:default:web") });
    const csr = await createCsr({
      spiffeId: "spiffe://cluster.local/ns/default/sa/admin",
      privateKeyPem: keys.privateKeyPem,
    });
    const chain = await c.createCertificate(csr);
    const leaf = new X509Certificate(chain[0] as string);
    assert.equal(leaf.subjectAltName, `URI:${WEB}`);
    assert.equal(verifySvid(chain, ca.trustBundle()).toString(), WEB);
    assert.equal(leaf.publicKey.export({ type: "spki", format: "pem" }), keys.publicKeyPem);
  });

  it("certifies the impersonated identity whatever SAN the CSR carries", async () => {
    const zt = await token("system:serviceaccount:istio-system:ztunnel", { node: { name: "node-1" } });
    const c = client(jwtServer.port, { token: zt });
    const stale = await createCsr({
      spiffeId: "spiffe://old.domain/ns/default/sa/web",
      privateKeyPem: keys.privateKeyPem,
    });
    const chain = await c.createCertificate(stale, { impersonatedIdentity: WEB });
    assert.equal(new X509Certificate(chain[0] as string).subjectAltName, `URI:${WEB}`);
  });

  it("still refuses a CSR whose signature does not verify", async () => {
    const c = client(jwtServer.port, { token: await token("system:serviceaccount:default:web") });
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    const der = Buffer.from(csr.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
    der[der.length - 5] = (der[der.length - 5] as number) ^ 0xff;
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    await expectRefusal(c.createCertificate(forged), "ERR_CA_SIGN_REFUSED", /signature/);
  });

  it("refuses missing, garbage, wrongly signed, wrong-audience, expired and never-expiring tokens", async () => {
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    const sub = "system:serviceaccount:default:web";
    const cases: Array<[string | undefined, RegExp]> = [
      [undefined, /no credential/],
      ["not.a.jwt", /bearer token rejected/],
      [await token(sub, {}, { key: otherKey }), /signature/],
      [await token(sub, {}, { aud: "kubernetes" }), /aud/],
      [await token(sub, {}, { exp: Math.floor(Date.now() / 1000) - 3600 }), /exp/],
      [await token(sub, {}, { exp: null }), /exp/],
      [await token("alice"), /system:serviceaccount/],
    ];
    for (const [t, reason] of cases) {
      const c = client(jwtServer.port, t === undefined ? {} : { token: t });
      logged.length = 0;
      await assert.rejects(c.createCertificate(csr), (err: unknown) => {
        assert.ok(err instanceof SpiffeError, String(err));
        assert.equal(err.code, "ERR_UNAUTHENTICATED");
        // The caller is told it is refused, in istiod's words, and nothing of why.
        assert.equal(err.details.grpcCode, 16);
        assert.match(err.message, new RegExp(`: ${AUTHENTICATION_FAILURE}$`));
        assert.doesNotMatch(err.message, reason);
        return true;
      });
      assert.equal(logged.length, 1, logged.join("\n"));
      assert.match(logged[0] as string, /^error certificate request: caller not authenticated /);
      assert.match(logged[0] as string, reason);
      assert.match(logged[0] as string, /"peer":"(ipv4:)?127\.0\.0\.1:\d+"/);
    }
  });

  it("lets a trusted node agent impersonate a workload on its node", async () => {
    const zt = await token("system:serviceaccount:istio-system:ztunnel", { node: { name: "node-1" } });
    const c = client(jwtServer.port, { token: zt });
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    const chain = await c.createCertificate(csr, { impersonatedIdentity: WEB });
    assert.equal(spiffeIdFromCertificate(chain[0] as string).toString(), WEB);
    // Without impersonation the certificate is the caller's own.
    const own = await createCsr({ spiffeId: ZTUNNEL, privateKeyPem: keys.privateKeyPem });
    const ownChain = await c.createCertificate(own);
    assert.equal(spiffeIdFromCertificate(ownChain[0] as string).toString(), ZTUNNEL);
  });

  it("refuses impersonation off-node, by untrusted callers and of invalid IDs", async () => {
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    const wrongNode = client(jwtServer.port, {
      token: await token("system:serviceaccount:istio-system:ztunnel", { node: { name: "node-2" } }),
    });
    logged.length = 0;
    await expectRefusal(
      wrongNode.createCertificate(csr, { impersonatedIdentity: WEB }),
      "ERR_UNAUTHENTICATED",
      new RegExp(`: ${IMPERSONATION_FAILURE}$`),
    );
    assert.equal(logged.length, 1, logged.join("\n"));
    assert.match(logged[0] as string, /^warn certificate request: impersonation refused /);
    assert.ok((logged[0] as string).includes(`"requested":"${WEB}"`), logged[0]);
    const noNode = client(jwtServer.port, {
      token: await token("system:serviceaccount:istio-system:ztunnel"),
    });
    await expectRefusal(noNode.createCertificate(csr, { impersonatedIdentity: WEB }), "ERR_UNAUTHENTICATED");
    const untrusted = client(jwtServer.port, {
      token: await token("system:serviceaccount:default:sleep", { node: { name: "node-1" } }),
    });
    await expectRefusal(
      untrusted.createCertificate(csr, { impersonatedIdentity: WEB }),
      "ERR_UNAUTHENTICATED",
    );
    const bad = client(jwtServer.port, {
      token: await token("system:serviceaccount:istio-system:ztunnel", { node: { name: "node-1" } }),
    });
    await expectRefusal(
      bad.createCertificate(csr, { impersonatedIdentity: "spiffe://x/../y" }),
      "ERR_UNAUTHENTICATED",
    );
  });

  it("refuses impersonation when the server has no node authorizer", async () => {
    const zt = await ca.issue({ spiffeId: ZTUNNEL });
    const c = client(mtlsServer.port, { svid: zt });
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    await expectRefusal(c.createCertificate(csr, { impersonatedIdentity: WEB }), "ERR_UNAUTHENTICATED");
  });

  it("refuses a caller that names its own identity as impersonated unless it may impersonate, as istiod", async () => {
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    // A workload is not a trusted node agent: ImpersonatedIdentity is refused even for itself.
    const web = client(jwtServer.port, {
      token: await token("system:serviceaccount:default:web", { node: { name: "node-1" } }),
    });
    await expectRefusal(
      web.createCertificate(csr, { impersonatedIdentity: WEB }),
      "ERR_UNAUTHENTICATED",
      new RegExp(`: ${IMPERSONATION_FAILURE}$`),
    );
    // Without a node authorizer no caller may send it.
    const me = await ca.issue({ spiffeId: WEB });
    const mtls = client(mtlsServer.port, { svid: me });
    await expectRefusal(mtls.createCertificate(csr, { impersonatedIdentity: WEB }), "ERR_UNAUTHENTICATED");
    // The same callers without it get their own identity.
    assert.equal(spiffeIdFromCertificate((await web.createCertificate(csr))[0] as string).toString(), WEB);
    assert.equal(spiffeIdFromCertificate((await mtls.createCertificate(csr))[0] as string).toString(), WEB);
  });

  it("authenticates callers by mTLS client certificate", async () => {
    const me = await ca.issue({ spiffeId: WEB });
    const c = client(mtlsServer.port, { svid: me });
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    const chain = await c.createCertificate(csr);
    assert.equal(spiffeIdFromCertificate(chain[0] as string).toString(), WEB);
  });

  it("reports a listen failure without leaving a server behind", async () => {
    await assert.rejects(
      startCertificateServer({
        ca,
        address: `127.0.0.1:${jwtServer.port}`,
        credentials: ServerCredentials.createInsecure(),
        authenticators: [],
      }),
      { code: "ERR_CA_CONFIG_INVALID" },
    );
  });

  it("refuses a server whose SPIFFE identity is not the expected one", async () => {
    const c = client(jwtServer.port, {
      token: await token("system:serviceaccount:x:web"),
      expectedId: "spiffe://cluster.local/ns/istio-system/sa/impostor",
    });
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    await assert.rejects(c.createCertificate(csr), (err: unknown) => {
      assert.ok(err instanceof SpiffeError, String(err));
      assert.match(String((err as Error & { cause?: unknown }).cause ?? err.message), /impostor|expected/);
      return true;
    });
  });

  it("verifies the server against the roots it was last told to trust, from the next handshake on", async () => {
    // Given only another CA's root, the channel refuses this server; trusting the server's root
    // afterwards (as a rotated root arrives) lets the next handshake through on the same channel.
    const other = await createCertificateAuthority();
    const channel = grpcChannelCredentials({
      bundle: TrustBundle.fromPem("cluster.local", other.rootCertPem()),
      expectedIds: [ISTIOD],
      serverName: "istiod.istio-system.svc",
    });
    const c = createCertificateServiceClient({
      address: `127.0.0.1:${jwtServer.port}`,
      credentials: channel.credentials,
      channelOptions: {
        ...channel.channelOptions,
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 200,
      },
      token: await token("system:serviceaccount:default:web"),
      timeoutMs: 2000,
    });
    clients.push(c);
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    await expectRefusal(c.createCertificate(csr), "ERR_CA_UNAVAILABLE");
    assert.throws(() => channel.trust(new TrustBundle()), { code: "ERR_BUNDLE_NO_ROOTS" });
    channel.trust(TrustBundle.fromPem("cluster.local", other.rootCertPem() + ca.rootCertPem()));
    let chain: string[] | undefined;
    for (let attempt = 0; chain === undefined; attempt++) {
      try {
        chain = await c.createCertificate(csr);
      } catch (err) {
        // The channel may still be in its reconnect back-off from the refused handshake.
        if (attempt >= 10) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.equal(verifySvid(chain, ca.trustBundle()).toString(), WEB);
  });

  it("refuses a server whose chain leads to a root of another trust domain", async () => {
    // The server's root is in the bundle, but only for example.org: it may not vouch for istiod's
    // cluster.local identity.
    const other = await createCertificateAuthority();
    const bundle = TrustBundle.fromPem("cluster.local", other.rootCertPem());
    bundle.addRoots("example.org", ca.rootCertPem());
    const channel = grpcChannelCredentials({
      bundle,
      expectedIds: [ISTIOD],
      serverName: "istiod.istio-system.svc",
    });
    const c = createCertificateServiceClient({
      address: `127.0.0.1:${jwtServer.port}`,
      credentials: channel.credentials,
      channelOptions: channel.channelOptions,
      token: await token("system:serviceaccount:default:web"),
      timeoutMs: 2000,
    });
    clients.push(c);
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    await expectRefusal(c.createCertificate(csr), "ERR_CA_UNAVAILABLE");
  });

  it(
    "makes a new channel after a call that timed out while connecting, and ends that connection",
    { timeout: 20_000 },
    async () => {
      // In front of the CA: the first connection is accepted and never answered (a hung process whose
      // kernel still accepts; read here only to see it end), every later one is passed through.
      const held: Socket[] = [];
      const passed: Socket[] = [];
      const front = createServer((socket) => {
        if (held.length === 0) {
          held.push(socket);
          socket.resume();
          return;
        }
        const upstream = connectTcp(jwtServer.port, "127.0.0.1");
        passed.push(socket, upstream);
        socket.pipe(upstream).pipe(socket);
        const end = () => {
          socket.destroy();
          upstream.destroy();
        };
        socket.on("error", end).on("close", end);
        upstream.on("error", end).on("close", end);
      });
      await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", () => resolve()));
      try {
        const channel = grpcChannelCredentials({
          bundle: TrustBundle.fromPem("cluster.local", ca.rootCertPem()),
          expectedIds: [ISTIOD],
          serverName: "istiod.istio-system.svc",
        });
        const c = createCertificateServiceClient({
          address: `127.0.0.1:${(front.address() as AddressInfo).port}`,
          credentials: channel.credentials,
          channelOptions: channel.channelOptions,
          token: await token("system:serviceaccount:default:web"),
          timeoutMs: 800,
        });
        clients.push(c);
        const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
        await expectRefusal(c.createCertificate(csr), "ERR_CA_UNAVAILABLE", /Deadline exceeded/i);
        const first = held[0] as Socket;
        if (!first.destroyed) await new Promise((resolve) => first.once("close", resolve));
        const chain = await c.createCertificate(csr);
        assert.equal(verifySvid(chain, ca.trustBundle()).toString(), WEB);
        assert.equal(held.length, 1);
      } finally {
        for (const socket of [...held, ...passed]) socket.destroy();
        await new Promise((resolve) => front.close(resolve));
      }
    },
  );

  it("refuses a service or server made without its CA, authenticators or credentials", async () => {
    const authenticators = [createClientCertificateAuthenticator()];
    const insecure = ServerCredentials.createInsecure();
    const invalid = (option: string) => (err: unknown) => {
      assert.ok(err instanceof SpiffeError, String(err));
      assert.equal(err.code, "ERR_OPTIONS_INVALID", err.message);
      assert.equal(err.details.option, option, err.message);
      assert.match(err.message, new RegExp(`option ${option} must be`));
      return true;
    };
    const services: Array<[string, unknown]> = [
      ["argument", undefined],
      ["ca", { authenticators }],
      ["ca", { ca: {}, authenticators }],
      ["authenticators", { ca }],
      ["authenticators", { ca, authenticators: createClientCertificateAuthenticator() }],
      ["authenticators", { ca, authenticators: [{ name: "x" }] }],
      ["nodeAuthorizer", { ca, authenticators, nodeAuthorizer: {} }],
    ];
    for (const [option, options] of services) {
      assert.throws(() => createCertificateService(options as never), invalid(option), option);
      await assert.rejects(
        startCertificateServer(
          (options === undefined ? undefined : { credentials: insecure, ...(options as object) }) as never,
        ),
        invalid(option),
        option,
      );
    }
    for (const value of [undefined, {}, credentials.createInsecure()]) {
      await assert.rejects(
        startCertificateServer({ ca, authenticators, credentials: value } as never),
        invalid("credentials"),
      );
    }
  });

  it("refuses a client made without channel credentials", () => {
    for (const value of [undefined, {}, ServerCredentials.createInsecure()]) {
      assert.throws(
        () => createCertificateServiceClient({ address: "127.0.0.1:1", credentials: value as never }),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError, String(err));
          assert.equal(err.code, "ERR_OPTIONS_INVALID");
          assert.match(err.message, /option credentials must be @grpc\/grpc-js ChannelCredentials/);
          return true;
        },
      );
    }
  });

  it("refuses grpcChannelCredentials options of the wrong type with ERR_OPTIONS_INVALID", () => {
    const bundle = TrustBundle.fromPem("cluster.local", ca.rootCertPem());
    const cases: Array<[string, unknown]> = [
      ["argument", undefined],
      ["bundle", {}],
      ["bundle", { bundle: { rootsPem: () => [] }, expectedIds: [ISTIOD] }],
      ["expectedIds", { bundle }],
      ["expectedIds", { bundle, expectedIds: ISTIOD }],
      ["svid", { bundle, expectedIds: [ISTIOD], svid: {} }],
      ["serverName", { bundle, expectedIds: [ISTIOD], serverName: 7 }],
    ];
    for (const [option, options] of cases) {
      assert.throws(
        () => grpcChannelCredentials(options as never),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError, String(err));
          assert.equal(err.code, "ERR_OPTIONS_INVALID", err.message);
          assert.match(err.message, new RegExp(`^grpcChannelCredentials (option ${option}|options)`));
          return true;
        },
        option,
      );
    }
    const channel = grpcChannelCredentials({ bundle, expectedIds: [ISTIOD] });
    assert.throws(() => channel.trust({} as never), { code: "ERR_OPTIONS_INVALID" });
  });

  it("refuses a timeout that is not a number of ms a timer can wait", () => {
    for (const timeoutMs of [Number.NaN, -5, 0, "300", 2 ** 31, Number.POSITIVE_INFINITY, null]) {
      assert.throws(
        () =>
          createCertificateServiceClient({
            address: "127.0.0.1:1",
            credentials: credentials.createInsecure(),
            timeoutMs: timeoutMs as unknown as number,
          }),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
        String(timeoutMs),
      );
    }
  });

  it("rejects a call after close() with ERR_CLOSED", async () => {
    const c = createCertificateServiceClient({
      address: "127.0.0.1:1",
      credentials: credentials.createInsecure(),
      timeoutMs: 2000,
    });
    c.close();
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    await expectRefusal(c.createCertificate(csr), "ERR_CLOSED");
    c.close();
  });

  it("reports an unreachable CA as ERR_CA_UNAVAILABLE", async () => {
    const c = createCertificateServiceClient({
      address: "127.0.0.1:1",
      credentials: credentials.createInsecure(),
      timeoutMs: 2000,
    });
    clients.push(c);
    const csr = await createCsr({ spiffeId: WEB, privateKeyPem: keys.privateKeyPem });
    await expectRefusal(c.createCertificate(csr), "ERR_CA_UNAVAILABLE");
  });
});
