import assert from "node:assert/strict";
import { once } from "node:events";
import {
  type AddressInfo,
  connect,
  createServer,
  Socket as NetSocket,
  type Server,
  type Socket,
} from "node:net";
import { PassThrough } from "node:stream";
import { after, before, describe, it } from "node:test";
import { HboneError, type InboundTunnel } from "@ambient/hbone";
import { createAuthorizationEngine, type WireAuthorization } from "@ambient/policy";
import type { Workload } from "@ambient/xds";
import {
  ipBytes,
  loopbackSubnet,
  type SilentListener,
  silentListener,
  testService,
  testWorkload,
} from "../test/fixtures.js";
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

/** An HBONE CONNECT stream as the server hands it over, recording how it was answered (and why). */
function fakeTunnel(port: number, host = podIp) {
  let answered: (how: "accepted" | number) => void = () => {};
  let refusedWith: string | undefined;
  const answer = new Promise<"accepted" | number>((resolve) => {
    answered = resolve;
  });
  const tunnel = {
    state: "pending" as string,
    authority: { kind: "ip", host, port, family: 4 },
    rawAuthority: `${host}:${port}`,
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
    refuse(status: number, reason?: string) {
      tunnel.state = "refused";
      refusedWith = reason;
      answered(status);
    },
  };
  return { tunnel: tunnel as unknown as InboundTunnel, answer, reason: () => refusedWith };
}

/**
 * An inbound for the echo pod that notes each connection opened (`opened`) and closed (`closed <flag>`)
 * in `counted`, and each access log line in `lines`.
 */
function countingInbound(isClosed: () => boolean = () => false, connectTimeoutMs?: number) {
  const store = new WorkloadStore();
  store.upsert("Kubernetes//Pod/demo/echo", { workload: echoWorkload() });
  const registry = new ConnectionRegistry();
  const counted: string[] = [];
  const lines: Record<string, unknown>[] = [];
  const logLine = (o: object, msg?: string) => {
    if (msg === "connection complete") lines.push(o as Record<string, unknown>);
  };
  const inbound = createInbound({
    nodeName: "node-a",
    hbonePort: 15008,
    store,
    engine: createAuthorizationEngine(),
    registry,
    tcpMetrics: {
      opened: () => counted.push("opened"),
      bytes() {},
      closed: (_labels, flag = "-") => counted.push(`closed ${flag}`),
    },
    logger: { ...noopLogger, info: logLine, error: logLine },
    isClosed,
    ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }),
  });
  /** The flags the closes were counted under. */
  const closes = () => counted.filter((c) => c.startsWith("closed ")).map((c) => c.slice("closed ".length));
  return { inbound, registry, counted, lines, closes };
}

/** The echo pod, whose connects to the app start only when the test connects the socket `dialStarted` gives. */
function podWithHeldDial() {
  let dialing: ((socket: NetSocket) => void) | undefined;
  const dialStarted = new Promise<NetSocket>((resolve) => {
    dialing = resolve;
  });
  const pod: InboundPod = {
    uid: "Kubernetes//Pod/demo/echo",
    ip: podIp,
    connectUpstream: () => {
      const socket = new NetSocket({ allowHalfOpen: true });
      dialing?.(socket);
      return socket;
    },
  };
  return { pod, dialStarted };
}

/**
 * A listener standing in for the pod's captured port, handing each connection to `inbound` as
 * plaintext for the app at `appPort`, and a client connected to it from the client's address.
 */
async function plaintextClient(
  inbound: ReturnType<typeof createInbound>,
  pod: InboundPod,
  appPort: number,
): Promise<{ client: Socket; capture: Server }> {
  const capture = createServer({ allowHalfOpen: true }, (socket) =>
    inbound.handlePlaintext(pod, socket, { ip: podIp, port: appPort }),
  );
  capture.listen(0, podIp);
  await once(capture, "listening");
  const client: Socket = connect({
    host: podIp,
    port: (capture.address() as AddressInfo).port,
    localAddress: clientIp,
  });
  client.on("error", () => {});
  return { client, capture };
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

describe("inbound: an open connection a policy change denies", () => {
  it("is closed and counted closed under DENY", async () => {
    const app = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      socket.resume();
    });
    app.listen(0, podIp);
    await once(app, "listening");
    const store = new WorkloadStore();
    store.upsert("Kubernetes//Pod/demo/echo", { workload: echoWorkload() });
    const engine = createAuthorizationEngine();
    const registry = new ConnectionRegistry();
    const closes: string[] = [];
    const inbound = createInbound({
      nodeName: "node-a",
      hbonePort: 15008,
      store,
      engine,
      registry,
      tcpMetrics: { opened() {}, bytes() {}, closed: (_labels, flag = "-") => closes.push(flag) },
      logger: noopLogger,
      isClosed: () => false,
    });
    const pod: InboundPod = { uid: "Kubernetes//Pod/demo/echo", ip: podIp, connectUpstream: connectTo };
    const { client, capture } = await plaintextClient(inbound, pod, (app.address() as AddressInfo).port);
    try {
      const closed = new Promise((resolve) => client.once("close", resolve));
      client.write("hello");
      while (registry.connections().length === 0) await new Promise((r) => setTimeout(r, 5));
      engine.setAuthorization(denyAll("deny-all", "NAMESPACE"));
      inbound.recheck();
      await closed;
      while (closes.length === 0) await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(closes, ["DENY"]);
    } finally {
      capture.close();
      app.close();
    }
  });
});

describe(
  "inbound: decided for the served pod's workload, not for whatever holds its address",
  { timeout: 10_000 },
  () => {
    async function setup() {
      const app = createServer({ allowHalfOpen: true }, (socket) => {
        socket.on("error", () => {});
        socket.resume();
      });
      app.listen(0, podIp);
      await once(app, "listening");
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
        tcpMetrics: { opened() {}, bytes() {}, closed() {} },
        logger: noopLogger,
        isClosed: () => false,
      });
      const pod: InboundPod = {
        uid: "zds-pod-uid",
        workloadUid: "Kubernetes//Pod/demo/echo",
        ip: podIp,
        connectUpstream: connectTo,
      };
      return { app, store, engine, registry, inbound, pod, appPort: (app.address() as AddressInfo).port };
    }
    /** Another namespace's workload, with no policies of its own, claiming the pod's address. */
    const impostor = () =>
      testWorkload("other", "node-a", podIp, { namespace: "other", uid: "Kubernetes//Pod/other/x" });

    it("closes an open connection under its namespace's DENY after the pod's Address went away", async () => {
      const { app, store, engine, registry, inbound, pod, appPort } = await setup();
      const { client, capture } = await plaintextClient(inbound, pod, appPort);
      try {
        const closed = new Promise((resolve) => client.once("close", resolve));
        client.write("hello");
        while (registry.connections().length === 0) await new Promise((r) => setTimeout(r, 5));
        // A push in two steps: the Address first, then a DENY for the pod's namespace.
        store.remove("Kubernetes//Pod/demo/echo");
        inbound.recheck();
        engine.setAuthorization(denyAll("deny-all", "NAMESPACE"));
        inbound.recheck();
        await closed;
      } finally {
        capture.close();
        app.close();
      }
    });

    it("closes an open connection under its namespace's DENY while another workload claims the address", async () => {
      const { app, store, engine, registry, inbound, pod, appPort } = await setup();
      const { client, capture } = await plaintextClient(inbound, pod, appPort);
      try {
        const closed = new Promise((resolve) => client.once("close", resolve));
        client.write("hello");
        while (registry.connections().length === 0) await new Promise((r) => setTimeout(r, 5));
        store.upsert("Kubernetes//Pod/other/x", { workload: impostor() });
        engine.setAuthorization(denyAll("deny-all", "NAMESPACE"));
        inbound.recheck();
        await closed;
      } finally {
        capture.close();
        app.close();
      }
    });

    it("refuses new plaintext connections and tunnels while another workload claims the address", async () => {
      const { app, store, engine, inbound, pod, appPort } = await setup();
      try {
        engine.setAuthorization(denyAll("deny-all", "NAMESPACE"));
        store.upsert("Kubernetes//Pod/other/x", { workload: impostor() });
        const { client, capture } = await plaintextClient(inbound, pod, appPort);
        try {
          let got = "";
          client.on("data", (d: Buffer) => {
            got += d.toString();
          });
          await new Promise((resolve) => client.once("close", resolve));
          assert.equal(got, "");
        } finally {
          capture.close();
        }
        const t = fakeTunnel(appPort);
        inbound.handleTunnel(pod, t.tunnel);
        assert.equal(await t.answer, 503);
      } finally {
        app.close();
      }
    });
  },
);

function connectTo(host: string, port: number): Socket {
  return connect({ host, port, allowHalfOpen: true });
}

describe("inbound: on-demand lookups", () => {
  const vip = `${base}.100`;
  let app: Server;
  let appPort: number;

  before(async () => {
    app = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      socket.resume();
      socket.once("end", () => socket.end());
    });
    app.listen(0, podIp);
    await once(app, "listening");
    appPort = (app.address() as AddressInfo).port;
  });
  after(async () => {
    app.close();
  });

  /**
   * An inbound with an on-demand lookup that, asked for an address, makes the control plane's answer
   * (if it has one) arrive in the store first.
   */
  function setup(answers: Record<string, (store: WorkloadStore) => void>) {
    const store = new WorkloadStore();
    store.upsert("Kubernetes//Pod/demo/echo", { workload: echoWorkload() });
    const asked: string[] = [];
    const lines: Record<string, unknown>[] = [];
    const logger = {
      ...noopLogger,
      info: (o: object, msg?: string) => {
        if (msg === "connection complete") lines.push(o as Record<string, unknown>);
      },
      error: (o: object, msg?: string) => {
        if (msg === "connection complete") lines.push(o as Record<string, unknown>);
      },
    };
    const onDemand = {
      async ensure(ip: string, port: number) {
        asked.push(`${ip}:${port}`);
        await Promise.resolve();
        answers[ip]?.(store);
        return true;
      },
    };
    const inbound = createInbound({
      nodeName: "node-a",
      hbonePort: 15008,
      store,
      engine: createAuthorizationEngine(),
      registry: new ConnectionRegistry(),
      tcpMetrics: createTcpMetrics(noopMetrics),
      logger,
      isClosed: () => false,
      onDemand,
    });
    return { store, inbound, asked, lines };
  }

  const pod = (): InboundPod => ({ uid: "Kubernetes//Pod/demo/echo", ip: podIp });
  // The accepting pod is the waypoint of a Service this node has not been sent.
  const sandwichedService = (store: WorkloadStore) =>
    store.upsert("demo/reviews.demo.svc.cluster.local", {
      service: testService("reviews", vip, [{ servicePort: 9080, targetPort: 9080, appProtocol: "TCP" }], {
        namespace: "demo",
        waypoint: { address: { network: "", address: ipBytes(podIp) }, hboneMtlsPort: 15008 },
      }),
    });

  it("asks for an unknown tunnel target before refusing it as not this waypoint's", async () => {
    const { inbound, asked } = setup({ [vip]: sandwichedService });
    const { tunnel, answer } = fakeTunnel(appPort, vip);
    inbound.handleTunnel(pod(), tunnel);
    assert.equal(await answer, "accepted");
    assert.ok(asked.includes(`${vip}:${appPort}`), `asked for ${asked.join(", ")}`);
  });

  it("still refuses the target with 400 when the control plane knows nothing of it", async () => {
    const { inbound, asked } = setup({});
    const { tunnel, answer } = fakeTunnel(appPort, vip);
    inbound.handleTunnel(pod(), tunnel);
    assert.equal(await answer, 400);
    assert.ok(asked.includes(`${vip}:${appPort}`));
  });

  it("asks for nothing when the tunnel names the pod and the source is known", async () => {
    const { store, inbound, asked } = setup({});
    store.upsert("Kubernetes//Pod/demo/sleep", {
      workload: testWorkload("sleep", "node-b", clientIp, { namespace: "demo" }),
    });
    const { tunnel, answer } = fakeTunnel(appPort);
    inbound.handleTunnel(pod(), tunnel);
    assert.equal(await answer, "accepted");
    assert.deepEqual(asked, []);
  });

  it("looks up an unknown HBONE source so the connection is reported with its workload", async () => {
    const { inbound, asked, lines } = setup({
      [clientIp]: (store) =>
        store.upsert("Kubernetes//Pod/demo/sleep", {
          workload: testWorkload("sleep", "node-b", clientIp, { namespace: "demo" }),
        }),
    });
    const { tunnel, answer } = fakeTunnel(appPort);
    inbound.handleTunnel(pod(), tunnel);
    assert.equal(await answer, "accepted");
    assert.equal(asked.length, 1);
    assert.ok(asked[0]?.startsWith(`${clientIp}:`));
    // The access line is written when the (immediately ended) tunnel finishes.
    while (lines.length === 0) await new Promise((r) => setImmediate(r));
    assert.equal(lines[0]?.["src.workload"], "sleep");
  });

  it("looks up an unknown plaintext source so the connection is reported with its workload", async () => {
    const { inbound, lines } = setup({
      [clientIp]: (store) =>
        store.upsert("Kubernetes//Pod/demo/sleep", {
          workload: testWorkload("sleep", "node-b", clientIp, { namespace: "demo" }),
        }),
    });
    const capture = createServer({ allowHalfOpen: true }, (socket) =>
      inbound.handlePlaintext(pod(), socket, { ip: podIp, port: appPort }),
    );
    capture.listen(0, podIp);
    await once(capture, "listening");
    try {
      const client: Socket = connect({
        host: podIp,
        port: (capture.address() as AddressInfo).port,
        localAddress: clientIp,
        allowHalfOpen: true,
      });
      client.on("error", () => {});
      client.resume();
      const closed = once(client, "close");
      client.end("hello");
      await closed;
      while (lines.length === 0) await new Promise((r) => setImmediate(r));
      assert.equal(lines[0]?.["src.workload"], "sleep");
    } finally {
      capture.close();
    }
  });
});

describe("inbound: a plaintext connection the app resets after it connected", () => {
  let app: Server;
  let appPort: number;

  before(async () => {
    // Takes the connection, reads the first bytes, then resets it.
    app = createServer((socket) => {
      socket.on("error", () => {});
      socket.once("data", () => socket.resetAndDestroy());
    });
    app.listen(0, podIp);
    await once(app, "listening");
    appPort = (app.address() as AddressInfo).port;
  });
  after(async () => {
    app.close();
  });

  it("is not counted or logged as a failed dial", async () => {
    const store = new WorkloadStore();
    store.upsert("Kubernetes//Pod/demo/echo", { workload: echoWorkload() });
    const dialFailures: unknown[] = [];
    const lines: Record<string, unknown>[] = [];
    const logger = {
      ...noopLogger,
      error: (o: object, msg?: string) => {
        if (msg === "connection complete") lines.push(o as Record<string, unknown>);
      },
      info: (o: object, msg?: string) => {
        if (msg === "connection complete") lines.push(o as Record<string, unknown>);
      },
    };
    const inbound = createInbound({
      nodeName: "node-a",
      hbonePort: 15008,
      store,
      engine: createAuthorizationEngine(),
      registry: new ConnectionRegistry(),
      tcpMetrics: createTcpMetrics(noopMetrics),
      dialFailures: {
        record: (_direction, err) => {
          dialFailures.push(err);
          return "ECONNRESET";
        },
      },
      logger,
      isClosed: () => false,
    });
    const pod: InboundPod = { uid: "Kubernetes//Pod/demo/echo", ip: podIp };
    const capture = createServer({ allowHalfOpen: true }, (socket) =>
      inbound.handlePlaintext(pod, socket, { ip: podIp, port: appPort }),
    );
    capture.listen(0, podIp);
    await once(capture, "listening");
    try {
      const client: Socket = connect({
        host: podIp,
        port: (capture.address() as AddressInfo).port,
        localAddress: clientIp,
        allowHalfOpen: true,
      });
      client.on("error", () => {});
      client.resume();
      // Not events.once: the client sees the reset as an error, which would reject it.
      const closed = new Promise((resolve) => client.once("close", resolve));
      client.write("hello");
      await closed;
      while (lines.length === 0) await new Promise((r) => setImmediate(r));
      assert.deepEqual(dialFailures, []);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]?.bytes_recv, 5);
      assert.doesNotMatch(String(lines[0]?.error), /upstream unavailable/);
    } finally {
      capture.close();
    }
  });
});

describe("inbound: a plaintext client gone before the upstream connected", () => {
  it("is counted opened, then closed without a flag", async () => {
    const app = createServer((socket) => socket.on("error", () => {}));
    const appConnections: Socket[] = [];
    app.on("connection", (s) => appConnections.push(s));
    app.listen(0, podIp);
    await once(app, "listening");
    const { inbound, counted } = countingInbound();
    // The connect to the app starts when the test says so: after the client has gone.
    const { pod, dialStarted } = podWithHeldDial();
    let accepted: Socket | undefined;
    const capture = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {});
      accepted = socket;
      inbound.handlePlaintext(pod, socket, { ip: podIp, port: (app.address() as AddressInfo).port });
    });
    capture.listen(0, podIp);
    await once(capture, "listening");
    try {
      const client: Socket = connect({
        host: podIp,
        port: (capture.address() as AddressInfo).port,
        localAddress: clientIp,
      });
      client.on("error", () => {});
      const upstream = await dialStarted;
      assert.ok(accepted);
      const acceptedClosed = new Promise((resolve) => accepted?.once("close", resolve));
      // A reset: the proxy's side sees it at once, even with nothing reading the socket.
      client.resetAndDestroy();
      await acceptedClosed;
      const appAccepted = once(app, "connection");
      upstream.connect((app.address() as AddressInfo).port, podIp);
      await appAccepted;
      const appSide = appConnections[0];
      assert.ok(appSide);
      if (!appSide.destroyed) await new Promise((resolve) => appSide.once("close", resolve));
      assert.deepEqual(counted, ["opened", "closed -"]);
    } finally {
      capture.close();
      app.close();
    }
  });
});

describe("inbound: an HBONE tunnel reset while the app connect is in flight", () => {
  /** An inbound counting opens and closes, whose connects to the app start when the test says so. */
  function setup() {
    return { ...countingInbound(), ...podWithHeldDial() };
  }

  it("is counted opened, then closed under H2_HANDSHAKE_FAILURE, once the app took it", async () => {
    const app = createServer((socket) => socket.on("error", () => {}));
    app.listen(0, podIp);
    await once(app, "listening");
    try {
      const { inbound, pod, counted, lines, dialStarted } = setup();
      const { tunnel } = fakeTunnel((app.address() as AddressInfo).port);
      inbound.handleTunnel(pod, tunnel);
      const upstream = await dialStarted;
      // The client resets the stream before the app answered the connect.
      (tunnel as unknown as { state: string }).state = "closed";
      const closed = once(upstream, "close");
      upstream.connect((app.address() as AddressInfo).port, podIp);
      await closed;
      assert.deepEqual(counted, ["opened", "closed H2_HANDSHAKE_FAILURE"]);
      assert.equal(lines.length, 1);
    } finally {
      app.close();
    }
  });

  it("is refused with 503, and closed without a flag, when the proxy closed before the app took it", async () => {
    const app = createServer((socket) => socket.on("error", () => {}));
    app.listen(0, podIp);
    await once(app, "listening");
    try {
      let closing = false;
      const { inbound, counted, lines } = countingInbound(() => closing);
      const { pod, dialStarted } = podWithHeldDial();
      const { tunnel, answer } = fakeTunnel((app.address() as AddressInfo).port);
      inbound.handleTunnel(pod, tunnel);
      const upstream = await dialStarted;
      // The proxy starts closing while the connect to the app is under way.
      closing = true;
      const closed = once(upstream, "close");
      upstream.connect((app.address() as AddressInfo).port, podIp);
      await closed;
      assert.equal(await answer, 503);
      assert.deepEqual(counted, ["opened", "closed -"]);
      assert.equal(lines.length, 1);
    } finally {
      app.close();
    }
  });

  it("is counted opened, then closed under CONNECT, when the app refused it", async () => {
    // A port nothing listens on: the connect is refused.
    const gone = createServer();
    gone.listen(0, podIp);
    await once(gone, "listening");
    const port = (gone.address() as AddressInfo).port;
    gone.close();
    await once(gone, "close");
    const { inbound, pod, counted, lines, dialStarted } = setup();
    const { tunnel } = fakeTunnel(port);
    inbound.handleTunnel(pod, tunnel);
    const upstream = await dialStarted;
    (tunnel as unknown as { state: string }).state = "closed";
    // Not events.once: the refused connect is an error event, which would reject it.
    const closed = new Promise((resolve) => upstream.once("close", resolve));
    upstream.connect(port, podIp);
    await closed;
    assert.deepEqual(counted, ["opened", "closed CONNECT"]);
    assert.equal(lines.length, 1);
    assert.match(String(lines[0]?.error), /upstream unavailable/);
  });
});

describe("inbound: a connection whose relay ends in an error", () => {
  let app: Server;
  let appPort: number;

  before(async () => {
    app = createServer((socket) => {
      socket.on("error", () => {});
      socket.resume();
    });
    app.listen(0, podIp);
    await once(app, "listening");
    appPort = (app.address() as AddressInfo).port;
  });
  after(async () => {
    app.close();
  });

  /** An inbound noting the flags closes are counted under, and the pod whose app sockets it keeps. */
  function setup() {
    const upstreams: Socket[] = [];
    const pod: InboundPod = {
      uid: "Kubernetes//Pod/demo/echo",
      ip: podIp,
      connectUpstream: (host, port) => {
        const socket = connect({ host, port, allowHalfOpen: true });
        upstreams.push(socket);
        return socket;
      },
    };
    return { ...countingInbound(), pod, upstreams };
  }

  /** A tunnel whose accepted stream the test holds, to fail it as the peer would. */
  function heldTunnel() {
    let accepted: (stream: PassThrough) => void = () => {};
    const stream = new Promise<PassThrough>((resolve) => {
      accepted = resolve;
    });
    const { tunnel } = fakeTunnel(appPort);
    (tunnel as unknown as { accept(): PassThrough }).accept = () => {
      (tunnel as unknown as { state: string }).state = "accepted";
      const s = new PassThrough();
      accepted(s);
      return s;
    };
    return { tunnel, stream };
  }

  for (const [rst, flag] of [
    [0x2, "CONNECT"],
    [0x1, "CONNECT"],
    [0x8, "-"],
  ] as const) {
    it(`counts a tunnel the peer reset with HTTP/2 code ${rst} as closed under ${flag}`, async () => {
      const { inbound, registry, closes, pod } = setup();
      const { tunnel, stream } = heldTunnel();
      inbound.handleTunnel(pod, tunnel);
      const held = await stream;
      while (registry.connections().length === 0) await new Promise((r) => setImmediate(r));
      held.destroy(
        new HboneError("ERR_HBONE_RESET", `tunnel stream reset by peer (${rst})`, { rstCode: rst }),
      );
      while (closes().length === 0) await new Promise((r) => setImmediate(r));
      assert.deepEqual(closes(), [flag]);
    });
  }

  it("counts a plaintext connection whose app socket timed out as closed under CONNECT", async () => {
    const { inbound, registry, closes, pod, upstreams } = setup();
    const { client, capture } = await plaintextClient(inbound, pod, appPort);
    try {
      const closed = new Promise((resolve) => client.once("close", resolve));
      while (registry.connections().length === 0) await new Promise((r) => setImmediate(r));
      // What a connection whose peer stopped answering ends with (keepalive or user timeout).
      upstreams[0]?.destroy(Object.assign(new Error("read ETIMEDOUT"), { code: "ETIMEDOUT" }));
      await closed;
      while (closes().length === 0) await new Promise((r) => setImmediate(r));
      assert.deepEqual(closes(), ["CONNECT"]);
    } finally {
      capture.close();
    }
  });

  it("counts a plaintext connection its client reset as closed without a flag", async () => {
    const { inbound, registry, closes, pod } = setup();
    const { client, capture } = await plaintextClient(inbound, pod, appPort);
    try {
      while (registry.connections().length === 0) await new Promise((r) => setImmediate(r));
      client.resetAndDestroy();
      while (closes().length === 0) await new Promise((r) => setImmediate(r));
      assert.deepEqual(closes(), ["-"]);
    } finally {
      capture.close();
    }
  });
});

describe("inbound: an app that never answers the connect", () => {
  // The pod's port is a listener that takes no connection: the connect to it gets no answer.
  let silent: SilentListener;
  // Closed after the tests, whichever way they ended.
  const registries: ConnectionRegistry[] = [];
  const servers: Server[] = [];
  const clients: Socket[] = [];
  before(async () => {
    silent = await silentListener(podIp);
  });
  after(async () => {
    for (const registry of registries) registry.closeAll();
    for (const client of clients) client.destroy();
    for (const server of servers) server.close();
    await silent.close();
  });

  it(
    "refuses the HBONE tunnel with 503 (ETIMEDOUT) once the connect deadline passed",
    { timeout: 10_000 },
    async () => {
      const { inbound, registry, lines, closes } = countingInbound(() => false, 300);
      registries.push(registry);
      const pod: InboundPod = { uid: "Kubernetes//Pod/demo/echo", ip: podIp };
      const { tunnel, answer, reason } = fakeTunnel(silent.port);
      const started = performance.now();
      inbound.handleTunnel(pod, tunnel);
      assert.equal(await answer, 503);
      assert.ok(performance.now() - started < 5000);
      assert.equal(reason(), "upstream connect failed (ETIMEDOUT)");
      assert.deepEqual(closes(), ["CONNECT"]);
      assert.match(String(lines[0]?.error), /ETIMEDOUT/);
      // The connect that got no answer is closed, not left to the kernel's retries.
      while (registry.socketCount() > 0) await new Promise((r) => setTimeout(r, 10));
    },
  );

  it("resets the plaintext connection once the connect deadline passed", { timeout: 10_000 }, async () => {
    const { inbound, registry, closes } = countingInbound(() => false, 300);
    registries.push(registry);
    const pod: InboundPod = { uid: "Kubernetes//Pod/demo/echo", ip: podIp };
    const { client, capture } = await plaintextClient(inbound, pod, silent.port);
    clients.push(client);
    servers.push(capture);
    await new Promise((resolve) => client.once("close", resolve));
    assert.deepEqual(closes(), ["CONNECT"]);
    while (registry.socketCount() > 0) await new Promise((r) => setTimeout(r, 10));
  });
});
