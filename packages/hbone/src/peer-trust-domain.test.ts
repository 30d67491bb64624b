// A peer's chain must lead to a root of its own SPIFFE ID's trust domain, not merely to any root the
// credentials hold: with roots of cluster.local and other.org, other.org's CA must not be able to
// speak for cluster.local identities.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { TrustBundle, x509SvidFromChain } from "@ambient/spiffe";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { readAll } from "../test/harness.js";
import { credentialsFromSvid, type HboneCredentials } from "./credentials.js";
import { HboneError, type HboneErrorCode } from "./errors.js";
import { createHboneClient } from "./hbone-client.js";
import { createHboneServer, type HboneServerOptions } from "./hbone-server.js";

const OTHER_TD = "other.org";
/** Signed by other.org's root, but names an identity of cluster.local. */
const FORGED_ID = "spiffe://cluster.local/ns/default/sa/foo";
const OTHER_ID = `spiffe://${OTHER_TD}/ns/default/sa/bar`;

function isCode(code: HboneErrorCode) {
  return (e: unknown) => {
    assert.ok(e instanceof HboneError, `expected HboneError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}

interface Leaf {
  key: string;
  certChain: string;
}

/** A recording logger: the warnings the server logged, as `msg` strings. */
function recordingLogger() {
  const warnings: string[] = [];
  const noop = () => {};
  return {
    warnings,
    logger: { debug: noop, info: noop, error: noop, warn: (_o: unknown, msg: string) => warnings.push(msg) },
  };
}

describe("peer chain and its trust domain's roots", () => {
  let pki: TestPki;
  let bundle: TrustBundle;
  /** Credentials that know which root belongs to which trust domain. */
  let withBundle: (leaf: Leaf) => HboneCredentials;
  /** The same roots as one flat PEM list: no trust domain known. */
  let flat: (leaf: Leaf) => HboneCredentials;

  before(() => {
    pki = createTestPki();
    bundle = new TrustBundle().addRoots("cluster.local", pki.rootPem).addRoots(OTHER_TD, pki.otherRootPem);
    withBundle = (leaf) => credentialsFromSvid(x509SvidFromChain([leaf.certChain], leaf.key), bundle);
    flat = (leaf) => ({
      key: leaf.key,
      certChain: leaf.certChain,
      trustBundle: [pki.rootPem, pki.otherRootPem],
    });
  });
  after(() => pki.cleanup());

  async function serve(options: HboneCredentials & Partial<HboneServerOptions>) {
    const seen: string[] = [];
    const server = createHboneServer({
      onTunnel: (t) => {
        seen.push(t.peerIdentity.toString());
        t.accept().end(t.peerIdentity.toString());
      },
      ...options,
    });
    const { port } = await server.listen({ port: 0, host: "127.0.0.1" });
    return { server, seen, address: `127.0.0.1:${port}` };
  }

  async function dial(credentials: HboneCredentials, address: string, expected: string) {
    const client = createHboneClient(credentials);
    try {
      const tunnel = await client.connect({
        address,
        authority: "10.0.0.1:80",
        expectedIdentities: [expected],
      });
      tunnel.end();
      return { answer: (await readAll(tunnel)).toString(), peer: tunnel.peerIdentity.toString() };
    } finally {
      await client.close();
    }
  }

  it("our server refuses a client whose chain ends at another trust domain's root, and logs why", async () => {
    const { warnings, logger } = recordingLogger();
    const s = await serve({ ...withBundle(pki.issue(SERVER_ID)), logger });
    const forged = pki.issue(FORGED_ID, { otherRoot: true });
    await assert.rejects(dial(flat(forged), s.address, SERVER_ID), isCode("ERR_HBONE_IDENTITY"));
    assert.deepEqual(s.seen, []);
    assert.equal(s.server.stats().connections, 0);
    assert.ok(
      warnings.some((w) => /trust domain/.test(w) && /root/.test(w)),
      `expected a warning about the chain, got ${JSON.stringify(warnings)}`,
    );
    // The same server still takes a genuine cluster.local client.
    const genuine = await dial(flat(pki.issue(CLIENT_ID)), s.address, SERVER_ID);
    assert.equal(genuine.answer, CLIENT_ID);
    await s.server.close({ timeoutMs: 100 });
  });

  it("our client refuses a server whose chain ends at another trust domain's root (ERR_HBONE_IDENTITY)", async () => {
    const s = await serve(flat(pki.issue(FORGED_ID, { otherRoot: true })));
    await assert.rejects(
      dial(withBundle(pki.issue(CLIENT_ID)), s.address, FORGED_ID),
      isCode("ERR_HBONE_IDENTITY"),
    );
    assert.deepEqual(s.seen, []);
    await s.server.close({ timeoutMs: 100 });
  });

  it("accepts a genuine other.org peer where other.org is allowed, and a cluster.local peer of its root", async () => {
    const other = pki.issue(OTHER_ID, { otherRoot: true });
    // Inbound: an other.org client signed by other.org's root.
    const s = await serve({
      ...withBundle(pki.issue(SERVER_ID)),
      allowedTrustDomains: ["cluster.local", OTHER_TD],
    });
    assert.equal((await dial(withBundle(other), s.address, SERVER_ID)).answer, OTHER_ID);
    assert.equal((await dial(withBundle(pki.issue(CLIENT_ID)), s.address, SERVER_ID)).answer, CLIENT_ID);
    await s.server.close({ timeoutMs: 100 });
    // Outbound: an other.org server and a cluster.local server.
    const o = await serve({ ...withBundle(other), allowedTrustDomains: ["cluster.local", OTHER_TD] });
    assert.equal((await dial(withBundle(pki.issue(CLIENT_ID)), o.address, OTHER_ID)).peer, OTHER_ID);
    await o.server.close({ timeoutMs: 100 });
    const c = await serve(withBundle(pki.issue(SERVER_ID)));
    assert.equal((await dial(withBundle(pki.issue(CLIENT_ID)), c.address, SERVER_ID)).peer, SERVER_ID);
    await c.server.close({ timeoutMs: 100 });
  });

  it("with one trust domain's roots, refuses a peer of another trust domain those roots signed", async () => {
    const single = TrustBundle.fromPem("cluster.local", pki.rootPem);
    const own = (leaf: Leaf) => credentialsFromSvid(x509SvidFromChain([leaf.certChain], leaf.key), single);
    // Signed by cluster.local's root, but names an identity of other.org.
    const foreign = pki.issue(OTHER_ID);
    const s = await serve({ ...own(pki.issue(SERVER_ID)), allowedTrustDomains: ["cluster.local", OTHER_TD] });
    await assert.rejects(dial(flat(foreign), s.address, SERVER_ID), isCode("ERR_HBONE_IDENTITY"));
    assert.equal((await dial(own(pki.issue(CLIENT_ID)), s.address, SERVER_ID)).answer, CLIENT_ID);
    await s.server.close({ timeoutMs: 100 });
    const o = await serve({ ...flat(foreign), allowedTrustDomains: ["cluster.local", OTHER_TD] });
    await assert.rejects(dial(own(pki.issue(CLIENT_ID)), o.address, OTHER_ID), isCode("ERR_HBONE_IDENTITY"));
    await o.server.close({ timeoutMs: 100 });
  });

  it("does not reuse a pooled connection that flat roots verified for a dial that knows the trust domains", async () => {
    const s = await serve(flat(pki.issue(FORGED_ID, { otherRoot: true })));
    const client = createHboneClient(flat(pki.issue(CLIENT_ID)));
    const first = await client.connect({
      address: s.address,
      authority: "10.0.0.1:80",
      expectedIdentities: [FORGED_ID],
    });
    first.resume();
    // The first connection is still open and pooled; this dial must prove the peer again.
    await assert.rejects(
      client.connect({
        address: s.address,
        authority: "10.0.0.1:80",
        expectedIdentities: [FORGED_ID],
        credentials: withBundle(pki.issue(CLIENT_ID)),
      }),
      isCode("ERR_HBONE_IDENTITY"),
    );
    first.end();
    await client.close();
    await s.server.close({ timeoutMs: 100 });
  });

  it("a server given such credentials by setCredentials checks the next clients against them", async () => {
    const s = await serve(flat(pki.issue(SERVER_ID)));
    const forged = flat(pki.issue(FORGED_ID, { otherRoot: true }));
    assert.equal((await dial(forged, s.address, SERVER_ID)).answer, FORGED_ID);
    s.server.setCredentials(withBundle(pki.issue(SERVER_ID)));
    await assert.rejects(dial(forged, s.address, SERVER_ID), isCode("ERR_HBONE_IDENTITY"));
    await s.server.close({ timeoutMs: 100 });
  });
});

describe("chains through an intermediate CA", () => {
  let pki: TestPki;
  let anchorPem: string;
  let issueUnderAnchor: (id: string) => Leaf;

  before(() => {
    pki = createTestPki();
    const dir = pki.dir;
    const openssl = (args: string[]) =>
      execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    const ec = (name: string) =>
      openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`]);
    // An intermediate CA signed by the test root: only it is distributed as the trust anchor.
    ec("anchor");
    openssl(["req", "-new", "-key", "anchor.key", "-subj", "/O=anchor", "-out", "anchor.csr"]);
    writeFileSync(
      join(dir, "anchor.ext"),
      "[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    openssl(
      [
        "x509",
        "-req",
        "-in",
        "anchor.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-set_serial",
        "7001",
      ].concat([
        "-days",
        "2",
        "-sha256",
        "-extfile",
        "anchor.ext",
        "-extensions",
        "ca",
        "-out",
        "anchor.pem",
      ]),
    );
    anchorPem = readFileSync(join(dir, "anchor.pem"), "utf8");
    let n = 0;
    issueUnderAnchor = (id) => {
      const name = `anchored${n++}`;
      ec(name);
      openssl(["req", "-new", "-key", `${name}.key`, "-subj", "/O=mesh", "-out", `${name}.csr`]);
      writeFileSync(
        join(dir, `${name}.ext`),
        [
          "[leaf]",
          "basicConstraints=critical,CA:FALSE",
          "keyUsage=critical,digitalSignature,keyEncipherment",
          "extendedKeyUsage=serverAuth,clientAuth",
          `subjectAltName=critical,URI:${id}`,
          "",
        ].join("\n"),
      );
      openssl(
        ["x509", "-req", "-in", `${name}.csr`, "-CA", "anchor.pem", "-CAkey", "anchor.key"]
          .concat(["-set_serial", String(7100 + n), "-days", "2", "-sha256"])
          .concat(["-extfile", `${name}.ext`, "-extensions", "leaf", "-out", `${name}.pem`]),
      );
      return {
        key: readFileSync(join(dir, `${name}.key`), "utf8"),
        certChain: readFileSync(join(dir, `${name}.pem`), "utf8"),
      };
    };
  });
  after(() => pki.cleanup());

  it("checks the whole chain a peer sends, intermediate included, on both sides", async () => {
    const bundle = new TrustBundle()
      .addRoots("cluster.local", pki.rootPem)
      .addRoots(OTHER_TD, pki.otherRootPem);
    const withChain = (id: string) => {
      const leaf = issueUnderAnchor(id);
      return credentialsFromSvid(x509SvidFromChain([leaf.certChain, anchorPem], leaf.key), bundle);
    };
    const server = createHboneServer({
      ...withChain(SERVER_ID),
      onTunnel: (t) => t.accept().end(t.peerIdentity.toString()),
    });
    const { port } = await server.listen({ port: 0, host: "127.0.0.1" });
    const client = createHboneClient(withChain(CLIENT_ID));
    const tunnel = await client.connect({
      address: `127.0.0.1:${port}`,
      authority: "10.0.0.1:80",
      expectedIdentities: [SERVER_ID],
    });
    tunnel.end();
    assert.equal((await readAll(tunnel)).toString(), CLIENT_ID);
    await client.close();
    await server.close({ timeoutMs: 100 });
  });

  it("opens a tunnel when both sides trust only the intermediate (as ztunnel and verifySvid do)", async () => {
    const server = createHboneServer({
      ...issueUnderAnchor(SERVER_ID),
      trustBundle: anchorPem,
      onTunnel: (t) => t.accept().end(t.peerIdentity.toString()),
    });
    const { port } = await server.listen({ port: 0, host: "127.0.0.1" });
    const address = `127.0.0.1:${port}`;
    const bundle = TrustBundle.fromPem("cluster.local", anchorPem);
    for (const credentials of [
      { ...issueUnderAnchor(CLIENT_ID), trustBundle: anchorPem },
      (() => {
        const leaf = issueUnderAnchor(CLIENT_ID);
        return credentialsFromSvid(x509SvidFromChain([leaf.certChain], leaf.key), bundle);
      })(),
    ]) {
      const client = createHboneClient(credentials);
      const tunnel = await client.connect({
        address,
        authority: "10.0.0.1:80",
        expectedIdentities: [SERVER_ID],
      });
      tunnel.end();
      assert.equal((await readAll(tunnel)).toString(), CLIENT_ID);
      await client.close();
    }
    // A context installed by setCredentials treats the intermediate as an anchor too.
    server.setCredentials({ ...issueUnderAnchor(SERVER_ID), trustBundle: anchorPem });
    const client = createHboneClient({ ...issueUnderAnchor(CLIENT_ID), trustBundle: anchorPem });
    const tunnel = await client.connect({
      address,
      authority: "10.0.0.1:80",
      expectedIdentities: [SERVER_ID],
    });
    tunnel.end();
    assert.equal((await readAll(tunnel)).toString(), CLIENT_ID);
    await client.close();
    await server.close({ timeoutMs: 100 });
  });
});
