import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, it } from "node:test";
import type { KeyAlgorithm } from "@ambient/spiffe";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import {
  ISTIOD_SERVICE_NAME,
  issueServingCertificate,
  RenewingServingCertificate,
  servingHosts,
} from "./serving-certificate.js";

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

describe("RenewingServingCertificate", () => {
  async function issuer(ttlSeconds: number) {
    const cacerts = (await createCertificateAuthority({ trustDomain: "cluster.local" })).exportCacerts();
    return () => issueServingCertificate(cacerts, { spiffeId: ID, hosts: servingHosts(), ttlSeconds });
  }
  const serialOf = (pem: string) =>
    new X509Certificate(
      (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [])[0] as string,
    ).serialNumber;
  const until = async (what: string, check: () => boolean, ms = 10_000) => {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it("gives grpc-js its certificate once it listens, and each renewed one at half the lifetime", async () => {
    // 3 s, as below: with 2 s, a whole-second NotAfter and a slow issue on a loaded machine left the
    // last renewal's certificate within the second that counts as expired.
    const issue = await issuer(3);
    const renewals: Date[] = [];
    const serving = await RenewingServingCertificate.start({
      issue,
      ttlSeconds: 3,
      renewed: (notAfter) => renewals.push(notAfter),
    });
    try {
      const updates: string[] = [];
      const listener = (u: { certificate: Buffer } | null) => updates.push(serialOf(String(u?.certificate)));
      serving.addIdentityCertificateListener(listener);
      // Not in the same tick: grpc-js adds its own watcher right after this listener.
      assert.deepEqual(updates, []);
      await Promise.resolve();
      const first = serialOf(serving.current.certChainPem);
      assert.deepEqual(updates, [first]);
      await until("a renewal", () => renewals.length >= 1, 5000);
      const second = serialOf(serving.current.certChainPem);
      assert.notEqual(second, first);
      assert.deepEqual(updates, [first, second]);
      assert.ok((renewals[0] as Date).getTime() > Date.now(), "the renewed certificate is valid");
      assert.equal(serving.notAfter.getTime(), (renewals[0] as Date).getTime());
      serving.removeIdentityCertificateListener(listener);
      await serving.renew();
      assert.equal(updates.length, 2, "a removed listener hears nothing");
    } finally {
      serving.close();
    }
  });

  it("keeps the current certificate when a renewal fails, and tries again", async () => {
    // 3 s: a certificate's NotAfter has whole seconds, and one that expires within a second is
    // refused, so a 2 s lifetime left no margin for a slow issue on a loaded machine.
    const real = await issuer(3);
    let fail = 0;
    const failures: number[] = [];
    const renewals: Date[] = [];
    const serving = await RenewingServingCertificate.start({
      issue: async () => {
        if (fail > 0) {
          fail--;
          throw new Error("CA unavailable");
        }
        return real();
      },
      ttlSeconds: 3,
      renewed: (notAfter) => renewals.push(notAfter),
      failed: (_err, retryInMs) => failures.push(retryInMs),
    });
    try {
      const first = serving.current.certChainPem;
      fail = 2;
      await until("two failures and a renewal", () => renewals.length === 1, 8000);
      assert.deepEqual(failures, [300, 300]);
      assert.notEqual(serving.current.certChainPem, first);
    } finally {
      serving.close();
    }
  });

  it("refuses a renewed certificate that has already expired (its CA has), keeping the current one", async () => {
    const cacerts = (await createCertificateAuthority({ trustDomain: "cluster.local" })).exportCacerts();
    let ttlSeconds = 3600;
    const serving = await RenewingServingCertificate.start({
      issue: () => issueServingCertificate(cacerts, { spiffeId: ID, hosts: servingHosts(), ttlSeconds }),
      ttlSeconds: 3600,
    });
    try {
      const first = serving.current;
      // Capped as a CA that expires now would cap it.
      ttlSeconds = 0.5;
      await assert.rejects(serving.renew(), { code: "ERR_CONTROL_PLANE_STATE", message: /has expired/ });
      assert.equal(serving.current, first);
    } finally {
      serving.close();
    }
  });

  it("waits past the longest timer in steps for a long lifetime, and stops when closed", async (t) => {
    const issue = await issuer(90 * 24 * 3600);
    // The timers it sets, by delay: a delay past 2^31 - 1 ms would fire at once (Node clamps it to 1).
    const timers: { ms: number; fn: () => void }[] = [];
    let cleared = 0;
    t.mock.method(globalThis, "setTimeout", (fn: () => void, ms: number) => {
      timers.push({ fn, ms });
      return { unref() {}, ref() {} };
    });
    t.mock.method(globalThis, "clearTimeout", () => {
      cleared++;
    });
    let issued = 0;
    const serving = await RenewingServingCertificate.start({
      issue: async () => {
        issued++;
        return issue();
      },
      ttlSeconds: 90 * 24 * 3600,
    });
    // 45 days to the renewal: a step of the longest timer, then (as it fires) another.
    assert.deepEqual(
      timers.map((x) => x.ms),
      [2 ** 31 - 1],
    );
    timers[0]?.fn();
    assert.equal(timers.length, 2);
    assert.equal(timers[1]?.ms, 2 ** 31 - 1);
    assert.equal(issued, 1);
    serving.close();
    assert.equal(cleared, 1);
    // A step that fires after close sets nothing more.
    timers[1]?.fn();
    assert.equal(timers.length, 2);
    assert.equal(issued, 1);
  });
});
