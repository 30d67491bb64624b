// Name constraints (RFC 5280 4.2.1.10) on X.509-SVID chains made by openssl, with `openssl verify`
// on the same chain as the oracle: verifySvid must reach the same verdict.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { OpensslDir, svidExt } from "../test/openssl.js";
import { createCertificateAuthority } from "./certificate-authority.js";
import { SpiffeError } from "./errors.js";
import { SpiffeId } from "./spiffe-id.js";
import { TrustBundle } from "./trust-bundle.js";
import { verifySvid } from "./verify-svid.js";

const CA_EXT = [
  "basicConstraints=critical,CA:TRUE",
  "keyUsage=critical,keyCertSign,cRLSign",
  "subjectKeyIdentifier=hash",
  "authorityKeyIdentifier=keyid",
];

/** Leaf extension lines: an SVID for `uri`, with extra SANs when given. */
function leafExt(uri: string, extraSans: string[] = []): string[] {
  const base = svidExt(uri).filter((l) => !l.startsWith("subjectAltName"));
  return [...base, `subjectAltName=critical,${[`URI:${uri}`, ...extraSans].join(",")}`];
}

interface Verdicts {
  openssl: { ok: boolean; output: string };
  ours: { ok: boolean; code?: string; message?: string };
}

describe("verifySvid name constraints, with openssl verify as the oracle", () => {
  const ossl = new OpensslDir();
  let n = 0;

  before(() => {
    ossl.makeRoot("root", "/O=plain-root");
  });
  after(() => ossl.cleanup());

  /**
   * Makes `root -> mid (with `midExtra` lines, nameConstraints among them) -> leaf` and returns both
   * verdicts. With `rootExtra`, a fresh root carries those lines (a constrained trust anchor).
   */
  async function verdicts(options: {
    midExtra?: string[];
    rootExtra?: string[];
    midSubject?: string;
    leafSubject?: string;
    leafUri: string;
    leafSans?: string[];
    noMid?: boolean;
  }): Promise<Verdicts> {
    const id = `c${n++}`;
    let root = "root";
    if (options.rootExtra) {
      root = `${id}-root`;
      ossl.makeRoot(root, `/O=${id}-root`, options.rootExtra);
    }
    let chainPem = "";
    let issuer = root;
    if (!options.noMid) {
      ossl.makeSigned(`${id}-mid`, root, options.midSubject ?? `/O=${id}-mid`, [
        ...CA_EXT,
        ...(options.midExtra ?? []),
      ]);
      issuer = `${id}-mid`;
    }
    ossl.makeSigned(
      `${id}-leaf`,
      issuer,
      options.leafSubject ?? "/O=workload",
      leafExt(options.leafUri, options.leafSans),
    );
    const args = ["verify", "-CAfile", `${root}-cert.pem`];
    if (!options.noMid) args.push("-untrusted", `${id}-mid-cert.pem`);
    args.push(`${id}-leaf-cert.pem`);
    const run = await ossl.tryRun(args);
    chainPem = ossl.read(`${id}-leaf-cert.pem`) + (options.noMid ? "" : ossl.read(`${id}-mid-cert.pem`));
    const trustDomain = SpiffeId.parse(options.leafUri).trustDomain;
    const bundle = TrustBundle.fromPem(trustDomain, ossl.read(`${root}-cert.pem`));
    let ours: Verdicts["ours"];
    try {
      verifySvid(chainPem, bundle);
      ours = { ok: true };
    } catch (err) {
      assert.ok(err instanceof SpiffeError, String(err));
      ours = { ok: false, code: err.code, message: err.message };
    }
    return { openssl: { ok: run.code === 0 && /: OK/.test(run.output), output: run.output }, ours };
  }

  /** Both verifiers accept. */
  function bothAccept(v: Verdicts): void {
    assert.equal(v.openssl.ok, true, `openssl: ${v.openssl.output}`);
    assert.equal(v.ours.ok, true, `verifySvid: ${v.ours.code} ${v.ours.message}`);
  }

  /** Both refuse, openssl for a name constraint (`reason`), ours with ERR_CERT_NAME_NOT_PERMITTED. */
  function bothRefuse(v: Verdicts, reason: RegExp): void {
    assert.equal(v.openssl.ok, false, "openssl accepted");
    assert.match(v.openssl.output, reason);
    assert.equal(v.ours.ok, false, "verifySvid accepted");
    assert.equal(v.ours.code, "ERR_CERT_NAME_NOT_PERMITTED", v.ours.message);
  }

  it("a permitted URI host admits exactly that trust domain", async () => {
    const nc = ["nameConstraints=critical,permitted;URI:cluster.local"];
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/ns/a/sa/b" }));
    const other = await verdicts({ midExtra: nc, leafUri: "spiffe://other.org/ns/a/sa/b" });
    bothRefuse(other, /permitted subtree violation/);
    assert.match(other.ours.message ?? "", /spiffe:\/\/other\.org\/ns\/a\/sa\/b/);
    // Not a suffix match: a sub-domain of the permitted host is outside it.
    bothRefuse(
      await verdicts({ midExtra: nc, leafUri: "spiffe://a.cluster.local/ns/a/sa/b" }),
      /permitted subtree violation/,
    );
  });

  it("a non-critical constraint is enforced the same way", async () => {
    const nc = ["nameConstraints=permitted;URI:cluster.local"];
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/ns/a/sa/b" }));
    bothRefuse(
      await verdicts({ midExtra: nc, leafUri: "spiffe://other.org/ns/a/sa/b" }),
      /permitted subtree violation/,
    );
  });

  it("a leading-dot URI constraint admits sub-domains, not the domain itself", async () => {
    const nc = ["nameConstraints=critical,permitted;URI:.example.org"];
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://a.example.org/ns/a/sa/b" }));
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://b.a.example.org/w" }));
    bothRefuse(await verdicts({ midExtra: nc, leafUri: "spiffe://example.org/w" }), /permitted subtree/);
    bothRefuse(await verdicts({ midExtra: nc, leafUri: "spiffe://badexample.org/w" }), /permitted subtree/);
  });

  it("an excluded URI host refuses that trust domain and nothing else", async () => {
    const nc = ["nameConstraints=critical,excluded;URI:other.org"];
    bothRefuse(
      await verdicts({ midExtra: nc, leafUri: "spiffe://other.org/ns/a/sa/b" }),
      /excluded subtree violation/,
    );
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/ns/a/sa/b" }));
  });

  it("a DNS-only constraint leaves the SPIFFE ID unconstrained and applies to DNS SANs", async () => {
    const nc = ["nameConstraints=critical,permitted;DNS:cluster.local"];
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://other.org/ns/a/sa/b" }));
    // A DNS constraint admits the name and any name below it.
    bothAccept(
      await verdicts({
        midExtra: nc,
        leafUri: "spiffe://other.org/w",
        leafSans: ["DNS:web.default.svc.cluster.local", "DNS:cluster.local"],
      }),
    );
    bothRefuse(
      await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/w", leafSans: ["DNS:evil.com"] }),
      /permitted subtree violation/,
    );
    bothRefuse(
      await verdicts({
        midExtra: ["nameConstraints=critical,excluded;DNS:secret.cluster.local"],
        leafUri: "spiffe://cluster.local/w",
        leafSans: ["DNS:db.secret.cluster.local"],
      }),
      /excluded subtree violation/,
    );
  });

  it("IP constraints apply to IP SANs, address family included", async () => {
    const nc = ["nameConstraints=critical,permitted;IP:10.0.0.0/255.0.0.0"];
    bothAccept(
      await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/w", leafSans: ["IP:10.1.2.3"] }),
    );
    bothAccept(await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/w" }));
    bothRefuse(
      await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/w", leafSans: ["IP:192.168.1.1"] }),
      /permitted subtree violation/,
    );
    bothRefuse(
      await verdicts({ midExtra: nc, leafUri: "spiffe://cluster.local/w", leafSans: ["IP:fd00::1"] }),
      /permitted subtree violation/,
    );
  });

  it("a trust anchor's constraints are enforced, as OpenSSL does", async () => {
    const nc = ["nameConstraints=critical,permitted;URI:cluster.local"];
    bothAccept(await verdicts({ rootExtra: nc, noMid: true, leafUri: "spiffe://cluster.local/w" }));
    bothRefuse(
      await verdicts({ rootExtra: nc, noMid: true, leafUri: "spiffe://other.org/w" }),
      /permitted subtree violation/,
    );
  });

  it("an intermediate's own names are held to the constraints of the CAs above it", async () => {
    const nc = ["nameConstraints=critical,permitted;URI:cluster.local"];
    bothAccept(
      await verdicts({
        rootExtra: nc,
        midExtra: ["subjectAltName=URI:spiffe://cluster.local"],
        leafUri: "spiffe://cluster.local/w",
      }),
    );
    bothRefuse(
      await verdicts({
        rootExtra: nc,
        midExtra: ["subjectAltName=URI:spiffe://other.org"],
        leafUri: "spiffe://cluster.local/w",
      }),
      /permitted subtree violation/,
    );
  });

  it("directoryName constraints apply to non-empty subjects, compared as OpenSSL canonicalizes them", async () => {
    const nc = ["nameConstraints=critical,permitted;dirName:dir_sect", "[dir_sect]", "O=Corp"];
    bothAccept(
      await verdicts({
        rootExtra: nc,
        midSubject: "/O=Corp/CN=mesh issuing CA",
        leafSubject: "/O=Corp/OU=workloads",
        leafUri: "spiffe://cluster.local/w",
      }),
    );
    // Case and runs of spaces do not matter (RFC 5280 7.1).
    bothAccept(
      await verdicts({
        rootExtra: nc,
        midSubject: "/O=CORP/CN=mesh",
        leafSubject: "/O=  corp /OU=w",
        leafUri: "spiffe://cluster.local/w",
      }),
    );
    bothRefuse(
      await verdicts({
        rootExtra: nc,
        midSubject: "/O=Corp/CN=mesh",
        leafSubject: "/O=Other",
        leafUri: "spiffe://cluster.local/w",
      }),
      /permitted subtree violation/,
    );
    bothRefuse(
      await verdicts({
        rootExtra: nc,
        midSubject: "/O=Elsewhere",
        leafSubject: "/O=Corp",
        leafUri: "spiffe://cluster.local/w",
      }),
      /permitted subtree violation/,
    );
  });

  it("refuses a CA constraining a name type it does not enforce, where openssl may accept", async () => {
    // Fail closed: rfc822Name constraints are not evaluated, so the CA is refused.
    const v = await verdicts({
      midExtra: ["nameConstraints=critical,permitted;email:.corp.example"],
      leafUri: "spiffe://cluster.local/w",
    });
    assert.equal(v.openssl.ok, true, v.openssl.output);
    assert.equal(v.ours.code, "ERR_CERT_ISSUER_INVALID", v.ours.message);
    assert.match(v.ours.message ?? "", /rfc822Name/);
  });
});

describe("a plugged-in CA with a name-constrained intermediate", () => {
  const ossl = new OpensslDir();
  after(() => ossl.cleanup());

  function cacertsUnder(constraint: string): {
    caCertPem: string;
    caKeyPem: string;
    rootCertPem: string;
    certChainPem: string;
  } {
    const name = `corp-${constraint.replace(/[^a-z]/g, "")}`;
    ossl.makeRoot(`${name}-root`, `/O=${name}-root`);
    ossl.makeSigned(`${name}-policy`, `${name}-root`, `/O=${name}-policy`, [
      ...CA_EXT,
      `nameConstraints=critical,permitted;URI:${constraint}`,
    ]);
    ossl.makeSigned(`${name}-ca`, `${name}-policy`, `/O=${name}-ca`, CA_EXT);
    return {
      caCertPem: ossl.read(`${name}-ca-cert.pem`),
      caKeyPem: ossl.read(`${name}-ca-key.pem`),
      rootCertPem: ossl.read(`${name}-root-cert.pem`),
      certChainPem: ossl.read(`${name}-ca-cert.pem`) + ossl.read(`${name}-policy-cert.pem`),
    };
  }

  it("loads, signs, and the SVIDs it signs verify with verifySvid and openssl", async () => {
    const cacerts = cacertsUnder("cluster.local");
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local", cacerts });
    const svid = await ca.issue({ spiffeId: "spiffe://cluster.local/ns/default/sa/web" });
    const bundle = TrustBundle.fromPem("cluster.local", cacerts.rootCertPem);
    assert.equal(
      verifySvid(svid.certChainPem, bundle).toString(),
      "spiffe://cluster.local/ns/default/sa/web",
    );
    ossl.write("nc-chain.pem", svid.certChainPem);
    ossl.write("nc-root.pem", cacerts.rootCertPem);
    const [leaf, ...rest] = svid.certChainPem.split(/(?<=-----END CERTIFICATE-----\n)/);
    ossl.write("nc-leaf.pem", leaf as string);
    ossl.write("nc-rest.pem", rest.join(""));
    assert.match(
      ossl.run(["verify", "-CAfile", "nc-root.pem", "-untrusted", "nc-rest.pem", "nc-leaf.pem"]),
      /nc-leaf.pem: OK/,
    );
  });

  it("refuses to load when the constraints leave out its own trust domain", async () => {
    const cacerts = cacertsUnder("other.org");
    await assert.rejects(createCertificateAuthority({ trustDomain: "cluster.local", cacerts }), (err) => {
      assert.ok(err instanceof SpiffeError);
      assert.equal(err.code, "ERR_CA_CONFIG_INVALID", err.message);
      assert.match(err.message, /cluster\.local/);
      assert.match(err.message, /nameConstraints/);
      return true;
    });
  });
});
