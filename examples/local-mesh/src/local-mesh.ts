import { once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";
import { type ControlPlane, startControlPlane } from "@ambient/example-control-plane";
import {
  encodeGreeting,
  encodeRequest,
  ipFromBytes,
  parseReply,
  type RunningZtunnel,
  SOCKS5_REPLY,
  startZtunnel,
} from "@ambient/example-ztunnel";

/** Options of {@link startLocalMesh}. */
export interface LocalMeshOptions {
  /** Folder of manifests the control plane reads (the repository's `mesh/`). */
  meshDir: string;
  /** Where the CA and node tokens live; default: in memory, so every run starts with a new CA. */
  stateDir?: string;
  /** Control plane gRPC address (xDS + CA). Default `127.0.0.1:15012`. */
  controlPlaneListen?: string;
  /** Node IPs are `<nodeIpPrefix>.<n>` for the n-th node name in sorted order. Default `127.20.0`. */
  nodeIpPrefix?: string;
  /** Progress lines for a person watching. */
  log?: (line: string) => void;
}

/** A pod of the mesh as the demo sees it. */
export interface MeshPod {
  name: string;
  namespace: string;
  ip: string;
  node: string;
  /** Ports the pod's app listens on (target ports of the Services that select it). */
  ports: number[];
}

/** The running local mesh. */
export interface LocalMesh {
  controlPlane: ControlPlane;
  ztunnels: Map<string, RunningZtunnel>;
  pods: MeshPod[];
  /**
   * Opens a connection from `pod` to `host:port` through its node's ztunnel (SOCKS5, as an app whose
   * traffic is captured would), sends `payload`, half-closes and collects the answer.
   */
  call(pod: string, host: string, port: number, payload: string): Promise<CallResult>;
  close(): Promise<void>;
}

/** What one call through the mesh saw. */
export interface CallResult {
  /** The SOCKS5 reply code from the ztunnel: 0 when the mesh connected the call. */
  reply: number;
  /** What the destination app answered (empty when refused). */
  response: string;
}

/** The demo apps: each answers with its pod name and echoes what it was sent, then closes. */
async function startApp(pod: MeshPod, port: number): Promise<Server> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => socket.end(`${pod.name} heard "${Buffer.concat(chunks).toString()}"`));
    socket.on("error", () => socket.destroy());
  });
  server.listen(port, pod.ip);
  await once(server, "listening");
  return server;
}

async function socksCall(proxy: string, from: string, host: string, port: number, payload: string) {
  const [proxyHost, proxyPort] = proxy.split(":");
  const socket: Socket = connect({
    host: proxyHost,
    port: Number(proxyPort),
    localAddress: from,
    allowHalfOpen: true,
  });
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(host, port));
  let buffered = Buffer.alloc(0);
  let reply: number | undefined;
  const response: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => {
    if (reply !== undefined) {
      response.push(chunk);
      return;
    }
    buffered = Buffer.concat([buffered, chunk]);
    // The method selection (2 bytes) comes first, then the CONNECT reply.
    if (buffered.length < 2) return;
    const parsed = parseReply(buffered.subarray(2));
    if (parsed === undefined) return;
    reply = parsed.reply;
    const rest = buffered.subarray(2 + parsed.length);
    if (rest.length > 0) response.push(rest);
    if (reply === SOCKS5_REPLY.succeeded) socket.end(payload);
    else socket.end();
  });
  const closed = once(socket, "close");
  socket.on("error", () => {});
  await closed;
  return { reply: reply ?? SOCKS5_REPLY.generalFailure, response: Buffer.concat(response).toString() };
}

/**
 * Starts the whole local mesh in this process: the control plane on the manifests, one ztunnel per node,
 * and an app for every pod that a Service sends traffic to. Resolves once every ztunnel is ready.
 */
export async function startLocalMesh(options: LocalMeshOptions): Promise<LocalMesh> {
  const log = options.log ?? (() => {});
  const prefix = options.nodeIpPrefix ?? "127.20.0";
  const controlPlane = await startControlPlane({
    meshDir: options.meshDir,
    ...(options.stateDir !== undefined ? { stateDir: options.stateDir } : {}),
    listen: options.controlPlaneListen ?? "127.0.0.1:15012",
  });
  const ztunnels = new Map<string, RunningZtunnel>();
  const apps: Server[] = [];
  const close = async () => {
    await Promise.allSettled([...ztunnels.values()].map((z) => z.close()));
    for (const app of apps) app.close();
    await controlPlane.close();
  };
  try {
    const config = controlPlane.config();
    log(
      `control plane on ${controlPlane.address}: ${config.workloads.length} workloads, ${config.services.length} services, ${config.authorizations.size} authorizations`,
    );
    const pods: MeshPod[] = config.workloads.map(({ workload }) => ({
      name: workload.name ?? "",
      namespace: workload.namespace ?? "",
      ip: ipFromBytes(workload.addresses?.[0] ?? new Uint8Array()) ?? "",
      node: workload.node ?? "",
      ports: [
        ...new Set(
          Object.values(workload.services ?? {}).flatMap((list) =>
            (list?.ports ?? []).map((p) => p.targetPort ?? 0),
          ),
        ),
      ].filter((p) => p > 0),
    }));
    const nodes = [...new Set(pods.map((p) => p.node).filter((n) => n !== ""))].sort();
    for (const [index, node] of nodes.entries()) {
      const ztunnel = await startZtunnel({
        nodeName: node,
        nodeIp: `${prefix}.${index + 1}`,
        controlPlaneAddress: controlPlane.address,
        rootCertPem: controlPlane.rootCertPem,
        token: await controlPlane.tokenFor(node),
      });
      ztunnels.set(node, ztunnel);
      log(
        `ztunnel ${node} on ${prefix}.${index + 1}: SOCKS5 ${ztunnel.addresses.socks5}, metrics ${ztunnel.addresses.metrics}`,
      );
    }
    for (const pod of pods) {
      for (const port of pod.ports) {
        apps.push(await startApp(pod, port));
        log(`app ${pod.namespace}/${pod.name} listening on ${pod.ip}:${port} (node ${pod.node})`);
      }
    }
    await Promise.all([...ztunnels.values()].map((z) => z.ready));
    log("every ztunnel is ready: certificates issued, workloads and policies received");
    return {
      controlPlane,
      ztunnels,
      pods,
      async call(podName, host, port, payload) {
        const pod = pods.find((p) => p.name === podName);
        const ztunnel = pod === undefined ? undefined : ztunnels.get(pod.node);
        if (pod === undefined || ztunnel === undefined)
          throw new Error(`no pod ${podName} on a running node`);
        return socksCall(ztunnel.addresses.socks5, pod.ip, host, port, payload);
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
