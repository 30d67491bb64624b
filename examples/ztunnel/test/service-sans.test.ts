// A Service's subject_alt_names: identities its endpoints may present besides their own workload's
// (a ServiceEntry's `subjectAltNames`), which Istio's ztunnel accepts when it tunnels straight to an
// endpoint of that Service (src/state.rs, workload_and_services_san). The endpoint here is an HBONE
// server that presents such an identity, not its workload's; it also shows the CONNECT's headers.
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { createHboneServer, type HboneServer } from "@ambient/hbone";
import type { Service } from "@ambient/xds";
import { SOCKS5_REPLY } from "../src/socks5.js";
import { socks5AddressOf } from "../src/ztunnel.js";
import {
  loopbackSubnet,
  socksConnect,
  startTwoNodeMesh,
  type TwoNodeMesh,
  testService,
  testWorkload,
} from "./fixtures.js";

const base = loopbackSubnet();
const ip = { sleep: `${base}.11`, legacy: `${base}.12`, withSans: `${base}.100`, withoutSans: `${base}.101` };
const PRESENTED = "spiffe://cluster.local/ns/default/sa/legacy-service";
const ports: Service["ports"] = [{ servicePort: 80, targetPort: 8080, appProtocol: "TCP" }];

describe("a Service's subjectAltNames", { timeout: 60_000 }, () => {
  let mesh: TwoNodeMesh;
  let endpoint: HboneServer;
  /** The CONNECT headers the endpoint saw, in order. */
  const seen: Record<string, unknown>[] = [];

  before(async () => {
    const withSans = testService("with-sans", ip.withSans, ports, {
      subjectAltNames: [PRESENTED, "not a SAN"],
    });
    const withoutSans = testService("without-sans", ip.withoutSans, ports);
    mesh = await startTwoNodeMesh({
      subnet: base,
      configure: (cp) => {
        cp.setWorkload(
          testWorkload("sleep", "node-a", ip.sleep, {
            clusterId: "Kubernetes",
            workloadName: "sleep",
            workloadType: "DEPLOYMENT",
            canonicalName: "sleep",
            canonicalRevision: "v1",
            locality: { region: "eu-west", zone: "eu-west-1a", subzone: "" },
          }),
        );
        // On a node with no ztunnel of the test: the HBONE server below stands in for it.
        cp.setWorkload(
          testWorkload("legacy", "node-x", ip.legacy, {
            services: {
              [`default/${withSans.hostname}`]: { ports },
              [`default/${withoutSans.hostname}`]: { ports },
            },
          }),
        );
        cp.setService(withSans);
        cp.setService(withoutSans);
      },
    });
    const svid = await mesh.cp.issue(PRESENTED);
    endpoint = createHboneServer({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: mesh.cp.rootCertPem,
      onTunnel: (tunnel) => {
        seen.push({ ...tunnel.headers });
        // Answers once the caller has ended its side, so the answer never rides with the SOCKS5 reply.
        const stream = tunnel.accept();
        stream.on("end", () => stream.end(`served ${tunnel.rawAuthority}`));
        stream.resume();
      },
    });
    await endpoint.listen({ host: ip.legacy, port: 15008 });
  });

  after(async () => {
    await mesh?.close();
    await endpoint?.close({ timeoutMs: 0 });
  });

  const dial = async (vip: string) => {
    const { socket, reply } = await socksConnect(socks5AddressOf(mesh.nodeA), ip.sleep, vip, 80);
    if (reply !== SOCKS5_REPLY.succeeded) {
      socket.destroy();
      return { reply, body: "" };
    }
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.end();
    await once(socket, "close");
    return { reply, body: Buffer.concat(chunks).toString() };
  };

  it("lets an endpoint of the Service present one of them", async () => {
    assert.deepEqual(await dial(ip.withSans), {
      reply: SOCKS5_REPLY.succeeded,
      body: `served ${ip.legacy}:8080`,
    });
  });

  it("sends the source's baggage and forwarded on the CONNECT, as Istio's ztunnel writes them", async () => {
    seen.length = 0;
    await dial(ip.withSans);
    assert.equal(seen.length, 1);
    const headers = seen[0] as Record<string, string>;
    assert.match(
      headers.forwarded ?? "",
      new RegExp(`^for="${ip.sleep}:\\d+";host=with-sans\\.default\\.svc\\.cluster\\.local$`),
    );
    assert.deepEqual((headers.baggage ?? "").split(",").sort(), [
      "cloud.availability_zone=eu-west-1a",
      "cloud.region=eu-west",
      "k8s.cluster.name=Kubernetes",
      "k8s.deployment.name=sleep",
      "k8s.namespace.name=default",
      "service.name=sleep",
      "service.version=v1",
    ]);
  });

  it("still refuses that identity for a Service that does not name it", async () => {
    const { reply } = await dial(ip.withoutSans);
    assert.notEqual(reply, SOCKS5_REPLY.succeeded);
  });
});
