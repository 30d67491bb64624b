// A waypoint deployed as Istio deploys one authenticates with its own service account's token, not its
// node's: it then asks for its own certificate without impersonation, which istiod refuses from anyone
// but a node agent (even for the caller's own identity). With its node's token it impersonates.
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { startControlPlane, TOKEN_AUDIENCE, TOKEN_ISSUER } from "@ambient/example-control-plane";
import { importJWK, type JWK, SignJWT } from "jose";
import { startWaypoint } from "../src/index.js";
import { loopbackSubnet, shopWithWaypoint } from "./mesh-fixture.js";

describe("the waypoint's certificate", { timeout: 60_000 }, () => {
  for (const kind of ["its own service account's token", "its node's token"] as const) {
    it(`is issued with ${kind}`, async () => {
      const { cidr, ip } = loopbackSubnet();
      const dir = await mkdtemp(join(tmpdir(), "waypoint-own-token-"));
      await writeFile(join(dir, "mesh.yaml"), shopWithWaypoint(ip(6)));
      const controlPlane = await startControlPlane({
        meshDir: dir,
        stateDir: join(dir, "state"),
        listen: "127.0.0.1:0",
        watch: false,
        podCidrs: [cidr],
      });
      let token: string;
      if (kind === "its node's token") token = await controlPlane.tokenFor("node-a");
      else {
        // A projected token of shop/waypoint, signed with the key the control plane checks tokens with.
        const jwk = JSON.parse(await readFile(join(dir, "state", "token-key.jwk"), "utf8")) as JWK;
        token = await new SignJWT({
          "kubernetes.io": { namespace: "shop", serviceaccount: { name: "waypoint" } },
        })
          .setProtectedHeader({ alg: "ES256", kid: jwk.kid ?? "" })
          .setIssuer(TOKEN_ISSUER)
          .setAudience(TOKEN_AUDIENCE)
          .setSubject("system:serviceaccount:shop:waypoint")
          .setIssuedAt()
          .setExpirationTime("1h")
          .sign(await importJWK(jwk, "ES256"));
      }
      const waypoint = await startWaypoint({
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        nodeName: "node-a",
        token,
        rootCertPem: controlPlane.rootCertPem,
        controlPlaneAddress: controlPlane.address,
        ports: { admin: 0, metrics: 0, readiness: 0 },
      });
      try {
        // Ready once its certificate and first xDS state are in.
        await waypoint.ready;
        assert.equal(waypoint.identity, "spiffe://cluster.local/ns/shop/sa/waypoint");
      } finally {
        await waypoint.close();
        await controlPlane.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});
