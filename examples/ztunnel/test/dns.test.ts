// The DNS proxy end to end, as root on Linux: a pod namespace this test creates with DNS capture
// rules (port 53 to 127.0.0.1:15053, as istio-cni installs them), the ztunnel serving that pod in
// dedicated mode, and unmodified resolvers inside it: dig, and the C library through getent with the
// resolv.conf a Kubernetes pod has. Names the mesh does not have go to dnsmasq, an independent
// upstream on 127.0.0.1. Everything the test makes it removes.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import dgram from "node:dgram";
import { once } from "node:events";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import net, { type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { listenInNetns, openNetns } from "@ambient/netns";
import type { Service } from "@ambient/xds";
import { inPodDnsCapture, type RunningZtunnel, startZtunnel } from "../src/index.js";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import { ipBytes, runInNetns, testService, testWorkload } from "./fixtures.js";

function has(command: string, args: string[]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).status === 0;
}

function skipReason(): string | false {
  if (process.platform !== "linux") return "DNS capture needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "DNS capture needs root (setns, iptables, ip netns)";
  for (const [program, args] of [
    ["ip", ["-V"]],
    ["iptables", ["--version"]],
    ["dig", ["-v"]],
    ["dnsmasq", ["--version"]],
    ["getent", ["--version"]],
  ] as const) {
    if (!has(program, [...args])) return `${program} is not installed`;
  }
  return false;
}
const skip = skipReason();
if (skip !== false) console.log(`# DNS proxy tests skipped: ${skip}`);

const run = (...args: string[]): string =>
  execFileSync(args[0] as string, args.slice(1), { encoding: "utf8" });

const PORTS: Service["ports"] = [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }];

/** A Service with `hostname` in `namespace` on `vips` (none: headless). */
function service(namespace: string, hostname: string, vips: string[]): Service {
  return testService(hostname.split(".")[0] ?? hostname, vips[0] ?? "0.0.0.0", PORTS, {
    namespace,
    hostname,
    addresses: vips.map((v) => ({ network: "", address: ipBytes(v) })),
  });
}

/** A port free for both UDP and TCP on 127.0.0.1 (dnsmasq serves both). */
async function freeDnsPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const udp = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => udp.bind(0, "127.0.0.1", resolve));
    const port = udp.address().port;
    const tcp = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      tcp.once("error", () => resolve(false));
      tcp.listen(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (ok) {
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      return port;
    }
  }
  throw new Error("no free port for dnsmasq");
}

/** The IPv4 addresses in dig's answer section (`+short` prints one value per line). */
function addresses(out: string): string[] {
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /^\d+\.\d+\.\d+\.\d+$/.test(l))
    .sort();
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

describe("DNS proxy in a captured pod", { skip, timeout: 60_000 }, () => {
  const id = Math.random().toString(36).slice(2, 8);
  const ns = `amb-${id}-dns`;
  const net10 = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}`;
  const podIp = `${net10}.11`;
  // The pod's nameserver, as kubelet writes it: nothing listens there; the capture rules answer.
  const kubeDns = `${net10}.53`;
  const etcDir = `/etc/netns/${ns}`;
  let created = false;
  let cp: TestControlPlane | undefined;
  let ztunnel: RunningZtunnel | undefined;
  let dnsmasq: ChildProcess | undefined;
  let upstreamPort = 0;
  let app: Server | undefined;

  before(async () => {
    run("ip", "netns", "add", ns);
    created = true;
    run("ip", "-n", ns, "link", "set", "lo", "up");
    // An interface with the pod's address and a route to the cluster DNS address (a veth whose peer
    // stays in the namespace: nothing answers beyond it).
    run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer");
    run("ip", "-n", ns, "addr", "add", `${podIp}/24`, "dev", "eth0");
    run("ip", "-n", ns, "link", "set", "eth0", "up");
    run("ip", "-n", ns, "link", "set", "eth0-peer", "up");
    // DNS capture, as istio-cni writes it: port 53 over UDP and TCP, unless the proxy sent it.
    for (const command of inPodDnsCapture()) run("ip", "netns", "exec", ns, ...command);
    // Outbound capture for the allocated ServiceEntry range only (the rest of the pod's TCP is direct).
    run("ip", "-n", ns, "route", "add", "240.240.0.0/16", "dev", "eth0");
    run(
      ..."ip netns exec".split(" "),
      ns,
      ..."iptables -w -t nat -A OUTPUT -p tcp -d 240.240.0.0/16 -m mark ! --mark 0x539/0xfff".split(" "),
      ..."-j REDIRECT --to-ports 15001".split(" "),
    );
    // The external app a DNS ServiceEntry names: in the pod's namespace, at the address dnsmasq gives.
    const podNs = openNetns(`/var/run/netns/${ns}`);
    try {
      app = await listenInNetns(podNs, {
        host: podIp,
        port: 8080,
        server: createServer((_req, res) => res.end("external app\n")),
      });
    } finally {
      podNs.close();
    }
    // `ip netns exec` shows this file as the pod's /etc/resolv.conf: a Kubernetes pod's.
    mkdirSync(etcDir, { recursive: true });
    writeFileSync(
      `${etcDir}/resolv.conf`,
      `nameserver ${kubeDns}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 attempts:1 timeout:3\n`,
    );

    upstreamPort = await freeDnsPort();
    dnsmasq = spawn(
      "dnsmasq",
      [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        `--port=${upstreamPort}`,
        "--address=/external.test/192.0.2.7",
        "--address=/missing.test/",
        `--address=/app.external.test/${podIp}`,
        "--txt-record=web.default.svc.cluster.local,from-upstream",
        "--pid-file=",
        "--user=root",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    // Ready once it answers.
    for (let i = 0; ; i++) {
      const probe = spawnSync(
        "dig",
        ["@127.0.0.1", "-p", String(upstreamPort), "+short", "+tries=1", "+time=1", "external.test"],
        {
          encoding: "utf8",
        },
      );
      if (probe.stdout.includes("192.0.2.7")) break;
      if (i > 50) throw new Error(`dnsmasq did not start: ${probe.stdout}${probe.stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    cp = await startTestControlPlane();
    cp.setWorkload(testWorkload("client", "node-a", podIp, { canonicalRevision: "v1" }));
    cp.setService(service("default", "web.default.svc.cluster.local", ["10.96.0.20"]));
    cp.setService(service("other", "api.other.svc.cluster.local", ["10.96.0.21"]));
    // A ServiceEntry host with an allocated address, and a headless Service with two ready pods.
    cp.setService(service("default", "db.example.internal", ["240.240.0.5"]));
    cp.setService(service("default", "cache.default.svc.cluster.local", []));
    for (const [name, address, ready] of [
      ["cache-0", `${net10}.31`, true],
      ["cache-1", `${net10}.32`, true],
      ["cache-2", `${net10}.33`, false],
    ] as const) {
      cp.setWorkload(
        testWorkload(name, "node-b", address, {
          status: ready ? "HEALTHY" : "UNHEALTHY",
          services: { "default/cache.default.svc.cluster.local": { ports: [] } },
        }),
      );
    }
    // A DNS ServiceEntry: its allocated address, and one endpoint known only by hostname.
    cp.setService(
      testService("api", "240.240.0.9", [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }], {
        hostname: "api.external.test",
      }),
    );
    cp.setWorkload(
      testWorkload("api", "", "0.0.0.0", {
        uid: "Kubernetes/networking.istio.io/ServiceEntry/default/api/app.external.test",
        addresses: [],
        hostname: "app.external.test",
        tunnelProtocol: "NONE",
        services: {
          "default/api.external.test": {
            ports: [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }],
          },
        },
      }),
    );
    ztunnel = await startZtunnel({
      nodeName: "node-a",
      nodeIp: "127.0.0.1",
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      token: await cp.tokenFor("node-a"),
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      dedicated: { workload: { name: "client", namespace: "default" }, netnsPath: `/var/run/netns/${ns}` },
      inPod: { workloadWaitMs: 2000 },
      dns: { nameservers: [`127.0.0.1:${upstreamPort}`], timeoutMs: 1000 },
    });
    await ztunnel.ready;
  });

  after(async () => {
    app?.close();
    await ztunnel?.close().catch(() => {});
    await cp?.close().catch(() => {});
    if (dnsmasq !== undefined && dnsmasq.exitCode === null) {
      dnsmasq.kill("SIGTERM");
      await once(dnsmasq, "exit");
    }
    rmSync(etcDir, { recursive: true, force: true });
    if (created) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  });

  const dig = (...args: string[]) => runInNetns(ns, ["dig", `@${kubeDns}`, "+tries=1", "+time=3", ...args]);

  it("answers a Service's name itself, with authority, over UDP and TCP", async () => {
    for (const transport of ["+notcp", "+tcp"]) {
      const full = await dig(transport, "web.default.svc.cluster.local", "A");
      assert.equal(full.code, 0, full.out);
      assert.match(full.out, /status: NOERROR/);
      assert.match(full.out, /flags: qr aa rd ra;/, "authoritative answer");
      assert.match(full.out, /web\.default\.svc\.cluster\.local\.\s+30\s+IN\s+A\s+10\.96\.0\.20/);
    }
  });

  it("answers the short names a pod may use, and another namespace's Service by name.namespace", async () => {
    assert.deepEqual(addresses((await dig("+short", "web")).out), ["10.96.0.20"]);
    assert.deepEqual(addresses((await dig("+short", "web.default")).out), ["10.96.0.20"]);
    assert.deepEqual(addresses((await dig("+short", "api.other.svc")).out), ["10.96.0.21"]);
    assert.deepEqual(addresses((await dig("+short", "db.example.internal")).out), ["240.240.0.5"]);
    assert.deepEqual(addresses((await dig("+short", "cache")).out), [`${net10}.31`, `${net10}.32`]);
  });

  it("resolves mesh names for the C library with a pod's search path and ndots", async () => {
    // ndots:5 tries the search domains first: `db.example.internal.default.svc.cluster.local` is
    // answered with a CNAME to the ServiceEntry host, which getaddrinfo follows.
    for (const [name, expected] of [
      ["web", "10.96.0.20"],
      ["api.other", "10.96.0.21"],
      ["db.example.internal", "240.240.0.5"],
    ] as const) {
      const res = await runInNetns(ns, ["getent", "ahostsv4", name]);
      assert.equal(res.code, 0, `${name}: ${res.out}`);
      assert.match(res.out, new RegExp(`^${expected.replaceAll(".", "\\.")}\\s`, "m"), res.out);
    }
    const cname = await dig("db.example.internal.default.svc.cluster.local", "A");
    assert.match(
      cname.out,
      /db\.example\.internal\.default\.svc\.cluster\.local\.\s+30\s+IN\s+CNAME\s+db\.example\.internal\./,
    );
  });

  it("forwards every other question to the upstream resolver unchanged", async () => {
    const external = await dig("external.test", "A");
    // dnsmasq's own answer: its TTL for --address names is 0 (the proxy's are 30).
    assert.match(external.out, /external\.test\.\s+0\s+IN\s+A\s+192\.0\.2\.7/);
    const missing = await dig("missing.test", "A");
    assert.match(missing.out, /status: NXDOMAIN/);
    // Not an address question: the upstream answers it, even for a mesh name.
    const txt = await dig("+short", "web.default.svc.cluster.local", "TXT");
    assert.match(txt.out, /"from-upstream"/);
    const tcp = await dig("+tcp", "+short", "external.test");
    assert.deepEqual(addresses(tcp.out), ["192.0.2.7"]);
  });

  it("carries a connection to a DNS ServiceEntry host to the address its endpoint's name resolves to", async () => {
    // The pod resolves the host (the proxy answers with its allocated address), connects there, is
    // captured, and the ztunnel resolves the endpoint's hostname upstream and connects to it.
    const get =
      'require("http").get(process.argv[1],(r)=>{let b="";r.on("data",(c)=>{b+=c});r.on("end",()=>{process.stdout.write(b)})}).on("error",(e)=>{process.stdout.write(String(e.code||e));process.exitCode=7})';
    const res = await runInNetns(ns, [process.execPath, "-e", get, "http://api.external.test/"]);
    assert.equal(res.code, 0, res.out);
    assert.equal(res.out.trim(), "external app");
  });

  it("counts requests and forwards under Istio's ztunnel metric names", async () => {
    const text = (await ztunnel?.metricsText()) ?? "";
    const source = { source_canonical_service: "client", source_canonical_revision: "v1" };
    assert.ok(
      counter(text, "istio_dns_requests_total", {
        ...source,
        request_query_type: "a",
        request_protocol: "udp",
      }) >= 5,
      text,
    );
    assert.ok(counter(text, "istio_dns_requests_total", { request_protocol: "tcp" }) >= 2);
    assert.ok(counter(text, "istio_dns_upstream_requests_total", { request_query_type: "txt" }) >= 1);
    assert.ok(counter(text, "istio_dns_upstream_request_duration_seconds_count", source) >= 3);
    assert.equal(counter(text, "istio_dns_upstream_failures_total", {}), 0);
  });

  it("answers SERVFAIL when the upstream does not answer, and counts the failure", async () => {
    dnsmasq?.kill("SIGSTOP");
    try {
      const res = await dig("stopped.test", "A");
      assert.match(res.out, /status: SERVFAIL/, res.out);
    } finally {
      dnsmasq?.kill("SIGCONT");
    }
    const text = (await ztunnel?.metricsText()) ?? "";
    assert.ok(counter(text, "istio_dns_upstream_failures_total", { request_query_type: "a" }) >= 1);
    // Mesh names do not need the upstream at all.
  });

  it("closes its DNS listeners in the pod with the proxy", async () => {
    const listening = () => run("ip", "netns", "exec", ns, "ss", "-Hluntp");
    assert.match(listening(), /127\.0\.0\.1:15053/);
    await ztunnel?.close();
    assert.doesNotMatch(listening(), /:15053\b/);
    const res = await dig("+tries=1", "+time=1", "web");
    assert.notEqual(res.code, 0, "nothing answers once the proxy is gone");
  });
});

describe("DNS proxy forwarding from the pod's namespace", { skip, timeout: 60_000 }, () => {
  // A pod and, across a veth, a nameserver that only the pod's network reaches (as a pod reaches
  // the cluster's DNS): the ztunnel's own namespace has no route to it.
  const id = Math.random().toString(36).slice(2, 8);
  const ns = { pod: `amb-${id}-dnsp`, upstream: `amb-${id}-dnsu` };
  const net10 = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 256)}`;
  const podIp = `${net10}.11`;
  const kubeDns = `${net10}.53`;
  const nameserver = `${net10}.54`;
  const etcDir = `/etc/netns/${ns.pod}`;
  const created: string[] = [];
  let cp: TestControlPlane | undefined;
  let ztunnel: RunningZtunnel | undefined;
  let dnsmasq: ChildProcess | undefined;
  let log = "";

  before(async () => {
    for (const name of [ns.pod, ns.upstream]) {
      run("ip", "netns", "add", name);
      created.push(name);
      run("ip", "-n", name, "link", "set", "lo", "up");
    }
    run(
      "ip",
      "-n",
      ns.pod,
      "link",
      "add",
      "eth0",
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns.upstream,
    );
    for (const [name, address] of [
      [ns.pod, podIp],
      [ns.upstream, nameserver],
    ] as const) {
      run("ip", "-n", name, "addr", "add", `${address}/24`, "dev", "eth0");
      run("ip", "-n", name, "link", "set", "eth0", "up");
    }
    for (const command of inPodDnsCapture()) run("ip", "netns", "exec", ns.pod, ...command);
    mkdirSync(etcDir, { recursive: true });
    writeFileSync(`${etcDir}/resolv.conf`, `nameserver ${kubeDns}\noptions attempts:1 timeout:3\n`);
    // dnsmasq logs each query with the address it came from.
    dnsmasq = spawn(
      "ip",
      [
        ..."netns exec".split(" "),
        ns.upstream,
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        `--listen-address=${nameserver}`,
        "--port=53",
        "--address=/pod-side.test/192.0.2.8",
        "--log-queries",
        "--log-facility=-",
        "--pid-file=",
        "--user=root",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    dnsmasq.stdout?.on("data", (chunk: Buffer) => {
      log += chunk.toString();
    });
    dnsmasq.stderr?.on("data", (chunk: Buffer) => {
      log += chunk.toString();
    });
    for (let i = 0; ; i++) {
      const probe = spawnSync(
        "ip",
        [
          "netns",
          "exec",
          ns.upstream,
          "dig",
          `@${nameserver}`,
          "+short",
          "+tries=1",
          "+time=1",
          "probe.pod-side.test",
        ],
        { encoding: "utf8" },
      );
      if (probe.stdout.includes("192.0.2.8")) break;
      if (i > 50) throw new Error(`dnsmasq did not start: ${probe.stdout}${probe.stderr}${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    cp = await startTestControlPlane();
    cp.setWorkload(testWorkload("client", "node-a", podIp));
    ztunnel = await startZtunnel({
      nodeName: "node-a",
      nodeIp: "127.0.0.1",
      controlPlaneAddress: cp.address,
      rootCertPem: cp.rootCertPem,
      token: await cp.tokenFor("node-a"),
      ports: { admin: 0, metrics: 0, readiness: 0, socks5: 0 },
      dedicated: {
        workload: { name: "client", namespace: "default" },
        netnsPath: `/var/run/netns/${ns.pod}`,
      },
      inPod: { workloadWaitMs: 2000 },
      dns: { nameservers: [`${nameserver}:53`], timeoutMs: 1000 },
    });
    await ztunnel.ready;
  });

  after(async () => {
    await ztunnel?.close().catch(() => {});
    await cp?.close().catch(() => {});
    if (dnsmasq !== undefined && dnsmasq.exitCode === null) {
      dnsmasq.kill("SIGTERM");
      await once(dnsmasq, "exit");
    }
    rmSync(etcDir, { recursive: true, force: true });
    for (const name of created) spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  });

  it("asks the nameserver from the pod's namespace and address, over UDP and TCP", async () => {
    const dig = (...args: string[]) =>
      runInNetns(ns.pod, ["dig", `@${kubeDns}`, "+tries=1", "+time=3", "+short", ...args]);
    const udp = await dig("udp.pod-side.test", "A");
    assert.deepEqual(addresses(udp.out), ["192.0.2.8"], udp.out);
    const tcp = await dig("+tcp", "tcp.pod-side.test", "A");
    assert.deepEqual(addresses(tcp.out), ["192.0.2.8"], tcp.out);
    // The pod asked kubeDns; the capture sent it to the proxy, whose forward left from the pod,
    // marked (so not captured again), with the pod's address.
    assert.match(
      log,
      new RegExp(`query\\[A\\] udp\\.pod-side\\.test from ${podIp.replaceAll(".", "\\.")}\\b`),
      log,
    );
    assert.match(
      log,
      new RegExp(`query\\[A\\] tcp\\.pod-side\\.test from ${podIp.replaceAll(".", "\\.")}\\b`),
      log,
    );
    const text = (await ztunnel?.metricsText()) ?? "";
    assert.equal(counter(text, "istio_dns_upstream_failures_total", {}), 0);
  });
});
