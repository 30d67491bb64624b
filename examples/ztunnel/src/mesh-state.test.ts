import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { adsServiceDefinition, TypeUrl, typeRegistry, type Workload } from "@ambient/xds";
import * as grpc from "@grpc/grpc-js";
import { startTestControlPlane, type TestControlPlane } from "../test/control-plane.js";
import { controlPlaneChannel } from "./control-plane-channel.js";
import { createMeshState, type MeshState } from "./mesh-state.js";
import { noopLogger, noopMetrics } from "./telemetry.js";

const workload = {
  uid: "Kubernetes//Pod/demo/echo",
  name: "echo",
  namespace: "demo",
  addresses: [Uint8Array.from([127, 0, 0, 12])],
  tunnelProtocol: "HBONE",
  serviceAccount: "echo",
  node: "node-a",
} as unknown as Workload;

/** A resource to push: a message to encode, or raw payload bytes (which may not decode). */
type Pushed = { name: string; resource: unknown } | { name: string; raw: Uint8Array };

/**
 * An xDS server that answers the Address subscription at once and the Authorization one only when
 * told to, as a control plane whose policy push is late (or rejected) does.
 */
async function startSplitXds(cp: TestControlPlane) {
  const istiod = await cp.issue("spiffe://cluster.local/ns/istio-system/sa/istiod");
  let sendPolicies: (resources: Pushed[], removed: string[]) => void = () => {};
  const nacks: string[] = [];
  let nonce = 0;
  const server = new grpc.Server();
  server.addService(adsServiceDefinition, {
    StreamAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
    DeltaAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      const answered = new Set<string>();
      const respond = (typeUrl: string, resources: Pushed[], removed: string[] = []) => {
        call.write(
          Buffer.from(
            typeRegistry.encode("envoy.service.discovery.v3.DeltaDiscoveryResponse", {
              typeUrl,
              nonce: String(++nonce),
              systemVersionInfo: "1",
              resources: resources.map((r) => ({
                name: r.name,
                version: String(nonce),
                resource:
                  "raw" in r ? { typeUrl, value: r.raw } : typeRegistry.pack(typeUrl, r.resource as never),
              })),
              removedResources: removed,
            } as never),
          ),
        );
      };
      call.on("data", (buffer: Buffer) => {
        const request = typeRegistry.decode("envoy.service.discovery.v3.DeltaDiscoveryRequest", buffer) as {
          typeUrl: string;
          errorDetail?: { message: string };
        };
        if (request.errorDetail !== undefined) nacks.push(request.errorDetail.message);
        if (answered.has(request.typeUrl)) return;
        answered.add(request.typeUrl);
        if (request.typeUrl === TypeUrl.address) {
          respond(TypeUrl.address, [{ name: workload.uid, resource: { workload } }]);
        } else if (request.typeUrl === TypeUrl.authorization) {
          sendPolicies = (resources, removed) => respond(TypeUrl.authorization, resources, removed);
        }
      });
      call.on("error", () => {});
      call.on("end", () => call.end());
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    sendPolicies: (resources: Pushed[] = [], removed: string[] = []) => sendPolicies(resources, removed),
    nacks,
    close: () => server.forceShutdown(),
  };
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((r) => setTimeout(r, 5));
}

describe("mesh state before the first policy push", { timeout: 30_000 }, () => {
  let cp: TestControlPlane;
  let xds: Awaited<ReturnType<typeof startSplitXds>>;
  let state: MeshState;

  before(async () => {
    cp = await startTestControlPlane();
    xds = await startSplitXds(cp);
  });
  after(async () => {
    state?.close();
    xds.close();
    await cp.close();
  });

  it("announces no change until workloads and policies are both in", async () => {
    state = createMeshState({
      address: xds.address,
      channel: controlPlaneChannel(cp.rootCertPem),
      token: "unused",
      clusterId: "Kubernetes",
      node: { id: "ztunnel~node-a", name: "node-a" },
      logger: noopLogger,
      metrics: noopMetrics,
    });
    const announced: string[] = [];
    state.onChange((kind) => announced.push(kind));
    let ready = false;
    void state.ready().then(() => {
      ready = true;
    });
    // The workloads are in, the policies are not: nothing may act on half a state (a node proxy
    // would open its pods' listeners with no policy to enforce).
    await until(() => state.store.findByAddress("127.0.0.12") !== undefined);
    assert.deepEqual(announced, []);
    assert.equal(ready, false);

    xds.sendPolicies();
    await state.ready();
    assert.equal(state.store.findByAddress("127.0.0.12")?.name, "echo");
  });
});

/** A wire Authorization that matches every connection in its scope. */
function policy(namespace: string, name: string, action: "ALLOW" | "DENY") {
  return { name, namespace, scope: "NAMESPACE", action, groups: [{ rules: [] }] };
}

/** The policy's bytes with its action field set to `value`, as a newer control plane could send. */
function withActionNumber(resource: ReturnType<typeof policy>, value: number): Uint8Array {
  const bytes = typeRegistry.encode("istio.security.Authorization", resource as never);
  // Field 4 (action), varint: the last occurrence wins when decoding.
  return Buffer.concat([bytes, Buffer.from([0x20, value])]);
}

describe("mesh state with a bad policy in the first push", { timeout: 30_000 }, () => {
  let cp: TestControlPlane;
  let xds: Awaited<ReturnType<typeof startSplitXds>>;
  let state: MeshState;

  before(async () => {
    cp = await startTestControlPlane();
    xds = await startSplitXds(cp);
  });
  after(async () => {
    state?.close();
    xds.close();
    await cp.close();
  });

  const allowed = (namespace: string) =>
    state.engine.evaluate({
      source: { ip: "127.0.0.99", identity: "spiffe://cluster.local/ns/client/sa/client" },
      destination: { ip: "127.0.0.12", port: 8080, workload: { namespace, name: "echo" } },
    }).allowed;

  it("applies the good policies, becomes ready, and refuses what the bad ones could cover", async () => {
    state = createMeshState({
      address: xds.address,
      channel: controlPlaneChannel(cp.rootCertPem),
      token: "unused",
      clusterId: "Kubernetes",
      node: { id: "ztunnel~node-a", name: "node-a" },
      logger: noopLogger,
      metrics: noopMetrics,
    });
    await until(() => state.store.findByAddress("127.0.0.12") !== undefined);
    xds.sendPolicies([
      { name: "other/allow-all", resource: policy("other", "allow-all", "ALLOW") },
      // An action this proxy does not know, and a payload that does not decode.
      { name: "demo/deny-new", raw: withActionNumber(policy("demo", "deny-new", "DENY"), 7) },
      { name: "shop/broken", raw: Uint8Array.from([0x0a, 0x05, 0x01]) },
    ]);
    await state.ready();
    assert.ok(state.engine.wireAuthorizations().some((a) => a.name === "allow-all"));
    while (xds.nacks.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.match(xds.nacks[0] ?? "", /^demo\/deny-new: .*unknown action.*; shop\/broken: /);
    // Fail closed: what an unreadable policy might deny is refused; elsewhere nothing changes.
    assert.equal(allowed("demo"), false);
    assert.equal(allowed("shop"), false);
    assert.equal(allowed("other"), true);
    assert.equal(allowed("free"), true);

    // Fixed, the policy replaces the refusal; removed, the refusal goes.
    xds.sendPolicies(
      [{ name: "demo/deny-new", resource: policy("demo", "deny-new", "ALLOW") }],
      ["shop/broken"],
    );
    await until(() => allowed("demo") && allowed("shop"));

    // A known policy that turns bad keeps its last good value (no refusal in its place).
    xds.sendPolicies([
      { name: "demo/deny-new", raw: withActionNumber(policy("demo", "deny-new", "ALLOW"), 9) },
    ]);
    while (xds.nacks.length < 2) await new Promise((r) => setTimeout(r, 5));
    assert.match(xds.nacks[1] ?? "", /^demo\/deny-new: /);
    assert.equal(allowed("demo"), true);
  });
});

/** An xDS server whose every response the test sends by hand. */
async function startManualXds(cp: TestControlPlane) {
  const istiod = await cp.issue("spiffe://cluster.local/ns/istio-system/sa/istiod");
  let send: (typeUrl: string, resources: Pushed[], removed?: string[]) => void = () => {};
  const requested = new Set<string>();
  const nacks: string[] = [];
  let nonce = 0;
  /** The answer to each push by its nonce: undefined for an ACK, the NACK's message otherwise. */
  const answers = new Map<string, string | undefined>();
  const server = new grpc.Server();
  server.addService(adsServiceDefinition, {
    StreamAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
    DeltaAggregatedResources: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      send = (typeUrl, resources, removed = []) =>
        call.write(
          Buffer.from(
            typeRegistry.encode("envoy.service.discovery.v3.DeltaDiscoveryResponse", {
              typeUrl,
              nonce: String(++nonce),
              systemVersionInfo: "1",
              resources: resources.map((r) => ({
                name: r.name,
                version: String(nonce),
                resource:
                  "raw" in r ? { typeUrl, value: r.raw } : typeRegistry.pack(typeUrl, r.resource as never),
              })),
              removedResources: removed,
            } as never),
          ),
        );
      call.on("data", (buffer: Buffer) => {
        const request = typeRegistry.decode("envoy.service.discovery.v3.DeltaDiscoveryRequest", buffer) as {
          typeUrl: string;
          responseNonce: string;
          errorDetail?: { message: string };
        };
        requested.add(request.typeUrl);
        if (request.errorDetail !== undefined) nacks.push(request.errorDetail.message);
        if (request.responseNonce !== "") answers.set(request.responseNonce, request.errorDetail?.message);
      });
      call.on("error", () => {});
      call.on("end", () => call.end());
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(istiod.privateKeyPem), cert_chain: Buffer.from(istiod.certChainPem) }],
    false,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    /** Sends a push; returns its nonce. */
    send: (typeUrl: string, resources: Pushed[], removed?: string[]): string => {
      send(typeUrl, resources, removed);
      return String(nonce);
    },
    answers,
    requested,
    nacks,
    close: () => server.forceShutdown(),
  };
}

describe("mesh state with an Address it cannot use", { timeout: 30_000 }, () => {
  let cp: TestControlPlane;
  let xds: Awaited<ReturnType<typeof startManualXds>>;
  let state: MeshState;
  const SERVICE = "demo/echo.demo.svc.cluster.local";
  const waypoint = { ...workload, uid: "Kubernetes//Pod/demo/waypoint", name: "waypoint" } as Workload;
  waypoint.addresses = [Uint8Array.from([127, 0, 0, 50])];
  const service = {
    name: "echo",
    namespace: "demo",
    hostname: "echo.demo.svc.cluster.local",
    addresses: [{ network: "", address: Uint8Array.from([10, 96, 0, 12]) }],
    ports: [{ servicePort: 80, targetPort: 8080 }],
    waypoint: { address: { network: "", address: Uint8Array.from([127, 0, 0, 50]) }, hboneMtlsPort: 15008 },
  };
  /** Sends an Address push and waits for its answer, which must be a NACK; returns its message. */
  const rejected = async (resources: Pushed[], removed?: string[]): Promise<string> => {
    // The answer to this push by its nonce: an earlier push's late ACK is not taken for it.
    const nonce = xds.send(TypeUrl.address, resources, removed);
    await until(() => xds.answers.has(nonce));
    const nack = xds.answers.get(nonce);
    assert.notEqual(nack, undefined, "the push was ACKed");
    return nack ?? "";
  };

  before(async () => {
    cp = await startTestControlPlane();
    xds = await startManualXds(cp);
    state = createMeshState({
      address: xds.address,
      channel: controlPlaneChannel(cp.rootCertPem),
      token: "unused",
      clusterId: "Kubernetes",
      node: { id: "ztunnel~node-a", name: "node-a" },
      logger: noopLogger,
      metrics: noopMetrics,
    });
    await until(() => xds.requested.has(TypeUrl.address) && xds.requested.has(TypeUrl.authorization));
    xds.send(TypeUrl.address, [
      { name: workload.uid, resource: { workload } },
      { name: waypoint.uid, resource: { workload: waypoint } },
      { name: SERVICE, resource: { service } },
    ]);
    xds.send(TypeUrl.authorization, []);
    await state.ready();
  });
  after(async () => {
    state?.close();
    xds.close();
    await cp.close();
  });

  const throughWaypoint = () => {
    const at = state.store.serviceAt("10.96.0.12");
    return at === undefined ? "(no Service)" : state.store.resolveWaypoint(at.service).kind;
  };

  it("NACKs an Address that decodes to neither a workload nor a service, and keeps the last good one", async () => {
    assert.equal(throughWaypoint(), "waypoint");
    const nack = await rejected([
      { name: workload.uid, raw: new Uint8Array() },
      // Field 3: a kind of Address this proxy does not know.
      { name: SERVICE, raw: Uint8Array.from([0x1a, 0x00]) },
    ]);
    assert.match(nack, /Kubernetes\/\/Pod\/demo\/echo: .*neither/);
    assert.match(nack, /demo\/echo\.demo\.svc\.cluster\.local: .*neither/);
    assert.equal(state.store.findByAddress("127.0.0.12")?.name, "echo");
    assert.equal(throughWaypoint(), "waypoint", "traffic to the VIP still goes to its waypoint");
    assert.equal(state.store.resolve("10.96.0.12", 80).kind, "no-endpoint");
  });

  it("NACKs a workload with an address of no family, and keeps the last good one", async () => {
    const nack = await rejected([
      {
        name: workload.uid,
        resource: { workload: { ...workload, addresses: [Uint8Array.of(127, 0, 0, 12, 1)] } },
      },
    ]);
    assert.match(nack, /5 bytes/);
    assert.equal(state.store.findByAddress("127.0.0.12")?.name, "echo");
  });

  it("NACKs a workload sent under a name other than its uid; removing that name leaves the workload", async () => {
    const nack = await rejected([{ name: "old-name", resource: { workload } }]);
    assert.match(nack, /^old-name: .*sent under the name old-name/);
    const removal = xds.send(TypeUrl.address, [], ["old-name"]);
    await until(() => xds.answers.has(removal));
    assert.equal(xds.answers.get(removal), undefined, "the removal was NACKed");
    assert.equal(state.store.workloads().has(workload.uid), true);
    assert.equal(state.store.findByAddress("127.0.0.12")?.name, "echo");
  });

  it("NACKs a Service sent under another name, and one whose addresses do not parse", async () => {
    const other = "demo/other.demo.svc.cluster.local";
    assert.match(await rejected([{ name: other, resource: { service } }]), /sent under the name/);
    assert.equal(state.store.services().has(other), false);
    const bad = { ...service, addresses: [{ network: "", address: Uint8Array.of(10, 96, 0, 12, 9) }] };
    assert.match(await rejected([{ name: SERVICE, resource: { service: bad } }]), /5 bytes/);
    assert.equal(throughWaypoint(), "waypoint");
  });
});
