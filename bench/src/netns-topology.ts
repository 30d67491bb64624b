/**
 * The bench on the namespace mesh: a client pod and a server pod, each a network namespace, joined by
 * one veth pair; the two ztunnels in in-pod mode (separate processes in the root namespace, handed the
 * pods over ZDS by a node agent in this process) capture the pods' traffic with istio-cni's in-pod
 * rules. The haproxy pair and the Node TLS relay pair run inside the same two pods (out side in the
 * client pod, in side in the server pod), so every pair carries its mutual TLS over the same veth.
 * Unmodified iperf3 and the Node load generator run in the client pod with `ip netns exec`.
 *
 * The bench's own ports (15100-15199: the TLS pairs' listeners and the direct baselines) are left out
 * of the capture rules, so only the ztunnel pair goes through the ztunnels. Every namespace is deleted
 * on close, on a failed start, and when this process exits (SIGINT and SIGTERM included); the veth,
 * addresses and iptables rules live in them and go with them.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { access, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { inPodReplyRouting, inPodTcpCapture } from "@ambient/example-ztunnel";
import { openNetns } from "@ambient/netns";
import { createZdsServer, type ZdsServer } from "@ambient/netns/zds";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import {
  type BenchChild,
  childFileLimit,
  forgetTempDir,
  removeOnExit,
  startChild,
  stopAll,
  waitForPort,
} from "./processes.js";
import type { RelayConfig } from "./tls-relay.js";
import type { PairName, TargetName } from "./topology.js";
import { ztunnelEntry } from "./ztunnel-entry.js";

const IPERF_PORT = 5201;
const ECHO_PORT = 7007;
/** Left out of capture in both pods: the TLS pairs and the direct baselines. */
export const UNCAPTURED_PORTS = { first: 15100, last: 15199 } as const;
const DIRECT_PORTS = { iperf: 15191, echo: 15190 } as const;
/** Listener ports of each TLS pair: out side in the client pod, in side in the server pod. */
const PAIR_PORTS: Record<"haproxy" | "node-tls", Record<TargetName, { out: number; in: number }>> = {
  haproxy: { iperf: { out: 15101, in: 15111 }, echo: { out: 15102, in: 15112 } },
  "node-tls": { iperf: { out: 15121, in: 15131 }, echo: { out: 15122, in: 15132 } },
};
const BACKEND_PORTS: Record<TargetName, number> = { iperf: IPERF_PORT, echo: ECHO_PORT };
const START_TIMEOUT_MS = 30_000;
const READINESS_PORT = 15021;
/** Two descriptors per relayed connection, and some spare. */
const RELAY_MAX_CONNECTIONS = Math.floor((childFileLimit - 200) / 2);

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

/** Why the namespace mesh cannot run here, or undefined. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== "linux") return "needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "needs root (ip netns, iptables, setns)";
  for (const [cmd, arg] of [
    ["ip", "-V"],
    ["iptables", "--version"],
    ["ss", "-V"],
    ["iperf3", "--version"],
    ["haproxy", "-v"],
  ] as const) {
    if (spawnSync(cmd, [arg], { stdio: "ignore" }).status !== 0) return `${cmd} is not installed`;
  }
  return undefined;
}

// Namespaces made by this process: deleted when it exits, however it exits (`ip netns del` is
// synchronous, so it works in an 'exit' listener).
const liveNamespaces = new Set<string>();
let exitHookInstalled = false;
function deleteNamespace(name: string): void {
  spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  liveNamespaces.delete(name);
}
function trackNamespace(name: string): void {
  liveNamespaces.add(name);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const ns of [...liveNamespaces]) deleteNamespace(ns);
  });
}

function run(...args: string[]): string {
  const out = spawnSync(args[0] as string, args.slice(1), { encoding: "utf8" });
  if (out.status !== 0) {
    throw new Error(`${args.join(" ")} failed (${out.status}): ${(out.stderr ?? "").trim()}`);
  }
  return out.stdout ?? "";
}

/**
 * istio-cni's in-pod TCP capture (the REDIRECT variant, as `pnpm demo:netns` uses), as the ztunnel's
 * module spells it, with the bench's own ports excluded both ways: commands for `ip netns exec`.
 */
export function captureRules(podIp: string): string[][] {
  return inPodTcpCapture(podIp, { excludePorts: [`${UNCAPTURED_PORTS.first}:${UNCAPTURED_PORTS.last}`] });
}

/** Two pod namespaces joined by a veth pair (eth0 in each), lo up, capture rules in both. */
export interface PodNamespaces {
  client: string;
  server: string;
  clientIp: string;
  serverIp: string;
  /** Deletes both namespaces (idempotent). */
  remove(): void;
}

export function createPodNamespaces(prefix: string, net: number): PodNamespaces {
  const client = `${prefix}-client`;
  const server = `${prefix}-server`;
  const clientIp = `10.${net}.0.1`;
  const serverIp = `10.${net}.0.2`;
  const remove = () => {
    deleteNamespace(server);
    deleteNamespace(client);
  };
  try {
    for (const ns of [client, server]) {
      run("ip", "netns", "add", ns);
      trackNamespace(ns);
      run("ip", "-n", ns, "link", "set", "lo", "up");
    }
    // Made inside the client namespace with its peer moved straight into the server's: no link ever
    // exists in the root namespace.
    run("ip", "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", server);
    for (const [ns, ip] of [
      [client, clientIp],
      [server, serverIp],
    ] as const) {
      run("ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0");
      run("ip", "-n", ns, "link", "set", "eth0", "up");
      for (const rule of captureRules(ip)) run("ip", "netns", "exec", ns, ...rule);
      // istio-cni's reply routing for the ztunnel's connections to the app from the client's address.
      for (const command of inPodReplyRouting()) run("ip", "netns", "exec", ns, ...command);
    }
  } catch (err) {
    remove();
    throw err;
  }
  return { client, server, clientIp, serverIp, remove };
}

/** Whether something listens on `ip:port` inside namespace `ns`. */
function listening(ns: string, ip: string, port: number): boolean {
  const out = spawnSync("ip", ["netns", "exec", ns, "ss", "-Hltn", `sport = :${port}`], { encoding: "utf8" });
  return (out.stdout ?? "")
    .split("\n")
    .some(
      (line) =>
        line.includes(`${ip}:${port}`) || line.includes(`*:${port}`) || line.includes(`0.0.0.0:${port}`),
    );
}

async function waitForListen(ns: string, ip: string, port: number, child: BenchChild): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!listening(ns, ip, port)) {
    if (child.process.exitCode !== null) throw new Error(`${child.name} exited:\n${child.output()}`);
    if (Date.now() > deadline) {
      throw new Error(`${child.name} not listening on ${ip}:${port} in ${ns}:\n${child.output()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForHttp200(url: string, child: BenchChild): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.process.exitCode !== null) throw new Error(`${child.name} exited:\n${child.output()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${child.name} not ready (${url}):\n${child.output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** How the load generator in the client pod reaches a backend: plain TCP, the pod's rules do the rest. */
export interface NetnsRoute {
  host: string;
  port: number;
  localAddress: string;
}

/** One pair on the namespace mesh. */
export interface NetnsPair {
  name: PairName;
  /** Outbound side first. */
  proxies: BenchChild[];
  route(target: TargetName): NetnsRoute;
}

export interface NetnsTopology {
  namespaces: PodNamespaces;
  /** The run's temporary folder (certificates, configs), removed on close. */
  dir: string;
  pairs: NetnsPair[];
  /** Across the veth with no proxy (an uncaptured port on the server pod). */
  direct(target: TargetName): NetnsRoute;
  close(): Promise<void>;
}

export interface NetnsTopologyOptions {
  /** Second octet of the pods' private 10.x.0.0/24, which exists only inside the namespaces. Default random 100-199. */
  net?: number;
  /**
   * Second octet of the 127.x.1.y addresses of the control plane and the ztunnels' admin ports.
   * Default random in 150-179 (the loopback bench uses 77, its test 180-249).
   */
  loopbackSubnet?: number;
  /** Namespace name prefix. Default `ambb-<random>`. */
  prefix?: string;
  pairs?: readonly PairName[];
  /** Pin each pair's client-side process to CPU 0 and its server-side process to CPU 1. Default true. */
  pin?: boolean;
  /** Extra Node flags for every Node proxy (node-tls and the ztunnels), before their own. */
  proxyNodeFlags?: readonly string[];
  /**
   * Node flags for the ztunnels in place of those of their `pnpm start` (an A/B of runtime flags:
   * `src/operating-point.ts --ab`). Default: the start script's.
   */
  ztunnelStartFlags?: readonly string[];
  log?: (line: string) => void;
}

function meshManifests(clientIp: string, serverIp: string): string {
  const pod = (name: string, sa: string, node: string, ip: string) => `apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: bench, labels: { app: ${sa} } }
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  containers: [{ name: ${sa}, image: ${sa} }]
status:
  podIP: ${ip}
---
`;
  return `apiVersion: v1
kind: Namespace
metadata: { name: bench, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: client, namespace: bench }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: server, namespace: bench }
---
${pod("client-0", "client", "node-a", clientIp)}${pod("server-0", "server", "node-b", serverIp)}`;
}

function haproxyConfig(side: "out" | "in", ns: PodNamespaces, dir: string): string {
  const lines = [
    "global",
    `  maxconn ${RELAY_MAX_CONNECTIONS}`,
    "  nbthread 1",
    "  ssl-server-verify required",
    "defaults",
    "  mode tcp",
    "  timeout connect 5s",
    "  timeout client 120s",
    "  timeout server 120s",
  ];
  for (const [target, ports] of Object.entries(PAIR_PORTS.haproxy) as [
    TargetName,
    { out: number; in: number },
  ][]) {
    lines.push(`listen ${target}`, `  maxconn ${RELAY_MAX_CONNECTIONS}`);
    if (side === "out") {
      lines.push(
        `  bind ${ns.clientIp}:${ports.out}`,
        // A full mutual handshake per connection, as the Node relay does (same as the loopback bench).
        `  server in ${ns.serverIp}:${ports.in} ssl crt ${join(dir, "client.pem")} ca-file ${join(dir, "root.pem")} verify required ssl-min-ver TLSv1.3 no-ssl-reuse`,
      );
    } else {
      lines.push(
        `  bind ${ns.serverIp}:${ports.in} ssl crt ${join(dir, "server.pem")} ca-file ${join(dir, "root.pem")} verify required ssl-min-ver TLSv1.3`,
        `  server pod ${ns.serverIp}:${BACKEND_PORTS[target]}`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

/** Starts everything; on failure stops what it started, deletes the namespaces and rethrows. */
export async function startNetnsTopology(options: NetnsTopologyOptions = {}): Promise<NetnsTopology> {
  const log = options.log ?? (() => {});
  const net = options.net ?? 100 + Math.floor(Math.random() * 100);
  const lo = options.loopbackSubnet ?? 150 + Math.floor(Math.random() * 30);
  const prefix = options.prefix ?? `ambb-${randomBytes(3).toString("hex")}`;
  const pin = options.pin ?? true;
  const outCpu = pin ? { cpu: 0 } : {};
  const inCpu = pin ? { cpu: 1 } : {};
  const want = new Set(options.pairs ?? ["haproxy", "node-tls", "ztunnel"]);
  const flags = options.proxyNodeFlags ?? [];
  const dir = await mkdtemp(join(tmpdir(), "ambient-bench-netns-"));
  removeOnExit(dir);
  let namespaces: PodNamespaces | undefined;
  const agents: ZdsServer[] = [];
  const close = async () => {
    await stopAll();
    for (const agent of agents) agent.close();
    namespaces?.remove();
    await rm(dir, { recursive: true, force: true });
    forgetTempDir(dir);
  };
  const inNs = (ns: string, command: string, ...args: string[]) => ["netns", "exec", ns, command, ...args];
  const nodeIn = (ns: string, script: string, args: readonly string[], nodeFlags: readonly string[] = []) =>
    inNs(ns, process.execPath, ...nodeFlags, "--import", "tsx", script, ...args);
  try {
    namespaces = createPodNamespaces(prefix, net);
    const ns = namespaces;
    log(`pods: ${ns.client} (${ns.clientIp}) <-veth-> ${ns.server} (${ns.serverIp})`);

    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    const cacerts = ca.exportCacerts();
    const stateDir = join(dir, "mesh-state");
    await mkdir(join(stateDir, "ca"), { recursive: true });
    await writeFile(join(stateDir, "ca", "ca-cert.pem"), cacerts.caCertPem);
    await writeFile(join(stateDir, "ca", "ca-key.pem"), cacerts.caKeyPem, { mode: 0o600 });
    await writeFile(join(stateDir, "ca", "root-cert.pem"), cacerts.rootCertPem);
    await writeFile(join(dir, "root.pem"), cacerts.rootCertPem);
    for (const sa of ["client", "server"] as const) {
      const svid = await ca.issue({ spiffeId: `spiffe://cluster.local/ns/bench/sa/${sa}` });
      await writeFile(join(dir, `${sa}-cert.pem`), svid.certChainPem);
      await writeFile(join(dir, `${sa}-key.pem`), svid.privateKeyPem, { mode: 0o600 });
      await writeFile(join(dir, `${sa}.pem`), svid.certChainPem + svid.privateKeyPem, { mode: 0o600 });
    }

    // The server pod's apps: iperf3 and echo on the captured ports, and a second of each on uncaptured
    // ports for the direct baselines.
    const backends: [string, BenchChild, number][] = [];
    for (const port of [IPERF_PORT, DIRECT_PORTS.iperf]) {
      const child = startChild(
        `iperf3 server :${port}`,
        "ip",
        inNs(ns.server, "iperf3", "-s", "-B", ns.serverIp, "-p", String(port)),
      );
      backends.push([`iperf3 :${port}`, child, port]);
    }
    for (const port of [ECHO_PORT, DIRECT_PORTS.echo]) {
      const child = startChild(
        `echo :${port}`,
        "ip",
        nodeIn(ns.server, here("./echo-server.ts"), [ns.serverIp, String(port)]),
      );
      backends.push([`echo :${port}`, child, port]);
    }
    for (const [, child, port] of backends) await waitForListen(ns.server, ns.serverIp, port, child);
    log(
      `server pod apps: iperf3 :${IPERF_PORT}, echo :${ECHO_PORT} (direct: :${DIRECT_PORTS.iperf}, :${DIRECT_PORTS.echo})`,
    );

    const pairs: NetnsPair[] = [];
    const tlsRoute = (name: "haproxy" | "node-tls") => (target: TargetName) => ({
      host: ns.clientIp,
      port: PAIR_PORTS[name][target].out,
      localAddress: ns.clientIp,
    });

    if (want.has("haproxy")) {
      await writeFile(join(dir, "haproxy-out.cfg"), haproxyConfig("out", ns, dir));
      await writeFile(join(dir, "haproxy-in.cfg"), haproxyConfig("in", ns, dir));
      const hin = startChild(
        "haproxy in",
        "ip",
        inNs(ns.server, "haproxy", "-db", "-f", join(dir, "haproxy-in.cfg")),
        inCpu,
      );
      const hout = startChild(
        "haproxy out",
        "ip",
        inNs(ns.client, "haproxy", "-db", "-f", join(dir, "haproxy-out.cfg")),
        outCpu,
      );
      for (const ports of Object.values(PAIR_PORTS.haproxy)) {
        await waitForListen(ns.server, ns.serverIp, ports.in, hin);
        await waitForListen(ns.client, ns.clientIp, ports.out, hout);
      }
      pairs.push({ name: "haproxy", proxies: [hout, hin], route: tlsRoute("haproxy") });
      log("haproxy pair: client pod -> mTLS over the veth -> server pod");
    }

    if (want.has("node-tls")) {
      const relayConfig = (mode: "out" | "in"): RelayConfig => ({
        mode,
        routes: (Object.entries(PAIR_PORTS["node-tls"]) as [TargetName, { out: number; in: number }][]).map(
          ([target, ports]) => ({
            listenHost: mode === "out" ? ns.clientIp : ns.serverIp,
            listenPort: mode === "out" ? ports.out : ports.in,
            toHost: ns.serverIp,
            toPort: mode === "out" ? ports.in : BACKEND_PORTS[target],
          }),
        ),
        certFile: join(dir, mode === "out" ? "client-cert.pem" : "server-cert.pem"),
        keyFile: join(dir, mode === "out" ? "client-key.pem" : "server-key.pem"),
        caFile: join(dir, "root.pem"),
      });
      await writeFile(join(dir, "relay-out.json"), JSON.stringify(relayConfig("out")));
      await writeFile(join(dir, "relay-in.json"), JSON.stringify(relayConfig("in")));
      const rin = startChild(
        "node-tls in",
        "ip",
        nodeIn(ns.server, here("./tls-relay.ts"), [join(dir, "relay-in.json")], flags),
        inCpu,
      );
      const rout = startChild(
        "node-tls out",
        "ip",
        nodeIn(ns.client, here("./tls-relay.ts"), [join(dir, "relay-out.json")], flags),
        outCpu,
      );
      for (const ports of Object.values(PAIR_PORTS["node-tls"])) {
        await waitForListen(ns.server, ns.serverIp, ports.in, rin);
        await waitForListen(ns.client, ns.clientIp, ports.out, rout);
      }
      pairs.push({ name: "node-tls", proxies: [rout, rin], route: tlsRoute("node-tls") });
      log("node tls relay pair: client pod -> mTLS over the veth -> server pod");
    }

    if (want.has("ztunnel")) {
      const cpIp = `127.${lo}.1.10`;
      const meshDir = join(dir, "mesh");
      await mkdir(meshDir);
      await writeFile(join(meshDir, "bench.yaml"), meshManifests(ns.clientIp, ns.serverIp));
      const cp = startChild("control plane", process.execPath, [
        "--import",
        "tsx",
        join(repoRoot, "examples/control-plane/src/main.ts"),
        "--mesh-dir",
        meshDir,
        "--state-dir",
        stateDir,
        "--listen",
        `${cpIp}:15012`,
        "--admin",
        `${cpIp}:15014`,
        "--pod-cidr",
        `10.${net}.0.0/24`,
        "--log-level",
        "warn",
      ]);
      await waitForPort(cpIp, 15012, START_TIMEOUT_MS, cp);
      const ztunnels: BenchChild[] = [];
      const entry = ztunnelEntry(repoRoot, repoRoot);
      const ztunnelArgs =
        options.ztunnelStartFlags === undefined
          ? entry.nodeArgs
          : [...options.ztunnelStartFlags, ...entry.nodeArgs.slice(entry.startFlags.length)];
      for (const [index, [node, podNs, pod, sa]] of (
        [
          ["node-a", ns.client, "client-0", "client"],
          ["node-b", ns.server, "server-0", "server"],
        ] as const
      ).entries()) {
        // The node agent (istio-cni's part) knows its pod before the ztunnel connects: the pod goes
        // out in the snapshot, and the ztunnel is ready once it has acknowledged it.
        const zdsPath = join(dir, `${node}.zds.sock`);
        const agent = createZdsServer({ path: zdsPath }).listen();
        agents.push(agent);
        await agent.addWorkload({
          uid: `uid-${pod}`,
          workloadInfo: { name: pod, namespace: "bench", serviceAccount: sa },
          netns: openNetns(`/var/run/netns/${podNs}`),
        });
        for (let i = 0; i < 300 && !(await fileExists(join(stateDir, "tokens", `${node}.jwt`))); i++) {
          await new Promise((r) => setTimeout(r, 100));
        }
        ztunnels.push(
          startChild(
            `ztunnel ${node}`,
            process.execPath,
            [
              ...flags,
              ...ztunnelArgs,
              "--node",
              node,
              "--node-ip",
              `127.${lo}.1.${index + 1}`,
              "--control-plane",
              `${cpIp}:15012`,
              "--state-dir",
              stateDir,
              "--zds-socket",
              zdsPath,
              "--log-level",
              "warn",
            ],
            index === 0 ? outCpu : inCpu,
          ),
        );
      }
      for (const [index, z] of ztunnels.entries()) {
        await waitForHttp200(`http://127.${lo}.1.${index + 1}:${READINESS_PORT}/healthz/ready`, z);
      }
      await waitForListen(ns.client, "", 15001, ztunnels[0] as BenchChild);
      await waitForListen(ns.server, ns.serverIp, 15008, ztunnels[1] as BenchChild);
      pairs.push({
        name: "ztunnel",
        proxies: ztunnels,
        // The app dials the server pod as if there were no mesh; the client pod's rules capture it.
        route: (target) => ({ host: ns.serverIp, port: BACKEND_PORTS[target], localAddress: ns.clientIp }),
      });
      log("ztunnel pair: client pod -> capture 15001 -> HBONE over the veth -> 15008 in the server pod");
    }

    return {
      namespaces: ns,
      dir,
      pairs,
      direct: (target) => ({ host: ns.serverIp, port: DIRECT_PORTS[target], localAddress: ns.clientIp }),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

function fileExists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
