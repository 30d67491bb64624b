import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, type KeyObject, sign, X509Certificate } from "node:crypto";
import { before, describe, it } from "node:test";
import {
  type CertificateAuthority,
  createCertificateAuthority,
  startRootRotator,
} from "./certificate-authority.js";
import { createCsr } from "./csr.js";
import { encodeOid, extension, seq, tlv } from "./der.js";
import { SpiffeError } from "./errors.js";
import { generateKeyPair } from "./key-pair.js";
import { KEY_USAGE, parseCertificateDer } from "./parsed-certificate.js";
import { decodeCertificatesPem, encodePem } from "./pem.js";
import { SpiffeId } from "./spiffe-id.js";
import { TrustBundle } from "./trust-bundle.js";
import { verifySvid } from "./verify-svid.js";
import { trustedRootsOf, x509SvidFromChain } from "./x509-svid.js";

const ID = "spiffe://cluster.local/ns/default/sa/web";

function leafOf(chain: string[] | string) {
  const pem = Array.isArray(chain) ? (chain[0] as string) : chain;
  return parseCertificateDer(decodeCertificatesPem(pem)[0] as Buffer);
}

/**
 * A CSR for any key Node can sign with (createCsr only takes the package's own key algorithms), with
 * one critical URI SAN; `spki` replaces the key's own encoding when given.
 */
function handMadeCsr(privateKey: KeyObject, id: string, spki?: Buffer): string {
  const publicKeyInfo = spki ?? createPublicKey(privateKey).export({ type: "spki", format: "der" });
  const san = extension("2.5.29.17", true, seq(tlv(0x86, Buffer.from(id))));
  const attributes = tlv(0xa0, seq(encodeOid("1.2.840.113549.1.9.14"), tlv(0x31, seq(san))));
  const info = seq(tlv(0x02, Buffer.from([0])), seq(), publicKeyInfo, attributes);
  const algorithm =
    privateKey.asymmetricKeyType === "rsa"
      ? seq(encodeOid("1.2.840.113549.1.1.11"), Buffer.from([0x05, 0x00]))
      : seq(encodeOid("1.2.840.10045.4.3.2"));
  const signature = sign("sha256", info, privateKey);
  return encodePem("CERTIFICATE REQUEST", seq(info, algorithm, tlv(0x03, Buffer.from([0]), signature)));
}

describe("createCertificateAuthority (self-signed)", () => {
  let ca: CertificateAuthority;
  const now = new Date("2030-01-01T00:00:00Z");
  before(async () => {
    ca = await createCertificateAuthority({ trustDomain: "cluster.local", clock: () => now });
  });

  it("makes a 10-year CA root", () => {
    const root = new X509Certificate(ca.rootCertPem());
    assert.ok(root.ca);
    assert.equal(root.subject, "O=cluster.local");
    const life = Date.parse(root.validTo) - Date.parse(root.validFrom);
    assert.ok(Math.abs(life - (3650 * 86400 + 120) * 1000) < 2000, `root life ${life}`);
    assert.ok(ca.selfSigned);
  });

  it("gives its roots keyCertSign and cRLSign only, critical: digitalSignature is for leaves", async () => {
    // X509-SVID appendix A: digitalSignature is set if and only if the SVID is a leaf.
    const onlyCaBits = KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign;
    const rootOf = (pem: string) => parseCertificateDer(decodeCertificatesPem(pem)[0] as Buffer);
    const first = rootOf(ca.rootCertPem());
    assert.equal(first.keyUsage, onlyCaBits);
    assert.equal(first.keyUsageCritical, true);
    const rca = await createCertificateAuthority({ clock: () => now });
    await rca.rotateRoot();
    assert.equal(rootOf(rca.rootCertPem()).keyUsage, onlyCaBits);
    await rca.rotateRoot({ reuseKey: true });
    assert.equal(rootOf(rca.rootCertPem()).keyUsage, onlyCaBits);
  });

  it("signs a CSR into an Istio-shaped workload certificate", async () => {
    const keys = await generateKeyPair();
    const csr = await createCsr({ spiffeId: ID, privateKeyPem: keys.privateKeyPem });
    const signed = await ca.sign(csr, { spiffeId: ID });
    assert.equal(signed.certChain.length, 2);
    for (const pem of signed.certChain) assert.ok(pem.endsWith("-----\n"));
    assert.equal(signed.certChain[1], ca.rootCertPem());
    const leaf = leafOf(signed.certChain);
    assert.equal(leaf.subject, "");
    assert.deepEqual(leaf.uriSans, [ID]);
    assert.ok(leaf.sanCritical);
    assert.equal(leaf.isCa, false);
    assert.equal(leaf.keyUsage, 1 | 4);
    assert.ok(leaf.keyUsageCritical);
    assert.deepEqual(leaf.extKeyUsage, ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    assert.equal(leaf.notBefore.getTime(), now.getTime() - 120_000);
    assert.equal(leaf.notAfter.getTime(), now.getTime() + 86_400_000);
    // The certified key is the CSR's key.
    assert.equal(leaf.node.publicKey.export({ type: "spki", format: "pem" }), keys.publicKeyPem);
    assert.equal(verifySvid(signed.certChain, ca.trustBundle(), { now }).toString(), ID);
  });

  it("honours a requested TTL and refuses one above 90 days", async () => {
    const svid = await ca.issue({ spiffeId: ID, ttlSeconds: 3600 });
    assert.equal(svid.notAfter.getTime(), now.getTime() + 3_600_000);
    const dflt = await ca.issue({ spiffeId: ID, ttlSeconds: 0 });
    assert.equal(dflt.notAfter.getTime(), now.getTime() + 86_400_000);
    await assert.rejects(ca.issue({ spiffeId: ID, ttlSeconds: 91 * 86400 }), { code: "ERR_CA_SIGN_REFUSED" });
  });

  it("refuses a TTL that is not a number of seconds instead of using the default", async () => {
    const keys = await generateKeyPair();
    const csr = await createCsr({ spiffeId: ID, privateKeyPem: keys.privateKeyPem });
    for (const ttlSeconds of ["3600", Number.NaN, -5, Number.POSITIVE_INFINITY, null]) {
      const bad = ttlSeconds as unknown as number;
      await assert.rejects(
        ca.issue({ spiffeId: ID, ttlSeconds: bad }),
        { code: "ERR_CA_SIGN_REFUSED", message: /ttlSeconds/ },
        String(ttlSeconds),
      );
      await assert.rejects(
        ca.sign(csr, { spiffeId: ID, ttlSeconds: bad }),
        { code: "ERR_CA_SIGN_REFUSED", message: /ttlSeconds/ },
        String(ttlSeconds),
      );
    }
    // Absent and 0 still mean the default lifetime.
    const dflt = await ca.issue({ spiffeId: ID });
    assert.equal(dflt.notAfter.getTime(), now.getTime() + 86_400_000);
  });

  it("refuses a CSR that asks for another identity and never issues", async () => {
    const keys = await generateKeyPair();
    const csr = await createCsr({
      spiffeId: "spiffe://cluster.local/ns/kube-system/sa/admin",
      privateKeyPem: keys.privateKeyPem,
    });
    await assert.rejects(ca.sign(csr, { spiffeId: ID }), (err: unknown) => {
      assert.ok(err instanceof SpiffeError);
      assert.equal(err.code, "ERR_CSR_IDENTITY_MISMATCH");
      assert.match(err.message, /kube-system/);
      return true;
    });
  });

  it("with ignoreCsrSans, certifies the given identity and never the one the CSR asks for", async () => {
    const keys = await generateKeyPair();
    const csr = await createCsr({
      spiffeId: "spiffe://cluster.local/ns/kube-system/sa/admin",
      privateKeyPem: keys.privateKeyPem,
    });
    const signed = await ca.sign(csr, { spiffeId: ID, ignoreCsrSans: true });
    const leaf = leafOf(signed.certChain);
    assert.deepEqual(leaf.uriSans, [ID]);
    assert.equal(signed.spiffeId.toString(), ID);
    // The certified key is still the CSR's, and the CSR must still prove possession of it.
    assert.equal(leaf.node.publicKey.export({ type: "spki", format: "pem" }), keys.publicKeyPem);
    const der = decodeCertificatesPem(csr.replace(/CERTIFICATE REQUEST/g, "CERTIFICATE"))[0] as Buffer;
    const badSig = Buffer.from(der);
    badSig[badSig.length - 5] = (badSig[badSig.length - 5] as number) ^ 0xff;
    await assert.rejects(
      ca.sign(encodePem("CERTIFICATE REQUEST", badSig), { spiffeId: ID, ignoreCsrSans: true }),
      {
        code: "ERR_CSR_INVALID",
      },
    );
  });

  it("refuses an identity outside its trust domain", async () => {
    await assert.rejects(ca.issue({ spiffeId: "spiffe://other.td/ns/a/sa/b" }), {
      code: "ERR_CA_SIGN_REFUSED",
    });
    await assert.rejects(ca.issue({ spiffeId: "not-an-id" }), { code: "ERR_SPIFFE_ID_INVALID" });
  });

  it("refuses the bare trust domain ID, which only signing certificates carry", async () => {
    await assert.rejects(ca.issue({ spiffeId: "spiffe://cluster.local" }), {
      code: "ERR_CA_SIGN_REFUSED",
    });
    const keys = await generateKeyPair();
    const csr = await createCsr({ spiffeId: "spiffe://cluster.local", privateKeyPem: keys.privateKeyPem });
    await assert.rejects(ca.sign(csr, { spiffeId: "spiffe://cluster.local" }), {
      code: "ERR_CA_SIGN_REFUSED",
    });
  });

  it("rejects garbage, truncated and badly signed CSRs with ERR_CSR_INVALID", async () => {
    const keys = await generateKeyPair();
    const csr = await createCsr({ spiffeId: ID, privateKeyPem: keys.privateKeyPem });
    const der = decodeCertificatesPem(csr.replace(/CERTIFICATE REQUEST/g, "CERTIFICATE"))[0] as Buffer;
    const wrap = (d: Buffer) =>
      `-----BEGIN CERTIFICATE REQUEST-----\n${d.toString("base64")}\n-----END CERTIFICATE REQUEST-----\n`;
    const badSig = Buffer.from(der);
    badSig[badSig.length - 5] = (badSig[badSig.length - 5] as number) ^ 0xff;
    const cases = [
      "garbage",
      "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
      wrap(der.subarray(0, der.length - 20)),
      wrap(badSig),
      42 as unknown as string,
    ];
    for (const input of cases) {
      await assert.rejects(
        ca.sign(input, { spiffeId: ID }),
        { code: "ERR_CSR_INVALID" },
        String(input).slice(0, 40),
      );
    }
  });

  it("certifies only keys every mesh peer accepts: P-256, P-384, RSA of 2048 bits or more", async () => {
    const ec = (namedCurve: string) => generateKeyPairSync("ec", { namedCurve }).privateKey;
    const rsa = (modulusLength: number) => generateKeyPairSync("rsa", { modulusLength }).privateKey;
    for (const key of [ec("prime256v1"), ec("secp384r1"), rsa(2048), rsa(3072)]) {
      const signed = await ca.sign(handMadeCsr(key, ID), { spiffeId: ID });
      assert.equal(verifySvid(signed.certChain, ca.trustBundle(), { now }).toString(), ID);
    }
    // The same P-256 key with its point compressed: valid for OpenSSL, refused by rustls and Go.
    const p256 = ec("prime256v1");
    const jwk = createPublicKey(p256).export({ format: "jwk" });
    const x = Buffer.from(jwk.x as string, "base64url");
    const yOdd = (Buffer.from(jwk.y as string, "base64url").at(-1) as number) & 1;
    const compressed = seq(
      seq(encodeOid("1.2.840.10045.2.1"), encodeOid("1.2.840.10045.3.1.7")),
      tlv(0x03, Buffer.from([0, 2 + yOdd]), x),
    );
    // The same key's point moved off the curve, and one whose x is not below the field prime.
    const y = Buffer.from(jwk.y as string, "base64url");
    const p256Spki = (px: Buffer, py: Buffer) =>
      seq(
        seq(encodeOid("1.2.840.10045.2.1"), encodeOid("1.2.840.10045.3.1.7")),
        tlv(0x03, Buffer.from([0, 4]), px, py),
      );
    const offCurve = p256Spki(x, Buffer.from(y.map((b, i) => (i === y.length - 1 ? b ^ 1 : b))));
    const beyondPrime = p256Spki(Buffer.alloc(32, 0xff), y);
    const refused: [string, string][] = [
      ["P-256 point off the curve", handMadeCsr(p256, ID, offCurve)],
      ["P-256 x beyond the field prime", handMadeCsr(p256, ID, beyondPrime)],
      ["RSA 1024", handMadeCsr(rsa(1024), ID)],
      ["RSA 512", handMadeCsr(rsa(512), ID)],
      ["P-521", handMadeCsr(ec("secp521r1"), ID)],
      ["secp256k1", handMadeCsr(ec("secp256k1"), ID)],
      ["brainpoolP256r1", handMadeCsr(ec("brainpoolP256r1"), ID)],
      ["compressed P-256", handMadeCsr(p256, ID, compressed)],
      ["RSA-PSS key", handMadeCsr(generateKeyPairSync("rsa-pss", { modulusLength: 2048 }).privateKey, ID)],
    ];
    for (const [name, csr] of refused) {
      await assert.rejects(ca.sign(csr, { spiffeId: ID }), { code: "ERR_CSR_INVALID" }, name);
    }
  });

  it("issues RSA 2048 SVIDs", async () => {
    const svid = await ca.issue({ spiffeId: ID, keyAlgorithm: "RSA_2048" });
    assert.match(svid.privateKeyPem, /BEGIN PRIVATE KEY/);
    assert.equal(leafOf(svid.certChainPem).node.publicKey.asymmetricKeyType, "rsa");
    assert.ok(verifySvid(svid.certChainPem, ca.trustBundle(), { now }).equals(ID));
  });

  it("caps NotAfter at the signer's NotAfter", async () => {
    const short = await createCertificateAuthority({ rootTtlSeconds: 1800, clock: () => now });
    const svid = await short.issue({ spiffeId: ID });
    assert.equal(svid.notAfter.getTime(), now.getTime() + 1_800_000);
  });

  it("rotates its root: both published, re-signed, old retired", async () => {
    const rca = await createCertificateAuthority({ clock: () => now });
    const oldSvid = await rca.issue({ spiffeId: ID });
    const oldRoot = rca.rootCertPem();
    await rca.rotateRoot();
    assert.notEqual(rca.rootCertPem(), oldRoot);
    const both = rca.trustBundle();
    assert.equal(both.rootsPem("cluster.local").length, 2);
    const newSvid = await rca.issue({ spiffeId: ID });
    // Every root of the bundle is reported, so a workload learns the new one from its next answer.
    assert.deepEqual(newSvid.rootsPem, [oldRoot, rca.rootCertPem()]);
    // During the overlap, both generations verify.
    assert.ok(verifySvid(oldSvid.certChainPem, both, { now }).equals(ID));
    assert.ok(verifySvid(newSvid.certChainPem, both, { now }).equals(ID));
    assert.equal(rca.retireOldRoots(), 1);
    const after = rca.trustBundle();
    assert.equal(after.rootsPem("cluster.local").length, 1);
    assert.ok(verifySvid(newSvid.certChainPem, after, { now }).equals(ID));
    assert.throws(() => verifySvid(oldSvid.certChainPem, after, { now }), { code: "ERR_CHAIN_UNTRUSTED" });
    assert.equal(rca.retireOldRoots(), 0);
  });

  it("exports its generated root with the key as cacerts, which a new CA can load and sign with", async () => {
    const first = await createCertificateAuthority({ clock: () => now });
    const before = await first.issue({ spiffeId: ID });
    const exported = first.exportCacerts();
    assert.equal(exported.caCertPem, first.rootCertPem());
    assert.equal(exported.rootCertPem, first.rootCertPem());
    assert.equal(exported.certChainPem, first.rootCertPem());
    assert.match(exported.caKeyPem, /^-----BEGIN PRIVATE KEY-----\n/);
    // A restarted CA loads the same root (the key must match ca-cert.pem, or loading fails).
    const restarted = await createCertificateAuthority({ clock: () => now, cacerts: exported });
    assert.equal(restarted.rootCertPem(), first.rootCertPem());
    const after = await restarted.issue({ spiffeId: ID });
    const bundle = first.trustBundle();
    assert.ok(verifySvid(after.certChainPem, bundle, { now }).equals(ID));
    assert.ok(verifySvid(before.certChainPem, restarted.trustBundle(), { now }).equals(ID));
    // During a rotation the new root signs and both roots are published.
    await first.rotateRoot();
    const rotated = first.exportCacerts();
    assert.equal(rotated.caCertPem, first.rootCertPem());
    assert.notEqual(rotated.caKeyPem, exported.caKeyPem);
    assert.equal(decodeCertificatesPem(rotated.rootCertPem).length, 2);
    const both = await createCertificateAuthority({ clock: () => now, cacerts: rotated });
    assert.ok(verifySvid(before.certChainPem, both.trustBundle(), { now }).equals(ID));
  });

  it("re-issues its root for the same key: old and new certificates verify against either root", async () => {
    const rca = await createCertificateAuthority({ organization: "Example Mesh", clock: () => now });
    const oldSvid = await rca.issue({ spiffeId: ID });
    const oldRootPem = rca.rootCertPem();
    const oldKey = rca.exportCacerts().caKeyPem;
    await rca.rotateRoot({ reuseKey: true });
    const newRootPem = rca.rootCertPem();
    assert.notEqual(newRootPem, oldRootPem);
    assert.equal(rca.exportCacerts().caKeyPem, oldKey);
    const oldRoot = new X509Certificate(oldRootPem);
    const newRoot = new X509Certificate(newRootPem);
    assert.equal(newRoot.subject, oldRoot.subject);
    assert.notEqual(newRoot.serialNumber, oldRoot.serialNumber);
    assert.ok(newRoot.publicKey.equals(oldRoot.publicKey));
    const newSvid = await rca.issue({ spiffeId: ID });
    const onlyOld = TrustBundle.fromPem("cluster.local", oldRootPem);
    const onlyNew = TrustBundle.fromPem("cluster.local", newRootPem);
    assert.ok(verifySvid(newSvid.certChainPem, onlyOld, { now }).equals(ID));
    assert.ok(verifySvid(oldSvid.certChainPem, onlyNew, { now }).equals(ID));
  });

  it("answers with every root of the bundle in the chain's last element", async () => {
    const rca = await createCertificateAuthority({ clock: () => now });
    const oldRoot = rca.rootCertPem();
    const { privateKeyPem } = await generateKeyPair();
    const csr = await createCsr({ spiffeId: ID, privateKeyPem });
    const before = await rca.sign(csr, { spiffeId: ID });
    assert.equal(before.certChain.length, 2);
    assert.equal(before.certChain[1], oldRoot);
    await rca.rotateRoot();
    const during = await rca.sign(csr, { spiffeId: ID });
    assert.equal(during.certChain.length, 2);
    assert.equal(during.certChain[1], oldRoot + rca.rootCertPem());
    const svid = x509SvidFromChain(during.certChain, privateKeyPem);
    assert.deepEqual(svid.rootsPem, [oldRoot, rca.rootCertPem()]);
    assert.equal(decodeCertificatesPem(svid.certChainPem).length, 1);
    // A workload configured with the old root trusts both once its certificate says so.
    const trustOf = trustedRootsOf(oldRoot);
    assert.equal(trustOf(svid), oldRoot + rca.rootCertPem());
    assert.equal(trustOf(svid), trustOf(svid));
    assert.equal(trustOf(x509SvidFromChain(before.certChain, privateKeyPem)), oldRoot);
    assert.throws(() => trustedRootsOf("no pem here"), { code: "ERR_PEM_INVALID" });
    rca.retireOldRoots();
    const after = await rca.sign(csr, { spiffeId: ID });
    assert.equal(after.certChain[1], rca.rootCertPem());
    // The retired root goes with the next renewal, the configured one too: it is not added back.
    assert.equal(trustOf(x509SvidFromChain(after.certChain, privateKeyPem)), rca.rootCertPem());
    // An answer without roots leaves the configured ones.
    const leafOnly = x509SvidFromChain([after.certChain[0] as string], privateKeyPem);
    assert.deepEqual(leafOnly.rootsPem, []);
    assert.equal(trustOf(leafOnly), oldRoot);
  });

  it("rotates a self-signed root loaded back from its export only when told it is its own", async () => {
    const first = await createCertificateAuthority({ clock: () => now });
    const exported = first.exportCacerts();
    const plugged = await createCertificateAuthority({ clock: () => now, cacerts: exported });
    assert.equal(plugged.selfSigned, false);
    await assert.rejects(plugged.rotateRoot(), { code: "ERR_CA_CONFIG_INVALID" });
    const own = await createCertificateAuthority({ clock: () => now, cacerts: exported, selfSigned: true });
    assert.equal(own.selfSigned, true);
    await own.rotateRoot({ reuseKey: true });
    assert.equal(own.trustBundle().rootsPem("cluster.local").length, 2);
    // Loaded again after the rotation: both roots kept, the new one signs, still rotatable.
    const again = await createCertificateAuthority({
      clock: () => now,
      cacerts: own.exportCacerts(),
      selfSigned: true,
    });
    assert.equal(again.rootCertPem(), own.rootCertPem());
    assert.equal(again.trustBundle().rootsPem("cluster.local").length, 2);
    // An intermediate is not a root the CA can re-issue.
    const intermediate = await createCertificateAuthority({ clock: () => now });
    const leafCa = await intermediate.issue({ spiffeId: ID });
    await assert.rejects(
      createCertificateAuthority({
        clock: () => now,
        cacerts: {
          caCertPem: leafCa.certChainPem,
          caKeyPem: leafCa.privateKeyPem,
          rootCertPem: intermediate.rootCertPem(),
        },
        selfSigned: true,
      }),
      { code: "ERR_CA_CONFIG_INVALID" },
    );
  });

  it("adopts a root another replica re-issued for the shared key, and refuses any other", async () => {
    const exported = (await createCertificateAuthority({ clock: () => now })).exportCacerts();
    // The leader rotates a day later: its new root outlives the shared one by a day.
    const later = new Date(now.getTime() + 86_400_000);
    const leader = await createCertificateAuthority({
      clock: () => later,
      cacerts: exported,
      selfSigned: true,
    });
    const follower = await createCertificateAuthority({
      clock: () => now,
      cacerts: exported,
      selfSigned: true,
    });
    const oldRoot = follower.rootCertPem();
    await leader.rotateRoot({ reuseKey: true });
    assert.equal(follower.adoptRoot(leader.rootCertPem()), true);
    assert.equal(follower.rootCertPem(), leader.rootCertPem());
    assert.deepEqual(follower.trustBundle().rootsPem("cluster.local"), [oldRoot, leader.rootCertPem()]);
    const svid = await follower.issue({ spiffeId: ID });
    assert.ok(leafOf(svid.certChainPem).issuerDer.equals(leafOf(leader.rootCertPem()).subjectDer));
    assert.ok(
      verifySvid(svid.certChainPem, TrustBundle.fromPem("cluster.local", leader.rootCertPem()), {
        now: later,
      }),
    );
    // Already the signer, or an older root already known: nothing changes.
    assert.equal(follower.adoptRoot(leader.rootCertPem()), false);
    assert.equal(follower.adoptRoot(oldRoot), false);
    assert.equal(follower.rootCertPem(), leader.rootCertPem());
    // Another CA's root, two certificates, or no certificate at all.
    const stranger = await createCertificateAuthority({ clock: () => now });
    for (const bad of [stranger.rootCertPem(), oldRoot + leader.rootCertPem(), "nothing"]) {
      assert.throws(() => follower.adoptRoot(bad), { code: "ERR_CA_CONFIG_INVALID" });
    }
    await assert.rejects(async () => stranger.adoptRoot(leader.rootCertPem()), {
      code: "ERR_CA_CONFIG_INVALID",
    });
    const plugged = await createCertificateAuthority({ clock: () => now, cacerts: exported });
    assert.throws(() => plugged.adoptRoot(leader.rootCertPem()), { code: "ERR_CA_CONFIG_INVALID" });
  });

  it("reports when the root is inside its rotation grace period", async () => {
    let t = new Date("2030-01-01T00:00:00Z");
    const rca = await createCertificateAuthority({ rootTtlSeconds: 1000, clock: () => t });
    assert.equal(rca.rootNeedsRotation(), false);
    t = new Date(t.getTime() + 900_000);
    assert.equal(rca.rootNeedsRotation(), true);
    assert.equal(rca.rootNeedsRotation(5), false);
  });

  it("refuses issue and sign calls without their options or identity with a typed error", async () => {
    const csr = await createCsr({
      spiffeId: "spiffe://cluster.local/ns/a/sa/b",
      privateKeyPem: (await generateKeyPair()).privateKeyPem,
    });
    const cases: Array<[string, () => Promise<unknown>, string]> = [
      ["issue()", () => ca.issue(undefined as never), "issue option argument must be an options object"],
      ["issue(string)", () => ca.issue("spiffe://cluster.local/ns/a/sa/b" as never), "issue options must be"],
      ["issue({})", () => ca.issue({} as never), "issue option spiffeId must be"],
      ["issue({ spiffeId: 7 })", () => ca.issue({ spiffeId: 7 } as never), "issue option spiffeId must be"],
      ["sign(csr)", () => ca.sign(csr, undefined as never), "sign option argument must be an options object"],
      ["sign(csr, {})", () => ca.sign(csr, {} as never), "sign option spiffeId must be"],
    ];
    for (const [name, call, message] of cases) {
      await assert.rejects(
        call(),
        (err: unknown) => {
          assert.ok(err instanceof SpiffeError, `${name}: ${err}`);
          assert.equal(err.code, "ERR_OPTIONS_INVALID", `${name}: ${err.message}`);
          assert.ok(err.message.startsWith(message), `${name}: ${err.message}`);
          return true;
        },
        name,
      );
    }
    await assert.rejects(ca.issue({ spiffeId: "spiffe://cluster.local/a/../b" }), {
      code: "ERR_SPIFFE_ID_INVALID",
    });
  });

  it("validates its own options", async () => {
    await assert.rejects(createCertificateAuthority({ trustDomain: "Bad TD" }), {
      code: "ERR_TRUST_DOMAIN_INVALID",
    });
    await assert.rejects(createCertificateAuthority({ maxTtlSeconds: -1 }), {
      code: "ERR_CA_CONFIG_INVALID",
    });
  });

  it("refuses a default TTL longer than the maximum, which would fail every request without a TTL", async () => {
    await assert.rejects(createCertificateAuthority({ defaultTtlSeconds: 91 * 86400 }), (err: unknown) => {
      assert.ok(err instanceof SpiffeError);
      assert.equal(err.code, "ERR_CA_CONFIG_INVALID");
      assert.match(err.message, /defaultTtlSeconds/);
      return true;
    });
    await assert.rejects(createCertificateAuthority({ defaultTtlSeconds: 7200, maxTtlSeconds: 3600 }), {
      code: "ERR_CA_CONFIG_INVALID",
    });
    // Equal is fine: a request without a TTL gets the maximum.
    const now = new Date("2030-01-01T00:00:00Z");
    const equal = await createCertificateAuthority({
      defaultTtlSeconds: 3600,
      maxTtlSeconds: 3600,
      clock: () => now,
    });
    const svid = await equal.issue({ spiffeId: ID });
    assert.equal(svid.notAfter.getTime(), now.getTime() + 3_600_000);
  });

  it("refuses a requested TTL above its maximum and grants one at the maximum", async () => {
    const now = new Date("2030-01-01T00:00:00Z");
    const short = await createCertificateAuthority({
      defaultTtlSeconds: 600,
      maxTtlSeconds: 3600,
      clock: () => now,
    });
    await assert.rejects(short.issue({ spiffeId: ID, ttlSeconds: 3601 }), { code: "ERR_CA_SIGN_REFUSED" });
    const atMax = await short.issue({ spiffeId: ID, ttlSeconds: 3600 });
    assert.equal(atMax.notAfter.getTime(), now.getTime() + 3_600_000);
    const dflt = await short.issue({ spiffeId: ID });
    assert.equal(dflt.notAfter.getTime(), now.getTime() + 600_000);
  });

  it("refuses a NotBefore backdate that would make its certificates malformed or not yet valid", async () => {
    // NaN or an infinite backdate cannot be encoded as a time; a negative one dates NotBefore ahead.
    for (const backdateSeconds of [Number.NaN, Number.POSITIVE_INFINITY, -3600]) {
      await assert.rejects(
        createCertificateAuthority({ backdateSeconds }),
        { code: "ERR_CA_CONFIG_INVALID" },
        String(backdateSeconds),
      );
    }
    const exact = await createCertificateAuthority({ backdateSeconds: 0, clock: () => now });
    const svid = await exact.issue({ spiffeId: ID });
    assert.equal(svid.notBefore.getTime(), now.getTime());
    assert.equal(leafOf(svid.certChainPem).notBefore.getTime(), now.getTime());
  });

  it("counts issued certificates through the metrics sink", async () => {
    let issued = 0;
    const sink = {
      counter: (name: string) => ({
        inc: () => {
          if (name === "citadel_server_success_cert_issuance_count") issued++;
        },
      }),
      gauge: () => ({ set() {}, inc() {}, dec() {} }),
      histogram: () => ({ observe() {} }),
    };
    const mca = await createCertificateAuthority({ metrics: sink });
    await mca.issue({ spiffeId: SpiffeId.parse(ID) });
    assert.equal(issued, 1);
  });
});

describe("startRootRotator", () => {
  it("rotates inside the grace period and retires the old root later", async () => {
    let now = new Date("2030-01-01T00:00:00Z");
    const ca = await createCertificateAuthority({ rootTtlSeconds: 1000, clock: () => now });
    const pending = new Map<number, { fn: () => void; ms: number }>();
    let next = 1;
    const timers = {
      setTimeout: (fn: () => void, ms: number) => {
        pending.set(next, { fn, ms });
        return next++;
      },
      clearTimeout: (h: unknown) => {
        pending.delete(h as number);
      },
    };
    let rotated = 0;
    let retired = 0;
    const rotator = startRootRotator(ca, {
      timers,
      reuseKey: false,
      retireAfterMs: 5000,
      onRotated: () => rotated++,
      onRetired: () => retired++,
    });
    assert.deepEqual(
      [...pending.values()].map((t) => t.ms),
      [3_600_000],
    );
    assert.equal(await rotator.check(), false);
    now = new Date(now.getTime() + 900_000);
    const oldRoot = ca.rootCertPem();
    assert.equal(await rotator.check(), true);
    assert.equal(rotated, 1);
    assert.notEqual(ca.rootCertPem(), oldRoot);
    assert.equal(ca.trustBundle().rootsPem("cluster.local").length, 2);
    const retire = [...pending.entries()].find(([, t]) => t.ms === 5000);
    assert.ok(retire);
    pending.delete(retire[0]);
    retire[1].fn();
    await new Promise((r) => setImmediate(r));
    assert.equal(retired, 1);
    assert.deepEqual(ca.trustBundle().rootsPem("cluster.local"), [ca.rootCertPem()]);
    rotator.stop();
    assert.equal(pending.size, 0);
  });

  it("refuses intervals that are not a number of ms a timer can wait", async () => {
    const ca = await createCertificateAuthority({ rootTtlSeconds: 1000 });
    const timers = { setTimeout: () => 0, clearTimeout: () => {} };
    const bad: Array<Record<string, unknown>> = [
      { checkIntervalMs: 1e10 },
      { checkIntervalMs: 2 ** 31 },
      { checkIntervalMs: Number.NaN },
      { checkIntervalMs: 0 },
      { checkIntervalMs: -5 },
      { checkIntervalMs: "60000" },
      { retireAfterMs: 1e10 },
      { retireAfterMs: -1 },
      { retireAfterMs: Number.NaN },
      { gracePercent: Number.NaN },
      { gracePercent: 0 },
      { gracePercent: 101 },
    ];
    for (const extra of bad) {
      assert.throws(
        () => startRootRotator(ca, { timers, ...extra } as Parameters<typeof startRootRotator>[1]),
        (err: unknown) => err instanceof SpiffeError && err.code === "ERR_OPTIONS_INVALID",
        JSON.stringify(extra),
      );
    }
    startRootRotator(ca, { timers, checkIntervalMs: 2 ** 31 - 1, retireAfterMs: 0 }).stop();
  });

  it("rotates only while shouldRotate says so", async () => {
    let now = new Date("2030-01-01T00:00:00Z");
    const ca = await createCertificateAuthority({ rootTtlSeconds: 1000, clock: () => now });
    let leader = false;
    const rotator = startRootRotator(ca, {
      shouldRotate: () => leader,
      timers: { setTimeout: () => 0, clearTimeout: () => {} },
    });
    now = new Date(now.getTime() + 900_000);
    const before = ca.rootCertPem();
    assert.equal(await rotator.check(), false);
    assert.equal(ca.rootCertPem(), before);
    leader = true;
    assert.equal(await rotator.check(), true);
    // Re-issued for the same key by default.
    assert.ok(new X509Certificate(ca.rootCertPem()).publicKey.equals(new X509Certificate(before).publicKey));
    rotator.stop();
  });
});
