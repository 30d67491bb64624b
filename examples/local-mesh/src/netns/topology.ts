// Network namespaces for the demo pods: one netns per pod with a veth onto its node's bridge (each
// node a netns holding a bridge, the bridges joined by one veth), and istio-cni's in-pod capture
// rules inside each mesh pod. Everything lives in namespaces created here; remove() deletes them,
// which takes every link, address and rule with them, and each pod's /etc/netns/<name> folder (its
// resolv.conf, which `ip netns exec` shows its programs as /etc/resolv.conf).
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { inPodDnsCapture, inPodReplyRouting, inPodTcpCapture } from "@ambient/example-ztunnel";

export interface TopologyPod {
  name: string;
  node: string;
  /** IPv4 address inside the pod (prefix `/16` on its eth0). */
  ip: string;
  /** Install the capture rules (a mesh pod); false for a client outside the mesh. */
  captured: boolean;
  /**
   * The pod's resolv.conf, as kubelet writes one: its namespace's search path and this nameserver
   * (`ndots:5`). Default: none, the host's resolv.conf.
   */
  dns?: { nameserver: string; namespace: string };
}

export interface Topology {
  /** netns name of each pod, by pod name. */
  netns: Map<string, string>;
  /** Every namespace made here, nodes included. */
  all(): string[];
  /** Deletes every namespace made here (idempotent; also after a partial build). */
  remove(): void;
}

/** Why the netns mode cannot run here, or undefined. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== "linux") return "needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "needs root (ip netns, iptables, setns)";
  for (const [cmd, arg] of [
    ["ip", "-V"],
    ["iptables", "--version"],
  ] as const) {
    if (spawnSync(cmd, [arg], { stdio: "ignore" }).status !== 0) return `${cmd} is not installed`;
  }
  return undefined;
}

function run(...args: string[]): void {
  execFileSync(args[0] as string, args.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
}

/**
 * istio-cni's in-pod rules, as the ztunnel's module spells them: DNS capture (port 53 to the proxy's
 * resolver on 15053), TCP capture (outbound to 15001, inbound to 15006 unless for 15008; the REDIRECT
 * variant), and the reply routing for connections to the app from the client's address.
 */
export function installCaptureRules(netns: string, podIp: string): void {
  for (const command of [...inPodDnsCapture(), ...inPodTcpCapture(podIp), ...inPodReplyRouting()]) {
    run("ip", "netns", "exec", netns, ...command);
  }
}

/** Builds the namespaces; on any failure removes what it made and rethrows. */
export function createTopology(
  pods: readonly TopologyPod[],
  prefix = `amb-${randomBytes(3).toString("hex")}`,
): Topology {
  const made: string[] = [];
  const netns = new Map<string, string>();
  const remove = () => {
    for (const name of made.splice(0).reverse()) {
      spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
      rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
    }
  };
  const add = (name: string) => {
    run("ip", "netns", "add", name);
    made.push(name);
    run("ip", "-n", name, "link", "set", "lo", "up");
  };
  try {
    const nodes = [...new Set(pods.map((p) => p.node))].sort();
    const nodeNs = new Map<string, string>();
    for (const node of nodes) {
      const name = `${prefix}-${node}`;
      add(name);
      run("ip", "-n", name, "link", "add", "br0", "type", "bridge");
      run("ip", "-n", name, "link", "set", "br0", "up");
      nodeNs.set(node, name);
    }
    // One L2 segment across nodes: a veth between consecutive node bridges.
    for (let i = 1; i < nodes.length; i++) {
      const a = nodeNs.get(nodes[i - 1] as string) as string;
      const b = nodeNs.get(nodes[i] as string) as string;
      run("ip", "-n", a, "link", "add", `up${i}`, "type", "veth", "peer", "name", `down${i}`, "netns", b);
      run("ip", "-n", a, "link", "set", `up${i}`, "master", "br0", "up");
      run("ip", "-n", b, "link", "set", `down${i}`, "master", "br0", "up");
    }
    pods.forEach((pod, i) => {
      const name = `${prefix}-${pod.name}`;
      const node = nodeNs.get(pod.node) as string;
      add(name);
      netns.set(pod.name, name);
      run("ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", `v${i}`, "netns", node);
      run("ip", "-n", node, "link", "set", `v${i}`, "master", "br0", "up");
      run("ip", "-n", name, "addr", "add", `${pod.ip}/16`, "dev", "eth0");
      run("ip", "-n", name, "link", "set", "eth0", "up");
      // Service VIPs are outside the pod subnet: route them out, so the capture rules see them.
      run("ip", "-n", name, "route", "add", "default", "dev", "eth0");
      if (pod.captured) installCaptureRules(name, pod.ip);
      if (pod.dns !== undefined) {
        const { nameserver, namespace } = pod.dns;
        mkdirSync(`/etc/netns/${name}`, { recursive: true });
        writeFileSync(
          `/etc/netns/${name}/resolv.conf`,
          `nameserver ${nameserver}\nsearch ${namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n`,
        );
      }
    });
  } catch (err) {
    remove();
    throw err;
  }
  return { netns, all: () => [...made], remove };
}
