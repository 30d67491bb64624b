import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import type { InboundTunnel } from "@ambient/hbone";
import { createAuthorizationEngine, type WireAuthorization } from "@ambient/policy";
import type { Workload } from "@ambient/xds";
import { loopbackSubnet, testWorkload } from "../test/fixtures.js";
import { ConnectionRegistry } from "./connections.js";
import { createInbound, type InboundPod } from "./inbound.js";
import { createTcpMetrics } from "./tcp-metrics.js";
import { noopLogger, noopMetrics } from "./telemetry.js";
import { WorkloadStore } from "./workload-store.js";

const base = loopbackSubnet();
const podIp = `${base}.12`;
const clientIp = `${base}.11`;

const echoWorkload = (extra: Partial<Workload> = {}): Workload =>
  testWorkload("echo", "node-a", podIp, { namespace: "demo", ...extra });

/** DENY everything (a group with no rules matches every connection). */
function denyAll(name: string, scope: WireAuthorization["scope"]): WireAuthorization {
  return { name, namespace: "demo", scope, action: "DENY", groups: [{ rules: [] }] };
}

/** An HBONE CONNECT stream as the server hands it over, recording how it was answered. */
function fakeTunnel(port: number) {
  let answered: (how: "accepted" | number) => void = () => {};
  const answer = new Promise<"accepted" | number>((resolve) => {
    answered = resolve;
  });
  const tunnel = {
    state: "pending" as string,
    authority: { kind: "ip", host: podIp, port, family: 4 },
    rawAuthority: `${podIp}:${port}`,
    peerIdentity: { toString: () => "spiffe://cluster.local/ns/demo/sa/sleep" },
    remoteAddress: clientIp,
    remotePort: 40000,
    headers: {},
    accept() {
      tunnel.state = "accepted";
      answered("accepted");
      const stream = new PassThrough();
      stream.end();
      return stream;
    },
    refuse(status: number) {
      tunnel.state = "refused";
      answered(status);
    },
  };
  return { tunnel: tunnel as unknown as InboundTunnel, answer };
}

describe("inbound: a policy change while the upstream is dialing", () => {
  let app: Server;
  let appPort: number;
  let appBytes = 0;

  before(async () => {
    app = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      const chunks: Buffer[] = [];
      socket.on("data", (c: Buffer) => {
        appBytes += c.length;
        chunks.push(c);
      });
      socket.once("end", () => socket.end(`app:${Buffer.concat(chunks).toString()}`));
    });
    app.listen(0, podIp);
    await once(app, "listening");
    appPort = (app.address() as AddressInfo).port;
  });
  after(async () => {
    app.close();
  });

  function setup() {
    const store = new WorkloadStore();
    store.upsert("Kubernetes//Pod/demo/echo", { workload: echoWorkload() });
    const engine = createAuthorizationEngine();
    const registry = new ConnectionRegistry();
    const inbound = createInbound({
      nodeName: "node-a",
      hbonePort: 15008,
      store,
      engine,
      registry,
      tcpMetrics: createTcpMetrics(noopMetrics),
      logger: noopLogger,
      isClosed: () => false,
    });
    return { store, engine, registry, inbound };
  }

  it("refuses an HBONE tunnel denied by a policy that arrived during the dial", async () => {
    const { engine, registry, inbound } = setup();
    const pod: InboundPod = {
      uid: "Kubernetes//Pod/demo/echo",
      ip: podIp,
      connectUpstream: (host, port) => {
        // The control plane pushes a DENY while the connect to the app is under way.
        engine.setAuthorization(denyAll("deny-all", "NAMESPACE"));
        inbound.recheck();
        return connect({ host, port, allowHalfOpen: true });
      },
    };
    const { tunnel, answer } = fakeTunnel(appPort);
    inbound.handleTunnel(pod, tunnel);
    assert.equal(await answer, 401);
    assert.equal(registry.connections().length, 0);
  });

  it("refuses an HBONE tunnel once the workload's new labels select a DENY policy during the dial", async () => {
    const { store, engine, registry, inbound } = setup();
    engine.setAuthorization(denyAll("deny-selected", "WORKLOAD_SELECTOR"));
    const pod: InboundPod = {
      uid: "Kubernetes//Pod/demo/echo",
      ip: podIp,
      connectUpstream: (host, port) => {
        store.upsert("Kubernetes//Pod/demo/echo", {
          workload: echoWorkload({ authorizationPolicies: ["demo/deny-selected"] }),
        });
        inbound.recheck();
        return connect({ host, port, allowHalfOpen: true });
      },
    };
    const { tunnel, answer } = fakeTunnel(appPort);
    inbound.handleTunnel(pod, tunnel);
    assert.equal(await answer, 401);
    assert.equal(registry.connections().length, 0);
  });

  it("closes a plaintext connection denied by a policy that arrived during the dial", async () => {
    const { engine, registry, inbound } = setup();
    const pod: InboundPod = {
      uid: "Kubernetes//Pod/demo/echo",
      ip: podIp,
      connectUpstream: (host, port) => {
        engine.setAuthorization(denyAll("deny-all", "NAMESPACE"));
        inbound.recheck();
        return connect({ host, port, allowHalfOpen: true });
      },
    };
    // Stands in for the pod's plaintext capture listener (15006).
    const capture = createServer({ allowHalfOpen: true }, (socket) =>
      inbound.handlePlaintext(pod, socket, { ip: podIp, port: appPort }),
    );
    capture.listen(0, podIp);
    await once(capture, "listening");
    try {
      const before = appBytes;
      const client: Socket = connect({
        host: podIp,
        port: (capture.address() as AddressInfo).port,
        localAddress: clientIp,
        allowHalfOpen: true,
      });
      client.on("error", () => {});
      const chunks: Buffer[] = [];
      client.on("data", (c: Buffer) => chunks.push(c));
      const closed = new Promise((resolve) => client.once("close", resolve));
      client.end("hello");
      await closed;
      assert.equal(Buffer.concat(chunks).toString(), "");
      assert.equal(appBytes, before);
      assert.equal(registry.connections().length, 0);
    } finally {
      capture.close();
    }
  });

  it("still serves a connection when no change denies it", async () => {
    const { inbound } = setup();
    const pod: InboundPod = {
      uid: "Kubernetes//Pod/demo/echo",
      ip: podIp,
      connectUpstream: (host, port) => {
        inbound.recheck();
        return connect({ host, port, allowHalfOpen: true });
      },
    };
    const { tunnel, answer } = fakeTunnel(appPort);
    inbound.handleTunnel(pod, tunnel);
    assert.equal(await answer, "accepted");
  });
});
