import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { before, describe, it } from "node:test";
import { type CertificateAuthority, createCertificateAuthority } from "./certificate-authority.js";
import { spiffeIdFromCertificate } from "./certificate-identity.js";
import { SpiffeError } from "./errors.js";
import { decodeCertificatesPem, encodePem } from "./pem.js";
import { TrustBundle } from "./trust-bundle.js";
import { verifySvid } from "./verify-svid.js";
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
