import assert from "node:assert/strict";
import { webcrypto, X509Certificate } from "node:crypto";
import { before, describe, it } from "node:test";
import { type CertificateAuthority, createCertificateAuthority } from "./certificate-authority.js";
import { spiffeIdFromCertificate } from "./certificate-identity.js";
import { encodeOid, seq, tlv } from "./der.js";
import { SpiffeError } from "./errors.js";
import { decodeCertificatesPem, encodePem } from "./pem.js";
import { TrustBundle } from "./trust-bundle.js";
import { type VerifySvidOptions, verifySvid } from "./verify-svid.js";
import { x509 } from "./x509.js";
import type { X509Svid } from "./x509-svid.js";
import { x509SvidFromChain } from "./x509-svid.js";

const ID = "spiffe://cluster.local/ns/default/sa/web";
const NOW = new Date("2030-06-01T00:00:00Z");

function expectCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SpiffeError, `expected SpiffeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe("verifySvid", () => {
  let ca: CertificateAuthority;
  let other: CertificateAuthority;
  let svid: X509Svid;
  before(async () => {
    ca = await createCertificateAuthority({ clock: () => NOW });
    other = await createCertificateAuthority({ clock: () => NOW });
    svid = await ca.issue({ spiffeId: ID, ttlSeconds: 3600 });
  });

  it("accepts PEM text, PEM list, DER and Node certificates", () => {
    const bundle = ca.trustBundle();
    const der = decodeCertificatesPem(svid.certChainPem);
    assert.equal(verifySvid(svid.certChainPem, bundle, { now: NOW }).toString(), ID);
    assert.equal(verifySvid([svid.certChainPem], bundle, { now: NOW }).toString(), ID);
    assert.equal(verifySvid(der, bundle, { now: NOW }).toString(), ID);
    assert.equal(verifySvid([new X509Certificate(der[0] as Buffer)], bundle, { now: NOW }).toString(), ID);
    // A trailing root in the chain is fine.
    assert.equal(verifySvid(svid.certChainPem + ca.rootCertPem(), bundle, { now: NOW }).toString(), ID);
  });

  it("checks validity windows with clock skew", () => {
    const bundle = ca.trustBundle();
    const after = new Date(svid.notAfter.getTime() + 10_000);
    const before = new Date(svid.notBefore.getTime() - 10_000);
    expectCode(
      () => verifySvid(svid.certChainPem, bundle, { now: after }),
      "ERR_CERT_EXPIRED",
      /leaf SVID expired/,
    );
    expectCode(() => verifySvid(svid.certChainPem, bundle, { now: before }), "ERR_CERT_NOT_YET_VALID");
    assert.ok(verifySvid(svid.certChainPem, bundle, { now: after, clockSkewSeconds: 60 }).equals(ID));
    assert.ok(verifySvid(svid.certChainPem, bundle, { now: before, clockSkewSeconds: 60 }).equals(ID));
  });

  it("refuses an invalid time, clock skew or chain length instead of skipping the validity checks", () => {
    const bundle = ca.trustBundle();
    const expired = new Date(svid.notAfter.getTime() + 365 * 86_400_000);
    const early = new Date(0);
    const bad: Array<Record<string, unknown>> = [
      { now: expired, clockSkewSeconds: Number.NaN },
      { now: early, clockSkewSeconds: Number.NaN },
      { now: new Date("not a date") },
      { now: "2030-06-01T00:00:00Z" },
      { now: NOW.getTime() },
      { now: NOW, clockSkewSeconds: -1 },
      { now: NOW, clockSkewSeconds: Number.POSITIVE_INFINITY },
      { now: NOW, clockSkewSeconds: "60" },
      { now: NOW, maxChainLength: 0 },
      { now: NOW, maxChainLength: 1.5 },
      { now: NOW, maxChainLength: Number.NaN },
      { now: NOW, maxChainLength: "10" },
      { now: NOW, trustDomain: 5 },
    ];
    for (const options of bad) {
      expectCode(
        () => verifySvid(svid.certChainPem, bundle, options as VerifySvidOptions),
        "ERR_OPTIONS_INVALID",
      );
    }
    expectCode(
      () => verifySvid(svid.certChainPem, bundle, null as unknown as VerifySvidOptions),
      "ERR_OPTIONS_INVALID",
    );
    assert.equal(verifySvid(svid.certChainPem, bundle, { now: NOW, clockSkewSeconds: 0 }).toString(), ID);
  });

  it("refuses a missing or foreign trust bundle up front", () => {
    for (const bundle of [undefined, null, {}, { has: () => true }, "bundle"]) {
      expectCode(
        () => verifySvid(svid.certChainPem, bundle as unknown as TrustBundle, { now: NOW }),
        "ERR_OPTIONS_INVALID",
        /bundle/,
      );
    }
  });

  it("rejects another trust domain", () => {
    expectCode(
      () => verifySvid(svid.certChainPem, ca.trustBundle(), { now: NOW, trustDomain: "example.org" }),
      "ERR_SVID_TRUST_DOMAIN_MISMATCH",
    );
    const foreign = TrustBundle.fromPem("example.org", ca.rootCertPem());
    expectCode(
      () => verifySvid(svid.certChainPem, foreign, { now: NOW }),
      "ERR_SVID_TRUST_DOMAIN_MISMATCH",
      /example|cluster.local/,
    );
  });

  it("rejects a chain from another CA", () => {
    expectCode(() => verifySvid(svid.certChainPem, other.trustBundle(), { now: NOW }), "ERR_CHAIN_UNTRUSTED");
  });

  it("rejects a tampered signature", () => {
    const der = Buffer.from(decodeCertificatesPem(svid.certChainPem)[0] as Buffer);
    der[der.length - 3] = (der[der.length - 3] as number) ^ 0x55;
    let threw: unknown;
    try {
      verifySvid([der], ca.trustBundle(), { now: NOW });
    } catch (err) {
      threw = err;
    }
    assert.ok(threw instanceof SpiffeError);
    // Flipping a DER signature byte either breaks the encoding or the signature.
    assert.ok(["ERR_CERT_SIGNATURE_INVALID", "ERR_PEM_INVALID"].includes(threw.code), threw.code);
  });

  it("rejects empty, garbage and truncated input", () => {
    const bundle = ca.trustBundle();
    expectCode(() => verifySvid([], bundle), "ERR_CHAIN_EMPTY");
    expectCode(() => verifySvid("hello", bundle), "ERR_PEM_INVALID");
    expectCode(
      () => verifySvid("-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n", bundle),
      "ERR_PEM_INVALID",
    );
    const der = decodeCertificatesPem(svid.certChainPem)[0] as Buffer;
    expectCode(() => verifySvid(encodePem("CERTIFICATE", der.subarray(0, 100)), bundle), "ERR_PEM_INVALID");
    expectCode(() => verifySvid([Buffer.from([0x30, 0x03, 0x02, 0x01])], bundle), "ERR_PEM_INVALID");
    expectCode(() => verifySvid(42 as unknown as string, bundle), "ERR_PEM_INVALID");
    expectCode(() => verifySvid([{}] as unknown as string[], bundle), "ERR_PEM_INVALID");
  });

  it("rejects a CA certificate as leaf", () => {
    expectCode(
      () => verifySvid(ca.rootCertPem(), ca.trustBundle(), { now: NOW }),
      "ERR_SVID_LEAF_INVALID",
      /not be a CA/,
    );
  });

  it("accepts chains up to maxChainLength certificates, root included, and no longer", () => {
    // leaf + root: two certificates.
    const bundle = ca.trustBundle();
    assert.equal(verifySvid(svid.certChainPem, bundle, { now: NOW, maxChainLength: 2 }).toString(), ID);
    expectCode(
      () => verifySvid(svid.certChainPem, bundle, { now: NOW, maxChainLength: 1 }),
      "ERR_CHAIN_UNTRUSTED",
      /longer than 1/,
    );
  });

  it("builds an X509Svid from a CA answer", async () => {
    const signed = await ca.issue({ spiffeId: ID });
    const rebuilt = x509SvidFromChain([signed.certChainPem, ...signed.rootsPem], signed.privateKeyPem);
    assert.equal(rebuilt.certChainPem, signed.certChainPem);
    assert.deepEqual(rebuilt.rootsPem, [ca.rootCertPem()]);
    assert.ok(rebuilt.spiffeId.equals(ID));
    assert.ok(spiffeIdFromCertificate(signed.certChainPem).equals(ID));
    expectCode(() => x509SvidFromChain([], "k"), "ERR_CHAIN_EMPTY");
  });
});

describe("TrustBundle", () => {
  it("holds several roots per trust domain and round-trips PEM", async () => {
    const a = await createCertificateAuthority();
    const b = await createCertificateAuthority({ trustDomain: "example.org" });
    const bundle = TrustBundle.fromPem("cluster.local", a.rootCertPem());
    bundle.addRoots("cluster.local", a.rootCertPem());
    assert.equal(bundle.rootsPem("cluster.local").length, 1);
    bundle.addRoots("example.org", b.rootCertPem());
    assert.deepEqual(bundle.trustDomains(), ["cluster.local", "example.org"]);
    assert.equal(bundle.rootsPem().length, 2);
    assert.equal(bundle.toPem("example.org"), b.rootCertPem());
    assert.equal(bundle.removeRoots("example.org", b.rootCertPem()), 1);
    assert.equal(bundle.has("example.org"), false);
    assert.throws(() => bundle.addRoots("cluster.local", "nope"), { code: "ERR_PEM_INVALID" });
    assert.throws(() => bundle.addRoots("UPPER", a.rootCertPem()), { code: "ERR_TRUST_DOMAIN_INVALID" });
  });
});

describe("verifySvid signature algorithms", () => {
  const subtle = webcrypto.subtle;
  type Alg = { name: string; hash?: string; saltLength?: number };
  const EC: { name: string; namedCurve: string } = { name: "ECDSA", namedCurve: "P-256" };
  const ecdsa = (hash: string): Alg => ({ name: "ECDSA", hash });
  const rsa = (hash: string): Alg => ({ name: "RSASSA-PKCS1-v1_5", hash });
  const rsaKey = (bits: number, hash = "SHA-256") => ({
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: bits,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash,
  });
  const window = { notBefore: new Date("2030-01-01T00:00:00Z"), notAfter: new Date("2031-01-01T00:00:00Z") };
  let serial = 1;

  async function keys(params: object): Promise<webcrypto.CryptoKeyPair> {
    const usages: webcrypto.KeyUsage[] = ["sign", "verify"];
    return (await subtle.generateKey(
      params as webcrypto.EcKeyGenParams,
      true,
      usages,
    )) as webcrypto.CryptoKeyPair;
  }

  async function rootCert(
    name: string,
    pair: webcrypto.CryptoKeyPair,
    alg: Alg,
  ): Promise<x509.X509Certificate> {
    return x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: String(serial++).padStart(2, "0"),
      name,
      ...window,
      keys: pair,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      ],
    });
  }

  async function signed(
    subject: string,
    publicKey: webcrypto.CryptoKey,
    issuer: x509.X509Certificate,
    issuerKey: webcrypto.CryptoKey,
    alg: Alg,
    leaf: boolean,
  ): Promise<x509.X509Certificate> {
    const extensions: x509.Extension[] = leaf
      ? [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.SubjectAlternativeNameExtension([{ type: "url", value: ID }], true),
        ]
      : [
          new x509.BasicConstraintsExtension(true, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        ];
    return x509.X509CertificateGenerator.create({
      serialNumber: String(serial++).padStart(2, "0"),
      subject: leaf ? "" : subject,
      issuer: issuer.subject,
      ...window,
      publicKey,
      signingKey: issuerKey,
      signingAlgorithm: alg,
      extensions,
    });
  }

  function chainOf(...certs: x509.X509Certificate[]): Buffer[] {
    return certs.map((c) => Buffer.from(c.rawData));
  }

  it("accepts SHA-256 ECDSA and RSA 2048 chains built the same way", async () => {
    const rootKeys = await keys(EC);
    const root = await rootCert("CN=root", rootKeys, ecdsa("SHA-256"));
    const midKeys = await keys(rsaKey(2048));
    const mid = await signed("CN=mid", midKeys.publicKey, root, rootKeys.privateKey, ecdsa("SHA-384"), false);
    const leafKeys = await keys(EC);
    const leaf = await signed("", leafKeys.publicKey, mid, midKeys.privateKey, rsa("SHA-256"), true);
    const bundle = TrustBundle.fromPem("cluster.local", root.toString("pem"));
    assert.equal(verifySvid(chainOf(leaf, mid), bundle, { now: NOW }).toString(), ID);
    // RSASSA-PSS with SHA-256, and Ed25519.
    const pssKeys = await keys({ ...rsaKey(2048), name: "RSA-PSS" });
    const pssMid = await signed(
      "CN=pss",
      pssKeys.publicKey,
      root,
      rootKeys.privateKey,
      ecdsa("SHA-256"),
      false,
    );
    const pss = { name: "RSA-PSS", hash: "SHA-256", saltLength: 32 };
    const pssLeaf = await signed("", leafKeys.publicKey, pssMid, pssKeys.privateKey, pss, true);
    assert.equal(verifySvid(chainOf(pssLeaf, pssMid), bundle, { now: NOW }).toString(), ID);
    const edKeys = await keys({ name: "Ed25519" });
    const edMid = await signed("CN=ed", edKeys.publicKey, root, rootKeys.privateKey, ecdsa("SHA-256"), false);
    const edLeaf = await signed("", leafKeys.publicKey, edMid, edKeys.privateKey, { name: "Ed25519" }, true);
    assert.equal(verifySvid(chainOf(edLeaf, edMid), bundle, { now: NOW }).toString(), ID);
  });

  it("refuses a leaf or an intermediate signed with SHA-1", async () => {
    const rootKeys = await keys(EC);
    const root = await rootCert("CN=root", rootKeys, ecdsa("SHA-256"));
    const bundle = TrustBundle.fromPem("cluster.local", root.toString("pem"));
    const leafKeys = await keys(EC);
    // ecdsa-with-SHA1 on the leaf, signed directly by the root.
    const sha1Leaf = await signed("", leafKeys.publicKey, root, rootKeys.privateKey, ecdsa("SHA-1"), true);
    expectCode(
      () => verifySvid(chainOf(sha1Leaf), bundle, { now: NOW }),
      "ERR_CERT_WEAK_ALGORITHM",
      /SHA-1|sha1/i,
    );
    // sha1WithRSAEncryption on the leaf, signed by an RSA intermediate.
    // (A WebCrypto RSA key signs with the digest it was made for.)
    const midKeys = await keys(rsaKey(2048, "SHA-1"));
    const mid = await signed("CN=mid", midKeys.publicKey, root, rootKeys.privateKey, ecdsa("SHA-256"), false);
    const rsaSha1Leaf = await signed("", leafKeys.publicKey, mid, midKeys.privateKey, rsa("SHA-1"), true);
    expectCode(() => verifySvid(chainOf(rsaSha1Leaf, mid), bundle, { now: NOW }), "ERR_CERT_WEAK_ALGORITHM");
    // A SHA-1 signature on the intermediate, the leaf itself fine.
    const ecMidKeys = await keys(EC);
    const sha1Mid = await signed(
      "CN=mid1",
      ecMidKeys.publicKey,
      root,
      rootKeys.privateKey,
      ecdsa("SHA-1"),
      false,
    );
    const goodLeaf = await signed(
      "",
      leafKeys.publicKey,
      sha1Mid,
      ecMidKeys.privateKey,
      ecdsa("SHA-256"),
      true,
    );
    expectCode(() => verifySvid(chainOf(goodLeaf, sha1Mid), bundle, { now: NOW }), "ERR_CERT_WEAK_ALGORITHM");
    // RSASSA-PSS whose parameters name SHA-1.
    const pssKeys = await keys({ ...rsaKey(2048, "SHA-1"), name: "RSA-PSS" });
    const pssMid = await signed(
      "CN=pss",
      pssKeys.publicKey,
      root,
      rootKeys.privateKey,
      ecdsa("SHA-256"),
      false,
    );
    const pss = { name: "RSA-PSS", hash: "SHA-1", saltLength: 20 };
    const pssLeaf = await signed("", leafKeys.publicKey, pssMid, pssKeys.privateKey, pss, true);
    expectCode(() => verifySvid(chainOf(pssLeaf, pssMid), bundle, { now: NOW }), "ERR_CERT_WEAK_ALGORITHM");
  });

  it("refuses a chain signed by an RSA key under 2048 bits", async () => {
    // The root's RSA-1024 key signs the intermediate (the root's own self-signature is never checked).
    const weakRootKeys = await keys(rsaKey(1024));
    const weakRoot = await rootCert("CN=weak-root", weakRootKeys, rsa("SHA-256"));
    const weakBundle = TrustBundle.fromPem("cluster.local", weakRoot.toString("pem"));
    const midKeys = await keys(EC);
    const mid = await signed(
      "CN=mid",
      midKeys.publicKey,
      weakRoot,
      weakRootKeys.privateKey,
      rsa("SHA-256"),
      false,
    );
    const leafKeys = await keys(EC);
    const leaf = await signed("", leafKeys.publicKey, mid, midKeys.privateKey, ecdsa("SHA-256"), true);
    expectCode(
      () => verifySvid(chainOf(leaf, mid), weakBundle, { now: NOW }),
      "ERR_CERT_WEAK_ALGORITHM",
      /1024/,
    );
    // An RSA-1024 intermediate signing the leaf, under a strong root.
    const rootKeys = await keys(EC);
    const root = await rootCert("CN=root", rootKeys, ecdsa("SHA-256"));
    const bundle = TrustBundle.fromPem("cluster.local", root.toString("pem"));
    const weakMidKeys = await keys(rsaKey(1024));
    const weakMid = await signed(
      "CN=weak-mid",
      weakMidKeys.publicKey,
      root,
      rootKeys.privateKey,
      ecdsa("SHA-256"),
      false,
    );
    const leaf2 = await signed("", leafKeys.publicKey, weakMid, weakMidKeys.privateKey, rsa("SHA-256"), true);
    expectCode(
      () => verifySvid(chainOf(leaf2, weakMid), bundle, { now: NOW }),
      "ERR_CERT_WEAK_ALGORITHM",
      /1024/,
    );
    // A leaf whose own key is RSA-1024 (its key signs the TLS handshake).
    const leaf3 = await signed("", weakMidKeys.publicKey, root, rootKeys.privateKey, ecdsa("SHA-256"), true);
    expectCode(() => verifySvid(chainOf(leaf3), bundle, { now: NOW }), "ERR_CERT_WEAK_ALGORITHM", /1024/);
  });
});

describe("verifySvid extension rules", () => {
  const subtle = webcrypto.subtle;
  const EC = { name: "ECDSA", namedCurve: "P-256" };
  const SIG = { name: "ECDSA", hash: "SHA-256" };
  const window = { notBefore: new Date("2030-01-01T00:00:00Z"), notAfter: new Date("2031-01-01T00:00:00Z") };
  const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
  const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
  const CODE_SIGNING = "1.3.6.1.5.5.7.3.3";
  const ANY_EKU = "2.5.29.37.0";
  let serial = 100;

  interface Issued {
    cert: x509.X509Certificate;
    keys: webcrypto.CryptoKeyPair;
  }

  async function keys(): Promise<webcrypto.CryptoKeyPair> {
    return (await subtle.generateKey(EC, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
  }

  const caExtensions = (): x509.Extension[] => [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
  const leafExtensions = (): x509.Extension[] => [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.SubjectAlternativeNameExtension([{ type: "url", value: ID }], true),
  ];
  const eku = (...usages: string[]) => new x509.ExtendedKeyUsageExtension(usages, false);
  // NameConstraints permitting only URIs whose host is other.org, marked non-critical.
  const otherOrgOnly = (): x509.Extension =>
    new x509.Extension(
      "2.5.29.30",
      false,
      Buffer.concat([
        Buffer.from([0x30, 0x0f, 0xa0, 0x0d, 0x30, 0x0b, 0x86, 0x09]),
        Buffer.from("other.org"),
      ]),
    );

  async function root(extra: x509.Extension[] = []): Promise<Issued> {
    const pair = await keys();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: String(serial++),
      name: "CN=root",
      ...window,
      keys: pair,
      signingAlgorithm: SIG,
      extensions: [...caExtensions(), ...extra],
    });
    return { cert, keys: pair };
  }

  async function issue(issuer: Issued, subject: string, extensions: x509.Extension[]): Promise<Issued> {
    const pair = await keys();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: String(serial++),
      subject,
      issuer: issuer.cert.subject,
      ...window,
      publicKey: pair.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: SIG,
      extensions,
    });
    return { cert, keys: pair };
  }

  const der = (...certs: Issued[]) => certs.map((c) => Buffer.from(c.cert.rawData));
  const bundleOf = (r: Issued) => TrustBundle.fromPem("cluster.local", r.cert.toString("pem"));

  it("refuses a certificate that repeats an extension (RFC 5280 4.2)", async () => {
    const r = await root();
    const twoSans = await issue(r, "", [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: `${ID}-hidden` }], true),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: ID }], true),
    ]);
    expectCode(() => verifySvid(der(twoSans), bundleOf(r), { now: NOW }), "ERR_PEM_INVALID", /duplicate/);
    expectCode(
      () => spiffeIdFromCertificate(twoSans.cert.toString("pem")),
      "ERR_PEM_INVALID",
      /2\.5\.29\.17/,
    );
    const twoBasicConstraints = await issue(r, "", [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: ID }], true),
    ]);
    expectCode(() => verifySvid(der(twoBasicConstraints), bundleOf(r), { now: NOW }), "ERR_PEM_INVALID");
    // A repeated extension this package does not otherwise read is refused too.
    const twoUnknown = await issue(r, "", [
      ...leafExtensions(),
      new x509.Extension("1.2.3.4", false, Buffer.from([0x05, 0x00])),
      new x509.Extension("1.2.3.4", false, Buffer.from([0x05, 0x00])),
    ]);
    expectCode(() => verifySvid(der(twoUnknown), bundleOf(r), { now: NOW }), "ERR_PEM_INVALID", /1\.2\.3\.4/);
  });

  it("accepts a leaf with no extendedKeyUsage, or one allowing a TLS purpose", async () => {
    const r = await root();
    const bundle = bundleOf(r);
    const none = await issue(r, "", leafExtensions());
    const both = await issue(r, "", [...leafExtensions(), eku(SERVER_AUTH, CLIENT_AUTH)]);
    const any = await issue(r, "", [...leafExtensions(), eku(ANY_EKU)]);
    for (const leaf of [none, both, any]) {
      for (const purpose of [undefined, "serverAuth", "clientAuth"] as const) {
        assert.equal(verifySvid(der(leaf), bundle, { now: NOW, purpose }).toString(), ID);
      }
    }
    const serverOnly = await issue(r, "", [...leafExtensions(), eku(SERVER_AUTH)]);
    assert.equal(verifySvid(der(serverOnly), bundle, { now: NOW }).toString(), ID);
    assert.equal(verifySvid(der(serverOnly), bundle, { now: NOW, purpose: "serverAuth" }).toString(), ID);
    expectCode(
      () => verifySvid(der(serverOnly), bundle, { now: NOW, purpose: "clientAuth" }),
      "ERR_SVID_LEAF_INVALID",
      /clientAuth/,
    );
  });

  it("refuses a leaf whose extendedKeyUsage allows neither serverAuth nor clientAuth", async () => {
    const r = await root();
    const codeSigning = await issue(r, "", [...leafExtensions(), eku(CODE_SIGNING)]);
    expectCode(
      () => verifySvid(der(codeSigning), bundleOf(r), { now: NOW }),
      "ERR_SVID_LEAF_INVALID",
      /extendedKeyUsage/,
    );
  });

  it("refuses a chain through a CA whose extendedKeyUsage excludes the purpose", async () => {
    const r = await root();
    const bundle = bundleOf(r);
    const codeSigningCa = await issue(r, "CN=mid", [...caExtensions(), eku(CODE_SIGNING)]);
    const leaf = await issue(codeSigningCa, "", [...leafExtensions(), eku(SERVER_AUTH, CLIENT_AUTH)]);
    expectCode(
      () => verifySvid(der(leaf, codeSigningCa), bundle, { now: NOW }),
      "ERR_CERT_ISSUER_INVALID",
      /mid/,
    );

    // The purposes every certificate allows must meet: a serverAuth-only CA over a clientAuth-only leaf.
    const serverCa = await issue(r, "CN=server-mid", [...caExtensions(), eku(SERVER_AUTH)]);
    const clientLeaf = await issue(serverCa, "", [...leafExtensions(), eku(CLIENT_AUTH)]);
    expectCode(() => verifySvid(der(clientLeaf, serverCa), bundle, { now: NOW }), "ERR_CERT_ISSUER_INVALID");
    const dualLeaf = await issue(serverCa, "", [...leafExtensions(), eku(SERVER_AUTH, CLIENT_AUTH)]);
    assert.equal(verifySvid(der(dualLeaf, serverCa), bundle, { now: NOW }).toString(), ID);
    assert.equal(
      verifySvid(der(dualLeaf, serverCa), bundle, { now: NOW, purpose: "serverAuth" }).toString(),
      ID,
    );
    expectCode(
      () => verifySvid(der(dualLeaf, serverCa), bundle, { now: NOW, purpose: "clientAuth" }),
      "ERR_CERT_ISSUER_INVALID",
      /server-mid/,
    );

    // The root that anchors the path is held to the same rule.
    const codeSigningRoot = await root([eku(CODE_SIGNING)]);
    const underRoot = await issue(codeSigningRoot, "", [...leafExtensions(), eku(SERVER_AUTH, CLIENT_AUTH)]);
    expectCode(
      () => verifySvid(der(underRoot), bundleOf(codeSigningRoot), { now: NOW }),
      "ERR_CERT_ISSUER_INVALID",
      /trust bundle root/,
    );
    const anyRoot = await root([eku(ANY_EKU)]);
    const underAny = await issue(anyRoot, "", [...leafExtensions(), eku(SERVER_AUTH, CLIENT_AUTH)]);
    assert.equal(
      verifySvid(der(underAny), bundleOf(anyRoot), { now: NOW, purpose: "clientAuth" }).toString(),
      ID,
    );
  });

  it("refuses a purpose other than serverAuth or clientAuth", async () => {
    const r = await root();
    const leaf = await issue(r, "", leafExtensions());
    for (const purpose of ["codeSigning", "any", "", 1]) {
      expectCode(
        () => verifySvid(der(leaf), bundleOf(r), { now: NOW, purpose } as unknown as VerifySvidOptions),
        "ERR_OPTIONS_INVALID",
        /purpose/,
      );
    }
  });

  it("enforces a CA's nameConstraints, critical or not, on an intermediate and on the bundle root", async () => {
    const r = await root();
    const constrained = await issue(r, "CN=constrained", [...caExtensions(), otherOrgOnly()]);
    const leaf = await issue(constrained, "", leafExtensions());
    expectCode(
      () => verifySvid(der(leaf, constrained), bundleOf(r), { now: NOW }),
      "ERR_CERT_NAME_NOT_PERMITTED",
      /leaf SVID: URI spiffe:\/\/cluster\.local\/ns\/default\/sa\/web is not within its permitted subtrees in the nameConstraints of certificate #1 \(CN=constrained\)/,
    );
    const constrainedRoot = await root([otherOrgOnly()]);
    const leaf2 = await issue(constrainedRoot, "", leafExtensions());
    expectCode(
      () => verifySvid(der(leaf2), bundleOf(constrainedRoot), { now: NOW }),
      "ERR_CERT_NAME_NOT_PERMITTED",
      /trust bundle root/,
    );
  });

  /** A nameConstraints extension from the DER of its GeneralSubtrees, permitted ([0]) and excluded ([1]). */
  const nameConstraints = (parts: { permitted?: Buffer[]; excluded?: Buffer[] }, critical = true) =>
    new x509.Extension(
      "2.5.29.30",
      critical,
      seq(
        ...(parts.permitted ? [tlv(0xa0, ...parts.permitted)] : []),
        ...(parts.excluded ? [tlv(0xa1, ...parts.excluded)] : []),
      ),
    );
  const uriSubtree = (host: string, ...minMax: Buffer[]) =>
    seq(tlv(0x86, Buffer.from(host, "latin1")), ...minMax);

  it("accepts a subtree with an explicit minimum of 0", async () => {
    const r = await root();
    const zeroMin = await issue(r, "CN=zero-min", [
      ...caExtensions(),
      nameConstraints({ permitted: [uriSubtree("cluster.local", tlv(0x80, Buffer.from([0])))] }),
    ]);
    const leaf = await issue(zeroMin, "", leafExtensions());
    assert.equal(verifySvid(der(leaf, zeroMin), bundleOf(r), { now: NOW }).toString(), ID);
  });

  it("refuses a CA whose nameConstraints it cannot enforce as written", async () => {
    const r = await root();
    const cases: Array<[string, x509.Extension, RegExp]> = [
      [
        "minimum",
        nameConstraints({ permitted: [uriSubtree("cluster.local", tlv(0x80, Buffer.from([1])))] }),
        /minimum/,
      ],
      [
        "maximum",
        nameConstraints({ permitted: [uriSubtree("cluster.local", tlv(0x81, Buffer.from([3])))] }),
        /maximum/,
      ],
      ["empty", nameConstraints({}), /neither permittedSubtrees nor excludedSubtrees/],
      ["empty-permitted", nameConstraints({ permitted: [] }), /empty permittedSubtrees/],
      [
        "rfc822",
        nameConstraints({ excluded: [seq(tlv(0x81, Buffer.from("example.com")))] }, false),
        /rfc822Name/,
      ],
      [
        "otherName",
        nameConstraints({
          permitted: [seq(tlv(0xa0, encodeOid("1.2.3.4"), tlv(0xa0, tlv(0x0c, Buffer.from("x")))))],
        }),
        /otherName/,
      ],
      ["uri-path", nameConstraints({ permitted: [uriSubtree("cluster.local/ns")] }), /not a host/],
      ["uri-empty", nameConstraints({ excluded: [uriSubtree("")] }), /not a host/],
      [
        "ip-mask",
        nameConstraints({ permitted: [seq(tlv(0x87, Buffer.from([10, 0, 0, 0, 255, 0, 255, 0])))] }),
        /iPAddress/,
      ],
    ];
    // The first field names the case; the subject does not, so the reason must come from the message.
    for (const [, ext, reason] of cases) {
      const mid = await issue(r, "CN=mid", [...caExtensions(), ext]);
      const leaf = await issue(mid, "", leafExtensions());
      expectCode(
        () => verifySvid(der(leaf, mid), bundleOf(r), { now: NOW }),
        "ERR_CERT_ISSUER_INVALID",
        reason,
      );
    }
  });

  it("refuses a URI without a host name below a CA with URI constraints", async () => {
    const r = await root([nameConstraints({ excluded: [uriSubtree("other.org")] })]);
    const bundle = bundleOf(r);
    for (const uri of ["urn:example:ca", "https://10.0.0.1/ca", "https://user@cluster.local/ca"]) {
      const mid = await issue(r, "CN=mid", [
        ...caExtensions(),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: uri }]),
      ]);
      const leaf = await issue(mid, "", leafExtensions());
      expectCode(
        () => verifySvid(der(leaf, mid), bundle, { now: NOW }),
        "ERR_CERT_NAME_NOT_PERMITTED",
        /no host name/,
      );
    }
    const named = await issue(r, "CN=mid", [
      ...caExtensions(),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://cluster.local" }]),
    ]);
    const leaf = await issue(named, "", leafExtensions());
    assert.equal(verifySvid(der(leaf, named), bundle, { now: NOW }).toString(), ID);
  });

  it("does not apply constraints of a CA to a self-issued intermediate below it, only to the leaf", async () => {
    // RFC 5280 6.1.3 (b): self-issued intermediates are skipped; here one with a name outside the subtree.
    const r = await root([otherOrgOnly()]);
    const pair = await keys();
    const reissued = await x509.X509CertificateGenerator.create({
      serialNumber: String(serial++),
      subject: r.cert.subject,
      issuer: r.cert.subject,
      ...window,
      publicKey: pair.publicKey,
      signingKey: r.keys.privateKey,
      signingAlgorithm: SIG,
      extensions: [
        ...caExtensions(),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://cluster.local" }]),
      ],
    });
    const selfIssued = { cert: reissued, keys: pair };
    const otherLeaf = await issue(selfIssued, "", [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "spiffe://other.org/w" }], true),
    ]);
    const bundle = TrustBundle.fromPem("other.org", r.cert.toString("pem"));
    assert.equal(
      verifySvid(der(otherLeaf, selfIssued), bundle, { now: NOW }).toString(),
      "spiffe://other.org/w",
    );
    const clusterLeaf = await issue(selfIssued, "", leafExtensions());
    expectCode(
      () => verifySvid(der(clusterLeaf, selfIssued), bundleOf(r), { now: NOW }),
      "ERR_CERT_NAME_NOT_PERMITTED",
    );
  });
});
