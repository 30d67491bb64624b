// Only an Istio identity (spiffe://<trust domain>/ns/<namespace>/sa/<service account>) may open an
// inbound tunnel: a peer whose certificate chains to the mesh root but names any other SPIFFE ID is
// refused before policy, as ztunnel's handshake refuses it, so `principals: ["*"]` cannot admit it.
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { createHboneClient, HboneError } from "@ambient/hbone";
import { startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { loopbackSubnet, testWorkload } from "../test/fixtures.js";
import { istioPeerProblem } from "./inbound.js";
import { type RunningZtunnel, startZtunnel } from "./ztunnel.js";

const base = loopbackSubnet();
const ip = { node: `${base}.1`, echo: `${base}.12` };
const NON_ISTIO = "spiffe://cluster.local/workload/x";

/** A TCP server that counts connections and answers "echo:" + what it got, after FIN. */
async function countingServer(host: string) {
  const seen = { connections: 0 };
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    seen.connections++;
    socket.on("error", () => {});
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("end", () => socket.end(`echo:${Buffer.concat(chunks).toString()}`));
  });
  server.listen(0, host);
  await once(server, "listening");
  return { server, seen, port: (server.address() as AddressInfo).port };
}

describe("istioPeerProblem", () => {
  it("accepts the Istio form only", () => {
    assert.equal(istioPeerProblem("spiffe://cluster.local/ns/demo/sa/sleep"), undefined);
    for (const id of [
      NON_ISTIO,
      "spiffe://cluster.local/ns/demo/sa/sleep/extra",
      "spiffe://cluster.local/ns/demo/serviceaccount/sleep",
      "spiffe://cluster.local",
      "not a spiffe id",
    ])
      assert.match(istioPeerProblem(id) ?? "", /not an Istio identity/, id);
  });
});

describe("inbound HBONE refuses a peer whose SPIFFE ID is not an Istio identity", { timeout: 60_000 }, () => {
  let cp: TestControlPlane;
  let ztunnel: RunningZtunnel;
  let echo: Awaited<ReturnType<typeof countingServer>>;
  const failures: Record<string, unknown>[] = [];
  const denials: string[] = [];

  before(async () => {
    cp = await startTestControlPlane();
    echo = await countingServer(ip.echo);
    cp.setWorkload(testWorkload("echo-0", "node-a", ip.echo, { namespace: "demo" }));
    // What istiod sends for `from: [{ source: { principals: ["*"] } }]`: any mTLS identity.
    cp.applyPolicy(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: require-identity, namespace: demo }
spec:
  rules:
  - from: [{ source: { principals: ["*"] } }]
`);
    const noop = () => {};
    ztunnel = await startZtunnel({
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      nodeName: "node-a",
      nodeIp: ip.node,
      token: await cp.tokenFor("node-a"),
      logger: {
        debug: noop,
        error: noop,
        info: (_o: object, msg?: string) => {
          if (msg?.startsWith("denied by") === true) denials.push(msg);
        },
        warn: (o: object, msg?: string) => {
          if (msg === "connection failed") failures.push(o as Record<string, unknown>);
        },
      },
    });
    await ztunnel.ready;
  });

  after(async () => {
    await ztunnel?.close();
    await cp?.close();
    echo?.server.close();
  });

  const tunnel = async (identity: string) => {
    const svid = await cp.issue(identity);
    const client = createHboneClient({
      key: svid.privateKeyPem,
      certChain: svid.certChainPem,
      trustBundle: cp.rootCertPem,
    });
    try {
      const stream = await client.connect({
        address: `${ip.echo}:15008`,
        authority: `${ip.echo}:${echo.port}`,
        expectedIdentities: ["spiffe://cluster.local/ns/demo/sa/echo-0"],
      });
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      const ended = once(stream, "end");
      stream.end("hi");
      await ended;
      return { status: 200, answer: Buffer.concat(chunks).toString() };
    } catch (err) {
      if (err instanceof HboneError && err.status !== undefined) return { status: err.status, answer: "" };
      throw err;
    } finally {
      await client.destroy();
    }
  };

  it("an Istio identity passes principals: ['*']", async () => {
    assert.deepEqual(await tunnel("spiffe://cluster.local/ns/demo/sa/sleep"), {
      status: 200,
      answer: "echo:hi",
    });
  });

  it("spiffe://cluster.local/workload/x is answered 401 before policy, and nothing reaches the pod", async () => {
    const before = echo.seen.connections;
    const denialsBefore = denials.length;
    assert.deepEqual(await tunnel(NON_ISTIO), { status: 401, answer: "" });
    assert.equal(echo.seen.connections, before);
    // Refused as a peer, not by a policy decision.
    assert.equal(denials.length, denialsBefore);
    const failure = failures.at(-1);
    assert.equal(failure?.direction, "inbound");
    assert.match(String(failure?.error), /spiffe:\/\/cluster\.local\/workload\/x is not an Istio identity/);
  });
});
