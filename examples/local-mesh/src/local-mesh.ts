import { once } from "node:events";
import { readdir, readFile } from "node:fs/promises";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import {
  type ControlPlane,
  parseManifests,
  startControlPlane,
  waypointGateways,
} from "@ambient/example-control-plane";
import { type RunningWaypoint, startWaypoint } from "@ambient/example-waypoint";
import {
  encodeGreeting,
  encodeRequest,
  ipFromBytes,
  parseReply,
  type RunningZtunnel,
  SOCKS5_REPLY,
  socks5AddressOf,
  startZtunnel,
  type Logger as WaypointLogger,
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
  /** Structured logger (a pino logger fits) for the waypoints. Default: none. */
  waypointLogger?: WaypointLogger;
  /**
   * Control plane admin address (`/debug/config`, and the live mesh page `/dashboard`, which reads every
   * ztunnel and waypoint of the mesh). Default: not started.
   */
  controlPlaneAdmin?: string;
}

/** A pod of the mesh as the demo sees it. */
export interface MeshPod {
  name: string;
  namespace: string;
  ip: string;
  node: string;
  /** Ports the pod's app listens on (target ports of the Services that select it). */
  ports: number[];
  /** Whether a Service sends it HTTP (`appProtocol: http`/`http2`): the app answers HTTP then. */
  http: boolean;
}

/** The running local mesh. */
export interface LocalMesh {
  controlPlane: ControlPlane;
  ztunnels: Map<string, RunningZtunnel>;
  /** Waypoints by Gateway `namespace/name`. */
  waypoints: Map<string, RunningWaypoint>;
  pods: MeshPod[];
  /**
   * Opens a connection from `pod` to `host:port` through its node's ztunnel (SOCKS5, as an app whose
   * traffic is captured would), sends `payload`, half-closes and collects the answer.
   */
  call(pod: string, host: string, port: number, payload: string): Promise<CallResult>;
  /** Sends one HTTP/1.1 request from `pod` to `host:port` through its ztunnel and reads the answer. */
  httpCall(pod: string, host: string, port: number, request: HttpCallRequest): Promise<HttpCallResult>;
  close(): Promise<void>;
}

/** An HTTP request for {@link LocalMesh.httpCall}. */
export interface HttpCallRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

/** What {@link LocalMesh.httpCall} saw: the SOCKS5 reply and, when connected, the HTTP answer. */
export interface HttpCallResult {
  reply: number;
  /** 0 when no HTTP response arrived. */
  status: number;
  body: string;
}

/** Encodes a request with `connection: close`, so the answer ends with the connection. */
export function encodeHttpRequest(host: string, port: number, request: HttpCallRequest): string {
  const body = request.body ?? "";
  const headers = {
    host: `${host}:${port}`,
    ...request.headers,
    "content-length": String(Buffer.byteLength(body)),
    connection: "close",
  };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return `${request.method} ${request.path} HTTP/1.1\r\n${lines.join("\r\n")}\r\n\r\n${body}`;
}

/** Whether `text` holds a whole HTTP/1.1 response (by content-length or the last chunk). */
export function httpResponseComplete(text: string): boolean {
  const end = text.indexOf("\r\n\r\n");
  if (end === -1) return false;
  const head = text.slice(0, end);
  const body = text.slice(end + 4);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) return /(^|\r\n)0\r\n\r\n$/.test(body);
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  return length !== null && Buffer.byteLength(body) >= Number(length[1]);
}

/** Status and body of a whole HTTP/1.1 response (fixed length or until close; no chunked bodies). */
export function parseHttpResponse(text: string): { status: number; body: string } {
  const match = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(text);
  if (match === null) return { status: 0, body: "" };
  const end = text.indexOf("\r\n\r\n");
  const head = end === -1 ? text : text.slice(0, end);
  let body = end === -1 ? "" : text.slice(end + 4);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    let out = "";
    let rest = body;
    for (;;) {
      const lineEnd = rest.indexOf("\r\n");
      const size = lineEnd === -1 ? 0 : Number.parseInt(rest.slice(0, lineEnd), 16);
      if (!(size > 0)) break;
      out += rest.slice(lineEnd + 2, lineEnd + 2 + size);
      rest = rest.slice(lineEnd + 4 + size);
    }
    body = out;
  }
  return { status: Number(match[1]), body };
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

/** HTTP demo apps: answer every request with the pod name, method, path and `x-version` header. */
async function startHttpApp(pod: MeshPod, port: number): Promise<Server> {
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res
        .writeHead(200, { "content-type": "text/plain" })
        .end(`${pod.name} answered ${req.method} ${req.url}`);
    });
  });
  server.listen(port, pod.ip);
  await once(server, "listening");
  return server as unknown as Server;
}

/**
 * `until`: keep our side open after the payload and close once the answer satisfies it (HTTP);
 * without it, half-close after the payload and read until the peer closes (raw TCP apps).
 */
async function socksCall(
  proxy: string,
  from: string,
  host: string,
  port: number,
  payload: string,
  until?: (answer: string) => boolean,
) {
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
      if (until?.(Buffer.concat(response).toString())) socket.end();
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
    if (reply !== SOCKS5_REPLY.succeeded) socket.end();
    else if (until === undefined) socket.end(payload);
    else socket.write(payload);
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
    ...(options.controlPlaneAdmin === undefined ? {} : { admin: options.controlPlaneAdmin }),
  });
  const ztunnels = new Map<string, RunningZtunnel>();
  const waypoints = new Map<string, RunningWaypoint>();
  const apps: Server[] = [];
  const close = async () => {
    await Promise.allSettled([...waypoints.values()].map((w) => w.close()));
    await Promise.allSettled([...ztunnels.values()].map((z) => z.close()));
    for (const app of apps) app.close();
    await controlPlane.close();
  };
  try {
    const config = controlPlane.config();
    log(
      `control plane on ${controlPlane.address}: ${config.workloads.length} workloads, ${config.services.length} services, ${config.authorizations.size} authorizations`,
    );
    const httpServices = new Set(
      config.services
        .filter(({ service }) =>
          (service.ports ?? []).some((p) => p.appProtocol === "HTTP11" || p.appProtocol === "HTTP2"),
        )
        .map((s) => s.key),
    );
    const pods: MeshPod[] = config.workloads.map(({ workload }) => ({
      http: Object.keys(workload.services ?? {}).some((key) => httpServices.has(key)),
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
      controlPlane.dashboard?.addProxy({ kind: "ztunnel", name: node, admin: ztunnel.addresses.admin });
      log(
        `ztunnel ${node} on ${prefix}.${index + 1}: SOCKS5 ${socks5AddressOf(ztunnel)}, metrics ${ztunnel.addresses.metrics}`,
      );
    }
    for (const pod of pods) {
      for (const port of pod.ports) {
        apps.push(await (pod.http ? startHttpApp(pod, port) : startApp(pod, port)));
        log(`app ${pod.namespace}/${pod.name} listening on ${pod.ip}:${port} (node ${pod.node})`);
      }
    }
    // Waypoints: every istio-waypoint Gateway whose address is a pod of the mesh.
    const names = (await readdir(options.meshDir)).filter((n) => n.endsWith(".yaml"));
    const files = await Promise.all(
      names.map(async (path) => ({ path, text: await readFile(join(options.meshDir, path), "utf8") })),
    );
    for (const [key, ip] of waypointGateways(parseManifests(files).objects, [])) {
      const pod = pods.find((p) => p.ip === ip);
      if (pod === undefined || pod.node === "") continue;
      const [namespace = "", name = ""] = key.split("/");
      const waypoint = await startWaypoint({
        gateway: { name, namespace },
        ip,
        nodeName: pod.node,
        token: await controlPlane.tokenFor(pod.node),
        rootCertPem: controlPlane.rootCertPem,
        // Routes, backends and L7 policies come from the control plane over xDS.
        controlPlaneAddress: controlPlane.address,
        ...(options.waypointLogger === undefined ? {} : { logger: options.waypointLogger }),
      });
      waypoints.set(key, waypoint);
      controlPlane.dashboard?.addProxy({
        kind: "waypoint",
        name: key,
        admin: waypoint.operatorAddresses.admin,
        metrics: waypoint.operatorAddresses.metrics,
        address: ip,
      });
    }
    await Promise.all([...ztunnels.values()].map((z) => z.ready));
    log("every ztunnel is ready: certificates issued, workloads and policies received");
    await Promise.all([...waypoints.values()].map((w) => w.ready));
    for (const [key, w] of waypoints) log(`waypoint ${key} on ${w.address} as ${w.identity}`);
    return {
      controlPlane,
      ztunnels,
      waypoints,
      pods,
      async call(podName, host, port, payload) {
        const pod = pods.find((p) => p.name === podName);
        const ztunnel = pod === undefined ? undefined : ztunnels.get(pod.node);
        if (pod === undefined || ztunnel === undefined)
          throw new Error(`no pod ${podName} on a running node`);
        return socksCall(socks5AddressOf(ztunnel), pod.ip, host, port, payload);
      },
      async httpCall(podName, host, port, request) {
        const pod = pods.find((p) => p.name === podName);
        const ztunnel = pod === undefined ? undefined : ztunnels.get(pod.node);
        if (pod === undefined || ztunnel === undefined)
          throw new Error(`no pod ${podName} on a running node`);
        const raw = await socksCall(
          socks5AddressOf(ztunnel),
          pod.ip,
          host,
          port,
          encodeHttpRequest(host, port, request),
          httpResponseComplete,
        );
        return { reply: raw.reply, ...parseHttpResponse(raw.response) };
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
