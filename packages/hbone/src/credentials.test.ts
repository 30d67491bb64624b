import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { CLIENT_ID, createTestPki, SERVER_ID, type TestPki } from "../test/fixtures.js";
import { checkCredentials, localCertificateOf, ownIdentity, trustKey } from "./credentials.js";

describe("credentials", () => {
  let pki: TestPki;
  before(() => {
    pki = createTestPki();
  });
  after(() => pki.cleanup());

  it("reads a credentials object anew once it holds another chain or bundle", () => {
    const client = pki.issue(CLIENT_ID);
    const server = pki.issue(SERVER_ID);
    const credentials = { key: client.key, certChain: client.certChain, trustBundle: [pki.rootPem] };
    assert.equal(ownIdentity(credentials).toString(), CLIENT_ID);
    const certificate = localCertificateOf(credentials).key;
    const roots = trustKey(credentials);
    credentials.key = server.key;
    credentials.certChain = server.certChain;
    credentials.trustBundle = [pki.rootPem, pki.otherRootPem];
    assert.equal(ownIdentity(credentials).toString(), SERVER_ID);
    assert.notEqual(localCertificateOf(credentials).key, certificate);
    assert.notEqual(trustKey(credentials), roots);
    // A chain that carries no usable SPIFFE ID is refused, even in an object accepted before.
    credentials.certChain = pki.issue(CLIENT_ID, {
      extraUris: ["spiffe://cluster.local/ns/x/sa/y"],
    }).certChain;
    assert.throws(
      () => checkCredentials(credentials, "connect"),
      (e: unknown) => (e as { code?: string }).code === "ERR_HBONE_INVALID_ARGUMENT",
    );
  });
});
