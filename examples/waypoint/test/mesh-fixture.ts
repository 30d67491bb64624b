// The mesh the waypoint's integration tests run in: a control plane serving manifests from a temp
// folder, a ztunnel on node-a and one on node-b, and the waypoint on node-a. A test reaches a pod the
// way a captured app does, through node-a's ztunnel SOCKS5 port, and starts its own backends.
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type ControlPlane,
  type ControlPlaneOptions,
  startControlPlane,
} from "@ambient/example-control-plane";
import {
  encodeGreeting,
  encodeRequest,
  parseReply,
  type RunningZtunnel,
  SOCKS5_REPLY,
  socks5AddressOf,
  startZtunnel,
  type ZtunnelOptions,
} from "@ambient/example-ztunnel";
import { type RunningWaypoint, startWaypoint, type WaypointOptions } from "../src/index.js";

/** A fresh 127.x.y.0/24 per call, so a suite never shares an address with another one. */
export function loopbackSubnet(): { cidr: string; ip: (n: number) => string } {
  const base = `127.${40 + Math.floor(Math.random() * 200)}.${Math.floor(Math.random() * 256)}`;
  return { cidr: `${base}.0/24`, ip: (n: number) => `${base}.${n}` };
}

/**
 * The `shop` namespace in the ambient mesh with its waypoint: the Gateway (its address in `status`) and
 * the waypoint's pod at `waypointIp`, on node-a. Tests append their own pods, Services and policies.
 */
export function shopWithWaypoint(waypointIp: string): string {
  return `apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: shop }
spec: { gatewayClassName: istio-waypoint }
status: { addresses: [{ type: IPAddress, value: ${waypointIp} }] }
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: shop
  labels: { gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none }
spec: { nodeName: node-a, serviceAccountName: waypoint }
status: { podIP: ${waypointIp} }`;
}

export interface TestMeshOptions {
  /** The manifests, written to `mesh.yaml` in a new temp folder the control plane serves. */
  manifests: string;
  /** Prefix of the temp folder's name. */
  tempPrefix: string;
  /** Addresses of node-a's and node-b's ztunnels. */
  nodeIps: readonly [string, string];
  /** Control plane options besides the folder. Default `listen`: 127.0.0.1 on an ephemeral port. */
  controlPlane?: Omit<ControlPlaneOptions, "meshDir" | "listen"> & { listen?: string };
  /** The ztunnels' ports; the ztunnel's defaults when not given. */
  ztunnelPorts?: ZtunnelOptions["ports"];
  /** The waypoint's own options; the mesh supplies its token, roots, control plane and folder. */
  waypoint: Omit<WaypointOptions, "nodeName" | "token" | "rootCertPem" | "controlPlaneAddress"> & {
    /** Default: node-a. */
    nodeName?: string;
  };
}

export interface TestMesh {
  /** The temp folder holding `mesh.yaml`. */
  dir: string;
  controlPlane: ControlPlane;
  /** node-a's ztunnel, then node-b's. */
  ztunnels: readonly [RunningZtunnel, RunningZtunnel];
  waypoint: RunningWaypoint;
  /** node-a's ztunnel SOCKS5 address, the way in for a client pod on node-a. */
  socks5: string;
  /** Closes the waypoint, the ztunnels and the control plane, and removes the folder. */
  close(): Promise<void>;
}

const NODES = ["node-a", "node-b"] as const;

/** A pod of the `shop` namespace labelled `app: <app>`, with service account `<app>`. */
export function shopPod(pod: { name: string; app: string; node: string; ip: string }): string {
  return `apiVersion: v1
kind: Pod
metadata: { name: ${pod.name}, namespace: shop, labels: { app: ${pod.app} } }
spec: { nodeName: ${pod.node}, serviceAccountName: ${pod.app} }
status: { podIP: ${pod.ip} }`;
}

/** A `shop` Service of the pods labelled `app: <name>`, port 80 to 8080, that uses the shop's waypoint. */
export function shopServiceOnWaypoint(service: {
  name: string;
  clusterIp: string;
  appProtocol?: string;
}): string {
  const appProtocol = service.appProtocol === undefined ? "" : `, appProtocol: ${service.appProtocol}`;
  return `apiVersion: v1
kind: Service
metadata: { name: ${service.name}, namespace: shop, labels: { istio.io/use-waypoint: waypoint } }
spec:
  clusterIP: ${service.clusterIp}
  selector: { app: ${service.name} }
  ports: [{ name: http, port: 80, targetPort: 8080${appProtocol} }]`;
}

/** Starts the mesh and waits until both ztunnels and the waypoint are ready. */
export async function startTestMesh(options: TestMeshOptions): Promise<TestMesh> {
  const dir = await mkdtemp(join(tmpdir(), options.tempPrefix));
  let controlPlane: ControlPlane | undefined;
  const ztunnels: RunningZtunnel[] = [];
  let waypoint: RunningWaypoint | undefined;
  const close = async () => {
    await waypoint?.close();
    await Promise.allSettled(ztunnels.map((z) => z.close()));
    await controlPlane?.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await writeFile(join(dir, "mesh.yaml"), options.manifests);
    controlPlane = await startControlPlane({
      listen: "127.0.0.1:0",
      ...options.controlPlane,
      meshDir: dir,
    });
    const cp = controlPlane;
    for (const [i, node] of NODES.entries()) {
      ztunnels.push(
        await startZtunnel({
          nodeName: node,
          nodeIp: options.nodeIps[i] as string,
          controlPlaneAddress: cp.address,
          rootCertPem: cp.rootCertPem,
          token: await cp.tokenFor(node),
          ...(options.ztunnelPorts === undefined ? {} : { ports: options.ztunnelPorts }),
        }),
      );
    }
    const nodeName = options.waypoint.nodeName ?? "node-a";
    waypoint = await startWaypoint({
      ...options.waypoint,
      nodeName,
      token: await cp.tokenFor(nodeName),
      rootCertPem: cp.rootCertPem,
      controlPlaneAddress: cp.address,
    });
    await Promise.all([...ztunnels.map((z) => z.ready), waypoint.ready]);
    const [a, b] = ztunnels as [RunningZtunnel, RunningZtunnel];
    return { dir, controlPlane: cp, ztunnels: [a, b], waypoint, socks5: socks5AddressOf(a), close };
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
}

/** From a pod address, through a ztunnel's SOCKS5 port, to `to` (`ip:port`). */
export interface SocksRoute {
  proxy: string;
  from: string;
  to: string;
}

export interface SocksConnection {
  socket: Socket;
  /** Everything received after the SOCKS5 reply. */
  bytes(): Buffer;
  /** The same, as latin1 text. */
  text(): string;
}

/** Opens a connection along `route`; rejects unless the ztunnel's SOCKS5 reply is "succeeded". */
export async function socks5Dial(route: SocksRoute): Promise<SocksConnection> {
  const [proxyHost, proxyPort] = route.proxy.split(":");
  const [toHost, toPort] = route.to.split(":");
  const socket = connect({ host: proxyHost, port: Number(proxyPort), localAddress: route.from });
  socket.on("error", () => {});
  await once(socket, "connect");
  socket.write(encodeGreeting());
  socket.write(encodeRequest(toHost ?? "", Number(toPort)));
  let buffered = Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let connected = false;
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => {
      if (connected) {
        chunks.push(chunk);
        return;
      }
      buffered = Buffer.concat([buffered, chunk]);
      const parsed = buffered.length < 2 ? undefined : parseReply(buffered.subarray(2));
      if (parsed === undefined) return;
      connected = true;
      if (parsed.reply !== SOCKS5_REPLY.succeeded) reject(new Error(`SOCKS5 reply ${parsed.reply}`));
      chunks.push(buffered.subarray(2 + parsed.length));
      resolve();
    });
    socket.once("close", () => reject(new Error("closed during SOCKS5")));
  });
  const bytes = () => Buffer.concat(chunks);
  return { socket, bytes, text: () => bytes().toString("latin1") };
}

/**
 * Sends `request` along `route` and resolves with the raw text received. It waits for the peer to
 * close, or with `untilResponse`, only until one response with a complete `content-length` body is in
 * (then it closes its side).
 */
export async function httpOverSocks(
  route: SocksRoute,
  request: string | Buffer,
  options: { untilResponse?: boolean } = {},
): Promise<string> {
  const c = await socks5Dial(route);
  const closed = once(c.socket, "close");
  const complete = () => {
    const text = c.text();
    const length = /content-length: (\d+)\r\n/i.exec(text);
    const end = text.indexOf("\r\n\r\n");
    return length !== null && end !== -1 && text.length - end - 4 >= Number(length[1]);
  };
  if (options.untilResponse) {
    c.socket.on("data", () => {
      if (complete()) c.socket.end();
    });
  }
  c.socket.write(request);
  await closed;
  return c.text();
}

/** Polls `check` every 10 ms until it holds; rejects after `ms`. */
export async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
