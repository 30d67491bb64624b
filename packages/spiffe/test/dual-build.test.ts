// An app may load this package twice, once as ESM and once as CJS (an ESM entry point and a CJS
// library, or the reverse). Objects from one build must be accepted by the other: these tests load the
// built `dist` (run the build first) and cross the two.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { before, describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

type Main = typeof import("../src/index.js");
type Ca = typeof import("../src/ca.js");
type Grpc = typeof import("../src/grpc.js");

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const require = createRequire(import.meta.url);

const WEB = "spiffe://cluster.local/ns/shop/sa/web";
const API = "spiffe://cluster.local/ns/shop/sa/api";

describe("ESM and CJS builds together", () => {
  let esm: Main;
  let cjs: Main;
  let esmCa: Ca;
  let cjsCa: Ca;
  let cjsGrpc: Grpc;

  before(async () => {
    for (const file of ["index.js", "index.cjs", "ca.js", "ca.cjs", "grpc.cjs"]) {
      assert.ok(existsSync(join(dist, file)), `dist/${file} is missing: build the package first`);
    }
    esm = (await import(pathToFileURL(join(dist, "index.js")).href)) as Main;
    esmCa = (await import(pathToFileURL(join(dist, "ca.js")).href)) as Ca;
    cjs = require(join(dist, "index.cjs")) as Main;
    cjsCa = require(join(dist, "ca.cjs")) as Ca;
    cjsGrpc = require(join(dist, "grpc.cjs")) as Grpc;
    assert.notEqual(esm.TrustBundle, cjs.TrustBundle, "two copies of the package are loaded");
  });

  it("verifies an SVID against a trust bundle of the other build, both ways", async () => {
    for (const [name, ca, other] of [
      ["ESM bundle, CJS verifySvid", esmCa, cjs],
      ["CJS bundle, ESM verifySvid", cjsCa, esm],
    ] as const) {
      const authority = await ca.createCertificateAuthority();
      const svid = await authority.issue({ spiffeId: WEB });
      assert.equal(other.verifySvid(svid.certChainPem, authority.trustBundle()).toString(), WEB, name);
    }
  });

  it("builds TLS options from an SVID and bundle of the other build", async () => {
    const authority = await esmCa.createCertificateAuthority();
    const api = await authority.issue({ spiffeId: API });
    const bundle = authority.trustBundle();
    const server = cjs.tlsServerOptions({ svid: api, bundle, authorize: [esm.SpiffeId.parse(WEB)] });
    assert.deepEqual(server.ca, bundle.rootsPem());
    const client = cjs.tlsClientOptions({ svid: api, bundle, expectedIds: [esm.SpiffeId.parse(API)] });
    assert.deepEqual(client.ca, bundle.rootsPem());
    assert.equal(typeof cjs.serverIdentityCheck([API], bundle), "function");
    const channel = cjsGrpc.grpcChannelCredentials({ bundle, expectedIds: [API] });
    channel.trust(esm.TrustBundle.fromPem("cluster.local", authority.rootCertPem()));
  });

  it("reads a foreign bundle as it is now, roots added after the first use included", async () => {
    const authority = await cjsCa.createCertificateAuthority();
    const svid = await authority.issue({ spiffeId: WEB });
    const stranger = await cjsCa.createCertificateAuthority();
    const bundle = cjs.TrustBundle.fromPem("cluster.local", stranger.rootCertPem());
    assert.throws(() => esm.verifySvid(svid.certChainPem, bundle), { code: "ERR_CHAIN_UNTRUSTED" });
    bundle.addRoots("cluster.local", authority.rootCertPem());
    assert.equal(esm.verifySvid(svid.certChainPem, bundle).toString(), WEB);
    bundle.removeRoots("cluster.local", authority.rootCertPem());
    assert.throws(() => esm.verifySvid(svid.certChainPem, bundle), { code: "ERR_CHAIN_UNTRUSTED" });
  });

  it("answers instanceof for TrustBundle and SpiffeId across the builds, not for look-alikes", () => {
    assert.ok(new cjs.TrustBundle() instanceof esm.TrustBundle);
    assert.ok(new esm.TrustBundle() instanceof cjs.TrustBundle);
    assert.ok(cjs.SpiffeId.parse(WEB) instanceof esm.SpiffeId);
    assert.ok(esm.SpiffeId.parse(WEB) instanceof cjs.SpiffeId);
    const lookAlike = { rootsPem: () => [], trustDomains: () => [], clone: () => lookAlike };
    assert.equal(lookAlike instanceof esm.TrustBundle, false);
    assert.equal({ trustDomain: "cluster.local", path: "/a" } instanceof esm.SpiffeId, false);
    assert.throws(() => esm.verifySvid("", lookAlike as never), { code: "ERR_OPTIONS_INVALID" });
    // A subclass keeps the ordinary check: a base instance is not one of its instances.
    class Sub extends esm.TrustBundle {}
    assert.ok(new Sub() instanceof esm.TrustBundle);
    assert.ok(new Sub() instanceof cjs.TrustBundle);
    assert.equal(new esm.TrustBundle() instanceof Sub, false);
  });
});
