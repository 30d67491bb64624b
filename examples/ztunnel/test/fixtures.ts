// What the ztunnel integration tests share: a pod's Workload and a Service as the control plane would
// send them, a mesh of two ztunnels (node-a, node-b) on one test control plane, an echo server that
// proves half-close, and a SOCKS5 CONNECT through a ztunnel from a pod's address.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Service, Workload } from "@ambient/xds";
import { ConnectionRegistry } from "../src/connections.js";
import { createDialFailureMetrics } from "../src/dial-failure.js";
import { type RunningZtunnel, startZtunnel, type ZtunnelOptions } from "../src/index.js";
import { createOutbound, type OutboundNetwork } from "../src/outbound.js";
import { encodeGreeting, encodeRequest, parseReply } from "../src/socks5.js";
import { createSocks5Outbound } from "../src/socks5-outbound.js";
import type { Socks5Handler } from "../src/socks5-server.js";
import { createTcpMetrics } from "../src/tcp-metrics.js";
import { type MetricsSink, noopLogger, noopMetrics } from "../src/telemetry.js";
import { WorkloadStore } from "../src/workload-store.js";
import {
  startTestControlPlane,
  type TestControlPlane,
  type TestControlPlaneOptions,
} from "./control-plane.js";

/** A random 127.x.y (a /24 of loopback), so test files running at once never share an address. */
export function loopbackSubnet(): string {
  return `127.${40 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 256)}`;
}

/** An IPv4 address as the bytes of a workload address. */
export function ipBytes(address: string): Uint8Array {
  return Uint8Array.from(address.split(".").map(Number));
}

/**
 * A HEALTHY HBONE pod `name` on `node` at `address`, its service account named after it, in the
 * namespace of `extra.namespace` (default `default`); `extra` overrides any field.
 */
export function testWorkload(
  name: string,
  node: string,
  address: string,
  extra: Partial<Workload> = {},
): Workload {
  const namespace = extra.namespace ?? "default";
  return {
    uid: `Kubernetes//Pod/${namespace}/${name}`,
    name,
    namespace,
    addresses: [ipBytes(address)],
    hostname: "",
    network: "",
    tunnelProtocol: "HBONE",
    trustDomain: "",
    serviceAccount: name,
    node,
    canonicalName: name,
    canonicalRevision: "latest",
    workloadType: "POD",
    workloadName: name,
    nativeTunnel: false,
    services: {},
    authorizationPolicies: [],
    status: "HEALTHY",
    clusterId: "Kubernetes",
    networkMode: "STANDARD",
    extensions: [],
    ...extra,
  };
}

/** Echoes, and writes "." only after the client's FIN: a reply that proves half-close. */
export async function echoServer(host: string): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on("error", () => {});
    socket.pipe(socket, { end: false });
    socket.once("end", () => socket.end("."));
  });
  server.listen(0, host);
  await once(server, "listening");
  return server;
}

/** The child process behind {@link silentListener}: it listens, says its port, then never runs again. */
const SILENT_PEER = `
const server = require("node:net").createServer();
server.listen({ host: process.argv[1], port: 0, backlog: 1 }, () => {
  require("node:fs").writeSync(1, server.address().port + "\\n");
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
});`;

/** A TCP peer that takes no connection; see {@link silentListener}. */
export interface SilentListener {
  port: number;
  /** Ends the peer (its kernel then refuses what still waits) and the connections that filled it. */
  close(): Promise<void>;
}

/**
 * A listener at `host` that never answers a connect, as a destination behind a firewall that drops
 * packets: a child process whose event loop is blocked once it listens (backlog 1), and whose accept
 * queue this fills, so the kernel drops every later SYN and a connect to it waits for as long as the
 * kernel retries (about 2 minutes).
 */
export async function silentListener(host: string): Promise<SilentListener> {
  const child = spawn(process.execPath, ["-e", SILENT_PEER, host], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = once(child, "exit");
  const fillers: Socket[] = [];
  const close = async (): Promise<void> => {
    for (const socket of fillers) socket.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  };
  try {
    const [line] = (await Promise.race([
      once(child.stdout as NodeJS.ReadableStream, "data"),
      exited.then(() => {
        throw new Error("the silent peer exited before it listened");
      }),
    ])) as [Buffer];
    const port = Number(String(line).trim());
    // The kernel completes the handshakes of a full queue's worth of clients on its own: connect
    // until one gets no answer.
    for (let i = 0; i < 8; i++) {
      const socket = connect({ host, port });
      socket.on("error", () => {});
      let timer: NodeJS.Timeout | undefined;
      const answered = await Promise.race([
        once(socket, "connect").then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), 300);
        }),
      ]);
      clearTimeout(timer);
      if (!answered) {
        socket.destroy();
        return { port, close };
      }
      fillers.push(socket);
    }
    throw new Error("the silent peer's accept queue never filled");
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * SOCKS5 CONNECT to `host:port` through the proxy at `proxy` ("ip:port") from the local address
 * `from`; resolves with the reply code and the socket, any bytes after the reply left unread.
 */
export async function socksConnect(
  proxy: string,
  from: string,
  host: string,
  port: number,
): Promise<{ socket: Socket; reply: number }> {
  const [proxyHost, proxyPort] = proxy.split(":");
  const socket = connect({
    host: proxyHost,
    port: Number(proxyPort),
    localAddress: from,
    allowHalfOpen: true,
  });
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(host, port));
  let buffered = Buffer.alloc(0);
  let methodSeen = false;
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!methodSeen) {
        if (buffered.length < 2) return;
        methodSeen = true;
        buffered = buffered.subarray(2);
      }
      const reply = parseReply(buffered);
      if (reply === undefined) return;
      socket.off("data", onData);
      socket.off("end", onEnd);
      const rest = buffered.subarray(reply.length);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ socket, reply: reply.reply });
    };
    const onEnd = () => reject(new Error("proxy closed before replying"));
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", reject);
  });
}

/**
 * A canonical, PUBLIC, IPv4 Service `name` in `extra.namespace` (default `default`), hostname
 * `<name>.<namespace>.svc.cluster.local`, on the VIP `vip` with `ports`; `extra` overrides any field.
 */
export function testService(
  name: string,
  vip: string,
  ports: Service["ports"],
  extra: Partial<Service> = {},
): Service {
  const namespace = extra.namespace ?? "default";
  return {
    name,
    namespace,
    hostname: `${name}.${namespace}.svc.cluster.local`,
    addresses: [{ network: "", address: ipBytes(vip) }],
    ports,
    subjectAltNames: [],
    ipFamilies: "IPV4_ONLY",
    extensions: [],
    canonical: true,
    ingressUseWaypoint: false,
    weightedWaypoints: [],
    visibility: "PUBLIC",
    ...extra,
  };
}

/** Where {@link configureSleepEcho} puts its pods and the echo Service. */
export interface SleepEchoAddresses {
  sleep: string;
  stranger: string;
  echo: string;
  vip: string;
}

/**
 * A small mesh with a policy: pods `sleep` (namespace default) and `stranger` (namespace other) on
 * node-a; pod `echo` on node-b behind Service `echo.default.svc.cluster.local` (`ip.vip`:80 to
 * `echoPort`, TCP); and AuthorizationPolicy default/allow-sleep, which lets only sleep's identity in.
 * Every identity is in `trustDomain` (default `cluster.local`, which the workloads then leave empty, as
 * Istio sends it).
 */
export function configureSleepEcho(
  cp: TestControlPlane,
  ip: SleepEchoAddresses,
  echoPort: number,
  trustDomain = "cluster.local",
): void {
  const ports: Service["ports"] = [{ servicePort: 80, targetPort: echoPort, appProtocol: "TCP" }];
  const service = testService("echo", ip.vip, ports);
  const inDomain = { trustDomain: trustDomain === "cluster.local" ? "" : trustDomain };
  cp.setWorkload(testWorkload("sleep", "node-a", ip.sleep, inDomain));
  cp.setWorkload(testWorkload("stranger", "node-a", ip.stranger, { ...inDomain, namespace: "other" }));
  cp.setWorkload(
    testWorkload("echo", "node-b", ip.echo, {
      ...inDomain,
      services: { [`default/${service.hostname}`]: { ports } },
    }),
  );
  cp.setService(service);
  cp.applyPolicy(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: allow-sleep, namespace: default }
spec:
  rules:
  - from: [{ source: { principals: ["${trustDomain}/ns/default/sa/sleep"] } }]
`);
}

/** Options of {@link startTwoNodeMesh}. */
export interface TwoNodeMeshOptions {
  /** The 127.x.y of the test (see {@link loopbackSubnet}): node-a binds `<subnet>.1`, node-b `<subnet>.2`. */
  subnet: string;
  /** Options of the test control plane (an on-demand resolver, its timeout). */
  controlPlane?: TestControlPlaneOptions;
  /** Fills the control plane (workloads, Services, policies) before either proxy starts. */
  configure?: (cp: TestControlPlane) => void | Promise<void>;
  /** Options both proxies take (a logger). */
  ztunnel?: Partial<ZtunnelOptions>;
  /** node-a's own options, over `ztunnel`'s. */
  nodeA?: Partial<ZtunnelOptions>;
  /** node-b's own options, over `ztunnel`'s. */
  nodeB?: Partial<ZtunnelOptions>;
  /** How long both proxies may take to be ready before the start fails. Default 30 000 ms. */
  readyTimeoutMs?: number;
}

/** A running test control plane with two ready ztunnels, node-a and node-b. */
export interface TwoNodeMesh {
  cp: TestControlPlane;
  nodeA: RunningZtunnel;
  nodeB: RunningZtunnel;
  /** Closes both proxies, then the control plane; the same promise on every call. */
  close(): Promise<void>;
}

/**
 * Starts a test control plane, lets `configure` fill it, then starts node-a and node-b (ephemeral
 * node ports, each with its node token) and waits until both are ready. A start that fails part-way
 * (a proxy that does not start, or is not ready in time) closes whatever it had started and rejects.
 */
export async function startTwoNodeMesh(options: TwoNodeMeshOptions): Promise<TwoNodeMesh> {
  let cp: TestControlPlane | undefined;
  const nodes: RunningZtunnel[] = [];
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // Every close is tried, whatever the others do; the first failure is reported after.
      const proxies = await Promise.allSettled(nodes.map((node) => node.close()));
      const plane = cp === undefined ? [] : await Promise.allSettled([cp.close()]);
      const failed = [...proxies, ...plane].find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined) throw failed.reason;
    })();
    return closing;
  };
  const start = async (
    plane: TestControlPlane,
    nodeName: string,
    nodeIp: string,
    own: Partial<ZtunnelOptions> | undefined,
  ): Promise<RunningZtunnel> => {
    const node = await startZtunnel({
      controlPlaneAddress: plane.address,
      rootCertPem: plane.rootCertPem,
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      nodeName,
      nodeIp,
      token: await plane.tokenFor(nodeName),
      ...options.ztunnel,
      ...own,
    });
    nodes.push(node);
    return node;
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    cp = await startTestControlPlane(options.controlPlane);
    await options.configure?.(cp);
    const nodeA = await start(cp, "node-a", `${options.subnet}.1`, options.nodeA);
    const nodeB = await start(cp, "node-b", `${options.subnet}.2`, options.nodeB);
    const timeoutMs = options.readyTimeoutMs ?? 30_000;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`node-a and node-b not both ready within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    await Promise.race([Promise.all([nodeA.ready, nodeB.ready]), timedOut]);
    return { cp, nodeA, nodeB, close };
  } catch (error) {
    await close().catch(() => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs an unmodified program inside the network namespace `ns` (`ip netns exec`, so the namespace's
 * /etc/netns/<ns> files apply), bounded in time; resolves with its exit code and output.
 */
export function runInNetns(
  ns: string,
  args: string[],
  timeoutMs = 8000,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", ns, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on("data", (c: Buffer) => {
      out += c.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/**
 * A SOCKS5 outbound for destinations outside the mesh: no workloads, certificates or names, every
 * client `source`. Dials go through `network`; TCP metrics to `metrics`.
 */
export function passthroughSocks5(options: {
  network: OutboundNetwork;
  source: Workload;
  metrics?: MetricsSink;
  registry?: ConnectionRegistry;
  connectTimeoutMs?: number;
}): { server: Server; handler: Socks5Handler } {
  const outbound = createOutbound({
    store: new WorkloadStore(),
    svidOf: () => Promise.reject(new Error("no certificates here")),
    trustOf: () => "",
    hbonePort: 15008,
    registry: options.registry ?? new ConnectionRegistry(),
    tcpMetrics: createTcpMetrics(options.metrics ?? noopMetrics),
    resolveHostname: () => Promise.reject(new Error("no names here")),
    logger: noopLogger,
    ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
  });
  return createSocks5Outbound({
    outbound,
    network: options.network,
    store: new WorkloadStore(),
    sourceOf: () => options.source,
    isClosed: () => false,
    logger: noopLogger,
    metrics: noopMetrics,
    dialFailures: createDialFailureMetrics(noopMetrics),
  });
}
