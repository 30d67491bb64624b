/**
 * Everything a bench run starts, as separate processes, on 127.0.0.0/8 only: the backends of the
 * server "pod" (iperf3 server, echo server), the mesh (control plane, two ztunnels, the SOCKS5 shim for
 * iperf3), a haproxy mTLS pair and a minimal Node TLS relay pair. Every pair carries plaintext in,
 * mutual TLS 1.3 between its two sides and plaintext out to the same backends, with certificates from
 * the same CA: the bench makes the mesh CA and hands it to the control plane, so the ztunnels' SVIDs
 * and the haproxy/Node certificates share one root.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
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
import { ztunnelEntry } from "./ztunnel-entry.js";

/** Which pair carried the traffic. */
export type PairName = "haproxy" | "node-tls" | "ztunnel" | "ztunnel-base";
/** Backends on the server pod. */
export type TargetName = "iperf" | "echo";

/** How a client reaches a backend through a pair (or directly). */
export interface Route {
  host: string;
  port: number;
  /** Source IP to bind (the client pod's IP). */
  localAddress: string;
  /** Set when the connection must first go through this SOCKS5 proxy to `targetIp:targetPort`. */
  socks5?: { proxyHost: string; proxyPort: number; targetIp: string; targetPort: number };
}

/** One running pair. */
export interface Pair {
  name: PairName;
  /**
   * Most connections the pair can hold open: a TLS relay side holds two descriptors per connection,
   * under the open-file limit children get. A ztunnel multiplexes tunnels on a few HBONE connections.
   */
  maxTunnels: number;
  /** The proxy processes whose CPU and memory are billed to the pair: the outbound side first. */
  proxies: BenchChild[];
  /** The route for the load generator (ping-pong, connections, tunnels) to `target`. */
  route(target: TargetName): Route;
  /** Plain `host:port` for iperf3 (for the ztunnel pair: the SOCKS5 shim in front of it). */
  iperfAddress: { host: string; port: number };
  /** The TLS listener of the inbound side for the echo backend (the relay pairs; the ztunnel's is HBONE). */
  inboundTls?: { host: string; port: number };
  /** Extra processes on the path that are not the pair (the shim), measured apart. */
  helpers: BenchChild[];
}

/** The running topology. */
export interface Topology {
  pairs: Pair[];
  /** Straight to the backends, no proxy: the latency baseline. */
  direct(target: TargetName): Route;
  clientPodIp: string;
  serverPodIp: string;
  close(): Promise<void>;
}

/** Options of {@link startTopology}. */
export interface TopologyOptions {
  /**
   * Second octet of every address the run uses (127.<n>.x.y), so two runs (a test and a bench) on one
   * machine do not collide. Default 77.
   */
  subnet?: number;
  /** Pin each pair's outbound side to CPU 0 and its inbound side to CPU 1. Default true. */
  pin?: boolean;
  /** Pairs to start. Default all three. */
  pairs?: readonly PairName[];
  /** Extra node flags for the Node proxies, ztunnels and TLS relays (e.g. `--cpu-prof`). */
  proxyNodeFlags?: readonly string[];
  /**
   * Another checkout of this repository (built): adds the pair `ztunnel-base`, that tree's control
   * plane and ztunnels with their own pods and backends, so old and new code meet the same load in one
   * run. Only with the `ztunnel` pair's other options (no --netns).
   */
  baseTree?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

const IPERF_PORT = 5201;
const ECHO_PORT = 7007;
const ROUTE_PORTS: Record<TargetName, number> = { iperf: 15101, echo: 15102 };
const START_TIMEOUT_MS = 30_000;
const SOCKS5_PORT = 15080; // the ztunnel's default SOCKS5 port, on its node IP
const READINESS_PORT = 15021;

/** Two descriptors per relayed connection, and some spare for listeners, logs and the like. */
const RELAY_MAX_CONNECTIONS = Math.floor((childFileLimit - 200) / 2);

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

function nodeScript(
  name: string,
  script: string,
  args: readonly string[],
  cpu?: number,
  flags: readonly string[] = [],
) {
  return startChild(name, process.execPath, [...flags, "--import", "tsx", script, ...args], {
    ...(cpu === undefined ? {} : { cpu }),
  });
}

/** Waits for a child to print "ready" on stdout. */
async function printedReady(child: BenchChild, timeoutMs = START_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!/^ready$/m.test(child.output())) {
    if (child.process.exitCode !== null) throw new Error(`${child.name} exited:\n${child.output()}`);
    if (Date.now() > deadline)
      throw new Error(`${child.name} not ready after ${timeoutMs} ms:\n${child.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitForHttp200(url: string, timeoutMs: number, child: BenchChild): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.process.exitCode !== null) throw new Error(`${child.name} exited:\n${child.output()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline)
      throw new Error(`${child.name} not ready (${url}) after ${timeoutMs} ms:\n${child.output()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function waitForFile(path: string, timeoutMs: number, child: BenchChild): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await readFile(path, "utf8");
    } catch {
      if (child.process.exitCode !== null) throw new Error(`${child.name} exited:\n${child.output()}`);
      if (Date.now() > deadline) throw new Error(`${child.name} did not write ${path}:\n${child.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function meshManifests(clientPodIp: string, serverPodIp: string): string {
  return `# Two pods of the bench: the client on node-a, the backends (iperf3, echo) on node-b.
apiVersion: v1
kind: Namespace
metadata:
  name: bench
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: client, namespace: bench }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: server, namespace: bench }
---
apiVersion: v1
kind: Pod
metadata:
  name: client-0
  namespace: bench
  labels: { app: client }
spec:
  nodeName: node-a
  serviceAccountName: client
  containers: [{ name: client, image: load }]
status:
  podIP: ${clientPodIp}
---
apiVersion: v1
kind: Pod
metadata:
  name: server-0
  namespace: bench
  labels: { app: server }
spec:
  nodeName: node-b
  serviceAccountName: server
  containers:
    - name: server
      image: backends
      ports: [{ name: iperf, containerPort: ${IPERF_PORT} }, { name: echo, containerPort: ${ECHO_PORT} }]
status:
  podIP: ${serverPodIp}
`;
}

function haproxyConfig(
  side: "out" | "in",
  listenIp: string,
  peerIp: string,
  serverPodIp: string,
  dir: string,
): string {
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
  for (const [target, port] of Object.entries(ROUTE_PORTS) as [TargetName, number][]) {
    const backendPort = target === "iperf" ? IPERF_PORT : ECHO_PORT;
    lines.push(`listen ${target}`, `  maxconn ${RELAY_MAX_CONNECTIONS}`);
    if (side === "out") {
      lines.push(
        `  bind ${listenIp}:${port}`,
        // A full mutual handshake per connection (no session reuse), as the Node relay does.
        `  server in ${peerIp}:${port} ssl crt ${join(dir, "client.pem")} ca-file ${join(dir, "root.pem")} verify required ssl-min-ver TLSv1.3 no-ssl-reuse`,
      );
    } else {
      lines.push(
        `  bind ${listenIp}:${port} ssl crt ${join(dir, "server.pem")} ca-file ${join(dir, "root.pem")} verify required ssl-min-ver TLSv1.3`,
        `  server pod ${serverPodIp}:${backendPort}`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

/** Starts every process of a run; on failure, stops what it started and rethrows. */
export async function startTopology(options: TopologyOptions = {}): Promise<Topology> {
  const log = options.log ?? (() => {});
  const net = options.subnet ?? 77;
  const ip = (c: number, d: number) => `127.${net}.${c}.${d}`;
  const clientPodIp = ip(0, 1);
  const serverPodIp = ip(0, 2);
  const pin = options.pin ?? true;
  const outCpu = pin ? 0 : undefined;
  const inCpu = pin ? 1 : undefined;
  const want = new Set(options.pairs ?? ["haproxy", "node-tls", "ztunnel"]);
  const dir = await mkdtemp(join(tmpdir(), "ambient-bench-"));
  removeOnExit(dir);
  const pairs: Pair[] = [];
  const close = async () => {
    await stopAll();
    await rm(dir, { recursive: true, force: true });
    forgetTempDir(dir);
  };
  try {
    // One CA for everything: written where the control plane loads its CA from.
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    const cacerts = ca.exportCacerts();
    const stateDir = join(dir, "mesh-state");
    await mkdir(join(stateDir, "ca"), { recursive: true });
    await writeFile(join(stateDir, "ca", "ca-cert.pem"), cacerts.caCertPem);
    await writeFile(join(stateDir, "ca", "ca-key.pem"), cacerts.caKeyPem, { mode: 0o600 });
    await writeFile(join(stateDir, "ca", "root-cert.pem"), cacerts.rootCertPem);
    await writeFile(join(dir, "root.pem"), cacerts.rootCertPem);
    for (const [file, sa] of [
      ["client", "client"],
      ["server", "server"],
    ] as const) {
      const svid = await ca.issue({ spiffeId: `spiffe://cluster.local/ns/bench/sa/${sa}` });
      await writeFile(join(dir, `${file}-cert.pem`), svid.certChainPem);
      await writeFile(join(dir, `${file}-key.pem`), svid.privateKeyPem, { mode: 0o600 });
      await writeFile(join(dir, `${file}.pem`), svid.certChainPem + svid.privateKeyPem, { mode: 0o600 });
    }

    // Backends on the server pod's IP, shared by every pair and by the direct baseline.
    const iperfServer = startChild("iperf3 server", "iperf3", [
      "-s",
      "-B",
      serverPodIp,
      "-p",
      String(IPERF_PORT),
    ]);
    const echo = nodeScript("echo server", here("./echo-server.ts"), [serverPodIp, String(ECHO_PORT)]);
    await printedReady(echo);
    await waitForPort(serverPodIp, IPERF_PORT, START_TIMEOUT_MS, iperfServer);
    log(`backends on ${serverPodIp}: iperf3 :${IPERF_PORT}, echo :${ECHO_PORT}`);

    const routeVia = (host: string) => (target: TargetName) => ({
      host,
      port: ROUTE_PORTS[target],
      localAddress: clientPodIp,
    });

    if (want.has("haproxy")) {
      const [outIp, inIp] = [ip(2, 1), ip(2, 2)];
      await writeFile(join(dir, "haproxy-out.cfg"), haproxyConfig("out", outIp, inIp, serverPodIp, dir));
      await writeFile(join(dir, "haproxy-in.cfg"), haproxyConfig("in", inIp, outIp, serverPodIp, dir));
      const hin = startChild("haproxy in", "haproxy", ["-db", "-f", join(dir, "haproxy-in.cfg")], {
        ...(inCpu === undefined ? {} : { cpu: inCpu }),
      });
      const hout = startChild("haproxy out", "haproxy", ["-db", "-f", join(dir, "haproxy-out.cfg")], {
        ...(outCpu === undefined ? {} : { cpu: outCpu }),
      });
      for (const port of Object.values(ROUTE_PORTS)) {
        await waitForPort(inIp, port, START_TIMEOUT_MS, hin);
        await waitForPort(outIp, port, START_TIMEOUT_MS, hout);
      }
      pairs.push({
        name: "haproxy",
        maxTunnels: RELAY_MAX_CONNECTIONS,
        proxies: [hout, hin],
        helpers: [],
        route: routeVia(outIp),
        iperfAddress: { host: outIp, port: ROUTE_PORTS.iperf },
        inboundTls: { host: inIp, port: ROUTE_PORTS.echo },
      });
      log(`haproxy pair: ${outIp} -> mTLS -> ${inIp}`);
    }

    if (want.has("node-tls")) {
      const [outIp, inIp] = [ip(3, 1), ip(3, 2)];
      const relayConfig = (mode: "out" | "in"): RelayConfig => ({
        mode,
        routes: (Object.entries(ROUTE_PORTS) as [TargetName, number][]).map(([target, port]) => ({
          listenHost: mode === "out" ? outIp : inIp,
          listenPort: port,
          toHost: mode === "out" ? inIp : serverPodIp,
          toPort: mode === "out" ? port : target === "iperf" ? IPERF_PORT : ECHO_PORT,
        })),
        certFile: join(dir, mode === "out" ? "client-cert.pem" : "server-cert.pem"),
        keyFile: join(dir, mode === "out" ? "client-key.pem" : "server-key.pem"),
        caFile: join(dir, "root.pem"),
      });
      await writeFile(join(dir, "relay-out.json"), JSON.stringify(relayConfig("out")));
      await writeFile(join(dir, "relay-in.json"), JSON.stringify(relayConfig("in")));
      const rin = nodeScript(
        "node-tls in",
        here("./tls-relay.ts"),
        [join(dir, "relay-in.json")],
        inCpu,
        options.proxyNodeFlags,
      );
      const rout = nodeScript(
        "node-tls out",
        here("./tls-relay.ts"),
        [join(dir, "relay-out.json")],
        outCpu,
        options.proxyNodeFlags,
      );
      await printedReady(rin);
      await printedReady(rout);
      pairs.push({
        name: "node-tls",
        maxTunnels: RELAY_MAX_CONNECTIONS,
        proxies: [rout, rin],
        helpers: [],
        route: routeVia(outIp),
        iperfAddress: { host: outIp, port: ROUTE_PORTS.iperf },
        inboundTls: { host: inIp, port: ROUTE_PORTS.echo },
      });
      log(`node tls relay pair: ${outIp} -> mTLS -> ${inIp}`);
    }

    const ztunnelPair = async (
      name: "ztunnel" | "ztunnel-base",
      root: string,
      octet: number,
      podIps: { client: string; server: string },
      meshState: string,
    ): Promise<void> => {
      const cpIp = ip(octet, 10);
      const meshDir = join(dir, `mesh-${name}`);
      await mkdir(meshDir);
      await writeFile(join(meshDir, "bench.yaml"), meshManifests(podIps.client, podIps.server));
      const cp = nodeScript(`control plane (${name})`, join(root, "examples/control-plane/src/main.ts"), [
        "--mesh-dir",
        meshDir,
        "--state-dir",
        meshState,
        "--listen",
        `${cpIp}:15012`,
        "--admin",
        `${cpIp}:15014`,
        "--pod-cidr",
        `${podIps.server.split(".").slice(0, 3).join(".")}.0/24`,
        "--log-level",
        "warn",
      ]);
      await waitForPort(cpIp, 15012, START_TIMEOUT_MS, cp);
      const ztunnels: BenchChild[] = [];
      const entry = ztunnelEntry(root, repoRoot);
      for (const [index, node] of ["node-a", "node-b"].entries()) {
        await waitForFile(join(meshState, "tokens", `${node}.jwt`), START_TIMEOUT_MS, cp);
        const cpu = index === 0 ? outCpu : inCpu;
        const z = startChild(
          `${name} ${node}`,
          process.execPath,
          [
            ...(options.proxyNodeFlags ?? []),
            ...entry.nodeArgs,
            "--node",
            node,
            "--node-ip",
            ip(octet, index + 1),
            "--control-plane",
            `${cpIp}:15012`,
            "--state-dir",
            meshState,
            "--log-level",
            "warn",
          ],
          { ...(cpu === undefined ? {} : { cpu }) },
        );
        ztunnels.push(z);
      }
      for (const [index, z] of ztunnels.entries()) {
        await waitForHttp200(
          `http://${ip(octet, index + 1)}:${READINESS_PORT}/healthz/ready`,
          START_TIMEOUT_MS,
          z,
        );
      }
      const socks5 = { proxyHost: ip(octet, 1), proxyPort: SOCKS5_PORT };
      const shimIp = ip(octet, 21);
      const shim = nodeScript(`socks5 shim (${name})`, here("./socks5-shim.ts"), [
        shimIp,
        String(ROUTE_PORTS.iperf),
        socks5.proxyHost,
        String(SOCKS5_PORT),
        podIps.client,
        podIps.server,
        String(IPERF_PORT),
      ]);
      await printedReady(shim);
      pairs.push({
        name,
        maxTunnels: childFileLimit - 200,
        proxies: ztunnels,
        helpers: [shim],
        route: (target) => ({
          host: socks5.proxyHost,
          port: socks5.proxyPort,
          localAddress: podIps.client,
          socks5: {
            ...socks5,
            targetIp: podIps.server,
            targetPort: target === "iperf" ? IPERF_PORT : ECHO_PORT,
          },
        }),
        iperfAddress: { host: shimIp, port: ROUTE_PORTS.iperf },
      });
      log(
        `${name} pair (${root}; ${entry.describe}): SOCKS5 ${socks5.proxyHost}:${SOCKS5_PORT} -> HBONE -> ${podIps.server}; shim ${shimIp}`,
      );
    };

    if (want.has("ztunnel")) {
      await ztunnelPair("ztunnel", repoRoot, 1, { client: clientPodIp, server: serverPodIp }, stateDir);
    }

    if (options.baseTree !== undefined) {
      // The base tree's pods and backends live on 127.<n>.5.x, its nodes on 127.<n>.6.x; the CA is shared.
      const base = { client: ip(5, 1), server: ip(5, 2) };
      const baseState = join(dir, "mesh-state-base");
      await mkdir(join(baseState, "ca"), { recursive: true });
      for (const file of ["ca-cert.pem", "ca-key.pem", "root-cert.pem"]) {
        await writeFile(join(baseState, "ca", file), await readFile(join(stateDir, "ca", file)), {
          mode: 0o600,
        });
      }
      const baseIperf = startChild("iperf3 server (base)", "iperf3", [
        "-s",
        "-B",
        base.server,
        "-p",
        String(IPERF_PORT),
      ]);
      const baseEcho = nodeScript("echo server (base)", here("./echo-server.ts"), [
        base.server,
        String(ECHO_PORT),
      ]);
      await printedReady(baseEcho);
      await waitForPort(base.server, IPERF_PORT, START_TIMEOUT_MS, baseIperf);
      await ztunnelPair("ztunnel-base", options.baseTree, 6, base, baseState);
    }

    return {
      pairs,
      clientPodIp,
      serverPodIp,
      direct: (target) => ({
        host: serverPodIp,
        port: target === "iperf" ? IPERF_PORT : ECHO_PORT,
        localAddress: clientPodIp,
      }),
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
