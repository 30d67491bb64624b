// In-pod capture end to end, as root on Linux: two pod network namespaces joined by a veth pair, the
// in-pod capture rules inside each, both pods handed to one ztunnel over ZDS, and unmodified clients
// run with `ip netns exec`. Everything lives in namespaces this test creates and removes.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readlinkSync, rmSync, statSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import type { AddressInfo, Server, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { bindInNetns, closeFd, connectFromNetns, listenInNetns, openNetns } from "@ambient/netns";
import { createZdsServer, type ZdsServer } from "@ambient/netns/zds";
import { staticStrictAuthorization } from "@ambient/policy";
import type { Workload } from "@ambient/xds";
import {
  INPOD_MARK,
  inPodReplyRouting,
  inPodTcpCapture,
  type RunningZtunnel,
  startZtunnel,
  type ZtunnelOptions,
} from "../src/index.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import { runInNetns } from "./fixtures.js";

function has(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).status === 0;
}

/** Why this suite cannot run here, or false. */
function skipReason(): string | false {
  if (process.platform !== "linux") return "in-pod capture needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "in-pod capture needs root (setns, iptables, ip netns)";
  if (!has("ip", ["-V"])) return "iproute2 (ip) is not installed";
  if (!has("iptables", ["--version"])) return "iptables is not installed";
  if (!has("ss", ["-V"])) return "ss (iproute2) is not installed";
  return false;
}

const skip = skipReason();
if (skip !== false) console.log(`# in-pod capture tests skipped: ${skip}`);

const run = (...args: string[]): string =>
  execFileSync(args[0] as string, args.slice(1), { encoding: "utf8" });
const inNs = (ns: string, ...args: string[]): string => run("ip", "netns", "exec", ns, ...args);

/**
 * An unmodified HTTP client in `ns`: curl where it is installed, else a Node one-liner (no proxy
 * settings either way; only the pod's iptables rules send it through the ztunnel).
 */
const hasCurl = has("curl", ["--version"]);
const NODE_GET =
  'const r=require("http").get(process.argv[1],(res)=>{let b="";res.on("data",(c)=>{b+=c});res.on("end",()=>{process.stdout.write(b);process.exit(0)})});r.setTimeout(5000,()=>r.destroy(new Error("timeout")));r.on("error",(e)=>{process.stderr.write(String(e.code||e.message));process.exit(7)})';
function httpGet(ns: string, url: string): Promise<{ code: number | null; out: string }> {
  return runInNetns(
    ns,
    hasCurl ? ["curl", "-sS", "--max-time", "5", url] : [process.execPath, "-e", NODE_GET, url],
  );
}

/** istio-cni's in-pod TCP capture and reply routing, as the proxy's module spells them. */
function installCaptureRules(ns: string, podIp: string): void {
  for (const command of [...inPodTcpCapture(podIp), ...inPodReplyRouting()]) inNs(ns, ...command);
}

function bytes(address: string): Uint8Array {
  return Uint8Array.from(address.split(".").map(Number));
}

function workload(name: string, address: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `Kubernetes//Pod/default/${name}`,
    name,
    namespace: "default",
    addresses: [bytes(address)],
    hostname: "",
    network: "",
    tunnelProtocol: "HBONE",
    trustDomain: "",
    serviceAccount: name,
    node: "node-a",
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

/** Listening and established TCP sockets in a namespace (TIME-WAIT left out: no descriptor holds it). */
function tcpSockets(ns: string): string[] {
  return inNs(ns, "ss", "-Htan", "state", "listening", "state", "established", "state", "syn-sent")
    .split("\n")
    .filter((l) => l.trim() !== "");
}

/** Descriptors of this process that hold the namespace `ns` open (opened by path, or received). */
function netnsRefs(ns: string): number {
  const ino = statSync(`/var/run/netns/${ns}`).ino;
  let n = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target === `net:[${ino}]` || target.endsWith(`/netns/${ns}`)) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/**
 * TCP_NODELAY of this process's own socket with the kernel inode `ino` (from `ss -e`), read by a
 * python3 child that is handed a duplicate of the descriptor (Node cannot call getsockopt).
 */
function noDelayOfInode(ino: string): number {
  const fd = readdirSync("/proc/self/fd").find((n) => {
    try {
      return readlinkSync(`/proc/self/fd/${n}`) === `socket:[${ino}]`;
    } catch {
      return false;
    }
  });
  assert.ok(fd !== undefined, `socket inode ${ino} is one of this process's descriptors`);
  const read = spawnSync(
    "/usr/bin/python3",
    [
      "-c",
      "import socket; print(socket.socket(fileno=3).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))",
    ],
    { stdio: ["ignore", "pipe", "pipe", Number(fd)], encoding: "utf8" },
  );
  assert.equal(read.status, 0, read.stderr);
  return Number(read.stdout.trim());
}

/** Resolves when the socket has closed, however it ended (events.once would reject on a reset). */
function closedOf(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.once("close", () => resolve()));
}

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The value of a metric without labels in a Prometheus text exposition, or undefined. */
function unlabelled(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

function counter(text: string, name: string, match: Record<string, string>): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(match).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

/** node-a's in-pod ztunnel, a client of the node agent at `zdsPath`, on ephemeral node ports. */
async function startNodeAZtunnel(
  cp: TestControlPlane,
  zdsPath: string,
  logger?: ZtunnelOptions["logger"],
): Promise<RunningZtunnel> {
  return startZtunnel({
    nodeName: "node-a",
    nodeIp: "127.0.0.1",
    controlPlaneAddress: cp.address,
    rootCertPem: cp.rootCertPem,
    token: await cp.tokenFor("node-a"),
    ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
    zdsSocketPath: zdsPath,
    inPod: { workloadWaitMs: 1000 },
    ...(logger === undefined ? {} : { logger }),
  });
}

describe("in-pod capture over ZDS", { skip, timeout: 60_000 }, () => {
  const id = Math.random().toString(36).slice(2, 8);
  // `extra` is a third pod with loopback only: enough to be served, and to be dropped by a snapshot.
  // `late` is a pod added before xDS has its workload, linked to the sleep pod by a second veth.
  const ns = {
    sleep: `amb-${id}-sleep`,
    echo: `amb-${id}-echo`,
    extra: `amb-${id}-extra`,
    late: `amb-${id}-late`,
  };
  // A private range that exists only inside the two namespaces.
  const net = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}`;
  const net2 = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 256)}`;
  const ip = { sleep: `${net}.11`, echo: `${net}.12`, extra: `${net}.13`, late: `${net2}.14` };
  const created: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "ambient-zds-"));
  const zdsPath = join(dir, "ztunnel.sock");
  const logs: string[] = [];
  const logger = {
    debug: () => {},
    info: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    warn: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    error: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
  };
  let cp: TestControlPlane | undefined;
  let zds: ZdsServer | undefined;
  let ztunnel: RunningZtunnel | undefined;
  const apps: Server[] = [];
  let allowedPort = 0;
  let deniedPort = 0;
  let latePort = 0;
  let lateApp: Server | undefined;
  let fdsBefore = 0;

  before(async () => {
    for (const name of [ns.sleep, ns.echo, ns.extra, ns.late]) {
      run("ip", "netns", "add", name);
      created.push(name);
      inNs(name, "ip", "link", "set", "lo", "up");
    }
    run(
      "ip",
      "-n",
      ns.sleep,
      "link",
      "add",
      "eth0",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns.echo,
    );
    for (const [name, address] of [
      [ns.sleep, ip.sleep],
      [ns.echo, ip.echo],
    ] as const) {
      run("ip", "-n", name, "addr", "add", `${address}/24`, "dev", "eth0");
      run("ip", "-n", name, "link", "set", "eth0", "up");
      installCaptureRules(name, address);
    }
    run(
      "ip",
      "-n",
      ns.sleep,
      "link",
      "add",
      "eth1",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns.late,
    );
    run("ip", "-n", ns.sleep, "addr", "add", `${net2}.1/24`, "dev", "eth1");
    run("ip", "-n", ns.sleep, "link", "set", "eth1", "up");
    run("ip", "-n", ns.late, "addr", "add", `${ip.late}/24`, "dev", "eth0");
    run("ip", "-n", ns.late, "link", "set", "eth0", "up");
    installCaptureRules(ns.late, ip.late);
    const lateNs = openNetns(`/var/run/netns/${ns.late}`);
    try {
      lateApp = createHttpServer((_req, res) => res.end("late app\n"));
      await listenInNetns(lateNs, { host: ip.late, port: 0, server: lateApp });
      latePort = (lateApp.address() as AddressInfo).port;
    } finally {
      lateNs.close();
    }

    // The apps in the echo pod: plain HTTP servers that know nothing of the mesh.
    const echoNs = openNetns(`/var/run/netns/${ns.echo}`);
    try {
      for (const body of ["allowed", "denied"]) {
        const app = createHttpServer((req, res) =>
          res.end(`${body} from echo, peer ${req.socket.remoteAddress}\n`),
        );
        await listenInNetns(echoNs, { host: ip.echo, port: 0, server: app });
        apps.push(app);
      }
    } finally {
      echoNs.close();
    }
    allowedPort = (apps[0]?.address() as AddressInfo).port;
    deniedPort = (apps[1]?.address() as AddressInfo).port;

    cp = await startTestControlPlane();
    const strict = staticStrictAuthorization();
    cp.setAuthorization(strict);
    cp.setWorkload(workload("sleep", ip.sleep));
    cp.setWorkload(workload("extra", ip.extra));
    cp.setWorkload(
      workload("echo", ip.echo, { authorizationPolicies: [`${strict.namespace}/${strict.name}`] }),
    );
    cp.applyPolicy(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: sleep-to-allowed-port, namespace: default }
spec:
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/default/sa/sleep"] } }]
    to: [{ operation: { ports: ["${allowedPort}"] } }]
`);
    zds = createZdsServer({ path: zdsPath });
    await zds.listen();
    fdsBefore = readdirSync("/proc/self/fd").length;
    ztunnel = await startNodeAZtunnel(cp, zdsPath, logger);
    await ztunnel.ready;
    for (const name of ["sleep", "echo", "extra"] as const) {
      const acked = await zds.addWorkload({
        uid: `pod-uid-${name}`,
        workloadInfo: { name, namespace: "default", serviceAccount: name },
        netns: openNetns(`/var/run/netns/${ns[name]}`),
      });
      assert.equal(acked, true, `ZDS Add of ${name} was acknowledged`);
    }
  });

  after(async () => {
    await ztunnel?.close().catch(() => {});
    zds?.close();
    await cp?.close().catch(() => {});
    for (const app of apps) app.close();
    lateApp?.close();
    // Deleting a namespace takes its veth end, addresses and iptables rules with it.
    for (const name of created) spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A captured connection from the sleep pod (unmarked: it goes through 15001) to the echo pod's
   * allowed app, open after one request was answered.
   */
  const capturedRequest = async (): Promise<Socket> => {
    const sleepNs = openNetns(`/var/run/netns/${ns.sleep}`);
    let socket: Socket;
    try {
      socket = connectFromNetns(sleepNs, { host: ip.echo, port: allowedPort });
    } finally {
      sleepNs.close();
    }
    socket.on("error", () => {});
    await once(socket, "connect");
    socket.write(`GET / HTTP/1.1\r\nhost: ${ip.echo}\r\n\r\n`);
    await once(socket, "data");
    return socket;
  };

  it("serves each pod inside its namespace, listeners marked 0x539", () => {
    const pods = ztunnel?.configDump().inPodPods ?? [];
    assert.deepEqual(pods.map((p) => [p.uid, p.ip, p.identity]).sort(), [
      ["pod-uid-echo", ip.echo, "spiffe://cluster.local/ns/default/sa/echo"],
      ["pod-uid-extra", ip.extra, "spiffe://cluster.local/ns/default/sa/extra"],
      ["pod-uid-sleep", ip.sleep, "spiffe://cluster.local/ns/default/sa/sleep"],
    ]);
    for (const name of [ns.sleep, ns.echo, ns.extra]) {
      const listening = inNs(name, "ss", "-Htln").split("\n").join(" ");
      for (const port of [15001, 15006, 15008])
        assert.match(listening, new RegExp(`0\\.0\\.0\\.0:${port}\\b`));
      const marked = inNs(name, "ss", "-Htlne", "sport", "= :15001");
      assert.match(marked, /fwmark:0x539/, `the 15001 listener carries the mark: ${marked}`);
    }
  });

  it("lets a second ztunnel bind the pod's ports beside its own (SO_REUSEPORT, as in an upgrade)", async () => {
    // istio-cni hands every pod to the newest ztunnel while the one it replaces (maxSurge 1) still
    // serves them: the newcomer's listeners must bind the same ports in the same namespace.
    const pod = openNetns(`/var/run/netns/${ns.sleep}`);
    const opened: Server[] = [];
    try {
      for (const port of [15001, 15006, 15008]) {
        opened.push(await listenInNetns(pod, { host: "0.0.0.0", port, mark: INPOD_MARK, reusePort: true }));
      }
      opened.push(await listenInNetns(pod, { host: "127.0.0.1", port: 15053, reusePort: true }));
      const udp = bindInNetns(pod, { host: "127.0.0.1", port: 15053, reusePort: true });
      closeFd(udp);
    } finally {
      pod.close();
      for (const server of opened) server.close();
    }
  });

  it("takes connections istio-cni's TPROXY rules capture (IP_TRANSPARENT listeners)", async (t) => {
    // istio-cni captures inbound with TPROXY in mangle PREROUTING; the kernel hands such a packet
    // only to a transparent listener and drops it otherwise.
    const rule = [
      "PREROUTING",
      "-p",
      "tcp",
      "--dport",
      "15008",
      "-m",
      "mark",
      "!",
      "--mark",
      `0x${INPOD_MARK.toString(16)}/0xfff`,
      "-j",
      "TPROXY",
      "--on-port",
      "15008",
      "--tproxy-mark",
      "0x111/0xfff",
    ];
    const insert = ["netns", "exec", ns.echo, "iptables", "-w", "-t", "mangle", "-I", ...rule];
    if (spawnSync("ip", insert, { stdio: "ignore" }).status !== 0) {
      t.skip("iptables TPROXY target unavailable");
      return;
    }
    const sleepNs = openNetns(`/var/run/netns/${ns.sleep}`);
    let socket: Socket;
    try {
      // Marked, so the sleep pod's own capture lets it out unchanged.
      socket = connectFromNetns(sleepNs, { host: ip.echo, port: 15008, mark: INPOD_MARK });
    } finally {
      sleepNs.close();
    }
    socket.on("error", () => {});
    try {
      let timer: NodeJS.Timeout | undefined;
      const connected = await Promise.race([
        once(socket, "connect").then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), 5000);
        }),
      ]);
      clearTimeout(timer);
      assert.ok(connected, "the TPROXY-captured SYN reached the HBONE listener");
    } finally {
      socket.destroy();
      inNs(ns.echo, "iptables", "-w", "-t", "mangle", "-D", ...rule);
    }
  });

  it("counts its in-pod proxies under Istio's ztunnel names", async () => {
    const metrics = (await ztunnel?.metricsText()) ?? "";
    assert.equal(unlabelled(metrics, "istio_inpod_active_proxy_count"), 3);
    assert.equal(unlabelled(metrics, "istio_inpod_pending_proxy_count"), 0);
    assert.equal(unlabelled(metrics, "istio_inpod_proxies_started_total"), 3);
    assert.equal(unlabelled(metrics, "istio_inpod_proxies_stopped_total"), 0);
  });

  it("an unmodified client (curl) in the sleep pod reaches echo over HBONE with both identities", async () => {
    const { code, out } = await httpGet(ns.sleep, `http://${ip.echo}:${allowedPort}/`);
    assert.equal(code, 0, out);
    // The app sees the connection from the calling pod's address (original source), though the echo
    // pod's proxy connected it.
    assert.match(out, new RegExp(`^allowed from echo, peer ${ip.sleep.replaceAll(".", "\\.")}`));
    const metrics = (await ztunnel?.metricsText()) ?? "";
    const labels = {
      source_principal: "spiffe://cluster.local/ns/default/sa/sleep",
      destination_principal: "spiffe://cluster.local/ns/default/sa/echo",
      connection_security_policy: "mutual_tls",
    };
    assert.ok(counter(metrics, "istio_tcp_connections_opened_total", { ...labels, reporter: "source" }) >= 1);
    assert.ok(
      counter(metrics, "istio_tcp_connections_opened_total", { ...labels, reporter: "destination" }) >= 1,
    );
  });

  it("refuses a call the policy does not allow", async () => {
    const { code, out } = await httpGet(ns.sleep, `http://${ip.echo}:${deniedPort}/`);
    assert.notEqual(code, 0, out);
    assert.doesNotMatch(out, /denied from echo/);
    await until("the denial log", () =>
      logs.some((l) => l.startsWith("denied by default/sleep-to-allowed-port")),
    );
  });

  it("refuses plaintext into the STRICT echo pod, from a client outside the mesh", async () => {
    // Marked 0x539, the connection skips the sleep pod's capture: plain TCP from outside the mesh.
    const sleepNs = openNetns(`/var/run/netns/${ns.sleep}`);
    let socket: Socket;
    try {
      socket = connectFromNetns(sleepNs, { host: ip.echo, port: allowedPort, mark: INPOD_MARK });
    } finally {
      sleepNs.close();
    }
    const got: Buffer[] = [];
    socket.on("data", (c: Buffer) => got.push(c));
    socket.on("error", () => {});
    socket.once("connect", () => socket.write(`GET / HTTP/1.1\r\nhost: ${ip.echo}\r\n\r\n`));
    await closedOf(socket);
    assert.equal(Buffer.concat(got).toString(), "", "nothing from the app");
    await until("the STRICT denial log", () =>
      logs.some((l) => l.startsWith("denied by istio-system/istio_converted_static_strict")),
    );
  });

  it("refuses connections to the proxy's own ports in a pod before any policy or dial", async () => {
    // A dial to the pod's 15006 or 15001 would reach the proxy's own listener, which would take it
    // again: refused as Istio's illegal ports, whether it arrives in a tunnel or as plaintext.
    const sleepNs = openNetns(`/var/run/netns/${ns.sleep}`);
    const sockets: Socket[] = [];
    try {
      // Captured: over HBONE to the echo pod's ztunnel, CONNECT echo:15006.
      sockets.push(connectFromNetns(sleepNs, { host: ip.echo, port: 15006 }));
      // Marked, so not captured: plaintext into the echo pod's capture, original destination 15001.
      sockets.push(connectFromNetns(sleepNs, { host: ip.echo, port: 15001, mark: INPOD_MARK }));
    } finally {
      sleepNs.close();
    }
    for (const socket of sockets) {
      socket.on("error", () => {});
      socket.once("connect", () => socket.write("hello"));
    }
    await Promise.all(sockets.map(closedOf));
    await until("both refusals in the log", () =>
      [`port 15006 is the proxy's own`, "destination is the proxy itself"].every((reason) =>
        logs.some((l) => l.includes(reason)),
      ),
    );
    assert.ok(
      !logs.some((l) => l.includes(`${ip.echo}:15006`) && l.startsWith("denied by")),
      logs.join("\n"),
    );
  });

  it("acknowledges a pod xDS does not know yet and serves a connection that came before its workload", async () => {
    // istio-cni adds a pod before it has an address, so before xDS can have its workload: the add is
    // acknowledged with the listeners open, and what connects meanwhile waits for the workload.
    const acked = await zds?.addWorkload({
      uid: "pod-uid-late",
      workloadInfo: { name: "late", namespace: "other", serviceAccount: "late" },
      netns: openNetns(`/var/run/netns/${ns.late}`),
    });
    assert.equal(acked, true, "ZDS Add of a pod without workload was acknowledged");
    assert.equal(
      ztunnel?.configDump().inPodPods.some((p) => p.uid === "pod-uid-late"),
      false,
      "not served yet",
    );
    const listening = tcpSockets(ns.late).filter((l) => l.startsWith("LISTEN"));
    for (const port of [15001, 15006, 15008]) {
      assert.ok(
        listening.some((l) => l.includes(`:${port} `)),
        `${port} listens: ${listening.join(" | ")}`,
      );
    }
    assert.ok(
      logs.some((l) => l.startsWith("in-pod proxy waiting for its workload") && l.includes("pod-uid-late")),
      logs.join("\n"),
    );

    // Plaintext from the sleep pod (marked: not captured there), captured in the late pod to 15006.
    const sleepNs = openNetns(`/var/run/netns/${ns.sleep}`);
    let socket: Socket;
    try {
      socket = connectFromNetns(sleepNs, { host: ip.late, port: latePort, mark: INPOD_MARK });
    } finally {
      sleepNs.close();
    }
    const got: Buffer[] = [];
    socket.on("data", (c: Buffer) => got.push(c));
    socket.on("error", () => {});
    await once(socket, "connect");
    socket.write(`GET / HTTP/1.1\r\nhost: ${ip.late}\r\n\r\n`);
    await until("the connection to reach the late pod's proxy", () =>
      tcpSockets(ns.late).some((l) => l.startsWith("ESTAB") && l.includes(`${ip.late}:15006 `)),
    );

    cp?.setWorkload(workload("late", ip.late, { namespace: "other", serviceAccount: "late" }));
    await until("the app's answer", () => Buffer.concat(got).toString().includes("late app"));
    assert.match(Buffer.concat(got).toString(), /^HTTP\/1\.1 200 /);
    assert.deepEqual(
      ztunnel?.configDump().inPodPods.find((p) => p.uid === "pod-uid-late"),
      {
        uid: "pod-uid-late",
        ip: ip.late,
        identity: "spiffe://cluster.local/ns/other/sa/late",
        workload: "other/late",
      },
    );
    const closed = closedOf(socket);
    socket.destroy();
    await closed;
    await zds?.deleteWorkload("pod-uid-late");
    await until("late's listeners to close", () => tcpSockets(ns.late).every((l) => !/:1500[168] /.test(l)));
    assert.equal(netnsRefs(ns.late), 0);
  });

  it("closes the connections a pod holds when it is deleted before its workload came", async () => {
    const acked = await zds?.addWorkload({
      uid: "pod-uid-never",
      workloadInfo: { name: "never", namespace: "other", serviceAccount: "never" },
      netns: openNetns(`/var/run/netns/${ns.late}`),
    });
    assert.equal(acked, true);
    const sleepNs = openNetns(`/var/run/netns/${ns.sleep}`);
    let socket: Socket;
    try {
      socket = connectFromNetns(sleepNs, { host: ip.late, port: latePort, mark: INPOD_MARK });
    } finally {
      sleepNs.close();
    }
    const got: Buffer[] = [];
    socket.on("data", (c: Buffer) => got.push(c));
    socket.on("error", () => {});
    const closed = closedOf(socket);
    await once(socket, "connect");
    socket.write(`GET / HTTP/1.1\r\nhost: ${ip.late}\r\n\r\n`);
    await until("the connection to reach the pod's proxy", () =>
      tcpSockets(ns.late).some((l) => l.startsWith("ESTAB") && l.includes(`${ip.late}:15006 `)),
    );
    await zds?.deleteWorkload("pod-uid-never");
    await closed;
    assert.equal(Buffer.concat(got).toString(), "", "nothing from the app");
    await until("the pod's listeners to close", () =>
      tcpSockets(ns.late).every((l) => !/:1500[168] /.test(l)),
    );
    assert.equal(netnsRefs(ns.late), 0);
  });

  it("a pod deleted over ZDS while its certificate is on the way leaves no certificate behind", async () => {
    const identity = "spiffe://cluster.local/ns/other/sa/brief";
    const release = cp?.holdCertificates() ?? (() => {});
    try {
      const asked = cp?.clusterIdsSeen.ca.length ?? 0;
      cp?.setWorkload(workload("brief", ip.late, { namespace: "other", serviceAccount: "brief" }));
      const acked = await zds?.addWorkload({
        uid: "pod-uid-brief",
        workloadInfo: { name: "brief", namespace: "other", serviceAccount: "brief" },
        netns: openNetns(`/var/run/netns/${ns.late}`),
      });
      assert.equal(acked, true);
      await until(
        "its certificate request to reach the CA",
        () => (cp?.clusterIdsSeen.ca.length ?? 0) > asked,
      );
      await zds?.deleteWorkload("pod-uid-brief");
    } finally {
      release();
    }
    // The answer to the request in flight comes after the pod left: the certificate is not kept.
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(
      ztunnel?.configDump().certificates.filter((c) => c.identity === identity),
      [],
      "no certificate kept (or renewed) for a pod that is gone",
    );
    cp?.removeWorkload("Kubernetes//Pod/default/brief");
    await until("brief's listeners to close", () => tcpSockets(ns.late).every((l) => !/:1500[168] /.test(l)));
  });

  it("NACKs a pod whose listeners cannot be opened, is not ready while it is pending, and serves it on a retry", async () => {
    assert.equal(ztunnel?.isReady(), true);
    // Something in the pod holds 15006 without SO_REUSEPORT (a proxy that is still going away).
    const lateNs = openNetns(`/var/run/netns/${ns.late}`);
    let blocker: Server;
    try {
      blocker = await listenInNetns(lateNs, { host: "0.0.0.0", port: 15006 });
    } finally {
      lateNs.close();
    }
    await assert.rejects(
      zds?.addWorkload({
        uid: "pod-uid-blocked",
        workloadInfo: { name: "blocked", namespace: "other", serviceAccount: "blocked" },
        netns: openNetns(`/var/run/netns/${ns.late}`),
      }) ?? Promise.resolve(),
      (e: unknown) =>
        e instanceof Error && "code" in e && e.code === "ERR_ZDS_NACK" && /EADDRINUSE/.test(e.message),
    );
    assert.equal(ztunnel?.isReady(), false, "not ready while a pod is pending");
    assert.equal(ztunnel?.configDump().ready, false);
    assert.ok(netnsRefs(ns.late) > 0, "the pod's namespace is kept for the retry");
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    // The retry (every 5 s) opens the listeners, and the ztunnel is ready again.
    await until(
      "the blocked pod's listeners",
      () =>
        [15001, 15006, 15008].every((port) =>
          tcpSockets(ns.late).some((l) => l.startsWith("LISTEN") && l.includes(`:${port} `)),
        ),
      15_000,
    );
    await until("the ztunnel to be ready again", () => ztunnel?.isReady() === true);
    assert.deepEqual(await zds?.deleteWorkload("pod-uid-blocked"), []);
    await until("the pod's listeners to close", () =>
      tcpSockets(ns.late).every((l) => !/:1500[168] /.test(l)),
    );
    assert.equal(netnsRefs(ns.late), 0);
  });

  it("a pod NACKed for its listeners and then deleted over ZDS leaves nothing open and is not tried again", async () => {
    const lateNs = openNetns(`/var/run/netns/${ns.late}`);
    let blocker: Server;
    try {
      blocker = await listenInNetns(lateNs, { host: "0.0.0.0", port: 15001 });
    } finally {
      lateNs.close();
    }
    await assert.rejects(
      zds?.addWorkload({
        uid: "pod-uid-refused",
        workloadInfo: { name: "refused", namespace: "other", serviceAccount: "refused" },
        netns: openNetns(`/var/run/netns/${ns.late}`),
      }) ?? Promise.resolve(),
      (e: unknown) => e instanceof Error && "code" in e && e.code === "ERR_ZDS_NACK",
    );
    assert.equal(ztunnel?.isReady(), false);
    // The delete reaches the pod though its add was refused: its retries end with it.
    assert.deepEqual(await zds?.deleteWorkload("pod-uid-refused"), []);
    assert.equal(netnsRefs(ns.late), 0, "no descriptor holds the deleted pod's namespace");
    assert.equal(ztunnel?.isReady(), true, "nothing pending any more");
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    assert.deepEqual(
      tcpSockets(ns.late).filter((l) => /:1500[168] /.test(l)),
      [],
      "nothing of the proxy's is open in the pod",
    );
  });

  it("after the node agent restarts, its snapshot keeps the pods it lists and drops the others", async () => {
    assert.equal(ztunnel?.isReady(), true);
    zds?.close();
    // Without the node agent it does not see pods come and go: not ready until its next snapshot.
    await until("the ztunnel to report not ready", () => ztunnel?.isReady() === false);
    // The new agent knows sleep and echo (same namespaces), not extra.
    const agent = createZdsServer({ path: zdsPath });
    zds = agent;
    for (const name of ["sleep", "echo"] as const) {
      const sent = await agent.addWorkload({
        uid: `pod-uid-${name}`,
        workloadInfo: { name, namespace: "default", serviceAccount: name },
        netns: openNetns(`/var/run/netns/${ns[name]}`),
      });
      assert.equal(sent, false, "no ztunnel connected yet: sent with the snapshot");
    }
    agent.listen();
    await until("extra to be dropped", () =>
      (ztunnel?.configDump().inPodPods ?? []).every((p) => p.uid !== "pod-uid-extra"),
    );
    await until("the ztunnel to be ready again", () => ztunnel?.isReady() === true);
    assert.deepEqual(
      ztunnel
        ?.configDump()
        .inPodPods.map((p) => p.uid)
        .sort(),
      ["pod-uid-echo", "pod-uid-sleep"],
    );
    await until("extra's listeners to close", () => tcpSockets(ns.extra).length === 0);
    assert.equal(netnsRefs(ns.extra), 0);
    // The kept pods still work, without having been re-added.
    const { code, out } = await httpGet(ns.sleep, `http://${ip.echo}:${allowedPort}/`);
    assert.equal(code, 0, out);
  });

  it("relays without Nagle's delay: TCP_NODELAY on the captured socket and on the dial to the app", async () => {
    const socket = await capturedRequest();
    // The ztunnel's ends: the connection it accepted on 15001 in the sleep pod, and the one it
    // opened to the app in the echo pod (both in this process, as is the app's own end).
    const inodeOf = (ns: string, filter: string): string => {
      const line = inNs(ns, "ss", "-Htne", "state", "established", filter);
      const ino = /ino:(\d+)/.exec(line)?.[1];
      assert.ok(ino !== undefined, `one socket for ${filter} in ${ns}: ${line}`);
      return ino;
    };
    assert.equal(noDelayOfInode(inodeOf(ns.sleep, "sport = :15001")), 1, "captured socket (15001)");
    assert.equal(noDelayOfInode(inodeOf(ns.echo, `dport = :${allowedPort}`)), 1, "in-pod dial to the app");
    const closed = closedOf(socket);
    socket.destroy();
    await closed;
  });

  it("hands pods over in an upgrade: a second ztunnel serves beside this one, then drains and keeps its open connection until it ends", async () => {
    assert.ok(ztunnel !== undefined && cp !== undefined);
    const listeners = (port: number) =>
      inNs(ns.sleep, "ss", "-Htln", "sport", `= :${port}`).trim().split("\n").length;
    const dir2 = mkdtempSync(join(tmpdir(), "ambient-zds-"));
    const zds2 = createZdsServer({ path: join(dir2, "ztunnel.sock") });
    await zds2.listen();
    let second: RunningZtunnel | undefined;
    const sockets: Socket[] = [];
    try {
      second = await startNodeAZtunnel(cp, join(dir2, "ztunnel.sock"));
      await second.ready;
      for (const name of ["sleep", "echo"] as const) {
        const acked = await zds2.addWorkload({
          uid: `pod-uid-${name}`,
          workloadInfo: { name, namespace: "default", serviceAccount: name },
          netns: openNetns(`/var/run/netns/${ns[name]}`),
        });
        assert.equal(acked, true);
      }
      assert.equal(listeners(15001), 2, "both proxies listen in the pod");
      // SO_REUSEPORT spreads new connections over both: open some until the second has one.
      const outboundOnSecond = () =>
        second?.configDump().connections.some((c) => c.direction === "outbound") === true;
      for (let i = 0; i < 40 && !outboundOnSecond(); i++) sockets.push(await capturedRequest());
      assert.ok(outboundOnSecond(), "one of the connections went through the second proxy");

      let done = false;
      const shutdown = second.shutdown({ deadlineMs: 30_000 }).then(() => {
        done = true;
      });
      assert.equal(second.isReady(), false);
      await until("the second proxy's listeners to close", () => listeners(15001) === 1);
      // New connections all go to the proxy that stays.
      const fresh = await httpGet(ns.sleep, `http://${ip.echo}:${allowedPort}/`);
      assert.match(fresh.out, /^allowed from echo/, fresh.out);
      // Every open connection, the second proxy's included, still carries a request.
      for (const socket of sockets) {
        const answer = once(socket, "data");
        socket.write(`GET / HTTP/1.1\r\nhost: ${ip.echo}\r\n\r\n`);
        assert.match(String((await answer)[0]), /^HTTP\/1\.1 200/);
      }
      assert.equal(done, false, "the drain waits for the open connection");
      for (const socket of sockets) socket.destroy();
      await shutdown;
      assert.equal(second.openSockets(), 0);
    } finally {
      for (const socket of sockets) socket.destroy();
      await second?.close();
      zds2.close();
      rmSync(dir2, { recursive: true, force: true });
    }
  });

  it("a pod deleted over ZDS while a connection flows leaves no listener, socket or namespace reference", async () => {
    const socket = await capturedRequest();
    const closed = closedOf(socket);
    assert.ok((ztunnel?.openSockets("pod-uid-sleep") ?? 0) > 0, "the connection is tracked for the pod");

    for (const name of ["sleep", "echo"] as const) await zds?.deleteWorkload(`pod-uid-${name}`);
    await closed;
    socket.destroy();
    await until("the pods to be gone", () => (ztunnel?.configDump().inPodPods.length ?? -1) === 0);
    const metrics = (await ztunnel?.metricsText()) ?? "";
    assert.equal(unlabelled(metrics, "istio_inpod_active_proxy_count"), 0);
    // late (deleted), extra (dropped by the restarted agent's snapshot), then sleep and echo.
    assert.equal(unlabelled(metrics, "istio_inpod_proxies_stopped_total"), 4);
    assert.equal(ztunnel?.openSockets(), 0);
    // Only the apps' own listeners remain in the namespaces.
    const appListener = (line: string) =>
      line.startsWith("LISTEN") &&
      apps.some((a) => line.includes(`${ip.echo}:${(a.address() as AddressInfo).port} `));
    await until("no proxy socket left in the pod namespaces", () =>
      [ns.sleep, ns.echo].every((name) => tcpSockets(name).every(appListener)),
    );
    for (const name of [ns.sleep, ns.echo]) assert.equal(netnsRefs(name), 0, `no descriptor holds ${name}`);
    // The proxy's own descriptors are back where they were before the pods came (the ZDS and
    // control-plane connections are part of "before" only through the proxy, so allow those).
    await ztunnel?.close();
    ztunnel = undefined;
    await until("descriptors to return", () => readdirSync("/proc/self/fd").length <= fdsBefore, 5000);
  });
});
