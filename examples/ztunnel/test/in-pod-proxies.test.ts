// The in-pod proxies against the node agent's requests, as root on Linux: each pod is a network
// namespace this test creates, handed to the proxies as istio-cni hands it over ZDS. A pod added
// again, a pod whose listeners cannot be opened yet, and connections that come before the pod's
// workload. Everything lives in namespaces this test creates and removes.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import type { Server, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type DnsForwarder,
  type DnsMessage,
  decodeMessage,
  encodeMessage,
  queryMessage,
  RecordType,
  ResponseCode,
  recordAddress,
} from "@ambient/dns";
import { connectFromNetns, listenInNetns, type NetnsHandle, openNetns } from "@ambient/netns";
import { createCertificateAuthority } from "@ambient/spiffe/ca";
import type { Workload } from "@ambient/xds";
import { ConnectionRegistry } from "../src/connections.js";
import { createDnsProxy } from "../src/dns-proxy.js";
import { ZtunnelError } from "../src/errors.js";
import { createInPodProxies, type InPodOptions, type InPodProxies } from "../src/in-pod.js";
import type { Inbound } from "../src/inbound.js";
import type { Outbound } from "../src/outbound.js";
import { noopMetrics } from "../src/telemetry.js";
import { WorkloadStore } from "../src/workload-store.js";
import { ipBytes, testService, testWorkload } from "./fixtures.js";

function skipReason(): string | false {
  if (process.platform !== "linux") return "in-pod proxies need Linux network namespaces";
  if (process.getuid?.() !== 0) return "in-pod proxies need root (setns, iptables, ip netns)";
  for (const [command, args] of [
    ["ip", ["-V"]],
    ["iptables", ["--version"]],
    ["ss", ["-V"]],
  ] as const) {
    if (spawnSync(command, args, { stdio: "ignore" }).status !== 0) return `${command} is not installed`;
  }
  return false;
}

const skip = skipReason();
if (skip !== false) console.log(`# in-pod proxy tests skipped: ${skip}`);

const run = (...args: string[]): string =>
  execFileSync(args[0] as string, args.slice(1), { encoding: "utf8" });
const inNs = (ns: string, ...args: string[]): string => run("ip", "netns", "exec", ns, ...args);

/** The TCP ports listening in `ns`. */
function listening(ns: string): number[] {
  return inNs(ns, "ss", "-Htln")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => Number(l.split(/\s+/)[3]?.split(":").at(-1)))
    .sort((a, b) => a - b);
}

/** Established connections to `port` in `ns` (the proxy's end of them). */
function acceptedOn(ns: string, port: number): number {
  return inNs(ns, "ss", "-Htn", "state", "established", "sport", `= :${port}`)
    .split("\n")
    .filter((l) => l.trim() !== "").length;
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** How the socket ended: the error code it saw (ECONNRESET for a reset), or "closed". */
function endOf(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let code = "closed";
    socket.on("error", (err: NodeJS.ErrnoException) => {
      code = err.code ?? err.message;
    });
    socket.once("close", () => resolve(code));
  });
}

const PROXY_PORTS = [15001, 15006, 15008];
/** An app port the test namespace redirects to the plaintext inbound listener (as istio-cni's capture). */
const APP_PORT = 8080;

describe("in-pod proxies and the node agent's requests", { skip, timeout: 60_000 }, () => {
  const id = Math.random().toString(36).slice(2, 8);
  const ns = { a: `amb-${id}-pa`, b: `amb-${id}-pb` };
  const created: string[] = [];
  const logs: string[] = [];
  const logger = {
    debug: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    info: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    warn: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
    error: (o: object, msg?: string) => logs.push(`${msg ?? ""} ${JSON.stringify(o)}`),
  };
  const store = new WorkloadStore();
  const served: { pod: string; destination: string }[] = [];
  const inbound: Inbound = {
    handleTunnel: () => {},
    handlePlaintext(pod, socket, destination) {
      served.push({ pod: pod.uid, destination: `${destination.ip}:${destination.port}` });
      // Read to the client's end, so the connection closes as a relay's would.
      socket.resume();
      socket.end("served\n");
    },
    recheck: () => {},
  };
  let base: Omit<InPodOptions, "heldConnectionMs" | "listenRetryMs"> | undefined;
  const proxiesMade: InPodProxies[] = [];
  const proxies = (extra: Partial<InPodOptions> = {}): InPodProxies => {
    const made = createInPodProxies({ ...(base as InPodOptions), ...extra });
    proxiesMade.push(made);
    return made;
  };
  const open = (name: string): NetnsHandle => openNetns(`/var/run/netns/${name}`);
  const workloadOf = (name: string): Workload => testWorkload(name, "node-a", "127.0.0.1");

  before(async () => {
    for (const name of [ns.a, ns.b]) {
      run("ip", "netns", "add", name);
      created.push(name);
      inNs(name, "ip", "link", "set", "lo", "up");
    }
    // The app port goes to the plaintext inbound listener, so the proxy reads an original destination.
    inNs(ns.a, ..."iptables -w -t nat -A OUTPUT -p tcp --dport 8080 -j REDIRECT --to-ports 15006".split(" "));
    const ca = await createCertificateAuthority({ trustDomain: "cluster.local" });
    base = {
      nodeName: "node-a",
      ports: { outbound: 15001, inboundPlaintext: 15006, hbone: 15008 },
      store,
      svidOf: (identity) => ca.issue({ spiffeId: identity }),
      trustOf: (svid) => svid.rootsPem.join("\n"),
      inbound,
      outbound: {} as Outbound,
      registry: new ConnectionRegistry(),
      isClosed: () => false,
      stateReady: async () => {},
      hasState: () => true,
      workloadWaitMs: 2000,
      logger,
      metrics: noopMetrics,
    };
  });

  after(async () => {
    for (const p of proxiesMade) await p.close().catch(() => {});
    for (const name of created) spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  });

  /** A connection from inside namespace `name` to its app port, captured into the proxy's 15006. */
  const connectApp = (name: string): Socket => {
    const netns = open(name);
    try {
      return connectFromNetns(netns, { host: "127.0.0.1", port: APP_PORT });
    } finally {
      netns.close();
    }
  };

  it("resets a connection held for a pod without workload once the held-connection deadline passes", async () => {
    const p = proxies({ heldConnectionMs: 200 });
    await p.add({
      uid: "uid-held",
      workloadInfo: { name: "held", namespace: "default", serviceAccount: "held" },
      netns: open(ns.a),
    });
    const socket = connectApp(ns.a);
    const got: Buffer[] = [];
    socket.on("data", (c: Buffer) => got.push(c));
    assert.equal(await endOf(socket), "ECONNRESET");
    assert.equal(Buffer.concat(got).length, 0, "nothing served");
    assert.ok(
      logs.some((l) => l.startsWith("connection reset: its pod is still waiting") && l.includes("uid-held")),
      logs.join("\n"),
    );
    assert.ok(await p.remove("uid-held"));
  });

  it("serves a held connection when the pod's workload comes before the deadline", async () => {
    const p = proxies({ heldConnectionMs: 60_000 });
    await p.add({
      uid: "uid-late",
      workloadInfo: { name: "late", namespace: "default", serviceAccount: "late" },
      netns: open(ns.a),
    });
    const socket = connectApp(ns.a);
    const got: Buffer[] = [];
    socket.on("data", (c: Buffer) => got.push(c));
    const ended = endOf(socket);
    await until("the proxy to hold the connection", () =>
      logs.some((l) => l.startsWith("connection held until its pod is served") && l.includes("uid-late")),
    );
    assert.equal(acceptedOn(ns.a, 15006), 1);
    assert.equal(served.length, 0, "held, not served, while the workload is unknown");

    store.upsert("late", { workload: { ...workloadOf("late"), uid: "uid-late" } });
    p.recheck();
    assert.equal(await ended, "closed");
    assert.equal(Buffer.concat(got).toString(), "served\n");
    assert.deepEqual(served.at(-1), { pod: "uid-late", destination: `127.0.0.1:${APP_PORT}` });
    assert.ok(await p.remove("uid-late"));
    store.remove("late");
  });

  it("serves no pod before the first whole xDS state, even one whose workload is known", async () => {
    let hasState = false;
    const p = proxies({ heldConnectionMs: 60_000, workloadWaitMs: 200, hasState: () => hasState });
    store.upsert("early", { workload: { ...workloadOf("early"), uid: "uid-early" } });
    try {
      await p.add({ uid: "uid-early", netns: open(ns.a) });
      const before = served.length;
      const socket = connectApp(ns.a);
      const got: Buffer[] = [];
      socket.on("data", (c: Buffer) => got.push(c));
      const ended = endOf(socket);
      await until("the proxy to hold the connection", () =>
        logs.some((l) => l.startsWith("connection held until its pod is served") && l.includes("uid-early")),
      );
      p.recheck();
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(served.length, before, "held, not served, while the policies may be missing");
      hasState = true;
      p.recheck();
      assert.equal(await ended, "closed");
      assert.equal(Buffer.concat(got).toString(), "served\n");
      assert.ok(await p.remove("uid-early"));
    } finally {
      store.remove("early");
    }
  });

  it("takes an add of a pod it serves in the same namespace as done, and keeps serving it", async () => {
    const p = proxies();
    store.upsert("again", { workload: { ...workloadOf("again"), uid: "uid-again" } });
    try {
      await p.add({ uid: "uid-again", netns: open(ns.a) });
      assert.deepEqual(
        p.summaries().map((s) => s.uid),
        ["uid-again"],
      );
      // The node agent replays its snapshot after a reconnect: the same pod, the same namespace.
      const again = open(ns.a);
      await p.add({ uid: "uid-again", netns: again });
      assert.ok(again.closed, "the second handle is closed: the proxy keeps the first");
      assert.ok(p.has("uid-again"));
      assert.deepEqual(
        p.summaries().map((s) => s.uid),
        ["uid-again"],
      );
      assert.deepEqual(listening(ns.a), PROXY_PORTS);
      // Still served: a connection reaches the app's side of the proxy.
      const before = served.length;
      const socket = connectApp(ns.a);
      socket.resume();
      assert.equal(await endOf(socket), "closed");
      assert.equal(served.length, before + 1);
      assert.ok(await p.remove("uid-again"));
      assert.deepEqual(listening(ns.a), []);
    } finally {
      store.remove("again");
    }
  });

  it("replaces a pod added again with a new namespace (its sandbox was re-created)", async () => {
    const p = proxies();
    await p.add({
      uid: "uid-moved",
      workloadInfo: { name: "moved", namespace: "default" },
      netns: open(ns.a),
    });
    assert.deepEqual(listening(ns.a), PROXY_PORTS);
    await p.add({
      uid: "uid-moved",
      workloadInfo: { name: "moved", namespace: "default" },
      netns: open(ns.b),
    });
    assert.ok(p.has("uid-moved"));
    assert.deepEqual(listening(ns.a), [], "the old namespace's listeners are closed");
    assert.deepEqual(listening(ns.b), PROXY_PORTS);
    assert.ok(await p.remove("uid-moved"));
    assert.deepEqual(listening(ns.b), []);
  });

  it("refuses a pod whose listeners cannot be opened (a NACK), keeps it pending and opens them on a later try", async () => {
    // Something else holds 15006 in the pod without SO_REUSEPORT (a proxy that is still draining).
    const netns = open(ns.b);
    let blocker: Server;
    try {
      blocker = await listenInNetns(netns, { host: "0.0.0.0", port: 15006 });
    } finally {
      netns.close();
    }
    const p = proxies({ listenRetryMs: 50 });
    const pod = {
      uid: "uid-blocked",
      workloadInfo: { name: "blocked", namespace: "default" },
      netns: open(ns.b),
    };
    // Refused, as the node agent must hear (istio-cni fails the pod's CNI ADD), yet kept pending.
    await assert.rejects(p.add(pod), (e: unknown) => {
      assert.ok(e instanceof ZtunnelError, String(e));
      assert.equal(e.code, "ERR_ZTUNNEL_LISTEN");
      assert.equal(e.details.pending, true, "marked pending: the ZDS client leaves the namespace to it");
      assert.match(e.message, /EADDRINUSE/);
      return true;
    });
    assert.equal(pod.netns.closed, false, "its namespace is kept for the next try");
    assert.ok(p.has("uid-blocked"), "the pod is kept, to be tried again");
    assert.deepEqual(p.pending(), ["uid-blocked"]);
    assert.ok(
      logs.some((l) => l.includes("uid-blocked") && l.includes("EADDRINUSE")),
      logs.join("\n"),
    );
    assert.deepEqual(listening(ns.b), [15006], "nothing of the proxy's is left open meanwhile");
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await until("the proxy's listeners", () => listening(ns.b).join() === PROXY_PORTS.join());
    await until("the pod to be no longer pending", () => p.pending().length === 0);
    assert.ok(await p.remove("uid-blocked"));
    assert.deepEqual(listening(ns.b), []);
  });

  it("tries a pending pod at once when it is added again in the same namespace, and answers as it went", async () => {
    const netns = open(ns.b);
    let blocker: Server;
    try {
      blocker = await listenInNetns(netns, { host: "0.0.0.0", port: 15008 });
    } finally {
      netns.close();
    }
    // No retry of its own comes within the test: only the adds again try the listeners.
    const p = proxies({ listenRetryMs: 600_000 });
    const pod = () => ({
      uid: "uid-repeat",
      workloadInfo: { name: "repeat", namespace: "default" },
      netns: open(ns.b),
    });
    const first = pod();
    await assert.rejects(
      p.add(first),
      (e: unknown) => e instanceof ZtunnelError && e.details.pending === true,
    );
    // The node agent's snapshot after a reconnect repeats it: still refused while the port is held.
    const second = pod();
    await assert.rejects(
      p.add(second),
      (e: unknown) => e instanceof ZtunnelError && e.details.pending === true,
    );
    assert.ok(second.netns.closed, "the same namespace: the first handle is kept");
    assert.deepEqual(p.pending(), ["uid-repeat"]);
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await p.add(pod());
    assert.deepEqual(listening(ns.b), PROXY_PORTS);
    assert.deepEqual(p.pending(), []);
    assert.ok(await p.remove("uid-repeat"));
    assert.ok(first.netns.closed);
    assert.deepEqual(listening(ns.b), []);
  });

  it("stops trying a pod whose listeners could not be opened once it is removed", async () => {
    const netns = open(ns.b);
    let blocker: Server;
    try {
      blocker = await listenInNetns(netns, { host: "0.0.0.0", port: 15001 });
    } finally {
      netns.close();
    }
    const p = proxies({ listenRetryMs: 50 });
    const pod = { uid: "uid-gone", workloadInfo: { name: "gone", namespace: "default" }, netns: open(ns.b) };
    await assert.rejects(p.add(pod), (e: unknown) => e instanceof ZtunnelError && e.details.pending === true);
    assert.deepEqual(p.pending(), ["uid-gone"]);
    assert.ok(await p.remove("uid-gone"));
    assert.ok(pod.netns.closed, "its namespace is let go");
    assert.equal(p.has("uid-gone"), false);
    assert.deepEqual(p.pending(), []);
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    // A later try would open the listeners again: several retry periods pass without any.
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(listening(ns.b), []);
  });

  describe("the pod's DNS before xDS has its workload", () => {
    /** A DNS proxy whose upstream answers nothing; `web` is a Service on network `net-a`. */
    const dnsProxy = () => {
      store.upsert("default/web.default.svc.cluster.local", {
        service: testService(
          "web",
          "10.96.0.20",
          [{ servicePort: 80, targetPort: 8080, appProtocol: "UNKNOWN" }],
          {
            addresses: [{ network: "net-a", address: ipBytes("10.96.0.20") }],
          },
        ),
      });
      return createDnsProxy({
        store,
        forwarder: {
          forward: async () => {
            throw new Error("no upstream here");
          },
          close: () => {},
        } as unknown as DnsForwarder,
        logger,
        metrics: noopMetrics,
      });
    };

    /** Asks `name` (A) over TCP from inside namespace `nsName`, as the pod's resolver would. */
    const askFrom = async (nsName: string, name: string): Promise<DnsMessage> => {
      const netns = open(nsName);
      let socket: Socket;
      try {
        socket = connectFromNetns(netns, { host: "127.0.0.1", port: 15053 });
      } finally {
        netns.close();
      }
      const query = encodeMessage(queryMessage(name, RecordType.A, { id: 9 }));
      const framed = Buffer.alloc(2 + query.length);
      framed.writeUInt16BE(query.length, 0);
      framed.set(query, 2);
      socket.write(framed);
      const chunks: Buffer[] = [];
      for await (const chunk of socket) {
        chunks.push(chunk as Buffer);
        const got = Buffer.concat(chunks);
        if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
          socket.destroy();
          return decodeMessage(got.subarray(2, 2 + got.readUInt16BE(0)));
        }
      }
      throw new Error("the DNS connection closed without an answer");
    };

    it("holds a question until the workload comes, then answers it on the workload's network", async () => {
      const p = proxies({
        dnsProxy: dnsProxy(),
        heldConnectionMs: 60_000,
        ports: { ...(base as InPodOptions).ports, dns: 15053 },
      });
      await p.add({
        uid: "uid-dns",
        workloadInfo: { name: "dns", namespace: "default", serviceAccount: "dns" },
        netns: open(ns.b),
      });
      let answered = false;
      const answer = askFrom(ns.b, "web.default.svc.cluster.local").finally(() => {
        answered = true;
      });
      await until(
        "the question to be held (or answered)",
        () => answered || logs.some((l) => l.startsWith("dns question held") && l.includes("uid-dns")),
      );
      assert.equal(answered, false, "not answered before the pod's network is known");
      store.upsert("dns", {
        workload: { ...testWorkload("dns", "node-a", "127.0.0.1", { network: "net-a" }), uid: "uid-dns" },
      });
      p.recheck();
      const reply = await answer;
      assert.equal(reply.rcode, ResponseCode.NOERROR);
      assert.deepEqual(
        reply.answers.map((r) => recordAddress(r)),
        ["10.96.0.20"],
      );
      assert.ok(await p.remove("uid-dns"));
      store.remove("dns");
    });

    it("answers SERVFAIL when the workload does not come in time", async () => {
      const p = proxies({
        dnsProxy: dnsProxy(),
        heldConnectionMs: 100,
        ports: { ...(base as InPodOptions).ports, dns: 15053 },
      });
      await p.add({
        uid: "uid-dns-never",
        workloadInfo: { name: "dns-never", namespace: "default", serviceAccount: "dns-never" },
        netns: open(ns.b),
      });
      const reply = await askFrom(ns.b, "web.default.svc.cluster.local");
      assert.equal(reply.rcode, ResponseCode.SERVFAIL);
      assert.deepEqual(reply.answers, []);
      assert.ok(await p.remove("uid-dns-never"));
    });
  });
});
