/**
 * The processes of the waypoint bench, on 127.<subnet>.x.y only: the same HTTP/1.1 traffic reaches
 * one backend through the waypoint (HBONE in, routing by HTTPRoute, HBONE out), through haproxy in
 * HTTP mode (TLS 1.3 mutual in, the same routing as haproxy ACLs, TLS 1.3 mutual out) or through
 * "node-https", a minimal `node:https` reverse proxy doing haproxy's job (`node-https-proxy.ts`), the
 * floor of what Node costs. Certificates come from one CA, the mesh CA the control plane serves.
 *
 *   h2load -> client end --mTLS--> proxy under test --mTLS--> server end -> backend
 *
 * The two ends are small Node processes of the same shape for both proxies, standing in for the
 * ztunnels on either side of a waypoint: HBONE (`waypoint-hbone-shim.ts`) for the waypoint, plain TLS
 * (`tls-relay.ts`) for haproxy and node-https, each with its own pair. Their CPU is measured and printed apart, never billed to the proxy.
 * The proxy under test is pinned to CPU 1; h2load, both ends and the backend to CPU 0.
 */
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import { appEntry, startFlags } from "./app-entry.js";
import type { NodeHttpsProxyConfig } from "./node-https-proxy.js";
import {
  type BenchChild,
  forgetTempDir,
  removeOnExit,
  startChild,
  stopAll,
  waitForPort,
} from "./processes.js";
import type { RelayConfig } from "./tls-relay.js";
import { baselineHookImport } from "./waypoint-baseline-hook.js";
import type { HboneShimConfig } from "./waypoint-hbone-shim.js";

/** The proxies the waypoint bench compares. */
export type WaypointProxyName = "waypoint" | "haproxy" | "node-https" | "waypoint-before";

/** The proxies started unless {@link WaypointTopologyOptions.proxies} says otherwise. */
export const DEFAULT_WAYPOINT_PROXIES: readonly WaypointProxyName[] = ["waypoint", "haproxy", "node-https"];

/** One proxy with the two ends that carry h2load's traffic to it and from it to the backend. */
export interface WaypointPath {
  name: WaypointProxyName;
  /** The proxy under test: its CPU per request is the measurement. */
  proxy: BenchChild;
  /** The client end, the server end: measured apart. */
  ends: BenchChild[];
  /** Where h2load connects (plaintext HTTP/1.1). */
  entry: { host: string; port: number };
}

/** The running waypoint bench topology. */
export interface WaypointTopology {
  paths: WaypointPath[];
  backend: BenchChild;
  /** The Host h2load sends (haproxy routes on it; the waypoint routes by the Service it is bound to). */
  host: string;
  /** A path every route table sends to the backend. */
  path: string;
  close(): Promise<void>;
}

/** Options of {@link startWaypointTopology}. */
export interface WaypointTopologyOptions {
  /** Second octet of every address (127.<n>.x.y). Default 78, clear of the pair bench's 77. */
  subnet?: number;
  /** Pin the proxies to CPU 1 and everything else to CPU 0. Default true. */
  pin?: boolean;
  /**
   * Proxies to start, of "waypoint", "haproxy", "node-https". Default all three. "waypoint-before"
   * comes with {@link baseline} alone.
   */
  proxies?: readonly WaypointProxyName[];
  /**
   * A snapshot folder with earlier copies of the waypoint's code at their repository paths (see
   * `waypoint-baseline-hook.ts`): a second waypoint, "waypoint-before", runs from it in the same run,
   * from the snapshot's `examples/waypoint/dist/main.js` when it has one, else from its
   * `examples/waypoint/src/main.ts` under tsx. The current waypoint always runs from this tree's
   * `examples/waypoint/dist/main.js` (build it first).
   */
  baseline?: string;
  /** Extra node flags for the waypoint (e.g. `--cpu-prof`). */
  waypointNodeFlags?: readonly string[];
  /**
   * Node flags for the current waypoint only, not "waypoint-before", in place of those of its
   * `pnpm start` (to measure a runtime setting).
   */
  currentWaypointNodeFlags?: readonly string[];
  /** Write the waypoint's access log (one line per request; Istio's default is off). Default false. */
  accessLog?: boolean;
  log?: (line: string) => void;
}

const BACKEND_PORT = 8080;
const SERVICE_PORT = 80;
const ENTRY_PORT = 15201;
const HBONE_PORT = 15008;
const START_TIMEOUT_MS = 30_000;
const HOST = "api.bench.svc.cluster.local";
const PATH = "/api/echo";

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

async function until<T>(what: string, child: BenchChild, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.process.exitCode !== null) throw new Error(`${child.name} exited:\n${child.output()}`);
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline)
      throw new Error(`${child.name}: ${what} after ${START_TIMEOUT_MS} ms:\n${child.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const printedReady = (child: BenchChild) =>
  until("not ready", child, async () => (/^ready$/m.test(child.output()) ? true : undefined));

/** One waypoint of the mesh: its Gateway (and service account) name, pod IP and Service VIP. */
interface WaypointSpec {
  gateway: string;
  ip: string;
  service: string;
  vip: string;
}

/**
 * The mesh: a client pod and the waypoint pods on node-a, the server pod on node-b, per waypoint one
 * Service bound to it (all select the server pod) with an HTTPRoute whose rules haproxyConfig()
 * mirrors.
 */
function meshManifests(ip: (c: number, d: number) => string, waypoints: readonly WaypointSpec[]): string {
  const perWaypoint = waypoints.map(
    (w) => `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: ${w.gateway}, namespace: bench }
spec: { gatewayClassName: istio-waypoint }
status: { addresses: [{ type: IPAddress, value: ${w.ip} }] }
---
apiVersion: v1
kind: Pod
metadata:
  name: ${w.gateway}-0
  namespace: bench
  labels: { gateway.networking.k8s.io/gateway-name: ${w.gateway}, istio.io/dataplane-mode: none }
spec: { nodeName: node-a, serviceAccountName: ${w.gateway} }
status: { podIP: ${w.ip} }
---
apiVersion: v1
kind: Service
metadata: { name: ${w.service}, namespace: bench, labels: { istio.io/use-waypoint: ${w.gateway} } }
spec:
  clusterIP: ${w.vip}
  selector: { app: server }
  ports: [{ name: http, port: ${SERVICE_PORT}, targetPort: ${BACKEND_PORT}, appProtocol: http }]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: ${w.service}, namespace: bench }
spec:
  parentRefs: [{ group: "", kind: Service, name: ${w.service}, port: ${SERVICE_PORT} }]
  rules:
    - matches: [{ path: { type: Exact, value: /healthz } }]
      backendRefs: [{ name: ${w.service}, port: ${SERVICE_PORT} }]
    - matches: [{ path: { type: PathPrefix, value: /static }, method: GET }]
      backendRefs: [{ name: ${w.service}, port: ${SERVICE_PORT} }]
    - matches: [{ path: { type: PathPrefix, value: /admin }, headers: [{ name: x-admin, value: "yes" }] }]
      backendRefs: [{ name: ${w.service}, port: ${SERVICE_PORT} }]
    - matches: [{ path: { type: PathPrefix, value: /api } }]
      backendRefs: [{ name: ${w.service}, port: ${SERVICE_PORT} }]
`,
  );
  return [
    `apiVersion: v1
kind: Namespace
metadata: { name: bench, labels: { istio.io/dataplane-mode: ambient } }
---
apiVersion: v1
kind: Pod
metadata: { name: client-0, namespace: bench, labels: { app: client } }
spec: { nodeName: node-a, serviceAccountName: client }
status: { podIP: ${ip(0, 1)} }
---
apiVersion: v1
kind: Pod
metadata: { name: server-0, namespace: bench, labels: { app: server } }
spec: { nodeName: node-b, serviceAccountName: server }
status: { podIP: ${ip(0, 2)} }
`,
    ...perWaypoint,
  ].join("---\n");
}

/**
 * haproxy in HTTP mode as the waypoint: mutual TLS 1.3 in (client certificates from the mesh CA),
 * the HTTPRoute's rules as ACLs on Host and path (404 when none matches, as the router answers),
 * mutual TLS 1.3 out to the server end with kept-alive backend connections.
 */
function haproxyConfig(listen: string, serverEnd: string, dir: string): string {
  return `${[
    "global",
    "  maxconn 4000",
    "  nbthread 1",
    "  ssl-server-verify required",
    "defaults",
    "  mode http",
    "  option http-keep-alive",
    "  timeout connect 5s",
    "  timeout client 120s",
    "  timeout server 120s",
    "  timeout http-keep-alive 120s",
    "frontend waypoint",
    `  bind ${listen} ssl crt ${join(dir, "waypoint.pem")} ca-file ${join(dir, "root.pem")} verify required ssl-min-ver TLSv1.3`,
    `  acl api_host hdr(host) -i ${HOST} ${HOST}:${SERVICE_PORT}`,
    "  acl healthz path /healthz",
    "  acl static path_beg /static",
    "  acl get method GET",
    "  acl admin path_beg /admin",
    "  acl admin_header req.hdr(x-admin) -m str yes",
    "  acl api path_beg /api",
    "  use_backend api if api_host healthz",
    "  use_backend api if api_host static get",
    "  use_backend api if api_host admin admin_header",
    "  use_backend api if api_host api",
    "  default_backend none",
    "backend none",
    "  http-request return status 404",
    "backend api",
    `  server pod ${serverEnd} ssl crt ${join(dir, "waypoint.pem")} ca-file ${join(dir, "root.pem")} verify required ssl-min-ver TLSv1.3`,
  ].join("\n")}\n`;
}

/** The waypoint CLI reads its routes from the manifests folder when it still takes `--mesh-dir`. */
function waypointTakesMeshDir(nodeArgs: readonly string[]): boolean {
  const help = spawnSync(process.execPath, [...nodeArgs, "--help"], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return `${help.stdout}`.includes("--mesh-dir");
}

/** Starts the backend, the mesh with the waypoint, haproxy, the node-https proxy and their ends. */
export async function startWaypointTopology(
  options: WaypointTopologyOptions = {},
): Promise<WaypointTopology> {
  const log = options.log ?? (() => {});
  const net = options.subnet ?? 78;
  const ip = (c: number, d: number) => `127.${net}.${c}.${d}`;
  const clientPodIp = ip(0, 1);
  const serverPodIp = ip(0, 2);
  const pin = options.pin ?? true;
  const proxyCpu = pin ? 1 : undefined;
  const loadCpu = pin ? 0 : undefined;
  const want = new Set(options.proxies ?? DEFAULT_WAYPOINT_PROXIES);
  const dir = await mkdtemp(join(tmpdir(), "ambient-waypoint-bench-"));
  removeOnExit(dir);
  const close = async () => {
    await stopAll();
    await rm(dir, { recursive: true, force: true });
    forgetTempDir(dir);
  };
  try {
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    const cacerts = ca.exportCacerts();
    const stateDir = join(dir, "mesh-state");
    await mkdir(join(stateDir, "ca"), { recursive: true });
    await writeFile(join(stateDir, "ca", "ca-cert.pem"), cacerts.caCertPem);
    await writeFile(join(stateDir, "ca", "ca-key.pem"), cacerts.caKeyPem, { mode: 0o600 });
    await writeFile(join(stateDir, "ca", "root-cert.pem"), cacerts.rootCertPem);
    await writeFile(join(dir, "root.pem"), cacerts.rootCertPem);
    for (const sa of ["client", "server", "waypoint"]) {
      const svid = await ca.issue({ spiffeId: `spiffe://cluster.local/ns/bench/sa/${sa}` });
      await writeFile(join(dir, `${sa}-cert.pem`), svid.certChainPem);
      await writeFile(join(dir, `${sa}-key.pem`), svid.privateKeyPem, { mode: 0o600 });
      await writeFile(join(dir, `${sa}.pem`), svid.certChainPem + svid.privateKeyPem, { mode: 0o600 });
    }

    // A plain TLS pair around a proxy that speaks mutual TLS: the client end takes h2load's plaintext
    // at `entry` and opens one connection per client connection to the proxy; the server end takes
    // the proxy's connections at `serverEnd` and relays to the backend.
    const tlsEnds = async (
      label: string,
      entry: { host: string; port: number },
      proxy: { host: string; port: number },
      serverEnd: { host: string; port: number },
    ): Promise<BenchChild[]> => {
      const relay = async (mode: "out" | "in", config: RelayConfig) => {
        const file = join(dir, `${label}-relay-${mode}.json`);
        await writeFile(file, JSON.stringify(config));
        const child = nodeScript(`${label} tls ${mode}`, here("./tls-relay.ts"), [file], loadCpu);
        await printedReady(child);
        return child;
      };
      const tlsIn = await relay("in", {
        mode: "in",
        routes: [
          {
            listenHost: serverEnd.host,
            listenPort: serverEnd.port,
            toHost: serverPodIp,
            toPort: BACKEND_PORT,
          },
        ],
        certFile: join(dir, "server-cert.pem"),
        keyFile: join(dir, "server-key.pem"),
        caFile: join(dir, "root.pem"),
      });
      const tlsOut = await relay("out", {
        mode: "out",
        routes: [{ listenHost: entry.host, listenPort: entry.port, toHost: proxy.host, toPort: proxy.port }],
        certFile: join(dir, "client-cert.pem"),
        keyFile: join(dir, "client-key.pem"),
        caFile: join(dir, "root.pem"),
      });
      return [tlsOut, tlsIn];
    };

    const backend = nodeScript(
      "http backend",
      here("./waypoint-backend.ts"),
      [serverPodIp, String(BACKEND_PORT)],
      loadCpu,
    );
    await printedReady(backend);
    const paths: WaypointPath[] = [];

    const specs: (WaypointSpec & { name: WaypointProxyName; snapshot?: string })[] = [];
    if (want.has("waypoint")) {
      specs.push({ name: "waypoint", gateway: "waypoint", ip: ip(0, 6), service: "api", vip: ip(0, 100) });
    }
    if (options.baseline !== undefined) {
      specs.push({
        name: "waypoint-before",
        gateway: "waypoint-before",
        ip: ip(0, 7),
        service: "api-before",
        vip: ip(0, 101),
        snapshot: options.baseline,
      });
    }
    if (specs.length > 0) {
      const cpIp = ip(1, 10);
      const meshDir = join(dir, "mesh");
      await mkdir(meshDir);
      await writeFile(join(meshDir, "bench.yaml"), meshManifests(ip, specs));
      const cp = nodeScript("control plane", join(repoRoot, "examples/control-plane/src/main.ts"), [
        "--mesh-dir",
        meshDir,
        "--state-dir",
        stateDir,
        "--listen",
        `${cpIp}:15012`,
        "--admin",
        `${cpIp}:15014`,
        "--pod-cidr",
        `127.${net}.0.0/24`,
        "--log-level",
        "warn",
      ]);
      await waitForPort(cpIp, 15012, START_TIMEOUT_MS, cp);
      await until("no node token", cp, () => readFile(join(stateDir, "tokens", "node-a.jwt"), "utf8"));
      const shim = async (name: string, config: HboneShimConfig) => {
        await writeFile(join(dir, `${name}.json`), JSON.stringify(config));
        const child = nodeScript(
          `waypoint ${name}`,
          here("./waypoint-hbone-shim.ts"),
          [join(dir, `${name}.json`)],
          loadCpu,
        );
        await printedReady(child);
        return child;
      };
      // One server end for every waypoint: the slices take turns, so its CPU per slice is one path's.
      const serverEnd = await shim("hbone-in", {
        mode: "in",
        listenHost: serverPodIp,
        listenPort: HBONE_PORT,
        certFile: join(dir, "server-cert.pem"),
        keyFile: join(dir, "server-key.pem"),
        caFile: join(dir, "root.pem"),
      });
      for (const [index, spec] of specs.entries()) {
        // The current waypoint from this tree's build; a snapshot's from its build when it has one (the
        // hook then redirects the bundle's package imports to the snapshot's copies), else from its
        // sources under tsx, the hook after tsx so that it resolves first.
        const start = appEntry("waypoint", spec.snapshot ?? repoRoot, repoRoot);
        const main = start.nodeArgs[start.nodeArgs.length - 1] as string;
        const loaders = [
          ...start.nodeArgs.slice(start.startFlags.length, -1),
          ...(spec.snapshot === undefined ? [] : ["--import", baselineHookImport(spec.snapshot, repoRoot)]),
        ];
        // The Node flags of its `pnpm start`, or for the current waypoint those given in their place.
        const startFlags =
          spec.snapshot === undefined && options.currentWaypointNodeFlags !== undefined
            ? options.currentWaypointNodeFlags
            : start.startFlags;
        const flags = [...(options.waypointNodeFlags ?? []), ...startFlags, ...loaders];
        const waypoint = startChild(
          spec.name,
          process.execPath,
          [
            ...flags,
            main,
            "--name",
            spec.gateway,
            "--namespace",
            "bench",
            "--ip",
            spec.ip,
            "--node",
            "node-a",
            "--control-plane",
            `${cpIp}:15012`,
            "--state-dir",
            stateDir,
            ...(waypointTakesMeshDir([...loaders, main]) ? ["--mesh-dir", meshDir] : []),
            ...(options.accessLog ? [] : ["--no-access-log"]),
            "--log-level",
            options.accessLog ? "info" : "warn",
          ],
          {
            ...(proxyCpu === undefined ? {} : { cpu: proxyCpu }),
          },
        );
        await until("not ready", waypoint, async () => {
          const res = await fetch(`http://${spec.ip}:15021/healthz/ready`, {
            signal: AbortSignal.timeout(1000),
          });
          return res.status === 200 ? true : undefined;
        });
        const entry = { host: ip(5, 1 + index), port: ENTRY_PORT };
        const clientEnd = await shim(`hbone-out-${spec.gateway}`, {
          mode: "out",
          listenHost: entry.host,
          listenPort: entry.port,
          waypoint: {
            address: `${spec.ip}:${HBONE_PORT}`,
            authority: `${spec.vip}:${SERVICE_PORT}`,
            identity: `spiffe://cluster.local/ns/bench/sa/${spec.gateway}`,
          },
          sourceAddress: clientPodIp,
          certFile: join(dir, "client-cert.pem"),
          keyFile: join(dir, "client-key.pem"),
          caFile: join(dir, "root.pem"),
        });
        paths.push({ name: spec.name, proxy: waypoint, ends: [clientEnd, serverEnd], entry });
        log(
          `${spec.name} ${spec.ip} (${start.describe}${spec.snapshot === undefined ? "" : ` from ${spec.snapshot}`}): ${entry.host}:${entry.port} -> HBONE -> waypoint -> HBONE -> ${serverPodIp}`,
        );
      }
    }

    if (want.has("haproxy")) {
      const proxyIp = ip(6, 10);
      const serverEnd = { host: ip(6, 2), port: 15443 };
      const entry = { host: ip(6, 1), port: ENTRY_PORT };
      await writeFile(
        join(dir, "haproxy-waypoint.cfg"),
        haproxyConfig(`${proxyIp}:15443`, `${serverEnd.host}:${serverEnd.port}`, dir),
      );
      const haproxy = startChild(
        "haproxy (http)",
        "haproxy",
        ["-db", "-f", join(dir, "haproxy-waypoint.cfg")],
        {
          ...(proxyCpu === undefined ? {} : { cpu: proxyCpu }),
        },
      );
      await waitForPort(proxyIp, 15443, START_TIMEOUT_MS, haproxy);
      const ends = await tlsEnds("haproxy", entry, { host: proxyIp, port: 15443 }, serverEnd);
      paths.push({ name: "haproxy", proxy: haproxy, ends, entry });
      log(`haproxy ${proxyIp}: ${entry.host}:${entry.port} -> mTLS -> haproxy -> mTLS -> ${serverEnd.host}`);
    }

    if (want.has("node-https")) {
      // haproxy's job in node:https, with the same certificates, routes and kind of ends, and the
      // V8 flags of the waypoint's `pnpm start` so that the two Node proxies run the same runtime.
      const proxyIp = ip(7, 10);
      const serverEnd = { host: ip(7, 2), port: 15443 };
      const entry = { host: ip(7, 1), port: ENTRY_PORT };
      const config: NodeHttpsProxyConfig = {
        listenHost: proxyIp,
        listenPort: 15443,
        upstreamHost: serverEnd.host,
        upstreamPort: serverEnd.port,
        routeHost: HOST,
        certFile: join(dir, "waypoint-cert.pem"),
        keyFile: join(dir, "waypoint-key.pem"),
        caFile: join(dir, "root.pem"),
      };
      await writeFile(join(dir, "node-https-proxy.json"), JSON.stringify(config));
      const proxy = nodeScript(
        "node-https",
        here("./node-https-proxy.ts"),
        [join(dir, "node-https-proxy.json")],
        proxyCpu,
        startFlags(join(repoRoot, "examples/waypoint/package.json")),
      );
      await printedReady(proxy);
      const ends = await tlsEnds("node-https", entry, { host: proxyIp, port: 15443 }, serverEnd);
      paths.push({ name: "node-https", proxy, ends, entry });
      log(
        `node-https ${proxyIp}: ${entry.host}:${entry.port} -> mTLS -> node:https proxy -> mTLS -> ${serverEnd.host}`,
      );
    }
    return { paths, backend, host: HOST, path: PATH, close };
  } catch (err) {
    await close();
    throw err;
  }
}
