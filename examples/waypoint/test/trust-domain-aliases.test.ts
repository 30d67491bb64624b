// A mesh moving from the trust domain old.org to cluster.local (meshConfig trustDomainAliases): the
// waypoint takes HBONE from peers of either domain, as Istio's waypoint validates the trust domain and
// its aliases, and a policy principal written cluster.local/... matches the account in both. A peer
// of a trust domain that is neither is refused before anything else.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import { after, before, describe, it } from "node:test";
import { createHboneClient, type HboneClient } from "@ambient/hbone";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import {
  loopbackSubnet,
  shopPod,
  shopServiceOnWaypoint,
  shopWithWaypoint,
  startTestMesh,
  type TestMesh,
} from "./mesh-fixture.js";

const { cidr, ip } = loopbackSubnet();

const MANIFESTS = [
  shopWithWaypoint(ip(6)),
  shopPod({ name: "client", app: "client", node: "node-a", ip: ip(2) }),
  shopPod({ name: "api-0", app: "api", node: "node-b", ip: ip(7) }),
  shopServiceOnWaypoint({ name: "api", clusterIp: ip(100), appProtocol: "http" }),
  `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: client-reads, namespace: shop }
spec:
  targetRefs: [{ group: "", kind: Service, name: api }]
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/shop/sa/client"] } }]
    to: [{ operation: { methods: ["GET"] } }]`,
].join("\n---\n");

describe("a waypoint with the trust domain alias old.org", { timeout: 60_000 }, () => {
  let mesh: TestMesh;
  let api: Server;
  let ca: Awaited<ReturnType<typeof createCertificateAuthority>>;
  const clients: HboneClient[] = [];

  before(async () => {
    api = createServer((req, res) => res.end(`api-0 got ${req.method}`));
    api.listen(8080, ip(7));
    await once(api, "listening");
    // The test holds the mesh's CA, so it can make a peer of any trust domain.
    ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    mesh = await startTestMesh({
      manifests: MANIFESTS,
      tempPrefix: "waypoint-aliases-",
      nodeIps: [ip(200), ip(201)],
      controlPlane: { podCidrs: [cidr], cacerts: ca.exportCacerts(), cacertsSelfSigned: true },
      ztunnelPorts: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      waypoint: {
        gateway: { name: "waypoint", namespace: "shop" },
        ip: ip(6),
        trustDomainAliases: ["old.org"],
      },
    });
  });

  after(async () => {
    for (const c of clients) c.destroy();
    await mesh?.close();
    api?.close();
  });

  /** An HTTP request from the client pod, as a peer of `trustDomain`, through the waypoint to api. */
  async function request(trustDomain: string, method: string): Promise<string> {
    // The same CA key and roots, issuing in `trustDomain`.
    const issuer = await createCertificateAuthority({
      trustDomain,
      cacerts: ca.exportCacerts(),
      selfSigned: true,
    });
    const svid = await issuer.issue({ spiffeId: `spiffe://${trustDomain}/ns/shop/sa/client` });
    const credentials = {
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: mesh.controlPlane.rootCertPem,
    };
    const hbone = createHboneClient(credentials);
    clients.push(hbone);
    const tunnel = await hbone.connect({
      address: mesh.waypoint.address,
      authority: `${ip(100)}:80`,
      expectedIdentities: [mesh.waypoint.identity],
      sourceAddress: ip(2),
      credentials,
    });
    let text = "";
    tunnel.on("data", (c: Buffer) => {
      text += c.toString();
    });
    const ended = once(tunnel, "end");
    // `connection: close`: the waypoint answers, then ends the tunnel.
    tunnel.write(
      `${method} / HTTP/1.1\r\nhost: api.shop.svc.cluster.local\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`,
    );
    await ended;
    tunnel.destroy();
    return text;
  }

  it("serves a peer of the alias, and reads the policy's cluster.local principal as its account", async () => {
    const get = await request("old.org", "GET");
    assert.match(get, /^HTTP\/1\.1 200 /);
    assert.match(get, /api-0 got GET$/);
    assert.match(await request("old.org", "POST"), /^HTTP\/1\.1 403 /);
    assert.match(await request("cluster.local", "GET"), /^HTTP\/1\.1 200 /);
  });

  it("refuses a peer of a trust domain that is neither the mesh's nor an alias", async () => {
    await assert.rejects(request("other.org", "GET"));
  });
});
