import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, it } from "node:test";
import type { KeyAlgorithm } from "@ambient/spiffe";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import { ISTIOD_SERVICE_NAME, issueServingCertificate, servingHosts } from "./serving-certificate.js";

const ID = "spiffe://cluster.local/ns/istio-system/sa/istiod";

describe("issueServingCertificate", () => {
  for (const algorithm of ["ECDSA_P256", "ECDSA_P384", "RSA_2048"] as KeyAlgorithm[]) {
    it(`is signed by a ${algorithm} CA and names istiod by SPIFFE ID, DNS name and IP`, async () => {
      const cacerts = (
        await createCertificateAuthority({ trustDomain: "cluster.local", rootKeyAlgorithm: algorithm })
      ).exportCacerts();
      const { certChainPem, privateKeyPem } = await issueServingCertificate(cacerts, {
        spiffeId: ID,
        hosts: servingHosts(["127.0.0.1", "cp.example"]),
        ttlSeconds: 3600,
      });
      assert.match(privateKeyPem, /^-----BEGIN PRIVATE KEY-----/);
      const [leafPem] =
        certChainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
      const leaf = new X509Certificate(leafPem as string);
      const ca = new X509Certificate(cacerts.caCertPem);
      assert.ok(leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
      assert.equal(leaf.checkHost(ISTIOD_SERVICE_NAME), ISTIOD_SERVICE_NAME);
      assert.equal(leaf.checkHost("cp.example"), "cp.example");
      assert.equal(leaf.checkIP("127.0.0.1"), "127.0.0.1");
      assert.equal(leaf.checkHost("other.example"), undefined);
      assert.equal(
        leaf.subjectAltName
          ?.split(", ")
          .filter((n) => n.startsWith("URI:"))
          .join(),
        `URI:${ID}`,
      );
      assert.equal(leaf.ca, false);
      assert.ok(new Date(leaf.validTo).getTime() - Date.now() <= 3600 * 1000);
    });
  }

  it("always lists istiod.istio-system.svc first, once, without empty names", () => {
    assert.deepEqual(servingHosts([" cp.example ", "", ISTIOD_SERVICE_NAME, "10.0.0.1"]), [
      ISTIOD_SERVICE_NAME,
      "cp.example",
      "10.0.0.1",
    ]);
  });
});
