// The ztunnel names its cluster on every xDS stream and CA call, and a control plane serves the callers
// of its own cluster only: a ztunnel told nothing says `Kubernetes`, so one in cluster1 must be told
// (`--cluster-id`, else ztunnel's ISTIO_META_CLUSTER_ID or CLUSTER_ID) or it gets neither config nor
// certificates.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { startTestControlPlane, type TestControlPlane } from "./control-plane.js";
import { loopbackSubnet, testWorkload } from "./fixtures.js";
import { runZtunnelProgram, type ZtunnelRun } from "./run-ztunnel.js";

const main = fileURLToPath(new URL("../src/main.ts", import.meta.url));

/** The environment of the test run without the variables a ztunnel reads its cluster id from. */
function environment(extra: Record<string, string>): NodeJS.ProcessEnv {
  const { CLUSTER_ID: _a, ISTIO_META_CLUSTER_ID: _b, ...rest } = process.env;
  return { ...rest, ...extra };
}

/** Runs the ztunnel program with `env` in place of the variables it reads its cluster id from. */
const runZtunnel = (
  cp: TestControlPlane,
  nodeIp: string,
  args: string[],
  env: Record<string, string>,
  until?: (out: string) => boolean,
): Promise<ZtunnelRun> => runZtunnelProgram(cp, nodeIp, args, environment(env), until);

describe("the ztunnel program's cluster id", { timeout: 90_000 }, () => {
  /** A control plane of cluster1 with a pod on node-a (its certificate takes a CA call) and one on node-b. */
  const cluster1 = async (subnet: string): Promise<TestControlPlane> => {
    const cp = await startTestControlPlane({ clusterId: "cluster1" });
    for (const [name, node, n] of [
      ["sleep", "node-a", 10],
      ["web", "node-b", 11],
    ] as const) {
      cp.setWorkload(
        testWorkload(name, node, `${subnet}.${n}`, {
          uid: `cluster1//Pod/default/${name}`,
          clusterId: "cluster1",
        }),
      );
    }
    return cp;
  };

  /** What a ztunnel of cluster1 has once ready, and what it said to the control plane. */
  const assertServedAsCluster1 = (cp: TestControlPlane, run: ZtunnelRun): void => {
    assert.ok(run.ready, run.out);
    assert.deepEqual(run.dump?.workloads.map((w) => w.name).sort(), ["sleep", "web"]);
    assert.deepEqual(
      run.dump?.certificates.map((c) => c.identity),
      ["spiffe://cluster.local/ns/default/sa/sleep"],
    );
    // The cluster id went wherever the ztunnel names its cluster: xDS metadata and node, CA calls.
    const { xds, xdsNode, ca } = cp.clusterIdsSeen;
    assert.ok(xds.length > 0 && ca.length > 0, JSON.stringify(cp.clusterIdsSeen));
    for (const seen of [...xds, ...xdsNode, ...ca]) assert.equal(seen, "cluster1");
  };

  it("--cluster-id cluster1: a control plane of cluster1 gives it its config and its pod's certificate", async () => {
    const subnet = loopbackSubnet();
    const cp = await cluster1(subnet);
    try {
      // A variable it would read otherwise does not count against the flag.
      const run = await runZtunnel(cp, `${subnet}.1`, ["--cluster-id", "cluster1"], {
        CLUSTER_ID: "Kubernetes",
      });
      assertServedAsCluster1(cp, run);
    } finally {
      await cp.close();
    }
  });

  it("without the flag, reads CLUSTER_ID", async () => {
    const subnet = loopbackSubnet();
    const cp = await cluster1(subnet);
    try {
      assertServedAsCluster1(cp, await runZtunnel(cp, `${subnet}.1`, [], { CLUSTER_ID: "cluster1" }));
    } finally {
      await cp.close();
    }
  });

  it("without the flag, reads ISTIO_META_CLUSTER_ID before CLUSTER_ID", async () => {
    const subnet = loopbackSubnet();
    const cp = await cluster1(subnet);
    try {
      const env = { ISTIO_META_CLUSTER_ID: "cluster1", CLUSTER_ID: "Kubernetes" };
      assertServedAsCluster1(cp, await runZtunnel(cp, `${subnet}.1`, [], env));
    } finally {
      await cp.close();
    }
  });

  // The check the tests above pass: without it they would prove nothing.
  it("told nothing, it says Kubernetes, and a control plane of cluster1 leaves it without certificates", async () => {
    const subnet = loopbackSubnet();
    const cp = await cluster1(subnet);
    try {
      const { xds, ca } = cp.clusterIdsSeen;
      // Two seconds after the first refusal, for retries to fail as well.
      let refusedAt: number | undefined;
      const refusedAWhileAgo = () => {
        if (refusedAt === undefined && [...xds, ...ca].includes("Kubernetes")) refusedAt = Date.now();
        return refusedAt !== undefined && Date.now() - refusedAt > 2000;
      };
      const run = await runZtunnel(cp, `${subnet}.1`, [], {}, refusedAWhileAgo);
      assert.equal(run.ready, false, run.out);
      assert.equal(run.dump?.ready, false);
      assert.deepEqual(run.dump?.certificates, []);
    } finally {
      await cp.close();
    }
  });

  it("exits 2 on a cluster id that is empty or has whitespace, from the flag or a variable", () => {
    const missing = join(tmpdir(), "no-such-root-cert.pem");
    for (const [args, env, message] of [
      [["--cluster-id", "cluster 1"], {}, /--cluster-id must be .*"cluster 1"/],
      [["--cluster-id="], {}, /--cluster-id must be .*""/],
      [[], { CLUSTER_ID: "" }, /CLUSTER_ID must be .*""/],
      [[], { ISTIO_META_CLUSTER_ID: "a\tb" }, /ISTIO_META_CLUSTER_ID must be .*"a\\tb"/],
    ] as const) {
      const run = spawnSync(process.execPath, ["--import", "tsx", main, "--root-cert", missing, ...args], {
        encoding: "utf8",
        timeout: 30_000,
        env: environment(env),
      });
      assert.equal(run.status, 2, `${args.join(" ")} ${JSON.stringify(env)}: ${run.stderr}${run.stdout}`);
      assert.match(run.stderr, message);
    }
  });
});
