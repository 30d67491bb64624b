// The local mesh on network namespaces: one netns per demo pod (see topology.ts), one ztunnel per
// node in in-pod mode, and a node agent per node that hands the node's pods to its ztunnel over ZDS,
// as istio-cni does. Apps are plain HTTP servers in their pods; clients are unmodified `curl`s (or Node one-liners where curl is missing) run
// with `ip netns exec`, captured by the pods' iptables rules.
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ControlPlane, startControlPlane } from "@ambient/example-control-plane";
import { type RunningZtunnel, startZtunnel } from "@ambient/example-ztunnel";
import { listenInNetns, openNetns } from "@ambient/netns";
import { createZdsServer, type ZdsServer } from "@ambient/netns/zds";
import { createTopology, type Topology, type TopologyPod } from "./topology.js";

export interface NetnsMeshOptions {
  /** First two octets of the private /16 the pods live in (only inside the namespaces). Default `10.244`. */
  net?: string;
  /** Prefix of the namespace names. Default `amb-<random>`. */
  prefix?: string;
  log?: (line: string) => void;
}

/** One client run: exit code and what it printed. */
export interface ClientRun {
  code: number | null;
  out: string;
}

export interface NetnsMesh {
  topology: Topology;
  ztunnels: Map<string, RunningZtunnel>;
  ip: { sleep: string; stranger: string; echo: string; outsider: string; vip: string };
  /** The client the pods run: `curl`, or a Node one-liner where curl is not installed. */
  client: "curl" | "node";
  /** GETs `url` from inside a pod's namespace with an unmodified client, bounded in time. */
  httpGet(pod: string, url: string, timeoutMs?: number): Promise<ClientRun>;
  /** Starts a streaming GET and hands back the child (for a connection that stays open). */
  httpStream(pod: string, url: string): ReturnType<typeof spawn>;
  /** Replaces the demo's AuthorizationPolicy file; the control plane pushes it. */
  setPolicy(yaml: string): Promise<void>;
  close(): Promise<void>;
}

export const SLEEP_ONLY_POLICY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: echo-allow-sleep, namespace: demo }
spec:
  selector: { matchLabels: { app: echo } }
  action: ALLOW
  rules:
    - from: [{ source: { principals: ["cluster.local/ns/demo/sa/sleep"] } }]
      to: [{ operation: { ports: ["8080"] } }]
`;

export const STRANGER_ONLY_POLICY = SLEEP_ONLY_POLICY.replace("sa/sleep", "sa/stranger");

function manifests(ip: NetnsMesh["ip"]): string {
  const pod = (
    name: string,
    app: string,
    sa: string,
    node: string,
    address: string,
    port?: number,
  ) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: demo, labels: { app: ${app} } }
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  containers:
    - name: ${app}
      image: ${app}${port === undefined ? "" : `\n      ports: [{ name: http, containerPort: ${port} }]`}
status:
  podIP: ${address}
---
`;
  return `apiVersion: v1
kind: Namespace
metadata: { name: demo, labels: { istio.io/dataplane-mode: ambient } }
---
${["sleep", "echo", "stranger"].map((sa) => `apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: ${sa}, namespace: demo }\n---\n`).join("")}${pod("sleep-0", "sleep", "sleep", "node-a", ip.sleep)}${pod("stranger-0", "stranger", "stranger", "node-a", ip.stranger)}${pod("echo-0", "echo", "echo", "node-b", ip.echo, 8080)}apiVersion: v1
kind: Service
metadata: { name: echo, namespace: demo }
spec:
  clusterIP: ${ip.vip}
  selector: { app: echo }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
---
# No address: the control plane allocates one (240.240.0.0/16) and the pods' DNS answers with it.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: echo-internal, namespace: demo }
spec:
  hosts: [echo.internal.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{ number: 80, name: http, protocol: HTTP, targetPort: 8080 }]
  workloadSelector: { labels: { app: echo } }
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: { name: default, namespace: demo }
spec: { mtls: { mode: STRICT } }
`;
}

const hasCurl = spawnSync("curl", ["--version"], { stdio: "ignore" }).status === 0;
/** GET with Node's http, printing the body as it arrives; exit 7 on a connection error. */
const NODE_GET =
  'const r=require("http").get(process.argv[1],(res)=>{res.on("data",(c)=>process.stdout.write(c));res.on("end",()=>process.exit(0));res.on("error",()=>process.exit(18))});r.setTimeout(20000,()=>r.destroy(new Error("timeout")));r.on("error",(e)=>{process.stderr.write(String(e.code||e.message));process.exit(7)})';

function clientArgs(url: string, stream: boolean): string[] {
  if (!hasCurl) return [process.execPath, "-e", NODE_GET, url];
  return stream ? ["curl", "-sSN", "--max-time", "20", url] : ["curl", "-sS", "--max-time", "5", url];
}

/** The echo app: `/` answers who called, `/stream` sends a line every 200 ms until closed. */
function echoApp(): Server {
  return createServer((req, res) => {
    if (req.url === "/stream") {
      res.writeHead(200, { "content-type": "text/plain" });
      const timer = setInterval(() => res.write(`tick ${Date.now()}\n`), 200);
      res.on("close", () => clearInterval(timer));
      return;
    }
    res.end(`echo-0 answers ${req.socket.remoteAddress}\n`);
  });
}

export async function startNetnsMesh(options: NetnsMeshOptions = {}): Promise<NetnsMesh> {
  const log = options.log ?? (() => {});
  const net = options.net ?? "10.244";
  const ip = {
    sleep: `${net}.1.11`,
    stranger: `${net}.1.13`,
    outsider: `${net}.1.50`,
    echo: `${net}.2.12`,
    vip: `${net}.200.1`,
  };
  // The mesh pods' resolver is a cluster DNS address nothing listens on: the capture rules send port
  // 53 to the pod's ztunnel, which answers the mesh's names (and would forward the rest upstream).
  const dns = { nameserver: `${net}.200.10`, namespace: "demo" };
  const pods: TopologyPod[] = [
    { name: "sleep-0", node: "node-a", ip: ip.sleep, captured: true, dns },
    { name: "stranger-0", node: "node-a", ip: ip.stranger, captured: true, dns },
    { name: "outsider", node: "node-a", ip: ip.outsider, captured: false },
    { name: "echo-0", node: "node-b", ip: ip.echo, captured: true, dns },
  ];
  const dir = await mkdtemp(join(tmpdir(), "ambient-netns-mesh-"));
  const meshDir = join(dir, "mesh");
  await mkdir(meshDir);
  await writeFile(join(meshDir, "mesh.yaml"), manifests(ip));
  await writeFile(join(meshDir, "policy.yaml"), SLEEP_ONLY_POLICY);

  const topology = createTopology(pods, options.prefix);
  const ztunnels = new Map<string, RunningZtunnel>();
  const agents: ZdsServer[] = [];
  const apps: Server[] = [];
  let controlPlane: ControlPlane | undefined;
  const close = async () => {
    await Promise.allSettled([...ztunnels.values()].map((z) => z.close()));
    for (const agent of agents) agent.close();
    for (const app of apps) app.close();
    await controlPlane?.close().catch(() => {});
    topology.remove();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    log(`namespaces: ${topology.all().join(", ")}`);
    controlPlane = await startControlPlane({
      meshDir,
      listen: "127.0.0.1:0",
      podCidrs: [`${net}.0.0/16`],
      watchDebounceMs: 20,
      xdsDebounceMs: 10,
    });
    const echoNs = openNetns(`/var/run/netns/${topology.netns.get("echo-0")}`);
    try {
      const app = echoApp();
      await listenInNetns(echoNs, { host: ip.echo, port: 8080, server: app });
      apps.push(app);
    } finally {
      echoNs.close();
    }
    for (const node of ["node-a", "node-b"]) {
      const path = join(dir, `${node}.zds.sock`);
      const agent = createZdsServer({ path }).listen();
      agents.push(agent);
      const ztunnel = await startZtunnel({
        nodeName: node,
        nodeIp: "127.0.0.1",
        controlPlaneAddress: controlPlane.address,
        rootCertPem: controlPlane.rootCertPem,
        token: await controlPlane.tokenFor(node),
        ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
        zdsSocketPath: path,
        inPod: { workloadWaitMs: 2000 },
      });
      ztunnels.set(node, ztunnel);
      await ztunnel.ready;
      // The node agent hands over the node's mesh pods (istio-cni does this as each pod starts).
      for (const pod of pods.filter((p) => p.node === node && p.captured)) {
        await agent.addWorkload({
          uid: `uid-${pod.name}`,
          workloadInfo: { name: pod.name, namespace: "demo", serviceAccount: pod.name.replace(/-\d+$/, "") },
          netns: openNetns(`/var/run/netns/${topology.netns.get(pod.name)}`),
        });
        log(`${node}: ${pod.name} (${pod.ip}) handed to its ztunnel over ZDS`);
      }
    }
  } catch (err) {
    await close();
    throw err;
  }

  const nsOf = (pod: string): string => {
    const name = topology.netns.get(pod);
    if (name === undefined) throw new Error(`no pod ${pod}`);
    return name;
  };
  const httpStream = (pod: string, url: string) =>
    spawn("ip", ["netns", "exec", nsOf(pod), ...clientArgs(url, true)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
  return {
    topology,
    ztunnels,
    ip,
    client: hasCurl ? "curl" : "node",
    httpGet: (pod, url, timeoutMs = 8000) =>
      new Promise((resolve) => {
        const child = spawn("ip", ["netns", "exec", nsOf(pod), ...clientArgs(url, false)], {
          stdio: ["ignore", "pipe", "pipe"],
        });
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
      }),
    httpStream,
    setPolicy: (yaml) => writeFile(join(meshDir, "policy.yaml"), yaml),
    close,
  };
}
