import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { createCertificateAuthority } from "./certificate-authority.js";
import { spiffeIdFromCertificate } from "./certificate-identity.js";
import { createCsr, parseCsr } from "./csr.js";
import { generateKeyPair, type KeyAlgorithm, loadSigningKey } from "./key-pair.js";

const ID = "spiffe://cluster.local/ns/default/sa/web";

describe("generateKeyPair and createCsr", () => {
  it("makes ECDSA P-256 keys by default and the other algorithms on request", async () => {
    const ec = await generateKeyPair();
    assert.equal(ec.algorithm, "ECDSA_P256");
    assert.equal(createPrivateKey(ec.privateKeyPem).asymmetricKeyDetails?.namedCurve, "prime256v1");
    const expected: Array<[KeyAlgorithm, string]> = [
      ["ECDSA_P384", "ec"],
      ["RSA_2048", "rsa"],
    ];
    for (const [algorithm, type] of expected) {
      const pair = await generateKeyPair({ algorithm });
      assert.equal(createPrivateKey(pair.privateKeyPem).asymmetricKeyType, type);
    }
    await assert.rejects(generateKeyPair({ algorithm: "DSA" as KeyAlgorithm }), { code: "ERR_KEY_INVALID" });
  });

  it("puts one critical URI SAN in the CSR, for EC and RSA keys, and openssl accepts it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "spiffe-csr-"));
    try {
      for (const algorithm of ["ECDSA_P256", "RSA_2048"] as const) {
        const keys = await generateKeyPair({ algorithm });
        const csr = await createCsr({ spiffeId: ID, privateKeyPem: keys.privateKeyPem });
        const parsed = await parseCsr(csr);
        assert.deepEqual(parsed.uriSans, [ID]);
        const file = join(dir, `${algorithm}.csr`);
        writeFileSync(file, csr);
        const text = execFileSync("openssl", ["req", "-in", file, "-noout", "-text", "-verify"], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "pipe"],
        });
        assert.match(
          text,
          /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/web/,
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("signs a CSR made by openssl (no SAN) for the identity the CA decides", async () => {
    const ca = await createCertificateAuthority();
    const dir = mkdtempSync(join(tmpdir(), "spiffe-csr-"));
    try {
      execFileSync(
        "openssl",
        [
          "req",
          "-new",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-keyout",
          "k.pem",
          "-out",
          "r.csr",
          "-subj",
          "/CN=ignored",
        ],
        { cwd: dir, stdio: "ignore" },
      );
      const { readFileSync } = await import("node:fs");
      const signed = await ca.sign(readFileSync(join(dir, "r.csr"), "utf8"), { spiffeId: ID });
      assert.equal(spiffeIdFromCertificate(signed.certChain[0] as string).toString(), ID);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects unusable private keys with ERR_KEY_INVALID", async () => {
    await assert.rejects(loadSigningKey("not a key"), { code: "ERR_KEY_INVALID" });
    const ed = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }) as string;
    await assert.rejects(loadSigningKey(ed), { code: "ERR_KEY_INVALID" });
    await assert.rejects(createCsr({ spiffeId: ID, privateKeyPem: "x" }), { code: "ERR_KEY_INVALID" });
    await assert.rejects(createCsr({ spiffeId: "bad", privateKeyPem: "x" }), {
      code: "ERR_SPIFFE_ID_INVALID",
    });
  });
});
