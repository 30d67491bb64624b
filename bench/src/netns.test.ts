// The namespace mesh's wiring, as root on Linux (skipped with the reason elsewhere): every pair carries
// an echo and a 1 s iperf3 run from inside the client pod, and nothing is left behind afterwards, also
// when the bench is interrupted. Only namespaces the test creates, in a random private 10.x.0.0/24 that
// exists only inside them. Nothing here asserts a speed.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { startFlags } from "./app-entry.js";
import { echoInPod, iperfInPod } from "./netns-load.js";
import { captureRules, netnsUnavailable, startNetnsTopology, UNCAPTURED_PORTS } from "./netns-topology.js";
import { installExitHandlers, totalCpuSeconds } from "./processes.js";

installExitHandlers();
const skip = netnsUnavailable();
if (skip !== undefined) console.log(`# namespace-mesh bench tests skipped: ${skip}`);

const text = (...args: string[]) =>
  spawnSync(args[0] as string, args.slice(1), { encoding: "utf8" }).stdout ?? "";
/** What this test could leave behind in the root namespace: namespaces, links, iptables rules. */
const rootState = () => ({
  links: text("ip", "-o", "link", "show")
    .split("\n")
    .map((l) => l.split(":")[1]?.trim() ?? "")
    .filter((l) => l !== "")
    .sort(),
  iptables: text("iptables-save", "-t", "nat")
    .split("\n")
    .filter((l) => l.startsWith("-"))
    .sort(),
});
/** Root-namespace links and nat rules that are there now and were not in `before` (others may remove theirs). */
const addedSince = (before: ReturnType<typeof rootState>) => {
  const now = rootState();
  return {
    links: now.links.filter((l) => !before.links.includes(l)),
    iptables: now.iptables.filter((r) => !before.iptables.includes(r)),
  };
};
const namespacesWith = (prefix: string) =>
  text("ip", "netns", "list")
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "") // "name" or "name (id: N)"
    .filter((l) => l.startsWith(prefix))
    .sort();

test("the capture rules leave the proxy's mark, loopback, the pod itself and the bench ports alone", () => {
  const rules = captureRules("10.9.0.1").map((r) => r.join(" ").replace("iptables -w -t nat ", ""));
  const ports = `${UNCAPTURED_PORTS.first}:${UNCAPTURED_PORTS.last}`;
  const redirectOut = rules.indexOf("-A AMBIENT_OUTPUT -p tcp -j REDIRECT --to-ports 15001");
  const redirectIn = rules.indexOf("-A AMBIENT_PREROUTING -p tcp -j REDIRECT --to-ports 15006");
  for (const rule of [
    "-A AMBIENT_OUTPUT -m mark --mark 0x539/0xfff -j RETURN",
    "-A AMBIENT_OUTPUT -o lo -j RETURN",
    "-A AMBIENT_OUTPUT -d 10.9.0.1/32 -j RETURN",
    `-A AMBIENT_OUTPUT -p tcp --dport ${ports} -j RETURN`,
  ]) {
    const at = rules.indexOf(rule);
    assert.ok(at >= 0 && at < redirectOut, `${rule} before the outbound redirect`);
  }
  for (const rule of [
    "-A AMBIENT_PREROUTING -p tcp --dport 15008 -j RETURN",
    `-A AMBIENT_PREROUTING -p tcp --dport ${ports} -j RETURN`,
  ]) {
    const at = rules.indexOf(rule);
    assert.ok(at >= 0 && at < redirectIn, `${rule} before the inbound redirect`);
  }
  // The ztunnel's own ports and the apps' ports stay captured.
  for (const port of [5201, 7007, 15001, 15006, 15008]) {
    assert.ok(port < UNCAPTURED_PORTS.first || port > UNCAPTURED_PORTS.last, `${port} is captured`);
  }
});

test(
  "every pair carries an echo and an iperf3 run inside the pods, and close leaves nothing behind",
  { skip: skip ?? false, timeout: 240_000 },
  async () => {
    const before = rootState();
    const prefix = `ambt-${Math.random().toString(36).slice(2, 8)}`;
    const topology = await startNetnsTopology({ prefix, pin: false });
    const pids: number[] = [];
    try {
      assert.deepEqual(namespacesWith(prefix), [`${prefix}-client`, `${prefix}-server`]);
      assert.deepEqual(
        topology.pairs.map((p) => p.name),
        ["haproxy", "node-tls", "ztunnel"],
      );
      const client = topology.namespaces.client;
      assert.equal((await echoInPod(client, topology.direct("echo"))).echoed, "x", "direct echo");
      for (const pair of topology.pairs) {
        pids.push(...pair.proxies.map((p) => p.pid));
        if (pair.name === "ztunnel") {
          // The ztunnels run with the Node flags of their `pnpm start`.
          const flags = startFlags(
            fileURLToPath(new URL("../../examples/ztunnel/package.json", import.meta.url)),
          );
          assert.ok(flags.length > 0, "the ztunnel's start script has Node flags");
          for (const p of pair.proxies) {
            const argv = readFileSync(`/proc/${p.pid}/cmdline`, "utf8").split("\0");
            for (const flag of flags) assert.ok(argv.includes(flag), `${p.name} runs with ${flag}`);
          }
        }
        assert.equal(
          (await echoInPod(client, pair.route("echo"))).echoed,
          "x",
          `${pair.name} echoed the byte`,
        );
        const cpu = totalCpuSeconds(pair.proxies.map((p) => p.pid));
        const run = await iperfInPod(client, pair.route("iperf"), 1, 1, topology.dir);
        assert.ok(run.bytes > 0, `${pair.name} carried iperf3 bytes`);
        // The bytes went through this pair's processes (for the ztunnels: captured, not direct).
        assert.ok(totalCpuSeconds(pair.proxies.map((p) => p.pid)) > cpu, `${pair.name} did the work`);
      }
    } finally {
      await topology.close();
    }
    for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} stopped`);
    assert.deepEqual(namespacesWith(prefix), []);
    assert.deepEqual(addedSince(before), { links: [], iptables: [] });
  },
);

test(
  "a start that fails part-way removes the namespaces it made",
  { skip: skip ?? false, timeout: 60_000 },
  async () => {
    const before = rootState();
    // An address no namespace can take fails while the pods are being built...
    const badNet = `ambt-${Math.random().toString(36).slice(2, 8)}`;
    await assert.rejects(startNetnsTopology({ prefix: badNet, net: 300, pin: false }), /addr add/);
    assert.deepEqual(namespacesWith(badNet), []);
    // ...and a proxy that cannot start fails after the pods, the apps and the certificates exist.
    const badProxy = `ambt-${Math.random().toString(36).slice(2, 8)}`;
    await assert.rejects(
      startNetnsTopology({
        prefix: badProxy,
        pairs: ["node-tls"],
        proxyNodeFlags: ["--no-such-node-flag"],
        pin: false,
      }),
      /node-tls (in|out) exited/,
    );
    assert.deepEqual(namespacesWith(badProxy), []);
    // The ztunnels' Node flags in place of their start script's are the ones they run with.
    const badFlags = `ambt-${Math.random().toString(36).slice(2, 8)}`;
    await assert.rejects(
      startNetnsTopology({
        prefix: badFlags,
        pairs: ["ztunnel"],
        ztunnelStartFlags: ["--no-such-node-flag"],
        pin: false,
      }),
      /ztunnel node-a/,
    );
    assert.deepEqual(namespacesWith(badFlags), []);
    assert.deepEqual(addedSince(before), { links: [], iptables: [] });
  },
);

test(
  "an interrupted namespace-mesh bench removes its namespaces and stops its processes",
  { skip: skip ?? false, timeout: 180_000 },
  async () => {
    const before = rootState();
    const bench = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        fileURLToPath(new URL("./main.ts", import.meta.url)),
        "--netns",
        "--quick",
        "--pairs=haproxy,ztunnel",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let log = "";
    bench.stdout.on("data", (c: Buffer) => {
      log += c.toString();
    });
    bench.stderr.on("data", (c: Buffer) => {
      log += c.toString();
    });
    const exited = new Promise<number | null>((resolve) => bench.once("exit", (code) => resolve(code)));
    // Interrupt once traffic flows through the mesh: every process and both namespaces exist then.
    const deadline = Date.now() + 90_000;
    while (!/bulk warm-up/.test(log) && Date.now() < deadline && bench.exitCode === null) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const ns = /pods: (\S+)-client /.exec(log)?.[1];
    assert.ok(ns !== undefined, `the bench started its pods:\n${log}`);
    assert.equal(namespacesWith(ns).length, 2);
    const benchPids = text("pgrep", "-f", `${ns}|ambient-bench-netns`).trim();
    assert.ok(benchPids.split("\n").length >= 4, `haproxy pair and ztunnels running: ${benchPids}`);
    bench.kill("SIGINT");
    assert.equal(await exited, 130, log);
    assert.deepEqual(namespacesWith(ns), []);
    assert.deepEqual(addedSince(before), { links: [], iptables: [] });
    for (const pid of benchPids.split("\n").filter((p) => p !== "")) {
      assert.equal(existsSync(`/proc/${pid}`), false, `process ${pid} stopped`);
    }
  },
);
