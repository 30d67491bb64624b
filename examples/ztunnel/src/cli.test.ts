import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseZtunnelCli, withoutSeparators, ZTUNNEL_FLAGS, ztunnelUsage } from "./cli.js";

describe("ztunnel CLI", () => {
  it("the help describes every flag", () => {
    const help = ztunnelUsage();
    for (const [name, spec] of Object.entries(ZTUNNEL_FLAGS)) {
      const at = help.indexOf(`  --${name}`);
      assert.ok(at >= 0, `--${name} missing from the help`);
      // The line after the flag is its description.
      const description = help.slice(at).split("\n")[1] ?? "";
      assert.ok(description.includes(spec.description), `--${name} has no description`);
    }
  });

  const cases: [string, string[], Record<string, unknown> | "help" | "error"][] = [
    ["no flags: defaults", [], { node: "node-a", "control-plane": "127.0.0.1:15012", "log-level": "info" }],
    ["pnpm's leading --", ["--", "--node", "node-b"], { node: "node-b" }],
    [
      "-- between flags",
      ["--node", "node-b", "--", "--log-level", "debug"],
      { node: "node-b", "log-level": "debug" },
    ],
    [
      "in-pod mode over ZDS",
      ["--zds-socket", "/var/run/ztunnel/ztunnel.sock"],
      { "zds-socket": "/var/run/ztunnel/ztunnel.sock" },
    ],
    [
      "in-pod mode without the original source",
      ["--zds-socket", "/run/z.sock", "--no-original-source"],
      { "no-original-source": true },
    ],
    ["--no-original-source outside in-pod mode", ["--no-original-source"], "error"],
    ["a build tag", ["--build-tag", "1.28.0"], { "build-tag": "1.28.0" }],
    ["the build tag's default", [], { "build-tag": "unknown" }],
    ["several --", ["--", "--", "--node=node-c", "--"], { node: "node-c" }],
    ["--help after --", ["--", "--help"], "help"],
    ["an unknown flag", ["--nope"], "error"],
    ["a positional argument", ["node-b"], "error"],
    ["a bad SOCKS5 timeout", ["--socks5-handshake-timeout-ms", "0"], "error"],
    ["a bad SOCKS5 cap", ["--socks5-max-handshakes", "lots"], "error"],
  ];
  for (const [name, argv, want] of cases) {
    it(name, () => {
      const got = parseZtunnelCli(argv);
      if (want === "help" || want === "error") assert.equal(got.kind, want);
      else {
        assert.equal(got.kind, "run", JSON.stringify(got));
        if (got.kind === "run")
          for (const [k, v] of Object.entries(want)) assert.equal(got.args[k as "node"], v);
      }
    });
  }

  it("passes the SOCKS5 limits on as numbers", () => {
    const got = parseZtunnelCli(["--socks5-handshake-timeout-ms", "2500", "--socks5-max-handshakes", "64"]);
    assert.deepEqual(got.kind === "run" ? got.socks5 : undefined, {
      handshakeTimeoutMs: 2500,
      maxHandshakes: 64,
    });
    const defaults = parseZtunnelCli([]);
    assert.deepEqual(defaults.kind === "run" ? defaults.socks5 : undefined, {
      handshakeTimeoutMs: 10_000,
      maxHandshakes: 1024,
    });
  });

  it("turns on on-demand lookups with their timeout, and off by default", () => {
    const on = parseZtunnelCli(["--on-demand", "--on-demand-timeout-ms", "750"]);
    assert.deepEqual(on.kind === "run" ? on.onDemand : "not run", { timeoutMs: 750 });
    const dflt = parseZtunnelCli(["--on-demand"]);
    assert.deepEqual(dflt.kind === "run" ? dflt.onDemand : "not run", { timeoutMs: 5000 });
    const off = parseZtunnelCli([]);
    assert.equal(off.kind === "run" ? off.onDemand : "not run", undefined);
    assert.equal(parseZtunnelCli(["--on-demand", "--on-demand-timeout-ms", "0"]).kind, "error");
  });

  it("parses --dedicated namespace/name and refuses what cannot be meant", () => {
    const ok = parseZtunnelCli(["--dedicated", "demo/sleep-0", "--dedicated-netns", "/var/run/netns/sleep"]);
    assert.deepEqual(ok.kind === "run" ? ok.dedicated : undefined, {
      workload: { namespace: "demo", name: "sleep-0" },
      netnsPath: "/var/run/netns/sleep",
    });
    const plain = parseZtunnelCli([]);
    assert.equal(plain.kind === "run" ? plain.dedicated : "not run", undefined);
    for (const [args, message] of [
      [["--dedicated", "sleep-0"], /namespace\/name/],
      [["--dedicated", "a/b/c"], /namespace\/name/],
      [["--dedicated", "/b"], /namespace\/name/],
      [["--dedicated-netns", "/var/run/netns/x"], /needs --dedicated/],
      [["--dedicated", "a/b", "--zds-socket", "/tmp/z.sock"], /drop --zds-socket/],
    ] as const) {
      const got = parseZtunnelCli([...args]);
      assert.equal(got.kind, "error", args.join(" "));
      assert.match(got.kind === "error" ? got.message : "", message);
    }
  });

  it("turns the DNS proxy on in in-pod and dedicated mode, with its upstreams and domain", () => {
    const zds = parseZtunnelCli(["--zds-socket", "/run/z.sock"]);
    assert.deepEqual(zds.kind === "run" ? zds.dns : "not run", { clusterDomain: "cluster.local" });
    const set = parseZtunnelCli([
      "--dedicated",
      "demo/sleep-0",
      "--dns-nameservers",
      "10.96.0.10, 10.96.0.11:5353",
      "--cluster-domain",
      "corp.internal",
    ]);
    assert.deepEqual(set.kind === "run" ? set.dns : "not run", {
      nameservers: ["10.96.0.10", "10.96.0.11:5353"],
      clusterDomain: "corp.internal",
    });
    const off = parseZtunnelCli(["--zds-socket", "/run/z.sock", "--no-dns-proxy", "--on-demand"]);
    assert.equal(off.kind === "run" ? off.dns : "not run", false);
    // SOCKS5 mode has no pods to give a resolver.
    const socks = parseZtunnelCli([]);
    assert.equal(socks.kind === "run" ? socks.dns : "not run", undefined);
    for (const [args, message] of [
      [["--no-dns-proxy"], /in-pod and dedicated mode/],
      [["--dns-nameservers", "10.0.0.1"], /in-pod and dedicated mode/],
      [["--zds-socket", "/z", "--no-dns-proxy", "--dns-nameservers", "10.0.0.1"], /no use/],
      [["--zds-socket", "/z", "--dns-nameservers", "10.0.0.1,"], /empty entry/],
      [["--zds-socket", "/z", "--cluster-domain", "Bad_Domain"], /not a DNS domain/],
      [["--zds-socket", "/z", "--on-demand"], /add --no-dns-proxy/],
    ] as const) {
      const got = parseZtunnelCli([...args]);
      assert.equal(got.kind, "error", args.join(" "));
      assert.match(got.kind === "error" ? got.message : "", message);
    }
  });

  it("takes the shutdown deadline from the flag, else Istio's variables, else 5 s", () => {
    const deadline = (argv: string[], env: Record<string, string> = {}) => {
      const got = parseZtunnelCli(argv, env);
      return got.kind === "run" ? got.terminationDeadlineMs : got.kind === "error" ? got.message : got.kind;
    };
    assert.equal(deadline([]), 5000);
    assert.equal(deadline(["--termination-deadline-ms", "12000"]), 12_000);
    assert.equal(deadline([], { CONNECTION_TERMINATION_DEADLINE: "2s" }), 2000);
    assert.equal(deadline([], { CONNECTION_TERMINATION_DEADLINE: "1m 30s" }), 90_000);
    assert.equal(deadline([], { CONNECTION_TERMINATION_DEADLINE: "750ms" }), 750);
    assert.equal(deadline([], { CONNECTION_TERMINATION_DEADLINE: "7" }), 7000, "a bare number is seconds");
    // The pod's grace period less some time to cut what is left before the kubelet's SIGKILL.
    assert.equal(deadline([], { TERMINATION_GRACE_PERIOD_SECONDS: "30" }), 25_000);
    assert.equal(deadline([], { TERMINATION_GRACE_PERIOD_SECONDS: "10" }), 9000);
    assert.equal(deadline([], { TERMINATION_GRACE_PERIOD_SECONDS: "1" }), 1000);
    assert.equal(deadline([], { TERMINATION_GRACE_PERIOD_SECONDS: "0" }), 1000);
    // The explicit deadline wins over the grace period, and the flag over both.
    const both = { CONNECTION_TERMINATION_DEADLINE: "3s", TERMINATION_GRACE_PERIOD_SECONDS: "30" };
    assert.equal(deadline([], both), 3000);
    assert.equal(deadline(["--termination-deadline-ms", "100"], both), 100);
    for (const [argv, env, message] of [
      [[], { CONNECTION_TERMINATION_DEADLINE: "soon" }, /CONNECTION_TERMINATION_DEADLINE/],
      [[], { CONNECTION_TERMINATION_DEADLINE: "5 parsecs" }, /CONNECTION_TERMINATION_DEADLINE/],
      [[], { CONNECTION_TERMINATION_DEADLINE: "" }, /CONNECTION_TERMINATION_DEADLINE/],
      [[], { TERMINATION_GRACE_PERIOD_SECONDS: "-3" }, /TERMINATION_GRACE_PERIOD_SECONDS/],
      [[], { TERMINATION_GRACE_PERIOD_SECONDS: "30s" }, /TERMINATION_GRACE_PERIOD_SECONDS/],
      [["--termination-deadline-ms", "0"], {}, /--termination-deadline-ms/],
    ] as const) {
      assert.match(String(deadline([...argv], env)), message, JSON.stringify(env));
    }
  });

  it("reads IPV6_ENABLED for the DNS proxy's AAAA answers", () => {
    const dns = (env: Record<string, string>) => {
      const got = parseZtunnelCli(["--zds-socket", "/run/z.sock"], env);
      return got.kind === "run" ? got.dns : got.kind === "error" ? got.message : got.kind;
    };
    assert.deepEqual(dns({}), { clusterDomain: "cluster.local" });
    assert.deepEqual(dns({ IPV6_ENABLED: "false" }), { clusterDomain: "cluster.local", ipv6: false });
    assert.deepEqual(dns({ IPV6_ENABLED: "true" }), { clusterDomain: "cluster.local", ipv6: true });
    assert.match(String(dns({ IPV6_ENABLED: "no" })), /IPV6_ENABLED must be true or false/);
  });

  it("keeps the admin listener on loopback: the node IP in the local mesh, 127.0.0.1 on a pod IP", () => {
    const ips = (argv: string[]) => {
      const got = parseZtunnelCli(argv);
      return got.kind === "run" ? { nodeIp: got.nodeIp, adminIp: got.adminIp } : got.kind;
    };
    const table: [string[], { nodeIp: string; adminIp: string } | "error"][] = [
      [[], { nodeIp: "127.20.0.1", adminIp: "127.20.0.1" }],
      [["--node", "node-c"], { nodeIp: "127.20.0.3", adminIp: "127.20.0.3" }],
      [["--node", "worker-1"], { nodeIp: "127.20.0.1", adminIp: "127.20.0.1" }],
      // The DaemonSet's --node-ip $(POD_IP): POST /quitquitquit must not be open to every pod.
      [["--node-ip", "10.244.1.7"], { nodeIp: "10.244.1.7", adminIp: "127.0.0.1" }],
      [["--node-ip", "fd00::7"], { nodeIp: "fd00::7", adminIp: "127.0.0.1" }],
      [["--node-ip", "10.244.1.7", "--admin-ip", "::1"], { nodeIp: "10.244.1.7", adminIp: "::1" }],
      [
        ["--node-ip", "10.244.1.7", "--admin-ip", "127.0.0.2"],
        { nodeIp: "10.244.1.7", adminIp: "127.0.0.2" },
      ],
      [["--node-ip", "10.244.1.7", "--admin-ip", "10.244.1.7"], "error"],
      [["--admin-ip", "0.0.0.0"], "error"],
      [["--admin-ip", "localhost"], "error"],
    ];
    for (const [argv, want] of table) assert.deepEqual(ips(argv), want, argv.join(" "));
  });

  it("takes the cluster id from --cluster-id, else ISTIO_META_CLUSTER_ID, else CLUSTER_ID, else Kubernetes", () => {
    const clusterId = (argv: string[], env: Record<string, string> = {}) => {
      const got = parseZtunnelCli(argv, env);
      return got.kind === "run" ? got.clusterId : got.kind === "error" ? got.message : got.kind;
    };
    const both = { ISTIO_META_CLUSTER_ID: "east", CLUSTER_ID: "west" };
    const table: [string[], Record<string, string>, string][] = [
      [[], {}, "Kubernetes"],
      [["--cluster-id", "cluster1"], {}, "cluster1"],
      [["--cluster-id=cluster1"], {}, "cluster1"],
      [[], { CLUSTER_ID: "cluster1" }, "cluster1"],
      [[], { ISTIO_META_CLUSTER_ID: "cluster1" }, "cluster1"],
      // ztunnel reads ISTIO_META_CLUSTER_ID first (its Helm chart sets that one), then CLUSTER_ID.
      [[], both, "east"],
      [["--cluster-id", "cluster1"], both, "cluster1"],
      // A variable the flag overrides is not read at all.
      [["--cluster-id", "cluster1"], { CLUSTER_ID: "a b" }, "cluster1"],
    ];
    for (const [argv, env, want] of table)
      assert.equal(clusterId(argv, env), want, JSON.stringify([argv, env]));
    const errors: [string[], Record<string, string>, RegExp][] = [
      [["--cluster-id", ""], {}, /--cluster-id .*""/],
      [["--cluster-id", "cluster 1"], {}, /--cluster-id .*"cluster 1"/],
      [["--cluster-id", "cluster1\n"], {}, /--cluster-id/],
      [["--cluster-id", "clüster"], {}, /--cluster-id/],
      [[], { CLUSTER_ID: "" }, /CLUSTER_ID .*""/],
      [[], { CLUSTER_ID: "\tcluster1" }, /CLUSTER_ID/],
      [[], { ISTIO_META_CLUSTER_ID: "a b", CLUSTER_ID: "cluster1" }, /ISTIO_META_CLUSTER_ID/],
    ];
    for (const [argv, env, message] of errors) {
      const got = parseZtunnelCli(argv, env);
      assert.equal(got.kind, "error", JSON.stringify([argv, env]));
      assert.match(got.kind === "error" ? got.message : "", message);
    }
  });

  it("takes its own pod from POD_NAME and POD_NAMESPACE, both or neither", () => {
    const pod = (env: Record<string, string>) => {
      const got = parseZtunnelCli(["--zds-socket", "/run/z.sock"], env);
      return got.kind === "run" ? got.pod : got.kind === "error" ? got.message : got.kind;
    };
    assert.equal(pod({}), undefined);
    assert.deepEqual(pod({ POD_NAME: "ztunnel-x7k2p", POD_NAMESPACE: "kube-system" }), {
      name: "ztunnel-x7k2p",
      namespace: "kube-system",
    });
    assert.match(String(pod({ POD_NAME: "ztunnel-x7k2p" })), /POD_NAME and POD_NAMESPACE go together/);
  });

  it("takes the node's network from --network, else NETWORK, else none", () => {
    const network = (argv: string[], env: Record<string, string> = {}) => {
      const got = parseZtunnelCli(argv, env);
      return got.kind === "run" ? got.network : got.kind;
    };
    assert.equal(network([]), "");
    assert.equal(network([], { NETWORK: "net-a" }), "net-a");
    assert.equal(network(["--network", "net-b"], { NETWORK: "net-a" }), "net-b");
  });

  it("takes the trust domain and the cluster's DNS domain from their flags, else TRUST_DOMAIN and CLUSTER_DOMAIN", () => {
    const domains = (argv: string[], env: Record<string, string> = {}) => {
      const got = parseZtunnelCli(["--zds-socket", "/run/z.sock", ...argv], env);
      if (got.kind !== "run") return got.kind === "error" ? got.message : got.kind;
      return { trust: got.trustDomain, dns: got.dns === false ? "off" : got.dns?.clusterDomain };
    };
    const table: [string[], Record<string, string>, { trust: string; dns: string }][] = [
      [[], {}, { trust: "cluster.local", dns: "cluster.local" }],
      [[], { TRUST_DOMAIN: "example.org" }, { trust: "example.org", dns: "cluster.local" }],
      [[], { CLUSTER_DOMAIN: "corp.internal" }, { trust: "cluster.local", dns: "corp.internal" }],
      [
        ["--trust-domain", "mesh.example", "--cluster-domain", "k8s.example"],
        { TRUST_DOMAIN: "example.org", CLUSTER_DOMAIN: "corp.internal" },
        { trust: "mesh.example", dns: "k8s.example" },
      ],
      // A variable the flag overrides is not read at all.
      [
        ["--trust-domain", "example.org"],
        { TRUST_DOMAIN: "Not Valid" },
        { trust: "example.org", dns: "cluster.local" },
      ],
    ];
    for (const [argv, env, want] of table)
      assert.deepEqual(domains(argv, env), want, JSON.stringify([argv, env]));
    const errors: [string[], Record<string, string>, RegExp][] = [
      [["--trust-domain", ""], {}, /--trust-domain is not a trust domain/],
      [["--trust-domain", "Example.org"], {}, /--trust-domain is not a trust domain/],
      [["--trust-domain", "example.org:443"], {}, /--trust-domain/],
      [[], { TRUST_DOMAIN: "ex ample" }, /TRUST_DOMAIN is not a trust domain/],
      [["--cluster-domain", "corp.internal."], {}, /--cluster-domain is not a DNS domain/],
      [[], { CLUSTER_DOMAIN: "" }, /CLUSTER_DOMAIN is not a DNS domain/],
      [[], { CLUSTER_DOMAIN: `${"a".repeat(64)}.local` }, /CLUSTER_DOMAIN/],
    ];
    for (const [argv, env, message] of errors) {
      const got = domains(argv, env);
      assert.equal(typeof got, "string", JSON.stringify([argv, env]));
      assert.match(String(got), message);
    }
    // SOCKS5 mode has no DNS proxy but still names its control plane with the trust domain.
    const socks = parseZtunnelCli([], { TRUST_DOMAIN: "example.org" });
    assert.equal(socks.kind === "run" ? socks.trustDomain : socks.kind, "example.org");
  });

  it("keeps -- when it is a flag's value", () => {
    assert.deepEqual(withoutSeparators(["--", "--state-dir", "--", "--"]), ["--state-dir", "--"]);
  });

  it("src/main.ts -- --help prints the help and exits 0", () => {
    const main = fileURLToPath(new URL("./main.ts", import.meta.url));
    const run = spawnSync(process.execPath, ["--import", "tsx", main, "--", "--help"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout, ztunnelUsage());
  });
});
